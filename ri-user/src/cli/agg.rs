//! Flags of the aggregating commands `ri count`, `ri hist`, `ri latency`,
//! `ri inflight` and `ri leaks`.

use clap::Args;

use super::seconds;

use crate::{
    agg::{AggKind, AggOptions},
    trace::TraceOptions,
};

/// Options every aggregating command takes.
#[derive(Debug, Args)]
pub struct AggCommon {
    /// Group by this expression too (repeatable): an integer, pid, tid,
    /// comm, str(ADDR[, LEN]); `NAME=EXPR` shows it as NAME.
    #[arg(long = "by", value_name = "[NAME=]EXPR")]
    pub by: Vec<String>,
    /// Name KEY's values (a --by NAME, or a --begin capture) by the C
    /// string at EXPR (e.g. a type's name field), evaluated with the key and
    /// read from the -p/-c process once per distinct address:
    /// `opcode=41 (read)`, JSON `"opcode_name"` (repeatable).
    #[arg(long = "label", value_name = "KEY=EXPR")]
    pub label: Vec<String>,
    /// Also print what each SECONDS added, while running.
    #[arg(short, long, value_name = "SECONDS")]
    pub interval: Option<f64>,
    /// Which processes, and for how long.
    #[command(flatten)]
    pub scope: super::ScopeArgs,
    /// JSON: one object per print.
    #[arg(long)]
    pub json: bool,
    /// Keys the kernel map holds (a histogram takes one per key and
    /// bucket hit); updates past it are counted as dropped.
    #[arg(long, default_value_t = ri_common::AGG_ENTRIES, value_name = "N")]
    pub max_keys: u32,
    /// Group by the user stack too (same as --by stack; inflight keeps the
    /// begin probe's stack).
    #[arg(long)]
    pub stack: bool,
    /// Print folded stacks (`process;outer;...;inner COUNT`), the input
    /// of flame graph tools, instead of the table.
    #[arg(long)]
    pub folded: bool,
    /// Also write an SVG flame graph of the stacks to FILE.
    #[arg(long, value_name = "FILE")]
    pub flamegraph: Option<String>,
}

/// Options of `ri count`.
#[derive(Debug, Args)]
pub struct CountArgs {
    /// Probe strings (no captures; use --by).
    #[arg(required = true, value_name = "PROBE")]
    pub probes: Vec<String>,
    /// Print only the N hottest (with a wildcard: `ri count --top 20
    /// 'u:libmotr.so:m0_*'` shows what is hot).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub top: Option<u64>,
    /// Options shared with hist and latency.
    #[command(flatten)]
    pub common: AggCommon,
}

impl CountArgs {
    /// The library options these flags stand for.
    pub fn options(self) -> Result<AggOptions, String> {
        let mut o = self.common.options(AggKind::Count, self.probes)?;
        o.top = self.top.map(|n| n as usize);
        Ok(o)
    }
}

/// Options of `ri hist`.
#[derive(Debug, Args)]
pub struct HistArgs {
    /// Probe strings (no captures; use --value and --by).
    #[arg(required = true, value_name = "PROBE")]
    pub probes: Vec<String>,
    /// The value whose histogram to build.
    #[arg(long, value_name = "EXPR")]
    pub value: String,
    /// Options shared with count and latency.
    #[command(flatten)]
    pub common: AggCommon,
}

/// Options of `ri latency`: a function's entry to its return per thread
/// (PROBE), or a begin to the end with the same key across threads
/// (--begin/--end).
#[derive(Debug, Args)]
pub struct LatencyArgs {
    /// An entry probe `u:TARGET:FUNC [if EXPR]`; its return is paired per thread.
    #[arg(value_name = "PROBE")]
    pub probe: Option<String>,
    /// Where a span begins: `PROBE(key=EXPR, FIELD=EXPR...)`; the FIELDs
    /// (and --by, evaluated here) group the histograms.
    #[arg(long, value_name = "PROBE")]
    pub begin: Option<String>,
    /// Where the span with the same key ends: `PROBE(key=EXPR)`.
    #[arg(long, value_name = "PROBE")]
    pub end: Option<String>,
    /// Options shared with count and hist.
    #[command(flatten)]
    pub common: AggCommon,
}

impl LatencyArgs {
    /// The library options: per-thread entry/return, or keyed spans.
    pub fn options(self) -> Result<AggOptions, String> {
        match (self.probe, self.begin, self.end) {
            (Some(p), None, None) => self.common.options(AggKind::Latency, vec![p]),
            (None, Some(b), Some(e)) => self.common.options(AggKind::Span(e), vec![b]),
            (Some(_), _, _) => {
                Err("ri latency takes a PROBE or --begin and --end, not both".into())
            }
            (None, Some(_), None) => Err("ri latency --begin needs --end".into()),
            (None, None, Some(_)) => Err("ri latency --end needs --begin".into()),
            (None, None, None) => Err("ri latency needs a PROBE, or --begin and --end".into()),
        }
    }
}

