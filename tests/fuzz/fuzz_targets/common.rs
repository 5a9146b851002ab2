//! Shared harness. Inputs look like an HTTP request without the request
//! line, so seeds are readable and can be written from the test vectors:
//!
//! ```text
//! x-fuzz-now: 1700000000          (the clock; default 1700000000)
//! x-fuzz-secret: whsec_...        (one per secret; default "fuzz-secret")
//! x-fuzz-opt-header: X-Signature  (scheme options, as in [[hooks]])
//! Stripe-Signature: t=...,v1=...
//!
//! body bytes
//! ```
//!
//! Beyond "no panic", each verify target checks invariants: a match names
//! a configured key, and what the scheme signs for this body, it verifies.
#![allow(dead_code)]

use std::path::Path;
use std::time::{Duration, SystemTime};

use http::{HeaderMap, HeaderName, HeaderValue};
use webhookd::config::{Config, HookConfig, Secret};
use webhookd::rules as limits;
use webhookd::verify::{self, Scheme};

pub struct Input<'a> {
    pub headers: HeaderMap,
    pub now: SystemTime,
    pub secrets: Vec<Vec<u8>>,
    pub options: serde_json::Map<String, serde_json::Value>,
    pub body: &'a [u8],
}

pub fn split(data: &[u8]) -> Input<'_> {
    let (head, body) = match data.windows(2).position(|w| w == b"\n\n") {
        Some(i) => (&data[..i], &data[i + 2..]),
        None => (data, &b""[..]),
    };
    let mut inp = Input {
        headers: HeaderMap::new(),
        now: SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        secrets: Vec::new(),
        options: serde_json::Map::new(),
        body,
    };
    for line in head.split(|&c| c == b'\n') {
        let Some(colon) = line.iter().position(|&c| c == b':') else {
            continue;
        };
        let name = &line[..colon];
        let value = line[colon + 1..]
            .strip_prefix(b" ")
            .unwrap_or(&line[colon + 1..]);
        match name {
            b"x-fuzz-now" => {
                // Up to 12 digits, as the schemes accept (year 33658).
                if let Some(n) = std::str::from_utf8(value)
                    .ok()
                    .and_then(|s| s.parse::<u64>().ok())
                    .filter(|&n| n < 1_000_000_000_000)
                {
                    if let Some(t) = SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(n)) {
                        inp.now = t;
                    }
                }
            }
            b"x-fuzz-secret" => inp.secrets.push(value.to_vec()),
            _ if name.starts_with(b"x-fuzz-opt-") => {
                let key = String::from_utf8_lossy(&name[11..]).into_owned();
                let v = String::from_utf8_lossy(value).into_owned();
                let v = match v.as_str() {
                    "true" => serde_json::Value::Bool(true),
                    "false" => serde_json::Value::Bool(false),
                    _ => serde_json::Value::String(v),
                };
                inp.options.insert(key, v);
            }
            _ => {
                if let (Ok(n), Ok(v)) =
                    (HeaderName::from_bytes(name), HeaderValue::from_bytes(value))
                {
                    inp.headers.append(n, v);
                }
            }
        }
    }
    if inp.secrets.is_empty() {
        inp.secrets.push(b"fuzz-secret".to_vec());
    }
    inp
}

fn hook_config(
    scheme: &str,
    options: &serde_json::Map<String, serde_json::Value>,
) -> Option<HookConfig> {
    let mut h = options.clone();
    h.insert("id".into(), "fuzz".into());
    h.insert("scheme".into(), scheme.into());
    h.insert("secrets".into(), serde_json::Value::Array(Vec::new()));
    serde_json::from_value(serde_json::Value::Object(h)).ok()
}

pub fn verify(scheme_name: &str, data: &[u8]) {
    let inp = split(data);
    let Some(cfg) = hook_config(scheme_name, &inp.options) else {
        return;
    };
    let Ok(scheme) = Scheme::from_config(&cfg) else {
        return;
    };
    let secrets: Vec<Secret> = inp
        .secrets
        .iter()
        .filter_map(|s| scheme.prepare_secret(Secret(s.clone())).ok())
        .collect();
    if let Ok(v) = scheme.verify(&inp.headers, inp.body, &secrets, inp.now) {
        assert!(v.key_index < secrets.len());
        let _ = v.delivery_id.as_deref().map(str::len);
    }
    let _ = scheme.delivery_header();

    // Round trip: what `webhookd sign` prints for this body verifies.
    let Some(key) = secrets.first() else { return };
    if scheme_name == "gitlab" && std::str::from_utf8(&key.0).is_err() {
        // The token travels as text; `sign` prints it lossily.
        return;
    }
    let mut signed = HeaderMap::new();
    for (k, v) in scheme.sign(inp.body, key, "fuzz-delivery", "fuzz-event", inp.now) {
        match (
            HeaderName::from_bytes(k.as_bytes()),
            HeaderValue::from_str(&v),
        ) {
            (Ok(k), Ok(v)) => {
                signed.append(k, v);
            }
            // GitLab sends the token itself; not every byte string is a header value.
            _ => return,
        }
    }
    if let Err(e) = scheme.verify(&signed, inp.body, &secrets, inp.now) {
        panic!("{scheme_name}: own signature refused: {e}");
    }
}

pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(cfg) = Config::parse(Path::new("/fuzz.toml"), text) else {
        return;
    };
    // A config that validates builds: schemes, rules and proxies.
    for h in &cfg.hooks {
        if let Err(e) = Scheme::from_config(h) {
            panic!("validated hook does not build: {}: {}", e.key, e.message);
        }
        assert!(limits::HookRules::from_config(h).is_ok());
    }
    assert!(limits::Proxies::parse(&cfg.server.trusted_proxies).is_ok());
}

