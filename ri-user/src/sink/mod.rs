//! Where decoded events go: human lines or one JSON object per line.

mod template;

use std::io::{self, Write};

use std::rc::Rc;

pub use template::Template;

use crate::{
    decode::{Event, Value},
    dwarf,
    plan::Field,
    stack::Resolved,
};

/// Decodes a captured object with its debug-info type (pointers print as
/// addresses: they are not followed in events).
pub fn render(
    bytes: &[u8],
    t: &crate::plan::TypeRef,
    opts: &dwarf::value::Options,
) -> dwarf::value::Value {
    dwarf::value::decode(&t.dbg, t.ty, bytes, None, &dwarf::value::NoMemory, opts)
}

/// A whole value as text on one line (its multi-line rendering folded),
/// for an event's line or an aggregation key.
pub fn one_line(bytes: &[u8], t: &crate::plan::TypeRef, opts: &dwarf::value::Options) -> String {
    let text = render(bytes, t, opts).to_text();
    text.lines().map(str::trim).collect::<Vec<_>>().join(" ")
}

/// How sinks print whole values: one level deep, through `formatters`.
pub fn value_options(formatters: dwarf::value::Formatters) -> dwarf::value::Options {
    dwarf::value::Options {
        formatters,
        ..Default::default()
    }
}

/// What a sink needs to know about the probe site of an event.
pub struct SiteInfo<'a> {
    /// Full probe name, e.g. `uprobe:/usr/bin/x:main`.
    pub probe: &'a str,
    /// Short name for human output, e.g. `u:main`.
    pub short: &'a str,
    /// Capture fields.
    pub fields: &'a [Field],
    /// The symbolized stacks of the event's `stack` fields, in order.
    pub stacks: &'a [Rc<Resolved>],
}

/// An output format.
pub trait Sink {
    /// Writes one event.
    fn event(&mut self, site: &SiteInfo<'_>, ev: &Event<'_>) -> io::Result<()>;
    /// Flushes buffered output.
    fn flush(&mut self) -> io::Result<()>;
}

/// Human-readable lines: `u:func pid=1 tid=1 name=value ...`.
pub struct TextSink<W: Write> {
    out: W,
    opts: dwarf::value::Options,
    /// `--text`: the line laid out from the fields instead.
    template: Option<Template>,
    /// The line being built, kept between events (no allocation per event).
    line: Vec<u8>,
}

impl<W: Write> TextSink<W> {
    /// A text sink over `out`; whole values print with `formatters`, lines
    /// as `template` when given.
    pub fn new(out: W, formatters: dwarf::value::Formatters, template: Option<Template>) -> Self {
        TextSink {
            out,
            opts: value_options(formatters),
            template,
            line: Vec::with_capacity(256),
        }
    }

    /// The event's line from the template, when it has every field.
    fn templated(&self, site: &SiteInfo<'_>, ev: &Event<'_>) -> Option<String> {
        let t = self.template.as_ref()?;
        t.render(|name| {
            if let Some(i) = site.fields.iter().position(|f| f.name == name) {
                return plain_text(ev.values.get(i)?, &self.opts);
            }
            let (_, text) = ev.extra.iter().find(|(n, _)| n == name)?;
            let mut out = String::new();
            text_bytes(text.as_bytes(), &mut out);
            Some(out)
        })
    }
}

/// A value as it reads inside a `--text` line: strings without quotes.
fn plain_text(v: &Value<'_>, opts: &dwarf::value::Options) -> Option<String> {
    Some(match v {
        Value::U64(x) => x.to_string(),
        Value::I64(x) => x.to_string(),
        Value::Hex(x) | Value::Stack(x, _) => format!("{x:#x}"),
        Value::Str(s) | Value::Bytes(s) => {
            let mut out = String::new();
            text_bytes(s, &mut out);
            out
        }
        Value::Late { bytes, .. } => {
            let mut out = String::new();
            text_bytes(bytes, &mut out);
            out
        }
        Value::Enum(_, Some(n)) => n.to_string(),
        Value::Enum(v, None) => v.to_string(),
        Value::Object(bytes, t) => one_line(bytes, t, opts),
        Value::Fault | Value::ReadFailed { .. } => return None,
    })
}

