//! Request routing and the hook handler.
//!
//! The contract: 2xx only once the event is durable; 202 new,
//! 200 duplicate, 401 bad signature, 404 unknown hook, 405 wrong method,
//! 408 body not received in time (or evicted as the slowest reader while
//! every slot is taken), 413 too large, 429 over a rate limit, 503 +
//! Retry-After when overloaded or the store is down, always quickly. Error
//! bodies are `{"error": "..."}` and never contain a secret.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use http::header::{HeaderValue, ALLOW, CONNECTION, CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use serde_json::json;

use super::body::{read_body, BodyError};
use super::listen::Role;
use crate::app::{App, Hook};
use crate::config::ResponseConfig;
use crate::payload::{Meta, RequestView};
use crate::rules::{self, Refusal, SlotGuard};
use crate::store::writer::SubmitError;
use crate::store::{EventState, Headers, NewEvent, Outcome, StoreError};
use crate::verify::Verified;

pub type Body = Full<Bytes>;

/// Headers that carry credentials; never stored.
const SENSITIVE_HEADERS: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "cookie",
    "x-gitlab-token",
];

pub async fn handle(
    app: &Arc<App>,
    role: Role,
    peer: Option<SocketAddr>,
    req: Request<Incoming>,
) -> Response<Body> {
    // hyper's own limit is its read buffer, which grows in steps; count the
    // head ourselves so `server.max_header_bytes` means what it says.
    let limit = app.live().config.server.max_header_bytes;
    let head: usize = req.method().as_str().len()
        + req.uri().path_and_query().map_or(0, |p| p.as_str().len())
        + req
            .headers()
            .iter()
            .map(|(k, v)| k.as_str().len() + v.len() + 4)
            .sum::<usize>();
    if head > limit {
        app.metrics.reject("headers_too_large");
        return error(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "request headers too large",
        );
    }
    let path = req.uri().path().to_string();
    if role.serves_hooks() {
        if let Some(id) = path.strip_prefix("/hooks/") {
            if req.method() != Method::POST {
                app.metrics.reject("method");
                return method_not_allowed("POST");
            }
            return hook(app, id, peer, req).await;
        }
    }
    if role.serves_admin() {
        if super::ui::is_ui(&path) {
            return super::ui::handle(app, peer, req).await;
        }
        let admin = matches!(
            path.as_str(),
            "/healthz" | "/readyz" | "/status" | "/metrics"
        );
        if admin {
            if req.method() != Method::GET && req.method() != Method::HEAD {
                return method_not_allowed("GET, HEAD");
            }
            let openmetrics = req
                .headers()
                .get_all(http::header::ACCEPT)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .any(|v| v.contains("application/openmetrics-text"));
            return super::admin::route(app, &path, openmetrics);
        }
    }
    app.metrics.reject("not_found");
    error(
        StatusCode::NOT_FOUND,
        "no such endpoint; hooks are POST /hooks/{id}",
    )
}

/// What the hook handler decided, for the response and the log line.
struct Answer {
    status: StatusCode,
    body: serde_json::Value,
    /// Seconds (a u16 keeps `Answer` small; longer waits are capped).
    retry_after: Option<u16>,
    delivery: Option<String>,
    event: Option<String>,
    /// Our id of the stored (or duplicate) event.
    event_id: Option<String>,
    /// Which of the hook's secrets matched.
    key_index: Option<usize>,
    detail: String,
    /// A hook's own answer (`[hooks.response]`, a handshake, a command's
    /// output) instead of the JSON body.
    custom: Option<Box<Custom>>,
    /// False when the outcome is counted already (ignored) or is not a
    /// refusal (a command's 500): the status does not go into the refusal
    /// counters, and the log line stays at info.
    counted: bool,
    /// Logged at debug only (refusals of a flood must not flood the journal).
    quiet: bool,
}

