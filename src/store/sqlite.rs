//! The embedded store: one SQLite file in WAL mode. Every write of the
//! process goes through one connection, in turns (`WriteConn`); an ingest
//! batch is on disk (its commit, then an `fdatasync` of the WAL) before its
//! senders get their 2xx. Readers open their own connections.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use rusqlite::{params, Connection, OpenFlags, OptionalExtension, TransactionBehavior};

use super::migrations::{self, SQLITE};
use bytes::Bytes;

use crate::id::time_bound;

use super::gate::WriteGate;
use super::{disposition_columns, Claimed, Counts, Disposition, Headers, NewEvent, ReplayFilter};
use super::{from_micros, to_micros, BatchSink, EventRecord, ListQuery, Outcome, Store};
use super::{page_bounds, page_plan, AttemptRecord, Page, PagePlan, PageQuery};
use super::{ActionCounts, DeliveryKey, DeliveryRecord, FanOutPick, FannedOut};
use super::{Cause, EventState, StoreError};

pub struct SqliteStore {
    path: PathBuf,
    /// Idle connections for reads and delivery bookkeeping (the writer
    /// thread keeps its own).
    idle: Mutex<Vec<Connection>>,
    /// The connection every write of this process goes through.
    writer: Arc<WriteConn>,
    /// Events the sink stored with deliveries, for their claims.
    recent: Arc<super::recent::Recent>,
}

/// One connection for all writes of the process, ingest and delivery
/// alike, taken in turns. Several write connections gained nothing (SQLite
/// has one write lock per file) and cost a lot: each transaction of a
/// connection started with an empty page cache whenever another had
/// committed meanwhile, so a delivery transaction of a few rows read
/// hundreds of pages back and held the lock about 2 ms, as long as an
/// ingest batch.
struct WriteConn {
    path: PathBuf,
    gate: WriteGate,
    conn: Mutex<Option<Connection>>,
    /// Set once the checkpoint thread runs (with the first ingest sink); it
    /// stops when this store is dropped.
    checkpointing: std::sync::OnceLock<Arc<()>>,
    /// The write connection is in WAL mode, so its commits are made durable
    /// by [`WriteConn::sync`].
    in_wal: std::sync::atomic::AtomicBool,
}

impl WriteConn {
    /// Run `f` on the write connection in this caller's turn. Its commits
    /// do not wait for the disk (synchronous = NORMAL in WAL mode): delivery
    /// bookkeeping does not need to (a lost lease or result means a
    /// redelivery), and ingest makes its batch durable with
    /// [`WriteConn::sync`] after the turn. A connection that saw an error is
    /// reopened next time.
    fn with<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let _turn = self.gate.enter();
        let mut slot = self.conn.lock().unwrap_or_else(PoisonError::into_inner);
        let mut conn = match slot.take() {
            Some(c) => c,
            None => self.open()?,
        };
        let r = f(&mut conn);
        if r.is_ok() {
            *slot = Some(conn);
        }
        r
    }

    /// Put every commit made so far on disk: `fdatasync` of the WAL, which
    /// holds them all (header and frames), so it is what synchronous = FULL
    /// does inside the commit. Done here, outside the turn, the sync no
    /// longer holds up the other writers: the next ingest batch and the
    /// delivery transactions go on meanwhile, and one sync may cover
    /// several batches. Any descriptor of the file will do: fsync flushes
    /// the file, not the descriptor. Without WAL mode (a file system that
    /// refused it) the connection commits with FULL and there is nothing to
    /// do here.
    fn sync(&self) -> Result<(), StoreError> {
        if !self.in_wal.load(std::sync::atomic::Ordering::Acquire) {
            return Ok(());
        }
        let mut wal = self.path.clone().into_os_string();
        wal.push("-wal");
        std::fs::File::open(&wal)
            .and_then(|f| f.sync_data())
            .map_err(|e| {
                StoreError::Unavailable(Cause::with_source(
                    format!(
                        "cannot make the batch durable: fdatasync {}: {e}",
                        PathBuf::from(&wal).display()
                    ),
                    e,
                ))
            })
    }

    fn open(&self) -> Result<Connection, StoreError> {
        let conn = connect(&self.path, false, self.checkpointing.get().is_some())?;
        // Pages stay in memory (16 MB instead of SQLite's 2 MB), so index
        // pages are not read back for every batch.
        conn.execute_batch("PRAGMA cache_size = -16384;")
            .map_err(map_err)?;
        let mode: String = conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .map_err(map_err)?;
        let in_wal = mode.eq_ignore_ascii_case("wal");
        conn.execute_batch(if in_wal {
            "PRAGMA synchronous = NORMAL;"
        } else {
            "PRAGMA synchronous = FULL;"
        })
        .map_err(map_err)?;
        self.in_wal
            .store(in_wal, std::sync::atomic::Ordering::Release);
        conn.set_prepared_statement_cache_capacity(64);
        Ok(conn)
    }
}

