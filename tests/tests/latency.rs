//! `ri latency` percentiles against the exact ones: the `calls` fixture
//! times each call of `timed_sleep` itself (CLOCK_MONOTONIC around the
//! call) and prints the durations; ri's p50/p99, mean, min and max must be
//! within 5% of the values computed from them.

use ri_tests::{events, fixture, require_bpf, ri};
use serde_json::Value;

/// The nearest-rank `q` quantile of sorted `v`.
fn exact(v: &[f64], q: f64) -> f64 {
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}

/// Runs `calls timed N MS [MS2]` under `ri latency --json` and checks each
/// statistic against the fixture's own durations.
fn check(n: u32, ms: &[u32]) {
    require_bpf();
    let calls = fixture("calls").display().to_string();
    let sleeps: Vec<String> = ms.iter().map(u32::to_string).collect();
    let cmd = format!("{calls} timed {n} {}", sleeps.join(" "));
    let out = ri(&[
        "latency",
        "--json",
        "-c",
        &cmd,
        &format!("u:{calls}:timed_sleep"),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "ri failed: {err}");
    let mut took: Vec<f64> = err
        .lines()
        .filter_map(|l| l.strip_prefix("took "))
        .map(|v| v.trim().parse().expect("a duration in ns"))
        .collect();
    assert_eq!(took.len(), n as usize, "the fixture's durations: {err}");
    took.sort_by(f64::total_cmp);
    let docs = events(&out.stdout);
    let entries = docs[0]["entries"].as_array().expect("entries");
    assert_eq!(entries.len(), 1, "{docs:?}");
    let e = &entries[0];
    assert_eq!(e["count"], n, "{e}");
    let mean = took.iter().sum::<f64>() / took.len() as f64;
    let want = [
        ("p50", exact(&took, 0.5)),
        ("p99", exact(&took, 0.99)),
        ("mean", mean),
        ("min", took[0]),
        ("max", took[took.len() - 1]),
    ];
    for (name, exact) in want {
        let got = e[name].as_f64().unwrap_or_else(|| panic!("no {name}: {e}"));
        let off = (got - exact).abs() / exact;
        assert!(
            off <= 0.05,
            "{ms:?} ms: {name} {got} vs exact {exact} ({:.1}% off)\n{e}\ndurations {took:?}",
            off * 100.0
        );
    }
}

#[test]
fn one_ms_sleeps() {
    check(40, &[1]);
}

#[test]
fn four_ms_sleeps() {
    check(30, &[4]);
}

#[test]
fn twenty_ms_sleeps() {
    check(30, &[20]);
}

#[test]
fn a_mix_of_two_and_twenty_ms() {
    check(30, &[2, 20]);
}

/// `hist` of small integers is exact: one bucket per value below 32.
#[test]
fn hist_of_small_integers_is_exact() {
    require_bpf();
    let calls = fixture("calls").display().to_string();
    let out = ri(&[
        "hist",
        "--json",
        "-c",
        &format!("{calls} calls 10"),
        &format!("u:{calls}:work_int3"),
        "--value",
        "arg1",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let docs = events(&out.stdout);
    let e: &Value = &docs[0]["entries"][0];
    // arg1 = 2i for i in 0..10: 0, 2, ..., 18.
    let buckets: Vec<(u64, u64)> = e["buckets"]
        .as_array()
        .expect("buckets")
        .iter()
        .map(|b| (b["lo"].as_u64().unwrap(), b["count"].as_u64().unwrap()))
        .collect();
    assert_eq!(
        buckets,
        (0..10).map(|i| (2 * i, 1)).collect::<Vec<_>>(),
        "{e}"
    );
    assert_eq!((e["min"].as_u64(), e["max"].as_u64()), (Some(0), Some(18)));
    assert_eq!((e["sum"].as_u64(), e["p50"].as_u64()), (Some(90), Some(8)));
    assert_eq!(e["mean"].as_f64(), Some(9.0));
}
