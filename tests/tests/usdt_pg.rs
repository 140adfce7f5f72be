//! USDT probes on a real PostgreSQL 15 under pgbench: query texts, commit
//! counts against pgbench and bpftrace, and the semaphore ri raises while
//! attached and the kernel lowers when ri is killed.

use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader, Read},
    os::unix::fs::FileExt,
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use ri_tests::{events, of_probe, require_bpf, ri_bin};

const BIN: &str = "/usr/lib/postgresql/15/bin";
const POSTGRES: &str = "/usr/lib/postgresql/15/bin/postgres";

/// A PostgreSQL server in a temporary directory, run as `postgres`.
struct Pg {
    child: Child,
    dir: tempfile::TempDir,
    port: u16,
}

fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().expect("run command");
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl Pg {
    fn start(port: u16) -> Pg {
        let dir = tempfile::Builder::new()
            .prefix("ri-usdt-pg")
            .tempdir()
            .unwrap();
        run_ok(
            Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path()),
        );
        let data = dir.path().join("data");
        run_ok(
            Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .arg(format!("{BIN}/initdb"))
                .args(["-A", "trust", "-U", "postgres", "-D"])
                .arg(&data),
        );
        let child = Command::new("runuser")
            .args(["-u", "postgres", "--", POSTGRES, "-D"])
            .arg(&data)
            .args([
                "-c",
                "listen_addresses=127.0.0.1",
                "-p",
                &port.to_string(),
                "-k",
            ])
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start postgres");
        let pg = Pg { child, dir, port };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ok = Command::new(format!("{BIN}/pg_isready"))
                .args(["-h", "127.0.0.1", "-p", &port.to_string()])
                .output()
                .is_ok_and(|o| o.status.success());
            if ok {
                break;
            }
            assert!(Instant::now() < deadline, "postgres did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        pg
    }

    /// The postmaster's pid (runuser is its parent).
    fn pid(&self) -> u32 {
        let text = std::fs::read_to_string(self.dir.path().join("data/postmaster.pid")).unwrap();
        text.lines().next().unwrap().trim().parse().unwrap()
    }

    fn pgbench(&self, args: &[&str]) -> String {
        run_ok(
            Command::new(format!("{BIN}/pgbench"))
                .args([
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &self.port.to_string(),
                    "-U",
                    "postgres",
                ])
                .args(args)
                .arg("postgres"),
        )
    }
}

impl Drop for Pg {
    fn drop(&mut self) {
        let pid = self.pid();
        // SAFETY: plain syscall; fast shutdown.
        unsafe { libc::kill(pid as i32, libc::SIGINT) };
        let _ = self.child.wait();
    }
}

fn skip() -> bool {
    if !Path::new(POSTGRES).exists() {
        eprintln!("skipped: PostgreSQL 15 is not installed");
        return true;
    }
    false
}

/// Starts a program and waits for a line containing `ready` on stderr (or
/// stdout); returns the rest of stdout and of stderr, read in the
/// background.
fn start_waiting(mut cmd: Command, ready: &str, on_stderr: bool) -> (Child, Reader, Reader) {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let out: Box<dyn Read + Send> = Box::new(child.stdout.take().unwrap());
    let err: Box<dyn Read + Send> = Box::new(child.stderr.take().unwrap());
    let (wait, other) = if on_stderr { (err, out) } else { (out, err) };
    let mut r = BufReader::new(wait);
    let mut line = String::new();
    loop {
        line.clear();
        assert!(
            r.read_line(&mut line).unwrap() > 0,
            "{cmd:?} exited before '{ready}'"
        );
        if line.contains(ready) {
            break;
        }
    }
    let rest = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = r.read_to_end(&mut v);
        v
    });
    let other = std::thread::spawn(move || {
        let mut v = Vec::new();
        let mut o = other;
        let _ = o.read_to_end(&mut v);
        v
    });
    if on_stderr {
        (child, other, rest)
    } else {
        (child, rest, other)
    }
}

type Reader = std::thread::JoinHandle<Vec<u8>>;

fn sigint(child: &mut Child) {
    // SAFETY: plain syscall.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let _ = child.wait();
}

fn port(k: u16) -> u16 {
    20000 + (std::process::id() % 20000) as u16 + k
}

