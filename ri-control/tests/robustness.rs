//! Bad input and bad clients: each gets a structured error, and the server
//! keeps serving afterwards.

mod common;

use std::io::{Read, Write};
use std::net::Shutdown;
use std::time::{Duration, Instant};

use common::*;
use ri_control::Command;
use ri_control::client::Client;
use serde_json::{Value, json};

fn still_serving(path: &std::path::Path) {
    let mut c = Client::connect_path(path).unwrap();
    assert_eq!(c.call("ping", Value::Null, false).unwrap(), json!("pong"));
    assert_eq!(
        c.call("echo", json!({"msg": "ok"}), false).unwrap()["msg"],
        "ok"
    );
}

fn vm_hwm_kb() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

#[test]
fn malformed_json_keeps_the_connection() {
    let dir = tmpdir();
    let ctl = builder(&unique("bad-json"), dir.path()).start().unwrap();
    register_test_commands(&ctl);
    let mut s = raw(ctl.socket_path());
    for junk in [
        &b"{\"v\":1,"[..],
        b"nul\0l",
        b"}{",
        b"{\"v\":1,\"cmd\":\"ping\"} trailing",
    ] {
        send_frame(&mut s, junk);
        let r = read_frame(&mut s);
        assert_eq!(code(&r), "bad_json", "{junk:?} -> {r}");
        assert_eq!(r["id"], Value::Null);
    }
    let r = roundtrip(&mut s, &json!({"v": 1, "id": 1, "cmd": "ping"}));
    assert_eq!(r["result"], "pong");
    still_serving(ctl.socket_path());
}

#[test]
fn truncated_frame_gets_an_error() {
    let dir = tmpdir();
    let ctl = builder(&unique("trunc"), dir.path()).start().unwrap();
    register_test_commands(&ctl);
    // Header promises 100 bytes; 10 arrive, then the client half-closes.
    let mut s = raw(ctl.socket_path());
    s.write_all(&100u32.to_be_bytes()).unwrap();
    s.write_all(b"{\"v\":1,\"id").unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    let r = read_frame(&mut s);
    assert_eq!(code(&r), "truncated_frame", "{r}");
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty(), "connection closed after the error");

    // Half a header, then a full close.
    let mut s = raw(ctl.socket_path());
    s.write_all(&[0, 0]).unwrap();
    drop(s);
    still_serving(ctl.socket_path());
}

#[test]
fn huge_length_prefix_is_refused_without_allocating() {
    let dir = tmpdir();
    let ctl = builder(&unique("huge"), dir.path()).start().unwrap();
    register_test_commands(&ctl);
    let before = vm_hwm_kb();
    let started = Instant::now();
    let mut s = raw(ctl.socket_path());
    s.write_all(&(100u32 << 20).to_be_bytes()).unwrap();
    // Some of the promised body follows; the server must not wait for it.
    s.write_all(&[b'x'; 4096]).unwrap();
    let r = read_frame(&mut s);
    assert_eq!(code(&r), "frame_too_large", "{r}");
    assert!(
        r["error"]["message"]
            .as_str()
            .unwrap()
            .contains("104857600"),
        "{r}"
    );
    // The server closes the connection.
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    assert!(rest.is_empty());
    assert!(started.elapsed() < Duration::from_secs(5));
    let grown = vm_hwm_kb().saturating_sub(before);
    assert!(grown < 50 * 1024, "peak RSS grew by {grown} kB");

    // The same through the JSON-lines framing: a line without newline
    // longer than the limit.
    let small = builder(&unique("huge-line"), dir.path())
        .max_frame_size(4096)
        .start()
        .unwrap();
    let mut s = raw(small.socket_path());
    s.write_all(b"{\"v\":1,\"cmd\":\"").unwrap();
    s.write_all(&[b'a'; 8192]).unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(&mut s), &mut line).unwrap();
    let r: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(code(&r), "frame_too_large", "{r}");
    still_serving(ctl.socket_path());
}

