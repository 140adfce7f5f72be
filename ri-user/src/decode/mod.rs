//! The event decoder: ring-buffer records back into typed values, using the
//! field list the plan compiler produced for each probe.

use ri_common::{EventHeader, HEADER_LEN, LEN_READ_FAILED};

use crate::plan::{Field, FieldKind, TypeRef};

/// Errors decoding a record (a plan/decoder mismatch; counted, never fatal).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    /// Shorter than a header or than the header says.
    #[error("truncated event ({0} bytes)")]
    Truncated(usize),
    /// A plan id the session did not load.
    #[error("event for unknown plan {0}")]
    UnknownPlan(u32),
}

/// One decoded value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value<'a> {
    /// Unsigned integer.
    U64(u64),
    /// Signed integer.
    I64(i64),
    /// Pointer or hex integer.
    Hex(u64),
    /// C string bytes (without the terminating NUL).
    Str(&'a [u8]),
    /// Raw bytes.
    Bytes(&'a [u8]),
    /// An enum value and its enumerator's name, when it has one.
    Enum(i64, Option<&'a str>),
    /// A whole object's bytes and its type.
    Object(&'a [u8], &'a TypeRef),
    /// A user stack, `tgid << 32 | id` (see [`crate::stack`]), and the
    /// caller's return address read at a function entry.
    Stack(u64, Option<u64>),
    /// The read behind this value faulted.
    Fault,
    /// A `str()`/`buf()` read of at most `len` bytes that failed in the
    /// kernel at `addr` (the trace may still read it from a file: see
    /// [`crate::stack::late`]).
    ReadFailed {
        /// The address tried.
        addr: u64,
        /// The capture's maximum length.
        len: usize,
        /// The probe's instruction pointer, when the kernel had room for it.
        ip: Option<u64>,
    },
    /// The bytes of a failed read, read later from the file mapped at its
    /// address; `str` for a string (up to its NUL), else bytes.
    Late {
        /// The bytes read.
        bytes: Vec<u8>,
        /// A string, not raw bytes.
        str: bool,
    },
}

/// A decoded event borrowing the ring buffer record.
#[derive(Debug)]
pub struct Event<'a> {
    /// The fixed header.
    pub header: EventHeader,
    /// Values in field order.
    pub values: Vec<Value<'a>>,
    /// Fields computed in user space (`--printf`), after the captures.
    pub extra: Vec<(String, String)>,
}

/// Reads the header of a record.
pub fn header(data: &[u8]) -> Result<EventHeader, DecodeError> {
    if data.len() < HEADER_LEN {
        return Err(DecodeError::Truncated(data.len()));
    }
    // SAFETY: length checked; EventHeader is plain integers.
    Ok(unsafe { std::ptr::read_unaligned(data.as_ptr() as *const EventHeader) })
}

/// Decodes a record with the fields of its plan.
pub fn decode<'a>(data: &'a [u8], fields: &'a [Field]) -> Result<Event<'a>, DecodeError> {
    let header = header(data)?;
    let end = HEADER_LEN + header.payload_len as usize;
    if data.len() < end {
        return Err(DecodeError::Truncated(data.len()));
    }
    let payload = &data[HEADER_LEN..end];
    let mut off = 0usize;
    let mut values = Vec::with_capacity(fields.len());
    let word = |off: usize| -> Result<u64, DecodeError> {
        payload
            .get(off..off + 8)
            .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
            .ok_or(DecodeError::Truncated(data.len()))
    };
    // Fault bits count the kernel's fields: a stack with its caller is two.
    let mut bit = 0usize;
    for f in fields {
        let i = bit;
        bit += 1;
        let faulted = i < 64 && header.faults & (1 << i) != 0;
        let v = match &f.kind {
            FieldKind::Enum(t) => {
                let w = word(off)?;
                off += 8;
                let name = match t.dbg.ty(t.dbg.strip(t.ty)) {
                    crate::dwarf::Type::Enum { variants, .. } => variants
                        .iter()
                        .find(|(_, v)| *v == w as i64)
                        .map(|(n, _)| n.as_str()),
                    _ => None,
                };
                Value::Enum(w as i64, name)
            }
            &FieldKind::Stack { caller } => {
                let w = word(off)?;
                off += 8;
                let c = if caller {
                    let c = word(off)?;
                    off += 8;
                    // An unreadable return address is no caller.
                    let bad = bit < 64 && header.faults & (1 << bit) != 0;
                    bit += 1;
                    (!bad && c != 0).then_some(c)
                } else {
                    None
                };
                // A stack the kernel could not store says so itself.
                values.push(Value::Stack(w, c));
                continue;
            }
            &FieldKind::Int { signed, hex } => {
                let w = word(off)?;
                off += 8;
                if hex {
                    Value::Hex(w)
                } else if signed {
                    Value::I64(w as i64)
                } else {
                    Value::U64(w)
                }
            }
            FieldKind::Str | FieldKind::Buf | FieldKind::Comm | FieldKind::Object(_) => {
                let w = word(off)?;
                let n = (w & !LEN_READ_FAILED) as usize;
                let bytes = payload
                    .get(off + 8..off + 8 + n)
                    .ok_or(DecodeError::Truncated(data.len()))?;
                off += 8 + ((n + 7) & !7);
                match &f.kind {
                    FieldKind::Str | FieldKind::Buf if w & LEN_READ_FAILED != 0 => {
                        let at = |i: usize| {
                            bytes
                                .get(i..i + 8)
                                .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
                        };
                        Value::ReadFailed {
                            addr: at(0).ok_or(DecodeError::Truncated(data.len()))?,
                            len: n,
                            ip: at(8),
                        }
                    }
                    FieldKind::Buf => Value::Bytes(bytes),
                    FieldKind::Object(t) => Value::Object(bytes, t),
                    _ => {
                        let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
                        Value::Str(&bytes[..end])
                    }
                }
            }
        };
        // A failed read keeps its address (the fault bit is set too).
        let keep = matches!(v, Value::ReadFailed { .. });
        values.push(if faulted && !keep { Value::Fault } else { v });
    }
    Ok(Event {
        header,
        values,
        extra: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let mut rec = vec![0u8; HEADER_LEN];
        let payload: Vec<u8> = [
            &(-5i64).to_le_bytes()[..],
            &3u64.to_le_bytes(),
            b"hi\0\0\0\0\0\0",
        ]
        .concat();
        let h = EventHeader {
            pid: 7,
            payload_len: payload.len() as u32,
            ..Default::default()
        };
        rec[..HEADER_LEN].copy_from_slice(unsafe {
            std::slice::from_raw_parts(&h as *const _ as *const u8, HEADER_LEN)
        });
        rec.extend_from_slice(&payload);
        let fields = [
            Field {
                name: "a".into(),
                kind: FieldKind::Int {
                    signed: true,
                    hex: false,
                },
            },
            Field {
                name: "s".into(),
                kind: FieldKind::Str,
            },
        ];
        let ev = decode(&rec, &fields).unwrap();
        assert_eq!(ev.header.pid, 7);
        assert_eq!(ev.values, [Value::I64(-5), Value::Str(b"hi")]);
        assert!(decode(&rec[..HEADER_LEN + 4], &fields).is_err());
    }

    #[test]
    fn failed_read_keeps_its_address() {
        let payload: Vec<u8> = [LEN_READ_FAILED | 8, 0x5555_0000_1234, 9]
            .iter()
            .flat_map(|w| w.to_le_bytes())
            .collect();
        let h = EventHeader {
            payload_len: payload.len() as u32,
            faults: 1,
            ..Default::default()
        };
        let mut rec =
            unsafe { std::slice::from_raw_parts(&h as *const _ as *const u8, HEADER_LEN) }.to_vec();
        rec.extend_from_slice(&payload);
        let fields = [
            Field {
                name: "s".into(),
                kind: FieldKind::Str,
            },
            Field {
                name: "n".into(),
                kind: FieldKind::Int {
                    signed: false,
                    hex: false,
                },
            },
        ];
        let ev = decode(&rec, &fields).unwrap();
        assert_eq!(
            ev.values,
            [
                Value::ReadFailed {
                    addr: 0x5555_0000_1234,
                    len: 8,
                    ip: None
                },
                Value::U64(9)
            ]
        );
    }

    #[test]
    fn stack_with_caller_takes_two_fault_bits() {
        let payload: Vec<u8> = [7u64 << 32 | 3, 0x1234, 9]
            .iter()
            .flat_map(|w| w.to_le_bytes())
            .collect();
        let mut h = EventHeader {
            payload_len: payload.len() as u32,
            ..Default::default()
        };
        let fields = [
            Field {
                name: "s".into(),
                kind: FieldKind::Stack { caller: true },
            },
            Field {
                name: "n".into(),
                kind: FieldKind::Int {
                    signed: false,
                    hex: false,
                },
            },
        ];
        let rec = |h: &EventHeader| {
            let mut r =
                unsafe { std::slice::from_raw_parts(h as *const _ as *const u8, HEADER_LEN) }
                    .to_vec();
            r.extend_from_slice(&payload);
            r
        };
        let r = rec(&h);
        let ev = decode(&r, &fields).unwrap();
        assert_eq!(
            ev.values,
            [Value::Stack(7 << 32 | 3, Some(0x1234)), Value::U64(9)]
        );
        // Bit 1 is the caller's read, bit 2 the next field.
        h.faults = 0b110;
        let r = rec(&h);
        let ev = decode(&r, &fields).unwrap();
        assert_eq!(ev.values, [Value::Stack(7 << 32 | 3, None), Value::Fault]);
    }
}
