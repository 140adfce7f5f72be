//! The kernel side as user space sees it: loading ri's eBPF object, writing
//! plans into the `PLANS` map, attaching the generic programs with cookies,
//! and handing out the event ring buffer and the lost-event counter.

pub mod perf;

use std::{os::fd::AsFd, path::Path};

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
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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
}

/// A loaded ri eBPF object.
pub struct Engine {
    bpf: Ebpf,
    loaded: Vec<Program>,
    /// USDT attachments, detached when the engine drops.
    usdt_links: Vec<perf::PerfLink>,
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
        prog.attach(point, path, scope)
            .map(|_| ())
            .map_err(|e| EngineError::Attach {
                site: site.to_string(),
                reason: chain(&e),
            })
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
