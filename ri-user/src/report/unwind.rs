//! Unwinding a copied stack, after the thread runs again.
//!
//! Each step uses the module's DWARF call-frame information (`.eh_frame`,
//! found through `.eh_frame_hdr`) when it covers the address: that is exact
//! even in code without frame pointers (most of libc) and at a function's
//! first instructions. Where no CFI covers the address (code built without
//! unwind tables, JIT code, the vDSO) the step follows the frame-pointer
//! chain instead. Every read comes from the stack copy, never from the
//! live process.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    rc::Rc,
};

use gimli::{
    BaseAddresses, CfaRule, EhFrame, EhFrameHdr, LittleEndian, RegisterRule, UnwindContext,
    UnwindSection as _,
};

use super::stop::{Capture, FP, IP, Regs, SP};

/// Most frames unwound per thread.
pub const MAX_FRAMES: usize = 128;

/// One line of `/proc/PID/maps`.
#[derive(Clone, Debug)]
pub struct Mapping {
    /// First address.
    pub start: u64,
    /// One past the last address.
    pub end: u64,
    /// `rwxp`-style permissions.
    pub perms: String,
    /// File offset of `start`.
    pub offset: u64,
    /// Path or pseudo-name (`[stack]`, `[vdso]`); empty for anonymous memory.
    pub name: String,
}

impl Mapping {
    /// True for code.
    pub fn executable(&self) -> bool {
        self.perms.as_bytes().get(2) == Some(&b'x')
    }

    /// True when backed by a file.
    pub fn is_file(&self) -> bool {
        self.name.starts_with('/')
    }
}

/// Parses `/proc/PID/maps`.
pub fn parse_maps(text: &str) -> Vec<Mapping> {
    text.lines()
        .filter_map(|l| {
            let mut it = l.splitn(6, ' ');
            let (range, perms, off) = (it.next()?, it.next()?, it.next()?);
            let (_dev, _inode) = (it.next()?, it.next()?);
            let name = it.next().unwrap_or("").trim().to_string();
            let (a, b) = range.split_once('-')?;
            Some(Mapping {
                start: u64::from_str_radix(a, 16).ok()?,
                end: u64::from_str_radix(b, 16).ok()?,
                perms: perms.to_string(),
                offset: u64::from_str_radix(off, 16).ok()?,
                name,
            })
        })
        .collect()
}

/// How a frame was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// From the registers (the innermost frame).
    Regs,
    /// By the caller's CFI.
    Cfi,
    /// By the frame-pointer chain.
    Fp,
}

/// A frame before symbolization.
#[derive(Clone, Debug)]
pub struct RawFrame {
    /// Instruction pointer (a return address for all but the first).
    pub ip: u64,
    /// How it was found.
    pub method: Method,
    /// A path that reads the mapped file and `ip` in the file's own address
    /// space (for symbolization), when in a mapped ELF file.
    pub location: Option<(PathBuf, u64)>,
    /// Name of the mapping (a path, `[vdso]`, `[anon]`), if in one.
    pub mapping: Option<String>,
}

/// An ELF file's loadable segments and unwind tables.
struct Module {
    data: Vec<u8>,
    /// PT_LOAD segments: (file offset, file size, virtual address).
    segments: Vec<(u64, u64, u64)>,
    /// `.eh_frame`: (address, file range).
    eh_frame: Option<(u64, std::ops::Range<usize>)>,
    /// `.eh_frame_hdr`: (address, file range).
    eh_frame_hdr: Option<(u64, std::ops::Range<usize>)>,
    /// `.text` address.
    text: u64,
}

/// What a CFI step found.
enum Step {
    /// The caller's registers.
    Caller(Box<Regs>),
    /// The outermost frame (return address undefined).
    End,
    /// No CFI for this address, or CFI that cannot be evaluated here.
    NoInfo,
}