/// System-wide probes on one binary see every server: one test at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn pgbench_queries_and_commits_match_pgbench_and_bpftrace() {
    require_bpf();
    if skip() {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let pg = Pg::start(port(0));
    pg.pgbench(&["-i", "-q"]);
    let mut ri = Command::new(ri_bin());
    ri.args([
        "trace",
        "--json",
        &format!("usdt:{POSTGRES}:query__start(q=str(arg0))"),
        &format!("usdt:{POSTGRES}:transaction__commit"),
    ]);
    let (mut ri, ri_out, _) = start_waiting(ri, "attached", true);
    // bpftrace counts commits per pid in the same window.
    let mut bt = Command::new("bpftrace");
    bt.args([
        "-e",
        &format!(
            "BEGIN {{ printf(\"ready\\n\"); }} usdt:{POSTGRES}:transaction__commit {{ @[pid] = count(); }}"
        ),
    ]);
    let bpftrace = std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .any(|d| d.join("bpftrace").is_file())
        // "Attaching" comes before the probes are in; BEGIN runs after.
        .then(|| start_waiting(bt, "ready", false));
    let report = pg.pgbench(&["-c", "2", "-t", "200"]);
    let bt_counts: Option<BTreeMap<u64, usize>> = bpftrace.map(|(mut child, out, _)| {
        sigint(&mut child);
        let text = String::from_utf8_lossy(&out.join().unwrap()).into_owned();
        text.lines()
            .filter_map(|l| {
                let (k, v) = l.strip_prefix("@[")?.split_once("]: ")?;
                Some((k.parse().ok()?, v.trim().parse().ok()?))
            })
            .collect()
    });
    sigint(&mut ri);
    let out = ri_out.join().unwrap();
    let evs = events(&out);
    let processed: usize = report
        .lines()
        .find_map(|l| l.strip_prefix("number of transactions actually processed: "))
        .and_then(|v| v.split('/').next())
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no transaction count in pgbench output:\n{report}"));
    assert_eq!(processed, 400, "{report}");
    let queries = of_probe(&evs, ":query__start");
    let texts: Vec<&str> = queries.iter().filter_map(|e| e["q"].as_str()).collect();
    for q in [
        "UPDATE pgbench_accounts SET abalance = abalance + ",
        "SELECT abalance FROM pgbench_accounts WHERE aid = ",
        "INSERT INTO pgbench_history",
        "BEGIN;",
        "END;",
    ] {
        assert!(
            texts.iter().any(|t| t.contains(q)),
            "no query__start with '{q}' among {} queries",
            texts.len()
        );
    }
    let commits = of_probe(&evs, ":transaction__commit");
    assert!(
        commits.len() >= processed,
        "{} commits < {processed}",
        commits.len()
    );
    // Exact agreement with bpftrace on the backends pgbench used (their
    // whole lives fall inside both tools' windows; background processes
    // may commit while only one of them is attached).
    let bench_pids: std::collections::BTreeSet<u64> = queries
        .iter()
        .filter(|e| e["q"].as_str().is_some_and(|q| q.contains("pgbench_")))
        .filter_map(|e| e["pid"].as_u64())
        .collect();
    assert!(bench_pids.len() >= 2, "{bench_pids:?}");
    let mut ri_counts: BTreeMap<u64, usize> = BTreeMap::new();
    for e in &commits {
        let pid = e["pid"].as_u64().unwrap();
        if bench_pids.contains(&pid) {
            *ri_counts.entry(pid).or_default() += 1;
        }
    }
    assert!(
        ri_counts.values().sum::<usize>() >= processed,
        "{ri_counts:?}"
    );
    if let Some(bt) = bt_counts {
        let bt: BTreeMap<u64, usize> = bt
            .into_iter()
            .filter(|(p, _)| bench_pids.contains(p))
            .collect();
        assert_eq!(ri_counts, bt, "ri and bpftrace disagree per backend");
    }
}

/// File offset of a probe's semaphore, from `readelf` (independent of ri).
fn semaphore_file_offset(probe: &str) -> u64 {
    let hex = |s: &str| u64::from_str_radix(s.trim().trim_start_matches("0x"), 16).unwrap();
    let notes = run_ok(Command::new("readelf").args(["-n", POSTGRES]));
    let mut lines = notes.lines();
    let mut vaddr = None;
    while let Some(l) = lines.next() {
        if l.trim() == format!("Name: {probe}") {
            let loc = lines.next().unwrap();
            vaddr = Some(hex(loc.rsplit("Semaphore: ").next().unwrap()));
            break;
        }
    }
    let vaddr = vaddr.unwrap_or_else(|| panic!("no note {probe}"));
    let segs = run_ok(Command::new("readelf").args(["-lW", POSTGRES]));
    segs.lines()
        .filter(|l| l.trim_start().starts_with("LOAD"))
        .find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let (off, va, filesz) = (hex(f[1]), hex(f[2]), hex(f[4]));
            (vaddr >= va && vaddr < va + filesz).then(|| vaddr - va + off)
        })
        .expect("semaphore in a loadable segment")
}

/// The semaphore word of a running postgres, through /proc/PID/maps and mem.
fn semaphore(pid: u32, file_offset: u64) -> u16 {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    let addr = maps
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() < 6 || f[5] != POSTGRES {
                return None;
            }
            let (start, end) = f[0].split_once('-')?;
            let start = u64::from_str_radix(start, 16).ok()?;
            let end = u64::from_str_radix(end, 16).ok()?;
            let off = u64::from_str_radix(f[2], 16).ok()?;
            (file_offset >= off && file_offset < off + (end - start))
                .then(|| start + file_offset - off)
        })
        .expect("semaphore mapped");
    let mem = std::fs::File::open(format!("/proc/{pid}/mem")).unwrap();
    let mut b = [0u8; 2];
    mem.read_exact_at(&mut b, addr).unwrap();
    u16::from_ne_bytes(b)
}

#[test]
fn semaphore_is_raised_while_attached_and_lowered_after_sigkill() {
    require_bpf();
    if skip() {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let pg = Pg::start(port(1));
    let pid = pg.pid();
    let off = semaphore_file_offset("transaction__commit");
    let before = semaphore(pid, off);
    let mut ri = Command::new(ri_bin());
    ri.args([
        "trace",
        "--json",
        &format!("usdt:{POSTGRES}:postgresql:transaction__commit"),
    ]);
    let (mut ri, _, _) = start_waiting(ri, "attached", true);
    let during = semaphore(pid, off);
    assert!(
        during > before,
        "semaphore {during} (was {before}) while attached"
    );
    // SAFETY: plain syscall.
    unsafe { libc::kill(ri.id() as i32, libc::SIGKILL) };
    let _ = ri.wait();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let after = semaphore(pid, off);
        if after == before {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "semaphore {after} after SIGKILL, was {before}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
