//! Wildcards at scale: 5,000 functions counted exactly through one
//! multi-uprobe link, attached and detached with the run, and a traced
//! process's code restored afterwards.

use std::{
    collections::BTreeMap,
    io::{BufRead, Read, Write},
    os::unix::fs::FileExt,
    process::Command,
};

use ri_tests::{fixture, require_bpf, ri, sigint, spawn_ri, start_fixture};

/// `ri count` output lines `u:fn_N: COUNT` as a map.
fn counts(stdout: &[u8]) -> BTreeMap<String, u64> {
    String::from_utf8_lossy(stdout)
        .lines()
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(": ")?;
            Some((k.to_string(), v.trim().parse().ok()?))
        })
        .collect()
}

/// Asserts every one of the 5,000 functions was counted `n` times.
fn assert_all(counts: &BTreeMap<String, u64>, n: u64) {
    let wrong: Vec<_> = counts.iter().filter(|(_, v)| **v != n).collect();
    assert!(wrong.is_empty(), "counts other than {n}: {wrong:?}");
    for f in [1000, 3456, 5999] {
        assert!(counts.contains_key(&format!("u:fn_{f}")), "fn_{f} missing");
    }
    assert_eq!(counts.len(), 5000, "one count per function");
}

#[test]
fn wildcard_of_5000_functions_counts_each_exactly_and_ends() {
    require_bpf();
    let many = fixture("many").display().to_string();
    // Every function is hit in one burst: over any budget, so it is off.
    let out = ri(&[
        "count",
        "--max-overhead",
        "off",
        "-c",
        &format!("{many} 3"),
        &format!("u:{many}:fn_*"),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("at 5000 sites"), "{err}");
    assert!(err.contains("1 multi-uprobe link)"), "{err}");
    assert_all(&counts(&out.stdout), 3);
    // Nothing is left attached: the fixture runs as before, unprobed.
    let again = Command::new(&many).arg("1").output().expect("run fixture");
    assert!(
        String::from_utf8_lossy(&again.stdout).starts_with("5000 functions"),
        "{again:?}"
    );
}

#[test]
fn pid_mode_wildcard_detaches_and_restores_the_code() {
    require_bpf();
    let many = fixture("many");
    let (mut child, mut out, mut line) = start_fixture("many", &["2", "wait"]);
    let addrs: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|a| u64::from_str_radix(a.trim_start_matches("0x"), 16).unwrap())
        .collect();
    assert_eq!(addrs.len(), 2, "fixture said {line:?}");
    let pid = child.id();
    let code = || {
        let mem = std::fs::File::open(format!("/proc/{pid}/mem")).unwrap();
        addrs
            .iter()
            .map(|a| {
                let mut b = [0u8; 8];
                mem.read_exact_at(&mut b, *a).unwrap();
                b
            })
            .collect::<Vec<_>>()
    };
    let before = code();
    let (mut ri, mut err) = spawn_ri(&[
        "count",
        "--max-overhead",
        "off",
        "-p",
        &pid.to_string(),
        &format!("u:{}:fn_*", many.display()),
    ]);
    // Read stdout meanwhile: 5,000 lines fill a pipe.
    let mut ri_out = ri.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = ri_out.read_to_end(&mut v);
        v
    });
    let mut attached = String::new();
    err.read_line(&mut attached).unwrap();
    assert!(
        attached.contains("1 multi-uprobe link)"),
        "attach line: {attached}"
    );
    let during = code();
    assert!(
        during.iter().zip(&before).all(|(d, b)| d != b),
        "every probed entry should carry a breakpoint while attached"
    );
    let mut stdin = child.stdin.take().unwrap();
    writeln!(stdin).unwrap();
    line.clear();
    out.read_line(&mut line).unwrap();
    assert!(line.starts_with("5000 functions"), "fixture said {line:?}");
    sigint(&mut ri);
    let stdout = reader.join().unwrap();
    let mut rest = String::new();
    err.read_to_string(&mut rest).unwrap();
    assert_all(&counts(&stdout), 2);
    assert_eq!(code(), before, "detaching must restore the code bytes");
    writeln!(stdin).unwrap();
    assert!(child.wait().unwrap().success(), "{rest}");
}