/// Open the file with the settings every connection has; with
/// `manual_checkpoints`, automatic checkpoints are off (checkpoint.rs).
fn connect(path: &Path, create: bool, manual_checkpoints: bool) -> Result<Connection, StoreError> {
    let mut flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX
        | OpenFlags::SQLITE_OPEN_URI;
    if create {
        flags |= OpenFlags::SQLITE_OPEN_CREATE;
    }
    let conn = Connection::open_with_flags(path, flags).map_err(|e| {
        StoreError::Unavailable(format!("cannot open {}: {e}", path.display()).into())
    })?;
    conn.busy_timeout(Duration::from_secs(5)).map_err(map_err)?;
    // A WAL that grew while a long read kept it from starting over (an
    // export, say) is cut back to 64 MB when it does.
    conn.execute_batch(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON; \
         PRAGMA journal_size_limit = 67108864;",
    )
    .map_err(map_err)?;
    if manual_checkpoints {
        conn.execute_batch("PRAGMA wal_autocheckpoint = 0;")
            .map_err(map_err)?;
    }
    Ok(conn)
}

impl SqliteStore {
    pub fn open(path: PathBuf) -> Result<SqliteStore, StoreError> {
        if let Some(dir) = path.parent() {
            if !dir.as_os_str().is_empty() && !dir.is_dir() {
                return Err(StoreError::Unavailable(
                    format!(
                        "directory {} for the embedded store does not exist",
                        dir.display()
                    )
                    .into(),
                ));
            }
        }
        Ok(SqliteStore {
            path: path.clone(),
            idle: Mutex::new(Vec::new()),
            writer: Arc::new(WriteConn {
                path,
                gate: WriteGate::default(),
                conn: Mutex::new(None),
                checkpointing: std::sync::OnceLock::new(),
                in_wal: std::sync::atomic::AtomicBool::new(false),
            }),
            recent: Arc::new(super::recent::Recent::new(super::recent::KEEP_BYTES)),
        })
    }

    /// Run `f` on a pooled connection, for reads; a connection that saw an
    /// error is dropped rather than reused.
    fn with_conn<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let pooled = self.idle.lock().ok().and_then(|mut v| v.pop());
        let mut conn = match pooled {
            Some(c) => c,
            None => self.connect(false)?,
        };
        let r = f(&mut conn);
        if r.is_ok() {
            if let Ok(mut v) = self.idle.lock() {
                if v.len() < 4 {
                    v.push(conn);
                }
            }
        }
        r
    }

    /// Delivery bookkeeping on the write connection, in its turn.
    fn with_write<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.writer.with(f)
    }

    fn connect(&self, create: bool) -> Result<Connection, StoreError> {
        connect(
            &self.path,
            create,
            self.writer.checkpointing.get().is_some(),
        )
    }

    /// Who applied migration `version` (None when not recorded).
    fn applied_by(conn: &Connection, version: i32) -> Option<String> {
        conn.query_row(
            "SELECT applied_by FROM webhookd_schema WHERE version = ?1",
            [version],
            |r| r.get::<_, Option<String>>(0),
        )
        .ok()
        .flatten()
    }

    fn schema_version(conn: &Connection) -> Result<Option<i32>, StoreError> {
        let exists: bool = conn
            .query_row(
                "SELECT count(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = 'webhookd_schema'",
                [],
                |r| r.get(0),
            )
            .map_err(map_err)?;
        if !exists {
            return Ok(None);
        }
        conn.query_row("SELECT max(version) FROM webhookd_schema", [], |r| {
            r.get::<_, Option<i32>>(0)
        })
        .map_err(map_err)
    }
}

/// Disk and locking problems are "unavailable" (answer 503, retry later);
/// everything else is a query error.
fn map_err(e: rusqlite::Error) -> StoreError {
    use rusqlite::ErrorCode::*;
    match e.sqlite_error_code() {
        Some(
            DatabaseBusy
            | DatabaseLocked
            | CannotOpen
            | DiskFull
            | ReadOnly
            | SystemIoFailure
            | OutOfMemory
            | FileLockingProtocolFailed
            | PermissionDenied,
        ) => StoreError::Unavailable(Cause::with_source(e.to_string(), e)),
        _ => StoreError::Query(Cause::with_source(e.to_string(), e)),
    }
}

/// Headers and body go to `event_bodies` (migration 6): the events row stays
/// small, so the many updates of its state do not rewrite the body.
const INSERT: super::embedded::InsertSql = super::embedded::InsertSql {
    event: "INSERT INTO events (id, hook_id, delivery_id, event_type, received_at, body_len, state, attempts, next_attempt_at, updated_at) \
            VALUES (?1, ?2, ?3, ?4, ?5, length(?7), ?8, 0, ?5, ?5) ON CONFLICT (hook_id, delivery_id) DO NOTHING",
    body: Some("INSERT INTO event_bodies (event_id, headers, body) VALUES (?1, ?2, ?3)"),
    existing: "SELECT id FROM events WHERE hook_id = ?1 AND delivery_id = ?2",
    // The summary of an event with pending deliveries due now is what
    // `refresh` would make of it: pending, no attempt, due at receipt.
    fan_out: Some((
        "INSERT INTO events (id, hook_id, delivery_id, event_type, received_at, body_len, state, attempts, next_attempt_at, updated_at, fanned_out) \
         VALUES (?1, ?2, ?3, ?4, ?5, length(?7), ?8, 0, ?5, ?5, 1) ON CONFLICT (hook_id, delivery_id) DO NOTHING",
        "INSERT INTO deliveries (event_id, action_id, hook_id, state, attempts, next_attempt_at, updated_at) \
         VALUES (?1, ?2, ?3, 'pending', 0, ?4, ?4)",
    )),
};
const COLUMNS: &str = "id, hook_id, delivery_id, event_type, received_at, state, attempts, next_attempt_at, last_error, body_len";

