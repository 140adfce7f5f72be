//! `ri shell -H` in a real terminal (tmux) over fleet nodes (namespaces
//! with their own sshd and m0d, tests/src/fleet.rs): completion from the
//! nodes' own m0d, a background instrument on every node whose `show`
//! equals each node's own counters, and nothing left on any node after
//! `stop`, `exit` or `kill -9` of the shell.

use std::{
    collections::BTreeMap,
    process::Command,
    time::{Duration, Instant},
};

use ri_tests::{
    fleet::{Fleet, probes_on},
    m0sim::requests_by_name,
    ri_bin,
    tmux::Tmux,
};
use serde_json::Value;

/// `ri -H <every node> shell --comm m0d` in tmux, at its prompt.
fn shell(fleet: &Fleet, tag: &str) -> (Tmux, String) {
    let t = Tmux::start(
        tag,
        &format!(
            "RI_SSH_CONTROL_DIR={} {} -H {} --ssh-config {} shell --comm m0d --history {{dir}}/history",
            fleet.control_dir().display(),
            ri_bin().display(),
            fleet.hosts(),
            fleet.ssh_config.display()
        ),
    );
    let prompt = format!("ri {}> ", fleet.hosts());
    t.wait_for(&prompt, 40);
    (t, prompt)
}

/// What is still running or attached on the nodes: ri processes, and
/// descriptors of probes on each node's m0d.
fn left_on(fleet: &Fleet) -> Vec<String> {
    let mut left = Vec::new();
    for n in &fleet.nodes {
        // An ended ri whose sshd went first is left a zombie: a node's init
        // (`sleep`, tests/src/fleet.rs) does not reap; it holds nothing.
        let running = n.ri_processes().into_iter().filter(|p| {
            let st = std::fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default();
            let state = st.rsplit_once(") ").map_or("", |(_, r)| r);
            !state.starts_with('Z') && !st.is_empty()
        });
        left.extend(running.map(|p| format!("{}: ri pid {p}", n.name)));
        left.extend(
            probes_on(&n.dir.join("bin/m0d"))
                .into_iter()
                .map(|p| format!("{}: probe {p}", n.name)),
        );
    }
    left
}

