//! A fleet session's hosts: which host a line or print belongs to, and where in the bundle each host's part goes.

use std::collections::BTreeMap;

use serde_json::Value;

/// `rel` under a host's part of the bundle (`hosts/HOST/rel`), or `rel`.
pub fn host_file(host: Option<&str>, rel: &str) -> String {
    match host {
        Some(h) => format!("hosts/{}/{rel}", h.replace(['/', '\\'], "_")),
        None => rel.to_string(),
    }
}

/// The host a line names: an event's or a print's `host` (also inside a
/// stored print's `print`).
pub fn host_of(v: &Value) -> Option<String> {
    v["host"]
        .as_str()
        .or(v["print"]["host"].as_str())
        .map(String::from)
}

/// A fleet print split by host: an interval print names its host; a final
/// print keyed `by.host` becomes one final print per host.
pub fn per_host(v: Value) -> Vec<(Option<String>, Value)> {
    if let Some(h) = host_of(&v) {
        return vec![(Some(h), v)];
    }
    let Some(entries) = v["entries"].as_array() else {
        return vec![(None, v)];
    };
    if entries.is_empty() || entries.iter().any(|e| !e["by"]["host"].is_string()) {
        return vec![(None, v)];
    }
    let mut by: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for e in entries {
        let mut e = e.clone();
        let h = e["by"]["host"].as_str().unwrap_or_default().to_string();
        if let Some(m) = e["by"].as_object_mut() {
            m.remove("host");
        }
        by.entry(h).or_default().push(e);
    }
    by.into_iter()
        .map(|(h, entries)| {
            let mut p = v.clone();
            if let Some(m) = p.as_object_mut() {
                m.remove("hosts");
                m.insert("host".into(), Value::String(h.clone()));
                m.insert("entries".into(), Value::Array(entries));
            }
            (Some(h), p)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fleet_final_print_splits_by_host() {
        let v = serde_json::json!({"type": "final", "kind": "count", "hosts": ["n1", "n2"], "entries": [
            {"probe": "u:f", "by": {"host": "n1"}, "count": 2},
            {"probe": "u:f", "by": {"host": "n2"}, "count": 3}]});
        let parts = per_host(v);
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[1].0.as_deref(), Some("n2"));
        assert_eq!(parts[1].1["entries"][0]["count"], 3);
        assert!(parts[1].1["entries"][0]["by"].get("host").is_none());
        let one = serde_json::json!({"host": "n1", "type": "interval", "entries": []});
        assert_eq!(per_host(one)[0].0.as_deref(), Some("n1"));
        assert_eq!(
            host_file(Some("n1"), "events/q.jsonl.zst"),
            "hosts/n1/events/q.jsonl.zst"
        );
    }
}
