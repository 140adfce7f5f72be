//! Probe strings: `uprobe:TARGET:FUNC[+OFF][(name=expr, ...)] [if EXPR]`,
//! and `usdt:TARGET:[PROVIDER:]NAME[(...)] [if EXPR]`.
//!
//! The grammar is bpftrace's where they overlap (`uprobe`/`u`,
//! `uretprobe`/`ur`, `argN`, `retval`, `str()`, `buf()`); errors carry the
//! byte span of the fault so they print with a caret under it.

pub mod ast;
mod lexer;
mod parser;
mod text;

use std::fmt;

pub use ast::*;
pub use parser::{parse_expr, parse_probe, scalar_type};
pub use text::{add_capture, head_end};

/// A syntax or semantic error at a place in a probe string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// What is wrong.
    pub message: String,
    /// The probe string.
    pub text: String,
    /// Where.
    pub span: Span,
}

impl ParseError {
    /// An error at `span` of `text`.
    pub fn new(text: &str, span: Span, message: String) -> Self {
        ParseError {
            message,
            text: text.to_string(),
            span,
        }
    }
}

impl fmt::Display for ParseError {
    /// One line naming the fault and its column, then the probe with a caret.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let col = self.text[..self.span.start.min(self.text.len())]
            .chars()
            .count();
        let width = self.text
            [self.span.start.min(self.text.len())..self.span.end.min(self.text.len())]
            .chars()
            .count()
            .max(1);
        write!(
            f,
            "{} (column {})\n  {}\n  {}{}",
            self.message,
            col + 1,
            self.text,
            " ".repeat(col),
            "^".repeat(width)
        )
    }
}

impl std::error::Error for ParseError {}
