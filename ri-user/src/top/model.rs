//! A pane's table from an aggregation's JSON totals: rows with rates
//! (against the previous frame), percentiles, ages and outstanding bytes.

use std::{collections::HashMap, time::Instant};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// How a column sorts.
#[derive(Clone, Debug, PartialEq, PartialOrd, Serialize, Deserialize)]
pub enum Key {
    /// By number.
    Num(f64),
    /// By text.
    Text(String),
}

/// One table cell: what is shown and what it sorts by.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Cell {
    /// Shown.
    pub text: String,
    /// Sorted by.
    pub key: Key,
}

impl Cell {
    fn num(v: f64, text: String) -> Cell {
        Cell {
            text,
            key: Key::Num(v),
        }
    }

    /// A cell of text, sorted by it.
    pub fn text(t: String) -> Cell {
        Cell {
            key: Key::Text(t.clone()),
            text: t,
        }
    }
}

/// One pane's content at one refresh (a remote ri sends it as JSON).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Table {
    /// One line above the table.
    pub summary: String,
    /// Column names.
    pub columns: Vec<String>,
    /// Rows of cells, one per column.
    pub rows: Vec<Vec<Cell>>,
    /// Column sorted by when the user has not chosen one.
    pub default_sort: usize,
}

impl Table {
    /// Sorts by `col`, largest (or last) first unless `ascending`.
    pub fn sort(&mut self, col: usize, ascending: bool) {
        self.rows.sort_by(|a, b| {
            let o = match (a.get(col), b.get(col)) {
                (Some(x), Some(y)) => x
                    .key
                    .partial_cmp(&y.key)
                    .unwrap_or(std::cmp::Ordering::Equal),
                _ => std::cmp::Ordering::Equal,
            };
            if ascending { o } else { o.reverse() }
        });
    }
}

/// Hits per key at the previous refresh, for rates.
#[derive(Debug)]
pub struct Rates {
    counts: HashMap<String, u64>,
    at: Instant,
}

impl Default for Rates {
    /// Counting from zero now (when the instrument attached).
    fn default() -> Rates {
        Rates {
            counts: HashMap::new(),
            at: Instant::now(),
        }
    }
}

impl Rates {
    /// Per second since the previous refresh, for each key of `now`;
    /// remembers `now`.
    fn update(&mut self, now: &[(String, u64)]) -> HashMap<String, f64> {
        let secs = self.at.elapsed().as_secs_f64().max(1e-3);
        let rates = now
            .iter()
            .map(|(k, c)| {
                let before = self.counts.get(k).copied().unwrap_or(0);
                (k.clone(), c.saturating_sub(before) as f64 / secs)
            })
            .collect();
        self.counts = now.iter().cloned().collect();
        self.at = Instant::now();
        rates
    }
}

/// A value as text: strings bare, others as JSON.
fn plain(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        v => v.to_string(),
    }
}

/// Fields of a key object as columns: a labelled value shows its name with
/// the number (`write (42)`); the `key` word and `stack` are left out.
fn fields(obj: &Map<String, Value>) -> Vec<(String, String)> {
    obj.iter()
        .filter(|(k, _)| !k.ends_with("_name") && *k != "key" && *k != "stack")
        .map(|(k, v)| {
            let text = match obj.get(&format!("{k}_name")).and_then(Value::as_str) {
                Some(n) => format!("{n} ({})", plain(v)),
                None => plain(v),
            };
            (k.clone(), text)
        })
        .collect()
}

/// Nanoseconds as a short duration.
pub fn duration(ns: f64) -> String {
    match ns {
        n if n >= 1e9 => format!("{:.2}s", n / 1e9),
        n if n >= 1e6 => format!("{:.2}ms", n / 1e6),
        n if n >= 1e3 => format!("{:.1}us", n / 1e3),
        n => format!("{n:.0}ns"),
    }
}

