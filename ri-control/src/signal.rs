//! SIGUSR2 self-report: an async-signal-safe handler that only writes one
//! byte to a process-wide pipe, which the control thread polls.
//!
//! The pipe is created once and never closed, so the handler can never
//! write to a recycled descriptor. One [`crate::Control`] at a time may own
//! SIGUSR2; the previous disposition is restored when it stops.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

use crate::sys;

/// Why SIGUSR2 reporting could not be enabled.
#[derive(Debug, thiserror::Error)]
pub enum SignalError {
    /// Another control instance in this process already owns SIGUSR2.
    #[error("SIGUSR2 reporting is already enabled by another control instance")]
    InUse,
    /// The target installed its own SIGUSR2 handler; we do not replace it.
    #[error("the process already has a SIGUSR2 handler; not replacing it")]
    TargetHandler,
    /// A system call failed.
    #[error("cannot install SIGUSR2 handler: {0}")]
    Io(#[from] io::Error),
}

static PIPE: OnceLock<(OwnedFd, OwnedFd)> = OnceLock::new();
static WRITE_FD: AtomicI32 = AtomicI32::new(-1);
static OWNED: AtomicBool = AtomicBool::new(false);

/// The byte the handler writes.
pub(crate) const REPORT_BYTE: u8 = b'r';

extern "C" fn on_sigusr2(_sig: libc::c_int) {
    // Only async-signal-safe operations: errno save/restore and write(2).
    // SAFETY: __errno_location returns this thread's errno slot.
    let saved = unsafe { *libc::__errno_location() };
    let fd = WRITE_FD.load(Ordering::Relaxed);
    if fd >= 0 {
        sys::poke(fd, REPORT_BYTE);
    }
    // SAFETY: as above.
    unsafe { *libc::__errno_location() = saved };
}

fn pipe_fds() -> io::Result<&'static (OwnedFd, OwnedFd)> {
    if let Some(p) = PIPE.get() {
        return Ok(p);
    }
    let p = sys::pipe()?;
    // If another thread won the race, our pipe is dropped (closed).
    let _ = PIPE.set(p);
    PIPE.get()
        .ok_or_else(|| io::Error::other("signal pipe unavailable"))
}

/// Ownership of SIGUSR2; restores the previous disposition on drop.
pub(crate) struct SignalGuard {
    old: libc::sigaction,
    read_fd: RawFd,
}

impl SignalGuard {
    /// The descriptor to poll for [`REPORT_BYTE`]s.
    pub(crate) fn read_fd(&self) -> RawFd {
        self.read_fd
    }
}

/// Installs the SIGUSR2 handler.
pub(crate) fn install() -> Result<SignalGuard, SignalError> {
    if OWNED
        .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
        .is_err()
    {
        return Err(SignalError::InUse);
    }
    match install_inner() {
        Ok(g) => Ok(g),
        Err(e) => {
            OWNED.store(false, Ordering::Release);
            Err(e)
        }
    }
}

fn install_inner() -> Result<SignalGuard, SignalError> {
    let (r, w) = pipe_fds()?;
    sys::drain(r.as_raw_fd());
    WRITE_FD.store(w.as_raw_fd(), Ordering::Relaxed);
    // SAFETY: sigaction structures are plain data; zeroed is a valid start.
    unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        if libc::sigaction(libc::SIGUSR2, std::ptr::null(), &mut old) != 0 {
            return Err(io::Error::last_os_error().into());
        }
        if old.sa_sigaction != libc::SIG_DFL && old.sa_sigaction != libc::SIG_IGN {
            return Err(SignalError::TargetHandler);
        }
        let mut new: libc::sigaction = std::mem::zeroed();
        new.sa_sigaction = on_sigusr2 as extern "C" fn(libc::c_int) as usize;
        new.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut new.sa_mask);
        if libc::sigaction(libc::SIGUSR2, &new, std::ptr::null_mut()) != 0 {
            return Err(io::Error::last_os_error().into());
        }
        Ok(SignalGuard {
            old,
            read_fd: r.as_raw_fd(),
        })
    }
}

impl Drop for SignalGuard {
    fn drop(&mut self) {
        // SAFETY: restoring the disposition saved at install time.
        unsafe {
            libc::sigaction(libc::SIGUSR2, &self.old, std::ptr::null_mut());
        }
        OWNED.store(false, Ordering::Release);
    }
}
