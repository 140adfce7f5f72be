//! x86-64 registers as the interpreter sees them: the order of the kernel's
//! `struct pt_regs`, so the eBPF side copies it word by word.

/// Register names in `pt_regs` order; the index is the `REG` operand.
pub const NAMES: [&str; crate::NUM_REGS] = [
    "r15", "r14", "r13", "r12", "rbp", "rbx", "r11", "r10", "r9", "r8", "rax", "rcx", "rdx", "rsi",
    "rdi", "orig_rax", "rip", "cs", "eflags", "rsp", "ss",
];

/// Index of `rax` (the return value at a uretprobe).
pub const RAX: u32 = 10;
/// Index of `rip`.
pub const RIP: u32 = 16;
/// Index of `rsp`.
pub const RSP: u32 = 19;
/// Indices of the System V integer argument registers, `arg0`..`arg5`.
pub const ARGS: [u32; 6] = [14, 13, 12, 11, 9, 8];
/// Scratch slots (past the `pt_regs` copy) of the argument registers as
/// they were at the function's entry, for return plans that read them.
pub const ENTRY_ARGS: [u32; 6] = [21, 22, 23, 24, 25, 26];

/// Looks a register up by name (`rdi`, `sp`, `ip`, ...).
pub fn index(name: &str) -> Option<u32> {
    match name {
        "sp" => return Some(RSP),
        "ip" | "pc" => return Some(RIP),
        "bp" => return Some(4),
        _ => {}
    }
    NAMES.iter().position(|n| *n == name).map(|i| i as u32)
}
