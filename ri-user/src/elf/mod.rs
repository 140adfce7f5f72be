//! ELF symbol tables: which functions a binary has, and where they are in the
//! file (uprobes attach at file offsets).

use std::path::{Path, PathBuf};

use object::{Object, ObjectSegment, ObjectSymbol, SymbolKind};

/// Errors opening a binary, shared by every module that reads ELF files
/// (symbols, DWARF, USDT notes).
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// The file does not exist.
    #[error("no such file: {0}")]
    NotFound(PathBuf),
    /// The file exists but cannot be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not an ELF object.
    #[error("{path} is not an ELF file: {reason}")]
    NotElf {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        reason: String,
    },
}

/// A file's bytes, mapped read-only: only the pages read are loaded (a
/// symbol lookup in a binary with 30 MB of DWARF touches a few of them).
pub struct Mapped(memmap2::Mmap);

impl std::ops::Deref for Mapped {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for Mapped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Mapped({} bytes)", self.0.len())
    }
}

/// Maps a file read-only.
pub fn map_file(path: &Path) -> std::io::Result<Mapped> {
    let file = std::fs::File::open(path)?;
    // SAFETY: a read-only private mapping that ri never writes. A file
    // truncated in place while mapped could fault, as it would for gdb;
    // builds and package installs replace files by rename instead.
    let m = unsafe { memmap2::Mmap::map(&file)? };
    Ok(Mapped(m))
}

/// Maps a file whose content must be ELF.
pub fn read_elf(path: &Path) -> Result<Mapped, FileError> {
    let data = map_file(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => FileError::NotFound(path.to_path_buf()),
        _ => FileError::Io {
            path: path.to_path_buf(),
            source: e,
        },
    })?;
    if !data.starts_with(b"\x7fELF") {
        return Err(FileError::NotElf {
            path: path.to_path_buf(),
            reason: "no ELF magic".into(),
        });
    }
    Ok(data)
}

/// Parses ELF bytes read by [`read_elf`].
pub fn parse_elf<'d>(path: &Path, data: &'d [u8]) -> Result<object::File<'d>, FileError> {
    object::File::parse(data).map_err(|e| FileError::NotElf {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

/// Errors reading a binary's symbols.
#[derive(Debug, thiserror::Error)]
pub enum ElfError {
    /// The file is missing, unreadable or not ELF.
    #[error(transparent)]
    File(#[from] FileError),
    /// The function is not in the symbol tables.
    #[error("unknown symbol '{name}' in {path}{}", suggest(.close))]
    UnknownSymbol {
        /// What was asked for.
        name: String,
        /// The file.
        path: PathBuf,
        /// Close names that do exist.
        close: Vec<String>,
    },
    /// An address is outside every loadable segment.
    #[error("address {addr:#x} of '{name}' is not in a loadable segment of {path}")]
    NotMapped {
        /// The symbol.
        name: String,
        /// Its address.
        addr: u64,
        /// The file.
        path: PathBuf,
    },
}

fn suggest(close: &[String]) -> String {
    if close.is_empty() {
        String::new()
    } else {
        format!(" (did you mean {}?)", close.join(", "))
    }
}

/// A function symbol.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Function {
    /// Symbol name.
    pub name: String,
    /// Virtual address in the file's own address space.
    pub addr: u64,
    /// Size in bytes (0 when the symbol table does not say).
    pub size: u64,
}

/// A loaded ELF file's function symbols and its loadable segments.
#[derive(Debug)]
pub struct ElfFile {
    /// Canonical path of the file.
    pub path: PathBuf,
    /// Defined functions, sorted by name, one entry per name.
    pub functions: Vec<Function>,
    /// Loadable segments: (virtual address, size, file offset).
    segments: Vec<(u64, u64, u64)>,
}

impl ElfFile {
    /// Reads `path` and its `.symtab`/`.dynsym` function symbols.
    pub fn open(path: &Path) -> Result<Self, ElfError> {
        let data = read_elf(path)?;
        let path = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
        let file = parse_elf(&path, &data)?;
        let mut functions: Vec<Function> = file
            .symbols()
            .chain(file.dynamic_symbols())
            .filter(|s| s.kind() == SymbolKind::Text && s.is_definition() && s.address() != 0)
            .filter_map(|s| {
                Some(Function {
                    name: s.name().ok()?.to_string(),
                    addr: s.address(),
                    size: s.size(),
                })
            })
            .filter(|f| !f.name.is_empty())
            .collect();
        functions.sort_by(|a, b| a.name.cmp(&b.name).then(b.size.cmp(&a.size)));
        functions.dedup_by(|a, b| a.name == b.name);
        let segments = file
            .segments()
            .filter_map(|s| {
                let (off, fsize) = s.file_range();
                (fsize > 0).then_some((s.address(), fsize, off))
            })
            .collect();
        Ok(ElfFile {
            path,
            functions,
            segments,
        })
    }

    /// Functions whose names match a glob (`*`, `?`), sorted by name.
    pub fn matching(&self, pattern: &str) -> Vec<&Function> {
        self.functions
            .iter()
            .filter(|f| glob_match(pattern, &f.name))
            .collect()
    }

    /// The function named exactly `name`, or an error naming close matches.
    pub fn function(&self, name: &str) -> Result<&Function, ElfError> {
        match self
            .functions
            .binary_search_by(|f| f.name.as_str().cmp(name))
        {
            Ok(i) => Ok(&self.functions[i]),
            Err(_) => Err(ElfError::UnknownSymbol {
                name: name.to_string(),
                path: self.path.clone(),
                close: self.close_names(name),
            }),
        }
    }

    /// Up to three existing names close to `name`.
    pub fn close_names(&self, name: &str) -> Vec<String> {
        let mut scored: Vec<(usize, &str)> = self
            .functions
            .iter()
            .map(|f| (strsim::levenshtein(name, &f.name), f.name.as_str()))
            .filter(|(d, n)| *d <= (name.len() / 3).max(2) || (name.len() > 3 && n.contains(name)))
            .collect();
        scored.sort();
        scored
            .into_iter()
            .take(3)
            .map(|(_, n)| n.to_string())
            .collect()
    }

    /// File offset of a virtual address (what a uprobe attaches to).
    pub fn file_offset(&self, name: &str, addr: u64) -> Result<u64, ElfError> {
        self.segments
            .iter()
            .find(|(va, size, _)| addr >= *va && addr < va + size)
            .map(|(va, _, off)| addr - va + off)
            .ok_or_else(|| ElfError::NotMapped {
                name: name.to_string(),
                addr,
                path: self.path.clone(),
            })
    }
}

/// Shell-style wildcard match: `*` any run, `?` one character.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let (p, n) = (pattern.as_bytes(), name.as_bytes());
    let (mut pi, mut ni) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        if pi < p.len() && (p[pi] == b'?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ni));
            pi += 1;
        } else if let Some((sp, sn)) = star {
            pi = sp + 1;
            ni = sn + 1;
            star = Some((sp, sn + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::glob_match;

    #[test]
    fn globs() {
        assert!(glob_match("m0_*", "m0_alloc"));
        assert!(glob_match("*alloc*", "m0_alloc_aligned"));
        assert!(glob_match("f?o", "foo"));
        assert!(!glob_match("m0_*", "xm0_alloc"));
        assert!(glob_match("*", ""));
        assert!(!glob_match("a*b", "acbd"));
    }
}
