//! Wire types shared by ri's eBPF programs (`ri-ebpf`) and its controller
//! (`ri-user`). Every type that crosses the kernel/user boundary is defined
//! here once, `#[repr(C)]`, and used by both sides.
//!
//! The central idea is the *plan*: a short stack-machine program written by
//! user space into a BPF map, one per probe. The generic entry and return
//! programs look the plan up by the attach cookie and interpret it: fetch
//! registers, dereference user memory, do integer arithmetic, filter, and
//! emit values into an event. No code is generated at run time.
#![no_std]

pub mod hist;
pub mod op;
pub mod regs;

/// Maximum number of instructions in one plan.
pub const MAX_INSNS: usize = 64;
/// Depth of the interpreter's value stack.
pub const STACK_DEPTH: usize = 8;
/// Maximum bytes of captured payload in one event.
pub const PAYLOAD_CAP: usize = 4096;
/// Maximum bytes one `str()` or `buf()` capture may read.
pub const READ_MAX: usize = 2048;
/// A `str()`/`buf()` field's length word with this bit set: the read
/// failed in the kernel; the first 8 bytes of the field's data are the
/// address it tried and, when the data has 16 bytes or more, the next 8 the
/// probe's instruction pointer (so user space can still read a read-only
/// file mapping there, even after the process exited). The low bits are
/// the data length, as for any field: the capture's maximum (at least 8).
/// Aggregation keys keep the plain form (every failed read one key).
pub const LEN_READ_FAILED: u64 = 1 << 63;
/// Number of plans (probe specifications) one ri session may load.
pub const MAX_PLANS: u32 = 256;
/// Number of registers copied from `pt_regs` into the interpreter's scratch.
pub const NUM_REGS: usize = 21;
/// Default size of the event ring buffer in bytes (a power of two). The
/// reader maps it twice (for wrap-around), so it counts twice in ri's RSS.
pub const DEFAULT_RING_BYTES: u32 = 8 << 20;
/// For events sent alone, the kernel wakes the reader at most once a jiffy
/// per CPU while events flow (plus whenever a quarter of the ring is full);
/// batches wake it only for a filling ring. The reader drains on its own
/// ticks too, so no event waits longer than [`READER_TICK_MS`] (batched:
/// [`FLUSH_TICK_MS`]).
pub const WAKEUP_INTERVAL_JIFFIES: u64 = 1;
/// The reader's drain tick in ms, for events that arrived without a wakeup.
pub const READER_TICK_MS: u64 = 10;
/// Bytes of events a [`Batch`] gathers before it goes to the ring as one
/// record (a power of two); a larger event goes alone.
pub const BATCH_BYTES: usize = 4096;
/// Events a [`Batch`] gathers at most by default (the loader's
/// `BATCH_EVENTS`; 1 sends every event as its own record).
pub const BATCH_EVENTS: u32 = 32;
/// The reader asks a CPU for its batch when the batch has waited this long
/// (it looks every [`FLUSH_TICK_MS`]).
pub const BATCH_AGE_NS: u64 = 1_000_000;
/// In the kernel, ages are counted in jiffies (read for free, where the
/// exact clock costs 30–60 ns a hit): a batch begun a jiffy ago or more is
/// sent at the next event on its CPU, and an event on a CPU that had none
/// since the last jiffy goes alone, at once (sparse events wait for no
/// batch).
pub const BATCH_AGE_JIFFIES: u64 = 1;
/// The reader's tick for batches left waiting on a CPU with no more events.
pub const FLUSH_TICK_MS: u64 = 2;
/// The largest event: a header and a payload of `2 * PAYLOAD_CAP - 8` bytes.
pub const EVENT_MAX: usize = HEADER_LEN + 2 * PAYLOAD_CAP;

