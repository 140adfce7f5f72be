//! Stopping one thread briefly: `PTRACE_SEIZE`, `PTRACE_INTERRUPT`, wait
//! for the stop, copy its registers and the top of its stack in one
//! `process_vm_readv`, `PTRACE_DETACH`. Unwinding happens later, on the
//! copy, while the thread runs.
//!
//! Seize (not attach) is what makes this safe: no SIGSTOP is ever sent, so
//! if ri dies at any point the kernel detaches the thread and it continues.

use std::time::{Duration, Instant};

/// Most bytes of stack copied from the stack pointer up.
pub const STACK_COPY_MAX: u64 = 256 * 1024;
/// How long to wait for a thread to reach the stop (a thread in
/// uninterruptible sleep only stops when it leaves it).
pub const STOP_WAIT: Duration = Duration::from_millis(100);
/// Test hook: milliseconds to sleep while each thread is stopped, so that
/// tests can kill ri at that moment.
pub const TEST_DELAY_ENV: &str = "RI_REPORT_TEST_DELAY_MS";

/// Registers in DWARF numbering for x86-64: 0 rax, 1 rdx, 2 rcx, 3 rbx,
/// 4 rsi, 5 rdi, 6 rbp, 7 rsp, 8..=15 r8..r15, 16 the return address
/// (here: rip).
pub type Regs = [Option<u64>; 17];
/// DWARF number of the stack pointer.
pub const SP: usize = 7;
/// DWARF number of the frame pointer.
pub const FP: usize = 6;
/// DWARF number of the return address (the instruction pointer).
pub const IP: usize = 16;

/// One thread's state at the stop.
#[derive(Debug)]
pub struct Capture {
    /// Registers.
    pub regs: Regs,
    /// Address of `stack[0]` (the stack pointer at the stop).
    pub stack_base: u64,
    /// Copy of the stack from the stack pointer up.
    pub stack: Vec<u8>,
    /// From asking the thread to stop to letting it go, in microseconds:
    /// what the thread lost at most (it includes the kernel waking it up
    /// to stop, which waits for a CPU on a busy machine).
    pub paused_us: u64,
    /// From seeing it stopped to letting it go, in microseconds: the time
    /// ri itself held it.
    pub held_us: u64,
}

/// Why a thread's stack could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum StopError {
    /// The thread exited first.
    #[error("the thread exited before it could be stopped")]
    Exited,
    /// No right to trace it (the errno is EPERM).
    #[error("ptrace not permitted")]
    NotPermitted,
    /// It did not reach the stop in time (uninterruptible sleep): ri stays
    /// attached and detaches it as soon as it stops.
    #[error("the thread did not stop within {} ms (uninterruptible sleep?); no stack", STOP_WAIT.as_millis())]
    Timeout,
    /// Registers could not be read.
    #[error("cannot read registers: {0}")]
    Regs(std::io::Error),
    /// Any other ptrace failure.
    #[error("{0}")]
    Ptrace(String),
    /// This architecture has no register reader.
    #[cfg_attr(target_arch = "x86_64", allow(dead_code))]
    #[error("stacks are only supported on x86-64")]
    Unsupported,
}

pub(crate) fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// A seized thread that has not stopped yet: detach it once it does.
#[derive(Debug)]
pub struct Pending {
    tid: i32,
}

impl Pending {
    /// The thread.
    pub fn tid(&self) -> u32 {
        self.tid as u32
    }

    /// Detaches if the thread has stopped or exited by now; true when done.
    pub fn try_release(&self) -> bool {
        let mut status = 0;
        // SAFETY: waitpid on a tracee with a local status word.
        let r = unsafe { libc::waitpid(self.tid, &mut status, libc::__WALL | libc::WNOHANG) };
        if r == self.tid {
            if libc::WIFSTOPPED(status) {
                detach(self.tid, signal_to_pass(status));
            }
            return true;
        }
        r < 0
    }
}

/// The signal to hand back at detach: one the stop intercepted, never
/// our own interrupt.
pub(crate) fn signal_to_pass(status: i32) -> i32 {
    // With PTRACE_SEIZE, our interrupt and group stops carry an event in
    // the high bits; a signal-delivery stop has none.
    if (status >> 16) & 0xff == 0 {
        libc::WSTOPSIG(status)
    } else {
        0
    }
}

pub(crate) fn detach(tid: i32, sig: i32) {
    // SAFETY: PTRACE_DETACH on our tracee; data is a signal number.
    unsafe {
        libc::ptrace(
            libc::PTRACE_DETACH,
            tid,
            std::ptr::null_mut::<libc::c_void>(),
            sig as libc::c_long as *mut libc::c_void,
        )
    };
}

