//! The control server: [`Control`], its builder, command dispatch and the
//! per-connection loop.
//!
//! Threads: one server thread polls the listeners and a wake pipe; each
//! accepted connection gets its own thread, up to a cap. Handlers run on
//! connection threads, never on the target's; mutating handlers are
//! serialized by one lock, read-only ones run concurrently.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, Once, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use serde_json::{Map, Value, json};

use crate::audit::{self, AuditEntry, AuditError, AuditLog, AuditPeer};
use crate::paths::{self, PathError};
use crate::protocol::{
    self, CommandInfo, ErrorCode, FrameError, Framing, PROTOCOL_VERSION, Response, WireError,
};
use crate::report::{self, ReportError, ReportFn, ReportHeader, ReportTarget};
use crate::schema::{Schema, SchemaError};
use crate::signal::{self, SignalError, SignalGuard};
use crate::sys::{self, Conn, ReadOutcome};
use crate::{lock, read, time, write};

/// Default cap on concurrent connections.
pub const DEFAULT_MAX_CONNECTIONS: usize = 128;
/// Default time a connection may take to deliver one complete request.
pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Bytes read from a socket at a time.
const CHUNK: usize = 64 * 1024;
/// Shortest accepted TCP token.
pub const MIN_TOKEN_LEN: usize = 16;

/// A command handler: gets the validated arguments (a JSON object, with
/// defaults filled in) and the peer; returns a result or an error message.
pub type Handler = Box<dyn Fn(&Value, &Peer) -> Result<Value, String> + Send + Sync>;

/// How a peer reached the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transport {
    /// The Unix control socket.
    Unix,
    /// The optional TCP listener.
    Tcp(SocketAddr),
}

/// The sender of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// How it connected.
    pub transport: Transport,
    /// Its uid (Unix socket only, from `SO_PEERCRED`).
    pub uid: Option<u32>,
    /// Its gid (Unix socket only).
    pub gid: Option<u32>,
    /// Its pid (Unix socket only).
    pub pid: Option<i32>,
}

impl Peer {
    fn audit(&self) -> AuditPeer {
        match &self.transport {
            Transport::Unix => AuditPeer {
                transport: "unix".into(),
                uid: self.uid,
                pid: self.pid,
                addr: None,
                ssh: self.pid.and_then(audit::SshOrigin::of_pid),
            },
            Transport::Tcp(a) => AuditPeer {
                transport: "tcp".into(),
                uid: None,
                pid: None,
                addr: Some(a.to_string()),
                ssh: None,
            },
        }
    }
}

/// A command to register.
pub struct Command {
    /// Name, 1-64 characters from `[A-Za-z0-9_.:-]`.
    pub name: String,
    /// One-line help.
    pub help: String,
    /// Argument schema (see [`crate::schema`]); `Value::Null` for none.
    pub args: Value,
    /// Whether the command changes the target.
    pub mutates: bool,
    /// The code to run.
    pub handler: Handler,
}

impl Command {
    /// A read-only command without arguments.
    pub fn new(
        name: impl Into<String>,
        help: impl Into<String>,
        handler: impl Fn(&Value, &Peer) -> Result<Value, String> + Send + Sync + 'static,
    ) -> Self {
        Command {
            name: name.into(),
            help: help.into(),
            args: Value::Null,
            mutates: false,
            handler: Box::new(handler),
        }
    }

    /// Sets the argument schema.
    pub fn with_args(mut self, schema: Value) -> Self {
        self.args = schema;
        self
    }

    /// Marks the command as mutating.
    pub fn mutating(mut self) -> Self {
        self.mutates = true;
        self
    }
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Command")
            .field("name", &self.name)
            .field("help", &self.help)
            .field("args", &self.args)
            .field("mutates", &self.mutates)
            .finish_non_exhaustive()
    }
}

