//! `ri shell`: an interactive session in which every ri command runs
//! without the `ri` prefix, and pack instruments stay attached in the
//! background while the target is looked at.

mod complete;
mod line;

use std::{cell::RefCell, io::Write, path::PathBuf, rc::Rc};

use clap::Parser as _;
use rustyline::{CompletionType, Config, Editor, error::ReadlineError, history::FileHistory};

use crate::{Error, agg::Live, cli::ShellArgs};

use line::{Action, ShellLine};

/// Errors of `ri shell` itself (a command's own errors are its module's).
#[derive(Debug, thiserror::Error)]
pub enum ShellError {
    /// The line editor could not start or read.
    #[error("line editor: {0}")]
    Editor(#[from] ReadlineError),
    /// No job of that name.
    #[error("no background instrument named '{0}' (see jobs)")]
    NoJob(String),
    /// A job name used already.
    #[error("a background instrument is named '{0}' already (stop it first)")]
    JobExists(String),
    /// `start` without `as NAME`, or another malformed shell command.
    #[error("{0}")]
    Usage(String),
}

/// A background instrument.
struct Job {
    name: String,
    /// The `start` arguments after `start`, before `as`.
    run: Vec<String>,
    live: Live,
}

/// How the shell runs a parsed ri command.
pub type Runner = fn(crate::cli::Command) -> Result<(), Error>;

/// What the shell did, for `save`.
#[derive(Default)]
struct Log {
    /// Instruments started (name, `ri run` arguments).
    started: Vec<(String, Vec<String>)>,
    /// Other lines, in order.
    lines: Vec<String>,
}

/// The shell's state between lines.
struct Shell {
    /// Runs a parsed ri command (`dispatch::run`, handed in by the caller).
    runner: Runner,
    pids: Vec<u32>,
    jobs: Vec<Job>,
    names: Rc<RefCell<Vec<String>>>,
    log: Log,
}

impl Shell {
    fn sync_names(&self) {
        *self.names.borrow_mut() = self.jobs.iter().map(|j| j.name.clone()).collect();
    }

    /// Runs one line; `Ok(false)` ends the shell.
    fn line(&mut self, text: &str) -> Result<bool, Error> {
        let words = line::words(text).map_err(|_| ShellError::Usage("unclosed quote".into()))?;
        if words.is_empty() {
            return Ok(true);
        }
        let words = line::with_pids(words, &self.pids);
        let parsed = ShellLine::try_parse_from(&words).map_err(|e| {
            if e.use_stderr() {
                Error::Usage(crate::cli::fault(&e))
            } else {
                // --help and the like: printed, not an error.
                let _ = e.print();
                Error::Usage(String::new())
            }
        })?;
        match parsed.action {
            Action::Exit => return Ok(false),
            Action::Start { words } => self.start(&words)?,
            Action::Jobs => self.list_jobs()?,
            Action::Show { name, json } => {
                let job = self.job(&name)?;
                job.live.print(&mut std::io::stdout().lock(), json)?;
                self.log.lines.push(text.trim().to_string());
            }
            Action::Stop { name } => {
                let at = self
                    .jobs
                    .iter()
                    .position(|j| j.name == name)
                    .ok_or(ShellError::NoJob(name))?;
                drop(self.jobs.remove(at));
                self.sync_names();
                self.log.lines.push(text.trim().to_string());
            }
            Action::Save { file } => self.save(&file)?,
            Action::Ri(command) => {
                self.log.lines.push(text.trim().to_string());
                (self.runner)(command)?;
            }
        }
        Ok(true)
    }

    fn job(&self, name: &str) -> Result<&Job, ShellError> {
        (self.jobs.iter().find(|j| j.name == name)).ok_or_else(|| ShellError::NoJob(name.into()))
    }

    /// `start PACK.INSTRUMENT [ARGS] as NAME`: parsed as `ri run`'s
    /// arguments, attached, kept.
    fn start(&mut self, words: &[String]) -> Result<(), Error> {
        let (run, name) = line::start_words(words).map_err(ShellError::Usage)?;
        if self.jobs.iter().any(|j| j.name == name) {
            return Err(ShellError::JobExists(name).into());
        }
        let mut argv = vec!["run".to_string()];
        argv.extend(run.iter().cloned());
        let argv = line::with_pids(argv, &self.pids);
        let cli = crate::cli::Cli::try_parse_from(std::iter::once("ri".to_string()).chain(argv))
            .map_err(|e| Error::Usage(crate::cli::fault(&e)))?;
        let crate::cli::Command::Run(args) = cli.command else {
            unreachable!("parsed as run");
        };
        args.check().map_err(Error::Usage)?;
        let (agg, notes) = crate::cli::instrument_aggregation(&args.options())?;
        for n in notes {
            eprintln!("ri: {n}");
        }
        let live = Live::start(agg)?;
        self.log.started.push((name.clone(), run.clone()));
        self.jobs.push(Job { name, run, live });
        self.sync_names();
        Ok(())
    }

