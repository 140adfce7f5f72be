//! `ri ctl` end to end: a real m0d (with ri-control linked in) on loopback
//! in a temporary data directory, a real m0client load against it, and the
//! effects of each control command checked from outside (m0client, stats).

use std::{
    io::{BufRead, BufReader, Read, Write},
    os::unix::{fs::PermissionsExt, net::UnixStream},
    process::{Command, Output, Stdio},
    thread::sleep,
    time::{Duration, Instant},
};

use ri_tests::{
    fixture,
    m0sim::{M0d, M0dConfig, requests, served},
    ri_bin,
};
use serde_json::Value;

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Asserts a failed `ri ctl`: exit 2, one stderr line containing `want`.
fn assert_ctl_error(out: &Output, want: &str) {
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {err}");
    assert_eq!(err.lines().count(), 1, "one line expected: {err}");
    assert!(err.starts_with("ri: error: "), "{err}");
    assert!(err.contains(want), "stderr lacks {want:?}: {err}");
    assert!(!err.contains("panicked"), "{err}");
}

/// Asserts a load summary without errors.
fn assert_clean_load(summary: &Value, m0d: &M0d) {
    let clean = summary["total_errors"] == 0
        && summary["verify_failures"] == 0
        && summary["total_ops"].as_u64().unwrap_or(0) > 0;
    assert!(clean, "load had errors: {summary}\n{}", m0d.diagnose());
}

/// Polls `f` every 50 ms until it returns true or `limit` passes.
fn until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let t = Instant::now();
    while t.elapsed() < limit {
        if f() {
            return true;
        }
        sleep(Duration::from_millis(50));
    }
    false
}

/// The gob fid of an object name, from `m0client fid NAME`.
fn gob_fid(name: &str) -> String {
    let out = Command::new(fixture("m0client"))
        .args(["fid", name])
        .output()
        .expect("m0client fid");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).expect("m0client fid JSON");
    v["fid"].as_str().expect("fid").to_string()
}

