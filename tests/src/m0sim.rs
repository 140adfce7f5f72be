//! Running the motr-shaped service for tests: `m0d` in a temporary data
//! directory on a loopback port, `m0client` against it, and `ri ctl` on its
//! control socket.

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Output, Stdio},
    sync::{Arc, Mutex, mpsc},
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::{fixture, ri_bin};

/// Motr opcodes of the m0sim requests and their names in its stats.
pub const OPS: &[(u64, &str)] = &[
    (49, "create"),
    (42, "write"),
    (41, "read"),
    (50, "delete"),
    (45, "getattr"),
];

/// A running m0d. Killed (SIGKILL) on drop if still running.
pub struct M0d {
    child: Mutex<Child>,
    /// Its pid.
    pub pid: i32,
    /// `inet:tcp:127.0.0.1@PORT`.
    pub endpoint: String,
    /// Its data directory.
    pub data: PathBuf,
    /// Its control socket, when it started one.
    pub socket: Option<PathBuf>,
    stderr: PathBuf,
    stdout: Arc<Mutex<String>>,
    reader: Option<std::thread::JoinHandle<()>>,
    dir: Option<tempfile::TempDir>,
}

/// How to start an m0d.
#[derive(Default)]
pub struct M0dConfig<'a> {
    /// Data directory (default: `data` in a new temporary directory).
    pub data: Option<&'a Path>,
    /// Extra flags (`--no-sync` and `--port 0` are always given).
    pub args: Vec<String>,
    /// Extra environment (e.g. the crash hooks).
    pub env: Vec<(String, String)>,
    /// Another m0d binary (default: the `m0d` fixture), e.g. `inline/m0d`.
    pub bin: Option<PathBuf>,
}

impl M0d {
    /// Starts m0d with default flags in a new temporary directory.
    pub fn start() -> M0d {
        M0d::start_with(M0dConfig::default())
    }

