//! Thin, safe wrappers over the few system calls the server needs.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::time::Instant;

/// Outcome of one deadline-bounded read.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ReadOutcome {
    /// Some bytes were appended.
    Data(usize),
    /// The peer closed its sending side.
    Eof,
    /// The deadline passed first.
    TimedOut,
}

/// Credentials of a Unix-socket peer.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PeerCred {
    pub pid: i32,
    pub uid: u32,
    pub gid: u32,
}

/// The process id.
pub(crate) fn getpid() -> i32 {
    // SAFETY: getpid has no preconditions.
    unsafe { libc::getpid() }
}

/// The effective user id.
pub(crate) fn geteuid() -> u32 {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() }
}

/// Whether a process with this pid exists (EPERM counts as alive).
pub fn pid_alive(pid: i32) -> bool {
    if pid <= 0 {
        return false;
    }
    // SAFETY: signal 0 only checks for existence and permission.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// Puts a descriptor in non-blocking mode.
pub(crate) fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor we own; no pointers involved.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above.
    if unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// SO_PEERCRED of a connected Unix socket.
pub(crate) fn peer_cred(fd: RawFd) -> io::Result<PeerCred> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: cred and len are valid for writes of the sizes given.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(PeerCred {
        pid: cred.pid,
        uid: cred.uid,
        gid: cred.gid,
    })
}

/// Shuts down both directions of a socket (wakes any poller on it).
pub(crate) fn shutdown(fd: RawFd, how: libc::c_int) {
    // SAFETY: shutdown on a descriptor; errors are irrelevant here.
    unsafe {
        libc::shutdown(fd, how);
    }
}

/// The first byte waiting on a socket, without consuming it or blocking.
pub(crate) fn peek_byte(fd: RawFd) -> Option<u8> {
    let mut b = 0u8;
    // SAFETY: one writable byte.
    let n = unsafe {
        libc::recv(
            fd,
            (&mut b as *mut u8).cast(),
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    (n == 1).then_some(b)
}

/// Blocks the asynchronous signals in the calling thread, so that the
/// target's signals are delivered to the target's own threads.
pub(crate) fn block_async_signals() {
    // SAFETY: sigset manipulation on a local, zero-initialised set.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut set);
        for s in [
            libc::SIGSEGV,
            libc::SIGBUS,
            libc::SIGFPE,
            libc::SIGILL,
            libc::SIGTRAP,
            libc::SIGABRT,
            libc::SIGSYS,
        ] {
            libc::sigdelset(&mut set, s);
        }
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
}

/// Milliseconds left until `deadline`, for poll(2) (at least 0).
fn ms_until(deadline: Instant) -> libc::c_int {
    let left = deadline.saturating_duration_since(Instant::now());
    // Round up so that we never spin on a sub-millisecond remainder.
    let ms = left.as_micros().div_ceil(1000);
    ms.min(i32::MAX as u128) as libc::c_int
}

/// Waits until `fd` is ready for `events` or the deadline passes.
/// Returns false on timeout.
fn wait_ready(fd: RawFd, events: libc::c_short, deadline: Instant) -> io::Result<bool> {
    loop {
        let timeout = ms_until(deadline);
        let mut pfd = libc::pollfd {
            fd,
            events,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let rc = unsafe { libc::poll(&mut pfd, 1, timeout) };
        if rc < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if rc > 0 {
            return Ok(true);
        }
        if timeout == 0 || Instant::now() >= deadline {
            return Ok(false);
        }
    }
}

/// A connected, non-blocking stream socket with deadline-bounded I/O.
pub(crate) struct Conn {
    fd: OwnedFd,
}

impl Conn {
    /// Wraps a socket, switching it to non-blocking mode.
    pub(crate) fn new(fd: OwnedFd) -> io::Result<Self> {
        set_nonblocking(fd.as_raw_fd())?;
        Ok(Conn { fd })
    }

    /// The raw descriptor.
    pub(crate) fn raw(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Reads up to `max` more bytes into `buf`, waiting at most until
    /// `deadline`.
    pub(crate) fn read_into(
        &self,
        buf: &mut Vec<u8>,
        max: usize,
        deadline: Instant,
    ) -> io::Result<ReadOutcome> {
        let max = max.max(1);
        loop {
            if !wait_ready(self.raw(), libc::POLLIN, deadline)? {
                return Ok(ReadOutcome::TimedOut);
            }
            let old = buf.len();
            buf.resize(old + max, 0);
            // SAFETY: the spare region [old, old+max) is valid for writes.
            let n = unsafe { libc::recv(self.raw(), buf[old..].as_mut_ptr().cast(), max, 0) };
            if n < 0 {
                buf.truncate(old);
                let e = io::Error::last_os_error();
                match e.kind() {
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => continue,
                    io::ErrorKind::ConnectionReset => return Ok(ReadOutcome::Eof),
                    _ => return Err(e),
                }
            }
            let n = n as usize;
            buf.truncate(old + n);
            return Ok(if n == 0 {
                ReadOutcome::Eof
            } else {
                ReadOutcome::Data(n)
            });
        }
    }

    /// Writes all of `data` (never raising SIGPIPE), waiting at most until
    /// `deadline`.
    pub(crate) fn write_all(&self, mut data: &[u8], deadline: Instant) -> io::Result<()> {
        while !data.is_empty() {
            // SAFETY: data is a valid readable slice.
            let n = unsafe {
                libc::send(
                    self.raw(),
                    data.as_ptr().cast(),
                    data.len(),
                    libc::MSG_NOSIGNAL,
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                match e.kind() {
                    io::ErrorKind::WouldBlock => {
                        if !wait_ready(self.raw(), libc::POLLOUT, deadline)? {
                            return Err(io::ErrorKind::TimedOut.into());
                        }
                    }
                    io::ErrorKind::Interrupted => {}
                    _ => return Err(e),
                }
                continue;
            }
            data = &data[n as usize..];
        }
        Ok(())
    }

    /// Best-effort, non-blocking write of a short message.
    pub(crate) fn try_write(&self, data: &[u8]) {
        // SAFETY: data is a valid readable slice.
        unsafe {
            libc::send(
                self.raw(),
                data.as_ptr().cast(),
                data.len(),
                libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT,
            );
        }
    }

    /// Closes our sending side, then discards input for a short while so
    /// that a TCP peer is not reset before it reads our last frame.
    pub(crate) fn linger_close(&self, budget_bytes: usize, deadline: Instant) {
        shutdown(self.raw(), libc::SHUT_WR);
        let mut scratch = Vec::with_capacity(8192);
        let mut seen = 0;
        while seen < budget_bytes {
            scratch.clear();
            match self.read_into(&mut scratch, 8192, deadline) {
                Ok(ReadOutcome::Data(n)) => seen += n,
                _ => break,
            }
        }
    }
}

/// Creates a close-on-exec, non-blocking pipe.
pub(crate) fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    use std::os::fd::FromRawFd;
    let mut fds = [0 as RawFd; 2];
    // SAFETY: fds has room for two descriptors.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pipe2 just returned these descriptors, owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Writes one byte to a non-blocking descriptor, ignoring a full pipe.
pub(crate) fn poke(fd: RawFd, byte: u8) {
    // SAFETY: one readable byte.
    unsafe {
        libc::write(fd, (&byte as *const u8).cast(), 1);
    }
}

/// Reads everything currently buffered in a non-blocking pipe.
pub(crate) fn drain(fd: RawFd) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 64];
    loop {
        // SAFETY: buf is valid for writes of its length.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n <= 0 {
            break;
        }
        out.extend_from_slice(&buf[..n as usize]);
    }
    out
}
