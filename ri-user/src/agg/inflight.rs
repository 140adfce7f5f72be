//! `ri inflight`: operations begun and not yet ended. The begin probe's
//! plan stores its captures (the key first) with the time in the kernel's
//! `INFLIGHT` map; the end probe's plan deletes the key. ri lists what is
//! left, oldest first, with its age.

use std::io::Write;

use aya::maps::HashMap as BpfHashMap;
use ri_common::{EventHeader, FlightKey, HEADER_LEN, Inflight};
use serde_json::{Map, Value as Json, json};

use super::{AggError, AggPlan, render::duration_text, render::value_json, render::value_text};
use crate::{engine::Engine, session::ProbeSet};

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
            payload: f.payload.to_vec(),
        });
    }
    v.sort_by_key(|f| f.ts_ns);
    Ok(v)
}

fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: plain clock read into a local.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Prints the operations in flight (text table or one JSON object).
pub fn print(
    w: &mut impl Write,
    set: &ProbeSet,
    plan: &AggPlan,
    flights: &[Flight],
    json_out: bool,
    last: bool,
) -> std::io::Result<()> {
    let now = monotonic_ns();
    let mut rows = Vec::new();
    for f in flights {
        let hdr = EventHeader {
            payload_len: f.payload.len() as u32,
            ..Default::default()
        };
        let mut rec = Vec::with_capacity(HEADER_LEN + f.payload.len());
        // SAFETY: EventHeader is plain integers, without padding.
        rec.extend_from_slice(unsafe {
            std::slice::from_raw_parts(&hdr as *const EventHeader as *const u8, HEADER_LEN)
        });
        rec.extend_from_slice(&f.payload);
        let fields: Vec<(String, String, Json)> = match crate::decode::decode(&rec, &plan.keys) {
            Ok(ev) => plan
                .keys
                .iter()
                .zip(&ev.values)
                .map(|(k, v)| (k.name.clone(), value_text(v), value_json(v)))
                .collect(),
            Err(_) => Vec::new(),
        };
        let site = set.sites.get(f.site as usize);
        rows.push((now.saturating_sub(f.ts_ns), f, site, fields));
    }
    if json_out {
        let entries: Vec<Json> = rows
            .iter()
            .map(|(age, f, site, fields)| {
                let mut m = Map::new();
                for (k, _, v) in fields {
                    m.insert(k.clone(), v.clone());
                }
                json!({
                    "probe": site.map_or("?", |s| s.name.as_str()),
                    "pid": f.pid,
                    "tid": f.tid,
                    "age_ns": age,
                    "fields": m,
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
    for (age, f, site, fields) in &rows {
        let parts: Vec<String> = fields.iter().map(|(k, v, _)| format!("{k}={v}")).collect();
        writeln!(
            w,
            "{:>10}  pid={} tid={}  {}  {}",
            duration_text(*age),
            f.pid,
            f.tid,
            site.map_or("?", |s| s.short.as_str()),
            parts.join(" ")
        )?;
    }
    w.flush()
}
