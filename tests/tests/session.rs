//! Capture sessions on a live m0d whose requests take about 40 ms: the
//! trigger fires once for a sustained condition, the report and the flight
//! recorder's last 10 s are in the bundle, the bundle's per-opcode counts
//! are m0d's own, and `ri session show`/`export` work after the target
//! and ri are gone (`session_views.rs`: show's text and the Perfetto
//! export).

use std::{collections::BTreeMap, path::Path, process::Command, time::Duration};

use ri_tests::{
    m0sim::{M0d, M0dConfig},
    require_bpf, ri, ri_bin,
    session::{ONE_AT_A_TIME, ended, manifest, start},
    sigint, start_waiting,
};
use serde_json::Value;

/// The session file of the test: the motr pack's fops and ops, request
/// queueing events in a 10 s flight recorder, and a trigger on fops's p99
/// held for 12 intervals (so that the recorder has a full window).
const SESSION: &str = r#"
name = "slow"
interval = "1s"

[instruments.fops]
run = "motr.fops"

[instruments.ops]
run = "motr.ops"

[instruments.queued]
cmd = "trace 'u:m0d:m0_fom_queue(key=fom, opcode=fom->fo_fop->f_type->ft_rpc_item_type.rit_opcode, xid=fom->fo_fop->f_item.ri_header.osr_xid)'"
flight_recorder = "10s"

[[triggers]]
name = "slow-requests"
when = "fops.p99 > 20ms"
for = 12
actions = ["report", "dump queued", "ctl stats"]
"#;

#[test]
fn a_session_fires_once_and_its_bundle_holds_the_window_and_the_services_counts() {
    require_bpf();
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let live = start(SESSION, &["--archive"]);
    let pid = live.m0d.pid.to_string();
    let load = live.m0d.load(15, 16.0, "sess");
    let load = load.finish(Duration::from_secs(60));
    assert_eq!(load["total_errors"], 0, "{load}");
    std::thread::sleep(Duration::from_millis(1500));
    let stats = live.m0d.stats();
    let (dir, bundle, err) = live.finish();

    // Everything below reads the bundle alone: m0d and the session are gone.
    let m = manifest(&bundle);
    assert_eq!(m["targets"][0]["pid"].as_u64(), Some(pid.parse().unwrap()));
    assert!(m["targets"][0]["build_id"].is_string(), "{}", m["targets"]);
    assert!(m["kernel"].as_str().unwrap().contains('.'));
    assert_eq!(m["lost"], 0, "{err}");

    // A sustained condition fires once, with every action done.
    let fired = m["fired"].as_array().unwrap();
    assert_eq!(fired.len(), 1, "{}\n{err}", m["fired"]);
    let f = &fired[0];
    assert_eq!(f["trigger"], "slow-requests");
    assert!(f["value"].as_f64().unwrap() > 20e6, "{f}");
    assert!(f["t"].as_f64().unwrap() >= 12.0, "{f}");
    for a in f["actions"].as_array().unwrap() {
        assert_eq!(a["result"], "ok", "{a}");
    }

    // The report of the target.
    let report = f["actions"][0]["files"][0].as_str().expect("report file");
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(bundle.join(report)).unwrap()).unwrap();
    assert!(report.to_string().contains(&pid), "report names the pid");
    // The read-only control command ran on the target.
    let ctl = f["actions"][2]["files"][0].as_str().expect("ctl file");
    let ctl: Value =
        serde_json::from_str(&std::fs::read_to_string(bundle.join(ctl)).unwrap()).unwrap();
    assert!(ctl["requests"].is_object(), "{ctl}");

    // The flight recorder's dump: the queueing events of the 10 s before
    // the trigger fired, and none older (events arrive continuously).
    let fire_ns = f["at"]["mono_ns"].as_u64().unwrap();
    let lines = ri_tests::session_export(&bundle);
    let window: Vec<u64> = lines
        .iter()
        .filter(|l| l["file"].as_str().unwrap().starts_with("flight/"))
        .map(|l| l["line"]["ts_ns"].as_u64().expect("event ts_ns"))
        .collect();
    assert!(window.len() > 100, "{} events in the window", window.len());
    let first = *window.iter().min().unwrap();
    let last = *window.iter().max().unwrap();
    let secs = |a: u64, b: u64| (a as f64 - b as f64) / 1e9;
    assert!(
        (9.5..=10.1).contains(&secs(fire_ns, first)),
        "first event {:.3}s before the trigger",
        secs(fire_ns, first)
    );
    assert!(
        (-0.05..=0.5).contains(&secs(fire_ns, last)),
        "last event {:.3}s before the trigger",
        secs(fire_ns, last)
    );

    // Requests per opcode: the ops instrument's final print equals m0d's
    // own counters over the session.
    let last_ops = lines
        .iter()
        .rfind(|l| l["instrument"] == "ops" && l["line"]["print"]["type"] == "final")
        .expect("a final ops print");
    let mut counted: BTreeMap<String, u64> = BTreeMap::new();
    for e in last_ops["line"]["print"]["entries"].as_array().unwrap() {
        let name = e["by"]["opcode_name"].as_str().unwrap().to_string();
        *counted.entry(name).or_default() += e["count"].as_u64().unwrap();
    }
    for (name, n) in stats["requests"].as_object().unwrap() {
        let n = n.as_u64().unwrap();
        assert_eq!(
            counted.get(name).copied().unwrap_or(0),
            n,
            "{name}: bundle {counted:?}, m0d {}",
            stats["requests"]
        );
    }

    // `ri session show` on the directory and on the archive, offline.
    for b in [bundle.clone(), dir.path().join("bundle.tar.zst")] {
        let out = ri(&["session", "show", b.to_str().unwrap()]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(text.contains("slow-requests (fops.p99 > 20ms"), "{text}");
        assert!(text.contains("losses: none"), "{text}");
        assert!(text.contains("ops (last print):"), "{text}");
        assert!(text.contains("queued (events in the bundle):"), "{text}");
        assert!(text.contains("m0_fom_queue"), "{text}");
    }
    let out = ri(&["session", "show", bundle.to_str().unwrap(), "--json"]);
    let v: Value = serde_json::from_slice(&out.stdout).expect("show --json");
    assert_eq!(v["manifest"]["fired"][0]["trigger"], "slow-requests");
    assert!(v["last_prints"]["fops"]["entries"].is_array());
}

