//! In-kernel aggregations: `ri count`, `ri hist`, `ri latency`,
//! `ri inflight`, `ri leaks`.
//!
//! Each probe compiles, as for `ri trace`, into a plan whose captures are
//! the `--by` keys (and the `--value`); the plan is then turned into an
//! aggregating one: the payload those captures write is the key, and a
//! final `COUNT` or `HIST` updates the kernel's `AGG` map instead of sending
//! an event. `ri latency` `KEEP`s the time at entry and `TAKE`s it at return;
//! `ri latency --begin/--end` stores the begin in `INFLIGHT` (as `ri
//! inflight` does) and its end's `SPAN` bumps the begin's histogram.
//! User space only reads the map, at each interval and at exit.

mod inflight;
mod labels;
mod leaks;
mod live;
mod printer;
mod read;
mod render;
mod stored;

use std::{cell::RefCell, time::Duration};

use ri_common::{AGG_KEY_BYTES, HIST_BUCKETS, Insn, MAX_INSNS, op, plan_flags, regs};

use crate::{
    Error,
    launch::{self, Launched, Stop},
    plan::{Field, FieldKind},
    probe::{add_capture, head_end},
    session::ProbeSet,
    stack::Stacks,
    target,
    trace::TraceOptions,
};

pub use inflight::{Flight, monotonic_ns, read as read_flights};
pub use labels::{LabelSpec, Names, split_name};
pub use leaks::group as leak_groups;
pub use live::Live;
pub use read::{
    Cell, Snapshot, Stats, snapshot as read_snapshot, snapshot_with as read_snapshot_with,
    stats as read_stats,
};
pub use render::{View, key_pairs};
pub(crate) use render::{hist_json, hist_summary};
pub use stored::print_text as stored_print_text;

/// Errors turning probes into aggregations.
#[derive(Debug, thiserror::Error)]
pub enum AggError {
    /// A probe string with its own captures.
    #[error("'{0}': aggregating probes take no captures; group with --by")]
    Captures(String),
    /// Keys larger than the kernel's key area.
    #[error(
        "--by keys need {0} bytes; a key holds at most {AGG_KEY_BYTES} (shorten str(ADDR, LEN))"
    )]
    KeyTooLarge(usize),
    /// A plan with no room for the aggregation instructions.
    #[error("'{0}': probe too complex to aggregate: more than {MAX_INSNS} plan instructions")]
    TooComplex(String),
    /// `--value` (or `--size`, `--free-ptr`) that is not a number.
    #[error("{0} must be a number, not a string or bytes: '{1}'")]
    NotANumber(&'static str, String),
    /// `ri latency` needs one plain function entry.
    #[error("'{0}': ri latency takes one function entry probe (u:TARGET:FUNC), no wildcard")]
    Latency(String),
    /// `ri leaks` needs plain function entries.
    #[error("'{0}': ri leaks takes function entry probes (u:TARGET:FUNC), no wildcard")]
    Leaks(String),
    /// `ri inflight` probes without the integer `key` capture first.
    #[error("'{0}': ri inflight needs an integer key=EXPR as the first capture")]
    InflightKey(String),
    /// An `ri inflight --update` probe that is not `key` plus one integer
    /// field of the begin probe.
    #[error(
        "'{0}': ri inflight --update captures key=EXPR and one integer field the --begin probe captures"
    )]
    InflightUpdate(String),
    /// An `ri inflight --seen` probe whose captures are not the begin
    /// probe's (names, types and order).
    #[error(
        "ri inflight --seen {0}: capture the begin probe's fields, in its order, types and str() lengths ({1})"
    )]
    InflightSeen(String, String),
    /// `ri latency --begin/--end` probes without the integer `key` capture
    /// first, or an end probe with more captures.
    #[error(
        "'{0}': ri latency --begin needs an integer key=EXPR as the first capture, --end only key=EXPR"
    )]
    SpanKey(String),
    /// A `--by NAME=EXPR` or `--label KEY=EXPR` that does not fit.
    #[error("{0}")]
    Label(String),
    /// The kernel's aggregation map could not be read.
    #[error("cannot read the aggregation map: {0}")]
    Read(String),
}

/// `KEEP`/`TAKE` slot of `ri latency`'s entry time (`ri leaks` uses 1).
const TIME_SLOT: u64 = 0;

