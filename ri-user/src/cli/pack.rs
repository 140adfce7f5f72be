//! Flags of `ri run` and `ri packs`, and an instrument's expanded command
//! line parsed as ri's own.

use std::path::PathBuf;

use clap::{Args, Parser as _};

use super::seconds;
use crate::pack::{ListOptions, Prepared, RunOptions, command_line};

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

/// `ri run`: expands the instrument into the ri command it stands for,
/// which the caller runs.
pub fn instrument_command(opts: &RunOptions) -> Result<super::Command, crate::Error> {
    let Prepared { argv, notes } = command_line(opts)?;
    for n in &notes {
        eprintln!("ri: {n}");
    }
    if opts.show {
        eprintln!("ri: runs: ri {}", crate::pack::shell_words(&argv));
    }
    parsed(&opts.instrument, argv)
}

/// The expanded command line of `instrument` parsed as ri's own.
fn parsed(instrument: &str, argv: Vec<String>) -> Result<super::Command, crate::Error> {
    super::Cli::try_parse_from(std::iter::once("ri".to_string()).chain(argv))
        .map(|cli| cli.command)
        .map_err(|e| crate::Error::Usage(format!("{instrument}: {}", super::fault(&e))))
}

/// The aggregation an instrument stands for (to keep it attached in the
/// background), with the notes on lost optional probes.
pub fn instrument_aggregation(
    opts: &RunOptions,
) -> Result<(crate::agg::AggOptions, Vec<String>), crate::Error> {
    let Prepared { argv, notes } = command_line(opts)?;
    match parsed(&opts.instrument, argv)?.aggregation() {
        Ok(agg) => Ok((agg.map_err(crate::Error::Usage)?, notes)),
        Err(_) => Err(crate::Error::Usage(format!(
            "{} traces events; only aggregating instruments run in the background",
            opts.instrument
        ))),
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
