//! Packs on other real services: libc (heap and socket calls), python
//! (calls and collections), postgres under pgbench, and packs read from
//! the user's config folder.

use std::{collections::BTreeMap, process::Command, time::Duration};

use ri_tests::{
    events, fixture,
    pg::{Pg, port, skip},
    require_bpf, ri_bin, ri_ok,
    run::{final_entries, run_attached, stop},
};
use serde_json::Value;

#[test]
fn libc_pack_counts_heap_and_socket_calls() {
    require_bpf();
    let netheap = fixture("netheap").display().to_string();
    let stdout = ri_ok(&[
        "run",
        "libc.calls",
        "--json",
        "-c",
        &format!("{netheap} 50"),
    ]);
    let mut n: BTreeMap<String, u64> = BTreeMap::new();
    for e in final_entries(&stdout) {
        let f = e["probe"].as_str().unwrap().rsplit(':').next().unwrap();
        n.insert(f.to_string(), e["count"].as_u64().unwrap());
    }
    for (f, least) in [
        ("malloc", 50),
        ("calloc", 50),
        ("realloc", 50),
        ("free", 97),
    ] {
        assert!(n.get(f).copied().unwrap_or(0) >= least, "{f}: {n:?}");
    }

    let stdout = ri_ok(&[
        "run",
        "libc.sockets",
        "--json",
        "-c",
        &format!("{netheap} 5"),
    ]);
    let port: u64 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("port "))
        .and_then(|p| p.trim().parse().ok())
        .expect("netheap's port");
    let evs = events(stdout.as_bytes());
    let connects: Vec<&Value> = evs
        .iter()
        .filter(|e| e["probe"].as_str().unwrap().ends_with(":connect"))
        .collect();
    assert_eq!(connects.len(), 5, "{stdout}");
    for c in &connects {
        assert_eq!(c["family"], 2, "{c}");
        assert_eq!(c["port"], port, "{c}");
        assert_eq!(c["addr"], 0x0100_007f, "{c}");
    }
    let accepted = evs
        .iter()
        .filter(|e| e["probe"].as_str().unwrap().contains(":accept"))
        .filter(|e| e["fd"].as_i64().is_some_and(|fd| fd >= 0))
        .count();
    assert_eq!(accepted, 5, "{stdout}");
    let closes = evs
        .iter()
        .filter(|e| e["probe"].as_str().unwrap().ends_with(":close"))
        .count();
    assert!(closes >= 10, "{stdout}");
}

const PY: &str = "/usr/bin/python3.11";

