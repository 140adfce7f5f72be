//! Processes chosen by name (`--comm`, `--exe`): those running now, and
//! those that start later, which the kernel's exec and exit tracepoints
//! add to and remove from the set the probes serve.

use std::{
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

use aya::maps::{HashMap, MapData, RingBuf};
use ri_common::{ExeKey, Notice, select};
use tokio::io::unix::AsyncFd;

use crate::{
    Error,
    engine::{Engine, Selecting},
};

/// Bad `--comm`/`--exe` values, or nothing matching where something must.
#[derive(Debug, thiserror::Error)]
pub enum SelectError {
    /// A name the kernel could never report.
    #[error("--comm '{0}': a process name is 1 to 15 bytes (the kernel keeps 15)")]
    BadComm(String),
    /// An `--exe` file that cannot be read.
    #[error("--exe {path}: {reason}")]
    Exe {
        /// The path given.
        path: String,
        /// Why.
        reason: String,
    },
    /// Too many names for the kernel's map.
    #[error("at most {} --comm names", select::MAX_COMMS)]
    TooMany,
    /// A command that works on running processes found none.
    #[error("no running process matches {0}")]
    NoneRunning(String),
    /// Some of the processes a command went through failed (each named).
    #[error("{failed} of {of} processes failed")]
    Failed {
        /// How many failed.
        failed: usize,
        /// Out of.
        of: usize,
    },
}

/// The `--comm` and `--exe` choices.
#[derive(Clone, Debug, Default)]
pub struct Selection {
    /// Process names (as `/proc/PID/comm` has them).
    pub comms: Vec<String>,
    /// Executable files, matched by device and inode.
    pub exes: Vec<PathBuf>,
}

/// A [`Selection`] checked and ready to match processes.
#[derive(Clone, Debug)]
pub struct Matcher {
    comms: Vec<String>,
    exes: Vec<(u64, u64)>,
    what: String,
}

/// A running process that matches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Found {
    /// Its pid (as ri's `/proc` numbers it).
    pub pid: u32,
    /// Its name.
    pub comm: String,
}

impl Selection {
    /// True when neither flag was given.
    pub fn is_empty(&self) -> bool {
        self.comms.is_empty() && self.exes.is_empty()
    }

    /// Checks the names and files.
    pub fn matcher(&self) -> Result<Matcher, SelectError> {
        if self.comms.len() > select::MAX_COMMS as usize {
            return Err(SelectError::TooMany);
        }
        for c in &self.comms {
            if c.is_empty() || c.len() > 15 || c.contains('\0') {
                return Err(SelectError::BadComm(c.clone()));
            }
        }
        let exes = self
            .exes
            .iter()
            .map(|p| {
                let m = std::fs::metadata(p).map_err(|e| SelectError::Exe {
                    path: p.display().to_string(),
                    reason: e.to_string(),
                })?;
                if !m.is_file() {
                    return Err(SelectError::Exe {
                        path: p.display().to_string(),
                        reason: "not a regular file".into(),
                    });
                }
                Ok((m.dev(), m.ino()))
            })
            .collect::<Result<_, _>>()?;
        let mut what: Vec<String> = self.comms.iter().map(|c| format!("--comm {c}")).collect();
        what.extend(self.exes.iter().map(|p| format!("--exe {}", p.display())));
        Ok(Matcher {
            comms: self.comms.clone(),
            exes,
            what: what.join(", "),
        })
    }
}

impl Matcher {
    /// The flags, for messages: `--comm m0d, --exe /usr/bin/m0d`.
    pub fn what(&self) -> &str {
        &self.what
    }

    /// The process's name, when it matches.
    pub fn matches(&self, pid: u32) -> Option<String> {
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
        let comm = comm.trim_end_matches('\n').to_string();
        if self.comms.contains(&comm) {
            return Some(comm);
        }
        let m = std::fs::metadata(format!("/proc/{pid}/exe")).ok()?;
        self.exes.contains(&(m.dev(), m.ino())).then_some(comm)
    }

    /// Every running process that matches (ri itself left out), by pid.
    pub fn running(&self) -> Vec<Found> {
        let me = std::process::id();
        let mut found: Vec<Found> = std::fs::read_dir("/proc")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
            .filter(|&pid| pid != me)
            .filter_map(|pid| {
                Some(Found {
                    pid,
                    comm: self.matches(pid)?,
                })
            })
            .collect();
        found.sort_by_key(|f| f.pid);
        found
    }

    /// How the kernel side is to select: `--exe` in the kernel where its
    /// BTF tells where an exec's file is, else at each exec's notice; forks
    /// followed where it tells where a task's tgid is.
    pub fn selecting(&self) -> Selecting {
        let k = crate::engine::kernel_offsets();
        Selecting {
            on: true,
            all_execs: !self.exes.is_empty() && k.exec_file.is_none(),
            exec_file: k.exec_file,
            task_tgid: k.task_tgid,
        }
    }

