//! `ri leaks`: outstanding allocations grouped by the stack that made them,
//! like BCC's memleak, for any allocators and release functions.
//!
//! Per allocator two plans: at its entry `KEEP` stores the size for the
//! thread (in a slot of that allocator's own, so that an allocator calling
//! another cannot mix their sizes); at its return `TAKE` gets it back and
//! `BEGIN` stores the block (the return value, as the in-flight key), its
//! stack and its size in the kernel's `INFLIGHT` map. Per release function
//! one plan: its entry ends the block's entry. ri groups what is left by
//! stack.

use std::{collections::HashMap, io::Write, rc::Rc};

use ri_common::{op, plan_flags};
use serde_json::{Value as Json, json};

use super::{
    AggError, AggPlan, Leaks, entry_head, hidden, inflight::Flight, insn, render::duration_text,
    rewrite, with_captures,
};
use crate::{
    Error,
    session::ProbeSet,
    stack::{Resolved, StackError},
    text::counted,
};

/// `KEEP`/`TAKE` slot of the first allocator's size; allocator `i` uses
/// `SIZE_SLOT + i` (`ri latency` uses slot 0).
const SIZE_SLOT: u64 = 1;

/// Builds the plans of allocators `allocs` (entries) and of the release
/// functions `l.frees`, in this order: every allocator's entry, every
/// allocator's return, every release function's entry (see [`hit_plans`]).
pub(super) fn build(
    allocs: &[String],
    l: &Leaks,
    pids: &crate::target::Scope,
) -> Result<(ProbeSet, Vec<AggPlan>), Error> {
    let mut entries = Vec::new();
    let mut returns = Vec::new();
    for alloc in allocs {
        let head = entry_head(alloc, AggError::Leaks)?;
        entries.push(with_captures(alloc, &[format!("size={}", l.size)])?);
        // The size placeholder goes last: its `IMM 0, EMIT` become `TAKE, EMIT`.
        returns.push(format!(
            "ur:{head}(block=(u64)retval, stack=stack, size=0) if (u64)retval != 0"
        ));
    }
    let mut frees = Vec::new();
    for free in &l.frees {
        entry_head(free, AggError::Leaks)?;
        frees.push(with_captures(free, &[format!("key={}", l.free_ptr)])?);
    }
    let n = allocs.len();
    let texts: Vec<String> = entries.into_iter().chain(returns).chain(frees).collect();
    let mut set = ProbeSet::build(&texts, pids)?;
    let numeric = |set: &ProbeSet, id: usize, flag, text: &str| -> Result<(), Error> {
        match set.probes[id].plan.fields.first() {
            Some(f) if f.kind.is_integer() => Ok(()),
            _ => Err(AggError::NotANumber(flag, text.to_string()).into()),
        }
    };
    for id in 0..n {
        numeric(&set, id, "--size", &l.size)?;
    }
    for id in 2 * n..texts.len() {
        numeric(&set, id, "--free-ptr", &l.free_ptr)?;
    }
    let mut plans = Vec::new();
    for id in 0..n {
        // The size's EMIT becomes KEEP.
        let keep = [insn(op::KEEP, SIZE_SLOT + id as u64)];
        plans.push(hidden(rewrite(&mut set, id, 1, &keep, false)?));
        // Allocation calls are counted for their rates.
        set.probes[id].plan.plan.flags |= plan_flags::HITS;
    }
    for id in 0..n {
        let size = insn(op::TAKE, SIZE_SLOT + id as u64);
        plans.push(rewrite(
            &mut set,
            n + id,
            2,
            &[size, insn(op::EMIT, 0), insn(op::BEGIN, 0)],
            false,
        )?);
    }
    for id in 2 * n..texts.len() {
        plans.push(hidden(rewrite(
            &mut set,
            id,
            0,
            &[insn(op::END_FLIGHT, 0)],
            false,
        )?));
        // Free calls are counted for their rates.
        set.probes[id].plan.plan.flags |= plan_flags::HITS;
    }
    Ok((set, plans))
}

/// Plan ids whose `HITS` count allocation calls and free calls, for
/// `allocs` allocators and `frees` release functions (the order of
/// [`build`]).
pub fn hit_plans(allocs: usize, frees: usize) -> (Vec<u32>, Vec<u32>) {
    let a = allocs as u32;
    ((0..a).collect(), (2 * a..2 * a + frees as u32).collect())
}

/// Allocation and free calls seen since attaching, and over how long.
#[derive(Clone, Copy, Debug, Default)]
pub struct Calls {
    /// Allocator calls.
    pub allocs: u64,
    /// Release calls.
    pub frees: u64,
    /// Seconds since attaching.
    pub seconds: f64,
}

impl Calls {
    fn rate(n: u64, seconds: f64) -> f64 {
        if seconds > 0.0 {
            n as f64 / seconds
        } else {
            0.0
        }
    }
}

/// Outstanding allocations of one stack.
#[derive(Clone, Debug)]
pub struct Group {
    /// The stack value (`tgid << 32 | id`).
    pub stack: u64,
    /// Process.
    pub pid: u32,
    /// Bytes outstanding.
    pub bytes: u64,
    /// Blocks outstanding.
    pub count: u64,
    /// When the oldest was allocated (monotonic ns).
    pub oldest_ns: u64,
}

