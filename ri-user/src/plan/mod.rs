//! The eBPF plan format: compiling a probe's captures and filter into the
//! stack-machine program of `ri_common::Plan`, plus the field layout the
//! decoder needs to read the events back.
//!
//! Expressions are type-checked here once (C rules for widths, signedness
//! and pointer arithmetic; struct layouts from DWARF through [`types`]);
//! nothing is compiled per event. A typed path like
//! `fom->fo_fop->f_type->ft_rpc_item_type.rit_opcode` becomes a register
//! read and a chain of loads with the member offsets folded in.

mod types;

use ri_common::{Insn, MAX_INSNS, PAYLOAD_CAP, Plan, READ_MAX, STACK_DEPTH, op, regs};

pub use types::{Class, Obj, TypeContext, TypeRef};

use crate::probe::{
    BinOp, Builtin, CType, Expr, ExprKind, ParseError, ProbeKind, ProbeSpec, Span, TypeName, UnOp,
};

/// Default bound of `str()` when no length is given (as bpftrace).
pub const DEFAULT_STR_LEN: u64 = 64;

/// A compile error: what is wrong, and where in the probe string.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct PlanError(#[from] pub ParseError);

/// How to decode and print one captured field.
#[derive(Clone, Debug, PartialEq)]
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
    /// An enum value, printed by name.
    Enum(TypeRef),
    /// A whole object (struct, union, array) captured as bytes, printed
    /// with its field names.
    Object(TypeRef),
    /// A user stack: `tgid << 32 | id` in the kernel's `STACKS` map,
    /// printed as symbolized frames; at a function entry followed by the
    /// return address at the stack pointer (`caller`), which the kernel's
    /// frame-pointer walk misses when the function has not pushed its frame.
    Stack {
        /// A second word holds the caller's return address.
        caller: bool,
    },
}

impl FieldKind {
    /// An integer the kernel can key, add or compare on (enums included).
    pub fn is_integer(&self) -> bool {
        matches!(self, FieldKind::Int { .. } | FieldKind::Enum(_))
    }
}

/// One captured field of an event.
#[derive(Clone, Debug, PartialEq)]
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

/// True when a probe needs debug info: parameter names, members, named types.
pub fn needs_types(spec: &ProbeSpec) -> bool {
    fn walk(e: &Expr) -> bool {
        match &e.kind {
            ExprKind::Ident(_)
            | ExprKind::Member(..)
            | ExprKind::Index(..)
            | ExprKind::SizeofType(_)
            | ExprKind::CastNamed(..) => true,
            ExprKind::Unary(_, a)
            | ExprKind::Cast(_, a)
            | ExprKind::Deref(a)
            | ExprKind::AddrOf(a)
            | ExprKind::SizeofExpr(a)
            | ExprKind::Str(a, _)
            | ExprKind::Buf(a, _) => walk(a),
            ExprKind::Binary(_, a, b) => walk(a) || walk(b),
            _ => false,
        }
    }
    spec.captures.iter().any(|c| walk(&c.expr)) || spec.filter.as_ref().is_some_and(walk)
}

/// True when debug info would improve a probe without being required: a
/// return value prints by the function's return type.
pub fn wants_types(spec: &ProbeSpec) -> bool {
    fn retval(e: &Expr) -> bool {
        match &e.kind {
            ExprKind::Retval => true,
            ExprKind::Unary(_, a) | ExprKind::Str(a, _) | ExprKind::Buf(a, _) => retval(a),
            _ => false,
        }
    }
    needs_types(spec)
        || (spec.kind == ProbeKind::Uretprobe && spec.captures.iter().any(|c| retval(&c.expr)))
}