#[test]
fn pause_queues_and_resume_drains() {
    let m0d = M0d::start();
    let load = m0d.load(300, 5.0, "pause");
    assert!(
        until(Duration::from_secs(5), || served(&m0d.stats()) > 20),
        "the load is not being served"
    );
    let out = m0d.ctl(&["--yes", "reqh.pause"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    // Arriving requests queue; nothing is served while paused.
    sleep(Duration::from_millis(300));
    let a = m0d.stats();
    sleep(Duration::from_millis(1200));
    let b = m0d.stats();
    assert_eq!(b["paused"], true);
    assert_eq!(served(&a), served(&b), "served while paused: {a}\n{b}");
    assert_eq!(requests(&a), requests(&b));
    assert!(b["queued"].as_u64().unwrap() >= 1, "nothing queued: {b}");
    assert!(b["queued"].as_u64() >= a["queued"].as_u64());
    let q = m0d.ctl_json(&["reqh.queue"]);
    assert_eq!(q["paused"], true);
    assert!(
        q["foms"]
            .as_array()
            .is_some_and(|f| f.iter().any(|f| f["list"] == "runq")),
        "{q}"
    );
    let out = m0d.ctl(&["--yes", "reqh.resume"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        until(Duration::from_secs(5), || {
            let s = m0d.stats();
            s["queued"] == 0 && served(&s) > served(&b)
        }),
        "the queue did not drain"
    );
    let summary = load.finish(Duration::from_secs(30));
    assert_clean_load(&summary, &m0d);
    assert_eq!(m0d.stats()["paused"], false);
    m0d.stop();
}

#[test]
fn corrupted_block_is_reported_and_repaired() {
    let m0d = M0d::start();
    let load = m0d.load(150, 3.0, "repair-bg");
    // Five blocks: data blocks 0..4 over three devices, and parity.
    let data: Vec<u8> = (0..5 * 4096u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let file = m0d.dir().join("obj.bin");
    std::fs::write(&file, &data).unwrap();
    let out = m0d.client(&["create", "victim"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = m0d.client(&["write", "victim", &format!("@{}", file.display())]);
    assert!(out.status.success(), "{}", text(&out.stderr));

    // Object block 1 is on device 1, cob block 0: flip a byte there.
    let out = m0d.client(&["objinfo", "victim"]);
    let info: Value = serde_json::from_slice(&out.stdout).expect("objinfo JSON");
    let cob = info["cobs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["device"] == 1)
        .unwrap()
        .clone();
    let start = cob["extents"][0]["start"].as_u64().unwrap();
    let dev = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(cob["path"].as_str().unwrap())
        .unwrap();
    let mut byte = [0u8];
    {
        use std::os::unix::fs::FileExt;
        dev.read_exact_at(&mut byte, start * 4096 + 123).unwrap();
        byte[0] ^= 0x5a;
        dev.write_all_at(&byte, start * 4096 + 123).unwrap();
        dev.sync_all().unwrap();
    }

    let out = m0d.client(&["read", "victim"]);
    let err = text(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "read of a corrupted block: {err}"
    );
    assert!(
        err.contains("checksum mismatch") && err.contains("block 1"),
        "{err}"
    );

    let fid = gob_fid("victim");
    assert_eq!(info["fid"], fid.as_str());
    let r = m0d.ctl_json(&["--yes", "block.repair", &fid, "1"]);
    assert!(
        r["message"].as_str().unwrap().starts_with("repaired"),
        "{r}"
    );
    let out = m0d.client(&["read", "victim"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        out.stdout == data,
        "repaired data differs from what was written"
    );
    // A healthy block is left alone.
    let r = m0d.ctl_json(&["--yes", "block.repair", &format!("fid={fid}"), "block=1"]);
    assert!(r["message"].as_str().unwrap().contains("healthy"), "{r}");
    let s = m0d.stats();
    assert!(s["store"]["csum_errors"].as_u64().unwrap() >= 1);
    assert!(s["store"]["repairs"].as_u64().unwrap() >= 1);
    assert_clean_load(&load.finish(Duration::from_secs(30)), &m0d);
    m0d.stop();
}

/// One crash mode: set an old value, kill m0d while it commits the new
/// one, restart, read.
fn meta_update_crash(mode: &str) -> String {
    let old = "A".repeat(2000);
    let new = "B".repeat(2000);
    let first = M0d::start_with(M0dConfig {
        env: vec![
            ("M0SIM_CRASH".into(), mode.into()),
            ("M0SIM_CRASH_AT".into(), "2".into()),
        ],
        ..M0dConfig::default()
    });
    let socket = first.socket.clone().expect("control socket");
    let r = first.ctl_json(&["--yes", "meta.update", "cfg.limit", &old]);
    assert_eq!(r["value"], old.as_str());
    // The second commit kills m0d at the chosen point.
    let out = first.ctl(&["--yes", "meta.update", "cfg.limit", &new]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stderr).lines().count(),
        1,
        "{}",
        text(&out.stderr)
    );
    let st = first.wait(Duration::from_secs(10)).expect("m0d exits");
    assert_eq!(st.code(), Some(99), "crash hook exit: {}", first.stderr());
    assert!(first.stderr().contains("crash test hook"));
    // Killed: its socket stays behind; discovery marks it dead.
    let _ = std::fs::remove_file(&socket);

    let second = M0d::start_with(M0dConfig {
        data: Some(&first.data.clone()),
        ..M0dConfig::default()
    });
    let v = second.ctl_json(&["meta.get", "cfg.limit"]);
    let got = v["value"].as_str().expect("value present").to_string();
    assert!(
        got == old || got == new,
        "{mode}: a mix of old and new values"
    );
    // The recovered store serves a load.
    let load = second.load(200, 1.0, "after-crash");
    assert_clean_load(&load.finish(Duration::from_secs(30)), &second);
    second.stop();
    drop(first);
    if got == old {
        "old".into()
    } else {
        "new".into()
    }
}

#[test]
fn meta_update_killed_mid_update_is_old_or_new() {
    // A torn log record is not replayed; a complete one always is.
    assert_eq!(meta_update_crash("wal-torn"), "old");
    assert_eq!(meta_update_crash("after-wal"), "new");
    assert_eq!(meta_update_crash("mid-apply"), "new");
}

#[test]
fn session_reset_makes_the_client_reconnect() {
    let m0d = M0d::start();
    let load = m0d.load(200, 4.0, "reset");
    let mut sid = None;
    assert!(
        until(Duration::from_secs(5), || {
            sid = m0d.stats()["sessions"]
                .as_array()
                .and_then(|s| s.first())
                .and_then(|s| s["session_id"].as_u64());
            sid.is_some()
        }),
        "no session"
    );
    sleep(Duration::from_millis(500));
    let sid = sid.unwrap().to_string();
    let r = m0d.ctl_json(&["--yes", "session.reset", &sid]);
    assert_eq!(r["reset"], true);
    let summary = load.finish(Duration::from_secs(30));
    assert_clean_load(&summary, &m0d);
    assert!(summary["reconnects"].as_u64().unwrap() >= 1, "{summary}");
    // Unknown sessions are an error from the target.
    let out = m0d.ctl(&["--yes", "session.reset", "987654321"]);
    assert_ctl_error(&out, "handler_error: no open session 987654321");
    m0d.stop();
}

#[test]
fn service_offline_refuses_io() {
    let m0d = M0d::start();
    assert!(m0d.client(&["create", "svc"]).status.success());
    assert!(m0d.client(&["write", "svc", "hello"]).status.success());
    let r = m0d.ctl_json(&["--yes", "service.state", "ioservice", "offline"]);
    assert_eq!(r["state"], "offline");
    for args in [&["read", "svc"][..], &["write", "svc", "other"][..]] {
        let out = m0d.client(args);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?} while offline: {err}");
        assert!(err.contains("service ioservice is offline"), "{err}");
    }
    // Metadata is another service.
    assert!(m0d.client(&["getattr", "svc"]).status.success());
    let s = m0d.stats();
    assert_eq!(s["services"]["ioservice"], "offline");
    assert!(s["refused"]["read"].as_u64().unwrap() >= 1);

    m0d.ctl_json(&[
        "--yes",
        "service.state",
        "service=ioservice",
        "state=online",
    ]);
    let out = m0d.client(&["read", "svc"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(out.stdout, b"hello");
    assert_clean_load(
        &m0d.load(200, 1.0, "svc").finish(Duration::from_secs(30)),
        &m0d,
    );
    m0d.stop();
}

#[test]
fn inspection_commands_and_discovery() {
    let m0d = M0d::start();
    let load = m0d.load(300, 3.0, "inspect");
    assert!(m0d.client(&["create", "foo"]).status.success());
    assert!(m0d.client(&["write", "foo", "some data"]).status.success());

    // cob.list agrees with objinfo.
    let fid = gob_fid("foo");
    assert_eq!(fid, "<470000003298beac:dcb27518fed9d577>");
    let cobs = m0d.ctl_json(&["cob.list", &fid]);
    let info: Value = serde_json::from_slice(&m0d.client(&["objinfo", "foo"]).stdout).unwrap();
    assert_eq!(cobs["fid"], fid.as_str());
    assert_eq!(cobs["cobs"], info["cobs"]);
    assert_eq!(cobs["cobs"].as_array().unwrap().len(), 4);
    let out = m0d.ctl(&["cob.list", "<4700000000000000:1>"]);
    assert_ctl_error(
        &out,
        "handler_error: no object with fid <4700000000000000:1>",
    );
    let out = m0d.ctl(&["cob.list", "<47:1>"]);
    assert_ctl_error(&out, "<47:1> is neither an object fid");
    let out = m0d.ctl(&["cob.list", "nonsense"]);
    assert_ctl_error(&out, "fid must look like <hex:hex>");

    // btree.node: the root, then (when the tree has grown) a child.
    assert!(until(Duration::from_secs(5), || served(&m0d.stats()) > 50));
    let bt = m0d.stats()["store"]["btree"].clone();
    let root_addr = bt["root_addr"].as_str().unwrap().to_string();
    let root = m0d.ctl_json(&["btree.node", &root_addr]);
    assert_eq!(root["root"], true);
    assert_eq!(root["page"], bt["root"]);
    assert_eq!(root["address"], root_addr.as_str());
    assert!(root["records"].as_u64().unwrap() >= 1);
    if let Some(child) = root["left"]["address"].as_str() {
        let c = m0d.ctl_json(&["btree.node", &format!("address={child}")]);
        assert_eq!(c["root"], false);
        assert_eq!(c["level"], root["level"].as_u64().unwrap() - 1);
    } else {
        assert_eq!(root["leaf"], true);
        assert!(
            root["recs"]
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r["key_text"] == "foo"),
            "{root}"
        );
    }
    // An address inside the node's page names the same node.
    let inside = u64::from_str_radix(root_addr.trim_start_matches("0x"), 16).unwrap() + 100;
    let n = m0d.ctl_json(&["btree.node", &inside.to_string()]);
    assert_eq!(n["page"], root["page"]);
    assert_eq!(n["offset"], 100);
    // Anything else is refused without being dereferenced.
    for bad in ["0x10", "1", "0xffffffffffffffff", "0x7fffffff0000"] {
        let out = m0d.ctl(&["btree.node", bad]);
        assert_ctl_error(&out, "is not inside a node of the metadata B-tree");
    }
    let out = m0d.ctl(&["btree.node", "0xzz"]);
    assert_ctl_error(&out, "handler_error: address must be");

    // --list: every command, with its mutates flag.
    let out = m0d.ctl(&["--list"]);
    assert!(out.status.success());
    let listing = text(&out.stdout);
    for (cmd, mutates) in [
        ("reqh.pause", true),
        ("reqh.resume", true),
        ("session.reset", true),
        ("meta.update", true),
        ("block.repair", true),
        ("service.state", true),
        ("cob.list", false),
        ("reqh.queue", false),
        ("stats", false),
        ("btree.node", false),
    ] {
        let line = listing
            .lines()
            .find(|l| l.split_whitespace().next() == Some(cmd))
            .unwrap_or_else(|| panic!("--list lacks {cmd}:\n{listing}"));
        let flag = line.split_whitespace().nth(1).unwrap();
        assert_eq!(flag == "yes", mutates, "{line}");
    }
    assert!(listing.contains("session_id:integer"), "{listing}");
    assert!(listing.contains("state:online|offline|failed"), "{listing}");
    let cmds = m0d.ctl_json(&["--list"]);
    let bs = cmds
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "block.repair")
        .unwrap();
    assert_eq!(bs["mutates"], true);
    assert_eq!(bs["args"]["required"], serde_json::json!(["fid", "block"]));

    // --discover shows this m0d, alive, with its socket.
    let out = Command::new(ri_bin())
        .args(["ctl", "--discover"])
        .output()
        .unwrap();
    let socket = m0d.socket.clone().unwrap();
    let pid = m0d.pid.to_string();
    assert!(
        text(&out.stdout).lines().any(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            w == [pid.as_str(), "m0d", "yes", &socket.display().to_string()]
        }),
        "{}",
        text(&out.stdout)
    );
    let out = Command::new(ri_bin())
        .args(["ctl", "--discover", "--json"])
        .output()
        .unwrap();
    let all: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(all.as_array().unwrap().iter().any(|s| s["pid"] == m0d.pid
        && s["name"] == "m0d"
        && s["alive"] == true
        && s["path"] == socket.display().to_string().as_str()));
    // --socket and --name reach the same server.
    let out = Command::new(ri_bin())
        .args(["ctl", "--socket"])
        .arg(&socket)
        .arg("ping")
        .output()
        .unwrap();
    assert_eq!(text(&out.stdout).trim(), "pong");
    let out = m0d.ctl(&["--name", "m0d", "ping"]);
    assert_eq!(text(&out.stdout).trim(), "pong");
    let out = m0d.ctl(&["--name", "other", "ping"]);
    assert_ctl_error(&out, "has no control socket named 'other' (it has: m0d)");

    assert_clean_load(&load.finish(Duration::from_secs(30)), &m0d);
    m0d.stop();
}

/// Runs `ri ARGS` on a pseudo-terminal (through script(1)) answering `answer`.
fn on_terminal(args: &str, answer: &str) -> (Option<i32>, String) {
    let mut child = Command::new("script")
        .args([
            "-qec",
            &format!("{} {args}", ri_bin().display()),
            "/dev/null",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("script(1)");
    let mut stdin = child.stdin.take().unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    // Wait for the question, then answer it.
    let mut seen = Vec::new();
    let mut buf = [0u8; 256];
    let t = Instant::now();
    while !text(&seen).contains("[y/N]") && t.elapsed() < Duration::from_secs(10) {
        match out.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
        }
    }
    writeln!(stdin, "{answer}").unwrap();
    let mut rest = String::new();
    let _ = out.read_to_string(&mut rest);
    let st = child.wait().unwrap();
    drop(stdin);
    (st.code(), format!("{}{rest}", text(&seen)))
}

#[test]
fn mutations_need_confirmation_and_are_audited() {
    let m0d = M0d::start();
    let load = m0d.load(200, 2.0, "audit");
    // No terminal and no --yes: refused before anything is sent.
    let out = m0d.ctl(&["service.state", "sss", "offline"]);
    assert_ctl_error(&out, "add --yes");
    assert_eq!(m0d.stats()["services"]["sss"], "online");
    // On a terminal it asks; "n" runs nothing, "y" runs it.
    let pid = m0d.pid;
    let (code, shown) = on_terminal(&format!("ctl -p {pid} service.state sss failed"), "n");
    assert_eq!(code, Some(2), "{shown}");
    assert!(
        shown.contains(&format!(
            "Run mutating command service.state on pid {pid} (m0d)? [y/N]"
        )),
        "{shown}"
    );
    assert!(shown.contains("not confirmed"), "{shown}");
    assert_eq!(m0d.stats()["services"]["sss"], "online");
    let (code, shown) = on_terminal(&format!("ctl -p {pid} service.state sss failed"), "y");
    assert_eq!(code, Some(0), "{shown}");
    assert_eq!(m0d.stats()["services"]["sss"], "failed");
    // Read-only commands never ask.
    assert!(m0d.ctl(&["reqh.queue"]).status.success());

    // A raw request without "mutate": true is refused by the target itself.
    let mut s = UnixStream::connect(m0d.socket.as_ref().unwrap()).unwrap();
    s.write_all(b"{\"v\":1,\"id\":1,\"cmd\":\"reqh.pause\"}\n")
        .unwrap();
    let mut line = String::new();
    BufReader::new(&s).read_line(&mut line).unwrap();
    assert!(line.contains("confirmation_required"), "{line}");
    drop(s);

    let mutations: [&[&str]; 6] = [
        &["service.state", "sss", "online"],
        &["meta.update", "audit.key", "v1"],
        &["reqh.pause"],
        &["reqh.resume"],
        &["session.reset", "424242"],
        &["block.repair", "<4700000000000000:1>", "0"],
    ];
    for m in mutations {
        let mut a = vec!["--yes"];
        a.extend_from_slice(m);
        let _ = m0d.ctl(&a);
    }
    let audit = m0d.ctl_json(&["audit", "n=100"]);
    let entries = audit["entries"].as_array().unwrap();
    let has = |cmd: &str, confirmed: bool, ok: bool| {
        entries
            .iter()
            .any(|e| e["cmd"] == cmd && e["confirmed"] == confirmed && e["ok"] == ok)
    };
    assert!(has("service.state", true, true), "{audit}");
    assert!(has("meta.update", true, true));
    assert!(has("reqh.pause", true, true));
    assert!(
        has("reqh.pause", false, false),
        "unconfirmed attempt: {audit}"
    );
    assert!(has("reqh.resume", true, true));
    assert!(has("session.reset", true, false), "failed attempt: {audit}");
    assert!(has("block.repair", true, false));
    assert_eq!(
        entries
            .iter()
            .filter(|e| e["cmd"] == "service.state" && e["confirmed"] == true)
            .count(),
        2
    );
    // Read-only commands are not audited; the attempt refused by ri itself
    // never reached the target.
    assert!(!entries.iter().any(|e| e["cmd"] == "stats"));
    assert!(
        entries
            .iter()
            .all(|e| e["peer"]["uid"] == 0 && e["pid"] == m0d.pid)
    );
    let log = std::fs::read_to_string(audit["path"].as_str().unwrap()).unwrap();
    assert!(log.contains("\"audit.key\""));
    assert_clean_load(&load.finish(Duration::from_secs(30)), &m0d);
    m0d.stop();
}

#[test]
fn other_users_are_refused() {
    // Default socket: 0600 in a 0700 directory.
    let m0d = M0d::start();
    let nobody = |args: &[&str]| {
        Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(ri_bin())
            .args(args)
            .output()
            .expect("setpriv")
    };
    let pid = m0d.pid.to_string();
    let out = nobody(&["ctl", "-p", &pid, "stats"]);
    assert_ctl_error(
        &out,
        &format!("no control socket for pid {pid} visible to this user"),
    );
    let sock = m0d.socket.clone().unwrap().display().to_string();
    let out = nobody(&["ctl", "--socket", &sock, "--yes", "reqh.pause"]);
    assert_ctl_error(&out, "permission denied");

    // Even when the file system lets it through, the target checks the
    // peer's uid (SO_PEERCRED).
    let dir = tempfile::Builder::new()
        .prefix("m0d-ctl.")
        .tempdir()
        .unwrap();
    let ctl_dir = dir.path().join("ctl");
    std::fs::create_dir(&ctl_dir).unwrap();
    for d in [dir.path(), &ctl_dir] {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o711)).unwrap();
    }
    let open = M0d::start_with(M0dConfig {
        args: vec!["--control-dir".into(), ctl_dir.display().to_string()],
        ..M0dConfig::default()
    });
    let sock = open.socket.clone().unwrap();
    assert!(sock.starts_with(&ctl_dir));
    std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o666)).unwrap();
    let out = nobody(&[
        "ctl",
        "--socket",
        &sock.display().to_string(),
        "--yes",
        "reqh.pause",
    ]);
    assert_ctl_error(&out, "forbidden");
    assert_eq!(open.stats()["paused"], false);
    assert!(
        !open.ctl_json(&["audit"])["entries"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["cmd"] == "reqh.pause")
    );
    open.stop();
    m0d.stop();
}

#[test]
fn hundred_concurrent_calls_while_serving() {
    let m0d = M0d::start();
    let load = m0d.load(300, 5.0, "burst");
    assert!(until(Duration::from_secs(5), || served(&m0d.stats()) > 20));
    let before = served(&m0d.stats());
    let t = Instant::now();
    let pid = m0d.pid.to_string();
    let children: Vec<_> = (0..100)
        .map(|_| {
            Command::new(ri_bin())
                .args(["ctl", "-p", &pid, "--json", "stats"])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn ri ctl")
        })
        .collect();
    let mut max_served = 0;
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
        let v: Value = serde_json::from_slice(&out.stdout).expect("stats JSON");
        max_served = max_served.max(served(&v));
    }
    assert!(t.elapsed() < Duration::from_secs(30));
    // The service kept serving during the burst, and after it.
    assert!(max_served > before, "nothing served during the burst");
    assert!(until(Duration::from_secs(3), || served(&m0d.stats()) > max_served));
    assert_clean_load(&load.finish(Duration::from_secs(30)), &m0d);
    m0d.stop();
}

#[test]
fn sigusr2_report_has_the_sections() {
    let reports = tempfile::tempdir().unwrap();
    let m0d = M0d::start_with(M0dConfig {
        args: vec![
            "--report-dir".into(),
            reports.path().display().to_string(),
            "--localities".into(),
            "3".into(),
        ],
        ..M0dConfig::default()
    });
    let load = m0d.load(200, 2.0, "usr2");
    sleep(Duration::from_millis(300));
    m0d.signal(libc::SIGUSR2);
    let mut report = String::new();
    assert!(
        until(Duration::from_secs(5), || {
            let f = std::fs::read_dir(reports.path())
                .unwrap()
                .flatten()
                .find(|e| e.file_name().to_string_lossy().ends_with(".report.txt"));
            if let Some(f) = f {
                report = std::fs::read_to_string(f.path()).unwrap_or_default();
            }
            report.contains("===== end of report =====")
        }),
        "no report file"
    );
    for s in [
        "----- config -----",
        "----- version -----",
        "----- state -----",
    ] {
        assert!(report.contains(s), "{s} missing:\n{report}");
    }
    assert!(report.contains("target:   m0d"));
    assert!(report.contains(&format!("pid:      {}", m0d.pid)));
    assert!(report.contains("\"localities\": 3"), "{report}");
    assert!(report.contains("\"ri_control\""));
    // The same sections through the report command.
    let r = m0d.ctl_json(&["report"]);
    assert_eq!(r["config"]["data"], m0d.data.display().to_string().as_str());
    assert!(r["state"]["requests"].is_object());
    assert_clean_load(&load.finish(Duration::from_secs(30)), &m0d);
    m0d.stop();

    // Without --report-dir the report goes to stderr.
    let m0d = M0d::start();
    m0d.signal(libc::SIGUSR2);
    assert!(until(Duration::from_secs(5), || m0d
        .stderr()
        .contains("===== end of report =====")));
    assert!(m0d.stderr().contains("----- state -----"));
    let out = m0d.stop();
    assert!(out.lines().last().unwrap_or("").starts_with("stats {"));
}

#[test]
fn no_control_flag() {
    let m0d = M0d::start_with(M0dConfig {
        args: vec!["--no-control".into()],
        ..M0dConfig::default()
    });
    assert!(m0d.socket.is_none());
    assert_clean_load(
        &m0d.load(200, 1.0, "noctl").finish(Duration::from_secs(30)),
        &m0d,
    );
    let out = m0d.ctl(&["stats"]);
    assert_ctl_error(&out, &format!("no control socket for pid {}", m0d.pid));
    m0d.stop();
}

#[test]
fn pid_finds_a_socket_in_a_control_dir_of_its_own() {
    let dir = tempfile::Builder::new()
        .prefix("m0d-ctldir.")
        .tempdir()
        .unwrap();
    let m0d = M0d::start_with(M0dConfig {
        args: vec!["--control-dir".into(), dir.path().display().to_string()],
        ..M0dConfig::default()
    });
    let sock = m0d.socket.clone().expect("m0d started a control socket");
    assert!(sock.starts_with(dir.path()), "{}", sock.display());
    // Discovery in the default directories does not see it...
    let found = Command::new(ri_bin())
        .args(["ctl", "--discover"])
        .output()
        .unwrap();
    assert!(!text(&found.stdout).contains(&sock.display().to_string()));
    // ...but -p finds it from the process's listening sockets.
    let out = m0d.ctl(&["--list"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("stats"), "{}", text(&out.stdout));
    assert!(m0d.ctl_json(&["stats"]).is_object());
    m0d.stop();
}