/// Stops thread `tid`, copies its registers and at most `stack_limit`
/// bytes of stack from its stack pointer (the end of the stack mapping
/// bounds it when known), and lets it go. On `Timeout` the returned
/// `Pending` must be released later.
pub fn capture(
    tid: u32,
    stack_end: impl Fn(u64) -> Option<u64>,
    delay: Option<Duration>,
) -> Result<Capture, (StopError, Option<Pending>)> {
    let tid = tid as i32;
    // SAFETY: ptrace requests on a thread id; no memory is passed in.
    let r = unsafe {
        libc::ptrace(
            libc::PTRACE_SEIZE,
            tid,
            std::ptr::null_mut::<libc::c_void>(),
            std::ptr::null_mut::<libc::c_void>(),
        )
    };
    if r != 0 {
        return Err(match errno() {
            libc::ESRCH => (StopError::Exited, None),
            libc::EPERM => (StopError::NotPermitted, None),
            e => (
                StopError::Ptrace(format!(
                    "PTRACE_SEIZE: {}",
                    std::io::Error::from_raw_os_error(e)
                )),
                None,
            ),
        });
    }
    let t0 = Instant::now();
    // SAFETY: as above.
    let r = unsafe {
        libc::ptrace(
            libc::PTRACE_INTERRUPT,
            tid,
            std::ptr::null_mut::<libc::c_void>(),
            std::ptr::null_mut::<libc::c_void>(),
        )
    };
    if r != 0 {
        let e = errno();
        // Not stopped, so a detach would fail: exiting releases it anyway.
        return Err(if e == libc::ESRCH {
            (StopError::Exited, None)
        } else {
            (
                StopError::Ptrace(format!(
                    "PTRACE_INTERRUPT: {}",
                    std::io::Error::from_raw_os_error(e)
                )),
                Some(Pending { tid }),
            )
        });
    }
    let mut status = 0;
    let mut spins = 0u32;
    loop {
        // SAFETY: waitpid on our tracee with a local status word.
        let r = unsafe { libc::waitpid(tid, &mut status, libc::__WALL | libc::WNOHANG) };
        if r == tid {
            break;
        }
        if r < 0 {
            return Err((StopError::Exited, None));
        }
        if t0.elapsed() > STOP_WAIT {
            return Err((StopError::Timeout, Some(Pending { tid })));
        }
        spins += 1;
        if spins < 200 {
            std::thread::yield_now();
        } else {
            std::thread::sleep(Duration::from_micros(20));
        }
    }
    if !libc::WIFSTOPPED(status) {
        // It exited (or was killed) instead of stopping.
        return Err((StopError::Exited, None));
    }
    let stopped = Instant::now();
    let pass = signal_to_pass(status);
    let got = read_regs(tid).map(|regs| {
        let sp = regs[SP].unwrap_or(0);
        let end = stack_end(sp).unwrap_or(sp.saturating_add(64 * 1024));
        let len = end.saturating_sub(sp).min(STACK_COPY_MAX);
        let stack = read_memory(tid, sp, len as usize);
        (regs, sp, stack)
    });
    if let Some(d) = delay {
        std::thread::sleep(d);
    }
    detach(tid, pass);
    let paused_us = t0.elapsed().as_micros() as u64;
    let held_us = stopped.elapsed().as_micros() as u64;
    match got {
        Ok((regs, stack_base, stack)) => Ok(Capture {
            regs,
            stack_base,
            stack,
            paused_us,
            held_us,
        }),
        Err(e) => Err((e, None)),
    }
}

/// Reads up to `len` bytes at `addr` (fewer when the range runs into
/// unmapped memory; empty on failure).
pub fn read_memory(tid: i32, addr: u64, len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    let mut done = 0usize;
    // A partial read ends at the first unmapped page; the next call fails.
    while done < len {
        let local = libc::iovec {
            iov_base: buf[done..].as_mut_ptr().cast(),
            iov_len: len - done,
        };
        let remote = libc::iovec {
            iov_base: (addr + done as u64) as *mut libc::c_void,
            iov_len: len - done,
        };
        // SAFETY: the local iovec covers our own buffer; the remote one is
        // only read by the kernel, which checks it.
        let n = unsafe { libc::process_vm_readv(tid, &local, 1, &remote, 1, 0) };
        if n <= 0 {
            break;
        }
        done += n as usize;
    }
    buf.truncate(done);
    buf
}

#[cfg(target_arch = "x86_64")]
fn read_regs(tid: i32) -> Result<Regs, StopError> {
    // SAFETY: user_regs_struct is plain data; zero is a valid value.
    let mut r: libc::user_regs_struct = unsafe { std::mem::zeroed() };
    // SAFETY: PTRACE_GETREGS writes one user_regs_struct to the pointer.
    let rc = unsafe {
        libc::ptrace(
            libc::PTRACE_GETREGS,
            tid,
            std::ptr::null_mut::<libc::c_void>(),
            &mut r as *mut libc::user_regs_struct as *mut libc::c_void,
        )
    };
    if rc != 0 {
        return Err(StopError::Regs(std::io::Error::last_os_error()));
    }
    Ok([
        Some(r.rax),
        Some(r.rdx),
        Some(r.rcx),
        Some(r.rbx),
        Some(r.rsi),
        Some(r.rdi),
        Some(r.rbp),
        Some(r.rsp),
        Some(r.r8),
        Some(r.r9),
        Some(r.r10),
        Some(r.r11),
        Some(r.r12),
        Some(r.r13),
        Some(r.r14),
        Some(r.r15),
        Some(r.rip),
    ])
}

#[cfg(not(target_arch = "x86_64"))]
fn read_regs(_tid: i32) -> Result<Regs, StopError> {
    Err(StopError::Unsupported)
}

/// Sleep for the test hook, read from the environment once.
pub fn test_delay() -> Option<Duration> {
    std::env::var(TEST_DELAY_ENV)
        .ok()?
        .parse::<u64>()
        .ok()
        .filter(|&ms| ms > 0)
        .map(Duration::from_millis)
}
