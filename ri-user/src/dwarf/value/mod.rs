//! Rendering memory as a typed value, like gdb's `print`: bytes and a
//! [`TypeId`] become a [`Value`] tree (following pointers through a
//! [`Memory`] when it can read), then text or JSON.
//!
//! `ri peek` reads a live process; captures of whole structs by eBPF use
//! [`NoMemory`], so their pointers print as plain hex.
//!
//! ```ignore
//! let v = value::decode(&info, ty, &bytes, Some(addr), &value::NoMemory, &Options::default());
//! println!("{}", v.to_text());
//! ```

mod print;

use std::collections::HashSet;

use super::{DebugInfo, Encoding, StructKind, Type, TypeId};

/// Reads the memory a value's pointers point into.
pub trait Memory {
    /// Fills `buf` from `addr`; false when any of it cannot be read.
    fn read(&self, addr: u64, buf: &mut [u8]) -> bool;

    /// Reads as much of `buf` as is readable from `addr` on; returns how
    /// many bytes that is.
    fn read_prefix(&self, addr: u64, buf: &mut [u8]) -> usize {
        if self.read(addr, buf) { buf.len() } else { 0 }
    }

    /// Whether pointers are worth following at all.
    fn follows(&self) -> bool {
        true
    }

    /// The symbol at or around `addr` (`name` or `name+0x10`), to name
    /// function pointers and pointers left unfollowed.
    fn symbol(&self, _addr: u64) -> Option<String> {
        None
    }
}

/// A memory that reads nothing: pointers print as hex.
pub struct NoMemory;

impl Memory for NoMemory {
    fn read(&self, _addr: u64, _buf: &mut [u8]) -> bool {
        false
    }

    fn follows(&self) -> bool {
        false
    }
}

/// Bounds on how much is shown.
#[derive(Clone, Debug)]
pub struct Options {
    /// Pointer hops to follow from the top value.
    pub depth: u32,
    /// Array elements shown; the rest are counted as "...N more".
    pub max_elements: usize,
    /// Bytes of a string shown.
    pub max_string: usize,
    /// Which types print through a formatter.
    pub formatters: Formatters,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            depth: 1,
            max_elements: 64,
            max_string: 256,
            formatters: Formatters::default(),
        }
    }
}

/// A decoded value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// A signed integer.
    Int(i64),
    /// An unsigned integer.
    Uint(u64),
    /// A 128-bit signed integer.
    Int128(i128),
    /// A 128-bit unsigned integer.
    Uint128(u128),
    /// `_Bool`.
    Bool(bool),
    /// A `char`, `signed char` or `unsigned char`.
    Char(i64),
    /// A floating-point number.
    Float(f64),
    /// An enum: its value and, when it has one, the enumerator's name.
    Enum {
        /// Numeric value.
        value: i64,
        /// Enumerator name.
        name: Option<String>,
    },
    /// A pointer and, when it was followed, what it points at.
    Pointer {
        /// The pointer's value.
        addr: u64,
        /// The pointee (a [`Value::Str`] for `char *`, [`Value::Cycle`] or
        /// [`Value::Unreadable`] when it could not be shown).
        to: Option<Box<Value>>,
    },
    /// A `char` array or the string a `char *` points at.
    Str {
        /// The bytes up to the terminating NUL.
        bytes: Vec<u8>,
        /// Cut at the length limit.
        truncated: bool,
    },
    /// A struct or union: members by name, anonymous members flattened.
    Struct {
        /// A union (members overlap).
        union: bool,
        /// Members in order.
        fields: Vec<(String, Value)>,
    },
    /// An array.
    Array {
        /// The elements shown.
        elems: Vec<Value>,
        /// How many more there are.
        more: u64,
    },
    /// A type with its own formatter (`struct m0_fid` as `<hex:hex>`).
    Formatted(String),
    /// Bytes of a type ri does not interpret.
    Bytes(Vec<u8>),
    /// What a pointer points at, by symbol name: a function (`code`), or a
    /// global the pointer was not followed to (named in text only).
    Symbol {
        /// `name` or `name+0x10`.
        name: String,
        /// A function pointer.
        code: bool,
    },
    /// A struct already shown at this address.
    Cycle(u64),
    /// Memory that could not be read.
    Unreadable(u64),
    /// Past the end of the bytes given (a short capture).
    Missing,
    /// Something with no printable value (`void`, a function, an
    /// incomplete type, a flexible array): a short description.
    Opaque(String),
}

