//! Opcodes of the plan stack machine. Values are `u64`; binary operators pop
//! the right operand, then the left, and push the result.

/// Stop interpreting; emit the event.
pub const END: u8 = 0;
/// Push register `len` (an index into [`crate::regs`]).
pub const REG: u8 = 1;
/// Push `imm`.
pub const IMM: u8 = 2;
/// Pop an address, add `imm`, read `width` bytes of user memory there,
/// extend, push. (The offset folds the member offsets of typed expressions
/// into one instruction.)
pub const LOAD: u8 = 3;
/// Truncate the top value to `width` bytes, then sign- or zero-extend.
pub const EXT: u8 = 4;
/// Pop; when zero, drop the event and stop.
pub const FILTER: u8 = 5;
/// Pop a value and append it to the payload as a `u64`.
pub const EMIT: u8 = 6;
/// Pop an address and append the C string there, at most `len` bytes.
pub const STR: u8 = 7;
/// Pop an address and append `len` bytes read there.
pub const BUF: u8 = 8;
/// Append the current task's command name (16 bytes).
pub const COMM: u8 = 9;
/// Push the process id (tgid).
pub const PID: u8 = 10;
/// Push the thread id.
pub const TID: u8 = 11;
/// Push the user id.
pub const UID: u8 = 12;
/// Push the monotonic time in ns.
pub const NSECS: u8 = 13;
/// Push the CPU number.
pub const CPU: u8 = 14;
/// Aggregate: count one hit for the key built so far (the payload the
/// emitting instructions wrote), under [`crate::AggKey`]; no event is sent.
pub const COUNT: u8 = 15;
/// Aggregate: pop a value and count one hit in its log2 bucket for the key
/// built so far; no event is sent.
pub const HIST: u8 = 16;
/// `ri inflight` begin: store the payload built so far (its first word is
/// the key) with the time, pid and tid in the in-flight map; no event.
/// With `imm` 1 only when the key is not in flight yet (`--seen`: an
/// operation begun before attaching, first seen now).
pub const BEGIN: u8 = 19;
/// `ri inflight` end: forget the in-flight entry whose key is the payload's
/// first word; no event.
pub const END_FLIGHT: u8 = 20;
/// Push the current user stack as `tgid << 32 | stack id` (an id into the
/// `STACKS` map, taken once per hit before the plan runs when the plan has
/// [`crate::plan_flags::STACK`]); when the kernel could not store the stack,
/// the id is [`crate::STACK_NONE`] and the field is marked faulted.
pub const STACK: u8 = 21;
/// Pop a value and keep it for this call under slot `imm` (e.g. the size at
/// an allocator's entry, for its return): keyed by thread, slot and stack
/// pointer at the function's entry, so recursive calls keep their own.
pub const KEEP: u8 = 22;
/// At the function's return, push the value `KEEP` stored for this call
/// under slot `imm` and forget it; without one (the entry's filter left
/// the call out, or the map was full, which `KEEP` counted), drop the hit.
pub const TAKE: u8 = 23;
/// `ri latency --begin/--end` end: look up the in-flight entry whose key is
/// the payload's first word, count now minus its begin time in a log2
/// bucket of `AGG` under the begin's plan, site and payload (without the
/// key word), and forget it; without a begin, drop the hit. No event.
pub const SPAN: u8 = 24;
/// `ri inflight --update`: write the payload's second word into word `imm`
/// of the payload of the in-flight entry whose key is the payload's first
/// word (e.g. a request's current phase); no entry, no change. No event.
pub const UPDATE: u8 = 25;

/// `Insn::pad` bit of a binary operator (`ADD`..=`SMOD`) whose right
/// operand is its `imm` instead of a popped value: an `IMM k` fused into it.
pub const IMM_RIGHT: u8 = 1;
/// `Insn::pad` bit of a binary operator whose left operand is its `imm` and
/// right operand the popped value: an `IMM k; SWAP` fused into it (`a > k`
/// compiles to `k < a`).
pub const IMM_LEFT: u8 = 2;

/// Addition.
pub const ADD: u8 = 32;
/// Subtraction.
pub const SUB: u8 = 33;
/// Multiplication.
pub const MUL: u8 = 34;
/// Unsigned division (x / 0 = 0).
pub const DIV: u8 = 35;
/// Unsigned remainder (x % 0 = x).
pub const MOD: u8 = 36;
/// Bitwise and.
pub const AND: u8 = 37;
/// Bitwise or.
pub const OR: u8 = 38;
/// Bitwise xor.
pub const XOR: u8 = 39;
/// Shift left.
pub const SHL: u8 = 40;
/// Logical shift right.
pub const SHR: u8 = 41;
/// Arithmetic shift right.
pub const SAR: u8 = 42;
/// Equal (1 or 0).
pub const EQ: u8 = 43;
/// Not equal.
pub const NE: u8 = 44;
/// Unsigned less than.
pub const LT: u8 = 45;
/// Unsigned less or equal.
pub const LE: u8 = 46;
/// Signed less than.
pub const SLT: u8 = 47;
/// Signed less or equal.
pub const SLE: u8 = 48;
/// Logical and of two truth values.
pub const LAND: u8 = 49;
/// Logical or of two truth values.
pub const LOR: u8 = 50;
/// Signed division (x / 0 = 0).
pub const SDIV: u8 = 51;
/// Signed remainder (x % 0 = x).
pub const SMOD: u8 = 52;

/// Negation (two's complement).
pub const NEG: u8 = 64;
/// Logical not (1 when zero).
pub const NOT: u8 = 65;
/// Bitwise not.
pub const BNOT: u8 = 66;
/// Swap the two top values (lets `a > b` compile as `b < a`).
pub const SWAP: u8 = 67;