impl Module {
    fn open(path: &Path) -> Option<Module> {
        use object::{Object as _, ObjectSection as _, ObjectSegment as _};
        let data = std::fs::read(path).ok()?;
        let file = object::File::parse(&*data).ok()?;
        let segments = file
            .segments()
            .map(|s| {
                let (off, size) = s.file_range();
                (off, size, s.address())
            })
            .collect();
        let section = |name: &str| {
            let s = file.section_by_name(name)?;
            let (off, size) = s.file_range()?;
            Some((s.address(), off as usize..(off + size) as usize))
        };
        let eh_frame = section(".eh_frame");
        let eh_frame_hdr = section(".eh_frame_hdr");
        let text = file
            .section_by_name(".text")
            .map(|s| s.address())
            .unwrap_or(0);
        drop(file);
        Some(Module {
            data,
            segments,
            eh_frame,
            eh_frame_hdr,
            text,
        })
    }

    /// The address in the file's own address space of a file offset.
    fn vaddr_of(&self, off: u64) -> Option<u64> {
        self.segments
            .iter()
            .find(|(o, size, _)| off >= *o && off < o + size)
            .map(|(o, _, va)| off - o + va)
    }

    /// One CFI step at `addr` (in the file's address space) from the
    /// registers `regs` (process addresses).
    fn step(&self, addr: u64, regs: &Regs, stack: &Stack) -> Step {
        let Some((eh_addr, eh_range)) = &self.eh_frame else {
            return Step::NoInfo;
        };
        let Some(eh_bytes) = self.data.get(eh_range.clone()) else {
            return Step::NoInfo;
        };
        let mut eh = EhFrame::new(eh_bytes, LittleEndian);
        eh.set_address_size(8);
        let mut bases = BaseAddresses::default()
            .set_eh_frame(*eh_addr)
            .set_text(self.text);
        if let Some((a, _)) = &self.eh_frame_hdr {
            bases = bases.set_eh_frame_hdr(*a);
        }
        let hdr = self.eh_frame_hdr.as_ref().and_then(|(_, r)| {
            EhFrameHdr::new(self.data.get(r.clone())?, LittleEndian)
                .parse(&bases, 8)
                .ok()
        });
        let fde = match hdr.as_ref().and_then(|h| h.table()) {
            Some(table) => table.fde_for_address(&eh, &bases, addr, EhFrame::cie_from_offset),
            None => eh.fde_for_address(&bases, addr, EhFrame::cie_from_offset),
        };
        let Ok(fde) = fde else {
            return Step::NoInfo;
        };
        let mut ctx = UnwindContext::new();
        let Ok(row) = fde.unwind_info_for_address(&eh, &bases, &mut ctx, addr) else {
            return Step::NoInfo;
        };
        let cfa = match row.cfa() {
            CfaRule::RegisterAndOffset { register, offset } => {
                match regs.get(register.0 as usize).copied().flatten() {
                    Some(v) => v.wrapping_add_signed(*offset),
                    None => return Step::NoInfo,
                }
            }
            CfaRule::Expression(_) => return Step::NoInfo,
        };
        let mut next = *regs;
        // Caller-saved registers are unknown in the caller.
        for r in [0usize, 1, 2, 4, 5, 8, 9, 10, 11] {
            next[r] = None;
        }
        for (reg, rule) in row.registers() {
            let i = reg.0 as usize;
            if i >= next.len() {
                continue;
            }
            next[i] = match rule {
                RegisterRule::Undefined => None,
                RegisterRule::SameValue => regs[i],
                RegisterRule::Offset(o) => stack.read(cfa.wrapping_add_signed(*o)),
                RegisterRule::ValOffset(o) => Some(cfa.wrapping_add_signed(*o)),
                RegisterRule::Register(r) => regs.get(r.0 as usize).copied().flatten(),
                _ => None,
            };
        }
        if matches!(
            row.register(gimli::Register(IP as u16)),
            RegisterRule::Undefined
        ) {
            return Step::End;
        }
        if next[IP].is_none() {
            return Step::NoInfo;
        }
        next[SP] = Some(cfa);
        Step::Caller(Box::new(next))
    }
}

/// The copied stack.
struct Stack<'a> {
    base: u64,
    bytes: &'a [u8],
}

impl Stack<'_> {
    fn read(&self, addr: u64) -> Option<u64> {
        let off = addr.checked_sub(self.base)? as usize;
        let b = self.bytes.get(off..off.checked_add(8)?)?;
        Some(u64::from_le_bytes(b.try_into().ok()?))
    }
}

/// Where an address is: the module with the readable path of its file and
/// the file's own address for it, and the mapping's name.
type Located = (Option<(Rc<Module>, PathBuf, u64)>, Option<String>);

