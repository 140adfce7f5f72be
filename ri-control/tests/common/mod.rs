//! Helpers shared by the integration tests: a server with a few test
//! commands, raw-socket framing, unique names.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::time::Duration;

use ri_control::{Command, Control, ControlBuilder};
use serde_json::{Value, json};

/// A name unique within this test process.
pub fn unique(prefix: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!("{prefix}-{}", N.fetch_add(1, Ordering::Relaxed))
}

/// A fresh 0700 temporary directory.
pub fn tmpdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("ri-control-test-")
        .tempdir()
        .expect("tempdir")
}

/// A builder for `name` with its socket in `dir`.
pub fn builder(name: &str, dir: &Path) -> ControlBuilder {
    Control::builder(name).socket_dir(dir)
}

/// Registers the standard test commands and returns the shared counter.
pub fn register_test_commands(ctl: &Control) -> Arc<AtomicI64> {
    let counter = Arc::new(AtomicI64::new(0));
    ctl.register(
        Command::new("echo", "Echo msg back", |args, peer| {
            Ok(json!({"msg": args["msg"], "peer_uid": peer.uid}))
        })
        .with_args(json!({
            "type": "object",
            "properties": {
                "msg": {"type": "string"},
                "times": {"type": "integer", "minimum": 1, "default": 1}
            },
            "required": ["msg"]
        })),
    )
    .expect("register echo");
    let c = Arc::clone(&counter);
    ctl.register(
        Command::new("counter.add", "Add n to the counter", move |args, _| {
            let n = args["n"].as_i64().ok_or("n must be an integer")?;
            Ok(json!({"value": c.fetch_add(n, Ordering::SeqCst) + n}))
        })
        .with_args(json!({
            "type": "object",
            "properties": {"n": {"type": "integer"}},
            "required": ["n"]
        }))
        .mutating(),
    )
    .expect("register counter.add");
    let c = Arc::clone(&counter);
    ctl.register(Command::new(
        "counter.get",
        "Read the counter",
        move |_, _| Ok(json!(c.load(Ordering::SeqCst))),
    ))
    .expect("register counter.get");
    ctl.register(Command::new("boom", "Panics", |_, _| {
        panic!("deliberate test panic")
    }))
    .expect("register boom");
    ctl.register(Command::new("fail", "Returns an error", |_, _| {
        Err("it failed on purpose".to_owned())
    }))
    .expect("register fail");
    ctl.register(
        Command::new("sleep", "Sleeps ms milliseconds", |args, _| {
            let ms = args["ms"].as_u64().unwrap_or(0);
            std::thread::sleep(Duration::from_millis(ms));
            Ok(json!(ms))
        })
        .with_args(json!({
            "type": "object",
            "properties": {"ms": {"type": "integer", "minimum": 0, "maximum": 10000}},
            "required": ["ms"]
        })),
    )
    .expect("register sleep");
    counter
}

/// Connects a raw Unix stream with a 10 s timeout.
pub fn raw(path: &Path) -> UnixStream {
    let s = UnixStream::connect(path).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).ok();
    s.set_write_timeout(Some(Duration::from_secs(10))).ok();
    s
}

/// Writes one length-prefixed frame.
pub fn send_frame(s: &mut UnixStream, payload: &[u8]) {
    let mut f = (payload.len() as u32).to_be_bytes().to_vec();
    f.extend_from_slice(payload);
    s.write_all(&f).expect("write frame");
}

/// Reads one length-prefixed frame as JSON.
pub fn read_frame(s: &mut impl Read) -> Value {
    let mut h = [0u8; 4];
    s.read_exact(&mut h).expect("read header");
    let len = u32::from_be_bytes(h) as usize;
    assert!(len < 16 << 20, "absurd response length {len}");
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).expect("read body");
    serde_json::from_slice(&body).expect("response is JSON")
}

/// One request/response over a raw stream.
pub fn roundtrip(s: &mut UnixStream, req: &Value) -> Value {
    send_frame(s, req.to_string().as_bytes());
    read_frame(s)
}

/// The error code of a response, or "" when it succeeded.
pub fn code(resp: &Value) -> &str {
    resp["error"]["code"].as_str().unwrap_or("")
}
