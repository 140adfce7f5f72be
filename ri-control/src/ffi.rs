//! The C API, declared in `include/ri_control.h`.
//!
//! Functions return a handle or `NULL`, or `0` / `-1`; on failure they set
//! `errno` and a message readable with [`ri_ctl_last_error`]. Nothing here
//! unwinds into C.

use std::cell::RefCell;
use std::ffi::{CStr, CString, c_char, c_int, c_void};
use std::net::SocketAddr;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};

use crate::report::ReportTarget;
use crate::schema::Schema;
use crate::server::{Command, Control, ControlError, Peer, Transport};

/// `flags` bit for [`ri_ctl_register`]: the command changes the target.
pub const RI_CTL_MUTATES: u32 = 1;
/// `ri_ctl_options.flags` bit: write a report on SIGUSR2.
pub const RI_CTL_OPT_SIGUSR2_REPORT: u32 = 1;
/// `ri_ctl_peer.transport` for the Unix socket.
pub const RI_CTL_TRANSPORT_UNIX: i32 = 1;
/// `ri_ctl_peer.transport` for TCP.
pub const RI_CTL_TRANSPORT_TCP: i32 = 2;
/// Default size of the output buffer handed to C handlers.
pub const DEFAULT_HANDLER_BUF: usize = 64 * 1024;

/// Options for [`ri_ctl_start`] (`struct ri_ctl_options`).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct RiCtlOptions {
    /// `sizeof(struct ri_ctl_options)`; set by [`ri_ctl_options_init`].
    pub struct_size: u32,
    /// `RI_CTL_OPT_*` bits.
    pub flags: u32,
    /// Socket directory, or NULL for the standard search.
    pub socket_dir: *const c_char,
    /// Audit log file, or NULL for `<socket dir>/<name>.audit.jsonl`.
    pub audit_log: *const c_char,
    /// TCP address `host:port`; NULL means `127.0.0.1:0` when TCP is on.
    pub tcp_addr: *const c_char,
    /// Token file; non-NULL turns the TCP listener on.
    pub tcp_token_file: *const c_char,
    /// Directory for SIGUSR2 reports; NULL means stderr.
    pub report_dir: *const c_char,
    /// Connection cap (0: 128).
    pub max_connections: u32,
    /// Per-request read timeout in ms (0: 30000).
    pub read_timeout_ms: u32,
    /// Frame size limit in bytes (0: 1 MiB).
    pub max_frame_size: u32,
    /// Size of the handler output buffer (0: 64 KiB).
    pub handler_buf_size: u32,
}

/// Who sent a request (`struct ri_ctl_peer`); -1 means unknown.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct RiCtlPeer {
    /// `RI_CTL_TRANSPORT_UNIX` or `RI_CTL_TRANSPORT_TCP`.
    pub transport: i32,
    /// Peer pid, or -1.
    pub pid: i32,
    /// Peer uid, or -1.
    pub uid: i64,
}

/// A command handler: `args_json` is a NUL-terminated JSON object; write a
/// NUL-terminated JSON result (or, returning non-zero, an error message)
/// into `out` (`out_cap` bytes, zeroed). Return 0 on success.
pub type RiCtlHandlerFn = unsafe extern "C" fn(
    user_data: *mut c_void,
    args_json: *const c_char,
    peer: *const RiCtlPeer,
    out: *mut c_char,
    out_cap: usize,
) -> c_int;

/// A report section: write a NUL-terminated JSON value (or plain text) into
/// `out`; return 0 on success.
pub type RiCtlReportFn =
    unsafe extern "C" fn(user_data: *mut c_void, out: *mut c_char, out_cap: usize) -> c_int;

/// The opaque handle (`struct ri_ctl`).
pub struct RiCtl {
    control: Control,
    socket_path: CString,
    handler_buf: usize,
}

