//! Printing aggregations: counts per key, bpftrace-style log2 histograms,
//! exact count/mean/min/max and percentiles from the fine buckets, JSON.

use std::{cell::RefCell, collections::BTreeMap, io::Write, rc::Rc};

use ri_common::{AggValue, EventHeader, HEADER_LEN, hist_bucket_range};
use serde_json::{Map, Value as Json, json};

use super::{
    AggKind, AggOptions, AggPlan,
    labels::Names,
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
    /// Names of labelled keys' values, read from the processes.
    pub names: &'a RefCell<Names>,
}

/// One key value: label, text, JSON, and its frames when it is a stack.
pub(super) struct KeyPart {
    pub(super) label: String,
    pub(super) text: String,
    pub(super) json: Json,
    pub(super) stack: Option<Rc<Resolved>>,
    /// The stack value (`tgid << 32 | id`) when it is a stack, else the
    /// integer value (0 for strings and objects).
    pub(super) raw: u64,
    /// The value's name, from a `--label`.
    pub(super) name: Option<String>,
}

impl KeyPart {
    /// `label=value`, or `label=value (name)`.
    pub(super) fn plain(&self) -> String {
        match &self.name {
            Some(n) => format!("{}={} ({n})", self.label, self.text),
            None => format!("{}={}", self.label, self.text),
        }
    }
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
                    Value::U64(n) | Value::Hex(n) => (None, *n),
                    Value::I64(n) | Value::Enum(n, _) => (None, *n as u64),
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
                    name: None,
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
        .map(KeyPart::plain)
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

/// Parts as a JSON object by label; a named value adds `LABEL_name`.
pub(super) fn key_json(parts: &[KeyPart]) -> Map<String, Json> {
    let mut m = Map::new();
    for p in parts {
        m.insert(p.label.clone(), p.json.clone());
        if let Some(n) = &p.name {
            m.insert(format!("{}_name", p.label), json!(n));
        }
    }
    m
}

/// `parts` with the names of `plan`'s labelled keys, read from the hidden
/// words (then left out).
pub(super) fn labelled(mut parts: Vec<KeyPart>, plan: &AggPlan, view: &View) -> Vec<KeyPart> {
    if plan.labels.is_empty() || parts.len() != plan.keys.len() {
        return parts;
    }
    let mut names = view.names.borrow_mut();
    for l in &plan.labels {
        parts[l.key].name = names.name(parts[l.hidden].raw);
    }
    let mut hidden: Vec<usize> = plan.labels.iter().map(|l| l.hidden).collect();
    hidden.sort_unstable();
    for h in hidden.into_iter().rev() {
        parts.remove(h);
    }
    parts
}

/// A cell key's values as `(label, text)` pairs, a named value adding
/// `(LABEL_name, name)`; stacks left out: the labels of a served metric.
pub fn key_pairs(view: &View, plan: &AggPlan, key: &[u8]) -> Vec<(String, String)> {
    let parts = labelled(key_parts(key, &plan.keys, view), plan, view);
    let mut out = Vec::new();
    for p in parts.into_iter().filter(|p| p.stack.is_none()) {
        if let Some(n) = p.name {
            out.push((format!("{}_name", p.label), n));
        }
        out.push((p.label, p.text));
    }
    out
}

/// Groups in the display: 0, then `[2^(g-1), 2^g)` for g in 1..=64.
pub const LOG2_GROUPS: usize = 65;

/// Hits per log2 display group of a cell's fine buckets (each fine bucket
/// lies inside one power of two). 16 lines per power of two would bury the
/// shape; the numbers below the bars come from the fine buckets.
pub fn log2_counts(cell: &Cell) -> [u64; LOG2_GROUPS] {
    let mut g = [0; LOG2_GROUPS];
    for (b, v) in &cell.buckets {
        let lo = hist_bucket_range(*b).0;
        g[(u64::BITS - lo.leading_zeros()) as usize] += v.count;
    }
    g
}

/// Exact moments of a cell, and percentiles from its buckets; `signed`
/// reads values as `i64`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Moments {
    /// Hits.
    pub count: u64,
    /// Sum of the values.
    pub sum: i128,
    /// Least value.
    pub min: i128,
    /// Greatest value.
    pub max: i128,
}

impl Moments {
    /// Mean of the values (0 without hits).
    pub fn mean(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.sum as f64 / self.count as f64
        }
    }
}

/// A value of bucket slot as a number, `i64` when signed.
fn num(v: u64, signed: bool) -> i128 {
    if signed { v as i64 as i128 } else { v as i128 }
}

