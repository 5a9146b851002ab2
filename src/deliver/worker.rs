//! The dispatcher: fans new events of each hook out into one delivery per
//! matching action, then claims due deliveries action by action (respecting
//! each action's concurrency and its target's circuit breaker) and runs one
//! task per delivery. Woken when a new event is stored or a slot frees up, and every
//! `poll_interval` otherwise (retries coming due, other instances' events).

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::watch;
use tokio::task::JoinSet;

use super::{backoff, exec, job, ActionKind, Attempt, Context, Route};
use crate::store::{Claimed, Disposition};

/// Most events claimed in one statement.
const CLAIM_MAX: usize = 64;

/// Most events fanned out in one transaction.
const FAN_OUT_MAX: usize = 256;

/// A name for this process in `leased_by`, unique across hosts and restarts.
pub fn worker_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "host".into());
    let mut r = [0u8; 4];
    crate::id::fill_random(&mut r);
    format!("{host}:{}:{}", std::process::id(), crate::id::hex(&r))
}

/// Run until `stop` carries a deadline; then stop claiming, let running
/// deliveries finish until the deadline, abort the rest and give their
/// events back to the queue.
pub async fn run<C: Context>(app: Arc<C>, mut stop: watch::Receiver<Option<Instant>>) {
    let worker = worker_id();
    let finisher = std::sync::Arc::new(super::Finisher::start(app.store().clone(), worker.clone()));
    let mut tasks: JoinSet<()> = JoinSet::new();
    let mut failing_since: Option<Instant> = None;
    loop {
        while tasks.try_join_next().is_some() {}
        if stop.borrow().is_some() {
            break;
        }
        let more = match dispatch(&app, &worker, &finisher, &mut tasks).await {
            Ok(more) => {
                failing_since = None;
                more
            }
            Err(e) => {
                if failing_since.is_none() {
                    log::warn!("delivery: cannot claim events: {e}");
                    failing_since = Some(Instant::now());
                }
                false
            }
        };
        if more {
            tokio::task::yield_now().await;
            continue;
        }
        let poll = app.settings().poll_interval;
        tokio::select! {
            _ = app.delivery().wake.notified() => {}
            _ = tokio::time::sleep(poll) => {}
            _ = stop.changed() => {}
        }
    }
    let deadline = (*stop.borrow()).unwrap_or_else(Instant::now);
    let running = tasks.len();
    if running > 0 {
        log::info!("delivery: waiting for {running} running deliveries");
    }
    let finished = tokio::time::timeout_at(deadline.into(), async {
        while tasks.join_next().await.is_some() {}
    })
    .await
    .is_ok();
    if !finished {
        log::warn!(
            "delivery: {} deliveries still running at the drain deadline; stopping them",
            tasks.len()
        );
        tasks.abort_all();
        while tasks.join_next().await.is_some() {}
    }
    let store = app.store().clone();
    let w = worker.clone();
    match tokio::task::spawn_blocking(move || store.release(&w, SystemTime::now())).await {
        Ok(Ok(n)) if n > 0 => log::info!("delivery: released {n} unfinished event(s) to the queue"),
        Ok(Err(e)) => {
            log::warn!("delivery: could not release leased events (their lease will expire): {e}")
        }
        _ => {}
    }
}