/// Why the server could not start, or a registration failed.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// Bad name or socket directory.
    #[error(transparent)]
    Path(#[from] PathError),
    /// The audit log cannot be opened.
    #[error(transparent)]
    Audit(#[from] AuditError),
    /// SIGUSR2 reporting cannot be enabled.
    #[error(transparent)]
    Signal(#[from] SignalError),
    /// A report could not be written.
    #[error(transparent)]
    Report(#[from] ReportError),
    /// A command's argument schema is invalid.
    #[error("invalid argument schema for {name:?}: {source}")]
    Schema {
        /// The command.
        name: String,
        /// What is wrong.
        source: SchemaError,
    },
    /// A command or section name with forbidden characters.
    #[error("invalid name {0:?}: use 1-64 characters from [A-Za-z0-9_.:-]")]
    BadName(String),
    /// The name is taken.
    #[error("{0:?} is already registered")]
    Duplicate(String),
    /// The name belongs to a built-in command.
    #[error("{0:?} is a built-in command")]
    Reserved(String),
    /// A live server already listens on this path.
    #[error("a control server is already listening on {0}")]
    AlreadyRunning(PathBuf),
    /// Binding a listener failed.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The path or address.
        addr: String,
        /// The error.
        source: io::Error,
    },
    /// The TCP token file is unusable.
    #[error("token file {path}: {reason}")]
    Token {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// An option value out of range.
    #[error("invalid option: {0}")]
    BadOption(String),
    /// Another system call failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The error.
        source: io::Error,
    },
}

impl ControlError {
    /// The closest `errno` value, for the C API.
    pub fn errno(&self) -> i32 {
        let from_io = |e: &io::Error| e.raw_os_error().unwrap_or(libc::EIO);
        match self {
            ControlError::Path(PathError::Io { source, .. }) => from_io(source),
            ControlError::Path(PathError::TooLong(_)) => libc::ENAMETOOLONG,
            ControlError::Path(PathError::BadName(_)) => libc::EINVAL,
            ControlError::Path(_) => libc::EACCES,
            ControlError::Audit(AuditError::Open { source, .. }) => from_io(source),
            ControlError::Signal(SignalError::Io(e)) => from_io(e),
            ControlError::Signal(_) => libc::EBUSY,
            ControlError::Report(ReportError::Io { source, .. }) => from_io(source),
            ControlError::Schema { .. } | ControlError::BadName(_) | ControlError::BadOption(_) => {
                libc::EINVAL
            }
            ControlError::Duplicate(_) | ControlError::Reserved(_) => libc::EEXIST,
            ControlError::AlreadyRunning(_) => libc::EADDRINUSE,
            ControlError::Bind { source, .. } | ControlError::Io { source, .. } => from_io(source),
            ControlError::Token { .. } => libc::EACCES,
        }
    }
}

fn valid_command_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'))
}

/// Configures and starts a [`Control`].
#[derive(Debug, Clone)]
pub struct ControlBuilder {
    name: String,
    socket_dir: Option<PathBuf>,
    audit_log: Option<PathBuf>,
    audit_ring: usize,
    tcp: Option<(Option<SocketAddr>, PathBuf)>,
    max_connections: usize,
    read_timeout: Duration,
    max_frame: usize,
    sigusr2: Option<ReportTarget>,
    allowed_uids: Vec<u32>,
}

impl ControlBuilder {
    /// Uses this directory for the socket instead of the standard search.
    pub fn socket_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.socket_dir = Some(dir.into());
        self
    }

    /// Appends audit lines to this file (default:
    /// `<socket dir>/<name>.audit.jsonl`).
    pub fn audit_log(mut self, path: impl Into<PathBuf>) -> Self {
        self.audit_log = Some(path.into());
        self
    }

    /// How many audit entries to keep in memory (default 256).
    pub fn audit_ring(mut self, entries: usize) -> Self {
        self.audit_ring = entries;
        self
    }

    /// Also listens on TCP, at `addr` or `127.0.0.1:0` (an ephemeral
    /// loopback port, see [`Control::tcp_addr`]). Every TCP request must
    /// carry the token stored in `token_file`.
    pub fn tcp(mut self, addr: Option<SocketAddr>, token_file: impl Into<PathBuf>) -> Self {
        self.tcp = Some((addr, token_file.into()));
        self
    }

    /// Caps concurrent connections (default 128); extra ones get `busy`.
    pub fn max_connections(mut self, n: usize) -> Self {
        self.max_connections = n;
        self
    }

    /// Time a client has to deliver each complete request (default 30 s);
    /// also bounds writing a response.
    pub fn read_timeout(mut self, t: Duration) -> Self {
        self.read_timeout = t;
        self
    }

    /// Largest request or response payload (default 1 MiB).
    pub fn max_frame_size(mut self, bytes: usize) -> Self {
        self.max_frame = bytes;
        self
    }

    /// Writes a report on SIGUSR2 to `target`.
    pub fn sigusr2_report(mut self, target: ReportTarget) -> Self {
        self.sigusr2 = Some(target);
        self
    }

    /// Also admits this uid on the Unix socket (besides ours and root).
    pub fn allow_uid(mut self, uid: u32) -> Self {
        self.allowed_uids.push(uid);
        self
    }

    /// Opens the socket and starts the server thread.
    pub fn start(self) -> Result<Control, ControlError> {
        Control::start(self)
    }
}

struct Registered {
    info: CommandInfo,
    schema: Schema,
    handler: Handler,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Builtin {
    Ping,
    Version,
    Commands,
    Report,
    Audit,
}

impl Builtin {
    const ALL: [Builtin; 5] = [
        Builtin::Ping,
        Builtin::Version,
        Builtin::Commands,
        Builtin::Report,
        Builtin::Audit,
    ];

    fn name(self) -> &'static str {
        match self {
            Builtin::Ping => "ping",
            Builtin::Version => "version",
            Builtin::Commands => "commands",
            Builtin::Report => "report",
            Builtin::Audit => "audit",
        }
    }

    fn from_name(s: &str) -> Option<Self> {
        Builtin::ALL.into_iter().find(|b| b.name() == s)
    }

