//! Flags of `ri run` and `ri packs`.

use std::path::PathBuf;

use clap::Args;

use super::seconds;
use crate::pack::{ListOptions, RunOptions};

/// Options of `ri run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The instrument, `PACK.INSTRUMENT` (see `ri packs`).
    #[arg(value_name = "PACK.INSTRUMENT")]
    pub instrument: String,
    /// The instrument's parameters, `NAME=VALUE`.
    #[arg(value_name = "PARAM=VALUE")]
    pub params: Vec<String>,
    /// Which processes, and for how long.
    #[command(flatten)]
    pub scope: super::ScopeArgs,
    /// JSON output, as the instrument's command prints it.
    #[arg(long)]
    pub json: bool,
    /// Aggregating instruments: also print what each SECONDS added.
    #[arg(short, long, value_name = "SECONDS")]
    pub interval: Option<f64>,
    /// Attach to this binary or library instead of the pack's targets.
    #[arg(long, value_name = "PATH|LIB")]
    pub target: Option<String>,
    /// Also read this pack file (repeatable; overrides a pack of the same name).
    #[arg(long = "pack", value_name = "FILE")]
    pub packs: Vec<PathBuf>,
    /// Print the expanded ri command line on stderr before running it.
    #[arg(long)]
    pub show: bool,
}

impl RunArgs {
    /// The library options these flags stand for.
    pub fn options(&self) -> RunOptions {
        RunOptions {
            instrument: self.instrument.clone(),
            params: self.params.clone(),
            pids: self.scope.pids.clone(),
            select: self.scope.select.selection(),
            command: self.scope.command.clone(),
            duration: self.scope.duration,
            quiet: self.scope.quiet,
            json: self.json,
            interval: self.interval,
            target: self.target.clone(),
            packs: self.packs.clone(),
            show: self.show,
            max_overhead: self.scope.max_overhead,
        }
    }

    /// Checks the numbers before anything is expanded.
    pub fn check(&self) -> Result<(), String> {
        seconds("--duration", self.scope.duration)?;
        seconds("--interval", self.interval)?;
        Ok(())
    }
}

/// Options of `ri packs`.
#[derive(Debug, Args)]
pub struct PacksArgs {
    /// Only this pack, with its probe points.
    #[arg(value_name = "PACK")]
    pub pack: Option<String>,
    /// Also read this pack file (repeatable).
    #[arg(long = "pack", value_name = "FILE")]
    pub packs: Vec<PathBuf>,
    /// JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

impl PacksArgs {
    /// The library options these flags stand for.
    pub fn options(&self) -> ListOptions {
        ListOptions {
            pack: self.pack.clone(),
            files: self.packs.clone(),
            json: self.json,
        }
    }
}
