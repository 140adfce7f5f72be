//! One shell line: split into words like a POSIX shell, then parsed by the
//! same clap definitions as ri's own command line, plus the shell's own
//! commands (start, jobs, show, stop, save, exit).

use clap::{Parser, Subcommand};

use crate::cli::Command;

/// A line of `ri shell`.
#[derive(Debug, Parser)]
#[command(
    name = "ri-shell",
    no_binary_name = true,
    disable_help_flag = true,
    disable_version_flag = true
)]
pub struct ShellLine {
    /// What to do.
    #[command(subcommand)]
    pub action: Action,
}

/// The shell's commands and every ri command (one per line: its size does
/// not matter).
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Action {
    /// Start a pack instrument in the background: `start motr.queue [ARGS] as NAME`.
    Start {
        /// `PACK.INSTRUMENT [PARAM=VALUE...] [run's flags] as NAME`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
        words: Vec<String>,
    },
    /// List the background instruments.
    Jobs,
    /// Print a background instrument's totals so far.
    Show {
        /// Its name.
        name: String,
        /// One JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Detach a background instrument.
    Stop {
        /// Its name.
        name: String,
    },
    /// Write what this shell did as a session file.
    Save {
        /// The file.
        file: std::path::PathBuf,
    },
    /// Detach everything and leave.
    #[command(alias = "quit")]
    Exit,
    /// Every ri command.
    #[command(flatten)]
    Ri(Command),
}

/// Why a line cannot be split into words.
#[derive(Debug, PartialEq, Eq)]
pub enum Split {
    /// A quote is still open (the line continues).
    OpenQuote,
}

/// Splits a line into words: blanks separate, '...' and "..." quote,
/// backslash escapes the next character (and joins lines at a line end).
pub fn words(line: &str) -> Result<Vec<String>, Split> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some('"'), '\\') => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            }
            (Some(_), c) => cur.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                in_word = true;
            }
            (None, '\\') => match chars.next() {
                Some('\n') | None => {}
                Some(n) => {
                    cur.push(n);
                    in_word = true;
                }
            },
            (None, c) if c.is_whitespace() => {
                if in_word {
                    out.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            (None, c) => {
                cur.push(c);
                in_word = true;
            }
        }
    }
    if quote.is_some() {
        return Err(Split::OpenQuote);
    }
    if in_word {
        out.push(cur);
    }
    Ok(out)
}

/// Whether the line needs more: an open quote, unbalanced parentheses, or
/// a backslash at its end.
pub fn incomplete(line: &str) -> bool {
    if line.ends_with('\\') || words(line).is_err() {
        return true;
    }
    let mut depth = 0i32;
    let mut quote = None;
    for c in line.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '\'' | '"') => quote = Some(c),
            (None, '(') => depth += 1,
            (None, ')') => depth -= 1,
            _ => {}
        }
    }
    depth > 0
}

/// `words` with `-p PID` added for the shell's processes when the command
/// takes a process and was given none (nor `-c`, `--discover`, `--socket`).
pub fn with_pids(words: Vec<String>, pids: &[u32]) -> Vec<String> {
    use clap::CommandFactory as _;
    let Some(name) = words.first() else {
        return words;
    };
    if pids.is_empty() {
        return words;
    }
    let root = crate::cli::Cli::command();
    let Some(sub) = root.find_subcommand(name) else {
        return words;
    };
    let Some(pid_arg) = sub.get_arguments().find(|a| a.get_long() == Some("pid")) else {
        return words;
    };
    if given(
        &words,
        &["-p", "--pid", "-c", "--command", "--discover", "--socket"],
    ) {
        return words;
    }
    // `ri report PID` names it as a positional argument.
    if name == "report" && words.len() > 1 && words[1..].iter().any(|w| w.parse::<u32>().is_ok()) {
        return words;
    }
    let many = matches!(pid_arg.get_action(), clap::ArgAction::Append);
    let mut out = words;
    // After the subcommand: before a `--` or trailing values does not matter to clap.
    let at = 1;
    let take = if many { pids.len() } else { 1 };
    for pid in pids.iter().take(take).rev() {
        out.insert(at, pid.to_string());
        out.insert(at, "-p".into());
    }
    out
}

/// Whether `words` hold one of `flags` (alone or as `--flag=VALUE`).
fn given(words: &[String], flags: &[&str]) -> bool {
    words.iter().any(|w| {
        flags
            .iter()
            .any(|f| w == f || w.starts_with(&format!("{f}=")))
    })
}

