//! Library names resolved for `-p` as the target's own loader resolves
//! them: libldt.so (tests/fixtures/ldt.c) sits in FIXTURES/ldlib/lib, found
//! by the target through LD_LIBRARY_PATH (set in its environment only, not
//! in ri's), RUNPATH=$ORIGIN/lib, or a later dlopen.

use std::{
    io::{BufRead, BufReader, Write},
    path::PathBuf,
    process::{Child, ChildStdout, Command, Stdio},
};

use ri_tests::{events, fixture, fixtures, of_probe, require_bpf, ri_bin, sigint, start_waiting};

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
        writeln!(self.child.stdin.as_mut().unwrap()).unwrap();
        let mut line = String::new();
        loop {
            line.clear();
            assert!(self.out.read_line(&mut line).unwrap() > 0, "target ended");
            if line.starts_with("done") {
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
