//! A blocking client for control sockets, used by `ri ctl`.
//!
//! ```no_run
//! use ri_control::client::Client;
//! use serde_json::json;
//!
//! let mut c = Client::connect_pid(1234)?;
//! let version = c.call("version", json!({}), false)?;
//! c.call("counter.add", json!({"n": 5}), true)?;
//! for cmd in c.list()? {
//!     println!("{} - {}", cmd.name, cmd.help);
//! }
//! # Ok::<(), ri_control::client::ClientError>(())
//! ```

use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};

use crate::paths::{self, SocketInfo};
use crate::protocol::{self, CommandInfo, Framing, PROTOCOL_VERSION, Response};

/// Default time to wait for a response.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// A failed client operation.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No control socket belongs to that pid.
    #[error("no control socket found for pid {0} (is the target linked with ri-control?)")]
    NoSocket(i32),
    /// The pid has more than one control socket.
    #[error("pid {pid} has several control sockets ({names}); choose one by name")]
    Ambiguous {
        /// The pid.
        pid: i32,
        /// Their names, comma-separated.
        names: String,
    },
    /// Connecting failed.
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        /// Path or address.
        addr: String,
        /// The error.
        source: io::Error,
    },
    /// Reading or writing failed.
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),
    /// The server closed the connection without answering.
    #[error("the target closed the connection without answering")]
    Closed,
    /// The server sent something that is not a valid response.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The server answered with an error.
    #[error("{code}: {message}")]
    Remote {
        /// Machine-readable code, e.g. `confirmation_required`.
        code: String,
        /// Explanation.
        message: String,
    },
}

impl ClientError {
    /// The remote error code, if the server answered with an error.
    pub fn code(&self) -> Option<&str> {
        match self {
            ClientError::Remote { code, .. } => Some(code),
            _ => None,
        }
    }
}

enum Stream {
    Unix(UnixStream),
    Tcp(TcpStream),
}

impl Stream {
    fn set_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        match self {
            Stream::Unix(s) => {
                s.set_read_timeout(t)?;
                s.set_write_timeout(t)
            }
            Stream::Tcp(s) => {
                s.set_read_timeout(t)?;
                s.set_write_timeout(t)
            }
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Unix(s) => s.read(buf),
            Stream::Tcp(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Unix(s) => s.write(buf),
            Stream::Tcp(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Unix(s) => s.flush(),
            Stream::Tcp(s) => s.flush(),
        }
    }
}

/// A connection to one target's control server.
pub struct Client {
    stream: Stream,
    token: Option<String>,
    next_id: u64,
    max_frame: usize,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("next_id", &self.next_id)
            .finish_non_exhaustive()
    }
}

impl Client {
    fn new(stream: Stream, token: Option<String>) -> Result<Self, ClientError> {
        stream.set_timeout(Some(DEFAULT_TIMEOUT))?;
        Ok(Client {
            stream,
            token,
            next_id: 1,
            max_frame: protocol::MAX_FRAME_LIMIT,
        })
    }

