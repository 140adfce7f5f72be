//! Resolving a probe's TARGET: a path, or a library or program name looked
//! up in the traced processes' mappings, the ld.so cache, then `PATH`.

use std::path::{Path, PathBuf};

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

/// Files a process has mapped, in map order, without duplicates.
pub fn mapped_files(pid: u32) -> Result<Vec<PathBuf>, TargetError> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps"))
        .map_err(|_| TargetError::NoSuchPid(pid))?;
    let mut out: Vec<PathBuf> = Vec::new();
    for line in maps.lines() {
        if let Some(p) = line.split_whitespace().nth(5)
            && p.starts_with('/')
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
        || file.starts_with(&format!("{lib}.so"))
        || file.starts_with(&format!("{lib}-"))
        || file.starts_with(&format!("{name}.so"))
}

/// Resolves `target` for the given pids (empty: system-wide).
pub fn resolve(target: &str, pids: &[u32]) -> Result<PathBuf, TargetError> {
    if target.contains('/') {
        let p = PathBuf::from(target);
        return if p.exists() {
            Ok(p.canonicalize().unwrap_or(p))
        } else {
            Err(TargetError::NoSuchFile(p))
        };
    }
    let mut searched = Vec::new();
    for &pid in pids {
        for f in mapped_files(pid)? {
            if f.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| is_library(n, target))
            {
                return Ok(f);
            }
        }
        searched.push(format!("not mapped by pid {pid}"));
    }
    if let Some(p) = ld_cache_lookup(target) {
        return Ok(p);
    }
    searched.push("not in the ld.so cache".into());
    if let Some(paths) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&paths) {
            let p = dir.join(target);
            if p.is_file() {
                return Ok(p.canonicalize().unwrap_or(p));
            }
        }
    }
    searched.push("not in PATH".into());
    Err(TargetError::NotFound {
        name: target.to_string(),
        searched,
    })
}

/// Looks a library up in the dynamic linker's cache (`ldconfig -p`),
/// preferring x86-64 entries.
fn ld_cache_lookup(name: &str) -> Option<PathBuf> {
    let out = std::process::Command::new("ldconfig")
        .arg("-p")
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut best: Option<(bool, PathBuf)> = None;
    for line in text.lines().skip(1) {
        let line = line.trim();
        let Some((lhs, path)) = line.split_once(" => ") else {
            continue;
        };
        let file = lhs.split_whitespace().next().unwrap_or("");
        if is_library(file, name) {
            let x86 = lhs.contains("x86-64");
            if best.as_ref().is_none_or(|(bx, _)| x86 && !bx) {
                best = Some((x86, PathBuf::from(path)));
            }
        }
    }
    best.map(|(_, p)| p)
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
        assert!(is_library("libpython3.11.so.1.0", "libpython3.11.so.1.0"));
    }

    #[test]
    fn libc_resolves_through_the_cache() {
        let p = resolve("libc", &[]).unwrap();
        assert!(p.to_string_lossy().contains("libc.so"), "{}", p.display());
        let p = resolve("libc", &[std::process::id()]).unwrap();
        assert!(p.to_string_lossy().contains("libc.so"), "{}", p.display());
    }
}
