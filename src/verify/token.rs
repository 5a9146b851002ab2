//! `token`: a shared token the sender puts in a header, a query parameter or
//! the body (adnanh/webhook's value match on `X-Gitlab-Token`, `?token=`, a
//! Slack slash command's `token` field), compared in constant time against
//! every configured secret. And `none`: nothing is checked at all, for
//! senders that can do nothing else (only with `scheme = "none"` written
//! out, and marked in /status and the log).
//!
//! Neither has a delivery id of its own: it is `delivery_header`, else the
//! JSON or form field `delivery_field`, else the SHA-256 of the body, so the
//! same body sent twice is one event (as for GitLab and generic HMAC).

use http::{HeaderMap, HeaderName};
use sha2::Digest as _;
use subtle::ConstantTimeEq;

use super::{body_digest, text_header, OptionError, Verified, VerifyError};
use crate::config::{HookConfig, Secret};
use crate::payload::path::Source;
use crate::payload::{Meta, RequestView, ValueRef};

/// Where the delivery id and event type come from (both schemes).
#[derive(Debug, Clone, Default)]
pub struct Ids {
    delivery_header: Option<HeaderName>,
    delivery_field: Option<ValueRef>,
    event_header: Option<HeaderName>,
    /// The hook's `payload_content_type`, for a token in the body.
    content_type: Option<String>,
}

impl Ids {
    pub fn from_config(h: &HookConfig) -> Result<Ids, OptionError> {
        let name = |key: &'static str,
                    v: &Option<String>|
         -> Result<Option<HeaderName>, OptionError> {
            v.as_deref()
                .map(|s| {
                    HeaderName::from_bytes(s.as_bytes()).map_err(|_| {
                        OptionError::new(key, format!("expected an HTTP header name, got {s:?}"))
                    })
                })
                .transpose()
        };
        let delivery_field = match &h.delivery_field {
            Some(f) => Some(
                ValueRef::parse(&format!("body.{f}"))
                    .map_err(|m| OptionError::new("delivery_field", m))?,
            ),
            None => None,
        };
        Ok(Ids {
            delivery_header: name("delivery_header", &h.delivery_header)?,
            delivery_field,
            event_header: name("event_header", &h.event_header)?,
            content_type: h.payload_content_type.clone(),
        })
    }

    fn verified(&self, headers: &HeaderMap, view: &RequestView<'_>, key_index: usize) -> Verified {
        let delivery = self
            .delivery_header
            .as_ref()
            .and_then(|h| text_header(headers, h.as_str()))
            .or_else(|| {
                self.delivery_field
                    .as_ref()
                    .and_then(|f| view.get(f))
                    .map(|v| v.text().into_owned())
                    .filter(|s| !s.is_empty())
            })
            .unwrap_or_else(|| format!("sha256:{}", body_digest(&[view.raw_body()])));
        Verified {
            key_index,
            delivery_id: Some(delivery),
            event: self
                .event_header
                .as_ref()
                .and_then(|h| text_header(headers, h.as_str())),
        }
    }

    pub fn delivery_source(&self) -> &'static str {
        if self.delivery_header.is_some() {
            "delivery header"
        } else {
            "delivery id"
        }
    }
}

fn view<'a>(ids: &Ids, headers: &HeaderMap, query: &str, body: &'a [u8]) -> RequestView<'a> {
    RequestView::new(
        headers.iter().map(|(k, v)| {
            (
                k.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        }),
        query,
        body,
        Meta::default(),
    )
    .with_content_type(ids.content_type.as_deref())
}

#[derive(Debug, Clone)]
pub struct Token {
    pub from: ValueRef,
    ids: Ids,
}

impl Token {
    pub fn from_config(h: &HookConfig) -> Result<Token, OptionError> {
        let Some(t) = &h.token else {
            return Err(OptionError::new(
                "token",
                "scheme \"token\" needs `token`: where the token is, e.g. \"header.X-Gitlab-Token\", \"query.token\" or \"body.token\"",
            ));
        };
        let from = ValueRef::parse(t).map_err(|m| OptionError::new("token", m))?;
        if !matches!(
            from.source,
            Source::Header(_) | Source::Query(_) | Source::Form(_)
        ) && !matches!(&from.source, Source::Body(p) if !p.is_empty())
        {
            return Err(OptionError::new(
                "token",
                format!("expected header.NAME, query.NAME, form.NAME or body.PATH, got {t:?}"),
            ));
        }
        Ok(Token {
            from,
            ids: Ids::from_config(h)?,
        })
    }

