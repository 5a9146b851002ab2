//! Processing stored events: claim due events from the store, run the hook's
//! action (forward over HTTP, or run a command), and record the outcome with
//! retries, dead letters and a circuit breaker per target.
//!
//! Ingest never waits for any of this: the sender already has its 2xx.

pub mod backoff;
pub mod breaker;
pub mod exec;
pub mod forward;
pub mod job;
pub mod worker;

use std::collections::HashMap;
use std::sync::atomic::AtomicUsize;
use std::sync::Mutex;
use std::time::Duration;

use std::sync::Arc;

use tokio::sync::Notify;

use crate::config::{ActionConfig, BreakerConfig, DeliveryConfig, Invalid, RetryConfig, Secret};
use crate::metrics::Metrics;
use crate::store::{Counts, Store};
use exec::ExecAction;

/// One action of a hook, as the dispatcher sees it: each has its own
/// deliveries, slots, retries and breaker.
#[derive(Debug)]
pub struct Route {
    pub hook_id: String,
    /// `default` for a hook's single `[hooks.action]`.
    pub action_id: String,
    /// Place in the hook's list (the dispatcher fans out in this order).
    pub index: usize,
    pub action: HookAction,
    pub retry: RetryConfig,
    pub breaker: BreakerConfig,
    /// The circuit breaker's key. A hook's single `[hooks.action]`: its
    /// target, shared by every hook sending there (as before fan-out). An
    /// entry of `[[hooks.actions]]`: the target with hook and action, so one
    /// action's failures never hold back another's at the same target.
    pub breaker_key: String,
    /// Which events this action gets.
    pub when: Condition,
}

impl Route {
    /// The key of this action's slots: hook and action id.
    pub fn slot_key(&self) -> String {
        format!("{}/{}", self.hook_id, self.action_id)
    }
}

/// An action's condition: its `rule` and `events`, checked against the
/// stored event when it is fanned out.
#[derive(Debug, Clone, Default)]
pub struct Condition {
    pub rule: Option<crate::payload::Rule>,
    pub events: Option<std::collections::HashSet<String>>,
    /// The hook's `payload_content_type`, for reading the body.
    pub content_type: Option<String>,
}

impl Condition {
    /// Compile an action's condition; an error's key is relative to the
    /// hook (`actions[1].rule.regex`).
    pub fn compile(
        spec: &crate::config::ActionSpec<'_>,
        content_type: Option<&str>,
    ) -> Result<Condition, Invalid> {
        let rule = match spec.rule {
            Some(r) => Some(
                crate::payload::Rule::compile(r, &format!("{}.rule", spec.key()))
                    .map_err(|e| Invalid::new(e.key, e.message))?,
            ),
            None => None,
        };
        Ok(Condition {
            rule,
            events: spec.events.map(|v| v.iter().cloned().collect()),
            content_type: content_type.map(String::from),
        })
    }

    /// Does the stored event `ev` get this action?
    pub fn matches(&self, ev: &crate::store::Claimed) -> bool {
        self.matches_parts(
            &ev.id,
            &ev.hook_id,
            &ev.delivery_id,
            &ev.event_type,
            &ev.headers,
            &ev.body,
        )
    }

    /// The same question at ingest, for an event about to be stored: its
    /// kept headers and body are what the stored event will hold, so the
    /// answer is the one the dispatcher would give.
    pub fn matches_new(&self, ev: &crate::store::NewEvent) -> bool {
        self.matches_parts(
            &ev.id,
            &ev.hook_id,
            &ev.delivery_id,
            &ev.event_type,
            &ev.headers,
            &ev.body,
        )
    }

    fn matches_parts(
        &self,
        id: &str,
        hook_id: &str,
        delivery_id: &str,
        event_type: &str,
        headers: &crate::store::Headers,
        body: &[u8],
    ) -> bool {
        if let Some(types) = &self.events {
            if !types.contains(event_type) {
                return false;
            }
        }
        let Some(rule) = &self.rule else {
            return true;
        };
        let view = crate::payload::view::RequestView::from_stored(
            headers.0.iter().cloned(),
            body,
            crate::payload::view::Meta {
                event: Some(event_type.to_string()),
                delivery: Some(delivery_id.to_string()),
                hook: Some(hook_id.to_string()),
                id: Some(id.to_string()),
            },
        )
        .with_content_type(self.content_type.as_deref());
        rule.check(&view).is_ok()
    }
}

