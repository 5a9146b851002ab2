//! Signature verification, one file per sender scheme.
//!
//! Everything here is pure: (headers, raw body, secrets, now) in, a verdict
//! out. No IO, no clocks, no logging, so each scheme can be fuzzed and tested
//! with vectors. A new scheme is one file plus one arm in [`Scheme`].
//!
//! Every scheme computes the MAC under every configured secret and compares
//! it with every signature the request carries, without stopping at the
//! first match, so timing tells neither which key matched nor where.

pub mod generic;
pub mod github;
pub mod gitlab;
pub mod shopify;
pub mod slack;
pub mod standard;
pub mod stripe;
pub mod token;

use std::borrow::Cow;
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use hmac::{KeyInit, Mac};
use http::HeaderMap;
use sha2::Digest as _;
use subtle::ConstantTimeEq;

use crate::config::{HookConfig, Secret};

/// The replay window of timestamped schemes when a hook does not set `tolerance`.
pub const DEFAULT_TOLERANCE: Duration = Duration::from_secs(300);

/// Why a request was refused. Messages go back to the sender and into the
/// log, so they describe the request and never contain a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("missing {0} header")]
    MissingHeader(Cow<'static, str>),
    #[error("malformed {header} header: {reason}")]
    Malformed {
        header: Cow<'static, str>,
        reason: &'static str,
    },
    #[error("signature does not match any configured secret")]
    Mismatch,
    #[error("hook has no usable secret")]
    NoSecret,
    /// The token scheme found no token where the hook says it is.
    #[error("missing token {0}")]
    MissingToken(String),
    /// The signed timestamp is too old (a replay) or too far in the future.
    #[error("timestamp outside tolerance: {skew} s {direction}, tolerance is {tolerance} s")]
    Timestamp {
        skew: u64,
        direction: &'static str,
        tolerance: u64,
    },
}

impl VerifyError {
    pub(crate) fn malformed(header: &str, reason: &'static str) -> VerifyError {
        VerifyError::Malformed {
            header: Cow::Owned(header.to_string()),
            reason,
        }
    }
}

/// What a successful verification tells us about the delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// Index of the secret that matched (for the log; never the secret).
    pub key_index: usize,
    /// The de-duplication key: the sender's delivery id, or one derived
    /// from the signed content for senders that have none. `None` only when
    /// the scheme requires a delivery id and the request has none.
    pub delivery_id: Option<String>,
    /// The sender's event type.
    pub event: Option<String>,
}

/// A configuration problem found while building a scheme: the key under
/// `hooks[N]` and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OptionError {
    pub key: &'static str,
    pub message: String,
}

impl OptionError {
    pub(crate) fn new(key: &'static str, message: impl Into<String>) -> OptionError {
        OptionError {
            key,
            message: message.into(),
        }
    }
}

/// Schemes this build can verify (config names).
pub const SCHEME_NAMES: &[&str] = &[
    "github", "standard", "stripe", "slack", "gitlab", "shopify", "hmac", "token", "none",
];

/// A configured verification scheme.
#[derive(Debug, Clone)]
pub enum Scheme {
    Github(github::Github),
    Standard(standard::Standard),
    Stripe(stripe::Stripe),
    Slack(slack::Slack),
    Gitlab(gitlab::Gitlab),
    Shopify(shopify::Shopify),
    Hmac(Box<generic::Generic>),
    Token(Box<token::Token>),
    None(token::NoAuth),
}

impl Scheme {
    /// Build a scheme with default options from its config name.
    pub fn from_name(name: &str) -> Option<Scheme> {
        Some(match name {
            "github" => Scheme::Github(github::Github::default()),
            "standard" => Scheme::Standard(standard::Standard::default()),
            "stripe" => Scheme::Stripe(stripe::Stripe::default()),
            "slack" => Scheme::Slack(slack::Slack::default()),
            "gitlab" => Scheme::Gitlab(gitlab::Gitlab),
            "shopify" => Scheme::Shopify(shopify::Shopify),
            _ => return None,
        })
    }

