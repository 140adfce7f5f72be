//! A value as text (gdb's `print` layout) or JSON.

use serde_json::{Map, Value as Json, json};

use super::Value;

/// A C-style escaped rendering of string bytes.
fn escape(bytes: &[u8], quote: char) -> String {
    let mut s = String::with_capacity(bytes.len());
    for &c in bytes {
        match c {
            b'\n' => s.push_str("\\n"),
            b'\t' => s.push_str("\\t"),
            b'\r' => s.push_str("\\r"),
            0 => s.push_str("\\0"),
            b'\\' => s.push_str("\\\\"),
            c if c as char == quote => {
                s.push('\\');
                s.push(quote);
            }
            0x20..0x7f => s.push(c as char),
            c => s.push_str(&format!("\\x{c:02x}")),
        }
    }
    s
}

fn hex(a: u64) -> String {
    format!("{a:#x}")
}

/// Values printed on one line at most this wide are not broken up.
const INLINE_WIDTH: usize = 72;

impl Value {
    /// gdb-style text: nested structs indented, arrays of scalars on one
    /// line, pointers as hex (followed by `-> {...}` when followed).
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        self.write_text(&mut out, 0);
        out
    }

    fn is_scalar(&self) -> bool {
        !matches!(
            self,
            Value::Struct { .. } | Value::Array { .. } | Value::Pointer { to: Some(_), .. }
        ) || matches!(self, Value::Pointer { to: Some(to), .. } if matches!(**to, Value::Symbol { .. }))
    }

    /// The value on one line, when it is short and simple enough.
    fn inline(&self, budget: usize) -> Option<String> {
        let s = match self {
            Value::Struct { fields, .. } => {
                let mut parts = Vec::with_capacity(fields.len());
                for (n, v) in fields {
                    let v = v.inline(budget)?;
                    parts.push(if n.is_empty() {
                        v
                    } else {
                        format!("{n} = {v}")
                    });
                }
                format!("{{{}}}", parts.join(", "))
            }
            Value::Array { elems, more } => {
                let mut parts = Vec::with_capacity(elems.len() + 1);
                for v in elems {
                    parts.push(v.inline(budget)?);
                }
                if *more > 0 {
                    parts.push(format!("...{more} more"));
                }
                format!("{{{}}}", parts.join(", "))
            }
            Value::Pointer { addr, to: Some(to) } => match &**to {
                Value::Str { .. }
                | Value::Cycle(_)
                | Value::Unreadable(_)
                | Value::Symbol { .. } => {
                    format!("{} {}", hex(*addr), to.scalar_text())
                }
                _ => return None,
            },
            v => v.scalar_text(),
        };
        (s.len() <= budget).then_some(s)
    }

    fn scalar_text(&self) -> String {
        match self {
            Value::Int(v) => v.to_string(),
            Value::Uint(v) => v.to_string(),
            Value::Int128(v) => v.to_string(),
            Value::Uint128(v) => v.to_string(),
            Value::Bool(b) => b.to_string(),
            Value::Char(c) => {
                let b = *c as u8;
                format!("{c} '{}'", escape(&[b], '\''))
            }
            Value::Float(f) => format!("{f:?}"),
            Value::Enum { value, name } => match name {
                Some(n) => n.clone(),
                None => value.to_string(),
            },
            Value::Pointer { addr, to: Some(to) } if matches!(**to, Value::Symbol { .. }) => {
                format!("{} {}", hex(*addr), to.scalar_text())
            }
            Value::Pointer { addr, .. } => hex(*addr),
            Value::Str { bytes, truncated } => {
                format!(
                    "\"{}\"{}",
                    escape(bytes, '"'),
                    if *truncated { "..." } else { "" }
                )
            }
            Value::Formatted(s) => s.clone(),
            Value::Bytes(b) => {
                let h: Vec<String> = b.iter().map(|x| format!("{x:02x}")).collect();
                format!("<bytes {}>", h.join(" "))
            }
            Value::Symbol { name, .. } => format!("<{name}>"),
            Value::Cycle(a) => format!("<cycle: already shown at {}>", hex(*a)),
            Value::Unreadable(a) => format!("<unreadable {}>", hex(*a)),
            Value::Missing => "<not captured>".into(),
            Value::Opaque(s) => format!("<{s}>"),
            Value::Struct { .. } | Value::Array { .. } => String::new(),
        }
    }

    fn write_text(&self, out: &mut String, indent: usize) {
        if let Some(s) = self.inline(INLINE_WIDTH.saturating_sub(indent)) {
            out.push_str(&s);
            return;
        }
        let pad = "  ".repeat(indent + 1);
        match self {
            Value::Struct { fields, .. } => {
                out.push_str("{\n");
                for (i, (n, v)) in fields.iter().enumerate() {
                    out.push_str(&pad);
                    if !n.is_empty() {
                        out.push_str(n);
                        out.push_str(" = ");
                    }
                    v.write_text(out, indent + 1);
                    if i + 1 < fields.len() {
                        out.push(',');
                    }
                    out.push('\n');
                }
                out.push_str(&"  ".repeat(indent));
                out.push('}');
            }
            Value::Array { elems, more } if elems.iter().all(Value::is_scalar) => {
                // Long arrays of scalars: rows of elements, no indices.
                out.push_str("{\n");
                let mut items: Vec<String> = elems.iter().map(Value::scalar_text).collect();
                if *more > 0 {
                    items.push(format!("...{more} more"));
                }
                let width = INLINE_WIDTH.max(pad.len() + 16);
                let mut line = pad.clone();
                for (i, item) in items.iter().enumerate() {
                    let sep = if i + 1 < items.len() { "," } else { "" };
                    if line.len() > pad.len() && line.len() + item.len() + 2 > width {
                        out.push_str(line.trim_end());
                        out.push('\n');
                        line = pad.clone();
                    }
                    line.push_str(item);
                    line.push_str(sep);
                    line.push(' ');
                }
                out.push_str(line.trim_end());
                out.push('\n');
                out.push_str(&"  ".repeat(indent));
                out.push('}');
            }
            Value::Array { elems, more } => {
                out.push_str("{\n");
                for (i, v) in elems.iter().enumerate() {
                    out.push_str(&pad);
                    out.push_str(&format!("[{i}] = "));
                    v.write_text(out, indent + 1);
                    if i + 1 < elems.len() || *more > 0 {
                        out.push(',');
                    }
                    out.push('\n');
                }
                if *more > 0 {
                    out.push_str(&pad);
                    out.push_str(&format!("...{more} more\n"));
                }
                out.push_str(&"  ".repeat(indent));
                out.push('}');
            }
            Value::Pointer { addr, to: Some(to) } => {
                out.push_str(&hex(*addr));
                out.push_str(if matches!(**to, Value::Symbol { .. }) {
                    " "
                } else {
                    " -> "
                });
                to.write_text(out, indent);
            }
            v => out.push_str(&v.scalar_text()),
        }
    }

    /// The same tree as JSON: numbers, enum names, strings; pointers as
    /// `"0x..."`, or `{"ptr": "0x...", "to": ...}` when followed, or
    /// `{"ptr": "0x...", "symbol": "name"}` for a function pointer; structs
    /// as objects in member order; `{"more": N}` closes a cut array;
    /// `{"cycle": "0x..."}`, `{"unreadable": "0x..."}`; a value past the
    /// end of a short capture is `null`.
    pub fn to_json(&self) -> Json {
        match self {
            Value::Int(v) | Value::Char(v) => json!(v),
            Value::Uint(v) => json!(v),
            Value::Int128(v) => {
                i64::try_from(*v).map_or_else(|_| json!(v.to_string()), |x| json!(x))
            }
            Value::Uint128(v) => {
                u64::try_from(*v).map_or_else(|_| json!(v.to_string()), |x| json!(x))
            }
            Value::Bool(b) => json!(b),
            Value::Float(f) if f.is_finite() => json!(f),
            Value::Float(f) => json!(f.to_string()),
            Value::Enum { value, name } => match name {
                Some(n) => json!(n),
                None => json!(value),
            },
            Value::Pointer { addr, to: None } => json!(hex(*addr)),
            Value::Pointer { addr, to: Some(to) } => match &**to {
                Value::Symbol { name, code: true } => json!({"ptr": hex(*addr), "symbol": name}),
                Value::Symbol { code: false, .. } => json!(hex(*addr)),
                to => json!({"ptr": hex(*addr), "to": to.to_json()}),
            },
            Value::Symbol { name, .. } => json!({ "symbol": name }),
            Value::Str { bytes, .. } => json!(String::from_utf8_lossy(bytes)),
            Value::Struct { fields, .. } => {
                let mut m = Map::with_capacity(fields.len());
                for (n, v) in fields {
                    m.insert(n.clone(), v.to_json());
                }
                Json::Object(m)
            }
            Value::Array { elems, more } => {
                let mut a: Vec<Json> = elems.iter().map(Value::to_json).collect();
                if *more > 0 {
                    a.push(json!({"more": more}));
                }
                Json::Array(a)
            }
            Value::Formatted(s) => json!(s),
            Value::Bytes(b) => json!(b.iter().map(|x| format!("{x:02x}")).collect::<String>()),
            Value::Cycle(a) => json!({"cycle": hex(*a)}),
            Value::Unreadable(a) => json!({"unreadable": hex(*a)}),
            Value::Missing => Json::Null,
            Value::Opaque(s) => json!(format!("<{s}>")),
        }
    }
}
