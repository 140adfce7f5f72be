//! Operations in flight (`ri inflight`, `latency --begin/--end`): the
//! `INFLIGHT` map and the opcodes that begin, update, span and end them.

use aya_ebpf::{
    bindings::BPF_NOEXIST, helpers::generated::bpf_ktime_get_ns, macros::map, maps::HashMap,
};
use ri_common::{
    AGG_ENTRIES, AGG_KEY_BYTES, FlightKey, HEADER_LEN, Inflight, Scratch, hist_bucket,
};

use crate::agg::{dropped, update};

/// The kernel's `EEXIST`: a `BPF_NOEXIST` insert found the key.
const EEXIST: i32 = 17;

/// Operations in flight, by process and key.
#[map]
static INFLIGHT: HashMap<FlightKey, Inflight> = HashMap::with_max_entries(AGG_ENTRIES, 0);

/// The in-flight key: this process and the payload's first word.
#[inline(always)]
fn flight_key(s: &Scratch) -> FlightKey {
    FlightKey {
        pid: (crate::select::ids() >> 32) as u32,
        pad: 0,
        // SAFETY: a constant, 8-aligned offset inside `event`.
        key: unsafe { *(s.event[HEADER_LEN..].as_ptr() as *const u64) },
    }
}

/// Stores the payload as an operation in flight under its first word
/// (`only_new`: unless that key is in flight already).
#[inline(always)]
pub fn begin(s: &mut Scratch, only_new: bool) {
    let pid_tgid = crate::select::ids();
    s.flight.ts_ns = unsafe { bpf_ktime_get_ns() };
    s.flight.pid = (pid_tgid >> 32) as u32;
    s.flight.tid = pid_tgid as u32;
    s.flight.site = s.site;
    s.flight.plan = s.plan;
    let src = s.event[HEADER_LEN..].as_ptr() as *const u64;
    let dst = s.flight.payload.as_mut_ptr() as *mut u64;
    for w in 0..AGG_KEY_BYTES / 8 {
        // SAFETY: constant offsets inside `event` and `flight.payload`.
        unsafe { core::ptr::write_unaligned(dst.add(w), *src.add(w)) };
    }
    let key = flight_key(s);
    let value: &Inflight = &s.flight;
    // An entry in flight already is not one to add.
    let flags = if only_new { BPF_NOEXIST as u64 } else { 0 };
    if let Err(e) = INFLIGHT.insert(key, value, flags)
        && e != -EEXIST
    {
        dropped();
    }
}

/// Ends a span: the time since its begin (the in-flight entry under the
/// payload's key) counts in a log2 bucket under the begin's plan, site and
/// payload without the key word; the entry is forgotten. No begin, no count.
#[inline(always)]
pub fn span(s: &mut Scratch) {
    let key = flight_key(s);
    let Some(f) = INFLIGHT.get_ptr(key) else {
        return;
    };
    // SAFETY: a map value, read at constant offsets before it is removed.
    let f = unsafe { &*f };
    let elapsed = unsafe { bpf_ktime_get_ns() }.wrapping_sub(f.ts_ns);
    s.agg.plan = f.plan;
    s.agg.site = f.site;
    s.agg.bucket = hist_bucket(elapsed);
    s.agg.pad = 0;
    let src = f.payload.as_ptr() as *const u64;
    let dst = s.agg.key.as_mut_ptr() as *mut u64;
    for w in 1..AGG_KEY_BYTES / 8 {
        // SAFETY: constant offsets inside `payload` and `agg.key`.
        unsafe {
            core::ptr::write_unaligned(dst.add(w - 1), core::ptr::read_unaligned(src.add(w)))
        };
    }
    // SAFETY: the last word of `agg.key`.
    unsafe { core::ptr::write_unaligned(dst.add(AGG_KEY_BYTES / 8 - 1), 0) };
    let _ = INFLIGHT.remove(key);
    update(s, elapsed);
}

/// Writes the payload's second word into word `word` of the in-flight
/// entry keyed by its first word, when there is one.
#[inline(always)]
pub fn refresh_flight(s: &mut Scratch, word: u64) {
    let w = word as usize & 15;
    if w >= AGG_KEY_BYTES / 8 {
        return;
    }
    let Some(f) = INFLIGHT.get_ptr_mut(flight_key(s)) else {
        return;
    };
    // SAFETY: word 1 of the payload, 8-aligned inside `event`; `w` is below
    // the entry payload's word count; the map value is written in place.
    unsafe {
        let v = *(s.event[HEADER_LEN + 8..].as_ptr() as *const u64);
        core::ptr::write_unaligned((*f).payload.as_mut_ptr().add(w * 8) as *mut u64, v);
    }
}

/// Forgets the operation in flight under the payload's first word.
#[inline(always)]
pub fn end(s: &Scratch) {
    let _ = INFLIGHT.remove(flight_key(s));
}
