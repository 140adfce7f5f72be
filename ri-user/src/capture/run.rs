//! `ri session run`: start the instruments, route their output to the
//! bundle (or their flight recorders), check the triggers, show progress,
//! and at the end stop everything and write the manifest.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::PathBuf,
    sync::{
        atomic::{AtomicU64, Ordering},
        mpsc::{Receiver, RecvTimeoutError, Sender, channel},
    },
    time::{Duration, Instant},
};

use serde_json::Value;

use super::{
    CaptureError,
    bundle::{InstrumentInfo, Manifest, Stamp, Writer, utc_text},
    file::{InstrumentSpec, SessionFile, Targets, TriggerSpec},
    hosts::{host_file, host_of, per_host},
    instrument::{Instrument, Kind, Msg, Runner, Scope},
    recorder::Recorder,
    targets,
    trigger::{Armed, Condition, holds, value_of},
};

/// What `ri session run` was asked.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// The session file.
    pub file: PathBuf,
    /// The bundle directory (default: a timestamped one here).
    pub out: Option<PathBuf>,
    /// Overrides the file's duration.
    pub duration: Option<Duration>,
    /// Also write `BUNDLE.tar.zst`.
    pub archive: bool,
    /// Targets from the command line (replace the file's).
    pub targets: Targets,
    /// ssh flags passed on with `-H` (`--ssh-config`, `--fanout`, `--push`).
    pub ssh: Vec<String>,
    /// No progress line.
    pub quiet: bool,
}

/// One instrument while the session runs.
pub(super) struct Live {
    pub inst: Instrument,
    pub spec: InstrumentSpec,
    pub runner: Option<Runner>,
    pub attached: bool,
    /// Asked to stop (its end is expected).
    pub stopping: bool,
    pub stop_at: Option<Instant>,
    pub recorder: Option<Recorder>,
    pub last_print: Option<Value>,
    /// A fleet session's last print of each host.
    pub host_prints: BTreeMap<String, Value>,
    /// Hosts that said `attached`.
    pub attached_hosts: BTreeSet<String>,
    pub interval_lines: u64,
    pub info: InstrumentInfo,
    pub log: String,
}

/// One trigger while the session runs.
pub(super) struct Trig {
    pub spec: TriggerSpec,
    pub name: String,
    pub when: String,
    /// Per host (`""`: this machine): each host's condition is its own.
    pub armed: BTreeMap<String, Armed>,
}

/// Everything a running session holds.
pub(super) struct Session {
    pub file: SessionFile,
    pub lives: Vec<Live>,
    pub trigs: Vec<Trig>,
    pub writer: Writer,
    pub tx: Sender<Msg>,
    pub start: Instant,
    pub start_stamp: Stamp,
    pub pids: Vec<u32>,
    /// The targets as chosen (for remote `report` and `ctl`).
    pub targets: Targets,
    /// Remote hosts (a fleet session), empty for this machine.
    pub hosts: Vec<String>,
    /// ssh flags passed on with `-H`.
    pub ssh: Vec<String>,
    pub manifest: Manifest,
}

/// Signals received, one bit per signal number.
static SIGNALS: AtomicU64 = AtomicU64::new(0);

extern "C" fn on_signal(sig: libc::c_int) {
    SIGNALS.fetch_or(1 << sig, Ordering::SeqCst);
}

/// Catches Ctrl-C, SIGTERM and the trigger signals (they are reset in the
/// instruments' processes by exec).
fn catch_signals() {
    for s in [
        libc::SIGINT,
        libc::SIGTERM,
        libc::SIGUSR1,
        libc::SIGUSR2,
        libc::SIGHUP,
    ] {
        // SAFETY: the handler only does an atomic or.
        unsafe { libc::signal(s, on_signal as *const () as libc::sighandler_t) };
    }
}

/// Takes the signals received since the last call.
fn take_signals() -> u64 {
    SIGNALS.swap(0, Ordering::SeqCst)
}

