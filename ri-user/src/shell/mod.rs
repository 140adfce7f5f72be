//! `ri shell`: an interactive session in which every ri command runs
//! without the `ri` prefix, and pack instruments stay attached in the
//! background while the target is looked at.

mod complete;
mod line;
mod save;

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
    /// `save` with nothing a session could run.
    #[error(transparent)]
    Save(#[from] save::SaveError),
    /// A background instrument over hosts that no host attached.
    #[error(transparent)]
    Hosts(#[from] crate::remote::JobError),
}

/// A background instrument.
struct Job {
    name: String,
    /// The `start` arguments after `start`, before `as`.
    run: Vec<String>,
    live: Running,
}

/// Where a background instrument runs (boxed: both are large).
enum Running {
    /// Attached from this process.
    Here(Box<Live>),
    /// On the `-H` hosts, through the shell's connections.
    Hosts(Box<crate::remote::HostJob>),
}

impl Running {
    /// Prints the totals so far.
    fn print(&self, out: &mut impl Write, json: bool) -> Result<(), Error> {
        match self {
            Running::Here(l) => l.print(out, json),
            Running::Hosts(h) => Ok(h.print(out, json)?),
        }
    }

    fn age(&self) -> f64 {
        match self {
            Running::Here(l) => l.age(),
            Running::Hosts(h) => h.age(),
        }
    }
}

/// How the shell runs a parsed ri command.
pub type Runner = fn(crate::cli::Command) -> Result<(), Error>;

/// The shell's state between lines.
struct Shell {
    /// Runs a parsed ri command (`dispatch::run`, handed in by the caller).
    runner: Runner,
    pids: Vec<u32>,
    jobs: Vec<Job>,
    names: Rc<RefCell<Vec<String>>>,
    /// The processes as the shell was given them, for `save`.
    targets: save::Targets,
    /// What the shell did, for `save`.
    log: Vec<save::Entry>,
    /// `-H`: the hosts every ri command runs on (connected for the whole
    /// shell).
    fleet: Option<crate::remote::Fleet>,
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
        let typed = words.clone();
        let words = match &self.fleet {
            // The hosts' own processes: named as the shell was given them.
            Some(_) => line::with_targets(
                words,
                &self.targets.pids,
                &self.targets.comms,
                &self.targets.exes,
            ),
            None => line::with_pids(words, &self.pids),
        };
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
                self.log.push(save::Entry::Shell(text.trim().to_string()));
            }
            Action::Stop { name } => {
                let at = self
                    .jobs
                    .iter()
                    .position(|j| j.name == name)
                    .ok_or(ShellError::NoJob(name))?;
                drop(self.jobs.remove(at));
                self.sync_names();
                self.log.push(save::Entry::Shell(text.trim().to_string()));
            }
            Action::Save { file } => self.save(&file)?,
            Action::Ri(command) => {
                match &self.fleet {
                    // Each failed host is named already.
                    Some(f) if !f.run(&words, &command) => return Err(Error::Usage(String::new())),
                    Some(_) => {}
                    None => (self.runner)(command)?,
                }
                self.log.push(save::Entry::Ran(typed));
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
        let live = match &self.fleet {
            Some(f) => Running::Hosts(Box::new(self.start_on_hosts(f, argv)?)),
            None => Running::Here(Box::new(self.start_here(argv)?)),
        };
        self.log.push(save::Entry::Started {
            name: name.clone(),
            words: run.clone(),
        });
        self.jobs.push(Job { name, run, live });
        self.sync_names();
        Ok(())
    }

    /// `ri run`'s arguments `argv` over the hosts: checked here (an
    /// aggregating instrument, flags right), run there.
    fn start_on_hosts(
        &self,
        fleet: &crate::remote::Fleet,
        argv: Vec<String>,
    ) -> Result<crate::remote::HostJob, Error> {
        let t = &self.targets;
        let argv = line::with_targets(argv, &t.pids, &t.comms, &t.exes);
        let args = parse_run(&argv)?;
        if args.json || args.interval.is_some() || args.scope.duration.is_some() {
            return Err(ShellError::Usage(
                "start: over hosts a background instrument runs until stopped and `show` prints it (no --json, --interval or --duration)".into(),
            )
            .into());
        }
        let packs = crate::pack::load_all(&args.packs)?;
        let (loaded, inst) = crate::pack::find(&packs, &args.instrument)?;
        if loaded.file.instruments[inst].kind == "trace" {
            return Err(Error::Usage(format!(
                "{} traces events; only aggregating instruments run in the background",
                args.instrument
            )));
        }
        Ok(fleet.start_job(&argv).map_err(ShellError::from)?)
    }

    /// `ri run`'s arguments `argv`, attached from this process.
    fn start_here(&self, argv: Vec<String>) -> Result<Live, Error> {
        let args = parse_run(&line::with_pids(argv, &self.pids))?;
        let (agg, notes) = crate::cli::instrument_aggregation(&args.options())?;
        for n in notes {
            eprintln!("ri: {n}");
        }
        Live::start(agg)
    }

    fn list_jobs(&self) -> Result<(), Error> {
        let mut out = std::io::stdout().lock();
        if self.jobs.is_empty() {
            writeln!(out, "no background instruments")?;
        }
        for j in &self.jobs {
            let on = match &j.live {
                Running::Here(_) => String::new(),
                Running::Hosts(h) => format!(" on {}", h.hosts_text()),
            };
            writeln!(
                out,
                "{:<12} {:<40} attached {:.0} s{on}",
                j.name,
                j.run.join(" "),
                j.live.age()
            )?;
        }
        Ok(())
    }

    /// Writes what the shell did as a session file (see `save`).
    fn save(&self, file: &std::path::Path) -> Result<(), Error> {
        let text = save::session_text(&self.targets, &self.log).map_err(ShellError::from)?;
        std::fs::write(file, text)?;
        println!("saved {} (ri session run {0})", file.display());
        Ok(())
    }
}