/// A raw response body with its content type and extra headers.
struct Custom {
    body: Bytes,
    content_type: HeaderValue,
    headers: Vec<(http::HeaderName, HeaderValue)>,
}

impl Answer {
    /// Apply a configured response: its status, and its body and headers.
    fn shaped(mut self, c: Option<&ResponseConfig>) -> Answer {
        let Some(c) = c else { return self };
        if let Some(s) = c.status.and_then(|s| StatusCode::from_u16(s).ok()) {
            self.status = s;
        }
        let headers = c
            .headers
            .iter()
            .filter_map(|(k, v)| {
                Some((
                    http::HeaderName::from_bytes(k.as_bytes()).ok()?,
                    HeaderValue::from_str(v).ok()?,
                ))
            })
            .collect::<Vec<_>>();
        if c.body.is_some() || !headers.is_empty() {
            let (body, content_type) = match &c.body {
                Some(b) => (
                    Bytes::from(b.clone().into_bytes()),
                    c.content_type
                        .as_deref()
                        .and_then(|t| HeaderValue::from_str(t).ok())
                        .unwrap_or(HeaderValue::from_static("text/plain; charset=utf-8")),
                ),
                None => {
                    let mut bytes = serde_json::to_vec(&self.body).unwrap_or_default();
                    bytes.push(b'\n');
                    (
                        Bytes::from(bytes),
                        HeaderValue::from_static("application/json"),
                    )
                }
            };
            self.custom = Some(Box::new(Custom {
                body,
                content_type,
                headers,
            }));
        }
        self
    }
}

impl Answer {
    fn fail(status: StatusCode, message: impl Into<String>) -> Answer {
        let message = message.into();
        Answer {
            status,
            body: json!({ "error": message }),
            retry_after: None,
            delivery: None,
            event: None,
            event_id: None,
            key_index: None,
            detail: format!("error={message:?}"),
            custom: None,
            counted: true,
            quiet: false,
        }
    }

    fn retry(mut self, secs: u32) -> Answer {
        self.retry_after = Some(u16::try_from(secs).unwrap_or(u16::MAX));
        self
    }
}

