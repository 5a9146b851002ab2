//! GitLab: `X-Gitlab-Token` carries the secret token itself (GitLab signs
//! nothing), compared in constant time against every configured secret.
//!
//! The delivery id is `Idempotency-Key` (GitLab 17.4+, the same on every
//! retry of one event), else `X-Gitlab-Webhook-UUID` (16.x+, one per
//! request), else the SHA-256 of the body. The event is `X-Gitlab-Event`.

use std::time::SystemTime;

use http::HeaderMap;
use sha2::Digest as _;
use subtle::ConstantTimeEq;

use super::{body_digest, required_header, text_header, Verified, VerifyError};
use crate::config::Secret;

pub const TOKEN_HEADER: &str = "x-gitlab-token";
pub const IDEMPOTENCY_HEADER: &str = "idempotency-key";
pub const UUID_HEADER: &str = "x-gitlab-webhook-uuid";
pub const EVENT_HEADER: &str = "x-gitlab-event";

#[derive(Debug, Clone, Copy, Default)]
pub struct Gitlab;

impl Gitlab {
    pub fn verify(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        secrets: &[Secret],
        _now: SystemTime,
    ) -> Result<Verified, VerifyError> {
        let token = required_header(headers, TOKEN_HEADER, "X-Gitlab-Token")?;
        // Compare digests, not the tokens: equal lengths, so neither the
        // token's length nor its contents show in the timing.
        let given = sha2::Sha256::digest(token);
        let mut matched = None;
        for (i, s) in secrets.iter().enumerate() {
            let want = sha2::Sha256::digest(&s.0);
            if bool::from(given.as_slice().ct_eq(want.as_slice())) && matched.is_none() {
                matched = Some(i);
            }
        }
        let key_index = matched.ok_or(VerifyError::Mismatch)?;
        let delivery = text_header(headers, IDEMPOTENCY_HEADER)
            .or_else(|| text_header(headers, UUID_HEADER))
            .unwrap_or_else(|| format!("sha256:{}", body_digest(&[body])));
        Ok(Verified {
            key_index,
            delivery_id: Some(delivery),
            event: text_header(headers, EVENT_HEADER),
        })
    }

    pub fn sign(
        &self,
        _body: &[u8],
        secret: &Secret,
        delivery_id: &str,
        event: &str,
        _now: SystemTime,
    ) -> Vec<(String, String)> {
        vec![
            (
                "X-Gitlab-Token".into(),
                String::from_utf8_lossy(&secret.0).into_owned(),
            ),
            ("X-Gitlab-Event".into(), event.into()),
            ("Idempotency-Key".into(), delivery_id.into()),
            ("Content-Type".into(), "application/json".into()),
        ]
    }
}
