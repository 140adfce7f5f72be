//! The audit trail of mutation attempts: a JSON-lines file plus an
//! in-memory ring served by the `audit` built-in.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::lock;
use crate::protocol::WireError;

/// Default number of entries kept in memory.
pub const DEFAULT_RING: usize = 256;
/// Size past which the audit file is rotated to `<file>.1` (replacing an
/// older `.1`), so a long-lived service keeps at most twice this on disk.
pub const ROTATE_BYTES: u64 = 8 << 20;

/// The audit log could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// Opening or creating the file failed.
    #[error("cannot open audit log {path}: {source}")]
    Open {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

/// Who sent a request, as recorded in the audit log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditPeer {
    /// `unix` or `tcp`.
    pub transport: String,
    /// Peer uid (Unix sockets only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    /// Peer pid (Unix sockets only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<i32>,
    /// Peer address (TCP only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub addr: Option<String>,
    /// The ssh login the peer runs under, when it does (e.g. `ri -H`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh: Option<SshOrigin>,
}

/// Who reached the peer through ssh: from the environment sshd gave its
/// session (`/proc/PID/environ`, readable for the same uid or by root).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SshOrigin {
    /// The login user (`USER`, else `LOGNAME`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The client's address and port (from `SSH_CONNECTION`, else `SSH_CLIENT`).
    pub client: String,
}

impl SshOrigin {
    /// The ssh origin of process `pid`, if it runs in an ssh session.
    pub fn of_pid(pid: i32) -> Option<SshOrigin> {
        let env = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
        let var = |name: &str| {
            env.split(|&b| b == 0).find_map(|kv| {
                let kv = std::str::from_utf8(kv).ok()?;
                kv.strip_prefix(name)?.strip_prefix('=').map(String::from)
            })
        };
        let conn = var("SSH_CONNECTION").or_else(|| var("SSH_CLIENT"))?;
        let mut w = conn.split_whitespace();
        let client = format!("{}:{}", w.next()?, w.next()?);
        Some(SshOrigin {
            user: var("USER").or_else(|| var("LOGNAME")),
            client,
        })
    }
}

/// One mutation attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// RFC 3339 UTC time of the attempt.
    pub time: String,
    /// Milliseconds since the Unix epoch.
    pub epoch_ms: u64,
    /// Target name.
    pub target: String,
    /// Target pid.
    pub pid: i32,
    /// Who asked.
    pub peer: AuditPeer,
    /// Command name.
    pub cmd: String,
    /// Arguments as received (after defaults were filled in, if valid).
    pub args: Value,
    /// Whether the request carried `"mutate": true`.
    pub confirmed: bool,
    /// Whether the command ran and succeeded.
    pub ok: bool,
    /// The error, when not ok.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<WireError>,
}

/// The audit file and ring.
#[derive(Debug)]
pub struct AuditLog {
    path: PathBuf,
    file: Mutex<File>,
    ring: Mutex<VecDeque<AuditEntry>>,
    capacity: usize,
    rotate_at: u64,
    write_errors: AtomicU64,
}

/// Opens `path` for appending, creating it 0600 (never through a symlink).
fn open_append(path: &Path) -> Result<File, AuditError> {
    OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(|source| AuditError::Open {
            path: path.to_owned(),
            source,
        })
}

impl AuditLog {
    /// Opens (creating with mode 0600) the audit file for appending.
    pub fn open(path: &Path, capacity: usize) -> Result<Self, AuditError> {
        Ok(AuditLog {
            path: path.to_owned(),
            file: Mutex::new(open_append(path)?),
            ring: Mutex::new(VecDeque::with_capacity(capacity.min(4096))),
            capacity: capacity.max(1),
            rotate_at: ROTATE_BYTES,
            write_errors: AtomicU64::new(0),
        })
    }

    /// Rotates the file once it grows past `bytes` (default [`ROTATE_BYTES`]).
    pub fn rotate_at(mut self, bytes: u64) -> Self {
        self.rotate_at = bytes.max(1);
        self
    }

    /// Moves a full file to `<file>.1` and starts a new one; on failure the
    /// old file keeps growing and the error is counted.
    fn rotate(&self, f: &mut File) -> bool {
        let mut old = self.path.clone().into_os_string();
        old.push(".1");
        match std::fs::rename(&self.path, &old)
            .map_err(|_| ())
            .and_then(|()| open_append(&self.path).map_err(|_| ()))
        {
            Ok(new) => {
                *f = new;
                true
            }
            Err(()) => false,
        }
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Capacity of the in-memory ring.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Appends an entry to the file (one `write` per line) and the ring.
    pub fn record(&self, entry: AuditEntry) {
        let mut line = serde_json::to_vec(&entry).unwrap_or_default();
        line.push(b'\n');
        let ok = {
            let mut f = lock(&self.file);
            let written = f.write_all(&line).is_ok();
            let full = f.metadata().is_ok_and(|m| m.len() >= self.rotate_at);
            written && (!full || self.rotate(&mut f))
        };
        if !ok {
            self.write_errors.fetch_add(1, Ordering::Relaxed);
        }
        let mut ring = lock(&self.ring);
        if ring.len() >= self.capacity {
            ring.pop_front();
        }
        ring.push_back(entry);
    }

    /// The last `n` entries, oldest first.
    pub fn recent(&self, n: usize) -> Vec<AuditEntry> {
        let ring = lock(&self.ring);
        let skip = ring.len().saturating_sub(n);
        ring.iter().skip(skip).cloned().collect()
    }

    /// How many entries could not be written to the file.
    pub fn write_errors(&self) -> u64 {
        self.write_errors.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(n: u64) -> AuditEntry {
        AuditEntry {
            time: "2026-11-30T00:00:00Z".into(),
            epoch_ms: n,
            target: "t".into(),
            pid: 1,
            peer: AuditPeer {
                transport: "unix".into(),
                uid: Some(0),
                pid: Some(2),
                addr: None,
                ssh: None,
            },
            cmd: "x.set".into(),
            args: serde_json::json!({"n": n}),
            confirmed: true,
            ok: true,
            error: None,
        }
    }

    #[test]
    fn a_full_file_rotates_to_dot_1_keeping_the_newest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.audit.jsonl");
        let log = AuditLog::open(&path, 8).unwrap().rotate_at(400);
        for n in 0..6 {
            log.record(entry(n));
        }
        assert_eq!(log.write_errors(), 0);
        let lines = |p: &Path| {
            std::fs::read_to_string(p)
                .unwrap_or_default()
                .lines()
                .count()
        };
        let old = dir.path().join("a.audit.jsonl.1");
        assert!(old.exists());
        assert!(std::fs::metadata(&path).unwrap().len() < 400);
        // Each rotation replaces the previous .1: what is on disk is the
        // newest entries, in two files.
        assert!(lines(&old) >= 1 && lines(&path) + lines(&old) <= 6);
        let last: AuditEntry = serde_json::from_str(
            std::fs::read_to_string(&path)
                .unwrap()
                .lines()
                .chain(std::fs::read_to_string(&old).unwrap().lines())
                .max_by_key(|l| serde_json::from_str::<AuditEntry>(l).unwrap().epoch_ms)
                .unwrap(),
        )
        .unwrap();
        assert_eq!(last.epoch_ms, 5);
    }
}
