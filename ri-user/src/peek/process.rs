//! A live process's memory (`process_vm_readv`) and where its files are
//! loaded (`/proc/PID/maps`).

use std::{
    io::{ErrorKind, IoSliceMut},
    path::{Path, PathBuf},
};

use nix::{
    errno::Errno,
    sys::uio::{RemoteIoVec, process_vm_readv},
    unistd::Pid,
};
use object::{Object, ObjectSegment, ObjectSymbol, SymbolKind};

use super::{PeekError, symbols::Symbols};
use crate::{
    Error,
    dwarf::{DebugInfo, TypeId, value::Memory},
    target::TargetError,
};

/// Reads another process's memory.
pub struct ProcessMemory {
    pid: u32,
    symbols: Symbols,
}

impl ProcessMemory {
    /// A reader for `pid`.
    pub fn new(pid: u32) -> Self {
        ProcessMemory {
            pid,
            symbols: Symbols::default(),
        }
    }

    /// Names pointers by the symbols of `files`, which `pid` maps.
    pub fn with_symbols(mut self, files: &[PathBuf]) -> Self {
        for f in files {
            if let Ok(bias) = load_bias(self.pid, f) {
                self.symbols.add(f, bias);
            }
        }
        self.symbols.finish();
        self
    }

    /// The process.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    fn readv(&self, addr: u64, buf: &mut [u8]) -> Result<usize, Errno> {
        let len = buf.len();
        let Ok(base) = usize::try_from(addr) else {
            return Err(Errno::EFAULT);
        };
        let remote = [RemoteIoVec { base, len }];
        process_vm_readv(
            Pid::from_raw(self.pid as i32),
            &mut [IoSliceMut::new(buf)],
            &remote,
        )
    }

    /// Checks that the byte at `addr` can be read, naming why not.
    pub fn check(&self, addr: u64) -> Result<(), Error> {
        let mut b = [0u8; 1];
        match self.readv(addr, &mut b) {
            Ok(1) => Ok(()),
            Ok(_) | Err(Errno::EFAULT) | Err(Errno::EIO) => Err(PeekError::NotMapped {
                addr,
                pid: self.pid,
            }
            .into()),
            Err(Errno::ESRCH) => Err(TargetError::NoSuchPid(self.pid).into()),
            Err(Errno::EPERM) | Err(Errno::EACCES) => {
                Err(PeekError::PermissionDenied(self.pid).into())
            }
            Err(e) => Err(Error::Io(std::io::Error::from(e))),
        }
    }
}

impl Memory for ProcessMemory {
    fn read(&self, addr: u64, buf: &mut [u8]) -> bool {
        matches!(self.readv(addr, buf), Ok(n) if n == buf.len())
    }

    fn read_prefix(&self, addr: u64, buf: &mut [u8]) -> usize {
        if let Ok(n) = self.readv(addr, buf)
            && n == buf.len()
        {
            return n;
        }
        // Page by page up to the first hole.
        let mut done = 0;
        while done < buf.len() {
            let at = addr + done as u64;
            let chunk = ((4096 - at % 4096) as usize).min(buf.len() - done);
            match self.readv(at, &mut buf[done..done + chunk]) {
                Ok(n) if n > 0 => done += n,
                _ => break,
            }
        }
        done
    }

    fn symbol(&self, addr: u64) -> Option<String> {
        self.symbols.name(addr)
    }
}

/// The executable of `pid`, telling a permission problem from a missing pid.
pub fn exe_of(pid: u32) -> Result<PathBuf, Error> {
    std::fs::read_link(format!("/proc/{pid}/exe")).map_err(|e| match e.kind() {
        ErrorKind::PermissionDenied => PeekError::PermissionDenied(pid).into(),
        _ => TargetError::NoSuchPid(pid).into(),
    })
}

/// How far `binary` was moved when `pid` loaded it: add to a file virtual
/// address to get the address in the process (0 for a non-PIE executable).
pub fn load_bias(pid: u32, binary: &Path) -> Result<u64, Error> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).map_err(|e| -> Error {
        match e.kind() {
            ErrorKind::PermissionDenied => PeekError::PermissionDenied(pid).into(),
            _ => TargetError::NoSuchPid(pid).into(),
        }
    })?;
    let want = binary
        .canonicalize()
        .unwrap_or_else(|_| binary.to_path_buf());
    // (start, file offset) of the file's mapping with the lowest offset.
    let mut first: Option<(u64, u64)> = None;
    for line in maps.lines() {
        let mut cols = line.split_whitespace();
        let (Some(range), Some(_perms), Some(off), Some(_dev), Some(_inode)) = (
            cols.next(),
            cols.next(),
            cols.next(),
            cols.next(),
            cols.next(),
        ) else {
            continue;
        };
        let path = cols.collect::<Vec<_>>().join(" ");
        if Path::new(&path) != want && Path::new(&path) != binary {
            continue;
        }
        let start = range
            .split('-')
            .next()
            .and_then(|s| u64::from_str_radix(s, 16).ok());
        let off = u64::from_str_radix(off, 16).ok();
        if let (Some(start), Some(off)) = (start, off)
            && first.is_none_or(|(_, o)| off < o)
        {
            first = Some((start, off));
        }
    }
    let Some((start, off)) = first else {
        return Err(PeekError::NotLoaded {
            path: binary.to_path_buf(),
            pid,
        }
        .into());
    };
    let data = std::fs::read(binary)?;
    let file = object::File::parse(&*data).map_err(|e| {
        Error::Io(std::io::Error::other(format!(
            "{} is not an ELF file: {e}",
            binary.display()
        )))
    })?;
    // The segment that maps file offset `off`: it maps offset o at vaddr
    // v + (o - offset), so `start` is that plus the bias.
    let seg = file.segments().find(|s| {
        let (o, size) = s.file_range();
        off >= o & !0xfff && off < o + size.max(1)
    });
    let vaddr = match seg {
        Some(s) => {
            let (o, _) = s.file_range();
            s.address().wrapping_sub(o).wrapping_add(off)
        }
        None => off,
    };
    Ok(start.wrapping_sub(vaddr))
}

/// A data symbol the DWARF does not name but whose address a DWARF
/// variable has (an alias): that address and the variable's type.
pub fn alias(binary: &Path, name: &str, info: &DebugInfo) -> Option<(u64, TypeId)> {
    let data = std::fs::read(binary).ok()?;
    let file = object::File::parse(&*data).ok()?;
    let addr = file
        .symbols()
        .chain(file.dynamic_symbols())
        .find(|s| s.kind() == SymbolKind::Data && s.name() == Ok(name) && s.address() != 0)?
        .address();
    info.variable_at(addr).map(|(_, ty)| (addr, ty))
}

/// Where the executable of `pid` holds its copy of a library's global
/// `name` (a copy relocation: the executable defines it in its dynamic
/// symbols, and the library's own code uses that copy): the address in the
/// process.
pub fn exe_copy(pid: u32, name: &str) -> Option<u64> {
    let exe = exe_of(pid).ok()?;
    let data = std::fs::read(&exe).ok()?;
    let file = object::File::parse(&*data).ok()?;
    let sym = file
        .dynamic_symbols()
        .find(|s| s.kind() == SymbolKind::Data && s.is_definition() && s.name() == Ok(name))?;
    Some(sym.address().wrapping_add(load_bias(pid, &exe).ok()?))
}
