//! Tokens of the capture and filter expressions.

use super::{ParseError, ast::Span};

/// A token with its span.
#[derive(Clone, Debug, PartialEq)]
pub struct Token {
    /// What it is.
    pub kind: Tok,
    /// Where it is.
    pub span: Span,
}

/// Token kinds.
#[derive(Clone, Debug, PartialEq)]
pub enum Tok {
    /// Identifier or keyword.
    Ident(String),
    /// Integer literal (decimal, `0x` hex, `0o`/leading-0 octal, `0b` binary).
    Int(u64),
    /// Operator or punctuation.
    Punct(&'static str),
    /// End of input.
    Eof,
}

const PUNCTS: [&str; 28] = [
    "<<", ">>", "<=", ">=", "==", "!=", "&&", "||", "->", "+", "-", "*", "/", "%", "&", "|", "^",
    "~", "!", "<", ">", "(", ")", ",", "=", "[", "]", ".",
];

/// Splits `src[start..end]` into tokens; spans are offsets into `src`.
pub fn lex(src: &str, start: usize, end: usize) -> Result<Vec<Token>, ParseError> {
    let bytes = src.as_bytes();
    let mut i = start;
    let mut out = Vec::new();
    while i < end {
        let c = bytes[i];
        if c.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        if c.is_ascii_alphabetic() || c == b'_' || c == b'$' {
            let s = i;
            while i < end
                && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_' || bytes[i] == b'$')
            {
                i += 1;
            }
            out.push(Token {
                kind: Tok::Ident(src[s..i].to_string()),
                span: Span::new(s, i),
            });
            continue;
        }
        if c.is_ascii_digit() {
            let s = i;
            while i < end && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
                i += 1;
            }
            let text = src[s..i].replace('_', "");
            let (digits, radix) =
                if let Some(h) = text.strip_prefix("0x").or(text.strip_prefix("0X")) {
                    (h.to_string(), 16)
                } else if let Some(b) = text.strip_prefix("0b") {
                    (b.to_string(), 2)
                } else if let Some(o) = text.strip_prefix("0o") {
                    (o.to_string(), 8)
                } else if text.len() > 1 && text.starts_with('0') {
                    (text[1..].to_string(), 8)
                } else {
                    (text.clone(), 10)
                };
            let v = u64::from_str_radix(&digits, radix).map_err(|_| {
                ParseError::new(
                    src,
                    Span::new(s, i),
                    format!("bad integer literal '{}'", &src[s..i]),
                )
            })?;
            out.push(Token {
                kind: Tok::Int(v),
                span: Span::new(s, i),
            });
            continue;
        }
        match PUNCTS.iter().find(|p| src[i..end].starts_with(**p)) {
            Some(p) => {
                out.push(Token {
                    kind: Tok::Punct(p),
                    span: Span::new(i, i + p.len()),
                });
                i += p.len();
            }
            None => {
                let ch = src[i..].chars().next().unwrap_or('?');
                return Err(ParseError::new(
                    src,
                    Span::new(i, i + ch.len_utf8()),
                    format!("unexpected character '{ch}'"),
                ));
            }
        }
    }
    out.push(Token {
        kind: Tok::Eof,
        span: Span::new(end, end + 1),
    });
    Ok(out)
}
