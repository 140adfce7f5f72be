//! USDT argument specs (`-4@-20(%rbp)`) as probe expressions: `argN` of a
//! USDT probe is replaced by the expression that reads its N-th argument,
//! so the plan compiler emits REG/IMM/ADD/MUL/LOAD/EXT for it.

use ri_common::regs;

use crate::probe::{BinOp, CType, Expr, ExprKind, ParseError, ProbeSpec, Span};

/// Where an argument lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Loc {
    /// A register (pt_regs index), read at `width` bytes; `high` for
    /// `%ah`..`%dh`.
    Reg {
        /// Register index.
        reg: u32,
        /// Bytes of the (sub-)register.
        width: u8,
        /// Bits 8..15 of the register.
        high: bool,
    },
    /// A constant.
    Imm(i64),
    /// Memory at `base + index * scale + disp`.
    Mem {
        /// Base register.
        base: Option<u32>,
        /// Index register and scale.
        index: Option<(u32, u8)>,
        /// Displacement.
        disp: i64,
    },
}

/// One parsed argument: its size, signedness and location.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Arg {
    /// Bytes (1, 2, 4, 8).
    pub size: u8,
    /// A negative size prefix: signed.
    pub signed: bool,
    /// Where it is.
    pub loc: Loc,
}

/// Register by AT&T name: (pt_regs index, width, high byte).
fn register(name: &str) -> Option<(u32, u8, bool)> {
    let r = |n: &str| regs::index(n);
    let legacy = [
        ("ax", "rax"),
        ("bx", "rbx"),
        ("cx", "rcx"),
        ("dx", "rdx"),
        ("si", "rsi"),
        ("di", "rdi"),
        ("bp", "rbp"),
        ("sp", "rsp"),
    ];
    if let Some(rest) = name.strip_prefix('r')
        && rest.chars().next().is_some_and(|c| c.is_ascii_digit())
    {
        // r8..r15 with d/w/b suffixes.
        let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
        let suffix = &rest[digits.len()..];
        let width = match suffix {
            "" => 8,
            "d" => 4,
            "w" => 2,
            "b" | "l" => 1,
            _ => return None,
        };
        return Some((r(&format!("r{digits}"))?, width, false));
    }
    if name == "rip" {
        return Some((regs::RIP, 8, false));
    }
    for (short, full) in legacy {
        let reg = r(full)?;
        if name == format!("r{short}") {
            return Some((reg, 8, false));
        }
        if name == format!("e{short}") {
            return Some((reg, 4, false));
        }
        if name == short {
            return Some((reg, 2, false));
        }
    }
    let byte = [
        ("al", "rax", false),
        ("bl", "rbx", false),
        ("cl", "rcx", false),
        ("dl", "rdx", false),
        ("ah", "rax", true),
        ("bh", "rbx", true),
        ("ch", "rcx", true),
        ("dh", "rdx", true),
        ("sil", "rsi", false),
        ("dil", "rdi", false),
        ("bpl", "rbp", false),
        ("spl", "rsp", false),
    ];
    byte.iter()
        .find(|(n, _, _)| *n == name)
        .and_then(|(_, full, high)| Some((r(full)?, 1, *high)))
}

fn int(s: &str) -> Option<i64> {
    let (neg, s) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    let v = match s.strip_prefix("0x").or(s.strip_prefix("0X")) {
        Some(h) => u64::from_str_radix(h, 16).ok()? as i64,
        None => s.parse::<u64>().ok()? as i64,
    };
    Some(if neg { v.wrapping_neg() } else { v })
}

/// The address `sym±N...` names: exactly one symbol, any constants.
fn rip_target(text: &str, symbol: &mut dyn FnMut(&str) -> Option<u64>) -> Option<u64> {
    let mut total = 0u64;
    let mut syms = 0;
    let mut rest = text;
    let mut neg = false;
    while !rest.is_empty() {
        let end = rest
            .char_indices()
            .skip(1)
            .find(|(_, c)| *c == '+' || *c == '-')
            .map_or(rest.len(), |(i, _)| i);
        let (term, tail) = rest.split_at(end);
        let (sign, body) = match term.as_bytes()[0] {
            b'+' => (false, &term[1..]),
            b'-' => (true, &term[1..]),
            _ => (neg, term),
        };
        neg = false;
        let v = match int(body) {
            Some(v) => v as u64,
            None if !sign && !body.is_empty() => {
                syms += 1;
                symbol(body)?
            }
            None => return None,
        };
        total = if sign {
            total.wrapping_sub(v)
        } else {
            total.wrapping_add(v)
        };
        rest = tail;
    }
    (syms == 1).then_some(total)
}

