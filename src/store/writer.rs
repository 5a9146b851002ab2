//! Group commit: request handlers hand events to writer threads through a
//! bounded queue; each writer takes everything queued (up to `batch_max`),
//! stores it in one transaction, then answers every waiting request.
//!
//! This is where throughput comes from: one commit (one fsync, one round
//! trip) serves many requests. A full queue is answered with 503 at once
//! instead of letting requests pile up past the sender's timeout.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::{NewEvent, Outcome, Store, StoreError};
use crate::metrics::Metrics;

/// The reply a request waits for.
pub type Reply = Result<Outcome, StoreError>;

struct Job {
    event: NewEvent,
    reply: oneshot::Sender<Reply>,
}

#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    #[error("store queue is full ({0} events waiting)")]
    Full(usize),
    #[error("store writer has stopped")]
    Closed,
}

/// Liveness of one writer thread, read by the watchdog: when the writer is
/// inside a batch, the time (ms since `epoch`, plus one) it started; 0 when
/// idle. Idle writers are healthy however long they wait for work.
pub struct WriterHealth {
    busy_since_ms: AtomicU64,
}

/// Shared state of the store: health, last error, queue depth.
pub struct StoreStatus {
    available: AtomicBool,
    /// The schema is known to be in place (migrations ran); until then
    /// nothing is written to the store (events are spooled, or 503).
    schema_ready: AtomicBool,
    last_error: Mutex<Option<String>>,
    pub queue_depth: AtomicUsize,
}

impl StoreStatus {
    /// A store that is ready (the embedded one, migrated before start).
    pub fn new() -> StoreStatus {
        StoreStatus {
            available: AtomicBool::new(true),
            schema_ready: AtomicBool::new(true),
            last_error: Mutex::new(None),
            queue_depth: AtomicUsize::new(0),
        }
    }

    /// A store not reached yet (PostgreSQL at start): unavailable until the
    /// migrations ran, see [`StoreStatus::set_schema_ready`].
    pub fn waiting(reason: &str) -> StoreStatus {
        StoreStatus {
            available: AtomicBool::new(false),
            schema_ready: AtomicBool::new(false),
            last_error: Mutex::new(Some(reason.to_string())),
            queue_depth: AtomicUsize::new(0),
        }
    }

    pub fn schema_ready(&self) -> bool {
        self.schema_ready.load(Ordering::Acquire)
    }

    /// The migrations ran: writes may go to the store from now on.
    pub fn set_schema_ready(&self) {
        self.schema_ready.store(true, Ordering::Release);
        self.set_ok();
    }

    /// The store answered. Ignored until the schema is ready: a ping that
    /// works does not make a database without our tables usable.
    pub fn set_ok(&self) {
        if !self.schema_ready() {
            return;
        }
        if !self.available.swap(true, Ordering::AcqRel) {
            log::info!("store is reachable again");
        }
        if let Ok(mut g) = self.last_error.lock() {
            *g = None;
        }
    }

    pub fn set_error(&self, e: &StoreError) {
        if matches!(e, StoreError::Unavailable(_)) && self.available.swap(false, Ordering::AcqRel) {
            log::error!("store became unavailable: {e}");
        }
        if let Ok(mut g) = self.last_error.lock() {
            *g = Some(e.to_string());
        }
    }

    pub fn available(&self) -> bool {
        self.available.load(Ordering::Acquire)
    }

    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().ok().and_then(|g| g.clone())
    }
}

impl Default for StoreStatus {
    fn default() -> Self {
        StoreStatus::new()
    }
}

/// Handle used by request handlers to submit events.
pub struct Writer {
    tx: SyncSender<Job>,
    capacity: usize,
    closing: Arc<AtomicBool>,
    health: Arc<Vec<WriterHealth>>,
    epoch: Instant,
    threads: Mutex<Vec<JoinHandle<()>>>,
    pub status: Arc<StoreStatus>,
    pub spool: Option<Arc<super::spool::Spool>>,
    /// A spool left by an earlier configuration that is only drained.
    pub leftover: Option<Arc<super::spool::Spool>>,
}

pub struct WriterOptions {
    pub threads: usize,
    pub batch_max: usize,
    /// Most bytes (bodies and headers) in one batch; one larger event still
    /// goes alone.
    pub batch_max_bytes: usize,
    pub queue_capacity: usize,
    /// Test-only: while this file exists, writers stop making progress, so
    /// the watchdog test can prove that a wedged writer stops the pings.
    pub wedge_file: Option<PathBuf>,
    /// Where events go while PostgreSQL is unreachable.
    pub spool: Option<Arc<super::spool::Spool>>,
    /// A non-empty spool the configuration no longer uses (spool turned
    /// off): drained into the store, never appended to.
    pub leftover: Option<Arc<super::spool::Spool>>,
}

