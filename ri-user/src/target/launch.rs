//! What a `-c` command will run, read from its command line: the program
//! and the `LD_LIBRARY_PATH` it gets (ri's own, or set by `VAR=value` words
//! and `env`), so its libraries can be found before it starts.

use std::{collections::HashMap, path::PathBuf};

use super::loader::LoadEnv;

/// The program a command runs and the loader environment it runs in.
#[derive(Debug, Clone)]
pub struct Launch {
    /// The executable.
    pub program: PathBuf,
    /// What the loader reads from its environment.
    pub env: LoadEnv,
}

/// Splits a command line into words as a shell would for a simple command
/// (quotes, backslashes, `$NAME` and `${NAME}` from `vars`), up to the first
/// operator (`;`, `|`, `&`, `<`, `>`, parentheses).
fn words(cmd: &str, vars: &HashMap<String, String>) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut started = false;
    let mut chars = cmd.chars().peekable();
    let mut quote: Option<char> = None;
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some('\''), '\'') | (Some('"'), '"') => quote = None,
            (Some('\''), c) => cur.push(c),
            (_, '\\') => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
                started = true;
            }
            (_, '$') => {
                let braced = chars.peek() == Some(&'{');
                if braced {
                    chars.next();
                }
                let mut name = String::new();
                while let Some(&n) = chars.peek() {
                    if n.is_ascii_alphanumeric() || n == '_' {
                        name.push(n);
                        chars.next();
                    } else {
                        break;
                    }
                }
                if braced {
                    chars.next();
                }
                if name.is_empty() {
                    cur.push('$');
                } else {
                    cur.push_str(vars.get(&name).map_or("", String::as_str));
                }
                started = true;
            }
            (Some(_), c) => cur.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                started = true;
            }
            (None, c) if c.is_whitespace() => {
                if started || !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                    started = false;
                }
            }
            (None, ';' | '|' | '&' | '<' | '>' | '(' | ')') => break,
            (None, c) => cur.push(c),
        }
    }
    if started || !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// `NAME=value` as a shell assignment.
fn assignment(word: &str) -> Option<(&str, &str)> {
    let (name, value) = word.split_once('=')?;
    let ok = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    ok.then_some((name, value))
}

impl Launch {
    /// Reads CMD as ri will run it, in ri's environment and working
    /// directory. None when the command line does not say plainly which
    /// program runs (ri then searches with its own environment).
    pub fn of_command(cmd: &str) -> Option<Self> {
        let mut vars: HashMap<String, String> = std::env::vars().collect();
        let cwd = std::env::current_dir().ok()?;
        let mut all = words(cmd, &vars).into_iter().peekable();
        if all.peek().map(String::as_str) == Some("exec") {
            all.next();
        }
        let mut in_env = false;
        let program = loop {
            let w = all.next()?;
            if let Some((k, v)) = assignment(&w) {
                vars.insert(k.to_string(), v.to_string());
                continue;
            }
            if !in_env && (w == "env" || w.ends_with("/env")) {
                in_env = true;
                continue;
            }
            if in_env && w.starts_with('-') {
                match w.as_str() {
                    "-i" | "--ignore-environment" | "-" => vars.clear(),
                    "-u" | "--unset" => {
                        vars.remove(&all.next()?);
                    }
                    "--" => {}
                    _ => return None,
                }
                continue;
            }
            break w;
        };
        let program = if program.contains('/') {
            cwd.join(program)
        } else {
            let path = vars.get("PATH")?;
            std::env::split_paths(path)
                .map(|d| cwd.join(d).join(&program))
                .find(|p| p.is_file())?
        };
        Some(Launch {
            program,
            env: LoadEnv {
                ld_library_path: vars.remove("LD_LIBRARY_PATH"),
                cwd,
            },
        })
    }

    /// A running process: its executable, `LD_LIBRARY_PATH` and directory.
    pub fn of_pid(pid: u32) -> Option<Self> {
        let environ = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
        let ld_library_path = environ
            .split(|&b| b == 0)
            .find_map(|kv| kv.strip_prefix(b"LD_LIBRARY_PATH="))
            .map(|v| String::from_utf8_lossy(v).into_owned());
        Some(Launch {
            program: std::fs::read_link(format!("/proc/{pid}/exe")).ok()?,
            env: LoadEnv {
                ld_library_path,
                cwd: std::fs::read_link(format!("/proc/{pid}/cwd")).ok()?,
            },
        })
    }
}

/// Splits a command line into words as a shell would, with `$NAME` from
/// ri's own environment.
pub fn split_words(cmd: &str) -> Vec<String> {
    words(cmd, &std::env::vars().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(cmd: &str) -> Vec<String> {
        let vars = HashMap::from([("D".to_string(), "/x".to_string())]);
        words(cmd, &vars)
    }

    #[test]
    fn shell_words() {
        assert_eq!(split("a 'b c' \"$D/y\" ${D}z"), ["a", "b c", "/x/y", "/xz"]);
        assert_eq!(split("a b; c"), ["a", "b"]);
        assert_eq!(split("a '' b\\ c"), ["a", "", "b c"]);
    }

    #[test]
    fn assignments_and_env() {
        let l = Launch::of_command("env LD_LIBRARY_PATH=/opt/lib sh -c x").unwrap();
        assert_eq!(l.env.ld_library_path.as_deref(), Some("/opt/lib"));
        assert!(l.program.ends_with("sh"), "{}", l.program.display());
        let l = Launch::of_command("LD_LIBRARY_PATH=/a:/b /bin/true").unwrap();
        assert_eq!(l.env.ld_library_path.as_deref(), Some("/a:/b"));
        assert!(Launch::of_command("env -i ls").is_none(), "no PATH left");
        assert!(Launch::of_command("no-such-program-here").is_none());
    }
}
