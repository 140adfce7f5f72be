//! Where control sockets live, how they are named, and [`discover`].
//!
//! A socket is `<dir>/<name>.<pid>.sock`, where `<dir>` is the first usable
//! of `/run/ri`, `$XDG_RUNTIME_DIR/ri` and `/tmp/ri-<uid>`. A directory is
//! usable when it is (or can be created as) a real directory owned by the
//! effective uid and not writable by group or others.

use std::fs;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::sys;

/// File-name suffix of control sockets.
pub const SOCKET_SUFFIX: &str = ".sock";
/// Longest accepted target name.
pub const MAX_NAME_LEN: usize = 64;
/// Capacity of `sockaddr_un.sun_path`, including the terminating NUL.
const SUN_PATH_MAX: usize = 108;

/// A socket location problem.
#[derive(Debug, thiserror::Error)]
pub enum PathError {
    /// The target name has characters outside `[A-Za-z0-9_.-]` or a bad length.
    #[error(
        "invalid target name {0:?}: use 1-{MAX_NAME_LEN} characters from [A-Za-z0-9_.-], not starting with '.'"
    )]
    BadName(String),
    /// No candidate directory could be used.
    #[error("no usable socket directory (tried: {tried})")]
    NoDirectory {
        /// Each directory tried, with the reason it was rejected.
        tried: String,
    },
    /// A directory exists but is unsafe or unusable.
    #[error("{path}: {reason}")]
    UnsafeDirectory {
        /// The directory.
        path: PathBuf,
        /// Why it was rejected.
        reason: String,
    },
    /// The socket path does not fit in `sockaddr_un`.
    #[error("socket path {0} is longer than {max} bytes", max = SUN_PATH_MAX - 1)]
    TooLong(PathBuf),
    /// An I/O error on a directory.
    #[error("{path}: {source}")]
    Io {
        /// The directory.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

/// Checks a target name.
pub fn validate_name(name: &str) -> Result<(), PathError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(PathError::BadName(name.to_owned()))
    }
}

/// The socket file name for a target name and pid.
pub fn socket_file_name(name: &str, pid: i32) -> String {
    format!("{name}.{pid}{SOCKET_SUFFIX}")
}

/// Splits `<name>.<pid>.sock` into its name and pid.
pub fn parse_socket_file_name(file: &str) -> Option<(String, i32)> {
    let stem = file.strip_suffix(SOCKET_SUFFIX)?;
    let (name, pid) = stem.rsplit_once('.')?;
    if pid.is_empty() || !pid.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let pid: i32 = pid.parse().ok()?;
    validate_name(name).ok()?;
    (pid > 0).then(|| (name.to_owned(), pid))
}

/// The directories a target tries, in order.
pub fn candidate_dirs() -> Vec<PathBuf> {
    let mut dirs = vec![PathBuf::from("/run/ri")];
    if let Some(x) = std::env::var_os("XDG_RUNTIME_DIR").filter(|x| !x.is_empty()) {
        dirs.push(PathBuf::from(x).join("ri"));
    }
    dirs.push(PathBuf::from(format!("/tmp/ri-{}", sys::geteuid())));
    dirs
}

/// Creates `dir` (mode 0700) if needed and checks that it is safe: a real
/// directory, owned by the effective uid, not writable by group or others.
pub fn prepare_dir(dir: &Path) -> Result<(), PathError> {
    let io = |source| PathError::Io {
        path: dir.to_owned(),
        source,
    };
    match fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
    {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(io(e)),
    }
    let meta = fs::symlink_metadata(dir).map_err(io)?;
    let unsafe_dir = |reason: &str| PathError::UnsafeDirectory {
        path: dir.to_owned(),
        reason: reason.to_owned(),
    };
    if !meta.file_type().is_dir() {
        return Err(unsafe_dir("not a directory (symlinks are refused)"));
    }
    if meta.uid() != sys::geteuid() {
        return Err(unsafe_dir(&format!(
            "owned by uid {}, not by us (uid {})",
            meta.uid(),
            sys::geteuid()
        )));
    }
    if meta.permissions().mode() & 0o022 != 0 {
        return Err(unsafe_dir("writable by group or others"));
    }
    Ok(())
}

