//! Client-side deadlines for database calls.
//!
//! Server-side limits (`statement_timeout`) and TCP limits (keepalives,
//! `tcp_user_timeout`) do not cover every way PostgreSQL can stop
//! answering: a frozen server process (or a whole frozen VM) still has its
//! kernel accept connections and acknowledge packets, so a query on it
//! blocks for ever. The `postgres` client has no per-call timeout, so the
//! only bound that always holds is to make the call on another thread and
//! stop waiting for it. The thread stays blocked until the database answers
//! or the connection dies; its late result is dropped. That is safe for
//! ingest because every insert is `ON CONFLICT DO NOTHING` on the delivery
//! key: an event both committed late and spooled is stored once.

use std::sync::mpsc::{channel, sync_channel, Receiver, RecvTimeoutError, Sender, TryRecvError};
use std::time::Duration;

use super::{BatchSink, NewEvent, Outcome, StoreError};

type BatchResult = Result<Vec<Outcome>, StoreError>;

/// A [`BatchSink`] whose calls return within `timeout`: the real sink runs on
/// a helper thread of its own. While a call that overran is still blocked
/// there, further calls are refused at once ("unavailable"), so a frozen
/// database costs one timeout, not one per batch, and never more than one
/// blocked thread per sink.
pub struct DeadlineSink {
    name: String,
    timeout: Duration,
    inner: Option<Box<dyn BatchSink>>,
    helper: Option<Helper>,
    /// A call overran and its helper has not answered yet.
    overran: bool,
}

struct Helper {
    jobs: Sender<Vec<NewEvent>>,
    results: Receiver<BatchResult>,
}

impl DeadlineSink {
    pub fn new(name: String, inner: Box<dyn BatchSink>, timeout: Duration) -> DeadlineSink {
        DeadlineSink {
            name,
            timeout,
            inner: Some(inner),
            helper: None,
            overran: false,
        }
    }

    fn helper(&mut self) -> Result<&Helper, StoreError> {
        if self.helper.is_none() {
            let mut sink = self.inner.take().ok_or_else(|| {
                StoreError::Unavailable(format!("{}: helper is gone", self.name).into())
            })?;
            let (jobs, job_rx) = channel::<Vec<NewEvent>>();
            let (res_tx, results) = sync_channel::<BatchResult>(1);
            std::thread::Builder::new()
                .name(format!("{}-db", self.name))
                .spawn(move || {
                    for events in job_rx {
                        if res_tx.send(sink.write_batch(&events)).is_err() {
                            break;
                        }
                    }
                })
                .map_err(|e| {
                    StoreError::Unavailable(format!("cannot start a database thread: {e}").into())
                })?;
            self.helper = Some(Helper { jobs, results });
        }
        self.helper
            .as_ref()
            .ok_or_else(|| StoreError::Unavailable("no database thread".into()))
    }
}

impl BatchSink for DeadlineSink {
    fn write_batch(&mut self, events: &[NewEvent]) -> BatchResult {
        let timeout = self.timeout;
        let overran = self.overran;
        let helper = self.helper()?;
        if overran {
            match helper.results.try_recv() {
                // The late answer of the batch that overran: those events were
                // spooled or refused meanwhile; the helper is free again.
                Ok(_) => {}
                Err(TryRecvError::Empty) => {
                    return Err(StoreError::Unavailable(
                        format!(
                    "the database has not answered for more than store.write_timeout ({timeout:?})"
                )
                        .into(),
                    ))
                }
                Err(TryRecvError::Disconnected) => {
                    return Err(StoreError::Unavailable("database thread stopped".into()))
                }
            }
            self.overran = false;
        }
        let helper = self.helper()?;
        helper
            .jobs
            .send(events.to_vec())
            .map_err(|_| StoreError::Unavailable("database thread stopped".into()))?;
        match helper.results.recv_timeout(timeout) {
            Ok(r) => r,
            Err(RecvTimeoutError::Timeout) => {
                self.overran = true;
                Err(StoreError::Unavailable(
                    format!("no answer from the database within store.write_timeout ({timeout:?})")
                        .into(),
                ))
            }
            Err(RecvTimeoutError::Disconnected) => {
                Err(StoreError::Unavailable("database thread stopped".into()))
            }
        }
    }

    fn deadline(&self) -> Option<Duration> {
        Some(self.timeout)
    }
}

/// Run one blocking database call `f` and wait for it at most `timeout`.
/// On timeout the call is left to finish (or fail) on its own thread; the
/// caller gets "unavailable". The number of such threads is bounded by the
/// pool: each holds a pooled connection, and when all are held new calls
/// fail in `Pool::get` after its connection timeout.
pub fn bounded<T, F>(what: &str, timeout: Duration, f: F) -> Result<T, StoreError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, StoreError> + Send + 'static,
{
    let (tx, rx) = sync_channel(1);
    std::thread::Builder::new()
        .name("store-call".into())
        .spawn(move || {
            let _ = tx.send(f());
        })
        .map_err(|e| {
            StoreError::Unavailable(format!("cannot start a database thread: {e}").into())
        })?;
    match rx.recv_timeout(timeout) {
        Ok(r) => r,
        Err(RecvTimeoutError::Timeout) => Err(StoreError::Unavailable(
            format!("{what}: no answer from the database within {timeout:?}").into(),
        )),
        Err(RecvTimeoutError::Disconnected) => Err(StoreError::Unavailable(
            format!("{what}: the database call panicked").into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc::Receiver;
    use std::sync::{Arc, Mutex};
    use std::time::Instant;

    /// A sink that blocks until the test lets one call through.
    struct Gate(Arc<Mutex<Receiver<()>>>);

    impl BatchSink for Gate {
        fn write_batch(&mut self, events: &[NewEvent]) -> BatchResult {
            let _ = self.0.lock().unwrap().recv();
            Ok(events
                .iter()
                .map(|e| Outcome::Stored(e.id.clone()))
                .collect())
        }
    }

    fn event() -> NewEvent {
        NewEvent {
            id: "e1".into(),
            hook_id: "h".into(),
            delivery_id: "d".into(),
            event_type: "t".into(),
            received_at: std::time::SystemTime::now(),
            headers: crate::store::Headers::default(),
            body: bytes::Bytes::new(),
            state: crate::store::EventState::Stored,
            actions: None,
        }
    }

    #[test]
    fn overrun_is_unavailable_then_refused_at_once_until_the_call_returns() {
        let (open, rx) = std::sync::mpsc::channel();
        let gate = Gate(Arc::new(Mutex::new(rx)));
        let mut s = DeadlineSink::new("t".into(), Box::new(gate), Duration::from_millis(50));
        let t = Instant::now();
        assert!(matches!(
            s.write_batch(&[event()]),
            Err(StoreError::Unavailable(_))
        ));
        assert!(t.elapsed() < Duration::from_secs(5));
        // Still blocked: refused without waiting again.
        assert!(matches!(
            s.write_batch(&[event()]),
            Err(StoreError::Unavailable(m)) if m.to_string().contains("has not answered")
        ));
        // The blocked call returns (its late result is dropped); the next works.
        open.send(()).unwrap();
        open.send(()).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match s.write_batch(&[event()]) {
                Ok(o) => {
                    assert_eq!(o, vec![Outcome::Stored("e1".into())]);
                    break;
                }
                Err(_) => assert!(Instant::now() < deadline, "never recovered"),
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}
