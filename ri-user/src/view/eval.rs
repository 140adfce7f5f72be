//! Evaluates the probe expression language over a process's memory: globals
//! of any image, members, indexes, casts, address-of, arithmetic, `str()`,
//! and the walkers, which make a sequence that later steps map over.

use std::collections::HashMap;

use super::{ViewError, space::Space, walk};
use crate::{
    dwarf::{DebugInfo, Encoding, Type, TypeId, value},
    probe::{BinOp, Builtin, Expr, ExprKind, TypeName, UnOp},
};

/// A type: a DWARF type of one image with `ptr` extra pointer levels, or a
/// plain integer (literals, arithmetic, `(u32*)` casts).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ty {
    /// `size` bytes, signed or not, behind `ptr` pointers.
    Int {
        /// Bytes.
        size: u8,
        /// Signed.
        signed: bool,
        /// Pointer levels.
        ptr: u8,
    },
    /// A DWARF type.
    D {
        /// Image index.
        img: usize,
        /// The type.
        id: TypeId,
        /// Pointer levels added on top.
        ptr: u8,
    },
}

const S64: Ty = Ty::Int {
    size: 8,
    signed: true,
    ptr: 0,
};

/// A value: an object in memory, a number, or text.
#[derive(Clone, Debug, PartialEq)]
pub enum Val {
    /// An object at an address (bitfields: bit offset and width).
    Loc {
        /// Its type.
        ty: Ty,
        /// Its address.
        addr: u64,
        /// Bitfield position.
        bits: Option<(u32, u32)>,
    },
    /// A computed value.
    Num {
        /// Its type.
        ty: Ty,
        /// The bits.
        v: u64,
    },
    /// A string (`str()`, a walk's label).
    Text(String),
    /// A structured result (a b-tree node).
    Json(serde_json::Value),
}

/// Where a walk ended early, shown in its place.
#[derive(Clone, Debug, PartialEq)]
pub struct Marker {
    /// The walker (`list`, `array`, ...).
    pub walk: String,
    /// Elements seen before it.
    pub index: usize,
    /// The address involved.
    pub addr: u64,
    /// What happened.
    pub reason: String,
    /// Whether it is a sign of a concurrent change (retry may help).
    pub torn: bool,
}

/// One element of a sequence.
#[derive(Clone, Debug, PartialEq)]
pub enum Item {
    /// A value.
    Val(Val),
    /// The end of a walk that did not end normally.
    Mark(Marker),
}

/// What an expression gives: one value, or the sequence of a walk.
#[derive(Clone, Debug, PartialEq)]
pub enum Out {
    /// One value.
    One(Val),
    /// Elements and markers.
    Many(Vec<Item>),
}

/// An evaluator over one space, with the walks' bound and named values.
pub struct Eval<'a> {
    /// The process.
    pub space: &'a Space,
    /// Most elements per walk.
    pub max: usize,
    /// Names bound by a view's walk (`fom`, `loc`) and labels (`$fom`).
    pub vars: HashMap<String, Val>,
}

impl<'a> Eval<'a> {
    /// An evaluator with no names bound.
    pub fn new(space: &'a Space, max: usize) -> Self {
        Eval {
            space,
            max,
            vars: HashMap::new(),
        }
    }

    /// The debug info of image `img`.
    pub fn info(&self, img: usize) -> &DebugInfo {
        &self.space.images[img].info
    }

    /// Evaluates `e`.
    pub fn eval(&self, e: &Expr) -> Result<Out, ViewError> {
        match &e.kind {
            ExprKind::Walk(name, args) => walk::run(self, name, args),
            ExprKind::Member(inner, m, arrow) => {
                self.map(inner, |v| self.member(v, m, *arrow).map(Out::One))
            }
            ExprKind::Index(base, idx) => {
                let i = self.scalar(idx)?;
                self.map(base, |v| self.index(v, i).map(Out::One))
            }
            ExprKind::Deref(inner) => self.map(inner, |v| self.deref(&v).map(Out::One)),
            ExprKind::AddrOf(inner) => self.map(inner, |v| self.addr_of(v).map(Out::One)),
            ExprKind::CastNamed(tn, inner) => {
                self.map(inner, |v| self.cast_named(tn, v).map(Out::One))
            }
            ExprKind::Cast(ct, inner) => self.map(inner, |v| {
                let to = Ty::Int {
                    size: ct.width,
                    signed: ct.signed,
                    ptr: ct.ptr,
                };
                Ok(Out::One(Val::Num {
                    ty: to,
                    v: truncate(self.load(&v)?, to),
                }))
            }),
            ExprKind::Str(inner, len) => self.map(inner, |v| {
                let a = self.load(&v)?;
                Ok(Out::One(Val::Text(
                    self.space.string(a, len.unwrap_or(64) as usize)?,
                )))
            }),
            _ => Ok(Out::One(self.one(e)?)),
        }
    }

