//! `ri trace --printf NAME=FORMAT,ARGS[,OFFSETS,SIZES,COUNT]`: a field
//! formatted like C's printf from other captured fields, in user space.
//! This is how a trace record that carries a format string and its packed
//! arguments (Motr's `m0_trace_allot(td, body)`) reads as its message; `%s`
//! arguments are strings read from the traced process's memory.

use crate::{decode::Value, dwarf::value::Memory, peek::process::ProcessMemory, plan::Field};

/// One `--printf` field (also a pack instrument's `printf` table).
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrintfSpec {
    /// The new field's name.
    pub name: String,
    /// The captured format string's name.
    pub format: String,
    /// The captured argument bytes' name.
    pub args: String,
    /// Captured `int` array: each argument's byte offset in ARGS.
    pub offsets: Option<String>,
    /// Captured `int` array: each argument's size in bytes.
    pub sizes: Option<String>,
    /// Captured number of arguments.
    pub count: Option<String>,
}

/// The `--printf` argument form, which [`PrintfSpec::parse`] reads back.
impl std::fmt::Display for PrintfSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut s = format!("{}={},{}", self.name, self.format, self.args);
        for v in [&self.offsets, &self.sizes, &self.count] {
            s.push(',');
            s.push_str(v.as_deref().unwrap_or(""));
        }
        f.write_str(s.trim_end_matches(','))
    }
}

impl PrintfSpec {
    /// Parses `NAME=FORMAT,ARGS[,OFFSETS,SIZES[,COUNT]]` (empty parts are left out).
    pub fn parse(s: &str) -> Result<PrintfSpec, String> {
        let bad = || format!("--printf '{s}': expected NAME=FORMAT,ARGS[,OFFSETS,SIZES[,COUNT]]");
        let (name, rest) = s.split_once('=').ok_or_else(bad)?;
        let parts: Vec<&str> = rest.split(',').map(str::trim).collect();
        if name.trim().is_empty() || parts.len() < 2 || parts.len() > 5 {
            return Err(bad());
        }
        let opt = |i: usize| {
            parts
                .get(i)
                .filter(|p| !p.is_empty())
                .map(|p| p.to_string())
        };
        if parts[0].is_empty() || parts[1].is_empty() || opt(2).is_some() != opt(3).is_some() {
            return Err(bad());
        }
        Ok(PrintfSpec {
            name: name.trim().to_string(),
            format: parts[0].to_string(),
            args: parts[1].to_string(),
            offsets: opt(2),
            sizes: opt(3),
            count: opt(4),
        })
    }

