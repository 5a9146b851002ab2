//! Every scheme against its vectors in tests/vectors/*.json (from the
//! providers' documentation or computed with their official libraries by
//! tests/vectors/generate.py, which also checks each case against the
//! official verifier), plus sign -> verify round trips for every scheme.
//! Pure: no daemon, no clock.

use std::path::Path;
use std::time::{Duration, SystemTime};

use http::{HeaderMap, HeaderName, HeaderValue};
use serde_json::{json, Value};
use webhookd::config::{HookConfig, Secret};
use webhookd::verify::{Scheme, VerifyError};

fn scheme(name: &str, options: &Value) -> Scheme {
    let mut h = json!({"id": "t", "scheme": name, "secrets": []});
    for (k, v) in options.as_object().unwrap() {
        h[k] = v.clone();
    }
    let cfg: HookConfig = serde_json::from_value(h).unwrap();
    Scheme::from_config(&cfg).unwrap_or_else(|e| panic!("{name}: {}: {}", e.key, e.message))
}

fn kind(e: &VerifyError) -> &'static str {
    match e {
        VerifyError::MissingHeader(_) => "MissingHeader",
        VerifyError::Malformed { .. } => "Malformed",
        VerifyError::Mismatch => "Mismatch",
        VerifyError::NoSecret => "NoSecret",
        VerifyError::MissingToken(_) => "MissingToken",
        VerifyError::Timestamp { .. } => "Timestamp",
    }
}

fn at(secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
}

#[test]
fn vectors() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    let mut schemes = Vec::new();
    let mut total = 0;
    for f in files {
        let doc: Value = serde_json::from_slice(&std::fs::read(&f).unwrap()).unwrap();
        let name = doc["scheme"].as_str().unwrap();
        schemes.push(name.to_string());
        for c in doc["cases"].as_array().unwrap() {
            total += 1;
            let what = format!("{name}: {}", c["name"]);
            let s = scheme(name, &c["options"]);
            let secrets: Vec<Secret> = c["secrets"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| {
                    s.prepare_secret(Secret(v.as_str().unwrap().as_bytes().to_vec()))
                        .unwrap()
                })
                .collect();
            let mut headers = HeaderMap::new();
            for h in c["headers"].as_array().unwrap() {
                headers.append(
                    HeaderName::from_bytes(h[0].as_str().unwrap().as_bytes()).unwrap(),
                    HeaderValue::from_str(h[1].as_str().unwrap()).unwrap(),
                );
            }
            let body = c["body"].as_str().unwrap().as_bytes();
            let got = s.verify(&headers, body, &secrets, at(c["now"].as_u64().unwrap()));
            let e = &c["expect"];
            if e["ok"].as_bool().unwrap() {
                let v = got.unwrap_or_else(|err| panic!("{what}: refused: {err}"));
                assert_eq!(
                    v.key_index as u64,
                    e["key_index"].as_u64().unwrap(),
                    "{what}"
                );
                assert_eq!(
                    v.delivery_id.as_deref(),
                    e["delivery_id"].as_str(),
                    "{what}"
                );
                assert_eq!(v.event.as_deref(), e["event"].as_str(), "{what}");
            } else {
                let err = got.err().unwrap_or_else(|| panic!("{what}: accepted"));
                assert_eq!(kind(&err), e["error"].as_str().unwrap(), "{what}: {err}");
                if kind(&err) == "Timestamp" {
                    assert!(
                        err.to_string().contains("timestamp outside tolerance"),
                        "{err}"
                    );
                }
                // Messages go to the sender: never a secret.
                for sec in c["secrets"].as_array().unwrap() {
                    assert!(!err.to_string().contains(sec.as_str().unwrap()), "{what}");
                }
            }
        }
    }
    schemes.sort();
    assert_eq!(
        schemes,
        ["github", "gitlab", "hmac", "shopify", "slack", "standard", "stripe"],
        "a vector file per scheme"
    );
    assert!(total >= 70, "{total} cases");
}

