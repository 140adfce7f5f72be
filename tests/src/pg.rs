//! A real PostgreSQL 15 for tests: a cluster in a temporary directory on a
//! loopback port, run as `postgres`, and pgbench against it.

use std::{
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

/// PostgreSQL 15's programs.
pub const BIN: &str = "/usr/lib/postgresql/15/bin";
/// The server binary (its USDT probes are what the tests use).
pub const POSTGRES: &str = "/usr/lib/postgresql/15/bin/postgres";

/// A PostgreSQL server in a temporary directory, run as `postgres`.
pub struct Pg {
    child: Child,
    dir: tempfile::TempDir,
    port: u16,
}

/// Runs a command, expects success; its standard output.
pub fn run_ok(cmd: &mut Command) -> String {
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
    /// Initializes a cluster in a new temporary directory and starts it on
    /// 127.0.0.1:`port`.
    pub fn start(port: u16) -> Pg {
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
    pub fn pid(&self) -> u32 {
        let text = std::fs::read_to_string(self.dir.path().join("data/postmaster.pid")).unwrap();
        text.lines().next().unwrap().trim().parse().unwrap()
    }

    /// Runs pgbench against it; its standard output.
    pub fn pgbench(&self, args: &[&str]) -> String {
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

/// True (and says so) when PostgreSQL 15 is not installed.
pub fn skip() -> bool {
    if !Path::new(POSTGRES).exists() {
        eprintln!("skipped: PostgreSQL 15 is not installed");
        return true;
    }
    false
}

/// A port for the k-th server of this test process.
pub fn port(k: u16) -> u16 {
    20000 + (std::process::id() % 20000) as u16 + k
}