fn reg_operand(s: &str) -> Option<u32> {
    let (reg, width, high) = register(s.trim().strip_prefix('%')?)?;
    (width == 8 && !high).then_some(reg)
}

/// Parses one spec; `pc` is the probe address and `symbol` finds a
/// symbol's address for `sym(%rip)`. `Err` carries the spec.
pub fn parse_arg(
    spec: &str,
    pc: u64,
    symbol: &mut dyn FnMut(&str) -> Option<u64>,
) -> Result<Arg, String> {
    let bad = || spec.to_string();
    let (size, rest) = match spec.split_once('@') {
        Some((n, r)) => {
            let n: i32 = n.parse().map_err(|_| bad())?;
            (n, r)
        }
        // Old-style specs without a size: a 64-bit value.
        None => (8, spec),
    };
    let signed = size < 0;
    let size = size.unsigned_abs() as u8;
    if ![1, 2, 4, 8].contains(&size) {
        return Err(bad());
    }
    let loc = if let Some(r) = rest.strip_prefix('%') {
        let (reg, width, high) = register(r).ok_or_else(bad)?;
        Loc::Reg { reg, width, high }
    } else if let Some(v) = rest.strip_prefix('$') {
        Loc::Imm(int(v).ok_or_else(bad)?)
    } else {
        let open = rest.find('(').ok_or_else(bad)?;
        let inner = rest[open + 1..].strip_suffix(')').ok_or_else(bad)?;
        let disp_text = &rest[..open];
        let parts: Vec<&str> = inner.split(',').collect();
        if parts.len() == 1 && parts[0].trim() == "%rip" {
            // sym(%rip), sym+16(%rip), 16+sym(%rip), sym-8(%rip): one
            // symbol plus or minus constants (a bare number is relative to
            // the next instruction, which a probe's nop does not define).
            let target = rip_target(disp_text, symbol).ok_or_else(bad)?;
            Loc::Mem {
                base: Some(regs::RIP),
                index: None,
                disp: target.wrapping_sub(pc) as i64,
            }
        } else {
            let disp = if disp_text.is_empty() {
                0
            } else {
                int(disp_text).ok_or_else(bad)?
            };
            let base = match parts[0].trim() {
                "" => None,
                b => Some(reg_operand(b).ok_or_else(bad)?),
            };
            let index = match parts.len() {
                1 => None,
                2 | 3 => {
                    let reg = reg_operand(parts[1]).ok_or_else(bad)?;
                    let scale = match parts.get(2) {
                        Some(s) => s.trim().parse::<u8>().map_err(|_| bad())?,
                        None => 1,
                    };
                    if ![1, 2, 4, 8].contains(&scale) {
                        return Err(bad());
                    }
                    Some((reg, scale))
                }
                _ => return Err(bad()),
            };
            Loc::Mem { base, index, disp }
        }
    };
    Ok(Arg { size, signed, loc })
}

impl Arg {
    /// The expression reading this argument, every node at `span`.
    pub fn to_expr(&self, span: Span) -> Expr {
        let e = |kind| Expr { kind, span };
        let bx = |x: Expr| Box::new(x);
        let ty = |width: u8, signed: bool, ptr: u8| CType { width, signed, ptr };
        match &self.loc {
            Loc::Reg { reg, width, high } => {
                let mut v = e(ExprKind::Reg(*reg));
                if *high {
                    v = e(ExprKind::Binary(BinOp::Shr, bx(v), bx(e(ExprKind::Int(8)))));
                }
                // The register's own width, then the argument's.
                let w = (*width).min(self.size);
                e(ExprKind::Cast(ty(w, self.signed, 0), bx(v)))
            }
            Loc::Imm(v) => e(ExprKind::Cast(
                ty(self.size, self.signed, 0),
                bx(e(ExprKind::Int(*v as u64))),
            )),
            Loc::Mem { base, index, disp } => {
                let mut addr: Option<Expr> = base.map(|r| e(ExprKind::Reg(r)));
                if let Some((r, scale)) = index {
                    let mut i = e(ExprKind::Reg(*r));
                    if *scale != 1 {
                        i = e(ExprKind::Binary(
                            BinOp::Mul,
                            bx(i),
                            bx(e(ExprKind::Int(*scale as u64))),
                        ));
                    }
                    addr = Some(match addr {
                        Some(a) => e(ExprKind::Binary(BinOp::Add, bx(a), bx(i))),
                        None => i,
                    });
                }
                let addr = match addr {
                    Some(a) if *disp != 0 => e(ExprKind::Binary(
                        BinOp::Add,
                        bx(a),
                        bx(e(ExprKind::Int(*disp as u64))),
                    )),
                    Some(a) => a,
                    None => e(ExprKind::Int(*disp as u64)),
                };
                e(ExprKind::Deref(bx(e(ExprKind::Cast(
                    ty(self.size, self.signed, 1),
                    bx(addr),
                )))))
            }
        }
    }
}

