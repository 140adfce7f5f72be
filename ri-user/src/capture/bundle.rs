//! A session's bundle on disk: `manifest.json`, the session file, events
//! and aggregation prints as zstd-compressed JSON lines, flight-recorder
//! dumps, reports and logs; written by `run`, read back by `show` and
//! `export` on any machine.

use std::{
    collections::BTreeMap,
    fs::File,
    io::{BufRead, BufReader, BufWriter, Write},
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{
    CaptureError,
    instrument::{Counts, Kind},
};

/// A point in time, three ways: the wall clock (seconds since the epoch and
/// UTC text) and the monotonic clock the kernel stamps events with.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Stamp {
    /// Seconds since the Unix epoch.
    pub unix: f64,
    /// The same, as `YYYY-MM-DDTHH:MM:SSZ`.
    pub utc: String,
    /// CLOCK_MONOTONIC in ns (the `ts_ns` of events).
    pub mono_ns: u64,
}

impl Stamp {
    /// Now.
    pub fn now() -> Stamp {
        let unix = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        Stamp {
            unix,
            utc: utc_text(unix as i64),
            mono_ns: mono_ns(),
        }
    }
}

/// CLOCK_MONOTONIC now, in ns (the clock of events' `ts_ns`).
pub fn mono_ns() -> u64 {
    crate::agg::monotonic_ns()
}

/// `YYYY-MM-DDTHH:MM:SSZ` for seconds since the epoch.
pub fn utc_text(secs: i64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs.max(0) as u64);
    let ms = ri_control::time::rfc3339(t);
    format!("{}Z", ms.split('.').next().unwrap_or(&ms))
}

/// A target process as the session found it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TargetInfo {
    /// Its pid.
    pub pid: u32,
    /// Its `comm`.
    pub comm: String,
    /// Its executable.
    pub exe: String,
    /// The executable's GNU build-id, in hex.
    pub build_id: Option<String>,
    /// The host it runs on.
    pub host: String,
    /// Its threads' names by tid, as seen at the start and the end.
    #[serde(default)]
    pub threads: BTreeMap<u32, String>,
}

/// One instrument's record in the manifest.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InstrumentInfo {
    /// Its name.
    pub name: String,
    /// `run = "..."` or `cmd = "..."` as written.
    pub source: String,
    /// The ri command line it ran.
    pub argv: Vec<String>,
    /// Events or prints.
    pub kind: Kind,
    /// Output lines written or kept (events, or prints).
    pub lines: u64,
    /// Events, losses and dropped updates from its summaries.
    #[serde(flatten)]
    pub counts: Counts,
    /// Its flight-recorder window, if it has one.
    pub flight_recorder: Option<String>,
    /// Times it started and stopped, in seconds from the session's start.
    pub runs: Vec<(f64, Option<f64>)>,
    /// Exit statuses of its runs (0 is a clean stop).
    pub exits: Vec<Option<i32>>,
    /// Files of the bundle holding its output.
    pub files: Vec<String>,
    /// On remote hosts: each host's events, losses and dropped updates.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub hosts: BTreeMap<String, Counts>,
    /// Hosts it failed on, with why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failed: Vec<String>,
    /// A run ended without its summary (killed after the stop timeout, or
    /// by a signal): its `lost` and `dropped` are then lower bounds.
    #[serde(default)]
    pub losses_unknown: bool,
}

/// One host's part of a fleet session: what the host said about itself
/// and its targets when the session started.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HostPart {
    /// The host, as `-H` named it.
    pub host: String,
    /// Its kernel (`uname -rv`).
    pub kernel: String,
    /// Its target processes.
    pub targets: Vec<TargetInfo>,
    /// Why its targets could not be read, if they could not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One action a fired trigger took.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ActionRecord {
    /// The action as written.
    pub action: String,
    /// `ok`, or why it failed.
    pub result: String,
    /// Files it wrote.
    pub files: Vec<String>,
}

/// One firing of a trigger.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Firing {
    /// The trigger's name.
    pub trigger: String,
    /// Its condition as written.
    pub when: String,
    /// When it fired.
    pub at: Stamp,
    /// Seconds from the session's start.
    pub t: f64,
    /// The value that made it fire, for value conditions.
    pub value: Option<f64>,
    /// What it did.
    pub actions: Vec<ActionRecord>,
}

