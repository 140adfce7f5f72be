//! Library names resolved for `-p` as the target's own loader resolves
//! them: libldt.so (tests/fixtures/ldt.c) sits in FIXTURES/ldlib/lib, found
//! by the target through LD_LIBRARY_PATH (set in its environment only, not
//! in ri's), RUNPATH=$ORIGIN/lib, or a later dlopen.

use std::{
    io::{BufRead, BufReader, Read, Write},
    path::PathBuf,
    process::{Child, ChildStderr, ChildStdout, Command, Stdio},
};

use ri_tests::{
    events, fixture, fixtures, of_probe, require_bpf, ri_bin, sigint, spawn_ri, start_waiting,
};

/// A fixture in `wait` mode: started, stopped at its "ready" line.
struct Target {
    child: Child,
    out: BufReader<ChildStdout>,
}

impl Target {
    fn start(exe: PathBuf, args: &[&str], library_path: bool) -> Self {
        let mut cmd = Command::new(exe);
        cmd.args(args).stdin(Stdio::piped()).stdout(Stdio::piped());
        cmd.env_remove("LD_LIBRARY_PATH");
        if library_path {
            cmd.env("LD_LIBRARY_PATH", fixtures().join("ldlib/lib"));
        }
        let mut child = cmd.spawn().expect("start fixture");
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        assert_eq!(line, "ready\n");
        Target { child, out }
    }

    /// Lets it call ldt_work and returns its "done" line.
    fn go(&mut self) -> String {
        self.next("done")
    }

    /// Lets it go on, and returns its next line starting with `prefix`.
    fn next(&mut self, prefix: &str) -> String {
        writeln!(self.child.stdin.as_mut().unwrap()).unwrap();
        let mut line = String::new();
        loop {
            line.clear();
            assert!(self.out.read_line(&mut line).unwrap() > 0, "target ended");
            if line.starts_with(prefix) {
                return line;
            }
        }
    }

    fn finish(mut self) {
        writeln!(self.child.stdin.as_mut().unwrap()).unwrap();
        assert!(self.child.wait().unwrap().success());
    }
}

/// Runs `ri ARGS` (without LD_LIBRARY_PATH) against `target` until it has
/// called ldt_work; returns ri's stdout and stderr.
fn ri_during(target: &mut Target, args: &[&str]) -> (Vec<u8>, String) {
    let mut cmd = Command::new(ri_bin());
    cmd.args(args).env_remove("LD_LIBRARY_PATH");
    let (mut ri, out, err) = start_waiting(cmd, "attached", true);
    target.go();
    sigint(&mut ri);
    let out = out.join().unwrap();
    let err = String::from_utf8_lossy(&err.join().unwrap()).into_owned();
    (out, err)
}

#[test]
fn pid_resolves_through_its_library_path_and_runpath() {
    require_bpf();
    for (exe, library_path) in [
        (fixture("ldt-plain"), true),
        (fixtures().join("ldlib/ldt-origin"), false),
    ] {
        let mut target = Target::start(exe.clone(), &["wait", "30"], library_path);
        let pid = target.child.id().to_string();
        let (out, err) = ri_during(
            &mut target,
            &[
                "trace",
                "--json",
                "-p",
                &pid,
                "u:libldt.so:ldt_work(a=arg0)",
            ],
        );
        target.finish();
        let evs = events(&out);
        assert_eq!(
            of_probe(&evs, ":ldt_work").len(),
            30,
            "{}: {err}",
            exe.display()
        );
    }
}

#[test]
fn pid_probe_on_a_library_it_dlopens_later() {
    require_bpf();
    let mut target = Target::start(fixture("ldt-dlopen"), &["wait", "libldt.so", "20"], true);
    let pid = target.child.id().to_string();
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    assert!(!maps.contains("libldt.so"), "mapped before dlopen");
    let (out, err) = ri_during(&mut target, &["count", "-p", &pid, "u:libldt.so:ldt_work"]);
    let out = String::from_utf8_lossy(&out);
    assert!(out.contains("u:ldt_work: 20\n"), "{out}\n{err}");
    target.finish();
}

#[test]
fn pack_target_named_by_library_with_pid() {
    require_bpf();
    let pack = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("packs/ldt.toml");
    let pack = pack.display().to_string();
    for (exe, args) in [
        (fixture("ldt-plain"), vec!["wait", "15"]),
        (fixture("ldt-dlopen"), vec!["wait", "libldt.so", "15"]),
    ] {
        let mut target = Target::start(exe.clone(), &args, true);
        let pid = target.child.id().to_string();
        let (out, err) = ri_during(
            &mut target,
            &["run", "--pack", &pack, "ldt.calls", "-p", &pid],
        );
        target.finish();
        let out = String::from_utf8_lossy(&out);
        assert!(
            out.contains("u:ldt_work: 15\n"),
            "{}: {out}\n{err}",
            exe.display()
        );
    }
}