    fn help(self) -> &'static str {
        match self {
            Builtin::Ping => "Check that the control thread answers",
            Builtin::Version => "Library and protocol version, target name and pid",
            Builtin::Commands => "List commands with their help and argument schemas",
            Builtin::Report => "Run every report section and return {section: value}",
            Builtin::Audit => "Recent mutation attempts and the audit log path",
        }
    }

    fn schema_json(self) -> Value {
        match self {
            Builtin::Audit => json!({
                "type": "object",
                "properties": {
                    "n": {"type": "integer", "minimum": 1, "default": 20,
                          "description": "How many recent entries to return"}
                }
            }),
            _ => Value::Null,
        }
    }

    fn info(self) -> CommandInfo {
        CommandInfo {
            name: self.name().into(),
            help: self.help().into(),
            args: self.schema_json(),
            mutates: false,
            builtin: true,
        }
    }
}

#[derive(Default)]
struct ConnTable {
    next: u64,
    fds: HashMap<u64, RawFd>,
}

struct Config {
    max_connections: usize,
    read_timeout: Duration,
    max_frame: usize,
    allowed_uids: Vec<u32>,
    token: Option<Vec<u8>>,
    report_target: Option<ReportTarget>,
}

struct Shared {
    name: String,
    pid: i32,
    uid: u32,
    started: String,
    socket_path: PathBuf,
    tcp_addr: Option<SocketAddr>,
    cfg: Config,
    builtin_schemas: Vec<(Builtin, Schema)>,
    commands: RwLock<BTreeMap<String, Arc<Registered>>>,
    sections: RwLock<Vec<(String, Arc<ReportFn>)>>,
    audit: AuditLog,
    mutation_lock: Mutex<()>,
    stopping: AtomicBool,
    active: AtomicUsize,
    conns: Mutex<ConnTable>,
    conns_done: Condvar,
    report_running: AtomicBool,
}

/// A running control server. Stops (closing and removing its socket) on
/// [`Control::stop`] or drop.
pub struct Control {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
    wake: OwnedFd,
    socket_id: (u64, u64),
    signal: Option<SignalGuard>,
}

impl std::fmt::Debug for Control {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Control")
            .field("name", &self.shared.name)
            .field("socket", &self.shared.socket_path)
            .field("tcp", &self.shared.tcp_addr)
            .finish_non_exhaustive()
    }
}

static CLEANUP: Mutex<Vec<(i32, PathBuf)>> = Mutex::new(Vec::new());
static ATEXIT: Once = Once::new();

extern "C" fn remove_sockets_at_exit() {
    // try_lock: never deadlock in exit() if another thread held the lock.
    if let Ok(list) = CLEANUP.try_lock() {
        let me = sys::getpid();
        for (pid, path) in list.iter() {
            if *pid == me {
                let _ = fs::remove_file(path);
            }
        }
    }
}

fn file_id(path: &Path) -> Option<(u64, u64)> {
    fs::symlink_metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// Removes the socket unless something else replaced it meanwhile.
fn remove_socket(path: &Path, id: (u64, u64)) {
    if file_id(path) == Some(id) {
        let _ = fs::remove_file(path);
    }
}

fn read_token(path: &Path) -> Result<Vec<u8>, ControlError> {
    let bad = |reason: String| ControlError::Token {
        path: path.to_owned(),
        reason,
    };
    let meta = fs::metadata(path).map_err(|e| bad(e.to_string()))?;
    if meta.permissions().mode() & 0o077 != 0 {
        return Err(bad(
            "must not be accessible by group or others (chmod 600)".into()
        ));
    }
    let text = fs::read(path).map_err(|e| bad(e.to_string()))?;
    let token = text.trim_ascii().to_vec();
    if token.len() < MIN_TOKEN_LEN {
        return Err(bad(format!("token must be at least {MIN_TOKEN_LEN} bytes")));
    }
    Ok(token)
}

fn bind_unix(path: &Path) -> Result<UnixListener, ControlError> {
    if let Ok(meta) = fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(ControlError::Bind {
                addr: path.display().to_string(),
                source: io::Error::from_raw_os_error(libc::EEXIST),
            });
        }
        if UnixStream::connect(path).is_ok() {
            return Err(ControlError::AlreadyRunning(path.to_owned()));
        }
        // A stale socket left by an earlier process with our pid.
        let _ = fs::remove_file(path);
    }
    let listener = UnixListener::bind(path).map_err(|source| ControlError::Bind {
        addr: path.display().to_string(),
        source,
    })?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o600)).map_err(|source| {
        let _ = fs::remove_file(path);
        ControlError::Io {
            what: "chmod 0600 on the control socket",
            source,
        }
    })?;
    Ok(listener)
}

impl Control {
    /// Starts configuring a server for the target called `name`
    /// (`[A-Za-z0-9_.-]`, at most 64 characters).
    pub fn builder(name: impl Into<String>) -> ControlBuilder {
        ControlBuilder {
            name: name.into(),
            socket_dir: None,
            audit_log: None,
            audit_ring: audit::DEFAULT_RING,
            tcp: None,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            read_timeout: DEFAULT_READ_TIMEOUT,
            max_frame: protocol::DEFAULT_MAX_FRAME,
            sigusr2: None,
            allowed_uids: Vec::new(),
        }
    }