impl Writer {
    pub fn start(
        store: Arc<dyn Store>,
        opts: WriterOptions,
        metrics: Arc<Metrics>,
        status: Arc<StoreStatus>,
    ) -> Result<Writer, StoreError> {
        let (tx, rx) = sync_channel::<Job>(opts.queue_capacity);
        let rx = Arc::new(Mutex::new(rx));
        let closing = Arc::new(AtomicBool::new(false));
        let epoch = Instant::now();
        let n = opts.threads.max(1);
        let health: Arc<Vec<WriterHealth>> = Arc::new(
            (0..n)
                .map(|_| WriterHealth {
                    busy_since_ms: AtomicU64::new(0),
                })
                .collect(),
        );
        let mut threads = Vec::with_capacity(n + 1);
        let drained = opts
            .spool
            .clone()
            .map(|s| (s, false))
            .or_else(|| opts.leftover.clone().map(|s| (s, true)));
        if let Some((spool, only_leftover)) = drained {
            let (store, closing) = (store.clone(), closing.clone());
            let (status, metrics) = (status.clone(), metrics.clone());
            let handle = std::thread::Builder::new()
                .name("spool-drain".into())
                .spawn(move || {
                    drain_spool(
                        &spool,
                        store.as_ref(),
                        &closing,
                        &status,
                        &metrics,
                        only_leftover,
                    )
                })
                .map_err(|e| {
                    StoreError::Unavailable(format!("cannot start spool thread: {e}").into())
                })?;
            threads.push(handle);
        }
        for i in 0..n {
            let ctx = WriterThread {
                index: i,
                rx: rx.clone(),
                sink: store.sink(),
                batch_max: opts.batch_max,
                batch_max_bytes: opts.batch_max_bytes,
                carry: None,
                closing: closing.clone(),
                health: health.clone(),
                epoch,
                metrics: metrics.clone(),
                status: status.clone(),
                wedge_file: opts.wedge_file.clone(),
                spool: opts.spool.clone(),
                spool_logged: false,
                fail_fast: None,
            };
            let handle = std::thread::Builder::new()
                .name(format!("store-writer-{i}"))
                .spawn(move || ctx.run())
                .map_err(|e| {
                    StoreError::Unavailable(format!("cannot start writer thread: {e}").into())
                })?;
            threads.push(handle);
        }
        Ok(Writer {
            tx,
            capacity: opts.queue_capacity,
            closing,
            health,
            epoch,
            threads: Mutex::new(threads),
            status,
            spool: opts.spool,
            leftover: opts.leftover,
        })
    }

    /// Queue an event; never blocks. The receiver resolves once it is durable
    /// (or the batch failed).
    pub fn submit(&self, event: NewEvent) -> Result<oneshot::Receiver<Reply>, SubmitError> {
        if self.closing.load(Ordering::Acquire) {
            return Err(SubmitError::Closed);
        }
        let (reply, rx) = oneshot::channel();
        self.status.queue_depth.fetch_add(1, Ordering::Relaxed);
        match self.tx.try_send(Job { event, reply }) {
            Ok(()) => Ok(rx),
            Err(e) => {
                self.status.queue_depth.fetch_sub(1, Ordering::Relaxed);
                match e {
                    TrySendError::Full(_) => Err(SubmitError::Full(self.capacity)),
                    TrySendError::Disconnected(_) => Err(SubmitError::Closed),
                }
            }
        }
    }

    /// How long the slowest writer has been inside its current batch
    /// (zero when all are idle).
    pub fn max_stall(&self) -> Duration {
        let now = self.epoch.elapsed().as_millis() as u64 + 1;
        let oldest = self
            .health
            .iter()
            .map(|h| h.busy_since_ms.load(Ordering::Acquire))
            .filter(|&t| t != 0)
            .min()
            .unwrap_or(now);
        Duration::from_millis(now.saturating_sub(oldest))
    }

    /// Stop taking new events, let the writers store what is queued, and
    /// wait for them until `deadline`. Returns false if some writer did not
    /// finish in time.
    pub fn close(&self, deadline: Instant) -> bool {
        self.closing.store(true, Ordering::Release);
        let threads = match self.threads.lock() {
            Ok(mut g) => std::mem::take(&mut *g),
            Err(_) => return false,
        };
        let mut all = true;
        for t in threads {
            while !t.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            if t.is_finished() {
                let _ = t.join();
            } else {
                all = false;
            }
        }
        all
    }
}

