//! Merging the hosts' aggregations exactly: counts add, histogram buckets
//! add (count, sum, min, max per log-linear bucket), percentiles come from
//! the merged buckets; `--by host` keeps each host's apart.

use std::{collections::BTreeMap, io::Write};

use ri_common::AggValue;
use serde_json::{Map, Value as Json, json};

use crate::agg::{Cell, hist_json, hist_summary};

/// One merged key: its probe, its `by` fields, and the merged cell.
#[derive(Default)]
struct Row {
    probe: String,
    by: Map<String, Json>,
    cell: Cell,
    hist: bool,
    signed: bool,
}

/// The final prints of count/hist/latency from every host, merged.
#[derive(Default)]
pub struct Merged {
    kind: String,
    rows: BTreeMap<(String, String), Row>,
    by_host: bool,
}

impl Merged {
    /// An empty merge; `by_host` keys every row by its host too.
    pub fn new(by_host: bool) -> Merged {
        Merged {
            by_host,
            ..Default::default()
        }
    }

    /// Whether `doc` is a print this merges: a count, hist or latency print.
    pub fn mergeable(doc: &Json) -> bool {
        matches!(doc["kind"].as_str(), Some("count" | "hist" | "latency"))
            && doc["entries"].is_array()
    }

    /// Adds one host's print.
    pub fn add(&mut self, host: &str, doc: &Json) {
        if let Some(k) = doc["kind"].as_str() {
            self.kind = k.into();
        }
        for e in doc["entries"].as_array().into_iter().flatten() {
            let probe = e["site"]
                .as_str()
                .or(e["probe"].as_str())
                .unwrap_or("?")
                .to_string();
            let mut by = e["by"].as_object().cloned().unwrap_or_default();
            if self.by_host {
                by.insert("host".into(), json!(host));
            }
            let key = (probe.clone(), Json::Object(by.clone()).to_string());
            let row = self.rows.entry(key).or_insert_with(|| Row {
                probe,
                by,
                ..Default::default()
            });
            match e["buckets"].as_array() {
                Some(buckets) => {
                    row.hist = true;
                    row.signed = e["signed"].as_bool().unwrap_or(false);
                    for b in buckets {
                        let n = |k: &str| b[k].as_u64().unwrap_or(0);
                        let v = AggValue {
                            count: n("count"),
                            sum: n("sum"),
                            min: n("min"),
                            max: n("max"),
                        };
                        row.cell.add(n("b") as u32, &v);
                    }
                }
                None => {
                    let v = AggValue {
                        count: e["count"].as_u64().unwrap_or(0),
                        ..Default::default()
                    };
                    row.cell.add(0, &v);
                }
            }
        }
    }

    /// Whether anything was added.
    pub fn is_empty(&self) -> bool {
        self.kind.is_empty()
    }

    /// Rows in print order: fewest hits first, as a single host prints.
    fn sorted(&self) -> Vec<&Row> {
        let mut rows: Vec<&Row> = self.rows.values().collect();
        rows.sort_by_key(|r| r.cell.count);
        rows
    }

    /// The merged print as one JSON object, as a single host's `final`
    /// print plus the hosts it covers.
    pub fn json(&self, hosts: &[String]) -> Json {
        let entries: Vec<Json> = self
            .sorted()
            .into_iter()
            .map(|r| {
                let mut e = Map::new();
                e.insert("probe".into(), json!(r.probe));
                e.insert("by".into(), Json::Object(r.by.clone()));
                e.insert("count".into(), json!(r.cell.count));
                if r.hist {
                    hist_json(&mut e, &r.cell, r.signed, false);
                }
                Json::Object(e)
            })
            .collect();
        json!({"type": "final", "kind": self.kind, "hosts": hosts, "entries": entries})
    }

