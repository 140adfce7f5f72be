//! Turning an instrument into ri's own command line: parameters filled in,
//! each probe reference resolved to `KIND:PATH:FUNC` in the first target
//! that has the symbol, lost optional probes dropped with a note.

use std::{
    collections::{BTreeMap, HashMap},
    path::{Path, PathBuf},
};

use super::{
    PackError,
    format::{Instrument, PackFile, ProbeDef, probe_kind, probe_ref},
};
use crate::{elf::ElfFile, target, usdt::Note};

/// Replaces `{P}`, `{P.container}` and `{P.key}` in `text` by parameter
/// values (`values` None: validation, every parameter 0).
pub fn fill_params(
    text: &str,
    inst: &Instrument,
    values: Option<&BTreeMap<String, String>>,
) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find('{') {
        out.push_str(&rest[..start]);
        let Some(len) = rest[start..].find('}') else {
            return Err("'{' without '}'".into());
        };
        let inner = &rest[start + 1..start + len];
        let (name, part) = match inner.split_once('.') {
            Some((n, p)) => (n, Some(p)),
            None => (inner, None),
        };
        let Some(param) = inst.params.get(name) else {
            return Err(format!("unknown parameter {{{inner}}}"));
        };
        let value = match values {
            None => String::new(),
            Some(v) => match v.get(name).or(param.default.as_ref()) {
                Some(x) => x.clone(),
                None => return Err(format!("needs {name}=VALUE ({})", param.help)),
            },
        };
        let filled = match part {
            None if values.is_none() => "0".to_string(),
            None => value,
            Some(p @ ("container" | "key")) if param.fid => {
                let fid = fid_of(&value)?;
                let word = if p == "container" {
                    fid.container
                } else {
                    fid.key
                };
                format!("{word:#x}")
            }
            Some(p) => return Err(format!("unknown parameter part {{{name}.{p}}}")),
        };
        out.push_str(&filled);
        rest = &rest[start + len + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// A fid parameter: empty (0), a fid `<hex:hex>`, or an object name mapped
/// as `ri fid of` does.
fn fid_of(v: &str) -> Result<crate::fid::Fid, String> {
    if v.is_empty() {
        return Ok(crate::fid::Fid {
            container: 0,
            key: 0,
        });
    }
    if v.starts_with('<') {
        return crate::fid::Fid::parse(v).map_err(|e| e.to_string());
    }
    let (hi, lo) = crate::fid::id_of(v);
    Ok(crate::fid::Fid::gob(hi, lo))
}

/// Where and how long to look: what `ri run` was given.
pub struct Scope<'a> {
    /// `-p` or `-c`: where target names are looked up.
    pub names: target::Scope,
    /// `--target`.
    pub target: Option<&'a str>,
}

/// Caches symbol tables and USDT notes while one instrument resolves.
#[derive(Default)]
pub struct Resolver {
    elf: HashMap<PathBuf, Option<ElfFile>>,
    notes: HashMap<PathBuf, Vec<Note>>,
}

impl Resolver {
    /// Whether `path` has the probe point `at`.
    fn has(&mut self, path: &Path, at: &str) -> bool {
        let Some((kind, rest)) = probe_kind(at) else {
            return false;
        };
        if kind == "usdt" {
            let notes = self
                .notes
                .entry(path.to_path_buf())
                .or_insert_with(|| crate::usdt::read_notes(path).unwrap_or_default());
            let (provider, name) = match rest.split_once(':') {
                Some((p, n)) => (Some(p), n),
                None => (None, rest),
            };
            return notes.iter().any(|n| {
                provider.is_none_or(|p| crate::elf::glob_match(p, &n.provider))
                    && crate::elf::glob_match(name, &n.name)
            });
        }
        self.elf
            .entry(path.to_path_buf())
            .or_insert_with(|| ElfFile::open(path).ok())
            .as_ref()
            .is_some_and(|f| {
                if rest.contains(['*', '?']) {
                    !f.matching(rest).is_empty()
                } else {
                    f.function(rest).is_ok()
                }
            })
    }

    /// The file that has `def`'s symbol, or why none does.
    fn locate(
        &mut self,
        pack: &PackFile,
        def: &ProbeDef,
        scope: &Scope<'_>,
    ) -> Result<PathBuf, Lost> {
        let sym = probe_kind(&def.at).map_or(def.at.as_str(), |(_, r)| r);
        let targets = if def.targets.is_empty() {
            &pack.pack.targets
        } else {
            &def.targets
        };
        if let Some(t) = scope.target {
            let path = target::resolve(t, &scope.names).map_err(|e| Lost::Fatal(e.to_string()))?;
            return if self.has(&path, &def.at) {
                Ok(path)
            } else {
                Err(Lost::Missing(format!(
                    "{sym} not found in {}",
                    path.display()
                )))
            };
        }
        let names = targets.join(", ");
        let pids = &scope.names.pids;
        if !pids.is_empty() {
            for &pid in pids {
                let files = target::mapped_files(pid).map_err(|e| Lost::Fatal(e.to_string()))?;
                for name in targets {
                    for f in files.iter().filter(|f| matches_target(f, name)) {
                        if self.has(f, &def.at) {
                            return Ok(f.clone());
                        }
                    }
                }
                // A library the process will dlopen, found by its loader.
                for name in targets.iter().filter(|n| !n.contains(['/', '*', '?'])) {
                    if let Some(f) = target::in_process(name, pid)
                        && self.has(&f, &def.at)
                    {
                        return Ok(f);
                    }
                }
            }
            // None of the targets is in the processes yet: a required probe
            // waits for the first library target to be mapped (dlopen).
            let mapped = |pid: u32| target::mapped_files(pid).unwrap_or_default();
            let present = pids.iter().any(|&pid| {
                mapped(pid)
                    .iter()
                    .any(|f| targets.iter().any(|t| matches_target(f, t)))
            });
            let library = targets.iter().find(|n| target::waitable(n));
            if !present
                && !def.optional
                && let Some(lib) = library
            {
                return Ok(PathBuf::from(lib));
            }
            let pids: Vec<String> = pids.iter().map(u32::to_string).collect();
            return Err(Lost::Missing(format!(
                "{sym} not found in PID {}'s executable or libraries (looked in {names})",
                pids.join("/")
            )));
        }
        let mut candidates = Vec::new();
        // The -c command's program and libraries, for every kind of name.
        if let Some(l) = scope.names.command_load() {
            for name in targets {
                candidates.extend(
                    l.files()
                        .filter(|f| matches_target(f, name))
                        .map(|f| f.canonicalize().unwrap_or_else(|_| f.to_path_buf())),
                );
            }
        }
        for name in targets {
            if name.contains('/') && name.contains(['*', '?']) {
                candidates.extend(glob_paths(name));
            } else if let Ok(p) = target::resolve(name, &scope.names) {
                candidates.push(p);
            }
        }
        for c in &candidates {
            if self.has(c, &def.at) {
                return Ok(c.clone());
            }
        }
        Err(Lost::Missing(format!(
            "{sym} not found in {names} (give -p PID or --target PATH)"
        )))
    }
}

/// Why a probe point was not found.
enum Lost {
    /// Not in any target.
    Missing(String),
    /// The scope itself is wrong (no such pid, no such file).
    Fatal(String),
}

/// Whether mapped file `f` is the pack target `name` (a path, a glob over
/// the file name, or a program or library name).
fn matches_target(f: &Path, name: &str) -> bool {
    if name.contains('/') {
        return if name.contains(['*', '?']) {
            glob_paths(name).iter().any(|p| p == f)
        } else {
            Path::new(name).canonicalize().ok().as_deref() == Some(f)
        };
    }
    let Some(base) = f.file_name().and_then(|n| n.to_str()) else {
        return false;
    };
    if name.contains(['*', '?']) {
        crate::elf::glob_match(name, base)
    } else {
        target::is_library(base, name)
    }
}

/// The files matching an absolute path whose components may hold globs
/// (`/usr/lib/postgresql/*/bin/postgres`), in name order.
fn glob_paths(pattern: &str) -> Vec<PathBuf> {
    let mut found = vec![PathBuf::from("/")];
    for part in pattern.split('/').filter(|p| !p.is_empty()) {
        let mut next = Vec::new();
        for dir in &found {
            if !part.contains(['*', '?']) {
                let p = dir.join(part);
                if p.exists() {
                    next.push(p);
                }
                continue;
            }
            next.extend(target::files_named(dir, |n| {
                crate::elf::glob_match(part, n)
            }));
        }
        found = next;
    }
    found
        .into_iter()
        .map(|p| p.canonicalize().unwrap_or(p))
        .collect()
}

/// An instrument ready to run.
pub struct Expanded {
    /// ri's command line, without the leading `ri`.
    pub argv: Vec<String>,
    /// One line per lost optional probe.
    pub notes: Vec<String>,
}

/// Expands `pack.inst` for `scope`, with `params` given as NAME=VALUE.
pub fn expand(
    pack: &PackFile,
    iname: &str,
    inst: &Instrument,
    params: &BTreeMap<String, String>,
    scope: &Scope<'_>,
) -> Result<Expanded, PackError> {
    let full = format!("{}.{iname}", pack.pack.name);
    for k in params.keys() {
        if !inst.params.contains_key(k) {
            let known: Vec<&str> = inst.params.keys().map(String::as_str).collect();
            return Err(PackError::Invalid(format!(
                "{full}: unknown parameter {k} ({})",
                if known.is_empty() {
                    "it takes none".to_string()
                } else {
                    format!("it takes {}", known.join(", "))
                }
            )));
        }
    }
    let mut resolver = Resolver::default();
    let mut notes = Vec::new();
    let mut resolve = |field: &str, text: &str| -> Result<Option<String>, PackError> {
        let r = probe_ref(text);
        let def = pack
            .probes
            .get(r)
            .ok_or_else(|| PackError::Invalid(format!("{full}: {field}: unknown probe '{r}'")))?;
        let tail = fill_params(&text.trim_start()[r.len()..], inst, Some(params))
            .map_err(|e| PackError::Invalid(format!("{full}: {e}")))?;
        match resolver.locate(pack, def, scope) {
            Ok(path) => {
                let (kind, rest) = probe_kind(&def.at).unwrap_or(("u", ""));
                Ok(Some(format!("{kind}:{}:{rest}{tail}", path.display())))
            }
            Err(Lost::Fatal(e)) => Err(PackError::Invalid(format!("{full}: {e}"))),
            Err(Lost::Missing(why)) if def.optional => {
                notes.push(format!(
                    "{full} lost probe {r} (optional): {why}; inlined or stripped?"
                ));
                Ok(None)
            }
            Err(Lost::Missing(why)) => Err(PackError::Missing(format!("{full}: {why}"))),
        }
    };
    let argv = build(inst, &full, params, &mut resolve);
    match argv {
        Ok(argv) => Ok(Expanded { argv, notes }),
        // One line: what is missing, with the optional probes already lost.
        Err(PackError::Missing(m)) if !notes.is_empty() => Err(PackError::Missing(format!(
            "{m}, nothing to run ({})",
            notes.join("; ")
        ))),
        Err(PackError::Missing(m)) => Err(PackError::Missing(format!("{m}, nothing to run"))),
        Err(e) => Err(e),
    }
}

/// Resolves one probe reference of a field: the probe string, or `None`
/// when it is a lost optional probe.
type ResolveRef<'r> = dyn FnMut(&str, &str) -> Result<Option<String>, PackError> + 'r;

/// The command line of `inst`, its probe references resolved by `resolve`.
fn build(
    inst: &Instrument,
    full: &str,
    params: &BTreeMap<String, String>,
    resolve: &mut ResolveRef<'_>,
) -> Result<Vec<String>, PackError> {
    let kind = inst.kind.as_str();
    let mut argv = vec![kind.to_string()];
    let one = |v: Option<String>, field: &str| {
        v.ok_or_else(|| PackError::Missing(format!("{full}: its {field} probe is missing")))
    };
    match kind {
        "trace" | "count" | "hist" => {
            let mut any = false;
            for p in &inst.probes {
                if let Some(s) = resolve("probes", p)? {
                    argv.push(s);
                    any = true;
                }
            }
            if !any {
                return Err(PackError::Missing(format!(
                    "{full}: every probe is missing"
                )));
            }
            if let Some(w) = &inst.within {
                let w = resolve("within", w)?;
                argv.extend(["--within".into(), one(w, "within")?]);
            }
        }
        "latency" if inst.probe.is_some() => {
            let p = resolve("probe", inst.probe.as_deref().unwrap_or_default())?;
            argv.push(one(p, "probe")?);
        }
        "latency" | "inflight" => {
            let b = resolve("begin", inst.begin.as_deref().unwrap_or_default())?;
            let e = resolve("end", inst.end.as_deref().unwrap_or_default())?;
            argv.extend(["--begin".into(), one(b, "begin")?]);
            argv.extend(["--end".into(), one(e, "end")?]);
            // A lost optional update only leaves its field as it began.
            for u in &inst.update {
                if let Some(p) = resolve("update", u)? {
                    argv.extend(["--update".into(), p]);
                }
            }
            // A lost optional seen probe only hides what began before.
            for u in &inst.seen {
                if let Some(p) = resolve("seen", u)? {
                    argv.extend(["--seen".into(), p]);
                }
            }
        }
        "leaks" => {
            // The first allocator and release function found are the
            // positional ones, the others --also-alloc and --also-free; a
            // lost optional one only leaves its blocks unseen.
            let mut also = Vec::new();
            for (field, refs, flag) in [
                ("alloc", &inst.alloc, "--also-alloc"),
                ("free", &inst.free, "--also-free"),
            ] {
                let mut found = Vec::new();
                for r in refs {
                    if let Some(p) = resolve(field, r)? {
                        found.push(p);
                    }
                }
                let mut found = found.into_iter();
                argv.push(one(found.next(), field)?);
                also.extend(found.flat_map(|p| [flag.to_string(), p]));
            }
            argv.extend(also);
        }
        _ => {}
    }
    let fill = |s: &str| {
        fill_params(s, inst, Some(params)).map_err(|e| PackError::Invalid(format!("{full}: {e}")))
    };
    for b in &inst.by {
        argv.extend(["--by".into(), fill(b)?]);
    }
    for (key, expr) in &inst.labels {
        argv.extend(["--label".into(), format!("{key}={}", fill(expr)?)]);
    }
    for (flag, v) in [
        ("--value", &inst.value),
        ("--size", &inst.size),
        ("--free-ptr", &inst.free_ptr),
    ] {
        if let Some(v) = v {
            argv.extend([flag.into(), fill(v)?]);
        }
    }
    if let Some(n) = inst.top {
        argv.extend(["--top".into(), n.to_string()]);
    }
    if inst.stack {
        argv.push("--stack".into());
    }
    for p in &inst.printf {
        argv.extend(["--printf".into(), p.to_string()]);
    }
    if let Some(t) = &inst.text {
        argv.extend(["--text".into(), t.clone()]);
    }
    Ok(argv)
}