    /// Evaluates `e`, which must give one value.
    pub fn one(&self, e: &Expr) -> Result<Val, ViewError> {
        Ok(match &e.kind {
            ExprKind::Int(v) => Val::Num { ty: S64, v: *v },
            ExprKind::Ident(name) => match self.vars.get(name) {
                Some(v) => v.clone(),
                None => {
                    let (addr, img, id) = self.space.variable(name)?;
                    Val::Loc {
                        ty: Ty::D { img, id, ptr: 0 },
                        addr,
                        bits: None,
                    }
                }
            },
            ExprKind::Builtin(Builtin::Nsecs) => Val::Num {
                ty: S64,
                v: self.space.now_ns.ok_or_else(|| {
                    ViewError::Expr(format!("nsecs (now) is unknown in {}", self.space.what))
                })?,
            },
            ExprKind::SizeofType(tn) => {
                let ty = self.type_of(tn, None)?;
                Val::Num {
                    ty: S64,
                    v: self.size(ty)?,
                }
            }
            ExprKind::SizeofExpr(inner) => {
                let v = self.one(inner)?;
                Val::Num {
                    ty: S64,
                    v: self.size(ty_of(&v))?,
                }
            }
            ExprKind::Unary(op, inner) => {
                let x = self.scalar(inner)?;
                let v = match op {
                    UnOp::Neg => x.wrapping_neg(),
                    UnOp::Not => (x == 0) as u64,
                    UnOp::BitNot => !x,
                };
                Val::Num { ty: S64, v }
            }
            ExprKind::Binary(op, l, r) => self.binary(*op, l, r)?,
            _ => match self.eval(e)? {
                Out::One(v) => v,
                Out::Many(_) => {
                    return Err(ViewError::Expr(
                        "a walk gives many values where one is needed".into(),
                    ));
                }
            },
        })
    }

    /// Evaluates `e` to a number.
    pub fn scalar(&self, e: &Expr) -> Result<u64, ViewError> {
        let v = self.one(e)?;
        self.load(&v)
    }

    /// Applies `f` to the value of `e`, or to each element of its walk.
    fn map(&self, e: &Expr, f: impl Fn(Val) -> Result<Out, ViewError>) -> Result<Out, ViewError> {
        match self.eval(e)? {
            Out::One(v) => f(v),
            Out::Many(items) => {
                let mut out = Vec::new();
                for it in items {
                    match it {
                        Item::Val(v) => match f(v) {
                            Ok(Out::One(v)) => out.push(Item::Val(v)),
                            Ok(Out::Many(more)) => out.extend(more),
                            Err(ViewError::Unreadable(a)) => out.push(Item::Mark(Marker {
                                walk: "read".into(),
                                index: out.len(),
                                addr: a,
                                reason: format!("unreadable {a:#x}"),
                                torn: false,
                            })),
                            Err(e) => return Err(e),
                        },
                        m @ Item::Mark(_) => out.push(m),
                    }
                }
                Ok(Out::Many(out))
            }
        }
    }

