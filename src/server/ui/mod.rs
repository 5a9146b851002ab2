//! The events console at `/ui/`, on the admin role only (the same rule as
//! `/status`: the admin socket, or the single socket when there is no admin
//! socket). Server-rendered HTML that reads without JavaScript; `ui.js` only
//! polls for new rows. Assets are compiled into the binary; nothing is
//! fetched from elsewhere (the Content-Security-Policy says so too).
//!
//! Reading needs nothing. Changing state (replay) is a POST that must carry
//! the session's token and an `Origin` equal to the page's own: the token
//! is an HMAC, under a key made at start, of a random session id kept in a
//! `SameSite=Strict` cookie, so a page on another origin can neither read
//! nor forge it.

mod glance;
mod html;
mod pages;

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::SystemTime;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use subtle::ConstantTimeEq;

use super::routes::Body;
use crate::app::App;
use crate::store::{EventState, PageQuery, ReplayFilter};
use crate::systemd::journal::NOTICE;

pub use glance::sampler;

const CSS: &str = include_str!("ui.css");
const JS: &str = include_str!("ui.js");
const ICON: &str = "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 16 16\"><rect width=\"16\" height=\"16\" rx=\"3\" fill=\"#2b6cb0\"/><path d=\"M3 5l2.5 7 2.5-5 2.5 5L13 5\" stroke=\"#fff\" stroke-width=\"1.6\" fill=\"none\"/></svg>";

const COOKIE: &str = "webhookd_ui";
/// Most events replayed by one POST.
const REPLAY_MAX: usize = 1000;
/// Most ids a list page examines for matches (see `PageQuery::scan`).
pub(crate) const SCAN: usize = 20_000;
/// Largest form accepted.
const FORM_LIMIT: u64 = 64 * 1024;

/// Is this a console path?
pub fn is_ui(path: &str) -> bool {
    path == "/ui" || path.starts_with("/ui/")
}

/// Serve a console request.
pub async fn handle(
    app: &Arc<App>,
    peer: Option<SocketAddr>,
    req: Request<Incoming>,
) -> Response<Body> {
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let method = req.method().clone();
    let session = Session::of(req.headers());
    if method == Method::POST {
        if path == "/ui/replay" {
            return replay(app, peer, req, session).await;
        }
        return method_not_allowed("GET, HEAD");
    }
    if method != Method::GET && method != Method::HEAD {
        return method_not_allowed(if path == "/ui/replay" {
            "POST"
        } else {
            "GET, HEAD"
        });
    }
    let q = Query::parse(&query);
    let resp = match path.as_str() {
        "/ui" => redirect("/ui/"),
        "/ui/" => {
            let page = read(app, q.page_query(50)).await;
            html_response(pages::events(app, &q, page, &session.token()))
        }
        "/ui/rows" => {
            // Live updates: rows newer than `after`, as <tr> fragments.
            let mut pq = q.page_query(100);
            pq.before = None;
            let page = read(app, pq).await;
            match page {
                Ok(p) => fragment(pages::rows(&p.events)),
                Err(e) => error_page(StatusCode::SERVICE_UNAVAILABLE, &e),
            }
        }
        "/ui/dead" => {
            let mut pq = q.page_query(50);
            pq.state = Some(EventState::Dead);
            let page = read(app, pq).await;
            html_response(pages::dead(&q, page, &session.token()))
        }
        "/ui/glance" => html_response(pages::glance(app).await),
        "/ui/replay" => return method_not_allowed("POST"),
        "/ui/static/ui.css" => asset(CSS, "text/css; charset=utf-8"),
        "/ui/static/ui.js" => asset(JS, "text/javascript; charset=utf-8"),
        "/ui/static/icon.svg" => asset(ICON, "image/svg+xml"),
        p => match p.strip_prefix("/ui/events/") {
            Some(rest) => {
                let (id, raw) = match rest.strip_suffix("/raw") {
                    Some(id) => (id, true),
                    None => (rest, false),
                };
                if !valid_id(id) {
                    error_page(StatusCode::NOT_FOUND, "no such event")
                } else if raw {
                    raw_body(app, id).await
                } else {
                    event(app, id, &session.token()).await
                }
            }
            None => error_page(StatusCode::NOT_FOUND, "no such page"),
        },
    };
    let mut resp = resp;
    if session.fresh {
        if let Ok(v) = HeaderValue::from_str(&format!(
            "{COOKIE}={}; Path=/ui/; HttpOnly; SameSite=Strict",
            session.id
        )) {
            resp.headers_mut().append(header::SET_COOKIE, v);
        }
    }
    secure(resp)
}