    fn start(b: ControlBuilder) -> Result<Control, ControlError> {
        paths::validate_name(&b.name)?;
        if b.max_frame < 1024 || b.max_frame > protocol::MAX_FRAME_LIMIT {
            return Err(ControlError::BadOption(format!(
                "max frame size must be within 1024..={}",
                protocol::MAX_FRAME_LIMIT
            )));
        }
        if b.max_connections == 0 || b.read_timeout.is_zero() {
            return Err(ControlError::BadOption(
                "max connections and read timeout must be positive".into(),
            ));
        }
        let pid = sys::getpid();
        let dir = paths::choose_dir(b.socket_dir.as_deref())?;
        paths::remove_stale(&dir);
        let socket_path = dir.join(paths::socket_file_name(&b.name, pid));
        paths::check_socket_path(&socket_path)?;

        // Everything fallible that needs no cleanup comes before the bind.
        let token = match &b.tcp {
            Some((_, file)) => Some(read_token(file)?),
            None => None,
        };
        let audit_path = b
            .audit_log
            .clone()
            .unwrap_or_else(|| dir.join(format!("{}.audit.jsonl", b.name)));
        let audit = AuditLog::open(&audit_path, b.audit_ring)?;
        let tcp = match &b.tcp {
            Some((addr, _)) => {
                let addr = addr.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)));
                let l = TcpListener::bind(addr).map_err(|source| ControlError::Bind {
                    addr: addr.to_string(),
                    source,
                })?;
                l.set_nonblocking(true).map_err(|source| ControlError::Io {
                    what: "set TCP listener non-blocking",
                    source,
                })?;
                Some(l)
            }
            None => None,
        };
        let tcp_addr = match &tcp {
            Some(l) => Some(l.local_addr().map_err(|source| ControlError::Io {
                what: "read TCP listener address",
                source,
            })?),
            None => None,
        };
        let signal = match &b.sigusr2 {
            Some(_) => Some(signal::install()?),
            None => None,
        };
        let (wake_r, wake_w) = sys::pipe().map_err(|source| ControlError::Io {
            what: "create wake pipe",
            source,
        })?;

        let unix = bind_unix(&socket_path)?;
        let socket_id = file_id(&socket_path).unwrap_or((0, 0));
        let fail = |e: ControlError| {
            remove_socket(&socket_path, socket_id);
            e
        };
        unix.set_nonblocking(true).map_err(|source| {
            fail(ControlError::Io {
                what: "set Unix listener non-blocking",
                source,
            })
        })?;

        let builtin_schemas = Builtin::ALL
            .into_iter()
            .filter_map(|bi| Schema::parse(&bi.schema_json()).ok().map(|s| (bi, s)))
            .collect();
        let shared = Arc::new(Shared {
            name: b.name.clone(),
            pid,
            uid: sys::geteuid(),
            started: time::now_rfc3339(),
            socket_path: socket_path.clone(),
            tcp_addr,
            cfg: Config {
                max_connections: b.max_connections,
                read_timeout: b.read_timeout,
                max_frame: b.max_frame,
                allowed_uids: b.allowed_uids.clone(),
                token,
                report_target: b.sigusr2.clone(),
            },
            builtin_schemas,
            commands: RwLock::new(BTreeMap::new()),
            sections: RwLock::new(Vec::new()),
            audit,
            mutation_lock: Mutex::new(()),
            stopping: AtomicBool::new(false),
            active: AtomicUsize::new(0),
            conns: Mutex::new(ConnTable::default()),
            conns_done: Condvar::new(),
            report_running: AtomicBool::new(false),
        });
        let sig_fd = signal.as_ref().map(|g| g.read_fd());
        let thread_shared = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("ri-ctl-server".into())
            .spawn(move || server_loop(thread_shared, unix, tcp, wake_r, sig_fd))
            .map_err(|source| {
                fail(ControlError::Io {
                    what: "spawn control thread",
                    source,
                })
            })?;

        lock(&CLEANUP).push((pid, socket_path));
        ATEXIT.call_once(|| {
            // SAFETY: registering a plain extern "C" function.
            unsafe {
                libc::atexit(remove_sockets_at_exit);
            }
        });
        Ok(Control {
            shared,
            thread: Some(thread),
            wake: wake_w,
            socket_id,
            signal,
        })
    }

    /// Registers a command. Names are unique and may not be built-ins.
    pub fn register(&self, cmd: Command) -> Result<(), ControlError> {
        if !valid_command_name(&cmd.name) {
            return Err(ControlError::BadName(cmd.name));
        }
        if Builtin::from_name(&cmd.name).is_some() {
            return Err(ControlError::Reserved(cmd.name));
        }
        let schema = Schema::parse(&cmd.args).map_err(|source| ControlError::Schema {
            name: cmd.name.clone(),
            source,
        })?;
        let mut map = write(&self.shared.commands);
        if map.contains_key(&cmd.name) {
            return Err(ControlError::Duplicate(cmd.name));
        }
        let info = CommandInfo {
            name: cmd.name.clone(),
            help: cmd.help,
            args: schema.as_json().clone(),
            mutates: cmd.mutates,
            builtin: false,
        };
        map.insert(
            cmd.name,
            Arc::new(Registered {
                info,
                schema,
                handler: cmd.handler,
            }),
        );
        Ok(())
    }

    /// Removes a command; returns whether it existed. Calls already running
    /// finish normally.
    pub fn unregister(&self, name: &str) -> bool {
        write(&self.shared.commands).remove(name).is_some()
    }

    /// Registers a report section, shown by the `report` built-in and the
    /// SIGUSR2 report. A section returning a JSON string is printed as text.
    pub fn report_section(
        &self,
        name: impl Into<String>,
        f: impl Fn() -> Value + Send + Sync + 'static,
    ) -> Result<(), ControlError> {
        let name = name.into();
        if !valid_command_name(&name) {
            return Err(ControlError::BadName(name));
        }
        let mut sections = write(&self.shared.sections);
        if sections.iter().any(|(n, _)| *n == name) {
            return Err(ControlError::Duplicate(name));
        }
        sections.push((name, Arc::new(Box::new(f))));
        Ok(())
    }

    /// Path of the Unix control socket.
    pub fn socket_path(&self) -> &Path {
        &self.shared.socket_path
    }

    /// Bound TCP address, when TCP is enabled.
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        self.shared.tcp_addr
    }

    /// Path of the audit log.
    pub fn audit_log_path(&self) -> &Path {
        self.shared.audit.path()
    }

    /// The target name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// Writes a text report now, to the SIGUSR2 target if configured, else
    /// to stderr. Returns the file written, if any.
    pub fn write_report(&self) -> Result<Option<PathBuf>, ControlError> {
        Ok(self.shared.write_text_report()?)
    }

    /// Stops the server: no new connections, open ones are closed once
    /// their current request is answered, the socket file is removed, and
    /// SIGUSR2 is restored. Waits for running handlers to return.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        let Some(thread) = self.thread.take() else {
            return;
        };
        if sys::getpid() != self.shared.pid {
            // A forked child: the threads and the socket belong to the
            // parent. Touch nothing.
            std::mem::forget(thread);
            std::mem::forget(self.signal.take());
            return;
        }
        self.shared.stopping.store(true, Ordering::SeqCst);
        sys::poke(self.wake.as_raw_fd(), b's');
        let _ = thread.join();
        // A SIGUSR2 report may still be running sections (C user data must
        // not be used after stop returns); reports are short, so poll.
        while self.shared.report_running.load(Ordering::Acquire) {
            std::thread::sleep(Duration::from_millis(2));
        }
        {
            let mut table = lock(&self.shared.conns);
            for fd in table.fds.values() {
                sys::shutdown(*fd, libc::SHUT_RDWR);
            }
            while !table.fds.is_empty() {
                table = self
                    .shared
                    .conns_done
                    .wait(table)
                    .unwrap_or_else(|e| e.into_inner());
            }
        }
        remove_socket(&self.shared.socket_path, self.socket_id);
        lock(&CLEANUP).retain(|(_, p)| *p != self.shared.socket_path);
        self.signal = None;
    }
}

