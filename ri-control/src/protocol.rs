//! The wire protocol (version 1): framing, requests, responses and error
//! codes. See `docs/CONTROL-PROTOCOL.md` for the normative description.
//!
//! Two framings share one socket; the server picks one per connection from
//! the first byte it receives:
//! - length-prefixed: a 4-byte big-endian payload length, then that many
//!   bytes of UTF-8 JSON (what [`crate::client`] speaks);
//! - JSON lines: one JSON object per `\n`-terminated line (for `socat`).
//!
//! A length prefix always starts with a zero byte because frames are capped
//! below 16 MiB, so a first byte of `{` or ASCII whitespace selects lines.

use std::ops::Range;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The protocol version this library speaks.
pub const PROTOCOL_VERSION: u64 = 1;
/// Default maximum payload size of one frame or line (1 MiB).
pub const DEFAULT_MAX_FRAME: usize = 1 << 20;
/// Largest configurable frame size; keeps the first length byte zero.
pub const MAX_FRAME_LIMIT: usize = (1 << 24) - 1;
/// Size of the length prefix in length-prefixed framing.
pub const HEADER_LEN: usize = 4;

/// How frames are delimited on one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// 4-byte big-endian length, then the JSON payload.
    LengthPrefixed,
    /// One JSON document per `\n`-terminated line.
    Lines,
}

impl Framing {
    /// The framing a connection uses, judged from its first byte.
    pub fn detect(first: u8) -> Framing {
        if first == b'{' || first.is_ascii_whitespace() {
            Framing::Lines
        } else {
            Framing::LengthPrefixed
        }
    }
}

/// A framing violation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The declared (or, for lines, the observed) size exceeds the limit.
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// Declared or observed payload length.
        len: u64,
        /// The limit in force.
        max: usize,
    },
}

/// Where one complete frame sits in a receive buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameSpan {
    /// Byte range of the payload inside the buffer.
    pub payload: Range<usize>,
    /// Bytes to drop from the front of the buffer after handling it.
    pub consumed: usize,
}

/// Finds the first complete frame at the start of `buf`.
///
/// Returns `Ok(None)` when more bytes are needed. Never allocates and never
/// panics, whatever `buf` holds; a declared length above `max` is an error
/// before any of the payload is looked at.
pub fn decode(framing: Framing, buf: &[u8], max: usize) -> Result<Option<FrameSpan>, FrameError> {
    match framing {
        Framing::LengthPrefixed => {
            let Some(header) = buf.get(..HEADER_LEN) else {
                return Ok(None);
            };
            let len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
            if len > max {
                return Err(FrameError::TooLarge {
                    len: len as u64,
                    max,
                });
            }
            let end = HEADER_LEN + len;
            if buf.len() < end {
                return Ok(None);
            }
            Ok(Some(FrameSpan {
                payload: HEADER_LEN..end,
                consumed: end,
            }))
        }
        Framing::Lines => {
            let window = &buf[..buf.len().min(max.saturating_add(1))];
            match window.iter().position(|&b| b == b'\n') {
                Some(nl) => {
                    let end = if nl > 0 && buf[nl - 1] == b'\r' {
                        nl - 1
                    } else {
                        nl
                    };
                    Ok(Some(FrameSpan {
                        payload: 0..end,
                        consumed: nl + 1,
                    }))
                }
                None if buf.len() > max => Err(FrameError::TooLarge {
                    len: buf.len() as u64,
                    max,
                }),
                None => Ok(None),
            }
        }
    }
}

/// Encodes one payload as a frame of the given framing.
///
/// For [`Framing::Lines`] the payload must not contain a newline (compact
/// JSON never does).
pub fn encode(framing: Framing, payload: &[u8], max: usize) -> Result<Vec<u8>, FrameError> {
    if payload.len() > max.min(MAX_FRAME_LIMIT) {
        return Err(FrameError::TooLarge {
            len: payload.len() as u64,
            max,
        });
    }
    let mut out = Vec::with_capacity(payload.len() + HEADER_LEN);
    match framing {
        Framing::LengthPrefixed => {
            out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
            out.extend_from_slice(payload);
        }
        Framing::Lines => {
            out.extend_from_slice(payload);
            out.push(b'\n');
        }
    }
    Ok(out)
}

/// Machine-readable error codes carried in `error.code`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// The payload is not valid UTF-8 JSON.
    BadJson,
    /// Valid JSON, but not a well-formed request object.
    BadRequest,
    /// The request's `v` is not a version this server speaks.
    UnsupportedVersion,
    /// The frame exceeds the size limit; the connection is closed.
    FrameTooLarge,
    /// The peer closed the connection in the middle of a frame.
    TruncatedFrame,
    /// No complete request arrived in time; the connection is closed.
    Timeout,
    /// No command of that name is registered.
    UnknownCommand,
    /// The arguments do not match the command's schema.
    InvalidArgs,
    /// A mutating command was sent without `"mutate": true`.
    ConfirmationRequired,
    /// The peer's uid may not use this socket; the connection is closed.
    Forbidden,
    /// TCP request without the right token.
    Unauthorized,
    /// Too many concurrent connections; the connection is closed.
    Busy,
    /// The handler returned an error.
    HandlerError,
    /// The handler panicked; the target keeps running.
    HandlerPanic,
    /// The result does not fit in one frame.
    ResultTooLarge,
    /// The control server is stopping.
    ShuttingDown,
    /// Anything else that went wrong inside the library.
    Internal,
}

