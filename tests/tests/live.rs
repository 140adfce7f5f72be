//! Tests that need more than one process or a timeline: tracing a running
//! process with -p, checking its code bytes before, during and after,
//! lost-event accounting, and agreement with bpftrace.

use std::{
    io::{BufRead, BufReader, Read, Write},
    os::unix::fs::FileExt,
    process::{Child, ChildStdout, Command, Stdio},
};

use ri_tests::{
    bpftrace, events, fixture, of_probe, require_bpf, ri, ri_bin, spawn_ri, start_fixture,
};

/// A `calls wait N` fixture: started, its function addresses read.
struct Waiting {
    child: Child,
    out: BufReader<ChildStdout>,
    addrs: Vec<(String, u64)>,
}

impl Waiting {
    fn start(n: u32) -> Self {
        let (child, out, line) = start_fixture("calls", &["wait", &n.to_string()]);
        let addrs = line
            .split_whitespace()
            .skip(1)
            .map(|kv| {
                let (k, v) = kv.split_once('=').unwrap();
                (
                    k.to_string(),
                    u64::from_str_radix(v.trim_start_matches("0x"), 16).unwrap(),
                )
            })
            .collect();
        Waiting { child, out, addrs }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The first 8 code bytes of each probed function, from the live process.
    fn code(&self) -> Vec<[u8; 8]> {
        let mem = std::fs::File::open(format!("/proc/{}/mem", self.pid())).unwrap();
        self.addrs
            .iter()
            .map(|(_, a)| {
                let mut b = [0u8; 8];
                mem.read_exact_at(&mut b, *a).unwrap();
                b
            })
            .collect()
    }

    fn go(&mut self) -> String {
        writeln!(self.child.stdin.as_mut().unwrap()).unwrap();
        let mut line = String::new();
        self.out.read_line(&mut line).unwrap();
        line
    }

    fn finish(mut self) {
        writeln!(self.child.stdin.as_mut().unwrap()).unwrap();
        assert!(self.child.wait().unwrap().success());
    }
}

/// Starts `ri ARGS` and waits for its "attached" line on stderr.
fn start_ri(args: &[&str]) -> (Child, String) {
    let (mut ri, mut err) = spawn_ri(args);
    let mut line = String::new();
    err.read_line(&mut line).unwrap();
    assert!(line.contains("attached"), "ri did not attach: {line}");
    let rest = std::thread::spawn(move || {
        let mut s = String::new();
        err.read_to_string(&mut s).unwrap();
        s
    });
    ri.stderr = None;
    // Keep the stderr reader alive by stashing its result in the child's
    // lifetime: joined in stop_ri.
    STDERR.with(|s| s.borrow_mut().push(rest));
    (ri, line)
}

thread_local! {
    static STDERR: std::cell::RefCell<Vec<std::thread::JoinHandle<String>>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Stops ri with SIGINT (as Ctrl-C does) and returns (status, stdout, stderr).
fn stop_ri(mut ri: Child) -> (i32, Vec<u8>, String) {
    unsafe { libc::kill(ri.id() as i32, libc::SIGINT) };
    let mut out = Vec::new();
    ri.stdout.take().unwrap().read_to_end(&mut out).unwrap();
    let status = ri.wait().unwrap();
    let err = STDERR.with(|s| s.borrow_mut().pop().unwrap().join().unwrap());
    (status.code().unwrap_or(-1), out, err)
}

#[test]
fn pid_mode_traces_only_that_process_and_detaching_restores_the_code() {
    require_bpf();
    let mut traced = Waiting::start(200);
    let mut other = Waiting::start(50);
    let before = traced.code();
    let pid = traced.pid().to_string();
    let calls = fixture("calls").display().to_string();
    let (ri, _) = start_ri(&[
        "trace",
        "--json",
        "-p",
        &pid,
        &format!("u:{calls}:work_int3(a=arg0, b=arg1)"),
        &format!("u:{calls}:work_nop5(a=arg0, b=arg1)"),
    ]);
    let during = traced.code();
    assert_ne!(
        before[0], during[0],
        "work_int3 should carry a breakpoint while attached"
    );
    assert!(traced.go().starts_with("done 200"));
    assert!(other.go().starts_with("done 50"));
    let (status, out, err) = stop_ri(ri);
    assert_eq!(status, 0, "{err}");
    assert!(err.contains("ri: 400 events, 0 lost"), "{err}");
    let evs = events(&out);
    assert_eq!(of_probe(&evs, ":work_int3").len(), 200);
    assert_eq!(of_probe(&evs, ":work_nop5").len(), 200);
    assert!(
        evs.iter()
            .all(|e| e["pid"].as_u64() == Some(traced.pid() as u64))
    );
    let last = of_probe(&evs, ":work_nop5")[199];
    assert_eq!(
        (last["a"].as_u64(), last["b"].as_u64()),
        (Some(199), Some(597))
    );
    assert_eq!(
        traced.code(),
        before,
        "detaching must restore the original code bytes"
    );
    traced.finish();
    other.finish();
}

#[test]
fn lost_events_are_counted_exactly() {
    require_bpf();
    let calls = fixture("calls").display().to_string();
    let dir = std::env::temp_dir().join(format!("ri-lost-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let outfile = dir.join("out.json");
    // A 1 MiB buffer and a tight loop of probed calls: some events may be
    // lost, but seen + lost must equal the calls made.
    let status = Command::new(ri_bin())
        .args([
            "trace",
            "--json",
            "--buffer-size",
            "1",
            "-c",
            &format!("{calls} spin 1"),
            &format!("u:{calls}:work_nop5(a=arg0, b=arg1)"),
        ])
        .stdout(std::fs::File::create(&outfile).unwrap())
        .stderr(std::fs::File::create(dir.join("err")).unwrap())
        .status()
        .unwrap();
    assert!(status.success());
    let out = std::fs::read(&outfile).unwrap();
    let err = std::fs::read_to_string(dir.join("err")).unwrap();
    let made: u64 = String::from_utf8_lossy(&out)
        .lines()
        .find_map(|l| l.strip_prefix("calls "))
        .expect("fixture reports its calls")
        .trim()
        .parse()
        .unwrap();
    let summary = err
        .lines()
        .find(|l| l.starts_with("ri: ") && l.contains(" events, "))
        .unwrap();
    let nums: Vec<u64> = summary
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap())
        .collect();
    let (seen, lost) = (nums[0], nums[1]);
    assert_eq!(events(&out).len() as u64, seen, "{summary}");
    assert_eq!(seen + lost, made, "{summary}; fixture made {made} calls");
    assert!(
        made > 100_000,
        "the fixture should make many calls, made {made}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn counts_agree_with_bpftrace() {
    require_bpf();
    let calls = fixture("calls").display().to_string();
    let n = 2000;
    let out = ri(&[
        "trace",
        "--json",
        "-q",
        "-c",
        &format!("{calls} calls {n}"),
        &format!("u:{calls}:work_int3"),
        &format!("u:{calls}:work_nop5(a=arg0, b=arg1)"),
    ]);
    assert!(out.status.success());
    let evs = events(&out.stdout);
    let ri_int3 = of_probe(&evs, ":work_int3").len();
    let ri_nop5 = of_probe(&evs, ":work_nop5").len();
    assert_eq!((ri_int3, ri_nop5), (n, n));
    let Some(bt) = bpftrace(&[
        "-c",
        &format!("{calls} calls {n}"),
        "-e",
        // bpftrace 0.17 also counts other tracers' processes on a shared
        // probe site; its own cpid predicate keeps the comparison fair.
        &format!(
            "uprobe:{calls}:work_int3 /pid == cpid/ {{ @a = count(); }} uprobe:{calls}:work_nop5 /pid == cpid/ {{ @b = count(); }}"
        ),
    ]) else {
        eprintln!("bpftrace is not installed: compared ri with the fixture's own count only");
        return;
    };
    let text = String::from_utf8_lossy(&bt.stdout);
    let get = |k: &str| -> usize {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("@{k}: ")))
            .unwrap_or_else(|| panic!("no @{k} in bpftrace output: {text}"))
            .trim()
            .parse()
            .unwrap()
    };
    assert_eq!((get("a"), get("b")), (ri_int3, ri_nop5));
}

#[test]
fn count_by_key_agrees_with_bpftrace() {
    require_bpf();
    let calls = fixture("calls").display().to_string();
    let cmd = format!("{calls} calls 2000");
    let out = ri(&[
        "count",
        "--json",
        "-q",
        "-c",
        &cmd,
        &format!("u:{calls}:work_nop5"),
        "--by",
        "arg0 % 7",
    ]);
    assert!(out.status.success());
    let doc = events(&out.stdout).pop().expect("a final JSON object");
    assert_eq!(doc["type"], "final");
    let mut ri_counts: Vec<(u64, u64)> = doc["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let k = e["by"]["arg0 % 7"].as_u64().unwrap();
            (k, e["count"].as_u64().unwrap())
        })
        .collect();
    ri_counts.sort();
    let expect: Vec<(u64, u64)> = (0..7u64).map(|k| (k, (2000 - k).div_ceil(7))).collect();
    assert_eq!(ri_counts, expect);
    let Some(bt) = bpftrace(&[
        "-c",
        &cmd,
        "-e",
        &format!("uprobe:{calls}:work_nop5 /pid == cpid/ {{ @[arg0 % 7] = count(); }}"),
    ]) else {
        eprintln!("bpftrace is not installed: compared ri with the fixture's own count only");
        return;
    };
    let text = String::from_utf8_lossy(&bt.stdout);
    let mut bt_counts: Vec<(u64, u64)> = text
        .lines()
        .filter_map(|l| l.strip_prefix("@["))
        .filter_map(|l| l.split_once("]: "))
        .map(|(k, v)| (k.parse().unwrap(), v.trim().parse().unwrap()))
        .collect();
    bt_counts.sort();
    assert_eq!(bt_counts, ri_counts, "bpftrace said: {text}");
}

/// A return probe that reads its call's arguments gets them from a
/// companion entry probe. A call already running when ri attaches is not
/// reported at all (the kernel hooks a return at the call's entry), so no
/// return is ever shown with another call's arguments, and none is skipped.
#[test]
fn return_probe_reads_the_arguments_of_calls_begun_after_attaching() {
    require_bpf();
    let mut sleeper = Command::new(fixture("calls"))
        .args(["sleep", "3", "2000"])
        .stdout(Stdio::null())
        .spawn()
        .expect("start fixture");
    // Inside the first two-second sleep when ri attaches (with time to
    // spare on a loaded machine); ri stops after the last.
    std::thread::sleep(std::time::Duration::from_millis(150));
    let calls = fixture("calls").display().to_string();
    let out = ri(&[
        "trace",
        "--json",
        "--duration",
        "7",
        "-p",
        &sleeper.id().to_string(),
        &format!("ur:{calls}:timed_sleep(ms=arg0, r=retval)"),
    ]);
    assert!(sleeper.wait().unwrap().success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "ri failed: {err}");
    let ev = events(&out.stdout);
    let got: Vec<(u64, u64)> = of_probe(&ev, ":timed_sleep")
        .iter()
        .map(|e| (e["ms"].as_u64().unwrap(), e["r"].as_u64().unwrap()))
        .collect();
    assert_eq!(got, [(2000, 2000), (2000, 2000)], "stderr: {err}");
    assert!(!err.contains("skipped"), "stderr: {err}");
}

/// With -p and no duration, ri stops once the traced process has exited
/// (even unreaped), says so, and prints its summary.
#[test]
fn pid_mode_stops_when_the_process_exits() {
    require_bpf();
    let mut sleeper = Command::new(fixture("calls"))
        .args(["sleep", "3", "300"])
        .stdout(Stdio::null())
        .spawn()
        .expect("start fixture");
    let pid = sleeper.id().to_string();
    let calls = fixture("calls").display().to_string();
    // `timeout` turns a ri that never stops into a failure, not a hang.
    let out = Command::new("timeout")
        .arg("30")
        .arg(ri_bin())
        .args(["trace", "--json", "-p", &pid])
        .arg(format!("u:{calls}:timed_sleep(ms=arg0)"))
        .output()
        .expect("run ri");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "ri: {:?}\n{err}", out.status);
    assert!(
        err.contains(&format!("ri: traced process {pid} exited")),
        "{err}"
    );
    assert!(err.contains("events, 0 lost"), "{err}");
    assert!(sleeper.wait().unwrap().success());
}