/// Event ids are ULIDs (Crockford base 32); anything else is not looked up
/// and never reaches a header.
fn valid_id(id: &str) -> bool {
    (1..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric())
}

async fn read(app: &Arc<App>, q: PageQuery) -> Result<crate::store::Page, String> {
    let store = app.store.clone();
    match tokio::task::spawn_blocking(move || store.page(&q)).await {
        Ok(Ok(p)) => Ok(p),
        Ok(Err(e)) => Err(e.to_string()),
        Err(e) => Err(format!("internal error: {e}")),
    }
}

async fn event(app: &Arc<App>, id: &str, token: &str) -> Response<Body> {
    let store = app.store.clone();
    let key = id.to_string();
    let got = tokio::task::spawn_blocking(move || {
        let ev = store.get(&key)?;
        let (attempts, deliveries) = match &ev {
            Some(_) => (store.attempts(&key)?, store.deliveries(&key)?),
            None => (Vec::new(), Vec::new()),
        };
        Ok::<_, crate::store::StoreError>((ev, (attempts, deliveries)))
    })
    .await;
    match got {
        Ok(Ok((Some(ev), (attempts, deliveries)))) => {
            html_response(pages::event(app, &ev, &attempts, &deliveries, token))
        }
        Ok(Ok((None, _))) => error_page(StatusCode::NOT_FOUND, "no such event"),
        Ok(Err(e)) => error_page(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
        Err(e) => error_page(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

/// The stored body byte for byte, as a download: never rendered by the
/// browser (octet-stream, attachment, nosniff, and the sandboxing CSP).
async fn raw_body(app: &Arc<App>, id: &str) -> Response<Body> {
    let store = app.store.clone();
    let key = id.to_string();
    match tokio::task::spawn_blocking(move || store.get(&key)).await {
        Ok(Ok(Some(ev))) => {
            let mut r = Response::new(Full::new(Bytes::from(ev.body.unwrap_or_default())));
            let h = r.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            );
            if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{id}.body\"")) {
                h.insert(header::CONTENT_DISPOSITION, v);
            }
            r
        }
        Ok(Ok(None)) => error_page(StatusCode::NOT_FOUND, "no such event"),
        Ok(Err(e)) => error_page(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
        Err(e) => error_page(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

/// POST /ui/replay: `token` and one or more `id`; redirects back.
async fn replay(
    app: &Arc<App>,
    peer: Option<SocketAddr>,
    req: Request<Incoming>,
    session: Session,
) -> Response<Body> {
    let who = peer.map(|p| p.to_string()).unwrap_or_else(|| "unix".into());
    if let Err(why) = same_origin(req.headers()) {
        log::warn!("console: replay refused from {who}: {why}");
        return secure(error_page(StatusCode::FORBIDDEN, &why));
    }
    let len = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    let deadline = tokio::time::Instant::now()
        .checked_add(app.live().config.server.body_timeout)
        .unwrap_or_else(|| tokio::time::Instant::now() + std::time::Duration::from_secs(86_400));
    let body = match super::body::read_body(req.into_body(), len, FORM_LIMIT, deadline, None).await
    {
        Ok(b) => b,
        Err(e @ super::body::BodyError::TimedOut) => {
            return secure(error_page(StatusCode::REQUEST_TIMEOUT, &e.to_string()))
        }
        Err(e) => return secure(error_page(StatusCode::PAYLOAD_TOO_LARGE, &e.to_string())),
    };
    let mut token = None;
    let mut ids = Vec::new();
    let mut back = "/ui/dead".to_string();
    for (k, v) in form_urlencoded::parse(&body) {
        match k.as_ref() {
            "token" => token = Some(v.into_owned()),
            "id" => ids.push(v.into_owned()),
            "back" if v.starts_with("/ui/") && !v.starts_with("/ui//") => back = v.into_owned(),
            _ => {}
        }
    }
    let good = session.known
        && token
            .as_deref()
            .is_some_and(|t| bool::from(t.as_bytes().ct_eq(session.token().as_bytes())));
    if !good {
        log::warn!("console: replay refused from {who}: missing or wrong session token");
        return secure(error_page(
            StatusCode::FORBIDDEN,
            "missing or wrong session token; reload the page and try again",
        ));
    }
    ids.retain(|i| valid_id(i));
    ids.sort();
    ids.dedup();
    if ids.is_empty() {
        return secure(redirect(&back));
    }
    if ids.len() > REPLAY_MAX {
        return secure(error_page(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("at most {REPLAY_MAX} events per replay"),
        ));
    }
    let store = app.store.clone();
    let list = ids.clone();
    let res = tokio::task::spawn_blocking(move || {
        let now = SystemTime::now();
        let mut done = Vec::new();
        for id in list {
            let f = ReplayFilter {
                id: Some(id.clone()),
                ..Default::default()
            };
            if store.replay(&f, now)? > 0 {
                done.push(id);
            }
        }
        Ok::<_, crate::store::StoreError>(done)
    })
    .await;
    match res {
        Ok(Ok(done)) => {
            log::info!(
                target: NOTICE,
                "console: replay requested from {who}: {} of {} event(s) queued again: {}",
                done.len(),
                ids.len(),
                done.join(",")
            );
            app.delivery.wake.notify_one();
            let sep = if back.contains('?') { '&' } else { '?' };
            secure(redirect(&format!("{back}{sep}replayed={}", done.len())))
        }
        Ok(Err(e)) => {
            log::warn!("console: replay from {who} failed: {e}");
            secure(error_page(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()))
        }
        Err(e) => secure(error_page(
            StatusCode::INTERNAL_SERVER_ERROR,
            &e.to_string(),
        )),
    }
}

/// The request's `Origin` must be present and name the host it was sent
/// to (the browser sends it on every POST).
fn same_origin(h: &HeaderMap) -> Result<(), String> {
    let origin = h
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| "no Origin header".to_string())?;
    let host = h
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| "no Host header".to_string())?;
    let ok = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
        .is_some_and(|o| o.eq_ignore_ascii_case(host));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "cross-origin request (Origin {origin:?} for host {host:?})"
        ))
    }
}