async fn hook(
    app: &Arc<App>,
    id: &str,
    peer: Option<SocketAddr>,
    req: Request<Incoming>,
) -> Response<Body> {
    let started = Instant::now();
    let live = app.live();
    let body_deadline = tokio::time::Instant::now()
        .checked_add(live.config.server.body_timeout)
        .unwrap_or_else(|| tokio::time::Instant::now() + std::time::Duration::from_secs(86_400));
    // The global cap comes first: an overloaded daemon answers at once
    // (after evicting the slowest body reader, if there is one).
    let Some(slot) = app.slots.enter(live.config.server.max_in_flight).await else {
        app.metrics.reject("overloaded");
        log::warn!(
            status = 503u16, peer = peer_str(peer).as_str();
            "status=503 peer={} error=\"more than server.max_in_flight={} requests in flight\"",
            peer_str(peer),
            live.config.server.max_in_flight
        );
        let mut r = error(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many requests in flight, try again later",
        );
        r.headers_mut().insert(RETRY_AFTER, HeaderValue::from(1u32));
        return r;
    };
    let Some(hook) = live.hooks.get(id).cloned() else {
        app.metrics.reject("unknown_hook");
        let shown: String = id.chars().take(64).collect();
        log::warn!(
            hook = shown.as_str(), status = 404u16, peer = peer_str(peer).as_str();
            "hook={shown:?} status=404 peer={} error=\"unknown hook\"",
            peer_str(peer)
        );
        return error(StatusCode::NOT_FOUND, "unknown hook");
    };
    drop(live);
    let answer = process(app, &hook, peer, req, body_deadline, &slot).await;
    drop(slot);
    let c = &hook.counters;
    match answer.status.as_u16() {
        _ if !answer.counted => {}
        202 => {}
        200 => {}
        401 => {
            c.unauthorized.inc();
        }
        413 => {
            c.too_large.inc();
        }
        429 => {
            c.rate_limited.inc();
        }
        403 => {
            c.forbidden.inc();
        }
        503 | 500 => {
            c.unavailable.inc();
        }
        _ => {
            c.bad_request.inc();
        }
    }
    if !answer.status.is_success() && answer.counted {
        app.metrics.rejected_total.inc();
    }
    let elapsed = started.elapsed();
    app.metrics.request_seconds.observe(elapsed.as_secs_f64());
    let duration_ms = elapsed.as_secs_f64() * 1000.0;
    let peer = peer_str(peer);
    let status = answer.status.as_u16();
    let level = match status {
        _ if answer.quiet => log::Level::Debug,
        _ if !answer.counted => log::Level::Info,
        200..=299 => log::Level::Info,
        500..=599 => log::Level::Error,
        _ => log::Level::Warn,
    };
    // The same facts as fields (the journal's WEBHOOKD_*, log.format = "json"):
    // ids, status, time and address only, never a secret or the body.
    log::log!(
        level,
        hook = hook.id.as_str(),
        delivery = answer.delivery.as_deref(),
        event_id = answer.event_id.as_deref(),
        event_type = answer.event.as_deref(),
        status = status,
        duration = (duration_ms * 100.0).round() / 100.0,
        peer = peer.as_str(),
        secret_index = answer.key_index.map(|k| k as u64);
        // Formatted once, by the logger, straight into its line.
        "hook={} delivery={} event={} status={status} duration_ms={duration_ms:.2} peer={peer} {}",
        hook.id,
        answer.delivery.as_deref().unwrap_or("-"),
        answer.event.as_deref().unwrap_or("-"),
        answer.detail,
    );
    let mut resp = match answer.custom.map(|c| *c) {
        Some(c) => {
            let mut r = Response::new(Full::new(c.body));
            *r.status_mut() = answer.status;
            r.headers_mut().insert(CONTENT_TYPE, c.content_type);
            for (k, v) in c.headers {
                r.headers_mut().append(k, v);
            }
            r
        }
        None => json_response(answer.status, &answer.body),
    };
    if answer.status == StatusCode::REQUEST_TIMEOUT {
        // The rest of the body is not read: close rather than resync.
        resp.headers_mut()
            .insert(CONNECTION, HeaderValue::from_static("close"));
    }
    if let Some(s) = answer.retry_after {
        resp.headers_mut().insert(RETRY_AFTER, HeaderValue::from(s));
    }
    resp
}

