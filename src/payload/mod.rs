//! Payload rules and request values: pure, IO-free.
//!
//! A hook's `rule` decides whether a verified request is worth storing (a
//! push to `main`, a merged pull request); an exec action's `args`, `env`
//! and `files` take values out of the stored event. Both name values with
//! the same references ([`path`]) and read them through one
//! [`view::RequestView`], built from the live request at ingest and from the
//! stored event at delivery, so a retry or a replay sees exactly what the
//! rule saw.
//!
//! ```toml
//! [hooks.rule]
//! all = [
//!   { value = "header.X-GitHub-Event", one_of = ["push"] },
//!   { value = "body.ref", equals = "refs/heads/main" },
//!   { not = { value = "body.deleted", equals = true } },
//! ]
//! ```

pub mod path;
pub mod values;
pub mod view;

use std::fmt;

use regex::Regex;

pub use crate::config::{Number, RuleSpec, Scalar};

pub use path::ValueRef;
pub use view::{Found, Meta, RequestView};

/// A configuration problem: the key (relative to the hook) and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("key `{key}`: {message}")]
pub struct RuleError {
    pub key: String,
    pub message: String,
}

impl RuleError {
    fn new(key: &str, message: impl Into<String>) -> RuleError {
        RuleError {
            key: key.to_string(),
            message: message.into(),
        }
    }
}

#[derive(Debug, Clone)]
enum Op {
    Equals(String),
    NotEquals(String),
    OneOf(Vec<String>),
    Regex(Regex),
    Exists(bool),
    Lt(f64),
    Gt(f64),
}

impl Op {
    fn word(&self) -> &'static str {
        match self {
            Op::Equals(_) => "equals",
            Op::NotEquals(_) => "not_equals",
            Op::OneOf(_) => "one_of",
            Op::Regex(_) => "regex",
            Op::Exists(_) => "exists",
            Op::Lt(_) => "lt",
            Op::Gt(_) => "gt",
        }
    }
}

#[derive(Debug, Clone)]
enum Node {
    All(Vec<Rule>),
    Any(Vec<Rule>),
    Not(Box<Rule>),
    Match { value: ValueRef, op: Op },
}

/// A compiled rule.
#[derive(Debug, Clone)]
pub struct Rule {
    /// Where it was written, e.g. `rule.all[1]`.
    place: String,
    name: Option<String>,
    node: Node,
}

/// Why a request did not match: which rule, and what it found (never the
/// value itself: bodies and headers may carry tokens).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    pub rule: String,
    pub reason: String,
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.rule, self.reason)
    }
}

/// Deepest combinations accepted; a deeper config is a mistake.
const MAX_DEPTH: usize = 32;
/// Compiled-regex size cap (the `regex` crate's unit), per pattern.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

impl Rule {
    /// Compile `spec`, written under `key` (e.g. `rule`).
    pub fn compile(spec: &RuleSpec, key: &str) -> Result<Rule, RuleError> {
        Rule::compile_at(spec, key, 0)
    }

    fn compile_at(spec: &RuleSpec, key: &str, depth: usize) -> Result<Rule, RuleError> {
        if depth > MAX_DEPTH {
            return Err(RuleError::new(
                key,
                format!("rules nest deeper than {MAX_DEPTH} levels"),
            ));
        }
        let combos = [
            spec.all.is_some(),
            spec.any.is_some(),
            spec.not.is_some(),
            spec.value.is_some(),
        ]
        .iter()
        .filter(|b| **b)
        .count();
        if combos != 1 {
            return Err(RuleError::new(
                key,
                "a rule needs exactly one of `all`, `any`, `not` or `value` (with one operator)",
            ));
        }
        let list = |rules: &[RuleSpec], word: &str| -> Result<Vec<Rule>, RuleError> {
            if rules.is_empty() {
                return Err(RuleError::new(
                    &format!("{key}.{word}"),
                    "needs at least one rule",
                ));
            }
            rules
                .iter()
                .enumerate()
                .map(|(i, r)| Rule::compile_at(r, &format!("{key}.{word}[{i}]"), depth + 1))
                .collect()
        };
        let has_op = spec.equals.is_some()
            || spec.not_equals.is_some()
            || spec.one_of.is_some()
            || spec.regex.is_some()
            || spec.exists.is_some()
            || spec.lt.is_some()
            || spec.gt.is_some();
        let node = if let Some(r) = &spec.all {
            Node::All(list(r, "all")?)
        } else if let Some(r) = &spec.any {
            Node::Any(list(r, "any")?)
        } else if let Some(r) = &spec.not {
            Node::Not(Box::new(Rule::compile_at(
                r,
                &format!("{key}.not"),
                depth + 1,
            )?))
        } else {
            let text = spec.value.as_deref().unwrap_or_default();
            let value =
                ValueRef::parse(text).map_err(|m| RuleError::new(&format!("{key}.value"), m))?;
            let mut ops = Vec::new();
            if let Some(v) = &spec.equals {
                ops.push(Op::Equals(v.to_string()));
            }
            if let Some(v) = &spec.not_equals {
                ops.push(Op::NotEquals(v.to_string()));
            }
            if let Some(v) = &spec.one_of {
                if v.is_empty() {
                    return Err(RuleError::new(
                        &format!("{key}.one_of"),
                        "needs at least one value",
                    ));
                }
                ops.push(Op::OneOf(v.iter().map(|s| s.to_string()).collect()));
            }
            if let Some(p) = &spec.regex {
                let re = regex::RegexBuilder::new(p)
                    .size_limit(REGEX_SIZE_LIMIT)
                    .build()
                    .map_err(|e| {
                        RuleError::new(
                            &format!("{key}.regex"),
                            format!(
                                "invalid regular expression: {}",
                                e.to_string().replace('\n', " ")
                            ),
                        )
                    })?;
                ops.push(Op::Regex(re));
            }
            if let Some(b) = spec.exists {
                ops.push(Op::Exists(b));
            }
            if let Some(n) = spec.lt {
                ops.push(Op::Lt(n.get()));
            }
            if let Some(n) = spec.gt {
                ops.push(Op::Gt(n.get()));
            }
            if ops.len() != 1 {
                return Err(RuleError::new(
                    key,
                    "a `value` rule needs exactly one of `equals`, `not_equals`, `one_of`, \
                     `regex`, `exists`, `lt` or `gt` (combine several with `all`)",
                ));
            }
            let op = ops.remove(0);
            Node::Match { value, op }
        };
        if !matches!(node, Node::Match { .. }) && has_op {
            return Err(RuleError::new(
                key,
                "operators such as `equals` go with `value`, not with `all`/`any`/`not`",
            ));
        }
        Ok(Rule {
            place: key.to_string(),
            name: spec.name.clone(),
            node,
        })
    }