    /// Build a scheme from a `[[hooks]]` entry, checking that every
    /// scheme-specific key applies to this scheme and is well-formed.
    pub fn from_config(h: &HookConfig) -> Result<Scheme, OptionError> {
        let name = h.scheme.as_str();
        if !SCHEME_NAMES.contains(&name) {
            return Err(OptionError::new(
                "scheme",
                format!("unknown scheme {name:?}; expected one of {SCHEME_NAMES:?}"),
            ));
        }
        // Keys that belong to one scheme only (or to a few).
        let only = |key: &'static str, set: bool, schemes: &[&str]| {
            if set && !schemes.contains(&name) {
                Err(OptionError::new(
                    key,
                    format!(
                        "does not apply to scheme {name:?} (only to {})",
                        schemes.join(", ")
                    ),
                ))
            } else {
                Ok(())
            }
        };
        only("legacy_sha1", h.legacy_sha1.is_some(), &["github"])?;
        only("header", h.header.is_some(), &["hmac"])?;
        only("prefix", h.prefix.is_some(), &["hmac"])?;
        only("encoding", h.encoding.is_some(), &["hmac"])?;
        only("algorithm", h.algorithm.is_some(), &["hmac"])?;
        only("timestamp_header", h.timestamp_header.is_some(), &["hmac"])?;
        only("template", h.template.is_some(), &["hmac"])?;
        only(
            "delivery_header",
            h.delivery_header.is_some(),
            &["hmac", "token", "none"],
        )?;
        only(
            "event_header",
            h.event_header.is_some(),
            &["hmac", "token", "none"],
        )?;
        only(
            "delivery_field",
            h.delivery_field.is_some(),
            &["slack", "hmac", "token", "none"],
        )?;
        only("token", h.token.is_some(), &["token"])?;
        only(
            "tolerance",
            h.tolerance.is_some(),
            &["standard", "stripe", "slack", "hmac"],
        )?;
        let tolerance = h.tolerance.unwrap_or(DEFAULT_TOLERANCE);
        if tolerance.is_zero() || tolerance > Duration::from_secs(7 * 24 * 3600) {
            return Err(OptionError::new(
                "tolerance",
                "expected a duration between 1s and 7 days",
            ));
        }
        if let Some(f) = &h.delivery_field {
            if f.is_empty() || f.split('.').any(str::is_empty) {
                return Err(OptionError::new(
                    "delivery_field",
                    format!(
                        "expected a JSON field name or dotted path such as \"event_id\", got {f:?}"
                    ),
                ));
            }
        }
        Ok(match name {
            "github" => Scheme::Github(github::Github {
                legacy_sha1: h.legacy_sha1.unwrap_or(false),
            }),
            "standard" => Scheme::Standard(standard::Standard { tolerance }),
            "stripe" => Scheme::Stripe(stripe::Stripe { tolerance }),
            "slack" => Scheme::Slack(slack::Slack {
                tolerance,
                delivery_field: h.delivery_field.clone(),
            }),
            "gitlab" => Scheme::Gitlab(gitlab::Gitlab),
            "shopify" => Scheme::Shopify(shopify::Shopify),
            "token" => Scheme::Token(Box::new(token::Token::from_config(h)?)),
            "none" => Scheme::None(token::NoAuth::from_config(h)?),
            _ => Scheme::Hmac(Box::new(generic::Generic::from_config(h, tolerance)?)),
        })
    }

    pub fn name(&self) -> &'static str {
        match self {
            Scheme::Github(_) => "github",
            Scheme::Standard(_) => "standard",
            Scheme::Stripe(_) => "stripe",
            Scheme::Slack(_) => "slack",
            Scheme::Gitlab(_) => "gitlab",
            Scheme::Shopify(_) => "shopify",
            Scheme::Hmac(_) => "hmac",
            Scheme::Token(_) => "token",
            Scheme::None(_) => "none",
        }
    }

    /// Turn a secret as stored (file, credential) into the key the scheme
    /// uses: Standard Webhooks secrets are `whsec_<base64>`. The error
    /// describes the shape expected, never the value.
    pub fn prepare_secret(&self, s: Secret) -> Result<Secret, String> {
        match self {
            Scheme::Standard(_) => standard::decode_secret(&s.0).map(Secret).ok_or_else(|| {
                "is not a Standard Webhooks secret (expected \"whsec_\" followed by base64)".into()
            }),
            _ => Ok(s),
        }
    }

    /// Does this hook check anything? (`none` does not.)
    pub fn authenticates(&self) -> bool {
        !matches!(self, Scheme::None(_))
    }

    /// Check a request with its query string (the token scheme may read
    /// the token from it; the other schemes ignore it).
    pub fn verify_request(
        &self,
        headers: &HeaderMap,
        query: &str,
        body: &[u8],
        secrets: &[Secret],
        now: SystemTime,
    ) -> Result<Verified, VerifyError> {
        match self {
            Scheme::None(s) => Ok(s.verify(headers, query, body)),
            Scheme::Token(s) if !secrets.is_empty() => s.verify(headers, query, body, secrets),
            _ => self.verify(headers, body, secrets, now),
        }
    }

    /// Check a request. `now` is passed in so timestamped schemes stay pure.
    pub fn verify(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        secrets: &[Secret],
        now: SystemTime,
    ) -> Result<Verified, VerifyError> {
        if let Scheme::None(s) = self {
            return Ok(s.verify(headers, "", body));
        }
        if secrets.is_empty() {
            return Err(VerifyError::NoSecret);
        }
        match self {
            Scheme::Github(s) => s.verify(headers, body, secrets, now),
            Scheme::Standard(s) => s.verify(headers, body, secrets, now),
            Scheme::Stripe(s) => s.verify(headers, body, secrets, now),
            Scheme::Slack(s) => s.verify(headers, body, secrets, now),
            Scheme::Gitlab(s) => s.verify(headers, body, secrets, now),
            Scheme::Shopify(s) => s.verify(headers, body, secrets, now),
            Scheme::Hmac(s) => s.verify(headers, body, secrets, now),
            Scheme::Token(s) => s.verify(headers, "", body, secrets),
            Scheme::None(_) => Err(VerifyError::NoSecret),
        }
    }

    /// The headers a sender would attach to `body` (for `webhookd sign`).
    /// `secret` is the prepared key (see [`Scheme::prepare_secret`]).
    pub fn sign(
        &self,
        body: &[u8],
        secret: &Secret,
        delivery_id: &str,
        event: &str,
        now: SystemTime,
    ) -> Vec<(String, String)> {
        match self {
            Scheme::Github(s) => s.sign(body, secret, delivery_id, event, now),
            Scheme::Standard(s) => s.sign(body, secret, delivery_id, event, now),
            Scheme::Stripe(s) => s.sign(body, secret, delivery_id, event, now),
            Scheme::Slack(s) => s.sign(body, secret, delivery_id, event, now),
            Scheme::Gitlab(s) => s.sign(body, secret, delivery_id, event, now),
            Scheme::Shopify(s) => s.sign(body, secret, delivery_id, event, now),
            Scheme::Hmac(s) => s.sign(body, secret, delivery_id, event, now),
            Scheme::Token(s) => s.sign(secret, event, delivery_id),
            Scheme::None(_) => vec![("Content-Type".into(), "application/json".into())],
        }
    }

    /// Where the delivery id comes from, for "missing delivery id" errors.
    pub fn delivery_header(&self) -> &str {
        match self {
            Scheme::Github(_) => "X-GitHub-Delivery header",
            Scheme::Standard(_) => "webhook-id header",
            Scheme::Stripe(_) => "event \"id\" in the JSON body",
            Scheme::Slack(_) => "delivery id",
            Scheme::Gitlab(_) => "Idempotency-Key header",
            Scheme::Shopify(_) => "X-Shopify-Webhook-Id header",
            Scheme::Hmac(h) => h.delivery_source(),
            Scheme::Token(t) => t.delivery_source(),
            Scheme::None(n) => n.delivery_source(),
        }
    }
}