/// `ri run`'s arguments `argv` (starting with `run`), parsed and checked.
fn parse_run(argv: &[String]) -> Result<crate::cli::RunArgs, Error> {
    let cli = crate::cli::Cli::try_parse_from(
        std::iter::once("ri").chain(argv.iter().map(String::as_str)),
    )
    .map_err(|e| Error::Usage(crate::cli::fault(&e)))?;
    let crate::cli::Command::Run(args) = cli.command else {
        unreachable!("parsed as run");
    };
    args.check().map_err(Error::Usage)?;
    Ok(args)
}

/// `ri shell --complete=TEXT`: the completions of TEXT from this machine's
/// processes, as one JSON object (`start`, `candidates`).
fn print_completions(text: &str, pids: Vec<u32>) -> Result<(), Error> {
    let c = complete::Completion::new(pids, Rc::new(RefCell::new(Vec::new())));
    let (start, candidates) = c.candidates(text);
    println!(
        "{}",
        serde_json::json!({"start": start, "candidates": candidates})
    );
    Ok(())
}

/// The shell's processes as ri's flags, for the hosts' ri.
fn target_flags(t: &save::Targets) -> Vec<String> {
    let pids = t.pids.iter().map(|p| ("-p", p.to_string()));
    let comms = t.comms.iter().map(|c| ("--comm", c.clone()));
    let exes = t.exes.iter().map(|e| ("--exe", e.clone()));
    (pids.chain(comms).chain(exes))
        .flat_map(|(f, v)| [f.to_string(), v])
        .collect()
}

/// The default history file.
fn history_file(args: &ShellArgs) -> Option<PathBuf> {
    args.history
        .clone()
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".ri_history")))
}

/// `ri shell`; with `hosts` (`-H`) every ri command runs on them.
pub fn run(
    args: &ShellArgs,
    hosts: Option<&crate::remote::FleetArgs>,
    runner: Runner,
) -> Result<(), Error> {
    // Over hosts the processes are theirs: nothing to look up here.
    let pids = match hosts {
        Some(_) => Vec::new(),
        None => {
            for &pid in &args.pids {
                crate::target::check_pid(pid)?;
            }
            crate::select::running_now(&args.pids, &args.select.selection())?
        }
    };
    if let Some(text) = &args.complete {
        return print_completions(text, pids);
    }
    crate::signals::catch(|| {})?;
    let fleet = hosts.map(crate::remote::Fleet::open).transpose()?;
    let names = Rc::new(RefCell::new(Vec::new()));
    let config = Config::builder()
        .completion_type(CompletionType::List)
        .auto_add_history(true)
        .build();
    let mut ed: Editor<complete::Completion, FileHistory> =
        Editor::with_config(config).map_err(ShellError::from)?;
    let mut completion = complete::Completion::new(pids.clone(), names.clone());
    let history = history_file(args);
    if let Some(h) = &history {
        let _ = ed.load_history(h);
    }
    let mut shell = Shell {
        runner,
        pids: pids.clone(),
        jobs: Vec::new(),
        names,
        targets: save::Targets {
            pids: args.pids.clone(),
            comms: args.select.comms.clone(),
            exes: (args.select.exes.iter())
                .map(|p| p.display().to_string())
                .collect(),
            hosts: Vec::new(),
        },
        log: Vec::new(),
        fleet,
    };
    if let Some(f) = &shell.fleet {
        shell.targets.hosts = f.hosts().to_vec();
        completion.hosts = Some(f.completion(target_flags(&shell.targets)));
    }
    ed.set_helper(Some(completion));
    let prompt = prompt(&shell);
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

/// `ri PIDS> `, or `ri HOSTS> ` over hosts (`ri 12 hosts> ` past three).
fn prompt(shell: &Shell) -> String {
    let join = |v: Vec<String>| v.join(",");
    match &shell.fleet {
        Some(f) if f.hosts().len() > 3 => format!("ri {} hosts> ", f.hosts().len()),
        Some(f) => format!("ri {}> ", join(f.hosts().to_vec())),
        None if shell.pids.is_empty() => "ri> ".to_string(),
        None => format!(
            "ri {}> ",
            join(shell.pids.iter().map(u32::to_string).collect())
        ),
    }
}

/// An error's first line (caret lines of expressions are left out).
fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or(s)
}
