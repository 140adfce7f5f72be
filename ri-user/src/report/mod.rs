//! `ri report`: a guru-meditation report on any live process, read from
//! outside: what it is (`process`), which packages it comes from
//! (`package`), what every thread is doing (`threads`: each one stopped
//! briefly with `PTRACE_SEIZE`, its stack copied, then unwound and
//! symbolized after it runs again), its descriptors and sockets, memory,
//! configuration, and the sections a target running `ri-control` adds.
//!
//! Nothing here can leave the target stopped: threads are seized (never
//! attached), so if ri dies the kernel detaches them and they continue.
//! A section that cannot be read says why; a process that exits midway
//! gives a partial report with a note.

mod config;
mod control;
mod memory;
mod net;
mod package;
mod procfs;
mod render;
pub(crate) mod stop;
pub(crate) mod symbolize;
mod threads;
pub(crate) mod unwind;

use std::{
    io::Write as _,
    path::{Path, PathBuf},
    time::{Instant, SystemTime},
};

use serde::Serialize;

pub use config::ConfigSection;
pub use control::ControlSection;
pub use memory::MemorySection;
pub use net::{Fd, FilesSection, Socket, SocketsSection};
pub use package::{Owner, PackageSection};
pub use procfs::{ProcessSection, build_id, kernel};
pub use threads::{Frame, ThreadInfo, ThreadsSection};

use crate::{Error, target};

/// Errors that stop `ri report` (anything else becomes a note in the report).
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// `--sections` named a section that does not exist.
    #[error("unknown section '{0}' (valid: {valid})", valid = Section::names().join(", "))]
    UnknownSection(String),
    /// The report could not be written.
    #[error("cannot write {path}: {source}")]
    Output {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// One part of the report.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Section {
    /// Identity, credentials, times, cgroup, scheduling, limits.
    Process,
    /// Packages owning the executable and its libraries.
    Package,
    /// Every thread's name, state, CPU time and stack.
    Threads,
    /// Open descriptors.
    Files,
    /// Sockets with addresses and states.
    Sockets,
    /// RSS, PSS, mappings by file.
    Memory,
    /// Flags, environment (secrets redacted), open configuration files.
    Config,
    /// Sections served by the target's ri-control library.
    Control,
}

impl Section {
    /// Every section, in report order.
    pub const ALL: [Section; 8] = [
        Section::Process,
        Section::Package,
        Section::Threads,
        Section::Files,
        Section::Sockets,
        Section::Memory,
        Section::Config,
        Section::Control,
    ];

    /// The section's name on the command line and in JSON.
    pub fn name(self) -> &'static str {
        match self {
            Section::Process => "process",
            Section::Package => "package",
            Section::Threads => "threads",
            Section::Files => "files",
            Section::Sockets => "sockets",
            Section::Memory => "memory",
            Section::Config => "config",
            Section::Control => "control",
        }
    }

    /// Every section name.
    pub fn names() -> Vec<&'static str> {
        Section::ALL.iter().map(|s| s.name()).collect()
    }

    /// Parses a list of names (empty: every section), in report order.
    pub fn parse_list(names: &[String]) -> Result<Vec<Section>, ReportError> {
        if names.is_empty() {
            return Ok(Section::ALL.to_vec());
        }
        let mut out = Vec::new();
        for n in names.iter().map(|n| n.trim()).filter(|n| !n.is_empty()) {
            let s = Section::ALL
                .into_iter()
                .find(|s| s.name().eq_ignore_ascii_case(n))
                .ok_or_else(|| ReportError::UnknownSection(n.to_string()))?;
            if !out.contains(&s) {
                out.push(s);
            }
        }
        if out.is_empty() {
            return Err(ReportError::UnknownSection(String::new()));
        }
        out.sort();
        Ok(out)
    }
}

/// What `ri report` was asked for.
#[derive(Clone, Debug)]
pub struct ReportOptions {
    /// The process.
    pub pid: u32,
    /// Sections to include, in report order.
    pub sections: Vec<Section>,
    /// JSON instead of text.
    pub json: bool,
    /// Write here instead of standard output.
    pub output: Option<PathBuf>,
    /// List threads without stopping them.
    pub no_stacks: bool,
}

/// The whole report; `--json` prints exactly this.
#[derive(Debug, Serialize)]
pub struct Report {
    /// The process.
    pub pid: u32,
    /// When the report was made (RFC 3339, UTC).
    pub time: String,
    /// ri's version.
    pub ri_version: &'static str,
    /// How long gathering took, in milliseconds.
    pub duration_ms: f64,
    /// The kernel it runs on (release and version, as `uname -rv`).
    pub kernel: String,
    /// `process` section.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub process: Option<ProcessSection>,
    /// `package` section.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub package: Option<PackageSection>,
    /// `threads` section.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub threads: Option<ThreadsSection>,
    /// `files` section.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub files: Option<FilesSection>,
    /// `sockets` section.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sockets: Option<SocketsSection>,
    /// `memory` section.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory: Option<MemorySection>,
    /// `config` section.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub config: Option<ConfigSection>,
    /// `control` section.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub control: Option<ControlSection>,
    /// Report-wide notes (e.g. the process exited midway).
    pub notes: Vec<String>,
}

