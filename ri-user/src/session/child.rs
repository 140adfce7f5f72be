//! The `-c CMD` child: forked before any thread exists, held before `exec`
//! until the probes are attached, so its first instruction is already traced.

use std::{
    ffi::CString,
    os::fd::{AsRawFd, OwnedFd},
};

use nix::{
    sys::{
        signal::{Signal, kill},
        wait::waitpid,
    },
    unistd::{ForkResult, Pid, fork, pipe, write},
};

use crate::Error;

/// A forked child waiting for [`HeldChild::release`] to exec its command.
pub struct HeldChild {
    /// The child's pid (it keeps it across exec).
    pub pid: u32,
    go: Option<OwnedFd>,
    cmd: String,
}

impl HeldChild {
    /// Forks a child that will run CMD once released: split into words and
    /// executed directly, or through `sh -c "exec CMD"` when it uses shell
    /// syntax. Must be called while the process has a single thread.
    pub fn spawn(cmd: &str) -> Result<Self, Error> {
        let fail = |reason: String| Error::Command {
            cmd: cmd.to_string(),
            reason,
        };
        let words: Vec<String> = if cmd.contains(|c: char| "|&;<>()$`\\\"'*?[]{}~=".contains(c)) {
            // `exec VAR=value prog` would exec a program named `VAR=value`.
            let exec = if starts_with_assignment(cmd) {
                "exec env"
            } else {
                "exec"
            };
            vec!["/bin/sh".into(), "-c".into(), format!("{exec} {cmd}")]
        } else {
            cmd.split_whitespace().map(str::to_string).collect()
        };
        if words.is_empty() {
            return Err(fail("empty command".into()));
        }
        let argv = words
            .iter()
            .map(|w| CString::new(w.as_str()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| fail(e.to_string()))?;
        let prog = &argv[0];
        if !words[0].contains('/') && which(&words[0]).is_none() {
            return Err(fail("command not found".into()));
        }
        if words[0].contains('/') && !std::path::Path::new(&words[0]).exists() {
            return Err(fail("no such file".into()));
        }
        let (rd, wr) = pipe().map_err(|e| fail(e.to_string()))?;
        // SAFETY: the caller guarantees a single-threaded process; the child
        // only calls async-signal-safe functions before exec.
        match unsafe { fork() }.map_err(|e| fail(e.to_string()))? {
            ForkResult::Child => {
                drop(wr);
                unsafe {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                }
                let mut b = [0u8; 1];
                // SAFETY: reading one byte into a stack buffer.
                let n = unsafe { libc::read(rd.as_raw_fd(), b.as_mut_ptr().cast(), 1) };
                if n != 1 {
                    unsafe { libc::_exit(127) };
                }
                drop(rd);
                let _ = nix::unistd::execvp(prog, &argv);
                unsafe { libc::_exit(127) }
            }
            ForkResult::Parent { child } => {
                drop(rd);
                Ok(HeldChild {
                    pid: child.as_raw() as u32,
                    go: Some(wr),
                    cmd: cmd.to_string(),
                })
            }
        }
    }

    /// Lets the child exec its command.
    pub fn release(&mut self) -> Result<(), Error> {
        if let Some(fd) = self.go.take() {
            write(&fd, b"g").map_err(|e| Error::Command {
                cmd: self.cmd.clone(),
                reason: e.to_string(),
            })?;
        }
        Ok(())
    }

    /// Kills and reaps the child (never released, or started early and no
    /// longer wanted).
    pub fn abort(mut self) {
        self.go.take();
        let _ = kill(Pid::from_raw(self.pid as i32), Signal::SIGKILL);
        let _ = waitpid(Pid::from_raw(self.pid as i32), None);
    }
}

/// True when CMD begins with a shell assignment (`NAME=value ...`).
fn starts_with_assignment(cmd: &str) -> bool {
    let name: String = cmd
        .trim_start()
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect();
    name.chars().next().is_some_and(|c| !c.is_ascii_digit())
        && cmd.trim_start()[name.len()..].starts_with('=')
}

/// Finds a program in `PATH`.
fn which(name: &str) -> Option<std::path::PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}
