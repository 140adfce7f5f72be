//! The pack file format (`probes/README.md` is its reference): parsing with
//! serde and `toml`, then validation of what serde cannot check, each fault
//! one line naming the pack, the instrument or probe, and the field.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::PackError;
use crate::trace::PrintfSpec;

/// A pack file as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PackFile {
    /// Name, help and targets.
    pub pack: Header,
    /// Type name (struct tag or typedef) → built-in formatter name.
    #[serde(default)]
    pub formatters: BTreeMap<String, String>,
    /// Probe points by name.
    #[serde(default)]
    pub probes: BTreeMap<String, ProbeDef>,
    /// Instruments by name.
    #[serde(default)]
    pub instruments: BTreeMap<String, Instrument>,
    /// State views by name (`ri view PACK.VIEW`).
    #[serde(default)]
    pub views: BTreeMap<String, ViewDef>,
}

/// One view of `[views]`: walks over memory and the fields of each element.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ViewDef {
    /// One line.
    pub help: String,
    /// Names of the positional arguments (`ri view motr.btree ADDRESS`),
    /// usable in the expressions.
    #[serde(default)]
    pub args: Vec<String>,
    /// Nested steps `NAME = WALK`, or `NAME = LABEL: WALK, LABEL: WALK`
    /// (`$NAME` is then the label).
    #[serde(default)]
    pub walk: Vec<String>,
    /// Columns, `NAME = EXPR` over the names the steps bind.
    #[serde(default)]
    pub fields: Vec<String>,
}

/// `[pack]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Header {
    /// The pack's name, the `PACK` of `PACK.INSTRUMENT`.
    pub name: String,
    /// One line.
    pub help: String,
    /// Binaries and libraries to look in, in order (names, globs or paths).
    #[serde(default)]
    pub targets: Vec<String>,
}

/// One probe point of `[probes]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbeDef {
    /// `u:FUNC`, `ur:FUNC` or `usdt:[PROVIDER:]NAME`.
    pub at: String,
    /// The instruments using it still run when it is missing.
    #[serde(default)]
    pub optional: bool,
    /// Targets for this probe instead of the pack's.
    #[serde(default)]
    pub targets: Vec<String>,
}

/// One instrument of `[instruments]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Instrument {
    /// One line (what it shows, and what it cannot see).
    pub help: String,
    /// trace, count, hist, latency, inflight or leaks.
    pub kind: String,
    /// trace, count, hist: probe references with captures/filters.
    #[serde(default)]
    pub probes: Vec<String>,
    /// latency: the entry probe.
    pub probe: Option<String>,
    /// inflight, keyed latency: where an operation begins.
    pub begin: Option<String>,
    /// inflight, keyed latency: where it ends.
    pub end: Option<String>,
    /// inflight: probes that rewrite a field while in flight
    /// (`probe(key=EXPR, FIELD=EXPR)`).
    #[serde(default)]
    pub update: Vec<String>,
    /// inflight: probes that add an operation begun before attaching when
    /// they first see it, with the begin probe's fields.
    #[serde(default)]
    pub seen: Vec<String>,
    /// leaks: the allocators' entries (a probe reference or a list).
    #[serde(default, deserialize_with = "one_or_many")]
    pub alloc: Vec<String>,
    /// leaks: the deallocators' entries (a probe reference or a list).
    #[serde(default, deserialize_with = "one_or_many")]
    pub free: Vec<String>,
    /// count, hist, latency: group keys (`EXPR` or `NAME=EXPR`).
    #[serde(default)]
    pub by: Vec<String>,
    /// count, hist, latency, inflight: key name → the address of a C
    /// string naming its values (`ri ... --label KEY=EXPR`).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// hist: the value.
    pub value: Option<String>,
    /// leaks: the size expression at the allocator's entry.
    pub size: Option<String>,
    /// leaks: the freed pointer at the deallocator's entry.
    pub free_ptr: Option<String>,
    /// leaks: how many stacks to print.
    pub top: Option<u32>,
    /// trace, count, inflight, leaks: with user stacks.
    #[serde(default)]
    pub stack: bool,
    /// Aggregations: the default print interval in seconds.
    pub interval: Option<f64>,
    /// trace: show only events during calls of this probe's function on
    /// the same thread, with its captures first (`ri trace --within`).
    pub within: Option<String>,
    /// trace: fields formatted like printf in user space.
    #[serde(default)]
    pub printf: Vec<PrintfSpec>,
    /// trace: text lines laid out from the fields (`ri trace --text`).
    pub text: Option<String>,
    /// Parameters given as NAME=VALUE on `ri run`.
    #[serde(default)]
    pub params: BTreeMap<String, Param>,
}

