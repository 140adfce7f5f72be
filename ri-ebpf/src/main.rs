//! ri's kernel side: one generic program per probe kind. Each looks up the
//! plan named by its attach cookie and interprets it (see `ri_common::op`),
//! so user space never generates or compiles BPF code.
#![no_std]
#![no_main]

use core::{ffi::c_void, ptr::write_volatile};

use aya_ebpf::{
    bindings::pt_regs,
    helpers::generated::{
        bpf_get_attach_cookie, bpf_get_current_comm, bpf_get_current_pid_tgid,
        bpf_get_current_uid_gid, bpf_get_smp_processor_id, bpf_ktime_get_ns, bpf_loop,
        bpf_probe_read_user, bpf_probe_read_user_str,
    },
    macros::{map, raw_tracepoint, uprobe, uretprobe},
    maps::{Array, HashMap, PerCpuArray},
    programs::{ProbeContext, RawTracePointContext, RetProbeContext, tracing::StackIdContext},
};
use ri_common::{
    AGG_KEY_BYTES, EventHeader, FRAME_ENTRIES, FrameKey, HEADER_LEN, LEN_READ_FAILED, MAX_INSNS,
    MAX_PLANS, PAYLOAD_CAP, Plan, READ_MAX, SAVE_ARGS, STACK_DEPTH, STACK_NONE, SavedArgs, Scratch,
    hist_bucket, op, plan_flags,
};

mod agg;
mod batch;
mod budget;
mod flight;
mod ring;
mod select;
mod stack;

use agg::{bump, fast_bump};
use flight::{begin, refresh_flight, span};

/// Plans by plan id, written by user space before attaching.
#[map]
static PLANS: Array<Plan> = Array::with_max_entries(MAX_PLANS, 0);

/// Hits of plans flagged `HITS`, by plan id, per CPU.
#[map]
static HITS: PerCpuArray<u64> = PerCpuArray::with_max_entries(MAX_PLANS, 0);

/// Interpreter state, one per CPU.
#[map]
static SCRATCH: PerCpuArray<Scratch> = PerCpuArray::with_max_entries(1, 0);

/// Values `KEEP` stored for `TAKE` (an entry's time for `ri latency`, an
/// allocation's size for `ri leaks`), keyed by call ([`FrameKey`]). Not an
/// LRU map (nor is `SAVED_ARGS`): evicting a live call would lose its value
/// silently; a full map is counted instead, in `NO_ENTRY`.
#[map]
static KEPT: HashMap<FrameKey, u64> = HashMap::with_max_entries(FRAME_ENTRIES, 0);

/// Argument registers saved at a function's entry for its return plan
/// (`plan_flags::ENTRY_ARGS`), keyed by call ([`FrameKey`]).
#[map]
static SAVED_ARGS: HashMap<FrameKey, SavedArgs> = HashMap::with_max_entries(FRAME_ENTRIES, 0);

/// Calls whose entry could not save its value or arguments (the per-call
/// map was full), so their return is skipped, per CPU.
#[map]
static NO_ENTRY: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// Entry probe: runs the plan named by the cookie.
#[uprobe]
pub fn ri_entry(ctx: ProbeContext) -> u32 {
    run::<_, true>(&ctx)
}

/// Return probe: the same interpreter; `rax` holds the return value.
#[uretprobe]
pub fn ri_return(ctx: RetProbeContext) -> u32 {
    run::<_, true>(&ctx)
}

/// Entry probe for plans that need no interpreter (fast paths, raw
/// registers): the same code without the interpreter loop and stacks, so
/// the verifier walks a few hundred instructions instead of thousands.
#[uprobe]
pub fn ri_fast_entry(ctx: ProbeContext) -> u32 {
    run::<_, false>(&ctx)
}

/// Return probe for plans that need no interpreter.
#[uretprobe]
pub fn ri_fast_return(ctx: RetProbeContext) -> u32 {
    run::<_, false>(&ctx)
}