/// A hook request after the hook was found: admit, read and verify, store.
async fn process(
    app: &App,
    hook: &Hook,
    peer: Option<SocketAddr>,
    req: Request<Incoming>,
    body_deadline: tokio::time::Instant,
    slot: &SlotGuard<'_>,
) -> Answer {
    let started = Instant::now();
    if let Err(refused) = admit(app, hook, peer, req.headers()) {
        return *refused;
    }
    let (parts, body) = req.into_parts();
    let query = parts.uri.query().unwrap_or("");
    let (body, verified) =
        match read_and_verify(hook, &parts.headers, query, body, body_deadline, slot).await {
            Ok(v) => v,
            Err(refused) => return refused,
        };
    // The event type is the sender's text (a header, or the body for some
    // schemes): stored and logged, so bounded and without control
    // characters. The body keeps every byte.
    let event = match verified.event.as_deref() {
        Some(e) => crate::store::safe_label(e, crate::store::EVENT_TYPE_MAX).into_owned(),
        None => "unknown".into(),
    };
    let key = format!("key={}", verified.key_index);
    // Payload rules and handshakes see the verified request only.
    let view = request_view(hook, &parts.headers, query, &body, &event, &verified);
    if let Some(a) = handshake(hook, &view, &event, &key) {
        return a;
    }
    let delivery = match accept(app, hook, &verified, &body, &event, &key) {
        Ok(d) => d,
        Err(answer) => {
            let mut answer = *answer;
            answer.key_index = Some(verified.key_index);
            return answer;
        }
    };
    if let Some(rule) = &hook.payload.rule {
        if let Err(m) = rule.check(&view) {
            hook.counters.ignored.inc();
            hook.counters.rule_mismatch.inc();
            app.metrics.ignored_total.inc();
            return Answer {
                status: StatusCode::OK,
                body: json!({"status": "ignored", "reason": "the hook's rule did not match"}),
                retry_after: None,
                delivery: Some(delivery),
                event: Some(event),
                event_id: None,
                key_index: None,
                detail: format!("{key} ignored=rule rule={:?} reason={:?}", m.rule, m.reason),
                custom: None,
                // Counted as ignored above, whatever status the hook answers it with.
                counted: false,
                quiet: false,
            }
            .shaped(hook.response.ignored.as_ref());
        }
    }
    drop(view);
    let mut new = NewEvent {
        id: crate::id::new_event_id(),
        hook_id: hook.id.clone(),
        delivery_id: delivery.clone(),
        event_type: event.clone(),
        received_at: SystemTime::now(),
        headers: kept_headers(hook, &parts.headers, query),
        body,
        state: if !hook.routes.is_empty() {
            EventState::Pending
        } else {
            EventState::Stored
        },
        actions: None,
    };
    // Fanned out here when the store can keep the deliveries with the
    // event: the dispatcher then only claims. An event no action matches is
    // left to the dispatcher, which logs and closes it.
    if !hook.routes.is_empty() && app.store.fans_out_at_ingest() {
        let actions: Vec<String> = hook
            .routes
            .iter()
            .filter(|r| r.when.matches_new(&new))
            .map(|r| r.action_id.clone())
            .collect();
        if !actions.is_empty() {
            new.actions = Some(actions);
        }
    }
    // respond = "after_action": listen for the first attempt before the
    // event can be claimed; it is still committed before anything runs.
    let waiting = match (hook.respond_after, hook.routes.first()) {
        (Some(deadline), Some(_)) => {
            let first = new.actions.as_ref().and_then(|a| a.first());
            Some((
                deadline,
                app.delivery.wait_first(&new.id, first.map(String::as_str)),
            ))
        }
        _ => None,
    };
    let event_id = new.id.clone();
    let mut a = store(app, hook, new, &key).await;
    if let Some((deadline, rx)) = waiting {
        let fresh = a.body.get("status").and_then(|s| s.as_str()) == Some("accepted")
            && a.body.get("spooled").is_none();
        let left = deadline.saturating_sub(started.elapsed());
        // Only a newly stored event will be attempted; a duplicate, a
        // spooled event or a refusal is answered at once.
        let first = if fresh {
            tokio::time::timeout(left, rx)
                .await
                .ok()
                .and_then(Result::ok)
        } else {
            None
        };
        match first {
            Some(first) => a = after_action(hook, a, &event_id, first),
            None => {
                app.delivery.forget_first(&event_id);
                if fresh {
                    a.detail.push_str(" respond=deadline-passed");
                }
            }
        }
    }
    a.delivery = Some(delivery);
    a.event = Some(event);
    a.key_index = Some(verified.key_index);
    a
}

