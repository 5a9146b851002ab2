//! Signals: SIGTERM/SIGINT drain and exit, SIGHUP reloads the config.
//!
//! signal-hook-tokio turns them into a stream read by the main task, so the
//! handlers themselves do nothing but record the signal.

use futures_util::StreamExt;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook_tokio::Signals;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// Stop accepting, drain, exit 0. Carries the signal's name for the log.
    Shutdown(&'static str),
    Reload,
}

pub struct SignalStream {
    signals: Signals,
}

impl SignalStream {
    /// Register the handlers. Must be called inside the tokio runtime.
    pub fn new() -> std::io::Result<SignalStream> {
        Ok(SignalStream {
            signals: Signals::new([SIGTERM, SIGINT, SIGHUP])?,
        })
    }

    /// The next signal; `None` only if the stream ends (it does not in practice).
    pub async fn next(&mut self) -> Option<Event> {
        loop {
            match self.signals.next().await? {
                SIGTERM => return Some(Event::Shutdown("SIGTERM")),
                SIGINT => return Some(Event::Shutdown("SIGINT")),
                SIGHUP => return Some(Event::Reload),
                _ => continue,
            }
        }
    }

    pub fn close(self) {
        self.signals.handle().close();
    }
}
