//! ri's kernel side: one generic program per probe kind. Each looks up the
//! plan named by its attach cookie and interprets it (see `ri_common::op`),
//! so user space never generates or compiles BPF code.
#![no_std]
#![no_main]

use core::ffi::c_void;

use aya_ebpf::{
    bindings::{
        BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP, BPF_RB_RING_SIZE, pt_regs,
    },
    helpers::generated::{
        bpf_get_attach_cookie, bpf_get_current_comm, bpf_get_current_pid_tgid,
        bpf_get_current_uid_gid, bpf_get_smp_processor_id, bpf_ktime_get_ns, bpf_loop,
        bpf_probe_read_user, bpf_probe_read_user_str,
    },
    macros::{map, uprobe, uretprobe},
    maps::{Array, HashMap, LruHashMap, PerCpuArray, PerCpuHashMap, RingBuf, StackTrace},
    programs::{ProbeContext, RetProbeContext, tracing::StackIdContext},
};
use ri_common::{
    AGG_ENTRIES, AGG_KEY_BYTES, AggKey, DEFAULT_RING_BYTES, EventHeader, FlightKey, HEADER_LEN,
    Inflight, MAX_INSNS, MAX_PLANS, PAYLOAD_CAP, Plan, READ_MAX, STACK_DEPTH, STACK_ENTRIES,
    STACK_NONE, Scratch, WAKEUP_INTERVAL_NS, op, plan_flags,
};

/// Plans by plan id, written by user space before attaching.
#[map]
static PLANS: Array<Plan> = Array::with_max_entries(MAX_PLANS, 0);

/// Interpreter state, one per CPU.
#[map]
static SCRATCH: PerCpuArray<Scratch> = PerCpuArray::with_max_entries(1, 0);

/// Events to user space.
#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(DEFAULT_RING_BYTES, 0);

/// Time of the last reader wakeup this CPU asked for.
#[map]
static LAST_WAKEUP: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// Events dropped because the ring buffer was full, per CPU.
#[map]
static LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// Aggregations (`COUNT`, `HIST`): hits per key, per CPU; user space sums.
#[map]
static AGG: PerCpuHashMap<AggKey, u64> = PerCpuHashMap::with_max_entries(AGG_ENTRIES, 0);

/// Aggregation updates dropped because `AGG` was full, per CPU.
#[map]
static AGG_DROPPED: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// Operations in flight (`ri inflight`), by process and key.
#[map]
static INFLIGHT: HashMap<FlightKey, Inflight> = HashMap::with_max_entries(AGG_ENTRIES, 0);

/// Entry times of `ri latency`, keyed by thread id << 32 | slot.
#[map]
static STASHED: LruHashMap<u64, u64> = LruHashMap::with_max_entries(16384, 0);

/// Values `KEEP` stored for `TAKE`, keyed by thread id << 32 | slot.
#[map]
static KEPT: LruHashMap<u64, u64> = LruHashMap::with_max_entries(16384, 0);

/// User stacks of plans that use `STACK`, by stack id.
#[map]
static STACKS: StackTrace = StackTrace::with_max_entries(STACK_ENTRIES, 0);

/// Stacks the kernel could not store (map full, bucket taken), per CPU.
#[map]
static STACK_ERRORS: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// `BPF_F_USER_STACK`: walk the user stack, not the kernel's.
const USER_STACK: u64 = 1 << 8;

/// Entry probe: runs the plan named by the cookie.
#[uprobe]
pub fn ri_entry(ctx: ProbeContext) -> u32 {
    run(&ctx)
}

/// Return probe: the same interpreter; `rax` holds the return value.
#[uretprobe]
pub fn ri_return(ctx: RetProbeContext) -> u32 {
    run(&ctx)
}

/// A program that does nothing: the baseline for benchmarks.
#[uprobe]
pub fn ri_bare(_ctx: ProbeContext) -> u32 {
    0
}