/// What the dispatcher needs from the daemon (implemented by `app::App`),
/// so this layer does not depend on the one above it.
pub trait Context: Send + Sync + 'static {
    fn store(&self) -> &Arc<dyn Store>;
    fn delivery(&self) -> &DeliveryState;
    fn metrics(&self) -> &Metrics;
    /// Every action of every hook, sorted by hook id then place in the
    /// hook, as configured now.
    fn routes(&self) -> Vec<Arc<Route>>;
    /// `[delivery]` as configured now.
    fn settings(&self) -> DeliveryConfig;
    /// Is the store's schema in place? False while PostgreSQL has not been
    /// reached since start (nothing to claim yet).
    fn schema_ready(&self) -> bool {
        true
    }
}

/// A hook's action with its secret resolved.
#[derive(Debug, Clone)]
pub struct HookAction {
    pub kind: ActionKind,
    /// Circuit-breaker key: the forward target's origin, or the program.
    pub target: String,
    pub concurrency: usize,
    pub timeout: Duration,
}

#[derive(Debug, Clone)]
pub enum ActionKind {
    Forward(Arc<ForwardTarget>),
    Exec(ExecAction),
    Job(job::JobAction),
}

/// A forward action's target with its TLS config and secret headers
/// resolved. Debug shows header names only (values are marked sensitive).
#[derive(Debug)]
pub struct ForwardTarget {
    pub url: http::Uri,
    pub sign_secret: Option<Secret>,
    /// The TLS config for https:// (system CA store or the action's bundle,
    /// optional client certificate); a no-roots config for http://.
    pub tls: crate::tls::client::ClientTls,
    /// `headers` with their secret values, marked sensitive.
    pub headers: Vec<(http::HeaderName, http::HeaderValue)>,
    /// Requests at once to the target's origin.
    pub max_connections: usize,
}

/// Resolve `headers = { Name = "env:VAR" }`. Errors name the header and the
/// reference, never the value.
fn resolve_headers(
    headers: &std::collections::BTreeMap<String, crate::config::SecretRef>,
) -> Result<Vec<(http::HeaderName, http::HeaderValue)>, Invalid> {
    let mut out = Vec::with_capacity(headers.len());
    for (name, r) in headers {
        let key = || format!("action.headers.{name}");
        let n = http::HeaderName::try_from(name.as_str())
            .map_err(|_| Invalid::new(key(), "not a valid header name"))?;
        let secret = r
            .resolve()
            .map_err(|e| Invalid::new(key(), e.to_string()))?;
        let mut v = http::HeaderValue::from_bytes(&secret.0).map_err(|_| {
            Invalid::new(
                key(),
                format!("the value in {r} is not a valid header value (a newline or control character inside?)"),
            )
        })?;
        v.set_sensitive(true);
        out.push((n, v));
    }
    Ok(out)
}

/// Build a hook's action, resolving its secrets and TLS material. The
/// error's key is relative to the hook (`action.url`, `action.sign_secret`,
/// `action.tls`, `action.headers.NAME`).
pub fn build_action(a: &ActionConfig, output_limit: usize) -> Result<HookAction, Invalid> {
    Ok(match a {
        ActionConfig::Forward {
            url,
            timeout,
            sign_secret,
            concurrency,
            tls_ca,
            tls_client_cert,
            tls_client_key,
            headers,
            max_connections,
        } => {
            let uri: http::Uri = url
                .parse()
                .map_err(|_| Invalid::new("action.url", format!("invalid url {url:?}")))?;
            let target = crate::config::forward_origin(url);
            // Decoded as a `standard` hook decodes its secret, so a webhookd
            // receiving what this one forwards verifies it.
            let sign_secret = match sign_secret {
                Some(r) => {
                    let raw = r
                        .resolve()
                        .map_err(|e| Invalid::new("action.sign_secret", e.to_string()))?;
                    let key = crate::verify::standard::decode_secret(&raw.0).ok_or_else(|| {
                        Invalid::new(
                            "action.sign_secret",
                            format!("{r} is not a Standard Webhooks secret (expected \"whsec_\" followed by base64)"),
                        )
                    })?;
                    Some(Secret(key))
                }
                None => None,
            };
            let tls = if uri.scheme_str() == Some("https") {
                crate::tls::client::ClientTls::build(&crate::tls::client::Settings {
                    ca: tls_ca.clone(),
                    client_cert: tls_client_cert.clone(),
                    client_key: tls_client_key.clone(),
                })
            } else {
                crate::tls::client::ClientTls::plain()
            }
            .map_err(|e| Invalid::new("action.tls", e.to_string()))?;
            HookAction {
                kind: ActionKind::Forward(Arc::new(ForwardTarget {
                    url: uri,
                    sign_secret,
                    tls,
                    headers: resolve_headers(headers)?,
                    max_connections: *max_connections,
                })),
                target,
                concurrency: *concurrency,
                timeout: *timeout,
            }
        }
        ActionConfig::Exec {
            command,
            shell,
            workdir,
            timeout,
            concurrency,
            pass_env,
            ..
        } => HookAction {
            target: format!("exec:{}", if *shell { "/bin/sh" } else { &command[0] }),
            kind: ActionKind::Exec(ExecAction {
                command: command.clone(),
                shell: *shell,
                workdir: workdir.clone(),
                timeout: *timeout,
                output_limit,
                values: exec_values(a, "action").map_err(|e| Invalid::new(e.key, e.message))?,
                payload_content_type: None,
                pass_env: pass_env.clone(),
            }),
            concurrency: *concurrency,
            timeout: *timeout,
        },
        ActionConfig::Job {
            name,
            socket,
            timeout,
            concurrency,
            ..
        } => HookAction {
            target: format!("job:{name}"),
            kind: ActionKind::Job(job::JobAction {
                name: name.clone(),
                socket: socket
                    .clone()
                    .unwrap_or_else(|| crate::job::default_socket(name)),
                timeout: *timeout,
                output_limit,
                values: exec_values(a, "action").map_err(|e| Invalid::new(e.key, e.message))?,
                payload_content_type: None,
            }),
            concurrency: *concurrency,
            timeout: *timeout,
        },
    })
}