impl AggCommon {
    /// The library options for `kind` over `probes`.
    pub fn options(&self, kind: AggKind, probes: Vec<String>) -> Result<AggOptions, String> {
        if self.max_keys == 0 {
            return Err("--max-keys must be at least 1".into());
        }
        let mut by = self.by.clone();
        let inflight = matches!(kind, AggKind::Inflight(..) | AggKind::Leaks(_));
        if self.stack && !inflight {
            by.push("stack".into());
        }
        let labels = (self.label.iter())
            .map(|l| crate::agg::LabelSpec::parse(l).map_err(|e| e.to_string()))
            .collect::<Result<_, _>>()?;
        Ok(AggOptions {
            kind,
            by,
            labels,
            stack: self.stack,
            folded: self.folded,
            flamegraph: self.flamegraph.clone(),
            interval: seconds("--interval", self.interval)?,
            max_keys: self.max_keys,
            trace: TraceOptions {
                probes,
                pids: self.scope.pids.clone(),
                select: self.scope.select.selection(),
                command: self.scope.command.clone(),
                duration: seconds("--duration", self.scope.duration)?,
                json: self.json,
                // No events flow: the smallest ring will do.
                ring_bytes: 4096,
                stack_entries: self.scope.stack_map,
                bare: false,
                quiet: self.scope.quiet,
                formatters: self.scope.formatters()?,
                printf: Vec::new(),
                text: None,
                within: None,
                max_overhead: self.scope.max_overhead,
            },
            top: None,
            raw: false,
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
    /// Where a field changes while in flight (repeatable):
    /// `PROBE(key=EXPR, FIELD=EXPR)` rewrites the begin's FIELD (an integer),
    /// e.g. a request's phase.
    #[arg(long, value_name = "PROBE")]
    pub update: Vec<String>,
    /// Where an operation begun before attaching shows (repeatable): with
    /// the --begin probe's fields, `PROBE(key=EXPR, FIELD=EXPR...)`, it is
    /// added when first seen here; its age counts from then (shown as >=).
    /// The --begin probe's filter does not apply: give PROBE its own.
    #[arg(long, value_name = "PROBE")]
    pub seen: Vec<String>,
    /// Options shared with count, hist and latency (--by does not apply).
    #[command(flatten)]
    pub common: AggCommon,
}

/// Options of `ri leaks`.
#[derive(Debug, Args)]
pub struct LeaksArgs {
    /// The allocator's entry, `u:TARGET:FUNC [if EXPR]`: its return value
    /// is the block, --size at its entry the bytes.
    #[arg(value_name = "ALLOC_PROBE")]
    pub alloc: String,
    /// The release function's entry, `u:TARGET:FUNC`: --free-ptr is the block.
    #[arg(value_name = "FREE_PROBE")]
    pub free: String,
    /// Another allocator (repeatable), taken as ALLOC_PROBE is: the same
    /// --size, compiled against its own parameters.
    #[arg(long, value_name = "PROBE")]
    pub also_alloc: Vec<String>,
    /// Another release function (repeatable), taken as FREE_PROBE is: the
    /// same --free-ptr, compiled against its own parameters.
    #[arg(long, value_name = "PROBE")]
    pub also_free: Vec<String>,
    /// The allocation's size, evaluated at each allocator's entry.
    #[arg(long, default_value = "arg0", value_name = "EXPR")]
    pub size: String,
    /// The block being released, evaluated at each release function's entry.
    #[arg(long, default_value = "arg0", value_name = "EXPR")]
    pub free_ptr: String,
    /// Show the N stacks with the most bytes outstanding.
    #[arg(long, default_value_t = 10, value_name = "N")]
    pub top: usize,
    /// Options shared with the other aggregations (--by, --label and --stack do not apply).
    #[command(flatten)]
    pub common: AggCommon,
}

impl LeaksArgs {
    /// The library options these flags stand for.
    pub fn options(&self) -> Result<AggOptions, String> {
        if self.top == 0 {
            return Err("--top must be at least 1".into());
        }
        let frees = std::iter::once(&self.free)
            .chain(&self.also_free)
            .cloned()
            .collect();
        let kind = AggKind::Leaks(crate::agg::Leaks {
            frees,
            size: self.size.clone(),
            free_ptr: self.free_ptr.clone(),
            top: self.top,
        });
        let allocs = std::iter::once(&self.alloc)
            .chain(&self.also_alloc)
            .cloned()
            .collect();
        self.common.options(kind, allocs)
    }
}