/// Replaces every `argN` in a USDT probe's captures and filter by the
/// expression of its N-th argument spec.
pub fn subst_args(spec: &mut ProbeSpec, args: &[Result<Arg, String>]) -> Result<(), ParseError> {
    let text = spec.text.clone();
    let mut f = |e: &mut Expr| -> Result<(), ParseError> {
        if let ExprKind::Arg(n) = e.kind {
            let n = n as usize;
            match args.get(n) {
                Some(Ok(a)) => *e = a.to_expr(e.span),
                Some(Err(s)) => {
                    return Err(ParseError::new(
                        &text,
                        e.span,
                        format!("cannot read USDT argument spec '{s}' of arg{n}"),
                    ));
                }
                None => {
                    return Err(ParseError::new(
                        &text,
                        e.span,
                        format!(
                            "arg{n} is past the probe's arguments: it has {} (arg0..arg{})",
                            args.len(),
                            args.len() as isize - 1
                        )
                        .replace(" (arg0..arg-1)", ""),
                    ));
                }
            }
        }
        Ok(())
    };
    for c in &mut spec.captures {
        walk(&mut c.expr, &mut f)?;
    }
    if let Some(e) = &mut spec.filter {
        walk(e, &mut f)?;
    }
    Ok(())
}

fn walk(
    e: &mut Expr,
    f: &mut dyn FnMut(&mut Expr) -> Result<(), ParseError>,
) -> Result<(), ParseError> {
    match &mut e.kind {
        ExprKind::Member(a, ..)
        | ExprKind::AddrOf(a)
        | ExprKind::SizeofExpr(a)
        | ExprKind::CastNamed(_, a)
        | ExprKind::Unary(_, a)
        | ExprKind::Cast(_, a)
        | ExprKind::Deref(a)
        | ExprKind::Str(a, _)
        | ExprKind::Buf(a, _) => walk(a, f)?,
        ExprKind::Index(a, b) | ExprKind::Binary(_, a, b) => {
            walk(a, f)?;
            walk(b, f)?;
        }
        _ => {}
    }
    f(e)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{plan::compile, probe::parse_probe};
    use ri_common::{Insn, op};

    fn arg(s: &str) -> Arg {
        parse_arg(s, 0x1000, &mut |n| (n == "sym").then_some(0x3000)).unwrap()
    }

    /// Compiles `usdt:x:p:n(v=arg0)` with arg0 = `spec`; the instructions
    /// before the EMIT.
    fn insns(spec: &str) -> Vec<Insn> {
        let mut p = parse_probe("usdt:/x:p:n(v=arg0)").unwrap();
        subst_args(&mut p, &[Ok(arg(spec))]).unwrap();
        let c = compile(&p, None).unwrap();
        let v = c.plan.insns[..c.plan.n_insns as usize].to_vec();
        assert_eq!(v.last().unwrap().op, op::EMIT);
        v[..v.len() - 1].to_vec()
    }

    fn reg(r: &str) -> Insn {
        Insn {
            op: op::REG,
            len: regs::index(r).unwrap(),
            ..Default::default()
        }
    }
    fn ext(w: u8, s: bool) -> Insn {
        Insn {
            op: op::EXT,
            width: w,
            signed: s as u8,
            ..Default::default()
        }
    }
    fn load(w: u8, s: bool, off: i64) -> Insn {
        Insn {
            op: op::LOAD,
            width: w,
            signed: s as u8,
            imm: off as u64,
            ..Default::default()
        }
    }
    fn imm(v: i64) -> Insn {
        Insn {
            op: op::IMM,
            imm: v as u64,
            ..Default::default()
        }
    }
    fn code(c: u8) -> Insn {
        Insn {
            op: c,
            ..Default::default()
        }
    }

    #[test]
    fn parses_every_form() {
        let r = |n: &str| regs::index(n).unwrap();
        assert_eq!(
            arg("8@%rbx"),
            Arg {
                size: 8,
                signed: false,
                loc: Loc::Reg {
                    reg: r("rbx"),
                    width: 8,
                    high: false
                }
            }
        );
        assert_eq!(
            arg("-4@%edi").loc,
            Loc::Reg {
                reg: r("rdi"),
                width: 4,
                high: false
            }
        );
        assert!(arg("-4@%edi").signed);
        assert_eq!(
            arg("-4@-20(%rbp)").loc,
            Loc::Mem {
                base: Some(r("rbp")),
                index: None,
                disp: -20
            }
        );
        assert_eq!(arg("4@$42").loc, Loc::Imm(42));
        assert_eq!(arg("-4@$-1").loc, Loc::Imm(-1));
        assert_eq!(
            arg("8@16(%rax,%rdx,8)").loc,
            Loc::Mem {
                base: Some(r("rax")),
                index: Some((r("rdx"), 8)),
                disp: 16
            }
        );
        assert_eq!(
            arg("8@sym+16(%rip)").loc,
            Loc::Mem {
                base: Some(regs::RIP),
                index: None,
                disp: 0x2010
            }
        );
        assert_eq!(arg("-8@16+sym(%rip)").loc, arg("8@sym+16(%rip)").loc);
        assert_eq!(
            arg("8@sym-8(%rip)").loc,
            Loc::Mem {
                base: Some(regs::RIP),
                index: None,
                disp: 0x1ff8
            }
        );
        assert_eq!(
            arg("1@%r8b").loc,
            Loc::Reg {
                reg: r("r8"),
                width: 1,
                high: false
            }
        );
        assert_eq!(
            arg("1@%ah").loc,
            Loc::Reg {
                reg: r("rax"),
                width: 1,
                high: true
            }
        );
        assert_eq!(arg("2@%si").loc, arg("2@%rsi").loc.clone().narrow(2));
        for bad in [
            "3@%rax",
            "8@%xyz",
            "8@nosym(%rip)",
            "8@(%eax)",
            "x@%rax",
            "8@4(%rax",
        ] {
            assert!(
                parse_arg(bad, 0, &mut |_| None).is_err(),
                "{bad} should not parse"
            );
        }
    }

    impl Loc {
        fn narrow(self, w: u8) -> Loc {
            match self {
                Loc::Reg { reg, high, .. } => Loc::Reg {
                    reg,
                    width: w,
                    high,
                },
                l => l,
            }
        }
    }

    #[test]
    fn compiles_every_form() {
        assert_eq!(insns("8@%rbx"), vec![reg("rbx")]);
        assert_eq!(insns("-4@%edi"), vec![reg("rdi"), ext(4, true)]);
        assert_eq!(insns("4@%eax"), vec![reg("rax"), ext(4, false)]);
        assert_eq!(insns("-2@%ax"), vec![reg("rax"), ext(2, true)]);
        assert_eq!(insns("1@%al"), vec![reg("rax"), ext(1, false)]);
        assert_eq!(insns("-1@%r9b"), vec![reg("r9"), ext(1, true)]);
        assert_eq!(insns("-4@-20(%rbp)"), vec![reg("rbp"), load(4, true, -20)]);
        assert_eq!(insns("8@8(%rax)"), vec![reg("rax"), load(8, false, 8)]);
        assert_eq!(insns("8@(%rax)"), vec![reg("rax"), load(8, false, 0)]);
        let i = insns("4@$42");
        assert_eq!(i[0], imm(42));
        let i = insns("8@(%rax,%rdx,8)");
        assert_eq!(
            i,
            vec![
                reg("rax"),
                reg("rdx"),
                imm(8),
                code(op::MUL),
                code(op::ADD),
                load(8, false, 0)
            ]
        );
        let i = insns("8@16(%rax,%rdx,8)");
        assert_eq!(i.last(), Some(&load(8, false, 16)));
        assert_eq!(&i[..5], &insns("8@(%rax,%rdx,8)")[..5]);
        // sym(%rip): the ip at the hit is the probe address (0x1000).
        assert_eq!(
            insns("8@sym(%rip)"),
            vec![reg("rip"), load(8, false, 0x2000)]
        );
        assert_eq!(
            insns("8@sym+16(%rip)"),
            vec![reg("rip"), load(8, false, 0x2010)]
        );
        let i = insns("1@%ah");
        assert_eq!(i[0], reg("rax"));
        assert_eq!(i.last(), Some(&ext(1, false)));
    }

    #[test]
    fn arg_past_the_specs() {
        let mut p = parse_probe("usdt:/x:p:n(a=arg2)").unwrap();
        let e = subst_args(&mut p, &[Ok(arg("8@%rax")), Ok(arg("8@%rbx"))]).unwrap_err();
        assert!(e.message.contains("it has 2 (arg0..arg1)"), "{}", e.message);
        let mut p = parse_probe("usdt:/x:n if arg0 > 1").unwrap();
        let e = subst_args(&mut p, &[]).unwrap_err();
        assert!(e.message.ends_with("it has 0"), "{}", e.message);
        let mut p = parse_probe("usdt:/x:n(s=str(arg0)) if arg1 == 3").unwrap();
        subst_args(&mut p, &[Ok(arg("8@%rbp")), Ok(arg("-4@%eax"))]).unwrap();
        compile(&p, None).unwrap();
    }
}
