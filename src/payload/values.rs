//! Request values for exec actions: `args`, `env` and `files`.
//!
//! ```toml
//! [hooks.action]
//! type = "exec"
//! command = ["/usr/local/bin/deploy"]
//! args = ["--branch", { value = "body.ref" }, { value = "body.head_commit.id", default = "" }]
//! env = { PUSHER = { value = "body.pusher.name" }, MODE = "prod" }
//! files = { WEBHOOK_BODY_FILE = { value = "body" } }   # env var = path of a temp file
//! ```
//!
//! Every value is one literal argv element or environment value: no shell
//! ever sees it. A referenced value that the event does not have is an
//! error naming it, unless a `default` is given.

use std::collections::BTreeMap;

use base64::Engine as _;
use serde::Deserialize;

pub use crate::config::{RefSpec, ValueSpec};

use super::path::Source;
use super::{RequestView, RuleError, ValueRef};

/// `args`, `env` and `files` as written in `[hooks.action]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct ExecValuesSpec {
    #[serde(default)]
    pub args: Vec<ValueSpec>,
    #[serde(default)]
    pub env: BTreeMap<String, ValueSpec>,
    #[serde(default)]
    pub files: BTreeMap<String, ValueSpec>,
}

#[derive(Debug, Clone)]
enum Value {
    Literal(String),
    Ref {
        r: ValueRef,
        default: Option<String>,
        base64: bool,
    },
}

/// Compiled `args`, `env` and `files`.
#[derive(Debug, Clone, Default)]
pub struct ExecValues {
    args: Vec<Value>,
    env: Vec<(String, Value)>,
    files: Vec<(String, Value)>,
}

/// What one delivery's command gets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resolved {
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    /// Environment variable name and the file's content.
    pub files: Vec<(String, Vec<u8>)>,
}

/// Why a delivery's values could not be built; permanent for that event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    #[error("{place}: request value {reference} is missing (give a default to allow that)")]
    Missing { place: String, reference: String },
    #[error("{place}: request value {reference} {problem}")]
    Unusable {
        place: String,
        reference: String,
        problem: &'static str,
    },
}

fn valid_env_name(n: &str) -> bool {
    !n.is_empty()
        && !n.starts_with(|c: char| c.is_ascii_digit())
        && n.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_')
}

fn compile_one(v: &ValueSpec, key: &str, file: bool) -> Result<Value, RuleError> {
    Ok(match v {
        ValueSpec::Literal(s) => {
            if s.contains('\0') {
                return Err(RuleError::new(key, "cannot contain a NUL byte"));
            }
            Value::Literal(s.clone())
        }
        ValueSpec::Ref(r) => {
            if r.base64 && !file {
                return Err(RuleError::new(
                    &format!("{key}.base64"),
                    "applies to `files` only",
                ));
            }
            Value::Ref {
                r: ValueRef::parse(&r.value)
                    .map_err(|m| RuleError::new(&format!("{key}.value"), m))?,
                default: r.default.clone(),
                base64: r.base64,
            }
        }
    })
}

impl ExecValues {
    /// Compile; `key` is where the spec sits (e.g. `action`).
    pub fn compile(spec: &ExecValuesSpec, key: &str) -> Result<ExecValues, RuleError> {
        let mut out = ExecValues::default();
        for (i, a) in spec.args.iter().enumerate() {
            out.args
                .push(compile_one(a, &format!("{key}.args[{i}]"), false)?);
        }
        for (what, map, file) in [("env", &spec.env, false), ("files", &spec.files, true)] {
            for (name, v) in map {
                let k = format!("{key}.{what}.{name}");
                if !valid_env_name(name) {
                    return Err(RuleError::new(
                        &k,
                        "an environment variable name is A-Z a-z 0-9 _, not starting with a digit",
                    ));
                }
                let c = compile_one(v, &k, file)?;
                if file {
                    out.files.push((name.clone(), c));
                } else {
                    out.env.push((name.clone(), c));
                }
            }
        }
        if let Some((n, _)) = out
            .files
            .iter()
            .find(|(n, _)| out.env.iter().any(|(e, _)| e == n))
        {
            return Err(RuleError::new(
                &format!("{key}.files.{n}"),
                "is also set in `env`",
            ));
        }
        Ok(out)
    }

    pub fn is_empty(&self) -> bool {
        self.args.is_empty() && self.env.is_empty() && self.files.is_empty()
    }

    /// Build one delivery's values.
    pub fn resolve(&self, view: &RequestView<'_>) -> Result<Resolved, ValueError> {
        let mut out = Resolved::default();
        for (i, a) in self.args.iter().enumerate() {
            let place = format!("args[{i}]");
            out.args.push(text(resolve(a, view, &place)?, &place, a)?);
        }
        for (n, v) in &self.env {
            let place = format!("env.{n}");
            out.env
                .push((n.clone(), text(resolve(v, view, &place)?, &place, v)?));
        }
        for (n, v) in &self.files {
            out.files
                .push((n.clone(), resolve(v, view, &format!("files.{n}"))?));
        }
        Ok(out)
    }
}

