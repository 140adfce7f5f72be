//! Names for addresses: function+offset, and file:line and inlined callers
//! where the file (or its separate debug file) has DWARF, via blazesym.
//! One batch per file, after every thread runs again.

use std::{collections::HashMap, path::PathBuf};

use blazesym::symbolize::{
    Input, Symbolized, Symbolizer,
    source::{Elf, Source},
};

/// What is known about one address.
#[derive(Clone, Debug, Default)]
pub struct SymInfo {
    /// Function name (demangled).
    pub function: String,
    /// Offset of the address from the function's start.
    pub offset: u64,
    /// Source location in `function` (of the call to the first inlined
    /// function, when there are any).
    pub file: Option<String>,
    /// Its line.
    pub line: Option<u32>,
    /// Functions inlined at the address, outermost first, each with its
    /// location (the last one's is the address's own): (name, file, line).
    pub inlined: Vec<(String, Option<String>, Option<u32>)>,
}

/// Symbolizes (file, file address) pairs; returns what it found by pair.
///
/// Two passes per file: the ELF symbol tables give the function and its
/// start (DWARF gives a function split into hot and cold parts the start
/// of its lowest part, which makes offsets meaningless); DWARF gives
/// file:line, inlined calls, and names of functions the symbol tables lack.
pub fn symbolize(addrs: &[(PathBuf, u64)]) -> HashMap<(PathBuf, u64), SymInfo> {
    symbolize_with(&symbolizer(), addrs, false)
}

/// A symbolizer with file:line, inlined functions and demangling; it caches
/// every file it opened, so keep it for the next batch.
pub fn symbolizer() -> Symbolizer {
    Symbolizer::builder()
        .enable_code_info(true)
        .enable_inlined_fns(true)
        .enable_demangling(true)
        .build()
}

/// As [`symbolize`], with a kept `symbolizer`; the addresses are file
/// offsets (as `/proc/PID/maps` gives them) when `file_offsets`, else the
/// files' own virtual addresses.
pub fn symbolize_with(
    symbolizer: &Symbolizer,
    addrs: &[(PathBuf, u64)],
    file_offsets: bool,
) -> HashMap<(PathBuf, u64), SymInfo> {
    let mut by_file: HashMap<&PathBuf, Vec<u64>> = HashMap::new();
    for (p, a) in addrs {
        by_file.entry(p).or_default().push(*a);
    }
    fn input(list: &[u64], file_offsets: bool) -> Input<&[u64]> {
        if file_offsets {
            Input::FileOffset(list)
        } else {
            Input::VirtOffset(list)
        }
    }
    let mut out = HashMap::new();
    for (path, mut list) in by_file {
        list.sort_unstable();
        list.dedup();
        let mut elf = Elf::new(path.clone());
        elf.debug_syms = false;
        let plain = symbolizer
            .symbolize(&Source::Elf(elf), input(&list, file_offsets))
            .unwrap_or_default();
        let debug = symbolizer
            .symbolize(
                &Source::Elf(Elf::new(path.clone())),
                input(&list, file_offsets),
            )
            .unwrap_or_default();
        for (i, addr) in list.iter().enumerate() {
            let plain = plain.get(i).and_then(Symbolized::as_sym);
            let debug = debug.get(i).and_then(Symbolized::as_sym);
            let (function, offset) = match (plain, debug) {
                (Some(p), _) => (p.name.to_string(), p.offset as u64),
                (None, Some(d)) if d.size.is_none_or(|s| d.offset < s) => {
                    (d.name.to_string(), d.offset as u64)
                }
                _ => continue,
            };
            let code = |ci: Option<&blazesym::symbolize::CodeInfo>| match ci {
                Some(ci) => (Some(ci.to_path().display().to_string()), ci.line),
                None => (None, None),
            };
            let (file, line) = code(debug.and_then(|d| d.code_info.as_deref()));
            let inlined = debug
                .map(|d| {
                    d.inlined
                        .iter()
                        .map(|f| {
                            let (file, line) = code(f.code_info.as_ref());
                            (f.name.to_string(), file, line)
                        })
                        .collect()
                })
                .unwrap_or_default();
            out.insert(
                (path.clone(), *addr),
                SymInfo {
                    function,
                    offset,
                    file,
                    line,
                    inlined,
                },
            );
        }
    }
    out
}
