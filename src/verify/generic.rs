//! Generic HMAC (`scheme = "hmac"`), for senders without a scheme of their
//! own: a configurable header holding `<prefix><hex or base64 HMAC>`, with
//! SHA-256 or SHA-512, over a configurable signed content.
//!
//! ```toml
//! header = "X-Signature"          # required
//! prefix = "sha256="              # default ""
//! encoding = "hex"                # or "base64"
//! algorithm = "sha256"            # or "sha512"
//! timestamp_header = "X-Timestamp" # optional: enables the replay window
//! template = "{timestamp}.{body}" # default "{body}", or "{timestamp}.{body}" with a timestamp
//! delivery_header = "X-Request-Id" # optional; else delivery_field, else SHA-256 of the body
//! event_header = "X-Event"        # optional
//! ```

use std::time::{Duration, SystemTime};

use http::{HeaderMap, HeaderName};

use super::{body_digest, check_timestamp, decode_base64, decode_hex, encode_base64, hmac};
use super::{json_field, match_secrets, parse_timestamp, single_header, text_header};
use super::{unix_seconds, Algorithm, OptionError, Verified, VerifyError};
use crate::config::{HookConfig, Secret};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Hex,
    Base64,
}

/// One piece of the signed content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    Literal(Vec<u8>),
    Body,
    Timestamp,
    Delivery,
}

#[derive(Debug, Clone)]
pub struct Generic {
    /// Lower-case header name, and the name as configured (for messages).
    header: HeaderName,
    shown: String,
    prefix: Vec<u8>,
    encoding: Encoding,
    algorithm: Algorithm,
    timestamp_header: Option<HeaderName>,
    template: Vec<Part>,
    delivery_header: Option<HeaderName>,
    delivery_field: Option<String>,
    event_header: Option<HeaderName>,
    tolerance: Duration,
}

fn header_name(key: &'static str, v: &str) -> Result<HeaderName, OptionError> {
    HeaderName::from_bytes(v.as_bytes()).map_err(|_| OptionError {
        key,
        message: format!("expected an HTTP header name such as \"X-Signature\", got {v:?}"),
    })
}

/// Parse `{body}`, `{timestamp}` and `{delivery}` placeholders; everything
/// else is literal text.
pub fn parse_template(t: &str) -> Result<Vec<Part>, String> {
    let mut parts = Vec::new();
    let mut lit = Vec::new();
    let mut rest = t;
    while let Some(open) = rest.find('{') {
        lit.extend_from_slice(&rest.as_bytes()[..open]);
        let after = &rest[open..];
        let close = after
            .find('}')
            .ok_or_else(|| format!("unclosed '{{' in template {t:?}"))?;
        let part = match &after[..=close] {
            "{body}" => Part::Body,
            "{timestamp}" => Part::Timestamp,
            "{delivery}" => Part::Delivery,
            other => {
                return Err(format!(
                    "unknown placeholder {other} in template; expected {{body}}, {{timestamp}} or {{delivery}}"
                ))
            }
        };
        if !lit.is_empty() {
            parts.push(Part::Literal(std::mem::take(&mut lit)));
        }
        parts.push(part);
        rest = &after[close + 1..];
    }
    lit.extend_from_slice(rest.as_bytes());
    if !lit.is_empty() {
        parts.push(Part::Literal(lit));
    }
    if parts.iter().filter(|p| **p == Part::Body).count() != 1 {
        return Err("the template must contain {body} exactly once".into());
    }
    Ok(parts)
}

/// The de-duplication key of a sender without a delivery id: a digest of
/// the body and, when a timestamp is signed, the timestamp too, so the same
/// body sent again later (a heartbeat) is a new event while a replay of the
/// same signed request is still a duplicate.
fn fallback_key(ts: Option<&str>, body: &[u8]) -> String {
    match ts {
        Some(ts) => format!("sha256:{ts}:{}", body_digest(&[body])),
        None => format!("sha256:{}", body_digest(&[body])),
    }
}

