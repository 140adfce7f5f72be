//! USDT (SystemTap SDT) probes: the `.note.stapsdt` notes of an ELF file,
//! their locations as file offsets, and their argument specs compiled into
//! probe expressions.

mod args;

use std::path::{Path, PathBuf};

use object::{Object, ObjectSection, ObjectSegment, ObjectSymbol};

pub use args::{Arg, Loc, parse_arg, subst_args};

use crate::{elf::glob_match, probe::ParseError};

/// Errors reading USDT notes or using their arguments.
#[derive(Debug, thiserror::Error)]
pub enum UsdtError {
    /// The file is missing, unreadable or not ELF.
    #[error(transparent)]
    File(#[from] crate::elf::FileError),
    /// Writing the listing failed.
    #[error("{0}")]
    Write(#[from] std::io::Error),
    /// A malformed note.
    #[error("malformed USDT note in {path}: {reason}")]
    BadNote {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The file has no `.note.stapsdt` notes.
    #[error("{0} has no USDT probes (no .note.stapsdt section)")]
    NoNotes(PathBuf),
    /// No note matches the probe.
    #[error("no USDT probe '{probe}' in {path}{}", known(.close))]
    NoMatch {
        /// `provider:name` as asked.
        probe: String,
        /// The file.
        path: PathBuf,
        /// Close or existing probes.
        close: Vec<String>,
    },
    /// The name exists under several providers.
    #[error("USDT probe '{name}' is ambiguous in {path}: name a provider ({})", .providers.join(", "))]
    Ambiguous {
        /// The name.
        name: String,
        /// The file.
        path: PathBuf,
        /// Providers having it.
        providers: Vec<String>,
    },
    /// An address outside the file's loadable segments.
    #[error("USDT probe {probe}: address {addr:#x} is not in a loadable segment of {path}")]
    NotMapped {
        /// The probe.
        probe: String,
        /// The address.
        addr: u64,
        /// The file.
        path: PathBuf,
    },
    /// A library target that a traced process has not loaded.
    #[error("'{name}' is not mapped by pid {pid} (it has not loaded {path})")]
    LibNotMapped {
        /// The target as written.
        name: String,
        /// The process.
        pid: u32,
        /// The file the name resolved to.
        path: PathBuf,
    },
    /// A bad `argN` or an argument spec ri cannot read.
    #[error("{0}")]
    Arg(#[from] ParseError),
}

fn known(close: &[String]) -> String {
    if close.is_empty() {
        String::new()
    } else {
        format!(" (probes: {})", close.join(", "))
    }
}

/// One USDT probe site.
#[derive(Clone, Debug, PartialEq)]
pub struct Note {
    /// Provider (`postgresql`).
    pub provider: String,
    /// Probe name (`query__start`).
    pub name: String,
    /// Probe address (virtual, `.stapsdt.base`-adjusted).
    pub pc: u64,
    /// File offset of the probe address.
    pub offset: u64,
    /// Semaphore address (virtual), 0 when none.
    pub semaphore: u64,
    /// File offset of the semaphore, when there is one.
    pub sem_offset: Option<u64>,
    /// Argument specs as written (`8@%rbx -4@-20(%rbp)`).
    pub arg_text: String,
    /// Parsed arguments; `Err` holds the spec ri cannot read.
    pub args: Vec<Result<Arg, String>>,
}

impl Note {
    /// `provider:name`.
    pub fn full_name(&self) -> String {
        format!("{}:{}", self.provider, self.name)
    }
}

/// Reads every USDT note of `path` (an empty list when there are none).
pub fn read_notes(path: &Path) -> Result<Vec<Note>, UsdtError> {
    let data = crate::elf::read_elf(path)?;
    parse_notes(path, &data)
}

/// Parses the notes of an ELF image.
pub fn parse_notes(path: &Path, data: &[u8]) -> Result<Vec<Note>, UsdtError> {
    let file = crate::elf::parse_elf(path, data)?;
    let bad = |reason: &str| UsdtError::BadNote {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    };
    let Some(sec) = file.section_by_name(".note.stapsdt") else {
        return Ok(Vec::new());
    };
    let base_addr = file.section_by_name(".stapsdt.base").map(|s| s.address());
    let raw = sec.data().map_err(|e| bad(&e.to_string()))?;
    let segments: Vec<(u64, u64, u64)> = file
        .segments()
        .filter_map(|s| {
            let (off, fsize) = s.file_range();
            (fsize > 0).then_some((s.address(), fsize, off))
        })
        .collect();
    let to_offset = |addr: u64| {
        segments
            .iter()
            .find(|(va, size, _)| addr >= *va && addr < va + size)
            .map(|(va, _, off)| addr - va + off)
    };
    let mut symbols: Option<Vec<(String, u64)>> = None;
    let mut notes = Vec::new();
    let mut pos = 0usize;
    let word = |b: &[u8], at: usize| -> Option<u32> {
        Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
    };
    let align4 = |n: usize| (n + 3) & !3;
    while pos + 12 <= raw.len() {
        let (Some(namesz), Some(descsz), Some(ty)) =
            (word(raw, pos), word(raw, pos + 4), word(raw, pos + 8))
        else {
            return Err(bad("truncated note header"));
        };
        let name_at = pos + 12;
        let desc_at = name_at + align4(namesz as usize);
        let next = desc_at + align4(descsz as usize);
        if next > raw.len() || desc_at + descsz as usize > raw.len() {
            return Err(bad("note runs past its section"));
        }
        let owner = &raw[name_at..name_at + namesz as usize];
        pos = next;
        if ty != 3 || owner.strip_suffix(b"\0").unwrap_or(owner) != b"stapsdt" {
            continue;
        }
        let desc = &raw[desc_at..desc_at + descsz as usize];
        if desc.len() < 24 {
            return Err(bad("note too short"));
        }
        let q = |i: usize| u64::from_le_bytes(desc[i * 8..i * 8 + 8].try_into().unwrap_or([0; 8]));
        let (mut pc, base, mut semaphore) = (q(0), q(1), q(2));
        let mut strs = desc[24..].split(|&b| b == 0);
        let mut next_str = || {
            strs.next()
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .ok_or_else(|| bad("missing provider, name or arguments"))
        };
        let provider = next_str()?;
        let name = next_str()?;
        let arg_text = next_str().unwrap_or_default();
        // Prelinked or moved: shift by how far .stapsdt.base moved.
        if let Some(actual) = base_addr
            && base != 0
        {
            let delta = actual.wrapping_sub(base);
            pc = pc.wrapping_add(delta);
            if semaphore != 0 {
                semaphore = semaphore.wrapping_add(delta);
            }
        }
        let full = format!("{provider}:{name}");
        let offset = to_offset(pc).ok_or_else(|| UsdtError::NotMapped {
            probe: full.clone(),
            addr: pc,
            path: path.to_path_buf(),
        })?;
        let sem_offset = if semaphore != 0 {
            Some(to_offset(semaphore).ok_or_else(|| UsdtError::NotMapped {
                probe: full.clone(),
                addr: semaphore,
                path: path.to_path_buf(),
            })?)
        } else {
            None
        };
        let mut args = Vec::new();
        for spec in arg_text.split_whitespace() {
            let parsed = parse_arg(spec, pc, &mut |sym: &str| {
                let table = symbols.get_or_insert_with(|| {
                    file.symbols()
                        .chain(file.dynamic_symbols())
                        .filter_map(|s| Some((s.name().ok()?.to_string(), s.address())))
                        .collect()
                });
                table.iter().find(|(n, _)| n == sym).map(|(_, a)| *a)
            });
            args.push(parsed);
        }
        notes.push(Note {
            provider,
            name,
            pc,
            offset,
            semaphore,
            sem_offset,
            arg_text,
            args,
        });
    }
    Ok(notes)
}

/// The notes of `path` matching `provider` (any when `None`) and the glob
/// `name`; errors name what exists.
pub fn select<'a>(
    path: &Path,
    notes: &'a [Note],
    provider: Option<&str>,
    name: &str,
) -> Result<Vec<&'a Note>, UsdtError> {
    if notes.is_empty() {
        return Err(UsdtError::NoNotes(path.to_path_buf()));
    }
    let hits: Vec<&Note> = notes
        .iter()
        .filter(|n| {
            provider.is_none_or(|p| glob_match(p, &n.provider)) && glob_match(name, &n.name)
        })
        .collect();
    if hits.is_empty() {
        let asked = match provider {
            Some(p) => format!("{p}:{name}"),
            None => name.to_string(),
        };
        let mut all: Vec<String> = notes.iter().map(Note::full_name).collect();
        all.sort();
        all.dedup();
        let mut scored: Vec<(usize, String)> = all
            .iter()
            .map(|n| {
                let short = n.split_once(':').map_or(n.as_str(), |(_, b)| b);
                (
                    strsim::levenshtein(name, short).min(strsim::levenshtein(&asked, n)),
                    n.clone(),
                )
            })
            .filter(|(d, _)| *d <= (name.len() / 3).max(2))
            .collect();
        scored.sort();
        let close: Vec<String> = if scored.is_empty() {
            let mut v: Vec<String> = all.iter().take(8).cloned().collect();
            if all.len() > 8 {
                v.push(format!("... {} in all", all.len()));
            }
            v
        } else {
            scored.into_iter().take(3).map(|(_, n)| n).collect()
        };
        return Err(UsdtError::NoMatch {
            probe: asked,
            path: path.to_path_buf(),
            close,
        });
    }
    if provider.is_none() && !name.contains(['*', '?']) {
        let mut providers: Vec<String> = hits.iter().map(|n| n.provider.clone()).collect();
        providers.sort();
        providers.dedup();
        if providers.len() > 1 {
            return Err(UsdtError::Ambiguous {
                name: name.to_string(),
                path: path.to_path_buf(),
                providers,
            });
        }
    }
    Ok(hits)
}

/// `PROVIDER:NAME` and the argument specs of each note whose name matches
/// `pattern`, once per distinct probe (`ri list`).
pub fn matching(path: &Path, pattern: &str) -> Result<Vec<(String, String)>, UsdtError> {
    let notes = read_notes(path)?;
    let mut seen = std::collections::HashSet::new();
    Ok(notes
        .iter()
        .filter(|n| glob_match(pattern, &n.name) && seen.insert(n.full_name()))
        .map(|n| (format!("{}:{}", n.provider, n.name), n.arg_text.clone()))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    const PG: &str = "/usr/lib/postgresql/15/bin/postgres";

    #[test]
    fn postgres_notes() {
        let path = Path::new(PG);
        if !path.exists() {
            return;
        }
        let notes = read_notes(path).unwrap();
        assert!(notes.len() >= 70, "{}", notes.len());
        assert!(notes.iter().all(|n| n.provider == "postgresql"));
        let q = select(path, &notes, None, "query__start").unwrap();
        assert_eq!(q.len(), 1);
        let q = q[0];
        assert!(q.semaphore != 0 && q.sem_offset.is_some());
        assert_eq!(q.args.len(), 1);
        assert!(q.args.iter().all(|a| a.is_ok()), "{:?}", q.args);
        // Executable text: file offset and address differ by a page multiple.
        assert_eq!((q.pc - q.offset) % 4096, 0);
        let all = select(path, &notes, Some("postgresql"), "transaction__*").unwrap();
        assert!(all.len() >= 3);
        let e = select(path, &notes, None, "query__strat").unwrap_err();
        assert!(e.to_string().contains("postgresql:query__start"), "{e}");
        let e = select(Path::new("/x"), &[], None, "a").unwrap_err();
        assert!(e.to_string().contains("no USDT probes"), "{e}");
    }

    /// A C fixture built with `<sys/sdt.h>` (systemtap-sdt-dev): register,
    /// indexed memory, `16+sym(%rip)` and byte-register arguments, and a
    /// semaphore in `.probes`.
    #[test]
    fn sdt_fixture() {
        let have_sdt = [
            "/usr/include/sys/sdt.h",
            "/usr/include/x86_64-linux-gnu/sys/sdt.h",
        ]
        .iter()
        .any(|p| Path::new(p).exists());
        assert!(
            have_sdt,
            "no <sys/sdt.h>: run `cargo xtask setup` (installs systemtap-sdt-dev)"
        );
        let dir = std::env::temp_dir().join(format!("ri-sdt-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let src = dir.join("sdt.c");
        std::fs::write(&src, SDT_FIXTURE).unwrap();
        let bin = dir.join("sdt");
        let ok = std::process::Command::new("gcc")
            .args(["-O2", "-o"])
            .arg(&bin)
            .arg(&src)
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "gcc failed");
        let notes = read_notes(&bin).unwrap();
        std::fs::remove_dir_all(&dir).ok();
        let n = select(&bin, &notes, Some("fix"), "three").unwrap()[0];
        assert!(n.semaphore != 0);
        assert!(n.sem_offset.is_some());
        assert_eq!(n.args.len(), 4, "{}", n.arg_text);
        for (i, a) in n.args.iter().enumerate() {
            let a = a
                .as_ref()
                .unwrap_or_else(|s| panic!("arg{i} '{s}' of {}", n.arg_text));
            assert_eq!(a.size, [4, 8, 8, 1][i], "{}", n.arg_text);
            assert!(a.signed, "{}", n.arg_text);
        }
    }

    /// The fixture of [`sdt_fixture`]; `tests/tests/usdt_sdt.rs` traces
    /// the same program live.
    const SDT_FIXTURE: &str = include_str!("../../../tests/fixtures/sdt.c");

    #[test]
    fn python_function_entry() {
        let path = Path::new("/usr/bin/python3.11");
        if !path.exists() {
            return;
        }
        let notes = read_notes(path).unwrap();
        let f = select(path, &notes, Some("python"), "function__entry").unwrap();
        assert!(!f.is_empty());
        assert!(
            f.iter()
                .all(|n| n.args.len() == 3 && n.args.iter().all(|a| a.is_ok()))
        );
        let e = select(path, &notes, Some("nosuch"), "function__entry").unwrap_err();
        assert!(e.to_string().contains("python:function__entry"), "{e}");
    }
}
