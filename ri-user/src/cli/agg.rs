//! Flags of the aggregating commands `ri count`, `ri hist` and `ri latency`.

use std::time::Duration;

use clap::Args;

use crate::{
    agg::{AggKind, AggOptions},
    trace::TraceOptions,
};

/// Options every aggregating command takes.
#[derive(Debug, Args)]
pub struct AggCommon {
    /// Group by this expression too (repeatable): an integer, pid, tid,
    /// comm, str(ADDR[, LEN]).
    #[arg(long = "by", value_name = "EXPR")]
    pub by: Vec<String>,
    /// Also print what each SECONDS added, while running.
    #[arg(short, long, value_name = "SECONDS")]
    pub interval: Option<f64>,
    /// Only this process (repeatable).
    #[arg(short, long = "pid", value_name = "PID")]
    pub pids: Vec<u32>,
    /// Start this command with the probes attached; stop when it exits.
    #[arg(short = 'c', long = "command", value_name = "CMD")]
    pub command: Option<String>,
    /// Stop after this many seconds.
    #[arg(short, long, value_name = "SECONDS")]
    pub duration: Option<f64>,
    /// JSON: one object per print.
    #[arg(long)]
    pub json: bool,
    /// Print no attach message and no summary.
    #[arg(short, long)]
    pub quiet: bool,
    /// Keys the kernel map holds; updates past it are counted as dropped.
    #[arg(long, default_value_t = ri_common::AGG_ENTRIES, value_name = "N")]
    pub max_keys: u32,
}

/// Options of `ri count`.
#[derive(Debug, Args)]
pub struct CountArgs {
    /// Probe strings (no captures; use --by).
    #[arg(required = true, value_name = "PROBE")]
    pub probes: Vec<String>,
    /// Options shared with hist and latency.
    #[command(flatten)]
    pub common: AggCommon,
}

/// Options of `ri hist`.
#[derive(Debug, Args)]
pub struct HistArgs {
    /// Probe strings (no captures; use --value and --by).
    #[arg(required = true, value_name = "PROBE")]
    pub probes: Vec<String>,
    /// The value whose log2 histogram to build.
    #[arg(long, value_name = "EXPR")]
    pub value: String,
    /// Options shared with count and latency.
    #[command(flatten)]
    pub common: AggCommon,
}

/// Options of `ri latency`.
#[derive(Debug, Args)]
pub struct LatencyArgs {
    /// An entry probe `u:TARGET:FUNC [if EXPR]`; its return is paired per thread.
    #[arg(value_name = "PROBE")]
    pub probe: String,
    /// Options shared with count and hist.
    #[command(flatten)]
    pub common: AggCommon,
}

fn seconds(flag: &str, v: Option<f64>) -> Result<Option<Duration>, String> {
    match v {
        Some(d) if !(d > 0.0 && d.is_finite()) => Err(format!(
            "{flag} must be a positive number of seconds, not {d}"
        )),
        d => Ok(d.map(Duration::from_secs_f64)),
    }
}

impl AggCommon {
    /// The library options for `kind` over `probes`.
    pub fn options(&self, kind: AggKind, probes: Vec<String>) -> Result<AggOptions, String> {
        if self.max_keys == 0 {
            return Err("--max-keys must be at least 1".into());
        }
        Ok(AggOptions {
            kind,
            by: self.by.clone(),
            interval: seconds("--interval", self.interval)?,
            max_keys: self.max_keys,
            trace: TraceOptions {
                probes,
                pids: self.pids.clone(),
                command: self.command.clone(),
                duration: seconds("--duration", self.duration)?,
                json: self.json,
                // No events flow: the smallest ring will do.
                ring_bytes: 4096,
                bare: false,
                quiet: self.quiet,
            },
        })
    }
}

/// Options of `ri inflight`.
#[derive(Debug, Args)]
pub struct InflightArgs {
    /// Where an operation begins: `PROBE(key=EXPR, FIELD=EXPR...)`.
    #[arg(long, value_name = "PROBE")]
    pub begin: String,
    /// Where it ends: `PROBE(key=EXPR)`.
    #[arg(long, value_name = "PROBE")]
    pub end: String,
    /// Options shared with count, hist and latency (--by does not apply).
    #[command(flatten)]
    pub common: AggCommon,
}
