//! `ri -H` against real OpenSSH servers (tests/src/fleet.rs): why a host
//! failed, named in one line per host (host keys, refused keys, ri missing
//! or of another build, nothing to probe there); mutations listed process
//! by process and confirmed with --yes or on a terminal; inventories;
//! `--push`.

use std::{
    os::unix::fs::PermissionsExt as _,
    process::{Command, Stdio},
};

use ri_tests::{fleet::Fleet, ri_bin, tmux::Tmux};
use serde_json::Value;

/// `ri ARGS` (hosts among them) with the fleet's ssh setup: its stdout, its
/// stderr lines, its exit status.
fn ri_at(fleet: &Fleet, args: &[&str]) -> (String, Vec<String>, Option<i32>) {
    let out = Command::new(ri_bin())
        .args(args)
        .arg("--ssh-config")
        .arg(&fleet.ssh_config)
        .env("RI_SSH_CONTROL_DIR", fleet.control_dir())
        .stdin(Stdio::null())
        .output()
        .expect("run ri");
    let err = String::from_utf8_lossy(&out.stderr);
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        err.lines().map(String::from).collect(),
        out.status.code(),
    )
}

/// The hosts of a JSON-lines output, in order.
fn hosts_of(stdout: &str) -> Vec<String> {
    stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|v| v["host"].as_str().map(String::from))
        .collect()
}

#[test]
fn a_changed_host_key_is_refused_in_one_line() {
    let mut fleet = Fleet::new(1);
    fleet.nodes[0].change_host_key();
    let out = fleet
        .ri("n1", &["ctl", "--discover"])
        .output()
        .expect("run ri");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(
        lines.len(),
        2,
        "one line for the host, one total:\n{stderr}"
    );
    assert_eq!(
        lines[0],
        "ri: n1: failed: host key changed (refused; check the host, then fix known_hosts)"
    );
}

#[test]
fn unknown_host_keys_and_refused_keys_are_named_and_the_others_report() {
    let fleet = Fleet::new(3);
    fleet.forget_host_key(1);
    fleet.nodes[2].refuse_keys();
    // -H after the subcommand, too.
    let (out, err, code) = ri_at(
        &fleet,
        &["ctl", "--json", "--discover", "-H", &fleet.hosts()],
    );
    assert_eq!(code, Some(1), "{err:?}");
    assert_eq!(
        err,
        [
            "ri: n2: failed: host key unknown (not in known_hosts)",
            "ri: n3: failed: authentication refused",
            "ri: 2 of 3 hosts failed",
        ],
        "{out}"
    );
    assert_eq!(hosts_of(&out), ["n1"], "{out}");
}

#[test]
fn an_inventory_group_picks_its_hosts() {
    let fleet = Fleet::new(2);
    let inv = fleet.dir().join("hosts.ini");
    std::fs::write(
        &inv,
        "# the test cluster\n[md]\nn1\n\n[io]\nn2 role=ioservice\n",
    )
    .unwrap();
    let io = format!("@{}:io", inv.display());
    let (out, err, code) = ri_at(&fleet, &["ctl", "--discover", "--json", "--hosts", &io]);
    assert_eq!(code, Some(0), "{err:?}");
    assert_eq!(hosts_of(&out), ["n2"], "{out}");
    let every = format!("@{}", inv.display());
    let (out, err, code) = ri_at(&fleet, &["-H", &every, "ctl", "--discover", "--json"]);
    assert_eq!(code, Some(0), "{err:?}");
    assert_eq!(hosts_of(&out), ["n1", "n2"], "{out}");
    let none = format!("@{}:db", inv.display());
    let (_, err, code) = ri_at(&fleet, &["ctl", "--discover", "-H", &none]);
    assert_eq!(code, Some(2));
    assert_eq!(
        err,
        [format!(
            "ri: error: inventory {}: no group [db]",
            inv.display()
        )]
    );
}