/// Events of one CPU waiting to go to the ring buffer as one record:
/// amortises the ring's reserve and commit (and the reader's per-record
/// work) over several events. A record is events back to back, each an
/// [`EventHeader`] and its payload (8-byte multiples).
#[repr(C)]
pub struct Batch {
    /// Bytes of `data` in use.
    pub len: u32,
    /// Events in `data`.
    pub n: u32,
    /// 1 while a program on this CPU changes the batch (a program that
    /// finds it set sends its event alone).
    pub busy: u32,
    /// Reserved, zero.
    pub pad: u32,
    /// Jiffies at the first event in `data`.
    pub first_jiffies: u64,
    /// Jiffies at this CPU's last event.
    pub last_jiffies: u64,
    /// The events; room for one maximal event past [`BATCH_BYTES`].
    pub data: [u8; BATCH_BYTES + EVENT_MAX],
}

/// One plan instruction: an opcode from [`op`] and its operands.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Insn {
    /// Opcode, one of the constants in [`op`].
    pub op: u8,
    /// Width in bytes for `LOAD` and `EXT` (1, 2, 4 or 8).
    pub width: u8,
    /// 1 when `LOAD`/`EXT` sign-extend.
    pub signed: u8,
    /// [`op::IMM_RIGHT`] or [`op::IMM_LEFT`] for a binary operator with a
    /// constant operand; otherwise zero.
    pub pad: u8,
    /// Byte bound for `STR` and `BUF`; register index for `REG`.
    pub len: u32,
    /// Immediate operand for `IMM`.
    pub imm: u64,
}

/// Plan flags.
pub mod plan_flags {
    /// The plan runs at a uretprobe (only informational for the kernel).
    pub const RETURN: u32 = 1;
    /// The plan aggregates into maps (`COUNT`, `HIST`, `KEEP`, ...): its payload
    /// is a key, zeroed before each run, and no event is sent.
    pub const AGGREGATE: u32 = 2;
    /// The plan is a bare `COUNT` (no key, no filter): the kernel skips the
    /// interpreter and bumps slot `site` of the `FAST` per-CPU array.
    pub const COUNT_FAST: u32 = 1 << 8;
    /// The plan is `REG r, HIST` with `r` an argument register or `rax` (no
    /// key, no filter): the kernel skips the interpreter and bumps slot
    /// `site * HIST_BUCKETS + bucket` of `FAST`.
    pub const HIST_FAST: u32 = 1 << 9;
    /// The plan's key fits one word: `COUNT` and `HIST` update `AGG_SMALL`,
    /// keyed by [`crate::SmallAggKey`] (cheaper to hash than `AggKey`).
    pub const SMALL_KEY: u32 = 1 << 10;
    /// The plan is only `REG r, EMIT` pairs (an event of raw registers): the
    /// kernel copies the registers into the payload without the interpreter.
    pub const REGS_ONLY: u32 = 1 << 11;
    /// Count every hit of the plan in the per-CPU `HITS` array (by plan id)
    /// before it runs: `ri leaks` reports allocation and free rates from it.
    pub const HITS: u32 = 1 << 12;
    /// The plan uses `STACK`: the user stack is taken before it runs.
    pub const STACK: u32 = 16;
    /// A return plan reads the arguments its function was called with
    /// ([`crate::regs::ENTRY_ARGS`]): a companion entry probe at the same
    /// site (cookie plan id or'ed with [`crate::SAVE_ARGS`]) saves them per
    /// thread in `SAVED_ARGS`, and they are restored before the plan runs.
    /// When the entry cannot save them (the map is full) the return is
    /// skipped, counted in `NO_ENTRY`.
    pub const ENTRY_ARGS: u32 = 1 << 13;
}

/// Default number of stacks the kernel's `STACKS` map holds (`--stack-map`).
/// A stack whose hash bucket there holds another stack goes to `STACK_MORE`
/// (a quarter as many); one that fits in neither, or cannot be walked, is
/// counted in `STACK_ERRORS`.
pub const STACK_ENTRIES: u32 = 16384;
/// Set in the id of a stack stored in `STACK_MORE` rather than `STACKS`.
pub const STACK_MORE_BIT: u32 = 1 << 31;
/// The bits of a `STACK_MORE` id below [`STACK_MORE_BIT`] that come from the
/// frames' hash (the id never reaches [`STACK_NONE`]).
pub const STACK_MORE_MASK: u32 = (1 << 30) - 1;

