//! PostgreSQL store: the production engine, shared by several instances.
//!
//! `postgres` + `r2d2` are blocking, so this code only runs on writer threads
//! and blocking tasks. A batch is one `INSERT … SELECT FROM unnest(arrays)
//! ON CONFLICT DO NOTHING RETURNING id`: one prepared statement whatever the
//! batch size, one round trip, one commit.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, SystemTime};

use postgres::{NoTls, Statement};
use r2d2::{Pool, PooledConnection};
use r2d2_postgres::PostgresConnectionManager;

use super::deadline::{bounded, DeadlineSink};
use super::migrations::{self, POSTGRES};
use bytes::Bytes;

use crate::id::time_bound;

use super::{
    disposition_columns, Cause, Claimed, Counts, Disposition, EventState, Headers, ReplayFilter,
};
use super::{page_bounds, page_plan, AttemptRecord, Page, PagePlan, PageQuery};
use super::{redact_url, BatchSink, EventRecord, ListQuery, NewEvent, Outcome, Store, StoreError};
use super::{ActionCounts, DeliveryKey, DeliveryRecord, FanOutPick, FannedOut};
use crate::config::StoreConfig;

type Manager = PostgresConnectionManager<NoTls>;
type Conn = PooledConnection<Manager>;

/// Key of the session advisory lock that serialises migrations.
const MIGRATION_LOCK: i64 = 0x7765_6268_6f6f_6b64; // "webhookd"

/// The r2d2 pool, whose last copy drops its idle connections off any tokio
/// runtime: dropping a `postgres::Client` on a runtime thread panics
/// ("Cannot start a runtime from within a runtime"), and the store is
/// dropped at the end of `serve`, so every clean exit aborted (status 134).
struct SafePool(Option<Pool<Manager>>);

impl std::ops::Deref for SafePool {
    type Target = Pool<Manager>;
    fn deref(&self) -> &Pool<Manager> {
        self.0.as_ref().expect("pool is only taken on drop")
    }
}

impl Clone for SafePool {
    fn clone(&self) -> SafePool {
        SafePool(self.0.clone())
    }
}

impl Drop for SafePool {
    fn drop(&mut self) {
        if let Some(pool) = self.0.take() {
            if tokio::runtime::Handle::try_current().is_ok() {
                let _ = std::thread::spawn(move || drop(pool)).join();
            }
        }
    }
}

pub struct PgStore {
    inner: std::sync::Arc<PgInner>,
    config: postgres::Config,
    url: String,
    /// Bound of one batch (`store.write_timeout`).
    write_timeout: Duration,
    /// Bound of any other call: a connection, then a statement.
    op_timeout: Duration,
}

/// Settings every pooled session gets before its first use.
#[derive(Debug)]
struct SessionSetup {
    sql: String,
}

impl r2d2::CustomizeConnection<postgres::Client, postgres::Error> for SessionSetup {
    fn on_acquire(&self, c: &mut postgres::Client) -> Result<(), postgres::Error> {
        c.batch_execute(&self.sql)
    }
}

/// The session settings. `statement_timeout` frees the server side soon
/// after the client gave up on a call (lock waits included).
/// `synchronous_commit`: "2xx only once durable" must not depend on what a
/// DBA set for the server, role or database; `off` (commit before the WAL
/// flush) and `local` (do not wait for a configured synchronous standby) are
/// raised to `on`; `remote_write`, `on` and `remote_apply` already wait at
/// least for the local flush and are kept. Claims and results lower it per
/// transaction (`SET LOCAL`), where a loss only means a redelivery.
fn session_sql(statement_timeout: Duration) -> String {
    format!(
        "SET statement_timeout = {}; \
         SELECT set_config('synchronous_commit', 'on', false) \
         WHERE current_setting('synchronous_commit') IN ('off', 'local')",
        statement_timeout.as_millis().max(1)
    )
}

impl PgStore {
    pub fn open(cfg: &StoreConfig) -> Result<PgStore, StoreError> {
        let url = redact_url(&cfg.url);
        let mut config: postgres::Config = cfg
            .url
            .parse()
            .map_err(|e| StoreError::BadUrl(format!("{url}: {e}")))?;
        // A dead network path is noticed by TCP: keepalives for an idle
        // connection, tcp_user_timeout for data left unacknowledged. A frozen
        // server is not (its kernel still answers): that is what the
        // client-side deadlines of `deadline` are for.
        config
            .connect_timeout(cfg.connect_timeout)
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(10))
            .keepalives_interval(Duration::from_secs(2))
            .keepalives_retries(3)
            .tcp_user_timeout(Duration::from_secs(10))
            .application_name("webhookd");
        let manager = PostgresConnectionManager::new(config.clone(), NoTls);
        let statement_timeout = cfg.write_timeout + Duration::from_secs(1);
        // build_unchecked: starting while the database is down is allowed;
        // the store reports "unavailable" until it answers.
        let pool = Pool::builder()
            .max_size(cfg.effective_pool_size())
            .min_idle(Some(0))
            .test_on_check_out(false)
            .connection_timeout(cfg.connect_timeout)
            .connection_customizer(Box::new(SessionSetup {
                sql: session_sql(statement_timeout),
            }))
            .error_handler(Box::new(r2d2::NopErrorHandler))
            .build_unchecked(manager);
        Ok(PgStore {
            inner: std::sync::Arc::new(PgInner {
                pool: SafePool(Some(pool)),
                url: url.clone(),
            }),
            config,
            url,
            write_timeout: cfg.write_timeout,
            op_timeout: cfg.connect_timeout + statement_timeout,
        })
    }

    /// Run `f` on its own thread, waiting at most `op_timeout` (a
    /// connection from the pool, then the statement).
    fn call<T, F>(&self, what: &str, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&PgInner) -> Result<T, StoreError> + Send + 'static,
    {
        let inner = self.inner.clone();
        bounded(what, self.op_timeout, move || f(&inner))
    }
}

/// Which database this URL names (user, hosts, ports, database; never a
/// password), to recognise a spool written for another one.
pub fn identity(url: &str) -> Option<String> {
    let c: postgres::Config = url.parse().ok()?;
    let hosts: Vec<String> = c
        .get_hosts()
        .iter()
        .map(|h| match h {
            postgres::config::Host::Tcp(s) => s.clone(),
            postgres::config::Host::Unix(p) => p.display().to_string(),
        })
        .collect();
    let ports: Vec<String> = c.get_ports().iter().map(|p| p.to_string()).collect();
    Some(format!(
        "postgres://{}@{}:{}/{}",
        c.get_user().unwrap_or(""),
        hosts.join(","),
        if ports.is_empty() {
            "5432".to_string()
        } else {
            ports.join(",")
        },
        c.get_dbname().or(c.get_user()).unwrap_or("")
    ))
}