/// Compiles a parsed probe; `types` gives debug info and the probed
/// function when the probe uses typed names.
pub fn compile(spec: &ProbeSpec, types: Option<&TypeContext>) -> Result<CompiledPlan, PlanError> {
    let mut c = Compiler {
        spec,
        types,
        insns: Vec::new(),
        depth: 0,
    };
    if let Some(f) = &spec.filter {
        let ty = c.expr(f)?;
        c.rvalue(ty, f.span, "a filter")?;
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
        let (kind, bytes) = c.capture(ty, cap.expr.span)?;
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
    if c.insns.iter().any(|i| i.op == op::STACK) {
        plan.flags |= ri_common::plan_flags::STACK;
    }
    if c.insns
        .iter()
        .any(|i| i.op == op::REG && regs::ENTRY_ARGS.contains(&i.len))
    {
        plan.flags |= ri_common::plan_flags::ENTRY_ARGS;
    }
    Ok(CompiledPlan { plan, fields })
}

fn round8(n: u64) -> usize {
    (n as usize + 7) & !7
}

/// What a compiled expression left on the stack.
#[derive(Clone, Debug)]
enum Ty {
    /// A value of this type.
    Val(Obj),
    /// The address of an object of this type (an lvalue); a bitfield's bit
    /// offset and size when it is one.
    Place(Obj, Option<(u32, u32)>),
    /// A string already emitted, with its bound.
    Str(u64),
    /// Bytes already emitted.
    Buf(u64),
    /// The command name, already emitted.
    Comm,
    /// The user stack's id, on the stack.
    Stack,
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
    types: Option<&'a TypeContext>,
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
            op::REG
            | op::IMM
            | op::PID
            | op::TID
            | op::UID
            | op::NSECS
            | op::CPU
            | op::STACK
            | op::TAKE => 1,
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

    fn with(
        &mut self,
        code: u8,
        width: u8,
        signed: bool,
        len: u32,
        span: Span,
    ) -> Result<(), PlanError> {
        self.insn(
            Insn {
                op: code,
                width,
                signed: signed as u8,
                len,
                ..Default::default()
            },
            span,
        )
    }

    fn reg(&mut self, idx: u32, span: Span) -> Result<(), PlanError> {
        self.with(op::REG, 0, false, idx, span)
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

    /// Adds a constant to the top value, merging with a preceding constant
    /// addition.
    fn add_const(&mut self, k: u64, span: Span) -> Result<(), PlanError> {
        if k == 0 {
            return Ok(());
        }
        if let [.., a, b] = self.insns.as_mut_slice()
            && a.op == op::IMM
            && b.op == op::ADD
        {
            a.imm = a.imm.wrapping_add(k);
            return Ok(());
        }
        self.imm(k, span)?;
        self.emit(op::ADD, span)
    }

    /// Reads `width` bytes at the address on the stack. A preceding
    /// `IMM k; ADD` folds into the load's offset.
    fn load(&mut self, width: u8, signed: bool, span: Span) -> Result<(), PlanError> {
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
                width,
                signed: signed as u8,
                imm: offset,
                ..Default::default()
            },
            span,
        )
    }

    fn ctx(&self, span: Span, what: &str) -> Result<&TypeContext, PlanError> {
        self.types.ok_or_else(|| {
            self.err(
                span,
                format!("{what} needs debug info for the probed binary"),
            )
        })
    }

    fn class(&self, o: &Obj, span: Span) -> Result<Class, PlanError> {
        match o {
            Obj::Raw(c) if c.ptr > 0 => Ok(Class::Ptr(Some(Obj::Raw(CType {
                ptr: c.ptr - 1,
                ..*c
            })))),
            Obj::Raw(c) => Ok(Class::Int {
                width: c.width,
                signed: c.signed,
            }),
            Obj::Ptr(p) => Ok(Class::Ptr(Some((**p).clone()))),
            Obj::Dw(_) => Ok(self.ctx(span, "a typed value")?.class(o)),
        }
    }

    fn size_of(&self, o: &Obj, span: Span) -> Result<u64, PlanError> {
        match o {
            Obj::Raw(c) if c.ptr > 0 => Ok(8),
            Obj::Raw(c) => Ok(c.width as u64),
            Obj::Ptr(_) => Ok(8),
            Obj::Dw(id) => {
                let t = self.ctx(span, "sizeof")?;
                t.dbg.size_of(*id).ok_or_else(|| {
                    self.err(
                        span,
                        format!("the size of {} is unknown", t.dbg.type_name(*id)),
                    )
                })
            }
        }
    }

    fn name_of(&self, o: &Obj) -> String {
        match (o, self.types) {
            (Obj::Raw(c), _) => c.to_string(),
            (Obj::Ptr(p), _) => format!("{} *", self.name_of(p)),
            (Obj::Dw(id), Some(t)) => t.dbg.type_name(*id),
            (Obj::Dw(id), None) => format!("type #{id}"),
        }
    }

    /// Turns what an expression left into a value on the stack: loads from a
    /// place, extracts a bitfield, decays an array to its address.
    fn rvalue(&mut self, ty: Ty, span: Span, what: &str) -> Result<Obj, PlanError> {
        match ty {
            Ty::Val(o) => Ok(o),
            Ty::Place(o, bits) => {
                let class = self.class(&o, span)?;
                match class {
                    Class::Int { width, signed } | Class::Enum { width, signed } => {
                        match bits {
                            Some((off, size)) => self.bitfield(off, size, signed, span)?,
                            None => self.load(width, signed, span)?,
                        }
                        Ok(o)
                    }
                    Class::Ptr(_) => {
                        self.load(8, false, span)?;
                        Ok(o)
                    }
                    Class::Array(elem, _) => Ok(Obj::Ptr(Box::new(elem))),
                    Class::Aggregate(_) => Err(self.err(
                        span,
                        format!(
                            "{} is a struct or union: capture it whole (NAME=EXPR) or pick a member, not in {what}",
                            self.name_of(&o)
                        ),
                    )),
                    Class::Other(why) => Err(self.err(span, format!("{} {why}", self.name_of(&o)))),
                }
            }
            _ => Err(self.err(
                span,
                format!("str(), buf(), comm and stack can only be captured, not used in {what}"),
            )),
        }
    }

    /// Loads the bytes holding a bitfield and extracts it.
    fn bitfield(&mut self, off: u32, size: u32, signed: bool, span: Span) -> Result<(), PlanError> {
        let need = off + size;
        let width = match need {
            0..=8 => 1,
            9..=16 => 2,
            17..=32 => 4,
            _ => 8,
        };
        self.load(width, false, span)?;
        // Move the field to the top bits, then shift it down with or without
        // sign extension.
        self.imm((64 - need) as u64, span)?;
        self.emit(op::SHL, span)?;
        self.imm((64 - size) as u64, span)?;
        self.emit(if signed { op::SAR } else { op::SHR }, span)
    }

    fn int_value(&mut self, e: &Expr, what: &str) -> Result<Obj, PlanError> {
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
    fn capture(&mut self, ty: Ty, span: Span) -> Result<(FieldKind, usize), PlanError> {
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

    fn is_char(&self, o: &Obj, span: Span) -> Result<bool, PlanError> {
        Ok(match o {
            Obj::Dw(_) => self.ctx(span, "a typed value")?.is_char(o),
            _ => false,
        })
    }

    fn expr(&mut self, e: &Expr) -> Result<Ty, PlanError> {
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

    fn no_stack_args_at_return(&self, what: &str, span: Span) -> Result<(), PlanError> {
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
    fn arg_reg(&mut self, n: usize, span: Span) -> Result<(), PlanError> {
        if self.spec.kind == ProbeKind::Uretprobe {
            self.reg(regs::ENTRY_ARGS[n], span)
        } else {
            self.reg(regs::ARGS[n], span)
        }
    }

    fn param_type(&self, name: &str) -> Option<Obj> {
        let f = self.types?.function()?;
        f.params
            .iter()
            .find(|p| p.name == name)
            .map(|p| Obj::Dw(p.ty))
    }

    /// A parameter by its DWARF name, read from its System V register.
    fn param(&mut self, name: &str, span: Span) -> Result<Ty, PlanError> {
        let Some(t) = self.types else {
            return Err(self.err(
                span,
                format!("unknown identifier '{name}' (use argN, retval, a register, pid, tid, uid, nsecs, cpu or comm)"),
            ));
        };
        let Some(f) = t.function() else {
            return Err(self.err(
                span,
                format!("unknown identifier '{name}': the probed function has no debug info"),
            ));
        };
        let Some(pos) = f.params.iter().position(|p| p.name == name) else {
            let names: Vec<&str> = f.params.iter().map(|p| p.name.as_str()).collect();
            return Err(self.err(
                span,
                format!(
                    "unknown identifier '{name}' ({} has parameters: {})",
                    f.name,
                    names.join(", ")
                ),
            ));
        };
        let reg = t
            .param_register(f, pos)
            .map_err(|why| self.err(span, format!("parameter '{name}' {why}")))?;
        let o = Obj::Dw(f.params[pos].ty);
        self.arg_reg(reg, span)?;
        self.narrow(&o, span)?;
        Ok(Ty::Val(o))
    }

    /// A register holds a narrow integer in its low bytes only: truncate and
    /// extend it to its type's width.
    fn narrow(&mut self, o: &Obj, span: Span) -> Result<(), PlanError> {
        if let Class::Int { width, signed } | Class::Enum { width, signed } = self.class(o, span)?
            && width < 8
        {
            self.with(op::EXT, width, signed, 0, span)?;
        }
        Ok(())
    }

    fn named_type(&self, tn: &TypeName) -> Result<Obj, PlanError> {
        let base = match crate::probe::scalar_type(&tn.name) {
            Some((width, signed)) => Obj::Raw(CType {
                width,
                signed,
                ptr: 0,
            }),
            None => {
                let t = self.ctx(tn.span, &format!("the type '{}'", tn.name))?;
                match t.dbg.type_by_name(&tn.name) {
                    Some(id) => Obj::Dw(id),
                    None => {
                        let close = t.close_types(&tn.name);
                        let hint = if close.is_empty() {
                            String::new()
                        } else {
                            format!(" (did you mean {}?)", close.join(", "))
                        };
                        return Err(self.err(
                            tn.span,
                            format!(
                                "unknown type '{}' in {}{hint}",
                                tn.name,
                                t.dbg.path().display()
                            ),
                        ));
                    }
                }
            }
        };
        Ok((0..tn.ptr).fold(base, |o, _| Obj::Ptr(Box::new(o))))
    }

    fn member(
        &mut self,
        inner: &Expr,
        name: &str,
        arrow: bool,
        span: Span,
    ) -> Result<Ty, PlanError> {
        let t = self.expr(inner)?;
        let obj = if arrow {
            let o = self.rvalue(t, inner.span, "'->'")?;
            match self.class(&o, inner.span)? {
                Class::Ptr(Some(p)) => p,
                _ => {
                    return Err(self.err(
                        inner.span,
                        format!(
                            "'->' needs a pointer to a struct, but this is {}{}",
                            self.name_of(&o),
                            if matches!(self.class(&o, inner.span)?, Class::Aggregate(_)) {
                                "; use '.'"
                            } else {
                                ""
                            }
                        ),
                    ));
                }
            }
        } else {
            match t {
                Ty::Place(o, None) => o,
                Ty::Val(o) => {
                    let hint = if matches!(self.class(&o, inner.span)?, Class::Ptr(_)) {
                        "; use '->'"
                    } else {
                        ""
                    };
                    return Err(self.err(
                        inner.span,
                        format!("'.' needs a struct, but this is {}{hint}", self.name_of(&o)),
                    ));
                }
                _ => return Err(self.err(inner.span, "'.' needs a struct".into())),
            }
        };
        let Obj::Dw(id) = obj else {
            return Err(self.err(inner.span, format!("{} has no members", self.name_of(&obj))));
        };
        let t = self.ctx(span, "member access")?;
        let m = t.dbg.member(id, name).map_err(|e| {
            self.err(
                Span::new(span.end.saturating_sub(name.len()), span.end),
                e.to_string(),
            )
        })?;
        self.add_const(m.offset, span)?;
        let bits = match (m.bit_offset, m.bit_size) {
            (Some(o), Some(s)) => Some((o, s)),
            (None, Some(s)) => Some((0, s)),
            _ => None,
        };
        Ok(Ty::Place(Obj::Dw(m.ty), bits))
    }

    fn bound(&self, n: u64, span: Span) -> Result<(), PlanError> {
        if n == 0 || n > READ_MAX as u64 {
            return Err(self.err(span, format!("length must be between 1 and {READ_MAX}")));
        }
        Ok(())
    }

    fn binary(&mut self, b: BinOp, l: &Expr, r: &Expr, span: Span) -> Result<Ty, PlanError> {
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

#[cfg(test)]
mod tests {
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
}