/// The ingest writer's sink: batches on the shared write connection, each
/// commit durable before it returns.
struct SqliteSink {
    writer: Arc<WriteConn>,
    recent: Arc<super::recent::Recent>,
}

impl BatchSink for SqliteSink {
    fn write_batch(&mut self, events: &[NewEvent]) -> Result<Vec<Outcome>, StoreError> {
        let out = self.writer.with(|conn| {
            super::embedded::insert_batch(conn, &INSERT, events, Outcome::Stored).map_err(map_err)
        })?;
        // On disk before anyone is answered. If this fails the batch may
        // or may not survive a power cut: the senders get 503 and retry, and
        // a retry of an event that did survive is a duplicate (200).
        self.writer.sync()?;
        self.recent.keep(events, &out);
        Ok(out)
    }
}

/// An event read for delivery: columns id, hook_id, delivery_id,
/// event_type, received_at, headers, body (the SELECTs of `fan_out` and
/// `claim`).
fn claimed(r: &rusqlite::Row<'_>, attempts: i32, action_id: String) -> rusqlite::Result<Claimed> {
    Ok(Claimed {
        id: r.get(0)?,
        hook_id: r.get(1)?,
        delivery_id: r.get(2)?,
        event_type: r.get(3)?,
        received_at: from_micros(r.get(4)?),
        headers: Headers::from_json_lossy(&r.get::<_, String>(5)?),
        body: Bytes::from(r.get::<_, Vec<u8>>(6)?),
        attempts,
        action_id,
    })
}

fn record(r: &rusqlite::Row<'_>) -> rusqlite::Result<EventRecord> {
    Ok(EventRecord {
        id: r.get(0)?,
        hook_id: r.get(1)?,
        delivery_id: r.get(2)?,
        event_type: r.get(3)?,
        received_at: from_micros(r.get(4)?),
        state: EventState::parse(&r.get::<_, String>(5)?).ok_or_else(|| {
            rusqlite::Error::FromSqlConversionFailure(
                5,
                rusqlite::types::Type::Text,
                "unknown event state".into(),
            )
        })?,
        attempts: r.get(6)?,
        next_attempt_at: from_micros(r.get(7)?),
        last_error: r.get(8)?,
        body_len: r.get::<_, i64>(9)? as usize,
        headers: None,
        body: None,
    })
}