/// Renders a special value of a named type; `None` falls back to the
/// ordinary rendering.
pub type Formatter = fn(&DebugInfo, TypeId, &[u8]) -> Option<String>;

/// Per-type-name formatters: struct tags or typedef names.
pub static FORMATTERS: &[(&str, Formatter)] = &[("m0_fid", fid), ("m0_uint128", uint128)];

/// `struct m0_fid` as motr prints it: `<container:key>` in hex.
fn fid(info: &DebugInfo, id: TypeId, bytes: &[u8]) -> Option<String> {
    let c = u64_member(info, id, bytes, "f_container")?;
    let k = u64_member(info, id, bytes, "f_key")?;
    Some(format!("<{c:x}:{k:x}>"))
}

/// `struct m0_uint128` as motr prints it: `hi:lo` in hex.
fn uint128(info: &DebugInfo, id: TypeId, bytes: &[u8]) -> Option<String> {
    let hi = u64_member(info, id, bytes, "u_hi")?;
    let lo = u64_member(info, id, bytes, "u_lo")?;
    Some(format!("{hi:x}:{lo:x}"))
}

fn u64_member(info: &DebugInfo, id: TypeId, bytes: &[u8], name: &str) -> Option<u64> {
    let m = info.member(id, name).ok()?;
    if m.bit_size.is_some() || info.size_of(m.ty) != Some(8) {
        return None;
    }
    let at = usize::try_from(m.offset).ok()?;
    Some(u64::from_le_bytes(bytes.get(at..at + 8)?.try_into().ok()?))
}

/// Built-in formatters by the name a pack's `[formatters]` gives them.
pub static NAMED: &[(&str, Option<Formatter>)] = &[
    ("fid", Some(fid)),
    ("u128", Some(uint128)),
    ("hex", Some(hex_bytes)),
    ("default", None),
];

/// A type's bytes as one hex number (little-endian), e.g. a 16-byte id.
fn hex_bytes(_: &DebugInfo, _: TypeId, bytes: &[u8]) -> Option<String> {
    if bytes.is_empty() {
        return None;
    }
    let digits: String = bytes.iter().rev().map(|b| format!("{b:02x}")).collect();
    Some(format!("0x{digits}"))
}

/// Which formatter prints which type: [`FORMATTERS`], with the choices of
/// `--format TYPE=NAME` (or a pack's `[formatters]`) on top, type by type.
#[derive(Clone, Debug, Default)]
pub struct Formatters {
    /// Type name → a name of [`NAMED`].
    chosen: std::sync::Arc<Vec<(String, Option<Formatter>)>>,
}

impl Formatters {
    /// Parses `TYPE=NAME` choices; one line naming the problem otherwise.
    pub fn parse(specs: &[String]) -> Result<Self, String> {
        let mut chosen = Vec::new();
        for spec in specs {
            let Some((ty, name)) = spec.split_once('=').filter(|(t, _)| !t.trim().is_empty())
            else {
                return Err(format!(
                    "--format {spec}: expected TYPE=FORMATTER, e.g. m0_fid=hex"
                ));
            };
            let Some((_, f)) = NAMED.iter().find(|(n, _)| *n == name.trim()) else {
                let names: Vec<&str> = NAMED.iter().map(|(n, _)| *n).collect();
                return Err(format!(
                    "--format {spec}: unknown formatter '{}' (one of {})",
                    name.trim(),
                    names.join(", ")
                ));
            };
            chosen.push((ty.trim().to_string(), *f));
        }
        Ok(Formatters {
            chosen: std::sync::Arc::new(chosen),
        })
    }

