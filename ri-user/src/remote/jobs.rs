//! Background instruments over hosts (`ri shell -H`'s `start`): the
//! instrument runs on every host through the shell's kept connections and
//! prints what it added each second; the shell adds those up per host, so
//! `show` prints each host's totals so far. Closing a session's stdin
//! (`stop`, `exit`) or its silence (the shell killed) ends that remote ri,
//! which detaches.

use std::{
    collections::BTreeMap,
    ffi::OsString,
    io::{BufRead, BufReader, Write},
    process::ChildStdin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use serde_json::Value as Json;

use super::{HELLO, merge::Merged, session, ssh};

/// Seconds between the remote instrument's prints (the staleness of `show`).
pub const EVERY_SECS: u64 = 1;

/// How long `start` waits for every host to attach.
const ATTACH: Duration = Duration::from_secs(60);

/// How long a stopped host's ri may take to end before its ssh is ended.
const STOP: Duration = Duration::from_secs(5);

/// Why a background instrument over hosts did not start.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// Not one host attached it.
    #[error("start: no host attached the instrument ({0})")]
    NoneAttached(String),
}

/// How one host's instrument stands.
#[derive(Clone, Debug)]
enum HostState {
    /// Started, not attached yet.
    Starting,
    /// Attached.
    Attached,
    /// Its session ended: the exit status, stderr, and why in words.
    Ended {
        code: Option<i32>,
        stderr: String,
        why: String,
    },
}

/// What the sessions report, shared with their reader threads.
struct Reports {
    /// Counts and histograms: every host's additions so far, a row per host.
    merged: Merged,
    /// Other kinds (in flight, leaks): each host's latest print.
    latest: BTreeMap<String, Json>,
    /// Each host's state, in host order.
    states: Vec<HostState>,
    /// The remote ri's stderr lines not printed yet (`start` and `show`
    /// print them).
    lines: Vec<String>,
}

/// An instrument running on every host; dropping it ends it everywhere.
pub struct HostJob {
    hosts: Vec<String>,
    ssh: ssh::Ssh,
    args: Vec<OsString>,
    reports: Arc<Mutex<Reports>>,
    /// Each session's stdin: closing it ends that remote ri.
    stdins: Arc<Mutex<Vec<Option<ChildStdin>>>>,
    /// Each session's ssh process group.
    groups: Vec<i32>,
    /// Each session's reader (it waits for the ssh client).
    readers: Vec<Option<JoinHandle<()>>>,
    done: Arc<AtomicBool>,
    beat: Option<JoinHandle<()>>,
    started: Instant,
}

impl HostJob {
    /// Runs ri's arguments `args` (`run PACK.INSTRUMENT ...`) on every host,
    /// printing each interval as JSON, and waits until each host attached
    /// or failed (named on stderr). Must be called from the thread that
    /// outlives the job (its ssh clients end with that thread).
    pub fn start(ssh: &ssh::Ssh, hosts: &[String], args: &[String]) -> Result<HostJob, JobError> {
        let mut args: Vec<OsString> = args.iter().map(OsString::from).collect();
        args.extend(["--json", "--interval"].map(OsString::from));
        args.push(EVERY_SECS.to_string().into());
        let n = hosts.len();
        let mut job = HostJob {
            hosts: hosts.to_vec(),
            ssh: ssh.clone(),
            args,
            reports: Arc::new(Mutex::new(Reports {
                merged: Merged::new(true),
                latest: BTreeMap::new(),
                states: vec![HostState::Starting; n],
                lines: Vec::new(),
            })),
            stdins: Arc::new(Mutex::new((0..n).map(|_| None).collect())),
            groups: vec![0; n],
            readers: (0..n).map(|_| None).collect(),
            done: Arc::new(AtomicBool::new(false)),
            beat: None,
            started: Instant::now(),
        };
        for i in 0..n {
            job.launch(i);
        }
        job.beat = Some(heartbeat(job.stdins.clone(), job.done.clone()));
        job.wait_attached();
        let states = job.reports.lock().unwrap().states.clone();
        if !states.iter().any(|s| matches!(s, HostState::Attached)) {
            let why: Vec<String> = (job.hosts.iter().zip(&states))
                .map(|(h, s)| match s {
                    HostState::Ended { why, .. } => format!("{h}: {why}"),
                    _ => format!("{h}: not attached"),
                })
                .collect();
            return Err(JobError::NoneAttached(why.join("; ")));
        }
        Ok(job)
    }