/// The answer carrying the first attempt's result: a command's output with
/// 200 (exit 0) or 500 (failed), or the forward target's status (502 if it
/// did not answer). Retries go on as usual after a failure.
fn after_action(
    hook: &Hook,
    stored: Answer,
    id: &str,
    first: crate::deliver::FirstResult,
) -> Answer {
    if first.no_action {
        // No action's condition matched: nothing runs, answer as stored.
        return Answer {
            detail: format!(
                "{} respond=after_action result=no-action-matched",
                stored.detail
            ),
            ..stored
        };
    }
    let exec = first.exec.unwrap_or_else(|| {
        hook.routes
            .first()
            .is_some_and(|r| matches!(r.action.kind, crate::deliver::ActionKind::Exec(_)))
    });
    let accepted = hook.response.accepted.as_ref();
    let mut headers: Vec<(http::HeaderName, HeaderValue)> = accepted
        .map(|c| {
            c.headers
                .iter()
                .filter_map(|(k, v)| {
                    Some((
                        http::HeaderName::from_bytes(k.as_bytes()).ok()?,
                        HeaderValue::from_str(v).ok()?,
                    ))
                })
                .collect()
        })
        .unwrap_or_default();
    if let Ok(v) = HeaderValue::from_str(id) {
        headers.push((http::HeaderName::from_static("x-webhookd-event-id"), v));
    }
    if first.truncated {
        headers.push((
            http::HeaderName::from_static("x-webhookd-output-truncated"),
            HeaderValue::from_static("true"),
        ));
    }
    let result = if first.ok { "done" } else { "failed" };
    let (status, body, content_type) = if exec {
        let status = match (first.ok, accepted.and_then(|c| c.status)) {
            (true, Some(s)) => StatusCode::from_u16(s).unwrap_or(StatusCode::OK),
            (true, None) => StatusCode::OK,
            (false, _) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        // A failure says why in one line (a missing request value, an
        // exit status); the command's own output only if the hook asks,
        // since it may show internals to the sender.
        let body = match &first.error {
            None => first.output,
            Some(e) if hook.respond_error_output => {
                let mut b = first.output;
                if b.is_empty() {
                    b = format!("{e}\n").into_bytes();
                }
                b
            }
            Some(e) => format!("{e}\n").into_bytes(),
        };
        (
            status,
            Bytes::from(body),
            HeaderValue::from_static("text/plain; charset=utf-8"),
        )
    } else {
        let status = first
            .target_status
            .and_then(|s| StatusCode::from_u16(s).ok())
            .unwrap_or(StatusCode::BAD_GATEWAY);
        let mut b = serde_json::to_vec(&json!({
            "id": id,
            "status": result,
            "target_status": first.target_status,
            "error": first.error,
        }))
        .unwrap_or_default();
        b.push(b'\n');
        (
            status,
            Bytes::from(b),
            HeaderValue::from_static("application/json"),
        )
    };
    Answer {
        status,
        detail: format!("{} respond=after_action result={result}", stored.detail),
        custom: Some(Box::new(Custom {
            body,
            content_type,
            headers,
        })),
        counted: false,
        quiet: false,
        ..stored
    }
}

/// The allowlist, before the body is read or anything verified; then
/// whether the hook can verify at all. The rate limits come after
/// verification (see read_and_verify): an unsigned flood must not cost the
/// genuine sender its tokens (GitHub does not retry a 429).
fn admit(
    app: &App,
    hook: &Hook,
    peer: Option<SocketAddr>,
    headers: &HeaderMap,
) -> Result<(), Box<Answer>> {
    let client = rules::client_ip(peer, headers, &app.live().proxies);
    match hook.rules.check_allowed(client) {
        Ok(()) => {}
        Err(Refusal::Forbidden(ip)) => {
            let mut a = Answer::fail(
                StatusCode::FORBIDDEN,
                "client address is not allowed for this hook",
            );
            let shown = ip
                .map(|i| i.to_string())
                .unwrap_or_else(|| "unknown".into());
            a.detail = format!("client={shown} {}", a.detail);
            return Err(Box::new(a));
        }
    }
    if let Some(p) = &hook.problem {
        log::debug!("hook {}: {p}", hook.id);
        return Err(Box::new(
            Answer::fail(
                StatusCode::SERVICE_UNAVAILABLE,
                "hook is not usable: no secret is configured (see the server log)",
            )
            .retry(60),
        ));
    }
    Ok(())
}

/// The verified request as payload rules and handshakes read it.
fn request_view<'a>(
    hook: &Hook,
    headers: &HeaderMap,
    query: &str,
    body: &'a [u8],
    event: &str,
    verified: &Verified,
) -> RequestView<'a> {
    let needed = hook.payload.rule.is_some() || hook.payload.handshake.is_some();
    RequestView::new(
        headers.iter().filter(|_| needed).map(|(k, v)| {
            (
                k.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        }),
        if needed { query } else { "" },
        body,
        Meta {
            event: Some(event.to_string()),
            delivery: verified.delivery_id.clone(),
            hook: Some(hook.id.clone()),
            id: None,
        },
    )
    .with_content_type(hook.payload_content_type.as_deref())
}