    /// The captured fields it reads, by role (`format`, `args`, ...).
    pub fn inputs(&self) -> [(&'static str, Option<&String>); 5] {
        [
            ("format", Some(&self.format)),
            ("args", Some(&self.args)),
            ("offsets", self.offsets.as_ref()),
            ("sizes", self.sizes.as_ref()),
            ("count", self.count.as_ref()),
        ]
    }

    /// Checks that the fields it names are captured by at least one probe.
    pub fn check(&self, fields: &[&[Field]]) -> Result<(), String> {
        for n in self.inputs().into_iter().filter_map(|(_, n)| n) {
            if !fields.iter().any(|f| f.iter().any(|f| &f.name == n)) {
                return Err(format!(
                    "--printf {}: no probe captures a field named '{n}'",
                    self.name
                ));
            }
        }
        Ok(())
    }

    /// The formatted text for one event, when the event has the fields.
    pub fn render(&self, fields: &[Field], values: &[Value<'_>], pid: u32) -> Option<String> {
        let get = |n: &str| {
            fields
                .iter()
                .position(|f| f.name == n)
                .and_then(|i| values.get(i))
        };
        let bytes = |n: &Option<String>| match n.as_deref().map(get) {
            Some(Some(Value::Bytes(b) | Value::Str(b))) => Some(Some(*b)),
            Some(Some(Value::Late { bytes, .. })) => Some(Some(bytes.as_slice())),
            Some(_) => None,
            None => Some(None),
        };
        // A format string the process never touched is read late.
        let format = match get(&self.format) {
            Some(Value::Str(f)) => *f,
            Some(Value::Late { bytes, str: true }) => bytes.as_slice(),
            _ => return None,
        };
        let Some(Value::Bytes(args)) = get(&self.args) else {
            return None;
        };
        let offsets = bytes(&self.offsets)?;
        let sizes = bytes(&self.sizes)?;
        let count = match self.count.as_deref().map(get) {
            Some(Some(Value::U64(n))) => Some(*n as usize),
            Some(Some(Value::I64(n))) => Some((*n).max(0) as usize),
            Some(_) => return None,
            None => None,
        };
        let arg = |i: usize| -> u64 {
            if count.is_some_and(|n| i >= n) {
                return 0;
            }
            let (off, size) = match (offsets, sizes) {
                (Some(o), Some(s)) => (int_at(o, i), int_at(s, i)),
                _ => (Some(i * 8), Some(8)),
            };
            let (Some(off), Some(size)) = (off, size) else {
                return 0;
            };
            let size = size.min(8);
            let mut w = [0u8; 8];
            if let Some(b) = args.get(off..off + size) {
                w[..size].copy_from_slice(b);
            }
            u64::from_le_bytes(w)
        };
        let mem = ProcessMemory::new(pid);
        Some(format_c(format, arg, &|addr| read_str(&mem, addr)))
    }
}

/// The i-th little-endian `int` of an array, as a non-negative size.
fn int_at(b: &[u8], i: usize) -> Option<usize> {
    let v = i32::from_le_bytes(b.get(i * 4..i * 4 + 4)?.try_into().ok()?);
    usize::try_from(v).ok()
}

/// A NUL-terminated string of the process (at most 1 KiB), or `None`.
pub(crate) fn read_str(mem: &ProcessMemory, addr: u64) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; 1024];
    let n = mem.read_prefix(addr, &mut buf);
    if n == 0 {
        return None;
    }
    buf.truncate(n);
    if let Some(end) = buf.iter().position(|&c| c == 0) {
        buf.truncate(end);
    }
    Some(buf)
}

