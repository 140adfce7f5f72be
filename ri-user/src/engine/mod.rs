//! The kernel side as user space sees it: loading ri's eBPF object, writing
//! plans into the `PLANS` map, attaching the generic programs with cookies,
//! and handing out the event ring buffer and the lost-event counter.

mod links;
pub mod multi;
pub mod perf;
pub mod sites;
mod watch;

pub use watch::{BudgetConfig, SiteKind};

use std::{
    os::fd::{AsFd, OwnedFd},
    path::Path,
    sync::{Arc, Mutex, MutexGuard},
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, MapData, PerCpuArray, RingBuf},
    programs::{
        UProbe,
        uprobe::{UProbeAttachLocation, UProbeAttachPoint, UProbeScope},
    },
};
use ri_common::{MAX_PLANS, Plan};

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
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Program {
    /// Plan interpreter at function entry (or entry + offset).
    Entry,
    /// Plan interpreter at function return.
    Return,
    /// The empty program (benchmark baseline).
    Bare,
}

impl Program {
    fn name(self) -> &'static str {
        match self {
            Program::Entry => "ri_entry",
            Program::Return => "ri_return",
            Program::Bare => "ri_bare",
        }
    }

    /// Index in the multi-uprobe copies.
    fn index(self) -> usize {
        self as usize
    }
}

/// Set in the environment, ri attaches one perf event per site even where
/// multi-uprobe links work (to compare and test the fallback).
pub const NO_MULTI_ENV: &str = "RI_NO_MULTI_UPROBE";

/// Sites per multi-uprobe link when the overhead budget is on.
const BUDGET_CHUNK: usize = 128;

/// Every program, in [`Program::index`] order.
const PROGRAMS: [Program; 3] = [Program::Entry, Program::Return, Program::Bare];

/// A loaded ri eBPF object.
pub struct Engine {
    bpf: Ebpf,
    loaded: Vec<Program>,
    /// Every attachment, detached when the engine drops (shared with the
    /// budget's watcher, which detaches sites).
    links: Arc<Mutex<links::Links>>,
    /// The multi-uprobe copies of the programs (by [`Program::index`]),
    /// or why they are unavailable; loaded at the first attach.
    multi_progs: Option<Result<Vec<OwnedFd>, String>>,
    /// The kernel's per-site counters, when the budget is on.
    sites: Option<Arc<sites::SiteTable>>,
    /// The budget's watcher, once started.
    watch: Option<watch::Watch>,
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
        let (multi, perf, usdt) = links.take_all();
        let releasing = std::mem::take(&mut links.releasing);
        drop(links);
        release_concurrently(multi);
        release_concurrently(perf);
        release_concurrently(usdt);
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

/// Walks an error's sources looking for EPERM (the verifier's EACCES is a
/// rejected program, not a privilege problem).
fn is_permission(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(err);
    while let Some(e) = cur {
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && matches!(io.raw_os_error(), Some(libc::EPERM))
        {
            return true;
        }
        cur = e.source();
    }
    false
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
        Self::load_agg(ring_bytes, ri_common::AGG_ENTRIES, 1, 1)
    }

    /// [`Engine::load`] with room for `agg_entries` keys in the aggregation
    /// map, `fast_slots` counters in the `FAST` array and `stack_entries`
    /// stacks in `STACKS` (a quarter as many in `STACK_MORE`, for stacks
    /// whose bucket was taken; 1 when no plan takes stacks: both maps are
    /// allocated in full at load).
    pub fn load_agg(
        ring_bytes: u32,
        agg_entries: u32,
        fast_slots: u32,
        stack_entries: u32,
    ) -> Result<Self, EngineError> {
        Self::load_budgeted(ring_bytes, agg_entries, fast_slots, stack_entries, 0)
    }

