//! Resolving a probe's TARGET: a path, or a library or program name looked
//! up as the dynamic loader finds it for the traced processes or the `-c`
//! command, then in the ld.so cache and `PATH`.

mod launch;
pub mod loader;

use std::{
    path::{Path, PathBuf},
    sync::OnceLock,
};

pub use launch::{Launch, split_words};
use loader::{LoadEnv, Loaded};

/// Errors resolving a target or a pid.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    /// A path target does not exist.
    #[error("no such file: {0}")]
    NoSuchFile(PathBuf),
    /// A name target matched nothing.
    #[error("library or program '{name}' not found ({})", .searched.join(", "))]
    NotFound {
        /// The name.
        name: String,
        /// Where ri looked.
        searched: Vec<String>,
    },
    /// A pid that is not running.
    #[error("no such pid: {0}")]
    NoSuchPid(u32),
    /// Ctrl-C (or SIGTERM) while ri waited for a library.
    #[error("stopped waiting for {0} (interrupted); nothing was attached")]
    Interrupted(String),
    /// A traced process (or the `-c` command) ended while ri waited for it
    /// to map a library.
    #[error("pid {pid} ended before it mapped {name}")]
    EndedWaiting {
        /// The library name.
        name: String,
        /// The process.
        pid: u32,
    },
}

/// Checks that a process exists.
pub fn check_pid(pid: u32) -> Result<(), TargetError> {
    if pid != 0 && Path::new(&format!("/proc/{pid}")).exists() {
        Ok(())
    } else {
        Err(TargetError::NoSuchPid(pid))
    }
}

/// The executable of a running process.
pub fn exe_of(pid: u32) -> Result<PathBuf, TargetError> {
    std::fs::read_link(format!("/proc/{pid}/exe")).map_err(|_| TargetError::NoSuchPid(pid))
}

/// Files a process has mapped, in map order, without duplicates; a file
/// deleted since it was mapped (`/x (deleted)`) is not one of them.
pub fn mapped_files(pid: u32) -> Result<Vec<PathBuf>, TargetError> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps"))
        .map_err(|_| TargetError::NoSuchPid(pid))?;
    let mut out: Vec<PathBuf> = Vec::new();
    for line in maps.lines() {
        let mut words = line.split_whitespace();
        if let Some(p) = words.nth(5)
            && p.starts_with('/')
            && words.next().is_none()
        {
            let p = PathBuf::from(p);
            if !out.contains(&p) {
                out.push(p);
            }
        }
    }
    Ok(out)
}

/// True when `file` (a basename) is the library `name` (`libc`, `libc.so.6`,
/// `pthread`).
pub(crate) fn is_library(file: &str, name: &str) -> bool {
    let lib = if name.starts_with("lib") {
        name.to_string()
    } else {
        format!("lib{name}")
    };
    file == name
        || (name.ends_with(".so") && file.starts_with(&format!("{name}.")))
        || file.starts_with(&format!("{lib}.so"))
        || file.starts_with(&format!("{lib}-"))
        || file.starts_with(&format!("{name}.so"))
}

/// Where a target name is looked up: the traced processes, or the `-c`
/// command (its program's libraries as the loader will find them).
#[derive(Debug, Default)]
pub struct Scope {
    /// `-p`.
    pub pids: Vec<u32>,
    /// `-c`.
    pub command: Option<String>,
    loaded: OnceLock<Option<Loaded>>,
}

impl Scope {
    /// The scope of `-p PIDS` or `-c CMD` (or neither: system-wide).
    pub fn new(pids: &[u32], command: Option<&str>) -> Self {
        Scope {
            pids: pids.to_vec(),
            command: command.map(str::to_string),
            loaded: OnceLock::new(),
        }
    }

    /// The scope of some processes.
    pub fn pids(pids: &[u32]) -> Self {
        Self::new(pids, None)
    }

    /// The `-c` command's program as the loader loads it (None: no command,
    /// or one whose program the command line does not tell).
    pub fn command_load(&self) -> Option<&Loaded> {
        self.loaded
            .get_or_init(|| {
                let l = Launch::of_command(self.command.as_deref()?)?;
                Loaded::load(&l.program, l.env)
            })
            .as_ref()
    }
}

