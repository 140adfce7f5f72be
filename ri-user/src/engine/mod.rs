//! The kernel side as user space sees it: loading ri's eBPF object, writing
//! plans into the `PLANS` map, attaching the generic programs with cookies,
//! and handing out the event ring buffer and the lost-event counter.

mod batch;
mod btf;
mod budget;
pub mod flush;
mod links;
pub mod multi;
mod object;
pub mod perf;
mod select;
pub mod sites;
mod sys;
mod watch;

pub use batch::HashBatch;
pub use btf::{KernelOffsets, kernel_offsets};
pub use select::{Selecting, kernel_dev, pid_namespace};
pub use watch::{BudgetConfig, SiteKind};

use std::{
    collections::HashMap,
    os::fd::{AsFd, BorrowedFd, OwnedFd},
    path::Path,
    sync::{Arc, Mutex, MutexGuard},
};

use aya::maps::{Array, MapData, PerCpuArray, RingBuf};
use ri_common::{AggValue, MAX_PLANS, Plan};

/// Errors from loading, configuring or attaching eBPF programs.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// Not root and without the capabilities BPF needs.
    #[error("permission denied: ri needs root, or CAP_BPF and CAP_PERFMON, to load eBPF programs")]
    PermissionDenied,
    /// The kernel refused the object or a program (verifier log attached).
    #[error("cannot load ri's eBPF programs: {0}")]
    Load(String),
    /// A map operation failed.
    #[error("eBPF map {map}: {reason}")]
    Map {
        /// Map name.
        map: &'static str,
        /// What failed.
        reason: String,
    },
    /// Too many probe specifications.
    #[error("too many probes: at most {MAX_PLANS}")]
    TooManyPlans,
    /// Attaching a uprobe failed.
    #[error("cannot attach to {site}: {reason}")]
    Attach {
        /// Which probe site.
        site: String,
        /// Why.
        reason: String,
    },
}

/// Which generic program to attach.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Program {
    /// Plan interpreter at function entry (or entry + offset).
    Entry,
    /// Plan interpreter at function return.
    Return,
    /// The empty program (benchmark baseline).
    Bare,
    /// The fast paths alone at function entry (plans flagged
    /// [`Program::runs_fast`]): a few instructions for the verifier, where
    /// the interpreter is thousands.
    FastEntry,
    /// The fast paths alone at function return.
    FastReturn,
}

impl Program {
    fn name(self) -> &'static str {
        match self {
            Program::Entry => "ri_entry",
            Program::Return => "ri_return",
            Program::Bare => "ri_bare",
            Program::FastEntry => "ri_fast_entry",
            Program::FastReturn => "ri_fast_return",
        }
    }

    /// True for the programs attached at returns.
    pub fn at_return(self) -> bool {
        matches!(self, Program::Return | Program::FastReturn)
    }

    /// True when `plan` needs none of the interpreter: a bare count, a
    /// histogram of one register, or an event of raw registers only,
    /// without stacks or saved arguments.
    pub fn runs_fast(plan: &Plan) -> bool {
        use ri_common::plan_flags as f;
        if plan.flags & (f::COUNT_FAST | f::HIST_FAST) != 0 {
            return true;
        }
        plan.flags & (f::STACK | f::ENTRY_ARGS | f::AGGREGATE) == 0
            && (plan.n_insns == 0 || plan.flags & f::REGS_ONLY != 0)
    }
}

/// Set in the environment, ri attaches one perf event per site even where
/// multi-uprobe links work (to compare and test the fallback).
pub const NO_MULTI_ENV: &str = "RI_NO_MULTI_UPROBE";

/// Sites per multi-uprobe link when the overhead budget is on.
const BUDGET_CHUNK: usize = 128;