/// A user stack's return addresses, innermost first, zero after the last:
/// a value of `STACK_MORE` (what `bpf_get_stack` writes).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct StackFrames {
    /// Addresses; zero past the stack's depth.
    pub ips: [u64; STACK_FRAMES],
}
/// The stack id `STACK` pushes (in its low half) when no stack was stored.
pub const STACK_NONE: u32 = u32::MAX;
/// Frames the kernel stores per stack (its `PERF_MAX_STACK_DEPTH`).
pub const STACK_FRAMES: usize = 127;

/// Bytes of key an aggregating plan may build (its whole payload).
pub const AGG_KEY_BYTES: usize = 96;
/// Default number of keys in the aggregation map.
pub const AGG_ENTRIES: u32 = 10240;
pub use hist::{AggValue, HIST_BUCKETS, HIST_SUB_BITS, hist_bucket, hist_bucket_range};

/// Key of the aggregation map: which probe and site, which histogram bucket
/// (0 for `COUNT`), and the key bytes the plan built (zero-padded).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AggKey {
    /// Plan id.
    pub plan: u32,
    /// Site id.
    pub site: u32,
    /// [`hist_bucket`] of the value for `HIST`, 0 for `COUNT`.
    pub bucket: u32,
    /// Reserved, zero.
    pub pad: u32,
    /// The plan's payload: its key fields in payload layout.
    pub key: [u8; AGG_KEY_BYTES],
}

/// Key of the small aggregation map, for plans whose key is one word
/// ([`plan_flags::SMALL_KEY`]): as [`AggKey`] with 8 key bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SmallAggKey {
    /// Plan id.
    pub plan: u32,
    /// Site id.
    pub site: u32,
    /// [`hist_bucket`] of the value for `HIST`, 0 for `COUNT`.
    pub bucket: u32,
    /// Reserved, zero.
    pub pad: u32,
    /// The plan's payload: its one key word.
    pub key: u64,
}

impl AggKey {
    /// An all-zero key.
    pub const fn zeroed() -> Self {
        AggKey {
            plan: 0,
            site: 0,
            bucket: 0,
            pad: 0,
            key: [0; AGG_KEY_BYTES],
        }
    }
}

/// A per-probe plan: what to fetch, whether to emit. Indexed by plan id in the
/// `PLANS` array map.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Plan {
    /// Number of valid instructions in `insns`.
    pub n_insns: u32,
    /// [`plan_flags`] bits.
    pub flags: u32,
    /// The program.
    pub insns: [Insn; MAX_INSNS],
}

impl Plan {
    /// An empty plan (emits a header-only event).
    pub const fn empty() -> Self {
        Plan {
            n_insns: 0,
            flags: 0,
            insns: [Insn {
                op: 0,
                width: 0,
                signed: 0,
                pad: 0,
                len: 0,
                imm: 0,
            }; MAX_INSNS],
        }
    }
}

/// Header of every event in the ring buffer; the payload follows it.
///
/// The payload is a sequence of 8-byte aligned fields in the order of the
/// plan's emitting instructions: `EMIT` writes one `u64`; `STR`, `BUF` and
/// `COMM` write a `u64` byte count followed by the bytes, padded to 8.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EventHeader {
    /// `bpf_ktime_get_ns()` at the hit (CLOCK_MONOTONIC).
    pub ts_ns: u64,
    /// Process id (kernel tgid).
    pub pid: u32,
    /// Thread id (kernel pid).
    pub tid: u32,
    /// Plan id: which probe specification fired.
    pub plan: u32,
    /// Site id: which attachment of that probe (e.g. which wildcard match).
    pub site: u32,
    /// CPU the probe ran on.
    pub cpu: u32,
    /// Payload bytes following the header.
    pub payload_len: u32,
    /// Bit N set when emitted field N involved a user-memory read that faulted.
    pub faults: u64,
}

