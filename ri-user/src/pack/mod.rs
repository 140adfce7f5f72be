//! Probe packs: named probe points, per-type formatters and named
//! instruments in TOML (`probes/README.md` is the format's reference).
//!
//! Packs are built into the binary and also read from `/usr/share/ri/probes`
//! (the package's), `/etc/ri/probes`, `~/.config/ri/probes` and `--pack
//! FILE`, in that order; a later pack of
//! the same name replaces an earlier one. `ri run PACK.INSTRUMENT` expands
//! the instrument into ri's own command line and runs it through the same
//! parser and dispatch as a direct invocation, so every flag is defined
//! once, in `cli`.

mod expand;
pub mod format;
pub(crate) mod view_def;

use std::{
    collections::BTreeMap,
    io::Write,
    path::{Path, PathBuf},
};

use serde_json::{Value, json};

pub use expand::{Expanded, Scope, expand};
pub use format::{Instrument, PackFile, parse};

/// Errors finding, reading or expanding packs.
#[derive(Debug, thiserror::Error)]
pub enum PackError {
    /// A pack file that cannot be read.
    #[error("pack {path}: {reason}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A pack file that does not follow the format.
    #[error("{0}")]
    Invalid(String),
    /// No pack of that name.
    #[error("no pack named '{name}' (packs: {known})")]
    UnknownPack {
        /// Asked for.
        name: String,
        /// What exists.
        known: String,
    },
    /// No instrument of that name.
    #[error("pack {pack} has no instrument '{name}' (instruments: {known})")]
    UnknownInstrument {
        /// The pack.
        pack: String,
        /// Asked for.
        name: String,
        /// What exists.
        known: String,
    },
    /// Not `PACK.INSTRUMENT`.
    #[error("'{0}': expected PACK.INSTRUMENT, e.g. motr.queue (see ri packs)")]
    BadName(String),
    /// A required probe point found nowhere.
    #[error("{0}")]
    Missing(String),
}

/// The packs built into the binary.
pub static BUILTIN: &[(&str, &str)] = &[
    ("motr", include_str!("../../../probes/motr.toml")),
    ("postgres", include_str!("../../../probes/postgres.toml")),
    ("libc", include_str!("../../../probes/libc.toml")),
    ("python", include_str!("../../../probes/python.toml")),
];

/// A pack and where it came from.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The pack.
    pub file: PackFile,
    /// `built in` or a path.
    pub origin: String,
    /// Where the packs it replaced came from.
    pub replaced: Vec<String>,
}

/// The folders searched for `*.toml` packs, in order.
pub fn folders() -> Vec<PathBuf> {
    let mut v = vec![
        PathBuf::from("/usr/share/ri/probes"),
        PathBuf::from("/etc/ri/probes"),
    ];
    if let Some(home) = std::env::var_os("HOME") {
        v.push(Path::new(&home).join(".config/ri/probes"));
    }
    v
}

fn read(path: &Path) -> Result<PackFile, PackError> {
    let text = std::fs::read_to_string(path).map_err(|e| PackError::Read {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    parse(&text, &path.display().to_string())
}

/// Every pack: built in, then the folders, then `files`; later ones of the
/// same name replace earlier ones.
pub fn load_all(files: &[PathBuf]) -> Result<Vec<Loaded>, PackError> {
    let mut found: Vec<(PackFile, String)> = Vec::new();
    for (name, text) in BUILTIN {
        found.push((parse(text, &format!("built-in {name}"))?, "built in".into()));
    }
    for dir in folders() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut paths: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .collect();
        paths.sort();
        for p in paths {
            found.push((read(&p)?, p.display().to_string()));
        }
    }
    for p in files {
        found.push((read(p)?, p.display().to_string()));
    }
    let mut out: Vec<Loaded> = Vec::new();
    for (file, origin) in found {
        match out.iter_mut().find(|l| l.file.pack.name == file.pack.name) {
            Some(l) => {
                let old = std::mem::replace(&mut l.origin, origin);
                l.replaced.push(old);
                l.file = file;
            }
            None => out.push(Loaded {
                file,
                origin,
                replaced: Vec::new(),
            }),
        }
    }
    Ok(out)
}

/// Finds the pack named `name`.
pub fn find_pack<'a>(packs: &'a [Loaded], name: &str) -> Result<&'a Loaded, PackError> {
    packs
        .iter()
        .find(|l| l.file.pack.name == name)
        .ok_or_else(|| PackError::UnknownPack {
            name: name.to_string(),
            known: packs
                .iter()
                .map(|l| l.file.pack.name.clone())
                .collect::<Vec<_>>()
                .join(", "),
        })
}