#[test]
fn python_pack_counts_calls_and_collections() {
    require_bpf();
    if !std::path::Path::new(PY).exists() {
        eprintln!("skipped: {PY} is not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("fibgc.py");
    std::fs::write(
        &script,
        "import gc\n\ndef fib(n):\n    return n if n < 2 else fib(n - 1) + fib(n - 2)\n\nfib(15)\nfor _ in range(3):\n    gc.collect()\n",
    )
    .unwrap();
    let cmd = format!("{PY} {}", script.display());
    let stdout = ri_ok(&["run", "python.calls", "--json", "-c", &cmd]);
    let fib: u64 = final_entries(&stdout)
        .iter()
        .filter(|e| {
            let by = &e["by"];
            by["str(arg1, 32)"] == "fib"
                && by["str(arg0, 48)"]
                    .as_str()
                    .is_some_and(|f| f.ends_with("fibgc.py"))
        })
        .map(|e| e["count"].as_u64().unwrap())
        .sum();
    // fib(15) makes 1973 calls.
    assert_eq!(fib, 1973, "{stdout}");

    let stdout = ri_ok(&["run", "python.gc", "--json", "-c", &cmd]);
    let evs = events(stdout.as_bytes());
    let full = evs
        .iter()
        .filter(|e| e["probe"].as_str().unwrap().ends_with(":gc__start") && e["generation"] == 2)
        .count();
    assert!(full >= 3, "{} full collections", full);
    let starts = evs
        .iter()
        .filter(|e| e["probe"].as_str().unwrap().ends_with(":gc__start"))
        .count();
    let dones = evs
        .iter()
        .filter(|e| e["probe"].as_str().unwrap().ends_with(":gc__done"))
        .count();
    assert_eq!(starts, dones);
}

#[test]
fn postgres_pack_under_pgbench() {
    require_bpf();
    if skip() {
        return;
    }
    let pg = Pg::start(port(7));
    pg.pgbench(&["-i", "-q"]);
    let commits = run_attached(&["postgres.commits", "--json"]);
    let sessions = run_attached(&["postgres.sessions", "--json"]);
    let queries = run_attached(&["postgres.queries", "--json", "--interval", "0.2"]);
    let report = pg.pgbench(&["-c", "2", "-t", "100"]);
    // A query that runs for a while is in flight when ri stops.
    let mut sleeper = Command::new(format!("{}/psql", ri_tests::pg::BIN))
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port(7).to_string(),
            "-U",
            "postgres",
        ])
        .args(["-c", "SELECT pg_sleep(3) AS held"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1000));
    let (q_out, q_err) = stop(queries.0, queries.1, queries.2);
    let _ = sleeper.wait();
    let (c_out, c_err) = stop(commits.0, commits.1, commits.2);
    let (s_out, _) = stop(sessions.0, sessions.1, sessions.2);
    assert!(
        report.contains("number of transactions actually processed: 200/200"),
        "{report}"
    );
    // Queries started per backend: pgbench's two sessions are there.
    let per_pid: BTreeMap<u64, u64> = final_entries(&s_out)
        .iter()
        .filter_map(|e| Some((e["by"]["pid"].as_u64()?, e["count"].as_u64()?)))
        .collect();
    let busy: Vec<u64> = per_pid
        .iter()
        .filter(|(_, n)| **n >= 100 * 5)
        .map(|(p, _)| *p)
        .collect();
    assert_eq!(busy.len(), 2, "{per_pid:?}");
    // Commits of those sessions: every pgbench transaction.
    let committed: u64 = final_entries(&c_out)
        .iter()
        .filter(|e| {
            e["probe"]
                .as_str()
                .unwrap()
                .ends_with("transaction__commit")
        })
        .filter(|e| {
            let pid = e["by"].as_object().unwrap().values().next().unwrap();
            busy.iter().any(|b| pid == b)
        })
        .map(|e| e["count"].as_u64().unwrap())
        .sum();
    assert!(committed >= 200, "{committed}\n{c_out}\n{c_err}");
    // The query in flight, with its text, and nothing of pgbench's.
    let texts: Vec<String> = final_entries(&q_out)
        .iter()
        .filter_map(|e| e["fields"]["query"].as_str().map(str::to_string))
        .collect();
    assert_eq!(texts, ["SELECT pg_sleep(3) AS held"], "{q_out}\n{q_err}");
}

#[test]
fn packs_in_the_users_config_folder_are_read_and_override() {
    let home = tempfile::tempdir().unwrap();
    let dir = home.path().join(".config/ri/probes");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("libc.toml"),
        "[pack]\nname = \"libc\"\nhelp = \"my libc\"\ntargets = [\"libc.so.6\"]\n\
         [probes]\nmalloc = { at = \"u:malloc\" }\n\
         [instruments.mallocs]\nhelp = \"malloc calls\"\nkind = \"count\"\nprobes = [\"malloc\"]\n",
    )
    .unwrap();
    let out = Command::new(ri_bin())
        .args(["packs", "libc"])
        .env("HOME", home.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let path = dir.join("libc.toml");
    assert!(
        text.contains(&format!(
            "libc  my libc  (from {}, replacing built in)",
            path.display()
        )),
        "{text}"
    );
    assert!(text.contains("libc.mallocs"), "{text}");
    assert!(!text.contains("libc.calls"), "{text}");
}
