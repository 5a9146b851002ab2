//! Logging: to the journal with structured fields, to syslog, or to stderr
//! (plain text or one JSON object per line).
//!
//! The journal gets entries through journald's native protocol: one datagram
//! per entry to `/run/systemd/journal/socket`, each field `NAME=value\n` (or
//! `NAME\n` + a little-endian u64 length + the bytes + `\n` when the value
//! holds a newline). Besides MESSAGE, PRIORITY and SYSLOG_IDENTIFIER, the
//! key-value pairs of a log record (`log::info!(hook = id; "...")`) become
//! `WEBHOOKD_<KEY>` fields, so `journalctl WEBHOOKD_DELIVERY=<id>` finds a
//! request. Callers put only ids, statuses and sizes there: never a secret or
//! a body. When the socket cannot be used, a line with a `<N>` prefix goes to
//! stderr instead (journald maps it to PRIORITY when stderr is the journal),
//! which needs no socket and works in any sandbox.

use std::io::Write;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use crate::config::{LogConfig, LogFormat, LogTarget};

/// journald's socket for the native protocol.
pub const JOURNAL_SOCKET: &str = "/run/systemd/journal/socket";

enum Sink {
    Journal(Journal),
    Stderr(LogFormat),
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
/// the level (target and format need a restart).
pub fn init(cfg: &LogConfig) {
    let sink = match cfg.target {
        LogTarget::Journal => Sink::Journal(Journal::new(Path::new(JOURNAL_SOCKET))),
        LogTarget::Stderr => Sink::Stderr(cfg.format),
        LogTarget::Auto if stderr_is_journal() => {
            Sink::Journal(Journal::new(Path::new(JOURNAL_SOCKET)))
        }
        LogTarget::Auto => Sink::Stderr(cfg.format),
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
                    Sink::Stderr(cfg.format)
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

/// A record's key-value pairs; numbers stay numbers (for JSON lines).
pub type Fields = Vec<(String, serde_json::Value)>;

fn fields(r: &log::Record<'_>) -> Fields {
    /// One value, typed; `None` for an absent one (a `None` passed as a field).
    struct Typed(Option<serde_json::Value>);
    impl<'v> log::kv::VisitValue<'v> for Typed {
        fn visit_any(&mut self, value: log::kv::Value<'_>) -> Result<(), log::kv::Error> {
            self.0 = Some(value.to_string().into());
            Ok(())
        }
        fn visit_null(&mut self) -> Result<(), log::kv::Error> {
            self.0 = None;
            Ok(())
        }
        fn visit_u64(&mut self, v: u64) -> Result<(), log::kv::Error> {
            self.0 = Some(v.into());
            Ok(())
        }
        fn visit_i64(&mut self, v: i64) -> Result<(), log::kv::Error> {
            self.0 = Some(v.into());
            Ok(())
        }
        fn visit_f64(&mut self, v: f64) -> Result<(), log::kv::Error> {
            self.0 = Some(
                serde_json::Number::from_f64(v)
                    .map(serde_json::Value::Number)
                    .unwrap_or_else(|| v.to_string().into()),
            );
            Ok(())
        }
        fn visit_bool(&mut self, v: bool) -> Result<(), log::kv::Error> {
            self.0 = Some(v.into());
            Ok(())
        }
        fn visit_str(&mut self, v: &str) -> Result<(), log::kv::Error> {
            self.0 = Some(v.into());
            Ok(())
        }
    }
    struct Collect(Fields);
    impl<'kvs> log::kv::VisitSource<'kvs> for Collect {
        fn visit_pair(
            &mut self,
            key: log::kv::Key<'kvs>,
            value: log::kv::Value<'kvs>,
        ) -> Result<(), log::kv::Error> {
            let mut t = Typed(None);
            value.visit(&mut t)?;
            if let Some(v) = t.0 {
                self.0.push((key.as_str().to_string(), v));
            }
            Ok(())
        }
    }
    let mut c = Collect(Vec::new());
    let _ = r.key_values().visit(&mut c);
    c.0
}

/// A field's value as journal text.
fn text(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A journal field name for a record key: `WEBHOOKD_` + upper case, only
/// `A-Z 0-9 _` (journald drops entries with other names).
fn field_name(key: &str) -> String {
    let mut n = String::with_capacity(9 + key.len());
    n.push_str("WEBHOOKD_");
    for c in key.chars() {
        n.push(if c.is_ascii_alphanumeric() {
            c.to_ascii_uppercase()
        } else {
            '_'
        });
    }
    n
}

/// Append one field in the native protocol's encoding.
fn push_field(buf: &mut Vec<u8>, name: &str, value: &[u8]) {
    buf.extend_from_slice(name.as_bytes());
    if value.contains(&b'\n') {
        buf.push(b'\n');
        buf.extend_from_slice(&(value.len() as u64).to_le_bytes());
        buf.extend_from_slice(value);
    } else {
        buf.push(b'=');
        buf.extend_from_slice(value);
    }
    buf.push(b'\n');
}

/// One journal entry, encoded for the native protocol.
pub fn encode_entry(
    priority: u8,
    message: &str,
    fields: &[(String, serde_json::Value)],
) -> Vec<u8> {
    let mut buf = Vec::with_capacity(128 + message.len());
    push_field(&mut buf, "PRIORITY", priority.to_string().as_bytes());
    push_field(&mut buf, "SYSLOG_IDENTIFIER", b"webhookd");
    push_field(&mut buf, "MESSAGE", message.as_bytes());
    for (k, v) in fields {
        push_field(&mut buf, &field_name(k), text(v).as_bytes());
    }
    buf
}

/// A client of journald's native protocol. Sends with `send_to` on an
/// unconnected socket, so a restarted journald is found again.
pub struct Journal {
    socket: Option<UnixDatagram>,
    path: PathBuf,
}

impl Journal {
    /// A client for the socket at `path` (the real one is [`JOURNAL_SOCKET`]).
    /// Without a usable socket every entry goes to stderr with a `<N>` prefix.
    pub fn new(path: &Path) -> Journal {
        let socket = if path.exists() {
            UnixDatagram::unbound().ok()
        } else {
            None
        };
        Journal {
            socket,
            path: path.to_path_buf(),
        }
    }

    /// Send one entry; Err when the journal did not take it.
    pub fn send(
        &self,
        priority: u8,
        message: &str,
        fields: &[(String, serde_json::Value)],
    ) -> std::io::Result<()> {
        let Some(s) = &self.socket else {
            return Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "no journal socket",
            ));
        };
        let entry = encode_entry(priority, message, fields);
        s.send_to(&entry, &self.path).map(|_| ())
    }
}

/// The stderr line of an entry the journal would have taken: `<N>message`.
fn prefixed_line(priority: u8, message: &str) -> String {
    format!("<{priority}>{message}\n")
}

/// One JSON object per line (log.format = "json").
pub fn json_line(
    time: std::time::SystemTime,
    level: log::Level,
    message: &str,
    fields: &[(String, serde_json::Value)],
) -> String {
    let mut m = serde_json::Map::new();
    m.insert(
        "ts".into(),
        humantime::format_rfc3339_millis(time).to_string().into(),
    );
    m.insert("level".into(), level.as_str().to_ascii_lowercase().into());
    m.insert("msg".into(), message.into());
    for (k, v) in fields {
        m.insert(k.clone(), v.clone());
    }
    let mut line = serde_json::Value::Object(m).to_string();
    line.push('\n');
    line
}

/// `time level message\n` in one allocation (the request log line is
/// written for every request).
fn text_line(level: log::Level, msg: &str) -> String {
    use std::fmt::Write as _;
    let mut line = String::with_capacity(32 + msg.len());
    let now = humantime::format_rfc3339_millis(std::time::SystemTime::now());
    let _ = write!(line, "{now} {level:<5} ");
    line.push_str(msg);
    line.push('\n');
    line
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
            Sink::Journal(j) => {
                let p = if r.target() == NOTICE {
                    5
                } else {
                    priority(r.level())
                };
                if j.send(p, &msg, &fields(r)).is_err() {
                    // One write per line so concurrent lines never interleave.
                    let _ = std::io::stderr()
                        .lock()
                        .write_all(prefixed_line(p, &msg).as_bytes());
                }
            }
            Sink::Stderr(LogFormat::Text) => {
                let _ = std::io::stderr()
                    .lock()
                    .write_all(text_line(r.level(), &msg).as_bytes());
            }
            Sink::Stderr(LogFormat::Json) => {
                let line = json_line(
                    std::time::SystemTime::now(),
                    r.level(),
                    &r.args().to_string(),
                    &fields(r),
                );
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
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn one_line_escapes_controls() {
        assert_eq!(super::one_line("a\nb\r\u{0}".into()), "a\\nb\\r\\u{0}");
        assert_eq!(super::one_line("plain".into()), "plain");
    }

    /// Decode a native-protocol datagram the way journald does.
    fn decode(mut b: &[u8]) -> HashMap<String, Vec<u8>> {
        let mut out = HashMap::new();
        while !b.is_empty() {
            let nl = b.iter().position(|&c| c == b'\n').expect("newline");
            let line = &b[..nl];
            if let Some(eq) = line.iter().position(|&c| c == b'=') {
                out.insert(
                    String::from_utf8(line[..eq].to_vec()).unwrap(),
                    line[eq + 1..].to_vec(),
                );
                b = &b[nl + 1..];
            } else {
                let name = String::from_utf8(line.to_vec()).unwrap();
                let len = u64::from_le_bytes(b[nl + 1..nl + 9].try_into().unwrap()) as usize;
                out.insert(name, b[nl + 9..nl + 9 + len].to_vec());
                assert_eq!(b[nl + 9 + len], b'\n');
                b = &b[nl + 10 + len..];
            }
        }
        out
    }

    fn temp_socket(name: &str) -> (PathBuf, UnixDatagram) {
        let dir = std::env::temp_dir().join(format!("whd-journal-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("socket");
        let server = UnixDatagram::bind(&p).unwrap();
        (p, server)
    }

    #[test]
    fn entries_reach_a_real_datagram_socket_with_their_fields() {
        let (path, server) = temp_socket("fields");
        let j = Journal::new(&path);
        let kv: Fields = vec![
            ("hook".into(), "github".into()),
            ("delivery".into(), "72d3162e-cc78".into()),
            ("event_id".into(), "01JABC".into()),
            ("secret_index".into(), 1u64.into()),
            ("duration".into(), 1.93f64.into()),
            ("odd-key".into(), "multi\nline".into()),
        ];
        j.send(6, "hook=github status=202", &kv).unwrap();
        let mut buf = vec![0u8; 65536];
        let n = server.recv(&mut buf).unwrap();
        let f = decode(&buf[..n]);
        assert_eq!(f["PRIORITY"], b"6");
        assert_eq!(f["SYSLOG_IDENTIFIER"], b"webhookd");
        assert_eq!(f["MESSAGE"], b"hook=github status=202");
        assert_eq!(f["WEBHOOKD_HOOK"], b"github");
        assert_eq!(f["WEBHOOKD_DELIVERY"], b"72d3162e-cc78");
        assert_eq!(f["WEBHOOKD_EVENT_ID"], b"01JABC");
        assert_eq!(f["WEBHOOKD_SECRET_INDEX"], b"1");
        assert_eq!(f["WEBHOOKD_DURATION"], b"1.93");
        // a newline in a value uses the length-prefixed form; names are sanitized
        assert_eq!(f["WEBHOOKD_ODD_KEY"], b"multi\nline");
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    #[test]
    fn a_missing_socket_is_an_error_so_the_stderr_fallback_is_used() {
        let j = Journal::new(Path::new("/nonexistent/journal/socket"));
        assert!(j.send(3, "x", &[]).is_err());
        assert_eq!(prefixed_line(3, "store down"), "<3>store down\n");
        // a socket that went away after start (journald restarting) is an error too
        let (path, server) = temp_socket("gone");
        let j = Journal::new(&path);
        drop(server);
        std::fs::remove_file(&path).unwrap();
        assert!(j.send(6, "x", &[]).is_err());
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    #[test]
    fn json_lines_carry_the_fields() {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(1_700_000_000_123);
        let line = json_line(
            t,
            log::Level::Warn,
            "hook=github status=401",
            &[
                ("hook".into(), "github".into()),
                ("status".into(), 401u64.into()),
                ("peer".into(), "127.0.0.1:5000".into()),
            ],
        );
        assert!(line.ends_with('\n') && !line[..line.len() - 1].contains('\n'));
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["ts"], "2023-11-14T22:13:20.123Z");
        assert_eq!(v["level"], "warn");
        assert_eq!(v["msg"], "hook=github status=401");
        assert_eq!(v["hook"], "github");
        assert_eq!(v["status"], 401);
        assert_eq!(v["peer"], "127.0.0.1:5000");
    }
}
