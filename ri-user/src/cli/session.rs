//! `ri session run|show|export`: capture sessions (docs/SESSIONS.md).

use std::path::PathBuf;

use clap::{Args, Subcommand};

/// `ri session` actions.
#[derive(Debug, Subcommand)]
pub enum SessionAction {
    /// Run a session file against its targets and write a bundle.
    ///
    /// The instruments start (packs' `run = ...` or ri command lines
    /// `cmd = ...`), their events and aggregation prints go to the bundle
    /// (or to their flight recorder), and triggers act when their
    /// condition holds. Ctrl-C or --duration ends it. Targets given here
    /// replace the file's.
    Run(SessionRunArgs),
    /// Summarise a bundle (directory or .tar.zst), offline.
    Show {
        /// The bundle.
        bundle: PathBuf,
        /// The manifest and each aggregation's last print, as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Export a bundle: a Perfetto trace, folded stacks, or JSON lines.
    Export(SessionExportArgs),
}

/// Options of `ri session run`.
#[derive(Debug, Args)]
pub struct SessionRunArgs {
    /// The session file (TOML).
    pub file: PathBuf,
    /// The bundle directory (default: ri-session-NAME-TIME here).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Stop after this many seconds (replaces the file's duration).
    #[arg(short, long, value_name = "SECONDS")]
    pub duration: Option<f64>,
    /// Also write the bundle as DIR.tar.zst.
    #[arg(long)]
    pub archive: bool,
    /// Target process (repeatable).
    #[arg(short, long = "pid", value_name = "PID")]
    pub pids: Vec<u32>,
    /// Target processes by comm (repeatable).
    #[arg(long, value_name = "COMM")]
    pub comm: Vec<String>,
    /// Target processes by executable (repeatable).
    #[arg(long, value_name = "PATH")]
    pub exe: Vec<String>,
    /// The global `-H` and ssh flags (set by `Cli::session_takes_fleet`):
    /// a session runs its instruments on the hosts itself.
    #[arg(skip)]
    pub fleet: Option<(Vec<String>, Vec<String>)>,
    /// No progress line.
    #[arg(short, long)]
    pub quiet: bool,
}

impl SessionRunArgs {
    /// The library's options.
    pub fn options(&self) -> Result<crate::capture::RunOptions, String> {
        Ok(crate::capture::RunOptions {
            file: self.file.clone(),
            out: self.out.clone(),
            duration: super::seconds("--duration", self.duration)?,
            archive: self.archive,
            targets: crate::capture::file::Targets {
                pids: self.pids.clone(),
                comm: self.comm.clone(),
                exe: self.exe.clone(),
                hosts: self.fleet.as_ref().map(|f| f.0.clone()).unwrap_or_default(),
            },
            ssh: self.fleet.as_ref().map(|f| f.1.clone()).unwrap_or_default(),
            quiet: self.quiet,
        })
    }
}

/// Options of `ri session export`.
#[derive(Debug, Args)]
pub struct SessionExportArgs {
    /// The bundle (directory or .tar.zst).
    pub bundle: PathBuf,
    /// Write a Perfetto trace (open it in ui.perfetto.dev).
    #[arg(long, value_name = "FILE")]
    pub perfetto: Option<PathBuf>,
    /// Write folded stacks (`-`: stdout).
    #[arg(long, value_name = "FILE")]
    pub folded: Option<PathBuf>,
    /// Write every event and print as JSON lines (`-`: stdout).
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
}

impl SessionExportArgs {
    /// The library's options.
    pub fn options(&self) -> crate::capture::ExportOptions {
        crate::capture::ExportOptions {
            bundle: self.bundle.clone(),
            perfetto: self.perfetto.clone(),
            folded: self.folded.clone(),
            json: self.json.clone(),
        }
    }
}