#[test]
fn slow_client_times_out() {
    let dir = tmpdir();
    let ctl = builder(&unique("slow"), dir.path())
        .read_timeout(Duration::from_millis(300))
        .start()
        .unwrap();
    register_test_commands(&ctl);
    // Sends half a frame, then stalls.
    let t = Instant::now();
    let mut s = raw(ctl.socket_path());
    s.write_all(&50u32.to_be_bytes()).unwrap();
    s.write_all(b"{\"v\"").unwrap();
    let r = read_frame(&mut s);
    assert_eq!(code(&r), "timeout", "{r}");
    let waited = t.elapsed();
    assert!(waited >= Duration::from_millis(250), "{waited:?}");
    assert!(waited < Duration::from_secs(5), "{waited:?}");
    // An idle connection is closed too.
    let mut idle = raw(ctl.socket_path());
    assert_eq!(code(&read_frame(&mut idle)), "timeout");
    still_serving(ctl.socket_path());
}

#[test]
fn connection_cap_refuses_extra_clients() {
    let dir = tmpdir();
    let ctl = builder(&unique("cap"), dir.path())
        .max_connections(3)
        .start()
        .unwrap();
    register_test_commands(&ctl);
    // Hold three connections open (each proven admitted by a ping).
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut s = raw(ctl.socket_path());
        let r = roundtrip(&mut s, &json!({"v": 1, "id": 1, "cmd": "ping"}));
        assert_eq!(r["result"], "pong");
        held.push(s);
    }
    let mut extra = raw(ctl.socket_path());
    let r = read_frame(&mut extra);
    assert_eq!(code(&r), "busy", "{r}");
    let mut c = Client::connect_path(ctl.socket_path()).unwrap();
    assert_eq!(
        c.call("ping", Value::Null, false).unwrap_err().code(),
        Some("busy")
    );
    drop(held);
    // Slots are released when clients leave.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut c = Client::connect_path(ctl.socket_path()).unwrap();
        match c.call("ping", Value::Null, false) {
            Ok(v) => {
                assert_eq!(v, json!("pong"));
                break;
            }
            Err(e) if e.code() == Some("busy") && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("{e}"),
        }
    }
}

#[test]
fn panicking_handler_becomes_an_error() {
    let dir = tmpdir();
    let ctl = builder(&unique("panic"), dir.path()).start().unwrap();
    register_test_commands(&ctl);
    ctl.register(
        Command::new("mut.boom", "Mutating and panicking", |_, _| {
            panic!("mutation went wrong")
        })
        .mutating(),
    )
    .unwrap();
    let mut c = Client::connect_path(ctl.socket_path()).unwrap();
    for _ in 0..3 {
        let e = c.call("boom", Value::Null, false).unwrap_err();
        assert_eq!(e.code(), Some("handler_panic"));
        assert!(e.to_string().contains("deliberate test panic"), "{e}");
    }
    // A panic inside a mutation is audited and does not poison the
    // mutation lock: later mutations still run.
    let e = c.call("mut.boom", Value::Null, true).unwrap_err();
    assert_eq!(e.code(), Some("handler_panic"));
    assert_eq!(
        c.call("counter.add", json!({"n": 1}), true).unwrap()["value"],
        1
    );
    let audit = c.call("audit", Value::Null, false).unwrap();
    assert_eq!(audit["entries"][0]["error"]["code"], "handler_panic");
    still_serving(ctl.socket_path());
}

#[test]
fn oversized_result_is_an_error() {
    let dir = tmpdir();
    let ctl = builder(&unique("bigres"), dir.path())
        .max_frame_size(4096)
        .start()
        .unwrap();
    ctl.register(Command::new("big", "Returns 10 kB", |_, _| {
        Ok(json!("x".repeat(10_000)))
    }))
    .unwrap();
    let mut c = Client::connect_path(ctl.socket_path()).unwrap();
    let e = c.call("big", Value::Null, false).unwrap_err();
    assert_eq!(e.code(), Some("result_too_large"));
    assert_eq!(c.call("ping", Value::Null, false).unwrap(), json!("pong"));
}

#[test]
fn stop_closes_idle_connections_promptly() {
    let dir = tmpdir();
    let ctl = builder(&unique("stop"), dir.path()).start().unwrap();
    register_test_commands(&ctl);
    let mut idle = raw(ctl.socket_path());
    let r = roundtrip(&mut idle, &json!({"v": 1, "id": 1, "cmd": "ping"}));
    assert_eq!(r["result"], "pong");
    let path = ctl.socket_path().to_owned();
    let t = Instant::now();
    ctl.stop();
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    assert!(!path.exists());
    let mut rest = Vec::new();
    let _ = idle.read_to_end(&mut rest);
    assert!(rest.is_empty());
}
