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
//!
//! The file is locked (`flock`) to one process: two instances sharing it
//! would each keep their own count of what it holds. It records which
//! database its events are for, so a changed `store.url` cannot move them
//! into another one. Rows the database refuses are set aside in a table of
//! their own (`spool_rejected`, with the error) instead of being retried
//! for ever in front of everything spooled after them.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use nix::fcntl::{Flock, FlockArg};

use bytes::Bytes;
use rusqlite::{params, Connection, TransactionBehavior};

use super::{
    from_micros, to_micros, BatchSink, Cause, EventState, Headers, NewEvent, Outcome, StoreError,
};

pub struct Spool {
    conn: Mutex<Connection>,
    path: PathBuf,
    max_events: usize,
    len: AtomicUsize,
    /// Held for the life of the spool; dropped after `conn` (field order).
    _lock: Flock<std::fs::File>,
}

/// What one drain step did.
#[derive(Debug, Default)]
pub struct Drained {
    /// Rows that left the spool (stored, duplicates, or set aside).
    pub moved: usize,
    /// Rows the database refused, now in `spool_rejected`, with the reason.
    pub set_aside: Vec<(NewEvent, String)>,
}

fn err(e: rusqlite::Error) -> StoreError {
    StoreError::Unavailable(Cause::with_source(format!("spool: {e}"), e))
}

const SCHEMA: &str = "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;
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
             );
             CREATE TABLE IF NOT EXISTS spool_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
             CREATE TABLE IF NOT EXISTS spool_rejected (
                 id          TEXT    NOT NULL,
                 hook_id     TEXT    NOT NULL,
                 delivery_id TEXT    NOT NULL,
                 event_type  TEXT    NOT NULL,
                 received_at INTEGER NOT NULL,
                 headers     TEXT    NOT NULL,
                 body        BLOB    NOT NULL,
                 state       TEXT    NOT NULL,
                 error       TEXT    NOT NULL,
                 set_aside_at INTEGER NOT NULL
             );";

/// Does another process hold this spool file (see [`Spool::open`])?
pub fn in_use(path: &Path) -> bool {
    let Ok(file) = std::fs::File::open(path) else {
        return false;
    };
    matches!(
        Flock::lock(file, FlockArg::LockSharedNonblock),
        Err((_, nix::errno::Errno::EWOULDBLOCK))
    )
}

/// Events in a spool file and the store they were spooled for, without
/// locking or changing it (None if there is no such file).
pub fn peek(path: &Path) -> Result<Option<(usize, Option<String>)>, StoreError> {
    if !path.exists() {
        return Ok(None);
    }
    let conn = Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(|e| {
            StoreError::Unavailable(format!("cannot open spool {}: {e}", path.display()).into())
        })?;
    let has = |t: &str| -> Result<bool, StoreError> {
        conn.query_row(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?1",
            [t],
            |r| r.get::<_, i64>(0),
        )
        .map(|n| n > 0)
        .map_err(err)
    };
    if !has("spool")? {
        return Ok(Some((0, None)));
    }
    let n: i64 = conn
        .query_row("SELECT count(*) FROM spool", [], |r| r.get(0))
        .map_err(err)?;
    let store = if has("spool_meta")? {
        conn.query_row(
            "SELECT value FROM spool_meta WHERE key = 'store'",
            [],
            |r| r.get(0),
        )
        .ok()
    } else {
        None
    };
    Ok(Some((usize::try_from(n).unwrap_or(0), store)))
}