    fn lookup(&self, name: &str) -> Option<Formatter> {
        if let Some((_, f)) = self.chosen.iter().rev().find(|(t, _)| t == name) {
            return *f;
        }
        FORMATTERS.iter().find(|(n, _)| *n == name).map(|(_, f)| *f)
    }

    /// The formatter for a type's typedef names or tag, if any.
    pub fn formatter_for(&self, info: &DebugInfo, id: TypeId) -> Option<Formatter> {
        let mut id = id;
        for _ in 0..32 {
            let name = match info.ty(id) {
                Type::Typedef { name, ty } => {
                    if let Some(f) = self.lookup(name) {
                        return Some(f);
                    }
                    id = (*ty)?;
                    continue;
                }
                Type::Qualified { ty, .. } => {
                    id = (*ty)?;
                    continue;
                }
                Type::Struct { name: Some(n), .. } => n,
                _ => return None,
            };
            return self.lookup(name);
        }
        None
    }
}

/// Decodes `bytes`, the object of type `ty` at `addr` (when known);
/// pointers are followed through `mem` up to `opts.depth` hops.
pub fn decode(
    info: &DebugInfo,
    ty: TypeId,
    bytes: &[u8],
    addr: Option<u64>,
    mem: &dyn Memory,
    opts: &Options,
) -> Value {
    let mut d = Decoder {
        info,
        mem,
        opts,
        seen: HashSet::new(),
    };
    d.value(ty, bytes, addr, opts.depth)
}

/// Decodes a bitfield of type `ty`: `bits` bits starting `bit_offset` bits
/// into `bytes` (least significant first), as [`crate::dwarf::MemberRef`]
/// describes it.
pub fn decode_bitfield(
    info: &DebugInfo,
    ty: TypeId,
    bytes: &[u8],
    bit_offset: u32,
    bits: u32,
) -> Value {
    let d = Decoder {
        info,
        mem: &NoMemory,
        opts: &Options::default(),
        seen: HashSet::new(),
    };
    d.bitfield(ty, bytes, bit_offset, bits)
}

/// Reads the object of type `ty` at `addr` through `mem` and decodes it;
/// [`Value::Unreadable`] when not even its first byte can be read.
pub fn read(info: &DebugInfo, ty: TypeId, addr: u64, mem: &dyn Memory, opts: &Options) -> Value {
    let Some(size) = info.size_of(ty) else {
        return Value::Opaque(format!("{} has no size", info.type_name(ty)));
    };
    let mut buf = vec![0u8; size.min(1 << 24) as usize];
    let n = mem.read_prefix(addr, &mut buf);
    if n == 0 && size > 0 {
        return Value::Unreadable(addr);
    }
    buf.truncate(n);
    decode(info, ty, &buf, Some(addr), mem, opts)
}

struct Decoder<'a> {
    info: &'a DebugInfo,
    mem: &'a dyn Memory,
    opts: &'a Options,
    /// Structs shown so far: (address, canonical type).
    seen: HashSet<(u64, TypeId)>,
}

/// Whether a type is plain `char` (strings), not `signed`/`unsigned char`.
fn is_char(info: &DebugInfo, id: TypeId) -> bool {
    matches!(info.ty(info.strip(id)), Type::Base { name, size: 1, encoding: Encoding::SignedChar | Encoding::UnsignedChar } if name == "char")
}

fn le(bytes: &[u8]) -> u128 {
    bytes
        .iter()
        .take(16)
        .rev()
        .fold(0u128, |acc, &b| (acc << 8) | u128::from(b))
}

fn sign_extend(v: u128, bits: u32) -> i128 {
    if bits == 0 || bits >= 128 {
        return v as i128;
    }
    let shift = 128 - bits;
    ((v << shift) as i128) >> shift
}

