//! What the overhead budget measures: the kernel's per-site hits (the
//! `SITES` array, mmapped), the run time of ri's programs (BPF run-time
//! statistics), and the cost of the trap at each kind of site (calibrated
//! once on ri's own code).

use std::{
    os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd},
    path::{Path, PathBuf},
    time::Instant,
};

use ri_common::SiteState;

/// Errors measuring for the budget.
#[derive(Debug, thiserror::Error)]
pub enum SitesError {
    /// The `SITES` map could not be mapped.
    #[error("mapping the per-site counters: {0}")]
    Map(std::io::Error),
    /// ri's own code could not be found in its mappings.
    #[error("calibrating the trap cost: {0}")]
    Calibrate(String),
}

/// The kernel's `SITES` array, mapped into ri: hits read and generations
/// written without a system call.
pub struct SiteTable {
    base: *mut SiteState,
    sites: usize,
    bytes: usize,
}

// SAFETY: the mapping is shared memory owned by this value; every access
// is a volatile read or write of one aligned word.
unsafe impl Send for SiteTable {}
// SAFETY: as above.
unsafe impl Sync for SiteTable {}

impl SiteTable {
    /// Maps the array of `sites` entries behind `fd` (a `BPF_F_MMAPABLE`
    /// array).
    pub fn map(fd: BorrowedFd<'_>, sites: usize) -> Result<Self, SitesError> {
        let page = 4096;
        let bytes = (sites * std::mem::size_of::<SiteState>()).div_ceil(page) * page;
        // SAFETY: a shared mapping of a map fd the kernel sized for at least
        // `bytes`; unmapped on drop.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(SitesError::Map(std::io::Error::last_os_error()));
        }
        Ok(SiteTable {
            base: p as *mut SiteState,
            sites,
            bytes,
        })
    }

    fn slot(&self, site: u32) -> Option<*mut SiteState> {
        // SAFETY: in bounds of the mapping.
        ((site as usize) < self.sites).then(|| unsafe { self.base.add(site as usize) })
    }

    /// Hits of every site so far.
    pub fn hits(&self) -> Vec<u64> {
        (0..self.sites as u32)
            .map(|s| {
                // SAFETY: an aligned word of the mapping.
                self.slot(s)
                    .map_or(0, |p| unsafe { std::ptr::read_volatile(&(*p).hits) })
            })
            .collect()
    }

    /// The generation of cookies that run at `site`.
    pub fn generation(&self, site: u32) -> u32 {
        // SAFETY: an aligned word of the mapping.
        self.slot(site)
            .map_or(0, |p| unsafe { std::ptr::read_volatile(&(*p).generation) })
    }

    /// Sets the generation of cookies that run at `site`.
    pub fn set_generation(&self, site: u32, generation: u32) {
        if let Some(p) = self.slot(site) {
            // SAFETY: an aligned word of the mapping.
            unsafe { std::ptr::write_volatile(&mut (*p).generation, generation) };
        }
    }
}

impl Drop for SiteTable {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `map`.
        unsafe { libc::munmap(self.base as *mut libc::c_void, self.bytes) };
    }
}

const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
const BPF_ENABLE_STATS: libc::c_long = 32;
/// Offsets of `run_time_ns` and `run_cnt` in `struct bpf_prog_info`.
const RUN_TIME_AT: usize = 192;
const RUN_CNT_AT: usize = 200;

/// BPF run-time statistics of ri's programs, on while this lives (the
/// kernel times every BPF program then: two clock reads a run).
pub struct ProgStats {
    _enabled: OwnedFd,
    progs: Vec<OwnedFd>,
}

impl ProgStats {
    /// Turns the statistics on for `progs`; `None` when the kernel refuses.
    pub fn enable(progs: Vec<OwnedFd>) -> Option<Self> {
        // `BPF_STATS_RUN_TIME` is 0.
        let attr = [0u32; 2];
        // SAFETY: a zeroed bpf_attr prefix of the command's size.
        let fd = unsafe { libc::syscall(libc::SYS_bpf, BPF_ENABLE_STATS, attr.as_ptr(), 8u32) };
        if fd < 0 {
            return None;
        }
        // SAFETY: the kernel just returned this fd.
        let enabled = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        Some(ProgStats {
            _enabled: enabled,
            progs,
        })
    }

    /// Run time and runs of all the programs so far.
    pub fn totals(&self) -> (u64, u64) {
        let mut sum = (0, 0);
        for p in &self.progs {
            let mut info = [0u8; 256];
            #[repr(C)]
            struct Attr {
                fd: u32,
                len: u32,
                info: u64,
            }
            let attr = Attr {
                fd: p.as_raw_fd() as u32,
                len: info.len() as u32,
                info: info.as_mut_ptr() as u64,
            };
            // SAFETY: the attr points at a buffer of the length it gives.
            let r = unsafe {
                libc::syscall(
                    libc::SYS_bpf,
                    BPF_OBJ_GET_INFO_BY_FD,
                    &attr as *const Attr,
                    std::mem::size_of::<Attr>() as u32,
                )
            };
            if r == 0 {
                let word =
                    |at: usize| u64::from_ne_bytes(info[at..at + 8].try_into().unwrap_or_default());
                sum.0 += word(RUN_TIME_AT);
                sum.1 += word(RUN_CNT_AT);
            }
        }
        sum
    }
}

