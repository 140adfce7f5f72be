//! `ri session show`: a bundle's summary (session, hosts, targets,
//! instruments with their counts and losses, triggers fired), each trace
//! instrument's events per probe and each aggregation's last print, as the
//! live commands print them, read offline from the bundle alone.

use std::io::Write;

use serde_json::{Value, json};

use super::{
    CaptureError,
    bundle::{Bundle, Manifest},
    instrument::Kind,
};

/// The last aggregation print of each instrument that wrote prints (name,
/// print), from its snapshot file.
pub fn last_prints(b: &Bundle) -> Result<Vec<(String, Value)>, CaptureError> {
    let mut out = Vec::new();
    for i in &b.manifest.instruments {
        if i.kind != Kind::Aggregation {
            continue;
        }
        let rel = format!("snapshots/{}.jsonl.zst", i.name);
        if !i.files.contains(&rel) {
            continue;
        }
        if let Some(last) = b.lines(&rel)?.pop() {
            out.push((i.name.clone(), last["print"].clone()));
        }
    }
    Ok(out)
}

/// `ri session show BUNDLE [--json]`.
pub fn show(b: &Bundle, json: bool, w: &mut impl Write) -> Result<(), CaptureError> {
    let prints = last_prints(b)?;
    if json {
        let last: serde_json::Map<String, Value> = prints.into_iter().collect();
        let v = json!({"manifest": b.manifest, "last_prints": last});
        writeln!(w, "{v}")?;
        return Ok(());
    }
    summary(&b.manifest, w)?;
    for i in &b.manifest.instruments {
        if i.kind == Kind::Trace {
            writeln!(w, "\n{} (events in the bundle):", i.name)?;
            trace_summary(b, i)?.write_to(w)?;
        }
    }
    for (name, p) in &prints {
        writeln!(w, "\n{name} (last print):")?;
        crate::agg::stored_print_text(w, p)?;
    }
    Ok(())
}

/// A trace instrument's events per probe in the bundle (its own file and
/// flight-recorder dumps), as the live `ri trace` summary prints them.
fn trace_summary(
    b: &Bundle,
    i: &super::bundle::InstrumentInfo,
) -> Result<crate::trace::Summary, CaptureError> {
    let mut per: Vec<(String, u64)> = Vec::new();
    for f in i.files.iter().filter(|f| f.ends_with(".jsonl.zst")) {
        for ev in b.lines(f)? {
            let probe = ev["probe"].as_str().unwrap_or("?");
            match per.iter_mut().find(|(p, _)| p == probe) {
                Some((_, n)) => *n += 1,
                None => per.push((probe.to_string(), 1)),
            }
        }
    }
    Ok(crate::trace::Summary {
        per_site: per,
        lost: i.counts.lost,
        ..Default::default()
    })
}

/// The manifest as text.
fn summary(m: &Manifest, w: &mut impl Write) -> std::io::Result<()> {
    let secs = m.end.as_ref().map_or(0.0, |e| {
        e.mono_ns.saturating_sub(m.start.mono_ns) as f64 / 1e9
    });
    writeln!(
        w,
        "session {} (ri {}), file {}\n  hosts {}; kernel {}\n  {} for {secs:.1}s, interval {}s",
        m.session,
        m.ri_version,
        m.session_file,
        m.hosts.join(", "),
        m.kernel,
        m.start.utc,
        m.interval
    )?;
    writeln!(w, "targets:")?;
    for t in &m.targets {
        writeln!(
            w,
            "  pid {} {} {} build-id {} on {}",
            t.pid,
            t.comm,
            t.exe,
            t.build_id.as_deref().unwrap_or("-"),
            t.host
        )?;
    }
    writeln!(w, "instruments:")?;
    for i in &m.instruments {
        let what = match i.kind {
            Kind::Trace => "events",
            Kind::Aggregation => "prints",
        };
        writeln!(
            w,
            "  {:<12} {:<40} {} {what}; {} events/hits, {} lost, {} dropped{}",
            i.name,
            i.source,
            i.lines,
            i.counts.events,
            i.counts.lost,
            i.counts.dropped,
            i.flight_recorder
                .as_ref()
                .map_or(String::new(), |f| format!("; flight recorder {f}"))
        )?;
    }
    if m.fired.is_empty() {
        writeln!(w, "triggers fired: none")?;
    } else {
        writeln!(w, "triggers fired:")?;
    }
    for f in &m.fired {
        writeln!(
            w,
            "  {:>8.1}s {} ({}{}) at {}",
            f.t,
            f.trigger,
            f.when,
            f.value.map_or(String::new(), |v| format!(": {v}")),
            f.at.utc
        )?;
        for a in &f.actions {
            writeln!(
                w,
                "           {}: {} {}",
                a.action,
                a.result,
                a.files.join(" ")
            )?;
        }
    }
    if m.lost > 0 || m.dropped > 0 {
        writeln!(
            w,
            "losses: {} events lost, {} aggregation updates dropped",
            m.lost, m.dropped
        )?;
    } else {
        writeln!(w, "losses: none")?;
    }
    Ok(())
}

/// A print's key: its `by` (or inflight `fields`) as `k=v` words, with a
/// value's name (`opcode_name`) after it.
pub(super) fn key_text(e: &Value) -> String {
    let by = e.get("by").or_else(|| e.get("fields"));
    let Some(Value::Object(m)) = by else {
        return String::new();
    };
    let mut words = Vec::new();
    for (k, v) in m {
        if k.ends_with("_name") || k == "stack" {
            continue;
        }
        let name = m.get(&format!("{k}_name")).and_then(Value::as_str);
        let v = match v {
            Value::String(s) => s.clone(),
            v => v.to_string(),
        };
        words.push(match name {
            Some(n) => format!("{k}={v} ({n})"),
            None => format!("{k}={v}"),
        });
    }
    format!("[{}]", words.join(", "))
}

/// Folded stacks (`comm;outer;...;inner COUNT`) of a print whose keys are
/// stacks; `None` when it has none.
pub fn folded_of(print: Option<&Value>) -> Option<String> {
    let entries = print?.get("entries")?.as_array()?;
    let mut out = String::new();
    for e in entries {
        let Some(frames) = e.pointer("/by/stack").and_then(Value::as_array) else {
            continue;
        };
        let weight = e
            .get("bytes")
            .or_else(|| e.get("count"))
            .and_then(Value::as_u64)
            .unwrap_or(0);
        let mut names: Vec<&str> = frames
            .iter()
            .map(|f| f["func"].as_str().unwrap_or("[unknown]"))
            .collect();
        names.reverse();
        let comm = e.pointer("/by/comm").and_then(Value::as_str);
        let head = comm.map_or(String::new(), |c| format!("{c};"));
        out.push_str(&format!("{head}{} {weight}\n", names.join(";")));
    }
    (!out.is_empty()).then_some(out)
}
