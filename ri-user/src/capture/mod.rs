//! Capture sessions: a session file's instruments and triggers run against targets into a bundle, shown and exported offline.

mod actions;
pub mod archive;
pub mod bundle;
pub mod file;
pub mod hosts;
pub mod instrument;
mod perfetto;
pub mod recorder;
mod run;
pub mod show;
pub mod targets;
pub mod trigger;

use std::{io::Write, path::PathBuf};

pub use bundle::Bundle;
pub use run::{RunOptions, run};

/// What stops a session command.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// A session file that cannot be read or is malformed.
    #[error("{0}")]
    File(String),
    /// Targets that name no process.
    #[error("targets: {0}")]
    Targets(String),
    /// An instrument that cannot be expanded or started.
    #[error("instrument {0}: {1}")]
    Instrument(String, String),
    /// A bundle that cannot be written or read.
    #[error("bundle: {0}")]
    Bundle(String),
    /// Ctrl-C before the session started.
    #[error("interrupted before every instrument attached")]
    Interrupted,
    /// Output or system error.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// What `ri session export` writes.
#[derive(Debug, Clone, Default)]
pub struct ExportOptions {
    /// The bundle (directory or `.tar.zst`).
    pub bundle: PathBuf,
    /// A Perfetto trace (protobuf).
    pub perfetto: Option<PathBuf>,
    /// Folded stacks of every aggregation keyed by stack.
    pub folded: Option<PathBuf>,
    /// Every event and print as JSON lines, with its instrument's name.
    pub json: Option<PathBuf>,
}

/// Opens `path` for writing (`-`: stdout).
fn output(path: &std::path::Path) -> std::io::Result<Box<dyn Write>> {
    Ok(if path.as_os_str() == "-" {
        Box::new(std::io::stdout().lock())
    } else {
        Box::new(std::io::BufWriter::new(std::fs::File::create(path)?))
    })
}

/// `ri session show BUNDLE [--json]`.
pub fn show(path: &std::path::Path, json: bool) -> Result<(), CaptureError> {
    let b = Bundle::open(path)?;
    let r = show::show(&b, json, &mut std::io::stdout().lock());
    archive::cleanup();
    r
}

/// `ri session export BUNDLE --perfetto FILE | --folded FILE | --json FILE`.
pub fn export(opts: &ExportOptions) -> Result<(), CaptureError> {
    let b = Bundle::open(&opts.bundle)?;
    let r = (|| {
        if opts.perfetto.is_none() && opts.folded.is_none() && opts.json.is_none() {
            return Err(CaptureError::Bundle(
                "export needs --perfetto FILE, --folded FILE or --json FILE".into(),
            ));
        }
        if let Some(p) = &opts.perfetto {
            let bytes = perfetto::trace(&b)?;
            output(p)?.write_all(&bytes)?;
        }
        if let Some(p) = &opts.folded {
            let mut w = output(p)?;
            for (_, print) in show::last_prints(&b)? {
                if let Some(f) = show::folded_of(Some(&print)) {
                    w.write_all(f.as_bytes())?;
                }
            }
            w.flush()?;
        }
        if let Some(p) = &opts.json {
            let mut w = output(p)?;
            for (name, rel) in all_files(&b) {
                for v in b.lines(&rel)? {
                    let v = serde_json::json!({"instrument": name, "file": rel, "line": v});
                    writeln!(w, "{v}")?;
                }
            }
            w.flush()?;
        }
        Ok(())
    })();
    archive::cleanup();
    r
}

/// Every zstd JSON-lines file of the bundle with its instrument's name.
fn all_files(b: &Bundle) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for i in &b.manifest.instruments {
        for f in &i.files {
            if f.ends_with(".jsonl.zst") {
                out.push((i.name.clone(), f.clone()));
            }
        }
    }
    out
}
