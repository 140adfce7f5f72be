//! `ri report --core`: the threads of a core file with their stacks,
//! unwound from each thread's NT_PRSTATUS registers over the core's memory
//! (`report/unwind.rs`) and symbolized, as far as the core has them.

use std::{io::Write, path::Path};

use super::core::Core;
use crate::{
    Error,
    dwarf::value::Memory,
    report::{
        stop::{Capture, STACK_COPY_MAX},
        symbolize::symbolize,
        unwind::{Mapping, Unwinder},
    },
};

/// x86-64 `user_regs_struct` index of each DWARF register 0..=16.
const FROM_PRSTATUS: [usize; 17] = [10, 12, 11, 5, 13, 14, 4, 19, 9, 8, 7, 6, 3, 2, 1, 0, 16];

/// Prints the threads and stacks of `core`.
pub fn run(core: &Path, sysroot: Option<&Path>, out: &mut impl Write) -> Result<(), Error> {
    let c = Core::open(core, sysroot)?;
    let maps: Vec<Mapping> = c
        .files
        .iter()
        .map(|f| Mapping {
            start: f.start,
            end: f.end,
            perms: "r-xp".into(),
            offset: f.offset,
            name: c.local(&f.path).display().to_string(),
        })
        .collect();
    let mut unwinder = Unwinder::new(0, maps);
    writeln!(
        out,
        "core {} of '{}': {} threads",
        core.display(),
        c.comm,
        c.threads.len()
    )?;
    for t in &c.threads {
        let mut regs = [None; 17];
        for (d, &i) in FROM_PRSTATUS.iter().enumerate() {
            regs[d] = Some(t.regs[i]);
        }
        let sp = t.regs[19];
        let mut stack = vec![0u8; STACK_COPY_MAX as usize];
        let n = c.read_prefix(sp, &mut stack);
        stack.truncate(n);
        let cap = Capture {
            regs,
            stack_base: sp,
            stack,
            paused_us: 0,
            held_us: 0,
        };
        let (frames, why) = unwinder.unwind(&cap);
        let locs: Vec<_> = frames.iter().filter_map(|f| f.location.clone()).collect();
        let syms = symbolize(&locs);
        writeln!(out, "thread {}:", t.tid)?;
        for (i, f) in frames.iter().enumerate() {
            let name = f
                .location
                .as_ref()
                .and_then(|l| syms.get(l))
                .map(|s| {
                    let at = match (&s.file, s.line) {
                        (Some(file), Some(line)) => format!(" ({file}:{line})"),
                        _ => String::new(),
                    };
                    format!("{}+{:#x}{at}", s.function, s.offset)
                })
                .unwrap_or_else(|| f.mapping.clone().unwrap_or_else(|| "?".into()));
            writeln!(out, "  #{i:<2} {:#018x} {name}", f.ip)?;
        }
        if let Some(w) = why {
            writeln!(out, "  (stack ends: {w})")?;
        }
    }
    Ok(())
}
