//! The eBPF plan format: compiling a probe's captures and filter into the
//! stack-machine program of `ri_common::Plan`, plus the field layout the
//! decoder needs to read the events back.
//!
//! Expressions are type-checked here once (C rules for widths, signedness
//! and pointer arithmetic); nothing is compiled per event.

use ri_common::{Insn, MAX_INSNS, PAYLOAD_CAP, Plan, READ_MAX, STACK_DEPTH, op, regs};

use crate::probe::{
    BinOp, Builtin, CType, Expr, ExprKind, ParseError, ProbeKind, ProbeSpec, Span, UnOp,
};

/// Default bound of `str()` when no length is given (as bpftrace).
pub const DEFAULT_STR_LEN: u64 = 64;

/// A compile error: what is wrong, and where in the probe string.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct PlanError(#[from] pub ParseError);

/// How to decode and print one captured field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldKind {
    /// An integer; pointers print in hex.
    Int {
        /// Print as signed.
        signed: bool,
        /// Print in hex (pointers).
        hex: bool,
    },
    /// A C string.
    Str,
    /// Raw bytes.
    Buf,
    /// The command name.
    Comm,
}

/// One captured field of an event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Field {
    /// Output name.
    pub name: String,
    /// How to decode it.
    pub kind: FieldKind,
}

/// A compiled probe: the kernel plan and the decoder's field list.
#[derive(Clone, Debug)]
pub struct CompiledPlan {
    /// The program for the kernel.
    pub plan: Plan,
    /// Fields in payload order.
    pub fields: Vec<Field>,
}

/// Names the event itself uses; captures may not take them.
const RESERVED: [&str; 6] = ["probe", "pid", "tid", "cpu", "ts_ns", "faults"];

/// Compiles a parsed probe.
pub fn compile(spec: &ProbeSpec) -> Result<CompiledPlan, PlanError> {
    let mut c = Compiler {
        spec,
        insns: Vec::new(),
        depth: 0,
    };
    if let Some(f) = &spec.filter {
        let ty = c.expr(f)?;
        c.need_value(&ty, f.span, "a filter")?;
        c.emit(op::FILTER, f.span)?;
    }
    let mut fields = Vec::new();
    let mut payload = 0usize;
    for cap in &spec.captures {
        if RESERVED.contains(&cap.name.as_str())
            || fields.iter().any(|f: &Field| f.name == cap.name)
        {
            return Err(c.err(
                cap.expr.span,
                format!(
                    "capture name '{}' is taken; name it with NAME=EXPR",
                    cap.name
                ),
            ));
        }
        let ty = c.expr(&cap.expr)?;
        let (kind, bytes) = match ty {
            Ty::Val(t) => {
                c.emit(op::EMIT, cap.expr.span)?;
                (
                    FieldKind::Int {
                        signed: t.signed && t.ptr == 0,
                        hex: t.ptr > 0,
                    },
                    8,
                )
            }
            Ty::Str(n) => (FieldKind::Str, 8 + round8(n)),
            Ty::Buf(n) => (FieldKind::Buf, 8 + round8(n)),
            Ty::Comm => (FieldKind::Comm, 24),
        };
        payload += bytes;
        if payload > PAYLOAD_CAP {
            return Err(c.err(
                cap.expr.span,
                format!("captures need {payload} bytes; an event holds at most {PAYLOAD_CAP}"),
            ));
        }
        fields.push(Field {
            name: cap.name.clone(),
            kind,
        });
    }
    let mut plan = Plan::empty();
    plan.n_insns = c.insns.len() as u32;
    plan.insns[..c.insns.len()].copy_from_slice(&c.insns);
    if spec.kind == ProbeKind::Uretprobe {
        plan.flags |= ri_common::plan_flags::RETURN;
    }
    Ok(CompiledPlan { plan, fields })
}

fn round8(n: u64) -> usize {
    (n as usize + 7) & !7
}

