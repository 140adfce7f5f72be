//! Recursive-descent parser for probe strings and their expressions.

use super::{
    ParseError,
    ast::*,
    lexer::{Tok, Token, lex},
};

/// Parses one probe string.
pub fn parse_probe(text: &str) -> Result<ProbeSpec, ParseError> {
    let err = |s: usize, e: usize, m: &str| ParseError::new(text, Span::new(s, e), m.to_string());
    let Some(c1) = text.find(':') else {
        return Err(err(
            0,
            text.len().max(1),
            "malformed probe: expected KIND:TARGET:FUNC, e.g. uprobe:/usr/bin/prog:main",
        ));
    };
    let kind = match &text[..c1] {
        "uprobe" | "u" => ProbeKind::Uprobe,
        "uretprobe" | "ur" => ProbeKind::Uretprobe,
        "usdt" => ProbeKind::Usdt,
        other => {
            return Err(err(
                0,
                c1.max(1),
                &format!(
                    "unknown probe kind '{other}' (expected uprobe, u, uretprobe, ur or usdt)"
                ),
            ));
        }
    };
    let rest = &text[c1 + 1..];
    let Some(c2) = rest.find(':').map(|i| i + c1 + 1) else {
        return Err(err(
            c1 + 1,
            text.len().max(c1 + 2),
            "malformed probe: expected TARGET:FUNC after the probe kind",
        ));
    };
    let target = text[c1 + 1..c2].trim().to_string();
    if target.is_empty() {
        return Err(err(
            c1 + 1,
            c2 + 1,
            "missing target: name a binary path or a library",
        ));
    }
    let mut fs = c2 + 1;
    let fe = text[fs..]
        .find(|c: char| c == '(' || c.is_whitespace())
        .map_or(text.len(), |i| i + fs);
    // usdt:TARGET:[PROVIDER:]NAME
    let mut provider = None;
    if kind == ProbeKind::Usdt
        && let Some(c3) = text[fs..fe].find(':')
    {
        let p = &text[fs..fs + c3];
        if p.is_empty() {
            return Err(err(fs, fs + 1, "missing USDT provider before ':'"));
        }
        provider = Some(p.to_string());
        fs += c3 + 1;
    }
    let head = &text[fs..fe];
    if kind == ProbeKind::Usdt && head.contains('+') {
        return Err(err(fs, fe, "a USDT probe takes no offset"));
    }
    if kind == ProbeKind::Uretprobe && head.contains('+') {
        return Err(err(
            fs,
            fe,
            "a return probe takes no offset (it fires where the function returns)",
        ));
    }
    let (func, offset) = match head.find('+') {
        Some(p) => {
            let off_text = &head[p + 1..];
            let off = parse_int(off_text)
                .ok_or_else(|| err(fs + p + 1, fe.max(fs + p + 2), "bad offset after '+'"))?;
            (&head[..p], off)
        }
        None => (head, 0),
    };
    if func.is_empty() {
        let what = if kind == ProbeKind::Usdt {
            "missing USDT probe name"
        } else {
            "missing function name"
        };
        return Err(err(fs, fs + 1, what));
    }
    if let Some(bad) = func
        .char_indices()
        .find(|(_, c)| !(c.is_ascii_alphanumeric() || "_.*$@?".contains(*c)))
    {
        return Err(err(
            fs + bad.0,
            fs + bad.0 + bad.1.len_utf8(),
            &format!("unexpected character '{}' in function name", bad.1),
        ));
    }
    if offset != 0 && func.contains(['*', '?']) {
        return Err(err(fs, fe, "an offset needs one function, not a wildcard"));
    }
    let toks = lex(text, fe, text.len())?;
    let mut p = Parser {
        src: text,
        toks,
        pos: 0,
    };
    let mut captures = Vec::new();
    if p.is_punct("(") {
        p.bump();
        if !p.is_punct(")") {
            loop {
                captures.push(p.capture()?);
                if p.is_punct(",") {
                    p.bump();
                    continue;
                }
                break;
            }
        }
        p.expect(")")?;
    }
    let mut filter = None;
    if matches!(&p.peek().kind, Tok::Ident(s) if s == "if") {
        p.bump();
        filter = Some(p.expr()?);
    }
    if p.peek().kind != Tok::Eof {
        let t = p.peek().clone();
        return Err(p.unexpected(&t, "expected '(' captures ')' or 'if' filter"));
    }
    Ok(ProbeSpec {
        text: text.to_string(),
        kind,
        target,
        provider,
        func: func.to_string(),
        func_span: Span::new(fs, fs + func.len()),
        offset,
        captures,
        filter,
    })
}