/// Picks the socket directory: `explicit` if given, else the first usable
/// candidate.
pub fn choose_dir(explicit: Option<&Path>) -> Result<PathBuf, PathError> {
    if let Some(dir) = explicit {
        prepare_dir(dir)?;
        return Ok(dir.to_owned());
    }
    let mut tried = Vec::new();
    for dir in candidate_dirs() {
        match prepare_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) => tried.push(e.to_string()),
        }
    }
    Err(PathError::NoDirectory {
        tried: tried.join("; "),
    })
}

/// Checks that a socket path fits in `sockaddr_un`.
pub fn check_socket_path(path: &Path) -> Result<(), PathError> {
    if path.as_os_str().len() >= SUN_PATH_MAX {
        Err(PathError::TooLong(path.to_owned()))
    } else {
        Ok(())
    }
}

/// One control socket found by [`discover`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SocketInfo {
    /// Full path of the socket.
    pub path: PathBuf,
    /// Target name.
    pub name: String,
    /// Pid of the target that created it.
    pub pid: i32,
    /// Whether that pid is still running (stale sockets are not).
    pub alive: bool,
}

/// The directories [`discover`] scans: the candidates of this user, plus
/// every `/run/user/<uid>/ri` and `/tmp/ri-<uid>` (useful when run as root).
pub fn discover_dirs() -> Vec<PathBuf> {
    let mut dirs = candidate_dirs();
    let mut more = |parent: &str, filter: &dyn Fn(&str) -> bool, child: Option<&str>| {
        if let Ok(rd) = fs::read_dir(parent) {
            for e in rd.flatten() {
                let name = e.file_name();
                let Some(name) = name.to_str() else { continue };
                if filter(name) {
                    let p = match child {
                        Some(c) => e.path().join(c),
                        None => e.path(),
                    };
                    if !dirs.contains(&p) {
                        dirs.push(p);
                    }
                }
            }
        }
    };
    more(
        "/run/user",
        &|n| n.bytes().all(|b| b.is_ascii_digit()),
        Some("ri"),
    );
    more(
        "/tmp",
        &|n| {
            n.strip_prefix("ri-")
                .is_some_and(|uid| !uid.is_empty() && uid.bytes().all(|b| b.is_ascii_digit()))
        },
        None,
    );
    dirs
}

/// Lists the control sockets in the standard directories, sorted by pid.
pub fn discover() -> Vec<SocketInfo> {
    discover_in(&discover_dirs())
}

/// Lists the control sockets in the given directories, sorted by pid.
pub fn discover_in(dirs: &[PathBuf]) -> Vec<SocketInfo> {
    use std::os::unix::fs::FileTypeExt;
    let mut out = Vec::new();
    for dir in dirs {
        let Ok(rd) = fs::read_dir(dir) else { continue };
        for e in rd.flatten() {
            let Ok(ft) = e.file_type() else { continue };
            if !ft.is_socket() {
                continue;
            }
            let file = e.file_name();
            let Some((name, pid)) = file.to_str().and_then(parse_socket_file_name) else {
                continue;
            };
            out.push(SocketInfo {
                path: e.path(),
                name,
                pid,
                alive: sys::pid_alive(pid),
            });
        }
    }
    out.sort_by(|a, b| (a.pid, &a.name, &a.path).cmp(&(b.pid, &b.name, &b.path)));
    out
}

/// Removes sockets in `dir` left by dead processes of this uid. A socket
/// someone still listens on is kept whatever its pid says: a process in
/// another pid namespace sees the socket's pid as dead (or as another
/// process) when the directory is shared.
pub(crate) fn remove_stale(dir: &Path) {
    for info in discover_in(&[dir.to_owned()]) {
        if info.alive || std::os::unix::net::UnixStream::connect(&info.path).is_ok() {
            continue;
        }
        if let Ok(meta) = fs::symlink_metadata(&info.path)
            && meta.uid() == sys::geteuid()
        {
            let _ = fs::remove_file(&info.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(validate_name("my-app_1.x").is_ok());
        assert!(validate_name("").is_err());
        assert!(validate_name(".hidden").is_err());
        assert!(validate_name("a/b").is_err());
        assert!(validate_name(&"x".repeat(65)).is_err());
        assert_eq!(
            parse_socket_file_name("my.app.123.sock"),
            Some(("my.app".into(), 123))
        );
        assert_eq!(parse_socket_file_name("app.x.sock"), None);
        assert_eq!(parse_socket_file_name("app.123.audit.jsonl"), None);
        assert_eq!(parse_socket_file_name(".123.sock"), None);
    }
}
