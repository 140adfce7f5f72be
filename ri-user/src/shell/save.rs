//! `save FILE`: what the shell did, written as a capture session file
//! (docs/SESSIONS.md) that `ri session run FILE` replays: the shell's
//! processes as `[targets]`, each instrument that ran (in the background
//! or in front) as an `[instruments.NAME]` table in the order it ran, and
//! the commands a session cannot run as comments.

use std::fmt::Write as _;

use clap::Parser as _;

use crate::cli::{Cli, Command};

/// One thing the shell did, as typed.
#[derive(Clone, Debug)]
pub enum Entry {
    /// `start WORDS as NAME`: `words` are `ri run`'s arguments.
    Started {
        /// The job's name.
        name: String,
        /// `PACK.INSTRUMENT [PARAM=VALUE...] [flags]`.
        words: Vec<String>,
    },
    /// A ri command run in front (its words, without the shell's `-p`).
    Ran(Vec<String>),
    /// A shell command (`show`, `stop`): kept as a comment.
    Shell(String),
}

/// The processes the shell looks at.
#[derive(Clone, Debug, Default)]
pub struct Targets {
    /// `-p`.
    pub pids: Vec<u32>,
    /// `--comm`.
    pub comms: Vec<String>,
    /// `--exe`.
    pub exes: Vec<String>,
    /// `-H`.
    pub hosts: Vec<String>,
}

/// Why nothing was written.
#[derive(Debug, thiserror::Error)]
pub enum SaveError {
    /// A session needs at least one instrument.
    #[error(
        "nothing to save: no instrument ran (start one, or run trace/count/hist/latency/inflight/leaks)"
    )]
    NoInstrument,
}

/// A written instrument: its table's name and body, or why it is a comment.
enum Written {
    Instrument(String),
    Comment(String),
}

/// The session file's text for `entries` over `targets`.
pub fn session_text(targets: &Targets, entries: &[Entry]) -> Result<String, SaveError> {
    let mut t = targets.clone();
    let mut body = String::new();
    let mut names: Vec<String> = Vec::new();
    let mut instruments = 0;
    for e in entries {
        let (typed, written) = match e {
            Entry::Started { name, words } => {
                let typed = format!("start {} as {name}", join(words));
                let mut argv = vec!["run".to_string()];
                argv.extend(strip_targets(words, &mut t));
                (typed, instrument(&argv, Some(name), &mut names))
            }
            Entry::Ran(words) => {
                let typed = join(words);
                let argv = if words.iter().any(|w| is_flag(w, "-c", "--command")) {
                    Err("it starts its own command (-c)".to_string())
                } else {
                    Ok(strip_targets(words, &mut t))
                };
                let w = match argv {
                    Ok(argv) => instrument(&argv, None, &mut names),
                    Err(why) => Written::Comment(why),
                };
                (typed, w)
            }
            Entry::Shell(line) => (line.clone(), Written::Comment(String::new())),
        };
        match written {
            Written::Instrument(table) => {
                instruments += 1;
                let _ = write!(body, "\n# {}\n{table}", one_line(&typed));
            }
            Written::Comment(why) if why.is_empty() => {
                let _ = writeln!(body, "\n# ran: {}", one_line(&typed));
            }
            Written::Comment(why) => {
                let _ = writeln!(body, "\n# not replayed ({why}): {}", one_line(&typed));
            }
        }
    }
    if instruments == 0 {
        return Err(SaveError::NoInstrument);
    }
    let mut doc = String::from(
        "# Saved by `ri shell`: replay with `ri session run FILE`. Each instrument\n\
         # follows the line that started it; the other lines are comments.\n\
         help = \"saved by ri shell\"\n",
    );
    if !(t.pids.is_empty() && t.comms.is_empty() && t.exes.is_empty() && t.hosts.is_empty()) {
        doc.push_str("\n[targets]\n");
        if !t.pids.is_empty() {
            let pids: Vec<String> = t.pids.iter().map(u32::to_string).collect();
            let _ = writeln!(doc, "pids = [{}]", pids.join(", "));
        }
        for (key, v) in [("comm", &t.comms), ("exe", &t.exes), ("hosts", &t.hosts)] {
            if !v.is_empty() {
                let v: Vec<String> = v.iter().map(|s| toml_string(s)).collect();
                let _ = writeln!(doc, "{key} = [{}]", v.join(", "));
            }
        }
    }
    doc.push_str(&body);
    Ok(doc)
}

