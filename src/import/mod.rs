//! `webhookd import-hooks`: an adnanh/webhook hooks file (JSON or YAML, as
//! its `-hooks` flag takes, optionally a `-template` file) turned into
//! webhookd TOML.
//!
//! Pure: text in, TOML text, secret files to write and a list of problems
//! out. The CLI writes the secrets (mode 0600) and prints the rest. A
//! secret never goes into the TOML or a problem message: inline ones become
//! files under `--secrets-dir`, and `{{ getenv "X" }}`, `{{ cat "/p" }}` and
//! `{{ credential "n" }}` templates become `env:`, `file:` and
//! `credential:` references.
//!
//! How adnanh's trigger rules map: the signature match (`payload-hmac-*`,
//! `payload-hash-*`) becomes the hook's scheme; a value match on something
//! named like a token (`X-Gitlab-Token`, `?token=`, a `secret` field) becomes
//! the `token` scheme; `ip-whitelist` becomes `allow_ips`. Those must sit at
//! the top level of the rule (directly or under `and`), where they gate the
//! whole hook. What is left becomes the hook's payload `rule`.

pub mod run;
pub mod toml_out;

use std::fmt;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::payload::ValueRef;
use toml_out::{quote, Val};

/// Options from the command line.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Absolute directory for inline secrets; `None`: inline secrets are a problem.
    pub secrets_dir: Option<PathBuf>,
    /// Convert hooks that nothing authenticates (`scheme = "none"`).
    pub allow_unauthenticated: bool,
}

/// Something that could not be converted (or was converted with a caveat
/// the user must know about).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The hook's id, or `#N` when it has none.
    pub hook: String,
    /// Where in the file, e.g. `hooks[0].trigger-rule.and[1].match`.
    pub place: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "hook {:?} at {}: {}",
            self.hook, self.place, self.message
        )
    }
}

/// A secret to write: file name inside the secrets dir, and its bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretFile {
    pub name: String,
    pub bytes: Vec<u8>,
}

impl fmt::Debug for SecretFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretFile({}, <{} bytes>)", self.name, self.bytes.len())
    }
}

#[derive(Debug, Clone)]
pub struct Conversion {
    pub toml: String,
    pub secrets: Vec<SecretFile>,
    pub problems: Vec<Problem>,
    /// Hooks converted (possibly with problems) and hooks left out.
    pub converted: usize,
    pub skipped: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("not a hooks file: {0}")]
    Parse(String),
    #[error("not a hooks file: expected a list of hooks at the top level")]
    NotAList,
}

/// What a Go template in the file did, when it is one we understand.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Template {
    /// A secret reference (`env:X`, `file:/p`, `credential:n`).
    Ref(String),
    /// Anything else, with its line.
    Other { line: usize },
}

const MARK: &str = "__webhookd_template_";

/// Replace `{{ ... }}` with markers a JSON/YAML parser keeps as strings.
fn strip_templates(text: &str) -> (String, Vec<Template>) {
    let mut out = String::with_capacity(text.len());
    let mut found = Vec::new();
    let mut rest = text;
    let mut consumed = 0;
    while let Some(open) = rest.find("{{") {
        let Some(close) = rest[open..].find("}}").map(|c| c + open) else {
            break;
        };
        out.push_str(&rest[..open]);
        let inner = rest[open + 2..close]
            .trim_start_matches('-')
            .trim_end_matches('-')
            .trim();
        let line = text[..consumed + open].matches('\n').count() + 1;
        found.push(match understood(inner) {
            Some(r) => Template::Ref(r),
            None => Template::Other { line },
        });
        out.push_str(&format!("{MARK}{}__", found.len() - 1));
        consumed += close + 2;
        rest = &rest[close + 2..];
    }
    out.push_str(rest);
    (out, found)
}

/// `getenv "X" | js`, `cat "/path"`, `credential "name"` (the `js` filter
/// only escapes for the JSON string, which a reference does not need).
fn understood(inner: &str) -> Option<String> {
    let inner = inner
        .strip_suffix("| js")
        .or_else(|| inner.strip_suffix("|js"))
        .unwrap_or(inner)
        .trim();
    let (func, arg) = inner.split_once(char::is_whitespace)?;
    let arg = arg.trim();
    let arg = arg
        .strip_prefix('"')
        .and_then(|a| a.strip_suffix('"'))
        .unwrap_or(arg);
    if arg.is_empty() || arg.contains(|c: char| c.is_whitespace() || c == '"') {
        return None;
    }
    match func {
        "getenv" => Some(format!("env:{arg}")),
        "cat" if arg.starts_with('/') => Some(format!("file:{arg}")),
        "credential" if !arg.contains('/') => Some(format!("credential:{arg}")),
        _ => None,
    }
}

