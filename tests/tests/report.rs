//! `ri report`: stacks of threads parked in known call chains (with frame
//! pointers, without, and without unwind tables), every section on a real
//! PostgreSQL backend and on m0d, safety when ri is killed mid-report or the
//! target exits, and a report without ptrace rights.
//!
//! These tests stop threads with ptrace and read other users' processes:
//! run them as root.

use std::{
    io::{BufRead, BufReader, Write},
    os::unix::{fs::PermissionsExt, process::CommandExt},
    path::{Path, PathBuf},
    process::{Child, ChildStdin, ChildStdout, Command, Output, Stdio},
    time::{Duration, Instant},
};

use ri_tests::{fixture, m0sim, ri_bin};
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

/// Thread ids of a process.
fn tasks(pid: u32) -> Vec<u32> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// A thread's state letter.
fn task_state(pid: u32, tid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/stat")).ok()?;
    stat[stat.rfind(')')? + 2..].chars().next()
}

/// A thread's TracerPid.
fn tracer(pid: u32, tid: u32) -> Option<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("TracerPid:"))?
        .trim()
        .parse()
        .ok()
}

/// Asserts that no thread of `pid` is traced or in a stopped state.
fn assert_untouched(pid: u32) {
    for tid in tasks(pid) {
        assert_eq!(tracer(pid, tid), Some(0), "thread {tid} is still traced");
        let st = task_state(pid, tid);
        assert!(
            !matches!(st, Some('t') | Some('T')),
            "thread {tid} is left stopped ({st:?})"
        );
    }
}

/// Runs `ri report ARGS`.
fn report(args: &[&str]) -> Output {
    Command::new(ri_bin())
        .arg("report")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run ri report")
}

/// Runs `ri report --json ARGS`, expects success, parses the report.
fn report_json(args: &[&str]) -> Value {
    let mut a = vec!["--json"];
    a.extend_from_slice(args);
    let out = report(&a);
    assert!(
        out.status.success(),
        "ri report {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("bad JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
}

/// The thread named `name` in a report.
fn thread<'a>(r: &'a Value, name: &str) -> &'a Value {
    r["threads"]["threads"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == name)
        .unwrap_or_else(|| panic!("no thread {name} in {:#}", r["threads"]))
}

/// Function names of a thread's stack, innermost first.
fn functions(t: &Value) -> Vec<String> {
    t["stack"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["function"].as_str().unwrap_or("?").to_string())
        .collect()
}

