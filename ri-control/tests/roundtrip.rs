//! Built-ins, registered commands, confirmation and audit, discovery, the
//! JSON-lines framing and the TCP listener, over real sockets.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use common::*;
use ri_control::client::{Client, ClientError};
use ri_control::{Command, Control, discover};
use serde_json::{Value, json};

#[test]
fn builtins_and_registered_commands() {
    let dir = tmpdir();
    let name = unique("rt");
    let ctl = builder(&name, dir.path()).start().unwrap();
    register_test_commands(&ctl);
    ctl.report_section("mem", || json!({"rss_kb": 1234}))
        .unwrap();
    ctl.report_section("bad", || panic!("section exploded"))
        .unwrap();

    let pid = std::process::id() as i32;
    let path = ctl.socket_path().to_owned();
    assert_eq!(
        path,
        dir.path().join(format!("{name}.{pid}.sock")),
        "predictable socket path"
    );
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "socket mode");

    let mut c = Client::connect_path(&path).unwrap();
    assert_eq!(c.call("ping", Value::Null, false).unwrap(), json!("pong"));

    let v = c.call("version", json!({}), false).unwrap();
    assert_eq!(v["protocol"], 1);
    assert_eq!(v["target"], json!(name));
    assert_eq!(v["pid"], json!(pid));
    assert_eq!(v["library_version"], json!(ri_control::VERSION));

    let cmds = c.list().unwrap();
    let names: Vec<&str> = cmds.iter().map(|c| c.name.as_str()).collect();
    for n in [
        "ping",
        "version",
        "commands",
        "report",
        "audit",
        "echo",
        "counter.add",
    ] {
        assert!(names.contains(&n), "{n} missing from {names:?}");
    }
    let add = cmds.iter().find(|c| c.name == "counter.add").unwrap();
    assert!(add.mutates && !add.builtin);
    assert_eq!(add.args["required"], json!(["n"]));

    let r = c.call("report", Value::Null, false).unwrap();
    assert_eq!(r["mem"]["rss_kb"], 1234);
    assert!(
        r["bad"]["error"]
            .as_str()
            .unwrap()
            .contains("section exploded"),
        "{r}"
    );

    // A registered command, with its default filled in.
    let e = c.call("echo", json!({"msg": "hi"}), false).unwrap();
    assert_eq!(e["msg"], "hi");
    assert_eq!(e["peer_uid"], json!(unsafe { libc::geteuid() }));

    // Argument validation.
    for (args, what) in [
        (json!({}), "missing"),
        (json!({"msg": 3}), "must be string"),
        (json!({"msg": "x", "extra": 1}), "unexpected"),
        (json!({"msg": "x", "times": 0}), ">= 1"),
    ] {
        let err = c.call("echo", args, false).unwrap_err();
        assert_eq!(err.code(), Some("invalid_args"), "{err}");
        assert!(err.to_string().contains(what), "{err} lacks {what}");
    }
    assert_eq!(
        c.call("ping", json!({"x": 1}), false).unwrap_err().code(),
        Some("invalid_args")
    );
    assert_eq!(
        c.call("nope", Value::Null, false).unwrap_err().code(),
        Some("unknown_command")
    );
    assert_eq!(
        c.call("fail", Value::Null, false).unwrap_err().code(),
        Some("handler_error")
    );
    // The same connection still works after all those errors.
    assert_eq!(c.call("ping", Value::Null, false).unwrap(), json!("pong"));

    drop(c);
    ctl.stop();
    assert!(!path.exists(), "socket removed on stop");
}