impl ErrorCode {
    /// The wire spelling of the code.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadJson => "bad_json",
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::UnsupportedVersion => "unsupported_version",
            ErrorCode::FrameTooLarge => "frame_too_large",
            ErrorCode::TruncatedFrame => "truncated_frame",
            ErrorCode::Timeout => "timeout",
            ErrorCode::UnknownCommand => "unknown_command",
            ErrorCode::InvalidArgs => "invalid_args",
            ErrorCode::ConfirmationRequired => "confirmation_required",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Busy => "busy",
            ErrorCode::HandlerError => "handler_error",
            ErrorCode::HandlerPanic => "handler_panic",
            ErrorCode::ResultTooLarge => "result_too_large",
            ErrorCode::ShuttingDown => "shutting_down",
            ErrorCode::Internal => "internal",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The `error` object of a failed response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireError {
    /// Machine-readable code (see [`ErrorCode`]); kept as a string so that
    /// clients survive codes added later.
    pub code: String,
    /// Human-readable explanation.
    pub message: String,
}

impl WireError {
    /// An error with a known code.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        WireError {
            code: code.as_str().to_owned(),
            message: message.into(),
        }
    }
}

/// A parsed request.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// Protocol version (always [`PROTOCOL_VERSION`] once parsed).
    pub v: u64,
    /// Caller-chosen id, echoed in the response (number, string or null).
    pub id: Value,
    /// Command name.
    pub cmd: String,
    /// Arguments (an empty object when absent).
    pub args: Map<String, Value>,
    /// The caller confirms that the command may change the target.
    pub mutate: bool,
    /// Token for TCP connections.
    pub token: Option<String>,
}

/// Why a payload is not a usable request, with the id when one was found.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestError {
    /// The request's id if it could be read, else null.
    pub id: Value,
    /// What was wrong.
    pub error: WireError,
}

const REQUEST_FIELDS: [&str; 6] = ["v", "id", "cmd", "args", "mutate", "token"];

/// Parses one frame payload into a [`Request`]. Never panics.
pub fn parse_request(payload: &[u8]) -> Result<Request, RequestError> {
    let fail = |id: Value, code: ErrorCode, msg: String| RequestError {
        id,
        error: WireError::new(code, msg),
    };
    let value: Value = serde_json::from_slice(payload).map_err(|e| {
        fail(
            Value::Null,
            ErrorCode::BadJson,
            format!("malformed JSON: {e}"),
        )
    })?;
    let Value::Object(mut obj) = value else {
        return Err(fail(
            Value::Null,
            ErrorCode::BadRequest,
            "a request must be a JSON object".into(),
        ));
    };
    let id = match obj.remove("id") {
        None | Some(Value::Null) => Value::Null,
        Some(Value::Number(n)) => Value::Number(n),
        Some(Value::String(s)) => Value::String(s),
        Some(_) => {
            return Err(fail(
                Value::Null,
                ErrorCode::BadRequest,
                "\"id\" must be a number, a string or null".into(),
            ));
        }
    };
    let v = match obj.remove("v") {
        Some(Value::Number(n)) => match n.as_u64() {
            Some(v) => v,
            None => {
                return Err(fail(
                    id,
                    ErrorCode::BadRequest,
                    "\"v\" must be a non-negative integer".into(),
                ));
            }
        },
        Some(_) => {
            return Err(fail(
                id,
                ErrorCode::BadRequest,
                "\"v\" must be a non-negative integer".into(),
            ));
        }
        None => {
            return Err(fail(
                id,
                ErrorCode::BadRequest,
                format!("missing \"v\" (protocol version; this server speaks {PROTOCOL_VERSION})"),
            ));
        }
    };
    if v != PROTOCOL_VERSION {
        return Err(fail(
            id,
            ErrorCode::UnsupportedVersion,
            format!("protocol version {v} is not supported; this server speaks {PROTOCOL_VERSION}"),
        ));
    }
    if let Some(extra) = obj.keys().find(|k| !REQUEST_FIELDS.contains(&k.as_str())) {
        return Err(fail(
            id,
            ErrorCode::BadRequest,
            format!("unknown request field {extra:?}"),
        ));
    }
    let cmd = match obj.remove("cmd") {
        Some(Value::String(s)) if !s.is_empty() => s,
        Some(_) => {
            return Err(fail(
                id,
                ErrorCode::BadRequest,
                "\"cmd\" must be a non-empty string".into(),
            ));
        }
        None => return Err(fail(id, ErrorCode::BadRequest, "missing \"cmd\"".into())),
    };
    let args = match obj.remove("args") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(m)) => m,
        Some(_) => {
            return Err(fail(
                id,
                ErrorCode::BadRequest,
                "\"args\" must be an object".into(),
            ));
        }
    };
    let mutate = match obj.remove("mutate") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => b,
        Some(_) => {
            return Err(fail(
                id,
                ErrorCode::BadRequest,
                "\"mutate\" must be a boolean".into(),
            ));
        }
    };
    let token = match obj.remove("token") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s),
        Some(_) => {
            return Err(fail(
                id,
                ErrorCode::BadRequest,
                "\"token\" must be a string".into(),
            ));
        }
    };
    Ok(Request {
        v,
        id,
        cmd,
        args,
        mutate,
        token,
    })
}