/// A failure in the C API.
#[derive(Debug, thiserror::Error)]
pub enum FfiError {
    /// A required pointer was NULL.
    #[error("{0} must not be NULL")]
    Null(&'static str),
    /// A string argument is not UTF-8.
    #[error("{0} is not valid UTF-8")]
    NotUtf8(&'static str),
    /// Unknown flag bits.
    #[error("unknown flag bits {0:#x}")]
    BadFlags(u32),
    /// An option value that cannot be used.
    #[error("invalid option: {0}")]
    BadOption(String),
    /// A schema given as text is invalid.
    #[error("invalid argument schema: {0}")]
    Schema(#[from] crate::schema::SchemaError),
    /// The name is not registered.
    #[error("no such command: {0}")]
    NotFound(String),
    /// The library refused.
    #[error(transparent)]
    Control(#[from] ControlError),
    /// A bug: the library panicked.
    #[error("internal error (panic) in ri-control")]
    Panic,
}

impl FfiError {
    fn errno(&self) -> c_int {
        match self {
            FfiError::Null(_)
            | FfiError::NotUtf8(_)
            | FfiError::BadFlags(_)
            | FfiError::BadOption(_)
            | FfiError::Schema(_) => libc::EINVAL,
            FfiError::NotFound(_) => libc::ENOENT,
            FfiError::Control(e) => e.errno(),
            FfiError::Panic => libc::EIO,
        }
    }
}

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

fn set_error(e: &FfiError) {
    let msg = CString::new(e.to_string().replace('\0', " ")).unwrap_or_default();
    LAST_ERROR.with(|l| *l.borrow_mut() = msg);
    // SAFETY: writing this thread's errno.
    unsafe { *libc::__errno_location() = e.errno() };
}

/// Runs `f`, converting errors and panics into errno + last error.
fn guard<T>(fail: T, f: impl FnOnce() -> Result<T, FfiError>) -> T {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => {
            set_error(&e);
            fail
        }
        Err(_) => {
            set_error(&FfiError::Panic);
            fail
        }
    }
}

/// Reads a required C string.
///
/// # Safety
/// `p` must be NULL or a valid NUL-terminated string.
unsafe fn req_str<'a>(p: *const c_char, what: &'static str) -> Result<&'a str, FfiError> {
    if p.is_null() {
        return Err(FfiError::Null(what));
    }
    // SAFETY: non-NULL and NUL-terminated per the caller's contract.
    unsafe { CStr::from_ptr(p) }
        .to_str()
        .map_err(|_| FfiError::NotUtf8(what))
}

/// Reads an optional C string.
///
/// # Safety
/// As [`req_str`].
unsafe fn opt_str<'a>(p: *const c_char, what: &'static str) -> Result<Option<&'a str>, FfiError> {
    if p.is_null() {
        Ok(None)
    } else {
        // SAFETY: forwarded contract.
        unsafe { req_str(p, what) }.map(Some)
    }
}

/// Converts the handle pointer.
///
/// # Safety
/// `h` must be NULL or a live handle from [`ri_ctl_start`].
unsafe fn handle<'a>(h: *mut RiCtl) -> Result<&'a RiCtl, FfiError> {
    // SAFETY: per the caller's contract.
    unsafe { h.as_ref() }.ok_or(FfiError::Null("handle"))
}

struct UserData(*mut c_void);
// SAFETY: the C caller promises (see the header) that user_data may be used
// from the library's threads.
unsafe impl Send for UserData {}
// SAFETY: as above.
unsafe impl Sync for UserData {}

fn c_peer(p: &Peer) -> RiCtlPeer {
    RiCtlPeer {
        transport: match p.transport {
            Transport::Unix => RI_CTL_TRANSPORT_UNIX,
            Transport::Tcp(_) => RI_CTL_TRANSPORT_TCP,
        },
        pid: p.pid.unwrap_or(-1),
        uid: p.uid.map(i64::from).unwrap_or(-1),
    }
}

/// Reads a handler's NUL-terminated output.
fn output(buf: &[u8]) -> Result<&str, String> {
    let n = buf
        .iter()
        .position(|&b| b == 0)
        .ok_or("handler output is not NUL-terminated within the buffer (too long?)")?;
    std::str::from_utf8(&buf[..n]).map_err(|_| "handler output is not valid UTF-8".to_owned())
}

fn call_handler(
    f: RiCtlHandlerFn,
    ud: &UserData,
    cap: usize,
    args: &Value,
    peer: &Peer,
) -> Result<Value, String> {
    let args = CString::new(args.to_string()).map_err(|_| "arguments contain NUL".to_owned())?;
    let peer = c_peer(peer);
    let mut buf = vec![0u8; cap];
    // SAFETY: every pointer is valid for the duration of the call and the
    // buffer holds `cap` bytes; the handler's contract is in the header.
    let rc = unsafe { f(ud.0, args.as_ptr(), &peer, buf.as_mut_ptr().cast(), cap) };
    let text = output(&buf)?;
    if rc != 0 {
        return Err(if text.is_empty() {
            format!("handler failed with code {rc}")
        } else {
            text.to_owned()
        });
    }
    if text.trim().is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_str(text).map_err(|e| format!("handler returned invalid JSON: {e}"))
}

fn call_section(f: RiCtlReportFn, ud: &UserData, cap: usize) -> Value {
    let mut buf = vec![0u8; cap];
    // SAFETY: as in call_handler.
    let rc = unsafe { f(ud.0, buf.as_mut_ptr().cast(), cap) };
    match output(&buf) {
        Err(e) => json!({ "error": e }),
        Ok(text) if rc != 0 => json!({ "error": text, "code": rc }),
        Ok(text) => serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_owned())),
    }
}

