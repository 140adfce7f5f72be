//! The eBPF plan format: compiling a probe's captures and filter into the
//! stack-machine program of `ri_common::Plan`, plus the field layout the
//! decoder needs to read the events back.
//!
//! Expressions are type-checked here once (C rules for widths, signedness
//! and pointer arithmetic; struct layouts from DWARF through [`types`]);
//! nothing is compiled per event. A typed path like
//! `fom->fo_fop->f_type->ft_rpc_item_type.rit_opcode` becomes a register
//! read and a chain of loads with the member offsets folded in.

mod emit;
mod expr;
mod fuse;
mod typed;
mod types;

use ri_common::{Insn, PAYLOAD_CAP, Plan, op, regs};

pub use fuse::fuse_constants;
pub use types::{Class, Obj, TypeContext, TypeRef};

use crate::probe::{CType, Expr, ExprKind, ParseError, ProbeKind, ProbeSpec};

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

/// Compiles one probe's expressions: the instructions so far and the
/// value-stack depth they leave (methods in `emit`, `typed` and `expr`).
struct Compiler<'a> {
    spec: &'a ProbeSpec,
    types: Option<&'a TypeContext>,
    insns: Vec<Insn>,
    depth: usize,
}

#[cfg(test)]
mod tests;