fn parse_int(s: &str) -> Option<u64> {
    let s = s.trim();
    match s.strip_prefix("0x").or(s.strip_prefix("0X")) {
        Some(h) => u64::from_str_radix(h, 16).ok(),
        None => s.parse().ok(),
    }
}

/// Parses a lone expression (`ri peek`, views): the probe language's
/// expressions and the walkers.
pub fn parse_expr(text: &str) -> Result<Expr, ParseError> {
    let toks = lex(text, 0, text.len())?;
    let mut p = Parser {
        src: text,
        toks,
        pos: 0,
    };
    let e = p.expr()?;
    if p.peek().kind != Tok::Eof {
        let t = p.peek().clone();
        return Err(p.unexpected(&t, "expected the end of the expression"));
    }
    Ok(e)
}

/// Parses a C scalar type name used in casts.
pub fn scalar_type(name: &str) -> Option<(u8, bool)> {
    Some(match name {
        "u8" | "uint8_t" | "uchar" => (1, false),
        "u16" | "uint16_t" => (2, false),
        "u32" | "uint32_t" | "uint" => (4, false),
        "u64" | "uint64_t" | "size_t" | "ulong" | "uintptr_t" => (8, false),
        "s8" | "i8" | "int8_t" | "char" => (1, true),
        "s16" | "i16" | "int16_t" | "short" => (2, true),
        "s32" | "i32" | "int32_t" | "int" => (4, true),
        "s64" | "i64" | "int64_t" | "long" | "ssize_t" | "intptr_t" => (8, true),
        _ => return None,
    })
}

struct Parser<'a> {
    src: &'a str,
    toks: Vec<Token>,
    pos: usize,
}

