//! sd_notify messages. Without `NOTIFY_SOCKET` (not under systemd) every
//! call is a no-op, so the daemon runs the same by hand.

use sd_notify::NotifyState;

fn send(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        log::debug!("sd_notify failed: {e}");
    }
}

/// READY=1 with a status line.
pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

pub fn status(status: &str) {
    send(&[NotifyState::Status(status)]);
}

pub fn stopping(status: &str) {
    send(&[NotifyState::Stopping, NotifyState::Status(status)]);
}

/// RELOADING=1 with MONOTONIC_USEC, as systemd ≥ 253 requires (252 ignores it).
pub fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[
            NotifyState::Reloading,
            now,
            NotifyState::Status("reloading configuration"),
        ]),
        Err(_) => send(&[
            NotifyState::Reloading,
            NotifyState::Status("reloading configuration"),
        ]),
    }
}

pub fn watchdog() {
    send(&[NotifyState::Watchdog]);
}
