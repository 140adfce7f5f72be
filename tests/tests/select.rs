//! Processes by name on real processes: `--comm`/`--exe` pick up an m0d
//! started (or restarted) while ri runs, detach from one that exits, and
//! ri inside a pid namespace reports that namespace's pids.

use std::{
    io::{BufRead, BufReader, Read},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use ri_tests::{
    events, fixture,
    m0sim::{M0d, M0dConfig},
    require_bpf, ri_bin,
    run::final_entries,
};
use serde_json::Value;

/// A running ri whose stderr lines arrive one by one.
struct Ri {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
    out: Option<std::thread::JoinHandle<Vec<u8>>>,
}

impl Ri {
    /// Starts `ri ARGS` and waits for its attach line.
    fn start(args: &[&str]) -> Ri {
        Ri::spawn(Command::new(ri_bin()).args(args))
    }

    /// Starts `cmd` (an ri, maybe wrapped) and waits for its attach line.
    fn spawn(cmd: &mut Command) -> Ri {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start ri");
        let err = BufReader::new(child.stderr.take().unwrap());
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for l in err.lines().map_while(Result::ok) {
                let _ = tx.send(l);
            }
        });
        let mut stdout = child.stdout.take().unwrap();
        let out = std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = stdout.read_to_end(&mut v);
            v
        });
        let mut ri = Ri {
            child,
            lines,
            seen: Vec::new(),
            out: Some(out),
        };
        ri.wait_for("attached", Duration::from_secs(30));
        ri
    }

    /// Waits at most `limit` for a stderr line containing `text`.
    fn wait_for(&mut self, text: &str, limit: Duration) -> String {
        if let Some(l) = self.seen.iter().find(|l| l.contains(text)) {
            return l.clone();
        }
        let end = Instant::now() + limit;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    self.seen.push(l.clone());
                    if l.contains(text) {
                        return l;
                    }
                }
                Err(_) => panic!(
                    "ri printed no '{text}' within {limit:?}; stderr so far:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    /// Stops ri with SIGINT (or waits for it to end by itself); its stdout
    /// and whole stderr.
    fn stop(mut self, interrupt: bool) -> (String, String) {
        if interrupt {
            // SAFETY: plain syscall on our child.
            unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        }
        let status = self.child.wait().expect("wait for ri");
        let out = self.out.take().unwrap().join().unwrap();
        self.seen.extend(self.lines.try_iter());
        // The reader may still hold the last lines for a moment.
        while let Ok(l) = self.lines.recv_timeout(Duration::from_millis(200)) {
            self.seen.push(l);
        }
        let err = self.seen.join("\n");
        assert!(status.success(), "ri failed ({status}):\n{err}");
        (String::from_utf8_lossy(&out).into_owned(), err)
    }
}

impl Drop for Ri {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The count of the entry keyed by `pid`, if any.
fn count_of(entries: &[Value], pid: i32) -> Option<u64> {
    entries
        .iter()
        .find(|e| e["by"]["pid"].as_i64() == Some(pid as i64))
        .and_then(|e| e["count"].as_u64())
}

/// Runs `n` creates against `m0d`, each a request its handler serves.
fn creates(m0d: &M0d, prefix: &str, n: usize) {
    for i in 0..n {
        let out = m0d.client(&["create", &format!("{prefix}{i}")]);
        assert!(out.status.success(), "m0client create failed: {out:?}");
    }
}

/// The m0d fixture copied into `dir` as `name` (its own file and comm).
fn m0d_copy(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::copy(fixture("m0d"), &path).expect("copy m0d");
    path
}

/// A shell script `name` in `dir` running `body` (its comm is `name`).
fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).expect("write the script");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    path
}

