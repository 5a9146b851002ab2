//! Durable event storage.
//!
//! Two engines behind one small trait: the embedded SQLite store (the default,
//! works right after install) and PostgreSQL (production, several instances).
//! All calls are blocking: they run on dedicated writer threads (see
//! [`writer`]) or on `spawn_blocking`, never on a tokio worker, because the
//! `postgres` client runs its own runtime and must not be nested in ours.

pub mod bringup;
mod checkpoint;
pub mod deadline;
mod embedded;
mod gate;
pub mod migrations;
pub mod postgres;
mod recent;
pub mod spool;
pub mod sqlite;
pub mod writer;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;

use crate::config::StoreConfig;

/// What went wrong, with the database driver's error kept as the source
/// when there is one. Cheap to clone: one result is handed to every
/// request of a batch.
#[derive(Debug, Clone)]
pub struct Cause {
    message: String,
    source: Option<Arc<dyn std::error::Error + Send + Sync>>,
}

impl Cause {
    /// `message` describes `source` (usually it is its text).
    pub fn with_source(
        message: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Cause {
        Cause {
            message: message.into(),
            source: Some(Arc::new(source)),
        }
    }
}

impl std::fmt::Display for Cause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Cause {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

impl From<String> for Cause {
    fn from(message: String) -> Cause {
        Cause {
            message,
            source: None,
        }
    }
}

impl From<&str> for Cause {
    fn from(message: &str) -> Cause {
        Cause::from(message.to_string())
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached or opened right now; retry later.
    #[error("store unavailable: {0}")]
    Unavailable(#[source] Cause),
    /// A statement failed for a reason other than reachability.
    #[error("store query failed: {0}")]
    Query(#[source] Cause),
    /// The database refused this one event's data (a data exception or a
    /// constraint); the other events of its batch are not affected.
    #[error("the database refused the event: {0}")]
    Rejected(String),
    #[error("spool {path} is locked by another process (another webhookd using the same spool file?); give each instance its own store.spool")]
    SpoolLocked { path: String },
    #[error("spool {path} holds {events} event(s) for {spooled_for}, but store.url is now {current}: set store.url back until the spool has drained, or move the file away to start without it (it is a SQLite file; its events can be inspected with sqlite3)")]
    SpoolForOtherStore {
        path: String,
        events: usize,
        spooled_for: String,
        current: String,
    },
    #[error("migration {version} ({name}) failed: {message}")]
    Migration {
        version: i32,
        name: &'static str,
        message: String,
    },
    /// A newer webhookd migrated the database: refuse it, touch nothing.
    #[error(
        "database schema version {found} is newer than this webhookd knows ({known}; this is webhookd {}): \
         it was migrated by {}. Downgrades are not supported: install that version (or newer) again, \
         or restore a backup of the database taken before the upgrade",
        crate::VERSION,
        by.as_deref().map(|v| format!("webhookd {v}")).unwrap_or_else(|| "a newer webhookd".into())
    )]
    SchemaTooNew {
        found: i32,
        known: i32,
        /// The webhookd version that applied `found`, when recorded.
        by: Option<String>,
    },
    #[error("the database has no webhookd schema yet; run `webhookd migrate`")]
    NotMigrated,
    #[error("invalid store url: {0}")]
    BadUrl(String),
}

/// Lifecycle of a stored event. `Stored` means "kept, nothing to do".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventState {
    Stored,
    Pending,
    Delivering,
    Done,
    Dead,
}

impl EventState {
    pub fn as_str(self) -> &'static str {
        match self {
            EventState::Stored => "stored",
            EventState::Pending => "pending",
            EventState::Delivering => "delivering",
            EventState::Done => "done",
            EventState::Dead => "dead",
        }
    }

    /// The state as stored in a row; an unknown value is a query error.
    pub(crate) fn from_column(s: &str) -> Result<EventState, StoreError> {
        EventState::parse(s)
            .ok_or_else(|| StoreError::Query(format!("unknown event state {s:?}").into()))
    }