/// Fills `opts` with defaults (all zero/NULL) and sets `struct_size`.
///
/// # Safety
/// `opts` must be NULL or point to writable memory for the struct.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ri_ctl_options_init(opts: *mut RiCtlOptions) {
    if opts.is_null() {
        return;
    }
    let v = RiCtlOptions {
        struct_size: std::mem::size_of::<RiCtlOptions>() as u32,
        flags: 0,
        socket_dir: std::ptr::null(),
        audit_log: std::ptr::null(),
        tcp_addr: std::ptr::null(),
        tcp_token_file: std::ptr::null(),
        report_dir: std::ptr::null(),
        max_connections: 0,
        read_timeout_ms: 0,
        max_frame_size: 0,
        handler_buf_size: 0,
    };
    // SAFETY: non-NULL and writable per the contract.
    unsafe { opts.write(v) };
}

/// Starts the control server for target `name`; NULL `opts` means defaults.
/// Returns NULL and sets errno on failure.
///
/// # Safety
/// `name` must be a NUL-terminated string; `opts` NULL or a struct filled
/// by [`ri_ctl_options_init`] whose strings are NUL-terminated.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ri_ctl_start(
    name: *const c_char,
    opts: *const RiCtlOptions,
) -> *mut RiCtl {
    guard(std::ptr::null_mut(), || {
        // SAFETY: forwarded contract.
        let name = unsafe { req_str(name, "name") }?;
        let mut b = Control::builder(name);
        let mut handler_buf = DEFAULT_HANDLER_BUF;
        // SAFETY: forwarded contract.
        if let Some(o) = unsafe { opts.as_ref() } {
            if (o.struct_size as usize) < std::mem::size_of::<RiCtlOptions>() {
                return Err(FfiError::BadOption(
                    "struct_size is too small; call ri_ctl_options_init first".into(),
                ));
            }
            if o.flags & !RI_CTL_OPT_SIGUSR2_REPORT != 0 {
                return Err(FfiError::BadFlags(o.flags));
            }
            // SAFETY (all opt_str calls): forwarded contract.
            if let Some(d) = unsafe { opt_str(o.socket_dir, "socket_dir") }? {
                b = b.socket_dir(d);
            }
            if let Some(p) = unsafe { opt_str(o.audit_log, "audit_log") }? {
                b = b.audit_log(p);
            }
            if let Some(tok) = unsafe { opt_str(o.tcp_token_file, "tcp_token_file") }? {
                let addr = match unsafe { opt_str(o.tcp_addr, "tcp_addr") }? {
                    Some(a) => Some(
                        a.parse::<SocketAddr>()
                            .map_err(|e| FfiError::BadOption(format!("tcp_addr {a:?}: {e}")))?,
                    ),
                    None => None,
                };
                b = b.tcp(addr, tok);
            } else if !o.tcp_addr.is_null() {
                return Err(FfiError::BadOption("tcp_addr needs tcp_token_file".into()));
            }
            if o.flags & RI_CTL_OPT_SIGUSR2_REPORT != 0 {
                let target = match unsafe { opt_str(o.report_dir, "report_dir") }? {
                    Some(d) => ReportTarget::Dir(PathBuf::from(d)),
                    None => ReportTarget::Stderr,
                };
                b = b.sigusr2_report(target);
            }
            if o.max_connections != 0 {
                b = b.max_connections(o.max_connections as usize);
            }
            if o.read_timeout_ms != 0 {
                b = b.read_timeout(Duration::from_millis(u64::from(o.read_timeout_ms)));
            }
            if o.max_frame_size != 0 {
                b = b.max_frame_size(o.max_frame_size as usize);
            }
            if o.handler_buf_size != 0 {
                handler_buf = o.handler_buf_size as usize;
            }
        }
        let control = b.start()?;
        let socket_path =
            CString::new(control.socket_path().as_os_str().as_encoded_bytes()).unwrap_or_default();
        Ok(Box::into_raw(Box::new(RiCtl {
            control,
            socket_path,
            handler_buf,
        })))
    })
}

