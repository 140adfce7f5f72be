//! ELF core files (e.g. gdb's `gcore`) as a space: memory from the PT_LOAD
//! segments, and from the mapped files for what the core left out; images
//! and their load biases from the NT_FILE note (under `--sysroot` for a
//! moved tree); threads and registers from NT_PRSTATUS.

use std::{
    fs::File,
    path::{Path, PathBuf},
};

use memmap2::Mmap;
use object::{
    LittleEndian as LE, Object, ObjectSegment,
    elf::{ET_CORE, FileHeader64, PT_LOAD, PT_NOTE},
    read::elf::{FileHeader, ProgramHeader},
};

use super::{
    ViewError,
    space::{Image, Space, images, under},
};
use crate::{dwarf::value::Memory, peek};

const NT_PRSTATUS: u32 = 1;
const NT_PRPSINFO: u32 = 3;
const NT_FILE: u32 = 0x4649_4c45;

/// A file mapping the NT_FILE note lists.
#[derive(Clone, Debug)]
pub struct FileMap {
    /// First address.
    pub start: u64,
    /// One past the last.
    pub end: u64,
    /// File offset of `start`.
    pub offset: u64,
    /// The path as the process saw it.
    pub path: PathBuf,
}

/// One thread's registers (x86-64 `user_regs_struct` order).
#[derive(Clone, Debug)]
pub struct CoreThread {
    /// Thread id.
    pub tid: u32,
    /// The registers.
    pub regs: [u64; 27],
}

/// A parsed core file.
pub struct Core {
    map: Mmap,
    /// (vaddr, memsz, file offset, filesz).
    loads: Vec<(u64, u64, u64, u64)>,
    /// The NT_FILE mappings.
    pub files: Vec<FileMap>,
    /// The threads.
    pub threads: Vec<CoreThread>,
    /// The command name (`pr_fname`).
    pub comm: String,
    /// Root for the files.
    sysroot: Option<PathBuf>,
    /// The executable's path in the core and the file given for it.
    exe: Option<(PathBuf, PathBuf)>,
    symbols: peek::Symbols,
}

fn bad(core: &Path, what: impl std::fmt::Display) -> ViewError {
    ViewError::Core(format!("{}: {what}", core.display()))
}

impl Core {
    /// Reads `path`.
    pub fn open(path: &Path, sysroot: Option<&Path>) -> Result<Core, ViewError> {
        let f = File::open(path).map_err(|e| bad(path, e))?;
        // SAFETY: a read-only private map of a file ri does not change.
        let map = unsafe { Mmap::map(&f) }.map_err(|e| bad(path, e))?;
        let data: &[u8] = &map;
        let hdr =
            FileHeader64::<LE>::parse(data).map_err(|_| bad(path, "not a 64-bit ELF file"))?;
        let e = hdr.endian().map_err(|_| bad(path, "not little-endian"))?;
        if hdr.e_type(e) != ET_CORE {
            return Err(bad(path, "not a core file (ELF type is not ET_CORE)"));
        }
        let mut c = Core {
            loads: Vec::new(),
            files: Vec::new(),
            threads: Vec::new(),
            comm: String::new(),
            sysroot: sysroot.map(Path::to_path_buf),
            exe: None,
            symbols: peek::Symbols::default(),
            // SAFETY: as above; this map is the one kept.
            map: unsafe { Mmap::map(&f) }.map_err(|e| bad(path, e))?,
        };
        for ph in hdr
            .program_headers(e, data)
            .map_err(|_| bad(path, "bad program headers"))?
        {
            match ph.p_type(e) {
                PT_LOAD => {
                    c.loads
                        .push((ph.p_vaddr(e), ph.p_memsz(e), ph.p_offset(e), ph.p_filesz(e)))
                }
                PT_NOTE => {
                    let Ok(Some(mut notes)) = ph.notes(e, data) else {
                        continue;
                    };
                    while let Ok(Some(n)) = notes.next() {
                        c.note(n.n_type(e), n.desc());
                    }
                }
                _ => {}
            }
        }
        if c.loads.is_empty() {
            return Err(bad(path, "the core has no memory segments"));
        }
        Ok(c)
    }

