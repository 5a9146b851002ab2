//! A read-only view of one request (live, or rebuilt from a stored event)
//! that value references are resolved against.
//!
//! The body is parsed at most once and only when a reference needs it:
//! `application/x-www-form-urlencoded` bodies are read as form fields, and a
//! form whose `payload` field holds JSON (GitHub's and Travis CI's form
//! encoding) is read as that JSON document, so `body.ref` means the same for
//! both of GitHub's content types. Any other body is read as JSON when it
//! parses as JSON.

use std::borrow::Cow;
use std::cell::OnceCell;

use serde_json::Value;

use super::path::{Segment, Source, ValueRef};

/// The stored-headers entry that carries the query string: the event store
/// keeps headers as `[name, value]` pairs, and a name starting with ':' can
/// never be a real header.
pub const QUERY_ENTRY: &str = ":query";

/// What the view knows beyond headers, query and body.
#[derive(Debug, Clone, Default)]
pub struct Meta {
    pub event: Option<String>,
    pub delivery: Option<String>,
    pub hook: Option<String>,
    pub id: Option<String>,
}

/// One request's values.
pub struct RequestView<'a> {
    /// Lower-case names, in arrival order.
    headers: Vec<(String, String)>,
    query: Vec<(String, String)>,
    body: &'a [u8],
    pub meta: Meta,
    /// Read the body as this content type, whatever the request says.
    content_type: Option<String>,
    form: OnceCell<Option<Vec<(String, String)>>>,
    doc: OnceCell<Option<Value>>,
}

/// A resolved value: text, or a JSON value from the body.
#[derive(Debug, Clone, PartialEq)]
pub enum Found<'v> {
    Text(Cow<'v, str>),
    Json(&'v Value),
    Owned(Value),
}

impl Found<'_> {
    /// The value as an argument or comparison string: strings as they are,
    /// numbers and booleans as written in JSON, objects and arrays as compact
    /// JSON.
    pub fn text(&self) -> Cow<'_, str> {
        match self {
            Found::Text(t) => Cow::Borrowed(t.as_ref()),
            Found::Json(v) => json_text(v),
            Found::Owned(v) => json_text(v),
        }
    }
}

fn json_text(v: &Value) -> Cow<'_, str> {
    match v {
        Value::String(s) => Cow::Borrowed(s.as_str()),
        Value::Number(n) => Cow::Owned(n.to_string()),
        Value::Bool(b) => Cow::Borrowed(if *b { "true" } else { "false" }),
        Value::Null => Cow::Borrowed(""),
        other => Cow::Owned(other.to_string()),
    }
}