/// The hash functions an HMAC can be built on here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    Sha256,
    Sha512,
    /// Only for GitHub's legacy `X-Hub-Signature`, when a hook opts in.
    Sha1,
}

impl Algorithm {
    pub fn output_len(self) -> usize {
        match self {
            Algorithm::Sha256 => 32,
            Algorithm::Sha512 => 64,
            Algorithm::Sha1 => 20,
        }
    }
}

/// HMAC of `parts` concatenated, under `key`.
pub fn hmac(alg: Algorithm, key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    macro_rules! run {
        ($d:ty) => {{
            // new_from_slice only fails for fixed-size-key MACs; HMAC takes any length.
            match ::hmac::Hmac::<$d>::new_from_slice(key) {
                Ok(mut m) => {
                    for p in parts {
                        m.update(p);
                    }
                    m.finalize().into_bytes().to_vec()
                }
                Err(_) => Vec::new(),
            }
        }};
    }
    match alg {
        Algorithm::Sha256 => run!(sha2::Sha256),
        Algorithm::Sha512 => run!(sha2::Sha512),
        Algorithm::Sha1 => run!(sha1::Sha1),
    }
}

/// HMAC-SHA256 of `parts` concatenated, under `key`.
pub fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut out = [0u8; 32];
    let mac = hmac(Algorithm::Sha256, key, parts);
    if mac.len() == 32 {
        out.copy_from_slice(&mac);
    }
    out
}