impl Store for SqliteStore {
    fn kind(&self) -> &'static str {
        "sqlite"
    }

    fn latest_schema(&self) -> i32 {
        migrations::latest(SQLITE)
    }

    /// Two writers: SQLite has a single write lock, but a batch's sync is
    /// outside it (`WriteConn::sync`), so one writer inserts while the
    /// other waits for the disk.
    fn default_writers(&self) -> usize {
        2
    }

    fn migrate(&self) -> Result<usize, StoreError> {
        let mut conn = self.connect(true)?;
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Exclusive)
            .map_err(map_err)?;
        tx.execute_batch(
            "CREATE TABLE IF NOT EXISTS webhookd_schema (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at INTEGER NOT NULL)",
        )
        .map_err(map_err)?;
        let current = SqliteStore::schema_version(&tx)?.unwrap_or(0);
        let known = migrations::latest(SQLITE);
        if current > known {
            return Err(StoreError::SchemaTooNew {
                found: current,
                known,
                by: SqliteStore::applied_by(&tx, current),
            });
        }
        let mut applied = 0;
        for m in SQLITE.iter().filter(|m| m.version > current) {
            tx.execute_batch(m.sql).map_err(|e| StoreError::Migration {
                version: m.version,
                name: m.name,
                message: e.to_string(),
            })?;
            if m.version >= migrations::APPLIED_BY_SINCE {
                tx.execute(
                    "INSERT INTO webhookd_schema (version, name, applied_at, applied_by) VALUES (?1, ?2, ?3, ?4)",
                    params![m.version, m.name, to_micros(SystemTime::now()), crate::VERSION],
                )
            } else {
                tx.execute(
                    "INSERT INTO webhookd_schema (version, name, applied_at) VALUES (?1, ?2, ?3)",
                    params![m.version, m.name, to_micros(SystemTime::now())],
                )
            }
            .map_err(map_err)?;
            applied += 1;
        }
        tx.commit().map_err(map_err)?;
        Ok(applied)
    }

    fn check_schema(&self) -> Result<(), StoreError> {
        if !self.path.exists() {
            return Err(StoreError::NotMigrated);
        }
        let conn = self.connect(false)?;
        let known = migrations::latest(SQLITE);
        match SqliteStore::schema_version(&conn)? {
            None => Err(StoreError::NotMigrated),
            Some(v) if v < known => Err(StoreError::NotMigrated),
            Some(v) if v > known => Err(StoreError::SchemaTooNew {
                found: v,
                known,
                by: SqliteStore::applied_by(&conn, v),
            }),
            Some(_) => Ok(()),
        }
    }

    fn fans_out_at_ingest(&self) -> bool {
        true
    }

    /// The daemon's ingest sink; it also starts the checkpoint thread, and
    /// from then on this store's connections leave checkpoints to it.
    fn sink(&self) -> Box<dyn BatchSink> {
        let mut started = false;
        let alive = self.writer.checkpointing.get_or_init(|| {
            started = true;
            Arc::new(())
        });
        if started {
            let writer = Arc::downgrade(&self.writer);
            super::checkpoint::spawn(self.path.clone(), Arc::downgrade(alive), move || {
                let Some(w) = writer.upgrade() else {
                    return Ok(());
                };
                w.with(|c| super::checkpoint::pass(c).map(drop).map_err(map_err))
                    .map_err(|e| e.to_string())
            });
            // Connections opened before keep their automatic checkpoint:
            // drop them.
            if let Ok(mut idle) = self.idle.lock() {
                idle.clear();
            }
            if let Ok(mut w) = self.writer.conn.lock() {
                *w = None;
            }
        }
        Box::new(SqliteSink {
            writer: self.writer.clone(),
            recent: self.recent.clone(),
        })
    }

    fn ping(&self) -> Result<(), StoreError> {
        let conn = self.connect(false)?;
        conn.query_row("SELECT 1", [], |_| Ok(())).map_err(map_err)
    }

    fn list(&self, q: &ListQuery) -> Result<Vec<EventRecord>, StoreError> {
        self.with_conn(|conn| {
            let sql = format!(
                "SELECT {COLUMNS} FROM events WHERE (?1 IS NULL OR hook_id = ?1) AND (?2 IS NULL OR state = ?2) \
                 AND (?3 IS NULL OR id >= ?3) AND (?4 IS NULL OR id < ?4) \
                 ORDER BY id DESC LIMIT ?5"
            );
            let mut st = conn.prepare(&sql).map_err(map_err)?;
            let rows = st
                .query_map(
                    params![
                        q.hook_id,
                        q.state.map(|s| s.as_str()),
                        q.since.map(time_bound),
                        q.until.map(time_bound),
                        q.limit.max(1) as i64
                    ],
                    record,
                )
                .map_err(map_err)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(map_err)
        })
    }

    fn get(&self, id: &str) -> Result<Option<EventRecord>, StoreError> {
        self.with_conn(|conn| {
            let sql = format!(
                "SELECT {COLUMNS}, b.headers, b.body FROM events JOIN event_bodies b ON b.event_id = id WHERE id = ?1"
            );
            conn.query_row(&sql, params![id], |r| {
                let mut rec = record(r)?;
                rec.headers = Headers::from_json(&r.get::<_, String>(10)?);
                rec.body = Some(r.get(11)?);
                Ok(rec)
            })
            .optional()
            .map_err(map_err)
        })
    }

    fn fan_out(
        &self,
        hook_id: &str,
        limit: usize,
        now: SystemTime,
        pick: FanOutPick,
    ) -> Result<Vec<FannedOut>, StoreError> {
        let due = self.with_conn(|conn| {
            // Read first, without the write lock: on most passes there is
            // nothing to fan out, and the ingest writer needs that lock.
            let due = {
                let mut st = conn
                    .prepare_cached(
                        "SELECT id, hook_id, delivery_id, event_type, received_at, b.headers, b.body FROM events \
                         JOIN event_bodies b ON b.event_id = id \
                         WHERE hook_id = ?1 AND state = 'pending' AND fanned_out = 0 ORDER BY id LIMIT ?2",
                    )
                    .map_err(map_err)?;
                let rows = st
                    .query_map(params![hook_id, limit as i64], |r| {
                        claimed(r, 0, String::new())
                    })
                    .map_err(map_err)?;
                rows.collect::<Result<Vec<_>, _>>().map_err(map_err)?
            };
            Ok(due)
        })?;
        if due.is_empty() {
            return Ok(Vec::new());
        }
        self.with_write(|conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(map_err)?;
            let mut out = Vec::with_capacity(due.len());
            {
                // `fanned_out = 0` again under the write lock: an event
                // fanned out meanwhile (replayed, or by another process on
                // the same file) is skipped.
                let mut mark = tx
                    .prepare_cached(
                        "UPDATE events SET fanned_out = 1, updated_at = ?2 \
                         WHERE id = ?1 AND state = 'pending' AND fanned_out = 0",
                    )
                    .map_err(map_err)?;
                let mut insert = tx
                    .prepare_cached(
                        "INSERT INTO deliveries (event_id, action_id, hook_id, state, attempts, next_attempt_at, updated_at) \
                         VALUES (?1, ?2, ?3, 'pending', 0, ?4, ?4) ON CONFLICT (event_id, action_id) DO NOTHING",
                    )
                    .map_err(map_err)?;
                for ev in &due {
                    if mark.execute(params![ev.id, to_micros(now)]).map_err(map_err)? != 1 {
                        continue;
                    }
                    let actions = pick(ev);
                    for a in &actions {
                        insert
                            .execute(params![ev.id, a, ev.hook_id, to_micros(now)])
                            .map_err(map_err)?;
                    }
                    out.push(FannedOut {
                        event_id: ev.id.clone(),
                        actions,
                    });
                }
            }
            let ids: Vec<&str> = out.iter().map(|f| f.event_id.as_str()).collect();
            refresh(&tx, &ids, now)?;
            tx.commit().map_err(map_err)?;
            Ok(out)
        })
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
        let leased = self.with_write(|conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(map_err)?;
            // Two statements, each an index range: deliveries whose worker
            // died (lease expired), then pending ones that are due, oldest
            // first.
            let mut leased: Vec<(String, i32)> = Vec::new();
            for pick in [
                "SELECT event_id FROM deliveries WHERE hook_id = ?4 AND action_id = ?6 AND state = 'delivering' \
                 AND lease_until < ?3 LIMIT ?5",
                "SELECT event_id FROM deliveries WHERE hook_id = ?4 AND action_id = ?6 AND state = 'pending' \
                 AND next_attempt_at <= ?3 ORDER BY next_attempt_at, event_id LIMIT ?5",
            ] {
                let left = limit.saturating_sub(leased.len());
                if left == 0 {
                    break;
                }
                let sql = format!(
                    "UPDATE deliveries SET state = 'delivering', lease_until = ?1, leased_by = ?2, \
                     attempts = attempts + 1, updated_at = ?3 WHERE action_id = ?6 AND event_id IN ({pick}) \
                     RETURNING event_id, attempts"
                );
                let mut st = tx.prepare_cached(&sql).map_err(map_err)?;
                let rows = st
                    .query_map(
                        params![
                            to_micros(lease_until),
                            worker,
                            to_micros(now),
                            hook_id,
                            left as i64,
                            action_id
                        ],
                        |r| Ok((r.get(0)?, r.get(1)?)),
                    )
                    .map_err(map_err)?;
                for row in rows {
                    leased.push(row.map_err(map_err)?);
                }
            }
            let ids: Vec<&str> = leased.iter().map(|(id, _)| id.as_str()).collect();
            refresh(&tx, &ids, now)?;
            tx.commit().map_err(map_err)?;
            Ok(leased)
        })?;
        if leased.is_empty() {
            return Ok(Vec::new());
        }
        // Events this process just stored come from memory (recent.rs);
        // the others are read after the commit, on a reading connection:
        // they never change, and the write turn is the pipeline's narrow
        // part (ingest waits for it).
        let mut out = Vec::with_capacity(leased.len());
        let mut unread = Vec::new();
        for (id, attempts) in leased {
            match self.recent.take(&id, attempts, action_id) {
                Some(ev) => out.push(ev),
                None => unread.push((id, attempts)),
            }
        }
        if !unread.is_empty() {
            self.with_conn(|conn| {
                let mut st = conn
                    .prepare_cached(
                        "SELECT id, hook_id, delivery_id, event_type, received_at, b.headers, b.body FROM events \
                         JOIN event_bodies b ON b.event_id = id WHERE id = ?1",
                    )
                    .map_err(map_err)?;
                for (id, attempts) in &unread {
                    let ev = st
                        .query_row(params![id], |r| {
                            claimed(r, *attempts, action_id.to_string())
                        })
                        .optional()
                        .map_err(map_err)?;
                    // Gone meanwhile (deleted by hand): nothing to deliver; the
                    // lease runs out on a row that no longer has an event.
                    if let Some(ev) = ev {
                        out.push(ev);
                    }
                }
                Ok(())
            })?;
        }
        out.sort_by(|a, b| a.received_at.cmp(&b.received_at).then(a.id.cmp(&b.id)));
        Ok(out)
    }

    /// Results and their history in one transaction: one turn at the write
    /// lock and one commit instead of two. The history goes in a savepoint,
    /// so a record the file refuses costs the history only.
    fn finish_with_history(
        &self,
        worker: &str,
        items: &[(DeliveryKey, Disposition)],
        history: &[AttemptRecord],
        now: SystemTime,
    ) -> Result<Vec<bool>, StoreError> {
        self.with_write(|conn| {
            let mut tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(map_err)?;
            let out = finish_in(&tx, worker, items, now)?;
            let keep = super::counted_history(history, &out);
            let sp = tx.savepoint().map_err(map_err)?;
            match insert_attempts(&sp, &keep) {
                Ok(()) => sp.commit().map_err(map_err)?,
                Err(e) => {
                    super::history_lost(keep.len(), &e);
                    // Rolled back: the results stand without their history.
                    drop(sp);
                }
            }
            tx.commit().map_err(map_err)?;
            Ok(out)
        })
    }

    fn release(&self, worker: &str, now: SystemTime) -> Result<usize, StoreError> {
        self.with_write(|conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(map_err)?;
            let ids = {
                let mut st = tx
                    .prepare(
                        "UPDATE deliveries SET state = 'pending', lease_until = NULL, leased_by = NULL, \
                         next_attempt_at = ?1, attempts = max(attempts - 1, 0), updated_at = ?1 \
                         WHERE leased_by = ?2 AND state = 'delivering' RETURNING event_id",
                    )
                    .map_err(map_err)?;
                let rows = st
                    .query_map(params![to_micros(now), worker], |r| r.get::<_, String>(0))
                    .map_err(map_err)?;
                rows.collect::<Result<Vec<_>, _>>().map_err(map_err)?
            };
            let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
            refresh(&tx, &refs, now)?;
            tx.commit().map_err(map_err)?;
            Ok(ids.len())
        })
    }

    fn replay(&self, f: &ReplayFilter, now: SystemTime) -> Result<usize, StoreError> {
        self.with_write(|conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(map_err)?;
            let mut ids = {
                let mut st = tx
                    .prepare(
                        "UPDATE deliveries SET state = 'pending', attempts = 0, next_attempt_at = ?1, last_error = NULL, \
                         lease_until = NULL, leased_by = NULL, updated_at = ?1 \
                         WHERE state <> 'delivering' AND (?2 IS NULL OR event_id = ?2) AND (?3 IS NULL OR state = ?3) \
                         AND (?4 IS NULL OR hook_id = ?4) AND (?5 IS NULL OR event_id >= ?5) AND (?6 IS NULL OR event_id < ?6) \
                         AND (?7 IS NULL OR action_id = ?7) RETURNING event_id",
                    )
                    .map_err(map_err)?;
                let rows = st
                    .query_map(
                        params![
                            to_micros(now),
                            f.id,
                            f.state.map(|s| s.as_str()),
                            f.hook_id,
                            f.since.map(time_bound),
                            f.until.map(time_bound),
                            f.action_id
                        ],
                        |r| r.get::<_, String>(0),
                    )
                    .map_err(map_err)?;
                rows.collect::<Result<Vec<_>, _>>().map_err(map_err)?
            };
            let mut n = ids.len();
            // One event with no delivery at all (no action matched, a hook
            // without an action then, or not fanned out yet): fan it out
            // again with the current config.
            if let (Some(id), None) = (&f.id, &f.action_id) {
                if ids.is_empty() {
                    n += tx
                        .execute(
                            "UPDATE events SET state = 'pending', fanned_out = 0, attempts = 0, next_attempt_at = ?1, \
                             last_error = NULL, updated_at = ?1 WHERE id = ?2 AND state <> 'delivering' \
                             AND NOT EXISTS (SELECT 1 FROM deliveries WHERE event_id = ?2)",
                            params![to_micros(now), id],
                        )
                        .map_err(map_err)?;
                }
            }
            ids.sort();
            ids.dedup();
            let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
            refresh(&tx, &refs, now)?;
            tx.commit().map_err(map_err)?;
            Ok(n)
        })
    }

    fn sweep(
        &self,
        done_before: Option<SystemTime>,
        dead_before: Option<SystemTime>,
        batch: u32,
    ) -> Result<usize, StoreError> {
        self.with_write(|conn| {
            conn.execute(
                "DELETE FROM events WHERE id IN (SELECT id FROM events WHERE \
                 (?1 IS NOT NULL AND state IN ('done', 'stored') AND received_at < ?1) OR \
                 (?2 IS NOT NULL AND state = 'dead' AND received_at < ?2) LIMIT ?3)",
                params![
                    done_before.map(to_micros),
                    dead_before.map(to_micros),
                    batch
                ],
            )
            .map_err(map_err)
        })
    }

    fn counts(&self) -> Result<Counts, StoreError> {
        self.with_conn(|conn| {
            let mut c = Counts::default();
            let mut st = conn
                .prepare_cached(
                    "SELECT 'pending', count(*) FROM events WHERE state = 'pending' \
                     UNION ALL SELECT 'delivering', count(*) FROM events WHERE state = 'delivering' \
                     UNION ALL SELECT 'dead', count(*) FROM events WHERE state = 'dead'",
                )
                .map_err(map_err)?;
            let rows = st
                .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
                .map_err(map_err)?;
            for row in rows {
                let (state, n) = row.map_err(map_err)?;
                match state.as_str() {
                    "pending" => c.pending = n,
                    "delivering" => c.delivering = n,
                    _ => c.dead = n,
                }
            }
            Ok(c)
        })
    }

    fn page(&self, q: &PageQuery) -> Result<Page, StoreError> {
        self.with_conn(|conn| page(conn, q))
    }

    fn attempts(&self, event_id: &str) -> Result<Vec<AttemptRecord>, StoreError> {
        self.with_conn(|conn| {
            let mut st = conn
                .prepare_cached(
                    "SELECT event_id, attempt, started_at, duration_us, result, target_status, output, worker, error, action_id \
                     FROM attempts WHERE event_id = ?1 ORDER BY started_at, rowid",
                )
                .map_err(map_err)?;
            let rows = st
                .query_map(params![event_id], |r| {
                    Ok(AttemptRecord {
                        event_id: r.get(0)?,
                        attempt: r.get(1)?,
                        started_at: from_micros(r.get(2)?),
                        duration_us: r.get(3)?,
                        result: r.get(4)?,
                        target_status: r.get(5)?,
                        output: r.get(6)?,
                        worker: r.get(7)?,
                        error: r.get(8)?,
                        action_id: r.get(9)?,
                    })
                })
                .map_err(map_err)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(map_err)
        })
    }

    fn deliveries(&self, event_id: &str) -> Result<Vec<DeliveryRecord>, StoreError> {
        self.with_conn(|conn| {
            let mut st = conn
                .prepare_cached(
                    "SELECT event_id, action_id, hook_id, state, attempts, next_attempt_at, last_error \
                     FROM deliveries WHERE event_id = ?1 ORDER BY action_id",
                )
                .map_err(map_err)?;
            let rows = st
                .query_map(params![event_id], |r| {
                    Ok((
                        DeliveryRecord {
                            event_id: r.get(0)?,
                            action_id: r.get(1)?,
                            hook_id: r.get(2)?,
                            state: EventState::Pending,
                            attempts: r.get(4)?,
                            next_attempt_at: from_micros(r.get(5)?),
                            last_error: r.get(6)?,
                        },
                        r.get::<_, String>(3)?,
                    ))
                })
                .map_err(map_err)?;
            let mut out = Vec::new();
            for row in rows {
                let (mut d, state) = row.map_err(map_err)?;
                d.state = EventState::from_column(&state)?;
                out.push(d);
            }
            Ok(out)
        })
    }

    fn action_counts(&self) -> Result<Vec<ActionCounts>, StoreError> {
        self.with_conn(|conn| {
            let mut st = conn
                .prepare_cached(
                    "SELECT hook_id, action_id, 'pending', count(*) FROM deliveries WHERE state = 'pending' GROUP BY hook_id, action_id \
                     UNION ALL SELECT hook_id, action_id, 'delivering', count(*) FROM deliveries WHERE state = 'delivering' GROUP BY hook_id, action_id \
                     UNION ALL SELECT hook_id, action_id, 'dead', count(*) FROM deliveries WHERE state = 'dead' GROUP BY hook_id, action_id",
                )
                .map_err(map_err)?;
            let rows = st
                .query_map([], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, i64>(3)?,
                    ))
                })
                .map_err(map_err)?;
            let mut out: Vec<ActionCounts> = Vec::new();
            for row in rows {
                let (hook, action, state, n) = row.map_err(map_err)?;
                super::add_count(&mut out, hook, action, &state, n);
            }
            Ok(out)
        })
    }
}