impl<'a> RequestView<'a> {
    /// `headers` in any case; `query` is the raw query string (no '?').
    pub fn new(
        headers: impl IntoIterator<Item = (String, String)>,
        query: &str,
        body: &'a [u8],
        meta: Meta,
    ) -> RequestView<'a> {
        RequestView {
            headers: headers
                .into_iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), v))
                .collect(),
            query: form_urlencoded::parse(query.as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
            body,
            meta,
            content_type: None,
            form: OnceCell::new(),
            doc: OnceCell::new(),
        }
    }

    /// Rebuild the view of a stored event from its kept headers (`[name,
    /// value]` pairs, with the query string under [`QUERY_ENTRY`]).
    pub fn from_stored(
        pairs: impl IntoIterator<Item = (String, String)>,
        body: &'a [u8],
        meta: Meta,
    ) -> RequestView<'a> {
        let mut query = String::new();
        let mut headers = Vec::new();
        for (k, v) in pairs {
            if k == QUERY_ENTRY {
                query = v;
            } else {
                headers.push((k, v));
            }
        }
        RequestView::new(headers, &query, body, meta)
    }

    /// The body exactly as received.
    pub fn raw_body(&self) -> &[u8] {
        self.body
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn query_param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Read the body as `content_type` (a hook's `payload_content_type`,
    /// for senders that send none or a wrong one).
    pub fn with_content_type(mut self, content_type: Option<&str>) -> RequestView<'a> {
        self.content_type = content_type.map(|c| c.trim().to_ascii_lowercase());
        self
    }

    fn content_type(&self) -> String {
        if let Some(c) = &self.content_type {
            return c.clone();
        }
        self.header("content-type")
            .and_then(|c| c.split(';').next())
            .map(|c| c.trim().to_ascii_lowercase())
            .unwrap_or_default()
    }

    /// Form fields, when the body is form-encoded.
    pub fn form(&self) -> Option<&[(String, String)]> {
        self.form
            .get_or_init(|| {
                (self.content_type() == "application/x-www-form-urlencoded").then(|| {
                    form_urlencoded::parse(self.body)
                        .map(|(k, v)| (k.into_owned(), v.into_owned()))
                        .collect()
                })
            })
            .as_deref()
    }

    /// The body as a document: JSON, a form's JSON `payload`, or the form
    /// fields as an object of strings.
    pub fn document(&self) -> Option<&Value> {
        self.doc
            .get_or_init(|| {
                if let Some(fields) = self.form() {
                    if let Some((_, p)) = fields.iter().find(|(k, _)| k == "payload") {
                        if let Ok(v @ (Value::Object(_) | Value::Array(_))) =
                            serde_json::from_str::<Value>(p)
                        {
                            return Some(v);
                        }
                    }
                    let mut m = serde_json::Map::new();
                    for (k, v) in fields {
                        m.entry(k.clone())
                            .or_insert_with(|| Value::String(v.clone()));
                    }
                    return Some(Value::Object(m));
                }
                serde_json::from_slice(self.body).ok()
            })
            .as_ref()
    }

    /// Resolve a reference; `None` when the request has no such value (a
    /// JSON `null` counts as missing).
    pub fn get(&self, r: &ValueRef) -> Option<Found<'_>> {
        let text = |s: &str| Some(Found::Text(Cow::Owned(s.to_string())));
        match &r.source {
            Source::Body(path) => {
                let v = lookup(self.document()?, path)?;
                (!v.is_null()).then_some(Found::Json(v))
            }
            Source::RawBody => Some(Found::Text(String::from_utf8_lossy(self.body))),
            Source::Header(n) => self.header(n).and_then(text),
            Source::Headers => Some(Found::Owned(pairs_object(
                self.headers.iter().filter(|(k, _)| !k.starts_with(':')),
            ))),
            Source::Query(n) => self.query_param(n).and_then(text),
            Source::QueryAll => Some(Found::Owned(pairs_object(self.query.iter()))),
            Source::Form(n) => self
                .form()?
                .iter()
                .find(|(k, _)| k == n)
                .and_then(|(_, v)| text(v)),
            Source::Event => self.meta.event.as_deref().and_then(text),
            Source::Delivery => self.meta.delivery.as_deref().and_then(text),
            Source::Hook => self.meta.hook.as_deref().and_then(text),
            Source::Id => self.meta.id.as_deref().and_then(text),
        }
    }
}

fn pairs_object<'p>(pairs: impl Iterator<Item = &'p (String, String)>) -> Value {
    let mut m = serde_json::Map::new();
    for (k, v) in pairs {
        m.entry(k.clone())
            .or_insert_with(|| Value::String(v.clone()));
    }
    Value::Object(m)
}

