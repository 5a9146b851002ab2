//! Everything that talks to systemd: inherited sockets, sd_notify,
//! the health-gated watchdog, and logging in the journal's format.

pub mod activation;
pub mod journal;
pub mod notify;
pub mod watchdog;
