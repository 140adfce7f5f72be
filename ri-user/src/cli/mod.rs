//! The command line: every subcommand and flag is defined and documented
//! here once; `main.rs` only dispatches.

use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::{list::ListOptions, trace::TraceOptions};

/// ri: run-time instruments for live services.
#[derive(Debug, Parser)]
#[command(name = "ri", version, about, propagate_version = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// List functions that can be probed, as ready-to-paste probe strings.
    ///
    /// `ri list TARGET [PATTERN]` lists a binary or library;
    /// `ri list -p PID [PATTERN]` lists a process's executable and libraries;
    /// `ri list -p PID TARGET PATTERN` resolves TARGET in that process.
    List {
        /// Process whose executable and mapped libraries to list.
        #[arg(short, long)]
        pid: Option<u32>,
        /// TARGET (a path or library name) and/or a glob PATTERN.
        #[arg(num_args = 0..=2, value_name = "TARGET|PATTERN")]
        args: Vec<String>,
    },
    /// Attach probes and print what they capture.
    ///
    /// PROBE is `uprobe:TARGET:FUNC[+OFF][(name=EXPR, ...)] [if EXPR]`
    /// (short `u:`; `uretprobe:`/`ur:` for returns). EXPR may use arg0..argN,
    /// retval, registers, pid, tid, uid, nsecs, cpu, comm, integer arithmetic,
    /// casts like (u32*), dereference, str(ADDR[, LEN]) and buf(ADDR, LEN).
    Trace(TraceArgs),
}

/// Options of `ri trace`.
#[derive(Debug, Args)]
pub struct TraceArgs {
    /// Probe strings.
    #[arg(required = true, value_name = "PROBE")]
    pub probes: Vec<String>,
    /// Trace only this process (repeatable).
    #[arg(short, long = "pid", value_name = "PID")]
    pub pids: Vec<u32>,
    /// Start this command with the probes attached; stop when it exits.
    #[arg(short = 'c', long = "command", value_name = "CMD")]
    pub command: Option<String>,
    /// Stop after this many seconds.
    #[arg(short, long, value_name = "SECONDS")]
    pub duration: Option<f64>,
    /// One JSON object per event.
    #[arg(long)]
    pub json: bool,
    /// Ring buffer size in MiB (a power of two).
    #[arg(long, default_value_t = ri_common::DEFAULT_RING_BYTES >> 20, value_name = "MIB")]
    pub buffer_size: u32,
    /// Print no attach message and no summary.
    #[arg(short, long)]
    pub quiet: bool,
    /// Attach an empty program instead of the plan (benchmark baseline).
    #[arg(long, hide = true)]
    pub bare: bool,
}

impl TraceArgs {
    /// The library options these flags stand for.
    pub fn options(&self) -> Result<TraceOptions, String> {
        if !self.buffer_size.is_power_of_two() || self.buffer_size > 1024 {
            return Err(format!(
                "--buffer-size must be a power of two up to 1024 MiB, not {}",
                self.buffer_size
            ));
        }
        let duration = match self.duration {
            Some(d) if !(d > 0.0 && d.is_finite()) => {
                return Err(format!(
                    "--duration must be a positive number of seconds, not {d}"
                ));
            }
            d => d.map(Duration::from_secs_f64),
        };
        Ok(TraceOptions {
            probes: self.probes.clone(),
            pids: self.pids.clone(),
            command: self.command.clone(),
            duration,
            json: self.json,
            ring_bytes: self.buffer_size << 20,
            bare: self.bare,
            quiet: self.quiet,
        })
    }
}

/// Interprets `ri list`'s positional arguments.
pub fn list_options(pid: Option<u32>, args: &[String]) -> ListOptions {
    let (target, pattern) = match (pid, args) {
        (_, []) => (None, None),
        (Some(_), [p]) => (None, Some(p.clone())),
        (None, [t]) => (Some(t.clone()), None),
        (_, [t, p, ..]) => (Some(t.clone()), Some(p.clone())),
    };
    ListOptions {
        target,
        pid,
        pattern,
    }
}