impl Drop for Control {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn server_loop(
    shared: Arc<Shared>,
    unix: UnixListener,
    tcp: Option<TcpListener>,
    wake: OwnedFd,
    sig_fd: Option<RawFd>,
) {
    sys::block_async_signals();
    let mut fds = vec![
        libc::pollfd {
            fd: wake.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        },
        libc::pollfd {
            fd: unix.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        },
    ];
    let tcp_idx = tcp.as_ref().map(|l| {
        fds.push(libc::pollfd {
            fd: l.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        });
        fds.len() - 1
    });
    let sig_idx = sig_fd.map(|fd| {
        fds.push(libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        });
        fds.len() - 1
    });
    loop {
        for p in fds.iter_mut() {
            p.revents = 0;
        }
        // SAFETY: fds is a valid array of pollfd of the given length.
        let rc = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, -1) };
        if rc < 0 {
            if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                continue;
            }
            std::thread::sleep(Duration::from_millis(10));
            continue;
        }
        if fds[0].revents != 0 {
            sys::drain(wake.as_raw_fd());
        }
        if shared.stopping.load(Ordering::SeqCst) {
            return;
        }
        if let Some(i) = sig_idx
            && fds[i].revents != 0
        {
            let bytes = sys::drain(fds[i].fd);
            if bytes.contains(&signal::REPORT_BYTE) {
                spawn_report(&shared);
            }
        }
        if fds[1].revents != 0 {
            loop {
                match unix.accept() {
                    Ok((stream, _)) => accept_unix(&shared, stream.into()),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        if e.kind() != io::ErrorKind::WouldBlock {
                            // EMFILE and friends: back off instead of spinning.
                            std::thread::sleep(Duration::from_millis(10));
                        }
                        break;
                    }
                }
            }
        }
        if let (Some(i), Some(l)) = (tcp_idx, &tcp)
            && fds[i].revents != 0
        {
            loop {
                match l.accept() {
                    Ok((stream, addr)) => {
                        let peer = Peer {
                            transport: Transport::Tcp(addr),
                            uid: None,
                            gid: None,
                            pid: None,
                        };
                        let _ = stream.set_nodelay(true);
                        admit(&shared, stream.into(), peer);
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        if e.kind() != io::ErrorKind::WouldBlock {
                            std::thread::sleep(Duration::from_millis(10));
                        }
                        break;
                    }
                }
            }
        }
    }
}