/// Waits (at most `secs`) until nothing is left on any node.
fn assert_nothing_left(fleet: &Fleet, secs: u64, after: &str) {
    let end = Instant::now() + Duration::from_secs(secs);
    loop {
        let left = left_on(fleet);
        if left.is_empty() {
            return;
        }
        assert!(
            Instant::now() < end,
            "{secs} s after {after}, still on the nodes: {left:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The completions this machine's ri gives for `text` (no process: the
/// shell over hosts has none here).
fn local_candidates(text: &str) -> Vec<String> {
    let out = Command::new(ri_bin())
        .args(["shell", &format!("--complete={text}")])
        .output()
        .unwrap();
    let doc: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    doc["candidates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn shell_over_hosts_completes_from_the_nodes_and_runs_background_instruments_there() {
    let mut fleet = Fleet::new(2);
    for n in &mut fleet.nodes {
        n.start_m0d();
    }
    // What only the nodes can answer: here no m0d is found by name and no
    // process is the shell's.
    assert_eq!(local_candidates("ctl reqh.pa"), Vec::<String>::new());
    let (t, prompt) = shell(&fleet, "hosts");

    // Completion from the nodes' m0d: a symbol, members, ctl's schema.
    t.complete("count u:m0d:m0_fom_qu", 1, "count u:m0d:m0_fom_queue");
    let s = t.complete("trace 'u:m0d:m0_fom_queue(x=fom->fo_", 2, "fo_sm_phase");
    for m in ["fo_fop", "fo_loc", "fo_type"] {
        assert!(s.contains(m), "no member {m}:\n{s}");
    }
    t.complete("ctl reqh.pa", 1, "ctl reqh.pause");

    // A background instrument on both nodes.
    let s = t.command(&prompt, "start motr.ops as ops", 60);
    for n in &fleet.nodes {
        assert!(s.contains(&format!("{}: ri: attached", n.name)), "{s}");
        assert!(!n.ri_processes().is_empty(), "no ri on {}", n.name);
    }
    for n in &mut fleet.nodes {
        n.load(100, 3.0);
    }
    // Other commands meanwhile.
    let s = t.command(&prompt, "jobs", 10);
    assert!(
        s.contains(&format!("on {}", fleet.hosts())),
        "jobs names the hosts:\n{s}"
    );
    let s = t.command(&prompt, "fid decode '<1:2>'", 30);
    assert!(s.matches("key: 0x2").count() >= 2, "{s}");
    for n in &mut fleet.nodes {
        n.finish_loads();
    }
    // The nodes print every second: two is enough for the last requests.
    std::thread::sleep(Duration::from_millis(2500));
    let stats: BTreeMap<String, Value> = fleet
        .nodes
        .iter()
        .map(|n| (n.name.clone(), n.stats()))
        .collect();
    let doc = t.command_json(&prompt, "show ops --json", 10);
    let mut ours: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
    for e in doc["entries"].as_array().unwrap() {
        let host = e["by"]["host"].as_str().expect("a row names its host");
        let op = e["by"]["opcode_name"].as_str().expect("opcode name");
        *ours
            .entry(host.into())
            .or_default()
            .entry(op.into())
            .or_default() += e["count"].as_u64().unwrap();
    }
    for (host, st) in &stats {
        let theirs = requests_by_name(st);
        let mine = ours.get(host).cloned().unwrap_or_default();
        assert_eq!(mine, theirs, "{host}: ri's counts vs its m0d's own\n{doc}");
        assert!(mine.values().sum::<u64>() > 100, "{host}: {mine:?}");
    }
    // As text: a row per host and opcode.
    let s = t.command(&prompt, "show ops", 10);
    for n in &fleet.nodes {
        assert!(s.contains(&format!("host={}", n.name)), "{s}");
    }
    let s = t.command(&prompt, "stop ops", 30);
    assert!(!s.contains("ri: error"), "{s}");
    assert_nothing_left(&fleet, 10, "stop");
    let s = t.command(&prompt, "jobs", 10);
    assert!(s.contains("no background instruments"), "{s}");

    // exit detaches a running one; in flight: each host's latest table.
    t.command(&prompt, "start motr.queue as q", 60);
    assert!(
        fleet.nodes.iter().all(|n| !n.ri_processes().is_empty()),
        "q runs on every node"
    );
    std::thread::sleep(Duration::from_millis(1500));
    let s = t.command(&prompt, "show q --json", 10);
    for n in &fleet.nodes {
        assert!(
            s.contains(&format!("{{\"host\":\"{}\"", n.name)),
            "no print of {}:\n{s}",
            n.name
        );
    }
    t.text("exit");
    t.keys(&["Enter"]);
    t.wait_for("EXIT=0", 30);
    assert_nothing_left(&fleet, 10, "exit");
    drop(t);

    // The shell killed (SIGTERM, SIGKILL): each node's ri ends with its
    // connection and the heartbeat.
    for (tag, sig, exit) in [
        ("term", libc::SIGTERM, "EXIT=143"),
        ("kill9", libc::SIGKILL, "EXIT=137"),
    ] {
        let (t, prompt) = shell(&fleet, tag);
        t.command(&prompt, "start motr.ops as k", 60);
        assert!(
            fleet.nodes.iter().all(|n| !n.ri_processes().is_empty()),
            "k runs on every node"
        );
        let ri = t.program_pid();
        // SAFETY: plain syscall on the shell this test started.
        unsafe { libc::kill(ri, sig) };
        t.wait_for(exit, 20);
        assert_nothing_left(&fleet, 15, tag);
    }
}