/// Reads `r` until a line containing `want`; returns what was read.
fn read_until(r: &mut impl BufRead, want: &str) -> String {
    let mut all = String::new();
    loop {
        let mut line = String::new();
        assert!(r.read_line(&mut line).unwrap() > 0, "no {want:?} in: {all}");
        all.push_str(&line);
        if line.contains(want) {
            return all;
        }
    }
}

/// Starts `ri ARGS` and reads its stderr up to the "waiting" line.
fn ri_waiting(args: &[&str]) -> (Child, BufReader<ChildStderr>, String) {
    let (ri, mut err) = spawn_ri(args);
    let waiting = read_until(&mut err, "ri: waiting for libldt.so");
    (ri, err, waiting)
}

/// Runs a waiting `ri ARGS` (a count by `-p`) against a target that
/// dlopens libldt.so by path and then calls ldt_work `n` times; checks the
/// count.
fn waits_then_counts(args: &[&str], target: &mut Target, lib: &str, n: u32) {
    let (mut ri, mut err, waiting) = ri_waiting(args);
    assert!(waiting.contains("has not mapped it"), "{waiting}");
    assert_eq!(target.next("opened"), "opened\n");
    let attached = read_until(&mut err, "attached");
    assert!(attached.contains(&format!("mapped {lib}")), "{attached}");
    target.go();
    sigint(&mut ri);
    let mut out = String::new();
    ri.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    assert!(out.contains(&format!("u:ldt_work: {n}\n")), "{out}");
}

#[test]
fn pid_waits_for_a_library_dlopened_by_path() {
    require_bpf();
    let lib = fixtures()
        .join("ldlib/lib/libldt.so.1.0.0")
        .display()
        .to_string();
    let start = |n: &str| Target::start(fixture("ldt-dlopen"), &["open-wait", &lib, n], false);
    let mut target = start("12");
    let pid = target.child.id().to_string();
    waits_then_counts(
        &["count", "-p", &pid, "u:libldt.so:ldt_work"],
        &mut target,
        &lib,
        12,
    );
    target.finish();

    // A pack whose target library is not mapped yet waits for it too.
    let pack = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("packs/ldt.toml");
    let pack = pack.display().to_string();
    let mut target = start("7");
    let pid = target.child.id().to_string();
    let args = ["run", "--pack", &pack, "ldt.calls", "-p", &pid];
    waits_then_counts(&args, &mut target, &lib, 7);
    target.finish();

    // The process ends while ri waits: said, status 2.
    let mut target = start("1");
    let pid = target.child.id().to_string();
    let (mut ri, mut err, _) = ri_waiting(&["count", "-p", &pid, "u:libldt.so:ldt_work"]);
    target.child.kill().unwrap();
    let ended = read_until(&mut err, "ended");
    let want = format!("ri: error: pid {pid} ended before it mapped libldt.so");
    assert!(ended.contains(&want), "{ended}");
    assert_eq!(ri.wait().unwrap().code(), Some(2));
    target.child.wait().unwrap();
}

#[test]
fn ctrl_c_ends_the_wait_cleanly() {
    require_bpf();
    let lib = fixtures().join("ldlib/lib/libldt.so.1.0.0");
    let lib = lib.display().to_string();
    // -p: nothing attached, one line, status 2; the target runs on.
    let mut target = Target::start(fixture("ldt-dlopen"), &["open-wait", &lib, "1"], false);
    let pid = target.child.id().to_string();
    let (mut ri, mut err, _) = ri_waiting(&["count", "-p", &pid, "u:libldt.so:ldt_work"]);
    sigint_and_check(&mut ri, &mut err);
    assert!(
        target.child.try_wait().unwrap().is_none(),
        "the target ended"
    );
    target.child.kill().unwrap();
    target.child.wait().unwrap();

    // -c: the command started early is stopped and reaped too.
    let dlopen = fixture("ldt-dlopen").display().to_string();
    let cmd = format!("{dlopen} open-wait {lib} 1");
    let (mut ri, mut err, waiting) = ri_waiting(&["count", "-c", &cmd, "u:libldt.so:ldt_work"]);
    let child = waiting
        .split("(pid ")
        .nth(1)
        .and_then(|s| s.split(')').next())
        .expect("the child's pid in the waiting line")
        .to_string();
    sigint_and_check(&mut ri, &mut err);
    assert!(
        !std::path::Path::new(&format!("/proc/{child}")).exists(),
        "the command (pid {child}) is left running"
    );
}

/// Sends SIGINT to a waiting ri: it says it stopped, exit status 2.
fn sigint_and_check(ri: &mut Child, err: &mut BufReader<ChildStderr>) {
    // SAFETY: plain syscall.
    unsafe { libc::kill(ri.id() as i32, libc::SIGINT) };
    let mut rest = String::new();
    err.read_to_string(&mut rest).unwrap();
    assert!(
        rest.contains(
            "ri: error: stopped waiting for libldt.so (interrupted); nothing was attached"
        ),
        "{rest}"
    );
    assert_eq!(ri.wait().unwrap().code(), Some(2), "{rest}");
}