    pub fn parse(s: &str) -> Option<EventState> {
        Some(match s {
            "stored" => EventState::Stored,
            "pending" => EventState::Pending,
            "delivering" => EventState::Delivering,
            "done" => EventState::Done,
            "dead" => EventState::Dead,
            _ => return None,
        })
    }
}

impl std::fmt::Display for EventState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// Request headers kept with an event, in order, credentials already
/// removed. Stored as a JSON array of `[name, value]` pairs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers(pub Vec<(String, String)>);

impl Headers {
    /// The stored form.
    pub fn to_json(&self) -> String {
        let pairs: Vec<[&str; 2]> = self
            .0
            .iter()
            .map(|(k, v)| [k.as_str(), v.as_str()])
            .collect();
        serde_json::to_string(&pairs).unwrap_or_else(|_| "[]".into())
    }

    /// Read the stored form; None if it is not one.
    pub fn from_json(s: &str) -> Option<Headers> {
        let pairs: Vec<[String; 2]> = serde_json::from_str(s).ok()?;
        Some(Headers(pairs.into_iter().map(|[k, v]| (k, v)).collect()))
    }

    /// Read the stored form; an unreadable one counts as no headers.
    pub fn from_json_lossy(s: &str) -> Headers {
        Headers::from_json(s).unwrap_or_default()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Bytes of names and values (what a batch's byte budget counts).
    pub fn byte_len(&self) -> usize {
        self.0
            .iter()
            .fold(0usize, |n, (k, v)| n.saturating_add(k.len() + v.len()))
    }
}

/// An event as accepted from the network, before it is stored.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub id: String,
    pub hook_id: String,
    pub delivery_id: String,
    pub event_type: String,
    pub received_at: SystemTime,
    /// Sensitive headers already removed.
    pub headers: Headers,
    pub body: Bytes,
    pub state: EventState,
    /// The actions this event gets, decided at ingest (a store that
    /// [`Store::fans_out_at_ingest`] stores their deliveries with the event,
    /// in the same transaction). `None`: the dispatcher fans it out later.
    pub actions: Option<Vec<String>>,
}

/// What happened to one event of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Newly stored under this id.
    Stored(String),
    /// Already stored (same hook and delivery id) under this id.
    Duplicate(String),
    /// Kept in the local spool (PostgreSQL unreachable); moved there later
    /// under the same id.
    Spooled(String),
    /// Refused by the database on its own (the reason); nothing stored.
    Refused(String),
}

/// A stored event as shown by `events list` / `events show`.
#[derive(Debug, Clone)]
pub struct EventRecord {
    pub id: String,
    pub hook_id: String,
    pub delivery_id: String,
    pub event_type: String,
    pub received_at: SystemTime,
    pub state: EventState,
    pub attempts: i32,
    pub next_attempt_at: SystemTime,
    pub last_error: Option<String>,
    pub body_len: usize,
    /// Present only when asked for (`show`).
    pub headers: Option<Headers>,
    pub body: Option<Vec<u8>>,
}

/// Filters for listing events.
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    pub hook_id: Option<String>,
    pub state: Option<EventState>,
    /// Received at or after.
    pub since: Option<SystemTime>,
    /// Received before.
    pub until: Option<SystemTime>,
    pub limit: usize,
}

/// One page of the console's event list: newest first, by id cursor.
#[derive(Debug, Clone, Default)]
pub struct PageQuery {
    pub hook_id: Option<String>,
    pub state: Option<EventState>,
    pub event_type: Option<String>,
    pub delivery_id: Option<String>,
    /// Received at or after.
    pub since: Option<SystemTime>,
    /// Received before.
    pub until: Option<SystemTime>,
    /// Only ids below this one (the cursor of the previous page).
    pub before: Option<String>,
    /// Only ids above this one (live updates: what is new since the top row).
    pub after: Option<String>,
    pub limit: usize,
    /// Examine at most this many of the newest ids in range for matches, so
    /// a filter that matches little never scans the whole table; the page
    /// then says where to continue.
    pub scan: usize,
}