/// A cell's buckets in value order: when `signed`, the negative ones (the
/// top bit set, past `2^63`) come first.
fn ordered(cell: &Cell, signed: bool) -> impl Iterator<Item = &AggValue> {
    let neg = |b: &u32| signed && hist_bucket_range(*b).0 >= 1 << 63;
    let (n, p): (Vec<_>, Vec<_>) = cell.buckets.iter().partition(|(b, _)| neg(b));
    n.into_iter().chain(p).map(|(_, v)| v)
}

/// Exact count, sum, min and max of a cell (from its buckets' own).
pub fn moments(cell: &Cell, signed: bool) -> Moments {
    let mut m = Moments {
        count: 0,
        sum: 0,
        min: 0,
        max: 0,
    };
    for (i, v) in ordered(cell, signed).enumerate() {
        if i == 0 {
            m.min = num(v.min, signed);
        }
        m.max = num(v.max, signed);
        m.count += v.count;
        m.sum += bucket_sum(v, signed);
    }
    m
}

/// A sum as a JSON number: exact within 64 bits, else a float (JSON has no
/// wider integers; `json!` of such an `i128` panics).
fn big_json(n: i128) -> Json {
    serde_json::to_value(n).unwrap_or_else(|_| json!(n as f64))
}

/// The sum of a bucket's values, from its wrapped 64-bit sum: `count * min`
/// plus what the values add above `min` (which fits in 64 bits unless the
/// bucket's spread times its hits does not), so a sum past 64 bits, or of
/// large signed values, is still exact.
fn bucket_sum(v: &AggValue, signed: bool) -> i128 {
    let Some(base) = (v.count as i128).checked_mul(num(v.min, signed)) else {
        return num(v.sum, signed);
    };
    base + v.sum.wrapping_sub(base as u64) as i128
}

