//! An aggregation print stored as JSON (a session bundle's) written as the
//! live command's text, through the live commands' own row writers.

use std::{io::Write, rc::Rc};

use serde_json::{Map, Value as Json};

use super::{
    inflight,
    leaks::{self, Totals},
    render::{
        HistStats, KeyPart, LOG2_GROUPS, Moments, count_line, hist_lines, interval_mark, key_line,
    },
};
use crate::stack::Resolved;

/// Writes the text the live command printed for `print` (one `--json`
/// print of `ri count|hist|latency|inflight|leaks`). Keys that were whole
/// objects show as their JSON on one line.
pub fn print_text(w: &mut impl Write, print: &Json) -> std::io::Result<()> {
    let last = print["type"] == "final";
    let entries = print["entries"].as_array().map_or(&[][..], Vec::as_slice);
    match print["kind"].as_str() {
        Some("inflight") => inflight_text(w, entries),
        Some("leaks") => leaks_text(w, print, entries, last),
        kind => {
            interval_mark(w, last)?;
            let time = kind == Some("latency");
            for e in entries {
                table_row(w, e, time)?;
            }
            Ok(())
        }
    }
}

/// A count's or histogram's row.
fn table_row(w: &mut impl Write, e: &Json, time: bool) -> std::io::Result<()> {
    let key = parts(&e["by"]);
    let short = short_name(e["probe"].as_str().unwrap_or("?"));
    let count = e["count"].as_u64().unwrap_or(0);
    let Some(buckets) = e["buckets"].as_array() else {
        return count_line(w, &short, &key, count, e["partial"] == true);
    };
    key_line(w, &short, &key, ":")?;
    let mut groups = [0; LOG2_GROUPS];
    for b in buckets {
        let lo = b["lo"].as_u64().unwrap_or(0);
        groups[(u64::BITS - lo.leading_zeros()) as usize] += b["count"].as_u64().unwrap_or(0);
    }
    let int = |k: &str| {
        let v = &e[k];
        v.as_i64()
            .map(i128::from)
            .or(v.as_u64().map(i128::from))
            .or(v.as_f64().map(|f| f as i128))
            .unwrap_or(0)
    };
    let h = HistStats {
        groups,
        moments: Moments {
            count,
            sum: int("sum"),
            min: int("min"),
            max: int("max"),
        },
        quantiles: [int("p50"), int("p90"), int("p99")],
    };
    // Only a signed value can be below zero; a signed histogram without
    // one prints as an unsigned one.
    hist_lines(w, &h, h.moments.min < 0, time)
}

/// An inflight print: the count, then a row per operation.
fn inflight_text(w: &mut impl Write, entries: &[Json]) -> std::io::Result<()> {
    writeln!(w, "{} in flight", entries.len())?;
    for e in entries {
        let short = short_name(e["probe"].as_str().unwrap_or("?"));
        let op = inflight::Row {
            age_ns: e["age_ns"].as_u64().unwrap_or(0),
            seen: e["seen"] == true,
            pid: e["pid"].as_u64().unwrap_or(0),
            tid: e["tid"].as_u64().unwrap_or(0),
            short: &short,
        };
        inflight::row(w, &op, &parts(&e["fields"]))?;
    }
    Ok(())
}

/// A leaks print: the totals, then the top stacks.
fn leaks_text(
    w: &mut impl Write,
    print: &Json,
    entries: &[Json],
    last: bool,
) -> std::io::Result<()> {
    let n = |v: &Json| v.as_u64().unwrap_or(0);
    let t = Totals {
        allocs: n(&print["allocs"]),
        frees: n(&print["frees"]),
        seconds: print["seconds"].as_f64().unwrap_or(0.0),
        bytes: n(&print["bytes"]),
        count: n(&print["count"]),
        stacks: n(&print["stacks"]) as usize,
    };
    let stacks: Vec<Resolved> = entries
        .iter()
        .map(|e| Resolved::from_json(&e["stack"]).unwrap_or_default())
        .collect();
    let rows: Vec<leaks::Row> = entries
        .iter()
        .zip(&stacks)
        .map(|(e, stack)| leaks::Row {
            bytes: n(&e["bytes"]),
            count: n(&e["count"]),
            pid: n(&e["pid"]),
            age_ns: n(&e["oldest_ns"]),
            stack,
        })
        .collect();
    leaks::text(w, &t, &rows, last)
}

