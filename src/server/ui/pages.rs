//! The console's pages, rendered to strings. Every value that comes from a
//! request or the store goes through `esc`; the few literals are fixed.

use std::fmt::Write;
use std::sync::atomic::Ordering;
use std::time::{Instant, SystemTime};

use super::glance;
use super::html::{esc, esc_bytes, page, url};
use super::Query;
use crate::app::App;
use crate::store::{AttemptRecord, EventRecord, EventState, Page};

/// Most body bytes shown on the event page; the rest is in the download.
const BODY_SHOWN: usize = 256 * 1024;

fn time(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

fn size(n: usize) -> String {
    if n < 10 * 1024 {
        format!("{n} B")
    } else if n < 10 * 1024 * 1024 {
        format!("{} KiB", n / 1024)
    } else {
        format!("{} MiB", n / (1024 * 1024))
    }
}

/// A target for display, without any userinfo (`user:password@`).
fn target_shown(t: &str) -> String {
    match (t.split_once("://"), t.rsplit_once('@')) {
        (Some((scheme, _)), Some((_, host))) => format!("{scheme}://{host}"),
        _ => t.to_string(),
    }
}

const STATES: [&str; 5] = ["stored", "pending", "delivering", "done", "dead"];

fn filter_form(app: Option<&App>, q: &Query, action: &str, with_state: bool) -> String {
    let mut s = String::new();
    let _ = write!(
        s,
        "<form class=\"filters\" method=\"get\" action=\"{action}\"><label>hook <select name=\"hook\"><option value=\"\">any</option>"
    );
    let mut hooks: Vec<String> = app
        .map(|a| a.live().hooks.keys().cloned().collect())
        .unwrap_or_default();
    if !q.hook.is_empty() && !hooks.contains(&q.hook) {
        hooks.push(q.hook.clone());
    }
    hooks.sort();
    for h in hooks {
        let sel = if h == q.hook { " selected" } else { "" };
        let _ = write!(s, "<option value=\"{0}\"{sel}>{0}</option>", esc(&h));
    }
    s.push_str("</select></label>");
    if with_state {
        s.push_str("<label>state <select name=\"state\"><option value=\"\">any</option>");
        for st in STATES {
            let sel = if st == q.state { " selected" } else { "" };
            let _ = write!(s, "<option{sel}>{st}</option>");
        }
        s.push_str("</select></label>");
    }
    for (name, label, v, ph) in [
        ("event", "event", &q.event, "push"),
        ("delivery", "delivery id", &q.delivery, ""),
        ("since", "since", &q.since, "2h or 2026-12-01T22:00Z"),
        ("until", "until", &q.until, ""),
    ] {
        let _ = write!(
            s,
            "<label>{label} <input name=\"{name}\" value=\"{}\" placeholder=\"{ph}\" size=\"14\"></label>",
            esc(v)
        );
    }
    s.push_str("<button type=\"submit\">Filter</button>");
    let _ = write!(s, " <a href=\"{action}\">clear</a></form>");
    for bad in q.bad_times() {
        let _ = write!(
            s,
            "<p class=\"error\">Cannot read the time {:?}; use 2h, 30m or 2026-12-01T22:00:00Z. It is ignored.</p>",
            esc(bad)
        );
    }
    s
}

/// Table rows for events (also the live-update fragment).
pub fn rows(events: &[EventRecord]) -> String {
    let mut s = String::new();
    for e in events {
        let id = esc(&e.id);
        let _ = write!(
            s,
            "<tr data-id=\"{id}\" class=\"state-{st}\"><td><a href=\"/ui/events/{id}\">{t}</a></td><td>{hook}</td><td>{ev}</td><td><span class=\"badge {st}\">{st}</span></td><td class=\"num\">{att}</td><td class=\"num\">{sz}</td><td class=\"id\"><a href=\"/ui/events/{id}\">{id}</a></td></tr>",
            st = e.state.as_str(),
            t = esc(&time(e.received_at)),
            hook = esc(&e.hook_id),
            ev = esc(&e.event_type),
            att = e.attempts,
            sz = size(e.body_len),
        );
    }
    s
}

const HEAD: &str = "<thead><tr><th>received (UTC)</th><th>hook</th><th>event</th><th>state</th><th>attempts</th><th>size</th><th>id</th></tr></thead>";

fn pager(path: &str, q: &Query, page: &Page) -> String {
    let filters = q.filters();
    let mut s = String::from("<p class=\"pager\">");
    if !q.before.is_empty() {
        let _ = write!(
            s,
            "<a href=\"{}\">« newest</a> ",
            esc(&format!("{path}?{filters}"))
        );
    }
    if page.window_ended {
        let _ = write!(s, "No more matches among these {} events. ", super::SCAN);
    }
    if let Some(next) = &page.next {
        let sep = if filters.is_empty() { "" } else { "&" };
        let label = if page.window_ended {
            "Search older »"
        } else {
            "Older »"
        };
        let _ = write!(
            s,
            "<a rel=\"next\" href=\"{}\">{label}</a>",
            esc(&format!("{path}?{filters}{sep}before={}", url(next)))
        );
    } else {
        s.push_str("<span class=\"muted\">end of the list</span>");
    }
    s.push_str("</p>");
    s
}

fn summary_line(app: &App) -> String {
    let c = app.delivery.counts();
    format!(
        "<p class=\"summary\">store {} {} · queue {} pending, {} delivering · <a href=\"/ui/dead\">{} dead letters</a></p>",
        esc(app.store.kind()),
        esc(&crate::server::admin::store_state(app)),
        c.pending,
        c.delivering,
        c.dead
    )
}

pub fn events(app: &App, q: &Query, page: Result<Page, String>, _token: &str) -> String {
    let mut s = String::from("<h1>Events</h1>");
    s.push_str(&summary_line(app));
    s.push_str(&filter_form(Some(app), q, "/ui/", true));
    match page {
        Err(e) => {
            let _ = write!(
                s,
                "<p class=\"error\">The store did not answer: {}</p>",
                esc(&e)
            );
        }
        Ok(p) => {
            let live = if q.before.is_empty() {
                let f = q.filters();
                format!(" data-live=\"{}\"", esc(&format!("/ui/rows?{f}")))
            } else {
                String::new()
            };
            let _ = write!(
                s,
                "<table class=\"events\" id=\"events\"{live}>{HEAD}<tbody>"
            );
            s.push_str(&rows(&p.events));
            s.push_str("</tbody></table>");
            if p.events.is_empty() {
                s.push_str("<p class=\"muted\" id=\"empty\">No events match.</p>");
            }
            if !live.is_empty() {
                s.push_str("<p class=\"muted\" id=\"live\">New events appear at the top (the page checks every 2 s; without JavaScript, reload).</p>");
            }
            s.push_str(&pager("/ui/", q, &p));
        }
    }
    page_html("Events", "Events", &s)
}

fn page_html(title: &str, active: &str, body: &str) -> String {
    page(title, active, body)
}

pub fn dead(q: &Query, page: Result<Page, String>, token: &str) -> String {
    let mut s = String::from("<h1>Dead letters</h1>");
    if let Some(n) = q.replayed {
        let _ = write!(
            s,
            "<p class=\"notice\" id=\"replayed\">{n} event(s) queued for delivery again.</p>"
        );
    }
    s.push_str(&filter_form(None, q, "/ui/dead", false));
    match page {
        Err(e) => {
            let _ = write!(
                s,
                "<p class=\"error\">The store did not answer: {}</p>",
                esc(&e)
            );
        }
        Ok(p) => {
            let tok = esc(token);
            // One form for the selection; a second, empty one that each
            // row's own button submits (form="replay-one").
            let _ = write!(
                s,
                "<form id=\"replay-one\" method=\"post\" action=\"/ui/replay\"><input type=\"hidden\" name=\"token\" value=\"{tok}\"></form>"
            );
            let _ = write!(
                s,
                "<form id=\"replay-many\" method=\"post\" action=\"/ui/replay\"><input type=\"hidden\" name=\"token\" value=\"{tok}\">"
            );
            s.push_str("<table class=\"events dead\"><thead><tr><th></th><th>received (UTC)</th><th>hook</th><th>event</th><th>attempts</th><th>last error</th><th>id</th><th></th></tr></thead><tbody>");
            for e in &p.events {
                let id = esc(&e.id);
                let _ = write!(
                    s,
                    "<tr data-id=\"{id}\"><td><input type=\"checkbox\" name=\"id\" value=\"{id}\" aria-label=\"select {id}\"></td><td><a href=\"/ui/events/{id}\">{t}</a></td><td>{hook}</td><td>{ev}</td><td class=\"num\">{att}</td><td class=\"err\">{err}</td><td class=\"id\">{id}</td><td><button type=\"submit\" form=\"replay-one\" name=\"id\" value=\"{id}\">Replay</button></td></tr>",
                    t = esc(&time(e.received_at)),
                    hook = esc(&e.hook_id),
                    ev = esc(&e.event_type),
                    att = e.attempts,
                    err = esc(e.last_error.as_deref().unwrap_or("")),
                );
            }
            s.push_str("</tbody></table>");
            if p.events.is_empty() {
                s.push_str("<p class=\"muted\">No dead letters match.</p>");
            } else {
                s.push_str("<p><button type=\"submit\" id=\"replay-selected\">Replay selected</button></p>");
            }
            s.push_str("</form>");
            s.push_str(&pager("/ui/dead", q, &p));
        }
    }
    page_html("Dead letters", "Dead letters", &s)
}

/// The body for display: pretty JSON when it parses, else the text
/// (invalid UTF-8 decoded lossily); capped at [`BODY_SHOWN`] bytes.
fn body_shown(body: &[u8]) -> (String, bool) {
    if body.len() <= BODY_SHOWN {
        if let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) {
            if let Ok(p) = serde_json::to_string_pretty(&v) {
                return (esc(&p), false);
            }
        }
    }
    let cut = body.len() > BODY_SHOWN;
    (esc_bytes(&body[..body.len().min(BODY_SHOWN)]), cut)
}

