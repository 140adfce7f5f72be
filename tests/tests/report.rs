//! `ri report`: stacks of threads parked in known call chains (with frame
//! pointers, without, and without unwind tables), every section and flag,
//! safety when ri is killed mid-report or the target exits, and a report
//! without ptrace rights. On PostgreSQL and m0d: `report_services.rs`.
//!
//! These tests stop threads with ptrace and read other users' processes:
//! run them as root.

use std::{
    io::{BufRead, BufReader, Write},
    os::unix::{fs::PermissionsExt, process::CommandExt},
    process::{Child, ChildStdin, ChildStdout, Command, Stdio},
    time::{Duration, Instant},
};

use ri_tests::{
    fixture,
    report::{
        assert_in_order, assert_untouched, report, report_json, task_state, tasks, tempdir, thread,
        tracer,
    },
    ri_bin,
};
use serde_json::Value;

/// A `threads` fixture: started, its threads parked.
struct Threads {
    child: Child,
    stdin: ChildStdin,
    out: BufReader<ChildStdout>,
    pid: u32,
    /// Threads that answer a ping (all but main).
    answering: usize,
}

impl Threads {
    fn start(variant: &str, args: &[&str]) -> Threads {
        Threads::start_env(variant, args, &[])
    }

    fn start_env(variant: &str, args: &[&str], env: &[(&str, &str)]) -> Threads {
        let mut child = Command::new(fixture(variant))
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start threads fixture");
        let stdin = child.stdin.take().unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        assert!(line.starts_with("ready "), "fixture said {line:?}");
        let pid = child.id();
        let workers: usize = args
            .iter()
            .position(|a| *a == "--workers")
            .map(|i| args[i + 1].parse().unwrap())
            .unwrap_or(0);
        let spin = args.contains(&"--spin");
        let t = Threads {
            child,
            stdin,
            out,
            pid,
            answering: 2 + workers + usize::from(spin),
        };
        t.wait_parked();
        t
    }