/// The trap costs the budget charges, in ns per hit.
#[derive(Clone, Copy, Debug)]
pub struct TrapCosts {
    /// An int3 breakpoint (most function entries).
    pub int3: f64,
    /// A 5-byte nop the kernel turns into a call (when it can).
    pub nop5: f64,
}

/// A function whose entry is an ordinary instruction: probing it traps.
#[inline(never)]
#[unsafe(no_mangle)]
pub extern "C" fn ri_calibrate_int3(x: u64) -> u64 {
    std::hint::black_box(x).wrapping_add(1)
}

unsafe extern "C" {
    /// A function whose entry is a 5-byte nop (defined below).
    fn ri_calibrate_nop5(x: u64) -> u64;
}

std::arch::global_asm!(
    ".text",
    ".globl ri_calibrate_nop5",
    ".type ri_calibrate_nop5, @function",
    "ri_calibrate_nop5:",
    ".byte 0x0f, 0x1f, 0x44, 0x00, 0x00",
    "lea rax, [rdi + 1]",
    "ret",
    ".size ri_calibrate_nop5, . - ri_calibrate_nop5",
);

/// The file and file offset of code at `addr` in this process.
fn own_code(addr: usize) -> Result<(PathBuf, u64), SitesError> {
    let maps = std::fs::read_to_string("/proc/self/maps")
        .map_err(|e| SitesError::Calibrate(e.to_string()))?;
    for line in maps.lines() {
        let mut f = line.split_whitespace();
        let (Some(range), Some(_perms), Some(off), _, _, Some(path)) =
            (f.next(), f.next(), f.next(), f.next(), f.next(), f.next())
        else {
            continue;
        };
        let Some((lo, hi)) = range.split_once('-') else {
            continue;
        };
        let (Ok(lo), Ok(hi), Ok(off)) = (
            usize::from_str_radix(lo, 16),
            usize::from_str_radix(hi, 16),
            u64::from_str_radix(off, 16),
        ) else {
            continue;
        };
        if (lo..hi).contains(&addr) {
            return Ok((PathBuf::from(path), off + (addr - lo) as u64));
        }
    }
    Err(SitesError::Calibrate(format!("no mapping holds {addr:#x}")))
}

/// The fastest of a few batches of calls of `f`, in ns per call.
fn per_call(f: &dyn Fn(u64) -> u64) -> f64 {
    const BATCHES: usize = 5;
    const CALLS: u64 = 20;
    let mut best = f64::MAX;
    for _ in 0..BATCHES {
        let t = Instant::now();
        let mut x = 0;
        for i in 0..CALLS {
            x = f(std::hint::black_box(i ^ x));
        }
        std::hint::black_box(x);
        best = best.min(t.elapsed().as_nanos() as f64 / CALLS as f64);
    }
    best
}

/// What one hit of `f` costs with `attach` (which attaches the empty
/// program at a file and offset, returning the attachment) on it: the
/// fastest batch probed minus the fastest unprobed, after a few warm-up
/// calls (the kernel optimizes a nop5 site on its first hits).
pub fn trap_cost<T>(
    f: &dyn Fn(u64) -> u64,
    addr: usize,
    attach: &mut dyn FnMut(&Path, u64) -> Result<T, String>,
) -> Result<(f64, T), SitesError> {
    let (path, offset) = own_code(addr)?;
    let bare = per_call(f);
    let link = attach(&path, offset).map_err(SitesError::Calibrate)?;
    for i in 0..10 {
        std::hint::black_box(f(i));
    }
    let probed = per_call(f);
    Ok(((probed - bare).max(0.0), link))
}

/// A calibration function and the address to probe.
pub type Calibrated = (fn(u64) -> u64, usize);

/// The int3 and nop5 calibration functions, as `(function, address)`.
pub fn calibration_functions() -> [Calibrated; 2] {
    fn int3(x: u64) -> u64 {
        ri_calibrate_int3(x)
    }
    fn nop5(x: u64) -> u64 {
        // SAFETY: the assembly above: returns its argument plus one.
        unsafe { ri_calibrate_nop5(x) }
    }
    [
        (int3, ri_calibrate_int3 as *const () as usize),
        (nop5, ri_calibrate_nop5 as *const () as usize),
    ]
}

/// True when the site at `offset` of `file` starts with a 5-byte nop.
pub fn is_nop5(file: &std::fs::File, offset: u64) -> bool {
    use std::os::unix::fs::FileExt;
    let mut b = [0u8; 5];
    file.read_exact_at(&mut b, offset).is_ok() && b == [0x0f, 0x1f, 0x44, 0x00, 0x00]
}