impl Parser<'_> {
    fn peek(&self) -> &Token {
        &self.toks[self.pos.min(self.toks.len() - 1)]
    }

    fn peek_at(&self, n: usize) -> &Token {
        &self.toks[(self.pos + n).min(self.toks.len() - 1)]
    }

    fn bump(&mut self) -> Token {
        let t = self.peek().clone();
        if self.pos < self.toks.len() - 1 {
            self.pos += 1;
        }
        t
    }

    fn is_punct(&self, p: &str) -> bool {
        matches!(self.peek().kind, Tok::Punct(q) if q == p)
    }

    fn unexpected(&self, t: &Token, what: &str) -> ParseError {
        let found = match &t.kind {
            Tok::Eof => "end of input".to_string(),
            Tok::Ident(s) => format!("'{s}'"),
            Tok::Int(_) => format!("'{}'", &self.src[t.span.start..t.span.end]),
            Tok::Punct(p) => format!("'{p}'"),
        };
        ParseError::new(self.src, t.span, format!("{what}, found {found}"))
    }

    fn expect(&mut self, p: &str) -> Result<Token, ParseError> {
        if self.is_punct(p) {
            Ok(self.bump())
        } else {
            let t = self.peek().clone();
            Err(self.unexpected(&t, &format!("expected '{p}'")))
        }
    }

    fn capture(&mut self) -> Result<Capture, ParseError> {
        if let (Tok::Ident(name), Tok::Punct("=")) = (&self.peek().kind, &self.peek_at(1).kind) {
            let name = name.clone();
            self.bump();
            self.bump();
            let expr = self.expr()?;
            return Ok(Capture { name, expr });
        }
        let expr = self.expr()?;
        let name = self.src[expr.span.start..expr.span.end].trim().to_string();
        Ok(Capture { name, expr })
    }

    /// Full expression, lowest precedence first.
    pub fn expr(&mut self) -> Result<Expr, ParseError> {
        self.binary(0)
    }

    fn binary(&mut self, level: usize) -> Result<Expr, ParseError> {
        const LEVELS: [&[(&str, BinOp)]; 10] = [
            &[("||", BinOp::LOr)],
            &[("&&", BinOp::LAnd)],
            &[("|", BinOp::Or)],
            &[("^", BinOp::Xor)],
            &[("&", BinOp::And)],
            &[("==", BinOp::Eq), ("!=", BinOp::Ne)],
            &[
                ("<", BinOp::Lt),
                ("<=", BinOp::Le),
                (">", BinOp::Gt),
                (">=", BinOp::Ge),
            ],
            &[("<<", BinOp::Shl), (">>", BinOp::Shr)],
            &[("+", BinOp::Add), ("-", BinOp::Sub)],
            &[("*", BinOp::Mul), ("/", BinOp::Div), ("%", BinOp::Mod)],
        ];
        if level == LEVELS.len() {
            return self.unary();
        }
        let mut lhs = self.binary(level + 1)?;
        loop {
            let op = match &self.peek().kind {
                Tok::Punct(p) => LEVELS[level].iter().find(|(s, _)| s == p).map(|(_, o)| *o),
                _ => None,
            };
            let Some(op) = op else { break };
            self.bump();
            let rhs = self.binary(level + 1)?;
            let span = lhs.span.to(rhs.span);
            lhs = Expr {
                kind: ExprKind::Binary(op, Box::new(lhs), Box::new(rhs)),
                span,
            };
        }
        Ok(lhs)
    }

    fn unary(&mut self) -> Result<Expr, ParseError> {
        let t = self.peek().clone();
        let un = match t.kind {
            Tok::Punct("-") => Some(UnOp::Neg),
            Tok::Punct("!") => Some(UnOp::Not),
            Tok::Punct("~") => Some(UnOp::BitNot),
            _ => None,
        };
        if let Some(op) = un {
            self.bump();
            let e = self.unary()?;
            let span = t.span.to(e.span);
            return Ok(Expr {
                kind: ExprKind::Unary(op, Box::new(e)),
                span,
            });
        }
        if t.kind == Tok::Punct("*") || t.kind == Tok::Punct("&") {
            self.bump();
            let e = self.unary()?;
            let span = t.span.to(e.span);
            let kind = if t.kind == Tok::Punct("*") {
                ExprKind::Deref(Box::new(e))
            } else {
                ExprKind::AddrOf(Box::new(e))
            };
            return Ok(Expr { kind, span });
        }
        if t.kind == Tok::Punct("(")
            && let Some(tn) = self.try_type_name(1)
        {
            self.expect(")")?;
            let e = self.unary()?;
            let span = t.span.to(e.span);
            return Ok(Expr {
                kind: ExprKind::CastNamed(tn, Box::new(e)),
                span,
            });
        }
        if t.kind == Tok::Punct("(")
            && let Tok::Ident(name) = &self.peek_at(1).kind
            && let Some((width, signed)) = scalar_type(name)
        {
            self.bump();
            self.bump();
            let mut ptr = 0u8;
            while self.is_punct("*") {
                self.bump();
                ptr += 1;
            }
            self.expect(")")?;
            let e = self.unary()?;
            let span = t.span.to(e.span);
            return Ok(Expr {
                kind: ExprKind::Cast(CType { width, signed, ptr }, Box::new(e)),
                span,
            });
        }
        self.postfix()
    }

    /// Member access, `->` and indexing after a primary expression.
    fn postfix(&mut self) -> Result<Expr, ParseError> {
        let mut e = self.primary()?;
        loop {
            if self.is_punct("->") || self.is_punct(".") {
                let arrow = self.is_punct("->");
                self.bump();
                let t = self.bump();
                let Tok::Ident(name) = &t.kind else {
                    return Err(self.unexpected(&t, "expected a member name"));
                };
                let span = e.span.to(t.span);
                e = Expr {
                    kind: ExprKind::Member(Box::new(e), name.clone(), arrow),
                    span,
                };
            } else if self.is_punct("[") {
                self.bump();
                let i = self.expr()?;
                let close = self.expect("]")?;
                let span = e.span.to(close.span);
                e = Expr {
                    kind: ExprKind::Index(Box::new(e), Box::new(i)),
                    span,
                };
            } else {
                return Ok(e);
            }
        }
    }

    /// Recognises a type name for debug info starting `at` tokens ahead:
    /// `struct|union|enum NAME *...`, `NAME *...`, C multi-word base types,
    /// or a lone `NAME` followed by `)` and the start of an operand. On
    /// success the tokens up to (not including) `)` are consumed.
    fn try_type_name(&mut self, at: usize) -> Option<TypeName> {
        const WORDS: [&str; 7] = [
            "unsigned", "signed", "long", "short", "int", "char", "const",
        ];
        let start = self.peek_at(at).span;
        let mut words: Vec<String> = Vec::new();
        let mut i = at;
        while let Tok::Ident(w) = &self.peek_at(i).kind {
            let tagged = words
                .first()
                .is_some_and(|f| ["struct", "union", "enum"].contains(&f.as_str()));
            let more = words.is_empty()
                || (words.len() == 1 && tagged)
                || (WORDS.contains(&w.as_str())
                    && words.iter().all(|x| WORDS.contains(&x.as_str())));
            if !more {
                break;
            }
            words.push(w.clone());
            i += 1;
        }
        if words.is_empty() {
            return None;
        }
        let first = words[0].as_str();
        if ["struct", "union", "enum"].contains(&first) && words.len() < 2 {
            return None;
        }
        let mut ptr = 0u8;
        while matches!(self.peek_at(i).kind, Tok::Punct("*")) {
            ptr += 1;
            i += 1;
        }
        if !matches!(self.peek_at(i).kind, Tok::Punct(")")) {
            return None;
        }
        let tagged = ["struct", "union", "enum"].contains(&first);
        let multi = words.len() > 1;
        if !tagged && !multi && ptr == 0 {
            // `(name)` is a cast only when an operand follows it.
            if scalar_type(first).is_some() {
                return None;
            }
            let next = &self.peek_at(i + 1).kind;
            let operand = matches!(next, Tok::Ident(_) | Tok::Int(_) | Tok::Punct("("));
            if !operand || is_builtin_name(first) {
                return None;
            }
        }
        if !tagged && !multi && ptr > 0 && scalar_type(first).is_some() {
            return None;
        }
        for _ in at..i {
            self.bump();
        }
        // The opening parenthesis when `at` is 1.
        if at == 1 {
            self.bump();
        }
        Some(TypeName {
            name: words.join(" "),
            ptr,
            span: start.to(self.toks[self.pos.saturating_sub(1)].span),
        })
    }

    fn primary(&mut self) -> Result<Expr, ParseError> {
        let t = self.bump();
        let kind = match &t.kind {
            Tok::Int(v) => ExprKind::Int(*v),
            Tok::Punct("(") => {
                let e = self.expr()?;
                let close = self.expect(")")?;
                return Ok(Expr {
                    kind: e.kind,
                    span: t.span.to(close.span),
                });
            }
            Tok::Ident(name) if (name == "str" || name == "buf") && self.is_punct("(") => {
                return self.call(name.clone(), t.span);
            }
            Tok::Ident(name) if name == "sizeof" && self.is_punct("(") => {
                return self.sizeof(t.span);
            }
            Tok::Ident(name) if WALKERS.contains(&name.as_str()) && self.is_punct("(") => {
                return self.walker(name.clone(), t.span);
            }
            Tok::Ident(name) => ident(name),
            _ => return Err(self.unexpected(&t, "expected an expression")),
        };
        Ok(Expr { kind, span: t.span })
    }

    fn sizeof(&mut self, start: Span) -> Result<Expr, ParseError> {
        // `sizeof(type)` when what follows reads as a type, else `sizeof(expr)`.
        let kind = match self.try_sizeof_type() {
            Some(tn) => ExprKind::SizeofType(tn),
            None => {
                self.expect("(")?;
                ExprKind::SizeofExpr(Box::new(self.expr()?))
            }
        };
        let close = self.expect(")")?;
        Ok(Expr {
            kind,
            span: start.to(close.span),
        })
    }

    fn try_sizeof_type(&mut self) -> Option<TypeName> {
        let save = self.pos;
        // A lone identifier inside sizeof() is a type unless it is a known
        // expression name (argN, registers, builtins).
        if let (Tok::Ident(n), Tok::Punct(")")) = (&self.peek_at(1).kind, &self.peek_at(2).kind) {
            if matches!(ident(n), ExprKind::Ident(_)) || scalar_type(n).is_some() {
                let span = self.peek_at(1).span;
                let name = n.clone();
                self.bump();
                self.bump();
                return Some(TypeName { name, ptr: 0, span });
            }
            return None;
        }
        match self.try_type_name(1) {
            Some(t) => Some(t),
            None => {
                self.pos = save;
                None
            }
        }
    }

    /// `list(HEAD, struct T, MEMBER)`: arguments are expressions or types.
    fn walker(&mut self, name: String, start: Span) -> Result<Expr, ParseError> {
        self.expect("(")?;
        let mut args = Vec::new();
        if !self.is_punct(")") {
            loop {
                let tag = match &self.peek().kind {
                    Tok::Ident(w) if ["struct", "union", "enum"].contains(&w.as_str()) => {
                        Some(w.clone())
                    }
                    _ => None,
                };
                if let Some(tag) = tag
                    && let Tok::Ident(n) = &self.peek_at(1).kind
                {
                    let name = format!("{tag} {n}");
                    let first = self.bump();
                    let mut end = self.bump().span;
                    let mut ptr = 0u8;
                    while self.is_punct("*") {
                        end = self.bump().span;
                        ptr += 1;
                    }
                    args.push(WalkArg::Type(TypeName {
                        name,
                        ptr,
                        span: first.span.to(end),
                    }));
                } else {
                    args.push(WalkArg::Expr(self.expr()?));
                }
                if !self.is_punct(",") {
                    break;
                }
                self.bump();
            }
        }
        let close = self.expect(")")?;
        Ok(Expr {
            kind: ExprKind::Walk(name, args),
            span: start.to(close.span),
        })
    }

    fn call(&mut self, name: String, start: Span) -> Result<Expr, ParseError> {
        self.expect("(")?;
        let arg = self.expr()?;
        let mut len = None;
        if self.is_punct(",") {
            self.bump();
            let t = self.bump();
            match t.kind {
                Tok::Int(v) => len = Some((v, t.span)),
                _ => return Err(self.unexpected(&t, "expected a constant length")),
            }
        }
        let close = self.expect(")")?;
        let span = start.to(close.span);
        let kind = match (name.as_str(), len) {
            ("str", l) => ExprKind::Str(Box::new(arg), l.map(|l| l.0)),
            (_, Some((l, _))) => ExprKind::Buf(Box::new(arg), l),
            (_, None) => {
                return Err(ParseError::new(
                    self.src,
                    close.span,
                    "buf() needs a length: buf(ADDR, LEN)".to_string(),
                ));
            }
        };
        Ok(Expr { kind, span })
    }
}

