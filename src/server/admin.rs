//! The admin endpoints (/healthz, /readyz, /status, /metrics) and the views
//! of the daemon they show, with the STATUS= line systemd shows in
//! `systemctl status`: all read-only summaries of [`App`], in one place.

use std::sync::atomic::Ordering;
use std::time::Instant;

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE};
use http::{Response, StatusCode};
use http_body_util::Full;
use serde_json::json;

use super::routes::{json_response, Body};
use crate::app::App;

/// GET /healthz, /readyz, /status, /metrics. `accepts_openmetrics`: the
/// request's Accept header names OpenMetrics (Prometheus does).
pub fn route(app: &App, path: &str, accepts_openmetrics: bool) -> Response<Body> {
    match path {
        "/healthz" => json_response(StatusCode::OK, &json!({"status": "ok"})),
        "/readyz" => {
            let problems = readiness_problems(app);
            if problems.is_empty() {
                json_response(
                    StatusCode::OK,
                    &json!({"ready": true, "store": store_state(app)}),
                )
            } else {
                json_response(
                    StatusCode::SERVICE_UNAVAILABLE,
                    &json!({"ready": false, "problems": problems}),
                )
            }
        }
        "/status" => json_response(StatusCode::OK, &status_json(app)),
        _ => {
            refresh_gauges(app);
            // Prometheus asks for OpenMetrics; anything else (curl, promtool
            // check metrics, older scrapers) gets the classic text format.
            let (text, ctype) = if accepts_openmetrics {
                (
                    app.metrics.render(),
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                )
            } else {
                (
                    app.metrics.render_text(),
                    "text/plain; version=0.0.4; charset=utf-8",
                )
            };
            let mut r = Response::new(Full::new(Bytes::from(text)));
            r.headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static(ctype));
            r
        }
    }
}

/// Reasons we should not receive traffic; empty when ready.
pub fn readiness_problems(app: &App) -> Vec<String> {
    let mut p = Vec::new();
    if app.draining.load(Ordering::Acquire) {
        p.push("draining: shutting down".to_string());
    }
    let st = &app.writer.status;
    // With a spool we still accept deliveries during an outage.
    if !st.available() && app.writer.spool.is_none() {
        p.push(format!(
            "store unreachable: {}",
            st.last_error().unwrap_or_else(|| "unknown error".into())
        ));
    }
    if let Some(problem) = app
        .tls
        .as_ref()
        .and_then(|t| t.problem(std::time::SystemTime::now()))
    {
        p.push(problem);
    }
    let live = app.live();
    let mut ids: Vec<_> = live.hooks.keys().collect();
    ids.sort();
    for id in ids {
        if let Some(problem) = live.hooks.get(id).and_then(|h| h.problem.as_ref()) {
            p.push(format!("hook {id}: {problem}"));
        }
    }
    p
}

/// Events waiting in the spool (0 without one), including a spool left by
/// an earlier configuration that is being drained.
pub fn spooled(app: &App) -> usize {
    let len =
        |s: &Option<std::sync::Arc<crate::store::spool::Spool>>| s.as_ref().map_or(0, |s| s.len());
    len(&app.writer.spool) + len(&app.writer.leftover)
}

pub fn store_state(app: &App) -> String {
    let spooled = spooled(app);
    match (app.writer.status.available(), spooled) {
        (true, 0) => "ok".into(),
        (false, 0) => "unavailable".into(),
        (_, n) => format!("spooling ({n} events)"),
    }
}

/// Copy live values into gauges before /metrics is rendered.
pub fn refresh_gauges(app: &App) {
    use crate::metrics::Metrics as M;
    let m = &app.metrics;
    m.queue_depth
        .set(app.writer.status.queue_depth.load(Ordering::Relaxed) as i64);
    m.store_up.set(i64::from(app.writer.status.available()));
    let c = app.delivery.counts();
    M::set_labeled(&m.events, "state", "pending", c.pending);
    M::set_labeled(&m.events, "state", "delivering", c.delivering);
    M::set_labeled(&m.events, "state", "dead", c.dead);
    // Rebuilt from the last counts, so an action whose deliveries are all
    // gone (or that was removed) does not keep its last value for ever.
    m.action_queue.clear();
    let mut counts = app.delivery.action_counts();
    for h in app.live().hooks.values() {
        for r in &h.routes {
            if !counts
                .iter()
                .any(|c| c.hook_id == r.hook_id && c.action_id == r.action_id)
            {
                counts.push(crate::store::ActionCounts {
                    hook_id: r.hook_id.clone(),
                    action_id: r.action_id.clone(),
                    ..Default::default()
                });
            }
        }
    }
    for a in counts {
        // Action ids come from the store (one no longer configured
        // included): bounded like any other stored label.
        let labels = |state: &str| {
            vec![
                (
                    "hook".to_string(),
                    crate::store::safe_label(&a.hook_id, 64).into_owned(),
                ),
                (
                    "action".to_string(),
                    crate::store::safe_label(&a.action_id, 64).into_owned(),
                ),
                ("state".to_string(), state.to_string()),
            ]
        };
        m.action_queue
            .get_or_create(&labels("pending"))
            .set(a.pending);
        m.action_queue
            .get_or_create(&labels("delivering"))
            .set(a.delivering);
        m.action_queue.get_or_create(&labels("dead")).set(a.dead);
    }
    m.deliveries_in_flight
        .set(app.delivery.inflight_total.load(Ordering::Relaxed) as i64);
    m.spool_events.set(spooled(app) as i64);
    m.spool_capacity.set(
        app.writer
            .spool
            .as_ref()
            .map(|s| s.capacity() as i64)
            .unwrap_or(0),
    );
    m.writer_stall_seconds
        .set(app.writer.max_stall().as_secs_f64());
    m.ready.set(i64::from(readiness_problems(app).is_empty()));
    for (target, state) in app.delivery.breakers.snapshot(Instant::now()) {
        let v = match state {
            crate::deliver::breaker::State::Closed => 0,
            crate::deliver::breaker::State::HalfOpen => 1,
            crate::deliver::breaker::State::Open => 2,
        };
        M::set_labeled(&m.breaker_state, "target", &target, v);
    }
}