/// Runs a session to its end; the bundle directory.
pub fn run(opts: &RunOptions) -> Result<PathBuf, CaptureError> {
    let origin = opts.file.display().to_string();
    let text = std::fs::read_to_string(&opts.file)
        .map_err(|e| CaptureError::File(format!("{origin}: {e}")))?;
    let mut file = super::file::parse(&text, &origin)?;
    if opts.duration.is_some() {
        file.duration = opts.duration;
    }
    let name = file.name.clone().unwrap_or_else(|| {
        opts.file
            .file_stem()
            .map_or("session".into(), |s| s.to_string_lossy().into_owned())
    });
    let chosen = targets::choose(&file.targets, &opts.targets);
    // With a remote host among them, every host is reached through ssh
    // and resolves the targets itself; else this machine's processes.
    let remote = match targets::remote(&chosen.hosts).is_empty() {
        true => Vec::new(),
        false => chosen.hosts.clone(),
    };
    let pids = match remote.is_empty() {
        true => targets::resolve(&chosen)?,
        false => chosen.pids.clone(),
    };
    let scope = Scope {
        pids: &pids,
        select: (!remote.is_empty()).then_some(&chosen),
        hosts: &remote,
        ssh: &opts.ssh,
        interval: file.interval,
    };
    let mut lives = Vec::new();
    for (iname, spec) in &file.instruments {
        let inst = Instrument::expand(iname, spec, &scope)?;
        for n in &inst.notes {
            crate::text::say(&format!("ri: {iname}: {n}"));
        }
        lives.push(Live::new(inst, spec));
    }
    let trigs = file
        .triggers
        .iter()
        .enumerate()
        .map(|(i, t)| Trig {
            spec: t.clone(),
            name: t
                .name
                .clone()
                .unwrap_or_else(|| format!("trigger-{}", i + 1)),
            when: when_text(&text, i),
            armed: BTreeMap::new(),
        })
        .collect();
    let start_stamp = Stamp::now();
    let dir = opts.out.clone().unwrap_or_else(|| {
        let t = utc_text(start_stamp.unix as i64).replace([':', '-'], "");
        PathBuf::from(format!("ri-session-{name}-{}", t.trim_end_matches('Z')))
    });
    let writer = Writer::create(&dir)?;
    writer.file("session.toml", text.as_bytes())?;
    let hosts = match remote.is_empty() {
        true => vec![targets::hostname()],
        false => remote.clone(),
    };
    let parts = match remote.is_empty() {
        true => Vec::new(),
        false => targets::parts(&remote, &opts.ssh, &chosen),
    };
    for p in &parts {
        if let Some(e) = &p.error {
            crate::text::say(&format!("ri: {}: cannot read its targets: {e}", p.host));
        }
    }
    let manifest = Manifest {
        ri_version: env!("CARGO_PKG_VERSION").into(),
        session: name,
        session_file: origin,
        session_text: text.clone(),
        hosts,
        kernel: targets::kernel(),
        targets: match remote.is_empty() {
            true => pids.iter().map(|&p| targets::info(p)).collect(),
            false => parts.iter().flat_map(|p| p.targets.clone()).collect(),
        },
        start: start_stamp.clone(),
        end: None,
        interval: file.interval.as_secs_f64(),
        instruments: Vec::new(),
        fired: Vec::new(),
        lost: 0,
        dropped: 0,
        losses_unknown: Vec::new(),
        parts,
    };
    let (tx, rx) = channel();
    catch_signals();
    let mut s = Session {
        file,
        lives,
        trigs,
        writer,
        tx,
        start: Instant::now(),
        start_stamp,
        pids,
        targets: chosen,
        hosts: remote,
        ssh: opts.ssh.clone(),
        manifest,
    };
    let result = s
        .attach_all(&rx)
        .and_then(|()| s.main_loop(&rx, opts.quiet));
    s.stop_all(&rx);
    let interrupted = result.is_err();
    let archive = opts.archive && !interrupted;
    let dir = s.finish()?;
    result?;
    if archive {
        let a = super::archive::pack(&dir)?;
        crate::text::say(&format!("ri: session archive {}", a.display()));
    }
    Ok(dir)
}

/// The `when` text of trigger `i` as written in the file.
fn when_text(text: &str, i: usize) -> String {
    #[derive(serde::Deserialize)]
    struct Raw {
        #[serde(default)]
        triggers: Vec<toml::Table>,
    }
    toml::from_str::<Raw>(text)
        .ok()
        .and_then(|r| r.triggers.get(i)?.get("when")?.as_str().map(String::from))
        .unwrap_or_default()
}

