//! The aggregation maps: `COUNT` and `HIST` hits per key and bucket
//! (`AGG`, `AGG_SMALL`), per site (`FAST`), and the updates dropped.

use aya_ebpf::{
    bindings::BPF_NOEXIST,
    macros::map,
    maps::{PerCpuArray, PerCpuHashMap},
};
use ri_common::{
    AGG_ENTRIES, AGG_KEY_BYTES, AggKey, AggValue, HEADER_LEN, Scratch, SmallAggKey, plan_flags,
};

/// Aggregations (`COUNT`, `HIST`): hits (and values' sum, min, max) per key
/// and bucket, per CPU; user space merges.
#[map]
static AGG: PerCpuHashMap<AggKey, AggValue> = PerCpuHashMap::with_max_entries(AGG_ENTRIES, 0);

/// Aggregations of plans whose key is one word (`SMALL_KEY`), per CPU.
#[map]
static AGG_SMALL: PerCpuHashMap<SmallAggKey, AggValue> =
    PerCpuHashMap::with_max_entries(AGG_ENTRIES, 0);

/// Aggregation updates dropped because `AGG` was full, per CPU.
#[map]
static AGG_DROPPED: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// Hits of plans flagged `COUNT_FAST` (slot = site) or `HIST_FAST` (slot =
/// site * HIST_BUCKETS + bucket), per CPU; user space sizes it and merges.
#[map]
static FAST: PerCpuArray<AggValue> = PerCpuArray::with_max_entries(1, 0);

/// Adds `v` to slot `i` of `FAST`; a slot past its end is counted as dropped.
#[inline(always)]
pub fn fast_bump(i: u32, v: u64) {
    match FAST.get_ptr_mut(i) {
        // SAFETY: this CPU's slot.
        Some(slot) => unsafe { (*slot).add(v) },
        None => dropped(),
    }
}

/// Counts one hit of value `v` (0 for `COUNT`) in `bucket` under the
/// payload's key: an existing entry is bumped on this CPU; a new one is
/// inserted; a full map is counted in `AGG_DROPPED`.
#[inline(always)]
pub fn bump(s: &mut Scratch, bucket: u32, v: u64) {
    if s.flags & plan_flags::SMALL_KEY != 0 {
        s.small.plan = s.plan;
        s.small.site = s.site;
        s.small.bucket = bucket;
        s.small.pad = 0;
        // SAFETY: the payload's first word, 8-aligned inside `event`.
        s.small.key = unsafe { *(s.event[HEADER_LEN..].as_ptr() as *const u64) };
        let key: &SmallAggKey = &s.small;
        count_in(&AGG_SMALL, key, v);
        return;
    }
    s.agg.plan = s.plan;
    s.agg.site = s.site;
    s.agg.bucket = bucket;
    s.agg.pad = 0;
    let src = s.event[HEADER_LEN..].as_ptr() as *const u64;
    let dst = s.agg.key.as_mut_ptr() as *mut u64;
    for w in 0..AGG_KEY_BYTES / 8 {
        // SAFETY: constant offsets inside `event` and `agg.key`.
        unsafe { core::ptr::write_unaligned(dst.add(w), *src.add(w)) };
    }
    update(s, v);
}

/// Counts one hit of `v` under the key already built in `s.agg`.
#[inline(always)]
pub fn update(s: &mut Scratch, v: u64) {
    // By reference: the key stays in the map value, off the BPF stack.
    let key: &AggKey = &s.agg;
    count_in(&AGG, key, v);
}

/// Counts one hit of `v` under `key` in `map`: an existing entry is bumped
/// on this CPU; a new one is inserted (other CPUs' slots start empty); a
/// full map is counted in `AGG_DROPPED`.
#[inline(always)]
fn count_in<K>(map: &PerCpuHashMap<K, AggValue>, key: &K, v: u64) {
    if let Some(slot) = map.get_ptr_mut(key) {
        // SAFETY: this CPU's slot of a per-CPU value.
        unsafe { (*slot).add(v) };
        return;
    }
    if map
        .insert(key, AggValue::one(v), BPF_NOEXIST as u64)
        .is_ok()
    {
        return;
    }
    // Another CPU may have inserted the key meanwhile.
    if let Some(slot) = map.get_ptr_mut(key) {
        // SAFETY: as above.
        unsafe { (*slot).add(v) };
    } else {
        dropped();
    }
}

/// Counts an update the kernel had no room for.
#[inline(always)]
pub fn dropped() {
    if let Some(d) = AGG_DROPPED.get_ptr_mut(0) {
        // SAFETY: per-CPU counter.
        unsafe { *d += 1 };
    }
}