#[test]
fn mutation_needs_confirmation_and_is_audited() {
    let dir = tmpdir();
    let name = unique("mut");
    let audit_path = dir.path().join("audit.jsonl");
    let ctl = builder(&name, dir.path())
        .audit_log(&audit_path)
        .start()
        .unwrap();
    let counter = register_test_commands(&ctl);
    let mut c = Client::connect_path(ctl.socket_path()).unwrap();

    let err = c.call("counter.add", json!({"n": 5}), false).unwrap_err();
    assert_eq!(err.code(), Some("confirmation_required"));
    assert_eq!(counter.load(std::sync::atomic::Ordering::SeqCst), 0);

    let v = c.call("counter.add", json!({"n": 5}), true).unwrap();
    assert_eq!(v["value"], 5);
    assert_eq!(c.call("counter.get", Value::Null, false).unwrap(), json!(5));
    // Invalid arguments to a mutating command are refused and audited too.
    let err = c.call("counter.add", json!({"n": "x"}), true).unwrap_err();
    assert_eq!(err.code(), Some("invalid_args"));
    // Read-only commands are not audited.
    c.call("echo", json!({"msg": "x"}), true).unwrap();

    let text = std::fs::read_to_string(&audit_path).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert_eq!(lines[0]["cmd"], "counter.add");
    assert_eq!(lines[0]["ok"], false);
    assert_eq!(lines[0]["confirmed"], false);
    assert_eq!(lines[0]["error"]["code"], "confirmation_required");
    assert_eq!(lines[1]["ok"], true);
    assert_eq!(lines[1]["args"], json!({"n": 5}));
    assert_eq!(lines[1]["peer"]["uid"], json!(unsafe { libc::geteuid() }));
    assert_eq!(lines[1]["peer"]["pid"], json!(std::process::id()));
    assert!(lines[1]["time"].as_str().unwrap().ends_with('Z'));
    assert!(lines[1]["epoch_ms"].as_u64().unwrap() > 1_600_000_000_000);
    assert_eq!(lines[2]["error"]["code"], "invalid_args");
    let mode = std::fs::metadata(&audit_path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);

    let a = c.call("audit", json!({"n": 2}), false).unwrap();
    assert_eq!(a["path"], json!(audit_path));
    let entries = a["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[0]["ok"], true);
    assert_eq!(entries[1]["error"]["code"], "invalid_args");
    let all = c.call("audit", Value::Null, false).unwrap();
    assert_eq!(all["entries"].as_array().unwrap().len(), 3);
}

#[test]
fn registration_rules() {
    let dir = tmpdir();
    let ctl = builder(&unique("reg"), dir.path()).start().unwrap();
    let ok = |_: &Value, _: &ri_control::Peer| Ok(Value::Null);
    ctl.register(Command::new("a.b", "", ok)).unwrap();
    assert!(matches!(
        ctl.register(Command::new("a.b", "", ok)),
        Err(ri_control::ControlError::Duplicate(_))
    ));
    assert!(matches!(
        ctl.register(Command::new("ping", "", ok)),
        Err(ri_control::ControlError::Reserved(_))
    ));
    assert!(matches!(
        ctl.register(Command::new("bad name", "", ok)),
        Err(ri_control::ControlError::BadName(_))
    ));
    assert!(matches!(
        ctl.register(Command::new("s", "", ok).with_args(json!({"type": "object", "pattern": 1}))),
        Err(ri_control::ControlError::Schema { .. })
    ));
    assert!(ctl.unregister("a.b"));
    assert!(!ctl.unregister("a.b"));
    // Same name twice in one process: the second start is refused.
    let again = Control::builder(ctl.name()).socket_dir(dir.path()).start();
    assert!(matches!(
        again,
        Err(ri_control::ControlError::AlreadyRunning(_))
    ));
    assert!(
        Control::builder("no/slash")
            .socket_dir(dir.path())
            .start()
            .is_err()
    );
}

#[test]
fn default_directory_discovery_and_exit_cleanup_path() {
    // Uses the standard directories (/run/ri when root).
    let name = unique("disc");
    let ctl = Control::builder(&name).start().unwrap();
    let pid = std::process::id() as i32;
    let found = discover();
    let me = found
        .iter()
        .find(|s| s.name == name && s.pid == pid)
        .unwrap_or_else(|| panic!("{name} not in {found:?}"));
    assert!(me.alive);
    assert_eq!(me.path, ctl.socket_path());
    let dir = me.path.parent().unwrap();
    let mode = std::fs::metadata(dir).unwrap().permissions().mode();
    assert_eq!(mode & 0o077, 0, "socket dir not private: {mode:o}");

    let mut c = Client::connect_pid_name(pid, &name).unwrap();
    assert_eq!(c.call("ping", Value::Null, false).unwrap(), json!("pong"));
    drop(c);
    let path = ctl.socket_path().to_owned();
    let audit = ctl.audit_log_path().to_owned();
    drop(ctl);
    assert!(!path.exists());
    assert!(!discover().iter().any(|s| s.name == name));
    let _ = std::fs::remove_file(audit);
}

#[test]
fn stale_sockets_are_reported_dead_and_cleaned() {
    let dir = tmpdir();
    // A socket file named after a pid that cannot exist.
    let stale = dir.path().join("ghost.2147483646.sock");
    let l = std::os::unix::net::UnixListener::bind(&stale).unwrap();
    drop(l);
    let found = ri_control::paths::discover_in(&[dir.path().to_owned()]);
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].name, "ghost");
    assert!(!found[0].alive);
    // Starting a server in that directory removes dead sockets of our uid.
    let _ctl = builder(&unique("fresh"), dir.path()).start().unwrap();
    assert!(!stale.exists());
}

