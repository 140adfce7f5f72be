//! The syntax tree of a probe string.

use std::fmt;

/// A byte range in the probe string, for error carets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Span {
    /// First byte.
    pub start: usize,
    /// One past the last byte.
    pub end: usize,
}

impl Span {
    /// A span from `start` to `end`.
    pub fn new(start: usize, end: usize) -> Self {
        Span { start, end }
    }

    /// The smallest span covering both.
    pub fn to(self, other: Span) -> Span {
        Span::new(self.start.min(other.start), self.end.max(other.end))
    }
}

/// Where the probe fires.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProbeKind {
    /// Function entry (or entry + offset).
    Uprobe,
    /// Function return.
    Uretprobe,
    /// A USDT (SystemTap SDT) probe.
    Usdt,
}

impl ProbeKind {
    /// The canonical prefix (`uprobe`, `uretprobe`).
    pub fn prefix(self) -> &'static str {
        match self {
            ProbeKind::Uprobe => "uprobe",
            ProbeKind::Uretprobe => "uretprobe",
            ProbeKind::Usdt => "usdt",
        }
    }
}

/// A parsed probe string: `KIND:TARGET:FUNC[+OFF][(captures)] [if FILTER]`.
#[derive(Clone, Debug, PartialEq)]
pub struct ProbeSpec {
    /// The probe string as written.
    pub text: String,
    /// Entry or return.
    pub kind: ProbeKind,
    /// Path or library name, as written.
    pub target: String,
    /// USDT provider (`usdt:TARGET:PROVIDER:NAME`), when given.
    pub provider: Option<String>,
    /// Function name or glob pattern (the probe name for USDT).
    pub func: String,
    /// Span of `func` in `text`.
    pub func_span: Span,
    /// Byte offset from the function start (`FUNC+OFFSET`).
    pub offset: u64,
    /// Values to capture, in order.
    pub captures: Vec<Capture>,
    /// Emit only when this is non-zero.
    pub filter: Option<Expr>,
}

/// One `name=expr` capture.
#[derive(Clone, Debug, PartialEq)]
pub struct Capture {
    /// Output name (the expression text when not given).
    pub name: String,
    /// What to capture.
    pub expr: Expr,
}

/// An expression with its place in the probe string.
#[derive(Clone, Debug, PartialEq)]
pub struct Expr {
    /// What it is.
    pub kind: ExprKind,
    /// Where it is.
    pub span: Span,
}

/// Expression forms.
#[derive(Clone, Debug, PartialEq)]
pub enum ExprKind {
    /// Integer literal.
    Int(u64),
    /// `argN`.
    Arg(u8),
    /// `retval`.
    Retval,
    /// A register by name.
    Reg(u32),
    /// `pid`, `tid`, `uid`, `nsecs`, `cpu`, `comm`.
    Builtin(Builtin),
    /// A function parameter by its DWARF name.
    Ident(String),
    /// `e.name` (`arrow` false) or `e->name` (`arrow` true).
    Member(Box<Expr>, String, bool),
    /// `e[i]`.
    Index(Box<Expr>, Box<Expr>),
    /// `&e`.
    AddrOf(Box<Expr>),
    /// `sizeof(type)`.
    SizeofType(TypeName),
    /// `sizeof(expr)`.
    SizeofExpr(Box<Expr>),
    /// `(struct name *)e`, `(typedef_name)e`: a cast to a type from debug info.
    CastNamed(TypeName, Box<Expr>),
    /// Unary operator.
    Unary(UnOp, Box<Expr>),
    /// Binary operator.
    Binary(BinOp, Box<Expr>, Box<Expr>),
    /// `(type)expr`.
    Cast(CType, Box<Expr>),
    /// `*expr`.
    Deref(Box<Expr>),
    /// `str(addr[, maxlen])`.
    Str(Box<Expr>, Option<u64>),
    /// `buf(addr, len)`.
    Buf(Box<Expr>, u64),
    /// A walker of `ri peek` and views: `list(HEAD, TYPE, MEMBER)`,
    /// `array(PTR, N)`, `hash(...)`, `btree_node(ADDR)`.
    Walk(String, Vec<WalkArg>),
}

/// One argument of a walker.
#[derive(Clone, Debug, PartialEq)]
pub enum WalkArg {
    /// A value.
    Expr(Expr),
    /// A type (`struct m0_fom`).
    Type(TypeName),
}

/// The walkers' names.
pub const WALKERS: [&str; 4] = ["list", "array", "hash", "btree_node"];

/// Values the kernel knows without any fetch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Builtin {
    /// Process id.
    Pid,
    /// Thread id.
    Tid,
    /// User id.
    Uid,
    /// Monotonic ns.
    Nsecs,
    /// CPU number.
    Cpu,
    /// Command name (capture only).
    Comm,
    /// The user stack (capture or key only), symbolized in user space.
    Stack,
}

/// Unary operators.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnOp {
    /// `-x`
    Neg,
    /// `!x`
    Not,
    /// `~x`
    BitNot,
}

/// Binary operators, C precedence.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinOp {
    Add,
    Sub,
    Mul,
    Div,
    Mod,
    And,
    Or,
    Xor,
    Shl,
    Shr,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    LAnd,
    LOr,
}

/// A type named in a cast or `sizeof`, resolved through debug info:
/// `struct m0_fop *`, `m0_time_t`, `unsigned long`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TypeName {
    /// The C spelling without pointers: `struct m0_fop`, `m0_time_t`.
    pub name: String,
    /// Number of `*`.
    pub ptr: u8,
    /// Where it was written.
    pub span: Span,
}

/// A C scalar type with pointer depth, as written in a cast: `u32*`, `s8`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CType {
    /// Width of the scalar in bytes.
    pub width: u8,
    /// Signed scalar.
    pub signed: bool,
    /// Number of `*`.
    pub ptr: u8,
}

impl fmt::Display for CType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}{}{}",
            if self.signed { 's' } else { 'u' },
            self.width * 8,
            "*".repeat(self.ptr as usize)
        )
    }
}