/// A print's `by` (or `fields`) object as key parts: `LABEL_name` entries
/// name the value before them, arrays of frames are stacks.
fn parts(by: &Json) -> Vec<KeyPart> {
    let Some(m) = by.as_object() else {
        return Vec::new();
    };
    m.iter()
        .filter(|(k, _)| !is_name(m, k))
        .map(|(k, v)| {
            let stack = match v {
                Json::Array(_) => Resolved::from_json(v),
                Json::Null if k == "stack" => Resolved::from_json(v),
                _ => None,
            };
            let text = match v {
                Json::String(s) => s.clone(),
                Json::Null => "<fault>".into(),
                v => v.to_string(),
            };
            KeyPart {
                label: k.clone(),
                text,
                json: v.clone(),
                stack: stack.map(Rc::new),
                raw: 0,
                name: m
                    .get(&format!("{k}_name"))
                    .and_then(Json::as_str)
                    .map(str::to_string),
            }
        })
        .collect()
}

/// `k` is `LABEL_name` naming the value of a `LABEL` in `m`.
fn is_name(m: &Map<String, Json>, k: &str) -> bool {
    k.strip_suffix("_name")
        .is_some_and(|label| m.contains_key(label))
}

/// A site's short name from its full one: `u:FUNC` for
/// `uprobe:PATH:FUNC`, `ur:FUNC` for a return, `usdt:PROVIDER:NAME`.
fn short_name(full: &str) -> String {
    let mut words = full.rsplit(':');
    let last = words.next().unwrap_or(full);
    match full.split(':').next() {
        Some("uprobe") => format!("u:{last}"),
        Some("uretprobe") => format!("ur:{last}"),
        Some("usdt") => format!("usdt:{}:{last}", words.next().unwrap_or("")),
        _ => full.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_names() {
        assert_eq!(short_name("uprobe:/usr/bin/m0d:fom_tick"), "u:fom_tick");
        assert_eq!(short_name("uretprobe:/x:f+0x4"), "ur:f+0x4");
        assert_eq!(short_name("usdt:/x:motr:fom_begin"), "usdt:motr:fom_begin");
        assert_eq!(short_name("?"), "?");
    }

    fn text(print: &str) -> String {
        let mut out = Vec::new();
        print_text(&mut out, &serde_json::from_str(print).unwrap()).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn counts_keep_names_and_stacks() {
        let t = text(
            r#"{"type":"interval","kind":"count","entries":[{"probe":"uprobe:/m0d:m0_alloc","by":{"opcode":7,"opcode_name":"WRITE","stack":[{"addr":"0x10","func":"main","offset":4,"file":null,"line":null}]},"count":3,"partial":true}]}"#,
        );
        assert_eq!(
            t,
            "--- interval\nu:m0_alloc[opcode=7 (WRITE)]: 3 (partial: detached by the overhead budget)\n    main+0x4\n"
        );
    }

    #[test]
    fn histograms_show_bars_and_the_stored_numbers() {
        let t = text(
            r#"{"type":"final","kind":"latency","entries":[{"probe":"uretprobe:/m0d:f","by":{},"count":3,"buckets":[{"lo":2000,"hi":2047,"count":2},{"lo":4096,"hi":4351,"count":1}],"sum":8200,"mean":2733.3,"min":2000,"max":4200,"p50":2000,"p90":4200,"p99":4200}]}"#,
        );
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[0], "ur:f:");
        assert!(
            lines[1].starts_with("[1K, 2K)") && lines[1].contains(" 2 |"),
            "{t}"
        );
        assert!(
            lines[2].starts_with("[2K, 4K)") && lines[2].contains(" 0 |"),
            "{t}"
        );
        assert!(lines[3].starts_with("[4K, 8K)"), "{t}");
        assert_eq!(
            lines[4],
            "count 3  mean 2.73 us  min 2.00 us  p50 ~2.00 us  p90 ~4.20 us  p99 ~4.20 us  max 4.20 us"
        );
    }

    #[test]
    fn inflight_and_leaks_rows() {
        let t = text(
            r#"{"type":"interval","kind":"inflight","entries":[{"probe":"uprobe:/m0d:m0_fom_queue","pid":7,"tid":8,"age_ns":1500000,"seen":true,"fields":{"key":"0x10","opcode":3}}]}"#,
        );
        assert_eq!(
            t,
            "1 in flight\n >=1.50 ms  pid=7 tid=8  u:m0_fom_queue  key=0x10 opcode=3\n"
        );
        let t = text(
            r#"{"type":"final","kind":"leaks","bytes":96,"count":3,"stacks":2,"allocs":10,"frees":7,"seconds":2.0,"entries":[{"pid":7,"bytes":64,"count":2,"oldest_ns":2000000000,"stack":[{"addr":"0x20","func":"grow","offset":8,"file":"a.c","line":3}]}]}"#,
        );
        assert_eq!(
            t,
            "10 allocation calls and 7 free calls in 2.0 s (5/s, 4/s)\n\
             96 bytes in 3 allocations outstanding, from 2 stacks (top 1 by bytes)\n\
             64 bytes in 2 allocations from pid 7 (oldest 2.00 s):\n    grow+0x8 (a.c:3)\n"
        );
    }
}