    /// [`Engine::load_agg`] with the overhead budget's per-site counters
    /// for `budget_sites` sites (0: the budget is off, and the kernel
    /// neither counts nor checks per site).
    pub fn load_budgeted(
        ring_bytes: u32,
        agg_entries: u32,
        fast_slots: u32,
        stack_entries: u32,
        budget_sites: u32,
    ) -> Result<Self, EngineError> {
        if !have_bpf_privileges() {
            return Err(EngineError::PermissionDenied);
        }
        let ring = u64::from(ring_bytes);
        let bpf = EbpfLoader::new()
            .override_global("RING_BYTES", &ring, true)
            .map_max_entries("EVENTS", ring_bytes)
            .map_max_entries("AGG", agg_entries)
            .map_max_entries("AGG_SMALL", agg_entries)
            .map_max_entries("INFLIGHT", agg_entries)
            .map_max_entries("FAST", fast_slots.max(1))
            .map_max_entries("STACKS", stack_entries.max(1))
            .map_max_entries("STACK_MORE", (stack_entries / 4).max(1))
            .override_global("BUDGET", &u32::from(budget_sites > 0), true)
            .map_max_entries("SITES", budget_sites.max(1))
            .load(crate::EBPF_OBJECT)
            .map_err(|e| {
                if is_permission(&e) {
                    EngineError::PermissionDenied
                } else {
                    EngineError::Load(chain(&e))
                }
            })?;
        let sites = if budget_sites > 0 {
            let map = bpf
                .map("SITES")
                .and_then(multi::map_fd)
                .ok_or(EngineError::Map {
                    map: "SITES",
                    reason: "missing from the object".into(),
                })?;
            let table = sites::SiteTable::map(map, budget_sites as usize).map_err(|e| {
                EngineError::Map {
                    map: "SITES",
                    reason: e.to_string(),
                }
            })?;
            Some(Arc::new(table))
        } else {
            None
        };
        Ok(Engine {
            bpf,
            loaded: Vec::new(),
            links: Arc::default(),
            multi_progs: None,
            sites,
            watch: None,
        })
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
        let map = self.bpf.map_mut("PLANS").ok_or(EngineError::Map {
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

    fn program(&mut self, which: Program) -> Result<&mut UProbe, EngineError> {
        let needs_load = !self.loaded.contains(&which);
        let prog: &mut UProbe = self
            .bpf
            .program_mut(which.name())
            .ok_or_else(|| EngineError::Load(format!("program {} missing", which.name())))?
            .try_into()
            .map_err(|e| EngineError::Load(chain(&e)))?;
        if needs_load {
            prog.load().map_err(|e| {
                if is_permission(&e) {
                    EngineError::PermissionDenied
                } else {
                    EngineError::Load(chain(&e))
                }
            })?;
            self.loaded.push(which);
        }
        Ok(prog)
    }

    /// Attaches `which` at `offset` in `path` with `cookie`, for one process
    /// or (pid `None`) for all.
    pub fn attach(
        &mut self,
        which: Program,
        path: &Path,
        offset: u64,
        cookie: u64,
        pid: Option<u32>,
        site: &str,
    ) -> Result<(), EngineError> {
        let prog = self.program(which)?;
        let scope = match pid.and_then(std::num::NonZeroU32::new) {
            Some(p) => UProbeScope::OneProcess(p),
            None => UProbeScope::AllProcesses,
        };
        let point = UProbeAttachPoint {
            location: UProbeAttachLocation::AbsoluteOffset(offset),
            cookie: Some(cookie),
        };
        let attach_err = |e: &(dyn std::error::Error + 'static)| EngineError::Attach {
            site: site.to_string(),
            reason: chain(e),
        };
        let id = prog
            .attach(point, path, scope)
            .map_err(|e| attach_err(&e))?;
        let link = prog.take_link(id).map_err(|e| attach_err(&e))?;
        self.links().perf.push(((cookie >> 32) as u32, link));
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
            let ret = which == Program::Return;
            let prog = prog.try_clone_to_owned().map_err(|e| EngineError::Attach {
                site: path.display().to_string(),
                reason: e.to_string(),
            })?;
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
            let failed = match failed {
                None => {
                    for (fd, pairs) in made {
                        let prog = prog.try_clone().map_err(|e| EngineError::Attach {
                            site: path.display().to_string(),
                            reason: e.to_string(),
                        })?;
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
                // Links made before the failure close here: all go site by site.
                Some(e) => e,
            };
            match failed {
                // Unsupported here: remember, and go site by site.
                multi::MultiError::Link(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::EOPNOTSUPP | libc::ENOSYS | libc::E2BIG)
                    ) =>
                {
                    self.multi_progs = Some(Err(e.to_string()));
                }
                // Otherwise site by site too, which names the failing site.
                _ => {}
            }
        }
        for (offset, cookie, name) in sites {
            self.attach(which, path, *offset, *cookie, pid, name)?;
        }
        Ok(())
    }

    /// The multi-uprobe copy of `which`, loaded with the others at the first
    /// call; `None` when the kernel cannot have them.
    fn multi_program(&mut self, which: Program) -> Option<std::os::fd::BorrowedFd<'_>> {
        if self.multi_progs.is_none() && std::env::var_os(NO_MULTI_ENV).is_some() {
            self.multi_progs = Some(Err(format!("off ({NO_MULTI_ENV} set)")));
        }
        if self.multi_progs.is_none() {
            let names: Vec<&str> = PROGRAMS.iter().map(|p| p.name()).collect();
            self.multi_progs = Some(
                multi::load_programs(crate::EBPF_OBJECT, &self.bpf, &names)
                    .map_err(|e| e.to_string()),
            );
        }
        match &self.multi_progs {
            Some(Ok(fds)) => fds.get(which.index()).map(|f| f.as_fd()),
            _ => None,
        }
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
            if let Some(Err(why)) = &self.multi_progs {
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
        let prog = self.program(Program::Entry)?;
        let fd = prog.fd().map_err(|e| EngineError::Load(chain(&e)))?;
        let link = perf::attach_uprobe(fd.as_fd(), path, offset, semaphore, false, pid, cookie)
            .map_err(|e| match e {
                perf::PerfError::Open(ref io) | perf::PerfError::Link(ref io)
                    if io.raw_os_error() == Some(libc::EPERM) =>
                {
                    EngineError::PermissionDenied
                }
                e => EngineError::Attach {
                    site: site.to_string(),
                    reason: e.to_string(),
                },
            })?;
        self.links().usdt.push(((cookie >> 32) as u32, link));
        Ok(())
    }

    /// Starts the overhead budget (the engine must have been loaded with
    /// [`Engine::load_budgeted`]): calibrates the trap cost on ri's own
    /// code, turns on BPF run-time statistics, and starts the watcher.
    /// Returns the calibrated costs, for the note on stderr.
    pub fn start_budget(&mut self, cfg: BudgetConfig) -> Result<sites::TrapCosts, EngineError> {
        let Some(table) = self.sites.clone() else {
            return Err(EngineError::Map {
                map: "SITES",
                reason: "the budget needs the per-site counters loaded".into(),
            });
        };
        let traps = self.calibrate(cfg.kinds.contains(&SiteKind::Nop5))?;
        let mut progs = Vec::new();
        for which in self.loaded.clone() {
            if let Ok(fd) = self.program(which)?.fd()
                && let Ok(fd) = fd.as_fd().try_clone_to_owned()
            {
                progs.push(fd);
            }
        }
        if let Some(Ok(fds)) = &self.multi_progs {
            progs.extend(fds.iter().filter_map(|f| f.try_clone().ok()));
        }
        let stats = sites::ProgStats::enable(progs);
        self.watch = Some(watch::Watch::start(
            cfg,
            traps,
            table,
            self.links.clone(),
            stats,
        ));
        Ok(traps)
    }

    /// The trap costs, measured by attaching the empty program to ri's own
    /// calibration functions (this process only) and timing calls of them;
    /// the nop5 one only when `nop5` sites are probed. The calibration
    /// probes are released on another thread.
    fn calibrate(&mut self, nop5: bool) -> Result<sites::TrapCosts, EngineError> {
        let fd = self
            .program(Program::Bare)?
            .fd()
            .map_err(|e| EngineError::Load(chain(&e)))?
            .as_fd()
            .try_clone_to_owned()
            .map_err(|e| EngineError::Load(e.to_string()))?;
        let pid = std::process::id();
        let mut attach = |path: &Path, offset: u64| {
            perf::attach_uprobe(fd.as_fd(), path, offset, None, false, Some(pid), 0)
                .map_err(|e| e.to_string())
        };
        let [(int3_fn, int3_at), (nop5_fn, nop5_at)] = sites::calibration_functions();
        let fail = |e: sites::SitesError| EngineError::Attach {
            site: "ri's calibration function".into(),
            reason: e.to_string(),
        };
        let (int3, l1) = sites::trap_cost(&int3_fn, int3_at, &mut attach).map_err(fail)?;
        let mut done = vec![l1];
        let nop5 = if nop5 {
            let (c, l2) = sites::trap_cost(&nop5_fn, nop5_at, &mut attach).map_err(fail)?;
            done.push(l2);
            c
        } else {
            int3
        };
        self.links()
            .releasing
            .push(std::thread::spawn(move || release_concurrently(done)));
        Ok(sites::TrapCosts { int3, nop5 })
    }

    /// The sites the budget detached so far.
    pub fn dropped(&self) -> Vec<crate::budget::Dropped> {
        self.watch
            .as_ref()
            .and_then(|w| w.dropped.lock().ok().map(|d| d.clone()))
            .unwrap_or_default()
    }

    /// Takes the event ring buffer (once).
    pub fn take_ring(&mut self) -> Result<RingBuf<MapData>, EngineError> {
        let map = self.bpf.take_map("EVENTS").ok_or(EngineError::Map {
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
        self.bpf.map(name).ok_or(EngineError::Map {
            map: name,
            reason: "missing from the object".into(),
        })
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
            .bpf
            .map(name)
            .ok_or_else(|| fail("missing from the object".into()))?;
        let counts: PerCpuArray<_, u64> =
            PerCpuArray::try_from(map).map_err(|e| fail(chain(&e)))?;
        let v = counts.get(&0, 0).map_err(|e| fail(chain(&e)))?;
        Ok(v.iter().sum())
    }
}
