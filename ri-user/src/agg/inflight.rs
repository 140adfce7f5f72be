//! `ri inflight`: operations begun and not yet ended. The begin probe's
//! plan stores its captures (the key first) with the time in the kernel's
//! `INFLIGHT` map; the end probe's plan deletes the key. ri lists what is
//! left, oldest first, with its age.

use std::io::Write;

use aya::maps::HashMap as BpfHashMap;
use ri_common::{FlightKey, Inflight};
use serde_json::json;

use super::{
    AggError, AggPlan,
    render::{KeyPart, View, duration_text, key_json, key_parts, labelled},
};
use crate::engine::Engine;
pub use crate::engine::monotonic_ns;

/// One operation in flight.
#[derive(Clone, Debug)]
pub struct Flight {
    /// When it began (monotonic ns).
    pub ts_ns: u64,
    /// Process and thread that began it.
    pub pid: u32,
    /// Thread id.
    pub tid: u32,
    /// Site of the begin probe.
    pub site: u32,
    /// Plan that stored it: the begin probe's (0), or a `--seen` probe's
    /// (the operation began before attaching; `ts_ns` is when it was seen).
    pub plan: u32,
    /// The begin probe's payload.
    pub payload: Vec<u8>,
}

/// Reads the in-flight map, oldest first.
pub fn read(engine: &Engine) -> Result<Vec<Flight>, crate::Error> {
    let map: BpfHashMap<_, FlightKey, Inflight> =
        BpfHashMap::try_from(engine.map("INFLIGHT")?).map_err(|e| AggError::Read(e.to_string()))?;
    let mut v = Vec::new();
    for item in map.iter() {
        let (_, f) = item.map_err(|e| AggError::Read(e.to_string()))?;
        v.push(Flight {
            ts_ns: f.ts_ns,
            pid: f.pid,
            tid: f.tid,
            site: f.site,
            plan: f.plan,
            payload: f.payload.to_vec(),
        });
    }
    v.sort_by_key(|f| f.ts_ns);
    Ok(v)
}

/// Prints the operations in flight (text table or one JSON object), with
/// the frames of a captured stack under its row; an operation a `--seen`
/// probe added shows its age as a lower bound (`>=`, `"seen": true`).
pub fn print(
    w: &mut impl Write,
    view: &View,
    plan: &AggPlan,
    flights: &[Flight],
    json_out: bool,
    last: bool,
) -> std::io::Result<()> {
    let set = view.set;
    let now = monotonic_ns();
    let rows: Vec<_> = flights
        .iter()
        .map(|f| {
            let parts = labelled(key_parts(&f.payload, &plan.keys, view), plan, view);
            let site = set.sites.get(f.site as usize);
            (now.saturating_sub(f.ts_ns), f, site, parts)
        })
        .collect();
    if json_out {
        let entries: Vec<_> = rows
            .iter()
            .map(|(age, f, site, parts)| {
                json!({
                    "probe": site.map_or("?", |s| s.name.as_str()),
                    "pid": f.pid,
                    "tid": f.tid,
                    "age_ns": age,
                    "seen": f.plan != 0,
                    "fields": key_json(parts),
                })
            })
            .collect();
        let doc = json!({
            "type": if last { "final" } else { "interval" },
            "kind": "inflight",
            "entries": entries,
        });
        writeln!(w, "{doc}")?;
        return w.flush();
    }
    writeln!(w, "{} in flight", rows.len())?;
    for (age, f, site, parts) in &rows {
        let op = Row {
            age_ns: *age,
            seen: f.plan != 0,
            pid: f.pid.into(),
            tid: f.tid.into(),
            short: site.map_or("?", |s| s.short.as_str()),
        };
        row(w, &op, parts)?;
    }
    w.flush()
}

/// One operation's text row, as the live table and a stored print show it.
pub(super) struct Row<'a> {
    /// Its age at the print.
    pub(super) age_ns: u64,
    /// A `--seen` probe added it: the age is a lower bound.
    pub(super) seen: bool,
    /// Process that began it.
    pub(super) pid: u64,
    /// Thread that began it.
    pub(super) tid: u64,
    /// The begin probe's short name.
    pub(super) short: &'a str,
}

/// Writes `op`'s row: age, pid, tid, probe and captures, then the frames
/// of a captured stack.
pub(super) fn row(w: &mut impl Write, op: &Row, parts: &[KeyPart]) -> std::io::Result<()> {
    let plain: Vec<String> = parts
        .iter()
        .filter(|p| p.stack.is_none())
        .map(KeyPart::plain)
        .collect();
    // Begun before attaching: at least as old as since it was seen.
    let at_least = if op.seen { ">=" } else { "" };
    writeln!(
        w,
        "{:>10}  pid={} tid={}  {}  {}",
        format!("{at_least}{}", duration_text(op.age_ns)),
        op.pid,
        op.tid,
        op.short,
        plain.join(" ")
    )?;
    for s in parts.iter().filter_map(|p| p.stack.as_ref()) {
        s.write_text(w, "    ")?;
    }
    Ok(())
}