/// A page of events and where the next (older) one starts.
#[derive(Debug, Clone, Default)]
pub struct Page {
    pub events: Vec<EventRecord>,
    /// Continue below this id; None when nothing older is in range.
    pub next: Option<String>,
    /// The page is short because the scan window ended, not the range.
    pub window_ended: bool,
}

/// One delivery attempt, as kept for the console.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptRecord {
    pub event_id: String,
    /// 1 for the first attempt (again 1 after a replay).
    pub attempt: i32,
    pub started_at: SystemTime,
    pub duration_us: i64,
    /// "done", "retry" or "dead".
    pub result: String,
    /// The HTTP status the target answered, when it answered.
    pub target_status: Option<i32>,
    /// What went wrong, for an attempt that failed.
    pub error: Option<String>,
    /// What the command printed (stdout, then stderr) or the target
    /// answered, bounded by `delivery.output_limit`; also on success.
    pub output: Option<String>,
    pub worker: String,
    /// The action this attempt ran (`default` for a hook's single action).
    pub action_id: String,
}

/// The implicit id of a hook's single `[hooks.action]`, and of the delivery
/// that events stored before fan-out were migrated to.
pub const DEFAULT_ACTION: &str = "default";

/// One (event, action) delivery, as shown by `events show` and the console.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryRecord {
    pub event_id: String,
    pub action_id: String,
    pub hook_id: String,
    /// Pending, delivering, done or dead.
    pub state: EventState,
    pub attempts: i32,
    pub next_attempt_at: SystemTime,
    pub last_error: Option<String>,
}

/// Deliveries per state of one (hook, action), for /status and /metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ActionCounts {
    pub hook_id: String,
    pub action_id: String,
    pub pending: i64,
    pub delivering: i64,
    pub dead: i64,
}

/// Which actions an event not yet fanned out gets, decided by the caller
/// (the dispatcher evaluates each action's condition with the current
/// config): the ids, in the hook's order.
pub type FanOutPick = std::sync::Arc<dyn Fn(&Claimed) -> Vec<String> + Send + Sync>;

/// An event fanned out: the actions it got (empty: no action matched).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FannedOut {
    pub event_id: String,
    pub actions: Vec<String>,
}

/// Which events to put back in the queue.
#[derive(Debug, Clone, Default)]
pub struct ReplayFilter {
    /// One event by id (any state but `delivering`).
    pub id: Option<String>,
    /// Otherwise every event in this state (e.g. dead letters)...
    pub state: Option<EventState>,
    /// ...of this hook and time range.
    pub hook_id: Option<String>,
    pub since: Option<SystemTime>,
    pub until: Option<SystemTime>,
    /// Only this action's deliveries (the others are not touched).
    pub action_id: Option<String>,
}

/// An event leased to a worker for delivery.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub id: String,
    pub hook_id: String,
    pub delivery_id: String,
    pub event_type: String,
    pub received_at: SystemTime,
    pub headers: Headers,
    pub body: Bytes,
    /// Including this one.
    pub attempts: i32,
    /// The action this lease is for (empty when fanning out).
    pub action_id: String,
}

/// How a delivery attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Disposition {
    Done,
    Retry { at: SystemTime, error: String },
    Dead { error: String },
}

/// Events per state (only the states that matter for operations).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub pending: i64,
    pub delivering: i64,
    pub dead: i64,
}

/// Writes batches; one per writer thread, holding that thread's connection.
pub trait BatchSink: Send {
    /// Store `events`. The result has one entry per event, in order: each
    /// is durable (stored or duplicate) or refused on its own
    /// ([`Outcome::Refused`]: a row the database will not take never fails
    /// the others). An `Err` means none of the batch is known to be stored.
    fn write_batch(&mut self, events: &[NewEvent]) -> Result<Vec<Outcome>, StoreError>;