/// Classify a PostgreSQL error. Connection loss, shutdown, lack of
/// resources, a statement cancelled by its timeout and serialization
/// failures are "unavailable" (try later, or spool). Data exceptions,
/// constraint violations and size limits are about one row's data
/// ("rejected": retried alone, refused alone). The rest is a query error.
pub(crate) fn map_err(e: postgres::Error) -> StoreError {
    if e.is_closed() {
        return StoreError::Unavailable(Cause::with_source(format!("connection closed: {e}"), e));
    }
    let text = match e.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => e.to_string(),
    };
    match e.code() {
        Some(code) => {
            let c = code.code();
            if c.starts_with("08")
                || c.starts_with("57P")
                || c.starts_with("53")
                || c.starts_with("40")
                || c == "57014"
            {
                StoreError::Unavailable(Cause::with_source(text, e))
            } else if c.starts_with("22") || c.starts_with("23") || c.starts_with("54") {
                StoreError::Rejected(text)
            } else {
                StoreError::Query(Cause::with_source(text, e))
            }
        }
        // No SQLSTATE: an IO-level failure.
        None => StoreError::Unavailable(Cause::with_source(text, e)),
    }
}

/// The batch in one statement: the events, and with them the deliveries of
/// those fanned out at ingest ([`NewEvent::actions`]; `$9` marks them, `$10`
/// and `$11` pair event ids with action ids). Only rows really inserted get
/// deliveries: a duplicate's are never created. The deliveries' foreign key
/// is checked at the end of the statement, when the events are there.
const INSERT: &str = "WITH ins AS ( \
       INSERT INTO events (id, hook_id, delivery_id, event_type, received_at, headers, body, state, attempts, next_attempt_at, updated_at, fanned_out) \
       SELECT u.id, u.hook_id, u.delivery_id, u.event_type, u.received_at, u.headers, u.body, u.state, 0, u.received_at, u.received_at, u.fanned_out \
       FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::timestamptz[], $6::text[], $7::bytea[], $8::text[], $9::bool[]) \
         AS u(id, hook_id, delivery_id, event_type, received_at, headers, body, state, fanned_out) \
       ON CONFLICT (hook_id, delivery_id) DO NOTHING RETURNING id, hook_id, received_at), \
     fan AS ( \
       INSERT INTO deliveries (event_id, action_id, hook_id, state, attempts, next_attempt_at, updated_at) \
       SELECT ins.id, a.action_id, ins.hook_id, 'pending', 0, ins.received_at, ins.received_at \
       FROM ins JOIN unnest($10::text[], $11::text[]) AS a(event_id, action_id) ON a.event_id = ins.id) \
     SELECT id FROM ins";
const EXISTING: &str = "SELECT e.id, e.hook_id, e.delivery_id FROM events e \
     JOIN unnest($1::text[], $2::text[]) AS k(hook_id, delivery_id) \
       ON e.hook_id = k.hook_id AND e.delivery_id = k.delivery_id";
const COLUMNS: &str = "id, hook_id, delivery_id, event_type, received_at, state, attempts, next_attempt_at, last_error, length(body)";

struct Prepared {
    conn: Conn,
    insert: Statement,
    existing: Statement,
}

struct PgSink {
    pool: SafePool,
    url: String,
    prepared: Option<Prepared>,
}

impl PgSink {
    fn prepared(&mut self) -> Result<&mut Prepared, StoreError> {
        if self.prepared.is_none() {
            let mut conn = self
                .pool
                .get()
                .map_err(|e| StoreError::Unavailable(format!("{}: {e}", self.url).into()))?;
            let insert = conn.prepare(INSERT).map_err(map_err)?;
            let existing = conn.prepare(EXISTING).map_err(map_err)?;
            self.prepared = Some(Prepared {
                conn,
                insert,
                existing,
            });
        }
        self.prepared
            .as_mut()
            .ok_or_else(|| StoreError::Unavailable("no connection".into()))
    }

    /// Store the batch with one statement in autocommit: one round trip and
    /// one commit, atomic for the whole batch. Keys that were already
    /// stored are looked up afterwards (a fresh snapshot sees rows that a
    /// concurrent transaction committed while we waited on its conflict).
    /// `events` holds the first occurrence of each (hook, delivery) key.
    fn write_unique(
        p: &mut Prepared,
        events: &[&NewEvent],
    ) -> Result<HashMap<(String, String), Outcome>, StoreError> {
        let ids: Vec<&str> = events.iter().map(|e| e.id.as_str()).collect();
        let hooks: Vec<&str> = events.iter().map(|e| e.hook_id.as_str()).collect();
        let deliveries: Vec<&str> = events.iter().map(|e| e.delivery_id.as_str()).collect();
        let types: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
        let received: Vec<SystemTime> = events.iter().map(|e| e.received_at).collect();
        let headers: Vec<String> = events.iter().map(|e| e.headers.to_json()).collect();
        let bodies: Vec<&[u8]> = events.iter().map(|e| &e.body[..]).collect();
        let states: Vec<&str> = events.iter().map(|e| e.state.as_str()).collect();
        let fanned: Vec<bool> = events.iter().map(|e| e.actions.is_some()).collect();
        let (mut fan_events, mut fan_actions): (Vec<&str>, Vec<&str>) = (Vec::new(), Vec::new());
        for e in events {
            for a in e.actions.iter().flatten() {
                fan_events.push(e.id.as_str());
                fan_actions.push(a.as_str());
            }
        }
        let rows = p
            .conn
            .query(
                &p.insert,
                &[
                    &ids,
                    &hooks,
                    &deliveries,
                    &types,
                    &received,
                    &headers,
                    &bodies,
                    &states,
                    &fanned,
                    &fan_events,
                    &fan_actions,
                ],
            )
            .map_err(map_err)?;
        let inserted: HashSet<String> = rows
            .iter()
            .map(|r| r.try_get::<_, String>(0))
            .collect::<Result<_, _>>()
            .map_err(map_err)?;
        let mut out = HashMap::with_capacity(events.len());
        let mut missing_hooks = Vec::new();
        let mut missing_deliveries = Vec::new();
        for e in events {
            let key = (e.hook_id.clone(), e.delivery_id.clone());
            if inserted.contains(&e.id) {
                out.insert(key, Outcome::Stored(e.id.clone()));
            } else {
                missing_hooks.push(e.hook_id.as_str());
                missing_deliveries.push(e.delivery_id.as_str());
            }
        }
        if !missing_hooks.is_empty() {
            let rows = p
                .conn
                .query(&p.existing, &[&missing_hooks, &missing_deliveries])
                .map_err(map_err)?;
            for r in rows {
                let key = (
                    r.try_get::<_, String>(1).map_err(map_err)?,
                    r.try_get::<_, String>(2).map_err(map_err)?,
                );
                out.insert(key, Outcome::Duplicate(r.try_get(0).map_err(map_err)?));
            }
        }
        Ok(out)
    }
}

