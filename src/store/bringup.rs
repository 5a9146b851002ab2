//! Bringing the store up without waiting for PostgreSQL.
//!
//! READY=1 must not wait for the database: during an outage, a restart, an
//! upgrade or a reboot would otherwise leave deliveries in the socket's
//! backlog until the sender gives up (GitHub waits 10 s and never retries).
//! So the daemon opens what it needs locally (the spool), starts serving,
//! and applies the migrations in the background once the database answers;
//! until then deliveries are spooled, or answered 503 at once without a
//! spool, and `/readyz` / `STATUS=` say why.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use super::spool::{self, Spool};
use super::writer::StoreStatus;
use super::{postgres, redact_url, Store, StoreError};
use crate::config::Config;

/// The store and its local parts, ready to start the writers on.
pub struct Opened {
    pub store: Arc<dyn Store>,
    pub status: Arc<StoreStatus>,
    /// The spool new events go to while the database is unavailable.
    pub spool: Option<Arc<Spool>>,
    /// A non-empty spool the configuration no longer uses: drained only.
    pub leftover: Option<Arc<Spool>>,
}

/// Which store events are for, as recorded in a spool file.
fn identity(config: &Config) -> String {
    postgres::identity(&config.store.url).unwrap_or_else(|| redact_url(&config.store.url))
}

/// Open the store (no database round trip) and the spool. A spool that
/// another process holds, or that holds events for another store, is an
/// error: refusing to start is loud, silently ignoring those events is not.
pub fn open(config: &Config) -> Result<Opened, StoreError> {
    let store = super::open(&config.store)?;
    let remote = store.remote();
    let me = identity(config);
    let spool = match config.spool_path() {
        Some(p) => match Spool::open(&p, config.store.spool_max_events, &me) {
            Ok(s) => {
                log::info!(
                    "spool at {} ({} event(s) waiting); used while the store is unreachable",
                    p.display(),
                    s.len()
                );
                Some(Arc::new(s))
            }
            Err(e @ (StoreError::SpoolLocked { .. } | StoreError::SpoolForOtherStore { .. })) => {
                return Err(e)
            }
            Err(e) => {
                log::warn!("running without a spool: {e}");
                None
            }
        },
        None => None,
    };
    let leftover = match Config::default_spool_path() {
        Some(p) if spool.as_ref().is_none_or(|s| s.path() != p) => leftover(&p, remote, &me)?,
        _ => None,
    };
    let status = if remote {
        StoreStatus::waiting("waiting for the database: not reached yet")
    } else {
        StoreStatus::new()
    };
    Ok(Opened {
        store,
        status: Arc::new(status),
        spool,
        leftover,
    })
}

/// The default spool file when the configuration does not use it (spool
/// turned off, or another path, or the embedded store): its events are
/// drained into PostgreSQL if they are for this database, else refused.
fn leftover(path: &Path, remote: bool, me: &str) -> Result<Option<Arc<Spool>>, StoreError> {
    let Some((n, recorded)) = spool::peek(path)? else {
        return Ok(None);
    };
    if n == 0 {
        return Ok(None);
    }
    if spool::in_use(path) {
        // Another process has it open: its spool, which it drains itself.
        log::info!(
            "spool {} holds {n} event(s) and is in use by another process; leaving it to that process",
            path.display()
        );
        return Ok(None);
    }
    if !remote {
        return Err(StoreError::SpoolForOtherStore {
            path: path.display().to_string(),
            events: n,
            spooled_for: recorded.unwrap_or_else(|| "a PostgreSQL store".into()),
            current: me.to_string(),
        });
    }
    let s = match Spool::open(path, 0, me) {
        Ok(s) => s,
        // Taken by another process since the check above: its to drain.
        Err(StoreError::SpoolLocked { .. }) => return Ok(None),
        Err(e) => return Err(e),
    };
    log::warn!(
        "spool {} is not in use by this configuration but holds {n} event(s) for this database: draining them into it (nothing new is spooled there)",
        path.display()
    );
    Ok(Some(Arc::new(s)))
}

/// Apply the migrations as soon as the database answers, then open the
/// store for writes. A refusal other than "unavailable" (schema newer than
/// this build, a migration that fails) goes to `fatal`: the daemon cannot
/// work with that database and stops. `first_try` is told when the first
/// attempt ended (either way), so the daemon can hold READY=1 for a
/// database that answers at once (the usual restart) without waiting long
/// for one that does not.
pub fn spawn_migrations(
    store: Arc<dyn Store>,
    status: Arc<StoreStatus>,
    stop: Arc<AtomicBool>,
    first_try: std::sync::mpsc::SyncSender<()>,
    fatal: impl FnOnce(StoreError) + Send + 'static,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("store-migrate".into())
        .spawn(move || {
            let mut logged = false;
            let mut first_try = Some(first_try);
            while !stop.load(Ordering::Acquire) {
                match store.migrate() {
                    Ok(n) => {
                        if n > 0 {
                            log::info!("store {}: applied {n} migration(s)", store.kind());
                        }
                        if logged {
                            log::info!("store {} answers; schema is ready", store.kind());
                        }
                        status.set_schema_ready();
                        if let Some(tx) = first_try.take() {
                            let _ = tx.try_send(());
                        }
                        return;
                    }
                    Err(StoreError::Unavailable(e)) => {
                        if !logged {
                            log::error!(
                                "store unavailable at start, retrying every second (deliveries are spooled, or answered 503 without a spool): {e}"
                            );
                            logged = true;
                        }
                        status.set_error(&StoreError::Unavailable(format!(
                            "waiting for the database: {e}"
                        ).into()));
                        if let Some(tx) = first_try.take() {
                            let _ = tx.try_send(());
                        }
                        std::thread::sleep(Duration::from_secs(1));
                    }
                    Err(e) => {
                        log::error!("store {}: {e}", store.kind());
                        fatal(e);
                        return;
                    }
                }
            }
        })
}
