//! The daemon's life cycle, in order: open the store, start the writer,
//! build the hooks, serve, run the background loops (status ticker, tunnel
//! poller, retention, store monitor, watchdog), reload on SIGHUP, and drain
//! on SIGTERM.
//!
//! Startup order matters to systemd: sockets are taken before any thread
//! exists (in `cli::main`, see `server::listen`), the store and the spool
//! are opened (the embedded store migrated), and READY=1 is sent.
//! PostgreSQL is waited for at most one connection attempt and one write:
//! it is migrated in the background when it answers (`store::bringup`),
//! and until then deliveries are spooled, or answered 503 quickly without
//! a spool, with /readyz and STATUS= saying why.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::app::{App, Live};
use crate::config::{Config, Invalid};
use crate::metrics::Metrics;
use crate::server::listen::Bound;
use crate::server::{admin, http};
use crate::signals::{Event, SignalStream};
use crate::store::writer::{Writer, WriterOptions};
use crate::store::{self, StoreError};
use crate::systemd::{notify, watchdog::Watchdog};

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Invalid(#[from] Invalid),
}

/// Switches that are not in the config file.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Tests only: while this file exists, store writers block (see
    /// `WriterOptions::wedge_file`). Set from the environment by the CLI.
    pub wedge_file: Option<PathBuf>,
}

/// Run the daemon until SIGTERM/SIGINT. Builds the runtime; call only after
/// the sockets were taken.
pub fn run(
    config_path: PathBuf,
    config: Config,
    sockets: Vec<Bound>,
    opts: RunOptions,
) -> Result<(), ServeError> {
    let workers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .thread_name("webhookd-worker")
        .build()
        .map_err(ServeError::Runtime)?;
    let result = rt.block_on(serve(config_path, config, sockets, opts));
    // Do not wait for stray blocking tasks (a hung store call) at exit.
    rt.shutdown_timeout(Duration::from_millis(200));
    result
}

