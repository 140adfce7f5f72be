//! Printing aggregations: counts per key, bpftrace-style log2 histograms,
//! percentiles estimated from buckets, JSON.

use std::{cell::RefCell, collections::BTreeMap, io::Write, rc::Rc};

use ri_common::{EventHeader, HEADER_LEN};
use serde_json::{Map, Value as Json, json};

use super::{
    AggKind, AggOptions, AggPlan,
    read::{Cell, CellKey, Snapshot, Stats},
};
use crate::{
    decode::Value,
    engine::Engine,
    session::ProbeSet,
    stack::{Resolved, Stacks},
    text::counted,
};

/// What a print needs besides the numbers.
pub struct View<'a> {
    /// The session's probes and sites.
    pub set: &'a ProbeSet,
    /// How each plan aggregates.
    pub plans: &'a [AggPlan],
    /// The command's options.
    pub opts: &'a AggOptions,
    /// The loaded object (its stack map).
    pub engine: &'a Engine,
    /// Symbolized stacks, cached.
    pub stacks: &'a RefCell<Stacks>,
}

/// One key value: label, text, JSON, and its frames when it is a stack.
pub(super) struct KeyPart {
    pub(super) label: String,
    pub(super) text: String,
    pub(super) json: Json,
    pub(super) stack: Option<Rc<Resolved>>,
    /// The stack value (`tgid << 32 | id`) when it is a stack.
    pub(super) raw: u64,
}