/// `[hooks.handshake]`: an endpoint check answered with the value it asks
/// for, not stored.
fn handshake(hook: &Hook, view: &RequestView<'_>, event: &str, key: &str) -> Option<Answer> {
    let hs = hook.payload.handshake.as_ref()?;
    hs.rule.check(view).ok()?;
    hook.counters.handshake.inc();
    let Some(value) = view.get(&hs.echo) else {
        let mut a = Answer::fail(
            StatusCode::BAD_REQUEST,
            format!("handshake: the request has no {}", hs.echo),
        );
        a.event = Some(event.to_string());
        return Some(a);
    };
    let text = value.text().into_owned();
    let (body, content_type) = match &hs.json_field {
        Some(f) => {
            let mut b = serde_json::to_vec(&json!({ f.as_str(): text })).unwrap_or_default();
            b.push(b'\n');
            (Bytes::from(b), HeaderValue::from_static("application/json"))
        }
        None => (
            Bytes::from(text.into_bytes()),
            HeaderValue::from_static("text/plain; charset=utf-8"),
        ),
    };
    Some(Answer {
        status: StatusCode::OK,
        body: serde_json::Value::Null,
        retry_after: None,
        delivery: None,
        event: Some(event.to_string()),
        event_id: None,
        key_index: None,
        detail: format!("{key} handshake"),
        custom: Some(Box::new(Custom {
            body,
            content_type,
            headers: Vec::new(),
        })),
        counted: true,
        quiet: false,
    })
}

/// Read the body within the hook's limit and `server.body_timeout`, check
/// its signature, then take a token: a verified request from `rate_limit`,
/// a refused one from the hook's unverified bucket (bounded separately).
async fn read_and_verify(
    hook: &Hook,
    headers: &HeaderMap,
    query: &str,
    body: Incoming,
    body_deadline: tokio::time::Instant,
    slot: &SlotGuard<'_>,
) -> Result<(Bytes, Verified), Answer> {
    let content_length = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let body = match read_body(
        body,
        content_length,
        hook.body_limit,
        body_deadline,
        Some(slot),
    )
    .await
    {
        Ok(b) => b,
        Err(e @ BodyError::TooLarge(_)) => {
            return Err(Answer::fail(StatusCode::PAYLOAD_TOO_LARGE, e.to_string()))
        }
        Err(e @ (BodyError::TimedOut | BodyError::Evicted)) => {
            return Err(Answer::fail(StatusCode::REQUEST_TIMEOUT, e.to_string()))
        }
        Err(e) => return Err(Answer::fail(StatusCode::BAD_REQUEST, e.to_string())),
    };
    match hook
        .scheme
        .verify_request(headers, query, &body, &hook.secrets, SystemTime::now())
    {
        Ok(v) => match hook.rules.take_verified(Instant::now()) {
            Ok(()) => Ok((body, v)),
            Err(secs) => {
                Err(Answer::fail(StatusCode::TOO_MANY_REQUESTS, "rate limit exceeded").retry(secs))
            }
        },
        Err(e) => match hook.rules.take_unverified(Instant::now()) {
            Ok(()) => Err(Answer::fail(StatusCode::UNAUTHORIZED, e.to_string())),
            Err(_) => {
                // Bounded separately; the genuine sender's bucket is untouched.
                let mut a = Answer::fail(
                    StatusCode::TOO_MANY_REQUESTS,
                    "too many requests that fail verification",
                )
                .retry(60);
                a.detail = format!("error=\"{e}\" unverified-rate-limited");
                a.quiet = true;
                Err(a)
            }
        },
    }
}