    /// The kernel's form of the `--exe` files.
    fn exe_keys(&self) -> Vec<ExeKey> {
        self.exes
            .iter()
            .map(|&(dev, ino)| ExeKey {
                dev: crate::engine::kernel_dev(dev),
                ino,
            })
            .collect()
    }

    /// The kernel's form of the `--comm` names: NUL-padded to 16 bytes.
    fn comm_keys(&self) -> Vec<[u8; 16]> {
        self.comms
            .iter()
            .map(|c| {
                let mut k = [0u8; 16];
                k[..c.len()].copy_from_slice(c.as_bytes());
                k
            })
            .collect()
    }
}

/// A change in the set of selected processes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    /// A process joined (started, or exec'd a matching program).
    Joined(u32),
    /// A process left (exited, or exec'd another program).
    Left(u32),
}

/// Keeps the selected set with the kernel: reads its exec/exit notices,
/// checks `--exe` for each exec, and says what changed on stderr.
pub struct Watcher {
    ring: AsyncFd<RingBuf<MapData>>,
    set: HashMap<MapData, u32, u8>,
    matcher: Matcher,
    quiet: bool,
}

/// A NUL-padded comm as text.
fn comm_text(c: &[u8; 16]) -> String {
    let n = c.iter().position(|&b| b == 0).unwrap_or(c.len());
    String::from_utf8_lossy(&c[..n]).into_owned()
}

impl Watcher {
    /// Attaches the exec/exit tracepoints of `engine` (loaded selecting),
    /// then selects `pids` (`-p`) and every matching process running now,
    /// in that order, so no process starting meanwhile is missed. Says on
    /// stderr which processes it found, or that it waits for one. Call
    /// inside the tokio runtime.
    pub fn start(
        engine: &mut Engine,
        matcher: &Matcher,
        pids: &[u32],
        quiet: bool,
    ) -> Result<(Self, Vec<u32>), Error> {
        engine.watch_execs(&matcher.comm_keys(), &matcher.exe_keys())?;
        let (mut set, ring) = engine.take_selection()?;
        let map_err = |e: aya::maps::MapError| crate::engine::EngineError::Map {
            map: "SELECTED",
            reason: e.to_string(),
        };
        for &pid in pids {
            set.insert(pid, select::BY_PID, 0).map_err(map_err)?;
        }
        let found = matcher.running();
        for f in &found {
            set.insert(f.pid, select::BY_NAME, 0).map_err(map_err)?;
        }
        if !quiet {
            if found.is_empty() {
                eprintln!(
                    "ri: no process matches {} yet: waiting for one to start",
                    matcher.what
                );
            } else {
                let list: Vec<String> = found
                    .iter()
                    .map(|f| format!("{} ({})", f.pid, f.comm))
                    .collect();
                eprintln!("ri: {} matches pid {}", matcher.what, list.join(", "));
            }
        }
        // SAFETY: the ring owns its map fd for as long as the AsyncFd holds it.
        let ring = unsafe { AsyncFd::register(ring) }.map_err(|e| e.into_parts().1)?;
        let mut all: Vec<u32> = pids.to_vec();
        all.extend(found.iter().map(|f| f.pid));
        Ok((
            Watcher {
                ring,
                set,
                matcher: matcher.clone(),
                quiet,
            },
            all,
        ))
    }

    /// Waits for notices and returns what changed (cancel-safe: nothing is
    /// read before the ring is readable).
    pub async fn changes(&mut self) -> Result<Vec<Change>, Error> {
        let mut guard = self.ring.readable_mut().await?;
        let mut notices = Vec::new();
        while let Some(item) = guard.get_inner_mut().next() {
            if item.len() >= std::mem::size_of::<Notice>() {
                // SAFETY: a Notice-sized record the kernel wrote as one.
                notices.push(unsafe { std::ptr::read_unaligned(item.as_ptr() as *const Notice) });
            }
        }
        guard.clear_ready();
        Ok(notices.iter().filter_map(|n| self.apply(n)).collect())
    }

    /// What changed since the last call, without waiting (for callers
    /// that poll, as `ri serve` does each second).
    pub fn try_changes(&mut self) -> Vec<Change> {
        let mut notices = Vec::new();
        while let Some(item) = self.ring.get_mut().next() {
            if item.len() >= std::mem::size_of::<Notice>() {
                // SAFETY: a Notice-sized record the kernel wrote as one.
                notices.push(unsafe { std::ptr::read_unaligned(item.as_ptr() as *const Notice) });
            }
        }
        notices.iter().filter_map(|n| self.apply(n)).collect()
    }

    /// One notice: an `--exe` check for an exec, and a line on stderr.
    fn apply(&mut self, n: &Notice) -> Option<Change> {
        let comm = comm_text(&n.comm);
        let (change, line) = match n.kind {
            select::MATCHED => (Change::Joined(n.pid), "started: attached"),
            select::EXEC if !self.matcher.exes.is_empty() => {
                self.matcher.matches(n.pid)?;
                self.set.insert(n.pid, select::BY_NAME, 0).ok()?;
                (Change::Joined(n.pid), "started: attached")
            }
            select::LEFT => (Change::Left(n.pid), "exited: detached"),
            select::AWAY => (Change::Left(n.pid), "runs another program: detached"),
            _ => return None,
        };
        if !self.quiet {
            eprintln!("ri: pid {} ({comm}) {line}", n.pid);
        }
        Some(change)
    }
}