/// A payload decoded with `fields`, each value as a [`KeyPart`] (stacks
/// symbolized).
pub(super) fn key_parts(bytes: &[u8], fields: &[crate::plan::Field], view: &View) -> Vec<KeyPart> {
    let (engine, stacks) = (view.engine, view.stacks);
    let fmt = crate::sink::value_options(view.opts.trace.formatters.clone());
    if fields.is_empty() {
        return Vec::new();
    }
    // Decode the key as the payload of an event of its plan.
    let hdr = EventHeader {
        payload_len: bytes.len() as u32,
        ..Default::default()
    };
    let mut rec = Vec::with_capacity(HEADER_LEN + bytes.len());
    // SAFETY: EventHeader is plain integers, without padding.
    rec.extend_from_slice(unsafe {
        std::slice::from_raw_parts(&hdr as *const EventHeader as *const u8, HEADER_LEN)
    });
    rec.extend_from_slice(bytes);
    match crate::decode::decode(&rec, fields) {
        Ok(ev) => fields
            .iter()
            .zip(&ev.values)
            .map(|(f, v)| {
                let (stack, raw) = match v {
                    Value::Stack(s, c) => (stacks.borrow_mut().resolve(engine, *s, *c).ok(), *s),
                    _ => (None, 0),
                };
                KeyPart {
                    label: f.name.clone(),
                    text: value_text(v, &fmt),
                    json: stack
                        .as_ref()
                        .map_or_else(|| value_json(v, &fmt), |r| r.json()),
                    stack,
                    raw,
                }
            })
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// `text` with the parts that are not stacks as `label=value`, and the
/// frames of the stacks below it.
pub(super) fn key_line(
    w: &mut impl Write,
    head: &str,
    parts: &[KeyPart],
    tail: &str,
) -> std::io::Result<()> {
    let plain: Vec<String> = parts
        .iter()
        .filter(|p| p.stack.is_none())
        .map(|p| format!("{}={}", p.label, p.text))
        .collect();
    if plain.is_empty() {
        writeln!(w, "{head}{tail}")?;
    } else {
        writeln!(w, "{head}[{}]{tail}", plain.join(", "))?;
    }
    for s in parts.iter().filter_map(|p| p.stack.as_ref()) {
        s.write_text(w, "    ")?;
    }
    Ok(())
}

/// Parts as a JSON object by label.
pub(super) fn key_json(parts: &[KeyPart]) -> Map<String, Json> {
    parts
        .iter()
        .map(|p| (p.label.clone(), p.json.clone()))
        .collect()
}

/// Range `[lo, hi)` of a log2 bucket (bucket 0 holds only 0).
pub fn bucket_range(b: usize) -> (u64, u64) {
    match b {
        0 => (0, 1),
        64.. => (1 << 63, u64::MAX),
        b => (1 << (b - 1), 1 << b),
    }
}

/// A power of two with bpftrace's K/M/G suffixes (powers of 1024).
fn pow2_label(v: u64) -> String {
    const UNITS: [&str; 7] = ["", "K", "M", "G", "T", "P", "E"];
    let mut v = v;
    let mut u = 0;
    while v >= 1024 && v.is_multiple_of(1024) && u < UNITS.len() - 1 {
        v /= 1024;
        u += 1;
    }
    format!("{v}{}", UNITS[u])
}

fn range_label(b: usize, signed: bool) -> String {
    match b {
        0 => "[0]".into(),
        1 => "[1]".into(),
        64.. if signed => "(..., 0)".into(),
        64.. => format!("[{}, ...)", pow2_label(1 << 63)),
        b => format!("[{}, {})", pow2_label(1 << (b - 1)), pow2_label(1 << b)),
    }
}

/// Estimated `q` quantile (0..=1) of a histogram: linear within the bucket
/// that holds it.
pub fn quantile(buckets: &[u64], q: f64) -> u64 {
    let total: u64 = buckets.iter().sum();
    if total == 0 {
        return 0;
    }
    let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
    let mut before = 0;
    for (b, &c) in buckets.iter().enumerate() {
        if c > 0 && before + c >= rank {
            let (lo, hi) = bucket_range(b);
            let frac = (rank - before) as f64 / c as f64;
            return lo + ((hi - lo) as f64 * frac) as u64;
        }
        before += c;
    }
    0
}

/// Upper bound of the highest non-empty bucket.
pub fn max_bound(buckets: &[u64]) -> u64 {
    buckets
        .iter()
        .rposition(|&c| c > 0)
        .map_or(0, |b| bucket_range(b).1)
}

pub(super) fn duration_text(ns: u64) -> String {
    match ns {
        0..1_000 => format!("{ns} ns"),
        1_000..1_000_000 => format!("{:.1} us", ns as f64 / 1e3),
        1_000_000..1_000_000_000 => format!("{:.1} ms", ns as f64 / 1e6),
        _ => format!("{:.2} s", ns as f64 / 1e9),
    }
}

/// A key value as text; whole values through their formatters.
pub(super) fn value_text(v: &Value<'_>, fmt: &crate::dwarf::value::Options) -> String {
    match v {
        Value::U64(n) => n.to_string(),
        Value::I64(n) => n.to_string(),
        Value::Hex(n) => format!("{n:#x}"),
        Value::Str(b) => String::from_utf8_lossy(b).into_owned(),
        Value::Bytes(b) => b.iter().map(|x| format!("{x:02x}")).collect(),
        Value::Enum(n, Some(name)) => format!("{name}({n})"),
        Value::Enum(n, None) => n.to_string(),
        Value::Object(b, t) => crate::sink::one_line(b, t, fmt),
        Value::Stack(v, _) => format!("stack {v:#x}"),
        Value::Late { bytes, str: true } => String::from_utf8_lossy(bytes).into_owned(),
        Value::Late { bytes, str: false } => bytes.iter().map(|x| format!("{x:02x}")).collect(),
        Value::Fault | Value::ReadFailed { .. } => "<fault>".into(),
    }
}

/// A key value as JSON; whole values through their formatters.
pub(super) fn value_json(v: &Value<'_>, fmt: &crate::dwarf::value::Options) -> Json {
    match v {
        Value::U64(n) => json!(n),
        Value::I64(n) => json!(n),
        Value::Enum(n, None) => json!(n),
        Value::Fault | Value::ReadFailed { .. } => Json::Null,
        Value::Object(b, t) => crate::sink::render(b, t, fmt).to_json(),
        v => json!(value_text(v, fmt)),
    }
}

impl View<'_> {
    /// The key values of a cell, one part per `--by`.
    fn key(&self, plan: usize, bytes: &[u8]) -> Vec<KeyPart> {
        key_parts(bytes, &self.plans[plan].keys, self)
    }

    fn rows<'s>(&self, snap: &'s Snapshot) -> Vec<(&'s CellKey, &'s Cell)> {
        let mut rows: Vec<(&CellKey, &Cell)> = snap
            .cells
            .iter()
            .filter(|((p, _, _), _)| self.plans.get(*p as usize).is_some_and(|a| a.shown))
            .collect();
        rows.sort_by_key(|(k, c)| (c.count, (*k).clone()));
        rows
    }

    /// Folded stacks of a snapshot: `process;outer;...;inner COUNT`, one
    /// line per stack (summed over probes and other keys), sorted.
    pub fn folded(&self, snap: &Snapshot) -> Vec<String> {
        let mut sum: BTreeMap<String, u64> = BTreeMap::new();
        for ((plan, _, bytes), cell) in self.rows(snap) {
            let parts = self.key(*plan as usize, bytes);
            let Some((part, s)) = parts.iter().find_map(|p| p.stack.as_ref().map(|s| (p, s)))
            else {
                continue;
            };
            let root = self.stacks.borrow_mut().comm((part.raw >> 32) as u32);
            *sum.entry(format!("{root};{}", s.folded())).or_default() += cell.count;
        }
        sum.into_iter().map(|(p, n)| format!("{p} {n}")).collect()
    }

    /// Prints one snapshot: an interval's additions, or the final totals.
    pub fn print(&self, w: &mut impl Write, snap: &Snapshot, last: bool) -> std::io::Result<()> {
        let rows = self.rows(snap);
        if self.opts.trace.json {
            return self.print_json(w, &rows, last);
        }
        if !last {
            writeln!(w, "--- interval")?;
        }
        for ((plan, site, bytes), cell) in rows {
            let a = &self.plans[*plan as usize];
            let key = self.key(*plan as usize, bytes);
            let short = self.set.sites.get(*site as usize).map_or("?", |s| &s.short);
            if !a.hist {
                key_line(w, short, &key, &format!(": {}", cell.count))?;
                continue;
            }
            key_line(w, short, &key, ":")?;
            hist_text(w, &cell.buckets, a.signed)?;
            if matches!(self.opts.kind, AggKind::Latency | AggKind::Span(_)) {
                writeln!(
                    w,
                    "count {}  p50 ~{}  p90 ~{}  p99 ~{}  max <{}  (ns; estimated from log2 buckets)",
                    cell.count,
                    duration_text(quantile(&cell.buckets, 0.5)),
                    duration_text(quantile(&cell.buckets, 0.9)),
                    duration_text(quantile(&cell.buckets, 0.99)),
                    duration_text(max_bound(&cell.buckets)),
                )?;
            }
            writeln!(w)?;
        }
        w.flush()
    }

    fn print_json(
        &self,
        w: &mut impl Write,
        rows: &[(&CellKey, &Cell)],
        last: bool,
    ) -> std::io::Result<()> {
        let mut entries = Vec::new();
        for ((plan, site, bytes), cell) in rows {
            let a = &self.plans[*plan as usize];
            let by = key_json(&self.key(*plan as usize, bytes));
            let mut e = Map::new();
            let s = self.set.sites.get(*site as usize);
            e.insert("probe".into(), json!(s.map_or("?", |s| s.name.as_str())));
            e.insert("by".into(), Json::Object(by));
            e.insert("count".into(), json!(cell.count));
            if a.hist {
                let buckets: Vec<Json> = cell
                    .buckets
                    .iter()
                    .enumerate()
                    .filter(|(_, c)| **c > 0)
                    .map(|(b, c)| {
                        let (lo, hi) = bucket_range(b);
                        json!({"lo": lo, "hi": hi, "count": c})
                    })
                    .collect();
                e.insert("buckets".into(), Json::Array(buckets));
                for (name, q) in [("p50", 0.5), ("p90", 0.9), ("p99", 0.99)] {
                    e.insert(name.into(), json!(quantile(&cell.buckets, q)));
                }
                e.insert("max_below".into(), json!(max_bound(&cell.buckets)));
            }
            entries.push(Json::Object(e));
        }
        let kind = match self.opts.kind {
            AggKind::Count => "count",
            AggKind::Hist(_) => "hist",
            AggKind::Latency | AggKind::Span(_) => "latency",
            AggKind::Inflight(..) => "inflight",
            AggKind::Leaks(_) => "leaks",
        };
        let doc = json!({
            "type": if last { "final" } else { "interval" },
            "kind": kind,
            "entries": entries,
        });
        writeln!(w, "{doc}")?;
        w.flush()
    }
}