/// The STATUS= line systemd shows in `systemctl status`.
pub fn status_line(app: &App) -> String {
    let m = &app.metrics;
    let draining = if app.draining.load(Ordering::Acquire) {
        "draining; "
    } else {
        ""
    };
    let c = app.delivery.counts();
    let mut store = store_state(app);
    if !app.writer.status.available() {
        // Say why, briefly (systemctl status shows one line).
        if let Some(e) = app.writer.status.last_error() {
            let e: String = e.chars().take(160).collect();
            store = format!("{store} ({e})");
        }
    }
    format!(
        "{draining}accepted {}, duplicates {}, rejected {}; store {} {}; queue {} pending, {} delivering, {} dead",
        m.accepted_total.get(),
        m.duplicate_total.get(),
        m.rejected_total.get(),
        app.store.kind(),
        store,
        c.pending,
        c.delivering,
        c.dead,
    )
}

/// The /status document. Never contains a secret: hooks list only ids,
/// schemes and problems (which name where a secret was looked for).
pub fn status_json(app: &App) -> serde_json::Value {
    let live = app.live();
    let counts = app.delivery.action_counts();
    // Deliveries left for an action id the config no longer has: shown,
    // never run (put the action back, or replay them to another by hand).
    let unconfigured: Vec<_> = counts
        .iter()
        .filter(|c| {
            !live
                .hooks
                .get(&c.hook_id)
                .is_some_and(|h| h.routes.iter().any(|r| r.action_id == c.action_id))
        })
        .map(|c| {
            json!({
                "hook": crate::store::safe_label(&c.hook_id, 64),
                "action": crate::store::safe_label(&c.action_id, 64),
                "pending": c.pending,
                "delivering": c.delivering,
                "dead_letters": c.dead,
                "note": "action no longer configured: these deliveries are not run",
            })
        })
        .collect();
    let mut hooks: Vec<_> = live
        .hooks
        .values()
        .map(|h| {
            json!({
                "id": h.id,
                "scheme": h.scheme.name(),
                "authenticated": h.scheme.authenticates(),
                "secrets": h.secrets.len(),
                "ignored": h.counters.ignored.get(),
                "ready": h.problem.is_none(),
                "problem": h.problem,
                "action": h.routes.first().map(|r| r.action.target.clone()),
                "actions": h.routes.iter().map(|r| {
                    let c = counts.iter().find(|c| c.hook_id == r.hook_id && c.action_id == r.action_id);
                    json!({
                        "id": r.action_id,
                        "target": r.action.target,
                        "in_flight": app.delivery.inflight(&r.slot_key()),
                        "pending": c.map_or(0, |c| c.pending),
                        "delivering": c.map_or(0, |c| c.delivering),
                        "dead_letters": c.map_or(0, |c| c.dead),
                    })
                }).collect::<Vec<_>>(),
                "accepted": h.counters.accepted.get(),
                "duplicates": h.counters.duplicate.get(),
            })
        })
        .collect();
    hooks.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
    let m = &app.metrics;
    let last_reload = app.last_reload().map(|(t, r)| {
        json!({
            "at": humantime::format_rfc3339_seconds(t).to_string(),
            "ok": r.is_none(),
            "error": r,
        })
    });
    let problems = readiness_problems(app);
    json!({
        "version": crate::VERSION,
        "commit": crate::GIT_COMMIT,
        "pid": std::process::id(),
        "started_at": humantime::format_rfc3339_seconds(app.started_at).to_string(),
        "uptime_seconds": app.started.elapsed().as_secs(),
        "ready": problems.is_empty(),
        "problems": problems,
        "draining": app.draining.load(Ordering::Acquire),
        "config": {
            "path": app.config_path.display().to_string(),
            "loaded_at": humantime::format_rfc3339_seconds(live.loaded_at).to_string(),
            "last_reload": last_reload,
        },
        "counters": {
            "accepted": m.accepted_total.get(),
            "duplicates": m.duplicate_total.get(),
            "rejected": m.rejected_total.get(),
            "ignored": m.ignored_total.get(),
            "store_commits": m.store_commits.get(),
        },
        "store": {
            "kind": app.store.kind(),
            "state": store_state(app),
            "schema_version": app.store.latest_schema(),
            "queue_depth": app.writer.status.queue_depth.load(Ordering::Relaxed),
            "spooled": spooled(app),
            "last_error": app.writer.status.last_error(),
        },
        "hooks": hooks,
        "delivery": {
            "in_flight": app.delivery.inflight_total.load(Ordering::Relaxed),
            "pending": app.delivery.counts().pending,
            "delivering": app.delivery.counts().delivering,
            "dead_letters": app.delivery.counts().dead,
            "unconfigured_actions": unconfigured,
            "breakers": app
                .delivery
                .breakers
                .snapshot(Instant::now())
                .into_iter()
                .map(|(t, s)| json!({"target": t, "state": s.as_str()}))
                .collect::<Vec<_>>(),
        },
        "tunnel_url": app.tunnel_url.lock().ok().and_then(|g| g.clone()),
        "tls": app.tls.as_ref().map(|t| t.status_json(std::time::SystemTime::now())),
    })
}