/// The console session: a random id in a cookie.
struct Session {
    id: String,
    /// The request carried a well-formed session cookie.
    known: bool,
    /// A new id: set the cookie.
    fresh: bool,
}

impl Session {
    fn of(h: &HeaderMap) -> Session {
        let found = h
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|c| {
                c.trim()
                    .strip_prefix(&format!("{COOKIE}="))
                    .map(str::to_string)
            })
            .find(|v| v.len() == 32 && v.bytes().all(|b| b.is_ascii_hexdigit()));
        match found {
            Some(id) => Session {
                id,
                known: true,
                fresh: false,
            },
            None => {
                let mut b = [0u8; 16];
                crate::id::fill_random(&mut b);
                Session {
                    id: crate::id::hex(&b),
                    known: false,
                    fresh: true,
                }
            }
        }
    }

    /// The token forms carry: HMAC-SHA256(process key, session id).
    fn token(&self) -> String {
        static KEY: OnceLock<[u8; 32]> = OnceLock::new();
        let key = KEY.get_or_init(|| {
            let mut k = [0u8; 32];
            crate::id::fill_random(&mut k);
            k
        });
        crate::id::hex(&crate::verify::hmac_sha256(key, &[self.id.as_bytes()]))
    }
}

/// Filters and cursor from the query string.
#[derive(Debug, Default, Clone)]
pub(crate) struct Query {
    pub hook: String,
    pub state: String,
    pub event: String,
    pub delivery: String,
    pub since: String,
    pub until: String,
    pub before: String,
    pub after: String,
    pub replayed: Option<usize>,
    /// Rows per page, when not the default.
    pub limit: Option<usize>,
}