    /// Starts m0d and waits for its `endpoint` line (at most 20 s).
    pub fn start_with(cfg: M0dConfig<'_>) -> M0d {
        let dir = tempfile::Builder::new()
            .prefix("m0d-test.")
            .tempdir()
            .expect("temporary directory");
        let data = cfg
            .data
            .map(Path::to_path_buf)
            .unwrap_or_else(|| dir.path().join("data"));
        let stderr = dir.path().join("m0d.stderr");
        let err_file = std::fs::File::create(&stderr).expect("create stderr file");
        let mut cmd = Command::new(cfg.bin.clone().unwrap_or_else(|| fixture("m0d")));
        cmd.args(["--port", "0", "--no-sync", "--data"])
            .arg(&data)
            .args(&cfg.args)
            .envs(cfg.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(err_file);
        let mut child = spawn_retrying(&mut cmd).expect("start m0d");
        let pid = child.id() as i32;
        let out = child.stdout.take().expect("stdout");
        let stdout = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = mpsc::channel();
        let acc = stdout.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if let Some(ep) = line.strip_prefix("endpoint ") {
                    let _ = tx.send(ep.to_string());
                }
                let mut s = acc.lock().unwrap();
                s.push_str(&line);
                s.push('\n');
            }
        });
        let endpoint = match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(ep) => ep,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "m0d did not print its endpoint; stderr:\n{}",
                    std::fs::read_to_string(&stderr).unwrap_or_default()
                );
            }
        };
        let socket = std::fs::read_to_string(&stderr)
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("m0d: control socket "))
            .map(PathBuf::from);
        M0d {
            child: Mutex::new(child),
            pid,
            endpoint,
            data,
            socket,
            stderr,
            stdout,
            reader: Some(reader),
            dir: Some(dir),
        }
    }

    /// The temporary directory of this m0d.
    pub fn dir(&self) -> &Path {
        self.dir.as_ref().expect("dir").path()
    }

    /// Everything m0d wrote on stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Whether m0d still runs, and the end of its stderr (for failures).
    pub fn diagnose(&self) -> String {
        let state = match self.wait(Duration::ZERO) {
            Some(st) => format!("m0d exited: {st}"),
            None => "m0d is running".into(),
        };
        let err = self.stderr();
        let lines: Vec<&str> = err.lines().collect();
        let tail = lines[lines.len().saturating_sub(20)..].join("\n");
        format!("{state}; its stderr ends with:\n{tail}")
    }

    /// Everything m0d wrote on stdout so far.
    pub fn stdout(&self) -> String {
        self.stdout.lock().unwrap().clone()
    }

    /// Runs `m0client --endpoint E ARGS`.
    pub fn client(&self, args: &[&str]) -> Output {
        Command::new(fixture("m0client"))
            .args(["--endpoint", &self.endpoint, "--timeout", "20"])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run m0client")
    }

    /// Starts `m0client load` in the background: `rate` requests/s over 4
    /// connections for `secs` seconds, on objects named PREFIX-N.
    pub fn load(&self, rate: u32, secs: f64, prefix: &str) -> Load {
        let child = Command::new(fixture("m0client"))
            .args(["--endpoint", &self.endpoint, "--timeout", "30", "load"])
            .args(["--rate", &rate.to_string(), "--concurrency", "4"])
            .args(["--duration", &secs.to_string(), "--objects", "16"])
            .args(["--size", "8192", "--prefix", prefix])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start m0client load");
        Load { child: Some(child) }
    }

    /// Runs `ri ctl -p PID ARGS` (found from the process itself when the
    /// socket is in a `--control-dir` of its own).
    pub fn ctl(&self, args: &[&str]) -> Output {
        Command::new(ri_bin())
            .args(["ctl", "-p", &self.pid.to_string()])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run ri ctl")
    }

    /// Runs `ri ctl -p PID --json ARGS`, expects success and parses the JSON.
    pub fn ctl_json(&self, args: &[&str]) -> Value {
        let mut a = vec!["--json"];
        a.extend_from_slice(args);
        let out = self.ctl(&a);
        assert!(
            out.status.success(),
            "ri ctl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "ri ctl {args:?}: bad JSON ({e}): {}",
                String::from_utf8_lossy(&out.stdout)
            )
        })
    }

    /// The stats JSON, through `ri ctl stats`.
    pub fn stats(&self) -> Value {
        self.ctl_json(&["stats"])
    }

    /// Sends a signal.
    pub fn signal(&self, sig: i32) {
        // SAFETY: plain syscall on our child's pid.
        unsafe { libc::kill(self.pid, sig) };
    }

    /// Waits for m0d to exit on its own (at most `limit`).
    pub fn wait(&self, limit: Duration) -> Option<ExitStatus> {
        let t = Instant::now();
        loop {
            if let Ok(Some(st)) = self.child.lock().unwrap().try_wait() {
                return Some(st);
            }
            if t.elapsed() >= limit {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops m0d with SIGTERM (SIGKILL after 15 s); returns its stdout.
    pub fn stop(mut self) -> String {
        self.signal(libc::SIGTERM);
        if self.wait(Duration::from_secs(15)).is_none() {
            let c = self.child.get_mut().unwrap();
            let _ = c.kill();
            let _ = c.wait();
        }
        // The reader ends at end of file: the last line is in.
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        self.stdout()
    }
}

impl Drop for M0d {
    fn drop(&mut self) {
        // SIGTERM first, so that m0d removes its control socket.
        if self.wait(Duration::ZERO).is_none() {
            self.signal(libc::SIGTERM);
            if self.wait(Duration::from_secs(5)).is_none() {
                let c = self.child.get_mut().unwrap();
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

/// A background `m0client load`; killed on drop if still running.
pub struct Load {
    child: Option<Child>,
}

impl Load {
    /// Waits for the load to end (at most `limit`) and returns its summary.
    pub fn finish(mut self, limit: Duration) -> Value {
        let mut child = self.child.take().expect("load child");
        let t = Instant::now();
        while child.try_wait().ok().flatten().is_none() {
            if t.elapsed() > limit {
                let _ = child.kill();
                let out = child.wait_with_output().expect("load output");
                panic!(
                    "m0client load did not finish in {limit:?}: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let out = child.wait_with_output().expect("load output");
        let text = String::from_utf8_lossy(&out.stdout);
        let line = text.lines().rev().find(|l| l.starts_with('{'));
        match line.map(serde_json::from_str::<Value>) {
            Some(Ok(v)) => v,
            _ => panic!(
                "m0client load printed no summary (status {:?}): {text}\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ),
        }
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Sum of `served` over the localities of a stats JSON.
pub fn served(stats: &Value) -> u64 {
    stats["localities"]
        .as_array()
        .map(|l| l.iter().filter_map(|x| x["served"].as_u64()).sum())
        .unwrap_or(0)
}

/// Sum of the `requests` counters of a stats JSON.
pub fn requests(stats: &Value) -> u64 {
    stats["requests"]
        .as_object()
        .map(|m| m.values().filter_map(Value::as_u64).sum())
        .unwrap_or(0)
}

/// The `requests` counters of a stats JSON by opcode name, zeros left out.
pub fn requests_by_name(stats: &Value) -> std::collections::BTreeMap<String, u64> {
    (stats["requests"].as_object().into_iter().flatten())
        .filter_map(|(k, v)| Some((k.clone(), v.as_u64().filter(|&n| n > 0)?)))
        .collect()
}

/// Spawns `cmd`, again a few times while the executable is "busy": a copy
/// just written by one test thread can still be open for writing in a
/// child another thread is forking at that moment (until that child execs).
pub fn spawn_retrying(cmd: &mut Command) -> std::io::Result<std::process::Child> {
    let mut tries = 0;
    loop {
        match cmd.spawn() {
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && tries < 50 => {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            r => return r,
        }
    }
}
