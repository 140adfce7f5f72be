//! The C API: the C example target compiled with gcc against the static
//! library, driven over its socket; and the same functions called
//! in-process through their Rust declarations.

mod common;

use std::ffi::{CStr, CString, c_char, c_int, c_void};
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use ri_control::client::Client;
use ri_control::ffi::*;
use serde_json::{Value, json};

/// The directory cargo put this crate's artifacts in (`<target>/<profile>`).
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // <target>/<profile>/deps/c_abi-<hash>
    exe.parent().unwrap().parent().unwrap().to_owned()
}

fn staticlib() -> PathBuf {
    // `cargo test` rebuilds deps/libri_control.a with the rlib; `cargo
    // build` also copies it up one level. Take the newest.
    let dir = profile_dir();
    let newest = [
        dir.join("deps/libri_control.a"),
        dir.join("libri_control.a"),
    ]
    .into_iter()
    .filter_map(|p| Some((std::fs::metadata(&p).ok()?.modified().ok()?, p)))
    .max();
    if let Some((_, p)) = newest {
        return p;
    }
    panic!(
        "libri_control.a not found under {}; run `cargo build -p ri-control` first",
        dir.display()
    );
}

fn build_c_target(out: &Path) -> PathBuf {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let exe = out.join("c_target");
    let status = Command::new("gcc")
        .args(["-std=c11", "-Wall", "-Wextra", "-Werror", "-I"])
        .arg(crate_dir.join("include"))
        .arg(crate_dir.join("examples/c_target.c"))
        .arg(staticlib())
        .args([
            "-lgcc_s",
            "-lutil",
            "-lrt",
            "-lpthread",
            "-lm",
            "-ldl",
            "-lc",
            "-o",
        ])
        .arg(&exe)
        .status()
        .expect("run gcc");
    assert!(status.success(), "gcc failed");
    exe
}

fn wait_for_file(dir: &Path, timeout: Duration) -> Option<PathBuf> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        // The directory itself appears with the first report.
        if let Some(e) = std::fs::read_dir(dir).ok().and_then(|mut d| d.next()?.ok()) {
            // Give the writer a moment to finish.
            std::thread::sleep(Duration::from_millis(50));
            return Some(e.path());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

#[test]
fn c_example_builds_and_serves() {
    let work = tmpdir();
    let exe = build_c_target(work.path());
    let reports = work.path().join("reports");
    let name = format!("c_target-{}", std::process::id());
    let mut child = Command::new(&exe)
        .args(["--name", &name, "--report-dir"])
        .arg(&reports)
        .arg("--audit-log")
        .arg(work.path().join("audit.jsonl"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id() as i32;
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    let socket = PathBuf::from(line.trim());
    assert!(socket.ends_with(format!("{name}.{pid}.sock")), "{line}");

    // Found by pid through discover(), in the standard directories.
    let info = ri_control::discover()
        .into_iter()
        .find(|s| s.pid == pid)
        .expect("discovered");
    assert!(info.alive);
    assert_eq!(info.name, name);
    let mut c = Client::connect_pid(pid).unwrap();

    assert_eq!(
        c.call("counter.get", Value::Null, false).unwrap()["value"],
        0
    );
    assert_eq!(
        c.call("counter.add", json!({"n": 5}), false)
            .unwrap_err()
            .code(),
        Some("confirmation_required")
    );
    let v = c.call("counter.add", json!({"n": 5}), true).unwrap();
    assert_eq!(v, json!({"value": 5, "by_uid": unsafe { libc::geteuid() }}));
    let e = c.call("counter.add", json!({"n": 0}), true).unwrap_err();
    assert_eq!(e.code(), Some("handler_error"));
    assert!(e.to_string().contains("refusing to add zero"));
    assert_eq!(
        c.call("counter.add", json!({"n": "x"}), true)
            .unwrap_err()
            .code(),
        Some("invalid_args")
    );
    let cmds = c.list().unwrap();
    let add = cmds.iter().find(|c| c.name == "counter.add").unwrap();
    assert!(add.mutates);
    assert_eq!(add.args["required"], json!(["n"]));
    let r = c.call("report", Value::Null, false).unwrap();
    assert_eq!(r["counter"]["value"], 5);
    assert_eq!(r["counter"]["label"], "demo");
    let audit = c.call("audit", Value::Null, false).unwrap();
    // Unconfirmed, ok, handler error, invalid args: all four audited.
    assert_eq!(audit["entries"].as_array().unwrap().len(), 4);
    assert_eq!(audit["path"], json!(work.path().join("audit.jsonl")));

    // SIGUSR2: a report file appears; the target keeps running.
    let ticks_before = r["counter"]["ticks"].as_i64().unwrap();
    assert_eq!(unsafe { libc::kill(pid, libc::SIGUSR2) }, 0);
    let file = wait_for_file(&reports, Duration::from_secs(10)).expect("report written");
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.contains(&format!("pid:      {pid}")), "{text}");
    assert!(text.contains("----- counter -----"), "{text}");
    assert!(text.contains("\"ticks\""), "{text}");
    std::thread::sleep(Duration::from_millis(50));
    let r = c.call("report", Value::Null, false).unwrap();
    assert!(r["counter"]["ticks"].as_i64().unwrap() > ticks_before);

    // EOF on stdin: the target calls ri_ctl_stop and exits; socket gone.
    drop(c);
    drop(child.stdin.take());
    let status = child.wait().unwrap();
    assert!(status.success());
    let mut rest = String::new();
    out.read_to_string(&mut rest).unwrap();
    assert_eq!(rest.trim(), "stopped counter=5");
    assert!(!socket.exists());
    let lines = std::fs::read_to_string(work.path().join("audit.jsonl")).unwrap();
    assert_eq!(lines.lines().count(), 4);
}

#[test]
fn c_example_socket_removed_at_exit_without_stop() {
    let work = tmpdir();
    let exe = build_c_target(work.path());
    let sockets = work.path().join("sockets");
    let mut child = Command::new(&exe)
        .args(["--name", "exiter", "--socket-dir"])
        .arg(&sockets)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    let socket = PathBuf::from(line.trim());
    assert!(socket.starts_with(&sockets));
    let mut c = Client::connect_path(&socket).unwrap();
    assert_eq!(c.call("ping", Value::Null, false).unwrap(), json!("pong"));
    // exit(3) without ri_ctl_stop: the atexit hook removes the socket.
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), b"exit\n").unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(3));
    assert!(!socket.exists(), "socket left behind");
    // Its audit log stays.
    assert!(sockets.join("exiter.audit.jsonl").exists());
}