/// How many entries each map gets: the sizes a command needs, so a `count`
/// does not allocate an 8 MiB ring nor a trace a 10,240-key hash.
#[derive(Clone, Debug)]
pub struct MapSizes {
    /// `EVENTS` ring in bytes (a power of two, multiple of the page size).
    pub ring_bytes: u32,
    /// Keys in `AGG` (keys of more than one word).
    pub agg: u32,
    /// Keys in `AGG_SMALL` (one-word keys).
    pub agg_small: u32,
    /// Entries in `INFLIGHT`.
    pub inflight: u32,
    /// Slots of the `FAST` array.
    pub fast: u32,
    /// Stacks in `STACKS` (a quarter as many in `STACK_MORE`).
    pub stacks: u32,
    /// Calls in `KEPT`.
    pub kept: u32,
    /// Calls in `SAVED_ARGS`.
    pub saved_args: u32,
    /// Events per ring record (1: each alone; more needs
    /// [`Engine::start_batches`]).
    pub batch_events: u32,
    /// Whether events carry the kernel's clock in `ts_ns` (else 0: a sink
    /// that prints no time saves a clock read a hit).
    pub timestamps: bool,
    /// The cookie of every attachment, when they all have one and the
    /// budget (which changes cookies) is off: the programs use it instead
    /// of asking the kernel.
    pub only_cookie: Option<u64>,
    /// Sites in `SITES`, the overhead budget's per-site counters (0: the
    /// budget is off, and the kernel neither counts nor checks per site).
    pub sites: u32,
    /// Which processes the probes serve (`--comm`/`--exe`), and the
    /// selection maps' sizes.
    pub selecting: Selecting,
}

impl MapSizes {
    /// Every map at its full size, with `ring_bytes` of ring.
    pub fn full(ring_bytes: u32) -> Self {
        MapSizes {
            ring_bytes,
            agg: ri_common::AGG_ENTRIES,
            agg_small: ri_common::AGG_ENTRIES,
            inflight: ri_common::AGG_ENTRIES,
            fast: 1,
            stacks: 1,
            kept: ri_common::FRAME_ENTRIES,
            saved_args: ri_common::FRAME_ENTRIES,
            batch_events: 1,
            timestamps: true,
            only_cookie: None,
            sites: 0,
            selecting: Selecting::default(),
        }
    }
}

/// A loaded ri eBPF object.
pub struct Engine {
    object: object::Object,
    /// Programs loaded so far, by (program, for multi-uprobe links).
    progs: HashMap<(Program, bool), OwnedFd>,
    /// Every attachment, detached when the engine drops (shared with the
    /// budget's watcher, which detaches sites).
    links: Arc<Mutex<links::Links>>,
    /// Why multi-uprobe links are not used, once known.
    multi_off: Option<String>,
    /// `ri_flush`, loaded when events are batched.
    flusher: Option<flush::Flusher>,
    /// The kernel's per-site counters, when the budget is on.
    sites: Option<Arc<sites::SiteTable>>,
    /// The budget's watcher, once started.
    watch: Option<watch::Watch>,
    /// Raw tracepoints attached (`--comm`/`--exe`), detached at drop.
    tracepoints: Vec<OwnedFd>,
}

impl Drop for Engine {
    /// Detaches everything at once: a multi-uprobe link's release waits for
    /// one grace period for all its sites; per-site perf events each wait
    /// for one (Linux 6.18 holds `event_mutex` across it, so even released
    /// concurrently they go one after the other there).
    fn drop(&mut self) {
        if let Some(w) = self.watch.as_mut() {
            w.stop();
        }
        let mut links = self.links();
        let (multi, perf) = links.take_all();
        let releasing = std::mem::take(&mut links.releasing);
        drop(links);
        release_concurrently(multi);
        release_concurrently(perf);
        for t in releasing {
            let _ = t.join();
        }
    }
}

/// Drops `items` from up to 256 threads at once (closing a uprobe waits for
/// an RCU grace period; closes that are not serialized by the kernel share
/// one).
fn release_concurrently<T: Send>(items: Vec<T>) {
    const THREADS: usize = 256;
    if items.len() <= 1 {
        return;
    }
    let n = items.len().min(THREADS);
    let mut buckets: Vec<Vec<T>> = (0..n).map(|_| Vec::new()).collect();
    for (i, item) in items.into_iter().enumerate() {
        buckets[i % n].push(item);
    }
    std::thread::scope(|s| {
        for bucket in buckets {
            let spawned = std::thread::Builder::new()
                .stack_size(64 * 1024)
                .spawn_scoped(s, move || drop(bucket));
            // A thread that cannot start drops its bucket here instead.
            drop(spawned);
        }
    });
}

