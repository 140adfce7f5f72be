//! The event ring to user space: its losses and when a record wakes the
//! reader.

use aya_ebpf::{
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::generated::bpf_jiffies64,
    macros::map,
    maps::{PerCpuArray, RingBuf},
};
use ri_common::{DEFAULT_RING_BYTES, WAKEUP_INTERVAL_JIFFIES};

/// Events to user space.
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(DEFAULT_RING_BYTES, 0);

/// Size of `EVENTS` in bytes, set by the loader (saves asking the ring).
#[unsafe(no_mangle)]
pub static RING_BYTES: u64 = DEFAULT_RING_BYTES as u64;

/// Jiffies at the last reader wakeup this CPU asked for.
#[map]
pub static LAST_WAKEUP: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// Events dropped because the ring buffer was full, per CPU.
#[map]
pub static LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// Batches reader wakeups for events sent alone: waking the reader for
/// every event costs more than the probe itself at high rates. Wake when
/// this CPU has not woken it for `WAKEUP_INTERVAL_JIFFIES` (so sparse
/// events still arrive at once) or when a quarter of the ring is in use;
/// the reader's own tick drains the rest.
#[inline(always)]
pub fn wakeup_flags() -> u64 {
    let Some(last) = LAST_WAKEUP.get_ptr_mut(0) else {
        return 0;
    };
    let now = unsafe { bpf_jiffies64() };
    // SAFETY: per-CPU value.
    let last = unsafe { &mut *last };
    // SAFETY: a read-only global the loader sets.
    let ring = unsafe { core::ptr::read_volatile(&RING_BYTES) };
    if now.wrapping_sub(*last) >= WAKEUP_INTERVAL_JIFFIES
        || EVENTS.query(BPF_RB_AVAIL_DATA as u64) >= ring / 4
    {
        *last = now;
        BPF_RB_FORCE_WAKEUP as u64
    } else {
        BPF_RB_NO_WAKEUP as u64
    }
}

/// Wakes the reader only when a quarter of the ring is in use: for records
/// the reader drains on its own tick anyway.
#[inline(always)]
pub fn filling_wakeup() -> u64 {
    // SAFETY: a read-only global the loader sets.
    let ring = unsafe { core::ptr::read_volatile(&RING_BYTES) };
    if EVENTS.query(BPF_RB_AVAIL_DATA as u64) >= ring / 4 {
        BPF_RB_FORCE_WAKEUP as u64
    } else {
        BPF_RB_NO_WAKEUP as u64
    }
}

/// Counts `n` events lost to a full ring on this CPU.
#[inline(always)]
pub fn lost(n: u64) {
    if let Some(l) = LOST.get_ptr_mut(0) {
        // SAFETY: per-CPU counter.
        unsafe { *l += n };
    }
}