/// One pass over the hooks. Returns true if some hook may have more due
/// events right now.
async fn dispatch<C: Context>(
    app: &Arc<C>,
    worker: &str,
    finisher: &Arc<super::Finisher>,
    tasks: &mut JoinSet<()>,
) -> Result<bool, crate::store::StoreError> {
    // Nothing to claim before the migrations ran (PostgreSQL not reached
    // since start); stored events wait in the database meanwhile.
    if !app.schema_ready() {
        return Ok(false);
    }
    let margin = app.settings().lease_margin;
    let mut more = false;
    let routes = app.routes();
    // Fan out first, hook by hook: new events get their deliveries (the
    // actions whose condition matches, evaluated on the stored event with
    // the config of now), in one transaction per batch.
    let mut start = 0;
    while start < routes.len() {
        let hook_id = routes[start].hook_id.clone();
        let end = routes[start..]
            .iter()
            .position(|r| r.hook_id != hook_id)
            .map_or(routes.len(), |n| start + n);
        let hook_routes: Vec<Arc<Route>> = routes[start..end].to_vec();
        start = end;
        let store = app.store().clone();
        let pick: crate::store::FanOutPick = Arc::new(move |ev| {
            hook_routes
                .iter()
                .filter(|r| r.when.matches(ev))
                .map(|r| r.action_id.clone())
                .collect()
        });
        let hook = hook_id.clone();
        let fanned = tokio::task::spawn_blocking(move || {
            store.fan_out(&hook, FAN_OUT_MAX, SystemTime::now(), pick)
        })
        .await
        .map_err(|e| crate::store::StoreError::Query(e.to_string().into()))??;
        more |= fanned.len() == FAN_OUT_MAX;
        for f in &fanned {
            if f.actions.is_empty() {
                log::info!(
                    "deliver hook={hook_id} id={} result=done actions=0 (no action matched)",
                    f.event_id
                );
            }
            app.delivery()
                .retarget_first(&f.event_id, f.actions.first().map(String::as_str));
        }
    }
    for route in routes {
        let action = &route.action;
        let slot_key = route.slot_key();
        let inflight = app.delivery().inflight(&slot_key);
        let free = action.concurrency.saturating_sub(inflight);
        // Claim in batches: wait for a quarter of the slots to free up
        // (unless idle), so one claim transaction serves several events.
        if inflight > 0 && free < (action.concurrency / 4).max(1) {
            continue;
        }
        let now = Instant::now();
        let want = app.delivery().breakers.permits(
            &route.breaker_key,
            route.breaker.failures,
            free.min(CLAIM_MAX),
            now,
        );
        if want == 0 {
            continue;
        }
        let store = app.store().clone();
        let (hook_id, action_id, w) = (
            route.hook_id.clone(),
            route.action_id.clone(),
            worker.to_string(),
        );
        let lease = action.timeout.saturating_add(margin);
        let claimed = tokio::task::spawn_blocking(move || {
            let now = SystemTime::now();
            // A lease past the end of time: a year is for ever here.
            let until = now
                .checked_add(lease)
                .or_else(|| now.checked_add(Duration::from_secs(86_400 * 365)))
                .unwrap_or(now);
            store.claim(&hook_id, &action_id, want, &w, now, until)
        })
        .await
        .map_err(|e| crate::store::StoreError::Query(e.to_string().into()))??;
        more |= claimed.len() == want;
        for ev in claimed {
            app.delivery()
                .breakers
                .begin(&route.breaker_key, Instant::now());
            let slot = Slot::take(app.clone(), &slot_key);
            tasks.spawn(deliver_one(slot, route.clone(), ev, finisher.clone()));
        }
    }
    Ok(more)
}

/// A hook's delivery slot, given back when dropped: however a delivery task
/// ends (a panic or an abort at shutdown included), the slot is released
/// and the dispatcher woken.
struct Slot<C: Context> {
    app: Arc<C>,
    hook: String,
}

impl<C: Context> Slot<C> {
    fn take(app: Arc<C>, hook: &str) -> Slot<C> {
        app.delivery().add_inflight(hook, 1);
        Slot {
            app,
            hook: hook.to_string(),
        }
    }
}

impl<C: Context> Drop for Slot<C> {
    fn drop(&mut self) {
        self.app.delivery().add_inflight(&self.hook, -1);
        self.app.delivery().wake.notify_one();
    }
}

/// The text of a panic payload, for the attempt's error.
fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

/// Aborts a task when dropped (the delivery task aborted at shutdown must
/// stop the attempt it started).
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Run the action in a task of its own, so a panic in it is an attempt that
/// failed (and is retried) instead of a task that vanished with its slot.
async fn attempt<C: Context>(
    app: &Arc<C>,
    route: &Arc<Route>,
    ev: &Claimed,
) -> (Attempt, super::FirstResult) {
    let (app, route, ev) = (app.clone(), route.clone(), ev.clone());
    let run = tokio::spawn(async move {
        let action = &route.action;
        match &action.kind {
            ActionKind::Forward(t) => {
                let (attempt, status) = app
                    .delivery()
                    .forwarder
                    .send_status(t, &action.target, &ev, action.timeout)
                    .await;
                let first = super::FirstResult {
                    target_status: status,
                    ..Default::default()
                };
                (attempt, first)
            }
            ActionKind::Exec(a) => {
                let (attempt, out) = exec::run_captured(a, &ev).await;
                let first = super::FirstResult {
                    truncated: out.truncated,
                    output: out.output,
                    ..Default::default()
                };
                (attempt, first)
            }
            ActionKind::Job(a) => {
                let (attempt, out) = job::run_captured(a, &ev).await;
                let first = super::FirstResult {
                    truncated: out.truncated,
                    output: out.output,
                    ..Default::default()
                };
                (attempt, first)
            }
        }
    });
    let _abort = AbortOnDrop(run.abort_handle());
    match run.await {
        Ok(r) => r,
        Err(e) if e.is_panic() => (
            Attempt::retry(
                format!(
                    "internal error: the delivery task panicked: {}",
                    panic_message(&*e.into_panic())
                ),
                None,
            ),
            super::FirstResult::default(),
        ),
        Err(e) => (
            Attempt::retry(
                format!("internal error: the delivery task failed: {e}"),
                None,
            ),
            super::FirstResult::default(),
        ),
    }
}

