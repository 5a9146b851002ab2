//! The `forward` action: POST the stored event to an HTTP target, body
//! byte for byte, with the useful original headers and our own
//! `Webhookd-Delivery` (stable across attempts, for the target's de-dup) and
//! `Webhookd-Attempt`. Optionally re-signed in the Standard Webhooks format
//! so the target can verify it came from us.

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, CONTENT_TYPE, RETRY_AFTER, USER_AGENT};
use http::{Method, Request, Uri};
use http_body_util::{BodyExt, Full};

use super::{Attempt, ForwardTarget};
use crate::config::Secret;
use crate::store::Claimed;

/// Original headers worth passing on: the sender's event, delivery id and
/// signature headers (so a target that knows the sender's secret can verify
/// the original signature too).
fn forwardable(name: &str) -> bool {
    name == "content-type"
        || (name.starts_with("x-")
            && !name.starts_with("x-forwarded-")
            && name != "x-gitlab-token"
            && name != "x-real-ip")
        || name.starts_with("webhook-")
        || name.starts_with("svix-")
        || name.starts_with("stripe-")
}

/// Most bytes of a target's answer that are read; the rest is dropped with
/// the connection.
pub const RESPONSE_LIMIT: usize = 64 * 1024;

/// Pooled HTTP/HTTPS clients (src/tls/client.rs), one per TLS config.
#[derive(Default)]
pub struct Forwarder {
    clients: crate::tls::client::Clients,
}

impl Forwarder {
    pub fn new() -> Forwarder {
        Forwarder::default()
    }

    /// One attempt. `origin` keys the per-target connection limit; waiting
    /// for a free connection counts towards `timeout`.
    pub async fn send(
        &self,
        t: &ForwardTarget,
        origin: &str,
        ev: &Claimed,
        timeout: Duration,
    ) -> Attempt {
        self.send_status(t, origin, ev, timeout).await.0
    }