/// A histogram as bpftrace prints it: from the first to the last non-empty
/// bucket, with a bar scaled to the largest.
pub fn hist_text(w: &mut impl Write, buckets: &[u64], signed: bool) -> std::io::Result<()> {
    const WIDTH: u64 = 52;
    let (Some(first), Some(last)) = (
        buckets.iter().position(|&c| c > 0),
        buckets.iter().rposition(|&c| c > 0),
    ) else {
        return Ok(());
    };
    let max = buckets.iter().copied().max().unwrap_or(1).max(1);
    for (b, &c) in buckets.iter().enumerate().take(last + 1).skip(first) {
        let bar = "@".repeat((c * WIDTH / max) as usize);
        writeln!(
            w,
            "{:<20}{c:>8} |{bar:<width$}|",
            range_label(b, signed),
            width = WIDTH as usize
        )?;
    }
    Ok(())
}

/// The summary on stderr: hits, keys, and updates dropped.
pub fn summary(
    w: &mut impl Write,
    snap: &Snapshot,
    stats: &Stats,
    max_keys: u32,
) -> std::io::Result<()> {
    writeln!(
        w,
        "ri: {} in {}",
        counted(snap.total(), "hit"),
        counted(snap.cells.len() as u64, "key")
    )?;
    dropped(w, stats, max_keys)
}

