//! The engine's side of choosing processes by name: ri's own pid namespace
//! for the loader, and the exec/exit tracepoints that keep `SELECTED`.

use std::os::{fd::AsFd, unix::fs::MetadataExt};

use aya::maps::{HashMap, MapData, RingBuf};
use ri_common::select::{MAX_COMMS, MAX_EXES, MAX_SELECTED, NOTICE_RING_BYTES};

use super::{Engine, EngineError, chain, object::ObjectError, sys};

/// The initial pid namespace's inode number (the kernel's `PROC_PID_INIT_INO`).
const INIT_PID_NS_INO: u64 = 0xEFFF_FFFC;

/// How the loaded object chooses the processes its probes serve.
#[derive(Clone, Copy, Debug, Default)]
pub struct Selecting {
    /// Only the processes in `SELECTED` (`--comm`/`--exe`).
    pub on: bool,
    /// Tell user space of every exec (`--exe` is checked there).
    pub all_execs: bool,
    /// Where an exec's file is in the kernel's structs (see
    /// [`super::btf::KernelOffsets`]), for `--exe` in the kernel.
    pub exec_file: Option<[u64; 5]>,
    /// Where a task's tgid is (see [`super::btf::KernelOffsets`]), to
    /// follow forks.
    pub task_tgid: Option<u64>,
}

impl Selecting {
    /// The loader's globals for this selection (and ri's pid namespace),
    /// frozen: with `on` false the verifier drops the admission check.
    pub(super) fn globals(&self) -> Vec<(&'static str, Vec<u8>)> {
        let (ns_dev, ns_ino) = pid_namespace().unwrap_or((0, 0));
        let offsets = self.exec_file.unwrap_or([u64::MAX; 5]);
        vec![
            ("NS_DEV", ns_dev.to_ne_bytes().to_vec()),
            ("NS_INO", ns_ino.to_ne_bytes().to_vec()),
            ("SELECTING", u32::from(self.on).to_ne_bytes().to_vec()),
            (
                "ALL_EXECS",
                u32::from(self.all_execs).to_ne_bytes().to_vec(),
            ),
            (
                "EXEC_FILE_OFFSETS",
                offsets.iter().flat_map(|o| o.to_ne_bytes()).collect(),
            ),
            (
                "TASK_TGID_OFFSET",
                self.task_tgid.unwrap_or(u64::MAX).to_ne_bytes().to_vec(),
            ),
        ]
    }

    /// The selection maps' sizes: they take room only when selecting.
    pub(super) fn map_sizes(&self) -> [(&'static str, u32); 4] {
        let (set, comms, exes, ring) = match self.on {
            true => (MAX_SELECTED, MAX_COMMS, MAX_EXES, NOTICE_RING_BYTES),
            false => (1, 1, 1, page_size()),
        };
        [
            ("SELECTED", set),
            ("COMMS", comms),
            ("EXES", exes),
            ("NOTICES", ring),
        ]
    }
}

/// The page size, the smallest ring buffer.
fn page_size() -> u32 {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u32::try_from(n).unwrap_or(4096)
}

/// ri's pid namespace as `bpf_get_ns_current_pid_tgid` wants it (the
/// kernel's device number and the inode of `/proc/self/ns/pid`), or `None`
/// in the initial namespace, whose ids the kernel side reads directly.
pub fn pid_namespace() -> Option<(u64, u64)> {
    let m = std::fs::metadata("/proc/self/ns/pid").ok()?;
    if m.ino() == INIT_PID_NS_INO {
        return None;
    }
    Some((kernel_dev(m.dev()), m.ino()))
}

/// A device number as the kernel keeps it (`MKDEV`: major << 20 | minor),
/// from user space's encoding (`stat`'s `st_dev`).
pub fn kernel_dev(dev: u64) -> u64 {
    (u64::from(libc::major(dev)) << 20) | u64::from(libc::minor(dev))
}

impl Engine {
    /// Writes the `--comm` names (NUL-padded to 16 bytes) and `--exe`
    /// files, and attaches the exec and exit tracepoints that keep the
    /// selected set.
    pub fn watch_execs(
        &mut self,
        comms: &[[u8; 16]],
        exes: &[ri_common::ExeKey],
    ) -> Result<(), EngineError> {
        let fail = |map: &'static str, e: &(dyn std::error::Error + 'static)| EngineError::Map {
            map,
            reason: chain(e),
        };
        {
            let map = self.object.map_mut("COMMS").ok_or(EngineError::Map {
                map: "COMMS",
                reason: "missing from the object".into(),
            })?;
            let mut names: HashMap<_, [u8; 16], u8> =
                HashMap::try_from(map).map_err(|e| fail("COMMS", &e))?;
            for c in comms {
                names.insert(c, 1, 0).map_err(|e| fail("COMMS", &e))?;
            }
        }
        {
            let map = self.object.map_mut("EXES").ok_or(EngineError::Map {
                map: "EXES",
                reason: "missing from the object".into(),
            })?;
            let mut files: HashMap<_, ri_common::ExeKey, u8> =
                HashMap::try_from(map).map_err(|e| fail("EXES", &e))?;
            for k in exes {
                files.insert(k, 1, 0).map_err(|e| fail("EXES", &e))?;
            }
        }
        // Raw tracepoints: attached by name, with no tracefs mounted.
        for (prog, event) in [
            ("ri_exec", "sched_process_exec"),
            ("ri_exit", "sched_process_exit"),
            ("ri_fork", "sched_process_fork"),
        ] {
            let fd = self
                .object
                .load_typed(prog, sys::BPF_PROG_TYPE_RAW_TRACEPOINT, 0)
                .map_err(|e| match e {
                    ObjectError::Sys(sys::SysError::Prog {
                        errno: Some(libc::EPERM),
                        ..
                    }) => EngineError::PermissionDenied,
                    e => EngineError::Load(format!("{prog}: {}", chain(&e))),
                })?;
            let link =
                sys::raw_tracepoint_open(fd.as_fd(), event).map_err(|e| EngineError::Attach {
                    site: format!("raw tracepoint {event}"),
                    reason: e.to_string(),
                })?;
            // The link holds the program; its fd closes here.
            self.tracepoints.push(link);
        }
        Ok(())
    }

    /// Takes the selected set and the notice ring (once), for the watcher.
    #[allow(clippy::type_complexity)]
    pub fn take_selection(
        &mut self,
    ) -> Result<(HashMap<MapData, u32, u8>, RingBuf<MapData>), EngineError> {
        let mut take = |name: &'static str| {
            self.object.take_map(name).ok_or(EngineError::Map {
                map: name,
                reason: "already taken".into(),
            })
        };
        let (set, ring) = (take("SELECTED")?, take("NOTICES")?);
        let set = HashMap::try_from(set).map_err(|e| EngineError::Map {
            map: "SELECTED",
            reason: chain(&e),
        })?;
        let ring = RingBuf::try_from(ring).map_err(|e| EngineError::Map {
            map: "NOTICES",
            reason: chain(&e),
        })?;
        Ok((set, ring))
    }
}