impl PgSink {
    /// Write `unique` as one statement; a pooled connection that died while
    /// idle (database restart) is retried once on a fresh one. Safe even if
    /// the first commit went through: the unique key turns a re-insert into
    /// "duplicate".
    fn write_all(
        &mut self,
        unique: &[&NewEvent],
    ) -> Result<HashMap<(String, String), Outcome>, StoreError> {
        for attempt in 0..2 {
            let p = self.prepared()?;
            match PgSink::write_unique(p, unique) {
                Ok(map) => return Ok(map),
                Err(e) => {
                    let closed = self
                        .prepared
                        .as_ref()
                        .map(|p| p.conn.is_closed())
                        .unwrap_or(true);
                    if closed || matches!(e, StoreError::Unavailable(_)) {
                        self.prepared = None;
                    }
                    if !(closed && attempt == 0) {
                        return Err(e);
                    }
                }
            }
        }
        Err(StoreError::Unavailable("write failed".into()))
    }
}

impl BatchSink for PgSink {
    fn write_batch(&mut self, events: &[NewEvent]) -> Result<Vec<Outcome>, StoreError> {
        // De-duplicate inside the batch first; the database handles the rest.
        let mut seen: HashSet<(&str, &str)> = HashSet::with_capacity(events.len());
        let unique: Vec<&NewEvent> = events
            .iter()
            .filter(|e| seen.insert((e.hook_id.as_str(), e.delivery_id.as_str())))
            .collect();
        let map = match self.write_all(&unique) {
            Ok(map) => map,
            // One row the database refuses fails the whole statement: write
            // the rows one by one, so only that row is refused.
            Err(StoreError::Rejected(first)) => {
                let mut map = HashMap::with_capacity(unique.len());
                for e in &unique {
                    let key = (e.hook_id.clone(), e.delivery_id.clone());
                    match self.write_all(std::slice::from_ref(e)) {
                        Ok(one) => map.extend(one),
                        Err(StoreError::Rejected(why)) => {
                            map.insert(key, Outcome::Refused(why));
                        }
                        Err(other) => return Err(other),
                    }
                }
                log::debug!(
                    "batch of {} refused ({first}); rows retried one by one",
                    unique.len()
                );
                map
            }
            Err(e) => return Err(e),
        };
        events
            .iter()
            .map(|e| {
                match map.get(&(e.hook_id.clone(), e.delivery_id.clone())) {
                    // A later copy in the same batch is a duplicate of the first.
                    Some(Outcome::Stored(id)) if *id != e.id => Ok(Outcome::Duplicate(id.clone())),
                    Some(o) => Ok(o.clone()),
                    None => Err(StoreError::Query(
                        format!("event {} was neither inserted nor found", e.id).into(),
                    )),
                }
            })
            .collect()
    }
}

fn record(r: &postgres::Row) -> Result<EventRecord, StoreError> {
    Ok(EventRecord {
        id: r.try_get(0).map_err(map_err)?,
        hook_id: r.try_get(1).map_err(map_err)?,
        delivery_id: r.try_get(2).map_err(map_err)?,
        event_type: r.try_get(3).map_err(map_err)?,
        received_at: r.try_get(4).map_err(map_err)?,
        state: EventState::from_column(r.try_get(5).map_err(map_err)?)?,
        attempts: r.try_get(6).map_err(map_err)?,
        next_attempt_at: r.try_get(7).map_err(map_err)?,
        last_error: r.try_get(8).map_err(map_err)?,
        body_len: r.try_get::<_, i32>(9).map_err(map_err)? as usize,
        headers: None,
        body: None,
    })
}

/// The calls other than ingest and migrations, run on a pooled connection.
/// [`PgStore`] runs each with a deadline (see [`deadline::bounded`]).
struct PgInner {
    pool: SafePool,
    url: String,
}

impl PgInner {
    fn conn(&self) -> Result<Conn, StoreError> {
        self.pool
            .get()
            .map_err(|e| StoreError::Unavailable(format!("{}: {e}", self.url).into()))
    }

    pub(crate) fn check_schema(&self) -> Result<(), StoreError> {
        let mut c = self.conn()?;
        let row = c
            .query_one("SELECT to_regclass('webhookd_schema') IS NOT NULL", &[])
            .map_err(map_err)?;
        if !row.try_get::<_, bool>(0).map_err(map_err)? {
            return Err(StoreError::NotMigrated);
        }
        let v: i32 = c
            .query_one("SELECT coalesce(max(version), 0) FROM webhookd_schema", &[])
            .map_err(map_err)?
            .try_get(0)
            .map_err(map_err)?;
        let known = migrations::latest(POSTGRES);
        match v {
            v if v > known => Err(StoreError::SchemaTooNew {
                found: v,
                known,
                by: applied_by(&mut c, v),
            }),
            v if v < known => Err(StoreError::NotMigrated),
            _ => Ok(()),
        }
    }

    pub(crate) fn ping(&self) -> Result<(), StoreError> {
        let mut c = self.conn()?;
        c.batch_execute("SELECT 1").map_err(map_err)
    }

    pub(crate) fn list(&self, q: &ListQuery) -> Result<Vec<EventRecord>, StoreError> {
        let mut c = self.conn()?;
        let sql = format!(
            "SELECT {COLUMNS} FROM events WHERE ($1::text IS NULL OR hook_id = $1) AND ($2::text IS NULL OR state = $2) \
             AND ($3::text IS NULL OR id >= $3) AND ($4::text IS NULL OR id < $4) \
             ORDER BY id DESC LIMIT $5"
        );
        let state = q.state.map(|s| s.as_str());
        let limit = q.limit.max(1) as i64;
        let rows = c
            .query(
                &sql,
                &[
                    &q.hook_id,
                    &state,
                    &q.since.map(time_bound),
                    &q.until.map(time_bound),
                    &limit,
                ],
            )
            .map_err(map_err)?;
        rows.iter().map(record).collect()
    }

