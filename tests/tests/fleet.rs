//! `ri -H`: one command on several "nodes" (namespaces with their own sshd
//! and m0d, tests/src/fleet.rs) through real OpenSSH: exact merges, failed
//! hosts named, no remote ri left after the local one is killed, changed
//! host keys refused.

use std::{
    collections::BTreeMap,
    io::Read,
    process::Stdio,
    time::{Duration, Instant},
};

use ri_tests::{
    fleet::{Fleet, final_doc, probes_on},
    m0sim::OPS,
};
use serde_json::Value;

/// How the remote ri picks each node's m0d: by name, as an operator
/// would (`ri -H ... run motr.ops --comm m0d`).
const SELECT: [&str; 2] = ["--comm", "m0d"];

#[test]
fn merged_counts_and_histograms_equal_the_nodes_own() {
    let mut fleet = Fleet::new(3);
    for n in &mut fleet.nodes {
        n.start_m0d();
    }
    let mut ops_args = vec!["run", "motr.ops", "--json"];
    ops_args.extend(SELECT);
    // The pack's binary named instead: m0d on each node's PATH.
    let fops_args = ["run", "motr.fops", "--json", "--target", "m0d"];
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
    let ops = fleet.start_all(&ops_args);
    let fops = fleet.start_all(&fops_args);
    let hist = fleet.start_all(&xid);
    let split = fleet.start_all(&by_host);
    for n in &mut fleet.nodes {
        n.load(150, 2.0);
    }
    for n in &mut fleet.nodes {
        n.finish_loads();
    }
    std::thread::sleep(Duration::from_millis(300));
    let (ops_out, ops_err) = ops.stop();
    let (fops_out, _) = fops.stop();
    let (hist_out, _) = hist.stop();
    let (split_out, _) = split.stop();

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
    let mut run = fleet.start_all(&["trace", "u:m0d:m0_fom_fini", "--comm", "m0d"]);
    for n in &fleet.nodes {
        assert!(!n.ri_processes().is_empty(), "no ri on {}", n.name);
    }
    run.kill();
    fleet.wait_clean(Duration::from_secs(2), "SIGKILL");
}

#[test]
fn text_prints_merge_and_trace_lines_name_their_host_and_pid() {
    let mut fleet = Fleet::new(2);
    for n in &mut fleet.nodes {
        n.start_m0d();
    }
    let count = fleet.start_all(&["count", "u:m0d:m0_fom_fini"]);
    let trace = fleet.start_all(&[
        "trace",
        "--json",
        "u:m0d:m0_fom_fini(fom=fom)",
        "--comm",
        "m0d",
    ]);
    let text = fleet.start_all(&["trace", "u:m0d:m0_fom_fini(fom=fom)"]);
    for n in &mut fleet.nodes {
        n.load(50, 1.0);
    }
    for n in &mut fleet.nodes {
        n.finish_loads();
    }
    std::thread::sleep(Duration::from_millis(300));
    let (count_out, _) = count.stop();
    let (trace_out, _) = trace.stop();
    let (text_out, _) = text.stop();
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
    // ri runs inside each node's pid namespace: its m0d's pid there.
    for n in &fleet.nodes {
        let mine: Vec<&Value> = events
            .iter()
            .filter(|e| e["host"] == n.name.as_str())
            .collect();
        assert!(!mine.is_empty(), "no event from {}", n.name);
        let pid = i64::from(n.m0d_nspid());
        assert!(pid < 1000, "{}: m0d is pid {pid} in its namespace", n.name);
        for e in mine {
            assert_eq!(e["pid"].as_i64(), Some(pid), "{}: {e}", n.name);
        }
    }
    // Plain text: every event line starts with its host.
    let lines: Vec<&str> = text_out.lines().filter(|l| !l.is_empty()).collect();
    assert_eq!(lines.len() as u64, served, "{text_out}");
    for n in &fleet.nodes {
        let prefix = format!("{}: ", n.name);
        let mine = lines.iter().filter(|l| l.starts_with(&prefix)).count();
        assert!(mine > 0, "no line from {}:\n{text_out}", n.name);
    }
    assert!(
        lines
            .iter()
            .all(|l| l.starts_with("n1: ") || l.starts_with("n2: ")),
        "{text_out}"
    );
}

