//! The compiler's unit tests.

use super::*;
use crate::probe::parse_probe;

fn plan(s: &str) -> CompiledPlan {
    compile(&parse_probe(s).unwrap(), None).unwrap_or_else(|e| panic!("{e}"))
}

fn err(s: &str) -> String {
    compile(&parse_probe(s).unwrap(), None)
        .unwrap_err()
        .to_string()
}

fn ops(p: &CompiledPlan) -> Vec<u8> {
    p.plan.insns[..p.plan.n_insns as usize]
        .iter()
        .map(|i| i.op)
        .collect()
}

#[test]
fn constants_fuse_into_their_operator() {
    let p = plan("u:/bin/true:main(k=arg0 % 16, x=(arg1 + arg2) * 3) if arg0 > 100");
    let f = fuse_constants(&p.plan);
    let fused: Vec<(u8, u8, u64)> = f.insns[..f.n_insns as usize]
        .iter()
        .map(|i| (i.op, i.pad, i.imm))
        .collect();
    let (r, l) = (op::IMM_RIGHT, op::IMM_LEFT);
    // `arg0 > 100` is `arg0 100 SWAP LT`, that is `100 < arg0`.
    assert_eq!(
        fused,
        [
            (op::REG, 0, 0),
            (op::LT, l, 100),
            (op::FILTER, 0, 0),
            (op::REG, 0, 0),
            (op::MOD, r, 16),
            (op::EMIT, 0, 0),
            (op::REG, 0, 0),
            (op::REG, 0, 0),
            (op::ADD, 0, 0),
            (op::MUL, r, 3),
            (op::EMIT, 0, 0),
        ]
    );
    assert_eq!(f.insns[f.n_insns as usize], Insn::default());
    assert_eq!(ops(&p).len(), f.n_insns as usize + 4);
}

#[test]
fn entry_args_at_return() {
    let p = plan("ur:/b:f(a=arg1, r=retval)");
    assert_eq!(p.plan.insns[0].len, regs::ENTRY_ARGS[1]);
    assert_ne!(p.plan.flags & ri_common::plan_flags::ENTRY_ARGS, 0);
    let e = plan("u:/b:f(a=arg1)");
    assert_eq!(e.plan.flags & ri_common::plan_flags::ENTRY_ARGS, 0);
}

#[test]
fn two_args() {
    let p = plan("u:/b:f(a=arg0, b=arg1)");
    assert_eq!(ops(&p), [op::REG, op::EMIT, op::REG, op::EMIT]);
    assert_eq!(p.plan.insns[0].len, regs::ARGS[0]);
    assert_eq!(p.fields[1].name, "b");
}

#[test]
fn deref_width_and_pointer_scaling() {
    let p = plan("u:/b:f(x=*(u32*)(arg0+16))");
    assert_eq!(ops(&p), [op::REG, op::LOAD, op::EMIT]);
    assert_eq!((p.plan.insns[1].width, p.plan.insns[1].imm), (4, 16));
    let p = plan("u:/b:f(x=*((u32*)arg0+2))");
    assert_eq!(
        ops(&p),
        [
            op::REG,
            op::IMM,
            op::IMM,
            op::MUL,
            op::ADD,
            op::LOAD,
            op::EMIT
        ]
    );
    assert_eq!(p.plan.insns[2].imm, 4);
    let p = plan("u:/b:f(x=(s8)arg0)");
    assert_eq!(
        p.fields[0].kind,
        FieldKind::Int {
            signed: true,
            hex: false
        }
    );
    let p = plan("u:/b:f(x=(u64**)arg0)");
    assert_eq!(
        p.fields[0].kind,
        FieldKind::Int {
            signed: false,
            hex: true
        }
    );
}

#[test]
fn filter_comes_first() {
    let p = plan("u:/b:f(arg0) if arg1 > 100");
    assert_eq!(
        ops(&p),
        [
            op::REG,
            op::IMM,
            op::SWAP,
            op::LT,
            op::FILTER,
            op::REG,
            op::EMIT
        ]
    );
}

#[test]
fn semantic_errors() {
    assert!(err("ur:/b:f(arg7)").contains("arg7 is passed on the stack"));
    assert!(err("u:/b:f(retval)").contains("retval is only available in a uretprobe"));
    assert!(err("u:/b:f(foo)").contains("unknown identifier 'foo'"));
    assert!(err("u:/b:f(pid=arg0)").contains("capture name 'pid' is taken"));
    assert!(err("u:/b:f(str(arg0)+1)").contains("can only be captured"));
    assert!(err("u:/b:f(str(arg0, 100000))").contains("length must be between"));
    assert!(err("u:/b:f(x=arg0->y)").contains("'->' needs a pointer to a struct"));
    assert!(err("u:/b:f(x=(struct foo *)arg0)").contains("needs debug info"));
}