/// Decide whether a verified request is an event to store; returns its
/// delivery id, or the answer for one that is not (Slack's URL check, a
/// missing or unusable delivery id, a filtered event type).
fn accept(
    app: &App,
    hook: &Hook,
    verified: &Verified,
    body: &[u8],
    event: &str,
    key: &str,
) -> Result<String, Box<Answer>> {
    // Slack checks a new Events API URL with a signed url_verification
    // request and expects its challenge back; it is not an event to store.
    if hook.scheme.name() == "slack" && event == "url_verification" {
        if let Some(challenge) = crate::verify::json_field(body, "challenge") {
            return Err(Box::new(Answer {
                status: StatusCode::OK,
                body: json!({ "challenge": challenge }),
                retry_after: None,
                delivery: None,
                event: Some(event.to_string()),
                event_id: None,
                key_index: None,
                detail: format!("{key} slack-url-verification"),
                custom: None,
                counted: true,
                quiet: false,
            }));
        }
    }
    let Some(delivery) = verified.delivery_id.clone() else {
        let mut a = Answer::fail(
            StatusCode::BAD_REQUEST,
            format!("missing {}", hook.scheme.delivery_header()),
        );
        a.event = Some(event.to_string());
        return Err(Box::new(a));
    };
    if delivery.len() > 200 || delivery.chars().any(|c| c.is_control()) {
        return Err(Box::new(Answer::fail(
            StatusCode::BAD_REQUEST,
            "delivery id is longer than 200 bytes or has control characters",
        )));
    }
    if let Some(allowed) = &hook.events {
        if !allowed.contains(event) {
            hook.counters.ignored.inc();
            app.metrics.ignored_total.inc();
            return Err(Box::new(Answer {
                status: StatusCode::OK,
                body: json!({"status": "ignored", "reason": "event type not configured for this hook"}),
                retry_after: None,
                delivery: Some(delivery),
                event: Some(event.to_string()),
                event_id: None,
                key_index: None,
                detail: format!("{key} ignored=event-filter"),
                custom: None,
                counted: false,
                quiet: false,
            }
            .shaped(hook.response.ignored.as_ref())));
        }
    }
    Ok(delivery)
}

/// Hand the event to the writer and wait (bounded) until it is durable.
async fn store(app: &App, hook: &Hook, new: NewEvent, key: &str) -> Answer {
    let rx = match app.writer.submit(new) {
        Ok(rx) => rx,
        Err(e @ SubmitError::Full(_)) => {
            return Answer::fail(StatusCode::SERVICE_UNAVAILABLE, format!("overloaded: {e}"))
                .retry(1)
        }
        Err(e @ SubmitError::Closed) => {
            return Answer::fail(StatusCode::SERVICE_UNAVAILABLE, e.to_string()).retry(5)
        }
    };
    let timeout = app.live().config.server.store_timeout;
    let reply = match tokio::time::timeout(timeout, rx).await {
        Ok(Ok(r)) => r,
        Ok(Err(_)) => Err(StoreError::Unavailable("store writer stopped".into())),
        Err(_) => {
            return Answer::fail(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("store did not answer within {timeout:?}"),
            )
            .retry(5)
        }
    };
    match reply {
        Ok(Outcome::Stored(id)) => accepted(app, hook, key, id, false),
        Ok(Outcome::Spooled(id)) => accepted(app, hook, key, id, true),
        Ok(Outcome::Duplicate(id)) => {
            hook.counters.duplicate.inc();
            app.metrics.duplicate_total.inc();
            let detail = format!("{key} id={id} duplicate");
            Answer {
                status: StatusCode::OK,
                body: json!({"id": id, "status": "duplicate"}),
                retry_after: None,
                delivery: None,
                event: None,
                event_id: Some(id.to_string()),
                key_index: None,
                detail,
                custom: None,
                counted: true,
                quiet: false,
            }
            .shaped(hook.response.duplicate.as_ref())
        }
        Err(e @ StoreError::Unavailable(_)) => {
            let mut a = Answer::fail(
                StatusCode::SERVICE_UNAVAILABLE,
                "store unavailable, try again later",
            )
            .retry(5);
            a.detail = format!("error=\"{e}\"");
            a
        }
        Ok(Outcome::Refused(why)) | Err(StoreError::Rejected(why)) => {
            let mut a = Answer::fail(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the database refused this event, see the server log",
            );
            a.detail = format!(
                "error={:?}",
                format!("the database refused the event: {why}")
            );
            a
        }
        Err(e) => {
            let mut a = Answer::fail(
                StatusCode::INTERNAL_SERVER_ERROR,
                "store error, see the server log",
            );
            a.detail = format!("error=\"{e}\"");
            a
        }
    }
}

