//! The systemd watchdog, fed only while we are really healthy.
//!
//! A dedicated thread (not a tokio task: a stalled runtime must not be able
//! to keep petting) checks two things each period: that the tokio runtime
//! still schedules a task promptly, and the daemon's health probe (a store
//! writer stuck inside one batch, for instance). An unreachable database
//! is not a failure here: writers fail fast and stay idle, and readiness
//! (/readyz, STATUS=) reports it instead of systemd killing us in a loop.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// Asked each period; `Some(problem)` withholds the ping.
pub type Probe = Box<dyn Fn() -> Option<String> + Send>;

pub struct Watchdog {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Watchdog {
    /// Start pinging if systemd asked for a watchdog (`WATCHDOG_USEC`).
    pub fn start(runtime: tokio::runtime::Handle, probe: Probe) -> Watchdog {
        let stop = Arc::new(AtomicBool::new(false));
        let Some(timeout) = sd_notify::watchdog_enabled() else {
            return Watchdog { stop, thread: None };
        };
        // Ping at a third of the interval: below the required half, with
        // slack for a busy machine.
        let period = (timeout / 3).max(Duration::from_millis(50));
        log::info!(
            "watchdog enabled: timeout {:?}, pinging every {:?} while healthy",
            timeout,
            period
        );
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("watchdog".into())
            .spawn(move || run(runtime, probe, period, flag))
            .map_err(|e| log::error!("cannot start watchdog thread: {e}"))
            .ok();
        Watchdog { stop, thread }
    }

    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Does the runtime run a freshly spawned task within `limit`?
fn runtime_responsive(rt: &tokio::runtime::Handle, limit: Duration) -> bool {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    rt.spawn(async move {
        let _ = tx.send(());
    });
    rx.recv_timeout(limit).is_ok()
}

fn run(rt: tokio::runtime::Handle, probe: Probe, period: Duration, stop: Arc<AtomicBool>) {
    let mut healthy = true;
    while !stop.load(Ordering::Acquire) {
        let problem = if !runtime_responsive(&rt, period) {
            Some("the async runtime did not run a task in time".to_string())
        } else {
            probe()
        };
        match problem {
            None => {
                if !healthy {
                    log::warn!("watchdog: healthy again, resuming pings");
                    healthy = true;
                }
                super::notify::watchdog();
            }
            Some(p) => {
                if healthy {
                    log::error!("watchdog: withholding pings: {p}");
                    healthy = false;
                }
            }
        }
        let mut slept = Duration::ZERO;
        while slept < period && !stop.load(Ordering::Acquire) {
            let step = Duration::from_millis(20).min(period - slept);
            std::thread::sleep(step);
            slept += step;
        }
    }
}
