//! The syntax of a pack's `[views]`: walk steps `NAME = [LABEL:] WALK, ...`
//! and fields `NAME = EXPR`, parsed for checking a pack and for `ri view`.

use super::format::ViewDef;
use crate::probe::{Expr, parse_expr};

/// One step: `NAME = [LABEL:] WALK, ...`.
pub(crate) struct Step {
    /// The name the step binds.
    pub name: String,
    /// Each walk, with its label.
    pub alts: Vec<(Option<String>, Expr)>,
}

/// Splits `s` at top-level commas (not inside parentheses or brackets).
fn split_top(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut depth, mut start) = (0i32, 0);
    for (i, c) in s.char_indices() {
        match c {
            '(' | '[' => depth += 1,
            ')' | ']' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

fn name_eq(s: &str) -> Result<(String, &str), String> {
    let (n, e) = s
        .split_once('=')
        .ok_or_else(|| format!("'{s}': expected NAME = EXPR"))?;
    let n = n.trim();
    if n.is_empty() || !n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(format!("'{s}': '{n}' is not a name"));
    }
    Ok((n.to_string(), e.trim()))
}

pub(crate) fn parse_step(s: &str) -> Result<Step, String> {
    let (name, rest) = name_eq(s)?;
    let mut alts = Vec::new();
    for part in split_top(rest) {
        let part = part.trim();
        let (label, e) = match part.split_once(':') {
            Some((l, e))
                if !l.trim().is_empty()
                    && l.trim()
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_') =>
            {
                (Some(l.trim().to_string()), e.trim())
            }
            _ => (None, part),
        };
        alts.push((label, parse_expr(e).map_err(|e| e.to_string())?));
    }
    Ok(Step { name, alts })
}

pub(crate) fn parse_field(s: &str) -> Result<(String, Expr), String> {
    let (name, e) = name_eq(s)?;
    Ok((name, parse_expr(e).map_err(|e| e.to_string())?))
}

/// Checks a view definition (pack validation).
pub(crate) fn check_def(v: &ViewDef) -> Result<(), String> {
    if v.walk.is_empty() {
        return Err("needs walk = [\"NAME = WALK\", ...]".into());
    }
    for s in &v.walk {
        parse_step(s)?;
    }
    for f in &v.fields {
        parse_field(f)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{parse_field, parse_step, split_top};

    #[test]
    fn steps_and_fields() {
        assert_eq!(
            split_top("a(b, c), d[1, 2], e"),
            ["a(b, c)", " d[1, 2]", " e"]
        );
        let s = parse_step(
            "fom = runq: list(l->a, struct m0_fom, x), wail: list(l->b, struct m0_fom, x)",
        )
        .unwrap();
        assert_eq!(s.name, "fom");
        let labels: Vec<_> = s.alts.iter().map(|a| a.0.as_deref()).collect();
        assert_eq!(labels, [Some("runq"), Some("wail")]);
        let s = parse_step("loc = array(p, n)").unwrap();
        assert_eq!(s.alts.len(), 1);
        assert!(s.alts[0].0.is_none());
        assert!(
            parse_step("no equals")
                .err()
                .unwrap()
                .contains("expected NAME = EXPR")
        );
        assert!(
            parse_field("x y = 1")
                .err()
                .unwrap()
                .contains("is not a name")
        );
        assert!(parse_field("x = a +").is_err());
    }
}
