//! When a run ends: Ctrl-C or SIGTERM, the duration, the `-c` command's
//! exit, or the exit of every `-p` process.

use std::os::fd::{FromRawFd, OwnedFd};

use tokio::io::unix::AsyncFd;

use super::Options;
use crate::Error;

/// Opens a pidfd that becomes readable when `pid` exits.
fn pidfd(pid: u32) -> std::io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: plain syscall; the returned fd is owned here.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor, owned by the AsyncFd from here on.
    unsafe { AsyncFd::register(OwnedFd::from_raw_fd(fd as i32)) }.map_err(|e| e.into_parts().1)
}

/// Ctrl-C and SIGTERM, caught from when this is made: made before
/// attaching, so a signal right after the attach line still ends the run
/// cleanly (detached, summary printed).
pub(crate) struct Signals {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
}

impl Signals {
    /// Starts catching, in `rt`'s context (it spawns no thread).
    pub(crate) fn new(rt: &tokio::runtime::Runtime) -> Result<Self, Error> {
        use tokio::signal::unix::{SignalKind, signal};
        let _in = rt.enter();
        Ok(Signals {
            int: signal(SignalKind::interrupt())?,
            term: signal(SignalKind::terminate())?,
        })
    }
}

/// When a run ends: what it watches, and the `-c` command's status.
pub(crate) struct Stop {
    signals: Signals,
    deadline: Option<tokio::time::Instant>,
    /// The `-c` command.
    child: Option<u32>,
    child_fd: Option<AsyncFd<OwnedFd>>,
    child_status: Option<i32>,
    /// The `-p` processes still running.
    targets: Vec<(u32, AsyncFd<OwnedFd>)>,
    quiet: bool,
}

impl Stop {
    /// Starts watching: Ctrl-C, SIGTERM, the duration, the `-c` command
    /// `child`'s exit, or the exit of every `-p` process (said on stderr
    /// unless quiet). Call inside the tokio runtime.
    pub(crate) fn new(signals: Signals, opts: &Options, child: Option<u32>) -> Result<Self, Error> {
        let mut targets = Vec::new();
        for &pid in opts.ending_pids() {
            // A process gone already has no pidfd: nothing to wait for.
            if let Ok(fd) = pidfd(pid) {
                targets.push((pid, fd));
            }
        }
        Ok(Stop {
            signals,
            deadline: opts.duration.map(|d| tokio::time::Instant::now() + d),
            child,
            child_fd: match child {
                Some(pid) => Some(pidfd(pid)?),
                None => None,
            },
            child_status: None,
            targets,
            quiet: opts.quiet,
        })
    }

    /// Returns when the run should end (cancel-safe).
    pub(crate) async fn wait(&mut self) -> Result<(), Error> {
        let deadline = self.deadline;
        let child_fd = self.child_fd.as_ref();
        let watching = !self.targets.is_empty();
        let targets = &self.targets;
        let all_exited = async {
            for (_, fd) in targets {
                drop(fd.readable().await?);
            }
            Ok::<_, std::io::Error>(())
        };
        tokio::select! {
            _ = self.signals.int.recv() => {}
            _ = self.signals.term.recv() => {}
            _ = async { tokio::time::sleep_until(deadline.expect("guarded")).await }, if deadline.is_some() => {}
            r = async { child_fd.expect("guarded").readable().await }, if child_fd.is_some() => {
                drop(r?);
                self.child_status = Some(reap(self.child.expect("guarded")));
            }
            r = all_exited, if watching => {
                r?;
                if !self.quiet {
                    let pids: Vec<String> =
                        self.targets.iter().map(|(p, _)| p.to_string()).collect();
                    eprintln!("ri: traced process {} exited", pids.join(", "));
                }
                self.targets.clear();
            }
        }
        Ok(())
    }

    /// Ends the `-c` command if it still runs; returns its exit status.
    pub(crate) fn finish(&mut self) -> Option<i32> {
        if let (Some(pid), None) = (self.child, self.child_status) {
            // Stopped early: end the command too.
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            self.child_status = Some(reap(pid));
        }
        self.child_status
    }
}

/// Waits for the child and returns its exit code (128+signal when killed).
fn reap(pid: u32) -> i32 {
    use nix::sys::wait::{WaitStatus, waitpid};
    match waitpid(nix::unistd::Pid::from_raw(pid as i32), None) {
        Ok(WaitStatus::Exited(_, c)) => c,
        Ok(WaitStatus::Signaled(_, s, _)) => 128 + s as i32,
        _ => -1,
    }
}