fn spawn_report(shared: &Arc<Shared>) {
    if shared.report_running.swap(true, Ordering::AcqRel) {
        return;
    }
    let s = Arc::clone(shared);
    let spawned = std::thread::Builder::new()
        .name("ri-ctl-report".into())
        .spawn(move || {
            sys::block_async_signals();
            if let Err(e) = s.write_text_report() {
                eprintln!("ri-control: SIGUSR2 report failed: {e}");
            }
            s.report_running.store(false, Ordering::Release);
        });
    if spawned.is_err() {
        shared.report_running.store(false, Ordering::Release);
    }
}

/// Sends a connection-level error without blocking and closes.
fn refuse(conn: Conn, code: ErrorCode, message: &str) {
    let framing = sys::peek_byte(conn.raw())
        .map(Framing::detect)
        .unwrap_or(Framing::LengthPrefixed);
    let resp = Response::err(Value::Null, WireError::new(code, message));
    if let Ok(bytes) = protocol::encode(framing, &resp.to_bytes(), protocol::MAX_FRAME_LIMIT) {
        conn.try_write(&bytes);
    }
    sys::shutdown(conn.raw(), libc::SHUT_WR);
}

fn accept_unix(shared: &Arc<Shared>, fd: OwnedFd) {
    let Ok(conn) = Conn::new(fd) else { return };
    let cred = match sys::peer_cred(conn.raw()) {
        Ok(c) => c,
        Err(_) => {
            refuse(
                conn,
                ErrorCode::Forbidden,
                "cannot read peer credentials (SO_PEERCRED)",
            );
            return;
        }
    };
    if cred.uid != 0 && cred.uid != shared.uid && !shared.cfg.allowed_uids.contains(&cred.uid) {
        refuse(
            conn,
            ErrorCode::Forbidden,
            &format!(
                "uid {} may not use this control socket (only uid {} and root)",
                cred.uid, shared.uid
            ),
        );
        return;
    }
    let peer = Peer {
        transport: Transport::Unix,
        uid: Some(cred.uid),
        gid: Some(cred.gid),
        pid: Some(cred.pid),
    };
    admit_conn(shared, conn, peer);
}

fn admit(shared: &Arc<Shared>, fd: OwnedFd, peer: Peer) {
    if let Ok(conn) = Conn::new(fd) {
        admit_conn(shared, conn, peer);
    }
}

fn admit_conn(shared: &Arc<Shared>, conn: Conn, peer: Peer) {
    if shared.active.load(Ordering::SeqCst) >= shared.cfg.max_connections {
        refuse(
            conn,
            ErrorCode::Busy,
            &format!(
                "too many connections (limit {}); retry later",
                shared.cfg.max_connections
            ),
        );
        return;
    }
    let id = {
        let mut t = lock(&shared.conns);
        t.next += 1;
        let id = t.next;
        t.fds.insert(id, conn.raw());
        id
    };
    shared.active.fetch_add(1, Ordering::SeqCst);
    // The connection moves into the thread; if the spawn fails it comes
    // back through this slot so we can still refuse it.
    let slot = Arc::new(Mutex::new(Some(conn)));
    let thread_slot = Arc::clone(&slot);
    let s = Arc::clone(shared);
    let spawned = std::thread::Builder::new()
        .name("ri-ctl-conn".into())
        .spawn(move || {
            sys::block_async_signals();
            if let Some(conn) = lock(&thread_slot).take() {
                // Handlers already run under catch_unwind; this also keeps a
                // library bug from leaking the slot (stop waits for slots).
                let _ = catch_unwind(AssertUnwindSafe(|| serve_conn(&s, &conn, &peer)));
                s.release(id, conn);
            }
        });
    if spawned.is_err()
        && let Some(conn) = lock(&slot).take()
    {
        shared.forget_conn(id);
        refuse(conn, ErrorCode::Busy, "cannot start a connection thread");
    }
}

impl Shared {
    /// Unregisters a finished connection, then closes it.
    fn release(&self, id: u64, conn: Conn) {
        self.forget_conn(id);
        drop(conn);
    }

    fn forget_conn(&self, id: u64) {
        let mut t = lock(&self.conns);
        t.fds.remove(&id);
        self.active.fetch_sub(1, Ordering::SeqCst);
        self.conns_done.notify_all();
    }

    fn builtin_schema(&self, b: Builtin) -> Schema {
        self.builtin_schemas
            .iter()
            .find(|(x, _)| *x == b)
            .map(|(_, s)| s.clone())
            .unwrap_or_else(Schema::none)
    }

