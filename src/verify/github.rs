//! GitHub: `X-Hub-Signature-256: sha256=<hex HMAC-SHA256(secret, body)>`.
//!
//! Delivery id from `X-GitHub-Delivery`, event from `X-GitHub-Event`.
//! Any configured secret may match, so a secret can be rotated without
//! dropping deliveries signed with the old one. The legacy
//! `X-Hub-Signature: sha1=<hex>` is accepted only when the hook sets
//! `legacy_sha1 = true`, and only when no SHA-256 signature was sent.

use std::time::SystemTime;

use http::HeaderMap;

use super::{decode_hex, hmac_sha256, match_secrets, single_header, text_header};
use super::{Algorithm, Verified, VerifyError};
use crate::config::Secret;

pub const SIGNATURE_HEADER: &str = "x-hub-signature-256";
pub const DELIVERY_HEADER: &str = "x-github-delivery";
pub const EVENT_HEADER: &str = "x-github-event";
pub const LEGACY_HEADER: &str = "x-hub-signature";

#[derive(Debug, Clone, Copy, Default)]
pub struct Github {
    /// Accept `X-Hub-Signature: sha1=` when no SHA-256 signature is sent.
    pub legacy_sha1: bool,
}

impl Github {
    pub fn verify(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        secrets: &[Secret],
        _now: SystemTime,
    ) -> Result<Verified, VerifyError> {
        let (alg, header, raw) = match single_header(headers, SIGNATURE_HEADER)? {
            Some(raw) => (Algorithm::Sha256, "X-Hub-Signature-256", raw),
            None if self.legacy_sha1 => match single_header(headers, LEGACY_HEADER)? {
                Some(raw) => (Algorithm::Sha1, "X-Hub-Signature", raw),
                None => return Err(VerifyError::MissingHeader("X-Hub-Signature-256".into())),
            },
            None => return Err(VerifyError::MissingHeader("X-Hub-Signature-256".into())),
        };
        let (prefix, reason): (&[u8], _) = match alg {
            Algorithm::Sha1 => (b"sha1=", "expected \"sha1=\" followed by 40 hex digits"),
            _ => (b"sha256=", "expected \"sha256=\" followed by 64 hex digits"),
        };
        let sig = raw
            .strip_prefix(prefix)
            .and_then(decode_hex)
            .filter(|s| s.len() == alg.output_len())
            .ok_or_else(|| VerifyError::malformed(header, reason))?;
        let matched = match_secrets(alg, secrets, &[body], &[sig]);
        let key_index = matched.ok_or(VerifyError::Mismatch)?;
        Ok(Verified {
            key_index,
            delivery_id: text_header(headers, DELIVERY_HEADER),
            event: text_header(headers, EVENT_HEADER),
        })
    }

