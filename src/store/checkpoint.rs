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
//! FULL); a checkpoint only moves pages, and SQLite starts the WAL over from
//! its beginning once everything in it is checkpointed.

use std::path::PathBuf;
use std::sync::Weak;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

/// How often a checkpoint runs: at the ingest limit about 10 MB of WAL
/// each time, the four megabytes of SQLite's own limit at a quarter of it.
const EVERY: Duration = Duration::from_millis(200);

/// Checkpoint `path` until `alive` can no longer be upgraded (its store was
/// dropped). Errors are logged once per kind of failure and retried; a
/// missed checkpoint only lets the WAL grow until the next one.
pub(super) fn spawn(path: PathBuf, alive: Weak<()>) {
    let spawned = std::thread::Builder::new()
        .name("store-checkpoint".into())
        .spawn(move || run(&path, &alive));
    if let Err(e) = spawned {
        log::warn!("cannot start the WAL checkpoint thread ({e}); the WAL grows until restart");
    }
}

fn run(path: &PathBuf, alive: &Weak<()>) {
    let mut conn: Option<Connection> = None;
    let mut failing = false;
    while alive.upgrade().is_some() {
        std::thread::sleep(EVERY);
        if conn.is_none() {
            conn = open(path).ok();
        }
        let Some(c) = conn.as_ref() else { continue };
        match pass(c) {
            Ok(()) => failing = false,
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

fn open(path: &PathBuf) -> rusqlite::Result<Connection> {
    let c = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    c.busy_timeout(Duration::from_millis(100))?;
    c.execute_batch("PRAGMA wal_autocheckpoint = 0;")?;
    Ok(c)
}

/// One passive checkpoint: whatever the WAL holds that the database file
/// does not, as far as no reader still needs the older pages.
fn pass(c: &Connection) -> rusqlite::Result<()> {
    c.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
}
