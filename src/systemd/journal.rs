//! Logging: to the journal with priorities, to syslog, or to plain stderr.
//!
//! When systemd connects stderr to the journal it sets `JOURNAL_STREAM` to
//! the stream's device and inode; if they match our fd 2, a `<N>` prefix on
//! each line becomes the entry's PRIORITY. That needs no socket and no extra
//! crate, and keeps working inside the sandbox of a hardened unit.

use std::io::Write;
use std::sync::{Mutex, OnceLock};

use crate::config::{LogConfig, LogTarget};

enum Sink {
    Journal,
    Stderr,
    Syslog(Mutex<syslog::Logger<syslog::LoggerBackend, syslog::Formatter3164>>),
}

struct Logger {
    sink: Sink,
}

static LOGGER: OnceLock<Logger> = OnceLock::new();

/// Does `JOURNAL_STREAM` describe our stderr?
pub fn stderr_is_journal() -> bool {
    let Ok(v) = std::env::var("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = v.split_once(':') else {
        return false;
    };
    let (Ok(dev), Ok(ino)) = (dev.parse::<u64>(), ino.parse::<u64>()) else {
        return false;
    };
    match nix::sys::stat::fstat(std::io::stderr()) {
        // dev_t and ino_t differ in width between platforms.
        #[allow(clippy::unnecessary_cast)]
        Ok(st) => st.st_dev as u64 == dev && st.st_ino as u64 == ino,
        Err(_) => false,
    }
}

/// Install the global logger. Called once, early; later calls only change
/// the level (the target needs a restart).
pub fn init(cfg: &LogConfig) {
    let sink = match cfg.target {
        LogTarget::Journal => Sink::Journal,
        LogTarget::Stderr => Sink::Stderr,
        LogTarget::Auto if stderr_is_journal() => Sink::Journal,
        LogTarget::Auto => Sink::Stderr,
        LogTarget::Syslog => {
            let formatter = syslog::Formatter3164 {
                facility: syslog::Facility::LOG_DAEMON,
                hostname: None,
                process: "webhookd".into(),
                pid: std::process::id(),
            };
            match syslog::unix(formatter) {
                Ok(l) => Sink::Syslog(Mutex::new(l)),
                Err(e) => {
                    eprintln!("webhookd: cannot connect to syslog ({e}); logging to stderr");
                    Sink::Stderr
                }
            }
        }
    };
    let logger = LOGGER.get_or_init(|| Logger { sink });
    let _ = log::set_logger(logger);
    log::set_max_level(cfg.level);
}

/// Change the level (on reload).
pub fn set_level(level: log::LevelFilter) {
    log::set_max_level(level);
}

/// Log target for lines that are notices (priority 5): normal but
/// significant, such as a replay an operator asked for. The `log` crate has
/// no notice level, so these are `info` lines with this target.
pub const NOTICE: &str = "webhookd::notice";

/// syslog(3) priority of a log level.
fn priority(level: log::Level) -> u8 {
    match level {
        log::Level::Error => 3,
        log::Level::Warn => 4,
        log::Level::Info => 6,
        log::Level::Debug | log::Level::Trace => 7,
    }
}

/// A message as exactly one log line: control characters (a newline from
/// a sender's header or body, a database error's detail lines) are escaped,
/// so no logged value can start a journal entry of its own.
fn one_line(msg: String) -> String {
    if !msg.chars().any(char::is_control) {
        return msg;
    }
    let mut out = String::with_capacity(msg.len() + 8);
    for c in msg.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push(' '),
            c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

impl log::Log for Logger {
    fn enabled(&self, m: &log::Metadata<'_>) -> bool {
        // Libraries (hyper, r2d2, postgres) only get to speak about problems.
        m.level() <= log::max_level()
            && (m.target().starts_with("webhookd") || m.level() <= log::Level::Warn)
    }

    fn log(&self, r: &log::Record<'_>) {
        if !self.enabled(r.metadata()) {
            return;
        }
        let msg = one_line(r.args().to_string());
        match &self.sink {
            Sink::Journal => {
                // One write per line so concurrent lines never interleave.
                let prio = if r.target() == NOTICE {
                    5
                } else {
                    priority(r.level())
                };
                let line = format!("<{prio}>{msg}\n");
                let _ = std::io::stderr().lock().write_all(line.as_bytes());
            }
            Sink::Stderr => {
                let now = humantime::format_rfc3339_millis(std::time::SystemTime::now());
                let line = format!("{now} {:<5} {msg}\n", r.level());
                let _ = std::io::stderr().lock().write_all(line.as_bytes());
            }
            Sink::Syslog(l) => {
                if let Ok(mut l) = l.lock() {
                    let _ = match r.level() {
                        log::Level::Error => l.err(msg),
                        log::Level::Warn => l.warning(msg),
                        log::Level::Info if r.target() == NOTICE => l.notice(msg),
                        log::Level::Info => l.info(msg),
                        _ => l.debug(msg),
                    };
                }
            }
        }
    }

    fn flush(&self) {
        let _ = std::io::stderr().flush();
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn one_line_escapes_controls() {
        assert_eq!(super::one_line("a\nb\r\u{0}".into()), "a\\nb\\r\\u{0}");
        assert_eq!(super::one_line("plain".into()), "plain");
    }
}