/// A perf-event attach error, for `site`.
fn perf_error(e: perf::PerfError, site: &str) -> EngineError {
    match e {
        perf::PerfError::Open(ref io) | perf::PerfError::Link(ref io)
            if io.raw_os_error() == Some(libc::EPERM) =>
        {
            EngineError::PermissionDenied
        }
        e => EngineError::Attach {
            site: site.to_string(),
            reason: e.to_string(),
        },
    }
}

/// Attaches `prog` at each site with one perf event apiece, for the
/// kernels without multi-uprobe links.
fn attach_each(
    prog: BorrowedFd<'_>,
    path: &Path,
    sites: &[(u64, u64, &str)],
    ret: bool,
    pid: Option<u32>,
) -> Result<Vec<(u32, perf::PerfLink)>, EngineError> {
    let one = |(offset, cookie, name): &(u64, u64, &str)| {
        perf::attach_uprobe(prog, path, *offset, None, ret, pid, *cookie)
            .map(|l| (links::site_of(*cookie), l))
            .map_err(|e| perf_error(e, name))
    };
    sites.iter().map(one).collect()
}

/// Full error chain on one line.
fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut s = err.to_string();
    let mut cur = err.source();
    while let Some(e) = cur {
        s.push_str(": ");
        s.push_str(&e.to_string());
        cur = e.source();
    }
    s
}

/// True when this process may load BPF: root, or CAP_BPF and CAP_PERFMON.
pub fn have_bpf_privileges() -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let cap_eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0);
    const CAP_PERFMON: u64 = 38;
    const CAP_BPF: u64 = 39;
    cap_eff & (1 << CAP_BPF) != 0 && cap_eff & (1 << CAP_PERFMON) != 0
}

impl Engine {
    /// Loads the object with an event ring buffer of `ring_bytes` (a power of
    /// two, multiple of the page size).
    pub fn load(ring_bytes: u32) -> Result<Self, EngineError> {
        Self::load_sized(&MapSizes::full(ring_bytes))
    }

    /// [`Engine::load`] with room for `agg_entries` keys in the aggregation
    /// maps, `fast_slots` counters in the `FAST` array and `stack_entries`
    /// stacks in `STACKS` (a quarter as many in `STACK_MORE`, for stacks
    /// whose bucket was taken; 1 when no plan takes stacks: both maps are
    /// allocated in full at load), sending events in batches of up to
    /// `batch_events` (1: each alone; more needs [`Engine::start_batches`]).
    pub fn load_agg(
        ring_bytes: u32,
        agg_entries: u32,
        fast_slots: u32,
        stack_entries: u32,
        batch_events: u32,
    ) -> Result<Self, EngineError> {
        Self::load_sized(&MapSizes {
            agg: agg_entries,
            agg_small: agg_entries,
            inflight: agg_entries,
            fast: fast_slots,
            stacks: stack_entries,
            batch_events,
            ..MapSizes::full(ring_bytes)
        })
    }

