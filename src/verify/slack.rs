//! Slack: `X-Slack-Signature: v0=<hex HMAC-SHA256>` over
//! `v0:{X-Slack-Request-Timestamp}:{body}` under the app's signing secret;
//! the timestamp must be within the tolerance.
//!
//! Slack sends no delivery id header. The de-duplication key is a
//! configured JSON field (`delivery_field = "event_id"` for the Events API)
//! when the body has it, else the timestamp and the SHA-256 of the body.
//! The event is the body's `event.type`, else its `type`.

use std::time::{Duration, SystemTime};

use http::HeaderMap;

use super::{body_digest, check_timestamp, decode_hex, hmac_sha256, json_field};
use super::{match_secrets, parse_timestamp, required_header, unix_seconds};
use super::{Algorithm, Verified, VerifyError, DEFAULT_TOLERANCE};
use crate::config::Secret;

pub const SIGNATURE_HEADER: &str = "x-slack-signature";
pub const TIMESTAMP_HEADER: &str = "x-slack-request-timestamp";

#[derive(Debug, Clone)]
pub struct Slack {
    pub tolerance: Duration,
    /// JSON field (dotted path) holding a delivery id.
    pub delivery_field: Option<String>,
}

impl Default for Slack {
    fn default() -> Self {
        Slack {
            tolerance: DEFAULT_TOLERANCE,
            delivery_field: None,
        }
    }
}

impl Slack {
    pub fn verify(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        secrets: &[Secret],
        now: SystemTime,
    ) -> Result<Verified, VerifyError> {
        let ts = parse_timestamp(
            required_header(headers, TIMESTAMP_HEADER, "X-Slack-Request-Timestamp")?,
            "X-Slack-Request-Timestamp",
        )?;
        let raw = required_header(headers, SIGNATURE_HEADER, "X-Slack-Signature")?;
        let sig = raw
            .strip_prefix(b"v0=")
            .and_then(decode_hex)
            .filter(|s| s.len() == 32)
            .ok_or_else(|| {
                VerifyError::malformed(
                    "X-Slack-Signature",
                    "expected \"v0=\" followed by 64 hex digits",
                )
            })?;
        check_timestamp(ts, now, self.tolerance)?;
        let ts = ts.to_string();
        let parts: [&[u8]; 4] = [b"v0:", ts.as_bytes(), b":", body];
        let key_index = match_secrets(Algorithm::Sha256, secrets, &parts, &[sig])
            .ok_or(VerifyError::Mismatch)?;
        let delivery = self
            .delivery_field
            .as_deref()
            .and_then(|f| json_field(body, f))
            .unwrap_or_else(|| format!("slack:{ts}:{}", body_digest(&[body])));
        Ok(Verified {
            key_index,
            delivery_id: Some(delivery),
            event: json_field(body, "event.type").or_else(|| json_field(body, "type")),
        })
    }

    pub fn sign(
        &self,
        body: &[u8],
        secret: &Secret,
        _delivery_id: &str,
        _event: &str,
        now: SystemTime,
    ) -> Vec<(String, String)> {
        let ts = unix_seconds(now).to_string();
        let mac = hmac_sha256(&secret.0, &[b"v0:", ts.as_bytes(), b":", body]);
        vec![
            ("X-Slack-Request-Timestamp".into(), ts),
            (
                "X-Slack-Signature".into(),
                format!("v0={}", crate::id::hex(&mac)),
            ),
        ]
    }
}
