//! User stacks on the real kernel: `--stack` on trace and count against the
//! known call chains of the `stacks` fixture, folded lines, an SVG flame
//! graph parsed as XML, and `ri leaks` against the fixture's own list of
//! what it leaked, and on m0d under client load.

use std::process::Command;

use ri_tests::{
    events, fixture,
    m0sim::{M0d, M0dConfig},
    require_bpf, ri, ri_ok,
};
use serde_json::Value;

fn stacks() -> String {
    fixture("stacks").display().to_string()
}

/// Function names of a JSON stack, innermost first.
fn names(stack: &Value) -> Vec<String> {
    stack
        .as_array()
        .expect("a stack is an array of frames")
        .iter()
        .map(|f| f["func"].as_str().unwrap_or("[unknown]").to_string())
        .collect()
}

/// The names up to and including `main` (libc's start-up frames vary).
fn to_main(stack: &Value) -> Vec<String> {
    let mut v = names(stack);
    if let Some(i) = v.iter().position(|n| n == "main") {
        v.truncate(i + 1);
    }
    v
}

const VIA_B: [&str; 5] = ["leaf", "chain_c", "chain_b", "chain_a", "main"];
const DIRECT: [&str; 3] = ["leaf", "chain_a", "main"];

#[test]
fn trace_stack_names_the_call_chain_in_order() {
    require_bpf();
    let s = stacks();
    let text = ri_ok(&[
        "trace",
        "--json",
        "--stack",
        "-c",
        &format!("{s} chain 1"),
        &format!("u:{s}:leaf(i=arg0)"),
    ]);
    let evs = events(text.as_bytes());
    assert_eq!(evs.len(), 8, "{evs:?}");
    let chains: Vec<Vec<String>> = evs.iter().map(|e| to_main(&e["stack"])).collect();
    for c in &chains[..3] {
        assert_eq!(c, &VIA_B, "{chains:?}");
    }
    for c in &chains[3..] {
        assert_eq!(c, &DIRECT, "{chains:?}");
    }
    // Frames carry address, offset and file:line from DWARF.
    let leaf = &evs[0]["stack"][0];
    assert!(leaf["addr"].as_str().unwrap().starts_with("0x"));
    assert_eq!(leaf["offset"], 0);
    assert!(leaf["file"].as_str().unwrap().ends_with("stacks.c"));
    assert!(leaf["line"].as_u64().unwrap() > 0);
}

#[test]
fn trace_stack_text_has_one_frame_per_line() {
    require_bpf();
    let s = stacks();
    let text = ri_ok(&[
        "trace",
        "-c",
        &format!("{s} chain 1"),
        &format!("u:{s}:chain_c(st=stack)"),
    ]);
    let first: Vec<&str> = text.lines().take(5).collect();
    assert!(first[0].starts_with("u:chain_c pid="), "{text}");
    assert!(first[0].contains("st="), "{text}");
    for (line, name) in first[1..]
        .iter()
        .zip(["chain_c+0x0 (", "chain_b+", "chain_a+", "main+"])
    {
        assert!(line.starts_with(&format!("    {name}")), "{text}");
    }
}