/// `manifest.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    /// ri's version.
    pub ri_version: String,
    /// The session's name.
    pub session: String,
    /// The session file's path as given.
    pub session_file: String,
    /// The session file's text.
    pub session_text: String,
    /// Hosts: this machine's name first, then the file's or `-H`'s.
    pub hosts: Vec<String>,
    /// `uname -r` and `-v` of this machine.
    pub kernel: String,
    /// Target processes.
    pub targets: Vec<TargetInfo>,
    /// Start and end.
    pub start: Stamp,
    /// End (set when the session ends).
    pub end: Option<Stamp>,
    /// Seconds between prints.
    pub interval: f64,
    /// Instruments, in file order.
    pub instruments: Vec<InstrumentInfo>,
    /// Triggers fired, in order.
    pub fired: Vec<Firing>,
    /// Events lost over all instruments (ring buffer full).
    pub lost: u64,
    /// Aggregation updates dropped over all instruments.
    pub dropped: u64,
    /// Instruments whose losses are unknown (see `losses_unknown`).
    #[serde(default)]
    pub losses_unknown: Vec<String>,
    /// A fleet session's hosts: each one's kernel and targets (its files
    /// are under `hosts/HOST/`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parts: Vec<HostPart>,
}

/// Output files being written, each a zstd stream of JSON lines.
pub struct Writer {
    /// The bundle's directory.
    pub dir: PathBuf,
    open: BTreeMap<String, zstd::Encoder<'static, BufWriter<File>>>,
}

impl Writer {
    /// Creates the bundle directory (it must not exist or be empty).
    pub fn create(dir: &Path) -> Result<Writer, CaptureError> {
        if dir.exists() && std::fs::read_dir(dir)?.next().is_some() {
            return Err(CaptureError::Bundle(format!(
                "{}: exists and is not empty",
                dir.display()
            )));
        }
        std::fs::create_dir_all(dir)?;
        Ok(Writer {
            dir: dir.to_path_buf(),
            open: BTreeMap::new(),
        })
    }

    /// Appends one line to the zstd JSON-lines file `rel`.
    pub fn line(&mut self, rel: &str, line: &str) -> Result<(), CaptureError> {
        if !self.open.contains_key(rel) {
            let path = self.dir.join(rel);
            if let Some(p) = path.parent() {
                std::fs::create_dir_all(p)?;
            }
            let enc = zstd::Encoder::new(BufWriter::new(File::create(&path)?), 3)?;
            self.open.insert(rel.to_string(), enc);
        }
        let enc = self.open.get_mut(rel).expect("opened above");
        enc.write_all(line.as_bytes())?;
        enc.write_all(b"\n")?;
        Ok(())
    }

    /// Writes a whole file `rel` (plain).
    pub fn file(&self, rel: &str, bytes: &[u8]) -> Result<(), CaptureError> {
        let path = self.dir.join(rel);
        if let Some(p) = path.parent() {
            std::fs::create_dir_all(p)?;
        }
        std::fs::write(path, bytes)?;
        Ok(())
    }

    /// Finishes the zstd file `rel` (a flight-recorder dump is complete).
    pub fn close(&mut self, rel: &str) -> Result<(), CaptureError> {
        if let Some(enc) = self.open.remove(rel) {
            enc.finish()?.flush()?;
        }
        Ok(())
    }

    /// Finishes every file and writes the manifest.
    pub fn finish(mut self, manifest: &Manifest) -> Result<PathBuf, CaptureError> {
        let names: Vec<String> = self.open.keys().cloned().collect();
        for n in names {
            self.close(&n)?;
        }
        let json = serde_json::to_vec_pretty(manifest).map_err(std::io::Error::other)?;
        self.file("manifest.json", &json)?;
        Ok(self.dir)
    }
}

/// A bundle read back.
pub struct Bundle {
    /// Its directory.
    pub dir: PathBuf,
    /// Its manifest.
    pub manifest: Manifest,
}

impl Bundle {
    /// Opens a bundle directory (or a `.tar.zst` of one, unpacked beside
    /// it into a temporary directory).
    pub fn open(path: &Path) -> Result<Bundle, CaptureError> {
        let dir = if path.is_file() {
            super::archive::unpack(path)?
        } else {
            path.to_path_buf()
        };
        let text = std::fs::read(dir.join("manifest.json")).map_err(|e| {
            CaptureError::Bundle(format!("{}: no manifest.json ({e})", path.display()))
        })?;
        let manifest = serde_json::from_slice(&text)
            .map_err(|e| CaptureError::Bundle(format!("{}/manifest.json: {e}", path.display())))?;
        Ok(Bundle { dir, manifest })
    }

    /// The JSON values of a zstd JSON-lines file of the bundle.
    pub fn lines(&self, rel: &str) -> Result<Vec<Value>, CaptureError> {
        let f = File::open(self.dir.join(rel))
            .map_err(|e| CaptureError::Bundle(format!("{rel}: {e}")))?;
        let dec = zstd::Decoder::new(f)?;
        let mut out = Vec::new();
        for (i, line) in BufReader::new(dec).lines().enumerate() {
            let line = line.map_err(|e| CaptureError::Bundle(format!("{rel}: {e}")))?;
            out.push(
                serde_json::from_str(&line)
                    .map_err(|e| CaptureError::Bundle(format!("{rel}, line {}: {e}", i + 1)))?,
            );
        }
        Ok(out)
    }
}
