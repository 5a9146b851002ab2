//! Just enough TOML output for generated configs: basic strings, integers,
//! booleans, arrays and one-line inline tables.

use std::fmt::Write as _;

#[derive(Debug, Clone, PartialEq)]
pub enum Val {
    Str(String),
    Int(i64),
    Bool(bool),
    Arr(Vec<Val>),
    Table(Vec<(String, Val)>),
}

impl Val {
    pub fn s(s: impl Into<String>) -> Val {
        Val::Str(s.into())
    }

    pub fn table(pairs: Vec<(&str, Val)>) -> Val {
        Val::Table(pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        self.write(&mut out);
        out
    }

    fn write(&self, out: &mut String) {
        match self {
            Val::Str(s) => out.push_str(&quote(s)),
            Val::Int(i) => {
                let _ = write!(out, "{i}");
            }
            Val::Bool(b) => {
                let _ = write!(out, "{b}");
            }
            Val::Arr(items) => {
                out.push('[');
                for (i, v) in items.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    v.write(out);
                }
                out.push(']');
            }
            Val::Table(pairs) => {
                out.push_str("{ ");
                for (i, (k, v)) in pairs.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    out.push_str(&key(k));
                    out.push_str(" = ");
                    v.write(out);
                }
                out.push_str(" }");
            }
        }
    }
}

/// A TOML basic string.
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A key, bare when it can be.
pub fn key(k: &str) -> String {
    if !k.is_empty()
        && k.bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-')
    {
        k.to_string()
    } else {
        quote(k)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_toml_that_parses_back() {
        let v = Val::table(vec![
            ("a", Val::s("x\"y\\z\n")),
            ("b", Val::Arr(vec![Val::Int(1), Val::Bool(true)])),
            ("c.d", Val::table(vec![("e", Val::s("f"))])),
        ]);
        let text = format!("v = {}\n", v.render());
        let back: toml::Table = toml::from_str(&text).unwrap();
        assert_eq!(back["v"]["a"].as_str(), Some("x\"y\\z\n"));
        assert_eq!(back["v"]["c.d"]["e"].as_str(), Some("f"));
    }
}