impl Spool {
    /// Open (or create) the spool for the store named `store` (see
    /// `postgres::identity`), locked to this process. Refused when another
    /// process holds it, or when it still holds events for another store.
    pub fn open(path: &Path, max_events: usize, store: &str) -> Result<Spool, StoreError> {
        let shown = path.display().to_string();
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|e| {
                StoreError::Unavailable(format!("cannot open spool {shown}: {e}").into())
            })?;
        let lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(l) => l,
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => {
                return Err(StoreError::SpoolLocked { path: shown })
            }
            Err((_, e)) => {
                return Err(StoreError::Unavailable(
                    format!("cannot lock spool {shown}: {e}").into(),
                ))
            }
        };
        let conn = Connection::open(path).map_err(|e| {
            StoreError::Unavailable(format!("cannot open spool {shown}: {e}").into())
        })?;
        conn.busy_timeout(Duration::from_secs(5)).map_err(err)?;
        conn.execute_batch(SCHEMA).map_err(err)?;
        let n: i64 = conn
            .query_row("SELECT count(*) FROM spool", [], |r| r.get(0))
            .map_err(err)?;
        let n = usize::try_from(n).unwrap_or(0);
        let recorded: Option<String> = conn
            .query_row(
                "SELECT value FROM spool_meta WHERE key = 'store'",
                [],
                |r| r.get(0),
            )
            .ok();
        match recorded {
            Some(r) if n > 0 && r != store => {
                return Err(StoreError::SpoolForOtherStore {
                    path: shown,
                    events: n,
                    spooled_for: r,
                    current: store.to_string(),
                })
            }
            // Empty, the same store, or a file of a version that did not
            // record it (which only ever spooled for the configured store).
            _ => {
                conn.execute(
                    "INSERT INTO spool_meta (key, value) VALUES ('store', ?1) \
                     ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    [store],
                )
                .map_err(err)?;
            }
        }
        let aside: i64 = conn
            .query_row("SELECT count(*) FROM spool_rejected", [], |r| r.get(0))
            .map_err(err)?;
        if aside > 0 {
            log::warn!(
                "spool {shown}: {aside} event(s) the database refused are kept in table spool_rejected (inspect with sqlite3)"
            );
        }
        Ok(Spool {
            conn: Mutex::new(conn),
            path: path.to_path_buf(),
            max_events,
            len: AtomicUsize::new(n),
            _lock: lock,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Most events it holds (store.spool_max_events at start).
    pub fn capacity(&self) -> usize {
        self.max_events
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
        const SQL: super::embedded::InsertSql = super::embedded::InsertSql {
            event: "INSERT INTO spool (id, hook_id, delivery_id, event_type, received_at, headers, body, state) \
                    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) ON CONFLICT (hook_id, delivery_id) DO NOTHING",
            body: None,
            existing: "SELECT id FROM spool WHERE hook_id = ?1 AND delivery_id = ?2",
            fan_out: None,
        };
        let out = super::embedded::insert_batch(&mut conn, &SQL, events, Outcome::Spooled)
            .map_err(err)?;
        let added = out
            .iter()
            .filter(|o| matches!(o, Outcome::Spooled(_)))
            .count();
        self.len.fetch_add(added, Ordering::AcqRel);
        Ok(out)
    }

    /// Move up to `batch` of the oldest events (and about `max_bytes`) into
    /// `sink`. The spool stays usable meanwhile: the lock is not held while
    /// the database works (appends only add rows after these).
    pub fn drain_into(
        &self,
        sink: &mut dyn BatchSink,
        batch: usize,
        max_bytes: usize,
    ) -> Result<Drained, StoreError> {
        let rows = self.oldest(batch, max_bytes)?;
        let Some(last) = rows.last().map(|(seq, _)| *seq) else {
            return Ok(Drained::default());
        };
        let (seqs, events): (Vec<i64>, Vec<NewEvent>) = rows.into_iter().unzip();
        // Into PostgreSQL first; only then forget them here.
        let outcomes = sink.write_batch(&events)?;
        let mut set_aside = Vec::new();
        let mut conn = self
            .conn
            .lock()
            .map_err(|_| StoreError::Unavailable("spool lock poisoned".into()))?;
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(err)?;
        for ((seq, event), outcome) in seqs.iter().zip(events).zip(outcomes) {
            if let Outcome::Refused(why) = outcome {
                tx.execute(
                    "INSERT INTO spool_rejected (id, hook_id, delivery_id, event_type, received_at, headers, body, state, error, set_aside_at) \
                     SELECT id, hook_id, delivery_id, event_type, received_at, headers, body, state, ?2, ?3 FROM spool WHERE seq = ?1",
                    params![seq, why, to_micros(std::time::SystemTime::now())],
                )
                .map_err(err)?;
                set_aside.push((event, why));
            }
        }
        let n = tx
            .execute("DELETE FROM spool WHERE seq <= ?1", params![last])
            .map_err(err)?;
        tx.commit().map_err(err)?;
        self.len.fetch_sub(n.min(self.len()), Ordering::AcqRel);
        Ok(Drained {
            moved: n,
            set_aside,
        })
    }

    /// The oldest rows: at most `batch`, and no more than `max_bytes` of
    /// bodies and headers (at least one row).
    fn oldest(&self, batch: usize, max_bytes: usize) -> Result<Vec<(i64, NewEvent)>, StoreError> {
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
        let mut rows = st
            .query(params![i64::try_from(batch).unwrap_or(i64::MAX)])
            .map_err(err)?;
        let mut out = Vec::new();
        let mut bytes = 0usize;
        while let Some(r) = rows.next().map_err(err)? {
            let e = NewEvent {
                id: r.get(1).map_err(err)?,
                hook_id: r.get(2).map_err(err)?,
                delivery_id: r.get(3).map_err(err)?,
                event_type: r.get(4).map_err(err)?,
                received_at: from_micros(r.get(5).map_err(err)?),
                headers: Headers::from_json_lossy(&r.get::<_, String>(6).map_err(err)?),
                body: Bytes::from(r.get::<_, Vec<u8>>(7).map_err(err)?),
                state: EventState::parse(&r.get::<_, String>(8).map_err(err)?)
                    .unwrap_or(EventState::Pending),
                actions: None,
            };
            bytes = bytes.saturating_add(e.body.len() + e.headers.byte_len());
            if !out.is_empty() && bytes > max_bytes {
                break;
            }
            out.push((r.get::<_, i64>(0).map_err(err)?, e));
        }
        Ok(out)
    }
}
