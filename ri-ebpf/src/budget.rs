//! The overhead budget's kernel side: per-site hit counts, and a per-site
//! generation that lets user space swap links without double counting.

use aya_ebpf::{bindings::BPF_F_MMAPABLE, macros::map, maps::Array};
use ri_common::{GEN_MASK, GEN_SHIFT, SiteState};

/// Nonzero when the budget is on, set by the loader; a constant the
/// verifier sees, so with the budget off none of this runs.
#[unsafe(no_mangle)]
static BUDGET: u32 = 0;

/// Per-site state by site id, mmapped by user space, which sizes it.
#[map]
static SITES: Array<SiteState> = Array::with_max_entries(1, BPF_F_MMAPABLE);

/// The cookie without its generation bits, or `None` when this hit must
/// not run: its site was dropped, or its link is being replaced by one of
/// another generation. Counts the hit otherwise.
#[inline(always)]
pub fn admit(cookie: u64) -> Option<u64> {
    let clean = cookie & !(GEN_MASK as u64);
    // SAFETY: a read-only global the loader sets.
    if unsafe { core::ptr::read_volatile(&BUDGET) } == 0 {
        return Some(clean);
    }
    let site = SITES.get_ptr_mut((cookie >> 32) as u32)?;
    let generation = (cookie as u32 & GEN_MASK) >> GEN_SHIFT;
    // SAFETY: a map value; user space writes the generation, the kernel
    // only reads it. The hits are an estimate: CPUs share the slot and an
    // increment racing another may be lost (BPF has no atomic add here
    // that Rust can emit).
    unsafe {
        if core::ptr::read_volatile(&(*site).generation) != generation {
            return None;
        }
        let hits = &mut (*site).hits;
        core::ptr::write_volatile(hits, core::ptr::read_volatile(hits).wrapping_add(1));
    }
    Some(clean)
}