    fn binary(&self, op: BinOp, l: &Expr, r: &Expr) -> Result<Val, ViewError> {
        let lv = self.one(l)?;
        let a = self.load(&lv)?;
        let b = self.scalar(r)?;
        // Pointer arithmetic scales by the pointee's size.
        let scale = match (op, self.pointee(ty_of(&lv))) {
            (BinOp::Add | BinOp::Sub, Ok(Some(p))) => self.size(p).unwrap_or(1),
            _ => 1,
        };
        let signed = matches!(ty_of(&lv), Ty::Int { signed: true, .. });
        let v = match op {
            BinOp::Add => a.wrapping_add(b.wrapping_mul(scale)),
            BinOp::Sub => a.wrapping_sub(b.wrapping_mul(scale)),
            BinOp::Mul => a.wrapping_mul(b),
            BinOp::Div | BinOp::Mod if b == 0 => {
                return Err(ViewError::Expr("division by zero".into()));
            }
            BinOp::Div => a / b,
            BinOp::Mod => a % b,
            BinOp::And => a & b,
            BinOp::Or => a | b,
            BinOp::Xor => a ^ b,
            BinOp::Shl => a.wrapping_shl(b as u32),
            BinOp::Shr => a.wrapping_shr(b as u32),
            BinOp::Eq => (a == b) as u64,
            BinOp::Ne => (a != b) as u64,
            BinOp::Lt if signed => ((a as i64) < (b as i64)) as u64,
            BinOp::Le if signed => ((a as i64) <= (b as i64)) as u64,
            BinOp::Gt if signed => ((a as i64) > (b as i64)) as u64,
            BinOp::Ge if signed => ((a as i64) >= (b as i64)) as u64,
            BinOp::Lt => (a < b) as u64,
            BinOp::Le => (a <= b) as u64,
            BinOp::Gt => (a > b) as u64,
            BinOp::Ge => (a >= b) as u64,
            BinOp::LAnd => (a != 0 && b != 0) as u64,
            BinOp::LOr => (a != 0 || b != 0) as u64,
        };
        let ty = if scale > 1 || matches!(ty_of(&lv), Ty::D { ptr: 1.., .. }) {
            ty_of(&lv)
        } else {
            S64
        };
        Ok(Val::Num { ty, v })
    }

    /// The type `tn` names, looked up first in image `prefer`.
    pub fn type_of(&self, tn: &TypeName, prefer: Option<usize>) -> Result<Ty, ViewError> {
        if let Some((size, signed)) = crate::probe::scalar_type(&tn.name) {
            return Ok(Ty::Int {
                size,
                signed,
                ptr: tn.ptr,
            });
        }
        let (img, id) = self.space.type_named(&tn.name, prefer)?;
        Ok(Ty::D {
            img,
            id,
            ptr: tn.ptr,
        })
    }

    fn cast_named(&self, tn: &TypeName, v: Val) -> Result<Val, ViewError> {
        let prefer = match ty_of(&v) {
            Ty::D { img, .. } => Some(img),
            Ty::Int { .. } => None,
        };
        let to = self.type_of(tn, prefer)?;
        let aggregate = matches!(to, Ty::D { img, id, ptr: 0 }
            if matches!(self.info(img).ty(self.info(img).strip(id)), Type::Struct { .. } | Type::Array { .. }));
        match (&v, aggregate) {
            // Reinterpreting an object in place.
            (Val::Loc { addr, .. }, true) => Ok(Val::Loc {
                ty: to,
                addr: *addr,
                bits: None,
            }),
            (_, true) => Err(ViewError::Expr(format!(
                "cannot cast a value to {} (cast a pointer to '{} *')",
                tn.name, tn.name
            ))),
            _ => Ok(Val::Num {
                ty: to,
                v: self.load(&v)?,
            }),
        }
    }

    /// Size in bytes of a type.
    pub fn size(&self, ty: Ty) -> Result<u64, ViewError> {
        match ty {
            Ty::Int { ptr: 1.., .. } | Ty::D { ptr: 1.., .. } => Ok(8),
            Ty::Int { size, .. } => Ok(size as u64),
            Ty::D { img, id, .. } => self.info(img).size_of(id).ok_or_else(|| {
                ViewError::Expr(format!("{} has no size", self.info(img).type_name(id)))
            }),
        }
    }

    /// What a pointer (or array) type points at; `None` for a non-pointer.
    pub fn pointee(&self, ty: Ty) -> Result<Option<Ty>, ViewError> {
        Ok(match ty {
            Ty::Int {
                ptr: 1..,
                size,
                signed,
            } => Some(Ty::Int {
                size,
                signed,
                ptr: 0,
            }),
            Ty::D {
                img,
                id,
                ptr: p @ 1..,
            } => Some(Ty::D {
                img,
                id,
                ptr: p - 1,
            }),
            Ty::D { img, id, ptr: 0 } => {
                let info = self.info(img);
                match info.ty(info.strip(id)) {
                    Type::Pointer { pointee: Some(p) } => Some(Ty::D {
                        img,
                        id: *p,
                        ptr: 0,
                    }),
                    Type::Pointer { pointee: None } => {
                        return Err(ViewError::Expr("cannot follow a void pointer".into()));
                    }
                    _ => None,
                }
            }
            Ty::Int { .. } => None,
        })
    }