    /// Starts host `i`'s session and its readers.
    fn launch(&mut self, i: usize) {
        let host = self.hosts[i].clone();
        let reports = self.reports.clone();
        let set = |state: HostState| reports.lock().unwrap().states[i] = state;
        set(HostState::Starting);
        let mut child = match self.ssh.session(&host, &self.args) {
            Ok(c) => c,
            Err(e) => {
                return set(HostState::Ended {
                    code: Some(255),
                    stderr: String::new(),
                    why: format!("cannot run ssh: {e}"),
                });
            }
        };
        self.stdins.lock().unwrap()[i] = child.stdin.take();
        self.groups[i] = child.id() as i32;
        let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
        let err_thread = std::thread::spawn({
            let (reports, host) = (reports.clone(), host.clone());
            move || {
                let mut all = String::new();
                let mut remote = false;
                for line in BufReader::new(stderr?).lines().map_while(Result::ok) {
                    if line == HELLO {
                        remote = true;
                        continue;
                    }
                    let mut r = reports.lock().unwrap();
                    if remote && !line.starts_with("ri: error: ") {
                        if line.contains("attached") {
                            r.states[i] = HostState::Attached;
                        }
                        r.lines.push(format!("{host}: {line}"));
                    }
                    all.push_str(&line);
                    all.push('\n');
                }
                Some((all, remote))
            }
        });
        self.readers[i] = Some(std::thread::spawn(move || {
            for line in BufReader::new(stdout.expect("piped stdout"))
                .lines()
                .map_while(Result::ok)
            {
                if let Ok(Json::Object(doc)) = serde_json::from_str::<Json>(&line) {
                    let doc = Json::Object(doc);
                    let mut r = reports.lock().unwrap();
                    if Merged::mergeable(&doc) {
                        // Intervals are additions; the final print repeats them.
                        if doc["type"] == "interval" {
                            r.merged.add(&host, &doc);
                        }
                    } else {
                        r.latest.insert(host.clone(), doc);
                    }
                }
            }
            let code = child.wait().ok().and_then(|s| s.code());
            let (stderr, remote) = err_thread.join().ok().flatten().unwrap_or_default();
            let why = ssh::classify(code, &stderr, remote)
                .map_or_else(|| "ended".to_string(), |f| f.to_string());
            reports.lock().unwrap().states[i] = HostState::Ended { code, stderr, why };
        }));
    }