#[test]
fn a_restarted_m0d_is_picked_up_under_comm_on_a_node() {
    let mut fleet = Fleet::new(1);
    fleet.nodes[0].start_m0d();
    let old = fleet.nodes[0].m0d_nspid();
    let run = fleet.start_all(&["run", "motr.ops", "--json", "--comm", "m0d"]);
    let node = &mut fleet.nodes[0];
    node.load(100, 1.0);
    node.finish_loads();
    let before = node.stats();
    node.stop_m0d();
    run.wait_stderr(&format!("n1: ri: pid {old} (m0d) exited: detached"), 10);
    node.start_m0d();
    let new = node.m0d_nspid();
    assert_ne!(new, old);
    run.wait_stderr(&format!("n1: ri: pid {new} (m0d) started: attached"), 10);
    node.load(100, 1.0);
    node.finish_loads();
    let after = node.stats();
    std::thread::sleep(Duration::from_millis(300));
    let (out, err) = run.stop();
    let mut want: BTreeMap<String, u64> = BTreeMap::new();
    for stats in [&before, &after] {
        for (name, v) in stats["requests"].as_object().unwrap() {
            *want.entry(name.clone()).or_default() += v.as_u64().unwrap();
        }
    }
    want.retain(|_, v| *v > 0);
    let mut got: BTreeMap<String, u64> = BTreeMap::new();
    for e in final_doc(&out)["entries"].as_array().unwrap() {
        let op = e["by"]["opcode"].as_u64().expect("opcode");
        let name = e["by"]["opcode_name"]
            .as_str()
            .map(String::from)
            .unwrap_or_else(|| {
                let (_, n) = OPS.iter().find(|(o, _)| *o == op).expect("known opcode");
                n.to_string()
            });
        *got.entry(name).or_default() += e["count"].as_u64().unwrap();
    }
    assert_eq!(got, want, "both m0d's requests, counted over ssh\n{err}");
}

#[test]
fn a_dropped_connection_ends_the_remote_ri_within_two_seconds() {
    let mut fleet = Fleet::new(1);
    fleet.nodes[0].start_m0d();
    let mut run = fleet.start_all(&["trace", "u:m0d:m0_fom_fini"]);
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
    run.kill();
}

#[test]
fn report_peek_inflight_and_leaks_name_their_host() {
    let mut fleet = Fleet::new(2);
    for n in &mut fleet.nodes {
        n.start_m0d();
    }
    let all = fleet.hosts();
    let run = |args: &[&str]| -> String {
        let out = fleet.ri(&all, args).output().expect("run ri");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{args:?}: {err}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    // Text: one `== host ==` section each, the node's m0d under its own pid.
    for args in [
        vec![
            "report",
            "--no-stacks",
            "--sections",
            "process",
            "--comm",
            "m0d",
        ],
        vec!["peek", "m0sim_trace_nr", "--comm", "m0d"],
    ] {
        let text = run(&args);
        let mut at = 0;
        for n in &fleet.nodes {
            let head = format!("== {} ==", n.name);
            let pid = format!("== pid {} (m0d) ==", n.m0d_nspid());
            let h = text[at..]
                .find(&head)
                .unwrap_or_else(|| panic!("{args:?}: no {head} after {at}:\n{text}"));
            let p = text[at + h..]
                .find(&pid)
                .unwrap_or_else(|| panic!("{args:?}: no {pid} under {head}:\n{text}"));
            at += h + p;
        }
    }
    // JSON: one object per process, naming its host.
    let peek = run(&["peek", "--json", "m0sim_trace_nr", "--comm", "m0d"]);
    let hosts: Vec<String> = peek
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .map(|v| v["host"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(hosts, ["n1", "n2"], "{peek}");

    // In-flight and leak rows carry their host, in JSON and as text.
    let inflight = [
        "inflight",
        "--begin",
        "u:m0d:m0_fom_queue(key=arg0)",
        "--end",
        "u:m0d:m0_fom_fini(key=arg0) if arg0 == 1",
        "--comm",
        "m0d",
    ];
    let mut inflight_json = inflight.to_vec();
    inflight_json.push("--json");
    let leaks = [
        "leaks",
        "--json",
        "-i",
        "0.25",
        "u:m0d:m0_alloc",
        "u:m0d:m0_free",
        "--comm",
        "m0d",
    ];
    let runs = [
        fleet.start_all(&inflight),
        fleet.start_all(&inflight_json),
        fleet.start_all(&leaks),
    ];
    for n in &mut fleet.nodes {
        n.load(100, 1.5);
    }
    for n in &mut fleet.nodes {
        n.finish_loads();
    }
    let [text, json, leaks] = runs.map(|r| r.stop().0);
    for n in &fleet.nodes {
        let head = format!("{}: ", n.name);
        assert!(
            text.lines()
                .any(|l| l.starts_with(&head) && l.ends_with(" in flight")),
            "no table from {}:\n{text}",
            n.name
        );
        let rows = text
            .lines()
            .filter(|l| l.starts_with(&head) && l.contains("pid="))
            .count();
        assert!(rows > 0, "no row from {}:\n{text}", n.name);
    }
    for (what, out) in [("inflight", &json), ("leaks", &leaks)] {
        let mut from = std::collections::BTreeSet::new();
        for l in out.lines() {
            let doc: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
            assert_eq!(doc["kind"], what, "{l}");
            let host = doc["host"].as_str().expect("the print names its host");
            for e in doc["entries"].as_array().unwrap() {
                assert_eq!(e["host"], host, "{what}: a row without its host: {e}");
                from.insert(host.to_string());
            }
        }
        assert_eq!(from.len(), 2, "{what}: rows from both hosts:\n{out}");
    }
}

/// Processes whose command line mentions `text`.
fn processes_mentioning(text: &str) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_string_lossy().parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(text))
        })
        .collect()
}