impl Decoder<'_> {
    fn value(&mut self, ty: TypeId, bytes: &[u8], addr: Option<u64>, depth: u32) -> Value {
        let info = self.info;
        if let Some(f) = self.opts.formatters.formatter_for(info, ty)
            && let Some(s) = f(info, ty, bytes)
        {
            return Value::Formatted(s);
        }
        let sid = info.strip(ty);
        let size = info.size_of(sid);
        if let Some(size) = size
            && (bytes.len() as u64) < size
            && !matches!(info.ty(sid), Type::Struct { .. } | Type::Array { .. })
        {
            return Value::Missing;
        }
        match info.ty(sid) {
            Type::Void | Type::Typedef { .. } | Type::Qualified { .. } => {
                Value::Opaque("void".into())
            }
            Type::Function => Value::Opaque("function".into()),
            Type::Base { size, encoding, .. } => match bytes.get(..*size as usize) {
                Some(b) => base(*encoding, b),
                None => Value::Missing,
            },
            Type::Enum { size, .. } => {
                let Some(b) = bytes.get(..*size as usize).filter(|_| *size <= 16) else {
                    return Value::Missing;
                };
                self.enumeration(sid, le(b), *size as u32 * 8)
            }
            Type::Pointer { pointee } => {
                let Some(b) = bytes.get(..info.pointer_size() as usize) else {
                    return Value::Missing;
                };
                self.pointer(*pointee, le(b) as u64, depth)
            }
            Type::Struct { kind, name, .. } => {
                if info.is_incomplete(sid) {
                    let kw = if *kind == StructKind::Union {
                        "union"
                    } else {
                        "struct"
                    };
                    return Value::Opaque(format!(
                        "incomplete {kw} {}",
                        name.as_deref().unwrap_or("")
                    ));
                }
                self.structure(sid, bytes, addr, depth)
            }
            Type::Array { elem, count } => {
                let Some(count) = *count else {
                    return Value::Opaque(match addr {
                        Some(a) => format!("flexible array at {a:#x}"),
                        None => "flexible array".into(),
                    });
                };
                self.array(*elem, count, bytes, addr, depth)
            }
        }
    }

    fn enumeration(&self, sid: TypeId, raw: u128, bits: u32) -> Value {
        let Type::Enum {
            signed, variants, ..
        } = self.info.ty(sid)
        else {
            return Value::Uint(raw as u64);
        };
        let value = if *signed {
            sign_extend(raw, bits) as i64
        } else {
            raw as i64
        };
        let name = variants
            .iter()
            .find(|(_, v)| *v == value)
            .map(|(n, _)| n.clone());
        Value::Enum { value, name }
    }

    fn structure(&mut self, sid: TypeId, bytes: &[u8], addr: Option<u64>, depth: u32) -> Value {
        let info = self.info;
        let Type::Struct { kind, members, .. } = info.ty(sid) else {
            return Value::Missing;
        };
        if let Some(a) = addr {
            self.seen.insert((a, info.canonical(sid)));
        }
        let mut fields = Vec::with_capacity(members.len());
        for m in members {
            let off = m.offset as usize;
            let sub = bytes.get(off..).unwrap_or(&[]);
            let at = addr.map(|a| a + m.offset);
            let v = match m.bit_size {
                Some(bits) => self.bitfield(m.ty, sub, m.bit_offset.unwrap_or(0), bits),
                None => self.value(m.ty, sub, at, depth),
            };
            match (&m.name, v) {
                (Some(n), v) => fields.push((n.clone(), v)),
                // Anonymous struct/union members are reached as s.x in C.
                (None, Value::Struct { fields: inner, .. }) => fields.extend(inner),
                (None, v) => fields.push((String::new(), v)),
            }
        }
        Value::Struct {
            union: *kind == StructKind::Union,
            fields,
        }
    }

    fn bitfield(&self, ty: TypeId, bytes: &[u8], bit_offset: u32, bits: u32) -> Value {
        let need = (bit_offset + bits).div_ceil(8) as usize;
        if bytes.len() < need || bits == 0 || bits > 64 {
            return Value::Missing;
        }
        let raw = (le(&bytes[..need]) >> bit_offset) & ((1u128 << bits) - 1);
        let sid = self.info.strip(ty);
        match self.info.ty(sid) {
            Type::Enum { .. } => self.enumeration(sid, raw, bits),
            Type::Base {
                encoding: Encoding::Bool,
                ..
            } if raw <= 1 => Value::Bool(raw == 1),
            Type::Base {
                encoding: Encoding::Signed,
                ..
            } => Value::Int(sign_extend(raw, bits) as i64),
            Type::Base {
                encoding: Encoding::SignedChar,
                ..
            } => Value::Char(sign_extend(raw, bits) as i64),
            Type::Base {
                encoding: Encoding::UnsignedChar,
                ..
            } => Value::Char(raw as i64),
            _ => Value::Uint(raw as u64),
        }
    }

    fn array(
        &mut self,
        elem: TypeId,
        count: u64,
        bytes: &[u8],
        addr: Option<u64>,
        depth: u32,
    ) -> Value {
        let info = self.info;
        let Some(es) = info.size_of(elem).filter(|&s| s > 0) else {
            return Value::Opaque(format!("array of {}", info.type_name(elem)));
        };
        if is_char(info, elem) {
            let n = (count as usize).min(bytes.len());
            let limit = n.min(self.opts.max_string);
            let body = &bytes[..limit];
            let end = body.iter().position(|&b| b == 0);
            return Value::Str {
                bytes: body[..end.unwrap_or(limit)].to_vec(),
                truncated: end.is_none() && limit < n,
            };
        }
        let shown = count.min(self.opts.max_elements as u64);
        let mut elems = Vec::with_capacity(shown as usize);
        for i in 0..shown {
            let off = (i * es) as usize;
            let sub = bytes.get(off..).unwrap_or(&[]);
            if sub.is_empty() {
                elems.push(Value::Missing);
                continue;
            }
            elems.push(self.value(elem, sub, addr.map(|a| a + i * es), depth));
        }
        Value::Array {
            elems,
            more: count - shown,
        }
    }

    fn pointer(&mut self, pointee: Option<TypeId>, p: u64, depth: u32) -> Value {
        if p == 0 || !self.mem.follows() {
            return Value::Pointer { addr: p, to: None };
        }
        let code =
            pointee.is_some_and(|t| matches!(self.info.ty(self.info.strip(t)), Type::Function));
        // Named when not followed: functions, void *, depth exhausted.
        let unfollowed = Value::Pointer {
            addr: p,
            to: self
                .mem
                .symbol(p)
                .map(|name| Box::new(Value::Symbol { name, code })),
        };
        let Some(pointee) = pointee else {
            return unfollowed;
        };
        let info = self.info;
        if is_char(info, pointee) {
            return Value::Pointer {
                addr: p,
                to: Some(Box::new(self.string(p))),
            };
        }
        let ps = info.strip(pointee);
        let size = match info.ty(ps) {
            Type::Void | Type::Function | Type::Typedef { .. } | Type::Qualified { .. } => None,
            Type::Struct { .. } if info.is_incomplete(ps) => None,
            _ => info.size_of(ps).filter(|&s| s > 0 && s <= 1 << 20),
        };
        let Some(size) = size else {
            return unfollowed;
        };
        if depth == 0 {
            return unfollowed;
        }
        if matches!(info.ty(ps), Type::Struct { .. })
            && self.seen.contains(&(p, info.canonical(ps)))
        {
            return Value::Pointer {
                addr: p,
                to: Some(Box::new(Value::Cycle(p))),
            };
        }
        let mut buf = vec![0u8; size as usize];
        let to = if self.mem.read(p, &mut buf) {
            self.value(pointee, &buf, Some(p), depth - 1)
        } else {
            Value::Unreadable(p)
        };
        Value::Pointer {
            addr: p,
            to: Some(Box::new(to)),
        }
    }

    /// A NUL-terminated string at `p`, read a page at a time.
    fn string(&self, p: u64) -> Value {
        let max = self.opts.max_string;
        let mut out = Vec::new();
        let mut at = p;
        while out.len() < max {
            let chunk = ((4096 - at % 4096) as usize).min(max - out.len());
            let mut buf = vec![0u8; chunk];
            if !self.mem.read(at, &mut buf) {
                if out.is_empty() {
                    return Value::Unreadable(p);
                }
                break;
            }
            if let Some(end) = buf.iter().position(|&b| b == 0) {
                out.extend_from_slice(&buf[..end]);
                return Value::Str {
                    bytes: out,
                    truncated: false,
                };
            }
            out.extend_from_slice(&buf);
            at += chunk as u64;
        }
        Value::Str {
            bytes: out,
            truncated: true,
        }
    }
}