/// Whether `w` is the flag `short`/`long` (alone or with its value joined).
fn is_flag(w: &str, short: &str, long: &str) -> bool {
    w == short
        || w == long
        || w.starts_with(&format!("{long}="))
        || w.starts_with(short) && !w.starts_with("--") && w.len() > short.len()
}

/// `words` without `-p`, `--comm` and `--exe` (a session names its targets
/// once): what they named joins the targets.
fn strip_targets(words: &[String], t: &mut Targets) -> Vec<String> {
    let mut out = Vec::new();
    let mut it = words.iter();
    while let Some(w) = it.next() {
        let (flag, joined) = match w.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f, Some(v.to_string())),
            _ if w.starts_with("-p") && w.len() > 2 && !w.starts_with("--") => {
                ("-p", Some(w[2..].to_string()))
            }
            _ => (w.as_str(), None),
        };
        if !matches!(flag, "-p" | "--pid" | "--comm" | "--exe") {
            out.push(w.clone());
            continue;
        }
        let Some(v) = joined.or_else(|| it.next().cloned()) else {
            continue;
        };
        match flag {
            "--comm" if !t.comms.contains(&v) => t.comms.push(v),
            "--exe" if !t.exes.contains(&v) => t.exes.push(v),
            "-p" | "--pid" => {
                if let Ok(p) = v.parse::<u32>()
                    && !t.pids.contains(&p)
                {
                    t.pids.push(p);
                }
            }
            _ => {}
        }
    }
    out
}

/// The instrument table for ri's arguments `argv` (without targets), or
/// why a session cannot run it.
fn instrument(argv: &[String], job: Option<&str>, names: &mut Vec<String>) -> Written {
    let cli =
        match Cli::try_parse_from(std::iter::once("ri".to_string()).chain(argv.iter().cloned())) {
            Ok(c) => c,
            Err(e) => return Written::Comment(crate::cli::fault(&e)),
        };
    let sub = argv.first().map_or("", String::as_str);
    let name = unique(job.unwrap_or(sub), names);
    let table = match cli.command {
        Command::Run(args) if args.target.is_none() && args.packs.is_empty() => {
            let mut s = format!(
                "[instruments.{name}]\nrun = {}\n",
                toml_string(&args.instrument)
            );
            let params: Vec<String> = (args.params.iter())
                .filter_map(|p| p.split_once('='))
                .map(|(k, v)| format!("{} = {}", toml_key(k), toml_string(v)))
                .collect();
            if !params.is_empty() {
                let _ = writeln!(s, "params = {{ {} }}", params.join(", "));
            }
            s
        }
        Command::Run(args) => {
            // Another target or pack file: the command line it stands for.
            let opts = crate::pack::RunOptions {
                instrument: args.instrument.clone(),
                params: args.params.clone(),
                target: args.target.clone(),
                packs: args.packs.clone(),
                ..Default::default()
            };
            match crate::pack::command_line(&opts) {
                Ok(p) => format!(
                    "[instruments.{name}]\ncmd = {}\n",
                    toml_string(&join(&p.argv))
                ),
                Err(e) => return Written::Comment(e.to_string()),
            }
        }
        Command::Trace(_)
        | Command::Count(_)
        | Command::Hist(_)
        | Command::Latency(_)
        | Command::Inflight(_)
        | Command::Leaks(_) => {
            format!("[instruments.{name}]\ncmd = {}\n", toml_string(&join(argv)))
        }
        _ => return Written::Comment(String::new()),
    };
    names.push(name);
    Written::Instrument(table)
}