    fn note(&mut self, ty: u32, d: &[u8]) {
        let u64_at = |o: usize| {
            d.get(o..o + 8)
                .map_or(0, |b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])))
        };
        match ty {
            NT_PRSTATUS if d.len() >= 112 + 27 * 8 => {
                let tid = u32::from_le_bytes(d[32..36].try_into().unwrap_or([0; 4]));
                let mut regs = [0u64; 27];
                for (i, r) in regs.iter_mut().enumerate() {
                    *r = u64_at(112 + i * 8);
                }
                self.threads.push(CoreThread { tid, regs });
            }
            NT_PRPSINFO if d.len() >= 56 => {
                let n = &d[40..56];
                let end = n.iter().position(|&b| b == 0).unwrap_or(16);
                self.comm = String::from_utf8_lossy(&n[..end]).into_owned();
            }
            NT_FILE => {
                let count = u64_at(0) as usize;
                let page = u64_at(8);
                let mut names = d.get(16 + count * 24..).unwrap_or(&[]).split(|&b| b == 0);
                for i in 0..count.min(1 << 16) {
                    let o = 16 + i * 24;
                    let Some(name) = names.next() else { break };
                    self.files.push(FileMap {
                        start: u64_at(o),
                        end: u64_at(o + 8),
                        offset: u64_at(o + 16) * page,
                        path: PathBuf::from(String::from_utf8_lossy(name).into_owned()),
                    });
                }
            }
            _ => {}
        }
    }

    /// Where the file at `p` is found now: under the sysroot, else where
    /// it was.
    pub fn local(&self, p: &Path) -> PathBuf {
        if let Some((core_path, given)) = &self.exe
            && core_path == p
        {
            return given.clone();
        }
        let moved = under(self.sysroot.as_deref(), p);
        if moved.exists() {
            moved
        } else {
            p.to_path_buf()
        }
    }

    /// The build-id of the ELF file mapped at `start` from offset 0, from
    /// the core's own copy of its first page (headers and notes).
    fn build_id_at(&self, start: u64) -> Option<Vec<u8>> {
        let mut eh = [0u8; 64];
        if !self.read(start, &mut eh) || &eh[..4] != b"\x7fELF" {
            return None;
        }
        let u16_at = |b: &[u8], o: usize| u16::from_le_bytes([b[o], b[o + 1]]) as u64;
        let u32_at =
            |b: &[u8], o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap_or([0; 4]));
        let u64_at =
            |b: &[u8], o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap_or([0; 8]));
        let (phoff, phent, phnum) = (u64_at(&eh, 0x20), u16_at(&eh, 0x36), u16_at(&eh, 0x38));
        let mut ph = vec![0u8; (phent * phnum.min(64)) as usize];
        if phent < 56 || !self.read(start + phoff, &mut ph) {
            return None;
        }
        let phs: Vec<&[u8]> = ph.chunks(phent as usize).collect();
        let base = phs
            .iter()
            .find(|p| u32_at(p, 0) == PT_LOAD && u64_at(p, 8) == 0)
            .map(|p| u64_at(p, 16) & !0xfff)?;
        for p in phs.iter().filter(|p| u32_at(p, 0) == PT_NOTE) {
            let mut notes = vec![0u8; u64_at(p, 32).min(4096) as usize];
            if !self.read(start + u64_at(p, 16) - base, &mut notes) {
                continue;
            }
            let mut o = 0;
            while o + 12 <= notes.len() {
                let (nsz, dsz, ty) = (
                    u32_at(&notes, o) as usize,
                    u32_at(&notes, o + 4) as usize,
                    u32_at(&notes, o + 8),
                );
                let name_end = o + 12 + nsz.div_ceil(4) * 4;
                let desc_end = name_end + dsz.div_ceil(4) * 4;
                if desc_end > notes.len() {
                    break;
                }
                if ty == 3 && notes.get(o + 12..o + 15) == Some(b"GNU") {
                    return Some(notes[name_end..name_end + dsz].to_vec());
                }
                o = desc_end;
            }
        }
        None
    }

    /// The distinct mapped files, in address order: (path in the core,
    /// local file, bias, build-id from the core). A local file whose
    /// build-id differs from the core's is left out, with a note.
    fn biases(&self) -> Vec<(PathBuf, PathBuf, u64, Option<Vec<u8>>)> {
        let mut out: Vec<(PathBuf, PathBuf, u64, Option<Vec<u8>>)> = Vec::new();
        for m in &self.files {
            if out.iter().any(|(p, ..)| *p == m.path) {
                continue;
            }
            let first = self
                .files
                .iter()
                .filter(|x| x.path == m.path)
                .min_by_key(|x| x.offset)
                .unwrap_or(m);
            let id = (first.offset == 0)
                .then(|| self.build_id_at(first.start))
                .flatten();
            let local = self.local(&m.path);
            if id.is_some() && local.exists() && build_id(&local) != id {
                eprintln!(
                    "ri: note: {} is not the file the core mapped (its build-id differs); not used (see --sysroot, --exe)",
                    local.display()
                );
                continue;
            }
            if let Some(b) = bias_of(&local, first.start, first.offset) {
                out.push((m.path.clone(), local, b, id));
            } else if id.is_some() {
                // Missing here: kept so that --exe can stand in for it.
                out.push((m.path.clone(), local, first.start, id));
            }
        }
        out
    }

    /// Reads from the file mapped at `addr` (up to the mapping's end);
    /// the bytes read.
    fn read_file(&self, addr: u64, buf: &mut [u8]) -> usize {
        let Some(m) = self.files.iter().find(|m| addr >= m.start && addr < m.end) else {
            return 0;
        };
        let n = ((m.end - addr) as usize).min(buf.len());
        use std::os::unix::fs::FileExt;
        File::open(self.local(&m.path))
            .and_then(|f| f.read_at(&mut buf[..n], addr - m.start + m.offset))
            .unwrap_or(0)
    }
}

