//! One served instrument: attached to its current targets, its kernel maps
//! read into series at each scrape, counters carried across re-attachments.

use std::{
    cell::RefCell,
    collections::{BTreeMap, HashSet},
    path::PathBuf,
};

use clap::Parser as _;
use ri_common::hist_bucket_range;

use super::{
    ServeError,
    config::Resolved,
    expose::{Family, Labels, Value},
    log,
};
use crate::{
    Error,
    agg::{self, AggKind, AggOptions, AggPlan, Snapshot},
    engine::Engine,
    launch::{self, Launched},
    session::ProbeSet,
    stack::Stacks,
};

/// Hits per labels, bucket by bucket.
type Acc = BTreeMap<Labels, agg::Cell>;

/// Probes in the kernel for one set of processes.
struct Live {
    engine: Engine,
    set: ProbeSet,
    plans: Vec<AggPlan>,
    opts: AggOptions,
    names: RefCell<agg::Names>,
    stacks: RefCell<Stacks>,
    /// The processes attached (empty: file-wide).
    pids: Vec<u32>,
    /// Labels of each (plan, key) seen: a key's labels never change, and
    /// decoding them is most of a scrape of many series.
    labels: RefCell<std::collections::HashMap<(u32, Vec<u8>), Labels>>,
}

/// An instrument kept attached.
pub struct Instrument {
    /// What it is.
    pub spec: Resolved,
    live: Option<Live>,
    /// Its kind, once known from a first attach.
    kind: Option<AggKind>,
    /// Hits of earlier attachments.
    base: Acc,
    /// Lost events and dropped updates of earlier attachments.
    base_lost: u64,
    base_full: u64,
    /// Attach attempts that failed.
    pub attach_failures: u64,
    /// The pid set that last failed (not retried until it changes).
    failed: Option<Vec<u32>>,
    /// Series admitted under the cap, and those refused.
    admitted: HashSet<Labels>,
    refused: HashSet<Labels>,
    /// Bucket range of its histograms, only ever widened.
    range: Option<(u32, u32)>,
}

/// Whether `pid` runs (exists and is not a zombie).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(") ").map(|(_, r)| !r.starts_with(['Z', 'X'])))
        .unwrap_or(false)
}