/// Parse and convert a whole hooks file.
pub fn convert(text: &str, opts: &Options) -> Result<Conversion, ImportError> {
    let (clean, templates) = strip_templates(text);
    // YAML is a superset of JSON (adnanh/webhook reads both with one YAML
    // parser, which also forgives the trailing commas in its docs).
    let doc: Value = serde_yaml_ng::from_str(&clean)
        .map_err(|e| ImportError::Parse(e.to_string().replace(MARK, "template_")))?;
    let Value::Array(hooks) = doc else {
        return Err(ImportError::NotAList);
    };
    let mut out = String::from(
        "# Converted from an adnanh/webhook hooks file by `webhookd import-hooks`.\n\
         # Check it with `webhookd check-config --config FILE`.\n\
         # adnanh/webhook listens on 0.0.0.0:9000; this keeps webhookd's default\n\
         # (127.0.0.1:9000, or the socket systemd passes). Add [server] listen to change it.\n",
    );
    let mut conv = Conversion {
        toml: String::new(),
        secrets: Vec::new(),
        problems: Vec::new(),
        converted: 0,
        skipped: 0,
    };
    let mut ids = std::collections::HashSet::new();
    for (i, h) in hooks.iter().enumerate() {
        let mut cx = Hook::new(i, h, &templates, opts);
        match cx.convert() {
            Some(text) if ids.insert(cx.id.clone()) => {
                out.push('\n');
                out.push_str(&text);
                conv.converted += 1;
                conv.secrets.append(&mut cx.secrets);
            }
            Some(_) => {
                cx.problem(
                    "id",
                    "a hook with this id came earlier; this one is left out",
                );
                conv.skipped += 1;
            }
            None => conv.skipped += 1,
        }
        conv.problems.append(&mut cx.problems);
    }
    conv.toml = out;
    Ok(conv)
}

/// Authentication found in the trigger rule.
#[derive(Debug, Clone)]
enum Auth {
    Signature {
        algorithm: &'static str,
        header: String,
        secret: String,
    },
    Token {
        reference: String,
        secret: String,
    },
}

/// One hook being converted.
struct Hook<'a> {
    index: usize,
    raw: &'a Value,
    templates: &'a [Template],
    opts: &'a Options,
    id: String,
    problems: Vec<Problem>,
    secrets: Vec<SecretFile>,
    /// `parse-parameters-as-json` names (payload source).
    json_params: Vec<String>,
    /// The trigger rule has a signature match at its top level: value
    /// matches are then plain rules, whatever their parameter is called.
    signed: bool,
}

