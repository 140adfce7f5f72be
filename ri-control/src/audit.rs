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
    write_errors: AtomicU64,
}

impl AuditLog {
    /// Opens (creating with mode 0600) the audit file for appending.
    pub fn open(path: &Path, capacity: usize) -> Result<Self, AuditError> {
        let file = OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(path)
            .map_err(|source| AuditError::Open {
                path: path.to_owned(),
                source,
            })?;
        Ok(AuditLog {
            path: path.to_owned(),
            file: Mutex::new(file),
            ring: Mutex::new(VecDeque::with_capacity(capacity.min(4096))),
            capacity: capacity.max(1),
            write_errors: AtomicU64::new(0),
        })
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
            f.write_all(&line).is_ok()
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
