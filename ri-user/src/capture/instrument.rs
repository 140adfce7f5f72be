//! An instrument of a session: a ri command line (written out, or a pack
//! instrument expanded by `pack`) that produces JSON events or aggregation
//! prints. `Runner` starts and stops it; today each instrument runs as ri's
//! own command code in a child `ri` (so the live commands and a session
//! produce the same data), which a session core can later run in-process.

use std::{
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
    sync::mpsc::Sender,
    time::{Duration, Instant},
};

use clap::Parser as _;

use super::{
    CaptureError,
    file::{InstrumentSpec, Targets},
};
use crate::cli::{Cli, Command as RiCommand};

/// What an instrument prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// One JSON object per event.
    Trace,
    /// One JSON print per interval (count, hist, latency, inflight, leaks).
    Aggregation,
}

/// One instrument, expanded to ri's command line.
#[derive(Debug, Clone)]
pub struct Instrument {
    /// Its name in the session file.
    pub name: String,
    /// ri's arguments (without `ri`), with `--json`, targets and interval.
    pub argv: Vec<String>,
    /// Events or prints.
    pub kind: Kind,
    /// Notes from expanding a pack instrument (probes left out).
    pub notes: Vec<String>,
}

/// Which processes and hosts every instrument gets, and how often
/// aggregations print.
pub struct Scope<'a> {
    /// Target process ids.
    pub pids: &'a [u32],
    /// Processes by name, passed on as `--comm`/`--exe` (on remote hosts,
    /// where this machine cannot resolve them).
    pub select: Option<&'a Targets>,
    /// Remote hosts (passed on as one `-H`), empty for this machine.
    pub hosts: &'a [String],
    /// ssh flags passed on with `-H`.
    pub ssh: &'a [String],
    /// The session's interval.
    pub interval: Duration,
}

/// Flags a `cmd =` instrument may not carry: the session gives them.
const SESSION_FLAGS: &[&str] = &["-p", "--pid", "-c", "--command", "-H", "--host"];

impl Instrument {
    /// Expands a session file's instrument against the session's targets.
    pub fn expand(name: &str, spec: &InstrumentSpec, scope: &Scope) -> Result<Self, CaptureError> {
        let bad = |m: String| CaptureError::Instrument(name.to_string(), m);
        let remote = !scope.hosts.is_empty();
        let (mut argv, notes) = match (&spec.run, &spec.cmd) {
            // A remote host expands the pack against its own processes.
            (Some(run), _) if remote => {
                let mut w = vec!["run".to_string(), run.clone()];
                w.extend(spec.params.iter().map(|(k, v)| format!("{k}={v}")));
                w.push("--json".into());
                w.extend(target_flags(scope));
                (w, Vec::new())
            }
            (Some(run), _) => {
                let opts = crate::pack::RunOptions {
                    instrument: run.clone(),
                    params: spec
                        .params
                        .iter()
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect(),
                    pids: scope.pids.to_vec(),
                    json: true,
                    quiet: false,
                    ..Default::default()
                };
                let p = crate::pack::command_line(&opts).map_err(|e| bad(e.to_string()))?;
                (p.argv, p.notes)
            }
            (None, Some(cmd)) => {
                let mut w = crate::target::split_words(cmd);
                if w.first().map(String::as_str) == Some("ri") {
                    w.remove(0);
                }
                if let Some(f) = w.iter().find(|a| SESSION_FLAGS.contains(&a.as_str())) {
                    return Err(bad(format!(
                        "'{f}': targets come from the session's [targets] (or the command line)"
                    )));
                }
                w.extend(target_flags(scope));
                if !w.iter().any(|a| a == "--json") {
                    w.push("--json".into());
                }
                (w, Vec::new())
            }
            (None, None) => return Err(bad("needs run or cmd".into())),
        };
        if remote {
            argv.extend(["-H".into(), scope.hosts.join(",")]);
            argv.extend(scope.ssh.iter().cloned());
        }
        let kind = kind_of(&argv).map_err(bad)?;
        if kind == Kind::Aggregation {
            set_interval(&mut argv, scope.interval);
            if remote {
                // Final prints keep each host's entries apart (by.host), so
                // each host's part of the bundle gets its own.
                argv.extend(["--by".into(), "host".into()]);
            }
        }
        Ok(Instrument {
            name: name.to_string(),
            argv,
            kind,
            notes,
        })
    }
}

/// `-p` for each pid, and on remote hosts `--comm`/`--exe` as given.
fn target_flags(scope: &Scope) -> Vec<String> {
    let mut w = Vec::new();
    for pid in scope.pids {
        w.extend(["-p".into(), pid.to_string()]);
    }
    if let Some(t) = scope.select {
        for c in &t.comm {
            w.extend(["--comm".into(), c.clone()]);
        }
        for e in &t.exe {
            w.extend(["--exe".into(), e.clone()]);
        }
    }
    w
}

/// Whether a pack instrument traces or aggregates (from its definition,
/// without resolving its targets).
fn pack_kind(run: &str) -> Result<Kind, String> {
    let packs = crate::pack::load_all(&[]).map_err(|e| e.to_string())?;
    let (loaded, name) = crate::pack::find(&packs, run).map_err(|e| e.to_string())?;
    Ok(match loaded.file.instruments[name].kind.as_str() {
        "trace" => Kind::Trace,
        _ => Kind::Aggregation,
    })
}