#[test]
fn count_stack_gives_two_stacks_with_three_and_five() {
    require_bpf();
    let s = stacks();
    let text = ri_ok(&[
        "count",
        "--json",
        "--stack",
        "-c",
        &format!("{s} chain 1"),
        &format!("u:{s}:leaf"),
    ]);
    let doc: Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    let entries = doc["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 2, "{doc}");
    let mut got: Vec<(u64, Vec<String>)> = entries
        .iter()
        .map(|e| (e["count"].as_u64().unwrap(), to_main(&e["by"]["stack"])))
        .collect();
    got.sort();
    assert_eq!(got[0].0, 3);
    assert_eq!(got[0].1, VIA_B);
    assert_eq!(got[1].0, 5);
    assert_eq!(got[1].1, DIRECT);
}

#[test]
fn folded_lines_and_an_svg_flame_graph() {
    require_bpf();
    let s = stacks();
    let dir = tempfile::tempdir().unwrap();
    let svg = dir.path().join("out.svg");
    let text = ri_ok(&[
        "count",
        "--stack",
        "--folded",
        "--flamegraph",
        svg.to_str().unwrap(),
        "-c",
        &format!("{s} chain 1"),
        &format!("u:{s}:leaf"),
    ]);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(lines.iter().all(|l| l.starts_with("stacks;")), "{text}");
    assert!(
        lines
            .iter()
            .any(|l| l.ends_with(";main;chain_a;chain_b;chain_c;leaf 3")),
        "{text}"
    );
    assert!(
        lines.iter().any(|l| l.ends_with(";main;chain_a;leaf 5")),
        "{text}"
    );
    // The SVG is well-formed XML and names the functions.
    let check = Command::new("python3")
        .args([
            "-c",
            "import sys, xml.etree.ElementTree as E\n\
             t = E.parse(sys.argv[1]).getroot()\n\
             assert t.tag.endswith('svg'), t.tag\n\
             print(' '.join(x.text or '' for x in t.iter() if x.tag.endswith('title')))",
            svg.to_str().unwrap(),
        ])
        .output()
        .expect("python3");
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    let titles = String::from_utf8(check.stdout).unwrap();
    for f in ["main", "chain_a", "chain_b", "chain_c", "leaf", "stacks"] {
        assert!(titles.contains(&format!("{f} (")), "{f} missing: {titles}");
    }
}

/// The fixture's own list: `outstanding FUNC COUNT BYTES`.
fn own_list(stdout: &str) -> Vec<(String, u64, u64)> {
    stdout
        .lines()
        .filter_map(|l| {
            let mut w = l.strip_prefix("outstanding ")?.split(' ');
            Some((
                w.next()?.to_string(),
                w.next()?.parse().ok()?,
                w.next()?.parse().ok()?,
            ))
        })
        .collect()
}

#[test]
fn leaks_reports_the_known_leaks_by_stack() {
    require_bpf();
    let s = stacks();
    let text = ri_ok(&[
        "leaks",
        "--json",
        "-c",
        &format!("{s} leak 1"),
        "u:libc:malloc",
        "u:libc:free",
    ]);
    let own = own_list(&text);
    assert_eq!(own.len(), 2, "{text}");
    let doc: Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    assert_eq!(doc["kind"], "leaks");
    let entries = doc["entries"].as_array().unwrap();
    for (func, count, bytes) in own {
        let e = entries
            .iter()
            .find(|e| names(&e["stack"]).contains(&func))
            .unwrap_or_else(|| panic!("no stack through {func}: {doc}"));
        assert_eq!(e["count"], count, "{func}: {e}");
        assert_eq!(e["bytes"], bytes, "{func}: {e}");
        let chain = to_main(&e["stack"]);
        assert_eq!(chain, ["alloc_block", func.as_str(), "main"], "{e}");
    }
    // Largest first.
    let bytes: Vec<u64> = entries
        .iter()
        .map(|e| e["bytes"].as_u64().unwrap())
        .collect();
    assert!(bytes.windows(2).all(|w| w[0] >= w[1]), "{bytes:?}");
    assert!(doc["bytes"].as_u64().unwrap() >= 10400);
    // The fixture's 9 mallocs and 3 frees (libc's own stdio adds mallocs).
    assert!(doc["allocs"].as_u64().unwrap() >= 9, "{doc}");
    assert_eq!(doc["frees"], 3, "{doc}");
    assert!(doc["alloc_rate"].as_f64().unwrap() > 0.0, "{doc}");
}

#[test]
fn leaks_text_and_folded_by_bytes() {
    require_bpf();
    let s = stacks();
    let text = ri_ok(&[
        "leaks",
        "-c",
        &format!("{s} leak 1"),
        "u:libc:malloc",
        "u:libc:free",
        "--top",
        "2",
    ]);
    assert!(
        text.contains("10000 bytes in 2 allocations from pid "),
        "{text}"
    );
    assert!(text.contains("    alloc_block+0x"), "{text}");
    assert!(text.contains("    leak_big+0x"), "{text}");
    assert!(text.contains("(top 2 by bytes)"), "{text}");
    let text = ri_ok(&[
        "leaks",
        "--folded",
        "-c",
        &format!("{s} leak 1"),
        "u:libc:malloc",
        "u:libc:free",
    ]);
    assert!(
        text.lines()
            .any(|l| l.ends_with(";main;leak_small;alloc_block 400")),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.ends_with(";main;leak_big;alloc_block 10000")),
        "{text}"
    );
}

#[test]
fn leaks_on_m0d_under_load_shows_m0_alloc_callers() {
    require_bpf();
    // Requests take 20 ms each, so some of their blocks are always live.
    let m0d = M0d::start_with(M0dConfig {
        args: vec!["--handler-delay-us".into(), "20000".into()],
        ..Default::default()
    });
    let m0 = fixture("m0d").display().to_string();
    let load = m0d.load(200, 4.0, "leaks");
    let out = ri(&[
        "leaks",
        "--json",
        "-p",
        &m0d.pid.to_string(),
        "--duration",
        "2",
        "-i",
        "0.25",
        &format!("u:{m0}:m0_alloc"),
        &format!("u:{m0}:m0_free"),
    ]);
    drop(load);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let text = String::from_utf8_lossy(&out.stdout);
    let docs: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(docs.len() >= 4, "{text}");
    let entries: Vec<&Value> = docs
        .iter()
        .flat_map(|d| d["entries"].as_array().unwrap())
        .collect();
    assert!(!entries.is_empty(), "{text}");
    for e in entries {
        let n = names(&e["stack"]);
        // The stack is taken at m0_alloc's return: its caller comes first.
        assert!(n.len() >= 2, "{e}");
        assert_ne!(n[0], "[unknown]", "{e}");
        assert!(e["bytes"].as_u64().unwrap() > 0);
    }
    assert!(stderr.contains("ri: attached 3 probes"), "{stderr}");
    // A few thousand allocations from a few hundred paths: none lost.
    assert!(!stderr.contains("stacks lost"), "{stderr}");
}