    pub(crate) fn fan_out(
        &self,
        hook_id: &str,
        limit: usize,
        now: SystemTime,
        pick: &FanOutPick,
    ) -> Result<Vec<FannedOut>, StoreError> {
        let mut c = self.conn()?;
        let mut tx = c.transaction().map_err(map_err)?;
        // SKIP LOCKED: another instance fanning out the same hook takes
        // other events; the row lock makes each event's fan-out happen once.
        let rows = tx
            .query(
                "SELECT id, hook_id, delivery_id, event_type, received_at, headers, body FROM events \
                 WHERE hook_id = $1 AND state = 'pending' AND NOT fanned_out ORDER BY id LIMIT $2 \
                 FOR NO KEY UPDATE SKIP LOCKED",
                &[&hook_id, &(limit as i64)],
            )
            .map_err(map_err)?;
        let mut out = Vec::with_capacity(rows.len());
        let mut ev_ids: Vec<String> = Vec::new();
        let mut act_ids: Vec<String> = Vec::new();
        for r in &rows {
            let ev = Claimed {
                id: r.try_get(0).map_err(map_err)?,
                hook_id: r.try_get(1).map_err(map_err)?,
                delivery_id: r.try_get(2).map_err(map_err)?,
                event_type: r.try_get(3).map_err(map_err)?,
                received_at: r.try_get(4).map_err(map_err)?,
                headers: Headers::from_json_lossy(r.try_get(5).map_err(map_err)?),
                body: Bytes::from(r.try_get::<_, Vec<u8>>(6).map_err(map_err)?),
                attempts: 0,
                action_id: String::new(),
            };
            let actions = pick(&ev);
            for a in &actions {
                ev_ids.push(ev.id.clone());
                act_ids.push(a.clone());
            }
            out.push(FannedOut {
                event_id: ev.id,
                actions,
            });
        }
        if out.is_empty() {
            return Ok(out);
        }
        // Nothing is acknowledged here: a fan-out lost in a crash is done
        // again (the deliveries are keyed by (event, action)).
        tx.batch_execute("SET LOCAL synchronous_commit = off")
            .map_err(map_err)?;
        let ids: Vec<String> = out.iter().map(|f| f.event_id.clone()).collect();
        tx.execute(
            "UPDATE events SET fanned_out = true, updated_at = $2 WHERE id = ANY($1)",
            &[&ids, &now],
        )
        .map_err(map_err)?;
        tx.execute(
            "INSERT INTO deliveries (event_id, action_id, hook_id, state, attempts, next_attempt_at, updated_at) \
             SELECT u.e, u.a, $3, 'pending', 0, $4, $4 FROM unnest($1::text[], $2::text[]) AS u(e, a) \
             ON CONFLICT (event_id, action_id) DO NOTHING",
            &[&ev_ids, &act_ids, &hook_id, &now],
        )
        .map_err(map_err)?;
        refresh(&mut tx, &ids, now, false)?;
        tx.commit().map_err(map_err)?;
        Ok(out)
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn claim(
        &self,
        hook_id: &str,
        action_id: &str,
        limit: usize,
        worker: &str,
        now: SystemTime,
        lease_until: SystemTime,
    ) -> Result<Vec<Claimed>, StoreError> {
        let mut c = self.conn()?;
        // A lease lost in a crash only means a redelivery: no need to wait
        // for the WAL flush.
        let mut tx = c.transaction().map_err(map_err)?;
        tx.batch_execute("SET LOCAL synchronous_commit = off")
            .map_err(map_err)?;
        // SKIP LOCKED: instances sharing the database never wait on, or
        // take, each other's rows. Two index ranges: deliveries whose worker
        // died (lease expired), then due pending ones, oldest first.
        let mut out: Vec<Claimed> = Vec::new();
        for pick in [
            "SELECT event_id FROM deliveries WHERE hook_id = $4 AND action_id = $6 AND state = 'delivering' \
             AND lease_until < $3 LIMIT $5 FOR UPDATE SKIP LOCKED",
            "SELECT event_id FROM deliveries WHERE hook_id = $4 AND action_id = $6 AND state = 'pending' \
             AND next_attempt_at <= $3 ORDER BY next_attempt_at, event_id LIMIT $5 FOR UPDATE SKIP LOCKED",
        ] {
            let left = limit.saturating_sub(out.len());
            if left == 0 {
                break;
            }
            let sql = format!(
                "WITH leased AS (UPDATE deliveries d SET state = 'delivering', lease_until = $1, leased_by = $2, \
                 attempts = d.attempts + 1, updated_at = $3 FROM ({pick}) due \
                 WHERE d.event_id = due.event_id AND d.action_id = $6 RETURNING d.event_id, d.attempts) \
                 SELECT e.id, e.hook_id, e.delivery_id, e.event_type, e.received_at, e.headers, e.body, l.attempts \
                 FROM leased l JOIN events e ON e.id = l.event_id"
            );
            let rows = tx
                .query(
                    &sql,
                    &[
                        &lease_until,
                        &worker,
                        &now,
                        &hook_id,
                        &(left as i64),
                        &action_id,
                    ],
                )
                .map_err(map_err)?;
            for r in &rows {
                out.push(Claimed {
                    id: r.try_get(0).map_err(map_err)?,
                    hook_id: r.try_get(1).map_err(map_err)?,
                    delivery_id: r.try_get(2).map_err(map_err)?,
                    event_type: r.try_get(3).map_err(map_err)?,
                    received_at: r.try_get(4).map_err(map_err)?,
                    headers: Headers::from_json_lossy(r.try_get(5).map_err(map_err)?),
                    body: Bytes::from(r.try_get::<_, Vec<u8>>(6).map_err(map_err)?),
                    attempts: r.try_get(7).map_err(map_err)?,
                    action_id: action_id.to_string(),
                });
            }
        }
        let ids: Vec<String> = out.iter().map(|c| c.id.clone()).collect();
        refresh(&mut tx, &ids, now, true)?;
        tx.commit().map_err(map_err)?;
        out.sort_by(|a, b| a.received_at.cmp(&b.received_at).then(a.id.cmp(&b.id)));
        Ok(out)
    }

    /// Results, and the history of those that counted, in one transaction
    /// of a few statements whatever the batch's size (a statement per
    /// result was a round trip each, and delivery on PostgreSQL stalled at
    /// about a thousand results a second). The history goes in a savepoint:
    /// a record the database refuses costs the history only.
    pub(crate) fn finish_with_history(
        &self,
        worker: &str,
        items: &[(DeliveryKey, Disposition)],
        history: &[AttemptRecord],
        now: SystemTime,
    ) -> Result<Vec<bool>, StoreError> {
        let mut c = self.conn()?;
        let mut tx = c.transaction().map_err(map_err)?;
        // As for claims: a result lost in a crash means a redelivery.
        tx.batch_execute("SET LOCAL synchronous_commit = off")
            .map_err(map_err)?;
        let out = finish_in(&mut tx, worker, items, now)?;
        let keep = super::counted_history(history, &out);
        if !keep.is_empty() {
            let mut sp = tx.savepoint("history").map_err(map_err)?;
            match insert_attempts(&mut sp, &keep) {
                Ok(()) => sp.commit().map_err(map_err)?,
                Err(e) => {
                    super::history_lost(keep.len(), &e);
                    // Rolled back: the results stand without their history.
                    drop(sp);
                }
            }
        }
        let ids: Vec<String> = items.iter().map(|((id, _), _)| id.clone()).collect();
        refresh(&mut tx, &ids, now, true)?;
        tx.commit().map_err(map_err)?;
        Ok(out)
    }

    pub(crate) fn release(&self, worker: &str, now: SystemTime) -> Result<usize, StoreError> {
        let mut c = self.conn()?;
        let mut tx = c.transaction().map_err(map_err)?;
        let rows = tx
            .query(
                "UPDATE deliveries SET state = 'pending', lease_until = NULL, leased_by = NULL, \
                 next_attempt_at = $1, attempts = greatest(attempts - 1, 0), updated_at = $1 \
                 WHERE leased_by = $2 AND state = 'delivering' RETURNING event_id",
                &[&now, &worker],
            )
            .map_err(map_err)?;
        let ids = rows
            .iter()
            .map(|r| r.try_get::<_, String>(0).map_err(map_err))
            .collect::<Result<Vec<_>, _>>()?;
        refresh(&mut tx, &ids, now, true)?;
        tx.commit().map_err(map_err)?;
        Ok(ids.len())
    }

    pub(crate) fn replay(&self, f: &ReplayFilter, now: SystemTime) -> Result<usize, StoreError> {
        let mut c = self.conn()?;
        let mut tx = c.transaction().map_err(map_err)?;
        let state = f.state.map(|s| s.as_str());
        let rows = tx
            .query(
                "UPDATE deliveries SET state = 'pending', attempts = 0, next_attempt_at = $1, last_error = NULL, \
                 lease_until = NULL, leased_by = NULL, updated_at = $1 \
                 WHERE state <> 'delivering' AND ($2::text IS NULL OR event_id = $2) AND ($3::text IS NULL OR state = $3) \
                 AND ($4::text IS NULL OR hook_id = $4) AND ($5::text IS NULL OR event_id >= $5) \
                 AND ($6::text IS NULL OR event_id < $6) AND ($7::text IS NULL OR action_id = $7) RETURNING event_id",
                &[
                    &now,
                    &f.id,
                    &state,
                    &f.hook_id,
                    &f.since.map(time_bound),
                    &f.until.map(time_bound),
                    &f.action_id,
                ],
            )
            .map_err(map_err)?;
        let mut ids = rows
            .iter()
            .map(|r| r.try_get::<_, String>(0).map_err(map_err))
            .collect::<Result<Vec<_>, _>>()?;
        let mut n = ids.len();
        // One event with no delivery at all (no action matched, a hook
        // without an action then, or not fanned out yet): fan it out again
        // with the current config.
        if let (Some(id), None, true) = (&f.id, &f.action_id, ids.is_empty()) {
            n += tx
                .execute(
                    "UPDATE events SET state = 'pending', fanned_out = false, attempts = 0, next_attempt_at = $1, \
                     last_error = NULL, updated_at = $1 WHERE id = $2 AND state <> 'delivering' \
                     AND NOT EXISTS (SELECT 1 FROM deliveries WHERE event_id = $2)",
                    &[&now, id],
                )
                .map_err(map_err)? as usize;
        }
        ids.sort();
        ids.dedup();
        refresh(&mut tx, &ids, now, true)?;
        tx.commit().map_err(map_err)?;
        Ok(n)
    }

    pub(crate) fn deliveries(&self, event_id: &str) -> Result<Vec<DeliveryRecord>, StoreError> {
        let mut c = self.conn()?;
        let rows = c
            .query(
                "SELECT event_id, action_id, hook_id, state, attempts, next_attempt_at, last_error \
                 FROM deliveries WHERE event_id = $1 ORDER BY action_id",
                &[&event_id],
            )
            .map_err(map_err)?;
        rows.iter()
            .map(|r| {
                Ok(DeliveryRecord {
                    event_id: r.try_get(0).map_err(map_err)?,
                    action_id: r.try_get(1).map_err(map_err)?,
                    hook_id: r.try_get(2).map_err(map_err)?,
                    state: EventState::from_column(r.try_get(3).map_err(map_err)?)?,
                    attempts: r.try_get(4).map_err(map_err)?,
                    next_attempt_at: r.try_get(5).map_err(map_err)?,
                    last_error: r.try_get(6).map_err(map_err)?,
                })
            })
            .collect()
    }

    pub(crate) fn action_counts(&self) -> Result<Vec<ActionCounts>, StoreError> {
        let mut c = self.conn()?;
        let rows = c
            .query(
                "SELECT hook_id, action_id, 'pending', count(*) FROM deliveries WHERE state = 'pending' GROUP BY hook_id, action_id \
                 UNION ALL SELECT hook_id, action_id, 'delivering', count(*) FROM deliveries WHERE state = 'delivering' GROUP BY hook_id, action_id \
                 UNION ALL SELECT hook_id, action_id, 'dead', count(*) FROM deliveries WHERE state = 'dead' GROUP BY hook_id, action_id",
                &[],
            )
            .map_err(map_err)?;
        let mut out = Vec::new();
        for r in rows {
            super::add_count(
                &mut out,
                r.try_get(0).map_err(map_err)?,
                r.try_get(1).map_err(map_err)?,
                r.try_get(2).map_err(map_err)?,
                r.try_get(3).map_err(map_err)?,
            );
        }
        Ok(out)
    }

    pub(crate) fn sweep(
        &self,
        done_before: Option<SystemTime>,
        dead_before: Option<SystemTime>,
        batch: u32,
    ) -> Result<usize, StoreError> {
        let mut c = self.conn()?;
        let n = c
            .execute(
                "DELETE FROM events WHERE id IN (SELECT id FROM events WHERE \
                 ($1::text IS NOT NULL AND state IN ('done', 'stored') AND id < $1) OR \
                 ($2::text IS NOT NULL AND state = 'dead' AND id < $2) LIMIT $3 FOR UPDATE SKIP LOCKED)",
                &[
                    &done_before.map(time_bound),
                    &dead_before.map(time_bound),
                    &(batch as i64),
                ],
            )
            .map_err(map_err)?;
        Ok(n as usize)
    }

    pub(crate) fn counts(&self) -> Result<Counts, StoreError> {
        let mut c = self.conn()?;
        let rows = c
            .query(
                "SELECT 'pending', count(*) FROM events WHERE state = 'pending' \
                 UNION ALL SELECT 'delivering', count(*) FROM events WHERE state = 'delivering' \
                 UNION ALL SELECT 'dead', count(*) FROM events WHERE state = 'dead'",
                &[],
            )
            .map_err(map_err)?;
        let mut out = Counts::default();
        for r in rows {
            let n: i64 = r.try_get(1).map_err(map_err)?;
            match r.try_get::<_, &str>(0).map_err(map_err)? {
                "pending" => out.pending = n,
                "delivering" => out.delivering = n,
                _ => out.dead = n,
            }
        }
        Ok(out)
    }

    pub(crate) fn get(&self, id: &str) -> Result<Option<EventRecord>, StoreError> {
        let mut c = self.conn()?;
        let sql = format!("SELECT {COLUMNS}, headers, body FROM events WHERE id = $1");
        let row = c.query_opt(&sql, &[&id]).map_err(map_err)?;
        let Some(r) = row else { return Ok(None) };
        let mut rec = record(&r)?;
        rec.headers = Headers::from_json(r.try_get(10).map_err(map_err)?);
        rec.body = Some(r.try_get(11).map_err(map_err)?);
        Ok(Some(rec))
    }

    pub(crate) fn page(&self, q: &PageQuery) -> Result<Page, StoreError> {
        let mut c = self.conn()?;
        page(&mut c, q)
    }

    pub(crate) fn attempts(&self, event_id: &str) -> Result<Vec<AttemptRecord>, StoreError> {
        let mut c = self.conn()?;
        let rows = c
            .query(
                "SELECT event_id, attempt, started_at, duration_us, result, target_status, output, worker, error, action_id \
                 FROM attempts WHERE event_id = $1 ORDER BY started_at",
                &[&event_id],
            )
            .map_err(map_err)?;
        rows.iter()
            .map(|r| {
                Ok(AttemptRecord {
                    event_id: r.try_get(0).map_err(map_err)?,
                    attempt: r.try_get(1).map_err(map_err)?,
                    started_at: r.try_get(2).map_err(map_err)?,
                    duration_us: r.try_get(3).map_err(map_err)?,
                    result: r.try_get(4).map_err(map_err)?,
                    target_status: r.try_get(5).map_err(map_err)?,
                    output: r.try_get(6).map_err(map_err)?,
                    worker: r.try_get(7).map_err(map_err)?,
                    error: r.try_get(8).map_err(map_err)?,
                    action_id: r.try_get(9).map_err(map_err)?,
                })
            })
            .collect()
    }
}

impl Store for PgStore {
    fn kind(&self) -> &'static str {
        "postgres"
    }

