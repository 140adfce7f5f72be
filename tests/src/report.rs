//! `ri report` runs and what their reports and targets must show: thread
//! states, the JSON report's threads and stacks, for the report test
//! binaries.

use std::{
    path::PathBuf,
    process::{Command, Output, Stdio},
};

use serde_json::Value;

use crate::ri_bin;

/// Thread ids of a process.
pub fn tasks(pid: u32) -> Vec<u32> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// A thread's state letter.
pub fn task_state(pid: u32, tid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/stat")).ok()?;
    stat[stat.rfind(')')? + 2..].chars().next()
}

/// A thread's TracerPid.
pub fn tracer(pid: u32, tid: u32) -> Option<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("TracerPid:"))?
        .trim()
        .parse()
        .ok()
}

/// Asserts that no thread of `pid` is traced or in a stopped state.
pub fn assert_untouched(pid: u32) {
    for tid in tasks(pid) {
        assert_eq!(tracer(pid, tid), Some(0), "thread {tid} is still traced");
        let st = task_state(pid, tid);
        assert!(
            !matches!(st, Some('t') | Some('T')),
            "thread {tid} is left stopped ({st:?})"
        );
    }
}

/// Runs `ri report ARGS`.
pub fn report(args: &[&str]) -> Output {
    Command::new(ri_bin())
        .arg("report")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run ri report")
}

/// Runs `ri report --json ARGS`, expects success, parses the report.
pub fn report_json(args: &[&str]) -> Value {
    let mut a = vec!["--json"];
    a.extend_from_slice(args);
    let out = report(&a);
    assert!(
        out.status.success(),
        "ri report {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("bad JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
}

/// The thread named `name` in a report.
pub fn thread<'a>(r: &'a Value, name: &str) -> &'a Value {
    r["threads"]["threads"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == name)
        .unwrap_or_else(|| panic!("no thread {name} in {:#}", r["threads"]))
}

/// Function names of a thread's stack, innermost first.
pub fn functions(t: &Value) -> Vec<String> {
    t["stack"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["function"].as_str().unwrap_or("?").to_string())
        .collect()
}

/// Asserts that `names` appear in this order (not necessarily adjacent).
pub fn assert_in_order(t: &Value, names: &[&str]) {
    let funcs = functions(t);
    let mut at = 0;
    for n in names {
        match funcs[at..].iter().position(|f| f == n) {
            Some(i) => at += i + 1,
            None => panic!(
                "thread {}: expected {names:?} in order, stack is {funcs:?} ({})",
                t["name"], t["stack_note"]
            ),
        }
    }
}

/// A fresh directory under the system temporary directory.
pub fn tempdir(what: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "ri-report-{what}-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}