/// Whether the command line traces or aggregates; other commands cannot
/// be instruments.
fn kind_of(argv: &[String]) -> Result<Kind, String> {
    let cli = Cli::try_parse_from(std::iter::once("ri".to_string()).chain(argv.iter().cloned()))
        .map_err(|e| crate::cli::fault(&e))?;
    match cli.command {
        RiCommand::Trace(_) => Ok(Kind::Trace),
        RiCommand::Run(a) => pack_kind(&a.instrument),
        RiCommand::Count(_)
        | RiCommand::Hist(_)
        | RiCommand::Latency(_)
        | RiCommand::Inflight(_)
        | RiCommand::Leaks(_) => Ok(Kind::Aggregation),
        _ => Err(format!(
            "'{}' is not an instrument: use trace, count, hist, latency, inflight or leaks",
            argv.first().map_or("", String::as_str)
        )),
    }
}

/// Makes the command print every `interval` (replacing its own).
fn set_interval(argv: &mut Vec<String>, interval: Duration) {
    let secs = interval.as_secs_f64().to_string();
    if let Some(i) = argv.iter().position(|a| a == "--interval" || a == "-i")
        && let Some(v) = argv.get_mut(i + 1)
    {
        *v = secs;
        return;
    }
    argv.extend(["--interval".into(), secs]);
}

/// What a running instrument reports to the session loop.
#[derive(Debug)]
pub enum Msg {
    /// A line on its stdout (an event, or a print).
    Line(usize, Instant, String),
    /// A line on its stderr (attach line, notes, summary).
    Note(usize, String),
    /// Its stdout closed: it has ended.
    Ended(usize),
}

/// A started instrument.
pub struct Runner {
    child: Child,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Runner {
    /// Starts instrument `idx`'s command; its lines go to `tx`.
    pub fn start(idx: usize, inst: &Instrument, tx: &Sender<Msg>) -> Result<Runner, CaptureError> {
        let exe = std::env::current_exe()?;
        let mut child = Command::new(exe)
            .args(&inst.argv)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| CaptureError::Instrument(inst.name.clone(), e.to_string()))?;
        let out = child.stdout.take().expect("piped stdout");
        let err = child.stderr.take().expect("piped stderr");
        let (t1, t2) = (tx.clone(), tx.clone());
        let threads = vec![
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines().map_while(Result::ok) {
                    if t1.send(Msg::Line(idx, Instant::now(), line)).is_err() {
                        break;
                    }
                }
                let _ = t1.send(Msg::Ended(idx));
            }),
            std::thread::spawn(move || {
                for line in BufReader::new(err).lines().map_while(Result::ok) {
                    let _ = t2.send(Msg::Note(idx, line));
                }
            }),
        ];
        Ok(Runner { child, threads })
    }

    /// Asks it to stop as Ctrl-C would (it prints its final print and
    /// summary, and detaches).
    pub fn interrupt(&self) {
        // SAFETY: plain kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGINT) };
    }

    /// Waits for it to end (killing it after `limit`); its exit status.
    pub fn finish(mut self, limit: Duration) -> Option<i32> {
        let until = Instant::now() + limit;
        let status = loop {
            match self.child.try_wait() {
                Ok(Some(s)) => break s.code(),
                Ok(None) if Instant::now() < until => std::thread::sleep(Duration::from_millis(20)),
                _ => {
                    let _ = self.child.kill();
                    break self.child.wait().ok().and_then(|s| s.code());
                }
            }
        };
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        status
    }
}

/// Counts read from an instrument's summary lines on stderr.
#[derive(Debug, Default, Clone, Copy, serde::Serialize, serde::Deserialize)]
pub struct Counts {
    /// Events (trace) or hits (aggregations), as its summary says.
    pub events: u64,
    /// Events lost to a full ring buffer.
    pub lost: u64,
    /// Aggregation updates dropped (map full).
    pub dropped: u64,
}

impl Counts {
    /// Adds what one summary line says (`ri: N events, M lost`, `ri: N hits
    /// in K keys`, `ri: N updates dropped: ...`).
    pub fn read(&mut self, line: &str) {
        let Some(rest) = line.strip_prefix("ri: ") else {
            return;
        };
        let nums: Vec<u64> = rest
            .split(|c: char| !(c.is_ascii_digit() || c == ','))
            .filter(|w| !w.is_empty() && w.chars().any(|c| c.is_ascii_digit()))
            .filter_map(|w| w.replace(',', "").parse().ok())
            .collect();
        if rest.contains(" events, ") && rest.ends_with(" lost") && nums.len() == 2 {
            self.events += nums[0];
            self.lost += nums[1];
        } else if rest.contains(" hit") && rest.contains(" in ") && !nums.is_empty() {
            self.events += nums[0];
        } else if rest.contains("updates dropped") && !nums.is_empty() {
            self.dropped += nums[0];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summaries_are_counted() {
        let mut c = Counts::default();
        c.read("ri: 1200 events, 3 lost");
        c.read("ri: 66 hits in 5 keys");
        c.read("ri: 7 updates dropped: aggregation map full (10240 keys; raise --max-keys)");
        c.read("ri: attached 2 probes at 2 sites");
        assert_eq!((c.events, c.lost, c.dropped), (1266, 3, 7));
    }

    #[test]
    fn intervals_are_the_sessions() {
        let mut a: Vec<String> = ["count", "u:x:f", "--interval", "5"]
            .map(String::from)
            .to_vec();
        set_interval(&mut a, Duration::from_millis(500));
        assert_eq!(a[3], "0.5");
    }
}