#[test]
fn a_restarted_m0d_is_picked_up_at_once_under_comm() {
    require_bpf();
    let probe = format!("u:{}:m0_fom_init", fixture("m0d").display());
    let first = M0d::start();
    let mut ri = Ri::start(&[
        "count", &probe, "--comm", "m0d", "--by", "pid", "--by", "comm", "--json",
    ]);
    let matched = ri.wait_for("--comm m0d matches pid", Duration::from_secs(1));
    assert!(
        matched.contains(&format!("{} (m0d)", first.pid)),
        "the running m0d is not selected: {matched}"
    );
    creates(&first, "a", 5);
    first.signal(libc::SIGKILL);
    assert!(
        first.wait(Duration::from_secs(10)).is_some(),
        "m0d survived SIGKILL"
    );
    ri.wait_for(
        &format!("pid {} (m0d) exited: detached", first.pid),
        Duration::from_secs(2),
    );
    // The restart: its requests count from its very first one.
    let second = M0d::start();
    let started = Instant::now();
    creates(&second, "b", 7);
    ri.wait_for(
        &format!("pid {} (m0d) started: attached", second.pid),
        Duration::from_secs(1),
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    let (out, err) = ri.stop(true);
    let entries = final_entries(&out);
    assert_eq!(
        count_of(&entries, first.pid),
        Some(5),
        "first m0d:\n{out}\n{err}"
    );
    assert_eq!(
        count_of(&entries, second.pid),
        Some(7),
        "restarted m0d:\n{out}\n{err}"
    );
    assert!(
        entries
            .iter()
            .filter(|e| e["by"]["pid"].as_i64() == Some(second.pid as i64))
            .all(|e| e["by"]["comm"] == "m0d"),
        "{out}"
    );
}

#[test]
fn run_pack_under_exe_follows_a_restart_and_counts_exactly() {
    require_bpf();
    let dir = tempfile::tempdir().expect("temporary directory");
    // A copy of its own: only this test's m0d runs this file.
    let bin = m0d_copy(dir.path(), "m0d");
    let exe = bin.display().to_string();
    let mut ri = Ri::start(&["run", "motr.ops", "--exe", &exe, "--target", &exe, "--json"]);
    ri.wait_for("no process matches --exe", Duration::from_secs(1));
    let cfg = || M0dConfig {
        bin: Some(bin.clone()),
        ..Default::default()
    };
    let first = M0d::start_with(cfg());
    creates(&first, "c", 3);
    ri.wait_for(
        &format!("pid {} (m0d) started: attached", first.pid),
        Duration::from_secs(1),
    );
    // Opcode names are read from a live process every 250 ms: give them
    // one read before the stop.
    std::thread::sleep(Duration::from_millis(600));
    drop(first);
    let second = M0d::start_with(cfg());
    creates(&second, "d", 4);
    ri.wait_for(
        &format!("pid {} (m0d) started: attached", second.pid),
        Duration::from_secs(1),
    );
    let (out, err) = ri.stop(true);
    let creates_counted: u64 = final_entries(&out)
        .iter()
        .filter(|e| e["by"]["opcode_name"] == "create")
        .filter_map(|e| e["count"].as_u64())
        .sum();
    assert_eq!(creates_counted, 7, "{out}\n{err}");
}

#[test]
fn ri_in_a_pid_namespace_shows_that_namespaces_pids() {
    require_bpf();
    if Command::new("unshare").arg("--version").output().is_err() {
        panic!("unshare (util-linux) is needed for the pid namespace test");
    }
    let dir = tempfile::tempdir().expect("temporary directory");
    let d = dir.path().display().to_string();
    let m0d = fixture("m0d").display().to_string();
    // In the namespace: m0d in the background (its pid as the namespace's
    // shell sees it written down), then ri in the shell's place (pid 1):
    // when it ends, the namespace and m0d end with it.
    let script = format!(
        "{m0d} --port 0 --no-sync --data {d}/data >{d}/m0d.out 2>{d}/m0d.err & \
         echo $! >{d}/m0d.pid; \
         exec {ri} trace --json --comm m0d -d 8 u:{m0d}:m0_fom_init",
        ri = ri_bin().display()
    );
    let ri = Ri::spawn(Command::new("unshare").args([
        "--pid",
        "--fork",
        "--mount-proc",
        "sh",
        "-c",
        &script,
    ]));
    let ns_pid: i32 = std::fs::read_to_string(dir.path().join("m0d.pid"))
        .expect("m0d.pid")
        .trim()
        .parse()
        .expect("a pid");
    // The endpoint line: m0d is up.
    let t = Instant::now();
    let endpoint = loop {
        let out = std::fs::read_to_string(dir.path().join("m0d.out")).unwrap_or_default();
        if let Some(ep) = out.lines().find_map(|l| l.strip_prefix("endpoint ")) {
            break ep.to_string();
        }
        assert!(t.elapsed() < Duration::from_secs(20), "m0d did not start");
        std::thread::sleep(Duration::from_millis(20));
    };
    let client = |name: &str| {
        Command::new(fixture("m0client"))
            .args(["--endpoint", &endpoint, "--timeout", "20", "create", name])
            .stdin(Stdio::null())
            .output()
            .expect("run m0client")
    };
    for i in 0..3 {
        assert!(client(&format!("ns{i}")).status.success());
    }
    let (out, err) = ri.stop(false);
    // Only the namespace's m0d is seen, under the namespace's pid.
    assert!(err.contains(&format!("pid {ns_pid} (m0d)")), "{err}");
    let evs = events(out.as_bytes());
    assert_eq!(evs.len(), 3, "{out}\n{err}");
    for e in &evs {
        assert_eq!(e["pid"].as_i64(), Some(ns_pid as i64), "{e}");
        assert!(e["tid"].as_i64().unwrap_or(0) < 1000, "{e}");
    }
}

#[test]
fn report_ctl_and_peek_go_through_every_matching_process() {
    require_bpf();
    let dir = tempfile::tempdir().expect("temporary directory");
    let bin = m0d_copy(dir.path(), "m0d-sections");
    let exe = bin.display().to_string();
    let cfg = || M0dConfig {
        bin: Some(bin.clone()),
        ..Default::default()
    };
    let (a, b) = (M0d::start_with(cfg()), M0d::start_with(cfg()));
    let heads = [
        format!("== pid {} (m0d-sections) ==", a.pid.min(b.pid)),
        format!("== pid {} (m0d-sections) ==", a.pid.max(b.pid)),
    ];
    for args in [
        vec!["report", "--no-stacks", "--sections", "process"],
        vec!["ctl", "stats"],
        vec!["peek", "m0sim_trace_nr"],
    ] {
        let out = Command::new(ri_bin())
            .args(&args)
            .args(["--exe", &exe])
            .stdin(Stdio::null())
            .output()
            .expect("run ri");
        let text = String::from_utf8_lossy(&out.stdout);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "ri {args:?}: {err}");
        let at: Vec<usize> = heads
            .iter()
            .map(|h| {
                text.find(h.as_str())
                    .unwrap_or_else(|| panic!("{args:?}: no {h}:\n{text}"))
            })
            .collect();
        assert!(at[0] < at[1], "{args:?}: sections out of order:\n{text}");
    }
}

