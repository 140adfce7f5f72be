//! The debug-info side of the plan compiler: what a DWARF type is for code
//! generation, and which register carries a named parameter.

use std::{fmt, sync::Arc};

use crate::{
    dwarf::{DebugInfo, Encoding, FunctionInfo, Type, TypeId},
    probe::CType,
};

/// The type of a value or of an object in memory during compilation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Obj {
    /// A scalar or pointer chain written as a cast (`u32*`).
    Raw(CType),
    /// A type from debug info.
    Dw(TypeId),
    /// A pointer to another type (from `&x` or `(struct s **)`).
    Ptr(Box<Obj>),
}

/// What a type is, for code generation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Class {
    /// An integer of this width (bools and chars too).
    Int {
        /// Bytes.
        width: u8,
        /// Signed.
        signed: bool,
    },
    /// An enum of this width.
    Enum {
        /// Bytes.
        width: u8,
        /// Signed.
        signed: bool,
    },
    /// A pointer to this (`None`: `void *` or a function).
    Ptr(Option<Obj>),
    /// An array of elements, with its length when known.
    Array(Obj, Option<u64>),
    /// A struct or union of this size.
    Aggregate(u64),
    /// Something ri cannot fetch (floating point, void, functions): why.
    Other(&'static str),
}

/// A type in a binary's debug info, shared by the decoder and the printers.
#[derive(Clone)]
pub struct TypeRef {
    /// The debug info it belongs to.
    pub dbg: Arc<DebugInfo>,
    /// The type.
    pub ty: TypeId,
}

impl fmt::Debug for TypeRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TypeRef({})", self.dbg.type_name(self.ty))
    }
}

impl Eq for TypeRef {}

impl PartialEq for TypeRef {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.dbg, &other.dbg) && self.ty == other.ty
    }
}

/// Debug info of the probed binary and the function a probe is attached to.
pub struct TypeContext {
    /// The binary's types.
    pub dbg: Arc<DebugInfo>,
    /// The probed function, when the probe names exactly one.
    pub func: Option<String>,
}

impl TypeContext {
    /// The probed function's parameters and return type.
    pub fn function(&self) -> Option<&FunctionInfo> {
        self.func.as_deref().and_then(|f| self.dbg.function(f))
    }

    /// A shareable reference to a type.
    pub fn type_ref(&self, ty: TypeId) -> TypeRef {
        TypeRef {
            dbg: self.dbg.clone(),
            ty,
        }
    }

    /// Classifies a type from debug info.
    pub fn class(&self, o: &Obj) -> Class {
        let Obj::Dw(id) = o else {
            return Class::Other("is not a debug-info type");
        };
        match self.dbg.ty(self.dbg.strip(*id)) {
            Type::Base { size, encoding, .. } => match encoding {
                Encoding::Float => Class::Other("is floating point, which ri does not fetch"),
                Encoding::Signed | Encoding::SignedChar => Class::Int {
                    width: *size as u8,
                    signed: true,
                },
                _ => Class::Int {
                    width: *size as u8,
                    signed: false,
                },
            },
            Type::Enum { size, signed, .. } => Class::Enum {
                width: *size as u8,
                signed: *signed,
            },
            Type::Pointer { pointee } => Class::Ptr(match pointee {
                Some(p)
                    if !matches!(self.dbg.ty(self.dbg.strip(*p)), Type::Void | Type::Function) =>
                {
                    Some(Obj::Dw(*p))
                }
                _ => None,
            }),
            Type::Array { elem, count } => Class::Array(Obj::Dw(*elem), *count),
            Type::Struct { size, .. } => Class::Aggregate(*size),
            Type::Void => Class::Other("is void"),
            Type::Function => Class::Other("is a function"),
            Type::Typedef { .. } | Type::Qualified { .. } => Class::Other("has an unresolved type"),
        }
    }

    /// True for `char`-like one-byte types (so `char *` prints as a string).
    pub fn is_char(&self, o: &Obj) -> bool {
        let Obj::Dw(id) = o else { return false };
        matches!(
            self.dbg.ty(self.dbg.strip(*id)),
            Type::Base {
                size: 1,
                encoding: Encoding::SignedChar | Encoding::UnsignedChar,
                ..
            }
        )
    }

    /// Up to three type names close to `name`.
    pub fn close_types(&self, name: &str) -> Vec<String> {
        self.dbg.close_type_names(name)
    }

    /// Which System V integer argument register carries parameter `pos`:
    /// floating-point parameters use SSE registers, structs up to 16 bytes
    /// take one or two registers, larger ones go to the stack.
    pub fn param_register(&self, f: &FunctionInfo, pos: usize) -> Result<usize, String> {
        let mut next = 0usize;
        for (i, p) in f.params.iter().enumerate() {
            let (regs, why) = match self.class(&Obj::Dw(p.ty)) {
                Class::Other(w) if w.starts_with("is floating") => (
                    0,
                    Some("is passed in an SSE register, which ri does not read"),
                ),
                Class::Aggregate(size) | Class::Array(_, Some(size)) if size > 16 => (
                    0,
                    Some(
                        "is a struct passed by value on the stack; capture it with argN and offsets",
                    ),
                ),
                Class::Aggregate(size) => (
                    if size > 8 { 2 } else { 1 },
                    Some("is a struct passed by value in registers; capture its parts with argN"),
                ),
                _ => (1, None),
            };
            if i == pos {
                if let Some(why) = why {
                    return Err(why.to_string());
                }
                if next >= 6 {
                    return Err(
                        "is passed on the stack (after six register arguments); use argN".into(),
                    );
                }
                return Ok(next);
            }
            next += regs;
        }
        Err("is not a parameter".into())
    }
}
