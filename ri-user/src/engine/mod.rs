//! The kernel side as user space sees it: loading ri's eBPF object, writing
//! plans into the `PLANS` map, attaching the generic programs with cookies,
//! and handing out the event ring buffer and the lost-event counter.

mod btf;
pub mod multi;
pub mod perf;
mod select;

pub use btf::{KernelOffsets, kernel_offsets};
pub use select::{Selecting, kernel_dev, pid_namespace};

use std::{
    os::fd::{AsFd, OwnedFd},
    path::Path,
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, MapData, PerCpuArray, RingBuf},
    programs::{
        UProbe,
        uprobe::{UProbeAttachLocation, UProbeAttachPoint, UProbeLink, UProbeScope},
    },
};
use ri_common::{
    MAX_PLANS, Plan,
    select::{MAX_COMMS, MAX_EXES, MAX_SELECTED},
};

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

/// Every program, in [`Program::index`] order.
const PROGRAMS: [Program; 3] = [Program::Entry, Program::Return, Program::Bare];

/// A loaded ri eBPF object.
pub struct Engine {
    bpf: Ebpf,
    loaded: Vec<Program>,
    /// USDT attachments, detached when the engine drops.
    usdt_links: Vec<perf::PerfLink>,
    /// Per-site uprobe perf events (the fallback), detached on drop.
    uprobe_links: Vec<UProbeLink>,
    /// The multi-uprobe copies of the programs (by [`Program::index`]),
    /// or why they are unavailable; loaded at the first attach.
    multi_progs: Option<Result<Vec<OwnedFd>, String>>,
    /// Multi-uprobe links, each covering many sites.
    multi_links: Vec<OwnedFd>,
}

impl Drop for Engine {
    /// Detaches everything at once: a multi-uprobe link's release waits for
    /// one grace period for all its sites; per-site perf events each wait
    /// for one (Linux 6.18 holds `event_mutex` across it, so even released
    /// concurrently they go one after the other there).
    fn drop(&mut self) {
        release_concurrently(std::mem::take(&mut self.multi_links));
        release_concurrently(std::mem::take(&mut self.uprobe_links));
        release_concurrently(std::mem::take(&mut self.usdt_links));
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
        Self::load_agg(
            ring_bytes,
            ri_common::AGG_ENTRIES,
            1,
            1,
            Selecting::default(),
        )
    }

    /// [`Engine::load`] with room for `agg_entries` keys in the aggregation
    /// map, `fast_slots` counters in the `FAST` array and `stack_entries`
    /// stacks in `STACKS` (a quarter as many in `STACK_MORE`, for stacks
    /// whose bucket was taken; 1 when no plan takes stacks: both maps are
    /// allocated in full at load); `select` says which processes the probes
    /// serve. In a pid namespace other than the initial one, the kernel side
    /// reports and filters that namespace's ids.
    pub fn load_agg(
        ring_bytes: u32,
        agg_entries: u32,
        fast_slots: u32,
        stack_entries: u32,
        select: Selecting,
    ) -> Result<Self, EngineError> {
        if !have_bpf_privileges() {
            return Err(EngineError::PermissionDenied);
        }
        let ring = u64::from(ring_bytes);
        let (ns_dev, ns_ino) = pid_namespace().unwrap_or((0, 0));
        let (on, all) = (u32::from(select.on), u32::from(select.all_execs));
        let offsets = select.exec_file.unwrap_or([u64::MAX; 5]);
        let tgid_offset = select.task_tgid.unwrap_or(u64::MAX);
        let bpf = EbpfLoader::new()
            .override_global("RING_BYTES", &ring, true)
            .override_global("NS_DEV", &ns_dev, true)
            .override_global("NS_INO", &ns_ino, true)
            .override_global("SELECTING", &on, true)
            .override_global("ALL_EXECS", &all, true)
            .override_global("EXEC_FILE_OFFSETS", &offsets, true)
            .override_global("TASK_TGID_OFFSET", &tgid_offset, true)
            // The selection maps take room only when selecting.
            .map_max_entries("SELECTED", if select.on { MAX_SELECTED } else { 1 })
            .map_max_entries("COMMS", if select.on { MAX_COMMS } else { 1 })
            .map_max_entries("EXES", if select.on { MAX_EXES } else { 1 })
            .map_max_entries("EVENTS", ring_bytes)
            .map_max_entries("AGG", agg_entries)
            .map_max_entries("AGG_SMALL", agg_entries)
            .map_max_entries("INFLIGHT", agg_entries)
            .map_max_entries("FAST", fast_slots.max(1))
            .map_max_entries("STACKS", stack_entries.max(1))
            .map_max_entries("STACK_MORE", (stack_entries / 4).max(1))
            .load(crate::EBPF_OBJECT)
            .map_err(|e| {
                if is_permission(&e) {
                    EngineError::PermissionDenied
                } else {
                    EngineError::Load(chain(&e))
                }
            })?;
        Ok(Engine {
            bpf,
            loaded: Vec::new(),
            usdt_links: Vec::new(),
            uprobe_links: Vec::new(),
            multi_progs: None,
            multi_links: Vec::new(),
        })
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
        self.uprobe_links.push(link);
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
        if !sites.is_empty()
            && let Some(prog) = self.multi_program(which)
        {
            let pairs: Vec<(u64, u64)> = sites.iter().map(|s| (s.0, s.1)).collect();
            match multi::attach(prog, path, &pairs, which == Program::Return, pid) {
                Ok(link) => {
                    self.multi_links.push(link);
                    return Ok(());
                }
                // Unsupported here: remember, and go site by site.
                Err(multi::MultiError::Link(e))
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::EOPNOTSUPP | libc::ENOSYS | libc::E2BIG)
                    ) =>
                {
                    self.multi_progs = Some(Err(e.to_string()));
                }
                // Otherwise site by site too, which names the failing site.
                Err(_) => {}
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
        let perf = self.uprobe_links.len() + self.usdt_links.len();
        let mut parts = Vec::new();
        if !self.multi_links.is_empty() {
            let n = self.multi_links.len();
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
        self.usdt_links.push(link);
        Ok(())
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
