//! Strings and bytes the kernel could not read (a page of a file the process
//! had not touched yet): read from the file mapped at the address instead.
//!
//! Only where the bytes cannot differ from what the process would see: a
//! read-only, file-backed mapping, inside a read-only `PT_LOAD` segment of
//! the file and outside its `PT_GNU_RELRO` range (which the loader writes
//! before making it read-only). The file is found through the process's
//! probed file itself, placed by the probe's instruction pointer (an entry
//! or USDT probe, whose address is its site), or else through the process's
//! maps (cached, so a process that exited is still covered when they were
//! read).

use std::{
    collections::HashMap, fs::File, io::Read, os::unix::fs::FileExt, path::Path, time::Instant,
};

use object::{
    Endianness,
    elf::{FileHeader64, PF_W, PT_GNU_RELRO, PT_LOAD},
    read::elf::{FileHeader, ProgramHeader},
};

use super::{MAPS_REFRESH, Stacks};
use crate::{
    decode::Value,
    plan::{Field, FieldKind},
};

/// A file's loadable segments, from its program headers.
#[derive(Debug, Default)]
pub(super) struct Layout {
    /// `PT_LOAD`s: (vaddr, file offset, file size, writable).
    loads: Vec<(u64, u64, u64, bool)>,
    /// File offset ranges the loader relocates, then protects.
    relro: Vec<(u64, u64)>,
    /// Bytes already read, by (offset, length, string): they are constant,
    /// and one literal (a trace format) fails in event after event.
    read: HashMap<(u64, u64, bool), Option<Vec<u8>>>,
}

/// Most reads kept per file (the cache starts over past it).
const READS_KEPT: usize = 4096;

impl Layout {
    /// Reads the program headers of `path` (they sit near its start).
    fn of(path: &Path) -> Layout {
        let mut head = Vec::new();
        let read = File::open(path).and_then(|f| f.take(1 << 16).read_to_end(&mut head));
        if read.is_err() {
            return Layout::default();
        }
        let Ok(elf) = FileHeader64::<Endianness>::parse(&*head) else {
            return Layout::default();
        };
        let Ok(endian) = elf.endian() else {
            return Layout::default();
        };
        let Ok(phdrs) = elf.program_headers(endian, &*head) else {
            return Layout::default();
        };
        let mut l = Layout::default();
        for ph in phdrs {
            let (off, size) = (ph.p_offset(endian), ph.p_filesz(endian));
            match ph.p_type(endian) {
                PT_LOAD => l.loads.push((
                    ph.p_vaddr(endian),
                    off,
                    size,
                    ph.p_flags(endian) & PF_W != 0,
                )),
                PT_GNU_RELRO => l.relro.push((off, off + size)),
                _ => {}
            }
        }
        l
    }

    /// How many of the `len` bytes at file offset `off` are constant: in a
    /// read-only segment (up to its end) and not in RELRO.
    fn span(&self, off: u64, len: u64) -> Option<u64> {
        if self.relro.iter().any(|&(a, b)| off < b && off + len > a) {
            return None;
        }
        let &(_, start, size, _) = self
            .loads
            .iter()
            .find(|&&(_, o, s, w)| !w && off >= o && off < o + s)?;
        Some(len.min(start + size - off))
    }

    /// `n` bytes of this file (`path`) at `off`, read once (see
    /// [`Stacks::read_file`]).
    fn read(&mut self, path: &str, off: u64, n: u64, str: bool) -> Option<Vec<u8>> {
        if let Some(b) = self.read.get(&(off, n, str)) {
            return b.clone();
        }
        if self.read.len() >= READS_KEPT {
            self.read.clear();
        }
        let b = Stacks::read_file(path, off, n, str);
        self.read.insert((off, n, str), b.clone());
        b
    }

    /// The virtual address of file offset `off`.
    fn vaddr(&self, off: u64) -> Option<u64> {
        let &(v, o, _, _) = self
            .loads
            .iter()
            .find(|&&(_, o, s, _)| off >= o && off < o + s)?;
        Some(v + (off - o))
    }

    /// The file offset of virtual address `vaddr`.
    fn offset(&self, vaddr: u64) -> Option<u64> {
        let &(v, o, _, _) = self
            .loads
            .iter()
            .find(|&&(v, _, s, _)| vaddr >= v && vaddr < v + s)?;
        Some(o + (vaddr - v))
    }
}

/// Per-path caches of [`Layout`]s.
pub(super) type Layouts = HashMap<String, Layout>;

/// Where an event was taken: the probed file and the file offset of its
/// site, for a probe whose instruction pointer is that site.
#[derive(Clone, Copy, Debug)]
pub struct SiteFile<'a> {
    /// The probed file.
    pub path: &'a Path,
    /// The site's file offset.
    pub file_offset: u64,
}