/// The index of the first secret whose HMAC over `parts` equals one of
/// `candidates`. Every secret is tried against every candidate with a
/// constant-time comparison, without stopping early.
pub fn match_secrets(
    alg: Algorithm,
    secrets: &[Secret],
    parts: &[&[u8]],
    candidates: &[Vec<u8>],
) -> Option<usize> {
    let mut matched = None;
    for (i, s) in secrets.iter().enumerate() {
        let mac = hmac(alg, &s.0, parts);
        let mut hit = subtle::Choice::from(0u8);
        for c in candidates {
            hit |= mac.as_slice().ct_eq(c.as_slice());
        }
        if bool::from(hit) && matched.is_none() {
            matched = Some(i);
        }
    }
    matched
}

/// SHA-256 of the body as hex: the de-duplication key of senders that
/// have no delivery id.
pub fn body_digest(parts: &[&[u8]]) -> String {
    let mut h = sha2::Sha256::new();
    for p in parts {
        h.update(p);
    }
    crate::id::hex(&h.finalize())
}

/// Decode lower- or upper-case hex; `None` on any other character.
pub fn decode_hex(s: &[u8]) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    fn nibble(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        }
    }
    s.chunks_exact(2)
        .map(|p| Some(nibble(p[0])? << 4 | nibble(p[1])?))
        .collect()
}

/// Decode standard base64 (with padding).
pub fn decode_base64(s: &[u8]) -> Option<Vec<u8>> {
    base64::engine::general_purpose::STANDARD.decode(s).ok()
}

pub fn encode_base64(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(b)
}

/// The single value of header `name`; several copies of a signature header
/// are refused rather than guessed between.
pub fn single_header<'a>(
    headers: &'a HeaderMap,
    name: &str,
) -> Result<Option<&'a [u8]>, VerifyError> {
    let mut it = headers.get_all(name).iter();
    let first = it.next();
    if it.next().is_some() {
        return Err(VerifyError::malformed(
            name,
            "header appears more than once",
        ));
    }
    Ok(first.map(|v| v.as_bytes()))
}

/// The single value of a header the scheme cannot do without.
pub fn required_header<'a>(
    headers: &'a HeaderMap,
    name: &str,
    shown: &'static str,
) -> Result<&'a [u8], VerifyError> {
    single_header(headers, name)?.ok_or(VerifyError::MissingHeader(Cow::Borrowed(shown)))
}

