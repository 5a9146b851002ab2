//! The local spool: when PostgreSQL is unreachable, accepted deliveries go
//! to a small SQLite file under the state directory (fsync'd before the 2xx)
//! and are moved into PostgreSQL, oldest first, once it answers again.
//!
//! GitHub does not retry failed deliveries, so answering 503 during a
//! database outage loses them; the spool turns an outage into a delay.
//!
//! While the spool holds anything, new events are appended to it too, so
//! PostgreSQL receives them in order of arrival. Moving a batch is
//! "insert into PostgreSQL (ON CONFLICT DO NOTHING), commit, then delete
//! from the spool": a crash in between re-sends the batch and the unique key
//! keeps it from being stored twice.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use rusqlite::{params, Connection};

use super::{from_micros, BatchSink, Cause, EventState, Headers, NewEvent, Outcome, StoreError};

pub struct Spool {
    conn: Mutex<Connection>,
    path: PathBuf,
    max_events: usize,
    len: AtomicUsize,
}

fn err(e: rusqlite::Error) -> StoreError {
    StoreError::Unavailable(Cause::with_source(format!("spool: {e}"), e))
}

impl Spool {
    pub fn open(path: &Path, max_events: usize) -> Result<Spool, StoreError> {
        let conn = Connection::open(path).map_err(|e| {
            StoreError::Unavailable(format!("cannot open spool {}: {e}", path.display()).into())
        })?;
        conn.busy_timeout(Duration::from_secs(5)).map_err(err)?;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;
             CREATE TABLE IF NOT EXISTS spool (
                 seq         INTEGER PRIMARY KEY AUTOINCREMENT,
                 id          TEXT    NOT NULL,
                 hook_id     TEXT    NOT NULL,
                 delivery_id TEXT    NOT NULL,
                 event_type  TEXT    NOT NULL,
                 received_at INTEGER NOT NULL,
                 headers     TEXT    NOT NULL,
                 body        BLOB    NOT NULL,
                 state       TEXT    NOT NULL,
                 UNIQUE (hook_id, delivery_id)
             );",
        )
        .map_err(err)?;
        let n: i64 = conn
            .query_row("SELECT count(*) FROM spool", [], |r| r.get(0))
            .map_err(err)?;
        Ok(Spool {
            conn: Mutex::new(conn),
            path: path.to_path_buf(),
            max_events,
            len: AtomicUsize::new(n as usize),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Events waiting to be moved into PostgreSQL.
    pub fn len(&self) -> usize {
        self.len.load(Ordering::Acquire)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Store a batch durably; duplicates of spooled events keep the first id.
    pub fn append(&self, events: &[NewEvent]) -> Result<Vec<Outcome>, StoreError> {
        let mut conn = self
            .conn
            .lock()
            .map_err(|_| StoreError::Unavailable("spool lock poisoned".into()))?;
        if self.len() + events.len() > self.max_events {
            return Err(StoreError::Unavailable(
                format!("spool is full ({} events)", self.len()).into(),
            ));
        }
        let out = super::embedded::insert_batch(
            &mut conn,
            "INSERT INTO spool (id, hook_id, delivery_id, event_type, received_at, headers, body, state) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) ON CONFLICT (hook_id, delivery_id) DO NOTHING",
            "SELECT id FROM spool WHERE hook_id = ?1 AND delivery_id = ?2",
            events,
            Outcome::Spooled,
        )
        .map_err(err)?;
        let added = out
            .iter()
            .filter(|o| matches!(o, Outcome::Spooled(_)))
            .count();
        self.len.fetch_add(added, Ordering::AcqRel);
        Ok(out)
    }

    /// Move up to `batch` of the oldest events into `sink`. Returns how many
    /// were moved (0 when the spool is empty).
    pub fn drain_into(&self, sink: &mut dyn BatchSink, batch: usize) -> Result<usize, StoreError> {
        let conn = self
            .conn
            .lock()
            .map_err(|_| StoreError::Unavailable("spool lock poisoned".into()))?;
        let mut st = conn
            .prepare_cached(
                "SELECT seq, id, hook_id, delivery_id, event_type, received_at, headers, body, state \
                 FROM spool ORDER BY seq LIMIT ?1",
            )
            .map_err(err)?;
        let rows = st
            .query_map(params![batch as i64], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    NewEvent {
                        id: r.get(1)?,
                        hook_id: r.get(2)?,
                        delivery_id: r.get(3)?,
                        event_type: r.get(4)?,
                        received_at: from_micros(r.get(5)?),
                        headers: Headers::from_json_lossy(&r.get::<_, String>(6)?),
                        body: Bytes::from(r.get::<_, Vec<u8>>(7)?),
                        state: EventState::parse(&r.get::<_, String>(8)?)
                            .unwrap_or(EventState::Pending),
                    },
                ))
            })
            .map_err(err)?;
        let rows: Vec<(i64, NewEvent)> = rows.collect::<Result<_, _>>().map_err(err)?;
        drop(st);
        let Some(last) = rows.last().map(|(seq, _)| *seq) else {
            return Ok(0);
        };
        let events: Vec<NewEvent> = rows.into_iter().map(|(_, e)| e).collect();
        // Into PostgreSQL first; only then forget them here.
        sink.write_batch(&events)?;
        let n = conn
            .execute("DELETE FROM spool WHERE seq <= ?1", params![last])
            .map_err(err)?;
        self.len.fetch_sub(n.min(self.len()), Ordering::AcqRel);
        Ok(n)
    }
}