    /// The most a call can take, when the sink enforces a deadline. A writer
    /// waiting inside a bounded call is waiting on the database, not stuck,
    /// so the watchdog does not count that time.
    fn deadline(&self) -> Option<Duration> {
        None
    }
}

/// A storage engine.
pub trait Store: Send + Sync + 'static {
    /// "sqlite" or "postgres", for messages.
    fn kind(&self) -> &'static str;
    /// The schema version this build migrates to.
    fn latest_schema(&self) -> i32;
    /// Writer threads when `store.writers` is 0 (automatic).
    fn default_writers(&self) -> usize;
    /// A database server that can be unreachable (PostgreSQL): the daemon
    /// does not wait for it at start (it is migrated in the background) and
    /// spools while it is down. A local file (SQLite) is migrated first.
    fn remote(&self) -> bool {
        false
    }
    /// Apply pending migrations under a lock; returns how many were applied.
    fn migrate(&self) -> Result<usize, StoreError>;
    /// Fail unless the schema is present and not newer than this build.
    fn check_schema(&self) -> Result<(), StoreError>;
    /// A new sink for a writer thread.
    fn sink(&self) -> Box<dyn BatchSink>;
    /// Whether the sink stores an event's deliveries with it
    /// ([`NewEvent::actions`]): one transaction per batch instead of a
    /// second one to fan out, and no second read of the body. Otherwise the
    /// actions are ignored and the dispatcher fans out.
    fn fans_out_at_ingest(&self) -> bool {
        false
    }
    /// Is the database reachable right now?
    fn ping(&self) -> Result<(), StoreError>;
    fn list(&self, q: &ListQuery) -> Result<Vec<EventRecord>, StoreError>;
    fn get(&self, id: &str) -> Result<Option<EventRecord>, StoreError>;

    /// Materialise the deliveries of up to `limit` events of `hook_id` not
    /// yet fanned out, oldest first, in one transaction: `pick` names the
    /// actions each gets. Idempotent and safe across instances: an event is
    /// fanned out once, its deliveries keyed by (event, action).
    fn fan_out(
        &self,
        hook_id: &str,
        limit: usize,
        now: SystemTime,
        pick: FanOutPick,
    ) -> Result<Vec<FannedOut>, StoreError>;
    /// Lease up to `limit` due deliveries of (`hook_id`, `action_id`) to
    /// `worker` until `lease_until`: pending ones whose time has come, and
    /// delivering ones whose lease ran out (their worker died). Counts the
    /// attempt.
    fn claim(
        &self,
        hook_id: &str,
        action_id: &str,
        limit: usize,
        worker: &str,
        now: SystemTime,
        lease_until: SystemTime,
    ) -> Result<Vec<Claimed>, StoreError>;
    /// Give back every event `worker` still holds (graceful shutdown).
    fn release(&self, worker: &str, now: SystemTime) -> Result<usize, StoreError>;
    /// Queue matching events for delivery again, from attempt 1.
    fn replay(&self, f: &ReplayFilter, now: SystemTime) -> Result<usize, StoreError>;
    /// Delete up to `batch` finished events received before the cut-offs.
    fn sweep(
        &self,
        done_before: Option<SystemTime>,
        dead_before: Option<SystemTime>,
        batch: u32,
    ) -> Result<usize, StoreError>;
    fn counts(&self) -> Result<Counts, StoreError>;
    /// A page of the event list (see [`PageQuery`]).
    fn page(&self, q: &PageQuery) -> Result<Page, StoreError>;
    /// Record the ends of attempts, `((event id, action id), outcome)`, and
    /// the history of those whose result counted (`history[i]` is the
    /// attempt of `items[i]`; pass none to keep no history), in one
    /// transaction. For each item: false if the lease was lost meanwhile.
    /// Losing history loses no delivery, so a failure to keep it is only
    /// logged ([`history_lost`]).
    fn finish_with_history(
        &self,
        worker: &str,
        items: &[(DeliveryKey, Disposition)],
        history: &[AttemptRecord],
        now: SystemTime,
    ) -> Result<Vec<bool>, StoreError>;
    /// The attempts of one event, oldest first.
    fn attempts(&self, event_id: &str) -> Result<Vec<AttemptRecord>, StoreError>;
    /// The deliveries of one event, by action id.
    fn deliveries(&self, event_id: &str) -> Result<Vec<DeliveryRecord>, StoreError>;
    /// Pending, delivering and dead deliveries per (hook, action).
    fn action_counts(&self) -> Result<Vec<ActionCounts>, StoreError>;
}

