//! One served instrument: attached to its targets (followed by name in
//! the kernel), its maps read into series at each scrape.

use std::{
    cell::RefCell,
    collections::{BTreeSet, HashMap},
    path::PathBuf,
    time::{Duration, Instant},
};

use clap::Parser as _;

use super::{
    ServeError,
    config::Resolved,
    expose::{Family, Value},
    log,
    series::{self, REFUSED, Table},
};
use crate::{
    Error,
    agg::{self, AggKind, AggOptions, AggPlan},
    engine::{Engine, HashBatch},
    launch::{self, Launched},
    select::{Change, Watcher},
    session::ProbeSet,
    stack::Stacks,
};

/// Probes in the kernel for one set of processes.
struct Live {
    engine: Engine,
    set: ProbeSet,
    plans: Vec<AggPlan>,
    opts: AggOptions,
    names: RefCell<agg::Names>,
    stacks: RefCell<Stacks>,
    /// The `-p` processes attached (none: file-wide or by name only).
    pids: Vec<u32>,
    /// With targets by name: the kernel's selection, and who is in it.
    watcher: Option<Watcher>,
    selected: BTreeSet<u32>,
    /// Whether a process was ever selected: later ones are restarts.
    seen_any: bool,
    /// Series id of each (plan, key bytes) read: a key's labels never
    /// change, and decoding them is most of a scrape of many series. As
    /// many as the kernel map's keys, so bounded by its size.
    ids: HashMap<Box<[u8]>, u32>,
    /// Buffers of the batched map reads, and of the key looked up.
    batch: HashBatch,
    scratch: Vec<u8>,
}

/// A failed attachment, retried after a delay doubling up to a minute.
#[derive(Debug)]
struct Retry {
    want: Vec<u32>,
    at: Instant,
    delay: Duration,
}

/// Time a scrape spent reading maps, building series and writing text.
#[derive(Debug, Default, Clone, Copy)]
pub struct Phases {
    /// Reading the kernel's maps.
    pub read: Duration,
    /// Folding names, finding series, adding hits.
    pub build: Duration,
    /// Writing the text.
    pub encode: Duration,
}

/// An instrument kept attached.
pub struct Instrument {
    /// What it is.
    pub spec: Resolved,
    live: Option<Live>,
    /// Its kind, once known from a first attach.
    kind: Option<AggKind>,
    /// Its series, with the hits of earlier attachments.
    table: Table,
    /// Lost events and dropped updates of earlier attachments.
    base_lost: u64,
    base_full: u64,
    /// Attach attempts that failed.
    pub attach_failures: u64,
    /// Processes that joined by name after the first one (restarts).
    pub restarts: u64,
    retry: Option<Retry>,
}

/// Whether `pid` runs (exists and is not a zombie).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(") ").map(|(_, r)| !r.starts_with(['Z', 'X'])))
        .unwrap_or(false)
}

/// The argv of `spec` for processes `pids`, without `ri`.
fn argv(spec: &Resolved, pids: &[u32], packs: &[PathBuf]) -> Result<Vec<String>, Error> {
    let mut argv = match &spec.run {
        Some(run) => {
            crate::pack::command_line(&crate::pack::RunOptions {
                instrument: run.clone(),
                params: spec
                    .params
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect(),
                pids: pids.to_vec(),
                select: crate::select::Selection {
                    comms: spec.targets.comms.clone(),
                    exes: spec.targets.exes.clone(),
                },
                // An --exe target names the binary, so that the pack's
                // probes resolve before any process runs it.
                target: spec.targets.exes.first().map(|p| p.display().to_string()),
                packs: packs.to_vec(),
                ..Default::default()
            })?
            .argv
        }
        None => {
            let mut a = spec.command.clone();
            a.extend(pids.iter().flat_map(|p| ["-p".to_string(), p.to_string()]));
            for c in &spec.targets.comms {
                a.extend(["--comm".to_string(), c.clone()]);
            }
            for e in &spec.targets.exes {
                a.extend(["--exe".to_string(), e.display().to_string()]);
            }
            a
        }
    };
    argv.push("-q".into());
    Ok(argv)
}