#[test]
fn a_probe_or_process_missing_on_one_host_is_named_and_the_others_report() {
    let mut fleet = Fleet::new(2);
    // n2's m0d is another program, and does not run.
    let other = fleet.nodes[1].dir.join("bin/m0d");
    std::fs::copy(ri_tests::fixture("calls"), &other).unwrap();
    fleet.nodes[0].start_m0d();
    fleet.nodes[0].load(50, 3.0);
    let all = fleet.hosts();
    let (out, err, code) = ri_at(
        &fleet,
        &["-H", &all, "count", "u:m0d:m0_fom_fini", "--duration", "2"],
    );
    fleet.nodes[0].finish_loads();
    assert_eq!(code, Some(1), "{err:?}");
    let failed: Vec<&String> = err.iter().filter(|l| l.contains("failed")).collect();
    assert_eq!(failed.len(), 2, "{err:?}");
    assert!(
        failed[0].starts_with("ri: n2: failed: ") && failed[0].contains("m0_fom_fini"),
        "{err:?}"
    );
    assert_eq!(failed[1], "ri: 1 of 2 hosts failed");
    assert!(out.starts_with("u:m0_fom_fini: "), "n1's count: {out}");
    let (out, err, code) = ri_at(
        &fleet,
        &["-H", &all, "ctl", "--comm", "m0d", "--json", "stats"],
    );
    assert_eq!(code, Some(1), "{err:?}");
    assert!(
        err.contains(&"ri: n2: failed: no running process matches --comm m0d".to_string()),
        "{err:?}"
    );
    assert_eq!(hosts_of(&out), ["n1"], "{out}");
}

#[test]
fn a_mutation_lists_every_process_and_needs_yes_or_a_typed_yes() {
    let mut fleet = Fleet::new(2);
    for n in &mut fleet.nodes {
        n.start_m0d();
    }
    let all = fleet.hosts();
    let (_, err, code) = ri_at(&fleet, &["-H", &all, "ctl", "--comm", "m0d", "reqh.pause"]);
    assert_eq!(code, Some(2), "{err:?}");
    let mut want = vec!["ri: 'reqh.pause' changes the target: 2 processes on 2 hosts:".to_string()];
    for n in &fleet.nodes {
        want.push(format!("  {}: pid {} (m0d)", n.name, n.m0d_nspid()));
    }
    want.push(
        "ri: error: 'reqh.pause' changes the target: 2 processes on 2 hosts: add --yes to run it (stdin is not a terminal to ask on)"
            .into(),
    );
    assert_eq!(err, want);
    let audit = |fleet: &Fleet| -> Vec<Value> {
        let (out, err, code) = ri_at(
            fleet,
            &["-H", &all, "ctl", "--comm", "m0d", "--json", "audit"],
        );
        assert_eq!(code, Some(0), "{err:?}");
        let docs: Vec<Value> = out
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(hosts_of(&out), ["n1", "n2"], "{out}");
        docs
    };
    for s in audit(&fleet) {
        assert_eq!(
            s["entries"].as_array().map(Vec::len),
            Some(0),
            "ran without --yes: {s}"
        );
    }

    // On a terminal: the list, then a typed `yes`.
    let line = format!(
        "RI_SSH_CONTROL_DIR={} {} -H {all} --ssh-config {} ctl --comm m0d reqh.pause",
        fleet.control_dir().display(),
        ri_bin().display(),
        fleet.ssh_config.display()
    );
    let term = Tmux::start("fleet", &line);
    let screen = term.wait_for("Type 'yes'", 30);
    for n in &fleet.nodes {
        let row = format!("  {}: pid {} (m0d)", n.name, n.m0d_nspid());
        assert!(screen.contains(&row), "{screen}");
    }
    term.line("yes");
    let screen = term.wait_for("EXIT=", 30);
    assert!(screen.contains("EXIT=0"), "{screen}");
    let (_, err, code) = ri_at(
        &fleet,
        &["ctl", "--comm", "m0d", "--yes", "reqh.resume", "-H", &all],
    );
    assert_eq!(code, Some(0), "{err:?}");
    for (s, n) in audit(&fleet).iter().zip(&fleet.nodes) {
        assert_eq!(s["host"], n.name.as_str());
        let cmds: Vec<&str> = s["entries"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|e| e["cmd"].as_str())
            .collect();
        assert_eq!(cmds, ["reqh.pause", "reqh.resume"], "{s}");
        for e in s["entries"].as_array().unwrap() {
            assert_eq!(e["peer"]["ssh"]["user"], "root", "{e}");
            let client = e["peer"]["ssh"]["client"].as_str().unwrap_or_default();
            let local = format!("{}.1:", n.addr.rsplit_once('.').unwrap().0);
            assert!(client.starts_with(&local), "{e}");
        }
    }
}