    fn list_jobs(&self) -> Result<(), Error> {
        let mut out = std::io::stdout().lock();
        if self.jobs.is_empty() {
            writeln!(out, "no background instruments")?;
        }
        for j in &self.jobs {
            writeln!(
                out,
                "{:<12} {:<40} attached {:.0} s",
                j.name,
                j.run.join(" "),
                j.live.age()
            )?;
        }
        Ok(())
    }

    /// Writes the session file: the processes, the instruments started (as
    /// named `run` instruments) and the other commands in order.
    fn save(&self, file: &std::path::Path) -> Result<(), Error> {
        let q = |s: &str| toml_string(s);
        let mut doc = String::from(
            "# Saved by `ri shell`: the processes, the instruments started in the\n\
             # background (name, `run` = PACK.INSTRUMENT, `args` = the rest of its\n\
             # `start` line) and the other commands, in the order they ran.\n",
        );
        let pids: Vec<String> = self.pids.iter().map(u32::to_string).collect();
        doc.push_str(&format!("pids = [{}]\n", pids.join(", ")));
        for (name, run) in &self.log.started {
            let (inst, rest) = run.split_first().expect("start has an instrument");
            let args: Vec<String> = rest.iter().map(|a| q(a)).collect();
            doc.push_str(&format!(
                "\n[[instrument]]\nname = {}\nrun = {}\nargs = [{}]\n",
                q(name),
                q(inst),
                args.join(", ")
            ));
        }
        for l in &self.log.lines {
            doc.push_str(&format!("\n[[command]]\ncmd = {}\n", q(l)));
        }
        std::fs::write(file, doc)?;
        Ok(())
    }
}

/// A TOML basic string.
fn toml_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The default history file.
fn history_file(args: &ShellArgs) -> Option<PathBuf> {
    args.history
        .clone()
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".ri_history")))
}

/// `ri shell`.
pub fn run(args: &ShellArgs, runner: Runner) -> Result<(), Error> {
    for &pid in &args.pids {
        crate::target::check_pid(pid)?;
    }
    crate::signals::catch(|| {})?;
    let names = Rc::new(RefCell::new(Vec::new()));
    let config = Config::builder()
        .completion_type(CompletionType::List)
        .auto_add_history(true)
        .build();
    let mut ed: Editor<complete::Completion, FileHistory> =
        Editor::with_config(config).map_err(ShellError::from)?;
    ed.set_helper(Some(complete::Completion::new(
        args.pids.clone(),
        names.clone(),
    )));
    let history = history_file(args);
    if let Some(h) = &history {
        let _ = ed.load_history(h);
    }
    let mut shell = Shell {
        runner,
        pids: args.pids.clone(),
        jobs: Vec::new(),
        names,
        log: Log::default(),
    };
    let prompt = match args.pids.as_slice() {
        [] => "ri> ".to_string(),
        p => format!(
            "ri {}> ",
            p.iter().map(u32::to_string).collect::<Vec<_>>().join(",")
        ),
    };
    loop {
        let text = match ed.readline(&prompt) {
            Ok(t) => t,
            Err(ReadlineError::Interrupted) => continue,
            Err(ReadlineError::Eof) => break,
            Err(e) => return Err(ShellError::from(e).into()),
        };
        // A command that panics must not take the shell (and its jobs) down.
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| shell.line(&text)));
        match r {
            Ok(Ok(true)) => {}
            Ok(Ok(false)) => break,
            Ok(Err(Error::Usage(m))) if m.is_empty() => {}
            Ok(Err(e)) => eprintln!("ri: error: {}", first_line(&e.to_string())),
            Err(_) => eprintln!("ri: error: the command failed unexpectedly"),
        }
        if let Some(h) = &history {
            let _ = ed.save_history(h);
        }
    }
    // Jobs detach as they drop.
    drop(shell);
    Ok(())
}

/// An error's first line (caret lines of expressions are left out).
fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or(s)
}