/// Formats `fmt` as C's printf would with each argument an 8-byte word:
/// flags `-+ #0`, width, precision; length modifiers are accepted and the
/// widest type is used; conversions `d i u o x X c s p` (others print the
/// word in decimal). `%s` reads the string through `string`.
pub fn format_c(
    fmt: &[u8],
    arg: impl Fn(usize) -> u64,
    string: &dyn Fn(u64) -> Option<Vec<u8>>,
) -> String {
    let mut out: Vec<u8> = Vec::with_capacity(fmt.len() + 32);
    let mut i = 0;
    let mut argi = 0;
    while i < fmt.len() {
        let c = fmt[i];
        if c != b'%' {
            out.push(c);
            i += 1;
            continue;
        }
        if fmt.get(i + 1) == Some(&b'%') {
            out.push(b'%');
            i += 2;
            continue;
        }
        let mut j = i + 1;
        let (mut left, mut plus, mut space, mut alt, mut zero) =
            (false, false, false, false, false);
        while let Some(&f) = fmt.get(j) {
            match f {
                b'-' => left = true,
                b'+' => plus = true,
                b' ' => space = true,
                b'#' => alt = true,
                b'0' => zero = true,
                _ => break,
            }
            j += 1;
        }
        let mut width = 0usize;
        while let Some(d) = fmt.get(j).filter(|d| d.is_ascii_digit()) {
            width = width * 10 + (d - b'0') as usize;
            j += 1;
        }
        let mut precision = None;
        if fmt.get(j) == Some(&b'.') {
            j += 1;
            let mut p = 0usize;
            while let Some(d) = fmt.get(j).filter(|d| d.is_ascii_digit()) {
                p = p * 10 + (d - b'0') as usize;
                j += 1;
            }
            precision = Some(p);
        }
        while fmt.get(j).is_some_and(|m| b"hlLqjzt".contains(m)) {
            j += 1;
        }
        let Some(&conv) = fmt.get(j) else {
            break;
        };
        let v = arg(argi);
        argi += 1;
        let (sign, body): (&str, Vec<u8>) = match conv {
            b'd' | b'i' => {
                let n = v as i64;
                let digits = n.unsigned_abs().to_string();
                let s = if n < 0 {
                    "-"
                } else if plus {
                    "+"
                } else if space {
                    " "
                } else {
                    ""
                };
                (s, pad_digits(digits, precision).into_bytes())
            }
            b'u' => ("", pad_digits(v.to_string(), precision).into_bytes()),
            b'x' | b'X' | b'o' => {
                let mut d = match conv {
                    b'x' => format!("{v:x}"),
                    b'X' => format!("{v:X}"),
                    _ => format!("{v:o}"),
                };
                d = pad_digits(d, precision);
                let prefix = match (alt && v != 0, conv) {
                    (true, b'x') => "0x",
                    (true, b'X') => "0X",
                    (true, _) if !d.starts_with('0') => "0",
                    _ => "",
                };
                (prefix, d.into_bytes())
            }
            b'c' => ("", vec![v as u8]),
            b'p' if v == 0 => ("", b"(nil)".to_vec()),
            b'p' => ("0x", format!("{v:x}").into_bytes()),
            b's' => {
                let mut s = if v == 0 {
                    b"(null)".to_vec()
                } else {
                    string(v).unwrap_or_else(|| format!("<unreadable {v:#x}>").into_bytes())
                };
                if let Some(p) = precision {
                    s.truncate(p);
                }
                ("", s)
            }
            _ => ("", v.to_string().into_bytes()),
        };
        let len = sign.len() + body.len();
        let fill = width.saturating_sub(len);
        let numeric = !matches!(conv, b's' | b'c');
        if left {
            out.extend_from_slice(sign.as_bytes());
            out.extend_from_slice(&body);
            out.extend(std::iter::repeat_n(b' ', fill));
        } else if zero && numeric && precision.is_none() {
            out.extend_from_slice(sign.as_bytes());
            out.extend(std::iter::repeat_n(b'0', fill));
            out.extend_from_slice(&body);
        } else {
            out.extend(std::iter::repeat_n(b' ', fill));
            out.extend_from_slice(sign.as_bytes());
            out.extend_from_slice(&body);
        }
        i = j + 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn pad_digits(d: String, precision: Option<usize>) -> String {
    match precision {
        Some(p) if p > d.len() => format!("{}{d}", "0".repeat(p - d.len())),
        _ => d,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_argument_form_reads_back() {
        for text in [
            "m=fmt,body",
            "m=fmt,body,offs,sizes",
            "m=fmt,body,offs,sizes,nr",
        ] {
            assert_eq!(PrintfSpec::parse(text).unwrap().to_string(), text);
        }
    }

    fn f(fmt: &str, args: &[u64]) -> String {
        let strs = |a: u64| (a == 7).then(|| b"seven".to_vec());
        format_c(fmt.as_bytes(), |i| args.get(i).copied().unwrap_or(0), &strs)
    }

    #[test]
    fn like_c() {
        assert_eq!(f("a %d b", &[(-5i64) as u64]), "a -5 b");
        assert_eq!(
            f("%5u|%-4x|%04X|%#x", &[42, 255, 10, 16]),
            "   42|ff  |000A|0x10"
        );
        assert_eq!(f("%lu %llx %zu %%", &[1, 2, 3]), "1 2 3 %");
        assert_eq!(
            f("[%s] [%.3s] [%8s]", &[7, 7, 7]),
            "[seven] [sev] [   seven]"
        );
        assert_eq!(f("%s %p %p", &[0, 0, 0x10]), "(null) (nil) 0x10");
        assert_eq!(f("%+d %c %.3d", &[3, b'A' as u64, 7]), "+3 A 007");
        assert_eq!(
            f("dev %u: allocated [%lu, %lu)", &[1, 2, 3]),
            "dev 1: allocated [2, 3)"
        );
    }

    #[test]
    fn specs() {
        let s = PrintfSpec::parse("msg=fmt,body,offs,sizes,nr").unwrap();
        assert_eq!(s.offsets.as_deref(), Some("offs"));
        assert_eq!(s.count.as_deref(), Some("nr"));
        let s = PrintfSpec::parse("msg=fmt,body").unwrap();
        assert!(s.offsets.is_none() && s.count.is_none());
        assert!(PrintfSpec::parse("msg=fmt").is_err());
        assert!(PrintfSpec::parse("msg=fmt,body,offs").is_err());
    }
}