fn reference(v: &Value) -> String {
    match v {
        Value::Literal(_) => "literal".into(),
        Value::Ref { r, .. } => r.to_string(),
    }
}

/// Arguments and environment values are C strings: no NUL, valid text.
fn text(bytes: Vec<u8>, place: &str, v: &Value) -> Result<String, ValueError> {
    if bytes.contains(&0) {
        return Err(ValueError::Unusable {
            place: place.into(),
            reference: reference(v),
            problem: "contains a NUL byte, which an argument or environment value cannot hold",
        });
    }
    String::from_utf8(bytes).map_err(|_| ValueError::Unusable {
        place: place.into(),
        reference: reference(v),
        problem: "is not valid UTF-8",
    })
}

fn resolve(v: &Value, view: &RequestView<'_>, place: &str) -> Result<Vec<u8>, ValueError> {
    let (r, default, base64) = match v {
        Value::Literal(s) => return Ok(s.clone().into_bytes()),
        Value::Ref { r, default, base64 } => (r, default, base64),
    };
    let raw = if matches!(r.source, Source::RawBody) {
        // The body exactly as received, not a lossy text copy.
        Some(view.raw_body().to_vec())
    } else {
        view.get(r).map(|f| f.text().into_owned().into_bytes())
    };
    let raw = match (raw, default) {
        (Some(b), _) => b,
        (None, Some(d)) => return Ok(d.clone().into_bytes()),
        (None, None) => {
            return Err(ValueError::Missing {
                place: place.into(),
                reference: r.to_string(),
            })
        }
    };
    if *base64 {
        let trimmed: Vec<u8> = raw
            .iter()
            .copied()
            .filter(|b| !b.is_ascii_whitespace())
            .collect();
        return base64::engine::general_purpose::STANDARD
            .decode(&trimmed)
            .map_err(|_| ValueError::Unusable {
                place: place.into(),
                reference: r.to_string(),
                problem: "is not valid base64",
            });
    }
    Ok(raw)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::payload::Meta;

    fn spec(t: &str) -> ExecValuesSpec {
        toml::from_str(t).unwrap()
    }

    #[test]
    fn resolves_args_env_files() {
        let s = spec(
            r#"
args = ["deploy", { value = "body.ref" }, { value = "body.nope", default = "none" }, { value = "event" }]
env = { PUSHER = { value = "body.pusher.name" }, MODE = "prod" }
files = { BODY = { value = "body" }, BIN = { value = "body.bin", base64 = true } }
"#,
        );
        let c = ExecValues::compile(&s, "action").unwrap();
        let body = br#"{"ref":"refs/heads/main","pusher":{"name":"a; rm -rf /"},"bin":"aGk="}"#;
        let view = RequestView::new(
            vec![("content-type".into(), "application/json".into())],
            "",
            body,
            Meta {
                event: Some("push".into()),
                ..Meta::default()
            },
        );
        let r = c.resolve(&view).unwrap();
        assert_eq!(r.args, ["deploy", "refs/heads/main", "none", "push"]);
        assert_eq!(
            r.env,
            [
                ("MODE".to_string(), "prod".to_string()),
                ("PUSHER".to_string(), "a; rm -rf /".to_string())
            ]
        );
        assert_eq!(
            r.files,
            [
                ("BIN".to_string(), b"hi".to_vec()),
                ("BODY".to_string(), body.to_vec())
            ]
        );
    }

    #[test]
    fn missing_values_name_themselves() {
        let c = ExecValues::compile(
            &spec(r#"args = [{ value = "body.head_commit.id" }]"#),
            "action",
        )
        .unwrap();
        let view = RequestView::new(Vec::new(), "", b"{}", Meta::default());
        let e = c.resolve(&view).unwrap_err().to_string();
        assert!(
            e.contains("args[0]") && e.contains("body.head_commit.id"),
            "{e}"
        );
        assert!(e.contains("missing"), "{e}");
    }

    #[test]
    fn bad_specs_name_the_key() {
        let e =
            ExecValues::compile(&spec(r#"args = [{ value = "bdy.x" }]"#), "action").unwrap_err();
        assert_eq!(e.key, "action.args[0].value");
        let e = ExecValues::compile(&spec(r#"env = { "A-B" = "x" }"#), "action").unwrap_err();
        assert_eq!(e.key, "action.env.A-B");
        let e = ExecValues::compile(
            &spec(r#"env = { A = { value = "body", base64 = true } }"#),
            "action",
        )
        .unwrap_err();
        assert_eq!(e.key, "action.env.A.base64");
        assert!(toml::from_str::<ExecValuesSpec>(r#"args = [{ vale = "body" }]"#).is_err());
    }
}