/// Sends this CPU's batch of events: user space runs it on a CPU whose
/// batch has waited (`BPF_PROG_TEST_RUN` on that CPU), never attached.
#[raw_tracepoint]
pub fn ri_flush(_ctx: RawTracePointContext) -> i32 {
    batch::flush_here();
    0
}

/// A program that does nothing: the baseline for benchmarks.
#[uprobe]
pub fn ri_bare(_ctx: ProbeContext) -> u32 {
    0
}

/// Register `i` (in `ri_common::regs` order) of the probed thread, for the
/// argument registers and `rax` (user space flags `HIST_FAST` only for
/// those). Each is read at its constant offset first, as the verifier
/// requires of context reads, then one is picked.
#[inline(always)]
fn arg_reg(regs: *const pt_regs, i: u32) -> u64 {
    // SAFETY: the uprobe context; volatile reads at constant offsets, so the
    // compiler cannot fold them into one read at a computed offset.
    let (rdi, rsi, rdx, rcx, r8, r9, rax) = unsafe {
        (
            core::ptr::read_volatile(&(*regs).rdi),
            core::ptr::read_volatile(&(*regs).rsi),
            core::ptr::read_volatile(&(*regs).rdx),
            core::ptr::read_volatile(&(*regs).rcx),
            core::ptr::read_volatile(&(*regs).r8),
            core::ptr::read_volatile(&(*regs).r9),
            core::ptr::read_volatile(&(*regs).rax),
        )
    };
    match i {
        14 => rdi,
        13 => rsi,
        12 => rdx,
        11 => rcx,
        9 => r8,
        8 => r9,
        _ => rax,
    }
}