    /// The merged print as text, as a single host prints it.
    pub fn text(&self, w: &mut impl Write) -> std::io::Result<()> {
        let time = self.kind == "latency";
        for r in self.sorted() {
            let key = by_text(&r.by);
            if r.hist {
                writeln!(w, "{}{key}:", r.probe)?;
                hist_summary(w, &r.cell, r.signed, time)?;
            } else {
                writeln!(w, "{}{key}: {}", r.probe, r.cell.count)?;
            }
        }
        w.flush()
    }
}

/// `[label=value (name), ...]`, as a single host prints a key.
fn by_text(by: &Map<String, Json>) -> String {
    let parts: Vec<String> = by
        .iter()
        .filter(|(k, _)| !k.ends_with("_name") || !by.contains_key(k.trim_end_matches("_name")))
        .map(|(k, v)| {
            let v = v.as_str().map_or_else(|| v.to_string(), String::from);
            match by.get(&format!("{k}_name")).and_then(Json::as_str) {
                Some(n) => format!("{k}={v} ({n})"),
                None => format!("{k}={v}"),
            }
        })
        .collect();
    if parts.is_empty() {
        String::new()
    } else {
        format!("[{}]", parts.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_buckets_add() {
        let a = json!({"type": "final", "kind": "latency", "entries": [
            {"probe": "u:/a/m0d:f", "site": "u:f", "by": {"op": 41, "op_name": "read"}, "count": 3, "signed": false,
             "buckets": [{"b": 40, "count": 2, "sum": 100, "min": 49, "max": 51}, {"b": 60, "count": 1, "sum": 900, "min": 900, "max": 900}]}]});
        let b = json!({"type": "final", "kind": "latency", "entries": [
            {"probe": "u:/b/m0d:f", "site": "u:f", "by": {"op": 41, "op_name": "read"}, "count": 1, "signed": false,
             "buckets": [{"b": 40, "count": 1, "sum": 48, "min": 48, "max": 48}]}]});
        let mut m = Merged::new(false);
        m.add("n1", &a);
        m.add("n2", &b);
        let out = m.json(&["n1".into(), "n2".into()]);
        let e = &out["entries"][0];
        assert_eq!(e["count"], 4);
        assert_eq!(e["buckets"][0]["count"], 3);
        assert_eq!(e["min"], 48);
        assert_eq!(e["max"], 900);
        assert_eq!(e["sum"], 1048);
        let mut text = Vec::new();
        m.text(&mut text).unwrap();
        assert!(
            String::from_utf8(text)
                .unwrap()
                .starts_with("u:f[op=41 (read)]:")
        );
        let mut h = Merged::new(true);
        h.add("n1", &a);
        h.add("n2", &b);
        assert_eq!(h.json(&[])["entries"].as_array().unwrap().len(), 2);
    }

    /// The merge cost at scale: 1,000 hosts, 5 keys of 60 buckets each
    /// (`cargo test --release -p ri-user --lib merge_cost -- --ignored --nocapture`).
    #[test]
    #[ignore]
    fn merge_cost() {
        let entry = |op: u64| {
            let buckets: Vec<Json> = (0..60u64)
                .map(|b| json!({"b": 300 + b, "count": 7, "sum": 7_000_000 + b, "min": 1_000_000 + b, "max": 1_000_100 + b}))
                .collect();
            json!({"probe": "u:/x/m0d:m0_fom_queue", "site": "u:m0_fom_queue", "by": {"opcode": op}, "count": 420, "signed": false, "buckets": buckets})
        };
        let doc = json!({"type": "final", "kind": "latency", "entries": (41..46).map(entry).collect::<Vec<_>>()});
        let line = doc.to_string();
        let t = std::time::Instant::now();
        let mut m = Merged::new(false);
        for h in 0..1000 {
            let d: Json = serde_json::from_str(&line).unwrap();
            m.add(&format!("h{h}"), &d);
        }
        let out = m.json(&[]).to_string();
        println!(
            "MERGE 1000 hosts x {} bytes: {:.1} ms (parse + add + print {} bytes)",
            line.len(),
            t.elapsed().as_secs_f64() * 1000.0,
            out.len()
        );
        assert_eq!(m.json(&[])["entries"][0]["count"], 420_000);
    }
}