    fn latest_schema(&self) -> i32 {
        migrations::latest(POSTGRES)
    }

    fn default_writers(&self) -> usize {
        2
    }

    fn remote(&self) -> bool {
        true
    }

    fn migrate(&self) -> Result<usize, StoreError> {
        // A dedicated connection: closing it releases the advisory lock even
        // if a migration fails half-way.
        let mut client = self
            .config
            .connect(NoTls)
            .map_err(|e| StoreError::Unavailable(format!("{}: {e}", self.url).into()))?;
        client
            .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
            .map_err(map_err)?;
        client
            .batch_execute(
                "CREATE TABLE IF NOT EXISTS webhookd_schema (version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())",
            )
            .map_err(map_err)?;
        let current: i32 = client
            .query_one("SELECT coalesce(max(version), 0) FROM webhookd_schema", &[])
            .map_err(map_err)?
            .try_get(0)
            .map_err(map_err)?;
        let known = migrations::latest(POSTGRES);
        if current > known {
            return Err(StoreError::SchemaTooNew {
                found: current,
                known,
                by: applied_by(&mut client, current),
            });
        }
        let mut applied = 0;
        for m in POSTGRES.iter().filter(|m| m.version > current) {
            let fail = |e: postgres::Error| StoreError::Migration {
                version: m.version,
                name: m.name,
                message: e.to_string(),
            };
            let mut tx = client.transaction().map_err(fail)?;
            tx.batch_execute(m.sql).map_err(fail)?;
            if m.version >= migrations::APPLIED_BY_SINCE {
                tx.execute(
                    "INSERT INTO webhookd_schema (version, name, applied_by) VALUES ($1, $2, $3)",
                    &[&m.version, &m.name, &crate::VERSION],
                )
            } else {
                tx.execute(
                    "INSERT INTO webhookd_schema (version, name) VALUES ($1, $2)",
                    &[&m.version, &m.name],
                )
            }
            .map_err(fail)?;
            tx.commit().map_err(fail)?;
            applied += 1;
        }
        client
            .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
            .map_err(map_err)?;
        Ok(applied)
    }

