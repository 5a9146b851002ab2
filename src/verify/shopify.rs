//! Shopify: `X-Shopify-Hmac-Sha256: <base64 HMAC-SHA256 of the body>` under
//! the app's client secret. The delivery id is `X-Shopify-Webhook-Id`
//! (Shopify's documented key for spotting duplicates), the event
//! `X-Shopify-Topic`. Shopify signs no timestamp, so there is no replay
//! window beyond the de-duplication by delivery id.

use std::time::SystemTime;

use http::HeaderMap;

use super::{decode_base64, encode_base64, hmac_sha256, match_secrets, required_header};
use super::{text_header, Algorithm, Verified, VerifyError};
use crate::config::Secret;

pub const SIGNATURE_HEADER: &str = "x-shopify-hmac-sha256";
pub const DELIVERY_HEADER: &str = "x-shopify-webhook-id";
pub const EVENT_HEADER: &str = "x-shopify-topic";

#[derive(Debug, Clone, Copy, Default)]
pub struct Shopify;

impl Shopify {
    pub fn verify(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        secrets: &[Secret],
        _now: SystemTime,
    ) -> Result<Verified, VerifyError> {
        let raw = required_header(headers, SIGNATURE_HEADER, "X-Shopify-Hmac-Sha256")?;
        let sig = decode_base64(raw.trim_ascii())
            .filter(|s| s.len() == 32)
            .ok_or_else(|| {
                VerifyError::malformed("X-Shopify-Hmac-Sha256", "expected base64 of 32 bytes")
            })?;
        let key_index = match_secrets(Algorithm::Sha256, secrets, &[body], &[sig])
            .ok_or(VerifyError::Mismatch)?;
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
            ("X-Shopify-Hmac-Sha256".into(), encode_base64(&mac)),
            ("X-Shopify-Topic".into(), event.into()),
            ("X-Shopify-Webhook-Id".into(), delivery_id.into()),
            ("Content-Type".into(), "application/json".into()),
        ]
    }
}