/// Bring the summary columns of events (state, attempts, next attempt
/// time, last error) in line with their deliveries: dead if any is dead,
/// else delivering, else pending, else done (also with no delivery: no
/// action matched). Called in every transaction that changes deliveries.
/// Record the ends of attempts, in the caller's transaction.
fn finish_in(
    tx: &Connection,
    worker: &str,
    items: &[(DeliveryKey, Disposition)],
    now: SystemTime,
) -> Result<Vec<bool>, StoreError> {
    let mut out = Vec::with_capacity(items.len());
    {
        let mut st = tx
            .prepare_cached(
                "UPDATE deliveries SET state = ?1, next_attempt_at = coalesce(?2, next_attempt_at), last_error = ?3, \
                 lease_until = NULL, leased_by = NULL, updated_at = ?4 \
                 WHERE event_id = ?5 AND action_id = ?7 AND leased_by = ?6 AND state = 'delivering'",
            )
            .map_err(map_err)?;
        for ((id, action), d) in items {
            let (state, at, error) = disposition_columns(d);
            let n = st
                .execute(params![
                    state,
                    at.map(to_micros),
                    error,
                    to_micros(now),
                    id,
                    worker,
                    action
                ])
                .map_err(map_err)?;
            out.push(n == 1);
        }
    }
    let ids: Vec<&str> = items.iter().map(|((id, _), _)| id.as_str()).collect();
    refresh(tx, &ids, now)?;
    Ok(out)
}