/// What `webhookd sign` prints verifies, for every scheme and option mix.
#[test]
fn sign_then_verify_every_scheme() {
    let now = at(1_700_000_000);
    let body = br#"{"id":"evt_9","type":"thing.happened","event":{"type":"thing"}}"#;
    let cases = [
        ("github", json!({})),
        ("github", json!({"legacy_sha1": true})),
        ("standard", json!({})),
        ("stripe", json!({"tolerance": "10m"})),
        ("slack", json!({"delivery_field": "id"})),
        ("gitlab", json!({})),
        ("shopify", json!({})),
        ("hmac", json!({"header": "X-Sig"})),
        (
            "hmac",
            json!({"header": "X-Sig", "prefix": "v1=", "encoding": "base64", "algorithm": "sha512",
                   "timestamp_header": "X-Ts", "delivery_header": "X-Id", "event_header": "X-Ev",
                   "template": "v1:{timestamp}:{delivery}:{body}"}),
        ),
    ];
    for (name, opts) in cases {
        let s = scheme(name, &opts);
        let raw = if name == "standard" {
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
        } else {
            "a-secret"
        };
        let key = s.prepare_secret(Secret(raw.as_bytes().to_vec())).unwrap();
        let mut headers = HeaderMap::new();
        for (k, v) in s.sign(body, &key, "del-7", "thing", now) {
            headers.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(&v).unwrap(),
            );
        }
        let wrong = Secret(b"other".to_vec());
        let v = s
            .verify(&headers, body, &[wrong.clone(), key.clone()], now)
            .unwrap_or_else(|e| panic!("{name} {opts}: {e}"));
        assert_eq!(v.key_index, 1, "{name}");
        assert!(v.delivery_id.is_some(), "{name}");
        assert!(s.verify(&headers, body, &[wrong], now).is_err(), "{name}");
        let mut flipped = body.to_vec();
        flipped[5] ^= 1;
        if name != "gitlab" {
            assert!(s.verify(&headers, &flipped, &[key], now).is_err(), "{name}");
        }
    }
}

#[test]
fn options_are_checked_per_scheme() {
    let bad = |name: &str, opts: Value| {
        let mut h = json!({"id": "t", "scheme": name, "secrets": []});
        for (k, v) in opts.as_object().unwrap() {
            h[k] = v.clone();
        }
        let cfg: HookConfig = serde_json::from_value(h).unwrap();
        Scheme::from_config(&cfg).unwrap_err()
    };
    assert_eq!(bad("github", json!({"header": "X"})).key, "header");
    assert_eq!(bad("gitlab", json!({"tolerance": "5m"})).key, "tolerance");
    assert_eq!(bad("hmac", json!({})).key, "header");
    assert_eq!(bad("hmac", json!({"header": "bad header"})).key, "header");
    assert_eq!(
        bad("hmac", json!({"header": "X", "encoding": "hex2"})).key,
        "encoding"
    );
    assert_eq!(
        bad("hmac", json!({"header": "X", "algorithm": "md5"})).key,
        "algorithm"
    );
    assert_eq!(
        bad(
            "hmac",
            json!({"header": "X", "timestamp_header": "T", "template": "{body}"})
        )
        .key,
        "template"
    );
    assert_eq!(
        bad(
            "hmac",
            json!({"header": "X", "template": "{delivery}{body}"})
        )
        .key,
        "template"
    );
    assert_eq!(
        bad("hmac", json!({"header": "X", "tolerance": "1m"})).key,
        "tolerance"
    );
    assert_eq!(bad("stripe", json!({"tolerance": "0s"})).key, "tolerance");
    // Found by fuzzing: the signature and timestamp in one header name.
    assert_eq!(
        bad("hmac", json!({"header": "X-A", "timestamp_header": "x-a"})).key,
        "timestamp_header"
    );
    assert_eq!(
        bad(
            "hmac",
            json!({"header": "X-A", "timestamp_header": "X-T", "delivery_header": "X-T"})
        )
        .key,
        "delivery_header"
    );
    assert_eq!(
        bad("hmac", json!({"header": "X-A", "event_header": "X-A"})).key,
        "event_header"
    );
    assert_eq!(
        bad("hmac", json!({"header": "X-A", "prefix": "\tsha256="})).key,
        "prefix"
    );
    assert_eq!(
        bad("hmac", json!({"header": "X-A", "prefix": "sha256=\u{ff}"})).key,
        "prefix"
    );
    assert!(Scheme::from_config(
        &serde_json::from_value(
            json!({"id": "t", "scheme": "hmac", "secrets": [], "header": "X-A",
            "delivery_header": "X-D", "event_header": "X-D"})
        )
        .unwrap()
    )
    .is_ok());
    assert_eq!(
        bad("slack", json!({"delivery_field": "a..b"})).key,
        "delivery_field"
    );
    let s = Scheme::from_name("standard").unwrap();
    let e = s
        .prepare_secret(Secret(b"whsec_not base64!".to_vec()))
        .unwrap_err();
    assert!(!e.contains("not base64!"), "secret echoed: {e}");
}