/// Which aggregation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AggKind {
    /// Hits per probe and key.
    Count,
    /// Log2 histogram of this expression per probe and key.
    Hist(String),
    /// Entry-to-return time per thread, as a histogram.
    Latency,
    /// Time from the begin probe (the probe) to this end probe with the same
    /// `key`, across threads, as a histogram per begin fields.
    Span(String),
    /// Operations begun (the probe) and not yet ended.
    Inflight(Inflight),
    /// Allocations (of the probes, all allocators) not yet freed.
    Leaks(Leaks),
}

/// `ri inflight`: besides the begin probe (the session's probe), where an
/// operation ends, changes and is seen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Inflight {
    /// The end probe, `PROBE(key=EXPR)`.
    pub end: String,
    /// Probes that rewrite one field of the operation while it is in flight.
    pub updates: Vec<String>,
    /// Probes that add an operation begun before attaching when they first
    /// see it, with the begin probe's fields.
    pub seen: Vec<String>,
}

/// `ri leaks`: how to pair allocators (the session's probes) with release
/// functions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Leaks {
    /// The release functions' probes (at least one).
    pub frees: Vec<String>,
    /// The size, at each allocator's entry.
    pub size: String,
    /// The block, at each release function's entry.
    pub free_ptr: String,
    /// Stacks shown.
    pub top: usize,
}

/// What to aggregate and how.
#[derive(Clone, Debug)]
pub struct AggOptions {
    /// Count, hist or latency.
    pub kind: AggKind,
    /// Key expressions, each `EXPR` or `NAME=EXPR`.
    pub by: Vec<String>,
    /// Keys whose values are named by a C string of the process.
    pub labels: Vec<LabelSpec>,
    /// Print each interval's additions while running.
    pub interval: Option<Duration>,
    /// Size of the kernel map in keys.
    pub max_keys: u32,
    /// `--stack`: keep the user stack (a `stack` key, or inflight's
    /// begin stack).
    pub stack: bool,
    /// Print folded stacks instead of the table.
    pub folded: bool,
    /// Write an SVG flame graph here.
    pub flamegraph: Option<String>,
    /// Probes, processes, duration, JSON, quiet (as for `ri trace`).
    pub trace: TraceOptions,
    /// `ri count --top N`: only the N hottest rows.
    pub top: Option<usize>,
    /// JSON for a local ri to merge (this ri runs for it over ssh):
    /// histograms with raw buckets, rows with their site.
    pub raw: bool,
}

/// The probe string with `caps` appended to its own captures, if any.
fn add_captures(text: &str, caps: &[String]) -> String {
    if caps.is_empty() {
        return text.to_string();
    }
    add_capture(text, &caps.join(", "))
}

/// The probe string with `caps` as its captures (`k0=EXPR, ...`).
fn with_captures(text: &str, caps: &[String]) -> Result<String, AggError> {
    let at = head_end(text);
    if text[at..].starts_with('(') {
        return Err(AggError::Captures(text.to_string()));
    }
    Ok(add_captures(text, caps))
}

/// The head of an entry probe without captures (`TARGET:FUNC`), checked to
/// be one plain function entry; `err` names the fault otherwise.
fn entry_head(text: &str, err: impl Fn(String) -> AggError) -> Result<String, Error> {
    let entry = with_captures(text, &[])?;
    let spec = crate::probe::parse_probe(&entry)?;
    if spec.kind != crate::probe::ProbeKind::Uprobe
        || spec.offset != 0
        || spec.func.contains(['*', '?'])
    {
        return Err(err(text.to_string()).into());
    }
    let at = head_end(&entry);
    Ok(entry[entry.find(':').map_or(0, |c| c + 1)..at].to_string())
}

fn key_captures(by: &[String]) -> Vec<String> {
    by.iter()
        .enumerate()
        .map(|(i, e)| format!("k{i}={e}"))
        .collect()
}

/// Payload bytes one instruction writes (none for non-emitting ones).
fn emit_bytes(i: &Insn) -> Option<usize> {
    match i.op {
        op::EMIT => Some(8),
        op::STR | op::BUF => Some(8 + ((i.len as usize + 7) & !7)),
        op::COMM => Some(24),
        _ => None,
    }
}

/// Payload bytes the emitting instructions of `insns` write.
fn payload_bytes(insns: &[Insn]) -> usize {
    insns.iter().filter_map(emit_bytes).sum()
}