/// A string, or a list of strings (`alloc = "a"` or `alloc = ["a", "b"]`).
fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    struct Refs;
    impl<'de> serde::de::Visitor<'de> for Refs {
        type Value = Vec<String>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a probe name or a list of probe names")
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Vec<String>, E> {
            Ok(vec![v.to_string()])
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut seq: A,
        ) -> Result<Vec<String>, A::Error> {
            let mut v = Vec::new();
            while let Some(s) = seq.next_element::<String>()? {
                v.push(s);
            }
            Ok(v)
        }
    }
    d.deserialize_any(Refs)
}

/// An instrument parameter.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Param {
    /// One line.
    pub help: String,
    /// Used when the parameter is not given (else it is required).
    pub default: Option<String>,
    /// The value names a Motr object or fid: `{P.container}`/`{P.key}`.
    #[serde(default)]
    pub fid: bool,
}

/// Instrument kinds and the fields each one takes besides help, kind,
/// params and interval.
pub const KINDS: &[(&str, &[&str])] = &[
    ("trace", &["probes", "stack", "printf", "within", "text"]),
    ("count", &["probes", "by", "labels", "stack"]),
    ("hist", &["probes", "by", "labels", "value"]),
    ("latency", &["probe", "begin", "end", "by", "labels"]),
    (
        "inflight",
        &["begin", "end", "update", "seen", "labels", "stack"],
    ),
    (
        "leaks",
        &["alloc", "free", "size", "free_ptr", "top", "stack"],
    ),
];

/// The probe kinds of `at`, long and short.
pub fn probe_kind(at: &str) -> Option<(&'static str, &str)> {
    let (k, rest) = at.split_once(':')?;
    let kind = match k {
        "u" | "uprobe" => "u",
        "ur" | "uretprobe" => "ur",
        "usdt" => "usdt",
        _ => return None,
    };
    Some((kind, rest))
}

/// Parses a pack file's text; `origin` names it in errors.
pub fn parse(text: &str, origin: &str) -> Result<PackFile, PackError> {
    let file: PackFile = toml::from_str(text).map_err(|e| {
        let line = e
            .span()
            .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
        let section = line.and_then(|l| section_at(text, l));
        let msg = e.message().lines().next().unwrap_or("bad TOML").to_string();
        PackError::Invalid(match (line, section) {
            (Some(l), Some(s)) => format!("pack {origin}, line {l}, [{s}]: {msg}"),
            (Some(l), None) => format!("pack {origin}, line {l}: {msg}"),
            _ => format!("pack {origin}: {msg}"),
        })
    })?;
    validate(&file, origin)?;
    Ok(file)
}

/// The `[table]` header above line `line` (1-based).
fn section_at(text: &str, line: usize) -> Option<String> {
    text.lines()
        .take(line)
        .filter_map(|l| {
            let l = l.trim();
            (l.starts_with('[') && !l.starts_with("[["))
                .then(|| l.trim_matches(|c| c == '[' || c == ']').to_string())
        })
        .last()
}

fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// The probe reference at the start of `text`: `NAME` before `(`, space or end.
pub fn probe_ref(text: &str) -> &str {
    let t = text.trim_start();
    let end = t
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'))
        .unwrap_or(t.len());
    &t[..end]
}

