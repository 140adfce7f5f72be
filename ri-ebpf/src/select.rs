//! Which processes the probes serve: ids as ri's pid namespace sees them,
//! and the set of processes chosen by name, kept at exec and exit.

use aya_ebpf::{
    bindings::bpf_pidns_info,
    helpers::{
        bpf_probe_read_kernel,
        generated::{bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_ns_current_pid_tgid},
    },
    macros::{map, raw_tracepoint},
    maps::{HashMap, RingBuf},
    programs::RawTracePointContext,
};
use ri_common::{ExeKey, Notice, select};

/// Device and inode of ri's pid namespace (from `/proc/self/ns/pid`), set
/// by the loader when ri does not run in the initial one; 0 otherwise.
#[unsafe(no_mangle)]
static NS_DEV: u64 = 0;
/// See [`NS_DEV`].
#[unsafe(no_mangle)]
static NS_INO: u64 = 0;
/// Set by the loader: probes serve only the processes in `SELECTED`.
#[unsafe(no_mangle)]
static SELECTING: u32 = 0;
/// Set by the loader: every exec is told to user space (for `--exe`).
#[unsafe(no_mangle)]
static ALL_EXECS: u32 = 0;

/// Offsets of `linux_binprm.file`, `file.f_inode`, `inode.i_ino`,
/// `inode.i_sb` and `super_block.s_dev`, from the kernel's BTF, set by the
/// loader for `--exe`; `u64::MAX` when unknown (user space checks then).
#[unsafe(no_mangle)]
static EXEC_FILE_OFFSETS: [u64; 5] = [u64::MAX; 5];

/// Offset of `task_struct.tgid`, from the kernel's BTF, set by the loader;
/// `u64::MAX` when unknown (forked children are then not followed).
#[unsafe(no_mangle)]
static TASK_TGID_OFFSET: u64 = u64::MAX;

/// `--exe` files by device and inode.
#[map]
static EXES: HashMap<ExeKey, u8> = HashMap::with_max_entries(select::MAX_EXES, 0);

/// The selected processes by tgid, with how they were chosen
/// (`select::BY_PID` or `BY_NAME`).
#[map]
static SELECTED: HashMap<u32, u8> = HashMap::with_max_entries(select::MAX_SELECTED, 0);

/// `--comm` names, NUL-padded to 16 bytes as the kernel keeps them.
#[map]
static COMMS: HashMap<[u8; 16], u8> = HashMap::with_max_entries(select::MAX_COMMS, 0);

/// Execs and exits for user space.
#[map]
static NOTICES: RingBuf = RingBuf::with_byte_size(select::NOTICE_RING_BYTES, 0);

/// The current thread's `tgid << 32 | pid` as ri's pid namespace numbers
/// them; `None` for a thread outside it.
#[inline(always)]
pub fn pid_tgid() -> Option<u64> {
    // SAFETY: read-only globals the loader sets.
    let (dev, ino) = unsafe {
        (
            core::ptr::read_volatile(&NS_DEV),
            core::ptr::read_volatile(&NS_INO),
        )
    };
    if ino == 0 {
        return Some(unsafe { bpf_get_current_pid_tgid() });
    }
    let mut info = bpf_pidns_info { pid: 0, tgid: 0 };
    // SAFETY: `info` is a valid out-parameter of the size given.
    let r = unsafe {
        bpf_get_ns_current_pid_tgid(
            dev,
            ino,
            &mut info,
            core::mem::size_of::<bpf_pidns_info>() as u32,
        )
    };
    (r == 0).then_some((u64::from(info.tgid) << 32) | u64::from(info.pid))
}

/// The current thread's `tgid << 32 | pid` in ri's namespace (0 outside it).
#[inline(always)]
pub fn ids() -> u64 {
    pid_tgid().unwrap_or(0)
}

/// Whether the probes serve the current process: every process in ri's
/// namespace, or with `--comm`/`--exe` only the selected ones.
#[inline(always)]
pub fn admitted() -> bool {
    // SAFETY: read-only globals the loader sets.
    let (selecting, ino) = unsafe {
        (
            core::ptr::read_volatile(&SELECTING),
            core::ptr::read_volatile(&NS_INO),
        )
    };
    if selecting == 0 && ino == 0 {
        return true;
    }
    match pid_tgid() {
        None => false,
        Some(_) if selecting == 0 => true,
        // SAFETY: the value is only tested for presence.
        Some(ids) => unsafe { SELECTED.get((ids >> 32) as u32) }.is_some(),
    }
}

/// Sends a notice; a full ring drops it (user space then misses a line,
/// not a process: the kernel's set is already up to date).
#[inline(always)]
fn notice(kind: u32, pid: u32, comm: [u8; 16]) {
    let _ = NOTICES.output::<Notice>(&Notice { kind, pid, comm }, 0);
}