    /// Creates the maps at `sizes` (each at least 1); programs load at
    /// their first attach.
    pub fn load_sized(sizes: &MapSizes) -> Result<Self, EngineError> {
        if !have_bpf_privileges() {
            return Err(EngineError::PermissionDenied);
        }
        let ring = u64::from(sizes.ring_bytes).to_ne_bytes();
        let batch = sizes.batch_events.max(1).to_ne_bytes();
        let entries = [
            ("EVENTS", sizes.ring_bytes),
            ("AGG", sizes.agg),
            ("AGG_SMALL", sizes.agg_small),
            ("INFLIGHT", sizes.inflight),
            ("FAST", sizes.fast),
            ("STACKS", sizes.stacks),
            ("STACK_MORE", sizes.stacks / 4),
            ("KEPT", sizes.kept),
            ("SAVED_ARGS", sizes.saved_args),
            ("SITES", sizes.sites),
        ]
        .into_iter()
        .chain(sizes.selecting.map_sizes())
        .map(|(n, v)| (n, v.max(1)))
        .collect::<Vec<_>>();
        let budget = u32::from(sizes.sites > 0).to_ne_bytes();
        let timestamps = u32::from(sizes.timestamps).to_ne_bytes();
        let one_cookie = u32::from(sizes.only_cookie.is_some() && sizes.sites == 0).to_ne_bytes();
        let only_cookie = sizes.only_cookie.unwrap_or(0).to_ne_bytes();
        let selecting = sizes.selecting.globals();
        let mut globals: Vec<(&str, &[u8])> = vec![
            ("RING_BYTES", &ring),
            ("BATCH_EVENTS", &batch),
            ("BUDGET", &budget),
            ("TIMESTAMPS", &timestamps),
            ("ONE_COOKIE", &one_cookie),
            ("ONLY_COOKIE", &only_cookie),
        ];
        globals.extend(selecting.iter().map(|(n, v)| (*n, v.as_slice())));
        let object =
            object::Object::load(crate::EBPF_OBJECT, &globals, &entries).map_err(|e| match e {
                object::ObjectError::Map {
                    errno: Some(libc::EPERM),
                    ..
                } => EngineError::PermissionDenied,
                e => EngineError::Load(chain(&e)),
            })?;
        let sites = if sizes.sites > 0 {
            Some(Arc::new(budget::site_table(&object, sizes.sites)?))
        } else {
            None
        };
        let multi_off = std::env::var_os(NO_MULTI_ENV).map(|_| format!("off ({NO_MULTI_ENV} set)"));
        Ok(Engine {
            object,
            progs: HashMap::new(),
            links: Arc::default(),
            multi_off,
            flusher: None,
            sites,
            watch: None,
            tracepoints: Vec::new(),
        })
    }

    /// Loads `ri_flush`, which the reader runs on a CPU whose batch of
    /// events has waited ([`Engine::flush_waiting`]).
    pub fn start_batches(&mut self) -> Result<(), EngineError> {
        let fd = self
            .object
            .load_typed("ri_flush", sys::BPF_PROG_TYPE_RAW_TRACEPOINT, 0)
            .map_err(|e| match e {
                object::ObjectError::Sys(sys::SysError::Prog {
                    errno: Some(libc::EPERM),
                    ..
                }) => EngineError::PermissionDenied,
                e => EngineError::Load(format!("ri_flush: {}", chain(&e))),
            })?;
        self.flusher = Some(flush::Flusher::new(fd));
        Ok(())
    }

    /// Whether events are sent in batches ([`Engine::start_batches`]).
    pub fn batched(&self) -> bool {
        self.flusher.is_some()
    }

    /// Sends the batch of events waiting on each CPU for `waited` ns or
    /// more, if any, to the ring. A younger batch goes with its CPU's next
    /// event or fills first: asking for it would only interrupt a busy CPU.
    pub fn flush_waiting(&self, waited: u64) -> Result<(), EngineError> {
        let Some(f) = &self.flusher else {
            return Ok(());
        };
        let fail = |reason: String| EngineError::Map {
            map: "PENDING",
            reason,
        };
        let map = self.map("PENDING")?;
        let pending: PerCpuArray<_, u64> =
            PerCpuArray::try_from(map).map_err(|e| fail(chain(&e)))?;
        let since = pending.get(&0, 0).map_err(|e| fail(chain(&e)))?;
        let now = monotonic_ns();
        for (cpu, &first) in since.iter().enumerate() {
            if first != 0 && now.saturating_sub(first) >= waited {
                // A CPU gone offline has nothing left to send.
                let _ = f.flush(cpu as u32);
            }
        }
        Ok(())
    }

