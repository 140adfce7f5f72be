//! What an expression reads: the images (executable and libraries, each
//! with debug info and load bias) and one memory, a live process or a core.

use std::path::{Path, PathBuf};

use object::{Object, ObjectSymbol, SymbolKind};

use super::ViewError;
use crate::{
    Error,
    dwarf::{DebugInfo, TypeId, value::Memory},
    peek::{self, ProcessMemory},
};

/// One mapped file with debug info.
pub struct Image {
    /// The file as mapped (or as found for a core).
    pub path: PathBuf,
    /// Add to a file virtual address to get the address in memory.
    pub bias: u64,
    /// Its debug info.
    pub info: DebugInfo,
}

impl Image {
    /// The file name, for messages.
    pub fn name(&self) -> String {
        peek::short(&self.path)
    }
}

/// The images and the memory of one process (live or dumped).
pub struct Space {
    /// Executable first, then libraries in map order.
    pub images: Vec<Image>,
    /// The memory.
    pub mem: Box<dyn Memory>,
    /// The executable and its bias, for copy relocations.
    pub exe: Option<(PathBuf, u64)>,
    /// CLOCK_MONOTONIC now, in ns, for ages (none for a core).
    pub now_ns: Option<u64>,
    /// `pid N` or `core FILE`, for messages.
    pub what: String,
}

/// Debug info of every file in `files` with its bias; files without DWARF
/// are skipped, except the first (the executable), whose error counts.
pub fn images(files: &[(PathBuf, u64)]) -> Result<Vec<Image>, Error> {
    let mut out = Vec::new();
    for (i, (path, bias)) in files.iter().enumerate() {
        match DebugInfo::load_if_any(path) {
            Ok(Some(info)) => out.push(Image {
                path: path.clone(),
                bias: *bias,
                info,
            }),
            Ok(None) | Err(_) if i > 0 => {}
            Ok(None) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(out)
}

/// The space of live process `pid`.
pub fn live(pid: u32) -> Result<Space, Error> {
    crate::target::check_pid(pid)?;
    let files = peek::mapped_files(pid)?;
    let mut with_bias = Vec::new();
    for f in &files {
        if let Ok(b) = peek::process::load_bias(pid, f) {
            with_bias.push((f.clone(), b));
        }
    }
    let exe = with_bias.first().cloned();
    let mem = ProcessMemory::new(pid).with_symbols(&files);
    Ok(Space {
        images: images(&with_bias)?,
        mem: Box::new(mem),
        exe,
        now_ns: Some(crate::agg::monotonic_ns()),
        what: format!("pid {pid}"),
    })
}

impl Space {
    /// A global or static variable: its address and (image, type). The
    /// executable first, then libraries, as gdb; a library global the
    /// executable copied lives in the executable's copy.
    pub fn variable(&self, name: &str) -> Result<(u64, usize, TypeId), ViewError> {
        for (i, img) in self.images.iter().enumerate() {
            if let Some((a, t)) = img.info.variable(name) {
                let copy = (i > 0).then(|| self.exe_copy(name)).flatten();
                return Ok((copy.unwrap_or(a.wrapping_add(img.bias)), i, t));
            }
        }
        let names: Vec<String> = self.images.iter().map(Image::name).collect();
        Err(ViewError::Unknown(format!(
            "unknown variable '{name}' in {}",
            if names.is_empty() {
                "(no file with debug info)".to_string()
            } else {
                names.join(", ")
            }
        )))
    }

    fn exe_copy(&self, name: &str) -> Option<u64> {
        let (exe, bias) = self.exe.as_ref()?;
        let data = std::fs::read(exe).ok()?;
        let file = object::File::parse(&*data).ok()?;
        let sym = file
            .dynamic_symbols()
            .find(|s| s.kind() == SymbolKind::Data && s.is_definition() && s.name() == Ok(name))?;
        Some(sym.address().wrapping_add(*bias))
    }

    /// A type by C name, in image `prefer` first, then the others.
    pub fn type_named(
        &self,
        name: &str,
        prefer: Option<usize>,
    ) -> Result<(usize, TypeId), ViewError> {
        let order = prefer
            .into_iter()
            .chain((0..self.images.len()).filter(|&i| Some(i) != prefer));
        for i in order {
            if let Some(img) = self.images.get(i)
                && let Some(t) = img.info.type_by_name(name)
            {
                return Ok((i, t));
            }
        }
        Err(ViewError::Unknown(format!("unknown type '{name}'")))
    }

    /// Whether the byte at `addr` can be read.
    pub fn readable(&self, addr: u64) -> bool {
        let mut b = [0u8; 1];
        self.mem.read(addr, &mut b)
    }

    /// `len` bytes at `addr`, or the address that failed.
    pub fn bytes(&self, addr: u64, len: usize) -> Result<Vec<u8>, ViewError> {
        let mut b = vec![0u8; len];
        if self.mem.read(addr, &mut b) {
            Ok(b)
        } else {
            Err(ViewError::Unreadable(addr))
        }
    }

    /// A little-endian word of `size` bytes at `addr`.
    pub fn word(&self, addr: u64, size: usize) -> Result<u64, ViewError> {
        let b = self.bytes(addr, size.min(8))?;
        let mut w = [0u8; 8];
        w[..b.len()].copy_from_slice(&b);
        Ok(u64::from_le_bytes(w))
    }

    /// A C string at `addr`, at most `max` bytes.
    pub fn string(&self, addr: u64, max: usize) -> Result<String, ViewError> {
        let mut b = vec![0u8; max];
        let n = self.mem.read_prefix(addr, &mut b);
        if n == 0 && max > 0 {
            return Err(ViewError::Unreadable(addr));
        }
        b.truncate(n);
        let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
        Ok(String::from_utf8_lossy(&b[..end]).into_owned())
    }
}

/// The path of `p` made absolute under `sysroot` when given.
pub fn under(sysroot: Option<&Path>, p: &Path) -> PathBuf {
    match sysroot {
        Some(root) => root.join(p.strip_prefix("/").unwrap_or(p)),
        None => p.to_path_buf(),
    }
}
