//! Probe strings edited as text: where a probe's captures go, and adding
//! one (the aggregations' keys, `stack`), before the parser sees them.

/// Where a probe string's captures would start: after `KIND:TARGET:FUNC`.
pub fn head_end(text: &str) -> usize {
    let after = text
        .find(':')
        .and_then(|a| text[a + 1..].find(':').map(|b| a + b + 2))
        .unwrap_or(0);
    text[after..]
        .find(|c: char| c == '(' || c.is_whitespace())
        .map_or(text.len(), |i| i + after)
}

/// The probe string with one more capture: inside its captures, or as its
/// only one.
pub fn add_capture(text: &str, cap: &str) -> String {
    let at = head_end(text);
    if !text[at..].starts_with('(') {
        return format!("{}({cap}){}", &text[..at], &text[at..]);
    }
    let mut depth = 0;
    for (i, c) in text[at..].char_indices() {
        match c {
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth == 0 {
                    let close = at + i;
                    let sep = if text[at + 1..close].trim().is_empty() {
                        ""
                    } else {
                        ", "
                    };
                    return format!("{}{sep}{cap}{}", &text[..close], &text[close..]);
                }
            }
            _ => {}
        }
    }
    // Unbalanced: leave it for the parser to point at.
    text.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stack_capture_is_added_inside_or_alone() {
        assert_eq!(add_capture("u:/a:b", "stack=stack"), "u:/a:b(stack=stack)");
        assert_eq!(
            add_capture("u:/a:b(x=(arg0 + 1)) if arg1", "stack=stack"),
            "u:/a:b(x=(arg0 + 1), stack=stack) if arg1"
        );
        assert_eq!(
            add_capture("u:/a:b if arg0 > 1", "s=stack"),
            "u:/a:b(s=stack) if arg0 > 1"
        );
    }
}