/// Gathers the report, then writes it as text or JSON.
pub fn run(opts: &ReportOptions) -> Result<(), Error> {
    let report = collect(opts)?;
    let text = if opts.json {
        let mut s = serde_json::to_string_pretty(&report).map_err(std::io::Error::other)?;
        s.push('\n');
        s
    } else {
        render::text(&report)
    };
    match &opts.output {
        Some(path) => std::fs::write(path, text).map_err(|source| ReportError::Output {
            path: path.clone(),
            source,
        })?,
        None => {
            let mut out = std::io::stdout().lock();
            out.write_all(text.as_bytes())?;
            out.flush()?;
        }
    }
    Ok(())
}

/// Gathers every requested section.
pub fn collect(opts: &ReportOptions) -> Result<Report, Error> {
    let pid = opts.pid;
    target::check_pid(pid)?;
    let t0 = Instant::now();
    let time = ri_control::time::rfc3339(SystemTime::now());
    let want = |s: Section| opts.sections.contains(&s);
    let mut notes = Vec::new();
    // A zombie has exited already: say so once, not as a surprise later.
    let zombie = procfs::is_zombie(pid);
    let mut gone = zombie;
    // After each section: has the process gone away meanwhile?
    let mut check = |what: &str, notes: &mut Vec<String>| {
        if !gone && !procfs::alive(pid) {
            gone = true;
            notes.push(format!(
                "process {pid} exited during the report (noticed after the {what} section): \
                 that section and the ones after it are partial"
            ));
        }
    };
    let mut report = Report {
        pid,
        time,
        ri_version: env!("CARGO_PKG_VERSION"),
        duration_ms: 0.0,
        kernel: procfs::kernel(),
        process: None,
        package: None,
        threads: None,
        files: None,
        sockets: None,
        memory: None,
        config: None,
        control: None,
        notes: Vec::new(),
    };
    if zombie {
        notes.push(format!(
            "process {pid} is a zombie: it has exited and waits for its parent to reap it"
        ));
    }
    // A kernel thread has only the process and thread facts.
    let user = !procfs::is_kernel_thread(pid);
    if !user {
        notes.push(format!(
            "pid {pid} is a kernel thread: it has no executable, user memory, user stack, \
             descriptors or environment to report"
        ));
    }
    let want = |s: Section| want(s) && (user || matches!(s, Section::Process | Section::Threads));
    if want(Section::Process) {
        report.process = Some(procfs::process_section(pid));
        check("process", &mut notes);
    }
    if want(Section::Package) {
        report.package = Some(package::section(pid));
        check("package", &mut notes);
    }
    if want(Section::Threads) {
        report.threads = Some(threads::section(pid, !opts.no_stacks && user));
        check("threads", &mut notes);
    }
    // Files, sockets and config share one read of the descriptor table.
    let fds = (want(Section::Files) || want(Section::Sockets) || want(Section::Config))
        .then(|| net::read_fds(pid));
    if want(Section::Files)
        && let Some(fds) = &fds
    {
        report.files = Some(net::files_section(fds));
        check("files", &mut notes);
    }
    if want(Section::Sockets)
        && let Some(fds) = &fds
    {
        report.sockets = Some(net::sockets_section(pid, fds));
        check("sockets", &mut notes);
    }
    if want(Section::Memory) {
        report.memory = Some(memory::section(pid));
        check("memory", &mut notes);
    }
    if want(Section::Config) {
        report.config = Some(config::section(pid, fds.as_ref()));
        check("config", &mut notes);
    }
    if want(Section::Control) {
        report.control = Some(control::section(pid));
        check("control", &mut notes);
    }
    report.notes = notes;
    report.duration_ms = t0.elapsed().as_secs_f64() * 1e3;
    Ok(report)
}

/// Reads `/proc/PID/NAME` (or `/proc/PID/task/TID/NAME`) as text.
fn read_proc(path: impl AsRef<Path>) -> std::io::Result<String> {
    let bytes = std::fs::read(path)?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// Why a /proc file could not be read, in words.
fn why(what: &str, e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(libc::EACCES) | Some(libc::EPERM) => {
            format!("{what}: permission denied (ri needs the target's uid or CAP_SYS_PTRACE)")
        }
        Some(libc::ENOENT) | Some(libc::ESRCH) => format!("{what}: the process has exited"),
        _ => format!("{what}: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn section_lists() {
        assert_eq!(Section::parse_list(&[]).unwrap(), Section::ALL.to_vec());
        let l =
            Section::parse_list(&["sockets".into(), "Threads".into(), "sockets".into()]).unwrap();
        assert_eq!(l, vec![Section::Threads, Section::Sockets]);
        let e = Section::parse_list(&["thread".into()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown section 'thread'"), "{e}");
        assert!(e.contains("process, package, threads"), "{e}");
    }
}
