//! `ri -H`: one command on several "nodes" (namespaces with their own sshd
//! and m0d, tests/src/fleet.rs) through real OpenSSH: exact merges, failed
//! hosts named, no remote ri left after the local one is killed, changed
//! host keys refused.

use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader, Read},
    process::{Child, Stdio},
    time::{Duration, Instant},
};

use ri_tests::{
    fleet::{Fleet, probes_on},
    m0sim::OPS,
};
use serde_json::Value;

/// How the remote ri picks each node's m0d: its own copy, found on the
/// node's PATH, probed file-wide. (With process selection by name this
/// becomes `["--comm", "m0d"]`.)
const SELECT: [&str; 2] = ["--target", "m0d"];

/// Starts a fleet command and waits until every host printed `attached`.
fn start_attached(
    fleet: &Fleet,
    args: &[&str],
) -> (
    Child,
    std::thread::JoinHandle<String>,
    std::thread::JoinHandle<String>,
) {
    let mut child = fleet
        .ri(&fleet.hosts(), args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start ri");
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut attached = std::collections::BTreeSet::new();
    let mut seen = String::new();
    while attached.len() < fleet.nodes.len() {
        let mut line = String::new();
        assert!(
            err.read_line(&mut line).unwrap() > 0,
            "ri exited before every host attached:\n{seen}"
        );
        seen.push_str(&line);
        if line.contains("attached") {
            attached.insert(line.split(':').next().unwrap_or("").to_string());
        }
    }
    let mut out = child.stdout.take().unwrap();
    let o = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let e = std::thread::spawn(move || {
        let mut s = seen;
        let _ = err.read_to_string(&mut s);
        s
    });
    (child, o, e)
}

/// Ctrl-C, then the output.
fn stop(
    mut child: Child,
    out: std::thread::JoinHandle<String>,
    err: std::thread::JoinHandle<String>,
) -> (String, String) {
    // SAFETY: signals our child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let st = child.wait().unwrap();
    let (out, err) = (out.join().unwrap(), err.join().unwrap());
    assert!(st.success(), "ri failed ({st}):\n{err}");
    (out, err)
}

/// The last JSON line of `out` (the merged final print).
fn final_doc(out: &str) -> Value {
    out.lines()
        .rev()
        .find_map(|l| {
            serde_json::from_str::<Value>(l)
                .ok()
                .filter(|v| v["type"] == "final")
        })
        .unwrap_or_else(|| panic!("no final print in:\n{out}"))
}

#[test]
fn merged_counts_and_histograms_equal_the_nodes_own() {
    let mut fleet = Fleet::new(3);
    for n in &mut fleet.nodes {
        n.start_m0d();
    }
    let mut ops_args = vec!["run", "motr.ops", "--json"];
    ops_args.extend(SELECT);
    let mut fops_args = vec!["run", "motr.fops", "--json"];
    fops_args.extend(SELECT);
    // A value each request brings (its xid): the same in every session.
    let xid = [
        "hist",
        "u:m0d:m0_fom_fini",
        "--json",
        "--value",
        "fom->fo_fop->f_item.ri_header.osr_xid",
    ];
    let mut by_host = xid.to_vec();
    by_host.extend(["--by", "host"]);
    let ops = start_attached(&fleet, &ops_args);
    let fops = start_attached(&fleet, &fops_args);
    let hist = start_attached(&fleet, &xid);
    let split = start_attached(&fleet, &by_host);
    for n in &mut fleet.nodes {
        n.load(150, 2.0);
    }
    for n in &mut fleet.nodes {
        n.finish_loads();
    }
    std::thread::sleep(Duration::from_millis(300));
    let (ops_out, ops_err) = stop(ops.0, ops.1, ops.2);
    let (fops_out, _) = stop(fops.0, fops.1, fops.2);
    let (hist_out, _) = stop(hist.0, hist.1, hist.2);
    let (split_out, _) = stop(split.0, split.1, split.2);

    // Per opcode: the merged count is the sum of every node's own counter.
    let mut want: BTreeMap<String, u64> = BTreeMap::new();
    for n in &fleet.nodes {
        let stats = n.stats();
        for (name, v) in stats["requests"].as_object().unwrap() {
            *want.entry(name.clone()).or_default() += v.as_u64().unwrap();
        }
    }
    let doc = final_doc(&ops_out);
    assert_eq!(doc["hosts"].as_array().unwrap().len(), 3, "{doc}");
    let mut got: BTreeMap<String, u64> = BTreeMap::new();
    for e in doc["entries"].as_array().unwrap() {
        // Names come from the processes with -p/--comm; else the opcode's.
        let op = e["by"]["opcode"].as_u64().expect("opcode");
        let name = e["by"]["opcode_name"]
            .as_str()
            .map(String::from)
            .unwrap_or_else(|| {
                let (_, n) = OPS
                    .iter()
                    .find(|(o, _)| *o == op)
                    .unwrap_or_else(|| panic!("opcode {op}: {e}\n{ops_err}"));
                n.to_string()
            });
        *got.entry(name).or_default() += e["count"].as_u64().unwrap();
    }
    want.retain(|_, v| *v > 0);
    assert!(!want.is_empty(), "the loads served nothing");
    assert_eq!(got, want, "ri's merged counts vs the nodes' own\n{ops_err}");

    // Latency per opcode: every request the nodes served, merged.
    let mut latency: BTreeMap<String, u64> = BTreeMap::new();
    for e in final_doc(&fops_out)["entries"].as_array().unwrap() {
        let op = e["by"]["opcode"].as_u64().expect("opcode");
        let (_, name) = OPS.iter().find(|(o, _)| *o == op).expect("known opcode");
        *latency.entry(name.to_string()).or_default() += e["count"].as_u64().unwrap();
    }
    assert_eq!(latency, want, "merged latency counts vs the nodes' own");

    // Histogram buckets: merged = the three hosts' added, bucket by bucket,
    // and the merged percentiles are those of the merged buckets.
    let merged = final_doc(&hist_out);
    let apart = final_doc(&split_out);
    let mut sum: BTreeMap<u64, u64> = BTreeMap::new();
    let mut hosts = std::collections::BTreeSet::new();
    let (mut min, mut max) = (u64::MAX, 0);
    for e in apart["entries"].as_array().unwrap() {
        let host = e["by"]["host"]
            .as_str()
            .expect("every entry names its host");
        hosts.insert(host.to_string());
        min = min.min(e["min"].as_u64().unwrap());
        max = max.max(e["max"].as_u64().unwrap());
        for b in e["buckets"].as_array().unwrap() {
            *sum.entry(b["lo"].as_u64().unwrap()).or_default() += b["count"].as_u64().unwrap();
        }
    }
    assert_eq!(hosts.len(), 3, "{apart}");
    let entries = merged["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 1, "{merged}");
    let whole: BTreeMap<u64, u64> = entries[0]["buckets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| (b["lo"].as_u64().unwrap(), b["count"].as_u64().unwrap()))
        .collect();
    assert_eq!(whole, sum, "merged buckets vs per-host buckets added");
    assert_eq!(
        (entries[0]["min"].as_u64(), entries[0]["max"].as_u64()),
        (Some(min), Some(max))
    );
    let total: u64 = sum.values().sum();
    assert_eq!(entries[0]["count"].as_u64(), Some(total));
    let rank = total.div_ceil(2);
    let mut before = 0;
    let p50_bucket = whole
        .iter()
        .find(|(_, c)| {
            before += **c;
            before >= rank
        })
        .map(|(lo, _)| *lo)
        .unwrap();
    let p50 = entries[0]["p50"].as_u64().unwrap();
    assert!(p50 >= p50_bucket, "p50 {p50} below its bucket {p50_bucket}");
}

#[test]
fn a_host_without_sshd_is_named_and_the_others_report() {
    let mut fleet = Fleet::new(3);
    for n in &mut fleet.nodes {
        n.start_m0d();
    }
    fleet.nodes[1].stop_sshd();
    let out = fleet
        .ri(&fleet.hosts(), &["ctl", "--json", "--discover"])
        .output()
        .expect("run ri");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    let failed: Vec<&str> = stderr.lines().filter(|l| l.contains("failed:")).collect();
    assert_eq!(failed.len(), 1, "{stderr}");
    assert!(
        failed[0].starts_with("ri: n2: failed: unreachable"),
        "{stderr}"
    );
    let hosts: Vec<String> = stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|v| v["host"].as_str().map(String::from))
        .collect();
    assert_eq!(hosts, ["n1", "n3"], "{stdout}");
}

#[test]
fn sigkill_of_the_local_ri_leaves_no_remote_ri_and_no_probe() {
    let mut fleet = Fleet::new(3);
    for n in &mut fleet.nodes {
        n.start_m0d();
    }
    let (mut child, _o, _e) = start_attached(&fleet, &["trace", "u:m0d:m0_fom_fini"]);
    for n in &fleet.nodes {
        assert!(!n.ri_processes().is_empty(), "no ri on {}", n.name);
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let t = Instant::now();
    loop {
        let left: Vec<String> = fleet
            .nodes
            .iter()
            .flat_map(|n| {
                let mut v: Vec<String> = n
                    .ri_processes()
                    .iter()
                    .map(|p| format!("{}: ri pid {p}", n.name))
                    .collect();
                v.extend(
                    probes_on(&n.dir.join("bin/m0d"))
                        .into_iter()
                        .map(|p| format!("{}: probe {p}", n.name)),
                );
                v
            })
            .collect();
        if left.is_empty() {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "left after 2 s: {left:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_changed_host_key_is_refused_in_one_line() {
    let mut fleet = Fleet::new(1);
    fleet.nodes[0].change_host_key();
    let out = fleet
        .ri("n1", &["ctl", "--discover"])
        .output()
        .expect("run ri");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(
        lines.len(),
        2,
        "one line for the host, one total:\n{stderr}"
    );
    assert_eq!(
        lines[0],
        "ri: n1: failed: host key changed (refused; check the host, then fix known_hosts)"
    );
}

#[test]
fn a_mutation_across_hosts_lists_them_needs_yes_and_is_audited_with_the_ssh_client() {
    let mut fleet = Fleet::new(2);
    for n in &mut fleet.nodes {
        n.start_m0d();
    }
    // The same pid in every node (until processes are selected by name).
    let pid = fleet.nodes[0].m0d_nspid().to_string();
    assert!(fleet.nodes.iter().all(|n| n.m0d_nspid().to_string() == pid));
    let out = fleet
        .ri(&fleet.hosts(), &["ctl", "-p", &pid, "reqh.pause"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("changes the target on 2 hosts")
            && err.contains("n1: ri ctl")
            && err.contains("n2: ri ctl"),
        "{err}"
    );
    assert!(err.contains("add --yes"), "{err}");
    let audit = |fleet: &Fleet| -> Vec<Value> {
        let out = fleet
            .ri(&fleet.hosts(), &["ctl", "-p", &pid, "--json", "audit"])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let sections: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(sections.len(), 2, "{text}");
        sections
    };
    for s in audit(&fleet) {
        assert_eq!(
            s["entries"].as_array().map(Vec::len),
            Some(0),
            "ran without --yes: {s}"
        );
    }
    let out = fleet
        .ri(&fleet.hosts(), &["ctl", "-p", &pid, "--yes", "reqh.pause"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for (s, n) in audit(&fleet).iter().zip(&fleet.nodes) {
        assert_eq!(s["host"], n.name.as_str());
        let e = s["entries"]
            .as_array()
            .unwrap()
            .last()
            .cloned()
            .expect("an audit entry");
        assert_eq!(e["cmd"], "reqh.pause", "{e}");
        assert_eq!(e["peer"]["ssh"]["user"], "root", "{e}");
        let client = e["peer"]["ssh"]["client"].as_str().unwrap_or_default();
        let local = format!("{}.1:", n.addr.rsplit_once('.').unwrap().0);
        assert!(client.starts_with(&local), "{e}");
    }
}

#[test]
fn push_copies_ri_once_by_hash_and_other_versions_are_named() {
    let fleet = Fleet::new(2);
    for n in &fleet.nodes {
        std::fs::remove_file(n.dir.join("bin/ri")).unwrap();
    }
    // n2 has an older ri on its PATH, one that does not know the protocol.
    let old = fleet.nodes[1].dir.join("bin/ri");
    std::fs::write(
        &old,
        "#!/bin/sh\necho \"error: unexpected argument '--remote-child' found\" >&2\nexit 2\n",
    )
    .unwrap();
    std::process::Command::new("chmod")
        .arg("755")
        .arg(&old)
        .status()
        .unwrap();
    let out = fleet
        .ri(&fleet.hosts(), &["ctl", "--discover"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("ri: n1: failed: ri missing on the host (install it or use --push)"),
        "{err}"
    );
    assert!(
        err.contains("ri: n2: failed: ri of another version"),
        "{err}"
    );

    let cached = |n: &ri_tests::fleet::Node| -> Vec<std::path::PathBuf> {
        std::fs::read_dir(n.dir.join("home/.cache/ri/bin"))
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default()
    };
    let pushed = fleet
        .ri(&fleet.hosts(), &["--push", "ctl", "--discover"])
        .output()
        .unwrap();
    assert!(
        pushed.status.success(),
        "{}",
        String::from_utf8_lossy(&pushed.stderr)
    );
    let first: Vec<_> = fleet.nodes.iter().map(cached).collect();
    for (c, n) in first.iter().zip(&fleet.nodes) {
        assert_eq!(c.len(), 1, "{}: {c:?}", n.name);
        let name = c[0].file_name().unwrap().to_string_lossy().into_owned();
        assert!(name.starts_with("ri-") && name.len() == 67, "{name}");
    }
    let mtime = |p: &std::path::Path| std::fs::metadata(p).unwrap().modified().unwrap();
    let before: Vec<_> = first.iter().map(|c| mtime(&c[0])).collect();
    let again = fleet
        .ri(&fleet.hosts(), &["--push", "ctl", "--discover"])
        .output()
        .unwrap();
    assert!(again.status.success());
    let after: Vec<_> = first.iter().map(|c| mtime(&c[0])).collect();
    assert_eq!(before, after, "the cached copy was pushed again");
}

/// Wall seconds of `cmd` (which must succeed).
fn timed(mut cmd: std::process::Command) -> f64 {
    let t = Instant::now();
    let out = cmd.output().expect("run");
    let secs = t.elapsed().as_secs_f64();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    secs
}

/// Median of `n` runs of `cmd()`.
fn median(n: usize, cmd: impl Fn() -> std::process::Command) -> f64 {
    let mut v: Vec<f64> = (0..n).map(|_| timed(cmd())).collect();
    v.sort_by(f64::total_cmp);
    v[n / 2]
}

/// `cargo xtask bench --fleet` runs this and writes bench/RESULTS-fleet.md
/// from its `FLEET-BENCH` line: what fanning out to 3 nodes adds over one,
/// cold (new connections) and warm (masters reused), and a simulation of
/// many hosts (many addresses, each its own ssh connection, over 3 sshds).
#[test]
#[ignore]
fn fleet_bench() {
    let sim: Vec<usize> = std::env::var("RI_FLEET_SIM")
        .unwrap_or_else(|_| "30,100".into())
        .split(',')
        .filter_map(|n| n.parse().ok())
        .collect();
    let mut fleet = Fleet::new(3);
    for n in &mut fleet.nodes {
        n.start_m0d();
    }
    let reps = 5;
    let cold_dir = |tag: &str| fleet.dir().join(format!("mux-{tag}"));
    // A fresh control directory per run: no master to reuse.
    let cold = |hosts: &str, args: &[&str], tag: &str| {
        let mut v = Vec::new();
        for i in 0..reps {
            let dir = cold_dir(&format!("{tag}{i}"));
            let mut c = fleet.ri(hosts, args);
            c.env("RI_SSH_CONTROL_DIR", &dir);
            v.push(timed(c));
            fleet.close_masters(&dir);
        }
        v.sort_by(f64::total_cmp);
        v[reps / 2]
    };
    let warm = |hosts: &str, args: &[&str]| {
        timed(fleet.ri(hosts, args));
        median(reps, || fleet.ri(hosts, args))
    };
    let discover = ["ctl", "--discover"];
    let m0d = fleet.nodes[0].dir.join("bin/m0d");
    let local_probe = format!("u:{}:m0_fom_fini", m0d.display());
    let count = ["count", "u:m0d:m0_fom_fini", "--duration", "0.3", "-q"];
    let local = median(reps, || {
        let mut c = std::process::Command::new(ri_tests::ri_bin());
        c.args(discover);
        c
    });
    let local_count = median(reps, || {
        let mut c = std::process::Command::new(ri_tests::ri_bin());
        c.args(["count", &local_probe, "--duration", "0.3", "-q"]);
        c
    });
    let all = fleet.hosts();
    let mut doc = serde_json::json!({
        "local_discover": local,
        "one_cold": cold("n1", &discover, "a"),
        "three_cold": cold(&all, &discover, "b"),
        "one_warm": warm("n1", &discover),
        "three_warm": warm(&all, &discover),
        "local_count": local_count,
        "one_count_warm": warm("n1", &count),
        "three_count_warm": warm(&all, &count),
    });
    let max = sim.iter().copied().max().unwrap_or(0);
    if max > 0 {
        let inventory = fleet.aliases(max);
        let names: Vec<String> = std::fs::read_to_string(&inventory)
            .unwrap()
            .lines()
            .skip(1)
            .map(String::from)
            .collect();
        let mut rows = Vec::new();
        for &n in &sim {
            let hosts = names[..n].join(",");
            let dir = cold_dir(&format!("sim{n}"));
            let mut c = fleet.ri(&hosts, &discover);
            c.env("RI_SSH_CONTROL_DIR", &dir);
            let c1 = timed(c);
            let mut c = fleet.ri(&hosts, &discover);
            c.env("RI_SSH_CONTROL_DIR", &dir);
            let w1 = timed(c);
            fleet.close_masters(&dir);
            rows.push(serde_json::json!({"hosts": n, "cold": c1, "warm": w1}));
        }
        doc["sim"] = serde_json::json!(rows);
    }
    // What one host sends for motr.fops under load (raw buckets), and the
    // merged print.
    for n in &mut fleet.nodes {
        n.load(150, 1.5);
    }
    let fops = [
        "run",
        "motr.fops",
        "--json",
        "--target",
        "m0d",
        "--duration",
        "2",
    ];
    let out = fleet.ri(&all, &fops).output().unwrap();
    let merged = String::from_utf8_lossy(&out.stdout);
    let version = String::from_utf8_lossy(&ri_tests::ri(&["--version"]).stdout).into_owned();
    let proto = format!(
        "--remote-child=1/{}",
        version.split_whitespace().nth(1).unwrap()
    );
    for n in &mut fleet.nodes {
        n.finish_loads();
    }
    // The remote side alone, as ssh would run it (stdin kept open).
    fleet.nodes[0].load(150, 1.5);
    let mut raw = fleet.nodes[0]
        .enter(&[
            ri_tests::ri_bin().to_str().unwrap(),
            &proto,
            "run",
            "motr.fops",
            "--target",
        ])
        .arg(&m0d)
        .args(["--duration", "1.5"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _stdin = raw.stdin.take();
    let mut raw_out = String::new();
    raw.stdout
        .take()
        .unwrap()
        .read_to_string(&mut raw_out)
        .unwrap();
    raw.wait().unwrap();
    for n in &mut fleet.nodes {
        n.finish_loads();
    }
    doc["fops_merged_bytes"] = merged.trim().len().into();
    doc["fops_host_bytes"] = raw_out.trim().len().into();
    println!("FLEET-BENCH {doc}");
}

#[test]
fn text_prints_merge_and_trace_lines_name_their_host_and_pid() {
    let mut fleet = Fleet::new(2);
    for n in &mut fleet.nodes {
        n.start_m0d();
    }
    let count = start_attached(&fleet, &["count", "u:m0d:m0_fom_fini"]);
    let trace = start_attached(&fleet, &["trace", "--json", "u:m0d:m0_fom_fini(fom=fom)"]);
    for n in &mut fleet.nodes {
        n.load(50, 1.0);
    }
    for n in &mut fleet.nodes {
        n.finish_loads();
    }
    std::thread::sleep(Duration::from_millis(300));
    let (count_out, _) = stop(count.0, count.1, count.2);
    let (trace_out, _) = stop(trace.0, trace.1, trace.2);
    let served: u64 = fleet
        .nodes
        .iter()
        .map(|n| ri_tests::m0sim::requests(&n.stats()))
        .sum();
    // One merged line for the probe: the nodes' requests together.
    assert_eq!(
        count_out.trim(),
        format!("u:m0_fom_fini: {served}"),
        "{count_out}"
    );
    let events: Vec<Value> = trace_out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert_eq!(events.len() as u64, served);
    for (i, n) in fleet.nodes.iter().enumerate() {
        let mine: Vec<&Value> = events
            .iter()
            .filter(|e| e["host"] == n.name.as_str())
            .collect();
        assert!(!mine.is_empty(), "no event from {}", n.name);
        let pid = fleet.nodes[i].m0d_nspid();
        assert!(
            mine.iter().all(|e| e["pid"].as_i64().is_some()),
            "{:?}",
            mine[0]
        );
        let _ = pid;
    }
}

#[test]
fn a_dropped_connection_ends_the_remote_ri_within_two_seconds() {
    let mut fleet = Fleet::new(1);
    fleet.nodes[0].start_m0d();
    let (mut child, _o, _e) = start_attached(&fleet, &["trace", "u:m0d:m0_fom_fini"]);
    let node = &fleet.nodes[0];
    assert!(!node.ri_processes().is_empty());
    node.link_down();
    let t = Instant::now();
    while !node.ri_processes().is_empty() || !probes_on(&node.dir.join("bin/m0d")).is_empty() {
        assert!(
            t.elapsed() < Duration::from_millis(2500),
            "the remote ri still runs {:?} after the link went down",
            t.elapsed()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// `ri session export BUNDLE --json -`: every line of every file.
fn session_lines(bundle: &std::path::Path) -> Vec<Value> {
    let out = std::process::Command::new(ri_tests::ri_bin())
        .args(["session", "export", bundle.to_str().unwrap(), "--json", "-"])
        .output()
        .expect("run ri session export");
    assert!(
        out.status.success(),
        "export: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("export line is JSON"))
        .collect()
}

#[test]
fn a_session_over_three_nodes_gives_one_bundle_with_a_part_per_host() {
    let mut fleet = Fleet::new(3);
    for n in &mut fleet.nodes {
        n.start_m0d();
    }
    let file = fleet.dir().join("fleet-session.toml");
    std::fs::write(
        &file,
        r#"
interval = "1s"
[targets]
comm = ["m0d"]
[instruments.ops]
run = "motr.ops"
[instruments.fini]
cmd = "trace 'u:m0d:m0_fom_fini(fom=fom)'"
[[triggers]]
name = "served"
when = "ops.count > 0"
actions = ["report", "snapshot"]
"#,
    )
    .unwrap();
    let bundle = fleet.dir().join("bundle");
    let mut cmd = fleet.ri(
        &fleet.hosts(),
        &[
            "session",
            "run",
            file.to_str().unwrap(),
            "-q",
            "--out",
            bundle.to_str().unwrap(),
        ],
    );
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let (mut session, out, err) = ri_tests::start_waiting(cmd, "instruments attached", true);
    for n in &mut fleet.nodes {
        n.load(40, 1.5);
    }
    for n in &mut fleet.nodes {
        n.finish_loads();
    }
    // Two intervals: each host's last interval print is in.
    std::thread::sleep(Duration::from_millis(2500));
    ri_tests::sigint(&mut session);
    let _ = out.join();
    let err = String::from_utf8_lossy(&err.join().unwrap()).into_owned();

    let m: Value =
        serde_json::from_str(&std::fs::read_to_string(bundle.join("manifest.json")).unwrap())
            .unwrap_or_else(|e| panic!("manifest: {e}\n{err}"));
    let names: Vec<String> = fleet.nodes.iter().map(|n| n.name.clone()).collect();
    assert_eq!(m["hosts"], serde_json::json!(names), "{err}");
    // Each host's part: its kernel and its m0d with the build-id.
    let parts = m["parts"].as_array().expect("parts");
    assert_eq!(parts.len(), 3, "{}", m["parts"]);
    for (p, n) in parts.iter().zip(&fleet.nodes) {
        assert_eq!(p["host"], n.name.as_str());
        assert!(!p["kernel"].as_str().unwrap_or("").is_empty(), "{p}");
        let t = &p["targets"][0];
        assert_eq!(t["comm"], "m0d", "{p}");
        assert_eq!(t["host"], n.name.as_str(), "{p}");
        assert!(t["build_id"].is_string(), "{p}");
        assert!(t["exe"].as_str().unwrap().ends_with("bin/m0d"), "{p}");
    }
    // Nothing lost, and each host's summary counted apart.
    assert_eq!(m["lost"], 0, "{err}");
    assert_eq!(m["losses_unknown"], serde_json::json!([]), "{err}");
    let lines = session_lines(&bundle);
    let fired = m["fired"].as_array().unwrap();
    assert_eq!(fired.len(), 1, "{}\n{err}", m["fired"]);
    for (n, node) in fleet.nodes.iter().enumerate() {
        let host = &node.name;
        let served = ri_tests::m0sim::requests(&node.stats());
        assert!(served > 0, "{host} served nothing");
        // Events: the host's part holds exactly its requests.
        let part = format!("hosts/{host}/events/fini.jsonl.zst");
        let events = lines.iter().filter(|l| l["file"] == part.as_str()).count() as u64;
        assert_eq!(events, served, "{host}: events in {part}\n{err}");
        let fini = m["instruments"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["name"] == "fini")
            .unwrap();
        assert_eq!(fini["hosts"][host]["events"], served, "{fini}\n{err}");
        assert_eq!(fini["hosts"][host]["lost"], 0, "{fini}");
        // Aggregations: the host's own final print counts its requests.
        let snaps = format!("hosts/{host}/snapshots/ops.jsonl.zst");
        let last = lines
            .iter()
            .rfind(|l| l["file"] == snaps.as_str() && l["line"]["print"]["type"] == "final")
            .unwrap_or_else(|| panic!("{host}: no final print in {snaps}\n{err}"));
        let counted: u64 = last["line"]["print"]["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["count"].as_u64().unwrap())
            .sum();
        assert_eq!(counted, served, "{host}: {last}");
        // The report action: each host's m0d reported in its part.
        let report = fired[0]["actions"][0]["files"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(Value::as_str)
            .find(|f| f.starts_with(&format!("hosts/{host}/reports/")))
            .unwrap_or_else(|| panic!("{host}: no report: {}", fired[0]));
        let r: Value =
            serde_json::from_str(&std::fs::read_to_string(bundle.join(report)).unwrap()).unwrap();
        assert_eq!(r["process"]["name"], "m0d", "{host} (node {n})");
    }
    // show and the Perfetto export read the fleet bundle.
    let show = std::process::Command::new(ri_tests::ri_bin())
        .args(["session", "show", bundle.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        show.status.success(),
        "{}",
        String::from_utf8_lossy(&show.stderr)
    );
    let pf = fleet.dir().join("fleet.pftrace");
    let ex = std::process::Command::new(ri_tests::ri_bin())
        .args(["session", "export", bundle.to_str().unwrap(), "--perfetto"])
        .arg(&pf)
        .output()
        .unwrap();
    assert!(
        ex.status.success(),
        "{}",
        String::from_utf8_lossy(&ex.stderr)
    );
    let bytes = std::fs::read(&pf).unwrap();
    for n in &fleet.nodes {
        let track = format!("host {}", n.name);
        assert!(
            bytes.windows(track.len()).any(|w| w == track.as_bytes()),
            "no track {track}"
        );
    }
}