/// Keep attempt records (of events that still exist), in the caller's
/// transaction.
fn insert_attempts(tx: &Connection, items: &[&AttemptRecord]) -> Result<(), StoreError> {
    let mut st = tx
        .prepare_cached(
            "INSERT INTO attempts (event_id, attempt, started_at, duration_us, result, target_status, output, worker, error, action_id) \
             SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10 WHERE EXISTS (SELECT 1 FROM events WHERE id = ?1)",
        )
        .map_err(map_err)?;
    for a in items {
        st.execute(params![
            a.event_id,
            a.attempt,
            to_micros(a.started_at),
            a.duration_us,
            a.result,
            a.target_status,
            a.output,
            a.worker,
            a.error,
            a.action_id
        ])
        .map_err(map_err)?;
    }
    Ok(())
}

fn refresh(tx: &Connection, ids: &[&str], now: SystemTime) -> Result<(), StoreError> {
    if ids.is_empty() {
        return Ok(());
    }
    let mut st = tx
        .prepare_cached(
            "UPDATE events SET \
             state = (SELECT CASE WHEN max(d.state = 'dead') THEN 'dead' WHEN max(d.state = 'delivering') THEN 'delivering' \
                      WHEN max(d.state = 'pending') THEN 'pending' ELSE 'done' END FROM deliveries d WHERE d.event_id = events.id), \
             attempts = (SELECT coalesce(sum(d.attempts), 0) FROM deliveries d WHERE d.event_id = events.id), \
             next_attempt_at = coalesce((SELECT min(d.next_attempt_at) FROM deliveries d WHERE d.event_id = events.id \
                                         AND d.state = 'pending'), next_attempt_at), \
             last_error = (SELECT d.last_error FROM deliveries d WHERE d.event_id = events.id AND d.last_error IS NOT NULL \
                           ORDER BY d.updated_at DESC LIMIT 1), \
             updated_at = ?2 \
             WHERE id = ?1 AND fanned_out = 1",
        )
        .map_err(map_err)?;
    let mut last = None;
    for id in ids {
        if last == Some(*id) {
            continue;
        }
        st.execute(params![id, to_micros(now)]).map_err(map_err)?;
        last = Some(*id);
    }
    Ok(())
}