/// Checks, before anything is attached, that `spec` names an aggregating
/// pack instrument or command.
pub fn validate(spec: &Resolved, packs: &[PathBuf]) -> Result<(), Error> {
    let trace = match &spec.run {
        Some(run) => {
            let loaded = crate::pack::load_all(packs)?;
            let (pack, name) = crate::pack::find(&loaded, run)?;
            pack.file.instruments[name].kind == "trace"
        }
        None => {
            let argv = std::iter::once("ri").chain(spec.command.iter().map(String::as_str));
            let cli = crate::cli::Cli::try_parse_from(argv).map_err(|e| {
                ServeError::Instrument(format!("{}: {}", spec.name, crate::cli::fault(&e)))
            })?;
            cli.command.aggregation().is_err()
        }
    };
    if trace {
        return Err(not_aggregating(&spec.name).into());
    }
    Ok(())
}

fn not_aggregating(name: &str) -> ServeError {
    ServeError::Instrument(format!(
        "{name}: ri serve keeps aggregations (count, hist, latency, inflight, leaks), not traces"
    ))
}

impl Instrument {
    /// An instrument not attached yet.
    pub fn new(spec: Resolved) -> Self {
        Instrument {
            table: Table::new(spec.max_series),
            spec,
            live: None,
            kind: None,
            base_lost: 0,
            base_full: 0,
            attach_failures: 0,
            restarts: 0,
            retry: None,
        }
    }

    /// Processes attached now (1 for a file-wide instrument).
    pub fn attached(&self) -> usize {
        let Some(l) = &self.live else { return 0 };
        if l.watcher.is_some() {
            return l.selected.len();
        }
        if l.pids.is_empty() {
            return 1;
        }
        l.pids.iter().filter(|&&p| alive(p)).count()
    }

    /// Attaches, follows the processes chosen by name, or detaches once
    /// every `-p` process has exited. Targets by name are followed by the
    /// kernel (a process is in the set from its exec), so no hit falls in
    /// a gap; `-p` processes that exit leave the others attached.
    pub fn follow(&mut self, packs: &[PathBuf], rt: &tokio::runtime::Runtime) {
        let t = &self.spec.targets;
        let want: Vec<u32> = t.pids.iter().copied().filter(|&p| alive(p)).collect();
        let by_name = t.by_name();
        let file_wide = t.pids.is_empty() && !by_name;
        if let Some(live) = &mut self.live {
            if let Some(w) = &mut live.watcher {
                for c in w.try_changes() {
                    let (pid, line) = match c {
                        Change::Joined(pid) => {
                            live.selected.insert(pid);
                            // Kept per process only where keys need them.
                            if live.plans.iter().any(|p| !p.labels.is_empty()) {
                                live.names.borrow_mut().add(pid);
                            }
                            if live.set.has_stacks() {
                                live.stacks.borrow_mut().watch(pid);
                            }
                            if live.seen_any {
                                self.restarts += 1;
                            }
                            live.seen_any = true;
                            (pid, "started: attached")
                        }
                        Change::Left(pid) => {
                            live.selected.remove(&pid);
                            (pid, "exited: detached")
                        }
                    };
                    log(6, &format!("{}: pid {pid} {line}", self.spec.name));
                }
                return;
            }
            if file_wide || !want.is_empty() {
                return;
            }
            self.detach();
            return;
        }
        if want.is_empty() && !file_wide && !by_name {
            return;
        }
        if let Some(r) = &self.retry
            && r.want == want
            && Instant::now() < r.at
        {
            return;
        }
        match self.attach(&want, packs, rt) {
            Ok(live) => {
                let whom = match &live.watcher {
                    Some(_) => format!(
                        "{} (now: {})",
                        self.targets_text(),
                        pids_text(&live.selected.iter().copied().collect::<Vec<_>>())
                    ),
                    None => pids_text(&want),
                };
                log(6, &format!("{}: attached to {whom}", self.spec.name));
                self.retry = None;
                self.live = Some(live);
            }
            Err(e) => {
                self.attach_failures += 1;
                let delay = match &self.retry {
                    Some(r) if r.want == want => (r.delay * 2).min(Duration::from_secs(60)),
                    _ => Duration::from_secs(1),
                };
                log(
                    3,
                    &format!(
                        "{}: cannot attach to {}: {e} (retrying in {} s)",
                        self.spec.name,
                        if by_name {
                            self.targets_text()
                        } else {
                            pids_text(&want)
                        },
                        delay.as_secs()
                    ),
                );
                self.retry = Some(Retry {
                    want,
                    at: Instant::now() + delay,
                    delay,
                });
            }
        }
    }