// ---- In-process use of the C ABI ----

unsafe extern "C" fn add_handler(
    user_data: *mut c_void,
    args_json: *const c_char,
    peer: *const RiCtlPeer,
    out: *mut c_char,
    out_cap: usize,
) -> c_int {
    let total = unsafe { &*(user_data as *const std::sync::atomic::AtomicI64) };
    let args: Value =
        serde_json::from_str(unsafe { CStr::from_ptr(args_json) }.to_str().unwrap()).unwrap();
    let n = args["n"].as_i64().unwrap();
    let v = total.fetch_add(n, std::sync::atomic::Ordering::SeqCst) + n;
    let peer = unsafe { &*peer };
    let text = format!(
        "{{\"value\":{v},\"transport\":{},\"pid\":{}}}\0",
        peer.transport, peer.pid
    );
    assert!(text.len() <= out_cap);
    unsafe { std::ptr::copy_nonoverlapping(text.as_ptr(), out.cast(), text.len()) };
    0
}

unsafe extern "C" fn overflow_handler(
    _: *mut c_void,
    _: *const c_char,
    _: *const RiCtlPeer,
    out: *mut c_char,
    out_cap: usize,
) -> c_int {
    // Fills the whole buffer without a terminating NUL.
    unsafe { std::ptr::write_bytes(out, b'x', out_cap) };
    0
}

unsafe extern "C" fn not_json_handler(
    _: *mut c_void,
    _: *const c_char,
    _: *const RiCtlPeer,
    out: *mut c_char,
    _: usize,
) -> c_int {
    let t = b"this is not json\0";
    unsafe { std::ptr::copy_nonoverlapping(t.as_ptr(), out.cast(), t.len()) };
    0
}