pub fn client_ip(data: &[u8]) {
    let inp = split(data);
    // Options: x-fuzz-opt-peer (socket address, or absent for a Unix peer)
    // and x-fuzz-opt-proxies (comma-separated trusted_proxies entries, each
    // "FROM [HEADER]"; without a header, entry i gets the i-th of the three).
    let peer = inp
        .options
        .get("peer")
        .and_then(|v| v.as_str())
        .and_then(|s| s.parse::<std::net::SocketAddr>().ok());
    use webhookd::config::{ForwardHeader, TrustedProxy};
    let all = [
        ForwardHeader::XForwardedFor,
        ForwardHeader::CfConnectingIp,
        ForwardHeader::XRealIp,
    ];
    let list: Vec<TrustedProxy> = inp
        .options
        .get("proxies")
        .and_then(|v| v.as_str())
        .map(|s| {
            s.split(',')
                .enumerate()
                .map(|(i, p)| {
                    let mut it = p.split_whitespace();
                    let from = it.next().unwrap_or("").to_string();
                    let header = it
                        .next()
                        .and_then(ForwardHeader::parse)
                        .unwrap_or(all[i % all.len()]);
                    TrustedProxy { from, header }
                })
                .collect()
        })
        .unwrap_or_default();
    let Ok(proxies) = limits::Proxies::parse(&list) else {
        return;
    };
    let got = limits::client_ip(peer, &inp.headers, &proxies);
    if !proxies.trusts(peer) {
        assert_eq!(
            got,
            peer.map(|p| p.ip().to_canonical()),
            "untrusted peer's headers believed"
        );
    }
}

pub fn parsers(data: &[u8]) {
    let s = String::from_utf8_lossy(data);
    let _ = limits::parse_rate(&s);
    if let Ok(n) = limits::parse_net(&s) {
        assert!(n.prefix_len() <= n.max_prefix_len());
    }
    let _ = verify::generic::parse_template(&s);
    let _ = verify::parse_timestamp(data, "t");
    let _ = verify::stripe::parse_header(data);
    let _ = verify::standard::parse_signatures(data, "webhook-signature");
    let _ = verify::standard::decode_secret(data);
    let _ = verify::decode_hex(data);
    let _ = verify::json_field(data, "event.type");
}

/// Payload rules and the request view: references parse or are refused,
/// any body (JSON, form, GitHub's payload= form, garbage) is read without
/// a panic, a compiled rule checks, exec values resolve or name what is
/// missing, and the token scheme verifies (options: x-fuzz-opt-rule as
/// JSON, x-fuzz-opt-query, x-fuzz-opt-token, x-fuzz-opt-ref).
pub fn payload(data: &[u8]) {
    use webhookd::payload::{values, Meta, RequestView, Rule, ValueRef};
    let inp = split(data);
    let opt = |k: &str| inp.options.get(k).and_then(|v| v.as_str()).unwrap_or("");
    let headers: Vec<(String, String)> = inp
        .headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let view = RequestView::new(headers.clone(), opt("query"), inp.body, Meta::default());
    let _ = view.document();
    for r in [
        opt("ref"),
        "body",
        "body.ref",
        "body.a.b",
        "body[0]",
        "body.root.1.x",
        "body[\"a.b\"]",
        "headers",
        "query",
        "form.payload",
        "header.content-type",
    ] {
        if let Ok(r) = ValueRef::parse(r) {
            let _ = view.get(&r).map(|f| f.text().len());
        }
    }
    if let Ok(spec) = serde_json::from_str::<webhookd::config::RuleSpec>(opt("rule")) {
        if let Ok(rule) = Rule::compile(&spec, "rule") {
            let _ = rule.check(&view);
        }
    }
    if let Ok(spec) = serde_json::from_str::<values::ExecValuesSpec>(opt("values")) {
        if let Ok(v) = values::ExecValues::compile(&spec, "action") {
            let stored = RequestView::from_stored(headers, inp.body, Meta::default());
            let _ = v.resolve(&stored);
        }
    }
    let mut h = serde_json::Map::new();
    h.insert("id".into(), "fuzz".into());
    h.insert("scheme".into(), "token".into());
    h.insert("token".into(), opt("token").into());
    if let Ok(cfg) = serde_json::from_value::<HookConfig>(serde_json::Value::Object(h)) {
        if let Ok(scheme) = Scheme::from_config(&cfg) {
            let secrets: Vec<Secret> = inp.secrets.iter().map(|s| Secret(s.clone())).collect();
            if let Ok(v) =
                scheme.verify_request(&inp.headers, opt("query"), inp.body, &secrets, inp.now)
            {
                assert!(v.key_index < secrets.len());
            }
        }
    }
}

/// `import-hooks`: any text converts or is refused, and what it prints
/// parses as a webhookd config (a failed check is fine, bad TOML is not).
pub fn import_hooks(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let opts = webhookd::import::Options {
        secrets_dir: Some(std::path::PathBuf::from("/etc/webhookd/secrets")),
        allow_unauthenticated: true,
    };
    let Ok(conv) = webhookd::import::convert(text, &opts) else {
        return;
    };
    if let Err(e) = Config::parse(Path::new("/imported.toml"), &conv.toml) {
        // Conversion output must at least be TOML; a config error (e.g. a
        // secret that does not resolve here) is fine, a syntax error is not.
        assert!(
            !matches!(e, webhookd::config::ConfigError::Parse { .. }),
            "import produced unparsable TOML: {e}\n{}",
            conv.toml
        );
    }
    // Secrets never reaching the output is checked by unit tests on
    // known secrets; a fuzzed "secret" may equally be a word the output
    // needs (a path, a header name).
    let _ = conv.secrets.len();
}