    /// Waits until every thread but the spinner sleeps (is in its read or
    /// condition wait).
    fn wait_parked(&self) {
        let t0 = Instant::now();
        loop {
            let all = tasks(self.pid).iter().all(|&tid| {
                let comm = std::fs::read_to_string(format!("/proc/{}/task/{tid}/comm", self.pid))
                    .unwrap_or_default();
                comm.trim() == "gamma" || task_state(self.pid, tid) == Some('S')
            });
            if all {
                return;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "fixture threads never parked"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Wakes every thread once; true when all answered.
    fn ping(&mut self) -> bool {
        writeln!(self.stdin, "ping").unwrap();
        let mut line = String::new();
        self.out.read_line(&mut line).unwrap();
        line.trim() == format!("pong {}", self.answering)
    }
}

impl Drop for Threads {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn stacks_follow_the_call_chains_with_and_without_frame_pointers() {
    for variant in ["threads", "threads-nofp", "threads-nocfi"] {
        let spin: &[&str] = if variant == "threads" {
            &["--workers", "2", "--spin"]
        } else {
            &["--workers", "2"]
        };
        let mut fx = Threads::start(variant, spin);
        let pid = fx.pid.to_string();
        let r = report_json(&[&pid, "--sections", "threads"]);
        assert!(r.get("process").is_none(), "only the threads section");
        let th = &r["threads"];
        assert_eq!(th["stacks"], true, "{variant}: {th:#}");
        assert_eq!(th["count"].as_u64(), Some(fx.answering as u64 + 1));
        assert_eq!(th["stopped"], th["count"]);

        let alpha = thread(&r, "alpha");
        assert!(
            alpha["state"].as_str().unwrap().starts_with('S'),
            "{alpha:#}"
        );
        assert_in_order(alpha, &["level3", "level2", "level1", "alpha_main"]);
        let beta = thread(&r, "beta");
        assert!(beta["state"].as_str().unwrap().starts_with('S'));
        assert_in_order(beta, &["cond_inner", "cond_outer", "beta_main"]);
        for w in ["worker-0", "worker-1"] {
            assert_in_order(thread(&r, w), &["worker_wait", "worker_main"]);
        }
        if variant == "threads" {
            let gamma = thread(&r, "gamma");
            assert!(
                gamma["state"].as_str().unwrap().starts_with('R'),
                "{gamma:#}"
            );
            assert_in_order(gamma, &["spin_loop", "gamma_main"]);
            // DWARF gives file:line in the fixture.
            let level3 = &alpha["stack"].as_array().unwrap()[1];
            assert_eq!(level3["function"], "level3");
            assert!(level3["file"].as_str().unwrap().ends_with("threads.c"));
            assert!(level3["line"].as_u64().unwrap() > 0);
        }
        // How the fixture's own frames were found: only CFI without frame
        // pointers, the frame-pointer chain without unwind tables.
        let methods: Vec<&str> = alpha["stack"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|f| f["module"].as_str().is_some_and(|m| m.ends_with(variant)))
            .skip(1)
            .map(|f| f["method"].as_str().unwrap())
            .collect();
        match variant {
            "threads-nofp" => assert!(methods.iter().all(|m| *m == "cfi"), "{methods:?}"),
            "threads-nocfi" => assert!(methods.contains(&"fp"), "{methods:?}"),
            _ => {}
        }
        // Every thread was paused briefly, and runs on afterwards.
        for t in th["threads"].as_array().unwrap() {
            let p = t["paused_us"].as_u64().expect("paused_us");
            assert!(p < 1_000_000, "{variant}: a pause of {p} µs");
        }
        assert_untouched(fx.pid);
        assert!(
            fx.ping(),
            "{variant}: some thread did not answer after the report"
        );
    }
}

#[test]
fn text_report_has_every_section_and_flags_work() {
    let fx = Threads::start_env(
        "threads",
        &["--workers", "1"],
        &[("MY_API_TOKEN", "hunter2"), ("PLAIN_SETTING", "visible")],
    );
    let pid = fx.pid.to_string();
    let out = report(&[&pid]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    for banner in [
        "Guru Meditation",
        "Process",
        "Package",
        "Threads",
        "Files",
        "Sockets",
        "Memory",
        "Configuration",
        "Control",
    ] {
        assert!(
            text.lines()
                .any(|l| l.starts_with("====") && l.contains(&format!(" {banner} "))),
            "no {banner} section in:\n{text}"
        );
    }
    assert!(
        text.contains("Thread") && text.contains("\"alpha\""),
        "{text}"
    );
    assert!(text.contains("level3+0x"), "{text}");
    assert!(text.contains("MY_API_TOKEN=<redacted>"), "{text}");
    assert!(!text.contains("hunter2"), "a secret leaked:\n{text}");
    assert!(text.contains("PLAIN_SETTING=visible"));
    assert!(text.contains("libc6"), "libc's package: {text}");

    let r = report_json(&[&pid]);
    assert_eq!(r["process"]["name"], "threads");
    assert_eq!(r["process"]["cmdline"][1], "--workers");
    assert!(
        r["process"]["build_id"]
            .as_str()
            .is_some_and(|b| b.len() == 40)
    );
    assert!(r["process"]["uptime_s"].as_f64().is_some());
    assert!(!r["process"]["limits"].as_array().unwrap().is_empty());
    assert_eq!(r["config"]["env"]["MY_API_TOKEN"], "<redacted>");
    assert!(
        r["files"]["fds"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["kind"] == "pipe")
    );
    assert!(r["memory"]["rss_kb"].as_u64().unwrap() > 0);
    assert!(
        r["memory"]["mappings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["name"].as_str().unwrap().ends_with("/threads"))
    );
    let libc = r["package"]["libraries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["path"].as_str().unwrap().contains("libc.so"))
        .expect("libc in the package section");
    assert!(
        libc["package"].as_str().unwrap().starts_with("libc6"),
        "{libc}"
    );
    assert!(libc["version"].as_str().is_some());
    assert!(r["control"]["targets"].as_array().unwrap().is_empty());

    // --output writes the same report; --no-stacks stops nothing.
    let dir = tempdir("out");
    let file = dir.join("report.json");
    let out = report(&[
        "-p",
        &pid,
        "--json",
        "--no-stacks",
        "--output",
        file.to_str().unwrap(),
    ]);
    assert!(out.status.success());
    assert!(out.stdout.is_empty());
    let r: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert_eq!(r["threads"]["stacks"], false);
    assert_eq!(r["threads"]["stopped"], 0);
    assert_eq!(r["threads"]["count"], 4);
    let _ = std::fs::remove_dir_all(&dir);

    // Bad input: one line, exit status 2.
    let out = report(&[&pid, "--sections", "threads,stacks"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("unknown section 'stacks'"), "{err}");
    assert!(err.contains("process, package, threads, files, sockets, memory, config, control"));
    let out = report(&["4194999"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim(), "ri: error: no such pid: 4194999");
    let out = report(&["abc"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(String::from_utf8_lossy(&out.stderr).lines().count(), 1);
    assert_untouched(fx.pid);
}

/// Starts `ri report` with the test hook that holds each thread stopped,
/// and waits until ri has stopped a thread of `pid`. The caller waits for
/// the returned child.
#[allow(clippy::zombie_processes)]
fn start_slow_report(pid: u32, delay_ms: u32, json: bool) -> Child {
    let mut cmd = Command::new(ri_bin());
    cmd.arg("report").arg(pid.to_string());
    if json {
        cmd.arg("--json");
    }
    let mut ri = cmd
        .env("RI_REPORT_TEST_DELAY_MS", delay_ms.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start ri report");
    let t0 = Instant::now();
    loop {
        let stopped = tasks(pid)
            .iter()
            .any(|&t| tracer(pid, t) == Some(ri.id()) && task_state(pid, t) == Some('t'));
        if stopped {
            return ri;
        }
        if t0.elapsed() > Duration::from_secs(20) {
            let _ = ri.kill();
            let out = ri.wait_with_output().unwrap();
            panic!(
                "ri never stopped a thread: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn sigkill_mid_report_leaves_every_thread_running() {
    let mut fx = Threads::start("threads", &["--workers", "64"]);
    let mut ri = start_slow_report(fx.pid, 5000, false);
    // SIGKILL: ri gets no chance to clean up; the kernel must.
    unsafe { libc::kill(ri.id() as i32, libc::SIGKILL) };
    let _ = ri.wait();
    let t0 = Instant::now();
    while tasks(fx.pid)
        .iter()
        .any(|&t| tracer(fx.pid, t) != Some(0) || task_state(fx.pid, t) == Some('t'))
    {
        assert!(t0.elapsed() < Duration::from_secs(5), "threads stay traced");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_untouched(fx.pid);
    // Every one of the 66 threads makes progress.
    assert!(fx.ping(), "not every thread answered after ri was killed");
    assert!(fx.ping());
    assert_untouched(fx.pid);
}

#[test]
fn a_target_that_exits_midway_gives_a_partial_report() {
    let mut fx = Threads::start("threads", &["--workers", "8"]);
    let ri = start_slow_report(fx.pid, 300, true);
    fx.child.kill().unwrap();
    let _ = fx.child.wait();
    let out = ri.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "ri failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    let notes = r["notes"].to_string();
    assert!(notes.contains("exited during the report"), "{notes}");
    assert!(r["process"]["name"] == "threads");
}

#[test]
fn without_ptrace_rights_the_report_says_why_and_has_no_stacks() {
    let fx = Threads::start("threads", &["--workers", "1"]);
    // A copy of ri that the unprivileged user can run wherever the build
    // tree lives.
    let dir = tempdir("nobody");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let ri = dir.join("ri");
    std::fs::copy(ri_bin(), &ri).unwrap();
    std::fs::set_permissions(&ri, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = Command::new(&ri)
        .args(["report", "--json", &fx.pid.to_string()])
        .current_dir("/")
        .uid(65534)
        .gid(65534)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["threads"]["stacks"], false, "{:#}", r["threads"]);
    assert_eq!(r["threads"]["stopped"], 0);
    let notes = r["threads"]["notes"].to_string();
    assert!(notes.contains("ptrace not permitted"), "{notes}");
    assert!(notes.contains("uid 65534"), "{notes}");
    // What anyone may read is still there, and the rest says why not.
    assert_eq!(r["process"]["name"], "threads");
    assert_eq!(r["threads"]["count"], 4);
    assert!(
        thread(&r, "alpha")["state"]
            .as_str()
            .unwrap()
            .starts_with('S')
    );
    assert!(
        r["files"]["notes"]
            .to_string()
            .contains("permission denied")
    );
    assert!(
        r["config"]["notes"]
            .to_string()
            .contains("permission denied")
    );
    assert_untouched(fx.pid);
}