#[inline(always)]
fn run<C: StackIdContext>(probe: &C) -> u32 {
    let ctx = probe.as_ptr();
    let Some(s) = SCRATCH.get_ptr_mut(0) else {
        return 0;
    };
    // SAFETY: a per-CPU map value; programs on one CPU do not nest here.
    let s = unsafe { &mut *s };
    let cookie = unsafe { bpf_get_attach_cookie(ctx) };
    let regs = ctx as *const pt_regs;
    // SAFETY: the context of a uprobe is the probed thread's pt_regs; each
    // field is read at a constant offset, as the verifier requires.
    unsafe {
        let r = &*regs;
        let regs = [
            r.r15, r.r14, r.r13, r.r12, r.rbp, r.rbx, r.r11, r.r10, r.r9, r.r8, r.rax, r.rcx,
            r.rdx, r.rsi, r.rdi, r.orig_rax, r.rip, r.cs, r.eflags, r.rsp, r.ss,
        ];
        s.regs[..ri_common::NUM_REGS].copy_from_slice(&regs);
    }
    s.plan = cookie as u32;
    s.site = (cookie >> 32) as u32;
    s.sp = 0;
    s.out = 0;
    s.fields = 0;
    s.fault = 0;
    s.drop = 0;
    s.tmp = 0;
    s.faults = 0;
    s.stack_id = STACK_NONE;
    let (n, flags) = match PLANS.get(s.plan) {
        Some(p) => (p.n_insns, p.flags),
        None => return 0,
    };
    if flags & plan_flags::STACK != 0 {
        // The helper needs the probe's context, which the loop callback
        // does not have: take the stack here, `STACK` pushes its id.
        match probe.get_stackid(&STACKS, USER_STACK) {
            Ok(id) => s.stack_id = id as u32,
            Err(_) => {
                if let Some(e) = STACK_ERRORS.get_ptr_mut(0) {
                    // SAFETY: per-CPU counter.
                    unsafe { *e += 1 };
                }
            }
        }
    }
    if flags & plan_flags::AGGREGATE != 0 {
        // The payload is the key: clear it so padding is the same every hit.
        let p = s.event[HEADER_LEN..].as_mut_ptr() as *mut u64;
        for w in 0..AGG_KEY_BYTES / 8 {
            // SAFETY: constant offsets inside `event`, 8-aligned.
            unsafe { *p.add(w) = 0 };
        }
    }
    if n > 0 {
        // SAFETY: `step` has the callback signature bpf_loop expects.
        unsafe {
            bpf_loop(
                n.min(MAX_INSNS as u32),
                step as *mut c_void,
                core::ptr::null_mut(),
                0,
            );
        }
    }
    if s.drop != 0 || flags & plan_flags::AGGREGATE != 0 {
        return 0;
    }
    let pid_tgid = unsafe { bpf_get_current_pid_tgid() };
    let out = s.out as usize & (2 * PAYLOAD_CAP - 1);
    let hdr = EventHeader {
        ts_ns: unsafe { bpf_ktime_get_ns() },
        pid: (pid_tgid >> 32) as u32,
        tid: pid_tgid as u32,
        plan: cookie as u32,
        site: (cookie >> 32) as u32,
        cpu: unsafe { bpf_get_smp_processor_id() },
        payload_len: out as u32,
        faults: s.faults,
    };
    // SAFETY: the event buffer starts 8-aligned and is longer than a header.
    unsafe { *(s.event.as_mut_ptr() as *mut EventHeader) = hdr };
    let len = HEADER_LEN + out;
    // SAFETY: `len` is at most the size of `s.event` (see Scratch).
    let data = unsafe { core::slice::from_raw_parts(s.event.as_ptr(), len) };
    if EVENTS
        .output::<[u8]>(data, wakeup_flags(hdr.ts_ns))
        .is_err()
        && let Some(lost) = LOST.get_ptr_mut(0)
    {
        // SAFETY: per-CPU counter.
        unsafe { *lost += 1 };
    }
    0
}

/// Counts one hit under the key in `s.agg`: an existing entry is bumped on
/// this CPU; a new one is inserted; a full map is counted in `AGG_DROPPED`.
#[inline(always)]
fn bump(s: &mut Scratch, bucket: u32) {
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
    // By reference: the key stays in the map value, off the BPF stack.
    let key: &AggKey = &s.agg;
    if let Some(v) = AGG.get_ptr_mut(key) {
        // SAFETY: this CPU's slot of a per-CPU value.
        unsafe { *v += 1 };
        return;
    }
    if AGG.insert(key, 1u64, 1 /* BPF_NOEXIST */).is_ok() {
        return;
    }
    // Another CPU may have inserted the key meanwhile.
    if let Some(v) = AGG.get_ptr_mut(key) {
        // SAFETY: as above.
        unsafe { *v += 1 };
    } else {
        dropped();
    }
}

/// Counts an update the kernel had no room for.
#[inline(always)]
fn dropped() {
    if let Some(d) = AGG_DROPPED.get_ptr_mut(0) {
        // SAFETY: per-CPU counter.
        unsafe { *d += 1 };
    }
}