    /// Waits until every host attached or ended (at most [`ATTACH`]),
    /// printing the remote lines as they come; with `--push`, copies ri to
    /// a host that lacks it and starts it again there.
    fn wait_attached(&mut self) {
        let end = Instant::now() + ATTACH;
        let mut pushed = vec![false; self.hosts.len()];
        loop {
            let (lines, states) = {
                let mut r = self.reports.lock().unwrap();
                (std::mem::take(&mut r.lines), r.states.clone())
            };
            for l in lines {
                eprintln!("{l}");
            }
            for (i, s) in states.iter().enumerate() {
                let HostState::Ended { code, stderr, .. } = s else {
                    continue;
                };
                if !pushed[i] && self.ssh.needs_upload(*code, stderr) {
                    pushed[i] = true;
                    self.join_reader(i);
                    match self.ssh.upload(&self.hosts[i]) {
                        Ok(()) => self.launch(i),
                        Err(f) => {
                            self.reports.lock().unwrap().states[i] = HostState::Ended {
                                code: None,
                                stderr: String::new(),
                                why: f.to_string(),
                            }
                        }
                    }
                }
            }
            let states = self.reports.lock().unwrap().states.clone();
            let pending = states
                .iter()
                .filter(|s| matches!(s, HostState::Starting))
                .count();
            if pending == 0 || Instant::now() > end {
                for (h, s) in self.hosts.iter().zip(&states) {
                    match s {
                        HostState::Ended { why, .. } => eprintln!("ri: {h}: failed: {why}"),
                        HostState::Starting => eprintln!(
                            "ri: {h}: not attached after {} s (it may still attach)",
                            ATTACH.as_secs()
                        ),
                        HostState::Attached => {}
                    }
                }
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn join_reader(&mut self, i: usize) {
        if let Some(r) = self.readers[i].take() {
            let _ = r.join();
        }
    }

    /// Seconds since it started.
    pub fn age(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    /// Where it runs: the hosts, each ended one with why.
    pub fn hosts_text(&self) -> String {
        let r = self.reports.lock().unwrap();
        let parts: Vec<String> = (self.hosts.iter().zip(&r.states))
            .map(|(h, s)| match s {
                HostState::Ended { why, .. } => format!("{h} (ended: {why})"),
                HostState::Starting => format!("{h} (attaching)"),
                HostState::Attached => h.clone(),
            })
            .collect();
        parts.join(",")
    }

    /// Prints each host's totals so far (as of its last print, at most
    /// [`EVERY_SECS`] old): counts and histograms as `ri -H` merges them,
    /// keyed by host (one JSON object when `json`); in flight and leaks
    /// as each host's latest print, which names its host.
    pub fn print(&self, out: &mut impl Write, json: bool) -> std::io::Result<()> {
        let mut r = self.reports.lock().unwrap();
        // What the hosts said since `start` (a process gone, a lost probe).
        for l in r.lines.drain(..) {
            eprintln!("{l}");
        }
        if r.merged.is_empty() && r.latest.is_empty() {
            writeln!(
                out,
                "nothing yet: the hosts print every {EVERY_SECS} s ({})",
                self.hosts_text()
            )?;
        } else if !r.merged.is_empty() {
            if json {
                writeln!(out, "{}", r.merged.json(&self.hosts))?;
            } else {
                r.merged.text(out)?;
            }
        }
        for (host, doc) in &r.latest {
            if let Json::Object(m) = doc {
                writeln!(out, "{}", session::tagged(host, m.clone()))?;
            }
        }
        for (h, s) in self.hosts.iter().zip(&r.states) {
            if let HostState::Ended { why, .. } = s {
                eprintln!("ri: {h}: ended: {why}");
            }
        }
        out.flush()
    }
}

/// Writes a line to every session every [`super::child::HEARTBEAT`]: a
/// remote ri that hears nothing for 2 s ends (the shell was killed, or
/// the connection dropped).
fn heartbeat(stdins: Arc<Mutex<Vec<Option<ChildStdin>>>>, done: Arc<AtomicBool>) -> JoinHandle<()> {
    std::thread::spawn(move || {
        while !done.load(Ordering::Relaxed) {
            std::thread::sleep(super::child::HEARTBEAT);
            for s in stdins.lock().unwrap().iter_mut().flatten() {
                let _ = s.write(b"\n");
            }
        }
    })
}

impl Drop for HostJob {
    /// Closes every session's stdin (each remote ri then detaches and
    /// ends), waits [`STOP`] for them, then ends the ssh clients left.
    fn drop(&mut self) {
        self.done.store(true, Ordering::Relaxed);
        for s in self.stdins.lock().unwrap().iter_mut() {
            s.take();
        }
        let end = Instant::now() + STOP;
        while Instant::now() < end && self.readers.iter().flatten().any(|r| !r.is_finished()) {
            std::thread::sleep(Duration::from_millis(20));
        }
        for (r, &g) in self.readers.iter().zip(&self.groups) {
            if r.as_ref().is_some_and(|r| !r.is_finished()) && g > 0 {
                // SAFETY: signals this job's own ssh client's process group.
                unsafe { libc::kill(-g, libc::SIGTERM) };
            }
        }
        for i in 0..self.readers.len() {
            self.join_reader(i);
        }
        if let Some(b) = self.beat.take() {
            let _ = b.join();
        }
    }
}