    /// Connects to the only control socket of `pid`, found by
    /// [`crate::discover`].
    pub fn connect_pid(pid: i32) -> Result<Self, ClientError> {
        let found: Vec<SocketInfo> = paths::discover()
            .into_iter()
            .filter(|s| s.pid == pid)
            .collect();
        match found.as_slice() {
            [] => Err(ClientError::NoSocket(pid)),
            [one] => Client::connect_path(&one.path),
            many => Err(ClientError::Ambiguous {
                pid,
                names: many
                    .iter()
                    .map(|s| s.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            }),
        }
    }

    /// Connects to the control socket of `pid` registered under `name`.
    pub fn connect_pid_name(pid: i32, name: &str) -> Result<Self, ClientError> {
        let found = paths::discover()
            .into_iter()
            .find(|s| s.pid == pid && s.name == name)
            .ok_or(ClientError::NoSocket(pid))?;
        Client::connect_path(&found.path)
    }

    /// Connects to a socket path.
    pub fn connect_path(path: impl AsRef<Path>) -> Result<Self, ClientError> {
        let path = path.as_ref();
        let s = UnixStream::connect(path).map_err(|source| ClientError::Connect {
            addr: path.display().to_string(),
            source,
        })?;
        Client::new(Stream::Unix(s), None)
    }

    /// Connects to a TCP listener; every request will carry `token`.
    pub fn connect_tcp(
        addr: impl ToSocketAddrs + std::fmt::Debug,
        token: impl Into<String>,
    ) -> Result<Self, ClientError> {
        let shown = format!("{addr:?}");
        let s = TcpStream::connect(addr).map_err(|source| ClientError::Connect {
            addr: shown,
            source,
        })?;
        let _ = s.set_nodelay(true);
        Client::new(Stream::Tcp(s), Some(token.into()))
    }

    /// Sets how long to wait for each read or write (None: forever).
    pub fn set_timeout(&mut self, t: Option<Duration>) -> Result<(), ClientError> {
        Ok(self.stream.set_timeout(t)?)
    }

    /// Sends a request and returns the raw response (success or error).
    pub fn request(
        &mut self,
        cmd: &str,
        args: Value,
        mutate: bool,
    ) -> Result<Response, ClientError> {
        let id = self.next_id;
        self.next_id += 1;
        let mut req = json!({"v": PROTOCOL_VERSION, "id": id, "cmd": cmd});
        if !args.is_null() {
            req["args"] = args;
        }
        if mutate {
            req["mutate"] = Value::Bool(true);
        }
        if let Some(t) = &self.token {
            req["token"] = Value::String(t.clone());
        }
        let payload = serde_json::to_vec(&req).map_err(|e| ClientError::Protocol(e.to_string()))?;
        let frame = protocol::encode(Framing::LengthPrefixed, &payload, protocol::MAX_FRAME_LIMIT)
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        let written = self.stream.write_all(&frame);
        // Even if the write failed, the server may have sent a refusal
        // (forbidden, busy) before closing: prefer reporting that.
        match self.read_response() {
            Ok(resp) => {
                if !resp.id.is_null() && resp.id != json!(id) {
                    return Err(ClientError::Protocol(format!(
                        "response id {} does not match request id {id}",
                        resp.id
                    )));
                }
                Ok(resp)
            }
            Err(e) => match written {
                Err(w) => Err(ClientError::Io(w)),
                Ok(()) => Err(e),
            },
        }
    }

    /// Calls a command; returns its result, or the server's error as
    /// [`ClientError::Remote`]. `mutate` confirms a mutating command.
    pub fn call(&mut self, cmd: &str, args: Value, mutate: bool) -> Result<Value, ClientError> {
        let resp = self.request(cmd, args, mutate)?;
        if resp.ok {
            Ok(resp.result.unwrap_or(Value::Null))
        } else {
            let e = resp.error.unwrap_or_else(|| {
                protocol::WireError::new(protocol::ErrorCode::Internal, "error without details")
            });
            Err(ClientError::Remote {
                code: e.code,
                message: e.message,
            })
        }
    }

    /// Lists the target's commands (built-ins included).
    pub fn list(&mut self) -> Result<Vec<CommandInfo>, ClientError> {
        let v = self.call("commands", Value::Null, false)?;
        serde_json::from_value(v).map_err(|e| ClientError::Protocol(e.to_string()))
    }

    fn read_response(&mut self) -> Result<Response, ClientError> {
        let mut header = [0u8; protocol::HEADER_LEN];
        match self.stream.read_exact(&mut header) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Err(ClientError::Closed),
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {
                return Err(ClientError::Closed);
            }
            Err(e) => return Err(e.into()),
        }
        let len = u32::from_be_bytes(header) as usize;
        if len > self.max_frame {
            return Err(ClientError::Protocol(format!(
                "response frame of {len} bytes exceeds the limit"
            )));
        }
        let mut body = vec![0u8; len];
        self.stream.read_exact(&mut body).map_err(|e| {
            if e.kind() == io::ErrorKind::UnexpectedEof {
                ClientError::Closed
            } else {
                ClientError::Io(e)
            }
        })?;
        serde_json::from_slice(&body)
            .map_err(|e| ClientError::Protocol(format!("bad response: {e}")))
    }
}