/// The attempt records whose result counted (`done[i]` for `history[i]`):
/// the history of a result that lost its lease is the new owner's to keep.
pub(crate) fn counted_history<'a>(
    history: &'a [AttemptRecord],
    done: &[bool],
) -> Vec<&'a AttemptRecord> {
    history
        .iter()
        .zip(done)
        .filter(|(_, ok)| **ok)
        .map(|(h, _)| h)
        .collect()
}

/// Losing history loses no delivery: said in the log, and the results
/// stand.
pub(crate) fn history_lost(n: usize, e: &dyn std::fmt::Display) {
    log::warn!("delivery: cannot keep the history of {n} attempt(s): {e}");
}

/// (event id, action id).
pub type DeliveryKey = (String, String);

/// How a page query is run, decided once for both engines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PagePlan {
    /// One event by hook and delivery id (the unique key).
    Exact,
    /// A small partial index covers the state (dead, pending, delivering):
    /// read it in id order, no window needed.
    StateIndex,
    /// Range of the primary key, limited to a window of `scan` ids.
    Window,
}

pub(crate) fn page_plan(q: &PageQuery) -> PagePlan {
    if q.hook_id.is_some() && q.delivery_id.is_some() {
        PagePlan::Exact
    } else if matches!(
        q.state,
        Some(EventState::Dead | EventState::Pending | EventState::Delivering)
    ) {
        PagePlan::StateIndex
    } else {
        PagePlan::Window
    }
}

/// The id range of a page query as (lower inclusive, upper exclusive,
/// lower exclusive) bounds, strings compared as ids.
pub(crate) fn page_bounds(q: &PageQuery) -> (Option<String>, Option<String>, Option<String>) {
    let since = q.since.map(crate::id::time_bound);
    let until = q.until.map(crate::id::time_bound);
    let upper = match (until, q.before.clone()) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    (since, upper, q.after.clone())
}

/// Columns written by `finish`: state, next attempt time, last error.
pub(crate) fn disposition_columns(
    d: &Disposition,
) -> (&'static str, Option<SystemTime>, Option<&str>) {
    match d {
        Disposition::Done => ("done", None, None),
        Disposition::Retry { at, error } => ("pending", Some(*at), Some(error.as_str())),
        Disposition::Dead { error } => ("dead", None, Some(error.as_str())),
    }
}

/// Add one (hook, action, state, count) row to a list of per-action counts.
pub(crate) fn add_count(
    out: &mut Vec<ActionCounts>,
    hook: String,
    action: String,
    state: &str,
    n: i64,
) {
    let i = match out
        .iter()
        .position(|c| c.hook_id == hook && c.action_id == action)
    {
        Some(i) => i,
        None => {
            out.push(ActionCounts {
                hook_id: hook,
                action_id: action,
                ..Default::default()
            });
            out.len() - 1
        }
    };
    match state {
        "pending" => out[i].pending = n,
        "delivering" => out[i].delivering = n,
        _ => out[i].dead = n,
    }
}