/// Finds `PACK.INSTRUMENT`.
pub fn find<'a>(packs: &'a [Loaded], full: &str) -> Result<(&'a Loaded, &'a str), PackError> {
    let (p, i) = full
        .split_once('.')
        .filter(|(p, i)| !p.is_empty() && !i.is_empty())
        .ok_or_else(|| PackError::BadName(full.to_string()))?;
    let pack = find_pack(packs, p)?;
    let (name, _) =
        pack.file
            .instruments
            .get_key_value(i)
            .ok_or_else(|| PackError::UnknownInstrument {
                pack: p.to_string(),
                name: i.to_string(),
                known: pack
                    .file
                    .instruments
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", "),
            })?;
    Ok((pack, name.as_str()))
}

/// What `ri run` was asked.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// `PACK.INSTRUMENT`.
    pub instrument: String,
    /// `NAME=VALUE`.
    pub params: Vec<String>,
    /// `-p`.
    pub pids: Vec<u32>,
    /// `--comm`, `--exe`.
    pub select: crate::select::Selection,
    /// `-c`.
    pub command: Option<String>,
    /// `--duration`.
    pub duration: Option<f64>,
    /// `-q`.
    pub quiet: bool,
    /// `--json`.
    pub json: bool,
    /// `--interval`.
    pub interval: Option<f64>,
    /// `--target`.
    pub target: Option<String>,
    /// `--pack`.
    pub packs: Vec<PathBuf>,
    /// Print the expanded command line.
    pub show: bool,
    /// `--max-overhead`, passed through.
    pub max_overhead: crate::budget::MaxOverhead,
}

/// What `ri run` stands for.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// ri's command line, without the leading `ri`.
    pub argv: Vec<String>,
    /// One line per lost optional probe.
    pub notes: Vec<String>,
}

/// The full command line `ri run` stands for, and the notes on lost probes.
pub fn command_line(opts: &RunOptions) -> Result<Prepared, crate::Error> {
    let packs = load_all(&opts.packs)?;
    let (loaded, iname) = find(&packs, &opts.instrument)?;
    let inst = &loaded.file.instruments[iname];
    let mut params = BTreeMap::new();
    for p in &opts.params {
        let (k, v) = p.split_once('=').ok_or_else(|| {
            PackError::Invalid(format!(
                "{}: parameter '{p}': expected NAME=VALUE",
                opts.instrument
            ))
        })?;
        params.insert(k.to_string(), v.to_string());
    }
    // Processes chosen by name resolve the pack's targets like -p, when
    // one runs already.
    let mut resolving = opts.pids.clone();
    let mut waiting = None;
    if !opts.select.is_empty() {
        let m = opts.select.matcher()?;
        let first = m.running().first().map(|f| f.pid);
        if first.is_none() && opts.pids.is_empty() && opts.target.is_none() {
            waiting = Some(m.what().to_string());
        }
        resolving.extend(first);
    }
    let scope = Scope {
        names: crate::target::Scope::new(&resolving, opts.command.as_deref()),
        target: opts.target.as_deref(),
    };
    for &pid in &opts.pids {
        crate::target::check_pid(pid)?;
    }
    let Expanded { mut argv, notes } = match expand(&loaded.file, iname, inst, &params, &scope) {
        // The pack's targets are found in a running process, and none runs.
        Err(PackError::Missing(_)) if let Some(what) = waiting => {
            return Err(crate::Error::Usage(format!(
                "{}: no process matches {what} yet: give --target PATH to wait for one",
                opts.instrument
            )));
        }
        r => r?,
    };
    for pid in &opts.pids {
        argv.extend(["-p".into(), pid.to_string()]);
    }
    for c in &opts.select.comms {
        argv.extend(["--comm".into(), c.clone()]);
    }
    for e in &opts.select.exes {
        argv.extend(["--exe".into(), e.display().to_string()]);
    }
    if let Some(c) = &opts.command {
        argv.extend(["-c".into(), c.clone()]);
    }
    if let Some(d) = opts.duration {
        argv.extend(["--duration".into(), d.to_string()]);
    }
    if opts.quiet {
        argv.push("-q".into());
    }
    if opts.json {
        argv.push("--json".into());
    }
    if let Some(m) = opts.max_overhead.flag() {
        argv.extend(["--max-overhead".into(), m]);
    }
    let aggregates = inst.kind != "trace";
    match opts.interval.or(inst.interval) {
        Some(i) if aggregates => argv.extend(["--interval".into(), i.to_string()]),
        Some(_) if opts.interval.is_some() => {
            return Err(crate::Error::Usage(format!(
                "{}: --interval applies to aggregating instruments; this one traces",
                opts.instrument
            )));
        }
        _ => {}
    }
    // The pack's [formatters] become --format choices.
    for (t, f) in &loaded.file.formatters {
        argv.extend(["--format".into(), format!("{t}={f}")]);
    }
    Ok(Prepared { argv, notes })
}