impl Generic {
    pub fn from_config(h: &HookConfig, tolerance: Duration) -> Result<Generic, OptionError> {
        let shown = h.header.clone().ok_or(OptionError {
            key: "header",
            message: "scheme \"hmac\" needs the name of the signature header, e.g. header = \"X-Signature\"".into(),
        })?;
        let header = header_name("header", &shown)?;
        let encoding = match h.encoding.as_deref() {
            None | Some("hex") => Encoding::Hex,
            Some("base64") => Encoding::Base64,
            Some(o) => {
                return Err(OptionError {
                    key: "encoding",
                    message: format!("expected \"hex\" or \"base64\", got {o:?}"),
                })
            }
        };
        let algorithm = match h.algorithm.as_deref() {
            None | Some("sha256") => Algorithm::Sha256,
            Some("sha512") => Algorithm::Sha512,
            Some(o) => {
                return Err(OptionError {
                    key: "algorithm",
                    message: format!("expected \"sha256\" or \"sha512\", got {o:?}"),
                })
            }
        };
        let opt = |key, v: &Option<String>| v.as_deref().map(|v| header_name(key, v)).transpose();
        let timestamp_header = opt("timestamp_header", &h.timestamp_header)?;
        let delivery_header = opt("delivery_header", &h.delivery_header)?;
        let event_header = opt("event_header", &h.event_header)?;
        // The signature and the timestamp need headers of their own (found
        // by fuzzing: header = timestamp_header made every request carry
        // the name twice, which is refused as ambiguous).
        let named = [
            ("timestamp_header", &timestamp_header),
            ("delivery_header", &delivery_header),
            ("event_header", &event_header),
        ];
        for (key, name) in named {
            let Some(name) = name else { continue };
            let clash = *name == header
                || (key != "timestamp_header" && timestamp_header.as_ref() == Some(name));
            if clash {
                return Err(OptionError {
                    key,
                    message: format!(
                        "{name} is already used by another of header, timestamp_header, delivery_header"
                    ),
                });
            }
        }
        let prefix = h.prefix.clone().unwrap_or_default();
        // Found by fuzzing: a prefix with outer whitespace or bytes a header
        // value cannot carry could never match.
        if prefix.trim() != prefix || !prefix.bytes().all(|b| (0x20..0x7f).contains(&b)) {
            return Err(OptionError {
                key: "prefix",
                message: format!(
                    "expected printable ASCII without leading or trailing spaces, got {prefix:?}"
                ),
            });
        }
        let default_template = if timestamp_header.is_some() {
            "{timestamp}.{body}"
        } else {
            "{body}"
        };
        let template = parse_template(h.template.as_deref().unwrap_or(default_template)).map_err(
            |message| OptionError {
                key: "template",
                message,
            },
        )?;
        let has = |p: Part| template.contains(&p);
        if has(Part::Timestamp) != timestamp_header.is_some() {
            return Err(OptionError {
                key: "template",
                message: if timestamp_header.is_some() {
                    "must contain {timestamp} when timestamp_header is set (an unsigned timestamp does not stop replays)".into()
                } else {
                    "uses {timestamp} but timestamp_header is not set".into()
                },
            });
        }
        if has(Part::Delivery) && delivery_header.is_none() {
            return Err(OptionError {
                key: "template",
                message: "uses {delivery} but delivery_header is not set".into(),
            });
        }
        if h.tolerance.is_some() && timestamp_header.is_none() {
            return Err(OptionError {
                key: "tolerance",
                message:
                    "needs timestamp_header (without a signed timestamp there is no replay window)"
                        .into(),
            });
        }
        Ok(Generic {
            header,
            shown,
            prefix: prefix.into_bytes(),
            encoding,
            algorithm,
            timestamp_header,
            template,
            delivery_header,
            delivery_field: h.delivery_field.clone(),
            event_header,
            tolerance,
        })
    }

    /// Where the delivery id comes from (for "missing ..." errors).
    pub fn delivery_source(&self) -> &str {
        self.delivery_header
            .as_ref()
            .map(|h| h.as_str())
            .unwrap_or("delivery id")
    }

    fn encode(&self, mac: &[u8]) -> String {
        match self.encoding {
            Encoding::Hex => crate::id::hex(mac),
            Encoding::Base64 => encode_base64(mac),
        }
    }