    /// The header the token travels in, if it does (kept out of the store).
    pub fn header(&self) -> Option<&str> {
        match &self.from.source {
            Source::Header(h) => Some(h),
            _ => None,
        }
    }

    /// The query parameter the token travels in, if it does (kept out of the store).
    pub fn query_param(&self) -> Option<&str> {
        match &self.from.source {
            Source::Query(q) => Some(q),
            _ => None,
        }
    }

    pub fn verify(
        &self,
        headers: &HeaderMap,
        query: &str,
        body: &[u8],
        secrets: &[Secret],
    ) -> Result<Verified, VerifyError> {
        let v = view(&self.ids, headers, query, body);
        let given = v
            .get(&self.from)
            .map(|f| sha2::Sha256::digest(f.text().as_bytes()))
            .ok_or_else(|| VerifyError::MissingToken(self.from.to_string()))?;
        // Compare digests: equal lengths, so neither the token's length nor
        // its contents show in the timing; every secret is tried.
        let mut matched = None;
        for (i, s) in secrets.iter().enumerate() {
            let want = sha2::Sha256::digest(&s.0);
            if bool::from(given.as_slice().ct_eq(want.as_slice())) && matched.is_none() {
                matched = Some(i);
            }
        }
        let key_index = matched.ok_or(VerifyError::Mismatch)?;
        Ok(self.ids.verified(headers, &v, key_index))
    }

    pub fn sign(&self, secret: &Secret, event: &str, delivery_id: &str) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if let Some(h) = self.header() {
            out.push((
                h.to_string(),
                String::from_utf8_lossy(&secret.0).into_owned(),
            ));
        }
        if let Some(h) = &self.ids.delivery_header {
            out.push((h.as_str().to_string(), delivery_id.to_string()));
        }
        if let Some(h) = &self.ids.event_header {
            out.push((h.as_str().to_string(), event.to_string()));
        }
        out.push(("Content-Type".into(), "application/json".into()));
        out
    }

    pub fn delivery_source(&self) -> &'static str {
        self.ids.delivery_source()
    }
}

/// `scheme = "none"`.
#[derive(Debug, Clone)]
pub struct NoAuth {
    ids: Ids,
}

impl NoAuth {
    pub fn from_config(h: &HookConfig) -> Result<NoAuth, OptionError> {
        Ok(NoAuth {
            ids: Ids::from_config(h)?,
        })
    }

    pub fn verify(&self, headers: &HeaderMap, query: &str, body: &[u8]) -> Verified {
        self.ids
            .verified(headers, &view(&self.ids, headers, query, body), 0)
    }

    pub fn delivery_source(&self) -> &'static str {
        self.ids.delivery_source()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hook(token: &str) -> HookConfig {
        let text =
            format!("id = \"t\"\nscheme = \"token\"\nsecrets = [\"env:X\"]\ntoken = \"{token}\"\n");
        toml::from_str(&text).unwrap()
    }

    fn secret(s: &str) -> Vec<Secret> {
        vec![Secret(b"other".to_vec()), Secret(s.as_bytes().to_vec())]
    }

    #[test]
    fn header_query_and_body_tokens() {
        let mut h = HeaderMap::new();
        h.insert("x-gitlab-token", "tok-1".parse().unwrap());
        let t = Token::from_config(&hook("header.X-Gitlab-Token")).unwrap();
        let v = t.verify(&h, "", b"{}", &secret("tok-1")).unwrap();
        assert_eq!(v.key_index, 1);
        assert!(v.delivery_id.unwrap().starts_with("sha256:"));
        assert_eq!(
            t.verify(&h, "", b"{}", &secret("tok-2")),
            Err(VerifyError::Mismatch)
        );

        let t = Token::from_config(&hook("query.token")).unwrap();
        assert!(t
            .verify(&HeaderMap::new(), "token=42", b"", &secret("42"))
            .is_ok());
        let e = t
            .verify(&HeaderMap::new(), "", b"", &secret("42"))
            .unwrap_err();
        assert_eq!(e.to_string(), "missing token query.token");

        let t = Token::from_config(&hook("body.token")).unwrap();
        let mut h = HeaderMap::new();
        h.insert(
            "content-type",
            "application/x-www-form-urlencoded".parse().unwrap(),
        );
        assert!(t
            .verify(&h, "", b"token=s3&command=%2Fdeploy", &secret("s3"))
            .is_ok());
    }

    #[test]
    fn bad_token_places_are_config_errors() {
        for bad in ["event", "body", "headers", "payload.token"] {
            let e = Token::from_config(&hook(bad)).unwrap_err();
            assert_eq!(e.key, "token", "{bad}");
        }
    }
}