/// Open the store named by `cfg.url`. Does not touch the schema.
pub fn open(cfg: &StoreConfig) -> Result<Arc<dyn Store>, StoreError> {
    if let Some(path) = cfg.url.strip_prefix("sqlite:") {
        let path = path.strip_prefix("//").unwrap_or(path);
        if path.is_empty() {
            return Err(StoreError::BadUrl("sqlite: needs a path".into()));
        }
        Ok(Arc::new(sqlite::SqliteStore::open(path.into())?))
    } else if cfg.url.starts_with("postgres://") || cfg.url.starts_with("postgresql://") {
        Ok(Arc::new(postgres::PgStore::open(cfg)?))
    } else {
        Err(StoreError::BadUrl(
            "expected sqlite:///path or postgres://...".into(),
        ))
    }
}

/// Longest event type stored; longer ones are cut (at a character boundary).
pub const EVENT_TYPE_MAX: usize = 200;

/// A sender-supplied label (event type) made safe to store and to log: at
/// most `max` bytes, control characters replaced by U+FFFD (a NUL cannot be
/// stored in a `text` column, a newline would start a new journal line).
/// The raw body and headers are kept as they came; only this index field is
/// changed.
pub fn safe_label(s: &str, max: usize) -> std::borrow::Cow<'_, str> {
    if s.len() <= max && !s.chars().any(char::is_control) {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len().min(max));
    for c in s.chars() {
        let c = if c.is_control() { '\u{fffd}' } else { c };
        if out.len() + c.len_utf8() > max {
            break;
        }
        out.push(c);
    }
    std::borrow::Cow::Owned(out)
}

/// Microseconds since the Unix epoch (the embedded store's time format).
pub fn to_micros(t: SystemTime) -> i64 {
    match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => d.as_micros() as i64,
        Err(e) => -(e.duration().as_micros() as i64),
    }
}

pub fn from_micros(us: i64) -> SystemTime {
    if us >= 0 {
        SystemTime::UNIX_EPOCH + Duration::from_micros(us as u64)
    } else {
        SystemTime::UNIX_EPOCH - Duration::from_micros(us.unsigned_abs())
    }
}

/// Redact a database URL for messages: drop the password of the userinfo
/// (`user:secret@host`) and the value of a `password=` parameter
/// (`?password=secret`, which libpq and the postgres crate accept too).
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (base, query) = match rest.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (rest, None),
    };
    // The userinfo ends at the last '@' before the path.
    let authority_end = base.find('/').unwrap_or(base.len());
    let mut out = match base[..authority_end].rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{scheme}://{user}@{host}{}", &base[authority_end..])
        }
        None => format!("{scheme}://{base}"),
    };
    if let Some(q) = query {
        let params: Vec<String> = q
            .split('&')
            .map(|p| match p.split_once('=') {
                Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=redacted"),
                _ => p.to_string(),
            })
            .collect();
        out.push('?');
        out.push_str(&params.join("&"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_password() {
        assert_eq!(
            redact_url("postgres://app:s3cret@db:5432/x"),
            "postgres://app@db:5432/x"
        );
        assert_eq!(redact_url("postgres://db/x"), "postgres://db/x");
        assert_eq!(
            redact_url("postgres://app@db/x?sslmode=disable&password=s3cret&application_name=w"),
            "postgres://app@db/x?sslmode=disable&password=redacted&application_name=w"
        );
        assert_eq!(
            redact_url("postgresql://app:pw@db/x?PASSWORD=s3cret"),
            "postgresql://app@db/x?PASSWORD=redacted"
        );
        assert_eq!(redact_url("postgres://a:b@c@db/x"), "postgres://a@db/x");
    }

    #[test]
    fn labels_are_bounded_and_safe() {
        assert_eq!(safe_label("push", 200), "push");
        assert_eq!(safe_label("a\u{0}b\nc", 200), "a\u{fffd}b\u{fffd}c");
        assert_eq!(safe_label(&"x".repeat(300), 200).len(), 200);
        // Never split a character.
        assert_eq!(safe_label("ééé", 5), "éé");
    }

    #[test]
    fn micros_roundtrip() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_micros(1_700_000_000_123_456);
        assert_eq!(from_micros(to_micros(t)), t);
    }
}