/// The files of `dir` whose names `keep` accepts, in name order.
pub(crate) fn files_named(dir: &Path, keep: impl Fn(&str) -> bool) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_str().is_some_and(&keep))
        .map(|e| e.path())
        .collect();
    files.sort();
    files
}

/// Canonical form of a path that exists.
fn canonical(p: &Path) -> PathBuf {
    p.canonicalize().unwrap_or_else(|_| p.to_path_buf())
}

/// Whether `f`, or the file it links to, is named like `name`.
pub(crate) fn named(f: &Path, name: &str) -> bool {
    let base = |p: &Path| {
        p.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| is_library(n, name))
    };
    base(f) || base(&canonical(f))
}

/// Finds `name` for a program loaded as `l`: among the files it loads at
/// start, else where `dlopen` would find it.
fn in_load(l: &Loaded, name: &str) -> Option<PathBuf> {
    l.files()
        .find(|f| named(f, name))
        .map(Path::to_path_buf)
        .or_else(|| l.lookup(name))
        .map(|p| canonical(&p))
}

/// The file of `name` in process `pid`: one it maps, else where its loader
/// would find it (a library it will `dlopen`: a uprobe on that file is
/// inserted when the process maps it).
pub fn in_process(name: &str, pid: u32) -> Option<PathBuf> {
    if let Some(f) = mapped_files(pid).ok()?.into_iter().find(|f| named(f, name)) {
        return Some(f);
    }
    let launch = Launch::of_pid(pid)?;
    Loaded::load(&launch.program, launch.env).and_then(|l| in_load(&l, name))
}

/// Resolves `target` in `scope`: a path; or a name among the traced
/// processes' mappings, or the files their loader would find (a library
/// they will `dlopen`); among the `-c` command's libraries; then in the ld.so
/// cache and `PATH`.
pub fn resolve(target: &str, scope: &Scope) -> Result<PathBuf, TargetError> {
    if target.contains('/') {
        let p = PathBuf::from(target);
        return if p.exists() {
            Ok(canonical(&p))
        } else {
            Err(TargetError::NoSuchFile(p))
        };
    }
    let mut searched = Vec::new();
    for &pid in &scope.pids {
        if let Some(p) = in_process(target, pid) {
            return Ok(p);
        }
        let env = Launch::of_pid(pid)
            .ok_or(TargetError::NoSuchPid(pid))?
            .env
            .describe();
        searched.push(format!(
            "not mapped by pid {pid}, nor found by its loader ({env}, RPATH/RUNPATH, ld.so cache, {})",
            default_dirs_text()
        ));
    }
    if let Some(cmd) = &scope.command {
        match scope.command_load() {
            Some(l) => {
                if let Some(p) = in_load(l, target) {
                    return Ok(p);
                }
                searched.push(format!(
                    "not loaded by '{cmd}' nor found by its loader ({}, RPATH/RUNPATH, ld.so cache, {})",
                    l.env_text(),
                    default_dirs_text()
                ));
                if !l.missing.is_empty() {
                    searched.push(format!(
                        "its loader finds no {}: the command would not start",
                        l.missing.join(", ")
                    ));
                }
            }
            None => searched.push(format!("cannot tell which program '{cmd}' runs")),
        }
    }
    if scope.pids.is_empty() && scope.command.is_none() {
        let env = LoadEnv {
            ld_library_path: std::env::var("LD_LIBRARY_PATH").ok(),
            cwd: std::env::current_dir().unwrap_or_default(),
        };
        if env.ld_library_path.is_some()
            && let Some(p) = Loaded::load(Path::new("/proc/self/exe"), env)
                .and_then(|l| l.lookup_in_path(target))
        {
            return Ok(canonical(&p));
        }
    }
    if let Some(p) = loader::cache_lookup(target) {
        return Ok(p);
    }
    searched.push("not in the ld.so cache".into());
    if let Some(paths) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&paths) {
            let p = dir.join(target);
            if p.is_file() {
                return Ok(canonical(&p));
            }
        }
    }
    searched.push("not in PATH".into());
    Err(TargetError::NotFound {
        name: target.to_string(),
        searched,
    })
}

