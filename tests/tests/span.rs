//! `ri latency --begin/--end` on m0d: a FOM is queued by `m0_fom_queue` on
//! the RPC thread and finished by `m0_fom_fini` on a handler thread. Under a
//! real m0client load, the spans counted per opcode must equal what the
//! service itself counted as served over the same window.

use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    sync::mpsc,
    thread::sleep,
    time::Duration,
};

use ri_tests::{fixture, m0sim::M0d, require_bpf, ri_bin};
use serde_json::Value;

/// m0sim's opcodes (tests/m0sim/rpc.h) by the fop names its stats use.
const OPCODES: [(u64, &str); 7] = [
    (41, "read"),
    (42, "write"),
    (45, "getattr"),
    (49, "create"),
    (50, "delete"),
    (901, "stats"),
    (902, "objinfo"),
];

fn requests(stats: &Value) -> BTreeMap<String, u64> {
    stats["requests"]
        .as_object()
        .expect("requests in stats")
        .iter()
        .map(|(k, v)| (k.clone(), v.as_u64().unwrap_or(0)))
        .collect()
}

#[test]
fn fom_queue_to_fini_per_opcode_matches_the_service_counters() {
    require_bpf();
    let m0d = M0d::start();
    let bin = fixture("m0d");
    let bin = bin.display();
    let mut ri = Command::new(ri_bin())
        .args(["latency", "--json", "-p", &m0d.pid.to_string(), "--begin"])
        .arg(format!(
            "u:{bin}:m0_fom_queue(key=fom, op=fom->fo_fop->f_type->ft_rpc_item_type.rit_opcode)"
        ))
        .arg("--end")
        .arg(format!("u:{bin}:m0_fom_fini(key=fom)"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start ri latency");
    // Wait until ri has attached before the window opens.
    let (tx, rx) = mpsc::channel();
    let stderr = ri.stderr.take().expect("ri stderr");
    let reader = std::thread::spawn(move || {
        let mut all = String::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("attached") {
                let _ = tx.send(());
            }
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    if rx.recv_timeout(Duration::from_secs(20)).is_err() {
        let _ = ri.kill();
        let _ = ri.wait();
        panic!("ri did not attach: {}", reader.join().unwrap_or_default());
    }
    // Nothing is in flight at either end of the window: the load starts
    // after the first stats and has ended before the second.
    let a = requests(&m0d.stats());
    let load = m0d.load(200, 1.5, "span");
    let summary = load.finish(Duration::from_secs(30));
    assert_eq!(summary["total_errors"], 0, "{summary}");
    sleep(Duration::from_millis(300));
    let b = requests(&m0d.stats());
    // SAFETY: a signal to our own child.
    unsafe { libc::kill(ri.id() as i32, libc::SIGINT) };
    let out = ri.wait_with_output().expect("ri output");
    let err = reader.join().unwrap_or_default();
    assert!(out.status.success(), "ri failed: {err}");
    let text = String::from_utf8_lossy(&out.stdout);
    let doc: Value = serde_json::from_str(text.trim()).expect("one JSON document");
    assert_eq!(doc["kind"], "latency", "{doc}");
    let mut spans = BTreeMap::new();
    for e in doc["entries"].as_array().expect("entries") {
        let op = e["by"]["op"].as_u64().expect("op");
        let name = OPCODES
            .iter()
            .find(|(o, _)| *o == op)
            .map_or_else(|| format!("opcode {op}"), |(_, n)| n.to_string());
        let count = e["count"].as_u64().expect("count");
        let in_buckets: u64 = e["buckets"]
            .as_array()
            .expect("buckets")
            .iter()
            .map(|b| b["count"].as_u64().unwrap_or(0))
            .sum();
        assert_eq!(count, in_buckets, "{e}");
        assert!(e["p50"].as_u64() <= e["p99"].as_u64(), "{e}");
        *spans.entry(name).or_insert(0u64) += count;
    }
    let served: BTreeMap<String, u64> = b
        .iter()
        .map(|(k, v)| (k.clone(), v - a.get(k).copied().unwrap_or(0)))
        .filter(|(_, v)| *v > 0)
        .collect();
    assert!(served.get("write").copied().unwrap_or(0) > 20, "{served:?}");
    assert_eq!(spans, served, "ri's spans vs m0d's counters; ri: {err}");
    m0d.stop();
}