/// The file an exec runs (`bprm`, the tracepoint's third argument), by
/// device and inode; `None` without the offsets or on a failed read.
#[inline(always)]
fn exec_file(bprm: u64) -> Option<ExeKey> {
    // SAFETY: a read-only global the loader sets.
    let o = unsafe { core::ptr::read_volatile(&EXEC_FILE_OFFSETS) };
    if o[0] == u64::MAX {
        return None;
    }
    // SAFETY: kernel reads through the helper, which checks the address.
    unsafe {
        let file: u64 = bpf_probe_read_kernel((bprm + o[0]) as *const u64).ok()?;
        let inode: u64 = bpf_probe_read_kernel((file + o[1]) as *const u64).ok()?;
        let ino: u64 = bpf_probe_read_kernel((inode + o[2]) as *const u64).ok()?;
        let sb: u64 = bpf_probe_read_kernel((inode + o[3]) as *const u64).ok()?;
        let dev: u32 = bpf_probe_read_kernel((sb + o[4]) as *const u32).ok()?;
        Some(ExeKey {
            dev: u64::from(dev),
            ino,
        })
    }
}

/// At every exec: a process whose new comm is a `--comm` name, or whose
/// file is an `--exe` file, joins the set; one chosen by name that runs
/// another program leaves it.
#[raw_tracepoint(tracepoint = "sched_process_exec")]
pub fn ri_exec(ctx: RawTracePointContext) -> i32 {
    // SAFETY: read-only globals the loader sets.
    if unsafe { core::ptr::read_volatile(&SELECTING) } == 0 {
        return 0;
    }
    let Some(ids) = pid_tgid() else {
        return 0;
    };
    let tgid = (ids >> 32) as u32;
    let mut comm = [0u8; 16];
    // SAFETY: a 16-byte buffer, as the helper writes.
    unsafe { bpf_get_current_comm(comm.as_mut_ptr() as *mut _, 16) };
    let file = exec_file(ctx.arg::<u64>(2));
    // SAFETY: presence only.
    let by_file = file.is_some_and(|k| unsafe { EXES.get(k) }.is_some());
    // SAFETY: presence only.
    if by_file || unsafe { COMMS.get(comm) }.is_some() {
        if SELECTED.insert(tgid, select::BY_NAME, 0).is_ok() {
            notice(select::MATCHED, tgid, comm);
        }
        return 0;
    }
    // SAFETY: a copied byte.
    if unsafe { SELECTED.get(tgid) }.copied() == Some(select::BY_NAME) {
        let _ = SELECTED.remove(tgid);
        notice(select::AWAY, tgid, comm);
    }
    // SAFETY: read-only global.
    if unsafe { core::ptr::read_volatile(&ALL_EXECS) } != 0 {
        notice(select::EXEC, tgid, comm);
    }
    0
}

/// At a thread's exit: a selected process whose main thread exits leaves
/// the set (its tgid may be reused).
#[raw_tracepoint(tracepoint = "sched_process_exit")]
pub fn ri_exit(_ctx: RawTracePointContext) -> i32 {
    // SAFETY: read-only global.
    if unsafe { core::ptr::read_volatile(&SELECTING) } == 0 {
        return 0;
    }
    let Some(ids) = pid_tgid() else {
        return 0;
    };
    let (tgid, pid) = ((ids >> 32) as u32, ids as u32);
    // SAFETY: presence only.
    if tgid != pid || unsafe { SELECTED.get(tgid) }.is_none() {
        return 0;
    }
    let _ = SELECTED.remove(tgid);
    let mut comm = [0u8; 16];
    // SAFETY: a 16-byte buffer, as the helper writes.
    unsafe { bpf_get_current_comm(comm.as_mut_ptr() as *mut _, 16) };
    notice(select::LEFT, tgid, comm);
    0
}

/// At a fork: the new process of one chosen by name is chosen too (it
/// runs the same program under the same name until it execs). Followed in
/// ri's initial pid namespace only, where the child's tgid is the task's.
#[raw_tracepoint(tracepoint = "sched_process_fork")]
pub fn ri_fork(ctx: RawTracePointContext) -> i32 {
    // SAFETY: read-only globals the loader sets.
    let (selecting, ino, off) = unsafe {
        (
            core::ptr::read_volatile(&SELECTING),
            core::ptr::read_volatile(&NS_INO),
            core::ptr::read_volatile(&TASK_TGID_OFFSET),
        )
    };
    if selecting == 0 || ino != 0 || off == u64::MAX {
        return 0;
    }
    let parent = (unsafe { bpf_get_current_pid_tgid() } >> 32) as u32;
    // SAFETY: a copied byte.
    if unsafe { SELECTED.get(parent) }.copied() != Some(select::BY_NAME) {
        return 0;
    }
    let child = ctx.arg::<u64>(1);
    // SAFETY: a kernel read through the helper, which checks the address.
    let Ok(tgid) = (unsafe { bpf_probe_read_kernel((child + off) as *const u32) }) else {
        return 0;
    };
    // A new thread of the same process is no new process.
    if tgid != parent && SELECTED.insert(tgid, select::BY_NAME, 0).is_ok() {
        let mut comm = [0u8; 16];
        // SAFETY: a 16-byte buffer, as the helper writes.
        unsafe { bpf_get_current_comm(comm.as_mut_ptr() as *mut _, 16) };
        notice(select::MATCHED, tgid, comm);
    }
    0
}