fn base(encoding: Encoding, b: &[u8]) -> Value {
    let size = b.len();
    let raw = le(b);
    match (encoding, size) {
        (Encoding::Bool, _) if raw <= 1 => Value::Bool(raw == 1),
        (Encoding::Bool, _) => Value::Uint(raw as u64),
        (Encoding::SignedChar, 1) => Value::Char(i64::from(b[0] as i8)),
        (Encoding::UnsignedChar, 1) => Value::Char(i64::from(b[0])),
        (Encoding::Signed | Encoding::SignedChar, 1 | 2 | 4 | 8) => {
            Value::Int(sign_extend(raw, size as u32 * 8) as i64)
        }
        (Encoding::Unsigned | Encoding::UnsignedChar, 1 | 2 | 4 | 8) => Value::Uint(raw as u64),
        (Encoding::Signed, 16) => Value::Int128(raw as i128),
        (Encoding::Unsigned, 16) => Value::Uint128(raw),
        (Encoding::Float, 4) => {
            let f = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            // Keep the float's own shortest spelling (1.1, not 1.100000023...).
            Value::Float(format!("{f:?}").parse().unwrap_or(f64::from(f)))
        }
        (Encoding::Float, 8) => Value::Float(f64::from_le_bytes(b.try_into().unwrap_or([0; 8]))),
        (Encoding::Float, 10 | 12 | 16) => Value::Float(x87(b)),
        _ => Value::Bytes(b.to_vec()),
    }
}