impl Live {
    fn new(inst: Instrument, spec: &InstrumentSpec) -> Live {
        let source = match (&spec.run, &spec.cmd) {
            (Some(r), _) => format!("run = {r}"),
            (_, Some(c)) => format!("cmd = {c}"),
            _ => String::new(),
        };
        let recorder = spec.flight_recorder.map(Recorder::new);
        Live {
            info: InstrumentInfo {
                name: inst.name.clone(),
                source,
                argv: inst.argv.clone(),
                kind: inst.kind,
                lines: 0,
                counts: Default::default(),
                flight_recorder: recorder.as_ref().map(Recorder::describe),
                runs: Vec::new(),
                exits: Vec::new(),
                files: Vec::new(),
                hosts: BTreeMap::new(),
                failed: Vec::new(),
                losses_unknown: false,
            },
            inst,
            spec: spec.clone(),
            runner: None,
            attached: false,
            stopping: false,
            stop_at: None,
            recorder,
            last_print: None,
            host_prints: BTreeMap::new(),
            attached_hosts: BTreeSet::new(),
            interval_lines: 0,
            log: String::new(),
        }
    }

    /// The bundle file its output goes to (unless it records in memory).
    pub fn out_file(&self) -> String {
        match self.inst.kind {
            Kind::Trace => format!("events/{}.jsonl.zst", self.inst.name),
            Kind::Aggregation => format!("snapshots/{}.jsonl.zst", self.inst.name),
        }
    }
}

impl Session {
    /// Seconds since the session started.
    pub fn t(&self, at: Instant) -> f64 {
        at.saturating_duration_since(self.start).as_secs_f64()
    }

    /// CLOCK_MONOTONIC ns at `at`.
    pub fn mono(&self, at: Instant) -> u64 {
        self.start_stamp.mono_ns + at.saturating_duration_since(self.start).as_nanos() as u64
    }

    /// Starts instrument `i`.
    pub fn start_instrument(&mut self, i: usize) -> Result<(), CaptureError> {
        if self.lives[i].runner.is_some() {
            return Ok(());
        }
        let r = Runner::start(i, &self.lives[i].inst, &self.tx)?;
        let t = self.t(Instant::now());
        let l = &mut self.lives[i];
        l.runner = Some(r);
        l.attached = false;
        l.attached_hosts.clear();
        l.stopping = false;
        l.info.runs.push((t, None));
        Ok(())
    }

    /// Asks instrument `i` to stop.
    pub fn stop_instrument(&mut self, i: usize) {
        if let Some(r) = &self.lives[i].runner {
            r.interrupt();
        }
        self.lives[i].stopping = true;
        self.lives[i].stop_at = None;
    }

    /// Starts the instruments that start with the session and waits until
    /// each has attached (or failed: the session does not start).
    fn attach_all(&mut self, rx: &Receiver<Msg>) -> Result<(), CaptureError> {
        for i in 0..self.lives.len() {
            if self.lives[i].spec.start {
                self.start_instrument(i)?;
            }
        }
        let until = Instant::now() + Duration::from_secs(120);
        while self.lives.iter().any(|l| l.runner.is_some() && !l.attached) {
            if take_signals() & (1 << libc::SIGINT | 1 << libc::SIGTERM) != 0 {
                return Err(CaptureError::Interrupted);
            }
            match rx.recv_timeout(Duration::from_millis(50)) {
                Ok(Msg::Ended(i)) if !self.lives[i].attached => {
                    let l = &self.lives[i];
                    let why = l
                        .log
                        .lines()
                        .rfind(|l| l.starts_with("ri: error"))
                        .or_else(|| l.log.lines().last())
                        .unwrap_or("ended before attaching")
                        .to_string();
                    return Err(CaptureError::Instrument(l.inst.name.clone(), why));
                }
                Ok(m) => self.handle(m)?,
                Err(RecvTimeoutError::Timeout) if Instant::now() > until => {
                    return Err(CaptureError::Bundle(
                        "instruments did not attach within 120 s".into(),
                    ));
                }
                Err(_) => {}
            }
        }
        let attached = self.lives.iter().filter(|l| l.attached).count();
        crate::text::say(&format!(
            "ri: session {}: {attached} of {} instruments attached to {}; bundle {}",
            self.manifest.session,
            self.lives.len(),
            if !self.hosts.is_empty() {
                format!("hosts {}", self.hosts.join(","))
            } else if self.pids.is_empty() {
                "every process".to_string()
            } else {
                format!("pid {:?}", self.pids)
            },
            self.writer.dir.display()
        ));
        Ok(())
    }

