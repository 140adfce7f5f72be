//! Helpers for ri's integration tests: where the `ri` binary and the
//! fixtures are, running ri, and reading its JSON events.
//!
//! These tests use the real kernel (eBPF, uprobes); they need root.

use std::{
    io::{BufRead, BufReader, Read},
    path::PathBuf,
    process::{Child, Command, Output, Stdio},
};

use serde_json::Value;

pub mod fleet;
pub mod m0sim;
pub mod pg;
pub mod report;
pub mod run;
pub mod session;
pub mod tmux;

/// The `ri` binary under test: `$RI_BIN`, else the newest of
/// `target/{release,debug}/ri`.
pub fn ri_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("RI_BIN") {
        return PathBuf::from(p);
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    ["release", "debug"]
        .iter()
        .map(|p| target.join(p).join("ri"))
        .filter(|p| p.exists())
        .max_by_key(|p| p.metadata().and_then(|m| m.modified()).ok())
        .unwrap_or_else(|| {
            panic!("no ri binary: run `cargo xtask test` (or `cargo build --release -p ri-user`), or set RI_BIN")
        })
}

/// Directory of the compiled C fixtures.
pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("FIXTURES"))
}

/// Path of one compiled fixture.
pub fn fixture(name: &str) -> PathBuf {
    fixtures().join(name)
}

/// Fails the test with a clear message when BPF cannot be used.
pub fn require_bpf() {
    // SAFETY: plain syscall.
    if unsafe { libc::geteuid() } != 0 {
        panic!(
            "these tests attach real eBPF uprobes and need root: run them as root (sudo cargo xtask test)"
        );
    }
    if !std::path::Path::new("/sys/kernel/btf/vmlinux").exists() {
        panic!(
            "this kernel has no BTF (/sys/kernel/btf/vmlinux): ri's eBPF programs cannot run here"
        );
    }
}

/// Runs ri with `args`.
pub fn ri(args: &[&str]) -> Output {
    Command::new(ri_bin()).args(args).output().expect("run ri")
}

/// Runs ri with `args`, fails the test with ri's stderr unless it succeeds,
/// and returns its stdout.
pub fn ri_ok(args: &[&str]) -> String {
    let out = ri(args);
    assert!(
        out.status.success(),
        "ri {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Parses ri's `--json` stdout into events.
pub fn events(stdout: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(stdout)
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l}: {e}")))
        .collect()
}

/// Events whose `probe` ends with `suffix`.
pub fn of_probe<'a>(events: &'a [Value], suffix: &str) -> Vec<&'a Value> {
    events
        .iter()
        .filter(|e| e["probe"].as_str().is_some_and(|p| p.ends_with(suffix)))
        .collect()
}

/// Runs bpftrace when it is installed; `None` when it is not.
pub fn bpftrace(args: &[&str]) -> Option<Output> {
    let found =
        std::env::split_paths(&std::env::var_os("PATH")?).any(|d| d.join("bpftrace").is_file());
    found.then(|| {
        Command::new("bpftrace")
            .args(args)
            .output()
            .expect("run bpftrace")
    })
}

/// Starts a program and waits for a line containing `ready` on stderr (or
/// stdout); returns the rest of stdout and of stderr, read in the
/// background.
pub fn start_waiting(mut cmd: Command, ready: &str, on_stderr: bool) -> (Child, Reader, Reader) {
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

/// Starts fixture `name` with `args`, stdin and stdout piped, and reads its
/// first line (a `wait` mode's addresses).
pub fn start_fixture(
    name: &str,
    args: &[&str],
) -> (Child, BufReader<std::process::ChildStdout>, String) {
    let mut child = Command::new(fixture(name))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start fixture");
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    (child, out, line)
}

/// Starts `ri ARGS` with stdout piped; returns it and a reader of its stderr.
pub fn spawn_ri(args: &[&str]) -> (Child, BufReader<std::process::ChildStderr>) {
    let mut ri = Command::new(ri_bin())
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start ri");
    let err = BufReader::new(ri.stderr.take().unwrap());
    (ri, err)
}

/// A background reader of one output stream.
pub type Reader = std::thread::JoinHandle<Vec<u8>>;

/// Sends SIGINT and reaps the child.
pub fn sigint(child: &mut Child) {
    // SAFETY: plain syscall.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let _ = child.wait();
}

/// `ri session export BUNDLE --json -`: every line of every instrument's
/// files in a session bundle, read back through ri itself (they are zstd).
pub fn session_export(bundle: &std::path::Path) -> Vec<Value> {
    let out = ri(&[
        "session",
        "export",
        &bundle.display().to_string(),
        "--json",
        "-",
    ]);
    assert!(
        out.status.success(),
        "export: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("export line is JSON"))
        .collect()
}
