//! Stripe: `Stripe-Signature: t=<unix>,v1=<hex>[,v1=<hex>...]` where each
//! `v1` is HMAC-SHA256 over `{t}.{body}` under the endpoint's `whsec_...`
//! secret (used as is, not decoded). Stripe lists several `v1` entries while
//! an endpoint secret is being rolled; any may match. `v0` entries (test
//! mode's legacy scheme) are ignored. The delivery id is the event's `id`
//! in the body, the event its `type`.

use std::time::{Duration, SystemTime};

use http::HeaderMap;

use super::{check_timestamp, decode_hex, hmac_sha256, json_field, match_secrets};
use super::{parse_timestamp, required_header, unix_seconds};
use super::{Algorithm, Verified, VerifyError, DEFAULT_TOLERANCE};
use crate::config::Secret;

pub const SIGNATURE_HEADER: &str = "stripe-signature";
const SHOWN: &str = "Stripe-Signature";
const MAX_SIGNATURES: usize = 16;

#[derive(Debug, Clone, Copy)]
pub struct Stripe {
    pub tolerance: Duration,
}

impl Default for Stripe {
    fn default() -> Self {
        Stripe {
            tolerance: DEFAULT_TOLERANCE,
        }
    }
}

/// The timestamp and `v1` signatures of a `Stripe-Signature` header.
pub fn parse_header(raw: &[u8]) -> Result<(u64, Vec<Vec<u8>>), VerifyError> {
    let mut ts = None;
    let mut sigs = Vec::new();
    for item in raw.split(|&c| c == b',') {
        let item = item.trim_ascii();
        let Some(eq) = item.iter().position(|&c| c == b'=') else {
            return Err(VerifyError::malformed(
                SHOWN,
                "expected comma-separated key=value pairs",
            ));
        };
        let (k, v) = (&item[..eq], &item[eq + 1..]);
        match k {
            b"t" if ts.is_some() => {
                return Err(VerifyError::malformed(SHOWN, "more than one timestamp"))
            }
            b"t" => ts = Some(parse_timestamp(v, SHOWN)?),
            b"v1" => {
                let sig = decode_hex(v).filter(|s| s.len() == 32).ok_or_else(|| {
                    VerifyError::malformed(SHOWN, "a v1 signature is not 64 hex digits")
                })?;
                if sigs.len() < MAX_SIGNATURES {
                    sigs.push(sig);
                }
            }
            _ => {}
        }
    }
    let ts = ts.ok_or_else(|| VerifyError::malformed(SHOWN, "no timestamp (t=)"))?;
    if sigs.is_empty() {
        return Err(VerifyError::malformed(SHOWN, "no v1 signature"));
    }
    Ok((ts, sigs))
}

impl Stripe {
    pub fn verify(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        secrets: &[Secret],
        now: SystemTime,
    ) -> Result<Verified, VerifyError> {
        let (ts, sigs) = parse_header(required_header(headers, SIGNATURE_HEADER, SHOWN)?)?;
        check_timestamp(ts, now, self.tolerance)?;
        let ts = ts.to_string();
        let parts: [&[u8]; 3] = [ts.as_bytes(), b".", body];
        let key_index = match_secrets(Algorithm::Sha256, secrets, &parts, &sigs)
            .ok_or(VerifyError::Mismatch)?;
        Ok(Verified {
            key_index,
            delivery_id: json_field(body, "id"),
            event: json_field(body, "type"),
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
        let mac = hmac_sha256(&secret.0, &[ts.as_bytes(), b".", body]);
        vec![
            (
                "Stripe-Signature".into(),
                format!("t={ts},v1={}", crate::id::hex(&mac)),
            ),
            (
                "Content-Type".into(),
                "application/json; charset=utf-8".into(),
            ),
        ]
    }
}