/// An exec action's `args`, `env` and `files`, compiled (empty for
/// forward); `prefix` is the action's key in the hook (`action`, `actions[1]`).
pub fn exec_values(
    a: &ActionConfig,
    prefix: &str,
) -> Result<crate::payload::values::ExecValues, crate::payload::RuleError> {
    match a {
        ActionConfig::Exec {
            args, env, files, ..
        }
        | ActionConfig::Job {
            args, env, files, ..
        } => crate::payload::values::ExecValues::compile(
            &crate::payload::values::ExecValuesSpec {
                args: args.clone(),
                env: env.clone(),
                files: files.clone(),
            },
            prefix,
        ),
        ActionConfig::Forward { .. } => Ok(Default::default()),
    }
}

/// The result of one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    Ok,
    Fail {
        error: String,
        /// No point retrying (e.g. the target answered 400).
        permanent: bool,
        /// The target asked us to wait this long.
        retry_after: Option<Duration>,
    },
}

impl Attempt {
    pub fn retry(error: String, retry_after: Option<Duration>) -> Attempt {
        Attempt::Fail {
            error,
            permanent: false,
            retry_after,
        }
    }

    pub fn permanent(error: String) -> Attempt {
        Attempt::Fail {
            error,
            permanent: true,
            retry_after: None,
        }
    }
}

/// Delivery state shared between the dispatcher, the request handlers (which
/// wake it) and /status.
#[derive(Default)]
pub struct DeliveryState {
    /// Poked when a new event for a hook with an action is stored, and when a
    /// delivery slot frees up.
    pub wake: Notify,
    pub breakers: breaker::Breakers,
    pub forwarder: forward::Forwarder,
    /// Deliveries running now, per hook.
    inflight: Mutex<HashMap<String, usize>>,
    pub inflight_total: AtomicUsize,
    /// Last queue counts read from the store.
    pub counts: Mutex<Counts>,
    /// Last per-action counts read from the store.
    pub action_counts: Mutex<Vec<crate::store::ActionCounts>>,
    /// Requests waiting for an event's first attempt (`respond = "after_action"`).
    waiters: Mutex<HashMap<String, tokio::sync::oneshot::Sender<FirstResult>>>,
}

/// The key of a request waiting for the first attempt of (event, action).
fn waiter_key(id: &str, action: &str) -> String {
    format!("{id}\n{action}")
}

/// What an event's first attempt produced, for a request that waits for it.
#[derive(Debug, Clone, Default)]
pub struct FirstResult {
    pub ok: bool,
    pub error: Option<String>,
    /// Forward: the target's status, if it answered.
    pub target_status: Option<u16>,
    /// Exec: stdout, then stderr, within `delivery.output_limit` each.
    pub output: Vec<u8>,
    pub truncated: bool,
    /// The attempt was an exec action's (None: not known here).
    pub exec: Option<bool>,
    /// No action matched the event: nothing runs, nothing to wait for.
    pub no_action: bool,
}

