//! Compiling an expression: builtins, arguments, operators and captures
//! into stack-machine instructions, type-checked with C's rules.

use ri_common::{READ_MAX, op, regs};

use super::{Class, Compiler, DEFAULT_STR_LEN, FieldKind, Obj, PlanError, S64, Ty, U64, round8};
use crate::probe::{BinOp, Builtin, Expr, ExprKind, ProbeKind, Span, UnOp};

impl Compiler<'_> {
    pub(super) fn int_value(&mut self, e: &Expr, what: &str) -> Result<Obj, PlanError> {
        let t = self.expr(e)?;
        let o = self.rvalue(t, e.span, what)?;
        match self.class(&o, e.span)? {
            Class::Int { .. } | Class::Enum { .. } | Class::Ptr(_) => Ok(o),
            _ => Err(self.err(
                e.span,
                format!(
                    "{} is not a number, cannot use it in {what}",
                    self.name_of(&o)
                ),
            )),
        }
    }

    /// Emits a capture and returns its field kind and payload bytes.
    pub(super) fn capture(&mut self, ty: Ty, span: Span) -> Result<(FieldKind, usize), PlanError> {
        match ty {
            Ty::Str(n) => return Ok((FieldKind::Str, 8 + round8(n))),
            Ty::Buf(n) => return Ok((FieldKind::Buf, 8 + round8(n))),
            Ty::Comm => return Ok((FieldKind::Comm, 24)),
            Ty::Stack => {
                self.emit(op::EMIT, span)?;
                if self.spec.kind != ProbeKind::Uprobe || self.spec.offset != 0 {
                    return Ok((FieldKind::Stack { caller: false }, 8));
                }
                self.reg(regs::RSP, span)?;
                self.load(8, false, span)?;
                self.emit(op::EMIT, span)?;
                return Ok((FieldKind::Stack { caller: true }, 16));
            }
            Ty::Place(ref o, None) => {
                let class = self.class(o, span)?;
                if let Class::Array(ref elem, count) = class
                    && self.is_char(elem, span)?
                {
                    let n = count.unwrap_or(DEFAULT_STR_LEN).clamp(1, READ_MAX as u64);
                    self.with(op::STR, 0, false, n as u32, span)?;
                    return Ok((FieldKind::Str, 8 + round8(n)));
                }
                if matches!(class, Class::Aggregate(_) | Class::Array(..)) {
                    let Obj::Dw(id) = o else {
                        return Err(self.err(span, "cannot capture this object whole".into()));
                    };
                    let size = self.size_of(o, span)?;
                    if size == 0 || size > READ_MAX as u64 {
                        return Err(self.err(
                            span,
                            format!(
                                "{} is {size} bytes; whole captures hold at most {READ_MAX}: capture members instead",
                                self.name_of(o)
                            ),
                        ));
                    }
                    self.with(op::BUF, 0, false, size as u32, span)?;
                    let t = self.ctx(span, "a whole-object capture")?;
                    return Ok((FieldKind::Object(t.type_ref(*id)), 8 + round8(size)));
                }
            }
            _ => {}
        }
        let o = self.rvalue(ty, span, "a capture")?;
        let kind = match self.class(&o, span)? {
            Class::Ptr(Some(p)) if matches!(p, Obj::Dw(_)) && self.is_char(&p, span)? => {
                self.with(op::STR, 0, false, DEFAULT_STR_LEN as u32, span)?;
                return Ok((FieldKind::Str, 8 + round8(DEFAULT_STR_LEN)));
            }
            Class::Ptr(_) => FieldKind::Int {
                signed: false,
                hex: true,
            },
            Class::Enum { .. } => match &o {
                Obj::Dw(id) => FieldKind::Enum(self.ctx(span, "an enum")?.type_ref(*id)),
                _ => FieldKind::Int {
                    signed: false,
                    hex: false,
                },
            },
            Class::Int { signed, .. } => FieldKind::Int { signed, hex: false },
            _ => {
                return Err(self.err(
                    span,
                    format!("cannot capture a value of type {}", self.name_of(&o)),
                ));
            }
        };
        self.emit(op::EMIT, span)?;
        Ok((kind, 8))
    }

    pub(super) fn expr(&mut self, e: &Expr) -> Result<Ty, PlanError> {
        let span = e.span;
        match &e.kind {
            ExprKind::Int(v) => {
                self.imm(*v, span)?;
                Ok(Ty::Val(Obj::Raw(S64)))
            }
            ExprKind::Arg(n) => {
                match regs::ARGS.get(*n as usize) {
                    Some(_) => self.arg_reg(*n as usize, span)?,
                    None => {
                        self.no_stack_args_at_return(&format!("arg{n}"), span)?;
                        // Stack-passed arguments: above the return address.
                        self.reg(regs::RSP, span)?;
                        self.add_const(8 * (*n as u64 - 5), span)?;
                        self.load(8, false, span)?;
                    }
                }
                Ok(Ty::Val(Obj::Raw(U64)))
            }
            ExprKind::Retval => {
                if self.spec.kind != ProbeKind::Uretprobe {
                    return Err(
                        self.err(span, "retval is only available in a uretprobe (ur:)".into())
                    );
                }
                self.reg(regs::RAX, span)?;
                let ret = self.types.and_then(|t| t.function()).and_then(|f| f.ret);
                let o = ret.map_or(Obj::Raw(U64), Obj::Dw);
                self.narrow(&o, span)?;
                Ok(Ty::Val(o))
            }
            ExprKind::Reg(r) => {
                self.reg(*r, span)?;
                Ok(Ty::Val(Obj::Raw(U64)))
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
                    Builtin::Stack => {
                        self.emit(op::STACK, span)?;
                        return Ok(Ty::Stack);
                    }
                };
                self.emit(code, span)?;
                Ok(Ty::Val(Obj::Raw(U64)))
            }
            ExprKind::Ident(name) => self.param(name, span),
            ExprKind::Unary(u, inner) => {
                let o = self.int_value(inner, "arithmetic")?;
                let code = match u {
                    UnOp::Neg => op::NEG,
                    UnOp::Not => op::NOT,
                    UnOp::BitNot => op::BNOT,
                };
                self.emit(code, span)?;
                Ok(Ty::Val(match u {
                    UnOp::Not => Obj::Raw(U64),
                    _ => match self.class(&o, span)? {
                        Class::Int { signed: true, .. } | Class::Enum { signed: true, .. } => {
                            Obj::Raw(S64)
                        }
                        _ => Obj::Raw(U64),
                    },
                }))
            }
            ExprKind::Cast(to, inner) => {
                self.int_value(inner, "a cast")?;
                if to.ptr == 0 && to.width < 8 {
                    self.with(op::EXT, to.width, to.signed, 0, span)?;
                }
                Ok(Ty::Val(Obj::Raw(*to)))
            }
            ExprKind::CastNamed(tn, inner) => {
                let target = self.named_type(tn)?;
                self.int_value(inner, "a cast")?;
                if let Class::Int { width, signed } | Class::Enum { width, signed } =
                    self.class(&target, tn.span)?
                    && width < 8
                {
                    self.with(op::EXT, width, signed, 0, span)?;
                }
                if let Class::Aggregate(_) | Class::Array(..) = self.class(&target, tn.span)? {
                    return Err(self.err(
                        tn.span,
                        format!(
                            "cannot cast a value to {}; cast to a pointer and dereference",
                            self.name_of(&target)
                        ),
                    ));
                }
                Ok(Ty::Val(target))
            }
            ExprKind::Deref(inner) => {
                let o = self.int_value(inner, "a dereference")?;
                match self.class(&o, inner.span)? {
                    Class::Ptr(Some(p)) => Ok(Ty::Place(p, None)),
                    Class::Ptr(None) => Err(self.err(
                        inner.span,
                        "cannot dereference a void pointer; cast it first".into(),
                    )),
                    // A plain integer reads a u64 there (as `*arg0` in bpftrace).
                    _ if matches!(o, Obj::Raw(_)) => Ok(Ty::Place(Obj::Raw(U64), None)),
                    _ => Err(self.err(
                        inner.span,
                        format!(
                            "cannot dereference {}: it is not a pointer",
                            self.name_of(&o)
                        ),
                    )),
                }
            }
            ExprKind::AddrOf(inner) => match self.expr(inner)? {
                Ty::Place(o, None) => Ok(Ty::Val(Obj::Ptr(Box::new(o)))),
                Ty::Place(_, Some(_)) => {
                    Err(self.err(span, "cannot take the address of a bitfield".into()))
                }
                _ => Err(self.err(
                    inner.span,
                    "& needs an object in memory (a member, an element or *p)".into(),
                )),
            },
            ExprKind::Member(inner, name, arrow) => self.member(inner, name, *arrow, span),
            ExprKind::Index(base, idx) => {
                let elem = match self.expr(base)? {
                    Ty::Place(o, None)
                        if matches!(self.class(&o, base.span)?, Class::Array(..)) =>
                    {
                        let Class::Array(elem, _) = self.class(&o, base.span)? else {
                            unreachable!()
                        };
                        elem
                    }
                    t => {
                        let o = self.rvalue(t, base.span, "an index")?;
                        match self.class(&o, base.span)? {
                            Class::Ptr(Some(p)) => p,
                            _ => {
                                return Err(self.err(
                                    base.span,
                                    format!(
                                        "cannot index {}: not an array or pointer",
                                        self.name_of(&o)
                                    ),
                                ));
                            }
                        }
                    }
                };
                let size = self.size_of(&elem, span)?;
                if let ExprKind::Int(k) = idx.kind {
                    self.add_const(k.wrapping_mul(size), span)?;
                } else {
                    self.int_value(idx, "an index")?;
                    if size != 1 {
                        self.imm(size, span)?;
                        self.emit(op::MUL, span)?;
                    }
                    self.emit(op::ADD, span)?;
                }
                Ok(Ty::Place(elem, None))
            }
            ExprKind::SizeofType(tn) => {
                let o = match self.named_type(tn) {
                    Ok(o) => o,
                    Err(e) => match self.param_type(&tn.name) {
                        Some(o) if tn.ptr == 0 => o,
                        _ => return Err(e),
                    },
                };
                let n = self.size_of(&o, span)?;
                self.imm(n, span)?;
                Ok(Ty::Val(Obj::Raw(U64)))
            }
            ExprKind::SizeofExpr(inner) => {
                let (mark, depth) = (self.insns.len(), self.depth);
                let t = self.expr(inner)?;
                let o = match &t {
                    Ty::Val(o) | Ty::Place(o, _) => o.clone(),
                    _ => return Err(self.err(inner.span, "sizeof needs a typed expression".into())),
                };
                let n = self.size_of(&o, span)?;
                self.insns.truncate(mark);
                self.depth = depth;
                self.imm(n, span)?;
                Ok(Ty::Val(Obj::Raw(U64)))
            }
            ExprKind::Str(inner, len) => {
                self.int_value(inner, "str()")?;
                let n = len.unwrap_or(DEFAULT_STR_LEN);
                self.bound(n, span)?;
                self.with(op::STR, 0, false, n as u32, span)?;
                Ok(Ty::Str(n))
            }
            ExprKind::Buf(inner, n) => {
                self.int_value(inner, "buf()")?;
                self.bound(*n, span)?;
                self.with(op::BUF, 0, false, *n as u32, span)?;
                Ok(Ty::Buf(*n))
            }
            ExprKind::Binary(b, l, r) => self.binary(*b, l, r, span),
            ExprKind::Walk(name, _) => Err(self.err(
                span,
                format!("{name}() walks memory in ri peek and views; a probe cannot use it"),
            )),
        }
    }

    pub(super) fn no_stack_args_at_return(&self, what: &str, span: Span) -> Result<(), PlanError> {
        if self.spec.kind == ProbeKind::Uretprobe {
            return Err(self.err(
                span,
                format!("{what} is passed on the stack, which is not saved for a uretprobe; capture it at entry"),
            ));
        }
        Ok(())
    }

    /// Argument register `n`: at a return probe, its value at the entry,
    /// which a companion entry probe saves (see `plan_flags::ENTRY_ARGS`);
    /// what it points to is read at the return.
    pub(super) fn arg_reg(&mut self, n: usize, span: Span) -> Result<(), PlanError> {
        if self.spec.kind == ProbeKind::Uretprobe {
            self.reg(regs::ENTRY_ARGS[n], span)
        } else {
            self.reg(regs::ARGS[n], span)
        }
    }

    pub(super) fn binary(
        &mut self,
        b: BinOp,
        l: &Expr,
        r: &Expr,
        span: Span,
    ) -> Result<Ty, PlanError> {
        let lt = self.int_value(l, "arithmetic")?;
        let lc = self.class(&lt, l.span)?;
        let rt = self.int_value(r, "arithmetic")?;
        let rc = self.class(&rt, r.span)?;
        let is_signed = |c: &Class| {
            matches!(
                c,
                Class::Int { signed: true, .. } | Class::Enum { signed: true, .. }
            )
        };
        let signed = is_signed(&lc) && is_signed(&rc);
        // Pointer arithmetic scales the integer side by the pointee size.
        if matches!(b, BinOp::Add | BinOp::Sub)
            && let Class::Ptr(pointee) = &lc
            && !matches!(rc, Class::Ptr(_))
        {
            let size = match pointee {
                Some(p) => self.size_of(p, span)?,
                None => 1,
            };
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
            BinOp::Shr if is_signed(&lc) => op::SAR,
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
            Obj::Raw(U64)
        } else if matches!(lc, Class::Ptr(_)) {
            lt
        } else if signed {
            Obj::Raw(S64)
        } else {
            Obj::Raw(U64)
        }))
    }
}
