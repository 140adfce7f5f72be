//! USDT probes in CPython 3.11: `function__entry` names the functions of a
//! script with their file and first line.

use std::path::Path;

use ri_tests::{events, of_probe, require_bpf, ri};

const PY: &str = "/usr/bin/python3.11";

#[test]
fn function_entry_names_the_script_functions() {
    require_bpf();
    if !Path::new(PY).exists() {
        eprintln!("skipped: {PY} is not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("known.py");
    std::fs::write(
        &script,
        "def alpha(n):\n    return n + 1\ndef beta(n):\n    return alpha(n) * 2\nlist(map(beta, range(3)))\nlist(map(alpha, range(2)))\n",
    )
    .unwrap();
    let cmd = format!("{PY} {}", script.display());
    // CPython 3.11 reaches function__entry only on its tracing path, which
    // the `line` probe's semaphore turns on: enable it, emit nothing.
    let out = ri(&[
        "trace",
        "--json",
        "-c",
        &cmd,
        &format!("usdt:{PY}:function__entry(filename=str(arg0), funcname=str(arg1), lineno=arg2)"),
        &format!("usdt:{PY}:python:line if 0"),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let evs = events(&out.stdout);
    let file = script.display().to_string();
    let ours: Vec<_> = of_probe(&evs, ":function__entry")
        .into_iter()
        .filter(|e| e["filename"] == file.as_str())
        .collect();
    let count = |f: &str, line: u64| {
        ours.iter()
            .filter(|e| e["funcname"] == f && e["lineno"] == line)
            .count()
    };
    assert_eq!(count("beta", 3), 3, "{ours:?}");
    assert_eq!(count("alpha", 1), 5, "{ours:?}");
    assert_eq!(count("<module>", 0), 1, "{ours:?}");
    assert!(of_probe(&evs, ":line").is_empty());
}