/// Bias of `path` mapped at `start` from file offset `off`.
fn bias_of(path: &Path, start: u64, off: u64) -> Option<u64> {
    let data = std::fs::read(path).ok()?;
    let file = object::File::parse(&*data).ok()?;
    let seg = file.segments().find(|s| {
        let (o, size) = s.file_range();
        off >= o & !0xfff && off < o + size.max(1)
    })?;
    let (o, _) = seg.file_range();
    Some(start.wrapping_sub(seg.address().wrapping_sub(o).wrapping_add(off)))
}

impl Memory for Core {
    fn read(&self, addr: u64, buf: &mut [u8]) -> bool {
        self.read_prefix(addr, buf) == buf.len()
    }

    fn read_prefix(&self, addr: u64, buf: &mut [u8]) -> usize {
        let mut done = 0;
        while done < buf.len() {
            let at = addr + done as u64;
            let want = buf.len() - done;
            let dumped = self
                .loads
                .iter()
                .find(|l| at >= l.0 && at < l.0 + l.3)
                .and_then(|&(va, _, off, filesz)| {
                    let n = ((va + filesz - at) as usize).min(want);
                    let s = (off + at - va) as usize;
                    Some((n, self.map.get(s..s + n)?))
                });
            let n = match dumped {
                Some((n, src)) => {
                    buf[done..done + n].copy_from_slice(src);
                    n
                }
                // Left out of the core: read it from the mapped file.
                None => match self.read_file(at, &mut buf[done..]) {
                    0 => break,
                    n => n,
                },
            };
            done += n;
        }
        done
    }

    fn symbol(&self, addr: u64) -> Option<String> {
        self.symbols.name(addr)
    }
}

/// The build-id of an ELF file.
fn build_id(path: &Path) -> Option<Vec<u8>> {
    let data = std::fs::read(path).ok()?;
    let file = object::File::parse(&*data).ok()?;
    file.build_id().ok()?.map(<[u8]>::to_vec)
}

/// Opens `core` as a space; `exe` names its executable (it must be the one
/// the core was dumped from: same build-id as a mapped file).
pub fn open(core: &Path, exe: Option<&Path>, sysroot: Option<&Path>) -> Result<Space, ViewError> {
    let mut c = Core::open(core, sysroot)?;
    let mut files = c.biases();
    if files.is_empty() {
        return Err(bad(
            core,
            "no file of the core's file note is readable (try --sysroot)",
        ));
    }
    // The executable: --exe (checked by build-id), else the file named as
    // the command, else the first mapped.
    let exe_idx = match exe {
        Some(e) => {
            let want = build_id(e);
            let idx = files.iter().position(|f| {
                want.is_some() && (f.3 == want || (f.3.is_none() && build_id(&f.1) == want))
            });
            let Some(i) = idx else {
                let comm = if c.comm.is_empty() {
                    "?".into()
                } else {
                    c.comm.clone()
                };
                return Err(bad(
                    core,
                    format!(
                        "the core does not match {} (its build-id is in none of the core's files; the core is of '{comm}')",
                        e.display()
                    ),
                ));
            };
            let first = c
                .files
                .iter()
                .filter(|m| m.path == files[i].0)
                .min_by_key(|m| m.offset);
            let bias = first
                .and_then(|m| bias_of(e, m.start, m.offset))
                .unwrap_or(files[i].2);
            files[i].1 = e.to_path_buf();
            files[i].2 = bias;
            c.exe = Some((files[i].0.clone(), e.to_path_buf()));
            i
        }
        None => files
            .iter()
            .position(|(p, ..)| !c.comm.is_empty() && peek::short(p).starts_with(&c.comm))
            .unwrap_or(0),
    };
    let exe_entry = files.remove(exe_idx);
    files.insert(0, exe_entry);
    let list: Vec<(PathBuf, u64)> = files
        .iter()
        .filter(|f| f.1.exists())
        .map(|f| (f.1.clone(), f.2))
        .collect();
    for (p, b) in &list {
        c.symbols.add(p, *b);
    }
    c.symbols.finish();
    let imgs: Vec<Image> = images(&list).map_err(|e| bad(core, e))?;
    Ok(Space {
        images: imgs,
        mem: Box::new(c),
        exe: list.first().cloned(),
        now_ns: None,
        what: format!("core {}", core.display()),
    })
}
