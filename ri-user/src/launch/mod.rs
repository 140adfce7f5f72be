//! The session core every attaching command runs on: its targets (`-p`
//! pids, the `-c` command, `--comm`/`--exe` selection), loading the object
//! and attaching a probe set, the event loop ([`run`]) and when the run
//! ends (Ctrl-C, SIGTERM, the duration, the targets' exit). A command is a
//! session with one instrument: `trace` (a sink over the ring buffer) and
//! `agg` (an aggregation printing at intervals) hand theirs to the loop;
//! `serve` launches here but keeps its own loop (see `run.rs`).

mod run;
mod select;
mod stop;

use std::time::{Duration, Instant};

pub(crate) use run::{Instrument, Tick, run};
pub(crate) use stop::{Signals, Stop};

use crate::{
    Error,
    budget::MaxOverhead,
    engine::{Engine, Program},
    select::{Selection, Watcher},
    session::{self, ProbeSet, child::HeldChild},
    target,
    text::counted,
};

/// The part of a command's flags a run needs: which processes, how the
/// object is loaded, and when the run ends. Commands keep these flags in
/// their own options and lend them here.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Options<'a> {
    /// `-p`: only these processes (empty: all, unless `command` or `select`).
    pub pids: &'a [u32],
    /// `--comm`/`--exe`: also every process chosen by name, now and later.
    pub select: &'a Selection,
    /// `-c`: run this command with the probes attached; stop when it exits.
    pub command: Option<&'a str>,
    /// Stop after this long.
    pub duration: Option<Duration>,
    /// Ring buffer size in bytes.
    pub ring_bytes: u32,
    /// Stacks the kernel's stack map holds (`--stack-map`).
    pub stack_entries: u32,
    /// Attach the empty program instead of the interpreter (benchmarks).
    pub bare: bool,
    /// No attach message and no notes.
    pub quiet: bool,
    /// `--max-overhead`: the overhead budget.
    pub max_overhead: MaxOverhead,
}

/// Checks `-c`/`-p` before anything is built.
pub(crate) fn check(opts: &Options) -> Result<(), Error> {
    if opts.command.is_some() && !opts.pids.is_empty() {
        return Err(Error::Usage("-c and -p cannot be combined".into()));
    }
    select::check(opts)?;
    for &pid in opts.pids {
        target::check_pid(pid)?;
    }
    Ok(())
}

/// How events reach user space.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Delivery {
    /// Events per ring record (1: each alone).
    pub batch_events: u32,
    /// Whether events carry the kernel's clock (`ts_ns`).
    pub timestamps: bool,
}

impl Delivery {
    /// Each event alone, with its time.
    pub const ALONE: Delivery = Delivery {
        batch_events: 1,
        timestamps: true,
    };
}

/// Probes in the kernel, and the `-c` command running.
pub(crate) struct Launched {
    /// The loaded object.
    pub engine: Engine,
    /// The `-c` command, released after attaching.
    pub child_pid: Option<u32>,
    /// With `--comm`/`--exe`: the processes chosen by name, kept up to
    /// date, and those selected at the start.
    pub watcher: Option<(Watcher, Vec<u32>)>,
}

/// Forks the `-c` command (held), loads the object with `agg_entries` keys
/// of aggregation map and events sent as `delivery` says,
/// attaches every site, prints the attach line, then lets the command run.
pub(crate) fn start(
    rt: Option<&tokio::runtime::Runtime>,
    opts: &Options,
    set: &ProbeSet,
    agg_entries: u32,
    delivery: Delivery,
) -> Result<Launched, Error> {
    let choice = select::Launching::new(opts)?;
    let mut watcher = None;
    let started = Instant::now();
    let mut child = match opts.command {
        Some(cmd) => Some(match session::early::take() {
            Some(started) => started,
            None => HeldChild::spawn(cmd)?,
        }),
        None => None,
    };
    let pids: Vec<u32> = match &child {
        Some(c) => vec![c.pid],
        None => choice.attach_pids(opts.pids),
    };
    let attached = (|| {
        let stacks = match (set.has_stacks(), opts.stack_entries) {
            (false, _) => 1,
            (true, 0) => ri_common::STACK_ENTRIES,
            (true, n) => n,
        };
        let budget = (!opts.bare)
            .then(|| opts.max_overhead.resolve(set.has_wildcard()))
            .flatten();
        let mut sizes = set.map_sizes(opts.ring_bytes, agg_entries, stacks);
        sizes.batch_events = delivery.batch_events;
        sizes.timestamps = delivery.timestamps;
        sizes.selecting = choice.selecting();
        if budget.is_some() {
            sizes.sites = set.sites.len() as u32;
        }
        let mut engine = Engine::load_sized(&sizes)?;
        if delivery.batch_events > 1 {
            engine.start_batches()?;
        }
        watcher = choice.start(rt, &mut engine, opts)?;
        let n = set.attach(&mut engine, &pids, opts.bare.then_some(Program::Bare))?;
        let note = match budget {
            Some(pct) => {
                let cfg = set.budget_config(pct);
                let nop5 = cfg.kinds.contains(&crate::engine::SiteKind::Nop5);
                let traps = engine.start_budget(cfg)?;
                Some(format!(
                    "ri: overhead budget {pct}% of a CPU (a hit costs ~{:.1} µs of trap{} plus the program's run time; --max-overhead off disables it)",
                    traps.int3 / 1000.0,
                    if nop5 {
                        format!(", ~{:.1} µs at nop5 sites", traps.nop5 / 1000.0)
                    } else {
                        String::new()
                    }
                ))
            }
            None => None,
        };
        Ok::<_, Error>((engine, n, note))
    })();
    let (engine, n, budget_note) = match attached {
        Ok(v) => v,
        Err(e) => {
            if let Some(c) = child.take() {
                c.abort();
            }
            return Err(e);
        }
    };
    if !opts.quiet {
        eprintln!(
            "ri: attached {} at {} ({}: {}) in {} ms",
            counted(set.probes.len() as u64, "probe"),
            counted(set.sites.len() as u64, "site"),
            counted(n as u64, "attachment"),
            engine.attach_note(),
            started.elapsed().as_millis()
        );
        if let Some(note) = budget_note {
            eprintln!("{note}");
        }
    }
    let child_pid = child.as_ref().map(|c| c.pid);
    if let Some(c) = child.as_mut() {
        c.release()?;
    }
    Ok(Launched {
        engine,
        child_pid,
        watcher,
    })
}