    /// `--comm NAME, --exe PATH` of its targets.
    fn targets_text(&self) -> String {
        let t = &self.spec.targets;
        let mut v: Vec<String> = t.comms.iter().map(|c| format!("--comm {c}")).collect();
        v.extend(t.exes.iter().map(|e| format!("--exe {}", e.display())));
        v.extend(t.pids.iter().map(|p| format!("-p {p}")));
        v.join(", ")
    }

    /// Detaches, keeping what it counted.
    fn detach(&mut self) {
        let Some(mut live) = self.live.take() else {
            return;
        };
        self.table.begin();
        if let Err(e) = read(&mut live, &mut self.table) {
            log(
                4,
                &format!("{}: last read before detaching: {e}", self.spec.name),
            );
        }
        self.table.carry();
        self.base_lost += live.engine.lost().unwrap_or(0);
        self.base_full += agg::read_stats(&live.engine).map_or(0, |s| s.dropped);
        log(
            6,
            &format!(
                "{}: detached from {} (exited)",
                self.spec.name,
                pids_text(&live.pids)
            ),
        );
    }

    fn attach(
        &mut self,
        pids: &[u32],
        packs: &[PathBuf],
        rt: &tokio::runtime::Runtime,
    ) -> Result<Live, Error> {
        let argv = argv(&self.spec, pids, packs)?;
        let cli = crate::cli::Cli::try_parse_from(std::iter::once("ri".to_string()).chain(argv))
            .map_err(|e| {
                ServeError::Instrument(format!("{}: {}", self.spec.name, crate::cli::fault(&e)))
            })?;
        let mut opts = cli
            .command
            .aggregation()
            .map_err(|_| not_aggregating(&self.spec.name))?
            .map_err(Error::Usage)?;
        if opts.trace.command.is_some() {
            return Err(ServeError::Instrument(format!(
                "{}: -c does not apply to ri serve",
                self.spec.name
            ))
            .into());
        }
        opts.interval = None;
        opts.trace.quiet = true;
        launch::check(&opts.trace.launching())?;
        let (set, plans) = agg::build(&opts)?;
        let Launched {
            engine, watcher, ..
        } = launch::start(
            Some(rt),
            &opts.trace.launching(),
            &set,
            opts.max_keys,
            launch::Delivery::ALONE,
        )?;
        self.kind = Some(opts.kind.clone());
        let (watcher, selected) = watcher.unzip();
        let selected: BTreeSet<u32> = selected.into_iter().flatten().collect();
        let mut stacks = Stacks::new();
        for &p in pids.iter().chain(&selected) {
            stacks.watch(p);
        }
        let mut names: Vec<u32> = pids.to_vec();
        names.extend(&selected);
        Ok(Live {
            engine,
            set,
            plans,
            opts,
            names: RefCell::new(agg::Names::new(names)),
            stacks: RefCell::new(stacks),
            pids: pids.to_vec(),
            watcher,
            seen_any: !selected.is_empty(),
            selected,
            ids: HashMap::new(),
            batch: HashBatch::default(),
            scratch: Vec::new(),
        })
    }

    /// Events lost and map updates dropped, over all attachments.
    pub fn losses(&self) -> (u64, u64) {
        let (mut lost, mut full) = (self.base_lost, self.base_full);
        if let Some(l) = &self.live {
            lost += l.engine.lost().unwrap_or(0);
            full += agg::read_stats(&l.engine).map_or(0, |s| s.dropped);
        }
        (lost, full)
    }

    /// Series refused by the cap so far.
    pub fn refused(&self) -> u64 {
        self.table.dropped()
    }

    /// Series exposed.
    pub fn series(&self) -> usize {
        self.table.admitted()
    }