/// Runs the plan named by the cookie; without `FULL`, only plans that
/// need no interpreter nor stack (user space attaches those only).
#[inline(always)]
fn run<C: StackIdContext, const FULL: bool>(probe: &C) -> u32 {
    let ctx = probe.as_ptr();
    // Both checks vanish when off: the verifier sees the frozen globals.
    if !select::admitted() {
        return 0;
    }
    let Some(cookie) = budget::admit(attach_cookie(ctx)) else {
        return 0;
    };
    let regs = ctx as *const pt_regs;
    if cookie as u32 & SAVE_ARGS != 0 {
        save_args(regs, (cookie >> 32) as u32);
        return 0;
    }
    let Some(p) = PLANS.get(cookie as u32) else {
        return 0;
    };
    // Plans that need no interpreter: a plain count, a histogram of one
    // register.
    if p.flags & plan_flags::COUNT_FAST != 0 {
        fast_bump((cookie >> 32) as u32, 0);
        return 0;
    }
    if p.flags & plan_flags::HIST_FAST != 0 {
        let v = arg_reg(regs, p.insns[0].len);
        let site = (cookie >> 32) as u32;
        fast_bump(
            site.wrapping_mul(ri_common::HIST_BUCKETS)
                .wrapping_add(hist_bucket(v)),
            v,
        );
        return 0;
    }
    let (n, flags) = (p.n_insns, p.flags);
    if flags & plan_flags::HITS != 0
        && let Some(h) = HITS.get_ptr_mut(cookie as u32)
    {
        // SAFETY: this CPU's slot.
        unsafe { *h += 1 };
    }
    if flags & plan_flags::REGS_ONLY != 0
        && flags & (plan_flags::ENTRY_ARGS | plan_flags::STACK | plan_flags::AGGREGATE) == 0
        && batch::send_regs(regs, p, cookie)
    {
        return 0;
    }
    let Some(s) = SCRATCH.get_ptr_mut(0) else {
        return 0;
    };
    // SAFETY: a per-CPU map value; programs on one CPU do not nest here.
    let s = unsafe { &mut *s };
    // SAFETY: the context of a uprobe is the probed thread's pt_regs, laid
    // out as NUM_REGS words in `regs` order; each is read at a constant
    // offset, as the verifier requires, and stored straight into the scratch.
    unsafe {
        let src = regs as *const u64;
        let dst = s.regs.as_mut_ptr();
        for i in 0..ri_common::NUM_REGS {
            write_volatile(dst.add(i), core::ptr::read_volatile(src.add(i)));
        }
    }
    s.plan = cookie as u32;
    s.site = (cookie >> 32) as u32;
    if flags & plan_flags::ENTRY_ARGS != 0 && !restore_args(s) {
        return 0;
    }
    // Volatile stores: plain ones are merged into a call to the builtin
    // memset, which BPF runs one byte per loop iteration.
    // SAFETY: fields of the scratch value.
    unsafe {
        write_volatile(&mut s.sp, 0);
        write_volatile(&mut s.out, 0);
        write_volatile(&mut s.fields, 0);
        write_volatile(&mut s.fault, 0);
        write_volatile(&mut s.drop, 0);
        write_volatile(&mut s.faults, 0);
        write_volatile(&mut s.flags, flags);
        write_volatile(&mut s.stack_id, STACK_NONE);
    }
    if FULL && flags & plan_flags::STACK != 0 {
        // The helper needs the probe's context, which the loop callback
        // does not have: take the stack here, `STACK` pushes its id.
        s.stack_id = stack::take(probe);
    }
    if flags & plan_flags::AGGREGATE != 0 {
        // The payload is the key: clear it so padding is the same every hit
        // (a one-word key needs only its word cleared, for keyless plans).
        let p = s.event[HEADER_LEN..].as_mut_ptr() as *mut u64;
        let words = if flags & plan_flags::SMALL_KEY != 0 {
            1
        } else {
            AGG_KEY_BYTES / 8
        };
        for w in 0..AGG_KEY_BYTES / 8 {
            if w >= words {
                break;
            }
            // SAFETY: constant offsets inside `event`, 8-aligned.
            unsafe { write_volatile(p.add(w), 0) };
        }
    }
    if flags & plan_flags::REGS_ONLY != 0 {
        // `REG r, EMIT` pairs: registers straight into the payload.
        let pairs = n / 2;
        let out = s.event[HEADER_LEN..].as_mut_ptr() as *mut u64;
        for i in 0..MAX_INSNS / 2 {
            if i as u32 >= pairs {
                break;
            }
            let r = p.insns[2 * i].len as usize & 31;
            // SAFETY: slot i < 32 of the payload, 8-aligned inside `event`.
            unsafe { *out.add(i) = s.regs[r] };
        }
        s.out = pairs.min(MAX_INSNS as u32 / 2) * 8;
        s.fields = pairs;
    } else if FULL && n > 0 {
        let mut state = LoopState {
            s: s as *mut Scratch,
            plan: p as *const Plan,
        };
        // SAFETY: `step` has the callback signature bpf_loop expects; the
        // state outlives the loop.
        unsafe {
            bpf_loop(
                n.min(MAX_INSNS as u32),
                step as *mut c_void,
                &mut state as *mut LoopState as *mut c_void,
                0,
            );
        }
    }
    if s.drop != 0 || flags & plan_flags::AGGREGATE != 0 {
        return 0;
    }
    let pid_tgid = select::ids();
    let out = s.out as usize & (2 * PAYLOAD_CAP - 1);
    let hdr = EventHeader {
        ts_ns: timestamp(),
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
    batch::send(s, HEADER_LEN + out);
    0
}

/// At a function's entry: saves this call's argument registers for the
/// return plan at the same site.
#[inline(always)]
fn save_args(regs: *const pt_regs, site: u32) {
    let args = SavedArgs {
        regs: [14, 13, 12, 11, 9, 8].map(|i| arg_reg(regs, i)),
    };
    let key = FrameKey {
        id: per_thread(u64::from(site)),
        // SAFETY: the uprobe context, read at a constant offset.
        sp: unsafe { core::ptr::read_volatile(&(*regs).rsp) },
    };
    if SAVED_ARGS.insert(key, args, 0).is_err() {
        no_entry();
    }
}

/// At a function's return: puts the arguments saved at its entry into the
/// scratch's `ENTRY_ARGS` slots; false when there are none (counted when
/// the save failed).
#[inline(always)]
fn restore_args(s: &mut Scratch) -> bool {
    let key = FrameKey {
        id: per_thread(u64::from(s.site)),
        sp: return_frame(s),
    };
    // SAFETY: the value is copied out at once.
    let Some(args) = (unsafe { SAVED_ARGS.get(key) }).copied() else {
        return false;
    };
    let _ = SAVED_ARGS.remove(key);
    for (i, v) in args.regs.iter().enumerate() {
        s.regs[(ri_common::regs::ENTRY_ARGS[0] as usize + i) & 31] = *v;
    }
    true
}

/// At a function's return, the stack pointer its entry had (`ret` popped
/// the return address).
#[inline(always)]
fn return_frame(s: &Scratch) -> u64 {
    s.regs[ri_common::regs::RSP as usize].wrapping_sub(8)
}

/// Counts a call whose entry could not save for its return.
#[inline(always)]
fn no_entry() {
    if let Some(n) = NO_ENTRY.get_ptr_mut(0) {
        // SAFETY: per-CPU counter.
        unsafe { *n += 1 };
    }
}

/// [`FrameKey::id`]: this thread's id << 32 | `what` (a site for
/// `SAVED_ARGS`, a slot for `KEPT`).
#[inline(always)]
fn per_thread(what: u64) -> u64 {
    (unsafe { bpf_get_current_pid_tgid() } << 32) | (what & 0xffff_ffff)
}

/// Nonzero when every attachment has the cookie `ONLY_COOKIE`, set by the
/// loader (one site, no budget): the programs skip the helper call.
#[unsafe(no_mangle)]
static ONE_COOKIE: u32 = 0;
/// See [`ONE_COOKIE`].
#[unsafe(no_mangle)]
static ONLY_COOKIE: u64 = 0;

/// This attachment's cookie.
#[inline(always)]
fn attach_cookie(ctx: *mut c_void) -> u64 {
    // SAFETY: read-only globals the loader sets.
    unsafe {
        if core::ptr::read_volatile(&ONE_COOKIE) != 0 {
            return core::ptr::read_volatile(&ONLY_COOKIE);
        }
        bpf_get_attach_cookie(ctx)
    }
}

/// Nonzero when events carry the time (`ts_ns`), set by the loader: a
/// sink that prints no time saves the clock, 30–60 ns a hit here. A
/// constant the verifier sees.
#[unsafe(no_mangle)]
static TIMESTAMPS: u32 = 1;

/// An event's `ts_ns`: `bpf_ktime_get_ns()`, or 0 when events carry no time.
#[inline(always)]
fn timestamp() -> u64 {
    // SAFETY: a read-only global the loader sets.
    if unsafe { core::ptr::read_volatile(&TIMESTAMPS) } == 0 {
        return 0;
    }
    unsafe { bpf_ktime_get_ns() }
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

/// Writes a `STR`/`BUF` field whose read failed at `addr`: the length word
/// flagged [`LEN_READ_FAILED`], the address as the first data word and,
/// when there is room, the instruction pointer as the second, so
/// user space can still read it from a file mapping; the length is the
/// field's maximum (`len`, at least 8: the field's slot has room for it), so
/// user space knows how much to read. Returns that length. In an
/// aggregation's key the field is written as before (length `plain`).
#[inline(always)]
fn read_failed(s: &mut Scratch, p: *mut u8, addr: u64, len: usize, plain: usize) -> usize {
    s.fault = 1;
    if s.flags & plan_flags::AGGREGATE != 0 {
        // In a key every failed read stays one key: the length a fault
        // always had (`plain`) over zeroed data, no address.
        // SAFETY: 8-aligned slot.
        unsafe { *(p as *mut u64) = plain as u64 };
        return plain;
    }
    let n = if len < 8 { 8 } else { len };
    // SAFETY: 8-aligned slots; a field's slot is 8 + round8(len) >= 16
    // bytes, inside `event` (see Scratch sizing).
    unsafe {
        *(p.add(8) as *mut u64) = addr;
        if n >= 16 {
            *(p.add(16) as *mut u64) = s.regs[ri_common::regs::RIP as usize];
        }
        *(p as *mut u64) = LEN_READ_FAILED | n as u64;
    }
    n
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

/// What each interpreter step works on, looked up once per hit and passed
/// through bpf_loop's context argument.
#[repr(C)]
struct LoopState {
    /// This CPU's scratch state.
    s: *mut Scratch,
    /// The plan being run.
    plan: *const Plan,
}

/// One interpreter step; returns 1 to stop the loop.
unsafe extern "C" fn step(i: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: `ctx` is the `LoopState` on run()'s stack, whose pointers the
    // verifier tracks as map values.
    let (s, plan) = unsafe {
        let st = &*(ctx as *const LoopState);
        (&mut *st.s, &*st.plan)
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
                read_failed(s, p, addr, len, 0)
            } else {
                let n = n as usize & (2 * READ_MAX - 1);
                // SAFETY: 8-aligned slot.
                unsafe { *(p as *mut u64) = n as u64 };
                n
            };
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
                read_failed(s, p, addr, len, len);
            } else {
                // SAFETY: 8-aligned slot.
                unsafe { *(p as *mut u64) = len as u64 };
            }
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
        op::PID => s.push(select::ids() >> 32),
        op::TID => s.push(select::ids() & 0xffff_ffff),
        op::UID => s.push(unsafe { bpf_get_current_uid_gid() } & 0xffff_ffff),
        op::NSECS => s.push(unsafe { bpf_ktime_get_ns() }),
        op::CPU => s.push(unsafe { bpf_get_smp_processor_id() } as u64),
        op::COUNT => {
            bump(s, 0, 0);
            s.drop = 1;
            return 1;
        }
        op::HIST => {
            let v = s.pop();
            bump(s, hist_bucket(v), v);
            s.drop = 1;
            return 1;
        }
        op::BEGIN => {
            begin(s, insn.imm == 1);
            s.drop = 1;
            return 1;
        }
        op::END_FLIGHT => {
            flight::end(s);
            s.drop = 1;
            return 1;
        }
        op::SPAN => {
            span(s);
            s.drop = 1;
            return 1;
        }
        op::UPDATE => {
            refresh_flight(s, insn.imm);
            s.drop = 1;
            return 1;
        }
        op::STACK => {
            if s.stack_id == STACK_NONE {
                s.fault = 1;
            }
            let tgid = select::ids() >> 32;
            s.push(tgid << 32 | s.stack_id as u64);
        }
        op::KEEP => {
            let key = FrameKey {
                id: per_thread(insn.imm),
                sp: s.regs[ri_common::regs::RSP as usize],
            };
            let v = s.pop();
            if KEPT.insert(key, v, 0).is_err() {
                no_entry();
            }
        }
        op::TAKE => {
            let key = FrameKey {
                id: per_thread(insn.imm),
                sp: return_frame(s),
            };
            // A call whose entry the filter left out kept nothing.
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
            let (a, b) = if insn.pad & op::IMM_RIGHT != 0 {
                (s.pop(), insn.imm)
            } else if insn.pad & op::IMM_LEFT != 0 {
                (insn.imm, s.pop())
            } else {
                let b = s.pop();
                (s.pop(), b)
            };
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