/// Bytes with a binary unit.
pub fn bytes(n: f64) -> String {
    match n {
        n if n >= 1024.0 * 1024.0 * 1024.0 => format!("{:.1}GiB", n / (1u64 << 30) as f64),
        n if n >= 1024.0 * 1024.0 => format!("{:.1}MiB", n / (1u64 << 20) as f64),
        n if n >= 1024.0 => format!("{:.1}KiB", n / 1024.0),
        n => format!("{n:.0}B"),
    }
}

fn rate(r: f64) -> Cell {
    Cell::num(r, format!("{r:.1}"))
}

fn entries(doc: &Value) -> Vec<Value> {
    doc["entries"].as_array().cloned().unwrap_or_default()
}

/// The key of a count or histogram entry: its `by` fields, or its probe.
fn entry_key(e: &Value) -> Vec<(String, String)> {
    let by = e["by"].as_object().map(fields).unwrap_or_default();
    if by.is_empty() {
        vec![("probe".into(), plain(&e["probe"]))]
    } else {
        by
    }
}

/// Counts and histograms: per key, the rate, the total and, for
/// histograms, p50/p99/max (durations when `time`).
fn counts(doc: &Value, rates: &mut Rates, time: bool, what: &str) -> Table {
    let es = entries(doc);
    let keyed: Vec<(Vec<(String, String)>, &Value)> =
        es.iter().map(|e| (entry_key(e), e)).collect();
    let ids: Vec<(String, u64)> = keyed
        .iter()
        .map(|(k, e)| (format!("{k:?}"), e["count"].as_u64().unwrap_or(0)))
        .collect();
    let per_sec = rates.update(&ids);
    let hist = es.iter().any(|e| e.get("p50").is_some());
    let mut columns: Vec<String> = keyed.first().map_or_else(
        || vec!["key".to_string()],
        |(k, _)| k.iter().map(|(n, _)| n.clone()).collect(),
    );
    let nkeys = columns.len();
    columns.extend(["/s".to_string(), "total".to_string()]);
    if hist {
        columns.extend(["p50", "p99", "max"].map(String::from));
    }
    let show = |v: f64| if time { duration(v) } else { format!("{v}") };
    let mut total_rate = 0.0;
    let rows = keyed
        .iter()
        .zip(&ids)
        .map(|((k, e), (id, count))| {
            let r = per_sec.get(id).copied().unwrap_or(0.0);
            total_rate += r;
            let mut row: Vec<Cell> = k.iter().map(|(_, v)| Cell::text(v.clone())).collect();
            row.resize_with(nkeys, || Cell::text(String::new()));
            row.push(rate(r));
            row.push(Cell::num(*count as f64, count.to_string()));
            if hist {
                for q in ["p50", "p99", "max"] {
                    let v = e[q].as_f64().unwrap_or(0.0);
                    row.push(Cell::num(v, show(v)));
                }
            }
            row
        })
        .collect();
    Table {
        summary: format!("{total_rate:.1} {what}/s, {} keys", es.len()),
        columns,
        rows,
        default_sort: nkeys,
    }
}

/// Operations in flight, oldest first, with their fields.
fn inflight(doc: &Value, what: &str) -> Table {
    let es = entries(doc);
    let mut columns = vec!["age".to_string()];
    if let Some(first) = es.first().and_then(|e| e["fields"].as_object()) {
        columns.extend(fields(first).into_iter().map(|(k, _)| k));
    }
    let rows: Vec<Vec<Cell>> = es
        .iter()
        .map(|e| {
            let age = e["age_ns"].as_f64().unwrap_or(0.0);
            let at_least = if e["seen"].as_bool() == Some(true) {
                ">="
            } else {
                ""
            };
            let mut row = vec![Cell::num(age, format!("{at_least}{}", duration(age)))];
            let f = e["fields"].as_object().map(fields).unwrap_or_default();
            row.extend(f.into_iter().map(|(_, v)| Cell::text(v)));
            row.resize_with(columns.len(), || Cell::text(String::new()));
            row
        })
        .collect();
    let oldest = es
        .iter()
        .filter_map(|e| e["age_ns"].as_f64())
        .fold(0.0, f64::max);
    Table {
        summary: format!("{} {what}, oldest {}", rows.len(), duration(oldest)),
        columns,
        rows,
        default_sort: 0,
    }
}