    pub fn verify(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        secrets: &[Secret],
        now: SystemTime,
    ) -> Result<Verified, VerifyError> {
        let raw = single_header(headers, self.header.as_str())?
            .ok_or_else(|| VerifyError::MissingHeader(self.shown.clone().into()))?;
        let sig = raw
            .trim_ascii()
            .strip_prefix(self.prefix.as_slice())
            .and_then(|s| match self.encoding {
                Encoding::Hex => decode_hex(s),
                Encoding::Base64 => decode_base64(s),
            })
            .filter(|s| s.len() == self.algorithm.output_len())
            .ok_or_else(|| {
                VerifyError::malformed(
                    &self.shown,
                    match self.encoding {
                        Encoding::Hex => "expected the configured prefix and a hex HMAC",
                        Encoding::Base64 => "expected the configured prefix and a base64 HMAC",
                    },
                )
            })?;
        let ts = match &self.timestamp_header {
            Some(name) => {
                let raw = single_header(headers, name.as_str())?
                    .ok_or_else(|| VerifyError::MissingHeader(name.as_str().to_string().into()))?;
                let ts = parse_timestamp(raw, name.as_str())?;
                check_timestamp(ts, now, self.tolerance)?;
                Some(ts.to_string())
            }
            None => None,
        };
        let delivery_header = match &self.delivery_header {
            Some(name) => text_header(headers, name.as_str()),
            None => None,
        };
        let mut parts: Vec<&[u8]> = Vec::with_capacity(self.template.len());
        for p in &self.template {
            parts.push(match p {
                Part::Literal(l) => l,
                Part::Body => body,
                Part::Timestamp => ts.as_deref().unwrap_or("").as_bytes(),
                Part::Delivery => delivery_header.as_deref().unwrap_or("").as_bytes(),
            });
        }
        let key_index =
            match_secrets(self.algorithm, secrets, &parts, &[sig]).ok_or(VerifyError::Mismatch)?;
        let delivery_id = if self.delivery_header.is_some() {
            delivery_header
        } else {
            Some(
                self.delivery_field
                    .as_deref()
                    .and_then(|f| json_field(body, f))
                    .unwrap_or_else(|| fallback_key(ts.as_deref(), body)),
            )
        };
        Ok(Verified {
            key_index,
            delivery_id,
            event: self
                .event_header
                .as_ref()
                .and_then(|n| text_header(headers, n.as_str())),
        })
    }

    pub fn sign(
        &self,
        body: &[u8],
        secret: &Secret,
        delivery_id: &str,
        event: &str,
        now: SystemTime,
    ) -> Vec<(String, String)> {
        let ts = unix_seconds(now).to_string();
        let parts: Vec<&[u8]> = self
            .template
            .iter()
            .map(|p| match p {
                Part::Literal(l) => l.as_slice(),
                Part::Body => body,
                Part::Timestamp => ts.as_bytes(),
                Part::Delivery => delivery_id.as_bytes(),
            })
            .collect();
        let mac = hmac(self.algorithm, &secret.0, &parts);
        let mut out = vec![(
            self.shown.clone(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&self.prefix),
                self.encode(&mac)
            ),
        )];
        if let Some(h) = &self.timestamp_header {
            out.push((h.as_str().into(), ts.clone()));
        }
        if let Some(h) = &self.delivery_header {
            out.push((h.as_str().into(), delivery_id.into()));
        }
        if let Some(h) = &self.event_header {
            out.push((h.as_str().into(), event.into()));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates() {
        assert_eq!(
            parse_template("{timestamp}.{body}").unwrap(),
            vec![Part::Timestamp, Part::Literal(b".".to_vec()), Part::Body]
        );
        assert_eq!(
            parse_template("v0:{timestamp}:{body}").unwrap()[0],
            Part::Literal(b"v0:".to_vec())
        );
        assert!(parse_template("{timestamp}").is_err());
        assert!(parse_template("{body}{body}").is_err());
        assert!(parse_template("{body}{nope}").is_err());
        assert!(parse_template("{body").is_err());
    }
}
