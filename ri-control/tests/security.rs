//! Peer-credential checks: a process of another uid must not get in.
//!
//! The tests run as root; a forked child drops to `nobody` and connects.
//! With the normal 0600 socket in a 0700 directory the kernel already
//! refuses the connection; with the permissions opened up, SO_PEERCRED in
//! the server must refuse it with a `forbidden` error frame.

mod common;

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use common::*;
use ri_control::client::Client;
use serde_json::{Value, json};

const NOBODY: libc::uid_t = 65534;

/// What the child saw.
#[derive(Debug)]
enum ChildResult {
    /// connect(2) failed with this errno.
    ConnectFailed(i32),
    /// Bytes received before EOF.
    Received(Vec<u8>),
    /// The child could not drop privileges.
    SetuidFailed,
}

/// Forks a child that becomes `nobody`, connects to `path`, sends a ping
/// frame and returns whatever it reads. Only async-signal-safe calls run
/// in the child; everything is prepared before fork().
fn connect_as_nobody(path: &Path) -> ChildResult {
    let cpath = CString::new(path.as_os_str().as_bytes()).unwrap();
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    for (i, b) in cpath.as_bytes_with_nul().iter().enumerate() {
        addr.sun_path[i] = *b as libc::c_char;
    }
    let payload = json!({"v": 1, "id": 1, "cmd": "ping"}).to_string();
    let mut frame = (payload.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(payload.as_bytes());
    let mut pipe = [0i32; 2];
    assert_eq!(unsafe { libc::pipe(pipe.as_mut_ptr()) }, 0);
    let mut buf = vec![0u8; 4096];

    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        // Child.
        unsafe {
            libc::close(pipe[0]);
            let out = pipe[1];
            let report = |tag: u8, val: i32, data: &[u8]| {
                let mut hdr = [0u8; 5];
                hdr[0] = tag;
                hdr[1..].copy_from_slice(&val.to_be_bytes());
                libc::write(out, hdr.as_ptr().cast(), 5);
                if !data.is_empty() {
                    libc::write(out, data.as_ptr().cast(), data.len());
                }
            };
            if libc::setgroups(0, std::ptr::null()) != 0
                || libc::setgid(NOBODY) != 0
                || libc::setuid(NOBODY) != 0
            {
                report(2, 0, &[]);
                libc::_exit(0);
            }
            let fd = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0);
            let rc = libc::connect(
                fd,
                (&addr as *const libc::sockaddr_un).cast(),
                std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t,
            );
            if rc != 0 {
                report(1, *libc::__errno_location(), &[]);
                libc::_exit(0);
            }
            libc::send(fd, frame.as_ptr().cast(), frame.len(), libc::MSG_NOSIGNAL);
            let mut got = 0usize;
            loop {
                let n = libc::read(fd, buf[got..].as_mut_ptr().cast(), buf.len() - got);
                if n <= 0 {
                    break;
                }
                got += n as usize;
                if got == buf.len() {
                    break;
                }
            }
            report(0, got as i32, &buf[..got]);
            libc::_exit(0);
        }
    }
    // Parent.
    unsafe { libc::close(pipe[1]) };
    let mut out = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = unsafe { libc::read(pipe[0], chunk.as_mut_ptr().cast(), chunk.len()) };
        if n <= 0 {
            break;
        }
        out.extend_from_slice(&chunk[..n as usize]);
    }
    unsafe {
        libc::close(pipe[0]);
        let mut status = 0;
        libc::waitpid(pid, &mut status, 0);
    }
    assert!(out.len() >= 5, "child reported nothing");
    let val = i32::from_be_bytes([out[1], out[2], out[3], out[4]]);
    match out[0] {
        0 => ChildResult::Received(out[5..].to_vec()),
        1 => ChildResult::ConnectFailed(val),
        _ => ChildResult::SetuidFailed,
    }
}

#[test]
fn other_uid_is_refused() {
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: needs root to setuid to nobody");
        return;
    }
    let dir = tmpdir();
    let ctl = builder(&unique("sec"), dir.path()).start().unwrap();
    register_test_commands(&ctl);
    let path = ctl.socket_path().to_owned();

    // 1. Normal permissions: 0700 dir + 0600 socket stop nobody at connect.
    match connect_as_nobody(&path) {
        ChildResult::ConnectFailed(e) => assert_eq!(e, libc::EACCES),
        other => panic!("expected EACCES, got {other:?}"),
    }

    // 2. Open the permissions: SO_PEERCRED must still refuse.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
    match connect_as_nobody(&path) {
        ChildResult::Received(bytes) => {
            assert!(bytes.len() > 4, "no error frame: {bytes:?}");
            let len = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize;
            let resp: Value = serde_json::from_slice(&bytes[4..4 + len]).unwrap();
            assert_eq!(resp["ok"], false);
            assert_eq!(code(&resp), "forbidden", "{resp}");
            assert!(
                resp["error"]["message"].as_str().unwrap().contains("65534"),
                "{resp}"
            );
            assert_eq!(bytes.len(), 4 + len, "server sent more than the refusal");
        }
        other => panic!("expected a forbidden frame, got {other:?}"),
    }
    // Nothing was audited and the server still serves its owner.
    let mut c = Client::connect_path(&path).unwrap();
    assert_eq!(c.call("ping", Value::Null, false).unwrap(), json!("pong"));
    let audit = c.call("audit", Value::Null, false).unwrap();
    assert_eq!(audit["entries"], json!([]));
}

#[test]
fn allowed_uid_is_admitted() {
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: needs root to setuid to nobody");
        return;
    }
    let dir = tmpdir();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let ctl = builder(&unique("allow"), dir.path())
        .allow_uid(NOBODY)
        .read_timeout(std::time::Duration::from_millis(300))
        .start()
        .unwrap();
    let path = ctl.socket_path().to_owned();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
    match connect_as_nobody(&path) {
        ChildResult::Received(bytes) => {
            // The pong, then (the child keeps reading) the idle timeout.
            let len = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize;
            let resp: Value = serde_json::from_slice(&bytes[4..4 + len]).unwrap();
            assert_eq!(resp["result"], "pong", "{resp}");
            let rest = &bytes[4 + len..];
            let resp: Value = serde_json::from_slice(&rest[4..]).unwrap();
            assert_eq!(code(&resp), "timeout", "{resp}");
        }
        other => panic!("expected pong, got {other:?}"),
    }
}