/// Static type of a compiled expression.
#[derive(Clone, Copy, Debug)]
enum Ty {
    /// A value on the stack.
    Val(CType),
    /// A string already emitted, with its bound.
    Str(u64),
    /// Bytes already emitted.
    Buf(u64),
    /// The command name, already emitted.
    Comm,
}

const U64: CType = CType {
    width: 8,
    signed: false,
    ptr: 0,
};
const S64: CType = CType {
    width: 8,
    signed: true,
    ptr: 0,
};

struct Compiler<'a> {
    spec: &'a ProbeSpec,
    insns: Vec<Insn>,
    depth: usize,
}

impl Compiler<'_> {
    fn err(&self, span: Span, msg: String) -> PlanError {
        PlanError(ParseError::new(&self.spec.text, span, msg))
    }

    /// Appends one instruction, tracking the value-stack depth.
    fn insn(&mut self, insn: Insn, span: Span) -> Result<(), PlanError> {
        if self.insns.len() >= MAX_INSNS {
            return Err(self.err(
                span,
                format!("probe too complex: more than {MAX_INSNS} plan instructions"),
            ));
        }
        let delta: isize = match insn.op {
            op::COMM | op::SWAP | op::NEG | op::NOT | op::BNOT | op::LOAD | op::EXT | op::END => 0,
            op::REG | op::IMM | op::PID | op::TID | op::UID | op::NSECS | op::CPU => 1,
            _ => -1,
        };
        self.depth = (self.depth as isize + delta) as usize;
        if self.depth > STACK_DEPTH {
            return Err(self.err(
                span,
                format!("expression nests too deeply (value stack of {STACK_DEPTH})"),
            ));
        }
        self.insns.push(insn);
        Ok(())
    }

    fn emit(&mut self, code: u8, span: Span) -> Result<(), PlanError> {
        self.insn(
            Insn {
                op: code,
                ..Default::default()
            },
            span,
        )
    }

    fn need_value(&self, ty: &Ty, span: Span, what: &str) -> Result<CType, PlanError> {
        match ty {
            Ty::Val(t) => Ok(*t),
            _ => Err(self.err(
                span,
                format!("str(), buf() and comm can only be captured, not used in {what}"),
            )),
        }
    }

    fn reg(&mut self, idx: u32, span: Span) -> Result<(), PlanError> {
        self.insn(
            Insn {
                op: op::REG,
                len: idx,
                ..Default::default()
            },
            span,
        )
    }

    fn imm(&mut self, v: u64, span: Span) -> Result<(), PlanError> {
        self.insn(
            Insn {
                op: op::IMM,
                imm: v,
                ..Default::default()
            },
            span,
        )
    }

    /// Reads `t` at the address on the stack. A preceding `IMM k; ADD`
    /// folds into the load's offset.
    fn load(&mut self, t: CType, span: Span) -> Result<(), PlanError> {
        let mut offset = 0u64;
        if let [.., a, b] = self.insns.as_slice()
            && a.op == op::IMM
            && b.op == op::ADD
        {
            offset = a.imm;
            // The pair pushed and popped one value: the depth is unchanged.
            self.insns.truncate(self.insns.len() - 2);
        }
        self.insn(
            Insn {
                op: op::LOAD,
                width: t.width,
                signed: t.signed as u8,
                imm: offset,
                ..Default::default()
            },
            span,
        )
    }

    fn expr(&mut self, e: &Expr) -> Result<Ty, PlanError> {
        let span = e.span;
        match &e.kind {
            ExprKind::Int(v) => {
                self.imm(*v, span)?;
                Ok(Ty::Val(S64))
            }
            ExprKind::Arg(n) => {
                if self.spec.kind == ProbeKind::Uretprobe {
                    return Err(self.err(
                        span,
                        format!("arg{n} is not available in a uretprobe (its register has been reused); capture it at entry"),
                    ));
                }
                match regs::ARGS.get(*n as usize) {
                    Some(r) => self.reg(*r, span)?,
                    None => {
                        // Stack-passed arguments: above the return address.
                        self.reg(regs::RSP, span)?;
                        self.imm(8 * (*n as u64 - 5), span)?;
                        self.emit(op::ADD, span)?;
                        self.load(U64, span)?;
                    }
                }
                Ok(Ty::Val(U64))
            }
            ExprKind::Retval => {
                if self.spec.kind != ProbeKind::Uretprobe {
                    return Err(self.err(span, "retval is only available in a uretprobe (ur:)".into()));
                }
                self.reg(regs::RAX, span)?;
                Ok(Ty::Val(U64))
            }
            ExprKind::Reg(r) => {
                self.reg(*r, span)?;
                Ok(Ty::Val(U64))
            }
            ExprKind::Builtin(b) => {
                let code = match b {
                    Builtin::Pid => op::PID,
                    Builtin::Tid => op::TID,
                    Builtin::Uid => op::UID,
                    Builtin::Nsecs => op::NSECS,
                    Builtin::Cpu => op::CPU,
                    Builtin::Comm => {
                        self.emit(op::COMM, span)?;
                        return Ok(Ty::Comm);
                    }
                };
                self.emit(code, span)?;
                Ok(Ty::Val(U64))
            }
            ExprKind::Ident(name) => Err(self.err(
                span,
                format!("unknown identifier '{name}' (use argN, retval, a register, pid, tid, uid, nsecs, cpu or comm)"),
            )),
            ExprKind::Unary(u, inner) => {
                let t = self.expr(inner)?;
                let t = self.need_value(&t, inner.span, "arithmetic")?;
                let code = match u {
                    UnOp::Neg => op::NEG,
                    UnOp::Not => op::NOT,
                    UnOp::BitNot => op::BNOT,
                };
                self.emit(code, span)?;
                Ok(Ty::Val(match u {
                    UnOp::Not => U64,
                    _ => CType { ptr: 0, ..t },
                }))
            }
            ExprKind::Cast(to, inner) => {
                let t = self.expr(inner)?;
                self.need_value(&t, inner.span, "a cast")?;
                if to.ptr == 0 && to.width < 8 {
                    self.insn(
                        Insn {
                            op: op::EXT,
                            width: to.width,
                            signed: to.signed as u8,
                            ..Default::default()
                        },
                        span,
                    )?;
                }
                Ok(Ty::Val(*to))
            }
            ExprKind::Deref(inner) => {
                let t = self.expr(inner)?;
                let t = self.need_value(&t, inner.span, "a dereference")?;
                let pointee = if t.ptr == 0 {
                    U64
                } else {
                    CType {
                        ptr: t.ptr - 1,
                        ..t
                    }
                };
                let load = if pointee.ptr > 0 { U64 } else { pointee };
                self.load(load, span)?;
                Ok(Ty::Val(pointee))
            }
            ExprKind::Str(inner, len) => {
                let t = self.expr(inner)?;
                self.need_value(&t, inner.span, "str()")?;
                let n = len.unwrap_or(DEFAULT_STR_LEN);
                self.bound(n, span)?;
                self.insn(
                    Insn {
                        op: op::STR,
                        len: n as u32,
                        ..Default::default()
                    },
                    span,
                )?;
                Ok(Ty::Str(n))
            }
            ExprKind::Buf(inner, n) => {
                let t = self.expr(inner)?;
                self.need_value(&t, inner.span, "buf()")?;
                self.bound(*n, span)?;
                self.insn(
                    Insn {
                        op: op::BUF,
                        len: *n as u32,
                        ..Default::default()
                    },
                    span,
                )?;
                Ok(Ty::Buf(*n))
            }
            ExprKind::Binary(b, l, r) => self.binary(*b, l, r, span),
            ExprKind::Member(..)
            | ExprKind::Index(..)
            | ExprKind::AddrOf(..)
            | ExprKind::SizeofType(..)
            | ExprKind::SizeofExpr(..)
            | ExprKind::CastNamed(..) => Err(self.err(
                span,
                "typed expressions need debug info (not wired yet)".into(),
            )),
        }
    }

    fn bound(&self, n: u64, span: Span) -> Result<(), PlanError> {
        if n == 0 || n > READ_MAX as u64 {
            return Err(self.err(span, format!("length must be between 1 and {READ_MAX}")));
        }
        Ok(())
    }

    fn binary(&mut self, b: BinOp, l: &Expr, r: &Expr, span: Span) -> Result<Ty, PlanError> {
        let lt = self.expr(l)?;
        let lt = self.need_value(&lt, l.span, "arithmetic")?;
        let rt = self.expr(r)?;
        let rt = self.need_value(&rt, r.span, "arithmetic")?;
        let signed = lt.signed && rt.signed && lt.ptr == 0 && rt.ptr == 0;
        // Pointer arithmetic scales the integer side by the pointee size.
        if matches!(b, BinOp::Add | BinOp::Sub) && lt.ptr > 0 && rt.ptr == 0 {
            let size = if lt.ptr > 1 { 8 } else { lt.width as u64 };
            if size > 1 {
                self.imm(size, span)?;
                self.emit(op::MUL, span)?;
            }
            self.emit(if b == BinOp::Add { op::ADD } else { op::SUB }, span)?;
            return Ok(Ty::Val(lt));
        }
        let code = match b {
            BinOp::Add => op::ADD,
            BinOp::Sub => op::SUB,
            BinOp::Mul => op::MUL,
            BinOp::Div if signed => op::SDIV,
            BinOp::Div => op::DIV,
            BinOp::Mod if signed => op::SMOD,
            BinOp::Mod => op::MOD,
            BinOp::And => op::AND,
            BinOp::Or => op::OR,
            BinOp::Xor => op::XOR,
            BinOp::Shl => op::SHL,
            BinOp::Shr if lt.signed && lt.ptr == 0 => op::SAR,
            BinOp::Shr => op::SHR,
            BinOp::Eq => op::EQ,
            BinOp::Ne => op::NE,
            BinOp::Lt | BinOp::Gt if signed => op::SLT,
            BinOp::Lt | BinOp::Gt => op::LT,
            BinOp::Le | BinOp::Ge if signed => op::SLE,
            BinOp::Le | BinOp::Ge => op::LE,
            BinOp::LAnd => op::LAND,
            BinOp::LOr => op::LOR,
        };
        if matches!(b, BinOp::Gt | BinOp::Ge) {
            self.emit(op::SWAP, span)?;
        }
        self.emit(code, span)?;
        let is_cmp = matches!(
            b,
            BinOp::Eq
                | BinOp::Ne
                | BinOp::Lt
                | BinOp::Le
                | BinOp::Gt
                | BinOp::Ge
                | BinOp::LAnd
                | BinOp::LOr
        );
        Ok(Ty::Val(if is_cmp {
            U64
        } else if lt.ptr > 0 {
            lt
        } else if signed {
            S64
        } else {
            U64
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::parse_probe;

    fn plan(s: &str) -> CompiledPlan {
        compile(&parse_probe(s).unwrap()).unwrap_or_else(|e| panic!("{e}"))
    }

    fn err(s: &str) -> String {
        compile(&parse_probe(s).unwrap()).unwrap_err().to_string()
    }

    fn ops(p: &CompiledPlan) -> Vec<u8> {
        p.plan.insns[..p.plan.n_insns as usize]
            .iter()
            .map(|i| i.op)
            .collect()
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
        assert!(err("ur:/b:f(arg0)").contains("arg0 is not available in a uretprobe"));
        assert!(err("u:/b:f(retval)").contains("retval is only available in a uretprobe"));
        assert!(err("u:/b:f(foo)").contains("unknown identifier 'foo'"));
        assert!(err("u:/b:f(pid=arg0)").contains("capture name 'pid' is taken"));
        assert!(err("u:/b:f(str(arg0)+1)").contains("can only be captured"));
        assert!(err("u:/b:f(str(arg0, 100000))").contains("length must be between"));
    }
}