/// Unwinds captured stacks of one process, caching its modules.
pub struct Unwinder {
    pid: u32,
    maps: Vec<Mapping>,
    modules: HashMap<String, Option<Rc<Module>>>,
    /// Prefix to the target's root when it is in another mount namespace.
    root: String,
}

impl Unwinder {
    /// An unwinder over the process's current mappings.
    pub fn new(pid: u32, maps: Vec<Mapping>) -> Self {
        Unwinder {
            pid,
            maps,
            modules: HashMap::new(),
            root: super::procfs::root_prefix(pid),
        }
    }

    fn mapping(&self, addr: u64) -> Option<&Mapping> {
        self.maps.iter().find(|m| addr >= m.start && addr < m.end)
    }

    /// A path that reads the mapped file: its name, or the kernel's link
    /// to it when the file was replaced or deleted.
    fn readable_path(&self, m: &Mapping) -> PathBuf {
        let p = PathBuf::from(format!("{}{}", self.root, m.name));
        if p.exists() {
            p
        } else {
            PathBuf::from(format!(
                "/proc/{}/map_files/{:x}-{:x}",
                self.pid, m.start, m.end
            ))
        }
    }

    fn module(&mut self, m: &Mapping) -> Option<(Rc<Module>, PathBuf)> {
        let path = self.readable_path(m);
        let module = self
            .modules
            .entry(m.name.clone())
            .or_insert_with(|| Module::open(&path).map(Rc::new))
            .clone()?;
        Some((module, path))
    }

    /// Where `addr` is: the module with the file's own address for it,
    /// and the mapping's name.
    fn locate(&mut self, addr: u64) -> Located {
        let Some(m) = self.mapping(addr).cloned() else {
            return (None, None);
        };
        let name = if m.name.is_empty() {
            "[anon]".to_string()
        } else {
            m.name.clone()
        };
        if !m.is_file() {
            return (None, Some(name));
        }
        let module = self.module(&m).and_then(|(module, path)| {
            let va = module.vaddr_of(addr - m.start + m.offset)?;
            Some((module, path, va))
        });
        (module, Some(name))
    }

    /// Unwinds one capture; the second value says why it stopped early,
    /// when it did not reach the outermost frame.
    pub fn unwind(&mut self, cap: &Capture) -> (Vec<RawFrame>, Option<String>) {
        let stack = Stack {
            base: cap.stack_base,
            bytes: &cap.stack,
        };
        let mut regs = cap.regs;
        let mut frames = Vec::new();
        let mut method = Method::Regs;
        loop {
            let Some(ip) = regs[IP] else {
                return (frames, Some("lost the return address".into()));
            };
            // A return address points after the call: look up the call.
            let lookup = if frames.is_empty() {
                ip
            } else {
                ip.saturating_sub(1)
            };
            let (module, mapping) = self.locate(lookup);
            frames.push(RawFrame {
                ip,
                method,
                // The file address of `ip` itself (the lookup was of `lookup`).
                location: module
                    .as_ref()
                    .map(|(_, p, va)| (p.clone(), va + (ip - lookup))),
                mapping: mapping.clone(),
            });
            if mapping.is_none() {
                return (frames, Some(format!("{ip:#x} is not in any mapping")));
            }
            if frames.len() >= MAX_FRAMES {
                return (frames, Some(format!("stopped at {MAX_FRAMES} frames")));
            }
            let step = match &module {
                Some((m, _, va)) => m.step(*va, &regs, &stack),
                None => Step::NoInfo,
            };
            let next = match step {
                Step::End => return (frames, None),
                Step::Caller(next) => {
                    method = Method::Cfi;
                    *next
                }
                Step::NoInfo => match self.leaf_step(frames.len() == 1, &regs, &stack) {
                    Some(next) => {
                        method = Method::Fp;
                        next
                    }
                    None => match fp_step(&regs, &stack) {
                        Some(next) => {
                            method = Method::Fp;
                            next
                        }
                        None if regs[FP] == Some(0) => return (frames, None),
                        None => {
                            return (
                                frames,
                                Some(format!(
                                    "no unwind information at {ip:#x} and no frame-pointer chain"
                                )),
                            );
                        }
                    },
                },
            };
            match (next[SP], regs[SP], next[IP]) {
                (_, _, Some(0)) | (_, _, None) => return (frames, None),
                (Some(n), Some(o), _) if n <= o => {
                    return (frames, Some("the stack pointer did not move up".into()));
                }
                _ => {}
            }
            regs = next;
        }
    }
}