    /// The attachments, locked.
    fn links(&self) -> MutexGuard<'_, links::Links> {
        self.links.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes plan `id`.
    pub fn set_plan(&mut self, id: u32, plan: &Plan) -> Result<(), EngineError> {
        if id >= MAX_PLANS {
            return Err(EngineError::TooManyPlans);
        }
        let map = self.object.map_mut("PLANS").ok_or(EngineError::Map {
            map: "PLANS",
            reason: "missing from the object".into(),
        })?;
        let mut plans: Array<_, Plan> = Array::try_from(map).map_err(|e| EngineError::Map {
            map: "PLANS",
            reason: chain(&e),
        })?;
        plans.set(id, plan, 0).map_err(|e| EngineError::Map {
            map: "PLANS",
            reason: chain(&e),
        })
    }

    /// Loads the programs `which` (for multi-uprobe links where they are
    /// on) side by side, one thread each: the verifier takes ~11 ms over the
    /// interpreter, and a probe pair needs both its entry and its return
    /// program. A program that fails here is loaded again, and its error
    /// reported, at its attach.
    pub fn preload(&mut self, which: &[Program]) {
        let multi = self.multi_off.is_none();
        let todo: Vec<Program> = which
            .iter()
            .copied()
            .filter(|p| !self.progs.contains_key(&(*p, multi)))
            .collect();
        if todo.len() < 2 {
            return;
        }
        let attach_type = if multi {
            multi::BPF_TRACE_UPROBE_MULTI
        } else {
            0
        };
        let object = &self.object;
        let loaded: Vec<(Program, OwnedFd)> = std::thread::scope(|s| {
            let handles: Vec<_> = todo
                .iter()
                .map(|p| s.spawn(move || (*p, object.load_program(p.name(), attach_type))))
                .collect();
            handles
                .into_iter()
                .filter_map(|h| h.join().ok())
                .filter_map(|(p, r)| r.ok().map(|fd| (p, fd)))
                .collect()
        });
        for (p, fd) in loaded {
            self.progs.insert((p, multi), fd);
        }
    }