/// Resolves `target` like [`resolve`]; with `-p`, a library name found
/// nowhere yet (a `dlopen` by a path outside the loader's search) is waited
/// for, said on stderr: polled in the processes' maps until one maps it.
pub fn resolve_waiting(target: &str, scope: &Scope) -> Result<PathBuf, TargetError> {
    match resolve(target, scope) {
        Err(TargetError::NotFound { .. }) if !scope.pids.is_empty() && waitable(target) => {}
        r => return r,
    }
    let pids: Vec<String> = scope.pids.iter().map(u32::to_string).collect();
    // Held back before the line that tells the user to press Ctrl-C.
    let signals = SignalWait::new();
    crate::text::say(&format!(
        "ri: waiting for {target} (pid {} has not mapped it, and its loader would not find it; Ctrl-C ends the wait)",
        pids.join("/")
    ));
    loop {
        if signals.pause() {
            return Err(TargetError::Interrupted(target.to_string()));
        }
        for &pid in &scope.pids {
            let files = if alive(pid) {
                mapped_files(pid).ok()
            } else {
                None
            };
            let Some(files) = files else {
                return Err(TargetError::EndedWaiting {
                    name: target.to_string(),
                    pid,
                });
            };
            if let Some(f) = files.into_iter().find(|f| named(f, target)) {
                eprintln!("ri: pid {pid} mapped {}", f.display());
                return Ok(f);
            }
        }
    }
}

/// Whether a name is one to wait for: a library name (`libfoo`, `foo.so`),
/// not a program's (programs are not `dlopen`ed).
pub fn waitable(name: &str) -> bool {
    !name.contains(['/', '*', '?']) && (name.starts_with("lib") || name.contains(".so"))
}

/// SIGINT and SIGTERM held back while ri waits for a library, so that
/// Ctrl-C ends the wait with a message; the signal mask is restored on drop.
pub(crate) struct SignalWait {
    set: libc::sigset_t,
    old: libc::sigset_t,
}

impl SignalWait {
    /// Blocks SIGINT and SIGTERM.
    pub(crate) fn new() -> Self {
        // SAFETY: plain signal-set calls on zeroed sets owned here.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            let mut old: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGINT);
            libc::sigaddset(&mut set, libc::SIGTERM);
            libc::pthread_sigmask(libc::SIG_BLOCK, &set, &mut old);
            SignalWait { set, old }
        }
    }

    /// Waits 20 ms; true when SIGINT or SIGTERM came (taken, not delivered).
    pub(crate) fn pause(&self) -> bool {
        let ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 20_000_000,
        };
        // SAFETY: waits on a valid set; the signal info is not wanted.
        unsafe { libc::sigtimedwait(&self.set, std::ptr::null_mut(), &ts) > 0 }
    }
}

impl Drop for SignalWait {
    fn drop(&mut self) {
        // SAFETY: restores the mask saved in new().
        unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &self.old, std::ptr::null_mut()) };
    }
}

/// Whether `pid` runs (exists and is not a zombie).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with(['Z', 'X']))
    })
}

/// The loader's default directories, for messages.
fn default_dirs_text() -> String {
    loader::default_dirs()
        .iter()
        .filter(|d| d.is_dir() && !d.is_symlink())
        .map(|d| d.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn library_names() {
        assert!(is_library("libc.so.6", "libc"));
        assert!(is_library("libc.so.6", "c"));
        assert!(is_library("libc-2.31.so", "libc"));
        assert!(!is_library("libcrypt.so.1", "libc"));
        assert!(is_library("libmotr.so.2.0.0", "libmotr.so"));
        assert!(!is_library("libmotr-xcode.so", "libmotr.so"));
        assert!(is_library("libpython3.11.so.1.0", "libpython3.11.so.1.0"));
    }

    #[test]
    fn libc_resolves_through_the_cache() {
        let p = resolve("libc", &Scope::default()).unwrap();
        assert!(p.to_string_lossy().contains("libc.so"), "{}", p.display());
        let p = resolve("libc", &Scope::pids(&[std::process::id()])).unwrap();
        assert!(p.to_string_lossy().contains("libc.so"), "{}", p.display());
    }
}