    /// Takes one message from an instrument.
    pub fn handle(&mut self, m: Msg) -> Result<(), CaptureError> {
        match m {
            Msg::Line(i, at, line) => self.line(i, at, line),
            Msg::Note(i, line) => {
                let (host, said) = self.host_of_note(&line);
                let l = &mut self.lives[i];
                if said.starts_with("ri: attached") {
                    match &host {
                        Some(h) => {
                            l.attached_hosts.insert(h.clone());
                            l.attached = l.attached_hosts.len() == self.hosts.len();
                        }
                        None => l.attached = true,
                    }
                }
                l.info.counts.read(said);
                if let Some(h) = &host {
                    l.info.hosts.entry(h.clone()).or_default().read(said);
                }
                if let Some(rest) = line.strip_prefix("ri: ")
                    && let Some((h, why)) = rest.split_once(": failed: ")
                    && self.hosts.iter().any(|x| x == h)
                {
                    l.info.failed.push(format!("{h}: {why}"));
                    crate::text::say(&format!("ri: {}: {line}", l.inst.name));
                }
                if line.contains(" lost") && !line.ends_with(" 0 lost") || line.contains("dropped")
                {
                    crate::text::say(&format!("ri: {}: {}", l.inst.name, line));
                }
                l.log.push_str(&line);
                l.log.push('\n');
                Ok(())
            }
            Msg::Ended(i) => {
                let t = self.t(Instant::now());
                let l = &mut self.lives[i];
                if let Some(r) = l.runner.take() {
                    let status = r.finish(Duration::from_secs(5));
                    l.info.exits.push(status);
                    if !l.stopping && l.attached {
                        let last = l.log.lines().last().unwrap_or_default();
                        crate::text::say(&format!(
                            "ri: instrument {} ended by itself (exit status {}): {last}",
                            l.inst.name,
                            status.map_or("none".into(), |s| s.to_string())
                        ));
                    }
                }
                if let Some(run) = l.info.runs.last_mut() {
                    run.1 = Some(t);
                }
                Ok(())
            }
        }
    }