    /// Does the request match? On no, which rule decided it.
    pub fn check(&self, view: &RequestView<'_>) -> Result<(), Mismatch> {
        match &self.node {
            Node::All(rules) => {
                for r in rules {
                    r.check(view).map_err(|m| self.wrap(m))?;
                }
                Ok(())
            }
            Node::Any(rules) => {
                let mut first = None;
                for r in rules {
                    match r.check(view) {
                        Ok(()) => return Ok(()),
                        Err(m) => {
                            first.get_or_insert(m);
                        }
                    }
                }
                let why = first.map(|m| format!(" (first: {m})")).unwrap_or_default();
                Err(self.mismatch(format!("none of its {} rules matched{why}", rules.len())))
            }
            Node::Not(r) => match r.check(view) {
                Ok(()) => Err(self.mismatch(format!("{} matched", r.label()))),
                Err(_) => Ok(()),
            },
            Node::Match { value, op } => {
                let found = view.get(value);
                let ok = match (op, &found) {
                    (Op::Exists(want), f) => f.is_some() == *want,
                    (_, None) => {
                        return Err(self.mismatch(format!("{value} is missing")));
                    }
                    (Op::Equals(s), Some(f)) => f.text() == s.as_str(),
                    (Op::NotEquals(s), Some(f)) => f.text() != s.as_str(),
                    (Op::OneOf(v), Some(f)) => {
                        let t = f.text();
                        v.iter().any(|s| s.as_str() == t)
                    }
                    (Op::Regex(re), Some(f)) => re.is_match(&f.text()),
                    (Op::Lt(n), Some(f)) | (Op::Gt(n), Some(f)) => {
                        let Ok(x) = f.text().trim().parse::<f64>() else {
                            return Err(self.mismatch(format!("{value} is not a number")));
                        };
                        if matches!(op, Op::Lt(_)) {
                            x < *n
                        } else {
                            x > *n
                        }
                    }
                };
                if ok {
                    Ok(())
                } else {
                    Err(self.mismatch(format!("{value} {} did not match", op.word())))
                }
            }
        }
    }

    fn label(&self) -> String {
        match &self.name {
            Some(n) => format!("{} ({n})", self.place),
            None => self.place.clone(),
        }
    }

    fn mismatch(&self, reason: String) -> Mismatch {
        Mismatch {
            rule: self.label(),
            reason,
        }
    }

    /// A named combination reports itself, with the inner reason; an
    /// unnamed one passes the inner rule's report up unchanged.
    fn wrap(&self, inner: Mismatch) -> Mismatch {
        match &self.name {
            Some(_) => Mismatch {
                rule: self.label(),
                reason: format!("{}: {}", inner.rule, inner.reason),
            },
            None => inner,
        }
    }

    /// Does any reference in the rule need the body parsed?
    pub fn references(&self) -> Vec<&ValueRef> {
        let mut out = Vec::new();
        self.collect(&mut out);
        out
    }

