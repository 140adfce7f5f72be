//! `ri serve --config FILE`: the instruments to keep attached, strictly parsed.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use serde::Deserialize;

use super::ServeError;

/// Series kept per metric unless an instrument says otherwise.
pub const MAX_SERIES: usize = 1000;

/// The whole file.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Processes every instrument watches unless it names its own.
    #[serde(default)]
    pub pids: Vec<u32>,
    /// Processes by command name (`/proc/PID/comm`), followed across restarts.
    pub comm: Option<String>,
    /// Processes running this executable file, followed across restarts.
    pub exe: Option<PathBuf>,
    /// Series per metric; more are dropped and counted.
    pub max_series: Option<usize>,
    /// The instruments.
    #[serde(default, rename = "instrument")]
    pub instruments: Vec<Spec>,
}

/// One instrument: a pack's (`run`) or an ri command line (`command`).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    /// Metric name stem (default from `run`, or the first probe's function).
    pub name: Option<String>,
    /// `PACK.INSTRUMENT`.
    pub run: Option<String>,
    /// The pack instrument's parameters.
    #[serde(default)]
    pub params: BTreeMap<String, String>,
    /// An aggregating ri command line without `ri`: `["count", "u:...", "--by", "arg0"]`.
    pub command: Option<Vec<String>>,
    /// Its own processes.
    pub pids: Option<Vec<u32>>,
    /// Its own processes by command name.
    pub comm: Option<String>,
    /// Its own processes by executable file.
    pub exe: Option<PathBuf>,
    /// Its own series cap per metric.
    pub max_series: Option<usize>,
}

/// Which processes an instrument watches.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Targets {
    /// Fixed pids: detached when they exit, never re-attached.
    pub pids: Vec<u32>,
    /// Command names: the kernel adds their processes as they start.
    pub comms: Vec<String>,
    /// Executable files, followed the same way.
    pub exes: Vec<PathBuf>,
}

impl Targets {
    /// True when processes are chosen by name or file (followed).
    pub fn by_name(&self) -> bool {
        !self.comms.is_empty() || !self.exes.is_empty()
    }
}

/// An instrument as served: spec checked, targets and cap filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// Metric name stem.
    pub name: String,
    /// `PACK.INSTRUMENT`, or None for a command.
    pub run: Option<String>,
    /// Parameters.
    pub params: BTreeMap<String, String>,
    /// The command line.
    pub command: Vec<String>,
    /// Processes.
    pub targets: Targets,
    /// Series cap per metric.
    pub max_series: usize,
}

/// `s` as a Prometheus name part: `[a-zA-Z0-9_]`, not starting with a digit.
pub fn metric_name(s: &str) -> String {
    let mut out: String = s
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    if out.starts_with(|c: char| c.is_ascii_digit()) || out.is_empty() {
        out.insert(0, '_');
    }
    out
}

/// The 1-based line of byte `at` in `text`.
fn line_of(text: &str, at: usize) -> usize {
    text[..at.min(text.len())].matches('\n').count() + 1
}

/// Parses a config file's text (`path` for messages).
pub fn parse(text: &str, path: &Path) -> Result<Config, ServeError> {
    toml::from_str(text).map_err(|e| ServeError::Config {
        path: path.display().to_string(),
        line: e.span().map_or(0, |s| line_of(text, s.start)),
        reason: e.message().replace('\n', " "),
    })
}

/// Reads and parses a config file.
pub fn read(path: &Path) -> Result<Config, ServeError> {
    let text = std::fs::read_to_string(path).map_err(|e| ServeError::Config {
        path: path.display().to_string(),
        line: 0,
        reason: e.to_string(),
    })?;
    parse(&text, path)
}

impl Config {
    /// The config's instruments plus `extra` pack instruments (the command
    /// line's), with `cli` (the command line's -p, --comm, --exe) as
    /// default targets in place of the file's.
    pub fn resolve(&self, extra: &[String], cli: &Targets) -> Result<Vec<Resolved>, ServeError> {
        let defaults = if cli.pids.is_empty() && !cli.by_name() {
            Targets {
                pids: self.pids.clone(),
                comms: self.comm.iter().cloned().collect(),
                exes: self.exe.iter().cloned().collect(),
            }
        } else {
            cli.clone()
        };
        let specs = self
            .instruments
            .iter()
            .cloned()
            .chain(extra.iter().map(|r| Spec {
                run: Some(r.clone()),
                ..Default::default()
            }));
        let mut out: Vec<Resolved> = Vec::new();
        for (i, s) in specs.enumerate() {
            let (run, command) = match (&s.run, &s.command) {
                (Some(r), None) => (Some(r.clone()), Vec::new()),
                (None, Some(c)) if !c.is_empty() => (None, c.clone()),
                _ => {
                    return Err(ServeError::Instrument(format!(
                        "instrument {}: give either run = \"PACK.INSTRUMENT\" or command = [...]",
                        i + 1
                    )));
                }
            };
            let stem = s.name.clone().or_else(|| run.clone()).unwrap_or_else(|| {
                let probe = command.get(1).map_or("", String::as_str);
                let func = probe.rsplit(':').next().unwrap_or(probe);
                format!(
                    "{}_{}",
                    command[0],
                    func.split(['(', ' ']).next().unwrap_or("")
                )
            });
            let name = metric_name(&stem);
            if out.iter().any(|o| o.name == name) {
                return Err(ServeError::Instrument(format!(
                    "two instruments are named {name}: give one a name = \"...\""
                )));
            }
            let targets = if s.pids.is_some() || s.comm.is_some() || s.exe.is_some() {
                Targets {
                    pids: s.pids.clone().unwrap_or_default(),
                    comms: s.comm.iter().cloned().collect(),
                    exes: s.exe.iter().cloned().collect(),
                }
            } else {
                defaults.clone()
            };
            out.push(Resolved {
                name,
                run,
                params: s.params.clone(),
                command,
                targets,
                max_series: s.max_series.or(self.max_series).unwrap_or(MAX_SERIES),
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_are_named_with_their_line() {
        let text = "pids = [1]\n\n[[instrument]]\nrun = \"motr.ops\"\nparam = 3\n";
        let e = parse(text, Path::new("s.toml")).unwrap_err().to_string();
        assert!(e.starts_with("s.toml:5: unknown field `param`"), "{e}");
        assert!(!e.contains('\n'));
    }

    #[test]
    fn instruments_take_names_and_targets() {
        let text = "pids = [7]\n[[instrument]]\ncommand = [\"count\", \"u:/bin/x:f(a)\"]\n\
                    [[instrument]]\nrun = \"motr.fops\"\ncomm = \"m0d\"\n";
        let c = parse(text, Path::new("s.toml")).unwrap();
        let r = c
            .resolve(&["motr.ops".into()], &Targets::default())
            .unwrap();
        assert_eq!(r[0].name, "count_f");
        assert_eq!(r[0].targets.pids, [7]);
        assert_eq!(r[1].name, "motr_fops");
        assert_eq!(r[1].targets.comms, ["m0d"]);
        assert_eq!(r[2].name, "motr_ops");
        assert!(
            c.resolve(&["motr.fops".into()], &Targets::default())
                .is_err()
        );
        let cli = Targets {
            exes: vec!["/bin/m0d".into()],
            ..Default::default()
        };
        let r = c.resolve(&[], &cli).unwrap();
        assert_eq!(r[0].targets, cli);
        assert_eq!(r[1].targets.comms, ["m0d"]);
    }
}
