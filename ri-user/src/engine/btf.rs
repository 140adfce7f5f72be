//! Member offsets of kernel structs, read from the running kernel's BTF
//! (`/sys/kernel/btf/vmlinux`), for the exec tracepoint's `--exe` match
//! (an exec's file: `linux_binprm.file->f_inode`, its `i_ino` and its
//! superblock's `s_dev`), and for the fork tracepoint (`task_struct.tgid`).

use std::collections::HashMap;

/// A struct or union member: name, type id, bit offset.
type Member = (String, u32, u32);

/// The kernel's BTF: struct and union members by type id, type names.
struct Btf {
    /// Per type id (1-based): kind, name, and for structs/unions the
    /// members.
    types: Vec<(u32, String, Vec<Member>)>,
    /// Struct ids by name.
    structs: HashMap<String, u32>,
}

const STRUCT: u32 = 4;
const UNION: u32 = 5;

fn u32_at(d: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(d.get(at..at + 4)?.try_into().ok()?))
}

impl Btf {
    /// Parses the type section of `data` (little-endian BTF).
    fn parse(data: &[u8]) -> Option<Btf> {
        if data.get(..2)? != [0x9f, 0xeb] {
            return None;
        }
        let hdr = u32_at(data, 4)? as usize;
        let (toff, tlen) = (u32_at(data, 8)? as usize, u32_at(data, 12)? as usize);
        let soff = u32_at(data, 16)? as usize;
        let ts = data.get(hdr + toff..hdr + toff + tlen)?;
        let strs = data.get(hdr + soff..)?;
        let name = |off: u32| -> String {
            let s = strs.get(off as usize..).unwrap_or_default();
            let n = s.iter().position(|&b| b == 0).unwrap_or(0);
            String::from_utf8_lossy(&s[..n]).into_owned()
        };
        let mut types = vec![(0, String::new(), Vec::new())];
        let mut structs = HashMap::new();
        let mut at = 0;
        while at + 12 <= ts.len() {
            let (name_off, info) = (u32_at(ts, at)?, u32_at(ts, at + 4)?);
            let (kind, vlen, kflag) = ((info >> 24) & 0x1f, (info & 0xffff) as usize, info >> 31);
            at += 12;
            let mut members = Vec::new();
            let extra = match kind {
                1 | 14 | 17 => 4, // int, var, decl tag
                3 => 12,          // array
                4 | 5 => {
                    for m in 0..vlen {
                        let p = at + m * 12;
                        let off = u32_at(ts, p + 8)?;
                        let bits = if kflag == 1 { off & 0xff_ffff } else { off };
                        members.push((name(u32_at(ts, p)?), u32_at(ts, p + 4)?, bits));
                    }
                    12 * vlen
                }
                6 => 8 * vlen,        // enum
                13 => 8 * vlen,       // func proto
                15 | 19 => 12 * vlen, // datasec, enum64
                _ => 0,
            };
            at += extra;
            let n = name(name_off);
            if kind == STRUCT && !n.is_empty() {
                structs.entry(n.clone()).or_insert(types.len() as u32);
            }
            types.push((kind, n, members));
        }
        Some(Btf { types, structs })
    }

    /// The byte offset of `member` in struct `name`, looking into unnamed
    /// struct and union members.
    fn offset(&self, name: &str, member: &str) -> Option<u64> {
        self.find(*self.structs.get(name)?, member, 0)
    }

    fn find(&self, id: u32, member: &str, base: u32) -> Option<u64> {
        let (_, _, members) = self.types.get(id as usize)?;
        for (n, ty, bits) in members {
            if n == member {
                return Some(u64::from(base + bits) / 8);
            }
            if n.is_empty() {
                // Skip modifiers and typedefs to the anonymous aggregate.
                let inner = self.types.get(*ty as usize)?;
                if (inner.0 == STRUCT || inner.0 == UNION)
                    && let Some(o) = self.find(*ty, member, base + bits)
                {
                    return Some(o);
                }
            }
        }
        None
    }
}

/// Where the selection's tracepoints find things in the running kernel's
/// structs, from its BTF (`None` where it does not tell).
#[derive(Clone, Copy, Debug, Default)]
pub struct KernelOffsets {
    /// `linux_binprm.file`, `file.f_inode`, `inode.i_ino`, `inode.i_sb`
    /// and `super_block.s_dev`: an exec's file.
    pub exec_file: Option<[u64; 5]>,
    /// `task_struct.tgid`: a forked task's process.
    pub task_tgid: Option<u64>,
}

/// Reads the offsets from `/sys/kernel/btf/vmlinux`.
pub fn kernel_offsets() -> KernelOffsets {
    let Some(btf) = std::fs::read("/sys/kernel/btf/vmlinux")
        .ok()
        .and_then(|d| Btf::parse(&d))
    else {
        return KernelOffsets::default();
    };
    let exec_file = (|| {
        Some([
            btf.offset("linux_binprm", "file")?,
            btf.offset("file", "f_inode")?,
            btf.offset("inode", "i_ino")?,
            btf.offset("inode", "i_sb")?,
            btf.offset("super_block", "s_dev")?,
        ])
    })();
    KernelOffsets {
        exec_file,
        task_tgid: btf.offset("task_struct", "tgid"),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_running_kernel_tells_where_an_execs_file_is() {
        let k = super::kernel_offsets();
        let o = k.exec_file.expect("offsets from /sys/kernel/btf/vmlinux");
        assert!(k.task_tgid.is_some_and(|t| t % 4 == 0), "{k:?}");
        // Pointers and the inode number are 8-byte aligned; none is the
        // first member but `file` of linux_binprm may be anywhere.
        assert!(o.iter().all(|&x| x < 4096), "{o:?}");
        assert!(o[1..4].iter().all(|x| x.is_multiple_of(8)), "{o:?}");
    }
}