    /// Program `which`, loaded at the first call for perf events or (when
    /// `multi`) for multi-uprobe links.
    fn program(&mut self, which: Program, multi: bool) -> Result<BorrowedFd<'_>, EngineError> {
        if !self.progs.contains_key(&(which, multi)) {
            let attach_type = if multi {
                multi::BPF_TRACE_UPROBE_MULTI
            } else {
                0
            };
            let fd = self
                .object
                .load_program(which.name(), attach_type)
                .map_err(|e| match e {
                    object::ObjectError::Sys(sys::SysError::Prog {
                        errno: Some(libc::EPERM),
                        ..
                    }) => EngineError::PermissionDenied,
                    e => EngineError::Load(chain(&e)),
                })?;
            self.progs.insert((which, multi), fd);
        }
        Ok(self.progs[&(which, multi)].as_fd())
    }

    /// Attaches `which` at `offset` in `path` with `cookie`, for one process
    /// or (pid `None`) for all: one perf event.
    pub fn attach(
        &mut self,
        which: Program,
        path: &Path,
        offset: u64,
        cookie: u64,
        pid: Option<u32>,
        site: &str,
    ) -> Result<(), EngineError> {
        let prog = self.program(which, false)?;
        let link = perf::attach_uprobe(prog, path, offset, None, which.at_return(), pid, cookie)
            .map_err(|e| perf_error(e, site))?;
        self.links().perf.push((links::site_of(cookie), link));
        Ok(())
    }

    /// Attaches `which` at every `(file offset, cookie, site name)` of
    /// `path`, for one process or (pid `None`) for all: one multi-uprobe
    /// link where the kernel has them, else one perf event per site.
    pub fn attach_sites(
        &mut self,
        which: Program,
        path: &Path,
        sites: &[(u64, u64, &str)],
        pid: Option<u32>,
    ) -> Result<(), EngineError> {
        // Under the budget, links of at most BUDGET_CHUNK sites: detaching
        // a site replaces its link, which takes time per site.
        let chunk = if self.sites.is_some() {
            BUDGET_CHUNK
        } else {
            sites.len().max(1)
        };
        if !sites.is_empty()
            && let Some(prog) = self.multi_program(which)
        {
            let ret = which.at_return();
            let dup = |e: std::io::Error| EngineError::Attach {
                site: path.display().to_string(),
                reason: e.to_string(),
            };
            let prog = prog.try_clone_to_owned().map_err(dup)?;
            let mut made = Vec::new();
            let mut failed = None;
            for part in sites.chunks(chunk) {
                let pairs: Vec<(u64, u64)> = part.iter().map(|s| (s.0, s.1)).collect();
                match multi::attach(prog.as_fd(), path, &pairs, ret, pid) {
                    Ok(fd) => made.push((fd, pairs)),
                    Err(e) => {
                        failed = Some(e);
                        break;
                    }
                }
            }
            match failed {
                None => {
                    for (fd, pairs) in made {
                        let prog = prog.try_clone().map_err(dup)?;
                        self.links().multi.push(links::MultiLink {
                            fd,
                            prog,
                            path: path.to_path_buf(),
                            ret,
                            pid,
                            sites: pairs,
                        });
                    }
                    return Ok(());
                }
                // Links made before the failure close here: all go site by
                // site. Unsupported here: remember.
                Some(multi::MultiError::Link(e))
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::EOPNOTSUPP | libc::ENOSYS | libc::E2BIG)
                    ) =>
                {
                    self.multi_off = Some(e.to_string());
                }
                // Otherwise site by site too, which names the failing site.
                Some(_) => {}
            }
        }
        let prog = self.program(which, false)?;
        let links = attach_each(prog, path, sites, which.at_return(), pid)?;
        self.links().perf.extend(links);
        Ok(())
    }

    /// The multi-uprobe copy of `which`, loaded at its first call; `None`
    /// when the kernel cannot have them.
    fn multi_program(&mut self, which: Program) -> Option<BorrowedFd<'_>> {
        if self.multi_off.is_some() {
            return None;
        }
        if let Err(e) = self.program(which, true) {
            self.multi_off = Some(e.to_string());
            return None;
        }
        self.progs.get(&(which, true)).map(|f| f.as_fd())
    }

    /// How the sites were attached, for the attach line: multi-uprobe links
    /// and/or per-site perf events (with why links were not used).
    pub fn attach_note(&self) -> String {
        let (n, perf) = self.links().counts();
        let mut parts = Vec::new();
        if n > 0 {
            parts.push(format!(
                "{n} multi-uprobe link{}",
                if n == 1 { "" } else { "s" }
            ));
        }
        if perf > 0 {
            let mut s = format!("{perf} perf event{}", if perf == 1 { "" } else { "s" });
            if let Some(why) = &self.multi_off {
                s.push_str(&format!(", multi-uprobe link unavailable: {why}"));
            }
            parts.push(s);
        }
        parts.join(" + ")
    }

    /// Attaches the entry program at a USDT probe (`offset` in `path`),
    /// raising its semaphore (file offset `semaphore`) while attached.
    pub fn attach_usdt(
        &mut self,
        path: &Path,
        offset: u64,
        semaphore: Option<u64>,
        cookie: u64,
        pid: Option<u32>,
        site: &str,
    ) -> Result<(), EngineError> {
        let prog = self.program(Program::Entry, false)?;
        let link = perf::attach_uprobe(prog, path, offset, semaphore, false, pid, cookie)
            .map_err(|e| perf_error(e, site))?;
        self.links().perf.push((links::site_of(cookie), link));
        Ok(())
    }

    /// Takes the event ring buffer (once).
    pub fn take_ring(&mut self) -> Result<RingBuf<MapData>, EngineError> {
        let map = self.object.take_map("EVENTS").ok_or(EngineError::Map {
            map: "EVENTS",
            reason: "already taken".into(),
        })?;
        RingBuf::try_from(map).map_err(|e| EngineError::Map {
            map: "EVENTS",
            reason: chain(&e),
        })
    }

    /// A map of the loaded object, by name (aggregations read theirs).
    pub fn map(&self, name: &'static str) -> Result<&aya::maps::Map, EngineError> {
        self.object.map(name).ok_or(EngineError::Map {
            map: name,
            reason: "missing from the object".into(),
        })
    }

    /// Slots `0..n` of the `FAST` array, each merged over CPUs, read in a
    /// few batched syscalls (one lookup per slot where batches fail).
    pub fn fast_values(&self, n: u32) -> Result<Vec<AggValue>, EngineError> {
        let fail = |reason: String| EngineError::Map {
            map: "FAST",
            reason,
        };
        let map = self
            .object
            .map("FAST")
            .ok_or_else(|| fail("missing from the object".into()))?;
        let fd = object::map_fd(map).ok_or_else(|| fail("not an array".into()))?;
        let cpus = aya::util::nr_cpus().map_err(|(p, e)| fail(format!("{p}: {e}")))?;
        let size = std::mem::size_of::<AggValue>();
        match sys::lookup_per_cpu_batch(fd, n as usize, size, cpus) {
            Ok(bytes) if n > 0 => Ok(bytes
                .chunks_exact(bytes.len() / n as usize)
                .map(batch::merge_cpus)
                .collect()),
            Ok(_) => Ok(Vec::new()),
            Err(_) => {
                let arr: PerCpuArray<_, AggValue> =
                    PerCpuArray::try_from(map).map_err(|e| fail(chain(&e)))?;
                (0..n)
                    .map(|i| {
                        let v = arr.get(&i, 0).map_err(|e| fail(chain(&e)))?;
                        Ok(v.iter().fold(AggValue::default(), |mut a, x| {
                            a.merge(x);
                            a
                        }))
                    })
                    .collect()
            }
        }
    }

    /// Events lost to a full ring buffer so far, summed over CPUs.
    pub fn lost(&self) -> Result<u64, EngineError> {
        self.counter("LOST")
    }

    /// Returns skipped because their call's entry found the per-call map
    /// full, summed over CPUs.
    pub fn no_entry(&self) -> Result<u64, EngineError> {
        self.counter("NO_ENTRY")
    }

    /// A one-slot per-CPU counter map, summed over CPUs.
    fn counter(&self, name: &'static str) -> Result<u64, EngineError> {
        let fail = |reason: String| EngineError::Map { map: name, reason };
        let map = self
            .object
            .map(name)
            .ok_or_else(|| fail("missing from the object".into()))?;
        let counts: PerCpuArray<_, u64> =
            PerCpuArray::try_from(map).map_err(|e| fail(chain(&e)))?;
        let v = counts.get(&0, 0).map_err(|e| fail(chain(&e)))?;
        Ok(v.iter().sum())
    }
}

/// Now on the clock of the kernel's timestamps (CLOCK_MONOTONIC), in ns.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: plain clock read into a local.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

#[cfg(test)]
mod tests {
    use ri_common::{Plan, plan_flags as f};

    use super::Program;

    #[test]
    fn only_plans_without_interpreter_work_run_fast() {
        let mut p = Plan::empty();
        assert!(Program::runs_fast(&p), "a header-only event");
        p.flags = f::STACK;
        assert!(!Program::runs_fast(&p), "a stack needs the full program");
        p.flags = f::AGGREGATE | f::COUNT_FAST;
        assert!(Program::runs_fast(&p));
        p.flags = f::AGGREGATE | f::HIST_FAST;
        assert!(Program::runs_fast(&p));
        p.flags = f::AGGREGATE;
        assert!(!Program::runs_fast(&p), "a keyed count");
        p.n_insns = 2;
        p.flags = 0;
        assert!(!Program::runs_fast(&p), "instructions to interpret");
        p.flags = f::REGS_ONLY;
        assert!(Program::runs_fast(&p), "registers only");
        p.flags = f::REGS_ONLY | f::ENTRY_ARGS;
        assert!(!Program::runs_fast(&p), "arguments restored at a return");
    }
}