fn validate(f: &PackFile, origin: &str) -> Result<(), PackError> {
    let pack = &f.pack.name;
    let bad = |what: String| PackError::Invalid(format!("pack {pack} ({origin}), {what}"));
    if !is_name(pack) {
        return Err(PackError::Invalid(format!(
            "pack {origin}: name '{pack}' must be letters, digits, _ or -"
        )));
    }
    let known: Vec<&str> = crate::dwarf::value::NAMED.iter().map(|(n, _)| *n).collect();
    for (ty, fmt) in &f.formatters {
        if !known.contains(&fmt.as_str()) {
            return Err(bad(format!(
                "formatter for '{ty}': unknown formatter '{fmt}' (known: {})",
                known.join(", ")
            )));
        }
    }
    for (name, v) in &f.views {
        if !is_name(name) {
            return Err(bad(format!(
                "view '{name}': a name is letters, digits, _ or -"
            )));
        }
        super::view_def::check_def(v).map_err(|e| bad(format!("view {name}: {e}")))?;
    }
    for (name, p) in &f.probes {
        let Some((kind, rest)) = probe_kind(&p.at) else {
            return Err(bad(format!(
                "probe {name}: at = '{}': unknown probe kind (u:FUNC, ur:FUNC, usdt:[PROVIDER:]NAME)",
                p.at
            )));
        };
        let parts = rest.split(':').count();
        let ok = !rest.is_empty()
            && !rest.contains(['(', ' '])
            && if kind == "usdt" {
                parts <= 2
            } else {
                parts == 1
            };
        if !ok {
            return Err(bad(format!(
                "probe {name}: at = '{}': expected {} (no target: the pack's targets are searched)",
                p.at,
                if kind == "usdt" {
                    "usdt:[PROVIDER:]NAME"
                } else {
                    "u:FUNC or ur:FUNC"
                }
            )));
        }
    }
    for (iname, inst) in &f.instruments {
        let bad = |what: String| {
            PackError::Invalid(format!(
                "pack {pack} ({origin}), instrument {iname}: {what}"
            ))
        };
        let Some((_, allowed)) = KINDS.iter().find(|(k, _)| *k == inst.kind) else {
            return Err(bad(format!(
                "kind: unknown kind '{}' (known: {})",
                inst.kind,
                KINDS.iter().map(|k| k.0).collect::<Vec<_>>().join(", ")
            )));
        };
        for (field, set) in inst.fields_set() {
            if set && !allowed.contains(&field) {
                return Err(bad(format!(
                    "field {field} does not apply to kind {}",
                    inst.kind
                )));
            }
        }
        let need = |field: &str, ok: bool| {
            if ok {
                Ok(())
            } else {
                Err(bad(format!("kind {} needs field {field}", inst.kind)))
            }
        };
        match inst.kind.as_str() {
            "trace" | "count" => need("probes", !inst.probes.is_empty())?,
            "hist" => {
                need("probes", !inst.probes.is_empty())?;
                need("value", inst.value.is_some())?;
            }
            "latency" => {
                let keyed = inst.begin.is_some() || inst.end.is_some();
                if keyed {
                    need("begin", inst.begin.is_some())?;
                    need("end", inst.end.is_some())?;
                    if inst.probe.is_some() {
                        return Err(bad("give probe, or begin and end, not both".into()));
                    }
                } else {
                    need("probe (or begin and end)", inst.probe.is_some())?;
                }
            }
            "inflight" => {
                need("begin", inst.begin.is_some())?;
                need("end", inst.end.is_some())?;
            }
            "leaks" => {
                need("alloc", !inst.alloc.is_empty())?;
                need("free", !inst.free.is_empty())?;
            }
            _ => {}
        }
        if inst.help.trim().is_empty() || inst.help.contains('\n') {
            return Err(bad("help must be one line".into()));
        }
        for (field, text) in inst.probe_fields() {
            let r = probe_ref(text);
            let Some(def) = f.probes.get(r) else {
                return Err(bad(format!(
                    "{field}: unknown probe '{r}' (the pack's probes: {})",
                    f.probes.keys().cloned().collect::<Vec<_>>().join(", ")
                )));
            };
            // The rest must parse as the tail of a probe string.
            let tail = super::expand::fill_params(&text.trim_start()[r.len()..], inst, None)
                .map_err(|e| bad(format!("{field}: {e}")))?;
            let (kind, rest) = probe_kind(&def.at).unwrap_or(("u", ""));
            let probe = format!("{kind}:/pack:{rest}{tail}");
            if let Err(e) = crate::probe::parse_probe(&probe) {
                return Err(bad(format!("{field}: '{}': {}", text.trim(), e.message)));
            }
        }
        for p in &inst.printf {
            let names = inst.capture_names();
            for (what, v) in p.inputs() {
                if let Some(v) = v
                    && !names.iter().any(|n| n == v)
                {
                    return Err(bad(format!(
                        "printf {}: {what} = '{v}' is not a capture of its probes",
                        p.name
                    )));
                }
            }
        }
        if let Some(t) = &inst.text {
            let t = crate::sink::Template::parse(t).map_err(|e| bad(format!("text: {e}")))?;
            let names = inst.capture_names();
            let fields: Vec<crate::plan::Field> = (names.iter())
                .map(|n| crate::plan::Field {
                    name: n.clone(),
                    kind: crate::plan::FieldKind::Str,
                })
                .collect();
            let added: Vec<&str> = inst.printf.iter().map(|p| p.name.as_str()).collect();
            t.check(&[&fields], &added)
                .map_err(|e| bad(format!("text: {e}")))?;
        }
        for (key, expr) in &inst.labels {
            let by_names = inst.by.iter().filter_map(|b| crate::agg::split_name(b));
            let begin_names = inst.begin.as_deref().map(Instrument::captures_of);
            let known = by_names.map(|(n, _)| n.to_string()).chain(
                begin_names
                    .into_iter()
                    .flatten()
                    .filter(|n| n.as_str() != "key"),
            );
            if !known.clone().any(|n| &n == key) {
                let known: Vec<String> = known.collect();
                return Err(bad(format!(
                    "labels: '{key}' is not a key of the instrument (named keys: {})",
                    if known.is_empty() {
                        "none".to_string()
                    } else {
                        known.join(", ")
                    }
                )));
            }
            if expr.trim().is_empty() {
                return Err(bad(format!("labels: '{key}' has an empty expression")));
            }
        }
        if let Some(i) = inst.interval
            && !(i > 0.0 && i.is_finite())
        {
            return Err(bad(format!(
                "interval must be a positive number of seconds, not {i}"
            )));
        }
    }
    Ok(())
}