    fn sections(&self) -> Vec<(String, Arc<ReportFn>)> {
        read(&self.sections).clone()
    }

    fn write_text_report(&self) -> Result<Option<PathBuf>, ReportError> {
        let values = report::run_sections(&self.sections());
        let header = ReportHeader {
            target: &self.name,
            pid: self.pid,
            epoch_ms: time::epoch_ms(SystemTime::now()),
            socket: &self.socket_path,
        };
        let text = report::render_text(&header, &values);
        let target = self
            .cfg
            .report_target
            .clone()
            .unwrap_or(ReportTarget::Stderr);
        report::write_text(&target, &header, &text)
    }

    /// Handles one request payload; returns the response and whether to
    /// close the connection afterwards.
    fn dispatch(&self, payload: &[u8], peer: &Peer) -> (Response, bool) {
        let req = match protocol::parse_request(payload) {
            Ok(r) => r,
            Err(e) => return (Response::err(e.id, e.error), false),
        };
        if matches!(peer.transport, Transport::Tcp(_)) {
            let authorized = match (&self.cfg.token, &req.token) {
                (Some(expected), Some(given)) => {
                    protocol::constant_time_eq(expected, given.as_bytes())
                }
                _ => false,
            };
            if !authorized {
                return (
                    Response::err(
                        req.id,
                        WireError::new(ErrorCode::Unauthorized, "missing or wrong \"token\""),
                    ),
                    true,
                );
            }
        }
        if self.stopping.load(Ordering::SeqCst) {
            return (
                Response::err(
                    req.id,
                    WireError::new(ErrorCode::ShuttingDown, "the control server is stopping"),
                ),
                true,
            );
        }
        let id = req.id.clone();
        let resp = match self.execute(req, peer) {
            Ok(v) => Response::ok(id, v),
            Err(e) => Response::err(id, e),
        };
        (resp, false)
    }

    fn execute(&self, req: protocol::Request, peer: &Peer) -> Result<Value, WireError> {
        let invalid =
            |e: crate::schema::ArgsError| WireError::new(ErrorCode::InvalidArgs, e.to_string());
        if let Some(b) = Builtin::from_name(&req.cmd) {
            let args = self
                .builtin_schema(b)
                .validate(&req.args)
                .map_err(invalid)?;
            return Ok(self.run_builtin(b, &args));
        }
        let cmd = read(&self.commands).get(&req.cmd).cloned();
        let Some(cmd) = cmd else {
            return Err(WireError::new(
                ErrorCode::UnknownCommand,
                format!(
                    "no command {:?}; the \"commands\" command lists them",
                    req.cmd
                ),
            ));
        };
        if !cmd.info.mutates {
            let args = cmd.schema.validate(&req.args).map_err(invalid)?;
            return run_handler(&cmd, &Value::Object(args), peer);
        }
        let result = (|| {
            let args = cmd.schema.validate(&req.args).map_err(invalid)?;
            if !req.mutate {
                return Err(WireError::new(
                    ErrorCode::ConfirmationRequired,
                    format!(
                        "{:?} changes the target; resend with \"mutate\": true to confirm",
                        req.cmd
                    ),
                ));
            }
            let _serialized = lock(&self.mutation_lock);
            run_handler(&cmd, &Value::Object(args), peer)
        })();
        let now = SystemTime::now();
        self.audit.record(AuditEntry {
            time: time::rfc3339(now),
            epoch_ms: time::epoch_ms(now),
            target: self.name.clone(),
            pid: self.pid,
            peer: peer.audit(),
            cmd: req.cmd,
            args: Value::Object(req.args),
            confirmed: req.mutate,
            ok: result.is_ok(),
            error: result.as_ref().err().cloned(),
        });
        result
    }

    fn run_builtin(&self, b: Builtin, args: &Map<String, Value>) -> Value {
        match b {
            Builtin::Ping => Value::String("pong".into()),
            Builtin::Version => json!({
                "library": "ri-control",
                "library_version": crate::VERSION,
                "protocol": PROTOCOL_VERSION,
                "target": self.name,
                "pid": self.pid,
                "uid": self.uid,
                "started": self.started,
                "socket": self.socket_path,
                "tcp": self.tcp_addr.map(|a| a.to_string()),
            }),
            Builtin::Commands => {
                let mut list: Vec<CommandInfo> = Builtin::ALL.iter().map(|b| b.info()).collect();
                list.extend(read(&self.commands).values().map(|c| c.info.clone()));
                serde_json::to_value(list).unwrap_or(Value::Null)
            }
            Builtin::Report => Value::Object(report::run_sections(&self.sections())),
            Builtin::Audit => {
                let n = args
                    .get("n")
                    .and_then(Value::as_u64)
                    .unwrap_or(20)
                    .min(self.audit.capacity() as u64) as usize;
                json!({
                    "path": self.audit.path(),
                    "capacity": self.audit.capacity(),
                    "write_errors": self.audit.write_errors(),
                    "entries": self.audit.recent(n),
                })
            }
        }
    }
}