/// `words` with `--comm NAME` and `--exe PATH` for the shell's names added
/// where the command takes them and names no process itself, then `-p`
/// as [`with_pids`] adds it (over hosts, whose processes the shell does
/// not look up).
pub fn with_targets(
    words: Vec<String>,
    pids: &[u32],
    comms: &[String],
    exes: &[String],
) -> Vec<String> {
    use clap::CommandFactory as _;
    let mut words = words;
    let takes_comm = words.first().is_some_and(|name| {
        crate::cli::Cli::command()
            .find_subcommand(name)
            .is_some_and(|sub| sub.get_arguments().any(|a| a.get_long() == Some("comm")))
    });
    let named = given(
        &words,
        &[
            "-p",
            "--pid",
            "-c",
            "--command",
            "--discover",
            "--socket",
            "--comm",
            "--exe",
        ],
    );
    if takes_comm && !named {
        let flags = (comms.iter().map(|c| ("--comm", c.clone())))
            .chain(exes.iter().map(|e| ("--exe", e.clone())));
        for (at, (flag, value)) in flags.enumerate() {
            words.insert(1 + 2 * at, flag.into());
            words.insert(2 + 2 * at, value);
        }
    }
    with_pids(words, pids)
}

/// `start`'s words: the `ri run` arguments and the job's name.
pub fn start_words(words: &[String]) -> Result<(Vec<String>, String), String> {
    match words {
        [run @ .., as_, name] if as_ == "as" && !run.is_empty() => Ok((run.to_vec(), name.clone())),
        _ => Err("start PACK.INSTRUMENT [ARGS...] as NAME".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_follow_shell_quoting() {
        assert_eq!(
            words(r#"trace 'u:m0d:f(x=a) if arg0 > 1' -p 3 "a b" c\ d"#).unwrap(),
            ["trace", "u:m0d:f(x=a) if arg0 > 1", "-p", "3", "a b", "c d"]
        );
        assert_eq!(words("count 'u:x"), Err(Split::OpenQuote));
        assert!(incomplete("count 'u:m0d:f(x=a"));
        assert!(incomplete("trace u:m0d:f(x=a"));
        assert!(incomplete("trace \\"));
        assert!(!incomplete("trace 'u:m0d:f(x=a)'"));
    }

    #[test]
    fn pids_go_where_a_process_is_taken() {
        let w = |s: &str| words(s).unwrap();
        assert_eq!(
            with_pids(w("count u:m0d:f"), &[5, 6]),
            w("count -p 5 -p 6 u:m0d:f")
        );
        assert_eq!(with_pids(w("peek x"), &[5, 6]), w("peek -p 5 x"));
        assert_eq!(
            with_pids(w("count -p 7 u:m0d:f"), &[5]),
            w("count -p 7 u:m0d:f")
        );
        assert_eq!(
            with_pids(w("fid decode <1:2>"), &[5]),
            w("fid decode <1:2>")
        );
        assert_eq!(with_pids(w("ctl --discover"), &[5]), w("ctl --discover"));
        let c = ["m0d".to_string()];
        assert_eq!(
            with_targets(w("count u:m0d:f"), &[], &c, &[]),
            w("count --comm m0d u:m0d:f")
        );
        assert_eq!(
            with_targets(w("count --comm x u:m0d:f"), &[], &c, &[]),
            w("count --comm x u:m0d:f")
        );
        assert_eq!(
            with_targets(w("fid decode <1:2>"), &[], &c, &[]),
            w("fid decode <1:2>")
        );
    }

    #[test]
    fn lines_parse_with_ris_grammar() {
        let p = |s: &str| ShellLine::try_parse_from(words(s).unwrap());
        assert!(matches!(p("jobs").unwrap().action, Action::Jobs));
        assert!(matches!(
            p("count u:m0d:f").unwrap().action,
            Action::Ri(Command::Count(_))
        ));
        assert!(p("count --no-such-flag u:m0d:f").is_err());
        let Action::Start { words } = p("start motr.queue -i 1 as q").unwrap().action else {
            panic!("not start");
        };
        assert_eq!(
            start_words(&words).unwrap(),
            (w2(&["motr.queue", "-i", "1"]), "q".into())
        );
        assert!(start_words(&w2(&["motr.queue"])).is_err());
    }

    fn w2(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }
}
