//! `ri trace --text TEMPLATE`: an event's text line laid out from its
//! fields (`{file}:{line} {func}: {msg}` for Motr's trace records); JSON
//! keeps every field.

use crate::plan::Field;

/// One piece of a template.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Part {
    /// Text as written.
    Text(String),
    /// A field's value, by name.
    Field(String),
}

/// A parsed `--text` template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
}

impl Template {
    /// Parses `TEXT{FIELD}TEXT...`; `{{` and `}}` are literal braces.
    pub fn parse(s: &str) -> Result<Template, String> {
        let bad = |why: &str| format!("--text '{s}': {why}");
        let mut parts = Vec::new();
        let mut text = String::new();
        let mut chars = s.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '{' if chars.peek() == Some(&'{') => {
                    chars.next();
                    text.push('{');
                }
                '}' if chars.peek() == Some(&'}') => {
                    chars.next();
                    text.push('}');
                }
                '{' => {
                    let mut name = String::new();
                    loop {
                        match chars.next() {
                            Some('}') => break,
                            Some(c) if c.is_ascii_alphanumeric() || c == '_' => name.push(c),
                            Some(_) => return Err(bad("a {FIELD} holds a field name only")),
                            None => return Err(bad("'{' without '}'")),
                        }
                    }
                    if name.is_empty() {
                        return Err(bad("empty {}"));
                    }
                    if !text.is_empty() {
                        parts.push(Part::Text(std::mem::take(&mut text)));
                    }
                    parts.push(Part::Field(name));
                }
                '}' => return Err(bad("'}' without '{' (write }} for a brace)")),
                c => text.push(c),
            }
        }
        if !text.is_empty() {
            parts.push(Part::Text(text));
        }
        if !parts.iter().any(|p| matches!(p, Part::Field(_))) {
            return Err(bad("no {FIELD} in it"));
        }
        Ok(Template { parts })
    }

    /// Checks that each field is captured by a probe or added by `extra`
    /// (the `--printf` names).
    pub fn check(&self, fields: &[&[Field]], extra: &[&str]) -> Result<(), String> {
        for p in &self.parts {
            if let Part::Field(n) = p
                && !fields.iter().any(|f| f.iter().any(|f| &f.name == n))
                && !extra.contains(&n.as_str())
            {
                return Err(format!(
                    "--text: no probe captures a field named '{n}' (nor does a --printf add it)"
                ));
            }
        }
        Ok(())
    }

    /// The line with each field's text from `value`; `None` when the event
    /// lacks one of them (it then prints as usual).
    pub fn render(&self, value: impl Fn(&str) -> Option<String>) -> Option<String> {
        let mut line = String::new();
        for p in &self.parts {
            match p {
                Part::Text(t) => line.push_str(t),
                Part::Field(n) => line.push_str(&value(n)?),
            }
        }
        Some(line)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates() {
        let t = Template::parse("{file}:{line} {func}: {msg}").unwrap();
        let v = |n: &str| (n != "nope").then(|| format!("<{n}>"));
        assert_eq!(t.render(v).unwrap(), "<file>:<line> <func>: <msg>");
        let t = Template::parse("{{x}} {a}").unwrap();
        assert_eq!(t.render(v).unwrap(), "{x} <a>");
        assert!(Template::parse("{nope}").unwrap().render(v).is_none());
        for bad in ["{a", "a}", "{}", "{a b}", "plain"] {
            assert!(Template::parse(bad).is_err(), "{bad}");
        }
    }
}