async fn deliver_one<C: Context>(
    slot: Slot<C>,
    route: Arc<Route>,
    ev: Claimed,
    finisher: Arc<super::Finisher>,
) {
    let app = slot.app.clone();
    let started = Instant::now();
    let started_at = SystemTime::now();
    let (attempt, first) = attempt(&app, &route, &ev).await;
    let elapsed = started.elapsed();
    let log = super::AttemptLog {
        attempt: ev.attempts,
        started_at,
        duration: elapsed,
        target_status: first.target_status,
        output: first.output.clone(),
        truncated: first.truncated,
    };
    // A request waiting for this event's first attempt gets its result;
    // later attempts are nobody's business but the queue's.
    if ev.attempts == 1 {
        if let Some(tx) = app
            .delivery()
            .take_first(&super::waiter_key(&ev.id, &ev.action_id))
        {
            let (ok, error) = match &attempt {
                Attempt::Ok => (true, None),
                Attempt::Fail { error, .. } => (false, Some(error.clone())),
            };
            let exec = Some(matches!(route.action.kind, ActionKind::Exec(_)));
            let _ = tx.send(super::FirstResult {
                ok,
                error,
                exec,
                ..first
            });
        }
    }
    let now = SystemTime::now();
    app.delivery().breakers.record(
        &route.breaker_key,
        attempt == Attempt::Ok,
        route.breaker.failures,
        route.breaker.cooldown,
        Instant::now(),
    );
    let attempts = u32::try_from(ev.attempts.max(1)).unwrap_or(u32::MAX);
    let disposition = match attempt {
        Attempt::Ok => Disposition::Done,
        Attempt::Fail {
            error,
            permanent,
            retry_after,
        } => {
            let retry = &route.retry;
            let received = ev.received_at;
            let fallback_error = error.clone();
            // backoff is plain arithmetic and checked, but a bug there must
            // still end in a recorded attempt, never a lost slot.
            std::panic::catch_unwind(move || {
                backoff::after_failure(
                    retry,
                    attempts,
                    received,
                    now,
                    retry_after,
                    permanent,
                    error,
                )
            })
            .unwrap_or_else(|p| Disposition::Retry {
                at: now.checked_add(route.retry.max_delay).unwrap_or(now),
                error: format!(
                    "{fallback_error} (and computing the retry time panicked: {})",
                    panic_message(&*p)
                ),
            })
        }
    };
    let m = app.metrics();
    m.delivery_seconds.observe(elapsed.as_secs_f64());
    let head = format!(
        "deliver hook={} action={} id={} delivery={} attempt={} duration_ms={:.1}",
        route.hook_id,
        route.action_id,
        ev.id,
        ev.delivery_id,
        ev.attempts,
        elapsed.as_secs_f64() * 1000.0
    );
    match &disposition {
        Disposition::Done => {
            m.delivery_result(&route.hook_id, "done");
            m.action_result(&route.hook_id, &route.action_id, "done");
            if let Ok(lat) = now.duration_since(ev.received_at) {
                m.delivery_latency_seconds.observe(lat.as_secs_f64());
            }
            log::info!("{head} result=done");
        }
        Disposition::Retry { at, error } => {
            m.delivery_result(&route.hook_id, "retry");
            m.action_result(&route.hook_id, &route.action_id, "retry");
            let wait = at.duration_since(now).unwrap_or(Duration::ZERO);
            log::warn!("{head} result=retry in={wait:.1?} error={error:?}");
        }
        Disposition::Dead { error } => {
            m.delivery_result(&route.hook_id, "dead");
            m.action_result(&route.hook_id, &route.action_id, "dead");
            log::error!("{head} result=dead-letter error={error:?}");
        }
    }
    // The attempt is over: its slot goes back now, not once the result is
    // recorded, so the next claim overlaps the bookkeeping (the slot bounds
    // the work at the target; holding it for the 2 ms gather and the commit
    // held the pipeline to a fraction of its concurrency). The task still
    // waits for the record, so a drain still waits for it too.
    drop(slot);
    match finisher
        .finish((ev.id.clone(), ev.action_id.clone()), disposition, log)
        .await
    {
        Ok(true) => {}
        Ok(false) => log::warn!(
            "deliver hook={} action={} id={}: lease was lost before the result was recorded; another worker owns it now",
            route.hook_id,
            route.action_id,
            ev.id
        ),
        Err(e) => log::warn!(
            "deliver hook={} action={} id={}: cannot record the result ({e}); it will be delivered again when its lease expires",
            route.hook_id,
            route.action_id,
            ev.id
        ),
    }
}