/// Size of [`EventHeader`] on the wire.
pub const HEADER_LEN: usize = core::mem::size_of::<EventHeader>();

/// Builds the attach cookie: the plan id in the low half, the site in the high.
pub const fn cookie(plan: u32, site: u32) -> u64 {
    ((site as u64) << 32) | plan as u64
}

/// Or'ed into a cookie's plan id: the entry probe only saves the argument
/// registers for the return plan of that id ([`plan_flags::ENTRY_ARGS`]).
pub const SAVE_ARGS: u32 = 1 << 31;

/// Bits of a cookie's low half holding the site's attach generation (the
/// overhead budget's link swaps): a hit runs only when it matches the
/// site's [`SiteState::generation`]; the kernel clears them before use.
pub const GEN_MASK: u32 = 0x7fff << GEN_SHIFT;

/// Shift of [`GEN_MASK`].
pub const GEN_SHIFT: u32 = 16;

/// [`SiteState::generation`] of a site the budget dropped: no cookie has it.
pub const SITE_OFF: u32 = u32::MAX;

/// One site's state under the overhead budget, in the kernel's `SITES`
/// array (mmapped by user space): hits counted by the kernel, and the
/// generation of cookies that may run (user space sets it).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct SiteState {
    /// Program runs at this site (atomic adds).
    pub hits: u64,
    /// Cookies of this generation run; others return at once.
    pub generation: u32,
    /// Padding.
    pub pad: u32,
}

/// Calls in flight at once whose entry keeps a value (`KEEP`) or the
/// arguments (`ENTRY_ARGS`) for their return.
pub const FRAME_ENTRIES: u32 = 16384;

/// Key of a value kept for one call, from its entry to its return: which
/// thread and what (`tid << 32 | site` or `| slot`), and the stack pointer
/// at the entry (the return address's slot; at the return it is `rsp - 8`),
/// so nested and recursive calls each have their own.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FrameKey {
    /// `tid << 32 | site` (`SAVED_ARGS`) or `tid << 32 | slot` (`KEPT`).
    pub id: u64,
    /// `rsp` at the function's entry.
    pub sp: u64,
}

/// The argument registers of one call, saved at its entry for its return
/// probe, keyed by [`FrameKey`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SavedArgs {
    /// `rdi, rsi, rdx, rcx, r8, r9`.
    pub regs: [u64; 6],
}

/// Per-CPU scratch space of the interpreter: registers, value stack and the
/// event being built. Lives in a per-CPU array map, never on the BPF stack.
#[repr(C)]
pub struct Scratch {
    /// Copy of the probed thread's registers, in [`regs`] order; 32 slots so
    /// a masked index is always in bounds.
    pub regs: [u64; 32],
    /// Value stack.
    pub stack: [u64; STACK_DEPTH],
    /// Plan being interpreted.
    pub plan: u32,
    /// Stack pointer (number of values on the stack).
    pub sp: u32,
    /// Payload bytes written so far.
    pub out: u32,
    /// Emitted fields so far.
    pub fields: u32,
    /// 1 when the current value involved a faulting read.
    pub fault: u32,
    /// 1 when a filter rejected the event.
    pub drop: u32,
    /// Site id of the hit.
    pub site: u32,
    /// [`plan_flags`] of the plan being interpreted.
    pub flags: u32,
    /// The hit's user stack id in `STACKS` ([`STACK_NONE`] when none).
    pub stack_id: u32,
    /// Reserved, zero.
    pub pad: u32,
    /// Temporary for user-memory reads.
    pub tmp: u64,
    /// Bit N set when emitted field N faulted (becomes `EventHeader::faults`).
    pub faults: u64,
    /// Header followed by payload; sized so any masked offset plus a maximal
    /// read stays inside.
    pub event: [u8; HEADER_LEN + PAYLOAD_CAP + 2 * READ_MAX + 16],
    /// Key of an aggregation update, built from the payload.
    pub agg: AggKey,
    /// Key of a small-key aggregation update.
    pub small: SmallAggKey,
    /// Value of an in-flight begin, built from the payload.
    pub flight: Inflight,
}

