//! `ri list`: every function and USDT probe that can be probed, as
//! ready-to-paste probe strings.

use std::{io::Write, path::PathBuf};

use crate::{Error, elf::ElfFile, target};

/// Which files to list.
#[derive(Clone, Debug, Default)]
pub struct ListOptions {
    /// A path or library name.
    pub target: Option<String>,
    /// A process: its executable and every ELF file it maps.
    pub pid: Option<u32>,
    /// Glob over function names.
    pub pattern: Option<String>,
    /// One JSON object per line instead of text.
    pub json: bool,
}

/// Writes one `uprobe:PATH:FUNC` line per matching function and one
/// `usdt:PATH:PROVIDER:NAME ARGS` line per matching USDT probe (with `json`,
/// `{"kind", "probe", "file", "args"}` objects); returns how
/// many.
pub fn run(opts: &ListOptions, out: &mut impl Write) -> Result<usize, Error> {
    let pids: Vec<u32> = opts.pid.into_iter().collect();
    for &p in &pids {
        target::check_pid(p)?;
    }
    let files: Vec<PathBuf> = match (&opts.target, opts.pid) {
        (Some(t), _) => vec![target::resolve(t, &target::Scope::pids(&pids))?],
        (None, Some(pid)) => {
            let exe = target::exe_of(pid)?;
            let mut v = vec![exe.clone()];
            v.extend(target::mapped_files(pid)?.into_iter().filter(|p| *p != exe));
            v
        }
        (None, None) => return Err(Error::Usage("ri list needs a TARGET or -p PID".into())),
    };
    let pattern = opts.pattern.as_deref().unwrap_or("*");
    let mut n = 0;
    let single = files.len() == 1;
    for path in files {
        let elf = match ElfFile::open(&path) {
            Ok(e) => e,
            // A process maps non-ELF files too (locale archives, caches).
            Err(_) if !single => continue,
            Err(e) => return Err(e.into()),
        };
        let file = elf.path.display().to_string();
        let functions = elf
            .matching(pattern)
            .into_iter()
            .map(|f| ("uprobe", format!("uprobe:{file}:{}", f.name), None));
        let notes = crate::usdt::matching(&elf.path, pattern)?
            .into_iter()
            .map(|(name, args)| ("usdt", format!("usdt:{file}:{name}"), Some(args)));
        for (kind, probe, args) in functions.chain(notes) {
            if opts.json {
                let doc = serde_json::json!({
                    "kind": kind, "probe": probe, "file": file, "args": args,
                });
                writeln!(out, "{doc}")?;
            } else if let Some(args) = args {
                writeln!(out, "{probe}  {args}")?;
            } else {
                writeln!(out, "{probe}")?;
            }
            n += 1;
        }
    }
    Ok(n)
}