/// The in-flight key: this process and the payload's first word.
#[inline(always)]
fn flight_key(s: &Scratch) -> FlightKey {
    FlightKey {
        pid: (unsafe { bpf_get_current_pid_tgid() } >> 32) as u32,
        pad: 0,
        // SAFETY: a constant, 8-aligned offset inside `event`.
        key: unsafe { *(s.event[HEADER_LEN..].as_ptr() as *const u64) },
    }
}

/// Stores the payload as an operation in flight under its first word.
#[inline(always)]
fn begin(s: &mut Scratch) {
    let pid_tgid = unsafe { bpf_get_current_pid_tgid() };
    s.flight.ts_ns = unsafe { bpf_ktime_get_ns() };
    s.flight.pid = (pid_tgid >> 32) as u32;
    s.flight.tid = pid_tgid as u32;
    s.flight.site = s.site;
    s.flight.pad = 0;
    let src = s.event[HEADER_LEN..].as_ptr() as *const u64;
    let dst = s.flight.payload.as_mut_ptr() as *mut u64;
    for w in 0..AGG_KEY_BYTES / 8 {
        // SAFETY: constant offsets inside `event` and `flight.payload`.
        unsafe { core::ptr::write_unaligned(dst.add(w), *src.add(w)) };
    }
    let key = flight_key(s);
    let value: &Inflight = &s.flight;
    if INFLIGHT.insert(key, value, 0).is_err() {
        dropped();
    }
}

/// Log2 bucket: 0 for 0, else b with 2^(b-1) <= v < 2^b.
#[inline(always)]
fn log2_bucket(mut v: u64) -> u32 {
    if v == 0 {
        return 0;
    }
    let mut b = 1;
    for sh in [32u32, 16, 8, 4, 2, 1] {
        if v >> sh != 0 {
            v >>= sh;
            b += sh;
        }
    }
    b
}

/// Batches reader wakeups: waking the reader for every event costs more than
/// the probe itself at high rates. Wake when this CPU has not woken it for
/// `WAKEUP_INTERVAL_NS` (so sparse events still arrive at once) or when a
/// quarter of the ring is in use; the reader's own tick drains the rest.
#[inline(always)]
fn wakeup_flags(now: u64) -> u64 {
    let Some(last) = LAST_WAKEUP.get_ptr_mut(0) else {
        return 0;
    };
    // SAFETY: per-CPU value.
    let last = unsafe { &mut *last };
    let full = EVENTS.query(BPF_RB_AVAIL_DATA as u64) >= EVENTS.query(BPF_RB_RING_SIZE as u64) / 4;
    if full || now.wrapping_sub(*last) >= WAKEUP_INTERVAL_NS {
        *last = now;
        BPF_RB_FORCE_WAKEUP as u64
    } else {
        BPF_RB_NO_WAKEUP as u64
    }
}

/// Stack and payload operations on the scratch state, with every index
/// masked where the verifier can see it.
trait Machine {
    fn push(&mut self, v: u64);
    fn pop(&mut self) -> u64;
    fn out_ptr(&mut self) -> *mut u8;
    fn advance(&mut self, bytes: usize);
}

impl Machine for Scratch {
    #[inline(always)]
    fn push(&mut self, v: u64) {
        self.stack[self.sp as usize & (STACK_DEPTH - 1)] = v;
        self.sp = self.sp.wrapping_add(1);
    }

    #[inline(always)]
    fn pop(&mut self) -> u64 {
        self.sp = self.sp.wrapping_sub(1);
        self.stack[self.sp as usize & (STACK_DEPTH - 1)]
    }

    #[inline(always)]
    fn out_ptr(&mut self) -> *mut u8 {
        let off = HEADER_LEN + (self.out as usize & (PAYLOAD_CAP - 1) & !7);
        // SAFETY: masked offset inside `event`.
        unsafe { self.event.as_mut_ptr().add(off) }
    }

    #[inline(always)]
    fn advance(&mut self, bytes: usize) {
        self.out = self.out.wrapping_add(((bytes + 7) & !7) as u32);
    }
}

/// Marks the field being emitted as faulted when its value involved a bad read.
#[inline(always)]
fn close_field(s: &mut Scratch) {
    if s.fault != 0 {
        s.faults |= 1u64 << (s.fields & 63);
    }
    s.fault = 0;
    s.fields = s.fields.wrapping_add(1);
}

#[inline(always)]
fn extend(v: u64, width: u8, signed: u8) -> u64 {
    let sh = match width {
        1 => 56,
        2 => 48,
        4 => 32,
        _ => return v,
    };
    if signed != 0 {
        ((v << sh) as i64 >> sh) as u64
    } else {
        (v << sh) >> sh
    }
}