pub fn event(
    app: &App,
    e: &EventRecord,
    attempts: &[AttemptRecord],
    deliveries: &[crate::store::DeliveryRecord],
    token: &str,
) -> String {
    let id = esc(&e.id);
    let mut s = format!("<h1>Event <span class=\"id\">{id}</span></h1>");
    s.push_str("<table class=\"kv\">");
    let mut kv = |k: &str, v: String| {
        let _ = write!(s, "<tr><th>{k}</th><td>{v}</td></tr>");
    };
    kv("hook", esc(&e.hook_id));
    kv("event", esc(&e.event_type));
    kv(
        "delivery id",
        format!("<code>{}</code>", esc(&e.delivery_id)),
    );
    kv("received", esc(&time(e.received_at)));
    kv(
        "state",
        format!("<span class=\"badge {0}\">{0}</span>", e.state.as_str()),
    );
    kv("attempts", e.attempts.to_string());
    if e.state == EventState::Pending {
        kv("next attempt", esc(&time(e.next_attempt_at)));
    }
    if let Some(err) = &e.last_error {
        kv(
            "last error",
            format!("<span class=\"err\">{}</span>", esc(err)),
        );
    }
    kv("size", size(e.body_len));
    let live = app.live();
    let target = live
        .hooks
        .get(&e.hook_id)
        .and_then(|h| h.routes.first())
        .map(|r| (r.action.target.clone(), r.breaker_key.clone()));
    match target {
        Some((t, key)) => {
            let state = app
                .delivery
                .breakers
                .snapshot(Instant::now())
                .into_iter()
                .find(|(k, _)| *k == key)
                .map(|(_, st)| st.as_str())
                .unwrap_or("closed");
            kv(
                "target",
                format!(
                    "<code>{}</code> · breaker <span class=\"badge breaker-{state}\">{state}</span>",
                    esc(&target_shown(&t))
                ),
            );
        }
        None => kv(
            "target",
            "<span class=\"muted\">none (the hook has no action)</span>".into(),
        ),
    }
    s.push_str("</table>");
    if e.state != EventState::Delivering {
        let _ = write!(
            s,
            "<form method=\"post\" action=\"/ui/replay\"><input type=\"hidden\" name=\"token\" value=\"{}\"><input type=\"hidden\" name=\"id\" value=\"{id}\"><input type=\"hidden\" name=\"back\" value=\"/ui/events/{id}\"><button type=\"submit\" id=\"replay\">Replay (deliver again from attempt 1)</button></form>",
            esc(token)
        );
    }
    // One delivery per (event, action), each with its own state.
    s.push_str("<h2>Deliveries</h2>");
    let routes = live
        .hooks
        .get(&e.hook_id)
        .map(|h| h.routes.clone())
        .unwrap_or_default();
    if deliveries.is_empty() {
        let why = if e.state == EventState::Done {
            "No action matched this event."
        } else {
            "None yet."
        };
        let _ = write!(s, "<p class=\"muted\">{why}</p>");
    } else {
        s.push_str("<table class=\"deliveries\"><thead><tr><th>action</th><th>target</th><th>state</th><th>attempts</th><th>next attempt</th><th>last error</th></tr></thead><tbody>");
        for d in deliveries {
            let target = match routes.iter().find(|r| r.action_id == d.action_id) {
                Some(r) => format!("<code>{}</code>", esc(&target_shown(&r.action.target))),
                None => "<span class=\"muted\">action no longer configured: not run</span>".into(),
            };
            let next = if d.state == EventState::Pending {
                esc(&time(d.next_attempt_at))
            } else {
                String::new()
            };
            let _ = write!(
                s,
                "<tr><td>{}</td><td>{target}</td><td><span class=\"badge {st}\">{st}</span></td><td class=\"num\">{}</td><td>{next}</td><td class=\"err\">{}</td></tr>",
                esc(&d.action_id),
                d.attempts,
                esc(d.last_error.as_deref().unwrap_or("")),
                st = d.state.as_str(),
            );
        }
        s.push_str("</tbody></table>");
    }
    s.push_str("<h2>Attempts</h2>");
    if attempts.is_empty() {
        s.push_str("<p class=\"muted\">No attempts recorded.</p>");
    } else {
        s.push_str("<table class=\"attempts\"><thead><tr><th>#</th><th>started (UTC)</th><th>duration</th><th>result</th><th>target status</th><th>error</th><th>output</th><th>action</th></tr></thead><tbody>");
        for a in attempts {
            let output = match a.output.as_deref() {
                Some(o) => format!("<pre class=\"output\">{}</pre>", esc(o)),
                None => String::new(),
            };
            let _ = write!(
                s,
                "<tr><td class=\"num\">{}</td><td>{}</td><td class=\"num\">{:.1} ms</td><td><span class=\"badge {r}\">{r}</span></td><td class=\"num\">{}</td><td class=\"err\">{}</td><td>{output}</td><td>{}</td></tr>",
                a.attempt,
                esc(&time(a.started_at)),
                a.duration_us as f64 / 1000.0,
                a.target_status.map(|c| c.to_string()).unwrap_or_default(),
                esc(a.error.as_deref().unwrap_or("")),
                esc(&a.action_id),
                r = esc(&a.result),
            );
        }
        s.push_str("</tbody></table>");
    }
    s.push_str("<h2>Headers</h2><p class=\"muted\">As stored: credentials (Authorization, Cookie, tokens) are never kept.</p><table class=\"headers\"><tbody>");
    if let Some(h) = &e.headers {
        for (k, v) in h.iter() {
            let _ = write!(
                s,
                "<tr><th>{}</th><td><code>{}</code></td></tr>",
                esc(k),
                esc(v)
            );
        }
    }
    s.push_str("</tbody></table>");
    let body = e.body.as_deref().unwrap_or(&[]);
    let (shown, cut) = body_shown(body);
    let _ = write!(
        s,
        "<h2>Body</h2><p><a href=\"/ui/events/{id}/raw\" download>Download raw ({})</a></p><pre class=\"body\" id=\"body\">{shown}</pre>",
        size(body.len())
    );
    if cut {
        let _ = write!(
            s,
            "<p class=\"muted\">Only the first {} are shown; download the raw body for all of it.</p>",
            size(BODY_SHOWN)
        );
    }
    page_html(&format!("Event {}", e.id), "", &s)
}