#[test]
fn the_shipped_motr_slow_requests_session_reports_and_dumps_the_queue() {
    require_bpf();
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let shipped = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../sessions/motr-slow-requests.toml");
    let live = start(
        &std::fs::read_to_string(shipped).unwrap(),
        &["--duration", "8"],
    );
    let load = live.m0d.load(15, 6.0, "ship");
    let load = load.finish(Duration::from_secs(60));
    assert_eq!(load["total_errors"], 0, "{load}");
    let (_dir, bundle, err) = live.finish();
    let m = manifest(&bundle);
    let fired = m["fired"].as_array().unwrap();
    assert_eq!(fired.len(), 1, "{}\n{err}", m["fired"]);
    let actions: Vec<(&str, &str)> = fired[0]["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (a["action"].as_str().unwrap(), a["result"].as_str().unwrap()))
        .collect();
    assert_eq!(
        actions,
        [
            ("report", "ok"),
            ("dump queue", "ok"),
            ("dump requests", "ok"),
            ("snapshot", "ok")
        ]
    );
    // The queue's events of the last 10 s before the trigger: requests
    // queued and finished, kernel-stamped inside the window.
    let fired_ns = fired[0]["at"]["mono_ns"].as_u64().unwrap();
    let events: Vec<Value> = ri_tests::session_export(&bundle)
        .into_iter()
        .filter(|l| l["instrument"] == "requests")
        .collect();
    assert!(!events.is_empty(), "no queue events in the window\n{err}");
    let mut probes = std::collections::BTreeSet::new();
    for e in &events {
        assert!(e["file"].as_str().unwrap().starts_with("flight/"), "{e}");
        let ts = e["line"]["ts_ns"].as_u64().expect("ts_ns");
        // The window is the lines that reached ri in the last 10 s (1 s of
        // slack for the pipe between the kernel's stamp and ri).
        assert!(
            ts <= fired_ns && ts + 11_000_000_000 >= fired_ns,
            "event at {ts} ns, fired at {fired_ns} ns"
        );
        probes.insert(
            e["line"]["probe"]
                .as_str()
                .unwrap()
                .rsplit(':')
                .next()
                .unwrap()
                .to_string(),
        );
    }
    assert_eq!(
        probes.into_iter().collect::<Vec<_>>(),
        ["m0_fom_fini", "m0_fom_queue"],
        "{events:?}"
    );
    // The queue's prints of the window (one per interval since the session
    // began, at most 10 s back, each listing the requests then in flight).
    let queue: Vec<Value> = ri_tests::session_export(&bundle)
        .into_iter()
        .filter(|l| l["instrument"] == "queue")
        .collect();
    let t = fired[0]["t"].as_f64().unwrap();
    assert!(!queue.is_empty());
    for q in &queue {
        let at = q["line"]["t"].as_f64().unwrap();
        assert!(at <= t && at >= t - 10.0, "print at {at}s, fired at {t}s");
    }
    assert!(
        queue
            .iter()
            .all(|l| l["file"].as_str().unwrap().starts_with("flight/")
                && l["line"]["print"]["kind"] == "inflight"),
        "{queue:?}"
    );
}

/// The flight recorder's events of instrument `name` in the bundle's dumps.
fn dumped(bundle: &Path, name: &str) -> Vec<Value> {
    ri_tests::session_export(bundle)
        .into_iter()
        .filter(|l| l["instrument"] == name && l["file"].as_str().unwrap().starts_with("flight/"))
        .map(|l| l["line"].clone())
        .collect()
}

#[test]
fn time_stop_filtered_fired_in_flight_mib_window_progress_folded_and_gated_ctl() {
    require_bpf();
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("s.toml");
    std::fs::write(
        &file,
        r#"
interval = "500ms"
duration = "7s"
[instruments.queue]
run = "motr.queue"
[instruments.reads]
cmd = "trace 'u:m0d:m0_fom_fini(opcode=fom->fo_fop->f_type->ft_rpc_item_type.rit_opcode) if fom->fo_fop->f_type->ft_rpc_item_type.rit_opcode == 41'"
flight_recorder = "1MiB"
[instruments.finis]
cmd = "count u:m0d:m0_fom_fini"
[instruments.allocs]
cmd = "count u:m0d:m0_alloc --stack"
[[triggers]]
name = "late"
when = "after 1s"
actions = ["stop finis", "ctl meta.update session.key v1"]
[[triggers]]
name = "reads"
when = "fired reads"
actions = ["dump reads"]
[[triggers]]
name = "busy"
when = "queue.in_flight >= 1"
actions = ["snapshot"]
"#,
    )
    .unwrap();
    let bundle = dir.path().join("bundle");
    let m0d = M0d::start_with(M0dConfig {
        args: vec!["--handler-delay-us".into(), "40000".into()],
        ..Default::default()
    });
    let mut cmd = Command::new(ri_bin());
    cmd.args(["session", "run", file.to_str().unwrap(), "-p"])
        .arg(m0d.pid.to_string())
        .args(["--out", bundle.to_str().unwrap()]);
    let (mut session, out, err) = start_waiting(cmd, "instruments attached", true);
    let load = m0d.load(30, 4.0, "mix").finish(Duration::from_secs(60));
    assert_eq!(load["total_errors"], 0, "{load}");
    let _ = session.wait();
    let err = ended(out, err);
    let m = manifest(&bundle);
    // The progress line (not on a terminal: every 10 intervals).
    assert!(
        err.lines()
            .any(|l| l.starts_with("ri: session ") && l.contains("s left") && l.contains("lost")),
        "{err}"
    );
    let fired = m["fired"].as_array().unwrap();
    let by_name = |n: &str| {
        fired
            .iter()
            .find(|f| f["trigger"] == n)
            .unwrap_or_else(|| panic!("{n} did not fire: {}\n{err}", m["fired"]))
    };
    // `after 1s`: once, at 1 s or later; it stopped `finis` and was
    // refused the mutating ctl command (no allow_mutations).
    let late = by_name("late");
    assert_eq!(fired.iter().filter(|f| f["trigger"] == "late").count(), 1);
    assert!(late["t"].as_f64().unwrap() >= 1.0, "{late}");
    assert_eq!(late["actions"][0]["result"], "ok", "{late}");
    let refused = late["actions"][1]["result"].as_str().unwrap();
    assert!(refused.contains("allow_mutations = true"), "{refused}");
    let inst = |n: &str| {
        m["instruments"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["name"] == n)
            .unwrap()
            .clone()
    };
    let finis = inst("finis");
    let stopped = finis["runs"][0][1].as_f64().expect("finis stopped");
    assert!(stopped < 6.5, "finis ran to the end: {finis}");
    assert_eq!(finis["exits"], serde_json::json!([0]), "{finis}");
    // `fired` with the probe's `if` filter: only reads reached the window,
    // kept by size (1 MiB).
    assert_eq!(inst("reads")["flight_recorder"], "1048576 bytes");
    by_name("reads");
    let reads = dumped(&bundle, "reads");
    assert!(!reads.is_empty(), "{err}");
    assert!(reads.iter().all(|e| e["opcode"] == 41), "{reads:?}");
    // `queue.in_flight >= 1`, live.
    assert!(by_name("busy")["value"].as_f64().unwrap() >= 1.0);
    assert_eq!(m["lost"], 0);
    drop(m0d);

    // show and export need neither root nor BPF: as nobody, on a copy.
    let copy = tempfile::Builder::new()
        .prefix("ri-bundle.")
        .tempdir()
        .unwrap();
    let shared = copy.path().join("b");
    assert!(
        Command::new("cp")
            .arg("-r")
            .arg(&bundle)
            .arg(&shared)
            .status()
            .unwrap()
            .success()
    );
    assert!(
        Command::new("chmod")
            .args(["-R", "a+rX"])
            .arg(copy.path())
            .status()
            .unwrap()
            .success()
    );
    let nobody = |args: &[&str]| {
        Command::new("setpriv")
            .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"])
            .arg(ri_bin())
            .args(args)
            .output()
            .expect("setpriv")
    };
    let b = shared.to_str().unwrap();
    let show = nobody(&["session", "show", b]);
    assert!(
        show.status.success(),
        "{}",
        String::from_utf8_lossy(&show.stderr)
    );
    assert!(String::from_utf8_lossy(&show.stdout).contains("late"));
    // Folded stacks of the aggregation keyed by stack.
    let folded = nobody(&["session", "export", b, "--folded", "-"]);
    assert!(
        folded.status.success(),
        "{}",
        String::from_utf8_lossy(&folded.stderr)
    );
    let folded = String::from_utf8_lossy(&folded.stdout);
    assert!(
        folded
            .lines()
            .any(|l| l.contains("m0_alloc") || l.contains(';')),
        "{folded}"
    );
    for l in folded.lines() {
        let n: u64 = l.rsplit(' ').next().unwrap().parse().expect("a weight");
        assert!(n > 0, "{l}");
    }
}

#[test]
fn a_mutating_ctl_action_runs_with_allow_mutations_and_the_target_audits_it() {
    require_bpf();
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let live = start(
        r#"
interval = "500ms"
duration = "3s"
allow_mutations = true
[instruments.finis]
cmd = "count u:m0d:m0_fom_fini"
[[triggers]]
name = "fix"
when = "after 1s"
actions = ["ctl meta.update session.audit v2"]
"#,
        &[],
    );
    let mut live = live;
    // It ends by its duration.
    let _ = live.session.wait();
    let m = manifest(&live.bundle);
    assert_eq!(
        m["fired"][0]["actions"][0]["result"], "ok",
        "{}",
        m["fired"]
    );
    let audit = live.m0d.ctl_json(&["audit", "n=100"]);
    assert!(
        audit["entries"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["cmd"] == "meta.update" && e["confirmed"] == true && e["ok"] == true),
        "{audit}"
    );
    drop(live);
}

/// A session file of one instrument `name` running `cmd` (`{calls}` in it
/// stands for the calls fixture), and the fixture started as `calls wait
/// N`: the directory, the file, the fixture and its first line.
fn calls_waiting(
    name: &str,
    cmd: &str,
    n: u32,
) -> (
    tempfile::TempDir,
    std::path::PathBuf,
    std::process::Child,
    String,
) {
    use std::io::BufRead as _;
    let calls = ri_tests::fixture("calls");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("s.toml");
    let cmd = cmd.replace("{calls}", &calls.display().to_string());
    std::fs::write(&file, format!("[instruments.{name}]\ncmd = \"{cmd}\"\n")).unwrap();
    let mut target = Command::new(&calls)
        .args(["wait", &n.to_string()])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("start calls");
    let mut first = String::new();
    std::io::BufReader::new(target.stdout.as_mut().unwrap())
        .read_line(&mut first)
        .unwrap();
    (dir, file, target, first)
}

/// Runs the session `file` on `target` (`-p`, quiet, its bundle in `dir`)
/// until its instruments are attached; the bundle's path last.
fn run_on_calls(
    dir: &tempfile::TempDir,
    file: &Path,
    target: &std::process::Child,
) -> (
    std::process::Child,
    ri_tests::Reader,
    ri_tests::Reader,
    std::path::PathBuf,
) {
    let bundle = dir.path().join("bundle");
    let mut cmd = Command::new(ri_bin());
    cmd.args(["session", "run", file.to_str().unwrap(), "-q", "-p"])
        .arg(target.id().to_string())
        .args(["--out", bundle.to_str().unwrap()]);
    let (session, out, err) = start_waiting(cmd, "instruments attached", true);
    (session, out, err, bundle)
}

#[test]
fn a_loss_to_a_tiny_ring_reaches_the_manifest_and_stderr() {
    use std::io::Write as _;
    require_bpf();
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    // A 1 MiB ring, 2,000,000 calls as fast as the process makes them, and
    // 1 KiB of the stack in each event: far more than the ring holds while
    // ri writes the bundle.
    let (dir, file, mut target, _) = calls_waiting(
        "calls",
        "trace --buffer-size 1 'u:{calls}:work_nop5(a=arg0, b=arg1, s=buf(sp, 1024))'",
        2_000_000,
    );
    let (mut session, out, err, bundle) = run_on_calls(&dir, &file, &target);
    let stdin = target.stdin.as_mut().unwrap();
    stdin.write_all(b"\n").unwrap();
    stdin.flush().unwrap();
    let _ = target.wait();
    // The session ends by itself once its only target has exited.
    let _ = session.wait();
    let err = ended(out, err);
    let m = manifest(&bundle);
    let lost = m["lost"].as_u64().unwrap();
    assert!(
        lost > 0,
        "no loss provoked: a 1 MiB ring kept up with 2,000,000 calls\n{err}"
    );
    assert_eq!(m["instruments"][0]["lost"].as_u64(), Some(lost));
    assert!(
        err.lines()
            .any(|l| l.starts_with("ri: calls: ri: ") && l.ends_with(&format!(" {lost} lost"))),
        "{err}"
    );
    assert!(err.contains(&format!("{lost} lost")), "{err}");
    assert!(err.contains("the bundle is incomplete"), "{err}");
}

/// The processes whose parent is `pid`.
fn children_of(pid: u32) -> Vec<u32> {
    let mut kids = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(child) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else {
            continue;
        };
        // After the command's name in parentheses: state, then the parent.
        let after = &stat[stat.rfind(')').unwrap() + 1..];
        if after.split_whitespace().nth(1) == Some(&pid.to_string()) {
            kids.push(child);
        }
    }
    kids
}