/// The lines about updates the kernel map had no room for and returns
/// skipped, if any.
pub fn dropped(w: &mut impl Write, stats: &Stats, max_keys: u32) -> std::io::Result<()> {
    if stats.dropped > 0 {
        writeln!(
            w,
            "ri: {} updates dropped: aggregation map full ({max_keys} keys; raise --max-keys)",
            stats.dropped
        )?;
    }
    crate::trace::skipped_returns(w, stats.no_entry)
}

#[cfg(test)]
mod tests {
    use ri_common::HIST_BUCKETS;

    use super::*;

    #[test]
    fn ranges_and_labels() {
        assert_eq!(range_label(0, false), "[0]");
        assert_eq!(range_label(1, false), "[1]");
        assert_eq!(range_label(2, false), "[2, 4)");
        assert_eq!(range_label(11, false), "[1K, 2K)");
        assert_eq!(range_label(21, false), "[1M, 2M)");
        assert_eq!(range_label(64, true), "(..., 0)");
        assert_eq!(bucket_range(3), (4, 8));
    }

    #[test]
    fn quantiles_from_buckets() {
        let mut b = [0u64; HIST_BUCKETS as usize];
        b[3] = 10; // [4, 8)
        b[5] = 10; // [16, 32)
        assert_eq!(quantile(&b, 0.5), 8);
        assert!((16..32).contains(&quantile(&b, 0.9)));
        assert_eq!(max_bound(&b), 32);
        assert_eq!(quantile(&[0; 3], 0.5), 0);
    }

    #[test]
    fn histogram_bars() {
        let mut b = [0u64; HIST_BUCKETS as usize];
        b[1] = 2;
        b[3] = 4;
        let mut out = Vec::new();
        hist_text(&mut out, &b, false).unwrap();
        let s = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = s.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("[1] "));
        assert!(lines[2].contains(&"@".repeat(52)));
        assert!(lines[1].contains("|                                                    |"));
    }
}
