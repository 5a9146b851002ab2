//! WAL checkpoints of the embedded store on a thread of their own.
//!
//! SQLite's automatic checkpoint runs in the connection whose commit pushed
//! the WAL past its limit, before that commit returns: the ingest writer
//! (and the request waiting for it) copied megabytes into the database file
//! and fsync'd it in the middle of answering, and so did whichever delivery
//! transaction happened to cross the limit, while every other writer of the
//! process waited its turn behind it. A passive checkpoint needs no write
//! lock, so here it runs beside the writers; the daemon's connections turn
//! the automatic one off. Commits stay durable in the WAL (synchronous =
//! FULL); a checkpoint only moves pages, and SQLite does not start the WAL
//! over before the pages are on disk in the database file.
//!
//! SQLite starts the WAL over from its beginning only when a write
//! transaction begins while everything in it is checkpointed. Under steady
//! ingest that never happened: each commit came while the checkpoint beside
//! it was still copying, so the WAL grew by every byte stored (670 MB in a
//! six-second load), and every write went to new pages of the file, which
//! the kernel zeroed and allocated and whose new size each fdatasync wrote
//! out. So each round ends with a second, short checkpoint in the writers'
//! turn (`in_turn`): it copies what came in during the first, nothing can
//! commit meanwhile, and the next write transaction starts the WAL over, on
//! pages that are already allocated and cached.

use std::path::{Path, PathBuf};
use std::sync::Weak;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

/// How often a checkpoint runs: at the ingest limit 5 to 10 MB of WAL each
/// time. Rounds of 200 ms left 40 MB for the database file's fdatasync,
/// which held up the ingest batches' own syncs for 17 ms (p99 12 ms at
/// c=32); rounds of 50 ms keep that wait to a few milliseconds.
const EVERY: Duration = Duration::from_millis(50);

/// Checkpoint `path` until `alive` can no longer be upgraded (its store was
/// dropped); `in_turn` checkpoints what is left in the writers' turn.
/// Errors are logged once per kind of failure and retried; a missed
/// checkpoint only lets the WAL grow until the next one.
pub(super) fn spawn<F>(path: PathBuf, alive: Weak<()>, in_turn: F)
where
    F: Fn() -> Result<(), String> + Send + 'static,
{
    let spawned = std::thread::Builder::new()
        .name("store-checkpoint".into())
        .spawn(move || run(&path, &alive, &in_turn));
    if let Err(e) = spawned {
        log::warn!("cannot start the WAL checkpoint thread ({e}); the WAL grows until restart");
    }
}

fn run(path: &PathBuf, alive: &Weak<()>, in_turn: &dyn Fn() -> Result<(), String>) {
    let mut conn: Option<Connection> = None;
    let mut failing = false;
    // The size of the WAL that the last round finished with: an idle
    // daemon's rounds find the same and leave the writers alone.
    let mut finished = 0;
    while alive.upgrade().is_some() {
        std::thread::sleep(EVERY);
        if conn.is_none() {
            conn = open(path).ok();
        }
        let Some(c) = conn.as_ref() else { continue };
        match round(path, c, finished, in_turn) {
            Ok(log) => {
                finished = log;
                failing = false;
            }
            Err(e) => {
                if !failing {
                    log::warn!("WAL checkpoint of {} failed: {e}", path.display());
                    failing = true;
                }
                conn = None;
            }
        }
    }
}

/// Catch up beside the writers, put the copies on disk, then finish in the
/// writers' turn so that the WAL starts over; nothing to do when the WAL
/// is empty or just as the last round left it. Returns the WAL's size.
fn round(
    path: &Path,
    c: &Connection,
    finished: i64,
    in_turn: &dyn Fn() -> Result<(), String>,
) -> Result<i64, String> {
    let log = catch_up(c)?;
    if log == 0 || log == finished {
        return Ok(log);
    }
    flush(path)?;
    in_turn()?;
    Ok(log)
}

fn open(path: &PathBuf) -> rusqlite::Result<Connection> {
    let c = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    c.busy_timeout(Duration::from_millis(100))?;
    c.execute_batch("PRAGMA wal_autocheckpoint = 0;")?;
    Ok(c)
}

/// What the checkpoint in the writers' turn may be left to copy, in WAL
/// frames (of a page each): about 1 MB, a millisecond or two of copying
/// that the writers wait for.
const LEFT_IN_TURN: i64 = 256;

/// Checkpoint beside the writers until little is left: each pass copies
/// what came in during the one before (a pass reports the WAL as it was
/// when it began), and copying is faster than ingest, so a few passes get
/// close to the end of the WAL even while ingest goes on. Returns the
/// frames in the WAL when the last pass began.
fn catch_up(c: &Connection) -> Result<i64, String> {
    let mut before: Option<i64> = None;
    let mut log = 0;
    for _ in 0..8 {
        log = pass(c).map_err(|e| e.to_string())?.0;
        if before.is_some_and(|b| log.saturating_sub(b) <= LEFT_IN_TURN) {
            break;
        }
        before = Some(log);
    }
    Ok(log)
}

/// Put what the passes copied into the database file on disk. SQLite syncs
/// the file only in a checkpoint that reaches the end of the WAL, which
/// under load is the one in the writers' turn: it flushed all the passes
/// had written (some 40 MB, 20 ms) while every writer waited.
fn flush(path: &Path) -> Result<(), String> {
    std::fs::File::open(path)
        .and_then(|f| f.sync_data())
        .map_err(|e| format!("fdatasync {}: {e}", path.display()))
}

/// One passive checkpoint: whatever the WAL holds that the database file
/// does not, as far as no reader still needs the older pages. Returns the
/// frames in the WAL and how many of them are now in the database file.
pub(super) fn pass(c: &Connection) -> rusqlite::Result<(i64, i64)> {
    c.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
        Ok((r.get(1)?, r.get(2)?))
    })
}