/// The `q` quantile (0..=1, nearest rank) of a cell: the least or greatest
/// value of the bucket that holds the rank when it is that bucket's first
/// or last, else the midpoint of the bucket's least and greatest values,
/// so within half a bucket (3.2%) of the exact value.
pub fn quantile(cell: &Cell, q: f64, signed: bool) -> i128 {
    let total = cell.count;
    if total == 0 {
        return 0;
    }
    let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
    let mut before = 0;
    for v in ordered(cell, signed) {
        if before + v.count >= rank {
            let (lo, hi) = (num(v.min, signed), num(v.max, signed));
            return match rank - before {
                1 => lo,
                r if r == v.count => hi,
                _ => lo + (hi - lo) / 2,
            };
        }
        before += v.count;
    }
    0
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

/// A duration in ns with its unit, to three significant digits.
pub(super) fn duration_text(ns: u64) -> String {
    let (v, unit) = match ns {
        0..1_000 => return format!("{ns} ns"),
        1_000..1_000_000 => (ns as f64 / 1e3, "us"),
        1_000_000..1_000_000_000 => (ns as f64 / 1e6, "ms"),
        _ => (ns as f64 / 1e9, "s"),
    };
    let digits = match v {
        100.0.. => 0,
        10.0.. => 1,
        _ => 2,
    };
    format!("{v:.digits$} {unit}")
}

/// A duration that may be negative or fractional (a mean), as text.
fn signed_duration(ns: f64) -> String {
    if ns < 0.0 {
        format!("-{}", duration_text((-ns) as u64))
    } else {
        duration_text(ns as u64)
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
        let a = &self.plans[plan];
        labelled(key_parts(bytes, &a.keys, self), a, self)
    }

    fn rows<'s>(&self, snap: &'s Snapshot) -> Vec<(&'s CellKey, &'s Cell)> {
        let mut rows: Vec<(&CellKey, &Cell)> = snap
            .cells
            .iter()
            .filter(|((p, _, _), _)| self.plans.get(*p as usize).is_some_and(|a| a.shown))
            .collect();
        rows.sort_by_key(|(k, c)| (c.count, (*k).clone()));
        if let Some(n) = self.opts.top {
            // The hottest are last.
            rows.drain(..rows.len().saturating_sub(n));
        }
        rows
    }

    /// Site ids the overhead budget detached: their counts are partial.
    fn dropped(&self) -> std::collections::HashSet<u32> {
        self.engine.dropped().iter().map(|d| d.site).collect()
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
        interval_mark(w, last)?;
        let dropped = self.dropped();
        for ((plan, site, bytes), cell) in rows {
            let a = &self.plans[*plan as usize];
            let key = self.key(*plan as usize, bytes);
            let short = self.set.sites.get(*site as usize).map_or("?", |s| &s.short);
            if !a.hist {
                count_line(w, short, &key, cell.count, dropped.contains(site))?;
                continue;
            }
            key_line(w, short, &key, ":")?;
            let time = matches!(self.opts.kind, AggKind::Latency | AggKind::Span(_));
            hist_lines(w, &HistStats::of(cell, a.signed), a.signed, time)?;
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
        let dropped = self.dropped();
        for ((plan, site, bytes), cell) in rows {
            let a = &self.plans[*plan as usize];
            let by = key_json(&self.key(*plan as usize, bytes));
            let mut e = Map::new();
            let s = self.set.sites.get(*site as usize);
            e.insert("probe".into(), json!(s.map_or("?", |s| s.name.as_str())));
            e.insert("by".into(), Json::Object(by));
            e.insert("count".into(), json!(cell.count));
            if dropped.contains(site) {
                e.insert("partial".into(), json!(true));
            }
            if a.hist {
                hist_json(&mut e, cell, a.signed, self.opts.raw);
            }
            if self.opts.raw {
                e.insert("site".into(), json!(s.map_or("?", |s| s.short.as_str())));
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
        let mut doc = json!({
            "type": if last { "final" } else { "interval" },
            "kind": kind,
            "entries": entries,
        });
        let names: Vec<&str> = self
            .engine
            .dropped()
            .iter()
            .filter_map(|d| self.set.sites.get(d.site as usize))
            .map(|s| s.name.as_str())
            .collect();
        if !names.is_empty() {
            doc["dropped"] = json!(names);
        }
        writeln!(w, "{doc}")?;
        w.flush()
    }
}

/// `--- interval` before an interval's print (a final print has none).
pub(super) fn interval_mark(w: &mut impl Write, last: bool) -> std::io::Result<()> {
    match last {
        true => Ok(()),
        false => writeln!(w, "--- interval"),
    }
}

/// A count's row: `SITE[key]: COUNT`, marked partial when the overhead
/// budget detached the site.
pub(super) fn count_line(
    w: &mut impl Write,
    short: &str,
    key: &[KeyPart],
    count: u64,
    partial: bool,
) -> std::io::Result<()> {
    let partial = match partial {
        true => " (partial: detached by the overhead budget)",
        false => "",
    };
    key_line(w, short, key, &format!(": {count}{partial}"))
}

/// What a histogram's text shows: hits per log2 group, exact moments and
/// quantiles (from a live cell, or from a stored print's JSON).
pub(super) struct HistStats {
    /// Hits per [`LOG2_GROUPS`] group.
    pub(super) groups: [u64; LOG2_GROUPS],
    /// Count, sum, min and max.
    pub(super) moments: Moments,
    /// p50, p90, p99.
    pub(super) quantiles: [i128; 3],
}

impl HistStats {
    /// A live cell's.
    fn of(cell: &Cell, signed: bool) -> Self {
        HistStats {
            groups: log2_counts(cell),
            moments: moments(cell, signed),
            quantiles: [0.5, 0.9, 0.99].map(|q| quantile(cell, q, signed)),
        }
    }
}

/// A histogram's text: log2 bars, then count, mean, min, p50/p90/p99 and
/// max (as durations when `time`), then a blank line.
pub(crate) fn hist_summary(
    w: &mut impl Write,
    cell: &Cell,
    signed: bool,
    time: bool,
) -> std::io::Result<()> {
    hist_lines(w, &HistStats::of(cell, signed), signed, time)
}

/// [`hist_summary`] of the numbers.
pub(super) fn hist_lines(
    w: &mut impl Write,
    h: &HistStats,
    signed: bool,
    time: bool,
) -> std::io::Result<()> {
    hist_text(w, &h.groups, signed)?;
    let m = h.moments;
    let [p50, p90, p99] = h.quantiles;
    let text = |v: f64| {
        if time {
            signed_duration(v)
        } else if v.fract() == 0.0 {
            format!("{v}")
        } else {
            format!("{v:.2}")
        }
    };
    writeln!(
        w,
        "count {}  mean {}  min {}  p50 ~{}  p90 ~{}  p99 ~{}  max {}",
        m.count,
        text(m.mean()),
        text(m.min as f64),
        text(p50 as f64),
        text(p90 as f64),
        text(p99 as f64),
        text(m.max as f64),
    )?;
    writeln!(w)
}

/// A histogram's JSON fields: buckets (`lo`, `hi`, `count`; with `raw` also
/// the bucket index `b` and its `sum`, `min`, `max`, so that histograms from
/// several hosts merge exactly), sum, mean, min, max, p50/p90/p99.
pub(crate) fn hist_json(e: &mut Map<String, Json>, cell: &Cell, signed: bool, raw: bool) {
    let buckets: Vec<Json> = cell
        .buckets
        .iter()
        .map(|(b, v)| {
            let (lo, hi) = hist_bucket_range(*b);
            if raw {
                json!({"lo": lo, "hi": hi, "count": v.count, "b": b, "sum": v.sum, "min": v.min, "max": v.max})
            } else {
                json!({"lo": lo, "hi": hi, "count": v.count})
            }
        })
        .collect();
    e.insert("buckets".into(), Json::Array(buckets));
    let m = moments(cell, signed);
    e.insert("sum".into(), big_json(m.sum));
    e.insert("mean".into(), json!(m.mean()));
    e.insert("min".into(), json!(m.min));
    e.insert("max".into(), json!(m.max));
    for (name, q) in [("p50", 0.5), ("p90", 0.9), ("p99", 0.99)] {
        e.insert(name.into(), json!(quantile(cell, q, signed)));
    }
    if raw {
        e.insert("signed".into(), json!(signed));
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
    use super::*;

    #[test]
    fn ranges_and_labels() {
        assert_eq!(range_label(0, false), "[0]");
        assert_eq!(range_label(1, false), "[1]");
        assert_eq!(range_label(2, false), "[2, 4)");
        assert_eq!(range_label(11, false), "[1K, 2K)");
        assert_eq!(range_label(21, false), "[1M, 2M)");
        assert_eq!(range_label(64, true), "(..., 0)");
    }

    fn cell(values: &[u64]) -> Cell {
        let mut c = Cell::default();
        for v in values {
            c.add(ri_common::hist_bucket(*v), &AggValue::one(*v));
        }
        c
    }

    #[test]
    fn quantiles_from_buckets() {
        let c = cell(&[5; 10].into_iter().chain([20; 10]).collect::<Vec<_>>());
        assert_eq!(quantile(&c, 0.5, false), 5);
        assert_eq!(quantile(&c, 0.9, false), 20);
        assert_eq!(quantile(&Cell::default(), 0.5, false), 0);
        // 4.00 ms to 4.18 ms: one bucket; the midpoint is within 3.2%.
        let c = cell(&(0..100).map(|i| 4_000_000 + i * 1_800).collect::<Vec<_>>());
        for q in [0.5, 0.9, 0.99] {
            let exact = 4_000_000 + ((q * 100.0_f64).ceil() as i128 - 1) * 1_800;
            let got = quantile(&c, q, false);
            assert!(
                (got - exact).abs() * 100 <= exact * 3,
                "q {q}: {got} vs {exact}"
            );
        }
        assert_eq!(quantile(&c, 1.0, false), 4_000_000 + 99 * 1_800);
        let m = moments(&c, false);
        assert_eq!((m.count, m.min, m.max), (100, 4_000_000, 4_178_200));
        assert_eq!(m.mean(), 4_089_100.0);
    }

    #[test]
    fn signed_values_order_negatives_first() {
        let c = cell(&[(-3i64) as u64, (-100i64) as u64, 7, 1000]);
        let m = moments(&c, true);
        assert_eq!((m.min, m.max, m.sum), (-100, 1000, 904));
        assert_eq!(quantile(&c, 0.25, true), -100);
        assert_eq!(quantile(&c, 0.5, true), -3);
        assert_eq!(log2_counts(&c)[64], 2);
    }

    #[test]
    fn sums_past_64_bits_are_exact() {
        let big = 3u64 << 62;
        let m = moments(&cell(&[big, big + 1, big]), false);
        assert_eq!(m.sum, 3 * i128::from(big) + 1);
        let big = i64::MAX as u64 - 1;
        let m = moments(&cell(&[big, big, 5]), true);
        assert_eq!(m.sum, 2 * i128::from(big) + 5);
        let m = moments(&cell(&[i64::MIN as u64, i64::MIN as u64]), true);
        assert_eq!(m.sum, 2 * i128::from(i64::MIN));
        assert_eq!(big_json(m.sum), json!(2.0 * i64::MIN as f64));
        assert_eq!(big_json(-5), json!(-5));
        assert_eq!(big_json(u64::MAX.into()), json!(u64::MAX));
    }

    #[test]
    fn histogram_bars() {
        let mut b = [0u64; LOG2_GROUPS];
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