impl<'a> Hook<'a> {
    fn new(index: usize, raw: &'a Value, templates: &'a [Template], opts: &'a Options) -> Self {
        let id = raw
            .get("id")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| format!("#{index}"));
        Hook {
            index,
            raw,
            templates,
            opts,
            id,
            problems: Vec::new(),
            secrets: Vec::new(),
            json_params: Vec::new(),
            signed: false,
        }
    }

    fn problem(&mut self, place: &str, message: impl Into<String>) {
        let place = if place.is_empty() {
            format!("hooks[{}]", self.index)
        } else {
            format!("hooks[{}].{place}", self.index)
        };
        self.problems.push(Problem {
            hook: self.id.clone(),
            place,
            message: message.into(),
        });
    }

    /// The template behind a marker string, if the string is one.
    fn template_of(&self, s: &str) -> Option<&'a Template> {
        let n: usize = s.strip_prefix(MARK)?.strip_suffix("__")?.parse().ok()?;
        self.templates.get(n)
    }

    /// A plain string option, refusing templates in it.
    fn text(&mut self, place: &str, v: &Value) -> Option<String> {
        let s = match v {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            _ => {
                self.problem(place, "expected a string");
                return None;
            }
        };
        if s.contains(MARK) {
            self.problem(
                place,
                "a Go template here cannot be converted (webhookd reads templates only as secret references)",
            );
            return None;
        }
        Some(s)
    }

    /// A secret: a reference when it came from a template, else a file.
    fn secret(&mut self, place: &str, v: &Value, purpose: &str) -> Option<String> {
        let Some(s) = v.as_str() else {
            self.problem(place, "expected the secret as a string");
            return None;
        };
        if s.contains(MARK) {
            return match self.template_of(s) {
                Some(Template::Ref(r)) => Some(r.clone()),
                Some(Template::Other { line }) => {
                    let line = *line;
                    self.problem(
                        place,
                        format!(
                            "the Go template on line {line} is not getenv/cat/credential; \
                             put the secret in a file and reference it as file:/path"
                        ),
                    );
                    None
                }
                None => {
                    self.problem(
                        place,
                        "a secret that mixes text and templates cannot be converted",
                    );
                    None
                }
            };
        }
        if s.is_empty() {
            self.problem(place, "the secret is empty");
            return None;
        }
        let Some(dir) = self.opts.secrets_dir.clone() else {
            self.problem(
                place,
                "an inline secret needs --secrets-dir DIR (it is written to a file there, never into the config)",
            );
            return None;
        };
        let name = format!("{}-{purpose}.secret", file_safe(&self.id));
        self.secrets.push(SecretFile {
            name: name.clone(),
            bytes: s.as_bytes().to_vec(),
        });
        Some(format!("file:{}", dir.join(name).display()))
    }

    /// adnanh's `{source, name}` as a webhookd value reference or literal.
    fn reference(&mut self, place: &str, arg: &Value) -> Option<Reference> {
        let source = arg.get("source").and_then(Value::as_str).unwrap_or("");
        let name = match arg.get("name") {
            Some(v) => self.text(&format!("{place}.name"), v)?,
            None => String::new(),
        };
        let need_name = |s: &mut Self| {
            if name.is_empty() {
                s.problem(place, format!("source {source:?} needs a name"));
                false
            } else {
                true
            }
        };
        let text = match source {
            "header" if need_name(self) => format!("header.{name}"),
            "url" | "query" if need_name(self) => format!("query.{name}"),
            "payload" if need_name(self) => return self.payload_ref(place, &name),
            "raw-request-body" | "entire-payload" => "body".to_string(),
            "entire-headers" => "headers".to_string(),
            "entire-query" => "query".to_string(),
            "string" => return Some(Reference::Literal(name)),
            "request" => match name.to_ascii_lowercase().as_str() {
                "method" => return Some(Reference::Literal("POST".into())),
                _ => {
                    self.problem(
                        place,
                        format!(
                            "request value {name:?} is not available to webhookd rules or commands \
                             (client addresses are checked with allow_ips)"
                        ),
                    );
                    return None;
                }
            },
            "template" => {
                self.problem(place, "Go template values are not supported; reference the value directly (body.PATH, header.NAME, query.NAME)");
                return None;
            }
            "header" | "url" | "query" | "payload" => return None,
            other => {
                self.problem(place, format!("unknown source {other:?}"));
                return None;
            }
        };
        self.checked(place, text)
    }

    fn payload_ref(&mut self, place: &str, name: &str) -> Option<Reference> {
        if name
            .split('.')
            .any(|s| s.starts_with('-') || s.starts_with('#'))
        {
            self.problem(
                place,
                format!(
                    "{name:?} looks like an XML path; webhookd reads JSON and form bodies only"
                ),
            );
            return None;
        }
        // parse-parameters-as-json on the form field `payload` is what
        // webhookd does by itself (GitHub's and Travis CI's form encoding).
        let mut path = name.to_string();
        for p in self.json_params.clone() {
            if p == "payload" {
                if let Some(rest) = name.strip_prefix("payload.") {
                    path = rest.to_string();
                } else if name == "payload" {
                    return self.checked(place, "form.payload".into());
                }
            } else if name == p || name.starts_with(&format!("{p}.")) {
                self.problem(
                    place,
                    format!(
                        "parse-parameters-as-json on {p:?}: webhookd decodes JSON only in a form's `payload` field"
                    ),
                );
                return None;
            }
        }
        self.checked(place, format!("body.{path}"))
    }

    fn checked(&mut self, place: &str, text: String) -> Option<Reference> {
        match ValueRef::parse(&text) {
            Ok(_) => Some(Reference::Value(text)),
            Err(e) => {
                self.problem(place, format!("cannot be referenced in webhookd: {e}"));
                None
            }
        }
    }

    fn convert(&mut self) -> Option<String> {
        let Some(obj) = self.raw.as_object() else {
            self.problem("", "expected a hook object");
            return None;
        };
        let id = self.id.clone();
        if obj.get("id").and_then(Value::as_str).is_none() {
            self.problem("id", "a hook needs an id");
            return None;
        }
        if id.is_empty()
            || id.len() > 64
            || !id
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
        {
            self.problem(
                "id",
                "webhookd ids are 1-64 characters of A-Z a-z 0-9 - _ .",
            );
            return None;
        }
        const KNOWN: &[&str] = &[
            "id",
            "execute-command",
            "command-working-directory",
            "response-message",
            "response-headers",
            "success-http-response-code",
            "include-command-output-in-response",
            "include-command-output-in-response-on-error",
            "pass-arguments-to-command",
            "pass-environment-to-command",
            "pass-file-to-command",
            "parse-parameters-as-json",
            "trigger-rule",
            "trigger-rule-mismatch-http-response-code",
            "trigger-signature-soft-failures",
            "incoming-payload-content-type",
            "http-methods",
            "pre-hook-command",
        ];
        for k in obj.keys() {
            if !KNOWN.contains(&k.as_str()) {
                self.problem(k, "unknown key, ignored");
            }
        }
        if let Some(v) = obj.get("pre-hook-command") {
            if !v.is_null() {
                self.problem("pre-hook-command", "not supported: webhookd has no pre-hook command (rules and request values cover its uses)");
            }
        }
        if obj
            .get("trigger-signature-soft-failures")
            .and_then(Value::as_bool)
            == Some(true)
        {
            self.problem(
                "trigger-signature-soft-failures",
                "not supported: a request whose signature does not match is always refused (401)",
            );
        }
        let mut payload_content_type = None;
        if let Some(ct) = obj
            .get("incoming-payload-content-type")
            .filter(|v| !v.is_null())
        {
            let ct = self
                .text("incoming-payload-content-type", ct)
                .unwrap_or_default();
            let lower = ct.trim().to_ascii_lowercase();
            if lower == "application/json" || lower == "application/x-www-form-urlencoded" {
                payload_content_type = Some(lower);
            } else {
                self.problem(
                    "incoming-payload-content-type",
                    format!("{ct:?}: webhookd reads JSON and form bodies only"),
                );
            }
        }
        if let Some(Value::Array(methods)) = obj.get("http-methods") {
            let other: Vec<&str> = methods
                .iter()
                .filter_map(Value::as_str)
                .filter(|m| !m.eq_ignore_ascii_case("POST"))
                .collect();
            if !other.is_empty() {
                self.problem(
                    "http-methods",
                    format!("webhookd hooks answer POST only; {other:?} would get 405"),
                );
            }
        }
        if let Some(Value::Array(params)) = obj.get("parse-parameters-as-json") {
            for (i, p) in params.iter().enumerate() {
                match (
                    p.get("source").and_then(Value::as_str),
                    p.get("name").and_then(Value::as_str),
                ) {
                    (Some("payload"), Some(n)) => self.json_params.push(n.to_string()),
                    _ => self.problem(
                        &format!("parse-parameters-as-json[{i}]"),
                        "only payload fields can be parsed as JSON",
                    ),
                }
            }
        }

        // The trigger rule: authentication out, the rest as `rule`.
        let mut auth = Vec::new();
        let mut ips = Vec::new();
        let mut rest = Vec::new();
        let mut ok = true;
        if let Some(r) = obj.get("trigger-rule").filter(|r| !r.is_null()) {
            self.signed = top_signature(r);
            ok &= self.top_rule("trigger-rule", r, &mut auth, &mut ips, &mut rest);
        }
        if !ok {
            return None;
        }
        let mut lines = Vec::new();
        let mut refused = false;
        let kv = |k: &str, v: Val| format!("{} = {}", toml_out::key(k), v.render());
        lines.push(kv("id", Val::s(&id)));
        match auth.len() {
            0 => {
                if !self.opts.allow_unauthenticated {
                    let what = if ips.is_empty() {
                        "nothing authenticates this hook"
                    } else {
                        "only an IP allowlist protects this hook"
                    };
                    self.problem(
                        "trigger-rule",
                        format!(
                            "{what}; convert it with --allow-unauthenticated (scheme = \"none\")"
                        ),
                    );
                    // Go on, so the other problems of this hook are listed too.
                    refused = true;
                }
                lines.push(kv("scheme", Val::s("none")));
            }
            1 => match auth.remove(0) {
                Auth::Signature {
                    algorithm,
                    header,
                    secret,
                } => {
                    let lower = header.to_ascii_lowercase();
                    if lower == "x-hub-signature-256" && algorithm == "sha256" {
                        lines.push(kv("scheme", Val::s("github")));
                        lines.push(kv("secrets", Val::Arr(vec![Val::s(secret)])));
                    } else if lower == "x-hub-signature" && algorithm == "sha1" {
                        lines.push(kv("scheme", Val::s("github")));
                        lines.push(kv("secrets", Val::Arr(vec![Val::s(secret)])));
                        lines.push(kv("legacy_sha1", Val::Bool(true)));
                    } else {
                        lines.push(kv("scheme", Val::s("hmac")));
                        lines.push(kv("secrets", Val::Arr(vec![Val::s(secret)])));
                        lines.push(kv("header", Val::s(&header)));
                        lines.push(kv("algorithm", Val::s(algorithm)));
                        lines.push(kv("encoding", Val::s("hex")));
                        let provider = ["gitea", "gogs"]
                            .into_iter()
                            .find(|p| lower == format!("x-{p}-signature"));
                        if let Some(p) = provider {
                            let cap = if p == "gitea" { "Gitea" } else { "Gogs" };
                            lines.push(kv("delivery_header", Val::s(format!("X-{cap}-Delivery"))));
                            lines.push(kv("event_header", Val::s(format!("X-{cap}-Event"))));
                        }
                        lines.push(format!(
                            "# adnanh/webhook also accepted a \"{algorithm}=\" prefix in {header}; if your sender sends one, add prefix = \"{algorithm}=\""
                        ));
                    }
                }
                Auth::Token { reference, secret } => {
                    lines.push(format!(
                        "# from adnanh/webhook's value match on {reference}, which nothing else authenticated"
                    ));
                    lines.push(format!("scheme = {}", quote("token")));
                    lines.push(format!("secrets = [{}]", quote(&secret)));
                    lines.push(format!("token = {}", quote(&reference)));
                }
            },
            _ => {
                self.problem(
                    "trigger-rule",
                    "more than one signature or token match; webhookd checks one scheme per hook",
                );
                return None;
            }
        }
        if let Some(ct) = payload_content_type {
            lines.push(kv("payload_content_type", Val::s(ct)));
        }
        if !ips.is_empty() {
            lines.push(format!(
                "allow_ips = {}",
                Val::Arr(ips.into_iter().map(Val::Str).collect()).render()
            ));
        }
        let capture = obj
            .get("include-command-output-in-response")
            .and_then(Value::as_bool)
            == Some(true);
        if capture {
            lines.push("respond = \"after_action\"".into());
            if obj
                .get("include-command-output-in-response-on-error")
                .and_then(Value::as_bool)
                == Some(true)
            {
                lines.push("respond_error_output = true".into());
            }
        }
        match rest.len() {
            0 => {}
            1 => lines.push(format!("rule = {}", rest.remove(0).render())),
            _ => lines.push(format!(
                "rule = {}",
                Val::table(vec![("all", Val::Arr(rest))]).render()
            )),
        }

        // Responses.
        let mut accepted = Vec::new();
        if let Some(code) = self.status(obj, "success-http-response-code") {
            accepted.push(("status", Val::Int(code)));
        }
        if let Some(m) = obj.get("response-message").filter(|v| !v.is_null()) {
            if let Some(m) = self.text("response-message", m) {
                accepted.push(("body", Val::s(m)));
            }
        }
        if let Some(Value::Array(hs)) = obj.get("response-headers") {
            let mut pairs = Vec::new();
            for (i, h) in hs.iter().enumerate() {
                let place = format!("response-headers[{i}]");
                let (Some(n), Some(v)) = (h.get("name"), h.get("value")) else {
                    self.problem(&place, "expected {name, value}");
                    continue;
                };
                if let (Some(n), Some(v)) = (self.text(&place, n), self.text(&place, v)) {
                    pairs.push((n, Val::s(v)));
                }
            }
            if !pairs.is_empty() {
                accepted.push(("headers", Val::Table(pairs)));
            }
        }
        let ignored = self.status(obj, "trigger-rule-mismatch-http-response-code");
        if !accepted.is_empty() || ignored.is_some() {
            lines.push(String::new());
            lines.push("[hooks.response]".into());
            if !accepted.is_empty() {
                let t = Val::table(accepted).render();
                lines.push(format!("accepted = {t}"));
                lines.push(format!("duplicate = {t}"));
            }
            if let Some(code) = ignored {
                lines.push(format!("ignored = {{ status = {code} }}"));
            }
        }

        // The action.
        if let Some(cmd) = obj.get("execute-command").filter(|v| !v.is_null()) {
            let cmd = self.text("execute-command", cmd)?;
            let workdir = match obj.get("command-working-directory") {
                Some(v) if !v.is_null() => Some(self.text("command-working-directory", v)?),
                _ => None,
            };
            let program = if cmd.starts_with('/') {
                cmd.clone()
            } else if let Some(w) = workdir.as_deref().filter(|w| w.starts_with('/')) {
                Path::new(w).join(&cmd).display().to_string()
            } else {
                self.problem(
                    "execute-command",
                    format!("{cmd:?} is not an absolute path and there is no absolute command-working-directory; webhookd does not search PATH"),
                );
                return None;
            };
            lines.push(String::new());
            lines.push("[hooks.action]".into());
            lines.push("type = \"exec\"".into());
            lines.push(format!("command = [{}]", quote(&program)));
            if let Some(w) = workdir {
                lines.push(format!("workdir = {}", quote(&w)));
            }
            let args = self.values("pass-arguments-to-command", obj, |_, _| None);
            if !args.is_empty() {
                let arr: Vec<Val> = args.into_iter().map(|(_, v)| v).collect();
                lines.push(format!("args = {}", Val::Arr(arr).render()));
            }
            let env = self.values("pass-environment-to-command", obj, |a, name| {
                Some(
                    a.get("envname")
                        .and_then(Value::as_str)
                        .filter(|s| !s.is_empty())
                        .map(str::to_string)
                        .unwrap_or_else(|| env_name(&format!("HOOK_{name}"))),
                )
            });
            if !env.is_empty() {
                let t: Vec<(String, Val)> =
                    env.into_iter().filter_map(|(k, v)| Some((k?, v))).collect();
                lines.push(format!("env = {}", Val::Table(t).render()));
            }
            let files = self.values("pass-file-to-command", obj, |a, name| {
                Some(
                    a.get("envname")
                        .and_then(Value::as_str)
                        .filter(|s| !s.is_empty())
                        .map(str::to_string)
                        .unwrap_or_else(|| env_name(&format!("HOOK_{}", name.to_uppercase()))),
                )
            });
            if !files.is_empty() {
                let t: Vec<(String, Val)> = files
                    .into_iter()
                    .filter_map(|(k, v)| Some((k?, v)))
                    .collect();
                lines.push(format!("files = {}", Val::Table(t).render()));
            }
            lines.push("# adnanh/webhook ran commands at once, without a time limit; here: concurrency = 1, timeout = \"60s\", failures are retried ([hooks.retry])".into());
        } else {
            self.problem(
                "execute-command",
                "no command: the hook only stores events (add [hooks.action] to act on them)",
            );
        }
        if refused {
            return None;
        }
        let mut text = String::from("[[hooks]]\n");
        for l in lines {
            text.push_str(&l);
            text.push('\n');
        }
        Some(text)
    }

    fn status(&mut self, obj: &serde_json::Map<String, Value>, key: &str) -> Option<i64> {
        let v = obj.get(key)?;
        match v
            .as_i64()
            .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        {
            Some(c) if (100..=599).contains(&c) => Some(c),
            Some(0) => None,
            _ => {
                self.problem(key, "expected an HTTP status code 100-599");
                None
            }
        }
    }

    /// `pass-*-to-command` lists: (env name, value spec).
    fn values(
        &mut self,
        key: &str,
        obj: &serde_json::Map<String, Value>,
        name_of: impl Fn(&Value, &str) -> Option<String>,
    ) -> Vec<(Option<String>, Val)> {
        let Some(Value::Array(items)) = obj.get(key) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for (i, a) in items.iter().enumerate() {
            let place = format!("{key}[{i}]");
            let Some(r) = self.reference(&place, a) else {
                continue;
            };
            let name = a.get("name").and_then(Value::as_str).unwrap_or("");
            let base64 = a.get("base64decode").and_then(Value::as_bool) == Some(true);
            let v = match r {
                Reference::Literal(s) => Val::s(s),
                Reference::Value(v) => {
                    let mut t = vec![("value", Val::s(v))];
                    if base64 {
                        t.push(("base64", Val::Bool(true)));
                    }
                    Val::table(t)
                }
            };
            out.push((name_of(a, name), v));
        }
        out
    }

    /// The top level of a trigger rule: pull authentication out of `and`.
    fn top_rule(
        &mut self,
        place: &str,
        r: &Value,
        auth: &mut Vec<Auth>,
        ips: &mut Vec<String>,
        rest: &mut Vec<Val>,
    ) -> bool {
        if let Some(Value::Array(items)) = r.get("and") {
            let mut ok = true;
            for (i, it) in items.iter().enumerate() {
                ok &= self.top_rule(&format!("{place}.and[{i}]"), it, auth, ips, rest);
            }
            return ok;
        }
        if let Some(m) = r.get("match") {
            let mplace = format!("{place}.match");
            match self.auth_match(&mplace, m) {
                AuthMatch::Auth(a) => {
                    auth.push(a);
                    return true;
                }
                AuthMatch::Ip(range) => {
                    ips.push(range);
                    return true;
                }
                AuthMatch::Failed => return false,
                AuthMatch::NotAuth => {}
            }
        }
        match self.rule(place, r) {
            Some(v) => {
                rest.push(v);
                true
            }
            None => false,
        }
    }

    fn auth_match(&mut self, place: &str, m: &Value) -> AuthMatch {
        let kind = m.get("type").and_then(Value::as_str).unwrap_or("");
        let algorithm = match kind {
            "payload-hmac-sha1" | "payload-hash-sha1" => Some("sha1"),
            "payload-hmac-sha256" | "payload-hash-sha256" => Some("sha256"),
            "payload-hmac-sha512" | "payload-hash-sha512" => Some("sha512"),
            _ => None,
        };
        if let Some(algorithm) = algorithm {
            let param = m.get("parameter");
            let src = param
                .and_then(|p| p.get("source"))
                .and_then(Value::as_str)
                .unwrap_or("");
            let Some(header) = param
                .and_then(|p| p.get("name"))
                .and_then(Value::as_str)
                .filter(|_| src == "header")
            else {
                self.problem(
                    place,
                    "webhookd reads signatures from a header only (parameter.source = \"header\")",
                );
                return AuthMatch::Failed;
            };
            if algorithm == "sha1" && !header.eq_ignore_ascii_case("x-hub-signature") {
                self.problem(
                    place,
                    "HMAC-SHA1 is accepted only as GitHub's legacy X-Hub-Signature; ask the sender for SHA-256",
                );
                return AuthMatch::Failed;
            }
            let Some(secret) = m
                .get("secret")
                .and_then(|s| self.secret(&format!("{place}.secret"), s, "hmac"))
            else {
                if m.get("secret").is_none() {
                    self.problem(place, "a signature match needs a secret");
                }
                return AuthMatch::Failed;
            };
            return AuthMatch::Auth(Auth::Signature {
                algorithm,
                header: header.to_string(),
                secret,
            });
        }
        match kind {
            "ip-whitelist" => {
                let Some(range) = m.get("ip-range").and_then(Value::as_str) else {
                    self.problem(place, "ip-whitelist needs an ip-range");
                    return AuthMatch::Failed;
                };
                let range = range.trim().to_string();
                if range.parse::<ipnet::IpNet>().is_err()
                    && range.parse::<std::net::IpAddr>().is_err()
                {
                    self.problem(
                        place,
                        format!("{range:?} is not an IP address or CIDR range"),
                    );
                    return AuthMatch::Failed;
                }
                AuthMatch::Ip(range)
            }
            "scalr-signature" => {
                self.problem(place, "scalr-signature is not supported: webhookd has no Scalr scheme (Scalr signs with HMAC-SHA1 over the body and a date header)");
                AuthMatch::Failed
            }
            "value" if !self.signed && self.is_token(m) => {
                let Some(param) = m.get("parameter") else {
                    return AuthMatch::NotAuth;
                };
                let Some(Reference::Value(reference)) =
                    self.reference(&format!("{place}.parameter"), param)
                else {
                    return AuthMatch::Failed;
                };
                let Some(secret) = m
                    .get("value")
                    .and_then(|v| self.secret(&format!("{place}.value"), v, "token"))
                else {
                    return AuthMatch::Failed;
                };
                AuthMatch::Auth(Auth::Token { reference, secret })
            }
            _ => AuthMatch::NotAuth,
        }
    }

    /// A value match that is really a shared secret: the parameter is named
    /// like one (token, secret, key, password, auth), or the value comes
    /// from a secret template.
    fn is_token(&self, m: &Value) -> bool {
        let name = m
            .get("parameter")
            .and_then(|p| p.get("name"))
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_ascii_lowercase();
        let from_template = m
            .get("value")
            .and_then(Value::as_str)
            .is_some_and(|v| v.contains(MARK));
        let last = name.rsplit('.').next().unwrap_or("");
        from_template
            || ["token", "secret", "key", "password", "passwd", "auth"]
                .iter()
                .any(|w| last.contains(w))
    }

    /// A rule that is not authentication, as a webhookd rule table.
    fn rule(&mut self, place: &str, r: &Value) -> Option<Val> {
        let obj = r.as_object()?;
        if let Some(Value::Array(items)) = obj.get("and") {
            return self.list(place, "and", "all", items);
        }
        if let Some(Value::Array(items)) = obj.get("or") {
            return self.list(place, "or", "any", items);
        }
        if let Some(inner) = obj.get("not") {
            let v = self.rule(&format!("{place}.not"), inner)?;
            return Some(Val::table(vec![("not", v)]));
        }
        let Some(m) = obj.get("match") else {
            self.problem(place, "expected and, or, not or match");
            return None;
        };
        let mplace = format!("{place}.match");
        let kind = m.get("type").and_then(Value::as_str).unwrap_or("");
        match kind {
            "value" | "regex" => {}
            _ if kind.starts_with("payload-h")
                || kind == "ip-whitelist"
                || kind == "scalr-signature" =>
            {
                self.problem(
                    &mplace,
                    format!("a {kind} match inside or/not cannot be converted: webhookd checks signatures, tokens and allowlists for the whole hook"),
                );
                return None;
            }
            other => {
                self.problem(&mplace, format!("match type {other:?} is not supported"));
                return None;
            }
        }
        let param = m.get("parameter")?;
        let r = self.reference(&format!("{mplace}.parameter"), param)?;
        let reference = match r {
            Reference::Value(v) => v,
            Reference::Literal(_) => {
                self.problem(
                    &mplace,
                    "a match on a literal string is always the same; drop it",
                );
                return None;
            }
        };
        if kind == "value" {
            if !self.signed && self.is_token(m) {
                self.problem(
                    &mplace,
                    "a token match inside or/not cannot be converted (it would put the token in the config)",
                );
                return None;
            }
            let v = self.text(&format!("{mplace}.value"), m.get("value")?)?;
            Some(Val::table(vec![
                ("value", Val::s(reference)),
                ("equals", Val::s(v)),
            ]))
        } else {
            let re = self.text(&format!("{mplace}.regex"), m.get("regex")?)?;
            if let Err(e) = regex::Regex::new(&re) {
                self.problem(
                    &format!("{mplace}.regex"),
                    format!(
                        "not a regular expression webhookd accepts: {}",
                        e.to_string().replace('\n', " ")
                    ),
                );
                return None;
            }
            Some(Val::table(vec![
                ("value", Val::s(reference)),
                ("regex", Val::s(re)),
            ]))
        }
    }

    fn list(&mut self, place: &str, theirs: &str, ours: &str, items: &[Value]) -> Option<Val> {
        let mut out = Vec::new();
        for (i, it) in items.iter().enumerate() {
            out.push(self.rule(&format!("{place}.{theirs}[{i}]"), it)?);
        }
        if out.is_empty() {
            self.problem(place, format!("an empty {theirs}"));
            return None;
        }
        Some(Val::table(vec![(ours, Val::Arr(out))]))
    }
}

/// Is there a signature match directly in the rule or its top-level `and`s?
fn top_signature(r: &Value) -> bool {
    if let Some(Value::Array(items)) = r.get("and") {
        return items.iter().any(top_signature);
    }
    r.get("match")
        .and_then(|m| m.get("type"))
        .and_then(Value::as_str)
        .is_some_and(|t| t.starts_with("payload-hmac-") || t.starts_with("payload-hash-"))
}

enum AuthMatch {
    Auth(Auth),
    Ip(String),
    NotAuth,
    Failed,
}

enum Reference {
    Literal(String),
    Value(String),
}

fn env_name(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn file_safe(id: &str) -> String {
    id.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests;
