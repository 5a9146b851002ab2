//! Signature verification, one file per sender scheme.
//!
//! Everything here is pure: (headers, raw body, secrets, now) in, a verdict
//! out. No IO, no clocks, no logging, so each scheme can be fuzzed and tested
//! with vectors. A new scheme is one file plus one arm in [`Scheme`].

pub mod github;

use std::time::SystemTime;

use hmac::{KeyInit, Mac};
use http::HeaderMap;

use crate::config::Secret;

/// Why a request was refused. Messages go back to the sender and into the
/// log, so they describe the request and never contain a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("missing {0} header")]
    MissingHeader(&'static str),
    #[error("malformed {header} header: {reason}")]
    Malformed {
        header: &'static str,
        reason: &'static str,
    },
    #[error("signature does not match any configured secret")]
    Mismatch,
    #[error("hook has no usable secret")]
    NoSecret,
}

/// What a successful verification tells us about the delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// Index of the secret that matched (for the log; never the secret).
    pub key_index: usize,
    /// The sender's delivery id, used for de-duplication.
    pub delivery_id: Option<String>,
    /// The sender's event type.
    pub event: Option<String>,
}

/// A configured verification scheme.
#[derive(Debug, Clone)]
pub enum Scheme {
    Github(github::Github),
}

impl Scheme {
    /// Build a scheme from its config name.
    pub fn from_name(name: &str) -> Option<Scheme> {
        match name {
            "github" => Some(Scheme::Github(github::Github)),
            _ => None,
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Scheme::Github(_) => "github",
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
        if secrets.is_empty() {
            return Err(VerifyError::NoSecret);
        }
        match self {
            Scheme::Github(s) => s.verify(headers, body, secrets, now),
        }
    }

    /// The headers a sender would attach to `body` (for `webhookd sign`).
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
        }
    }

    /// The sender's delivery-id header, named in "missing delivery id" errors.
    pub fn delivery_header(&self) -> &'static str {
        match self {
            Scheme::Github(_) => "X-GitHub-Delivery",
        }
    }
}

/// HMAC-SHA256 of `parts` concatenated, under `key`.
pub fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    // new_from_slice only fails for fixed-size-key MACs; HMAC takes any length.
    let mut mac = match hmac::Hmac::<sha2::Sha256>::new_from_slice(key) {
        Ok(m) => m,
        Err(_) => return [0u8; 32],
    };
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().into()
}

/// Constant-time check of `expected` against HMAC-SHA256(key, body).
pub fn hmac_sha256_matches(key: &[u8], body: &[u8], expected: &[u8]) -> bool {
    match hmac::Hmac::<sha2::Sha256>::new_from_slice(key) {
        Ok(mut mac) => {
            mac.update(body);
            mac.verify_slice(expected).is_ok()
        }
        Err(_) => false,
    }
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

/// The single value of header `name`; several copies of a signature header
/// are refused rather than guessed between.
pub fn single_header<'a>(
    headers: &'a HeaderMap,
    name: &'static str,
) -> Result<Option<&'a [u8]>, VerifyError> {
    let mut it = headers.get_all(name).iter();
    let first = it.next();
    if it.next().is_some() {
        return Err(VerifyError::Malformed {
            header: name,
            reason: "header appears more than once",
        });
    }
    Ok(first.map(|v| v.as_bytes()))
}

/// A header as text, if present and printable ASCII.
pub fn text_header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
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
}