/// The payload word of the integer field `name` in the payload of `probe`.
fn field_word(probe: &crate::plan::CompiledPlan, name: &str) -> Option<u64> {
    let n = probe.plan.n_insns as usize;
    let mut sizes = probe.plan.insns[..n].iter().filter_map(emit_bytes);
    let mut at = 0;
    for f in &probe.fields {
        // A stack with its caller's return address is two words.
        let words = if matches!(f.kind, FieldKind::Stack { caller: true }) {
            2
        } else {
            1
        };
        let bytes: usize = (0..words).map(|_| sizes.next()).sum::<Option<usize>>()?;
        if f.name == name {
            return f.kind.is_integer().then_some(at as u64 / 8);
        }
        at += bytes;
    }
    None
}

/// How one probe of the session aggregates.
#[derive(Clone, Debug)]
pub struct AggPlan {
    /// The key fields (labels are the `--by` texts).
    pub keys: Vec<Field>,
    /// Histogram (true) or count.
    pub hist: bool,
    /// The histogram's value is signed: the top bucket holds the negatives.
    pub signed: bool,
    /// Shown in the output (false for latency's entry half).
    pub shown: bool,
    /// Keys named by a hidden key word (`--label`).
    pub labels: Vec<labels::KeyLabel>,
}

/// A plan that works for another (an entry half, an end, an update): not
/// printed itself.
fn hidden(plan: AggPlan) -> AggPlan {
    AggPlan {
        shown: false,
        ..plan
    }
}

/// Checks a begin/end pair (`texts`, plans 0 and 1 of `set`): both capture
/// an integer `key` first, and the end nothing else.
fn keyed_pair(
    set: &ProbeSet,
    texts: [&String; 2],
    err: impl Fn(String) -> AggError,
) -> Result<(), Error> {
    for (id, text) in texts.into_iter().enumerate() {
        let fields = &set.probes[id].plan.fields;
        let keyed = fields
            .first()
            .is_some_and(|f| f.name == "key" && f.kind.is_integer());
        if !keyed || (id == 1 && fields.len() != 1) {
            return Err(err(text.clone()).into());
        }
    }
    Ok(())
}

/// Rewrites plan `id` of `set` so that it aggregates: `tail` replaces the
/// last `drop` instructions.
fn rewrite(
    set: &mut ProbeSet,
    id: usize,
    drop: usize,
    tail: &[Insn],
    hist: bool,
) -> Result<AggPlan, AggError> {
    let probe = &mut set.probes[id];
    let text = probe.spec.text.clone();
    let plan = &mut probe.plan.plan;
    let n = (plan.n_insns as usize).saturating_sub(drop);
    if n + tail.len() > MAX_INSNS {
        return Err(AggError::TooComplex(text));
    }
    let bytes = payload_bytes(&plan.insns[..n]);
    if bytes > AGG_KEY_BYTES {
        return Err(AggError::KeyTooLarge(bytes));
    }
    plan.insns[n..n + tail.len()].copy_from_slice(tail);
    plan.n_insns = (n + tail.len()) as u32;
    plan.flags |= plan_flags::AGGREGATE;
    let mut keys = probe.plan.fields.clone();
    let mut signed = false;
    if hist && let Some(v) = keys.pop() {
        signed = matches!(v.kind, FieldKind::Int { signed: true, .. });
    }
    Ok(AggPlan {
        keys,
        hist,
        signed,
        shown: true,
        labels: Vec::new(),
    })
}

fn insn(code: u8, imm: u64) -> Insn {
    Insn {
        op: code,
        imm,
        ..Default::default()
    }
}

/// Most `FAST` slots a session may use for histograms (per CPU, 32 bytes
/// each: 512 KiB per CPU, 16 sites of 976 buckets); past it, histograms go
/// through the general `AGG` map, so a many-CPU server is not charged
/// megabytes per CPU.
const FAST_HIST_SLOTS: u32 = 1 << 14;

/// Flags the plans that need no interpreter: a bare `COUNT`, or `REG, HIST`
/// of an argument register or `rax` (no key, no filter); the kernel then
/// bumps a per-CPU array slot by site instead of hashing a key. Other
/// counts and histograms whose key is one word use the small-key map.
fn fast_paths(set: &mut ProbeSet) {
    let hist_ok = (set.sites.len() as u64) * u64::from(HIST_BUCKETS) <= u64::from(FAST_HIST_SLOTS);
    for probe in &mut set.probes {
        let plan = &mut probe.plan.plan;
        let insns = &plan.insns[..plan.n_insns as usize];
        plan.flags |= match insns {
            [c] if c.op == op::COUNT => plan_flags::COUNT_FAST,
            [r, h]
                if hist_ok
                    && r.op == op::REG
                    && (r.len == regs::RAX || regs::ARGS.contains(&r.len))
                    && h.op == op::HIST =>
            {
                plan_flags::HIST_FAST
            }
            [.., last] if matches!(last.op, op::COUNT | op::HIST) && payload_bytes(insns) <= 8 => {
                plan_flags::SMALL_KEY
            }
            _ => 0,
        };
    }
}