pub async fn glance(app: &App) -> String {
    glance::sample(app);
    let minutes = glance::last_hour();
    let mut s = String::from("<h1>At a glance</h1><h2>Last hour, per minute (this instance)</h2>");
    s.push_str(&glance::chart(&minutes));
    s.push_str("<table class=\"legend\"><tbody><tr>");
    for (k, (name, _)) in glance::SERIES.iter().enumerate() {
        let total: u64 = minutes.iter().map(|m| m[k]).sum();
        let _ = write!(
            s,
            "<td><span class=\"swatch s-{name}\"></span>{name} <strong data-total=\"{name}\">{total}</strong></td>"
        );
    }
    s.push_str("</tr></tbody></table>");
    let c = app.delivery.counts();
    let st = &app.writer.status;
    s.push_str("<h2>Store and queue</h2><table class=\"kv\">");
    let mut kv = |k: &str, v: String| {
        let _ = write!(s, "<tr><th>{k}</th><td>{v}</td></tr>");
    };
    kv(
        "store",
        format!(
            "{} · {}",
            esc(app.store.kind()),
            esc(&crate::server::admin::store_state(app))
        ),
    );
    if let Some(e) = st.last_error() {
        kv(
            "last store error",
            format!("<span class=\"err\">{}</span>", esc(&e)),
        );
    }
    kv(
        "spool",
        match &app.writer.spool {
            Some(_) => format!("{} event(s) waiting", crate::server::admin::spooled(app)),
            None => "none".into(),
        },
    );
    kv(
        "write queue",
        st.queue_depth.load(Ordering::Relaxed).to_string(),
    );
    kv(
        "delivery queue",
        format!(
            "{} pending, {} delivering, {} in flight here, <a href=\"/ui/dead\">{} dead letters</a>",
            c.pending,
            c.delivering,
            app.delivery.inflight_total.load(Ordering::Relaxed),
            c.dead
        ),
    );
    let tunnel = app.tunnel_url.lock().ok().and_then(|g| g.clone());
    kv(
        "tunnel URL",
        match tunnel {
            Some(u) => format!("<code>{}</code>", esc(&u)),
            None => "<span class=\"muted\">none</span>".into(),
        },
    );
    s.push_str("</table><h2>Breakers</h2>");
    let breakers = app.delivery.breakers.snapshot(Instant::now());
    if breakers.is_empty() {
        s.push_str("<p class=\"muted\">No target has been tried yet.</p>");
    } else {
        s.push_str("<table><thead><tr><th>target</th><th>state</th></tr></thead><tbody>");
        for (t, st) in breakers {
            let _ = write!(
                s,
                "<tr><td><code>{}</code></td><td><span class=\"badge breaker-{1}\">{1}</span></td></tr>",
                esc(&target_shown(&t)),
                st.as_str()
            );
        }
        s.push_str("</tbody></table>");
    }
    s.push_str("<h2>Hooks</h2><table><thead><tr><th>hook</th><th>scheme</th><th>ready</th><th>action target</th><th>accepted</th><th>duplicates</th></tr></thead><tbody>");
    let live = app.live();
    let mut hooks: Vec<_> = live.hooks.values().collect();
    hooks.sort_by(|a, b| a.id.cmp(&b.id));
    for h in hooks {
        let ready = match &h.problem {
            None => "yes".to_string(),
            Some(p) => format!("<span class=\"err\">{}</span>", esc(p)),
        };
        let _ = write!(
            s,
            "<tr><td><a href=\"/ui/?hook={}\">{}</a></td><td>{}</td><td>{ready}</td><td><code>{}</code></td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
            esc(&url(&h.id)),
            esc(&h.id),
            esc(h.scheme.name()),
            esc(&h
                .routes
                .iter()
                .map(|r| target_shown(&r.action.target))
                .collect::<Vec<_>>()
                .join(", ")),
            h.counters.accepted.get(),
            h.counters.duplicate.get(),
        );
    }
    s.push_str("</tbody></table>");
    page_html("At a glance", "At a glance", &s)
}