/// Runs `f` for `pid` (`-p`) and every process `sel` matches now, one
/// section per process (headed `== pid N (comm) ==` on stdout unless
/// `json`); a process that fails is named on stderr and the others still
/// run. Without `sel` just `f(pid)`.
pub fn each(
    pid: Option<u32>,
    sel: &Selection,
    json: bool,
    mut f: impl FnMut(u32) -> Result<(), Error>,
) -> Result<(), Error> {
    if sel.is_empty() {
        return f(pid.unwrap_or(0));
    }
    let mut found: Vec<Found> = pid
        .map(|pid| Found {
            pid,
            comm: comm_of(Path::new(&format!("/proc/{pid}/comm"))),
        })
        .into_iter()
        .collect();
    let matcher = sel.matcher()?;
    found.extend(matcher.running().into_iter().filter(|f| Some(f.pid) != pid));
    if found.is_empty() {
        return Err(SelectError::NoneRunning(matcher.what).into());
    }
    let mut failed = 0;
    for (i, p) in found.iter().enumerate() {
        if !json {
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            if i > 0 {
                writeln!(out)?;
            }
            writeln!(out, "== pid {} ({}) ==", p.pid, p.comm)?;
        }
        match f(p.pid) {
            // Named to the local ri of a fleet command already.
            Err(Error::Ctl(crate::ctl::CtlError::Deferred(_))) => {}
            Err(e) => {
                eprintln!("ri: pid {} ({}): {e}", p.pid, p.comm);
                failed += 1;
            }
            Ok(()) => {}
        }
    }
    if failed > 0 {
        return Err(SelectError::Failed {
            failed,
            of: found.len(),
        }
        .into());
    }
    Ok(())
}

/// `pids` and then every process `sel` matches now (for the commands that
/// pick their processes once, when they start: `ri shell`, `ri top`); an
/// error when `sel` matches none.
pub fn running_now(pids: &[u32], sel: &Selection) -> Result<Vec<u32>, SelectError> {
    let mut out = pids.to_vec();
    if sel.is_empty() {
        return Ok(out);
    }
    let matcher = sel.matcher()?;
    let found = matcher.running();
    if found.is_empty() {
        return Err(SelectError::NoneRunning(matcher.what));
    }
    out.extend(
        found
            .into_iter()
            .map(|f| f.pid)
            .filter(|p| !pids.contains(p)),
    );
    Ok(out)
}

/// A process's name from its comm file (empty when gone).
fn comm_of(p: &Path) -> String {
    std::fs::read_to_string(p)
        .map(|s| s.trim_end().to_string())
        .unwrap_or_default()
}

/// The pids that joined since the last call (pending forever without a
/// watcher), for the run loops' `select!`.
pub async fn changed(watcher: &mut Option<Watcher>) -> Result<Vec<u32>, Error> {
    match watcher {
        Some(w) => Ok(w
            .changes()
            .await?
            .into_iter()
            .filter_map(|c| match c {
                Change::Joined(pid) => Some(pid),
                Change::Left(_) => None,
            })
            .collect()),
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_and_padded_as_the_kernel_keeps_them() {
        let sel = |c: &str| Selection {
            comms: vec![c.into()],
            exes: Vec::new(),
        };
        assert!(matches!(sel("").matcher(), Err(SelectError::BadComm(_))));
        assert!(matches!(
            sel("sixteen-bytes-xx").matcher(),
            Err(SelectError::BadComm(_))
        ));
        let m = sel("fifteen-bytes-x").matcher().unwrap();
        let keys = m.comm_keys();
        assert_eq!(&keys[0][..15], b"fifteen-bytes-x");
        assert_eq!(keys[0][15], 0);
        assert_eq!(m.what(), "--comm fifteen-bytes-x");
    }

    #[test]
    fn a_process_matches_by_its_name_or_its_file() {
        let me = std::process::id();
        let comm = std::fs::read_to_string("/proc/self/comm").unwrap();
        let by_comm = Selection {
            comms: vec![comm.trim_end().into()],
            exes: Vec::new(),
        };
        assert_eq!(
            by_comm.matcher().unwrap().matches(me),
            Some(comm.trim_end().into())
        );
        let exe = std::fs::read_link("/proc/self/exe").unwrap();
        let by_exe = Selection {
            comms: Vec::new(),
            exes: vec![exe],
        };
        assert!(by_exe.matcher().unwrap().matches(me).is_some());
        let other = Selection {
            comms: Vec::new(),
            exes: vec!["/etc/hostname".into()],
        };
        assert_eq!(other.matcher().unwrap().matches(me), None);
        let dir = Selection {
            comms: Vec::new(),
            exes: vec!["/".into()],
        };
        assert!(matches!(dir.matcher(), Err(SelectError::Exe { .. })));
    }
}