fn run_handler(cmd: &Registered, args: &Value, peer: &Peer) -> Result<Value, WireError> {
    match catch_unwind(AssertUnwindSafe(|| (cmd.handler)(args, peer))) {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(msg)) => Err(WireError::new(ErrorCode::HandlerError, msg)),
        Err(p) => Err(WireError::new(
            ErrorCode::HandlerPanic,
            format!("handler panicked: {}", report::panic_message(&p)),
        )),
    }
}

/// Encodes and sends a response, replacing one that is too large.
fn send(shared: &Shared, conn: &Conn, framing: Framing, resp: &Response) -> io::Result<()> {
    let max = shared.cfg.max_frame;
    let bytes = match protocol::encode(framing, &resp.to_bytes(), max) {
        Ok(b) => b,
        Err(FrameError::TooLarge { len, .. }) => {
            let e = Response::err(
                resp.id.clone(),
                WireError::new(
                    ErrorCode::ResultTooLarge,
                    format!("the result is {len} bytes; the frame limit is {max}"),
                ),
            );
            protocol::encode(framing, &e.to_bytes(), protocol::MAX_FRAME_LIMIT)
                .map_err(|_| io::Error::other("cannot encode error frame"))?
        }
    };
    conn.write_all(&bytes, Instant::now() + shared.cfg.read_timeout)
}

fn send_error(shared: &Shared, conn: &Conn, framing: Framing, code: ErrorCode, msg: String) {
    let _ = send(
        shared,
        conn,
        framing,
        &Response::err(Value::Null, WireError::new(code, msg)),
    );
}

/// Serves one connection until it closes, times out or misbehaves.
fn serve_conn(shared: &Shared, conn: &Conn, peer: &Peer) {
    let max = shared.cfg.max_frame;
    let timeout = shared.cfg.read_timeout;
    let mut buf: Vec<u8> = Vec::new();
    let mut framing: Option<Framing> = None;
    let mut deadline = Instant::now() + timeout;
    loop {
        if shared.stopping.load(Ordering::SeqCst) {
            return;
        }
        if framing.is_none()
            && let Some(&b) = buf.first()
        {
            framing = Some(Framing::detect(b));
        }
        if let Some(f) = framing {
            match protocol::decode(f, &buf, max) {
                Ok(Some(span)) => {
                    let payload = &buf[span.payload.clone()];
                    if f == Framing::Lines && payload.iter().all(u8::is_ascii_whitespace) {
                        buf.drain(..span.consumed);
                        continue;
                    }
                    let (resp, close) = shared.dispatch(payload, peer);
                    buf.drain(..span.consumed);
                    if send(shared, conn, f, &resp).is_err() {
                        return;
                    }
                    if close {
                        sys::shutdown(conn.raw(), libc::SHUT_WR);
                        return;
                    }
                    deadline = Instant::now() + timeout;
                    continue;
                }
                Ok(None) => {}
                Err(FrameError::TooLarge { len, max }) => {
                    send_error(
                        shared,
                        conn,
                        f,
                        ErrorCode::FrameTooLarge,
                        format!("frame of {len} bytes exceeds the limit of {max} bytes"),
                    );
                    linger(conn);
                    return;
                }
            }
        }
        match conn.read_into(&mut buf, CHUNK, deadline) {
            Ok(ReadOutcome::Data(_)) => {}
            Ok(ReadOutcome::Eof) => {
                if shared.stopping.load(Ordering::SeqCst) {
                    return;
                }
                let f = framing.unwrap_or(Framing::LengthPrefixed);
                if f == Framing::Lines {
                    // A last line without its newline is still a request.
                    if !buf.iter().all(u8::is_ascii_whitespace) {
                        let (resp, _) = shared.dispatch(&buf, peer);
                        let _ = send(shared, conn, f, &resp);
                    }
                } else if !buf.is_empty() {
                    send_error(
                        shared,
                        conn,
                        f,
                        ErrorCode::TruncatedFrame,
                        format!(
                            "connection closed after {} bytes of an incomplete frame",
                            buf.len()
                        ),
                    );
                }
                return;
            }
            Ok(ReadOutcome::TimedOut) => {
                if !shared.stopping.load(Ordering::SeqCst) {
                    send_error(
                        shared,
                        conn,
                        framing.unwrap_or(Framing::LengthPrefixed),
                        ErrorCode::Timeout,
                        format!(
                            "no complete request within {} ms; closing",
                            timeout.as_millis()
                        ),
                    );
                    sys::shutdown(conn.raw(), libc::SHUT_WR);
                }
                return;
            }
            Err(_) => return,
        }
    }
}

/// After a fatal frame error: stop sending and discard a bounded amount of
/// input for a short while, so the peer can read our error frame before the
/// socket is closed (TCP would otherwise reset it).
fn linger(conn: &Conn) {
    conn.linger_close(
        protocol::DEFAULT_MAX_FRAME,
        Instant::now() + Duration::from_millis(200),
    );
}