/// Builds the probes of an aggregation and the per-plan descriptions.
pub fn build(opts: &AggOptions) -> Result<(ProbeSet, Vec<AggPlan>), Error> {
    let (mut set, mut plans) = build_plans(opts)?;
    labels::locate(&set, &mut plans, &opts.labels, &opts.kind)?;
    if !matches!(
        opts.kind,
        AggKind::Span(_) | AggKind::Inflight(..) | AggKind::Leaks(_)
    ) {
        fast_paths(&mut set);
    }
    Ok((set, plans))
}

/// The probes and plans of [`build`], before labels are placed.
fn build_plans(opts: &AggOptions) -> Result<(ProbeSet, Vec<AggPlan>), Error> {
    let (by_names, by_exprs) = labels::by_keys(&opts.by)?;
    let mut keys = key_captures(&by_exprs);
    let label_caps: Vec<String> = (opts.labels.iter().enumerate())
        .map(|(i, l)| l.capture(i))
        .collect();
    keys.extend(label_caps.iter().cloned());
    let pids = &target::Scope::new(
        &opts.trace.launching().resolving_pids(),
        opts.trace.command.as_deref(),
    );
    let mut plans = Vec::new();
    let set = match &opts.kind {
        AggKind::Count => {
            let texts = opts
                .trace
                .probes
                .iter()
                .map(|t| with_captures(t, &keys))
                .collect::<Result<Vec<_>, _>>()?;
            let mut set = ProbeSet::build(&texts, pids)?;
            for id in 0..set.probes.len() {
                plans.push(rewrite(&mut set, id, 0, &[insn(op::COUNT, 0)], false)?);
            }
            set
        }
        AggKind::Hist(value) => {
            let mut caps = keys.clone();
            caps.push(format!("v={value}"));
            let texts = opts
                .trace
                .probes
                .iter()
                .map(|t| with_captures(t, &caps))
                .collect::<Result<Vec<_>, _>>()?;
            let mut set = ProbeSet::build(&texts, pids)?;
            for id in 0..set.probes.len() {
                let numeric = set.probes[id]
                    .plan
                    .fields
                    .last()
                    .is_some_and(|f| f.kind.is_integer());
                let last = set.probes[id].plan.plan.n_insns as usize;
                if !numeric || last == 0 || set.probes[id].plan.plan.insns[last - 1].op != op::EMIT
                {
                    return Err(AggError::NotANumber("--value", value.clone()).into());
                }
                // The value's EMIT becomes HIST: it pops the value instead.
                plans.push(rewrite(&mut set, id, 1, &[insn(op::HIST, 0)], true)?);
            }
            set
        }
        AggKind::Latency => {
            let text = &opts.trace.probes[0];
            let entry = with_captures(text, &[])?;
            let head = entry_head(text, AggError::Latency)?;
            let mut caps = keys.clone();
            caps.push("v=nsecs".into());
            let ret = format!("ur:{head}({})", caps.join(", "));
            let mut set = ProbeSet::build(&[entry.clone(), ret], pids)?;
            // Entry: keep the time; return: `NSECS, EMIT` of the value
            // become now minus that time, into the histogram.
            let keep = [insn(op::NSECS, 0), insn(op::KEEP, TIME_SLOT)];
            plans.push(hidden(rewrite(&mut set, 0, 0, &keep, false)?));
            let elapsed = [
                insn(op::NSECS, 0),
                insn(op::TAKE, TIME_SLOT),
                insn(op::SUB, 0),
                insn(op::HIST, 0),
            ];
            plans.push(rewrite(&mut set, 1, 2, &elapsed, true)?);
            set
        }
        AggKind::Span(end) => {
            let begin = add_captures(&opts.trace.probes[0], &keys);
            let texts = [begin, end.clone()];
            let mut set = ProbeSet::build(&texts, pids)?;
            keyed_pair(&set, [&opts.trace.probes[0], end], AggError::SpanKey)?;
            let mut b = rewrite(&mut set, 0, 0, &[insn(op::BEGIN, 0)], false)?;
            // The key word is not part of the aggregation key.
            b.keys.remove(0);
            b.hist = true;
            let n = b.keys.len() - label_caps.len();
            for (k, label) in b.keys[n - by_names.len()..n].iter_mut().zip(&by_names) {
                k.name = label.clone();
            }
            plans.push(b);
            plans.push(hidden(rewrite(
                &mut set,
                1,
                0,
                &[insn(op::SPAN, 0)],
                false,
            )?));
            return Ok((set, plans));
        }
        AggKind::Inflight(Inflight { end, updates, seen }) => {
            if !opts.by.is_empty() {
                return Err(crate::Error::Usage(
                    "ri inflight takes no --by: capture fields in the --begin probe".into(),
                ));
            }
            let with_stack = |p: &String| {
                if opts.stack {
                    add_capture(p, "stack=stack")
                } else {
                    p.clone()
                }
            };
            let labelled = |p: &String| with_stack(&add_captures(p, &label_caps));
            let begin = labelled(&opts.trace.probes[0]);
            let texts: Vec<String> = [begin, end.clone()]
                .into_iter()
                .chain(updates.iter().cloned())
                .chain(seen.iter().map(labelled))
                .collect();
            let first_seen = 2 + updates.len();
            let mut set = ProbeSet::build(&texts, pids)?;
            keyed_pair(&set, [&texts[0], &texts[1]], AggError::InflightKey)?;
            plans.push(rewrite(&mut set, 0, 0, &[insn(op::BEGIN, 0)], false)?);
            plans.push(hidden(rewrite(
                &mut set,
                1,
                0,
                &[insn(op::END_FLIGHT, 0)],
                false,
            )?));
            for (id, text) in texts.iter().enumerate().take(first_seen).skip(2) {
                let word = match set.probes[id].plan.fields.as_slice() {
                    [k, v] if k.name == "key" && k.kind.is_integer() && v.kind.is_integer() => {
                        field_word(&set.probes[0].plan, &v.name)
                    }
                    _ => None,
                }
                .ok_or_else(|| AggError::InflightUpdate(text.clone()))?;
                plans.push(hidden(rewrite(
                    &mut set,
                    id,
                    0,
                    &[insn(op::UPDATE, word)],
                    false,
                )?));
            }
            for (id, text) in texts.iter().enumerate().skip(first_seen) {
                // Entries are printed with the begin's fields: the same
                // names, kinds and order.
                let layout = |id: usize| -> Vec<usize> {
                    let p = &set.probes[id].plan.plan;
                    p.insns[..p.n_insns as usize]
                        .iter()
                        .filter_map(emit_bytes)
                        .collect()
                };
                if set.probes[id].plan.fields != set.probes[0].plan.fields
                    || layout(id) != layout(0)
                {
                    let names: Vec<&str> = set.probes[0]
                        .plan
                        .fields
                        .iter()
                        .map(|f| f.name.as_str())
                        .collect();
                    return Err(AggError::InflightSeen(text.clone(), names.join(", ")).into());
                }
                plans.push(hidden(rewrite(
                    &mut set,
                    id,
                    0,
                    &[insn(op::BEGIN, 1)],
                    false,
                )?));
            }
            return Ok((set, plans));
        }
        AggKind::Leaks(l) => {
            for (flag, given) in [
                ("--by", !opts.by.is_empty()),
                ("--label", !opts.labels.is_empty()),
            ] {
                if given {
                    return Err(crate::Error::Usage(format!(
                        "ri leaks takes no {flag}: allocations are grouped by stack"
                    )));
                }
            }
            let (set, plans) = leaks::build(&opts.trace.probes, l, pids)?;
            return Ok((set, plans));
        }
    };
    for p in &mut plans {
        for (k, label) in p.keys.iter_mut().zip(&by_names) {
            k.name = label.clone();
        }
    }
    Ok((set, plans))
}