#[test]
fn exe_traces_a_process_started_later_from_its_first_call() {
    require_bpf();
    let calls = fixture("calls").display().to_string();
    let probe = format!("u:{calls}:work_nop5(a=arg0)");
    let mut ri = Ri::start(&["trace", "--json", "--exe", &calls, &probe]);
    // It makes its calls at once: the kernel selects it at its exec.
    let run = Command::new(&calls)
        .args(["calls", "4"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .expect("start calls");
    let pid = run.id();
    assert!(
        run.wait_with_output()
            .expect("wait for calls")
            .status
            .success()
    );
    ri.wait_for(
        &format!("pid {pid} (calls) started: attached"),
        Duration::from_secs(1),
    );
    ri.wait_for(
        &format!("pid {pid} (calls) exited: detached"),
        Duration::from_secs(2),
    );
    let (stdout, err) = ri.stop(true);
    let evs = events(stdout.as_bytes());
    let ours: Vec<&Value> = evs
        .iter()
        .filter(|e| e["pid"].as_u64() == Some(u64::from(pid)))
        .collect();
    assert_eq!(ours.len(), 4, "{stdout}\n{err}");
}

#[test]
fn a_process_that_execs_another_program_is_detached() {
    require_bpf();
    let dir = tempfile::tempdir().expect("temporary directory");
    let done = dir.path().join("done");
    let script = script(
        dir.path(),
        "ri-sel-script",
        &format!(
            "while [ ! -e {} ]; do sleep 0.05; done\nexec sleep 0.2",
            done.display()
        ),
    );
    let probe = format!("u:{}:work_nop5", fixture("calls").display());
    let mut ri = Ri::start(&["count", "--comm", "ri-sel-script", &probe]);
    let mut child = Command::new(&script).spawn().expect("start the script");
    let pid = child.id();
    ri.wait_for(
        &format!("pid {pid} (ri-sel-script) started: attached"),
        Duration::from_secs(1),
    );
    std::fs::write(&done, "").unwrap();
    ri.wait_for(
        &format!("pid {pid} (sleep) runs another program: detached"),
        Duration::from_secs(2),
    );
    assert!(child.wait().unwrap().success());
    drop(ri.stop(true));
}

#[test]
fn a_child_forked_by_a_selected_process_is_selected_until_it_execs() {
    require_bpf();
    let dir = tempfile::tempdir().expect("temporary directory");
    let go = dir.path().join("go");
    // The shell forks a child for `sleep`, which then execs it.
    let script = script(
        dir.path(),
        "ri-sel-fork",
        &format!("while [ ! -e {} ]; do :; done\nsleep 0.1", go.display()),
    );
    let mut child = Command::new(&script).spawn().expect("start the script");
    let pid = child.id();
    let probe = format!("u:{}:work_nop5", fixture("calls").display());
    let mut ri = Ri::start(&["count", "--comm", "ri-sel-fork", &probe]);
    ri.wait_for(
        &format!("--comm ri-sel-fork matches pid {pid} (ri-sel-fork)"),
        Duration::from_secs(1),
    );
    std::fs::write(&go, "").unwrap();
    let forked = ri.wait_for("(ri-sel-fork) started: attached", Duration::from_secs(2));
    let forked_pid = forked
        .strip_prefix("ri: pid ")
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_default()
        .to_string();
    assert_ne!(forked_pid, pid.to_string(), "{forked}");
    ri.wait_for(
        &format!("pid {forked_pid} (sleep) runs another program: detached"),
        Duration::from_secs(2),
    );
    assert!(child.wait().unwrap().success());
    ri.wait_for(
        &format!("pid {pid} (ri-sel-fork) exited: detached"),
        Duration::from_secs(2),
    );
    drop(ri.stop(true));
}
