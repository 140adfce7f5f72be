//! The plan as the kernel runs it: constants fused into the operators
//! that use them.

use ri_common::{Insn, MAX_INSNS, Plan, op};

/// The plan as the kernel runs it: each `IMM k` followed by a binary
/// operator becomes that operator with `k` as its right operand
/// ([`op::IMM_RIGHT`]), and `IMM k; SWAP; OP` becomes `OP` with `k` as its
/// left one ([`op::IMM_LEFT`]): fewer interpreter steps. Plans have no
/// jumps, so nothing refers to instruction positions.
pub fn fuse_constants(plan: &Plan) -> Plan {
    fn binary(i: Option<&Insn>) -> Option<&Insn> {
        i.filter(|i| (op::ADD..=op::SMOD).contains(&i.op) && i.pad == 0)
    }
    let mut out = *plan;
    let insns = &plan.insns[..(plan.n_insns as usize).min(MAX_INSNS)];
    let mut n = 0;
    let mut i = 0;
    while i < insns.len() {
        let mut insn = insns[i];
        if insn.op == op::IMM {
            if let Some(next) = binary(insns.get(i + 1)) {
                insn = Insn {
                    pad: op::IMM_RIGHT,
                    imm: insn.imm,
                    ..*next
                };
                i += 1;
            } else if insns.get(i + 1).is_some_and(|s| s.op == op::SWAP)
                && let Some(next) = binary(insns.get(i + 2))
            {
                insn = Insn {
                    pad: op::IMM_LEFT,
                    imm: insn.imm,
                    ..*next
                };
                i += 2;
            }
        }
        out.insns[n] = insn;
        n += 1;
        i += 1;
    }
    for slot in &mut out.insns[n..] {
        *slot = Insn::default();
    }
    out.n_insns = n as u32;
    out
}