    /// The number a value holds (integers sign-extended, pointers, enums).
    pub fn load(&self, v: &Val) -> Result<u64, ViewError> {
        match v {
            Val::Num { v, .. } => Ok(*v),
            Val::Text(_) | Val::Json(_) => Err(ViewError::Expr("a string is not a number".into())),
            Val::Loc { ty, addr, bits } => {
                let (size, signed) = self.scalar_shape(*ty)?;
                if let Some((off, width)) = *bits {
                    let raw = self.space.word(*addr, (off + width).div_ceil(8) as usize)?;
                    let x = (raw >> off) & ((1u64 << width) - 1);
                    return Ok(if signed && width < 64 && x >> (width - 1) & 1 == 1 {
                        x | !((1u64 << width) - 1)
                    } else {
                        x
                    });
                }
                let raw = self.space.word(*addr, size as usize)?;
                Ok(if signed && size < 8 {
                    let sh = 64 - size * 8;
                    (((raw << sh) as i64) >> sh) as u64
                } else {
                    raw
                })
            }
        }
    }

    /// (bytes, signed) of a scalar type; arrays decay to their address by
    /// the callers, so an aggregate here is an error.
    fn scalar_shape(&self, ty: Ty) -> Result<(u32, bool), ViewError> {
        match ty {
            Ty::Int { ptr: 1.., .. } | Ty::D { ptr: 1.., .. } => Ok((8, false)),
            Ty::Int { size, signed, .. } => Ok((size as u32, signed)),
            Ty::D { img, id, .. } => {
                let info = self.info(img);
                match info.ty(info.strip(id)) {
                    Type::Base { size, encoding, .. } => Ok((
                        *size as u32,
                        matches!(encoding, Encoding::Signed | Encoding::SignedChar),
                    )),
                    Type::Enum { size, signed, .. } => Ok((*size as u32, *signed)),
                    Type::Pointer { .. } => Ok((8, false)),
                    _ => Err(ViewError::Expr(format!(
                        "{} is not a number or pointer",
                        info.type_name(id)
                    ))),
                }
            }
        }
    }

    /// A pointer's value and pointee; arrays decay to their first element.
    fn pointer(&self, v: &Val) -> Result<(u64, Ty), ViewError> {
        if let Val::Loc {
            ty: Ty::D { img, id, ptr: 0 },
            addr,
            ..
        } = v
        {
            let info = self.info(*img);
            if let Type::Array { elem, .. } = info.ty(info.strip(*id)) {
                return Ok((
                    *addr,
                    Ty::D {
                        img: *img,
                        id: *elem,
                        ptr: 0,
                    },
                ));
            }
        }
        let Some(to) = self.pointee(ty_of(v))? else {
            return Err(ViewError::Expr(format!(
                "{} is not a pointer",
                self.type_name(ty_of(v))
            )));
        };
        Ok((self.load(v)?, to))
    }

    /// `*v`.
    pub fn deref(&self, v: &Val) -> Result<Val, ViewError> {
        let (addr, ty) = self.pointer(v)?;
        Ok(Val::Loc {
            ty,
            addr,
            bits: None,
        })
    }

    /// `&v`.
    fn addr_of(&self, v: Val) -> Result<Val, ViewError> {
        match v {
            Val::Loc { bits: Some(_), .. } => Err(ViewError::Expr(
                "cannot take the address of a bitfield".into(),
            )),
            Val::Loc { ty, addr, .. } => Ok(Val::Num {
                ty: add_ptr(ty),
                v: addr,
            }),
            _ => Err(ViewError::Expr(
                "& needs an object in memory, not a computed value".into(),
            )),
        }
    }

