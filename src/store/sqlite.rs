//! The embedded store: one SQLite file in WAL mode with `synchronous=FULL`,
//! so a commit is on disk before we answer 2xx. One writer thread owns the
//! write connection (SQLite has a single writer anyway); readers open their
//! own connections.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use rusqlite::{params, Connection, OpenFlags, OptionalExtension, TransactionBehavior};

use super::migrations::{self, SQLITE};
use super::{from_micros, to_micros, BatchSink, EventRecord, ListQuery, Outcome, Store};
use super::{NewEvent, StoreError};

pub struct SqliteStore {
    path: PathBuf,
}

impl SqliteStore {
    pub fn open(path: PathBuf) -> Result<SqliteStore, StoreError> {
        if let Some(dir) = path.parent() {
            if !dir.as_os_str().is_empty() && !dir.is_dir() {
                return Err(StoreError::Unavailable(format!(
                    "directory {} for the embedded store does not exist",
                    dir.display()
                )));
            }
        }
        Ok(SqliteStore { path })
    }

    fn connect(&self, create: bool) -> Result<Connection, StoreError> {
        let mut flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
            | OpenFlags::SQLITE_OPEN_URI;
        if create {
            flags |= OpenFlags::SQLITE_OPEN_CREATE;
        }
        let conn = Connection::open_with_flags(&self.path, flags).map_err(|e| {
            StoreError::Unavailable(format!("cannot open {}: {e}", self.path.display()))
        })?;
        conn.busy_timeout(Duration::from_secs(5)).map_err(map_err)?;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;",
        )
        .map_err(map_err)?;
        Ok(conn)
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
        ) => StoreError::Unavailable(e.to_string()),
        _ => StoreError::Query(e.to_string()),
    }
}

const INSERT: &str = "INSERT INTO events (id, hook_id, delivery_id, event_type, received_at, headers, body, state, attempts, next_attempt_at, updated_at) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 0, ?5, ?5) ON CONFLICT (hook_id, delivery_id) DO NOTHING";
const EXISTING: &str = "SELECT id FROM events WHERE hook_id = ?1 AND delivery_id = ?2";
const COLUMNS: &str = "id, hook_id, delivery_id, event_type, received_at, state, attempts, next_attempt_at, last_error, length(body)";

struct SqliteSink {
    path: PathBuf,
    conn: Option<Connection>,
}

impl SqliteSink {
    fn write(conn: &mut Connection, events: &[NewEvent]) -> Result<Vec<Outcome>, StoreError> {
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(map_err)?;
        let mut out = Vec::with_capacity(events.len());
        {
            let mut ins = tx.prepare_cached(INSERT).map_err(map_err)?;
            let mut sel = tx.prepare_cached(EXISTING).map_err(map_err)?;
            for e in events {
                let n = ins
                    .execute(params![
                        e.id,
                        e.hook_id,
                        e.delivery_id,
                        e.event_type,
                        to_micros(e.received_at),
                        e.headers,
                        &e.body[..],
                        e.state.as_str(),
                    ])
                    .map_err(map_err)?;
                if n == 1 {
                    out.push(Outcome::Stored(e.id.clone()));
                } else {
                    let id: String = sel
                        .query_row(params![e.hook_id, e.delivery_id], |r| r.get(0))
                        .map_err(map_err)?;
                    out.push(Outcome::Duplicate(id));
                }
            }
        }
        tx.commit().map_err(map_err)?;
        Ok(out)
    }
}

impl BatchSink for SqliteSink {
    fn write_batch(&mut self, events: &[NewEvent]) -> Result<Vec<Outcome>, StoreError> {
        if self.conn.is_none() {
            let store = SqliteStore {
                path: self.path.clone(),
            };
            self.conn = Some(store.connect(false)?);
        }
        let Some(conn) = self.conn.as_mut() else {
            return Err(StoreError::Unavailable("no connection".into()));
        };
        let res = SqliteSink::write(conn, events);
        if res.is_err() {
            // Reopen next time: a failed disk or a replaced file should not
            // leave us with a poisoned handle.
            self.conn = None;
        }
        res
    }
}

fn record(r: &rusqlite::Row<'_>) -> rusqlite::Result<EventRecord> {
    Ok(EventRecord {
        id: r.get(0)?,
        hook_id: r.get(1)?,
        delivery_id: r.get(2)?,
        event_type: r.get(3)?,
        received_at: from_micros(r.get(4)?),
        state: r.get(5)?,
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
            });
        }
        let mut applied = 0;
        for m in SQLITE.iter().filter(|m| m.version > current) {
            tx.execute_batch(m.sql).map_err(|e| StoreError::Migration {
                version: m.version,
                name: m.name,
                message: e.to_string(),
            })?;
            tx.execute(
                "INSERT INTO webhookd_schema (version, name, applied_at) VALUES (?1, ?2, ?3)",
                params![m.version, m.name, to_micros(SystemTime::now())],
            )
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
            Some(v) if v > known => Err(StoreError::SchemaTooNew { found: v, known }),
            Some(_) => Ok(()),
        }
    }

    fn sink(&self) -> Box<dyn BatchSink> {
        Box::new(SqliteSink {
            path: self.path.clone(),
            conn: None,
        })
    }

    fn ping(&self) -> Result<(), StoreError> {
        let conn = self.connect(false)?;
        conn.query_row("SELECT 1", [], |_| Ok(())).map_err(map_err)
    }

    fn list(&self, q: &ListQuery) -> Result<Vec<EventRecord>, StoreError> {
        let conn = self.connect(false)?;
        let sql = format!(
            "SELECT {COLUMNS} FROM events WHERE (?1 IS NULL OR hook_id = ?1) AND (?2 IS NULL OR state = ?2) \
             ORDER BY received_at DESC, id DESC LIMIT ?3"
        );
        let mut st = conn.prepare(&sql).map_err(map_err)?;
        let rows = st
            .query_map(
                params![
                    q.hook_id,
                    q.state.map(|s| s.as_str()),
                    q.limit.max(1) as i64
                ],
                record,
            )
            .map_err(map_err)?;
        rows.collect::<Result<Vec<_>, _>>().map_err(map_err)
    }

    fn get(&self, id: &str) -> Result<Option<EventRecord>, StoreError> {
        let conn = self.connect(false)?;
        let sql = format!("SELECT {COLUMNS}, headers, body FROM events WHERE id = ?1");
        conn.query_row(&sql, params![id], |r| {
            let mut rec = record(r)?;
            rec.headers = Some(r.get(10)?);
            rec.body = Some(r.get(11)?);
            Ok(rec)
        })
        .optional()
        .map_err(map_err)
    }
}