/// [`push_text`] onto a string.
fn text_bytes(b: &[u8], out: &mut String) {
    let mut v = Vec::with_capacity(b.len());
    push_text(b, &mut v);
    // ASCII only.
    out.extend(v.iter().map(|&c| char::from(c)));
}

/// Bytes as they print inside a text line: printable ASCII as is, the rest
/// (and `"`, `\`) as `\xNN`.
fn push_text(b: &[u8], out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for &c in b {
        if (0x20..0x7f).contains(&c) && c != b'"' && c != b'\\' {
            out.push(c);
        } else {
            out.extend_from_slice(&[
                b'\\',
                b'x',
                HEX[usize::from(c >> 4)],
                HEX[usize::from(c & 15)],
            ]);
        }
    }
}

impl<W: Write> Sink for TextSink<W> {
    fn event(&mut self, site: &SiteInfo<'_>, ev: &Event<'_>) -> io::Result<()> {
        if let Some(mut line) = self.templated(site, ev) {
            line.push('\n');
            return self.out.write_all(line.as_bytes());
        }
        let line = &mut self.line;
        line.clear();
        line.extend_from_slice(site.short.as_bytes());
        line.extend_from_slice(b" pid=");
        push_int(line, ev.header.pid);
        line.extend_from_slice(b" tid=");
        push_int(line, ev.header.tid);
        let mut stacks = site.stacks.iter();
        let mut below = Vec::new();
        for (f, v) in site.fields.iter().zip(&ev.values) {
            line.push(b' ');
            line.extend_from_slice(f.name.as_bytes());
            line.push(b'=');
            match v {
                Value::U64(x) => push_int(line, *x),
                Value::I64(x) => push_int(line, *x),
                Value::Hex(x) => write!(line, "{x:#x}")?,
                Value::Str(s) | Value::Bytes(s) => {
                    line.push(b'"');
                    push_text(s, line);
                    line.push(b'"');
                }
                Value::Enum(_, Some(n)) => line.extend_from_slice(n.as_bytes()),
                Value::Enum(v, None) => write!(line, "{v}")?,
                Value::Object(bytes, t) => {
                    line.extend_from_slice(one_line(bytes, t, &self.opts).as_bytes())
                }
                Value::Stack(v, _) => match stacks.next() {
                    // Frames go on their own lines under the event.
                    Some(r) => {
                        write!(line, "{} frames", r.frames.len())?;
                        r.write_text(&mut below, "    ")?;
                    }
                    None => write!(line, "{v:#x}")?,
                },
                Value::Late { bytes, .. } => {
                    line.push(b'"');
                    push_text(bytes, line);
                    line.push(b'"');
                }
                Value::Fault | Value::ReadFailed { .. } => line.extend_from_slice(b"<fault>"),
            }
        }
        for (name, text) in &ev.extra {
            line.push(b' ');
            line.extend_from_slice(name.as_bytes());
            line.extend_from_slice(b"=\"");
            push_text(text.as_bytes(), line);
            line.push(b'"');
        }
        line.push(b'\n');
        self.out.write_all(line)?;
        if !below.is_empty() {
            self.out.write_all(&below)?;
        }
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// One JSON object per event: `probe`, `pid`, `tid`, `cpu`, `ts_ns`, then
/// the captures by name (strings as text, bytes as hex, faults as `null`;
/// a string or bytes read from the file after the kernel's read failed is
/// followed by `"NAME@late": true`).
pub struct JsonSink<W: Write> {
    out: W,
    opts: dwarf::value::Options,
    /// The line being built, kept between events (no allocation per event).
    line: Vec<u8>,
}

impl<W: Write> JsonSink<W> {
    /// A JSON-lines sink over `out`; whole values print with `formatters`.
    pub fn new(out: W, formatters: dwarf::value::Formatters) -> Self {
        JsonSink {
            out,
            opts: value_options(formatters),
            line: Vec::with_capacity(256),
        }
    }
}

/// Bytes as a JSON string of hex digits.
fn push_hex(bytes: &[u8], line: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    line.push(b'"');
    for c in bytes {
        line.extend_from_slice(&[HEX[usize::from(c >> 4)], HEX[usize::from(c & 15)]]);
    }
    line.push(b'"');
}

/// `v` as a JSON string, appended.
fn push_json<T: serde::Serialize + ?Sized>(line: &mut Vec<u8>, v: &T) -> io::Result<()> {
    serde_json::to_writer(line, v).map_err(io::Error::other)
}

/// `s` as a JSON string, appended: as is between quotes when nothing in
/// it needs escaping (probe and field names, every event), else escaped.
fn push_json_str(line: &mut Vec<u8>, s: &str) -> io::Result<()> {
    if s.bytes().all(|c| c >= 0x20 && c != b'"' && c != b'\\') {
        line.push(b'"');
        line.extend_from_slice(s.as_bytes());
        line.push(b'"');
        Ok(())
    } else {
        push_json(line, s)
    }
}

/// An integer in decimal, appended.
fn push_int<I: itoa::Integer>(line: &mut Vec<u8>, v: I) {
    line.extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
}

impl<W: Write> Sink for JsonSink<W> {
    fn event(&mut self, site: &SiteInfo<'_>, ev: &Event<'_>) -> io::Result<()> {
        let h = &ev.header;
        let line = &mut self.line;
        line.clear();
        line.extend_from_slice(b"{\"probe\":");
        push_json_str(line, site.probe)?;
        for (key, v) in [
            (&b",\"pid\":"[..], u64::from(h.pid)),
            (b",\"tid\":", u64::from(h.tid)),
            (b",\"cpu\":", u64::from(h.cpu)),
            (b",\"ts_ns\":", h.ts_ns),
        ] {
            line.extend_from_slice(key);
            push_int(line, v);
        }
        let mut stacks = site.stacks.iter();
        for (f, v) in site.fields.iter().zip(&ev.values) {
            line.push(b',');
            push_json_str(line, &f.name)?;
            line.push(b':');
            match v {
                Value::U64(x) => push_int(line, *x),
                Value::I64(x) => push_int(line, *x),
                Value::Hex(x) => write!(line, "\"{x:#x}\"")?,
                Value::Str(s) => push_json(line, &*String::from_utf8_lossy(s))?,
                Value::Bytes(b) => push_hex(b, line),
                Value::Enum(_, Some(n)) => push_json(line, n)?,
                Value::Enum(v, None) => write!(line, "{v}")?,
                Value::Object(bytes, t) => {
                    write!(line, "{}", render(bytes, t, &self.opts).to_json())?
                }
                Value::Stack(v, _) => match stacks.next() {
                    Some(r) => write!(line, "{}", r.json())?,
                    None => write!(line, "\"{v:#x}\"")?,
                },
                Value::Late { bytes, str } => {
                    if *str {
                        push_json(line, &*String::from_utf8_lossy(bytes))?;
                    } else {
                        push_hex(bytes, line);
                    }
                    // Read from the file after the event, not by the kernel.
                    line.push(b',');
                    push_json(line, &format!("{}@late", f.name))?;
                    line.extend_from_slice(b":true");
                }
                Value::Fault | Value::ReadFailed { .. } => line.extend_from_slice(b"null"),
            }
        }
        for (name, text) in &ev.extra {
            line.push(b',');
            push_json(line, name)?;
            line.push(b':');
            push_json(line, text)?;
        }
        line.extend_from_slice(b"}\n");
        self.out.write_all(line)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}