    /// `v.m` or `v->m`.
    pub fn member(&self, v: Val, m: &str, arrow: bool) -> Result<Val, ViewError> {
        let v = if arrow { self.deref(&v)? } else { v };
        let Val::Loc {
            ty: Ty::D { img, id, ptr: 0 },
            addr,
            ..
        } = v
        else {
            return Err(ViewError::Expr(format!(
                "{} has no member '{m}'{}",
                self.type_name(ty_of(&v)),
                if arrow { "" } else { " (a pointer: use ->)" }
            )));
        };
        let r = self.info(img).member(id, m)?;
        Ok(Val::Loc {
            ty: Ty::D {
                img,
                id: r.ty,
                ptr: 0,
            },
            addr: addr.wrapping_add(r.offset),
            bits: r.bit_size.map(|b| (r.bit_offset.unwrap_or(0), b)),
        })
    }

    /// `v[i]`.
    fn index(&self, v: Val, i: u64) -> Result<Val, ViewError> {
        let (base, elem) = self.pointer(&v)?;
        let size = self.size(elem)?;
        Ok(Val::Loc {
            ty: elem,
            addr: base.wrapping_add(i.wrapping_mul(size)),
            bits: None,
        })
    }

    /// C spelling of a type.
    pub fn type_name(&self, ty: Ty) -> String {
        match ty {
            Ty::Int { size, signed, ptr } => format!(
                "{}{}{}",
                if signed { 's' } else { 'u' },
                size * 8,
                "*".repeat(ptr as usize)
            ),
            Ty::D { img, id, ptr } => {
                let base = self.info(img).type_name(id);
                match ptr {
                    0 => base,
                    n => format!("{base} {}", "*".repeat(n as usize)),
                }
            }
        }
    }

    /// The value as ri prints typed values (structs, enums by name, the
    /// string of a `char *`), following pointers `depth` hops.
    pub fn render(&self, v: &Val, depth: u32) -> value::Value {
        let opts = value::Options {
            depth,
            ..value::Options::default()
        };
        let mem = &*self.space.mem;
        match v {
            Val::Text(s) => value::Value::Str {
                bytes: s.as_bytes().to_vec(),
                truncated: false,
            },
            Val::Json(j) => {
                value::Value::Opaque(serde_json::to_string_pretty(j).unwrap_or_default())
            }
            Val::Loc {
                ty: Ty::D { img, id, ptr: 0 },
                addr,
                bits: None,
            } => value::read(self.info(*img), *id, *addr, mem, &opts),
            Val::Loc {
                ty: Ty::D { img, id, ptr: 0 },
                addr,
                bits: Some((off, width)),
            } => match self.space.bytes(*addr, (off + width).div_ceil(8) as usize) {
                Ok(b) => value::decode_bitfield(self.info(*img), *id, &b, *off, *width),
                Err(_) => value::Value::Unreadable(*addr),
            },
            Val::Num {
                ty: Ty::D { img, id, ptr: 0 },
                v,
            } => value::decode(self.info(*img), *id, &v.to_le_bytes(), None, mem, &opts),
            _ => match self.load(v) {
                Ok(x) => match ty_of(v) {
                    Ty::Int {
                        signed: true,
                        ptr: 0,
                        ..
                    } => value::Value::Int(x as i64),
                    Ty::Int { ptr: 0, .. } => value::Value::Uint(x),
                    _ => value::Value::Pointer { addr: x, to: None },
                },
                Err(ViewError::Unreadable(a)) => value::Value::Unreadable(a),
                Err(e) => value::Value::Opaque(e.to_string()),
            },
        }
    }
}

/// The type of a value (`u64` for text, which has none).
pub fn ty_of(v: &Val) -> Ty {
    match v {
        Val::Loc { ty, .. } | Val::Num { ty, .. } => *ty,
        Val::Text(_) | Val::Json(_) => Ty::Int {
            size: 8,
            signed: false,
            ptr: 0,
        },
    }
}

/// A pointer to `ty`.
pub fn add_ptr(ty: Ty) -> Ty {
    match ty {
        Ty::Int { size, signed, ptr } => Ty::Int {
            size,
            signed,
            ptr: ptr + 1,
        },
        Ty::D { img, id, ptr } => Ty::D {
            img,
            id,
            ptr: ptr + 1,
        },
    }
}

fn truncate(v: u64, ty: Ty) -> u64 {
    match ty {
        Ty::Int {
            size: s @ 1..8,
            ptr: 0,
            signed,
        } => {
            let sh = 64 - s as u32 * 8;
            if signed {
                (((v << sh) as i64) >> sh) as u64
            } else {
                (v << sh) >> sh
            }
        }
        _ => v,
    }
}