/// Key of the in-flight map: the process and the key word its begin probe
/// captured, so equal pointers in two processes stay apart.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FlightKey {
    /// Process id (tgid).
    pub pid: u32,
    /// Reserved, zero.
    pub pad: u32,
    /// The first word of the begin probe's payload.
    pub key: u64,
}

/// An operation in flight (`ri inflight`): when and where it began and
/// the fields its begin probe captured (the key first).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Inflight {
    /// `bpf_ktime_get_ns()` at the begin probe.
    pub ts_ns: u64,
    /// Process id.
    pub pid: u32,
    /// Thread id.
    pub tid: u32,
    /// Site id of the begin probe.
    pub site: u32,
    /// Plan id of the begin probe (the aggregation key of `SPAN`).
    pub plan: u32,
    /// The begin probe's payload.
    pub payload: [u8; AGG_KEY_BYTES],
}

/// Processes chosen by name (`--comm`/`--exe`): the exec and exit
/// tracepoints keep the set of selected processes (`SELECTED`, by tgid in
/// ri's pid namespace) and tell user space through the `NOTICES` ring.
pub mod select {
    /// Selected processes the kernel keeps at most.
    pub const MAX_SELECTED: u32 = 16384;
    /// `--comm` names the kernel matches at exec, at most.
    pub const MAX_COMMS: u32 = 64;
    /// `--exe` files the kernel matches at exec, at most.
    pub const MAX_EXES: u32 = 64;
    /// Bytes of the `NOTICES` ring.
    pub const NOTICE_RING_BYTES: u32 = 64 << 10;
    /// `SELECTED` value: named with `-p` (kept across its execs).
    pub const BY_PID: u8 = 1;
    /// `SELECTED` value: matched by name (dropped when it execs another).
    pub const BY_NAME: u8 = 2;
    /// [`Notice::kind`]: a process exec'd whose comm matched (now selected).
    pub const MATCHED: u32 = 1;
    /// [`Notice::kind`]: a process exec'd (for user space's `--exe` check).
    pub const EXEC: u32 = 2;
    /// [`Notice::kind`]: a selected process exited (no longer selected).
    pub const LEFT: u32 = 3;
    /// [`Notice::kind`]: a process chosen by name exec'd a program whose
    /// comm does not match (no longer selected; `comm` is the new one).
    pub const AWAY: u32 = 4;
}

/// An `--exe` file as the exec tracepoint sees it: the superblock's device
/// (the kernel's `MKDEV` encoding) and the inode number.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExeKey {
    /// `s_dev` of the file's superblock.
    pub dev: u64,
    /// `i_ino` of the file.
    pub ino: u64,
}

/// One notice of the `NOTICES` ring (see [`select`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Notice {
    /// [`select::MATCHED`], [`select::EXEC`], [`select::LEFT`] or
    /// [`select::AWAY`].
    pub kind: u32,
    /// The process (tgid in ri's pid namespace).
    pub pid: u32,
    /// Its comm, NUL-padded.
    pub comm: [u8; 16],
}

#[cfg(feature = "user")]
mod pod {
    unsafe impl aya::Pod for super::Notice {}
    unsafe impl aya::Pod for super::ExeKey {}
    // SAFETY: plain `#[repr(C)]` integers and arrays, no padding holes that
    // matter, valid for any bit pattern.
    unsafe impl aya::Pod for super::Plan {}
    unsafe impl aya::Pod for super::Insn {}
    unsafe impl aya::Pod for super::EventHeader {}
    unsafe impl aya::Pod for super::AggKey {}
    unsafe impl aya::Pod for super::SmallAggKey {}
    unsafe impl aya::Pod for super::Inflight {}
    unsafe impl aya::Pod for super::FlightKey {}
    unsafe impl aya::Pod for super::AggValue {}
    unsafe impl aya::Pod for super::StackFrames {}
    unsafe impl aya::Pod for super::SiteState {}
}