/// Walk a path. As in adnanh/webhook, a top-level key spelled exactly like
/// the whole dotted path wins over walking it.
///
/// Also as there, a JSON array body can be addressed as `root`
/// (`body.root.1.event`), since its users write that.
fn lookup<'v>(doc: &'v Value, path: &[Segment]) -> Option<&'v Value> {
    let path = match (doc, path.first()) {
        (Value::Array(_), Some(Segment::Key(k))) if k == "root" => &path[1..],
        _ => path,
    };
    if path.len() > 1 && path.iter().all(|s| matches!(s, Segment::Key(_))) {
        let joined: Vec<&str> = path
            .iter()
            .filter_map(|s| match s {
                Segment::Key(k) => Some(k.as_str()),
                Segment::Index(_) => None,
            })
            .collect();
        if let Some(v) = doc.get(joined.join(".")) {
            return Some(v);
        }
    }
    let mut cur = doc;
    for seg in path {
        cur = match (seg, cur) {
            (Segment::Key(k), Value::Object(m)) => m.get(k)?,
            (Segment::Key(k), Value::Array(a)) => a.get(k.parse::<usize>().ok()?)?,
            (Segment::Index(i), Value::Array(a)) => a.get(*i)?,
            _ => return None,
        };
    }
    Some(cur)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(s: &str) -> ValueRef {
        ValueRef::parse(s).unwrap()
    }

    fn get(v: &RequestView<'_>, s: &str) -> Option<String> {
        v.get(&r(s)).map(|f| f.text().into_owned())
    }

    #[test]
    fn json_paths_headers_query() {
        let body = br#"{"ref":"refs/heads/main","commits":[{"id":"a1"},{"id":"b2"}],"n":3,"ok":true,"z":null,"a.b":"dotted"}"#;
        let v = RequestView::new(
            vec![
                ("Content-Type".into(), "application/json".into()),
                ("X-GitHub-Event".into(), "push".into()),
            ],
            "token=42&x=a%20b",
            body,
            Meta {
                event: Some("push".into()),
                ..Meta::default()
            },
        );
        assert_eq!(get(&v, "body.ref").as_deref(), Some("refs/heads/main"));
        assert_eq!(get(&v, "body.commits.1.id").as_deref(), Some("b2"));
        assert_eq!(get(&v, "body.commits[0].id").as_deref(), Some("a1"));
        assert_eq!(get(&v, "body.n").as_deref(), Some("3"));
        assert_eq!(get(&v, "body.ok").as_deref(), Some("true"));
        assert_eq!(get(&v, "body.z"), None);
        assert_eq!(get(&v, "body.a.b").as_deref(), Some("dotted"));
        assert_eq!(get(&v, "body[\"a.b\"]").as_deref(), Some("dotted"));
        assert_eq!(get(&v, "body.commits[5].id"), None);
        assert_eq!(
            get(&v, "body.commits[1]").as_deref(),
            Some(r#"{"id":"b2"}"#)
        );
        assert_eq!(get(&v, "header.x-github-event").as_deref(), Some("push"));
        assert_eq!(get(&v, "query.x").as_deref(), Some("a b"));
        assert_eq!(get(&v, "event").as_deref(), Some("push"));
        assert_eq!(get(&v, "delivery"), None);
        assert_eq!(
            get(&v, "body").as_deref(),
            Some(std::str::from_utf8(body).unwrap())
        );
        assert_eq!(
            get(&v, "query").as_deref(),
            Some(r#"{"token":"42","x":"a b"}"#)
        );
    }

    #[test]
    fn array_bodies_answer_to_root() {
        let v = RequestView::new(Vec::new(), "", br#"[{"e":"a"},{"e":"b"}]"#, Meta::default());
        assert_eq!(get(&v, "body.root.1.e").as_deref(), Some("b"));
        assert_eq!(get(&v, "body[0].e").as_deref(), Some("a"));
    }

    #[test]
    fn form_bodies() {
        // GitHub's form encoding: the JSON document is in `payload`.
        let body = b"payload=%7B%22ref%22%3A%22refs%2Fheads%2Fmain%22%7D";
        let v = RequestView::new(
            vec![(
                "content-type".into(),
                "application/x-www-form-urlencoded".into(),
            )],
            "",
            body,
            Meta::default(),
        );
        assert_eq!(get(&v, "body.ref").as_deref(), Some("refs/heads/main"));
        assert_eq!(
            get(&v, "form.payload").as_deref(),
            Some(r#"{"ref":"refs/heads/main"}"#)
        );
        // A Slack slash command: plain fields.
        let body = b"token=abc&command=%2Fdeploy&text=prod+now";
        let v = RequestView::new(
            vec![(
                "Content-Type".into(),
                "application/x-www-form-urlencoded; charset=utf-8".into(),
            )],
            "",
            body,
            Meta::default(),
        );
        assert_eq!(get(&v, "body.command").as_deref(), Some("/deploy"));
        assert_eq!(get(&v, "body.text").as_deref(), Some("prod now"));
        assert_eq!(get(&v, "form.text").as_deref(), Some("prod now"));
    }

    #[test]
    fn content_type_override() {
        let v = RequestView::new(
            vec![("content-type".into(), "text/plain".into())],
            "",
            b"a=1&b=2",
            Meta::default(),
        )
        .with_content_type(Some("application/x-www-form-urlencoded"));
        assert_eq!(get(&v, "body.b").as_deref(), Some("2"));
    }

    #[test]
    fn stored_events_keep_the_query() {
        let h = vec![
            ("content-type".to_string(), "application/json".to_string()),
            (QUERY_ENTRY.to_string(), "branch=dev".to_string()),
        ];
        let v = RequestView::from_stored(h, br#"{"a":1}"#, Meta::default());
        assert_eq!(get(&v, "query.branch").as_deref(), Some("dev"));
        assert_eq!(get(&v, "header.:query"), None);
        assert_eq!(
            get(&v, "headers").as_deref(),
            Some(r#"{"content-type":"application/json"}"#)
        );
        assert_eq!(get(&v, "body.a").as_deref(), Some("1"));
    }
}