/// Runs an aggregation to completion and prints the result.
pub fn run(opts: &AggOptions) -> Result<(), Error> {
    launch::check(&opts.trace.launching())?;
    let (set, plans) = build(opts)?;
    let has_stacks = set.has_stacks();
    let folds = opts.folded || opts.flamegraph.is_some();
    if folds && matches!(opts.kind, AggKind::Inflight(..)) {
        return Err(Error::Usage(
            "--folded and --flamegraph apply to count, hist, latency and leaks, not inflight"
                .into(),
        ));
    }
    leaks::need_stacks(has_stacks, opts.folded, opts.flamegraph.is_some())?;
    if let Some(path) = &opts.flamegraph {
        // Find out now, not after the run, that the file cannot be written.
        std::fs::File::create(path).map_err(|e| crate::stack::StackError::Flamegraph {
            path: path.clone(),
            reason: e.to_string(),
        })?;
    }
    // Ctrl-C is ours from the attach line on.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let signals = launch::Signals::new(&rt)?;
    let Launched {
        engine,
        child_pid,
        watcher,
    } = launch::start(
        Some(&rt),
        &opts.trace.launching(),
        &set,
        opts.max_keys,
        launch::Delivery::ALONE,
    )?;
    let (watcher, selected) = watcher.unzip();
    let selected = selected.unwrap_or_default();
    let stacks = RefCell::new(Stacks::new());
    let names = RefCell::new(labels::Names::new(
        opts.trace
            .pids
            .iter()
            .chain(&child_pid)
            .chain(&selected)
            .copied()
            .collect(),
    ));
    let has_labels = plans.iter().any(|p| !p.labels.is_empty());
    if has_labels
        && opts.trace.pids.is_empty()
        && child_pid.is_none()
        && watcher.is_none()
        && !opts.trace.quiet
    {
        eprintln!("ri: --label reads names from -p or -c processes: values show as numbers");
    }
    if has_stacks {
        for &pid in opts.trace.pids.iter().chain(&child_pid).chain(&selected) {
            stacks.borrow_mut().watch(pid);
        }
    }
    let stop = {
        let _in = rt.enter();
        Stop::new(signals, &opts.trace.launching(), child_pid)?
    };
    let mut shown = printer::Shown {
        printer: printer::Printer {
            view: render::View {
                set: &set,
                plans: &plans,
                opts,
                engine: &engine,
                stacks: &stacks,
                names: &names,
            },
            opts,
            attached: std::time::Instant::now(),
        },
        out: std::io::stdout().lock(),
        prev: Snapshot::default(),
        has_stacks,
        has_labels,
    };
    launch::run(&rt, stop, watcher, &mut [&mut shown])?;
    if !opts.trace.quiet {
        let stats = read::stats(&engine)?;
        let mut err = std::io::stderr();
        match opts.kind {
            AggKind::Inflight(..) | AggKind::Leaks(_) => {
                render::dropped(&mut err, &stats, opts.max_keys)?
            }
            _ => {
                let total = names
                    .borrow_mut()
                    .fold(read::snapshot(&engine, &set)?, &plans);
                render::summary(&mut err, &total, &stats, opts.max_keys)?;
            }
        }
        if has_stacks {
            crate::stack::write_errors(
                &mut err,
                crate::stack::errors(&engine)?,
                opts.trace.stack_entries,
            )?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captures_go_after_the_function() {
        let k = key_captures(&["arg0 % 4".into(), "comm".into()]);
        assert_eq!(
            with_captures("u:./calls:work_int3 if arg0 > 2", &k).unwrap(),
            "u:./calls:work_int3(k0=arg0 % 4, k1=comm) if arg0 > 2"
        );
        assert_eq!(
            with_captures("u:/a:b+0x4", &k[..1]).unwrap(),
            "u:/a:b+0x4(k0=arg0 % 4)"
        );
        assert!(with_captures("u:/a:b(x=arg0)", &k).is_err());
        assert_eq!(with_captures("u:/a:b", &[]).unwrap(), "u:/a:b");
    }

    #[test]
    fn by_keys_join_the_begin_captures() {
        let by = ["arg0 % 3".to_string()];
        assert_eq!(
            add_captures("u:/a:f(key=arg0, n=str(arg1, 8)) if arg2 > 1", &by),
            "u:/a:f(key=arg0, n=str(arg1, 8), arg0 % 3) if arg2 > 1"
        );
        assert_eq!(add_captures("u:/a:f(key=arg0)", &[]), "u:/a:f(key=arg0)");
    }

    #[test]
    fn key_bytes() {
        let i = |code, len| Insn {
            op: code,
            len,
            ..Default::default()
        };
        assert_eq!(
            payload_bytes(&[i(op::EMIT, 0), i(op::COMM, 0), i(op::STR, 61)]),
            8 + 24 + 72
        );
    }
}