/// 202 for a new event, stored or (PostgreSQL unreachable) spooled.
fn accepted(app: &App, hook: &Hook, key: &str, id: String, spooled: bool) -> Answer {
    if !hook.routes.is_empty() {
        app.delivery.wake.notify_one();
    }
    hook.counters.accepted.inc();
    app.metrics.accepted_total.inc();
    let detail = format!("{key} id={id}{}", if spooled { " spooled" } else { "" });
    let mut body = json!({"id": id, "status": "accepted"});
    if spooled {
        body["spooled"] = json!(true);
    }
    Answer {
        status: StatusCode::ACCEPTED,
        body,
        retry_after: None,
        delivery: None,
        event: None,
        event_id: Some(id.to_string()),
        key_index: None,
        detail,
        custom: None,
        counted: true,
        quiet: false,
    }
    .shaped(hook.response.accepted.as_ref())
}

/// The request headers to keep with the event, minus credentials (and
/// the token scheme's own header), with the query string (minus the token
/// scheme's own parameter) as a `:query` entry, so rules and exec values
/// read the stored event as they read the request.
fn kept_headers(hook: &Hook, h: &HeaderMap, query: &str) -> Headers {
    let (token_header, token_param) = match &hook.scheme {
        crate::verify::Scheme::Token(t) => (t.header(), t.query_param()),
        _ => (None, None),
    };
    let mut pairs: Vec<(String, String)> = h
        .iter()
        .filter(|(k, _)| {
            !SENSITIVE_HEADERS.contains(&k.as_str()) && Some(k.as_str()) != token_header
        })
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let kept: String = match token_param {
        Some(p) => form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form_urlencoded::parse(query.as_bytes()).filter(|(k, _)| k != p))
            .finish(),
        None => query.to_string(),
    };
    if !kept.is_empty() {
        pairs.push((crate::payload::view::QUERY_ENTRY.to_string(), kept));
    }
    Headers(pairs)
}

fn peer_str(peer: Option<SocketAddr>) -> String {
    peer.map(|p| p.to_string()).unwrap_or_else(|| "unix".into())
}

pub(super) fn json_response(status: StatusCode, v: &serde_json::Value) -> Response<Body> {
    let mut bytes = serde_json::to_vec(v).unwrap_or_default();
    bytes.push(b'\n');
    let mut r = Response::new(Full::new(Bytes::from(bytes)));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

fn error(status: StatusCode, message: &str) -> Response<Body> {
    json_response(status, &json!({ "error": message }))
}

fn method_not_allowed(allow: &'static str) -> Response<Body> {
    let mut r = error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
    r.headers_mut()
        .insert(ALLOW, HeaderValue::from_static(allow));
    r
}