/// `want` as a session instrument name (letters, digits, `_`, `-`), made
/// unique among `names` with a number.
fn unique(want: &str, names: &[String]) -> String {
    let base: String = want
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let base = if base.is_empty() {
        "instrument".to_string()
    } else {
        base
    };
    if !names.contains(&base) {
        return base;
    }
    (2..)
        .map(|n| format!("{base}-{n}"))
        .find(|n| !names.contains(n))
        .expect("a free number")
}

/// Words joined as a POSIX shell reads them back.
fn join(words: &[String]) -> String {
    let quote = |w: &String| {
        if !w.is_empty()
            && w.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_./:=,@%+".contains(c))
        {
            w.clone()
        } else {
            format!("'{}'", w.replace('\'', r"'\''"))
        }
    };
    words.iter().map(quote).collect::<Vec<_>>().join(" ")
}

/// A comment's text on one line.
fn one_line(s: &str) -> String {
    s.replace('\n', " ")
}

/// A TOML key: bare when it can be.
fn toml_key(k: &str) -> String {
    if !k.is_empty()
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        k.to_string()
    } else {
        toml_string(k)
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
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(s: &str) -> Vec<String> {
        crate::shell::line::words(s).unwrap()
    }

    #[test]
    fn saved_shell_is_a_session_file() {
        let entries = [
            Entry::Ran(w("count u:m0d:m0_fom_fini -p 7")),
            Entry::Ran(w("fid decode '<1:2>'")),
            Entry::Started {
                name: "q".into(),
                words: w("motr.queue -i 1"),
            },
            Entry::Started {
                name: "my job".into(),
                words: w("motr.fops"),
            },
            Entry::Shell("show q".into()),
            Entry::Ran(w("trace 'u:m0d:m0_fom_queue(x=arg0)' --comm m0d")),
            Entry::Ran(w("count -c 'sleep 1' u:m0d:f")),
            Entry::Ran(w("count u:m0d:m0_alloc")),
        ];
        let targets = Targets {
            pids: vec![5],
            ..Default::default()
        };
        let text = session_text(&targets, &entries).unwrap();
        let f =
            crate::capture::file::parse(&text, "saved").unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(f.targets.pids, [5, 7], "{text}");
        assert_eq!(f.targets.comm, ["m0d"], "{text}");
        let names: Vec<&str> = f.instruments.keys().map(String::as_str).collect();
        assert_eq!(
            names,
            ["count", "count-2", "my-job", "q", "trace"],
            "{text}"
        );
        assert_eq!(f.instruments["q"].run.as_deref(), Some("motr.queue"));
        assert_eq!(
            f.instruments["count"].cmd.as_deref(),
            Some("count u:m0d:m0_fom_fini")
        );
        assert_eq!(
            f.instruments["trace"].cmd.as_deref(),
            Some("trace 'u:m0d:m0_fom_queue(x=arg0)'")
        );
        // In the order they ran.
        let at = |s: &str| text.find(s).unwrap_or_else(|| panic!("no {s}:\n{text}"));
        assert!(at("[instruments.count]") < at("# ran: fid decode '<1:2>'"));
        assert!(at("# ran: fid decode") < at("[instruments.q]"));
        assert!(at("[instruments.trace]") < at("not replayed (it starts its own command (-c))"));
        assert!(at("not replayed") < at("[instruments.count-2]"));
    }

    #[test]
    fn params_become_params() {
        let entries = [Entry::Started {
            name: "f".into(),
            words: w("motr.fops opcode=42"),
        }];
        let text = session_text(&Targets::default(), &entries).unwrap();
        assert!(text.contains("params = { opcode = \"42\" }"), "{text}");
        assert!(matches!(
            session_text(&Targets::default(), &[Entry::Shell("jobs".into())]),
            Err(SaveError::NoInstrument)
        ));
    }
}