/// A header as text, if present and printable ASCII.
pub fn text_header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// Parse a Unix timestamp in seconds (1 to 12 decimal digits).
pub fn parse_timestamp(raw: &[u8], header: &str) -> Result<u64, VerifyError> {
    let raw = raw.trim_ascii();
    if raw.is_empty() || raw.len() > 12 || !raw.iter().all(u8::is_ascii_digit) {
        return Err(VerifyError::malformed(
            header,
            "expected a Unix timestamp in seconds",
        ));
    }
    Ok(raw.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0')))
}

/// Refuse a timestamp more than `tolerance` away from `now`, in either
/// direction: an old one is a replay, a future one a wrong clock or a
/// signature made to be replayed later.
pub fn check_timestamp(ts: u64, now: SystemTime, tolerance: Duration) -> Result<(), VerifyError> {
    let now = unix_seconds(now);
    let (skew, direction) = if ts <= now {
        (now - ts, "in the past")
    } else {
        (ts - now, "in the future")
    };
    if skew > tolerance.as_secs() {
        return Err(VerifyError::Timestamp {
            skew,
            direction,
            tolerance: tolerance.as_secs(),
        });
    }
    Ok(())
}

pub fn unix_seconds(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A string or number at a dotted path of a JSON body (`event.type`).
pub fn json_field(body: &[u8], path: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let mut cur = &v;
    for part in path.split('.') {
        cur = cur.get(part)?;
    }
    match cur {
        serde_json::Value::String(s) if !s.is_empty() => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_roundtrip_and_rejects() {
        assert_eq!(decode_hex(b"00aBfF"), Some(vec![0, 0xab, 0xff]));
        assert_eq!(decode_hex(b"0"), None);
        assert_eq!(decode_hex(b"zz"), None);
    }

    #[test]
    fn timestamps() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let tol = Duration::from_secs(300);
        assert!(check_timestamp(1_000_000 - 300, now, tol).is_ok());
        assert!(check_timestamp(1_000_000 + 300, now, tol).is_ok());
        let e = check_timestamp(1_000_000 - 301, now, tol).unwrap_err();
        assert!(e.to_string().contains("timestamp outside tolerance"), "{e}");
        assert!(e.to_string().contains("in the past"), "{e}");
        let e = check_timestamp(1_000_000 + 301, now, tol).unwrap_err();
        assert!(e.to_string().contains("in the future"), "{e}");
        assert_eq!(parse_timestamp(b" 12 ", "t"), Ok(12));
        assert!(parse_timestamp(b"-1", "t").is_err());
        assert!(parse_timestamp(b"1e9", "t").is_err());
        assert!(parse_timestamp(b"9999999999999", "t").is_err());
    }

    #[test]
    fn known_hmac_vectors() {
        // RFC 4231 test case 2 (SHA-256 and SHA-512), RFC 2202 test case 2 (SHA-1).
        let (k, m) = (
            b"Jefe".as_slice(),
            b"what do ya want for nothing?".as_slice(),
        );
        assert_eq!(
            crate::id::hex(&hmac(Algorithm::Sha256, k, &[m])),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert_eq!(
            crate::id::hex(&hmac(Algorithm::Sha512, k, &[m])),
            "164b7a7bfcf819e2e395fbe73b56e0a387bd64222e831fd610270cd7ea2505549758bf75c05a994a6d034f65f8f0e6fdcaeab1a34d4a6b4b636e070a38bce737"
        );
        assert_eq!(
            crate::id::hex(&hmac(Algorithm::Sha1, k, &[m])),
            "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79"
        );
    }

    #[test]
    fn json_fields() {
        let b = br#"{"id":"evt_1","event":{"type":"message","n":3}}"#;
        assert_eq!(json_field(b, "id").as_deref(), Some("evt_1"));
        assert_eq!(json_field(b, "event.type").as_deref(), Some("message"));
        assert_eq!(json_field(b, "event.n").as_deref(), Some("3"));
        assert_eq!(json_field(b, "event.nope"), None);
        assert_eq!(json_field(b"not json", "id"), None);
    }
}