unsafe extern "C" fn text_section(_: *mut c_void, out: *mut c_char, _: usize) -> c_int {
    let t = b"plain text section\0";
    unsafe { std::ptr::copy_nonoverlapping(t.as_ptr(), out.cast(), t.len()) };
    0
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

fn last_error() -> String {
    unsafe { CStr::from_ptr(ri_ctl_last_error()) }
        .to_string_lossy()
        .into_owned()
}

#[test]
fn c_abi_in_process() {
    let dir = tmpdir();
    let cdir = CString::new(dir.path().to_str().unwrap()).unwrap();
    let mut opts = std::mem::MaybeUninit::<RiCtlOptions>::uninit();
    unsafe { ri_ctl_options_init(opts.as_mut_ptr()) };
    let mut opts = unsafe { opts.assume_init() };
    assert_eq!(
        opts.struct_size as usize,
        std::mem::size_of::<RiCtlOptions>()
    );
    opts.socket_dir = cdir.as_ptr();
    opts.handler_buf_size = 256;

    // Bad input is refused with errno and a message, never a crash.
    assert!(unsafe { ri_ctl_start(std::ptr::null(), &opts) }.is_null());
    assert_eq!(errno(), libc::EINVAL);
    assert!(last_error().contains("name"), "{}", last_error());
    assert!(unsafe { ri_ctl_start(c"bad/name".as_ptr(), &opts) }.is_null());
    assert_eq!(errno(), libc::EINVAL);
    let mut bad_opts = opts;
    bad_opts.struct_size = 4;
    assert!(unsafe { ri_ctl_start(c"x".as_ptr(), &bad_opts) }.is_null());
    assert_eq!(errno(), libc::EINVAL);
    let mut bad_opts = opts;
    bad_opts.flags = 0x80;
    assert!(unsafe { ri_ctl_start(c"x".as_ptr(), &bad_opts) }.is_null());

    let name = CString::new(unique("cabi")).unwrap();
    let h = unsafe { ri_ctl_start(name.as_ptr(), &opts) };
    assert!(!h.is_null(), "{}", last_error());
    let path = PathBuf::from(
        unsafe { CStr::from_ptr(ri_ctl_socket_path(h)) }
            .to_str()
            .unwrap(),
    );
    assert!(path.exists());
    assert_eq!(unsafe { ri_ctl_tcp_port(h) }, 0);
    assert_eq!(
        unsafe { CStr::from_ptr(ri_ctl_version()) }
            .to_str()
            .unwrap(),
        ri_control::VERSION
    );

    let total = Box::new(std::sync::atomic::AtomicI64::new(0));
    let ud = &*total as *const _ as *mut c_void;
    let schema =
        c"{\"type\":\"object\",\"properties\":{\"n\":{\"type\":\"integer\"}},\"required\":[\"n\"]}";
    let rc = unsafe {
        ri_ctl_register(
            h,
            c"add".as_ptr(),
            c"Add n".as_ptr(),
            schema.as_ptr(),
            RI_CTL_MUTATES,
            Some(add_handler),
            ud,
        )
    };
    assert_eq!(rc, 0, "{}", last_error());
    let reg = |name: &CStr, schema: *const c_char, flags: u32, f: Option<RiCtlHandlerFn>| unsafe {
        ri_ctl_register(
            h,
            name.as_ptr(),
            std::ptr::null(),
            schema,
            flags,
            f,
            std::ptr::null_mut(),
        )
    };
    assert_eq!(reg(c"add", std::ptr::null(), 0, Some(add_handler)), -1);
    assert_eq!(errno(), libc::EEXIST);
    assert_eq!(reg(c"s", c"{\"type\":".as_ptr(), 0, Some(add_handler)), -1);
    assert_eq!(errno(), libc::EINVAL);
    assert_eq!(reg(c"f", std::ptr::null(), 0x10, Some(add_handler)), -1);
    assert_eq!(errno(), libc::EINVAL);
    assert_eq!(reg(c"n", std::ptr::null(), 0, None), -1);
    assert_eq!(errno(), libc::EINVAL);
    assert_eq!(
        reg(c"overflow", std::ptr::null(), 0, Some(overflow_handler)),
        0
    );
    assert_eq!(
        reg(c"notjson", std::ptr::null(), 0, Some(not_json_handler)),
        0
    );
    assert_eq!(
        unsafe {
            ri_ctl_register_report_section(
                h,
                c"text".as_ptr(),
                Some(text_section),
                std::ptr::null_mut(),
            )
        },
        0
    );

    let mut c = Client::connect_path(&path).unwrap();
    assert_eq!(
        c.call("add", json!({"n": 2}), false).unwrap_err().code(),
        Some("confirmation_required")
    );
    let v = c.call("add", json!({"n": 2}), true).unwrap();
    assert_eq!(v["value"], 2);
    assert_eq!(v["transport"], RI_CTL_TRANSPORT_UNIX);
    assert_eq!(v["pid"], json!(std::process::id()));
    let e = c.call("overflow", Value::Null, false).unwrap_err();
    assert_eq!(e.code(), Some("handler_error"));
    assert!(e.to_string().contains("NUL"), "{e}");
    let e = c.call("notjson", Value::Null, false).unwrap_err();
    assert!(e.to_string().contains("invalid JSON"), "{e}");
    let r = c.call("report", Value::Null, false).unwrap();
    assert_eq!(r["text"], "plain text section");

    assert_eq!(unsafe { ri_ctl_unregister(h, c"overflow".as_ptr()) }, 0);
    assert_eq!(unsafe { ri_ctl_unregister(h, c"overflow".as_ptr()) }, -1);
    assert_eq!(errno(), libc::ENOENT);
    assert_eq!(
        c.call("overflow", Value::Null, false).unwrap_err().code(),
        Some("unknown_command")
    );
    drop(c);

    unsafe { ri_ctl_stop(h) };
    unsafe { ri_ctl_stop(std::ptr::null_mut()) };
    assert!(!path.exists());
    drop(total);
}