/// Processes whose `/proc/PID/comm` is `comm`.
fn by_comm(comm: &str) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut v: Vec<u32> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|&pid: &u32| {
            std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim_end() == comm)
                && alive(pid)
        })
        .collect();
    v.sort_unstable();
    v
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
                packs: packs.to_vec(),
                ..Default::default()
            })?
            .argv
        }
        None => {
            let mut a = spec.command.clone();
            a.extend(pids.iter().flat_map(|p| ["-p".to_string(), p.to_string()]));
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
            spec,
            live: None,
            kind: None,
            base: Acc::new(),
            base_lost: 0,
            base_full: 0,
            attach_failures: 0,
            failed: None,
            admitted: HashSet::new(),
            refused: HashSet::new(),
            range: None,
        }
    }

    /// Processes attached now.
    pub fn attached(&self) -> usize {
        self.live.as_ref().map_or(0, |l| l.pids.len().max(1))
    }

    /// The processes it should watch now (empty: file-wide).
    fn wanted(&self) -> Vec<u32> {
        let t = &self.spec.targets;
        let mut v: Vec<u32> = t.pids.iter().copied().filter(|&p| alive(p)).collect();
        if let Some(c) = &t.comm {
            v.extend(by_comm(c));
        }
        v.sort_unstable();
        v.dedup();
        v
    }

    /// Attaches, re-attaches or detaches to follow its targets.
    pub fn follow(&mut self, packs: &[PathBuf]) {
        let t = &self.spec.targets;
        let file_wide = t.pids.is_empty() && t.comm.is_none();
        let want = self.wanted();
        let have = self.live.as_ref().map(|l| l.pids.clone());
        if have.as_ref() == Some(&want) || (file_wide && have.is_some()) {
            return;
        }
        if have.is_some() {
            self.detach(&want);
        }
        if (want.is_empty() && !file_wide) || self.failed.as_ref() == Some(&want) {
            return;
        }
        match self.attach(&want, packs) {
            Ok(live) => {
                log(
                    6,
                    &format!("{}: attached to {}", self.spec.name, pids_text(&want)),
                );
                self.failed = None;
                self.live = Some(live);
            }
            Err(e) => {
                self.attach_failures += 1;
                log(
                    3,
                    &format!(
                        "{}: cannot attach to {}: {e}",
                        self.spec.name,
                        pids_text(&want)
                    ),
                );
                self.failed = Some(want);
            }
        }
    }

    /// Detaches, keeping what it counted in the base.
    fn detach(&mut self, now: &[u32]) {
        let Some(live) = self.live.take() else { return };
        if let Ok(acc) = self.read(&live) {
            for (labels, cell) in acc {
                merge(self.base.entry(labels).or_default(), &cell);
            }
        }
        self.base_lost += live.engine.lost().unwrap_or(0);
        self.base_full += agg::read_stats(&live.engine).map_or(0, |s| s.dropped);
        let gone: Vec<u32> = live
            .pids
            .iter()
            .copied()
            .filter(|p| !now.contains(p))
            .collect();
        log(
            6,
            &format!(
                "{}: detached from {} (exited: {})",
                self.spec.name,
                pids_text(&live.pids),
                pids_text(&gone)
            ),
        );
    }

    fn attach(&mut self, pids: &[u32], packs: &[PathBuf]) -> Result<Live, Error> {
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
        let Launched { engine, .. } =
            launch::start(None, &opts.trace.launching(), &set, opts.max_keys, 1)?;
        self.kind = Some(opts.kind.clone());
        let mut stacks = Stacks::new();
        for &p in pids {
            stacks.watch(p);
        }
        Ok(Live {
            engine,
            set,
            plans,
            opts,
            names: RefCell::new(agg::Names::new(pids.to_vec())),
            stacks: RefCell::new(stacks),
            pids: pids.to_vec(),
            labels: RefCell::default(),
        })
    }

    /// The current attachment's hits per labels.
    fn read(&self, live: &Live) -> Result<Acc, Error> {
        let snap: Snapshot = live
            .names
            .borrow_mut()
            .fold(agg::read_snapshot(&live.engine, &live.set)?, &live.plans);
        let view = agg::View {
            set: &live.set,
            plans: &live.plans,
            opts: &live.opts,
            engine: &live.engine,
            stacks: &live.stacks,
            names: &live.names,
        };
        let shown = live.plans.iter().filter(|p| p.shown).count();
        let mut acc = Acc::new();
        for ((plan, _site, key), cell) in &snap.cells {
            let Some(p) = live.plans.get(*plan as usize).filter(|p| p.shown) else {
                continue;
            };
            let mut cache = live.labels.borrow_mut();
            let labels = cache.entry((*plan, key.clone())).or_insert_with(|| {
                let mut labels = agg::key_pairs(&view, p, key);
                for (k, _) in &mut labels {
                    *k = super::config::metric_name(k);
                }
                if shown > 1 {
                    let func = live.set.probes[*plan as usize].spec.func.clone();
                    labels.insert(0, ("probe".into(), func));
                }
                labels
            });
            let labels = labels.clone();
            merge(acc.entry(labels).or_default(), cell);
        }
        Ok(acc)
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
    pub fn refused(&self) -> usize {
        self.refused.len()
    }

    /// Its metric families, read now.
    pub fn families(&mut self) -> Result<Vec<Family>, Error> {
        let name = format!("ri_{}", self.spec.name);
        let Some(kind) = self.kind.clone() else {
            return Ok(Vec::new());
        };
        if let AggKind::Inflight(_) | AggKind::Leaks(_) = kind {
            return self.gauges(&name, &kind);
        }
        let mut acc = self.base.clone();
        if let Some(live) = &self.live {
            for (labels, cell) in self.read(live)? {
                merge(acc.entry(labels).or_default(), &cell);
            }
        }
        let mut series = Vec::new();
        for (labels, cell) in acc {
            if !self.admitted.contains(&labels) {
                if self.admitted.len() >= self.spec.max_series {
                    self.refused.insert(labels);
                    continue;
                }
                self.admitted.insert(labels.clone());
            }
            series.push((labels, cell));
        }
        let (fam, scale) = match kind {
            AggKind::Count => {
                let f = series
                    .into_iter()
                    .fold(Family::new(&name, "hits, per key"), |f, (l, c)| {
                        f.with(l, Value::Counter(c.count as f64))
                    });
                return Ok(vec![f]);
            }
            AggKind::Hist(v) => (Family::new(&name, &format!("histogram of {v}")), 1.0),
            _ => (
                Family::new(&format!("{name}_seconds"), "latency in seconds"),
                1e-9,
            ),
        };
        for (_, c) in &series {
            self.widen(c);
        }
        let range = self.range.unwrap_or((0, 16));
        Ok(vec![series.into_iter().fold(fam, |f, (l, c)| {
            f.with(l, histogram(&c, range, scale))
        })])
    }

    /// Widens the bucket range to whole powers of two around `c`'s buckets.
    fn widen(&mut self, c: &agg::Cell) {
        let (Some(lo), Some(hi)) = (c.buckets.keys().next(), c.buckets.keys().next_back()) else {
            return;
        };
        let (lo, hi) = (lo / 16 * 16, (hi / 16 + 1) * 16);
        self.range = Some(match self.range {
            Some((a, b)) => (a.min(lo), b.max(hi)),
            None => (lo, hi),
        });
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

/// A cell as a Prometheus histogram over the buckets `range` (each bound a
/// bucket's greatest value), values times `scale`.
fn histogram(c: &agg::Cell, range: (u32, u32), scale: f64) -> Value {
    let mut buckets: Vec<(f64, u64)> = Vec::new();
    let below: u64 = c.buckets.range(..range.0).map(|(_, v)| v.count).sum();
    for b in range.0..range.1 {
        let hits = c.buckets.get(&b).map_or(0, |v| v.count);
        let le = hist_bucket_range(b).1.saturating_sub(1) as f64 * scale;
        buckets.push((le, hits + if b == range.0 { below } else { 0 }));
    }
    let above: u64 = c.buckets.range(range.1..).map(|(_, v)| v.count).sum();
    buckets.push((f64::INFINITY, above));
    let sum = c.buckets.values().fold(0u64, |s, v| s.wrapping_add(v.sum));
    Value::Histogram {
        sum: sum as f64 * scale,
        count: c.count,
        buckets,
    }
}

/// Adds `from`'s hits to `into`, bucket by bucket.
fn merge(into: &mut agg::Cell, from: &agg::Cell) {
    for (b, v) in &from.buckets {
        into.add(*b, v);
    }
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