impl Instrument {
    /// Which optional fields are set.
    fn fields_set(&self) -> [(&'static str, bool); 17] {
        [
            ("probes", !self.probes.is_empty()),
            ("update", !self.update.is_empty()),
            ("seen", !self.seen.is_empty()),
            ("probe", self.probe.is_some()),
            ("begin", self.begin.is_some()),
            ("end", self.end.is_some()),
            ("alloc", !self.alloc.is_empty()),
            ("free", !self.free.is_empty()),
            ("by", !self.by.is_empty()),
            ("labels", !self.labels.is_empty()),
            ("value", self.value.is_some()),
            ("size", self.size.is_some()),
            ("free_ptr", self.free_ptr.is_some()),
            ("top", self.top.is_some()),
            ("printf", !self.printf.is_empty()),
            ("within", self.within.is_some()),
            ("text", self.text.is_some()),
        ]
    }

    /// Every field that holds a probe reference, with its name.
    pub fn probe_fields(&self) -> Vec<(&'static str, &str)> {
        let mut v: Vec<(&'static str, &str)> = self
            .probes
            .iter()
            .map(|p| ("probes", p.as_str()))
            .chain(self.update.iter().map(|p| ("update", p.as_str())))
            .chain(self.seen.iter().map(|p| ("seen", p.as_str())))
            .chain(self.alloc.iter().map(|p| ("alloc", p.as_str())))
            .chain(self.free.iter().map(|p| ("free", p.as_str())))
            .collect();
        for (name, f) in [
            ("probe", &self.probe),
            ("begin", &self.begin),
            ("end", &self.end),
            ("within", &self.within),
        ] {
            if let Some(t) = f {
                v.push((name, t.as_str()));
            }
        }
        v
    }

    /// Names of the captures `name=` in its probe strings (for printf).
    fn capture_names(&self) -> Vec<String> {
        (self.probe_fields().into_iter())
            .flat_map(|(_, text)| Self::captures_of(text))
            .collect()
    }

    /// Names of the captures `name=` of one probe reference.
    fn captures_of(text: &str) -> Vec<String> {
        let mut out = Vec::new();
        let Some(open) = text.find('(') else {
            return out;
        };
        let mut depth = 0;
        let mut start = open + 1;
        for (i, c) in text.char_indices().skip(open + 1) {
            match c {
                '(' | '[' => depth += 1,
                ')' | ']' if depth > 0 => depth -= 1,
                ',' | ')' if depth == 0 => {
                    if let Some((n, _)) = text[start..i].split_once('=') {
                        out.push(n.trim().to_string());
                    }
                    start = i + 1;
                    if c == ')' {
                        break;
                    }
                }
                _ => {}
            }
        }
        out
    }
}
