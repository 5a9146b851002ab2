//! GitHub: `X-Hub-Signature-256: sha256=<hex HMAC-SHA256(secret, body)>`.
//!
//! Delivery id from `X-GitHub-Delivery`, event from `X-GitHub-Event`.
//! Any configured secret may match, so a secret can be rotated without
//! dropping deliveries signed with the old one.

use std::time::SystemTime;

use http::HeaderMap;

use super::{decode_hex, hmac_sha256, hmac_sha256_matches, single_header, text_header};
use super::{Verified, VerifyError};
use crate::config::Secret;

pub const SIGNATURE_HEADER: &str = "x-hub-signature-256";
pub const DELIVERY_HEADER: &str = "x-github-delivery";
pub const EVENT_HEADER: &str = "x-github-event";

#[derive(Debug, Clone, Copy, Default)]
pub struct Github;

impl Github {
    pub fn verify(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        secrets: &[Secret],
        _now: SystemTime,
    ) -> Result<Verified, VerifyError> {
        let raw = single_header(headers, SIGNATURE_HEADER)?
            .ok_or(VerifyError::MissingHeader("X-Hub-Signature-256"))?;
        let hex = raw.strip_prefix(b"sha256=").ok_or(VerifyError::Malformed {
            header: "X-Hub-Signature-256",
            reason: "expected \"sha256=\" followed by 64 hex digits",
        })?;
        let sig = decode_hex(hex)
            .filter(|s| s.len() == 32)
            .ok_or(VerifyError::Malformed {
                header: "X-Hub-Signature-256",
                reason: "expected \"sha256=\" followed by 64 hex digits",
            })?;
        // Check every secret, without stopping early, so timing does not
        // reveal which key position matched.
        let mut matched = None;
        for (i, s) in secrets.iter().enumerate() {
            if hmac_sha256_matches(&s.0, body, &sig) && matched.is_none() {
                matched = Some(i);
            }
        }
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

    fn secret(s: &str) -> Secret {
        Secret(s.as_bytes().to_vec())
    }

    fn now() -> SystemTime {
        SystemTime::UNIX_EPOCH
    }

    #[test]
    fn documentation_vector_verifies() {
        let v = Github
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
        let h = Github.sign(DOC_BODY.as_bytes(), &secret(DOC_SECRET), "d", "push", now());
        assert_eq!(h[0].1, DOC_SIG);
    }

    #[test]
    fn rotation_any_secret_may_match() {
        let v = Github
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
            Github.verify(&headers(DOC_SIG), b"Hello, World?", &s, now()),
            Err(VerifyError::Mismatch)
        );
        assert_eq!(
            Github.verify(
                &headers(DOC_SIG),
                DOC_BODY.as_bytes(),
                &[secret("wrong")],
                now()
            ),
            Err(VerifyError::Mismatch)
        );
        assert!(matches!(
            Github.verify(&headers("sha1=abcd"), DOC_BODY.as_bytes(), &s, now()),
            Err(VerifyError::Malformed { .. })
        ));
        assert!(matches!(
            Github.verify(&headers("sha256=xyz"), DOC_BODY.as_bytes(), &s, now()),
            Err(VerifyError::Malformed { .. })
        ));
        assert_eq!(
            Github.verify(&HeaderMap::new(), DOC_BODY.as_bytes(), &s, now()),
            Err(VerifyError::MissingHeader("X-Hub-Signature-256"))
        );
        let mut dup = headers(DOC_SIG);
        dup.append(SIGNATURE_HEADER, HeaderValue::from_static(DOC_SIG));
        assert!(matches!(
            Github.verify(&dup, DOC_BODY.as_bytes(), &s, now()),
            Err(VerifyError::Malformed { .. })
        ));
    }
}