    fn collect<'r>(&'r self, out: &mut Vec<&'r ValueRef>) {
        match &self.node {
            Node::All(r) | Node::Any(r) => r.iter().for_each(|x| x.collect(out)),
            Node::Not(r) => r.collect(out),
            Node::Match { value, .. } => out.push(value),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(toml_text: &str) -> RuleSpec {
        toml::from_str(toml_text).unwrap()
    }

    fn compile(toml_text: &str) -> Result<Rule, RuleError> {
        Rule::compile(&spec(toml_text), "rule")
    }

    fn view(body: &'static [u8]) -> RequestView<'static> {
        RequestView::new(
            vec![
                ("Content-Type".into(), "application/json".into()),
                ("X-GitHub-Event".into(), "push".into()),
            ],
            "token=42",
            body,
            Meta::default(),
        )
    }

    const PUSH: &[u8] = br#"{"ref":"refs/heads/main","deleted":false,"size":3,"pull_request":{"merged":true},"commits":[{"id":"c0"}]}"#;

    #[test]
    fn operators() {
        let v = view(PUSH);
        let ok = |t: &str| compile(t).unwrap().check(&v).is_ok();
        assert!(ok(r#"value = "body.ref"
equals = "refs/heads/main""#));
        assert!(!ok(r#"value = "body.ref"
equals = "refs/heads/dev""#));
        assert!(ok(r#"value = "body.ref"
not_equals = "refs/heads/dev""#));
        assert!(ok(r#"value = "header.x-github-event"
one_of = ["ping", "push"]"#));
        assert!(ok(r#"value = "body.ref"
regex = "^refs/heads/(main|master)$""#));
        assert!(!ok(r#"value = "body.ref"
regex = "^refs/tags/""#));
        assert!(ok(r#"value = "body.pull_request.merged"
equals = true"#));
        assert!(ok(r#"value = "body.size"
equals = 3"#));
        assert!(ok(r#"value = "body.size"
lt = 4"#));
        assert!(!ok(r#"value = "body.size"
gt = 3.5"#));
        assert!(ok(r#"value = "body.commits[0].id"
exists = true"#));
        assert!(ok(r#"value = "body.nope"
exists = false"#));
        assert!(ok(r#"value = "query.token"
equals = "42""#));
        // Missing values fail every operator but `exists = false`.
        assert!(!ok(r#"value = "body.nope"
not_equals = "x""#));
        assert!(!ok(r#"value = "body.ref"
lt = 1"#));
    }

    #[test]
    fn combinations_and_explanations() {
        let r = compile(
            r#"
all = [
  { value = "header.X-GitHub-Event", equals = "push" },
  { any = [ { value = "body.ref", equals = "refs/heads/dev" }, { value = "body.ref", regex = "^refs/tags/" } ] },
]"#,
        )
        .unwrap();
        let m = r.check(&view(PUSH)).unwrap_err();
        assert_eq!(m.rule, "rule.all[1]");
        assert!(m.reason.contains("none of its 2 rules matched"), "{m}");
        assert!(m.reason.contains("rule.all[1].any[0]"), "{m}");
        assert!(
            !m.to_string().contains("refs/heads/main"),
            "value leaked: {m}"
        );

        let r = compile(
            r#"
name = "main only"
not = { value = "body.ref", equals = "refs/heads/main" }"#,
        )
        .unwrap();
        let m = r.check(&view(PUSH)).unwrap_err();
        assert_eq!(m.rule, "rule (main only)");
        assert!(m.reason.contains("rule.not matched"), "{m}");

        let r = compile(
            r#"
all = [ { name = "branch", value = "body.ref", equals = "refs/heads/x" } ]"#,
        )
        .unwrap();
        let m = r.check(&view(PUSH)).unwrap_err();
        assert_eq!(
            m.to_string(),
            "rule.all[0] (branch): body.ref equals did not match"
        );
    }

    #[test]
    fn bad_rules_name_the_key() {
        let e = compile("value = \"body.ref\"\nregex = \"(\"").unwrap_err();
        assert_eq!(e.key, "rule.regex");
        assert!(e.message.contains("invalid regular expression"), "{e}");
        let e = compile("all = [{ value = \"payload.ref\", equals = \"x\" }]").unwrap_err();
        assert_eq!(e.key, "rule.all[0].value");
        assert!(e.message.contains("unknown value reference"), "{e}");
        let e = compile("all = [{ any = [{ value = \"body..x\", exists = true }] }]").unwrap_err();
        assert_eq!(e.key, "rule.all[0].any[0].value");
        let e = compile("value = \"body.ref\"").unwrap_err();
        assert!(e.message.contains("exactly one of `equals`"), "{e}");
        let e = compile("value = \"body.ref\"\nequals = \"a\"\nregex = \"b\"").unwrap_err();
        assert_eq!(e.key, "rule");
        let e = compile("all = []").unwrap_err();
        assert_eq!(e.key, "rule.all");
        let e =
            compile("all = [{ value = \"body.a\", exists = true }]\nequals = \"x\"").unwrap_err();
        assert!(e.message.contains("go with `value`"), "{e}");
        assert!(toml::from_str::<RuleSpec>("valeu = \"body.a\"").is_err());
    }
}
