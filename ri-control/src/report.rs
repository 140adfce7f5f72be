//! Report sections (the "guru meditation" report): registered callbacks
//! whose values are gathered by the `report` built-in and by SIGUSR2.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::{Map, Value, json};

use crate::time;

/// A report section callback.
pub type ReportFn = Box<dyn Fn() -> Value + Send + Sync>;

/// Where a SIGUSR2 report goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReportTarget {
    /// Written to the process's standard error.
    Stderr,
    /// Written as a new file `<name>.<pid>.<epoch_ms>.report.txt` in this
    /// directory (created with mode 0700 if missing).
    Dir(PathBuf),
}

/// A report could not be written.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// Creating the directory or file, or writing, failed.
    #[error("cannot write report to {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

/// Runs every section, turning a panic into `{"error": "..."}`.
pub(crate) fn run_sections(sections: &[(String, Arc<ReportFn>)]) -> Map<String, Value> {
    let mut out = Map::new();
    for (name, f) in sections {
        let v = match catch_unwind(AssertUnwindSafe(|| f())) {
            Ok(v) => v,
            Err(p) => json!({"error": format!("section panicked: {}", panic_message(&p))}),
        };
        out.insert(name.clone(), v);
    }
    out
}

/// The message of a caught panic.
pub(crate) fn panic_message(p: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}

/// Facts printed at the top of a text report.
pub(crate) struct ReportHeader<'a> {
    pub target: &'a str,
    pub pid: i32,
    pub epoch_ms: u64,
    pub socket: &'a Path,
}

/// Renders a text report.
pub(crate) fn render_text(h: &ReportHeader<'_>, sections: &Map<String, Value>) -> String {
    let mut s = String::new();
    s.push_str("===== ri-control report =====\n");
    s.push_str(&format!("target:   {}\n", h.target));
    s.push_str(&format!("pid:      {}\n", h.pid));
    s.push_str(&format!("time:     {}\n", time::rfc3339_ms(h.epoch_ms)));
    s.push_str(&format!(
        "library:  ri-control {} (protocol {})\n",
        env!("CARGO_PKG_VERSION"),
        crate::PROTOCOL_VERSION
    ));
    s.push_str(&format!("socket:   {}\n", h.socket.display()));
    if sections.is_empty() {
        s.push_str("\n(no report sections registered)\n");
    }
    for (name, v) in sections {
        s.push_str(&format!("\n----- {name} -----\n"));
        match v {
            Value::String(text) => s.push_str(text),
            other => s.push_str(&serde_json::to_string_pretty(other).unwrap_or_default()),
        }
        s.push('\n');
    }
    s.push_str("\n===== end of report =====\n");
    s
}

/// Writes a rendered report; returns the file written, if any.
pub(crate) fn write_text(
    target: &ReportTarget,
    h: &ReportHeader<'_>,
    text: &str,
) -> Result<Option<PathBuf>, ReportError> {
    match target {
        ReportTarget::Stderr => {
            let mut err = std::io::stderr().lock();
            err.write_all(text.as_bytes())
                .and_then(|_| err.flush())
                .map_err(|source| ReportError::Io {
                    path: PathBuf::from("<stderr>"),
                    source,
                })?;
            Ok(None)
        }
        ReportTarget::Dir(dir) => {
            let io = |path: &Path| {
                let path = path.to_owned();
                move |source| ReportError::Io { path, source }
            };
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(io(dir))?;
            let mut n = 0;
            loop {
                let file = if n == 0 {
                    format!("{}.{}.{}.report.txt", h.target, h.pid, h.epoch_ms)
                } else {
                    format!("{}.{}.{}-{n}.report.txt", h.target, h.pid, h.epoch_ms)
                };
                let path = dir.join(file);
                match OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                    .open(&path)
                {
                    Ok(mut f) => {
                        f.write_all(text.as_bytes()).map_err(io(&path))?;
                        return Ok(Some(path));
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && n < 100 => n += 1,
                    Err(e) => return Err(io(&path)(e)),
                }
            }
        }
    }
}
