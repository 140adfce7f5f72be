//! The motr pack on m0d against the service's own counters (requests
//! served, open sessions, trace records, blocks, allocations) and its
//! static-inline variant. Other services' packs: `packs_services.rs`.

use std::{
    collections::{BTreeMap, BTreeSet},
    io::{BufRead, BufReader, Read},
    process::{Command, Stdio},
    sync::mpsc,
    time::Duration,
};

use ri_tests::{
    events, fixture, fixtures,
    m0sim::{M0d, M0dConfig, OPS},
    require_bpf, ri_bin, ri_ok,
    run::{final_entries, prints, run_attached, stop},
};
use serde_json::Value;

/// m0d's FOM phase names: M0_FOPH_INIT = 0, FINISH, SUCCESS, FAILURE,
/// QUEUE_REPLY, then TYPE_SPECIFIC = 6.
const PHASES: [&str; 7] = [
    "init",
    "finish",
    "success",
    "failure",
    "queue-reply",
    "",
    "type-specific",
];

#[test]
fn motr_ops_and_queue_agree_with_the_services_counters() {
    require_bpf();
    let m0d = M0d::start();
    let pid = m0d.pid.to_string();
    let ops = run_attached(&["motr.ops", "-p", &pid, "--json"]);
    let queue = run_attached(&["motr.queue", "-p", &pid, "--json", "--interval", "0.2"]);
    let load = m0d.load(300, 3.0, "packq");
    // Hold the handlers: the load's requests wait in the queue, where both
    // ri and the service's own queue listing see them.
    std::thread::sleep(Duration::from_millis(700));
    let paused = m0d.ctl(&["--yes", "reqh.pause"]);
    assert!(paused.status.success(), "{paused:?}");
    std::thread::sleep(Duration::from_millis(700));
    let own_queue = m0d.ctl_json(&["reqh.queue"]);
    std::thread::sleep(Duration::from_millis(500));
    assert!(m0d.ctl(&["--yes", "reqh.resume"]).status.success());
    let load = load.finish(Duration::from_secs(60));
    assert_eq!(load["total_errors"], 0, "{load}");
    std::thread::sleep(Duration::from_millis(300));
    let (ops_out, ops_err) = stop(ops.0, ops.1, ops.2);
    let (q_out, q_err) = stop(queue.0, queue.1, queue.2);
    let stats = m0d.stats();

    // Requests finished per opcode: exactly the service's own counts,
    // each opcode named by m0d's own fop type name (its stats' keys).
    let mut seen: BTreeMap<u64, u64> = BTreeMap::new();
    for e in final_entries(&ops_out) {
        let op = e["by"]["opcode"].as_u64().expect("opcode");
        let name = e["by"]["opcode_name"].as_str().expect("opcode_name");
        let count = e["count"].as_u64().unwrap();
        if let Some((_, want)) = OPS.iter().find(|(o, _)| *o == op) {
            assert_eq!(name, *want, "opcode {op}: {e}");
        }
        assert_eq!(
            stats["requests"][name].as_u64(),
            Some(count),
            "{name}: ri counted {count}, m0d {}",
            stats["requests"]
        );
        *seen.entry(op).or_default() += count;
    }
    for (op, name) in OPS {
        let served = stats["requests"][name].as_u64().unwrap();
        assert_eq!(
            seen.get(op).copied().unwrap_or(0),
            served,
            "opcode {op} ({name}): ri counted {seen:?}, m0d served {}\n{ops_err}",
            stats["requests"]
        );
    }
    assert_eq!(
        seen.values().sum::<u64>(),
        ri_tests::m0sim::requests(&stats),
        "{seen:?} vs {}",
        stats["requests"]
    );

    // The queue while paused: the same requests as the service's own
    // listing (xid and session), each with its opcode and client endpoint.
    // Each request's current phase too (kept by the m0_fom_phase_set
    // update), by m0d's phase names: M0_FOPH_INIT = 0, FINISH, SUCCESS,
    // FAILURE, QUEUE_REPLY, then TYPE_SPECIFIC = 6.
    let own_phases: BTreeSet<(u64, u64, String)> = own_queue["foms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["xid"].as_u64().unwrap(),
                f["session_id"].as_u64().unwrap(),
                f["phase"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert!(!own_phases.is_empty(), "{own_queue}");
    let seen_paused = prints(&q_out).iter().any(|p| {
        let entries = p["entries"].as_array().unwrap();
        let ours: BTreeSet<(u64, u64, String)> = entries
            .iter()
            .map(|e| {
                let phase = e["fields"]["phase"].as_u64().unwrap() as usize;
                (
                    e["fields"]["xid"].as_u64().unwrap(),
                    e["fields"]["session"].as_u64().unwrap(),
                    PHASES.get(phase).unwrap_or(&"?").to_string(),
                )
            })
            .collect();
        ours == own_phases
    });
    assert!(
        seen_paused,
        "ri never listed {own_phases:?}:\n{q_out}\n{q_err}"
    );
    for p in prints(&q_out) {
        for f in p["entries"].as_array().unwrap() {
            let fields = &f["fields"];
            let op = fields["opcode"].as_u64().unwrap();
            let name = OPS.iter().find(|(o, _)| *o == op).map(|(_, n)| *n);
            assert!(name.is_some(), "{f}");
            assert_eq!(fields["opcode_name"].as_str(), name, "{f}");
            let ep = fields["endpoint"].as_str().unwrap();
            assert!(ep.starts_with("inet:tcp:127.0.0.1@"), "{f}");
        }
    }
    assert!(final_entries(&q_out).is_empty(), "left in flight:\n{q_out}");
    assert_eq!(stats["queued"], 0, "{stats}");
    assert_eq!(stats["running"], 0, "{stats}");
}

/// Requests queued before ri attached show in `motr.queue` from their next
/// phase change, marked as seen, with the phase they moved to (never INIT:
/// the seen probe reads it where m0_fom_phase_set returns).
#[test]
fn motr_queue_sees_requests_queued_before_attach() {
    require_bpf();
    let m0d = M0d::start_with(M0dConfig {
        args: vec!["--handler-delay-us".into(), "100000".into()],
        ..M0dConfig::default()
    });
    let pid = m0d.pid.to_string();
    let load = m0d.load(100, 3.0, "packv");
    std::thread::sleep(Duration::from_millis(800));
    let queue = run_attached(&["motr.queue", "-p", &pid, "--json", "--interval", "0.1"]);
    std::thread::sleep(Duration::from_millis(1000));
    let (out, err) = stop(queue.0, queue.1, queue.2);
    let load = load.finish(Duration::from_secs(60));
    assert_eq!(load["total_errors"], 0, "{load}");
    let seen: Vec<Value> = prints(&out)
        .iter()
        .flat_map(|p| p["entries"].as_array().cloned().unwrap_or_default())
        .filter(|e| e["seen"] == true)
        .collect();
    assert!(!seen.is_empty(), "no request seen\n{out}\n{err}");
    for e in &seen {
        assert!(
            e["probe"].as_str().unwrap().starts_with("uretprobe:"),
            "{e}"
        );
        assert_ne!(e["fields"]["phase"], 0, "{e}");
        assert!(e["fields"]["xid"].as_u64().unwrap() > 0, "{e}");
        // A seen request's opcode is named too (the seen probe captures
        // the label's word as the begin probe does).
        let op = e["fields"]["opcode"].as_u64().unwrap();
        let name = OPS.iter().find(|(o, _)| *o == op).map(|(_, n)| *n);
        assert_eq!(e["fields"]["opcode_name"].as_str(), name, "{e}");
        assert!(
            e["fields"]["endpoint"]
                .as_str()
                .unwrap()
                .starts_with("inet:tcp:127.0.0.1@"),
            "{e}"
        );
    }
}

#[test]
fn motr_sessions_are_the_services_open_sessions() {
    sessions_match(false);
}

/// Sessions established before ri attached show from their next request,
/// marked as seen (their age a lower bound).
#[test]
fn motr_sessions_established_before_attach_are_seen() {
    sessions_match(true);
}

/// `motr.sessions` under a load of 4 sessions lists m0d's open sessions:
/// endpoints and sender ids; attached before or after the load began.
fn sessions_match(load_first: bool) {
    require_bpf();
    let m0d = M0d::start();
    let pid = m0d.pid.to_string();
    let (ri, load) = if load_first {
        let load = m0d.load(100, 5.0, "packs");
        std::thread::sleep(Duration::from_millis(1000));
        (run_attached(&["motr.sessions", "-p", &pid, "--json"]), load)
    } else {
        let ri = run_attached(&["motr.sessions", "-p", &pid, "--json"]);
        (ri, m0d.load(100, 4.0, "packs"))
    };
    std::thread::sleep(Duration::from_millis(1500));
    let stats = m0d.stats();
    let (out, err) = stop(ri.0, ri.1, ri.2);
    let load = load.finish(Duration::from_secs(60));
    assert_eq!(load["total_errors"], 0, "{load}");
    let live = final_entries(&out);
    for e in &live {
        assert_eq!(e["seen"], load_first, "{e}");
    }
    let open = stats["sessions_open"].as_u64().unwrap();
    assert_eq!(open, 4, "{stats}");
    assert_eq!(live.len() as u64, open, "{out}\n{err}");
    let ri_eps: BTreeSet<String> = live
        .iter()
        .map(|e| e["fields"]["endpoint"].as_str().unwrap().to_string())
        .collect();
    let m0d_eps: BTreeSet<String> = stats["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["endpoint"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ri_eps, m0d_eps);
    let senders: BTreeSet<u64> = live
        .iter()
        .map(|e| e["fields"]["sender"].as_u64().unwrap())
        .collect();
    let m0d_senders: BTreeSet<u64> = stats["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["sender_id"].as_u64().unwrap())
        .collect();
    assert_eq!(senders, m0d_senders);
}

#[test]
fn motr_trace_messages_are_what_m0d_prints_itself() {
    require_bpf();
    let m0d = M0d::start_with(M0dConfig {
        args: vec!["--trace".into()],
        ..M0dConfig::default()
    });
    let pid = m0d.pid.to_string();
    let ri = run_attached(&["motr.trace", "-p", &pid, "--json"]);
    let text = run_attached(&["motr.trace", "-p", &pid]);
    let load = m0d.load(200, 1.0, "packt").finish(Duration::from_secs(60));
    assert_eq!(load["total_errors"], 0, "{load}");
    std::thread::sleep(Duration::from_millis(200));
    let (out, err) = stop(ri.0, ri.1, ri.2);
    let (text_out, text_err) = stop(text.0, text.1, text.2);
    let evs = events(out.as_bytes());
    assert!(evs.len() >= 100, "{} records\n{err}", evs.len());
    let own: BTreeSet<String> = m0d
        .stderr()
        .lines()
        .filter(|l| l.starts_with("trace "))
        .map(str::to_string)
        .collect();
    for e in &evs {
        let line = format!(
            "trace {}:{} {}: {}",
            e["file"].as_str().unwrap(),
            e["line"],
            e["func"].as_str().unwrap(),
            e["msg"].as_str().unwrap()
        );
        assert!(own.contains(&line), "m0d did not print: {line}");
        // JSON keeps the record's raw fields.
        for raw in ["fmt", "body", "offsets", "sizes", "nr"] {
            assert!(!e[raw].is_null(), "{raw}: {e}");
        }
    }
    // Text lines are `file:line func: message`, each one m0d printed.
    let lines: Vec<&str> = text_out.lines().collect();
    assert!(lines.len() >= 100, "{} lines\n{text_err}", lines.len());
    for l in lines {
        let line = format!("trace {l}");
        assert!(own.contains(&line), "m0d did not print: {line}");
    }
}

#[test]
fn motr_cobs_of_one_object_by_name() {
    require_bpf();
    let m0d = M0d::start();
    let pid = m0d.pid.to_string();
    let ri = run_attached(&["motr.cobs", "-p", &pid, "--json", "object=foo"]);
    for name in ["foo", "bar"] {
        assert!(m0d.client(&["create", name]).status.success());
        assert!(m0d.client(&["write", name, "hello"]).status.success());
    }
    std::thread::sleep(Duration::from_millis(200));
    let (out, err) = stop(ri.0, ri.1, ri.2);
    let evs = events(out.as_bytes());
    let foo = "<470000003298beac:dcb27518fed9d577>";
    assert!(!evs.is_empty(), "{err}");
    for e in &evs {
        assert_eq!(e["object"], foo, "{e}");
    }
    // One cob per data device and the parity cob: 3 + 1, foo's cob fids.
    let cobs: BTreeSet<String> = evs
        .iter()
        .filter(|e| e["probe"].as_str().unwrap().ends_with(":m0_cob_create"))
        .map(|e| e["cob"].as_str().unwrap().to_string())
        .collect();
    let want: BTreeSet<String> = (0..4)
        .map(|d| format!("<43{d:06x}3298beac:dcb27518fed9d577>"))
        .collect();
    assert_eq!(cobs, want);
}

#[test]
fn inline_variant_loses_balloc_alloc_and_says_so() {
    require_bpf();
    let m0d = M0d::start_with(M0dConfig {
        bin: Some(fixtures().join("inline").join("m0d")),
        ..M0dConfig::default()
    });
    let pid = m0d.pid.to_string();
    let lost = format!(
        "motr.balloc lost probe balloc_alloc (optional): balloc_alloc not found in PID {pid}'s executable or libraries (looked in libmotr.so, m0d); inlined or stripped?"
    );
    // motr.blocks has nothing left to run: one line says why.
    let blocks = Command::new(ri_bin())
        .args(["run", "motr.blocks", "-p", &pid, "--duration", "0.1"])
        .output()
        .unwrap();
    let b_err = String::from_utf8_lossy(&blocks.stderr);
    assert!(!blocks.status.success(), "{b_err}");
    assert_eq!(b_err.lines().count(), 1, "{b_err}");
    assert!(
        b_err.contains("motr.blocks: every probe is missing, nothing to run (motr.blocks lost probe balloc_alloc (optional)"),
        "{b_err}"
    );
    // motr.balloc loses one of its two probes, names it, and counts frees.
    let quick = Command::new(ri_bin())
        .args(["run", "motr.balloc", "-p", &pid, "--duration", "0.1"])
        .output()
        .unwrap();
    let q_err = String::from_utf8_lossy(&quick.stderr);
    assert!(quick.status.success(), "{q_err}");
    assert!(q_err.contains(&format!("ri: {lost}")), "{q_err}");
    let balloc = run_attached(&["motr.balloc", "-p", &pid, "--json"]);
    let ops = run_attached(&["motr.ops", "-p", &pid, "--json"]);
    let load = m0d.load(200, 1.5, "packi").finish(Duration::from_secs(60));
    assert_eq!(load["total_errors"], 0, "{load}");
    std::thread::sleep(Duration::from_millis(200));
    let (c_out, c_err) = stop(balloc.0, balloc.1, balloc.2);
    let (o_out, _) = stop(ops.0, ops.1, ops.2);
    let entries = final_entries(&c_out);
    assert!(
        entries
            .iter()
            .all(|e| e["probe"].as_str().unwrap().ends_with(":balloc_free")),
        "{c_out}"
    );
    assert!(
        entries
            .iter()
            .map(|e| e["count"].as_u64().unwrap())
            .sum::<u64>()
            > 0,
        "no balloc_free calls\n{c_out}\n{c_err}"
    );
    // And the other instruments work as on the normal build.
    let served: u64 = final_entries(&o_out)
        .iter()
        .map(|e| e["count"].as_u64().unwrap())
        .sum();
    assert_eq!(served, ri_tests::m0sim::requests(&m0d.stats()));
}

/// `motr.blocks object=NAME` under load on other objects: each of NAME's
/// writes allocates one extent per cob (3 data cobs and parity), and the
/// last one of each cob is the extent m0d lists for it.
#[test]
fn motr_blocks_extents_per_cob_match_the_service() {
    require_bpf();
    let m0d = M0d::start();
    let pid = m0d.pid.to_string();
    let ri = run_attached(&["motr.blocks", "-p", &pid, "--json", "object=blk"]);
    let load = m0d.load(200, 1.5, "packb");
    assert!(m0d.client(&["create", "blk"]).status.success());
    // 1, 3 and 2 stripes of 3 x 4096 bytes: as many blocks per cob.
    let data = m0d.dir().join("blk.data");
    for bytes in [5, 30000, 13000] {
        std::fs::write(&data, vec![b'b'; bytes]).unwrap();
        let w = m0d.client(&["write", "blk", &format!("@{}", data.display())]);
        assert!(w.status.success(), "{w:?}");
    }
    let load = load.finish(Duration::from_secs(60));
    assert_eq!(load["total_errors"], 0, "{load}");
    std::thread::sleep(Duration::from_millis(200));
    let (out, err) = stop(ri.0, ri.1, ri.2);
    assert!(!err.contains("lost probe"), "{err}");
    // The load's allocations happened outside blk's stob io: not shown.
    assert!(err.contains("outside a --within call, not shown"), "{err}");
    let info = m0d.client(&["objinfo", "blk"]);
    assert!(info.status.success(), "{info:?}");
    let info: Value = serde_json::from_slice(&info.stdout).unwrap();
    let mut seen: BTreeMap<String, Vec<(u64, u64, u64)>> = BTreeMap::new();
    for e in events(out.as_bytes()) {
        seen.entry(e["cob"].as_str().unwrap().to_string())
            .or_default()
            .push((
                e["start"].as_u64().unwrap(),
                e["end"].as_u64().unwrap(),
                e["blocks"].as_u64().unwrap(),
            ));
    }
    let cobs = info["cobs"].as_array().unwrap();
    assert_eq!(cobs.len(), 4, "{info}");
    let fids: Vec<&str> = cobs
        .iter()
        .map(|c| c["cob_fid"].as_str().unwrap())
        .collect();
    assert_eq!(seen.keys().collect::<Vec<_>>(), fids, "{out}");
    for c in cobs {
        let allocs = &seen[c["cob_fid"].as_str().unwrap()];
        let blocks: Vec<u64> = allocs.iter().map(|a| a.2).collect();
        assert_eq!(blocks, [1, 3, 2], "{c}: {allocs:?}");
        assert!(allocs.iter().all(|(s, e, n)| e - s == *n), "{allocs:?}");
        let (start, end, _) = *allocs.last().unwrap();
        let ext = &c["extents"];
        assert_eq!(ext.as_array().unwrap().len(), 1, "{c}");
        assert_eq!(
            (
                ext[0]["start"].as_u64().unwrap(),
                ext[0]["end"].as_u64().unwrap()
            ),
            (start, end),
            "{c}"
        );
    }
}

/// motr.phases names each opcode by its fop type and each phase by the
/// FOM's state machine (`sm_conf->scf_state[phase].sd_name`), m0d's own
/// names; every request of the load passes its phases once.
#[test]
fn motr_phases_are_named_by_the_service() {
    require_bpf();
    let m0d = M0d::start();
    let pid = m0d.pid.to_string();
    let ri = run_attached(&["motr.phases", "-p", &pid, "--json"]);
    let load = m0d.load(200, 1.0, "packp").finish(Duration::from_secs(60));
    assert_eq!(load["total_errors"], 0, "{load}");
    let (out, err) = stop(ri.0, ri.1, ri.2);
    let stats = m0d.stats();
    let entries = final_entries(&out);
    assert!(!entries.is_empty(), "{out}\n{err}");
    for e in &entries {
        let by = &e["by"];
        let phase = by["phase"].as_u64().expect("phase") as usize;
        assert_eq!(by["phase_name"].as_str(), PHASES.get(phase).copied(), "{e}");
        let name = by["opcode_name"].as_str().expect("opcode_name");
        if by["phase_name"] == "success" {
            assert_eq!(stats["requests"][name].as_u64(), e["count"].as_u64(), "{e}");
        }
    }
    for (op, name) in OPS {
        let named = |e: &&Value| e["by"]["opcode"] == *op && e["by"]["opcode_name"] == *name;
        assert!(entries.iter().any(|e| named(&e)), "{op} ({name}): {out}");
    }
}

#[test]
fn motr_fops_latency_per_opcode() {
    require_bpf();
    let m0d = M0d::start();
    let pid = m0d.pid.to_string();
    let ri = run_attached(&["motr.fops", "-p", &pid, "--json"]);
    let text = run_attached(&["motr.fops", "-p", &pid]);
    let load = m0d.load(200, 1.5, "packf").finish(Duration::from_secs(60));
    assert_eq!(load["total_errors"], 0, "{load}");
    let (out, err) = stop(ri.0, ri.1, ri.2);
    let (text_out, text_err) = stop(text.0, text.1, text.2);
    let stats = m0d.stats();
    assert!(!final_entries(&out).is_empty(), "{out}\n{err}");
    // Each opcode with m0d's own fop type name, and as many requests as
    // m0d served of that name (the load's requests all began after attach).
    for e in final_entries(&out) {
        let op = e["by"]["opcode"].as_u64().expect("opcode");
        let name = e["by"]["opcode_name"].as_str().expect("opcode_name");
        if let Some((_, want)) = OPS.iter().find(|(o, _)| *o == op) {
            assert_eq!(name, *want, "opcode {op}: {e}");
        }
        assert_eq!(
            stats["requests"][name].as_u64(),
            e["count"].as_u64(),
            "{e}\n{}",
            stats["requests"]
        );
    }
    for (op, name) in OPS {
        assert!(out.contains(&format!("\"opcode\":{op}")), "{op}: {out}");
        assert!(
            text_out.contains(&format!("[opcode={op} ({name})]:")),
            "{op} ({name}):\n{text_out}\n{text_err}"
        );
    }
}

/// `ri peek -p PID --json SYMBOL`'s value, an integer.
fn peek_u64(pid: u32, symbol: &str) -> u64 {
    let out = ri_ok(&["peek", "-p", &pid.to_string(), "--json", symbol]);
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    v["value"]
        .as_u64()
        .unwrap_or_else(|| panic!("{symbol}: {out}"))
}

/// m0d's own memory counters, read from its memory without asking it
/// (a stats request would itself allocate): live bytes, live blocks,
/// allocation calls.
fn m0d_memory(pid: u32) -> (u64, u64, u64) {
    let allocs = peek_u64(pid, "m0sim_mem_allocs");
    let frees = peek_u64(pid, "m0sim_mem_frees");
    (peek_u64(pid, "m0sim_mem_bytes"), allocs - frees, allocs)
}

/// `m0client load` at 200 requests/s over 4 connections for `secs`.
fn load(endpoint: &str, secs: &str, prefix: &str) -> std::process::Output {
    Command::new(fixture("m0client"))
        .args(["--endpoint", endpoint, "--timeout", "30", "load"])
        .args(["--concurrency", "4", "--objects", "16", "--size", "8192"])
        .args(["--rate", "200", "--duration", secs, "--prefix", prefix])
        .stdin(Stdio::null())
        .output()
        .expect("run m0client load")
}

/// Waits for a quiet moment, two interval prints with the same calls and
/// blocks, reads m0d's counters between them, and checks that ri's
/// outstanding bytes and blocks are m0d's own; returns m0d's live bytes.
fn checkpoint(prints: &mpsc::Receiver<String>, pid: u32, what: &str) -> u64 {
    let next = || loop {
        let line = prints
            .recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|e| panic!("{what}: no interval print: {e}"));
        if let Ok(v) = serde_json::from_str::<Value>(&line)
            && v["type"] == "interval"
        {
            return v;
        }
    };
    let key = |v: &Value| (v["allocs"].clone(), v["frees"].clone(), v["bytes"].clone());
    let mut a = next();
    for _ in 0..20 {
        let mem = m0d_memory(pid);
        let b = next();
        // No allocator call between the two prints: the peek in between
        // saw the same heap as both.
        if key(&a) == key(&b) {
            assert_eq!(b["bytes"], mem.0, "{what}: ri {b} vs m0d {mem:?}");
            assert_eq!(b["count"], mem.1, "{what}: ri {b} vs m0d {mem:?}");
            // ri attached before m0d's first instruction: it saw every call.
            assert_eq!(b["allocs"], mem.2, "{what}: ri {b} vs m0d {mem:?}");
            assert!(mem.0 > 0 && mem.1 > 0, "{what}: {mem:?}");
            eprintln!("{what}: {} bytes in {} blocks, as m0d counts", mem.0, mem.1);
            return mem.0;
        }
        a = b;
    }
    panic!("{what}: m0d never went quiet for an interval");
}

/// `ri run motr.allocs -c m0d` sees every allocation m0d makes (all five of
/// Motr's allocation and release functions), so at a quiet checkpoint its
/// outstanding bytes and blocks are exactly m0d's own counters
/// (`m0sim_mem_bytes`, allocs - frees), read with `ri peek`: once with idle
/// connections held open after a load, once with the request handler paused
/// under load (requests, sessions and connections in memory). m0d has no
/// periodic work: between requests nothing allocates.
#[test]
fn motr_allocs_outstanding_bytes_are_m0ds_own() {
    require_bpf();
    let dir = tempfile::tempdir().expect("temporary directory");
    let cmd = format!(
        "{} --port 0 --no-sync --data {}",
        fixture("m0d").display(),
        dir.path().join("data").display()
    );
    let mut ri = Command::new(ri_bin())
        .args([
            "run",
            "motr.allocs",
            "--json",
            "--interval",
            "1",
            "-c",
            &cmd,
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start ri");
    let (tx, lines) = mpsc::channel();
    let out = ri.stdout.take().expect("stdout");
    let all_out = std::thread::spawn(move || {
        let mut all = String::new();
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            all.push_str(&line);
            all.push('\n');
            let _ = tx.send(line);
        }
        all
    });
    let mut err = ri.stderr.take().expect("stderr");
    let all_err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    // m0d, the -c child, writes on ri's stdout.
    let endpoint = loop {
        let line = lines
            .recv_timeout(Duration::from_secs(20))
            .expect("m0d's endpoint line");
        if let Some(ep) = line.strip_prefix("endpoint ") {
            break ep.to_string();
        }
    };
    let pid: u32 = std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", ri.id()))
        .expect("ri's children")
        .split_whitespace()
        .next()
        .and_then(|p| p.parse().ok())
        .expect("m0d's pid");
    let port = endpoint.rsplit('@').next().expect("port").to_string();
    let summary = |o: &std::process::Output| -> Value {
        let text = String::from_utf8_lossy(&o.stdout);
        let line = text.lines().rev().find(|l| l.starts_with('{'));
        let v: Value = serde_json::from_str(line.unwrap_or_default())
            .unwrap_or_else(|e| panic!("{e}: {text}"));
        assert_eq!(v["total_errors"], 0, "{v}");
        v
    };

    // 1. After a load, with three idle connections held open.
    summary(&load(&endpoint, "1.5", "packa"));
    let held: Vec<std::net::TcpStream> = (0..3)
        .map(|_| std::net::TcpStream::connect(format!("127.0.0.1:{port}")).expect("connect"))
        .collect();
    let idle = checkpoint(&lines, pid, "idle connections");

    // 2. Paused under load: each worker's request waits in the queue.
    let ctl = |cmd: &str| ri_ok(&["ctl", "-p", &pid.to_string(), "--yes", cmd]);
    ctl("reqh.pause");
    let endpoint2 = endpoint.clone();
    let paused_load = std::thread::spawn(move || load(&endpoint2, "1", "packb"));
    let paused = checkpoint(&lines, pid, "paused under load");
    ctl("reqh.resume");
    summary(&paused_load.join().expect("load thread"));
    assert!(paused > idle, "paused {paused}, idle {idle}");
    drop(held);

    // At exit: every request's fop came from m0_alloc and was freed.
    // SAFETY: plain syscall on m0d, the -c child.
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    let status = ri.wait().expect("ri exits with m0d");
    let (out, err) = (all_out.join().unwrap(), all_err.join().unwrap());
    assert!(status.success(), "{status}: {err}");
    let stats: Value = out
        .lines()
        .find_map(|l| l.strip_prefix("stats "))
        .and_then(|s| serde_json::from_str(s).ok())
        .unwrap_or_else(|| panic!("no stats line from m0d:\n{out}"));
    let served = ri_tests::m0sim::requests(&stats);
    let last = prints(&out).pop().unwrap_or_else(|| panic!("{out}\n{err}"));
    assert_eq!(last["type"], "final", "{last}");
    assert!(served > 0, "{stats}");
    assert!(
        last["allocs"].as_u64().unwrap() >= served,
        "{served}: {last}"
    );
    assert!(
        last["frees"].as_u64().unwrap() >= served,
        "{served}: {last}"
    );
    // Nothing dropped or skipped: the in-flight map held every block.
    assert!(
        !err.contains("dropped") && !err.contains("skipped"),
        "{err}"
    );
}
