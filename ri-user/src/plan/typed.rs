//! C types of captured values: classes, sizes and names from DWARF,
//! parameters by name, members after `->` and `.`.

use ri_common::{READ_MAX, op};

use super::{Class, Compiler, Obj, PlanError, Ty, TypeContext};
use crate::probe::{CType, Expr, Span, TypeName};

impl Compiler<'_> {
    pub(super) fn ctx(&self, span: Span, what: &str) -> Result<&TypeContext, PlanError> {
        self.types.ok_or_else(|| {
            self.err(
                span,
                format!("{what} needs debug info for the probed binary"),
            )
        })
    }

    pub(super) fn class(&self, o: &Obj, span: Span) -> Result<Class, PlanError> {
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

    pub(super) fn size_of(&self, o: &Obj, span: Span) -> Result<u64, PlanError> {
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

    pub(super) fn name_of(&self, o: &Obj) -> String {
        match (o, self.types) {
            (Obj::Raw(c), _) => c.to_string(),
            (Obj::Ptr(p), _) => format!("{} *", self.name_of(p)),
            (Obj::Dw(id), Some(t)) => t.dbg.type_name(*id),
            (Obj::Dw(id), None) => format!("type #{id}"),
        }
    }

    /// Turns what an expression left into a value on the stack: loads from a
    /// place, extracts a bitfield, decays an array to its address.
    pub(super) fn rvalue(&mut self, ty: Ty, span: Span, what: &str) -> Result<Obj, PlanError> {
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

    pub(super) fn is_char(&self, o: &Obj, span: Span) -> Result<bool, PlanError> {
        Ok(match o {
            Obj::Dw(_) => self.ctx(span, "a typed value")?.is_char(o),
            _ => false,
        })
    }

    pub(super) fn param_type(&self, name: &str) -> Option<Obj> {
        let f = self.types?.function()?;
        f.params
            .iter()
            .find(|p| p.name == name)
            .map(|p| Obj::Dw(p.ty))
    }

    /// A parameter by its DWARF name, read from its System V register.
    pub(super) fn param(&mut self, name: &str, span: Span) -> Result<Ty, PlanError> {
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
    pub(super) fn narrow(&mut self, o: &Obj, span: Span) -> Result<(), PlanError> {
        if let Class::Int { width, signed } | Class::Enum { width, signed } = self.class(o, span)?
            && width < 8
        {
            self.with(op::EXT, width, signed, 0, span)?;
        }
        Ok(())
    }

    pub(super) fn named_type(&self, tn: &TypeName) -> Result<Obj, PlanError> {
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

    pub(super) fn member(
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

    pub(super) fn bound(&self, n: u64, span: Span) -> Result<(), PlanError> {
        if n == 0 || n > READ_MAX as u64 {
            return Err(self.err(span, format!("length must be between 1 and {READ_MAX}")));
        }
        Ok(())
    }
}