#[test]
fn json_lines_framing_for_socat() {
    let dir = tmpdir();
    let ctl = builder(&unique("lines"), dir.path()).start().unwrap();
    register_test_commands(&ctl);
    let mut s = UnixStream::connect(ctl.socket_path()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"{\"v\":1,\"id\":1,\"cmd\":\"ping\"}\n\n{\"v\":1,\"id\":2,\"cmd\":\"echo\",\"args\":{\"msg\":\"a\"}}\r\n{not json}\n{\"v\":1,\"id\":\"last\",\"cmd\":\"counter.get\"}")
        .unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let lines: Vec<Value> = BufReader::new(s)
        .lines()
        .map(|l| serde_json::from_str(&l.unwrap()).unwrap())
        .collect();
    assert_eq!(lines.len(), 4, "{lines:?}");
    assert_eq!(lines[0]["result"], "pong");
    assert_eq!(lines[1]["result"]["msg"], "a");
    assert_eq!(code(&lines[2]), "bad_json");
    assert_eq!(lines[3]["id"], "last");
    assert_eq!(lines[3]["result"], 0);
}

#[test]
fn protocol_errors_on_raw_frames() {
    let dir = tmpdir();
    let ctl = builder(&unique("raw"), dir.path()).start().unwrap();
    register_test_commands(&ctl);
    let mut s = raw(ctl.socket_path());
    let r = roundtrip(&mut s, &json!({"v": 2, "id": 9, "cmd": "ping"}));
    assert_eq!(code(&r), "unsupported_version");
    assert_eq!(r["id"], 9);
    let r = roundtrip(&mut s, &json!({"id": 1, "cmd": "ping"}));
    assert_eq!(code(&r), "bad_request");
    let r = roundtrip(&mut s, &json!([1, 2]));
    assert_eq!(code(&r), "bad_request");
    let r = roundtrip(
        &mut s,
        &json!({"v": 1, "id": 3, "cmd": "ping", "mutat": true}),
    );
    assert_eq!(code(&r), "bad_request");
    let r = roundtrip(
        &mut s,
        &json!({"v": 1, "id": 4, "cmd": "ping", "args": [1]}),
    );
    assert_eq!(code(&r), "bad_request");
    send_frame(&mut s, b"\xff\xfe not utf8");
    assert_eq!(code(&read_frame(&mut s)), "bad_json");
    send_frame(&mut s, b"");
    assert_eq!(code(&read_frame(&mut s)), "bad_json");
    // Pipelined requests in one write are answered in order.
    let mut both = Vec::new();
    for id in [10, 11] {
        let p = json!({"v": 1, "id": id, "cmd": "ping"}).to_string();
        both.extend_from_slice(&(p.len() as u32).to_be_bytes());
        both.extend_from_slice(p.as_bytes());
    }
    s.write_all(&both).unwrap();
    assert_eq!(read_frame(&mut s)["id"], 10);
    assert_eq!(read_frame(&mut s)["id"], 11);
    let r = roundtrip(&mut s, &json!({"v": 1, "id": 5, "cmd": "ping"}));
    assert_eq!(r, json!({"v": 1, "id": 5, "ok": true, "result": "pong"}));
}

#[test]
fn tcp_listener_requires_token() {
    let dir = tmpdir();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "s3cret-token-0123456789\n").unwrap();
    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = builder(&unique("tcp"), dir.path())
        .tcp(None, &token_file)
        .start()
        .unwrap_err();
    assert!(err.to_string().contains("group or others"), "{err}");
    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o600)).unwrap();

    let ctl = builder(&unique("tcp"), dir.path())
        .tcp(None, &token_file)
        .start()
        .unwrap();
    register_test_commands(&ctl);
    let addr = ctl.tcp_addr().expect("tcp addr");
    assert!(addr.ip().is_loopback(), "binds loopback by default: {addr}");

    let mut good = Client::connect_tcp(addr, "s3cret-token-0123456789").unwrap();
    assert_eq!(
        good.call("ping", Value::Null, false).unwrap(),
        json!("pong")
    );
    assert_eq!(
        good.call("counter.add", json!({"n": 2}), true).unwrap()["value"],
        2
    );
    let audit = good.call("audit", Value::Null, false).unwrap();
    assert_eq!(audit["entries"][0]["peer"]["transport"], "tcp");

    let mut bad = Client::connect_tcp(addr, "s3cret-token-0123456788").unwrap();
    let e = bad.call("ping", Value::Null, false).unwrap_err();
    assert_eq!(e.code(), Some("unauthorized"), "{e}");
    // The server closes the connection after a bad token.
    assert!(matches!(
        bad.call("ping", Value::Null, false),
        Err(ClientError::Closed | ClientError::Io(_))
    ));

    // No token at all (raw frame over TCP).
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    let p = json!({"v": 1, "id": 1, "cmd": "ping"}).to_string();
    s.write_all(&(p.len() as u32).to_be_bytes()).unwrap();
    s.write_all(p.as_bytes()).unwrap();
    assert_eq!(code(&read_frame(&mut s)), "unauthorized");

    // The Unix socket does not need the token.
    let mut u = Client::connect_path(ctl.socket_path()).unwrap();
    assert_eq!(u.call("ping", Value::Null, false).unwrap(), json!("pong"));
}