impl DeliveryState {
    /// Wait for the first attempt of event `id` (register before storing
    /// it): of `first_action` when the event was fanned out at ingest, else
    /// of the first action the dispatcher gives it (`retarget_first`).
    pub fn wait_first(
        &self,
        id: &str,
        first_action: Option<&str>,
    ) -> tokio::sync::oneshot::Receiver<FirstResult> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        if let Ok(mut w) = self.waiters.lock() {
            let key = match first_action {
                Some(a) => waiter_key(id, a),
                None => id.to_string(),
            };
            w.insert(key, tx);
        }
        rx
    }

    /// Stop waiting (deadline passed, or the event was not newly stored).
    pub fn forget_first(&self, id: &str) {
        if let Ok(mut w) = self.waiters.lock() {
            w.remove(id);
            // Retargeted to an action at fan-out (see `retarget_first`).
            let prefix = format!("{id}\n");
            w.retain(|k, _| !k.starts_with(&prefix));
        }
    }

    fn take_first(&self, key: &str) -> Option<tokio::sync::oneshot::Sender<FirstResult>> {
        self.waiters.lock().ok()?.remove(key)
    }

    /// At fan-out: a request waiting for event `id` waits for the first
    /// attempt of its first action (`actions[0]` if it matched, else the
    /// first that did); with no action matched it is answered at once.
    fn retarget_first(&self, id: &str, first_action: Option<&str>) {
        let Ok(mut w) = self.waiters.lock() else {
            return;
        };
        let Some(tx) = w.remove(id) else { return };
        match first_action {
            Some(a) => {
                w.insert(waiter_key(id, a), tx);
            }
            None => {
                let _ = tx.send(FirstResult {
                    ok: true,
                    no_action: true,
                    ..Default::default()
                });
            }
        }
    }

    pub fn inflight(&self, hook: &str) -> usize {
        self.inflight
            .lock()
            .ok()
            .and_then(|m| m.get(hook).copied())
            .unwrap_or(0)
    }

    fn add_inflight(&self, hook: &str, delta: isize) {
        use std::sync::atomic::Ordering;
        if let Ok(mut m) = self.inflight.lock() {
            let e = m.entry(hook.to_string()).or_insert(0);
            *e = e.saturating_add_signed(delta);
        }
        if delta >= 0 {
            self.inflight_total
                .fetch_add(delta.unsigned_abs(), Ordering::Relaxed);
        } else {
            self.inflight_total
                .fetch_sub(delta.unsigned_abs(), Ordering::Relaxed);
        }
    }

    pub fn counts(&self) -> Counts {
        self.counts.lock().map(|c| *c).unwrap_or_default()
    }

    pub fn action_counts(&self) -> Vec<crate::store::ActionCounts> {
        self.action_counts
            .lock()
            .map(|c| c.clone())
            .unwrap_or_default()
    }
}

/// Results of attempts are recorded in batches, one transaction for all
/// attempts that ended meanwhile (one fsync instead of one each), on a
/// dedicated thread since the store is blocking.
pub struct Finisher {
    tx: std::sync::mpsc::Sender<FinishJob>,
}

type FinishJob = (
    crate::store::DeliveryKey,
    crate::store::Disposition,
    AttemptLog,
    tokio::sync::oneshot::Sender<Result<bool, crate::store::StoreError>>,
);

/// When an attempt ran, how long it took and what the target or command
/// said, kept with its result for the console (`Store::finish_with_history`).
#[derive(Debug, Clone)]
pub struct AttemptLog {
    pub attempt: i32,
    pub started_at: std::time::SystemTime,
    pub duration: Duration,
    /// Forward: the status the target answered, also on success.
    pub target_status: Option<u16>,
    /// Exec and job: stdout, then stderr (each within `delivery.output_limit`).
    pub output: Vec<u8>,
    pub truncated: bool,
}

