//! Per-CPU batches of events: several events go to the ring buffer as one
//! record, sent when full, when old at the next event, or when the reader
//! asks (`ri_flush`, run on that CPU); an event after a quiet spell goes
//! alone, at once. Ages are in jiffies: no clock is read per event here.

use core::{
    ffi::c_void,
    ptr::{read_volatile, write_volatile},
};

use aya_ebpf::{
    bindings::pt_regs,
    helpers::generated::{
        bpf_get_smp_processor_id, bpf_jiffies64, bpf_ktime_get_ns, bpf_probe_read_kernel,
    },
    macros::map,
    maps::PerCpuArray,
};
use ri_common::{
    BATCH_AGE_JIFFIES, BATCH_BYTES, Batch, EVENT_MAX, HEADER_LEN, MAX_INSNS, NUM_REGS, Plan,
    Scratch,
};

use crate::{
    ring::{EVENTS, filling_wakeup, lost, wakeup_flags},
    select,
};

/// This CPU's batch of events not yet in the ring.
#[map]
static BATCH: PerCpuArray<Batch> = PerCpuArray::with_max_entries(1, 0);

/// Per CPU: `bpf_ktime_get_ns()` at the oldest event waiting in its batch,
/// 0 when none (the reader reads this to know which CPUs to ask).
#[map]
static PENDING: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// Events per batch, set by the loader (1: every event alone).
#[unsafe(no_mangle)]
static BATCH_EVENTS: u32 = ri_common::BATCH_EVENTS;

/// Sends the event of `len` bytes built in `s.event`: into this CPU's
/// batch, or alone when batching is off or the batch is busy.
#[inline(always)]
pub fn send(s: &Scratch, len: usize) {
    // SAFETY: a read-only global the loader sets.
    let max = unsafe { core::ptr::read_volatile(&BATCH_EVENTS) };
    let b = match BATCH.get_ptr_mut(0) {
        // SAFETY: this CPU's batch; `busy` keeps a nested program out.
        Some(b) if max > 1 => unsafe { &mut *b },
        _ => return alone(s, len),
    };
    if !enter(b) {
        return alone(s, len);
    }
    // Volatile from here on: the compiler keeps every access to the batch
    // after `enter` and before `leave` (a flush the reader runs on this CPU
    // may interrupt a program up to `enter`).
    let now = unsafe { bpf_jiffies64() };
    let last = get(&b.last_jiffies);
    put(&mut b.last_jiffies, now);
    if now.wrapping_sub(last) >= BATCH_AGE_JIFFIES && get(&b.n) == 0 {
        // Sparse events go at once.
        leave(b);
        return alone(s, len);
    }
    if get(&b.len) as usize + len > BATCH_BYTES {
        flush(b);
    }
    let off = get(&b.len) as usize & (BATCH_BYTES - 1);
    let n = if len > EVENT_MAX { EVENT_MAX } else { len };
    // SAFETY: off < BATCH_BYTES and n <= EVENT_MAX stay inside `data`; the
    // source is this CPU's scratch event, at least EVENT_MAX long.
    unsafe {
        bpf_probe_read_kernel(
            b.data.as_mut_ptr().add(off) as *mut c_void,
            n as u32,
            s.event.as_ptr() as *const c_void,
        );
    }
    commit(b, off + n, max, now);
}

/// A plan of `REG r, EMIT` pairs (`REGS_ONLY`, registers of the hit only),
/// written straight into this CPU's batch: header and registers at the
/// batch's end, with no scratch event to build and copy. False when it
/// sent nothing (batching off, or the batch busy): the caller builds the
/// event the general way.
#[inline(always)]
pub fn send_regs(regs: *const pt_regs, p: &Plan, cookie: u64) -> bool {
    // SAFETY: a read-only global the loader sets.
    let max = unsafe { core::ptr::read_volatile(&BATCH_EVENTS) };
    let b = match BATCH.get_ptr_mut(0) {
        // SAFETY: this CPU's batch; `busy` keeps a nested program out.
        Some(b) if max > 1 => unsafe { &mut *b },
        _ => return false,
    };
    if !enter(b) {
        return false;
    }
    let now = unsafe { bpf_jiffies64() };
    let pairs = (p.n_insns / 2).min(MAX_INSNS as u32 / 2) as usize;
    let len = HEADER_LEN + 8 * pairs;
    let last = get(&b.last_jiffies);
    put(&mut b.last_jiffies, now);
    // Sparse events go at once (from the empty batch's start).
    let sparse = now.wrapping_sub(last) >= BATCH_AGE_JIFFIES && get(&b.n) == 0;
    if !sparse && get(&b.len) as usize + len > BATCH_BYTES {
        flush(b);
    }
    let off = if sparse {
        0
    } else {
        get(&b.len) as usize & (BATCH_BYTES - 1)
    };
    // The registers, each read at its constant offset into the stack, then
    // picked by index (the verifier allows no computed context offsets).
    let mut r = [0u64; NUM_REGS];
    // SAFETY: the uprobe context is the probed thread's pt_regs, NUM_REGS
    // words in `regs` order.
    unsafe {
        let src = regs as *const u64;
        for (i, v) in r.iter_mut().enumerate() {
            *v = core::ptr::read_volatile(src.add(i));
        }
    }
    let ids = select::ids();
    let cpu = unsafe { bpf_get_smp_processor_id() } as u64;
    // SAFETY: off < BATCH_BYTES, plus a header and at most MAX_INSNS / 2
    // words, stays inside `data` (room for EVENT_MAX past BATCH_BYTES).
    unsafe {
        let w = b.data.as_mut_ptr().add(off) as *mut u64;
        // EventHeader as words: ts; pid (tgid), tid; plan, site (the
        // cookie's halves); cpu, payload_len; faults.
        write_volatile(w, crate::timestamp());
        write_volatile(w.add(1), ids.rotate_left(32));
        write_volatile(w.add(2), cookie);
        write_volatile(w.add(3), cpu | ((8 * pairs as u64) << 32));
        write_volatile(w.add(4), 0);
        let out = w.add(HEADER_LEN / 8);
        for i in 0..MAX_INSNS / 2 {
            if i >= pairs {
                break;
            }
            let k = p.insns[2 * i].len as usize;
            let v = if k < NUM_REGS { r[k] } else { 0 };
            write_volatile(out.add(i), v);
        }
    }
    if sparse {
        let len = if len > EVENT_MAX { EVENT_MAX } else { len };
        output_one(&b.data[..len]);
        leave(b);
    } else {
        commit(b, off + len, max, now);
    }
    true
}

