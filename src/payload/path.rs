//! Value references: the names a rule or an exec argument uses for a piece
//! of a request.
//!
//! ```text
//! body.ref                     JSON body (or form field, or GitHub's payload= form), dotted path
//! body.commits.0.id            array index as a path segment (adnanh/webhook style)
//! body.commits[0].id           array index in brackets
//! body["a.b"].c                a key that contains a dot
//! body                         the whole raw body
//! header.X-GitHub-Event        a request header (case-insensitive)
//! headers                      every stored header, as a JSON object
//! query.token                  a query parameter
//! query                        every query parameter, as a JSON object
//! form.payload                 a raw form field (application/x-www-form-urlencoded)
//! event, delivery, hook, id    the event type, delivery id, hook id, event id
//! ```

use std::fmt;

/// One step of a body path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    /// An object key; also an array index when it is all digits.
    Key(String),
    /// `[N]`: an array index only.
    Index(usize),
}

/// What a reference points at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A value inside the parsed body; an empty path is the whole document.
    Body(Vec<Segment>),
    /// The raw body bytes, as text.
    RawBody,
    Header(String),
    Headers,
    Query(String),
    QueryAll,
    Form(String),
    Event,
    Delivery,
    Hook,
    Id,
}

/// A parsed reference, with the text it was written as (for messages).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValueRef {
    pub source: Source,
    pub text: String,
}

impl fmt::Display for ValueRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

const EXPECTED: &str = "expected body[.PATH], header.NAME, headers, query.NAME, query, form.NAME, \
                        event, delivery, hook or id";

impl ValueRef {
    /// Parse a reference; the error says what is wrong with the syntax.
    pub fn parse(text: &str) -> Result<ValueRef, String> {
        let t = text.trim();
        let source = match t {
            "body" => Source::RawBody,
            "headers" => Source::Headers,
            "query" => Source::QueryAll,
            "event" => Source::Event,
            "delivery" => Source::Delivery,
            "hook" => Source::Hook,
            "id" => Source::Id,
            _ => {
                if let Some(rest) = t.strip_prefix("header.") {
                    Source::Header(name(rest, text, "header")?.to_ascii_lowercase())
                } else if let Some(rest) = t.strip_prefix("query.") {
                    Source::Query(name(rest, text, "query parameter")?.to_string())
                } else if let Some(rest) = t.strip_prefix("form.") {
                    Source::Form(name(rest, text, "form field")?.to_string())
                } else if let Some(rest) = t.strip_prefix("body") {
                    Source::Body(parse_path(rest).map_err(|m| format!("{text:?}: {m}"))?)
                } else {
                    return Err(format!("unknown value reference {text:?}: {EXPECTED}"));
                }
            }
        };
        Ok(ValueRef {
            source,
            text: t.to_string(),
        })
    }
}

fn name<'a>(rest: &'a str, text: &str, what: &str) -> Result<&'a str, String> {
    if rest.is_empty() || rest.chars().any(|c| c.is_control() || c == ' ') {
        return Err(format!(
            "{text:?}: expected a {what} name after the dot, without spaces"
        ));
    }
    Ok(rest)
}

/// Parse what follows `body`: `.a.b`, `[0]`, `["a.b"]`, in any mix.
fn parse_path(rest: &str) -> Result<Vec<Segment>, String> {
    let mut segs = Vec::new();
    let b = rest.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'.' => {
                let start = i + 1;
                let mut j = start;
                while j < b.len() && b[j] != b'.' && b[j] != b'[' {
                    if b[j] == b']' || b[j] == b'"' {
                        return Err(format!("unexpected {:?} at offset {j}", b[j] as char));
                    }
                    j += 1;
                }
                if j == start {
                    return Err(format!("empty path segment at offset {start}"));
                }
                segs.push(Segment::Key(rest[start..j].to_string()));
                i = j;
            }
            b'[' => {
                let close = rest[i..]
                    .find(']')
                    .map(|c| c + i)
                    .ok_or_else(|| format!("unclosed '[' at offset {i}"))?;
                let inner = &rest[i + 1..close];
                if let Some(q) = inner.strip_prefix('"') {
                    let key = q
                        .strip_suffix('"')
                        .ok_or_else(|| format!("unclosed quote at offset {i}"))?;
                    if key.contains('"') {
                        return Err(format!("a quoted key cannot contain '\"' (offset {i})"));
                    }
                    segs.push(Segment::Key(key.to_string()));
                } else {
                    let n: usize = inner.parse().map_err(|_| {
                        format!("expected an array index or a quoted key in [..], got {inner:?}")
                    })?;
                    segs.push(Segment::Index(n));
                }
                i = close + 1;
            }
            c => {
                return Err(format!(
                    "expected '.' or '[' at offset {i}, got {:?}",
                    c as char
                ))
            }
        }
    }
    Ok(segs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Source {
        ValueRef::parse(s).unwrap().source
    }

    #[test]
    fn parses_references() {
        assert_eq!(p("body"), Source::RawBody);
        assert_eq!(
            p("body.commits.0.id"),
            Source::Body(vec![
                Segment::Key("commits".into()),
                Segment::Key("0".into()),
                Segment::Key("id".into())
            ])
        );
        assert_eq!(
            p("body.commits[0][\"a.b\"]"),
            Source::Body(vec![
                Segment::Key("commits".into()),
                Segment::Index(0),
                Segment::Key("a.b".into())
            ])
        );
        assert_eq!(
            p("header.X-GitHub-Event"),
            Source::Header("x-github-event".into())
        );
        assert_eq!(p("query.token"), Source::Query("token".into()));
        assert_eq!(p("form.payload"), Source::Form("payload".into()));
        assert_eq!(p("event"), Source::Event);
    }

    #[test]
    fn rejects_bad_syntax() {
        for bad in [
            "payload.ref",
            "body.",
            "body..a",
            "body[x]",
            "body[0",
            "body.a]",
            "bodyx",
            "header.",
            "header.a b",
            "body[\"a]",
        ] {
            assert!(ValueRef::parse(bad).is_err(), "{bad} accepted");
        }
    }
}