    fn check_schema(&self) -> Result<(), StoreError> {
        self.call("schema check", |i| i.check_schema())
    }

    fn fans_out_at_ingest(&self) -> bool {
        true
    }

    fn sink(&self) -> Box<dyn BatchSink> {
        let sink = PgSink {
            pool: self.inner.pool.clone(),
            url: self.inner.url.clone(),
            prepared: None,
        };
        Box::new(DeadlineSink::new(
            "store-writer".into(),
            Box::new(sink),
            self.write_timeout,
        ))
    }

    fn ping(&self) -> Result<(), StoreError> {
        self.call("ping", |i| i.ping())
    }

    fn list(&self, q: &ListQuery) -> Result<Vec<EventRecord>, StoreError> {
        let q = q.clone();
        self.call("list", move |i| i.list(&q))
    }

    fn fan_out(
        &self,
        hook_id: &str,
        limit: usize,
        now: SystemTime,
        pick: FanOutPick,
    ) -> Result<Vec<FannedOut>, StoreError> {
        let hook_id = hook_id.to_owned();
        self.call("fan-out", move |i| i.fan_out(&hook_id, limit, now, &pick))
    }

    fn claim(
        &self,
        hook_id: &str,
        action_id: &str,
        limit: usize,
        worker: &str,
        now: SystemTime,
        lease_until: SystemTime,
    ) -> Result<Vec<Claimed>, StoreError> {
        let (hook_id, action_id, worker) =
            (hook_id.to_owned(), action_id.to_owned(), worker.to_owned());
        self.call("claim", move |i| {
            i.claim(&hook_id, &action_id, limit, &worker, now, lease_until)
        })
    }