/// CLOCK_MONOTONIC in ns, the clock of the events' `ts_ns`.
fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: plain clock read into a local.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

#[test]
fn sparse_events_reach_user_space_within_5_ms() {
    require_bpf();
    // Pairs of events 100 ms apart: the first of a pair goes to the ring at
    // once, the second (microseconds later) waits in its CPU's batch until
    // the reader asks for it. Each must be printed within 5 ms of its hit.
    const ROUNDS: usize = 15;
    let calls = fixture("calls").display().to_string();
    let (mut ri, _err) = spawn_ri(&[
        "trace",
        "--json",
        "-c",
        &format!("{calls} slow {ROUNDS}"),
        &format!("u:{calls}:work_int3(a=arg0)"),
        &format!("u:{calls}:work_nop5(a=arg0)"),
    ]);
    let out = BufReader::new(ri.stdout.take().unwrap());
    let mut delays = Vec::new();
    for line in out.lines().map_while(Result::ok) {
        let now = monotonic_ns();
        if !line.starts_with('{') {
            continue;
        }
        let ev: serde_json::Value = serde_json::from_str(&line).unwrap();
        let ts = ev["ts_ns"].as_u64().expect("ts_ns in every event");
        delays.push(now.saturating_sub(ts) as f64 / 1e6);
    }
    assert!(ri.wait().unwrap().success());
    assert_eq!(
        delays.len(),
        2 * ROUNDS,
        "every call's event arrives: {delays:?}"
    );
    delays.sort_by(|a, b| a.partial_cmp(b).unwrap());
    // The machine may be busy: most events, not every one, within 5 ms.
    let p80 = delays[delays.len() * 4 / 5];
    assert!(
        p80 <= 5.0,
        "events took {p80:.2} ms (80th percentile) to reach user space, more than 5 ms: {delays:?}"
    );
}