/// The console's list query. The id range comes first (the primary key);
/// filters are checked row by row within a window of at most `q.scan` ids,
/// so a page costs the same on a table of any size. `+hook_id` keeps
/// SQLite from sorting a whole hook's rows out of the (hook, delivery)
/// index instead of walking ids newest first.
fn page(conn: &Connection, q: &PageQuery) -> Result<Page, StoreError> {
    use rusqlite::types::Value;
    let limit = q.limit.clamp(1, 1000);
    let (lower, upper, after) = page_bounds(q);
    let mut range: Vec<(&str, Value)> = Vec::new();
    if let Some(l) = lower {
        range.push(("id >= ?", Value::Text(l)));
    }
    if let Some(u) = upper {
        range.push(("id < ?", Value::Text(u)));
    }
    if let Some(a) = after {
        range.push(("id > ?", Value::Text(a)));
    }
    let mut conds: Vec<(String, Value)> = range
        .iter()
        .map(|(c, v)| (c.to_string(), v.clone()))
        .collect();
    let plan = page_plan(q);
    if let Some(h) = &q.hook_id {
        let c = if plan == PagePlan::Exact {
            "hook_id = ?"
        } else {
            "+hook_id = ?"
        };
        conds.push((c.into(), Value::Text(h.clone())));
    }
    if let Some(d) = &q.delivery_id {
        conds.push(("delivery_id = ?".into(), Value::Text(d.clone())));
    }
    if let Some(t) = &q.event_type {
        conds.push(("event_type = ?".into(), Value::Text(t.clone())));
    }
    // A literal, not a parameter: only then can SQLite use the partial
    // index of that state (the value is one of the enum's names).
    let state_cond = q.state.map(|st| format!("state = '{}'", st.as_str()));
    let mut window_low = None;
    if plan == PagePlan::Window {
        let scan = q.scan.max(limit);
        let wsql = format!(
            "SELECT count(*), min(id) FROM (SELECT id FROM events WHERE {} ORDER BY id DESC LIMIT ?)",
            where_sql(range.iter().map(|(c, _)| c.to_string()))
        );
        let mut vals: Vec<Value> = range.iter().map(|(_, v)| v.clone()).collect();
        vals.push(Value::Integer(scan as i64));
        let (n, low): (i64, Option<String>) = conn
            .query_row(&wsql, rusqlite::params_from_iter(vals), |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .map_err(map_err)?;
        if n as usize >= scan {
            window_low = low;
        }
    }
    if let Some(w) = &window_low {
        conds.push(("id >= ?".into(), Value::Text(w.clone())));
    }
    let sql = format!(
        "SELECT {COLUMNS} FROM events WHERE {} ORDER BY id DESC LIMIT ?",
        where_sql(conds.iter().map(|(c, _)| c.clone()).chain(state_cond))
    );
    let mut vals: Vec<Value> = conds.into_iter().map(|(_, v)| v).collect();
    vals.push(Value::Integer(limit as i64 + 1));
    let mut st = conn.prepare(&sql).map_err(map_err)?;
    let rows = st
        .query_map(rusqlite::params_from_iter(vals), record)
        .map_err(map_err)?;
    let mut events = rows.collect::<Result<Vec<_>, _>>().map_err(map_err)?;
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

fn where_sql(conds: impl Iterator<Item = String>) -> String {
    let v: Vec<String> = conds.collect();
    if v.is_empty() {
        "1".into()
    } else {
        v.join(" AND ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Following `next` through pages whose scan window is smaller than the
    /// table yields every match once, newest first, whatever the filter.
    #[test]
    fn windowed_pages_cover_every_match() {
        let dir = std::env::temp_dir().join(format!("webhookd-page-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let store = SqliteStore::open(dir.join("e.db")).unwrap();
        store.migrate().unwrap();
        let mut sink = store.sink();
        let mut all = Vec::new();
        for i in 0..40 {
            let ev = NewEvent {
                id: crate::id::new_event_id(),
                hook_id: if i % 3 == 0 { "a" } else { "b" }.into(),
                delivery_id: format!("d{i}"),
                event_type: if i % 5 == 0 { "push" } else { "ping" }.into(),
                received_at: SystemTime::now(),
                headers: Headers::default(),
                body: Bytes::from_static(b"{}"),
                state: EventState::Stored,
                actions: None,
            };
            all.push(ev.clone());
            sink.write_batch(&[ev]).unwrap();
            std::thread::sleep(Duration::from_millis(2));
        }
        let cases: [(Option<&str>, Option<&str>); 4] = [
            (None, None),
            (Some("a"), None),
            (None, Some("push")),
            (Some("b"), Some("push")),
        ];
        for (hook, ty) in cases {
            let want: Vec<String> = all
                .iter()
                .rev()
                .filter(|e| hook.is_none_or(|h| e.hook_id == h))
                .filter(|e| ty.is_none_or(|t| e.event_type == t))
                .map(|e| e.id.clone())
                .collect();
            let mut got = Vec::new();
            let mut before = None;
            let mut pages = 0;
            loop {
                let p = store
                    .page(&PageQuery {
                        hook_id: hook.map(String::from),
                        event_type: ty.map(String::from),
                        before: before.clone(),
                        limit: 3,
                        scan: 7,
                        ..Default::default()
                    })
                    .unwrap();
                assert!(p.events.len() <= 3);
                got.extend(p.events.iter().map(|e| e.id.clone()));
                pages += 1;
                assert!(pages < 100);
                match p.next {
                    Some(n) => before = Some(n),
                    None => break,
                }
            }
            assert_eq!(got, want, "hook {hook:?} type {ty:?}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