/// An x87 80-bit extended float (`long double`) as the nearest f64.
fn x87(b: &[u8]) -> f64 {
    let mant = u64::from_le_bytes(b[..8].try_into().unwrap_or([0; 8]));
    let se = u16::from_le_bytes([b[8], b[9]]);
    let sign = if se & 0x8000 != 0 { -1.0 } else { 1.0 };
    let exp = i32::from(se & 0x7fff);
    if exp == 0x7fff {
        return if mant << 1 == 0 {
            sign * f64::INFINITY
        } else {
            f64::NAN
        };
    }
    if exp == 0 && mant == 0 {
        return sign * 0.0;
    }
    sign * (mant as f64) * 2f64.powi(exp - 16383 - 63)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits_and_floats() {
        assert_eq!(sign_extend(0b11111, 5), -1);
        assert_eq!(sign_extend(0b01111, 5), 15);
        assert_eq!(
            base(Encoding::Float, &1.5f32.to_le_bytes()),
            Value::Float(1.5)
        );
        assert_eq!(
            base(Encoding::Signed, &(-3i16).to_le_bytes()),
            Value::Int(-3)
        );
        // 1.0L on x86: mantissa 1 << 63, exponent 16383.
        let mut ld = [0u8; 16];
        ld[..8].copy_from_slice(&(1u64 << 63).to_le_bytes());
        ld[8..10].copy_from_slice(&16383u16.to_le_bytes());
        assert_eq!(x87(&ld), 1.0);
    }

    #[test]
    fn text_shapes() {
        let v = Value::Struct {
            union: false,
            fields: vec![
                ("a".into(), Value::Int(1)),
                (
                    "s".into(),
                    Value::Str {
                        bytes: b"hi\n".to_vec(),
                        truncated: false,
                    },
                ),
                (
                    "xs".into(),
                    Value::Array {
                        elems: vec![Value::Uint(1), Value::Uint(2)],
                        more: 3,
                    },
                ),
            ],
        };
        assert_eq!(
            v.to_text(),
            "{a = 1, s = \"hi\\n\", xs = {1, 2, ...3 more}}"
        );
        assert_eq!(
            v.to_json().to_string(),
            r#"{"a":1,"s":"hi\n","xs":[1,2,{"more":3}]}"#
        );
    }
}