impl Unwinder {
    /// The innermost frame of code without CFI may be a leaf that set up
    /// no frame (compilers omit it there even with frame pointers): then
    /// the return address is still at the stack pointer. Taken only when
    /// the word there points just after a call instruction.
    fn leaf_step(&mut self, innermost: bool, regs: &Regs, stack: &Stack) -> Option<Regs> {
        if !innermost {
            return None;
        }
        let sp = regs[SP]?;
        let ra = stack.read(sp)?;
        if !self.follows_call(ra) {
            return None;
        }
        let mut next = *regs;
        for r in [0usize, 1, 2, 4, 5, 8, 9, 10, 11] {
            next[r] = None;
        }
        next[SP] = Some(sp + 8);
        next[IP] = Some(ra);
        Some(next)
    }

    /// True when the bytes before `addr` in its mapped file end with an
    /// x86-64 call: `e8 rel32`, or `ff /2` with a 1- to 6-byte operand.
    fn follows_call(&mut self, addr: u64) -> bool {
        let Some(m) = self.mapping(addr).cloned() else {
            return false;
        };
        if !m.executable() || !m.is_file() {
            return false;
        }
        let Some((module, _)) = self.module(&m) else {
            return false;
        };
        let off = (addr - m.start + m.offset) as usize;
        let Some(code) = module.data.get(off.saturating_sub(8)..off) else {
            return false;
        };
        let n = code.len();
        if n >= 5 && code[n - 5] == 0xe8 {
            return true;
        }
        (2..=7).any(|len| n >= len && code[n - len] == 0xff && (code[n - len + 1] >> 3) & 7 == 2)
    }
}

/// One step along the frame-pointer chain: `[fp]` is the caller's frame
/// pointer, `[fp + 8]` the return address.
fn fp_step(regs: &Regs, stack: &Stack) -> Option<Regs> {
    let fp = regs[FP]?;
    if fp < regs[SP]? || !fp.is_multiple_of(8) {
        return None;
    }
    let caller_fp = stack.read(fp)?;
    let ra = stack.read(fp + 8)?;
    let mut next = [None; 17];
    for r in [3usize, 12, 13, 14, 15] {
        next[r] = regs[r];
    }
    next[FP] = Some(caller_fp);
    next[SP] = Some(fp + 16);
    next[IP] = Some(ra);
    Some(next)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_lines() {
        let m = parse_maps(
            "55d0c0a00000-55d0c0a21000 r-xp 00002000 08:01 1234    /usr/bin/a b (deleted)\n\
             7ffd1000-7ffd3000 rw-p 00000000 00:00 0                          [stack]\n\
             7f0000000000-7f0000001000 rw-p 00000000 00:00 0 \n",
        );
        assert_eq!(m.len(), 3);
        assert_eq!(m[0].start, 0x55d0c0a00000);
        assert_eq!(m[0].offset, 0x2000);
        assert!(m[0].executable() && m[0].is_file());
        assert_eq!(m[0].name, "/usr/bin/a b (deleted)");
        assert_eq!(m[1].name, "[stack]");
        assert_eq!(m[2].name, "");
    }

    #[test]
    fn frame_pointer_chain() {
        // Two frames: fp at base+16 -> caller fp base+48, return 0x1234.
        let base = 0x1000u64;
        let mut bytes = vec![0u8; 40];
        bytes[16..24].copy_from_slice(&(base + 48).to_le_bytes());
        bytes[24..32].copy_from_slice(&0x1234u64.to_le_bytes());
        let stack = Stack {
            base,
            bytes: &bytes,
        };
        let mut regs = [None; 17];
        regs[SP] = Some(base);
        regs[FP] = Some(base + 16);
        regs[IP] = Some(0x9999);
        let next = fp_step(&regs, &stack).unwrap();
        assert_eq!(next[IP], Some(0x1234));
        assert_eq!(next[FP], Some(base + 48));
        assert_eq!(next[SP], Some(base + 32));
        // The caller's frame pointer points past the copy: no further step.
        assert!(fp_step(&next, &stack).is_none());
    }
}
