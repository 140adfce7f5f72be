//! Uprobes with a reference counter (USDT semaphores): ri opens the uprobe
//! PMU event itself, because the kernel raises the semaphore only when the
//! `ref_ctr_offset` is given at `perf_event_open`, then links its program to
//! the event with a cookie (`BPF_LINK_CREATE`, `BPF_PERF_EVENT`). Closing
//! the fds (also when ri is killed) detaches and lowers the semaphore.

use std::{
    ffi::CString,
    os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd},
    path::Path,
};

/// Errors opening a uprobe perf event or linking a program to it.
#[derive(Debug, thiserror::Error)]
pub enum PerfError {
    /// The uprobe PMU is not in sysfs.
    #[error("uprobe PMU unavailable: {0}")]
    Pmu(String),
    /// `perf_event_open` failed.
    #[error("perf_event_open: {0}")]
    Open(std::io::Error),
    /// `BPF_LINK_CREATE` failed.
    #[error("bpf link: {0}")]
    Link(std::io::Error),
}

/// An attached uprobe: the perf event and the BPF link, closed on drop.
#[derive(Debug)]
pub struct PerfLink {
    _link: OwnedFd,
    _event: OwnedFd,
}

fn read_sysfs(p: &str) -> Result<String, PerfError> {
    std::fs::read_to_string(p)
        .map(|s| s.trim().to_string())
        .map_err(|e| PerfError::Pmu(format!("{p}: {e}")))
}

/// The uprobe PMU type and the retprobe bit of `config`, read once.
fn pmu() -> Result<(u32, u32), PerfError> {
    static PMU: std::sync::OnceLock<(u32, u32)> = std::sync::OnceLock::new();
    if let Some(p) = PMU.get() {
        return Ok(*p);
    }
    let p = read_pmu()?;
    Ok(*PMU.get_or_init(|| p))
}

/// [`pmu`] from sysfs.
fn read_pmu() -> Result<(u32, u32), PerfError> {
    let base = "/sys/bus/event_source/devices/uprobe";
    let ty = read_sysfs(&format!("{base}/type"))?
        .parse()
        .map_err(|_| PerfError::Pmu("bad PMU type".into()))?;
    let fmt = read_sysfs(&format!("{base}/format/retprobe"))?;
    let bit = fmt
        .strip_prefix("config:")
        .and_then(|b| b.parse().ok())
        .ok_or_else(|| PerfError::Pmu(format!("retprobe format '{fmt}'")))?;
    Ok((ty, bit))
}

/// `struct perf_event_attr` up to `config2` (the kernel takes `size`).
#[repr(C)]
#[derive(Default)]
struct PerfEventAttr {
    ty: u32,
    size: u32,
    config: u64,
    sample_period: u64,
    sample_type: u64,
    read_format: u64,
    flags: u64,
    wakeup_events: u32,
    bp_type: u32,
    config1: u64,
    config2: u64,
}

/// Shift of `ref_ctr_offset` in `config` (PERF_UPROBE_REF_CTR_OFFSET_SHIFT).
const REF_CTR_SHIFT: u32 = 32;
/// `BPF_LINK_CREATE` command.
const BPF_LINK_CREATE: libc::c_long = 28;
/// `BPF_PERF_EVENT` attach type.
const BPF_PERF_EVENT: u32 = 41;
const PERF_FLAG_FD_CLOEXEC: libc::c_ulong = 8;

/// Opens a uprobe at `offset` in `path` (with the semaphore at file offset
/// `ref_ctr`, if any) for `pid` or all processes, and links `prog` to it
/// with `cookie`.
pub fn attach_uprobe(
    prog: BorrowedFd<'_>,
    path: &Path,
    offset: u64,
    ref_ctr: Option<u64>,
    retprobe: bool,
    pid: Option<u32>,
    cookie: u64,
) -> Result<PerfLink, PerfError> {
    use std::os::unix::ffi::OsStrExt;
    let (ty, ret_bit) = pmu()?;
    let cpath = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| PerfError::Pmu("path with a NUL byte".into()))?;
    let mut config = 0u64;
    if retprobe {
        config |= 1 << ret_bit;
    }
    if let Some(r) = ref_ctr {
        config |= r << REF_CTR_SHIFT;
    }
    let attr = PerfEventAttr {
        ty,
        size: std::mem::size_of::<PerfEventAttr>() as u32,
        config,
        sample_period: 1,
        wakeup_events: 1,
        config1: cpath.as_ptr() as u64,
        config2: offset,
        ..Default::default()
    };
    // One process (all its threads) or every process on CPU 0's context,
    // which for uprobes means system-wide.
    let (p, cpu): (libc::c_int, libc::c_int) = match pid {
        Some(p) => (p as libc::c_int, -1),
        None => (-1, 0),
    };
    // SAFETY: attr is a valid perf_event_attr prefix with its size set; the
    // path outlives the call.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_perf_event_open,
            &attr as *const PerfEventAttr,
            p,
            cpu,
            -1 as libc::c_int,
            PERF_FLAG_FD_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(PerfError::Open(std::io::Error::last_os_error()));
    }
    // SAFETY: the kernel just returned this fd to us.
    let event = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    // union bpf_attr, link_create: prog_fd, target_fd, attach_type, flags,
    // then perf_event.bpf_cookie.
    let mut attr = [0u64; 16];
    attr[0] = prog.as_raw_fd() as u32 as u64 | ((event.as_raw_fd() as u32 as u64) << 32);
    attr[1] = BPF_PERF_EVENT as u64;
    attr[2] = cookie;
    // SAFETY: attr is a zeroed bpf_attr of the size passed.
    let link = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_LINK_CREATE,
            attr.as_ptr(),
            std::mem::size_of_val(&attr) as u32,
        )
    };
    if link < 0 {
        return Err(PerfError::Link(std::io::Error::last_os_error()));
    }
    // SAFETY: as above.
    let link = unsafe { OwnedFd::from_raw_fd(link as i32) };
    Ok(PerfLink {
        _link: link,
        _event: event,
    })
}