#[test]
fn shell_over_hosts_runs_each_line_on_every_host_over_one_connection_each() {
    let mut fleet = Fleet::new(3);
    for n in &mut fleet.nodes {
        n.start_m0d();
    }
    for n in &mut fleet.nodes {
        n.load(40, 8.0);
    }
    let saved = fleet.dir().join("saved.toml");
    let history = fleet.dir().join("history");
    let mut child = fleet
        .ri(
            &fleet.hosts(),
            &["shell", "--history", &history.display().to_string()],
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start ri shell");
    let lines = format!(
        "fid decode '<1:2>'\ncount u:m0d:m0_fom_fini --json -d 4\nstart motr.ops as x\nsave {}\nexit\n",
        saved.display()
    );
    use std::io::Write as _;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(lines.as_bytes())
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let o = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let e = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    // The shell's own masters: one socket per host while it runs.
    let sockets = fleet.control_dir().join(format!("shell-{}", child.id()));
    let mut most = 0;
    let end = Instant::now() + Duration::from_secs(120);
    let status = loop {
        let n = std::fs::read_dir(&sockets).map_or(0, |d| d.count());
        most = most.max(n);
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if Instant::now() > end {
            let _ = child.kill();
            panic!("the shell did not end");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let (out, err) = (o.join().unwrap(), e.join().unwrap());
    assert!(status.success(), "ri shell -H: {status}\n{err}\n{out}");
    assert_eq!(most, 3, "master sockets at most {most}:\n{err}");
    // Gone with the shell: the sockets, their masters, every remote ri.
    assert!(!sockets.exists(), "{} is left", sockets.display());
    assert_eq!(
        processes_mentioning(&sockets.display().to_string()),
        Vec::<i32>::new(),
        "ssh masters left"
    );
    for n in &fleet.nodes {
        let end = Instant::now() + Duration::from_secs(10);
        while !n.ri_processes().is_empty() {
            assert!(Instant::now() < end, "ri left on {}", n.name);
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    // A plain command: one section per host.
    for n in &fleet.nodes {
        assert!(out.contains(&format!("== {} ==", n.name)), "{out}");
    }
    assert_eq!(out.matches("key: 0x2").count(), 3, "{out}");
    // A probing command: one merged final print over the three.
    let doc = final_doc(&out);
    assert_eq!(doc["hosts"].as_array().unwrap().len(), 3, "{doc}");
    // A background instrument on every host (exit ended it there).
    for n in &fleet.nodes {
        assert!(err.contains(&format!("{}: ri: attached", n.name)), "{err}");
    }
    // save: the hosts and the instrument.
    let text = std::fs::read_to_string(&saved).unwrap_or_else(|e| panic!("{e}\n{err}"));
    let doc: toml::Table = toml::from_str(&text).unwrap_or_else(|e| panic!("{e}:\n{text}"));
    let hosts: Vec<&str> = doc["targets"]["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h.as_str().unwrap())
        .collect();
    assert_eq!(hosts.join(","), fleet.hosts(), "{text}");
    assert_eq!(
        doc["instruments"]["count"]["cmd"].as_str(),
        Some("count u:m0d:m0_fom_fini --json -d 4"),
        "{text}"
    );
    assert_eq!(
        doc["instruments"]["x"]["run"].as_str(),
        Some("motr.ops"),
        "{text}"
    );

    // ri top over hosts: --once prints one merged frame (each node's m0d
    // found by name in its own pid namespace), a host on every row.
    for n in &mut fleet.nodes {
        n.load(40, 6.0);
    }
    let top = fleet
        .ri(
            &fleet.hosts(),
            &["top", "motr", "--once", "--comm", "m0d", "--interval", "2"],
        )
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&top.stdout);
    assert!(
        top.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&top.stderr)
    );
    let heads: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("ri top motr"))
        .collect();
    assert_eq!(
        heads,
        [format!("ri top motr  hosts {}", fleet.hosts())],
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("host") && l.contains("opcode") && l.contains("p99")),
        "{text}"
    );
    for n in &fleet.nodes {
        assert!(
            text.lines()
                .any(|l| l.starts_with(&format!("{}  ", n.name)) && l.contains("write (42)")),
            "no write row of {}:\n{text}",
            n.name
        );
    }
    fleet.nodes.iter_mut().for_each(|n| n.finish_loads());
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
    let lines = ri_tests::session_export(&bundle);
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
