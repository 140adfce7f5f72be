//! User stacks: `bpf_get_stackid` into `STACKS`, or, when the stack's
//! bucket there holds another stack, `bpf_get_stack` into `STACK_MORE`.

use core::ffi::c_void;

use aya_ebpf::{
    bindings::BPF_NOEXIST,
    helpers::generated::bpf_get_stack,
    macros::map,
    maps::{HashMap, PerCpuArray, StackTrace},
    programs::tracing::StackIdContext,
};
use ri_common::{
    STACK_ENTRIES, STACK_FRAMES, STACK_MORE_BIT, STACK_MORE_MASK, STACK_NONE, StackFrames,
};

/// User stacks of plans that use `STACK`, by stack id.
#[map]
static STACKS: StackTrace = StackTrace::with_max_entries(STACK_ENTRIES, 0);

/// Stacks whose bucket in `STACKS` held another stack (the kernel hashes
/// the frames into buckets and keeps one stack per bucket), under an id of
/// their own: [`STACK_MORE_BIT`] | a hash of the frames, probed linearly.
/// User space sizes it.
#[map]
static STACK_MORE: HashMap<u32, StackFrames> = HashMap::with_max_entries(STACK_ENTRIES / 4, 0);

/// Where `bpf_get_stack` writes a stack bound for `STACK_MORE`, per CPU.
#[map]
static STACK_BUF: PerCpuArray<StackFrames> = PerCpuArray::with_max_entries(1, 0);

/// Ids of `STACK_MORE` tried for one stack before it counts as lost.
const STACK_PROBES: u32 = 4;

/// Stacks stored nowhere (both maps taken, or no stack to walk), per CPU.
#[map]
static STACK_ERRORS: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// `BPF_F_USER_STACK`: walk the user stack, not the kernel's.
const USER_STACK: u64 = 1 << 8;

/// The current user stack's id (in `STACKS` or `STACK_MORE`), or
/// [`STACK_NONE`] counted in `STACK_ERRORS` when neither could store it.
#[inline(always)]
pub fn take<C: StackIdContext>(probe: &C) -> u32 {
    if let Ok(id) = probe.get_stackid(&STACKS, USER_STACK) {
        return id as u32;
    }
    if let Some(id) = more(probe.as_ptr()) {
        return id;
    }
    if let Some(e) = STACK_ERRORS.get_ptr_mut(0) {
        // SAFETY: per-CPU counter.
        unsafe { *e += 1 };
    }
    STACK_NONE
}

/// Stores the current user stack in `STACK_MORE` (when `STACKS` had no room
/// for it): its id there, found again for the same frames; `None` when it
/// cannot be walked or its ids are taken by other stacks or the map is full.
#[inline(always)]
fn more(ctx: *mut c_void) -> Option<u32> {
    let buf = STACK_BUF.get_ptr_mut(0)?;
    // SAFETY: a per-CPU map value of the size given; the helper zeroes what
    // the stack does not fill.
    let n = unsafe {
        bpf_get_stack(
            ctx,
            buf as *mut c_void,
            core::mem::size_of::<StackFrames>() as u32,
            USER_STACK,
        )
    };
    if n <= 0 {
        return None;
    }
    // SAFETY: as above.
    let frames = unsafe { &*buf };
    // FNV-1a over the words: any good spread will do.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for ip in frames.ips.iter() {
        h = (h ^ ip).wrapping_mul(0x100_0000_01b3);
    }
    let base = (h ^ (h >> 32)) as u32;
    for i in 0..STACK_PROBES {
        let id = STACK_MORE_BIT | (base.wrapping_add(i) & STACK_MORE_MASK);
        if STACK_MORE.get_ptr(id).is_none()
            && STACK_MORE.insert(id, frames, BPF_NOEXIST as u64).is_ok()
        {
            return Some(id);
        }
        // Taken (perhaps by this stack from another CPU meanwhile).
        let other = STACK_MORE.get_ptr(id)?;
        // SAFETY: a map value, read in place.
        if same_frames(unsafe { &*other }, frames) {
            return Some(id);
        }
    }
    None
}

/// True when two stacks have the same frames (word by word: BPF has no
/// memcmp).
#[inline(always)]
fn same_frames(a: &StackFrames, b: &StackFrames) -> bool {
    for k in 0..STACK_FRAMES {
        // SAFETY: in-bounds reads of two map values; volatile so the loop
        // is not turned into a call to memcmp.
        let (x, y) = unsafe {
            (
                core::ptr::read_volatile(&a.ips[k]),
                core::ptr::read_volatile(&b.ips[k]),
            )
        };
        if x != y {
            return false;
        }
    }
    true
}