/// Asserts that `names` appear in this order (not necessarily adjacent).
fn assert_in_order(t: &Value, names: &[&str]) {
    let funcs = functions(t);
    let mut at = 0;
    for n in names {
        match funcs[at..].iter().position(|f| f == n) {
            Some(i) => at += i + 1,
            None => panic!(
                "thread {}: expected {names:?} in order, stack is {funcs:?} ({})",
                t["name"], t["stack_note"]
            ),
        }
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

/// A fresh directory under the system temporary directory.
fn tempdir(what: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "ri-report-{what}-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
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

/// A PostgreSQL 15 cluster in a temporary directory, run as `postgres`.
struct Postgres {
    dir: PathBuf,
    postmaster: Child,
    port: u16,
    uid: u32,
    gid: u32,
}

const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

impl Postgres {
    fn start() -> Postgres {
        let (uid, gid) =
            user_ids("postgres").expect("a postgres user (apt-get install postgresql-15)");
        let dir = tempdir("pg");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).unwrap();
        let as_pg = |prog: &str| {
            let mut c = Command::new(Path::new(PG_BIN).join(prog));
            c.uid(uid)
                .gid(gid)
                .current_dir(&dir)
                .env("LC_ALL", "C.UTF-8");
            c
        };
        let out = as_pg("initdb")
            .args(["-D", "data", "-U", "postgres", "--auth=trust", "--no-sync"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let log = std::fs::File::create(dir.join("pg.log")).unwrap();
        std::os::unix::fs::chown(dir.join("pg.log"), Some(uid), Some(gid)).unwrap();
        let postmaster = as_pg("postgres")
            .args(["-D", "data", "-k"])
            .arg(&dir)
            .args(["-p", &port.to_string(), "-c", "listen_addresses=127.0.0.1"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let pg = Postgres {
            dir,
            postmaster,
            port,
            uid,
            gid,
        };
        let t0 = Instant::now();
        while !pg.dir.join(format!(".s.PGSQL.{port}")).exists() {
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "postgres did not start: {}",
                std::fs::read_to_string(pg.dir.join("pg.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        pg
    }

    /// A psql session over TCP, kept open; its backend's pid.
    fn session(&self) -> (Child, u32) {
        let mut psql = Command::new(Path::new(PG_BIN).join("psql"))
            .args([
                "-X",
                "-At",
                "-h",
                "127.0.0.1",
                "-U",
                "postgres",
                "-d",
                "postgres",
            ])
            .args(["-p", &self.port.to_string()])
            .uid(self.uid)
            .gid(self.gid)
            .current_dir(&self.dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        writeln!(psql.stdin.as_mut().unwrap(), "SELECT pg_backend_pid();").unwrap();
        let mut line = String::new();
        BufReader::new(psql.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        let pid = line
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("psql said {line:?}"));
        (psql, pid)
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // Fast shutdown, then clean up.
        unsafe { libc::kill(self.postmaster.id() as i32, libc::SIGINT) };
        let t0 = Instant::now();
        while self.postmaster.try_wait().ok().flatten().is_none() {
            if t0.elapsed() > Duration::from_secs(20) {
                let _ = self.postmaster.kill();
                let _ = self.postmaster.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// uid and gid of a user from /etc/passwd.
fn user_ids(name: &str) -> Option<(u32, u32)> {
    std::fs::read_to_string("/etc/passwd")
        .ok()?
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.first() == Some(&name)).then(|| Some((f[2].parse().ok()?, f[3].parse().ok()?)))?
        })
}

#[test]
fn postgres_backend_and_postmaster() {
    assert!(
        Path::new(PG_BIN).join("postgres").exists(),
        "PostgreSQL 15 is not installed ({PG_BIN}); apt-get install postgresql-15"
    );
    let pg = Postgres::start();
    let (mut psql, backend) = pg.session();
    let port = pg.port.to_string();

    let r = report_json(&[&backend.to_string()]);
    let p = &r["process"];
    assert_eq!(p["exe"], format!("{PG_BIN}/postgres"), "{p:#}");
    assert_eq!(p["user"], "postgres");
    assert_eq!(p["ppid"].as_u64(), Some(pg.postmaster.id() as u64));
    let pkg = &r["package"]["executable"];
    assert_eq!(pkg["package"], "postgresql-15", "{pkg:#}");
    assert!(
        pkg["version"].as_str().unwrap().starts_with("15"),
        "{pkg:#}"
    );
    assert!(
        r["package"]["libraries"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l["package"]
                .as_str()
                .is_some_and(|p| p.starts_with("libc6"))),
        "{:#}",
        r["package"]
    );
    // The backend's single thread waits for the client inside PostgresMain.
    let th = &r["threads"]["threads"][0];
    assert_eq!(r["threads"]["count"], 1);
    assert_in_order(th, &["PostgresMain", "main"]);
    // Its connection to psql.
    let sockets = r["sockets"]["sockets"].as_array().unwrap();
    let conn = sockets
        .iter()
        .find(|s| s["proto"] == "tcp" && s["state"] == "ESTABLISHED")
        .unwrap_or_else(|| panic!("no TCP connection in {sockets:#?}"));
    assert_eq!(conn["local"], format!("127.0.0.1:{port}"));
    assert!(conn["peer"].as_str().unwrap().starts_with("127.0.0.1:"));
    assert!(r["memory"]["rss_kb"].as_u64().unwrap() > 0);
    assert!(r["memory"]["pss_kb"].as_u64().is_some());

    // The postmaster listens on TCP and on its Unix socket.
    let r = report_json(&[
        &pg.postmaster.id().to_string(),
        "--sections",
        "sockets,package",
    ]);
    let sockets = r["sockets"]["sockets"].as_array().unwrap();
    assert!(
        sockets.iter().any(|s| s["proto"] == "tcp"
            && s["state"] == "LISTEN"
            && s["local"] == format!("127.0.0.1:{port}")),
        "{sockets:#?}"
    );
    let unix_path = pg
        .dir
        .join(format!(".s.PGSQL.{port}"))
        .display()
        .to_string();
    assert!(
        sockets
            .iter()
            .any(|s| s["proto"] == "unix" && s["state"] == "LISTEN" && s["local"] == unix_path),
        "{sockets:#?}"
    );
    assert_eq!(r["package"]["executable"]["package"], "postgresql-15");

    // The text form names the package and the listening socket.
    let out = report(&[
        &pg.postmaster.id().to_string(),
        "--sections",
        "package,sockets",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("postgresql-15 15"), "{text}");
    assert!(
        text.contains(&format!("LISTEN       127.0.0.1:{port}")),
        "{text}"
    );
    assert_untouched(backend);
    drop(psql.stdin.take());
    let _ = psql.wait();
}

#[test]
fn m0d_report_has_its_control_sections_and_sigusr2_writes_a_report() {
    let reports = tempdir("m0d-reports");
    let m0d = m0sim::M0d::start_with(m0sim::M0dConfig {
        args: vec!["--report-dir".into(), reports.display().to_string()],
        ..Default::default()
    });
    let pid = m0d.pid as u32;
    let r = report_json(&[&pid.to_string()]);
    // Cooperative sections, from the control library.
    let targets = r["control"]["targets"].as_array().unwrap();
    assert_eq!(targets.len(), 1, "{:#}", r["control"]);
    assert_eq!(targets[0]["name"], "m0d");
    let sections = targets[0]["sections"].as_object().unwrap();
    for s in ["config", "version", "state"] {
        assert!(sections.contains_key(s), "no {s} in {sections:?}");
    }
    // Outside view: its listening port and symbolized threads.
    let port = m0d.endpoint.rsplit('@').next().unwrap();
    assert!(
        r["sockets"]["sockets"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["state"] == "LISTEN" && s["local"] == format!("127.0.0.1:{port}")),
        "{:#}",
        r["sockets"]
    );
    let threads = r["threads"]["threads"].as_array().unwrap();
    assert!(threads.len() > 3);
    assert!(
        threads
            .iter()
            .all(|t| !t["stack"].as_array().unwrap().is_empty())
    );
    // The request handler threads wait for work, the listener accepts.
    for f in ["loc_handler", "listener"] {
        assert!(
            threads.iter().any(|t| functions(t).iter().any(|g| g == f)),
            "{f} is on no stack: {threads:#?}"
        );
    }
    assert_untouched(pid);

    // SIGUSR2: the target writes its own report.
    m0d.signal(libc::SIGUSR2);
    let t0 = Instant::now();
    let text = loop {
        let found = std::fs::read_dir(&reports)
            .unwrap()
            .flatten()
            .find(|e| e.file_name().to_string_lossy().ends_with(".report.txt"));
        if let Some(e) = found {
            let t = std::fs::read_to_string(e.path()).unwrap();
            if t.contains("end of report") {
                break t;
            }
        }
        assert!(t0.elapsed() < Duration::from_secs(10), "no SIGUSR2 report");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(text.contains("===== ri-control report ====="), "{text}");
    assert!(text.contains(&format!("pid:      {pid}")), "{text}");
    assert!(text.contains("----- state -----"), "{text}");
    drop(m0d);
    let _ = std::fs::remove_dir_all(&reports);
}
