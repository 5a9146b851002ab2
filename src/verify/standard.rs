//! Standard Webhooks (<https://www.standardwebhooks.com>), also sent by Svix
//! with `svix-*` header names.
//!
//! `webhook-signature: v1,<base64 HMAC-SHA256> [v1,<...> ...]` over
//! `{webhook-id}.{webhook-timestamp}.{body}`; any listed `v1` signature may
//! match (senders list several while rotating). The key is the base64 part
//! of a `whsec_<base64>` secret. The timestamp must be within the
//! tolerance; the delivery id is `webhook-id`, the event the body's `type`.

use std::time::{Duration, SystemTime};

use http::HeaderMap;

use super::{check_timestamp, decode_base64, encode_base64, hmac_sha256, json_field};
use super::{match_secrets, parse_timestamp, required_header, unix_seconds};
use super::{Algorithm, Verified, VerifyError, DEFAULT_TOLERANCE};
use crate::config::Secret;

/// Header names: the standard's and Svix's.
const NAMES: [[&str; 3]; 2] = [
    ["webhook-id", "webhook-timestamp", "webhook-signature"],
    ["svix-id", "svix-timestamp", "svix-signature"],
];

/// Most signatures looked at in one header (a sender lists one per key).
const MAX_SIGNATURES: usize = 16;

#[derive(Debug, Clone, Copy)]
pub struct Standard {
    pub tolerance: Duration,
}

impl Default for Standard {
    fn default() -> Self {
        Standard {
            tolerance: DEFAULT_TOLERANCE,
        }
    }
}

/// The key of a `whsec_<base64>` secret (the prefix is optional, as in the
/// reference libraries).
pub fn decode_secret(s: &[u8]) -> Option<Vec<u8>> {
    use base64::engine::{general_purpose, DecodePaddingMode, GeneralPurpose};
    use base64::Engine as _;
    // Padding optional, like the reference libraries.
    const LENIENT: GeneralPurpose = GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        general_purpose::PAD.with_decode_padding_mode(DecodePaddingMode::Indifferent),
    );
    let b64 = s.strip_prefix(b"whsec_").unwrap_or(s);
    LENIENT.decode(b64).ok().filter(|k| !k.is_empty())
}

/// The `webhook-id`, `webhook-timestamp` and `webhook-signature` headers
/// for `body` under `key` (a key from [`decode_secret`]). `webhookd sign`
/// and the forward action's re-signing both use this, so what one webhookd
/// sends another one's `standard` hook verifies.
pub fn sign_headers(key: &[u8], id: &str, now: SystemTime, body: &[u8]) -> Vec<(String, String)> {
    let ts = unix_seconds(now).to_string();
    let mac = hmac_sha256(key, &[id.as_bytes(), b".", ts.as_bytes(), b".", body]);
    vec![
        ("webhook-id".into(), id.into()),
        ("webhook-timestamp".into(), ts),
        (
            "webhook-signature".into(),
            format!("v1,{}", encode_base64(&mac)),
        ),
    ]
}

/// The `v1` signatures of a `webhook-signature` header. As in the reference
/// libraries, entries that cannot match are skipped: other versions (`v1a`
/// is asymmetric), entries without a comma, and `v1` entries that are not
/// base64 of 32 bytes, so one bad entry does not hide a valid one. A header
/// with no usable `v1` entry at all is malformed.
pub fn parse_signatures(raw: &[u8], header: &str) -> Result<Vec<Vec<u8>>, VerifyError> {
    let mut out = Vec::new();
    for entry in raw.split(|&c| c == b' ').filter(|e| !e.is_empty()) {
        let Some(comma) = entry.iter().position(|&c| c == b',') else {
            continue;
        };
        let (version, sig) = (&entry[..comma], &entry[comma + 1..]);
        if version != b"v1" {
            continue;
        }
        let Some(sig) = decode_base64(sig).filter(|s| s.len() == 32) else {
            continue;
        };
        if out.len() < MAX_SIGNATURES {
            out.push(sig);
        }
    }
    if out.is_empty() {
        return Err(VerifyError::malformed(
            header,
            "no usable \"v1,<base64 of 32 bytes>\" entry",
        ));
    }
    Ok(out)
}

impl Standard {
    pub fn verify(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        secrets: &[Secret],
        now: SystemTime,
    ) -> Result<Verified, VerifyError> {
        let [id_h, ts_h, sig_h] =
            if headers.contains_key(NAMES[0][0]) || !headers.contains_key(NAMES[1][0]) {
                NAMES[0]
            } else {
                NAMES[1]
            };
        let id = required_header(headers, id_h, "webhook-id")?;
        let id = std::str::from_utf8(id)
            .ok()
            .filter(|s| !s.is_empty() && !s.contains(' '))
            .ok_or_else(|| VerifyError::malformed(id_h, "expected a printable id"))?;
        let ts_raw = required_header(headers, ts_h, "webhook-timestamp")?;
        let ts = parse_timestamp(ts_raw, ts_h)?;
        let sigs = parse_signatures(required_header(headers, sig_h, "webhook-signature")?, sig_h)?;
        check_timestamp(ts, now, self.tolerance)?;
        let ts = ts.to_string();
        let parts: [&[u8]; 5] = [id.as_bytes(), b".", ts.as_bytes(), b".", body];
        let key_index = match_secrets(Algorithm::Sha256, secrets, &parts, &sigs)
            .ok_or(VerifyError::Mismatch)?;
        Ok(Verified {
            key_index,
            delivery_id: Some(id.to_string()),
            event: json_field(body, "type"),
        })
    }

    pub fn sign(
        &self,
        body: &[u8],
        secret: &Secret,
        delivery_id: &str,
        _event: &str,
        now: SystemTime,
    ) -> Vec<(String, String)> {
        let mut h = sign_headers(&secret.0, delivery_id, now, body);
        h.push(("Content-Type".into(), "application/json".into()));
        h
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_that_cannot_match_are_skipped() {
        let good = format!("v1,{}", encode_base64(&[7u8; 32]));
        for list in [
            format!("v1,!!! {good}"),
            format!("v1,AAAA {good}"),
            format!("{good} v1,AAAA"),
            format!("nocomma v1a,xyz {good}"),
        ] {
            assert_eq!(
                parse_signatures(list.as_bytes(), "webhook-signature"),
                Ok(vec![vec![7u8; 32]]),
                "{list}"
            );
        }
        for list in ["v1,AAAA", "v1,!!! v1a,x", "v1:abc", ""] {
            assert!(
                parse_signatures(list.as_bytes(), "webhook-signature").is_err(),
                "{list}"
            );
        }
    }

    #[test]
    fn one_key_decoding_for_signing_and_verifying() {
        let key = decode_secret(b"whsec_c2VjcmV0LWtleS1ieXRlcw").unwrap();
        assert_eq!(key, b"secret-key-bytes");
        assert_eq!(decode_secret(b"c2VjcmV0LWtleS1ieXRlcw==").unwrap(), key);
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let mut h = HeaderMap::new();
        for (k, v) in sign_headers(&key, "msg_1", now, b"{}") {
            h.insert(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        let v = Standard::default()
            .verify(&h, b"{}", &[Secret(key)], now)
            .unwrap();
        assert_eq!(v.delivery_id.as_deref(), Some("msg_1"));
    }
}