    fn deliveries(&self, event_id: &str) -> Result<Vec<DeliveryRecord>, StoreError> {
        let id = event_id.to_owned();
        self.call("deliveries", move |i| i.deliveries(&id))
    }

    fn action_counts(&self) -> Result<Vec<ActionCounts>, StoreError> {
        self.call("action counts", |i| i.action_counts())
    }

    fn finish_with_history(
        &self,
        worker: &str,
        items: &[(DeliveryKey, Disposition)],
        history: &[AttemptRecord],
        now: SystemTime,
    ) -> Result<Vec<bool>, StoreError> {
        let (worker, items, history) = (worker.to_owned(), items.to_vec(), history.to_vec());
        self.call("finish", move |i| {
            i.finish_with_history(&worker, &items, &history, now)
        })
    }

    fn release(&self, worker: &str, now: SystemTime) -> Result<usize, StoreError> {
        let worker = worker.to_owned();
        self.call("release", move |i| i.release(&worker, now))
    }

    fn replay(&self, f: &ReplayFilter, now: SystemTime) -> Result<usize, StoreError> {
        let f = f.clone();
        self.call("replay", move |i| i.replay(&f, now))
    }

    fn sweep(
        &self,
        done_before: Option<SystemTime>,
        dead_before: Option<SystemTime>,
        batch: u32,
    ) -> Result<usize, StoreError> {
        self.call("sweep", move |i| i.sweep(done_before, dead_before, batch))
    }

    fn counts(&self) -> Result<Counts, StoreError> {
        self.call("counts", |i| i.counts())
    }

    fn get(&self, id: &str) -> Result<Option<EventRecord>, StoreError> {
        let id = id.to_owned();
        self.call("get", move |i| i.get(&id))
    }

    fn page(&self, q: &PageQuery) -> Result<Page, StoreError> {
        let q = q.clone();
        self.call("page", move |i| i.page(&q))
    }

    fn attempts(&self, event_id: &str) -> Result<Vec<AttemptRecord>, StoreError> {
        let event_id = event_id.to_owned();
        self.call("attempts", move |i| i.attempts(&event_id))
    }
}

/// The results of a batch in one statement: each delivery still leased by
/// `worker` gets its disposition. `out[i]`: whether `items[i]` counted (a
/// lease lost meanwhile, or a second copy of the same key, did not).
fn finish_in(
    tx: &mut postgres::Transaction<'_>,
    worker: &str,
    items: &[(DeliveryKey, Disposition)],
    now: SystemTime,
) -> Result<Vec<bool>, StoreError> {
    if items.is_empty() {
        return Ok(Vec::new());
    }
    let mut events: Vec<&str> = Vec::with_capacity(items.len());
    let mut actions: Vec<&str> = Vec::with_capacity(items.len());
    let mut states: Vec<&str> = Vec::with_capacity(items.len());
    let mut ats: Vec<Option<SystemTime>> = Vec::with_capacity(items.len());
    let mut errors: Vec<Option<&str>> = Vec::with_capacity(items.len());
    for ((id, action), d) in items {
        let (state, at, error) = disposition_columns(d);
        events.push(id);
        actions.push(action);
        states.push(state);
        ats.push(at);
        errors.push(error);
    }
    let rows = tx
        .query(
            "UPDATE deliveries d SET state = u.state, next_attempt_at = coalesce(u.at, d.next_attempt_at), \
             last_error = u.error, lease_until = NULL, leased_by = NULL, updated_at = $7 \
             FROM (SELECT DISTINCT ON (e, a) e, a, state, at, error \
                   FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[], $5::text[]) AS v(e, a, state, at, error)) u \
             WHERE d.event_id = u.e AND d.action_id = u.a AND d.leased_by = $6 AND d.state = 'delivering' \
             RETURNING d.event_id, d.action_id",
            &[&events, &actions, &states, &ats, &errors, &worker, &now],
        )
        .map_err(map_err)?;
    let mut counted: HashSet<(String, String)> = HashSet::with_capacity(rows.len());
    for r in &rows {
        counted.insert((
            r.try_get(0).map_err(map_err)?,
            r.try_get(1).map_err(map_err)?,
        ));
    }
    // The first copy of a key takes its place in the answer.
    Ok(items.iter().map(|(key, _)| counted.remove(key)).collect())
}

/// Attempt records of events that still exist, in one statement, in event
/// order as `refresh` locks (each row key-share locks its event through the
/// foreign key).
fn insert_attempts(
    tx: &mut postgres::Transaction<'_>,
    items: &[&AttemptRecord],
) -> Result<(), StoreError> {
    if items.is_empty() {
        return Ok(());
    }
    let mut items: Vec<&AttemptRecord> = items.to_vec();
    items.sort_by(|a, b| a.event_id.cmp(&b.event_id));
    let col = |f: fn(&AttemptRecord) -> &str| items.iter().map(|a| f(a)).collect::<Vec<&str>>();
    let events = col(|a| &a.event_id);
    let results = col(|a| &a.result);
    let workers = col(|a| &a.worker);
    let actions = col(|a| &a.action_id);
    let numbers: Vec<i32> = items.iter().map(|a| a.attempt).collect();
    let started: Vec<SystemTime> = items.iter().map(|a| a.started_at).collect();
    let durations: Vec<i64> = items.iter().map(|a| a.duration_us).collect();
    let statuses: Vec<Option<i32>> = items.iter().map(|a| a.target_status).collect();
    let outputs: Vec<Option<&str>> = items.iter().map(|a| a.output.as_deref()).collect();
    let errors: Vec<Option<&str>> = items.iter().map(|a| a.error.as_deref()).collect();
    tx.execute(
        "INSERT INTO attempts (event_id, attempt, started_at, duration_us, result, target_status, output, worker, error, action_id) \
         SELECT u.event_id, u.attempt, u.started_at, u.duration_us, u.result, u.target_status, u.output, u.worker, u.error, u.action_id \
         FROM unnest($1::text[], $2::integer[], $3::timestamptz[], $4::bigint[], $5::text[], $6::integer[], \
                                $7::text[], $8::text[], $9::text[], $10::text[]) \
           WITH ORDINALITY AS u(event_id, attempt, started_at, duration_us, result, target_status, output, worker, error, action_id, n) \
         WHERE EXISTS (SELECT 1 FROM events e WHERE e.id = u.event_id) ORDER BY u.n",
        &[
            &events, &numbers, &started, &durations, &results, &statuses, &outputs, &workers, &errors, &actions,
        ],
    )
    .map_err(map_err)?;
    Ok(())
}