    /// A stderr line's host (`HOST: ri: ...` from a remote ri) and what
    /// it said.
    fn host_of_note<'a>(&self, line: &'a str) -> (Option<String>, &'a str) {
        if let Some((h, rest)) = line.split_once(": ")
            && self.hosts.iter().any(|x| x == h)
        {
            return (Some(h.to_string()), rest);
        }
        (None, line)
    }

    /// One output line: to the flight recorder or the bundle (a fleet
    /// session's under its host's part); a print is also what value
    /// conditions read.
    fn line(&mut self, i: usize, at: Instant, line: String) -> Result<(), CaptureError> {
        let (t, mono) = (self.t(at), self.mono(at));
        let fleet = !self.hosts.is_empty();
        let l = &mut self.lives[i];
        l.info.lines += 1;
        l.interval_lines += 1;
        if l.inst.kind == Kind::Trace {
            let host = match fleet {
                true => serde_json::from_str::<Value>(&line)
                    .ok()
                    .and_then(|v| host_of(&v)),
                false => None,
            };
            return self.store(i, at, host.as_deref(), line);
        }
        let v: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
        let prints = match fleet {
            true => per_host(v),
            false => vec![(None, v)],
        };
        for (host, v) in prints {
            let s = format!("{{\"t\":{t:.6},\"mono_ns\":{mono},\"print\":{v}}}");
            let l = &mut self.lives[i];
            l.last_print = Some(v.clone());
            l.host_prints.insert(host.clone().unwrap_or_default(), v);
            self.store(i, at, host.as_deref(), s)?;
            self.check_values(i, host.unwrap_or_default())?;
        }
        Ok(())
    }

    /// Keeps a line in instrument `i`'s flight recorder, or writes it to
    /// its file (under `hosts/HOST/` for a host's line).
    fn store(
        &mut self,
        i: usize,
        at: Instant,
        host: Option<&str>,
        line: String,
    ) -> Result<(), CaptureError> {
        let l = &mut self.lives[i];
        if let Some(r) = l.recorder.as_mut() {
            r.push(at, line);
            return Ok(());
        }
        let f = host_file(host, &l.out_file());
        if !l.info.files.contains(&f) {
            l.info.files.push(f.clone());
        }
        self.writer.line(&f, &line)
    }

    /// Value conditions on instrument `i`'s new print (of `host`).
    fn check_values(&mut self, i: usize, host: String) -> Result<(), CaptureError> {
        let Some(print) = self.lives[i].last_print.clone() else {
            return Ok(());
        };
        if print.get("type").and_then(Value::as_str) == Some("final") {
            return Ok(());
        }
        let name = self.lives[i].inst.name.clone();
        for k in 0..self.trigs.len() {
            let Condition::Value {
                inst,
                field,
                cmp,
                threshold,
            } = &self.trigs[k].spec.when
            else {
                continue;
            };
            if *inst != name {
                continue;
            }
            let (cmp, threshold) = (*cmp, *threshold);
            let v = value_of(&print, field);
            let need = self.trigs[k].spec.intervals;
            // Hosts are checked on their own; the trigger fires once while
            // any host's condition goes on holding.
            let others = self.trigs[k]
                .armed
                .iter()
                .any(|(h, a)| *h != host && a.latched);
            let armed = self.trigs[k].armed.entry(host.clone()).or_default();
            if armed.observe(holds(cmp, v, threshold), need) && !others {
                self.fire(k, v)?;
            }
        }
        Ok(())
    }

    /// Conditions checked once per interval: trace instruments' events,
    /// and times.
    fn check_interval(&mut self) -> Result<(), CaptureError> {
        let elapsed = self.start.elapsed();
        for k in 0..self.trigs.len() {
            let (h, v) = match &self.trigs[k].spec.when {
                Condition::Fired(n) => {
                    let l = self.lives.iter().find(|l| l.inst.name == *n);
                    let n = l.map_or(0, |l| l.interval_lines);
                    (n > 0, Some(n as f64))
                }
                Condition::Value {
                    inst,
                    field,
                    cmp,
                    threshold,
                } if field == "events" => {
                    let l = self.lives.iter().find(|l| l.inst.name == *inst);
                    match l {
                        Some(l) if l.inst.kind == Kind::Trace => {
                            let n = l.interval_lines as f64;
                            (holds(*cmp, Some(n), *threshold), Some(n))
                        }
                        _ => continue,
                    }
                }
                Condition::After(d) => (elapsed >= *d, None),
                _ => continue,
            };
            let need = self.trigs[k].spec.intervals;
            if self.trigs[k]
                .armed
                .entry(String::new())
                .or_default()
                .observe(h, need)
            {
                self.fire(k, v)?;
            }
        }
        for l in &mut self.lives {
            if l.inst.kind == Kind::Trace {
                l.interval_lines = 0;
            }
        }
        Ok(())
    }

    /// Until the duration ends or Ctrl-C: messages, timers, triggers and
    /// the progress line.
    fn main_loop(&mut self, rx: &Receiver<Msg>, quiet: bool) -> Result<(), CaptureError> {
        let interval = self.file.interval;
        let end = self.file.duration.map(|d| self.start + d);
        let mut next_tick = Instant::now() + interval;
        let tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
        let mut ticks = 0u64;
        loop {
            let sigs = take_signals();
            if sigs & (1 << libc::SIGINT | 1 << libc::SIGTERM) != 0 {
                break;
            }
            for k in 0..self.trigs.len() {
                if let Condition::Signal(s) = self.trigs[k].spec.when
                    && sigs & (1 << s) != 0
                {
                    self.fire(k, None)?;
                }
            }
            let now = Instant::now();
            if end.is_some_and(|e| now >= e) {
                break;
            }
            for i in 0..self.lives.len() {
                if self.lives[i].stop_at.is_some_and(|t| now >= t) {
                    self.stop_instrument(i);
                }
            }
            if now >= next_tick {
                next_tick += interval;
                ticks += 1;
                if !self.pids.is_empty()
                    && self.pids.iter().all(|&p| !ri_control::pid_alive(p as i32))
                {
                    crate::text::say("ri: session: every target process has exited");
                    break;
                }
                self.check_interval()?;
                if !quiet && (tty || ticks.is_multiple_of(10)) {
                    self.progress(end, tty);
                }
            }
            match rx.recv_timeout(Duration::from_millis(20)) {
                Ok(m) => self.handle(m)?,
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        if tty && !quiet {
            eprintln!();
        }
        Ok(())
    }

    /// The progress line: time left, events, losses, triggers fired.
    fn progress(&self, end: Option<Instant>, tty: bool) {
        let left = match end {
            Some(e) => format!(
                "{:.0}s left",
                e.saturating_duration_since(Instant::now()).as_secs_f64()
            ),
            None => format!("{:.0}s", self.start.elapsed().as_secs_f64()),
        };
        let lines: u64 = self.lives.iter().map(|l| l.info.lines).sum();
        let lost: u64 = self.lives.iter().map(|l| l.info.counts.lost).sum();
        let line = format!(
            "ri: session {left}, {lines} events and prints, {lost} lost, {} fired",
            crate::text::counted(self.manifest.fired.len() as u64, "trigger")
        );
        if tty {
            eprint!("\r\x1b[K{line}");
        } else {
            crate::text::say(&line);
        }
    }

    /// Stops every running instrument and takes their last output (final
    /// prints, summaries) until they have all ended.
    fn stop_all(&mut self, rx: &Receiver<Msg>) {
        for i in 0..self.lives.len() {
            self.stop_instrument(i);
        }
        let until = Instant::now() + Duration::from_secs(15);
        while self.lives.iter().any(|l| l.runner.is_some()) && Instant::now() < until {
            match rx.recv_timeout(Duration::from_millis(50)) {
                Ok(m) => {
                    if let Err(e) = self.handle(m) {
                        crate::text::say(&format!("ri: {e}"));
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        for l in &mut self.lives {
            if let Some(r) = l.runner.take() {
                crate::text::say(&format!(
                    "ri: instrument {} did not stop within 15 s: killed; its losses are unknown",
                    l.inst.name
                ));
                l.info.exits.push(r.finish(Duration::from_secs(1)));
            }
        }
        // Lines sent before the stragglers were killed.
        while let Ok(m) = rx.try_recv() {
            if let Msg::Line(..) | Msg::Note(..) = m {
                let _ = self.handle(m);
            }
        }
    }

    /// Writes logs and the manifest; the bundle directory.
    fn finish(mut self) -> Result<PathBuf, CaptureError> {
        for l in &mut self.lives {
            if !l.log.is_empty() {
                let f = format!("logs/{}.stderr", l.inst.name);
                self.writer.file(&f, l.log.as_bytes())?;
                l.info.files.push(f);
            }
            let prints: Vec<(Option<&str>, &Value)> = match self.hosts.is_empty() {
                true => l.last_print.iter().map(|p| (None, p)).collect(),
                false => l
                    .host_prints
                    .iter()
                    .map(|(h, p)| (Some(h.as_str()), p))
                    .collect(),
            };
            for (host, print) in prints {
                if let Some(f) = super::show::folded_of(Some(print)) {
                    let rel = host_file(host, &format!("folded/{}.folded", l.inst.name));
                    self.writer.file(&rel, f.as_bytes())?;
                    l.info.files.push(rel);
                }
            }
            // A run that ended by a signal (killed) printed no summary.
            l.info.losses_unknown = l.info.exits.iter().any(Option::is_none);
        }
        let m = &mut self.manifest;
        for t in &mut m.targets {
            t.threads.extend(targets::threads(t.pid));
        }
        m.end = Some(Stamp::now());
        m.instruments = self.lives.iter().map(|l| l.info.clone()).collect();
        m.lost = m.instruments.iter().map(|i| i.counts.lost).sum();
        m.dropped = m.instruments.iter().map(|i| i.counts.dropped).sum();
        m.losses_unknown = m
            .instruments
            .iter()
            .filter(|i| i.losses_unknown)
            .map(|i| i.name.clone())
            .collect();
        let unknown = m.losses_unknown.clone();
        let (lost, dropped, fired) = (m.lost, m.dropped, m.fired.len() as u64);
        let lines: u64 = m.instruments.iter().map(|i| i.lines).sum();
        let manifest = self.manifest.clone();
        let dir = self.writer.finish(&manifest)?;
        crate::text::say(&format!(
            "ri: session ended: bundle {}; {lines} events and prints, {lost} lost, {dropped} updates dropped, {} fired",
            dir.display(),
            crate::text::counted(fired, "trigger")
        ));
        if !unknown.is_empty() {
            crate::text::say(&format!(
                "ri: losses unknown for {} (ended without a summary): see losses_unknown in manifest.json",
                unknown.join(", ")
            ));
        }
        if lost > 0 || dropped > 0 {
            crate::text::say(
                "ri: the bundle is incomplete: see each instrument's lost and dropped counts in manifest.json",
            );
        }
        Ok(dir)
    }
}
