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
}

/// Writes one `uprobe:PATH:FUNC` line per matching function and one
/// `usdt:PATH:PROVIDER:NAME ARGS` line per matching USDT probe; returns how
/// many.
pub fn run(opts: &ListOptions, out: &mut impl Write) -> Result<usize, Error> {
    let pids: Vec<u32> = opts.pid.into_iter().collect();
    for &p in &pids {
        target::check_pid(p)?;
    }
    let files: Vec<PathBuf> = match (&opts.target, opts.pid) {
        (Some(t), _) => vec![target::resolve(t, &pids)?],
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
        for f in elf.matching(pattern) {
            writeln!(out, "uprobe:{}:{}", elf.path.display(), f.name)?;
            n += 1;
        }
        n += crate::usdt::list(&elf.path, pattern, out)?;
    }
    Ok(n)
}
