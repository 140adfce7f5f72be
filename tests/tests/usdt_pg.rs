//! USDT probes on a real PostgreSQL 15 under pgbench: query texts, commit
//! counts against pgbench and bpftrace, and the semaphore ri raises while
//! attached and the kernel lowers when ri is killed.

use std::{
    collections::BTreeMap,
    os::unix::fs::FileExt,
    process::Command,
    time::{Duration, Instant},
};

use ri_tests::{
    events, of_probe,
    pg::{POSTGRES, Pg, port, run_ok, skip},
    require_bpf, ri_bin, sigint, start_waiting,
};

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