fn word(payload: &[u8], i: usize) -> u64 {
    payload
        .get(i * 8..i * 8 + 8)
        .map_or(0, |b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
}

/// Groups in-flight blocks (payload: block, stack, size) by stack, most
/// bytes first.
pub fn group(flights: &[Flight]) -> Vec<Group> {
    let mut by: HashMap<u64, Group> = HashMap::new();
    for f in flights {
        let (stack, size) = (word(&f.payload, 1), word(&f.payload, 2));
        let g = by.entry(stack).or_insert(Group {
            stack,
            pid: f.pid,
            bytes: 0,
            count: 0,
            oldest_ns: f.ts_ns,
        });
        g.bytes += size;
        g.count += 1;
        g.oldest_ns = g.oldest_ns.min(f.ts_ns);
    }
    let mut v: Vec<Group> = by.into_values().collect();
    v.sort_by_key(|g| (std::cmp::Reverse((g.bytes, g.count)), g.stack));
    v
}

/// Prints the top groups with their stacks (text or one JSON object).
#[allow(clippy::too_many_arguments)]
pub fn print(
    w: &mut impl Write,
    groups: &[Group],
    stacks: &[Rc<Resolved>],
    top: usize,
    calls: Calls,
    now: u64,
    json_out: bool,
    last: bool,
) -> Result<(), Error> {
    let (alloc_rate, free_rate) = (
        Calls::rate(calls.allocs, calls.seconds),
        Calls::rate(calls.frees, calls.seconds),
    );
    let bytes: u64 = groups.iter().map(|g| g.bytes).sum();
    let count: u64 = groups.iter().map(|g| g.count).sum();
    if json_out {
        let entries: Vec<Json> = groups
            .iter()
            .zip(stacks)
            .take(top)
            .map(|(g, s)| {
                json!({
                    "pid": g.pid,
                    "bytes": g.bytes,
                    "count": g.count,
                    "oldest_ns": now.saturating_sub(g.oldest_ns),
                    "stack": s.json(),
                })
            })
            .collect();
        let doc = json!({
            "type": if last { "final" } else { "interval" },
            "kind": "leaks",
            "bytes": bytes,
            "count": count,
            "stacks": groups.len(),
            "allocs": calls.allocs,
            "frees": calls.frees,
            "seconds": calls.seconds,
            "alloc_rate": alloc_rate,
            "free_rate": free_rate,
            "entries": entries,
        });
        writeln!(w, "{doc}")?;
        w.flush()?;
        return Ok(());
    }
    let totals = Totals {
        allocs: calls.allocs,
        frees: calls.frees,
        seconds: calls.seconds,
        bytes,
        count,
        stacks: groups.len(),
    };
    let rows: Vec<Row> = groups
        .iter()
        .zip(stacks)
        .take(top)
        .map(|(g, s)| Row {
            bytes: g.bytes,
            count: g.count,
            pid: g.pid.into(),
            age_ns: now.saturating_sub(g.oldest_ns),
            stack: s,
        })
        .collect();
    text(w, &totals, &rows, last)?;
    w.flush()?;
    Ok(())
}

/// A print's totals: calls, and what is outstanding.
pub(super) struct Totals {
    /// Allocation calls since attaching.
    pub(super) allocs: u64,
    /// Free calls since attaching.
    pub(super) frees: u64,
    /// Seconds since attaching.
    pub(super) seconds: f64,
    /// Bytes outstanding.
    pub(super) bytes: u64,
    /// Allocations outstanding.
    pub(super) count: u64,
    /// Stacks they come from.
    pub(super) stacks: usize,
}

/// One stack's outstanding allocations.
pub(super) struct Row<'a> {
    /// Bytes.
    pub(super) bytes: u64,
    /// Allocations.
    pub(super) count: u64,
    /// The process.
    pub(super) pid: u64,
    /// Age of the oldest.
    pub(super) age_ns: u64,
    /// The allocation stack.
    pub(super) stack: &'a Resolved,
}

/// The text of a print: the call rates, the totals, and the top `rows`
/// with their stacks (live, or from a stored print).
pub(super) fn text(
    w: &mut impl Write,
    t: &Totals,
    rows: &[Row],
    last: bool,
) -> std::io::Result<()> {
    super::render::interval_mark(w, last)?;
    writeln!(
        w,
        "{} and {} in {:.1} s ({:.0}/s, {:.0}/s)",
        counted(t.allocs, "allocation call"),
        counted(t.frees, "free call"),
        t.seconds,
        Calls::rate(t.allocs, t.seconds),
        Calls::rate(t.frees, t.seconds),
    )?;
    writeln!(
        w,
        "{} bytes in {} allocations outstanding, from {} stacks{}",
        t.bytes,
        t.count,
        t.stacks,
        if t.stacks > rows.len() {
            format!(" (top {} by bytes)", rows.len())
        } else {
            String::new()
        }
    )?;
    for r in rows {
        writeln!(
            w,
            "{} bytes in {} allocation{} from pid {} (oldest {}):",
            r.bytes,
            r.count,
            if r.count == 1 { "" } else { "s" },
            r.pid,
            duration_text(r.age_ns)
        )?;
        r.stack.write_text(w, "    ")?;
    }
    Ok(())
}

/// Folded lines weighted by bytes: `process;outer;...;inner BYTES`.
pub fn folded(
    groups: &[Group],
    stacks: &[Rc<Resolved>],
    root: impl Fn(u32) -> String,
) -> Vec<String> {
    let mut sum: HashMap<String, u64> = HashMap::new();
    for (g, s) in groups.iter().zip(stacks) {
        let path = format!("{};{}", root(g.pid), s.folded());
        *sum.entry(path).or_default() += g.bytes;
    }
    let mut v: Vec<String> = sum.into_iter().map(|(p, n)| format!("{p} {n}")).collect();
    v.sort();
    v
}

/// Fails when `--folded`/`--flamegraph` have nothing to fold.
pub fn need_stacks(has: bool, folded: bool, flame: bool) -> Result<(), StackError> {
    match (has, folded, flame) {
        (false, true, _) => Err(StackError::NoStacks("--folded")),
        (false, _, true) => Err(StackError::NoStacks("--flamegraph")),
        _ => Ok(()),
    }
}