    pub fn sign(
        &self,
        body: &[u8],
        secret: &Secret,
        delivery_id: &str,
        event: &str,
        _now: SystemTime,
    ) -> Vec<(String, String)> {
        let mac = hmac_sha256(&secret.0, &[body]);
        vec![
            (
                "X-Hub-Signature-256".into(),
                format!("sha256={}", crate::id::hex(&mac)),
            ),
            ("X-GitHub-Event".into(), event.into()),
            ("X-GitHub-Delivery".into(), delivery_id.into()),
            ("Content-Type".into(), "application/json".into()),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    /// From GitHub's "Validating webhook deliveries" documentation.
    const DOC_SECRET: &str = "It's a Secret to Everybody";
    const DOC_BODY: &str = "Hello, World!";
    const DOC_SIG: &str = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";

    fn headers(sig: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(SIGNATURE_HEADER, HeaderValue::from_str(sig).unwrap());
        h.insert(DELIVERY_HEADER, HeaderValue::from_static("d-1"));
        h.insert(EVENT_HEADER, HeaderValue::from_static("push"));
        h
    }

    const GH: Github = Github { legacy_sha1: false };

    fn secret(s: &str) -> Secret {
        Secret(s.as_bytes().to_vec())
    }

    fn now() -> SystemTime {
        SystemTime::UNIX_EPOCH
    }

    #[test]
    fn documentation_vector_verifies() {
        let v = GH
            .verify(
                &headers(DOC_SIG),
                DOC_BODY.as_bytes(),
                &[secret(DOC_SECRET)],
                now(),
            )
            .unwrap();
        assert_eq!(v.key_index, 0);
        assert_eq!(v.delivery_id.as_deref(), Some("d-1"));
        assert_eq!(v.event.as_deref(), Some("push"));
    }

    #[test]
    fn sign_reproduces_documentation_vector() {
        let h = GH.sign(DOC_BODY.as_bytes(), &secret(DOC_SECRET), "d", "push", now());
        assert_eq!(h[0].1, DOC_SIG);
    }

    #[test]
    fn rotation_any_secret_may_match() {
        let v = GH
            .verify(
                &headers(DOC_SIG),
                DOC_BODY.as_bytes(),
                &[secret("old"), secret(DOC_SECRET)],
                now(),
            )
            .unwrap();
        assert_eq!(v.key_index, 1);
    }

    #[test]
    fn negatives() {
        let s = [secret(DOC_SECRET)];
        assert_eq!(
            GH.verify(&headers(DOC_SIG), b"Hello, World?", &s, now()),
            Err(VerifyError::Mismatch)
        );
        assert_eq!(
            GH.verify(
                &headers(DOC_SIG),
                DOC_BODY.as_bytes(),
                &[secret("wrong")],
                now()
            ),
            Err(VerifyError::Mismatch)
        );
        assert!(matches!(
            GH.verify(&headers("sha1=abcd"), DOC_BODY.as_bytes(), &s, now()),
            Err(VerifyError::Malformed { .. })
        ));
        assert!(matches!(
            GH.verify(&headers("sha256=xyz"), DOC_BODY.as_bytes(), &s, now()),
            Err(VerifyError::Malformed { .. })
        ));
        assert_eq!(
            GH.verify(&HeaderMap::new(), DOC_BODY.as_bytes(), &s, now()),
            Err(VerifyError::MissingHeader("X-Hub-Signature-256".into()))
        );
        let mut dup = headers(DOC_SIG);
        dup.append(SIGNATURE_HEADER, HeaderValue::from_static(DOC_SIG));
        assert!(matches!(
            GH.verify(&dup, DOC_BODY.as_bytes(), &s, now()),
            Err(VerifyError::Malformed { .. })
        ));
    }

    #[test]
    fn legacy_sha1_only_when_opted_in() {
        let body = DOC_BODY.as_bytes();
        let mac = crate::verify::hmac(Algorithm::Sha1, DOC_SECRET.as_bytes(), &[body]);
        let mut h = HeaderMap::new();
        h.insert(
            LEGACY_HEADER,
            HeaderValue::from_str(&format!("sha1={}", crate::id::hex(&mac))).unwrap(),
        );
        h.insert(DELIVERY_HEADER, HeaderValue::from_static("d-1"));
        let s = [secret(DOC_SECRET)];
        assert_eq!(
            GH.verify(&h, body, &s, now()),
            Err(VerifyError::MissingHeader("X-Hub-Signature-256".into()))
        );
        let legacy = Github { legacy_sha1: true };
        assert_eq!(legacy.verify(&h, body, &s, now()).unwrap().key_index, 0);
        assert_eq!(
            legacy.verify(&h, b"Hello, World?", &s, now()),
            Err(VerifyError::Mismatch)
        );
        // With both headers the SHA-256 one decides.
        h.insert(SIGNATURE_HEADER, HeaderValue::from_static(DOC_SIG));
        assert!(legacy.verify(&h, body, &s, now()).is_ok());
        h.insert(SIGNATURE_HEADER, HeaderValue::from_static("sha256=00"));
        assert!(legacy.verify(&h, body, &s, now()).is_err());
    }
}