    /// Writes its metric: counters and histograms straight into `out`,
    /// gauges as families into `small`; time spent added to `phases`.
    pub fn write(
        &mut self,
        out: &mut String,
        small: &mut Vec<Family>,
        phases: &mut Phases,
    ) -> Result<(), Error> {
        let name = format!("ri_{}", self.spec.name);
        let Some(kind) = self.kind.clone() else {
            return Ok(());
        };
        if let AggKind::Inflight(_) | AggKind::Leaks(_) = kind {
            small.extend(self.gauges(&name, &kind)?);
            return Ok(());
        }
        self.table.begin();
        if let Some(live) = &mut self.live {
            let p = read(live, &mut self.table)?;
            phases.read += p.read;
            phases.build += p.build;
        }
        let t = Instant::now();
        match kind {
            AggKind::Count => self.table.write_counter(out, &name, "hits, per key"),
            AggKind::Hist(v) => {
                self.table
                    .write_histogram(out, &name, &format!("histogram of {v}"), 1.0)
            }
            _ => self.table.write_histogram(
                out,
                &format!("{name}_seconds"),
                "latency in seconds",
                1e9,
            ),
        }
        phases.encode += t.elapsed();
        Ok(())
    }

    /// In-flight operations (or outstanding allocations) and the oldest's age.
    fn gauges(&self, name: &str, kind: &AggKind) -> Result<Vec<Family>, Error> {
        let flights = match &self.live {
            Some(l) => agg::read_flights(&l.engine)?,
            None => Vec::new(),
        };
        let now = agg::monotonic_ns();
        let oldest = flights.iter().map(|f| f.ts_ns).min();
        let age = oldest.map_or(0.0, |t| now.saturating_sub(t) as f64 * 1e-9);
        let mut out = vec![
            Family::new(
                &format!("{name}_inflight"),
                "operations begun and not ended",
            )
            .with(Vec::new(), Value::Gauge(flights.len() as f64)),
            Family::new(
                &format!("{name}_oldest_age_seconds"),
                "age of the oldest operation in flight",
            )
            .with(Vec::new(), Value::Gauge(age)),
        ];
        if let AggKind::Leaks(_) = kind {
            let bytes: u64 = agg::leak_groups(&flights).iter().map(|g| g.bytes).sum();
            out.push(
                Family::new(
                    &format!("{name}_outstanding_bytes"),
                    "bytes allocated and not freed",
                )
                .with(Vec::new(), Value::Gauge(bytes as f64)),
            );
        }
        Ok(out)
    }
}

/// Reads the attachment's maps into `table`'s current hits: each key's
/// series found by its bytes, its labels decoded only the first time.
fn read(live: &mut Live, table: &mut Table) -> Result<Phases, Error> {
    let t = Instant::now();
    let raw = agg::read_snapshot_with(&live.engine, &live.set, &mut live.batch)?;
    let read_done = t.elapsed();
    let Live {
        engine,
        set,
        plans,
        opts,
        names,
        stacks,
        ids,
        scratch,
        ..
    } = live;
    let snap = names.borrow_mut().fold(raw, plans);
    let view = agg::View {
        set,
        plans,
        opts,
        engine,
        stacks,
        names,
    };
    let shown = plans.iter().filter(|p| p.shown).count();
    for ((plan, _site, key), cell) in &snap.cells {
        let Some(p) = plans.get(*plan as usize).filter(|p| p.shown) else {
            continue;
        };
        scratch.clear();
        scratch.extend_from_slice(&plan.to_ne_bytes());
        scratch.extend_from_slice(key);
        let id = match ids.get(scratch.as_slice()) {
            Some(&id) => id,
            None => {
                let mut labels = agg::key_pairs(&view, p, key);
                for (k, _) in &mut labels {
                    *k = super::config::metric_name(k);
                }
                if shown > 1 {
                    let func = set.probes[*plan as usize].spec.func.clone();
                    labels.insert(0, ("probe".into(), func));
                }
                let id = table.id(series::render(&labels));
                ids.insert(scratch.clone().into_boxed_slice(), id);
                id
            }
        };
        if id != REFUSED {
            table.add(id, cell);
        }
    }
    Ok(Phases {
        read: read_done,
        build: t.elapsed() - read_done,
        encode: Duration::ZERO,
    })
}

fn pids_text(pids: &[u32]) -> String {
    if pids.is_empty() {
        return "every process".into();
    }
    pids.iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}