    /// [`Forwarder::send`], also returning the target's status if it answered.
    pub async fn send_status(
        &self,
        t: &ForwardTarget,
        origin: &str,
        ev: &Claimed,
        timeout: Duration,
    ) -> (Attempt, Option<u16>) {
        let mut req = match build_request(&t.url, ev, t.sign_secret.as_ref(), SystemTime::now()) {
            Ok(r) => r,
            Err(e) => {
                return (
                    Attempt::permanent(format!("cannot build request: {e}")),
                    None,
                )
            }
        };
        for (name, value) in &t.headers {
            req.headers_mut().insert(name.clone(), value.clone());
        }
        let client = self.clients.client(&t.tls);
        let limit = self.clients.limit(origin, t.max_connections);
        let deadline = crate::tls::deadline_after(timeout);
        let Ok(Ok(_permit)) = tokio::time::timeout_at(deadline, limit.acquire_owned()).await else {
            return (
                Attempt::retry(
                    format!(
                        "timed out after {timeout:?} waiting for one of the {} connections to {origin} (max_connections)",
                        t.max_connections
                    ),
                    None,
                ),
                None,
            );
        };
        let fut = async {
            let resp = client.request(req).await?;
            let status = resp.status();
            let retry_after = resp
                .headers()
                .get(RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            // Read (and drop) a small answer so the connection can be
            // reused; stop after RESPONSE_LIMIT bytes (the status decides,
            // and a target streaming for ever must not hold the attempt).
            let mut body = resp.into_body();
            let mut read: usize = 0;
            while read <= RESPONSE_LIMIT {
                match body.frame().await {
                    Some(Ok(f)) => {
                        read = read.saturating_add(f.data_ref().map_or(0, |d| d.len()));
                    }
                    Some(Err(_)) | None => break,
                }
            }
            Ok::<_, hyper_util::client::legacy::Error>((status, retry_after))
        };
        match tokio::time::timeout_at(deadline, fut).await {
            Err(_) => (
                Attempt::retry(format!("timed out after {timeout:?}"), None),
                None,
            ),
            Ok(Err(e)) => (
                Attempt::retry(format!("request failed: {}", error_chain(&e)), None),
                None,
            ),
            Ok(Ok((status, retry_after))) => {
                let code = status.as_u16();
                let a = if status.is_success() {
                    Attempt::Ok
                } else if code == 408 || code == 429 || status.is_server_error() {
                    Attempt::retry(format!("target answered {status}"), retry_after)
                } else {
                    Attempt::permanent(format!("target answered {status}"))
                };
                (a, Some(code))
            }
        }
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

pub fn build_request(
    url: &Uri,
    ev: &Claimed,
    sign_secret: Option<&Secret>,
    now: SystemTime,
) -> Result<Request<Full<Bytes>>, http::Error> {
    let mut b = Request::builder().method(Method::POST).uri(url.clone());
    let mut has_type = false;
    for (k, v) in ev.headers.iter() {
        // Re-signed: the sender's own Standard Webhooks headers would make
        // the target see each of ours twice (and refuse them as ambiguous).
        let ours = sign_secret.is_some()
            && matches!(k, "webhook-id" | "webhook-timestamp" | "webhook-signature");
        if ours || !forwardable(k) {
            continue;
        }
        let (Ok(name), Ok(value)) = (HeaderName::try_from(k), HeaderValue::try_from(v)) else {
            continue;
        };
        has_type |= name == CONTENT_TYPE;
        b = b.header(name, value);
    }
    if !has_type {
        b = b.header(CONTENT_TYPE, "application/octet-stream");
    }
    b = b
        .header(USER_AGENT, concat!("webhookd/", env!("CARGO_PKG_VERSION")))
        .header("webhookd-delivery", ev.id.as_str())
        .header("webhookd-attempt", ev.attempts.to_string())
        .header("webhookd-hook", ev.hook_id.as_str())
        .header("webhookd-event", ev.event_type.as_str())
        .header("webhookd-source-delivery", ev.delivery_id.as_str());
    if let Some(key) = sign_secret {
        // `key` was decoded by verify::standard::decode_secret when the
        // config was loaded, as a `standard` hook decodes its secret.
        for (name, value) in crate::verify::standard::sign_headers(&key.0, &ev.id, now, &ev.body) {
            b = b.header(name, value);
        }
    }
    b.body(Full::new(ev.body.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;

    fn ev() -> Claimed {
        Claimed {
            id: "01TEST".into(),
            hook_id: "gh".into(),
            delivery_id: "d-1".into(),
            event_type: "push".into(),
            received_at: SystemTime::UNIX_EPOCH,
            headers: crate::store::Headers::from_json(r#"[["content-type","application/json"],["x-github-event","push"],["x-forwarded-for","1.2.3.4"],["host","x"],["authorization","no"]]"#).unwrap(),
            body: Bytes::from_static(b"{\"a\":1}"),
            attempts: 3,
            action_id: "default".into(),
        }
    }

    #[test]
    fn headers_are_filtered_and_ours_added() {
        let r = build_request(
            &"http://127.0.0.1:1/x".parse().unwrap(),
            &ev(),
            None,
            SystemTime::UNIX_EPOCH,
        )
        .unwrap();
        let h = r.headers();
        assert_eq!(h["content-type"], "application/json");
        assert_eq!(h["x-github-event"], "push");
        assert_eq!(h["webhookd-delivery"], "01TEST");
        assert_eq!(h["webhookd-attempt"], "3");
        assert!(h.get("x-forwarded-for").is_none());
        assert!(h.get("authorization").is_none());
        assert!(h.get("webhook-signature").is_none());
    }

    #[test]
    fn resigning_follows_standard_webhooks() {
        // Key "whsec_" + base64("secret-key-bytes"); checked by recomputing
        // the documented construction: HMAC-SHA256(key, id.ts.body), base64.
        let secret = Secret(
            crate::verify::standard::decode_secret(b"whsec_c2VjcmV0LWtleS1ieXRlcw==").unwrap(),
        );
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let r = build_request(
            &"http://127.0.0.1:1/x".parse().unwrap(),
            &ev(),
            Some(&secret),
            now,
        )
        .unwrap();
        let h = r.headers();
        assert_eq!(h["webhook-id"], "01TEST");
        assert_eq!(h["webhook-timestamp"], "1700000000");
        let mac =
            crate::verify::hmac_sha256(b"secret-key-bytes", &[b"01TEST.1700000000.{\"a\":1}"]);
        let want = format!(
            "v1,{}",
            base64::engine::general_purpose::STANDARD.encode(mac)
        );
        assert_eq!(h["webhook-signature"], want.as_str());
    }
}
