//! `--freeze`: every thread of the process stopped for the walk
//! (`PTRACE_SEIZE` + `PTRACE_INTERRUPT`, as `ri report` stops one), and let
//! go when the guard drops. Seize sends no SIGSTOP, so if ri dies the
//! kernel detaches and the threads run on.

use std::{
    collections::BTreeSet,
    time::{Duration, Instant},
};

use super::ViewError;
use crate::report::stop::{detach, errno, signal_to_pass};

/// How long to wait for all threads to stop.
const STOP_WAIT: Duration = Duration::from_millis(500);

/// The stopped threads; dropping it lets them go.
pub struct Frozen {
    /// Stopped, with the signal to hand back.
    stopped: Vec<(i32, i32)>,
    /// Seized but not stopped in time (uninterruptible sleep).
    late: Vec<i32>,
    started: Instant,
}

fn tasks(pid: u32) -> BTreeSet<i32> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

fn ptrace(req: libc::c_uint, tid: i32) -> bool {
    // SAFETY: a ptrace request on a thread id; no memory is passed.
    unsafe {
        libc::ptrace(
            req,
            tid,
            std::ptr::null_mut::<libc::c_void>(),
            std::ptr::null_mut::<libc::c_void>(),
        ) == 0
    }
}

impl Frozen {
    /// Stops every thread of `pid` (threads started meanwhile too).
    pub fn all(pid: u32) -> Result<Frozen, ViewError> {
        let started = Instant::now();
        let mut seized: BTreeSet<i32> = BTreeSet::new();
        let mut f = Frozen {
            stopped: Vec::new(),
            late: Vec::new(),
            started,
        };
        // New threads can appear while the others stop: seize until none does.
        for _ in 0..20 {
            let now = tasks(pid);
            let new: Vec<i32> = now.difference(&seized).copied().collect();
            if new.is_empty() {
                break;
            }
            for tid in new {
                seized.insert(tid);
                if !ptrace(libc::PTRACE_SEIZE, tid) {
                    if errno() == libc::EPERM {
                        f.release();
                        return Err(ViewError::Freeze(format!(
                            "cannot stop pid {pid}: ptrace not permitted (another debugger attached, or not root?)"
                        )));
                    }
                    continue;
                }
                if ptrace(libc::PTRACE_INTERRUPT, tid) {
                    f.late.push(tid);
                }
            }
        }
        if seized.is_empty() {
            return Err(ViewError::Freeze(format!(
                "pid {pid} has no threads to stop"
            )));
        }
        let deadline = started + STOP_WAIT;
        while !f.late.is_empty() && Instant::now() < deadline {
            f.late.retain(|&tid| {
                let mut status = 0;
                // SAFETY: waitpid on our tracee with a local status word.
                let r = unsafe { libc::waitpid(tid, &mut status, libc::__WALL | libc::WNOHANG) };
                if r == tid {
                    if libc::WIFSTOPPED(status) {
                        f.stopped.push((tid, signal_to_pass(status)));
                    }
                    return false;
                }
                r == 0
            });
            std::thread::sleep(Duration::from_micros(50));
        }
        Ok(f)
    }

    /// Threads stopped.
    pub fn count(&self) -> usize {
        self.stopped.len()
    }

    /// Threads that did not stop in time (still running).
    pub fn running(&self) -> usize {
        self.late.len()
    }

    /// Time since the first stop request.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    fn release(&mut self) {
        for (tid, sig) in self.stopped.drain(..) {
            detach(tid, sig);
        }
        // Not stopped yet: detach needs a stop; wait a little for it.
        for tid in self.late.drain(..) {
            let mut status = 0;
            for _ in 0..200 {
                // SAFETY: as above.
                let r = unsafe { libc::waitpid(tid, &mut status, libc::__WALL | libc::WNOHANG) };
                if r == tid {
                    if libc::WIFSTOPPED(status) {
                        detach(tid, signal_to_pass(status));
                    }
                    break;
                }
                if r < 0 {
                    break;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        self.release();
    }
}