#[inline(always)]
fn read_user(s: &mut Scratch, addr: u64, width: u8) -> u64 {
    s.tmp = 0;
    let dst = &mut s.tmp as *mut u64 as *mut c_void;
    let src = addr as *const c_void;
    // SAFETY: `dst` is an 8-byte map value field; sizes are constants <= 8.
    let r = unsafe {
        match width {
            1 => bpf_probe_read_user(dst, 1, src),
            2 => bpf_probe_read_user(dst, 2, src),
            4 => bpf_probe_read_user(dst, 4, src),
            _ => bpf_probe_read_user(dst, 8, src),
        }
    };
    if r < 0 {
        s.fault = 1;
        0
    } else {
        s.tmp
    }
}

/// One interpreter step; returns 1 to stop the loop.
unsafe extern "C" fn step(i: u64, _ctx: *mut c_void) -> i64 {
    let Some(s) = SCRATCH.get_ptr_mut(0) else {
        return 1;
    };
    // SAFETY: per-CPU map value.
    let s = unsafe { &mut *s };
    let Some(plan) = PLANS.get(s.plan) else {
        return 1;
    };
    let insn = plan.insns[i as usize & (MAX_INSNS - 1)];
    match insn.op {
        op::END => return 1,
        op::REG => {
            let v = s.regs[insn.len as usize & 31];
            s.push(v);
        }
        op::IMM => s.push(insn.imm),
        op::LOAD => {
            let addr = s.pop().wrapping_add(insn.imm);
            let v = read_user(s, addr, insn.width);
            s.push(extend(v, insn.width, insn.signed));
        }
        op::EXT => {
            let v = s.pop();
            s.push(extend(v, insn.width, insn.signed));
        }
        op::FILTER => {
            if s.pop() == 0 {
                s.drop = 1;
                return 1;
            }
        }
        op::EMIT => {
            let v = s.pop();
            let p = s.out_ptr();
            // SAFETY: 8-aligned slot inside `event`.
            unsafe { *(p as *mut u64) = v };
            s.advance(8);
            close_field(s);
        }
        op::STR => {
            let addr = s.pop();
            let p = s.out_ptr();
            let len = insn.len as usize & (2 * READ_MAX - 1);
            // SAFETY: p + 8 + len stays inside `event` (see Scratch sizing).
            let n = unsafe {
                bpf_probe_read_user_str(p.add(8) as *mut c_void, len as u32, addr as *const c_void)
            };
            let n = if n < 0 {
                s.fault = 1;
                0
            } else {
                n as usize & (2 * READ_MAX - 1)
            };
            // SAFETY: 8-aligned slot.
            unsafe { *(p as *mut u64) = n as u64 };
            s.advance(8 + n);
            close_field(s);
        }
        op::BUF => {
            let addr = s.pop();
            let p = s.out_ptr();
            let len = insn.len as usize & (2 * READ_MAX - 1);
            // SAFETY: as for STR.
            let r = unsafe {
                bpf_probe_read_user(p.add(8) as *mut c_void, len as u32, addr as *const c_void)
            };
            if r < 0 {
                s.fault = 1;
            }
            // SAFETY: 8-aligned slot.
            unsafe { *(p as *mut u64) = len as u64 };
            s.advance(8 + len);
            close_field(s);
        }
        op::COMM => {
            let p = s.out_ptr();
            // SAFETY: 16 bytes after the length word are inside `event`.
            unsafe {
                bpf_get_current_comm(p.add(8) as *mut c_void, 16);
                *(p as *mut u64) = 16;
            }
            s.advance(24);
            close_field(s);
        }
        op::PID => s.push(unsafe { bpf_get_current_pid_tgid() } >> 32),
        op::TID => s.push(unsafe { bpf_get_current_pid_tgid() } & 0xffff_ffff),
        op::UID => s.push(unsafe { bpf_get_current_uid_gid() } & 0xffff_ffff),
        op::NSECS => s.push(unsafe { bpf_ktime_get_ns() }),
        op::CPU => s.push(unsafe { bpf_get_smp_processor_id() } as u64),
        op::COUNT => {
            bump(s, 0);
            s.drop = 1;
            return 1;
        }
        op::HIST => {
            let v = s.pop();
            bump(s, log2_bucket(v));
            s.drop = 1;
            return 1;
        }
        op::BEGIN => {
            begin(s);
            s.drop = 1;
            return 1;
        }
        op::END_FLIGHT => {
            let _ = INFLIGHT.remove(flight_key(s));
            s.drop = 1;
            return 1;
        }
        op::STASH => {
            let key = (unsafe { bpf_get_current_pid_tgid() } << 32) | (insn.imm & 0xffff_ffff);
            let now = unsafe { bpf_ktime_get_ns() };
            let _ = STASHED.insert(key, now, 0);
            s.drop = 1;
            return 1;
        }
        op::ELAPSED => {
            let key = (unsafe { bpf_get_current_pid_tgid() } << 32) | (insn.imm & 0xffff_ffff);
            // SAFETY: the value is copied out at once.
            let Some(t0) = (unsafe { STASHED.get(key) }).copied() else {
                s.drop = 1;
                return 1;
            };
            let _ = STASHED.remove(key);
            s.push(unsafe { bpf_ktime_get_ns() }.wrapping_sub(t0));
        }
        op::STACK => {
            if s.stack_id == STACK_NONE {
                s.fault = 1;
            }
            let tgid = unsafe { bpf_get_current_pid_tgid() } >> 32;
            s.push(tgid << 32 | s.stack_id as u64);
        }
        op::KEEP => {
            let key = (unsafe { bpf_get_current_pid_tgid() } << 32) | (insn.imm & 0xffff_ffff);
            let v = s.pop();
            let _ = KEPT.insert(key, v, 0);
        }
        op::TAKE => {
            let key = (unsafe { bpf_get_current_pid_tgid() } << 32) | (insn.imm & 0xffff_ffff);
            // SAFETY: the value is copied out at once.
            let Some(v) = (unsafe { KEPT.get(key) }).copied() else {
                s.drop = 1;
                return 1;
            };
            let _ = KEPT.remove(key);
            s.push(v);
        }
        op::NEG => {
            let v = s.pop();
            s.push(v.wrapping_neg());
        }
        op::NOT => {
            let v = s.pop();
            s.push((v == 0) as u64);
        }
        op::BNOT => {
            let v = s.pop();
            s.push(!v);
        }
        op::SWAP => {
            let b = s.pop();
            let a = s.pop();
            s.push(b);
            s.push(a);
        }
        code => {
            let b = s.pop();
            let a = s.pop();
            s.push(binary(code, a, b));
        }
    }
    0
}

