//! `ri report` on real services: a PostgreSQL backend and its postmaster,
//! and m0d with its control sections (and the report SIGUSR2 writes).
//!
//! These tests stop threads with ptrace and read other users' processes:
//! run them as root.

use std::{
    io::{BufRead, BufReader, Write},
    os::unix::{fs::PermissionsExt, process::CommandExt},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use ri_tests::{
    m0sim,
    report::{assert_in_order, assert_untouched, functions, report, report_json, tempdir},
};

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