#[test]
fn a_remote_ri_of_another_build_is_named() {
    let fleet = Fleet::new(2);
    // n2's ri: the same version, another build (its build-id changed). The
    // GNU build-id note: namesz 4, descsz 20, type 3, "GNU\0", the id.
    let mut exe = std::fs::read(ri_bin()).unwrap();
    let head = [4, 0, 0, 0, 20, 0, 0, 0, 3, 0, 0, 0, b'G', b'N', b'U', 0];
    let at = exe
        .windows(head.len())
        .position(|w| w == head)
        .expect("ri has a GNU build-id note")
        + head.len();
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    let id = hex(&exe[at..at + 20]);
    exe[at + 19] ^= 0xff;
    let theirs = hex(&exe[at..at + 20]);
    let other = fleet.nodes[1].dir.join("bin/ri");
    std::fs::remove_file(&other).unwrap();
    std::fs::write(&other, &exe).unwrap();
    std::fs::set_permissions(&other, std::fs::Permissions::from_mode(0o755)).unwrap();
    let (out, err, code) = ri_at(
        &fleet,
        &["-H", &fleet.hosts(), "ctl", "--discover", "--json"],
    );
    assert_eq!(code, Some(1), "{err:?}");
    assert_eq!(
        err[0],
        format!(
            "ri: n2: failed: ri of another version: local ri build {id}, remote ri build {theirs} (use --push)"
        )
    );
    assert_eq!(hosts_of(&out), ["n1"], "{out}");
    // --push puts this very build there.
    let (out, err, code) = ri_at(
        &fleet,
        &[
            "-H",
            &fleet.hosts(),
            "--push",
            "ctl",
            "--discover",
            "--json",
        ],
    );
    assert_eq!(code, Some(0), "{err:?}");
    assert_eq!(hosts_of(&out), ["n1", "n2"], "{out}");
}

#[test]
fn push_copies_ri_once_by_hash_and_other_versions_are_named() {
    let fleet = Fleet::new(2);
    for n in &fleet.nodes {
        std::fs::remove_file(n.dir.join("bin/ri")).unwrap();
    }
    // n2 has an older ri on its PATH, one that does not know the protocol.
    let old = fleet.nodes[1].dir.join("bin/ri");
    std::fs::write(
        &old,
        "#!/bin/sh\necho \"error: unexpected argument '--remote-child' found\" >&2\nexit 2\n",
    )
    .unwrap();
    std::process::Command::new("chmod")
        .arg("755")
        .arg(&old)
        .status()
        .unwrap();
    let out = fleet
        .ri(&fleet.hosts(), &["ctl", "--discover"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("ri: n1: failed: ri missing on the host (install it or use --push)"),
        "{err}"
    );
    assert!(
        err.contains("ri: n2: failed: ri of another version"),
        "{err}"
    );

    let cached = |n: &ri_tests::fleet::Node| -> Vec<std::path::PathBuf> {
        std::fs::read_dir(n.dir.join("home/.cache/ri/bin"))
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default()
    };
    let pushed = fleet
        .ri(&fleet.hosts(), &["--push", "ctl", "--discover"])
        .output()
        .unwrap();
    assert!(
        pushed.status.success(),
        "{}",
        String::from_utf8_lossy(&pushed.stderr)
    );
    let first: Vec<_> = fleet.nodes.iter().map(cached).collect();
    for (c, n) in first.iter().zip(&fleet.nodes) {
        assert_eq!(c.len(), 1, "{}: {c:?}", n.name);
        let name = c[0].file_name().unwrap().to_string_lossy().into_owned();
        assert!(name.starts_with("ri-") && name.len() == 67, "{name}");
    }
    let mtime = |p: &std::path::Path| std::fs::metadata(p).unwrap().modified().unwrap();
    let before: Vec<_> = first.iter().map(|c| mtime(&c[0])).collect();
    let again = fleet
        .ri(&fleet.hosts(), &["--push", "ctl", "--discover"])
        .output()
        .unwrap();
    assert!(again.status.success());
    let after: Vec<_> = first.iter().map(|c| mtime(&c[0])).collect();
    assert_eq!(before, after, "the cached copy was pushed again");
}