/// Names that are expressions, never types.
fn is_builtin_name(name: &str) -> bool {
    !matches!(ident(name), ExprKind::Ident(_))
}

fn ident(name: &str) -> ExprKind {
    if let Some(n) = name.strip_prefix("arg")
        && let Ok(n) = n.parse::<u8>()
    {
        return ExprKind::Arg(n);
    }
    match name {
        "retval" => ExprKind::Retval,
        "pid" => ExprKind::Builtin(Builtin::Pid),
        "tid" => ExprKind::Builtin(Builtin::Tid),
        "uid" => ExprKind::Builtin(Builtin::Uid),
        "nsecs" => ExprKind::Builtin(Builtin::Nsecs),
        "cpu" => ExprKind::Builtin(Builtin::Cpu),
        "comm" => ExprKind::Builtin(Builtin::Comm),
        "stack" => ExprKind::Builtin(Builtin::Stack),
        _ => match ri_common::regs::index(name) {
            Some(r) => ExprKind::Reg(r),
            None => ExprKind::Ident(name.to_string()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> ProbeSpec {
        parse_probe(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn err(s: &str) -> String {
        parse_probe(s).unwrap_err().to_string()
    }

    #[test]
    fn heads() {
        let p = ok("uprobe:/bin/x:main");
        assert_eq!(
            (p.kind, p.target.as_str(), p.func.as_str()),
            (ProbeKind::Uprobe, "/bin/x", "main")
        );
        let p = ok("ur:libc:mall*");
        assert_eq!(
            (p.kind, p.target.as_str(), p.func.as_str()),
            (ProbeKind::Uretprobe, "libc", "mall*")
        );
        assert_eq!(ok("u:/b:f+0x10").offset, 16);
        assert_eq!(ok("u:/b:f+7").offset, 7);
    }

    #[test]
    fn captures_and_filter() {
        let p =
            ok("u:/b:f(size=arg0, *(u32*)(arg1+16), s=str(arg2, 32)) if arg1 > 100 && pid != 3");
        assert_eq!(p.captures.len(), 3);
        assert_eq!(p.captures[1].name, "*(u32*)(arg1+16)");
        assert!(matches!(
            p.captures[2].expr.kind,
            ExprKind::Str(_, Some(32))
        ));
        assert!(matches!(
            p.filter.unwrap().kind,
            ExprKind::Binary(BinOp::LAnd, _, _)
        ));
    }

    #[test]
    fn precedence() {
        let p = ok("u:/b:f(x=1+2*3)");
        match &p.captures[0].expr.kind {
            ExprKind::Binary(BinOp::Add, _, r) => {
                assert!(matches!(r.kind, ExprKind::Binary(BinOp::Mul, _, _)))
            }
            k => panic!("{k:?}"),
        }
    }

    #[test]
    fn typed_expressions() {
        let p =
            ok("u:/b:f(op=fom->fo_fop->f_type->ft_rpc_item_type.rit_opcode, x=a[3].b, p=&x->y)");
        assert!(
            matches!(&p.captures[0].expr.kind, ExprKind::Member(_, m, false) if m == "rit_opcode")
        );
        assert!(
            matches!(&p.captures[1].expr.kind, ExprKind::Member(i, m, false)
            if m == "b" && matches!(i.kind, ExprKind::Index(_, _)))
        );
        assert!(matches!(p.captures[2].expr.kind, ExprKind::AddrOf(_)));
        let p = ok(
            "u:/b:f(a=(struct m0_fop *)arg1, b=(m0_time_t)arg0, c=(unsigned long)arg0, d=sizeof(struct m0_fid), e=sizeof(x), f=(x) + 1, g=(u32*)arg0)",
        );
        assert!(
            matches!(&p.captures[0].expr.kind, ExprKind::CastNamed(t, _) if t.name == "struct m0_fop" && t.ptr == 1)
        );
        assert!(
            matches!(&p.captures[1].expr.kind, ExprKind::CastNamed(t, _) if t.name == "m0_time_t" && t.ptr == 0)
        );
        assert!(
            matches!(&p.captures[2].expr.kind, ExprKind::CastNamed(t, _) if t.name == "unsigned long")
        );
        assert!(
            matches!(&p.captures[3].expr.kind, ExprKind::SizeofType(t) if t.name == "struct m0_fid")
        );
        assert!(matches!(&p.captures[4].expr.kind, ExprKind::SizeofType(t) if t.name == "x"));
        assert!(matches!(
            p.captures[5].expr.kind,
            ExprKind::Binary(BinOp::Add, _, _)
        ));
        assert!(matches!(p.captures[6].expr.kind, ExprKind::Cast(_, _)));
        assert!(err("u:/b:f(x->)").contains("expected a member name"));
    }

    #[test]
    fn errors_point_at_the_column() {
        let e = err("u:/b:f(x=arg0+)");
        assert!(e.contains("expected an expression, found ')'"), "{e}");
        assert!(
            e.ends_with("\n  u:/b:f(x=arg0+)\n                ^"),
            "{e:?}"
        );
        assert!(err("kprobe:x:y").contains("unknown probe kind 'kprobe'"));
        assert!(err("u:/b").contains("malformed probe"));
        assert!(err("u:/b:f(x=arg0").contains("expected ')'"));
        assert!(err("u:/b:f(x=buf(arg0))").contains("buf() needs a length"));
        assert!(err("u:/b:f(x=0xzz)").contains("bad integer literal"));
        assert!(err("u:/b:f#").contains("unexpected character '#'"));
        assert!(err("u:/b:f(x) junk").contains("expected '(' captures ')' or 'if' filter"));
    }

    #[test]
    fn walker_expressions() {
        let e = parse_expr("list(m0sim_reqh.rh_fom_dom.fd_localities[1]->fl_runq, struct m0_fom, fo_linkage, &runq_tl)->fo_fop").unwrap();
        let ExprKind::Member(inner, m, true) = &e.kind else {
            panic!("{e:?}")
        };
        assert_eq!(m, "fo_fop");
        let ExprKind::Walk(name, args) = &inner.kind else {
            panic!("{inner:?}")
        };
        assert_eq!(name, "list");
        assert_eq!(args.len(), 4);
        assert!(matches!(&args[1], WalkArg::Type(t) if t.name == "struct m0_fom" && t.ptr == 0));
        assert!(matches!(&args[3], WalkArg::Expr(x) if matches!(x.kind, ExprKind::AddrOf(_))));
        assert!(parse_expr("array(p, 4)[2]").is_ok());
        assert!(parse_expr("(struct node *)0x1000").is_ok());
        let err = parse_expr("a b").unwrap_err().to_string();
        assert!(err.contains("expected the end of the expression"), "{err}");
        // A parameter named like a walker is still a parameter.
        assert!(matches!(
            ok("u:/b:f(x=list)").captures[0].expr.kind,
            ExprKind::Ident(_)
        ));
    }

    #[test]
    fn usdt_probes() {
        let p = ok("usdt:/usr/bin/postgres:postgresql:query__start(q=str(arg0))");
        assert_eq!(p.kind, ProbeKind::Usdt);
        assert_eq!(p.target, "/usr/bin/postgres");
        assert_eq!(p.provider.as_deref(), Some("postgresql"));
        assert_eq!(p.func, "query__start");
        assert_eq!(&p.text[p.func_span.start..p.func_span.end], "query__start");
        let p = ok("usdt:libpython3.11.so.1.0:function__*");
        assert_eq!(p.provider, None);
        assert_eq!(p.func, "function__*");
        assert!(err("usdt:/bin/x:p:n+4").contains("no offset"));
        assert!(err("usdt:/bin/x:p:").contains("missing USDT probe name"));
        assert!(err("usdt:/bin/x::n").contains("missing USDT provider"));
        assert_eq!(ok("u:/bin/x:f").provider, None);
    }
}