/// The embedded store is a local file: migrate it before READY=1 (retrying
/// while it cannot be opened). Returns false if a shutdown signal came first.
async fn migrate_local(
    store: &Arc<dyn store::Store>,
    signals: &mut SignalStream,
) -> Result<bool, ServeError> {
    let mut logged = false;
    loop {
        let s = store.clone();
        let res = tokio::task::spawn_blocking(move || s.migrate())
            .await
            .map_err(|e| ServeError::Store(StoreError::Unavailable(e.to_string().into())))?;
        match res {
            Ok(n) => {
                if n > 0 {
                    log::info!("store {}: applied {n} migration(s)", store.kind());
                }
                return Ok(true);
            }
            Err(StoreError::Unavailable(e)) => {
                if !logged {
                    log::error!("store unavailable, retrying every second: {e}");
                    logged = true;
                }
                notify::status(&format!("waiting for the store: {e}"));
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    ev = signals.next() => {
                        if let Some(Event::Shutdown(sig)) = ev {
                            log::info!("{sig} received while waiting for the store; exiting");
                            return Ok(false);
                        }
                    }
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
}

async fn serve(
    config_path: PathBuf,
    config: Config,
    sockets: Vec<Bound>,
    opts: RunOptions,
) -> Result<(), ServeError> {
    let mut signals = SignalStream::new().map_err(ServeError::Signals)?;
    notify::status("opening the store");
    // No database round trip here: PostgreSQL is migrated in the background
    // (store::bringup), so READY=1 never waits long for it.
    let opened = tokio::task::block_in_place(|| store::bringup::open(&config))?;
    let store = opened.store.clone();
    let status = opened.status.clone();
    let remote = store.remote();
    if !remote && !migrate_local(&store, &mut signals).await? {
        return Ok(());
    }

    let metrics = Arc::new(Metrics::new());
    let threads = match config.store.writers {
        0 => store.default_writers(),
        n => n,
    };
    let writer = Arc::new(Writer::start(
        store.clone(),
        WriterOptions {
            threads,
            batch_max: config.store.batch_max,
            batch_max_bytes: config.store.batch_max_bytes,
            queue_capacity: config.store.queue_capacity,
            wedge_file: opts.wedge_file,
            spool: opened.spool,
            leftover: opened.leftover,
        },
        metrics.clone(),
        status.clone(),
    )?);
    let (fatal_tx, mut fatal_rx) = tokio::sync::mpsc::unbounded_channel::<StoreError>();
    let migrate_stop = Arc::new(AtomicBool::new(false));
    if remote {
        let (first_tx, first_rx) = std::sync::mpsc::sync_channel(1);
        store::bringup::spawn_migrations(
            store.clone(),
            status.clone(),
            migrate_stop.clone(),
            first_tx,
            move |e| {
                let _ = fatal_tx.send(e);
            },
        )
        .map_err(|e| {
            StoreError::Unavailable(format!("cannot start the migration thread: {e}").into())
        })?;
        // A database that answers is migrated before we serve (no 503 in
        // the first milliseconds of a normal restart); one that does not
        // answer within a connection attempt and a write is not waited for.
        let grace = config.store.connect_timeout + config.store.write_timeout;
        let _ = tokio::task::block_in_place(|| first_rx.recv_timeout(grace));
        // A database that answered "no" (schema newer than this build, a
        // failed migration): do not announce READY=1 for it.
        if let Ok(e) = fatal_rx.try_recv() {
            return Err(e.into());
        }
    }

    let drain_timeout = config.server.drain_timeout;
    let stall_limit = config.store.stall_timeout;
    let http_opts = http::Options::from(&config.server);
    let max_in_flight = config.server.max_in_flight;
    let live = Live::build(config, &metrics, false)?;
    let tls = match &live.server_tls {
        Some(pair) => Some(Arc::new(
            crate::tls::server::ServerTls::from_loaded(pair.clone(), max_in_flight)
                .map_err(|e| Invalid::new("server.tls", e.to_string()))?,
        )),
        None => None,
    };
    let mut app = App::new(live, config_path, store.clone(), writer.clone(), metrics);
    app.tls = tls;
    let app = Arc::new(app);
    app.log_hook_problems();
    if let Some(tls) = &app.tls {
        tls.log_state(std::time::SystemTime::now());
    }
    if let Some(pair) = &app.live().server_tls {
        set_tls_expiry(&app.metrics, pair);
    }

    let server = http::Server::start(app.clone(), sockets, http_opts);
    let (deliver_stop, deliver_stop_rx) = tokio::sync::watch::channel(None);
    let deliver_task = tokio::spawn(crate::deliver::worker::run(app.clone(), deliver_stop_rx));
    let retention_task = tokio::spawn(retention_loop(app.clone()));
    let tunnel_task = tokio::spawn(tunnel_loop(app.clone()));
    let w = writer.clone();
    let watchdog = Watchdog::start(
        tokio::runtime::Handle::current(),
        Box::new(move || {
            let stall = w.max_stall();
            (stall > stall_limit)
                .then(|| format!("a store writer has been stuck in one batch for {stall:?}"))
        }),
    );
    let monitor_stop = Arc::new(AtomicBool::new(false));
    let monitor = spawn_store_monitor(app.clone(), monitor_stop.clone());
    let status_task = tokio::spawn(status_ticker(app.clone()));
    tokio::spawn(crate::server::ui::sampler(app.clone()));
    let tls_task = app
        .tls
        .clone()
        .map(|t| tokio::spawn(crate::tls::server::watch_expiry(t)));

    log::info!(
        "webhookd {} ready: listening on {}; store {}; {} hook(s)",
        crate::VERSION,
        server.describe(),
        store.kind(),
        app.live().hooks.len()
    );
    notify::ready(&admin::status_line(&app));

    let mut fatal: Option<StoreError> = None;
    let signal = loop {
        let ev = tokio::select! {
            ev = signals.next() => ev,
            Some(e) = fatal_rx.recv() => {
                log::error!("stopping: the store cannot be used: {e}");
                fatal = Some(e);
                break "a fatal store error";
            }
        };
        match ev {
            Some(Event::Reload) => {
                notify::reloading();
                match reload(&app) {
                    Ok(notes) => {
                        if let Some(tls) = &app.tls {
                            tls.log_state(std::time::SystemTime::now());
                        }
                        log::info!(
                            "configuration reloaded from {}: {} hook(s)",
                            app.config_path.display(),
                            app.live().hooks.len()
                        );
                        for n in notes {
                            log::warn!("reload: {n}");
                        }
                    }
                    Err(e) => log::error!("reload refused, keeping the running configuration: {e}"),
                }
                notify::ready(&admin::status_line(&app));
            }
            Some(Event::Shutdown(sig)) => break sig,
            None => break "end of signal stream",
        }
    };

    // Drain: stop accepting, let in-flight requests finish, flush the writer.
    // Checked: a drain_timeout past the end of time means a day here.
    let deadline = Instant::now()
        .checked_add(drain_timeout)
        .unwrap_or_else(|| Instant::now() + Duration::from_secs(86_400));
    migrate_stop.store(true, Ordering::Release);
    app.draining.store(true, Ordering::Release);
    notify::stopping("draining in-flight requests");
    log::info!("{signal} received: draining (up to {drain_timeout:?})");
    let _ = deliver_stop.send(Some(deadline));
    let in_flight_done = server.shutdown(deadline).await;
    retention_task.abort();
    tunnel_task.abort();
    let grace = deadline
        .checked_add(Duration::from_secs(2))
        .unwrap_or(deadline);
    let _ = tokio::time::timeout_at(grace.into(), deliver_task).await;
    let w = writer.clone();
    let flushed = tokio::task::spawn_blocking(move || w.close(deadline))
        .await
        .unwrap_or(false);
    status_task.abort();
    if let Some(t) = tls_task {
        t.abort();
    }
    monitor_stop.store(true, Ordering::Release);
    let _ = monitor.join();
    watchdog.stop();
    signals.close();
    if in_flight_done && flushed {
        log::info!("drained cleanly; exiting");
    } else {
        log::warn!(
            "drain deadline reached (requests finished: {in_flight_done}, store flushed: {flushed}); exiting"
        );
    }
    log::logger().flush();
    match fatal {
        Some(e) => Err(e.into()),
        None => Ok(()),
    }
}

/// Why a reload was refused; the running configuration stays.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Hooks(#[from] Invalid),
}

/// Re-read the config file (SIGHUP). On any error the running config
/// stays. Returns notes on changes that need a restart.
fn reload(app: &App) -> Result<Vec<String>, ReloadError> {
    let result = try_reload(app);
    app.record_reload(result.as_ref().err().map(ToString::to_string));
    app.metrics
        .reload(if result.is_ok() { "ok" } else { "refused" });
    result
}

fn try_reload(app: &App) -> Result<Vec<String>, ReloadError> {
    let config = Config::load(&app.config_path)?;
    // Re-read the system CA store too (an updated ca-certificates).
    crate::tls::client::forget_system_roots();
    let new = Live::build(config, &app.metrics, true)?;
    let old = app.live();
    let mut notes = Vec::new();
    let (o, n) = (&old.config, &new.config);
    if o.store.url != n.store.url
        || o.store.writers != n.store.writers
        || o.store.queue_capacity != n.store.queue_capacity
        || o.store.pool_size != n.store.pool_size
        || o.store.batch_max_bytes != n.store.batch_max_bytes
        || o.store.write_timeout != n.store.write_timeout
        || o.store.spool != n.store.spool
    {
        notes.push("[store] changes take effect after a restart".to_string());
    }
    if o.server.listen != n.server.listen || o.server.admin_listen != n.server.admin_listen {
        notes.push("listen address changes take effect after a restart".to_string());
    }
    if o.log.target != n.log.target || o.log.format != n.log.format {
        notes.push("log.target and log.format changes take effect after a restart".to_string());
    }
    match (&app.tls, &new.server_tls) {
        (Some(tls), Some(pair)) => {
            tls.install(pair.clone());
            set_tls_expiry(&app.metrics, pair);
        }
        (Some(_), None) => notes.push(
            "removing [server.tls] takes effect after a restart; the certificate loaded before keeps serving"
                .to_string(),
        ),
        (None, Some(_)) => notes.push("[server.tls] takes effect after a restart".to_string()),
        (None, None) => {}
    }
    crate::systemd::journal::set_level(n.log.level);
    app.replace_live(new);
    Ok(notes)
}

fn set_tls_expiry(m: &crate::metrics::Metrics, pair: &crate::tls::server::Loaded) {
    let secs = pair
        .not_after()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    m.tls_expiry.set(secs);
}

/// Keep STATUS= current so `systemctl status` shows live counters.
async fn status_ticker(app: Arc<App>) {
    let mut last = String::new();
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    loop {
        tick.tick().await;
        let line = admin::status_line(&app);
        if line != last {
            notify::status(&line);
            last = line;
        }
    }
}

/// Follow the tunnel sidecar's public URL; log it when it changes.
async fn tunnel_loop(app: Arc<App>) {
    let mut last: Option<String> = None;
    loop {
        let cfg = app.live().config.tunnel.clone();
        let poll = cfg.poll_interval;
        let found = tokio::task::spawn_blocking(move || crate::tunnel::discover(&cfg))
            .await
            .ok()
            .flatten();
        let url = found.as_ref().map(|f| f.url.clone());
        if url != last {
            match &found {
                Some(f) => {
                    let mut hooks: Vec<String> = app.live().hooks.keys().cloned().collect();
                    hooks.sort();
                    let examples: Vec<String> = hooks
                        .iter()
                        .map(|h| format!("{}/hooks/{h}", f.url))
                        .collect();
                    log::info!(
                        "tunnel public URL is now {} (from {}); webhook URLs: {}",
                        f.url,
                        f.source,
                        examples.join(", ")
                    );
                }
                None => log::info!("tunnel public URL is gone"),
            }
            if let Ok(mut g) = app.tunnel_url.lock() {
                *g = url.clone();
            }
            last = url;
        }
        tokio::time::sleep(poll).await;
    }
}

/// Delete old finished events now and then, in small batches so ingest
/// never waits long behind a big DELETE.
async fn retention_loop(app: Arc<App>) {
    loop {
        let r = app.live().config.retention.clone();
        tokio::time::sleep(r.interval).await;
        let now = std::time::SystemTime::now();
        let ago = |days: f64| {
            (days > 0.0 && days.is_finite())
                .then(|| {
                    // try_: `days = 1e300` must not panic; it keeps everything.
                    Duration::try_from_secs_f64(days * 86_400.0)
                        .ok()
                        .and_then(|d| now.checked_sub(d))
                })
                .flatten()
        };
        let (done_before, dead_before) = (ago(r.days), ago(r.dead_days));
        if done_before.is_none() && dead_before.is_none() {
            continue;
        }
        let store = app.store.clone();
        let res = tokio::task::spawn_blocking(move || {
            let mut total = 0usize;
            loop {
                let n = store.sweep(done_before, dead_before, r.batch)?;
                total += n;
                if n < r.batch as usize {
                    return Ok::<_, StoreError>(total);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        })
        .await;
        match res {
            Ok(Ok(0)) => {}
            Ok(Ok(n)) => {
                app.metrics.retention_deleted.inc_by(n as u64);
                log::info!("retention: deleted {n} old event(s)");
            }
            Ok(Err(e)) => log::warn!("retention: {e}"),
            Err(e) => log::warn!("retention: {e}"),
        }
    }
}

/// Ping the store every couple of seconds so readiness reflects an outage
/// even when no traffic arrives.
fn spawn_store_monitor(app: Arc<App>, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        while !stop.load(Ordering::Acquire) {
            match app.store.ping().and_then(|()| app.store.counts()) {
                Ok(c) => {
                    app.writer.status.set_ok();
                    if let Ok(mut g) = app.delivery.counts.lock() {
                        *g = c;
                    }
                    if let Ok(a) = app.store.action_counts() {
                        if let Ok(mut g) = app.delivery.action_counts.lock() {
                            *g = a;
                        }
                    }
                }
                Err(e) => app.writer.status.set_error(&e),
            }
            app.metrics
                .store_up
                .set(i64::from(app.writer.status.available()));
            for _ in 0..40 {
                if stop.load(Ordering::Acquire) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    })
}