#[test]
fn an_instrument_that_does_not_stop_in_time_is_killed_and_the_manifest_says_so() {
    use std::{io::Write as _, os::unix::fs::FileExt as _};
    require_bpf();
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let (dir, file, mut target, first) = calls_waiting("stuck", "count 'u:{calls}:work_int3'", 3);
    let at = first
        .split_whitespace()
        .find_map(|w| w.strip_prefix("work_int3=0x"))
        .and_then(|a| u64::from_str_radix(a, 16).ok())
        .unwrap_or_else(|| panic!("calls said {first:?}"));
    let tid = target.id();
    let code = || {
        let mut b = [0u8; 8];
        std::fs::File::open(format!("/proc/{tid}/mem"))
            .unwrap()
            .read_exact_at(&mut b, at)
            .unwrap();
        b
    };
    let before = code();
    let (mut session, out, err, bundle) = run_on_calls(&dir, &file, &target);
    let kids = children_of(session.id());
    if code() == before || kids.len() != 1 {
        sigint(&mut session);
        panic!("expected one instrument's ri, its breakpoint in; the session's children: {kids:?}");
    }
    // The instrument's ri is stopped: the session's Ctrl-C cannot end it.
    let stuck = kids[0];
    // SAFETY: plain kill(2) on the session's child.
    unsafe { libc::kill(stuck as i32, libc::SIGSTOP) };
    let asked = std::time::Instant::now();
    sigint(&mut session);
    let took = asked.elapsed();
    let err = ended(out, err);
    assert!(
        took >= Duration::from_secs(15) && took < Duration::from_secs(40),
        "the session waited {took:?} for its instrument\n{err}"
    );
    assert!(
        err.contains(
            "ri: instrument stuck did not stop within 15 s: killed; its losses are unknown"
        ),
        "{err}"
    );
    assert!(err.contains("losses unknown for stuck"), "{err}");
    let m = manifest(&bundle);
    let inst = &m["instruments"][0];
    assert_eq!(inst["exits"], serde_json::json!([null]), "{inst}");
    assert_eq!(inst["losses_unknown"], Value::Bool(true), "{inst}");
    assert_eq!(m["losses_unknown"], serde_json::json!(["stuck"]), "{m}");
    // Nothing is left: the instrument's ri is gone and the target's code
    // is restored; the target runs on to its end.
    assert!(
        !Path::new(&format!("/proc/{stuck}")).exists(),
        "the instrument's ri {stuck} is still there"
    );
    assert_eq!(code(), before, "the breakpoint must be gone with the ri");
    let stdin = target.stdin.as_mut().unwrap();
    stdin.write_all(b"\n\n").unwrap();
    stdin.flush().unwrap();
    assert!(target.wait().unwrap().success());
}