impl Stacks {
    fn layout(&mut self, path: &str) -> &mut Layout {
        self.layouts
            .entry(path.to_string())
            .or_insert_with(|| Layout::of(Path::new(path)))
    }

    /// Reads `n` bytes of `path` at `off` (fewer at its end), up to the
    /// first NUL for a string.
    fn read_file(path: &str, off: u64, n: u64, str: bool) -> Option<Vec<u8>> {
        let mut buf = vec![0u8; n as usize];
        let got = File::open(path).ok()?.read_at(&mut buf, off).ok()?;
        buf.truncate(got);
        if str && let Some(end) = buf.iter().position(|&b| b == 0) {
            buf.truncate(end);
        }
        (got > 0).then_some(buf)
    }

    /// The bytes at `addr` in `pid`, through its maps (see the module
    /// comment): at most `len`, up to the first NUL for a string.
    fn read_mapped(&mut self, pid: u32, addr: u64, len: usize, str: bool) -> Option<Vec<u8>> {
        if !self.mapped(pid, addr) {
            self.reread_on_miss(pid);
        }
        let m = self
            .maps
            .get(&pid)?
            .iter()
            .find(|m| addr >= m.start && addr < m.end)?;
        if !m.is_file() || m.perms.as_bytes().get(1) != Some(&b'-') {
            return None;
        }
        let off = addr - m.start + m.offset;
        let want = (len as u64).min(m.end - addr);
        let path = m.name.clone();
        let layout = self.layout(&path);
        let n = layout.span(off, want)?;
        layout.read(&path, off, n, str)
    }

    /// The bytes at `addr` when it lies in the probed file, placed by the
    /// instruction pointer `ip` of a probe at `site`.
    fn read_site(
        &mut self,
        site: SiteFile<'_>,
        ip: u64,
        addr: u64,
        len: usize,
        str: bool,
    ) -> Option<Vec<u8>> {
        let path = site.path.to_str()?.to_string();
        let layout = self.layout(&path);
        let bias = ip.wrapping_sub(layout.vaddr(site.file_offset)?);
        let off = layout.offset(addr.wrapping_sub(bias))?;
        let n = layout.span(off, len as u64)?;
        layout.read(&path, off, n, str)
    }

    /// Replaces each failed `str()`/`buf()` read of an event of `pid` by
    /// the bytes the file mapped there holds, when it can (else it stays).
    /// `site` is given for probes whose instruction pointer is their site.
    pub fn read_late_values(
        &mut self,
        pid: u32,
        site: Option<SiteFile<'_>>,
        fields: &[Field],
        values: &mut [Value<'_>],
    ) {
        for (f, v) in fields.iter().zip(values.iter_mut()) {
            let (&Value::ReadFailed { addr, len, ip }, FieldKind::Str | FieldKind::Buf) =
                (&*v, &f.kind)
            else {
                continue;
            };
            let str = matches!(f.kind, FieldKind::Str);
            // The probed file placed by the ip is exact; maps may be stale.
            let in_site = site
                .zip(ip)
                .and_then(|(site, ip)| self.read_site(site, ip, addr, len, str));
            let bytes = in_site.or_else(|| self.read_mapped(pid, addr, len, str));
            if let Some(bytes) = bytes {
                *v = Value::Late { bytes, str };
            }
        }
    }

    /// Re-reads a live process's maps for an address found in none, at
    /// most once per [`MAPS_REFRESH`] (bad pointers can come at any rate).
    fn reread_on_miss(&mut self, pid: u32) {
        let now = Instant::now();
        let due = self
            .missed
            .get(&pid)
            .is_none_or(|t| now.duration_since(*t) >= MAPS_REFRESH);
        if due {
            self.missed.insert(pid, now);
            self.read_maps(pid);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Layout;

    #[test]
    fn relro_and_writable_ranges_are_not_constant() {
        let l = Layout {
            loads: vec![
                (0, 0, 0x1000, false),
                (0x11000, 0x1000, 0x1000, true),
                (0x22000, 0x2000, 0x1000, false),
            ],
            relro: vec![(0x2800, 0x2900)],
            ..Layout::default()
        };
        assert_eq!(l.span(0x10, 16), Some(16));
        assert_eq!(l.span(0xff8, 64), Some(8));
        assert_eq!(l.span(0x1800, 8), None);
        assert_eq!(l.span(0x27f0, 0x20), None);
        assert_eq!(l.span(0x2900, 8), Some(8));
        assert_eq!(l.vaddr(0x2010), Some(0x22010));
        assert_eq!(l.offset(0x22010), Some(0x2010));
        assert_eq!(l.offset(0x5000), None);
    }
}