impl Query {
    fn parse(q: &str) -> Query {
        let mut out = Query::default();
        for (k, v) in form_urlencoded::parse(q.as_bytes()) {
            let v = v.trim().to_string();
            match k.as_ref() {
                "hook" => out.hook = v,
                "state" => out.state = v,
                "event" => out.event = v,
                "delivery" => out.delivery = v,
                "since" => out.since = v,
                "until" => out.until = v,
                "before" => out.before = v,
                "after" => out.after = v,
                "replayed" => out.replayed = v.parse().ok(),
                "limit" => out.limit = v.parse().ok().map(|n: usize| n.clamp(1, 500)),
                _ => {}
            }
        }
        out
    }

    fn page_query(&self, default_limit: usize) -> PageQuery {
        let limit = self.limit.unwrap_or(default_limit);
        let some = |s: &str| (!s.is_empty()).then(|| s.to_string());
        PageQuery {
            hook_id: some(&self.hook),
            state: EventState::parse(&self.state),
            event_type: some(&self.event),
            delivery_id: some(&self.delivery),
            since: parse_time(&self.since),
            until: parse_time(&self.until),
            before: some(&self.before).filter(|s| valid_id(s)),
            after: some(&self.after).filter(|s| valid_id(s)),
            limit,
            scan: SCAN,
        }
    }

    /// The filters (not the cursor) as a query string, for links.
    pub fn filters(&self) -> String {
        let mut s = form_urlencoded::Serializer::new(String::new());
        for (k, v) in [
            ("hook", &self.hook),
            ("state", &self.state),
            ("event", &self.event),
            ("delivery", &self.delivery),
            ("since", &self.since),
            ("until", &self.until),
        ] {
            if !v.is_empty() {
                s.append_pair(k, v);
            }
        }
        if let Some(n) = self.limit {
            s.append_pair("limit", &n.to_string());
        }
        s.finish()
    }

    /// A time filter that could not be read, to say so on the page.
    pub fn bad_times(&self) -> Vec<&str> {
        [&self.since, &self.until]
            .into_iter()
            .filter(|s| !s.is_empty() && parse_time(s).is_none())
            .map(|s| s.as_str())
            .collect()
    }
}

/// "2h" (that long ago), or an RFC 3339 time ("2026-12-01T22:00:00Z",
/// seconds and zone optional, UTC assumed).
pub(crate) fn parse_time(s: &str) -> Option<SystemTime> {
    if s.is_empty() {
        return None;
    }
    if let Ok(d) = humantime::parse_duration(s) {
        return SystemTime::now().checked_sub(d);
    }
    let t = s.trim_end_matches('Z').replace(' ', "T");
    let t = if t.len() == 16 { format!("{t}:00") } else { t };
    humantime::parse_rfc3339_weak(&t).ok()
}

fn html_response(body: String) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    r
}

fn fragment(body: String) -> Response<Body> {
    html_response(body)
}

fn asset(text: &'static str, ty: &'static str) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(ty));
    r
}

fn redirect(to: &str) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = StatusCode::SEE_OTHER;
    if let Ok(v) = HeaderValue::from_str(to) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

fn error_page(status: StatusCode, message: &str) -> Response<Body> {
    let body = format!(
        "<h1>{}</h1><p class=\"error\">{}</p>",
        status.as_u16(),
        html::esc(message)
    );
    let mut r = html_response(html::page("error", "", &body));
    *r.status_mut() = status;
    r
}

fn method_not_allowed(allow: &'static str) -> Response<Body> {
    let mut r = error_page(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
    r.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    secure(r)
}

/// Headers on every console answer: no framing, no sniffing, no caching,
/// and a policy that allows only this origin's script and style (so even
/// markup that escaped escaping could not run a script).
fn secure(mut r: Response<Body>) -> Response<Body> {
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    // same-origin, not no-referrer: under no-referrer browsers send
    // `Origin: null` with a form's POST, which the Origin check refuses.
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}