/// The console's list query; the same plan as the embedded store's (see
/// `sqlite::page`): an id range, filters checked within a window of at most
/// `q.scan` ids, the state as a literal so its partial index can be used.
/// Bring the summary columns of events (state, attempts, next attempt
/// time, last error) in line with their deliveries: dead if any is dead,
/// else delivering, else pending, else done (also with no delivery: no
/// action matched). Called in every transaction that changes deliveries.
/// With `lock`, the event rows are locked first, in id order (no deadlock
/// between two instances finishing deliveries of the same events), so the
/// summary is computed from a snapshot taken after the lock: one that sees
/// what a concurrent transaction on another action of the event committed.
/// The lock is `FOR NO KEY UPDATE`, not `FOR UPDATE`: the latter conflicts
/// with the key-share lock that inserting an attempt or a delivery takes
/// on its event through the foreign key, in whatever order that insert
/// goes, and two instances deadlocked on it. Each event's deliveries are
/// aggregated in a lateral subquery, an index range of the primary key: as
/// a join of the id list, the planner, with statistics that lag behind a
/// table growing by thousands of rows a second, chose a sequential scan
/// of all deliveries (10 ms a call at 30,000 rows, against 0.9 ms).
fn refresh(
    tx: &mut postgres::Transaction<'_>,
    ids: &[String],
    now: SystemTime,
    lock: bool,
) -> Result<(), StoreError> {
    if ids.is_empty() {
        return Ok(());
    }
    let mut ids = ids.to_vec();
    ids.sort();
    ids.dedup();
    if lock {
        tx.execute(
            "SELECT 1 FROM events WHERE id = ANY($1) ORDER BY id FOR NO KEY UPDATE",
            &[&ids],
        )
        .map_err(map_err)?;
    }
    tx.execute(
        "UPDATE events e SET \
         state = CASE WHEN s.dead THEN 'dead' WHEN s.delivering THEN 'delivering' WHEN s.pending THEN 'pending' ELSE 'done' END, \
         attempts = s.attempts, next_attempt_at = coalesce(s.next_at, e.next_attempt_at), last_error = s.last_error, \
         updated_at = $2 \
         FROM (SELECT ev.id, a.* FROM unnest($1::text[]) AS ev(id) CROSS JOIN LATERAL ( \
                 SELECT bool_or(d.state = 'dead') AS dead, bool_or(d.state = 'delivering') AS delivering, \
                        bool_or(d.state = 'pending') AS pending, coalesce(sum(d.attempts), 0)::integer AS attempts, \
                        min(d.next_attempt_at) FILTER (WHERE d.state = 'pending') AS next_at, \
                        (array_agg(d.last_error ORDER BY d.updated_at DESC) FILTER (WHERE d.last_error IS NOT NULL))[1] AS last_error \
                 FROM deliveries d WHERE d.event_id = ev.id) a) s \
         WHERE e.id = s.id AND e.fanned_out",
        &[&ids, &now],
    )
    .map_err(map_err)?;
    Ok(())
}

fn page(c: &mut Conn, q: &PageQuery) -> Result<Page, StoreError> {
    use postgres::types::ToSql;
    let limit = q.limit.clamp(1, 1000);
    let (lower, upper, after) = page_bounds(q);
    let mut range: Vec<(&str, String)> = Vec::new();
    if let Some(l) = lower {
        range.push(("id >=", l));
    }
    if let Some(u) = upper {
        range.push(("id <", u));
    }
    if let Some(a) = after {
        range.push(("id >", a));
    }
    let plan = page_plan(q);
    let mut window_low = None;
    if plan == PagePlan::Window {
        let scan = q.scan.max(limit) as i64;
        let mut conds = Vec::new();
        let mut vals: Vec<&(dyn ToSql + Sync)> = Vec::new();
        for (c, v) in &range {
            vals.push(v);
            conds.push(format!("{c} ${}", vals.len()));
        }
        vals.push(&scan);
        let sql = format!(
            "SELECT count(*), min(id) FROM (SELECT id FROM events WHERE {} ORDER BY id DESC LIMIT ${}) AS w",
            where_sql(conds),
            vals.len()
        );
        let row = c.query_one(&sql, &vals).map_err(map_err)?;
        let n: i64 = row.try_get(0).map_err(map_err)?;
        if n >= scan {
            window_low = row.try_get::<_, Option<String>>(1).map_err(map_err)?;
        }
    }
    let mut text: Vec<(&str, String)> = range;
    if let Some(w) = &window_low {
        text.push(("id >=", w.clone()));
    }
    if let Some(h) = &q.hook_id {
        text.push(("hook_id =", h.clone()));
    }
    if let Some(d) = &q.delivery_id {
        text.push(("delivery_id =", d.clone()));
    }
    if let Some(t) = &q.event_type {
        text.push(("event_type =", t.clone()));
    }
    let take = limit as i64 + 1;
    let mut conds = Vec::new();
    let mut vals: Vec<&(dyn ToSql + Sync)> = Vec::new();
    for (c, v) in &text {
        vals.push(v);
        conds.push(format!("{c} ${}", vals.len()));
    }
    if let Some(st) = q.state {
        conds.push(format!("state = '{}'", st.as_str()));
    }
    vals.push(&take);
    let sql = format!(
        "SELECT {COLUMNS} FROM events WHERE {} ORDER BY id DESC LIMIT ${}",
        where_sql(conds),
        vals.len()
    );
    let rows = c.query(&sql, &vals).map_err(map_err)?;
    let mut events = rows.iter().map(record).collect::<Result<Vec<_>, _>>()?;
    let more = events.len() > limit;
    events.truncate(limit);
    let next = if more {
        events.last().map(|e| e.id.clone())
    } else {
        window_low.clone()
    };
    Ok(Page {
        events,
        next,
        window_ended: !more && window_low.is_some(),
    })
}

fn where_sql(conds: Vec<String>) -> String {
    if conds.is_empty() {
        "true".into()
    } else {
        conds.join(" AND ")
    }
}

/// Who applied migration `version` (None when not recorded or unreadable).
fn applied_by(c: &mut postgres::Client, version: i32) -> Option<String> {
    c.query_opt(
        "SELECT applied_by FROM webhookd_schema WHERE version = $1",
        &[&version],
    )
    .ok()
    .flatten()
    .and_then(|r| r.try_get::<_, Option<String>>(0).ok().flatten())
}