/// The frames of an allocation stack worth a column: the callers of the
/// allocator, innermost first.
fn stack_text(stack: &Value) -> String {
    let names: Vec<&str> = stack
        .as_array()
        .map(|f| f.iter().filter_map(|fr| fr["func"].as_str()).collect())
        .unwrap_or_default();
    names
        .iter()
        .skip(1)
        .take(3)
        .copied()
        .collect::<Vec<_>>()
        .join(" < ")
}

/// Outstanding allocations: the call rates since the previous refresh, the
/// bytes still allocated, the largest stacks.
fn leaks(doc: &Value, rates: &mut Rates) -> Table {
    let n = |k: &str| doc[k].as_u64().unwrap_or(0);
    let per_sec = rates.update(&[("allocs".into(), n("allocs")), ("frees".into(), n("frees"))]);
    let rows = entries(doc)
        .iter()
        .map(|e| {
            let b = e["bytes"].as_f64().unwrap_or(0.0);
            let c = e["count"].as_f64().unwrap_or(0.0);
            let age = e["oldest_ns"].as_f64().unwrap_or(0.0);
            vec![
                Cell::num(b, bytes(b)),
                Cell::num(c, format!("{c}")),
                Cell::num(age, duration(age)),
                Cell::text(stack_text(&e["stack"])),
            ]
        })
        .collect();
    Table {
        summary: format!(
            "{:.0} allocs/s, {:.0} frees/s, {} outstanding in {} blocks",
            per_sec["allocs"],
            per_sec["frees"],
            bytes(n("bytes") as f64),
            n("count")
        ),
        columns: ["bytes", "blocks", "oldest", "allocated by"]
            .map(String::from)
            .to_vec(),
        rows,
        default_sort: 0,
    }
}

/// The table of one aggregation's JSON totals; `what` names its unit
/// (`requests`, `hits`).
pub fn table(doc: &Value, rates: &mut Rates, what: &str) -> Table {
    match doc["kind"].as_str() {
        Some("inflight") => inflight(doc, what),
        Some("leaks") => leaks(doc, rates),
        Some("latency") => counts(doc, rates, true, what),
        _ => counts(doc, rates, false, what),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn latency_rows_have_names_rates_and_percentiles() {
        let doc = json!({"kind": "latency", "entries": [
            {"probe": "p", "by": {"opcode": 42, "opcode_name": "write"}, "count": 10,
             "p50": 1500, "p99": 2_000_000, "max": 3_000_000},
        ]});
        let mut rates = Rates::default();
        let t = table(&doc, &mut rates, "requests");
        assert_eq!(t.columns, ["opcode", "/s", "total", "p50", "p99", "max"]);
        assert_eq!(t.rows[0][0].text, "write (42)");
        assert_eq!(t.rows[0][3].text, "1.5us");
        assert_eq!(t.rows[0][4].text, "2.00ms");
        assert!(matches!(t.rows[0][1].key, Key::Num(r) if r > 0.0));
    }

    #[test]
    fn inflight_sorts_oldest_first() {
        let doc = json!({"kind": "inflight", "entries": [
            {"age_ns": 5, "seen": false, "fields": {"key": 1, "xid": 7}},
            {"age_ns": 9_000, "seen": true, "fields": {"key": 2, "xid": 8}},
        ]});
        let mut t = table(&doc, &mut Rates::default(), "requests");
        t.sort(t.default_sort, false);
        assert_eq!(t.columns, ["age", "xid"]);
        assert_eq!(t.rows[0][0].text, ">=9.0us");
        assert_eq!(t.rows[0][1].text, "8");
    }
}