#[inline(always)]
fn binary(code: u8, a: u64, b: u64) -> u64 {
    match code {
        op::ADD => a.wrapping_add(b),
        op::SUB => a.wrapping_sub(b),
        op::MUL => a.wrapping_mul(b),
        op::DIV => a.checked_div(b).unwrap_or(0),
        op::MOD => a.checked_rem(b).unwrap_or(a),
        op::SDIV => sdiv(a, b),
        op::SMOD => smod(a, b),
        op::AND => a & b,
        op::OR => a | b,
        op::XOR => a ^ b,
        op::SHL => a.wrapping_shl(b as u32),
        op::SHR => a.wrapping_shr(b as u32),
        op::SAR => (a as i64).wrapping_shr(b as u32) as u64,
        op::EQ => (a == b) as u64,
        op::NE => (a != b) as u64,
        op::LT => (a < b) as u64,
        op::LE => (a <= b) as u64,
        op::SLT => ((a as i64) < (b as i64)) as u64,
        op::SLE => ((a as i64) <= (b as i64)) as u64,
        op::LAND => (a != 0 && b != 0) as u64,
        op::LOR => (a != 0 || b != 0) as u64,
        _ => 0,
    }
}

/// Signed division through unsigned magnitudes (BPF v1 has no signed div).
#[inline(always)]
fn sdiv(a: u64, b: u64) -> u64 {
    let (na, nb) = ((a as i64) < 0, (b as i64) < 0);
    let q = a
        .wrapping_abs_i64()
        .checked_div(b.wrapping_abs_i64())
        .unwrap_or(0);
    if na != nb { q.wrapping_neg() } else { q }
}

/// Signed remainder (sign of the dividend), as C does.
#[inline(always)]
fn smod(a: u64, b: u64) -> u64 {
    let r = a
        .wrapping_abs_i64()
        .checked_rem(b.wrapping_abs_i64())
        .unwrap_or(a.wrapping_abs_i64());
    if (a as i64) < 0 { r.wrapping_neg() } else { r }
}

/// Magnitude of a value read as `i64`, as `u64`.
trait AbsI64 {
    fn wrapping_abs_i64(self) -> u64;
}

impl AbsI64 for u64 {
    #[inline(always)]
    fn wrapping_abs_i64(self) -> u64 {
        (self as i64).unsigned_abs()
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // SAFETY: the verifier rejects any path that could reach a panic.
    unsafe { core::hint::unreachable_unchecked() }
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