/// Registers a command. `args_schema_json` may be NULL (no arguments);
/// `flags` may contain `RI_CTL_MUTATES`. Returns 0, or -1 with errno
/// (EEXIST: name taken; EINVAL: bad name, schema or flags).
///
/// # Safety
/// `h` is a live handle; strings are NUL-terminated (help may be NULL);
/// `handler` and `user_data` stay valid until the command is unregistered
/// or the handle stopped, and may be called from other threads.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ri_ctl_register(
    h: *mut RiCtl,
    name: *const c_char,
    help: *const c_char,
    args_schema_json: *const c_char,
    flags: u32,
    handler: Option<RiCtlHandlerFn>,
    user_data: *mut c_void,
) -> c_int {
    guard(-1, || {
        // SAFETY (all): forwarded contract.
        let h = unsafe { handle(h) }?;
        let name = unsafe { req_str(name, "name") }?;
        let help = unsafe { opt_str(help, "help") }?.unwrap_or("");
        let schema = match unsafe { opt_str(args_schema_json, "args_schema_json") }? {
            Some(text) => Schema::parse_str(text)?.as_json().clone(),
            None => Value::Null,
        };
        if flags & !RI_CTL_MUTATES != 0 {
            return Err(FfiError::BadFlags(flags));
        }
        let f = handler.ok_or(FfiError::Null("handler"))?;
        let ud = UserData(user_data);
        let cap = h.handler_buf;
        let mut cmd = Command::new(name, help, move |args, peer| {
            call_handler(f, &ud, cap, args, peer)
        })
        .with_args(schema);
        if flags & RI_CTL_MUTATES != 0 {
            cmd = cmd.mutating();
        }
        h.control.register(cmd)?;
        Ok(0)
    })
}

/// Removes a command. Returns 0, or -1 with errno ENOENT.
///
/// # Safety
/// `h` is a live handle and `name` a NUL-terminated string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ri_ctl_unregister(h: *mut RiCtl, name: *const c_char) -> c_int {
    guard(-1, || {
        // SAFETY (all): forwarded contract.
        let h = unsafe { handle(h) }?;
        let name = unsafe { req_str(name, "name") }?;
        if h.control.unregister(name) {
            Ok(0)
        } else {
            Err(FfiError::NotFound(name.to_owned()))
        }
    })
}

/// Registers a report section. Returns 0, or -1 with errno.
///
/// # Safety
/// As [`ri_ctl_register`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ri_ctl_register_report_section(
    h: *mut RiCtl,
    name: *const c_char,
    section: Option<RiCtlReportFn>,
    user_data: *mut c_void,
) -> c_int {
    guard(-1, || {
        // SAFETY (all): forwarded contract.
        let h = unsafe { handle(h) }?;
        let name = unsafe { req_str(name, "name") }?;
        let f = section.ok_or(FfiError::Null("fn"))?;
        let ud = UserData(user_data);
        let cap = h.handler_buf;
        h.control
            .report_section(name, move || call_section(f, &ud, cap))?;
        Ok(0)
    })
}

/// The socket path (valid until [`ri_ctl_stop`]), or NULL for a NULL handle.
///
/// # Safety
/// `h` is NULL or a live handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ri_ctl_socket_path(h: *const RiCtl) -> *const c_char {
    // SAFETY: per the contract.
    match unsafe { h.as_ref() } {
        Some(h) => h.socket_path.as_ptr(),
        None => std::ptr::null(),
    }
}

/// The bound TCP port, or 0 when TCP is off.
///
/// # Safety
/// `h` is NULL or a live handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ri_ctl_tcp_port(h: *const RiCtl) -> c_int {
    // SAFETY: per the contract.
    match unsafe { h.as_ref() }.and_then(|h| h.control.tcp_addr()) {
        Some(a) => c_int::from(a.port()),
        None => 0,
    }
}

/// Writes a report now (to the SIGUSR2 target, else stderr). Returns 0, or
/// -1 with errno.
///
/// # Safety
/// `h` is a live handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ri_ctl_write_report(h: *mut RiCtl) -> c_int {
    guard(-1, || {
        // SAFETY: forwarded contract.
        let h = unsafe { handle(h) }?;
        h.control.write_report()?;
        Ok(0)
    })
}

/// Stops the server, removes the socket and frees the handle. Waits for
/// running handlers. NULL is ignored.
///
/// # Safety
/// `h` is NULL or a live handle, not used afterwards.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ri_ctl_stop(h: *mut RiCtl) {
    if h.is_null() {
        return;
    }
    // SAFETY: the handle came from Box::into_raw in ri_ctl_start.
    let h = unsafe { Box::from_raw(h) };
    let _ = catch_unwind(AssertUnwindSafe(move || h.control.stop()));
}

/// The message of this thread's last failed call ("" if none).
#[unsafe(no_mangle)]
pub extern "C" fn ri_ctl_last_error() -> *const c_char {
    // The CString lives in thread-local storage until the next failure on
    // this thread, so the pointer stays valid until then.
    LAST_ERROR.with(|l| l.borrow().as_ptr())
}

/// The library version as a static string.
#[unsafe(no_mangle)]
pub extern "C" fn ri_ctl_version() -> *const c_char {
    static V: &CStr =
        match CStr::from_bytes_with_nul(concat!(env!("CARGO_PKG_VERSION"), "\0").as_bytes()) {
            Ok(c) => c,
            Err(_) => c"unknown",
        };
    V.as_ptr()
}