/// Quotes a command line for display.
pub(crate) fn shell_words(argv: &[String]) -> String {
    argv.iter()
        .map(|a| {
            if a.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_./:=,".contains(c))
            {
                a.clone()
            } else {
                format!("'{}'", a.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// What `ri packs` was asked.
#[derive(Debug, Clone, Default)]
pub struct ListOptions {
    /// One pack only, with its probe points.
    pub pack: Option<String>,
    /// `--pack`.
    pub files: Vec<PathBuf>,
    /// JSON.
    pub json: bool,
}

/// `ri packs`: the packs, where each came from, their instruments.
pub fn list(opts: &ListOptions, out: &mut impl Write) -> Result<(), crate::Error> {
    let packs = load_all(&opts.files)?;
    let shown: Vec<&Loaded> = match &opts.pack {
        None => packs.iter().collect(),
        Some(p) => vec![find_pack(&packs, p)?],
    };
    if opts.json {
        let v: Vec<Value> = shown.iter().map(|l| to_json(l)).collect();
        writeln!(out, "{}", Value::Array(v))?;
        return Ok(());
    }
    for l in shown {
        let f = &l.file;
        let mut from = format!("from {}", l.origin);
        if !l.replaced.is_empty() {
            from.push_str(&format!(", replacing {}", l.replaced.join(", ")));
        }
        writeln!(out, "{}  {}  ({from})", f.pack.name, f.pack.help)?;
        if !f.pack.targets.is_empty() {
            writeln!(out, "  targets: {}", f.pack.targets.join(", "))?;
        }
        let width = f
            .instruments
            .keys()
            .chain(f.views.keys())
            .map(|k| k.len() + f.pack.name.len() + 1)
            .max()
            .unwrap_or(0);
        for (name, inst) in &f.instruments {
            let full = format!("{}.{name}", f.pack.name);
            let params: String = inst.params.keys().map(|k| format!(" [{k}=...]")).collect();
            writeln!(out, "  {full:<width$}  {}{params}", inst.help)?;
        }
        for (name, v) in &f.views {
            let full = format!("{}.{name}", f.pack.name);
            let args: String = v
                .args
                .iter()
                .map(|a| format!(" {}", a.to_uppercase()))
                .collect();
            writeln!(out, "  {full:<width$}  view{args}: {}", v.help)?;
        }
        if opts.pack.is_some() {
            writeln!(out, "  probes:")?;
            for (name, p) in &f.probes {
                let opt = if p.optional { "  (optional)" } else { "" };
                writeln!(out, "    {name:<24} {}{opt}", p.at)?;
            }
        }
    }
    Ok(())
}

fn to_json(l: &Loaded) -> Value {
    let f = &l.file;
    json!({
        "name": f.pack.name,
        "help": f.pack.help,
        "origin": l.origin,
        "replaced": l.replaced,
        "targets": f.pack.targets,
        "instruments": f.instruments.iter().map(|(n, i)| json!({
            "name": format!("{}.{n}", f.pack.name),
            "kind": i.kind,
            "help": i.help,
            "params": i.params.keys().collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "views": f.views.iter().map(|(n, v)| json!({
            "name": format!("{}.{n}", f.pack.name),
            "help": v.help,
            "args": v.args,
        })).collect::<Vec<_>>(),
        "probes": f.probes.iter().map(|(n, p)| json!({
            "name": n, "at": p.at, "optional": p.optional,
        })).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests;