/// A response frame.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Response {
    /// Protocol version.
    pub v: u64,
    /// The request's id (null when the request could not be read).
    #[serde(default)]
    pub id: Value,
    /// Whether the command succeeded.
    pub ok: bool,
    /// The command's result (present when `ok`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    /// The failure (present when not `ok`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<WireError>,
}

impl Response {
    /// A success response.
    pub fn ok(id: Value, result: Value) -> Self {
        Response {
            v: PROTOCOL_VERSION,
            id,
            ok: true,
            result: Some(result),
            error: None,
        }
    }

    /// A failure response.
    pub fn err(id: Value, error: WireError) -> Self {
        Response {
            v: PROTOCOL_VERSION,
            id,
            ok: false,
            result: None,
            error: Some(error),
        }
    }

    /// Serializes the response as compact JSON.
    pub fn to_bytes(&self) -> Vec<u8> {
        // Serializing plain data (strings, maps, numbers) cannot fail.
        serde_json::to_vec(self).unwrap_or_else(|_| {
            br#"{"v":1,"id":null,"ok":false,"error":{"code":"internal","message":"response serialization failed"}}"#.to_vec()
        })
    }
}

/// One command as listed by the `commands` built-in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandInfo {
    /// Command name.
    pub name: String,
    /// One-line help.
    pub help: String,
    /// Argument schema (a small JSON-Schema subset, or null for none).
    pub args: Value,
    /// Whether the command changes the target (needs `"mutate": true`).
    pub mutates: bool,
    /// Whether the library itself provides the command.
    #[serde(default)]
    pub builtin: bool,
}

/// Compares two byte strings in time that depends only on their lengths.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let n = a.len().max(b.len());
    let mut diff = (a.len() ^ b.len()) as u64;
    for i in 0..n {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= u64::from(x ^ y);
    }
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn length_prefixed_round_trip() {
        let f = encode(Framing::LengthPrefixed, b"{}", 16).unwrap();
        assert_eq!(f, b"\0\0\0\x02{}");
        let span = decode(Framing::LengthPrefixed, &f, 16).unwrap().unwrap();
        assert_eq!(&f[span.payload], b"{}");
        assert_eq!(span.consumed, 6);
        assert_eq!(decode(Framing::LengthPrefixed, &f[..5], 16), Ok(None));
    }

    #[test]
    fn oversized_header_rejected_early() {
        let hdr = 100_000_000u32.to_be_bytes();
        assert!(matches!(
            decode(Framing::LengthPrefixed, &hdr, DEFAULT_MAX_FRAME),
            Err(FrameError::TooLarge { .. })
        ));
    }

    #[test]
    fn lines() {
        let span = decode(Framing::Lines, b"{\"a\":1}\r\nrest", 64)
            .unwrap()
            .unwrap();
        assert_eq!(span.payload, 0..7);
        assert_eq!(span.consumed, 9);
        assert_eq!(decode(Framing::Lines, b"abcdef", 4).ok(), None);
        assert_eq!(decode(Framing::Lines, b"abc", 4), Ok(None));
    }

    #[test]
    fn request_parsing() {
        let r = parse_request(br#"{"v":1,"id":7,"cmd":"x","args":{"a":1},"mutate":true}"#).unwrap();
        assert_eq!(r.cmd, "x");
        assert!(r.mutate);
        let e = parse_request(br#"{"v":2,"id":"a","cmd":"x"}"#).unwrap_err();
        assert_eq!(e.error.code, "unsupported_version");
        assert_eq!(e.id, Value::String("a".into()));
        let e = parse_request(b"{nope").unwrap_err();
        assert_eq!(e.error.code, "bad_json");
        let e = parse_request(br#"{"v":1,"cmd":"x","mutat":true}"#).unwrap_err();
        assert_eq!(e.error.code, "bad_request");
    }

    #[test]
    fn ct_eq() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        assert!(constant_time_eq(b"", b""));
    }
}
