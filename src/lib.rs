//! webhookd: a systemd-native webhook receiver.
//!
//! The binary (`src/main.rs`) is a thin shell around [`cli::main`]; everything
//! lives in this library so the pure parts (`verify`, `config`) can be fuzzed
//! and tested without a running daemon.

pub mod app;
pub mod check;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod deliver;
pub mod id;
pub mod import;
pub mod job;
pub mod metrics;
pub mod payload;
pub mod rules;
pub mod server;
pub mod signals;
pub mod store;
pub mod systemd;
pub mod tls;
pub mod tunnel;
pub mod verify;

/// Version string reported by `--version`, `/status` and the metrics.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The git commit the binary was built from (build.rs; "unknown" without git).
pub const GIT_COMMIT: &str = env!("WEBHOOKD_GIT_COMMIT");