struct WriterThread {
    index: usize,
    rx: Arc<Mutex<Receiver<Job>>>,
    sink: Box<dyn super::BatchSink>,
    batch_max: usize,
    batch_max_bytes: usize,
    /// A job taken that did not fit the previous batch's byte budget.
    carry: Option<Job>,
    closing: Arc<AtomicBool>,
    health: Arc<Vec<WriterHealth>>,
    epoch: Instant,
    metrics: Arc<Metrics>,
    status: Arc<StoreStatus>,
    wedge_file: Option<PathBuf>,
    spool: Option<Arc<super::spool::Spool>>,
    spool_logged: bool,
    /// Until when batches fail at once after the store was unreachable.
    fail_fast: Option<(Instant, super::Cause)>,
}

/// What a job weighs against `batch_max_bytes`.
fn job_bytes(j: &Job) -> usize {
    j.event
        .body
        .len()
        .saturating_add(j.event.headers.byte_len())
        .saturating_add(j.event.event_type.len())
}

/// How long batches are refused at once after one found the store down.
const FAIL_FAST: Duration = Duration::from_millis(500);

/// Move spooled events into the store whenever it answers; in order. Rows
/// the database refuses are set aside in the spool file (kept, logged,
/// counted) so they never hold up the rows behind them. With
/// `only_leftover` (a spool the configuration no longer uses) the thread
/// ends once it is empty, giving its connection back to the pool.
fn drain_spool(
    spool: &super::spool::Spool,
    store: &dyn Store,
    closing: &AtomicBool,
    status: &StoreStatus,
    metrics: &Metrics,
    only_leftover: bool,
) {
    let mut sink: Option<Box<dyn super::BatchSink>> = None;
    let mut moved_total = 0usize;
    while !closing.load(Ordering::Acquire) {
        if spool.is_empty() {
            if moved_total > 0 {
                log::info!("spool drained: {moved_total} event(s) moved into the store");
                moved_total = 0;
            }
            if only_leftover {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
            continue;
        }
        if !status.schema_ready() {
            std::thread::sleep(Duration::from_millis(200));
            continue;
        }
        let sink = sink.get_or_insert_with(|| store.sink());
        match spool.drain_into(sink.as_mut(), 256, SPOOL_DRAIN_BYTES) {
            Ok(d) => {
                if d.moved > 0 {
                    status.set_ok();
                }
                for (event, why) in &d.set_aside {
                    metrics.spool_rejected.inc();
                    log::error!(
                        "spool: the database refused event {} (hook {}, delivery {:?}): {why}; set aside in table spool_rejected of {}",
                        event.id,
                        event.hook_id,
                        event.delivery_id,
                        spool.path().display()
                    );
                }
                moved_total += d.moved;
            }
            Err(e) => {
                status.set_error(&e);
                std::thread::sleep(Duration::from_secs(1));
            }
        }
    }
}

/// Most bytes moved out of the spool in one batch.
const SPOOL_DRAIN_BYTES: usize = 8 * 1024 * 1024;

impl WriterThread {
    /// Write a batch: to the spool while it holds anything (keeps order of
    /// arrival), else to the store, falling back to the spool when the store
    /// is unreachable.
    fn write(&mut self, events: &[NewEvent]) -> Result<Vec<Outcome>, StoreError> {
        if let Some(sp) = &self.spool {
            if !sp.is_empty() {
                return sp.append(events);
            }
        }
        // Right after a batch found the store unreachable, answer the next
        // ones at once instead of each waiting for another connect timeout:
        // a refusal must stay quick under load (the store monitor and the
        // first batch after the window notice when it is back).
        if let Some((until, e)) = &self.fail_fast {
            if Instant::now() < *until && self.spool.is_none() {
                return Err(StoreError::Unavailable(e.clone()));
            }
            self.fail_fast = None;
        }
        let result = if !self.status.schema_ready() {
            // Not migrated yet (the database has not answered since start).
            let why = self
                .status
                .last_error()
                .unwrap_or_else(|| "not reached yet".into());
            Err(StoreError::Unavailable(
                if why.contains("waiting for the database") {
                    why
                } else {
                    format!("waiting for the database: {why}")
                }
                .into(),
            ))
        } else if self.sink.deadline().is_some() {
            // Bounded by the sink's deadline: waiting on the database, not
            // stuck; the watchdog does not count it (the clock restarts after).
            self.set_busy(false);
            let r = self.sink.write_batch(events);
            self.set_busy(true);
            r
        } else {
            self.sink.write_batch(events)
        };
        if let Err(StoreError::Unavailable(e)) = &result {
            self.fail_fast = Some((Instant::now() + FAIL_FAST, e.clone()));
        }
        match result {
            Err(StoreError::Unavailable(e)) if self.spool.is_some() => {
                self.status.set_error(&StoreError::Unavailable(e.clone()));
                let sp = self
                    .spool
                    .as_ref()
                    .ok_or(StoreError::Unavailable(e.clone()))?;
                if !self.spool_logged {
                    log::warn!(
                        "store unreachable ({e}); spooling deliveries to {} until it is back",
                        sp.path().display()
                    );
                    self.spool_logged = true;
                }
                sp.append(events)
            }
            Ok(o) => {
                self.spool_logged = false;
                Ok(o)
            }
            r => r,
        }
    }

    fn set_busy(&self, busy: bool) {
        let v = if busy {
            self.epoch.elapsed().as_millis() as u64 + 1
        } else {
            0
        };
        if let Some(h) = self.health.get(self.index) {
            h.busy_since_ms.store(v, Ordering::Release);
        }
    }

    /// Take up to `batch_max` jobs: wait for the first, then drain what is
    /// already queued. Returns None when closing and the queue is empty.
    fn take_batch(&mut self) -> Option<Vec<Job>> {
        loop {
            let guard = match self.rx.lock() {
                Ok(g) => g,
                Err(_) => return None,
            };
            let first = match self.carry.take() {
                Some(j) => Ok(j),
                None => guard.recv_timeout(Duration::from_millis(250)),
            };
            match first {
                Ok(first) => {
                    let mut jobs = Vec::with_capacity(self.batch_max.min(64));
                    let mut bytes = job_bytes(&first);
                    jobs.push(first);
                    while jobs.len() < self.batch_max {
                        match guard.try_recv() {
                            Ok(j) => {
                                let b = job_bytes(&j);
                                if bytes.saturating_add(b) > self.batch_max_bytes {
                                    // Keep it for the next batch (this writer's).
                                    self.carry = Some(j);
                                    break;
                                }
                                bytes += b;
                                jobs.push(j);
                            }
                            Err(_) => break,
                        }
                    }
                    drop(guard);
                    self.set_busy(true);
                    return Some(jobs);
                }
                Err(RecvTimeoutError::Timeout) => {
                    if self.closing.load(Ordering::Acquire) && self.carry.is_none() {
                        return None;
                    }
                }
                Err(RecvTimeoutError::Disconnected) => return None,
            }
        }
    }

    fn run(mut self) {
        while let Some(jobs) = self.take_batch() {
            self.status
                .queue_depth
                .fetch_sub(jobs.len(), Ordering::Relaxed);
            if let Some(f) = &self.wedge_file {
                while f.exists() {
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
            let (events, replies): (Vec<NewEvent>, Vec<oneshot::Sender<Reply>>) =
                jobs.into_iter().map(|j| (j.event, j.reply)).unzip();
            let started = Instant::now();
            let result = self.write(&events);
            self.metrics
                .store_commit_seconds
                .observe(started.elapsed().as_secs_f64());
            match result {
                Ok(outcomes) => {
                    if self.spool.as_ref().is_none_or(|s| s.is_empty()) {
                        self.status.set_ok();
                    }
                    self.metrics.store_commits.inc();
                    self.metrics.store_batch_size.observe(events.len() as f64);
                    for ((reply, outcome), event) in replies.into_iter().zip(outcomes).zip(&events)
                    {
                        let answer = match outcome {
                            super::Outcome::Refused(why) => {
                                self.metrics.store_refused.inc();
                                log::error!(
                                    "store writer {}: the database refused event {} (hook {}, delivery {:?}): {why}; the other {} event(s) of its batch are not affected",
                                    self.index,
                                    event.id,
                                    event.hook_id,
                                    event.delivery_id,
                                    events.len() - 1
                                );
                                Err(StoreError::Rejected(why))
                            }
                            o => Ok(o),
                        };
                        // The requester may have timed out; the event is stored anyway.
                        let _ = reply.send(answer);
                    }
                }
                Err(e) => {
                    self.metrics.store_errors.inc();
                    self.status.set_error(&e);
                    log::warn!(
                        "store writer {}: batch of {} events failed: {e}",
                        self.index,
                        events.len()
                    );
                    for reply in replies {
                        let _ = reply.send(Err(e.clone()));
                    }
                }
            }
            self.set_busy(false);
        }
    }
}