/// Closes an event written into the batch up to byte `end` at jiffy `now`:
/// counts it, sends the batch when it is full or old, and lets the batch
/// go. The first event of a batch reads the clock once, for the reader.
#[inline(always)]
fn commit(b: &mut Batch, end: usize, max: u32, now: u64) {
    put(&mut b.len, end as u32);
    let count = get(&b.n) + 1;
    put(&mut b.n, count);
    if count == 1 {
        put(&mut b.first_jiffies, now);
        set_pending(unsafe { bpf_ktime_get_ns() });
    }
    if count >= max
        || end >= BATCH_BYTES
        || now.wrapping_sub(get(&b.first_jiffies)) >= BATCH_AGE_JIFFIES
    {
        flush(b);
    }
    leave(b);
}

/// Marks the batch busy; false when another program on this CPU, which
/// this one interrupted, has it.
#[inline(always)]
fn enter(b: &mut Batch) -> bool {
    if get(&b.busy) != 0 {
        return false;
    }
    put(&mut b.busy, 1);
    true
}

/// Lets the batch go.
#[inline(always)]
fn leave(b: &mut Batch) {
    put(&mut b.busy, 0);
}

/// A volatile read of a batch field.
#[inline(always)]
fn get<T: Copy>(f: &T) -> T {
    // SAFETY: a field of this CPU's batch.
    unsafe { read_volatile(f) }
}

/// A volatile write of a batch field.
#[inline(always)]
fn put<T: Copy>(f: &mut T, v: T) {
    // SAFETY: a field of this CPU's batch.
    unsafe { write_volatile(f, v) }
}

/// `ri_flush`: sends this CPU's batch, unless a program it interrupted is
/// changing it (that one sends it, or the reader asks again).
#[inline(always)]
pub fn flush_here() {
    let Some(b) = BATCH.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: this CPU's batch.
    let b = unsafe { &mut *b };
    if enter(b) {
        flush(b);
        leave(b);
    }
}

/// Sends the batch's events as one record; when the ring is full they are
/// counted lost, every one. The reader is not woken for it (its flush tick
/// drains the ring) unless the ring fills: a wakeup is an interrupt on
/// this CPU, dearer than the batch saves.
#[inline(always)]
fn flush(b: &mut Batch) {
    let n = get(&b.n);
    if n == 0 {
        return;
    }
    let len = get(&b.len) as usize;
    let len = if len > BATCH_BYTES + EVENT_MAX {
        BATCH_BYTES + EVENT_MAX
    } else {
        len
    };
    let data = &b.data[..len];
    if EVENTS.output::<[u8]>(data, filling_wakeup()).is_err() {
        lost(u64::from(n));
    }
    put(&mut b.len, 0);
    put(&mut b.n, 0);
    set_pending(0);
}

/// The scratch event alone, as one record.
#[inline(always)]
fn alone(s: &Scratch, len: usize) {
    // SAFETY: `len` is at most the size of `s.event` (see Scratch).
    output_one(unsafe { core::slice::from_raw_parts(s.event.as_ptr(), len) });
}

/// One event as its own record; counted lost when the ring is full.
#[inline(always)]
fn output_one(data: &[u8]) {
    if EVENTS.output::<[u8]>(data, wakeup_flags()).is_err() {
        lost(1);
    }
}

#[inline(always)]
fn set_pending(v: u64) {
    if let Some(p) = PENDING.get_ptr_mut(0) {
        // SAFETY: per-CPU value.
        unsafe { *p = v };
    }
}