/// The record of an attempt: the error apart from the output, so a
/// successful command's output is kept too.
fn attempt_record(
    (id, action): &crate::store::DeliveryKey,
    d: &crate::store::Disposition,
    log: &AttemptLog,
    worker: &str,
) -> crate::store::AttemptRecord {
    use crate::store::Disposition;
    let (result, error) = match d {
        Disposition::Done => ("done", None),
        Disposition::Retry { error, .. } => ("retry", Some(error.clone())),
        Disposition::Dead { error } => ("dead", Some(error.clone())),
    };
    let output = (!log.output.is_empty()).then(|| {
        let mut s = String::from_utf8_lossy(&log.output).into_owned();
        if log.truncated {
            s.push_str("\n[output truncated at delivery.output_limit]");
        }
        s
    });
    crate::store::AttemptRecord {
        event_id: id.to_string(),
        attempt: log.attempt,
        started_at: log.started_at,
        duration_us: i64::try_from(log.duration.as_micros()).unwrap_or(i64::MAX),
        result: result.to_string(),
        target_status: log.target_status.map(i32::from),
        error,
        output,
        worker: worker.to_string(),
        action_id: action.clone(),
    }
}

/// Pauses before a result batch that the store could not take is tried
/// again. A deadlock or a dropped connection is over in milliseconds, and
/// a result given up on is delivered again when its lease expires.
const FINISH_RETRY_PAUSES: [Duration; 3] = [
    Duration::from_millis(20),
    Duration::from_millis(100),
    Duration::from_millis(500),
];

/// `Store::finish_with_history`, tried again after a transient failure
/// (the batch's transaction was rolled back, so it can be run again as it
/// is).
fn finish_retrying(
    store: &dyn crate::store::Store,
    worker: &str,
    items: &[(crate::store::DeliveryKey, crate::store::Disposition)],
    history: &[crate::store::AttemptRecord],
) -> Result<Vec<bool>, crate::store::StoreError> {
    let mut pauses = FINISH_RETRY_PAUSES.iter();
    loop {
        match store.finish_with_history(worker, items, history, std::time::SystemTime::now()) {
            Err(e @ crate::store::StoreError::Unavailable(_)) => match pauses.next() {
                Some(p) => {
                    log::info!(
                        "delivery: recording {} result(s) failed ({e}); trying again in {p:?}",
                        items.len()
                    );
                    std::thread::sleep(*p);
                }
                None => return Err(e),
            },
            r => return r,
        }
    }
}

/// Most results recorded in one transaction.
const FINISH_BATCH_MAX: usize = 512;

/// How long the finisher waits for more results after the first of a
/// batch. Results come in one by one, as attempts end; without the wait
/// most batches hold one result, and each is a write transaction of its
/// own that the ingest writer waits behind. A result recorded 2 ms later
/// changes nothing for anyone.
const FINISH_GATHER: Duration = Duration::from_millis(2);

impl Finisher {
    pub fn start(store: std::sync::Arc<dyn crate::store::Store>, worker: String) -> Finisher {
        let (tx, rx) = std::sync::mpsc::channel::<FinishJob>();
        let spawned = std::thread::Builder::new()
            .name("delivery-finish".into())
            .spawn(move || {
                while let Ok(first) = rx.recv() {
                    let mut jobs = vec![first];
                    let until = std::time::Instant::now() + FINISH_GATHER;
                    while jobs.len() < FINISH_BATCH_MAX {
                        let left = until.saturating_duration_since(std::time::Instant::now());
                        match rx.recv_timeout(left) {
                            Ok(j) => jobs.push(j),
                            Err(_) => break,
                        }
                    }
                    let items: Vec<_> = jobs
                        .iter()
                        .map(|(id, d, _, _)| (id.clone(), d.clone()))
                        .collect();
                    let history: Vec<_> = jobs
                        .iter()
                        .map(|(id, d, log, _)| attempt_record(id, d, log, &worker))
                        .collect();
                    match finish_retrying(&*store, &worker, &items, &history) {
                        Ok(results) => {
                            for ((_, _, _, reply), ok) in jobs.into_iter().zip(results) {
                                let _ = reply.send(Ok(ok));
                            }
                        }
                        Err(e) => {
                            for (_, _, _, reply) in jobs {
                                let _ = reply.send(Err(e.clone()));
                            }
                        }
                    }
                }
            });
        if let Err(e) = spawned {
            log::error!("cannot start the delivery finisher thread: {e}");
        }
        Finisher { tx }
    }

    /// Record one result; resolves once it is committed.
    pub async fn finish(
        &self,
        id: crate::store::DeliveryKey,
        d: crate::store::Disposition,
        log: AttemptLog,
    ) -> Result<bool, crate::store::StoreError> {
        let (reply, rx) = tokio::sync::oneshot::channel();
        self.tx
            .send((id, d, log, reply))
            .map_err(|_| crate::store::StoreError::Unavailable("finisher stopped".into()))?;
        rx.await
            .map_err(|_| crate::store::StoreError::Unavailable("finisher stopped".into()))?
    }
}
