//! The configuration file: TOML in, typed values out.
//!
//! Every error names the file, the key and what was expected, because the
//! person reading it is usually looking at `journalctl` after a failed reload.
//! Secrets are never written in the file itself: the file holds references
//! (`file:`, `env:`, `credential:`) that are resolved when hooks are built.

use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// Where the config is read from when neither `--config` nor
/// `WEBHOOKD_CONFIG` says otherwise.
pub const DEFAULT_PATH: &str = "/etc/webhookd/webhookd.toml";

/// GitHub's own maximum payload size; larger deliveries are never sent.
pub const DEFAULT_BODY_LIMIT: u64 = 25 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("config file {path}: key `{key}`: {message}")]
    Invalid {
        path: PathBuf,
        key: String,
        message: String,
    },
}

/// The whole parsed configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default)]
    pub store: StoreConfig,
    #[serde(default)]
    pub log: LogConfig,
    #[serde(default)]
    pub hooks: Vec<HookConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Bound only when systemd passed no socket: `host:port` or `unix:/path`.
    pub listen: String,
    /// Optional separate address for /healthz, /readyz, /status, /metrics.
    pub admin_listen: Option<String>,
    /// How long SIGTERM waits for in-flight requests and the store writer.
    #[serde(deserialize_with = "de_duration")]
    pub drain_timeout: Duration,
    /// A client must finish sending its request headers within this time.
    #[serde(deserialize_with = "de_duration")]
    pub header_timeout: Duration,
    /// How long a request waits for the store before answering 503.
    #[serde(deserialize_with = "de_duration")]
    pub store_timeout: Duration,
    /// Default maximum body size in bytes (per-hook `body_limit` overrides).
    pub body_limit: u64,
    /// Maximum number of request headers.
    pub max_headers: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: "127.0.0.1:9000".into(),
            admin_listen: None,
            drain_timeout: Duration::from_secs(10),
            header_timeout: Duration::from_secs(10),
            store_timeout: Duration::from_secs(5),
            body_limit: DEFAULT_BODY_LIMIT,
            max_headers: 100,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// `sqlite:///path/to/events.db` or `postgres://user@host/db`.
    pub url: String,
    /// Writer threads (0 = automatic: 1 for the embedded store, 2 for PostgreSQL).
    pub writers: usize,
    /// Most events committed in one transaction.
    pub batch_max: usize,
    /// Requests that may wait for a writer; when full, new ones get 503 at once.
    pub queue_capacity: usize,
    /// PostgreSQL connection pool size (writers + readers).
    pub pool_size: u32,
    /// How long to wait for a database connection before giving up.
    #[serde(deserialize_with = "de_duration")]
    pub connect_timeout: Duration,
    /// A writer thread that makes no progress for this long is reported as
    /// stuck, and the systemd watchdog stops being fed.
    #[serde(deserialize_with = "de_duration")]
    pub stall_timeout: Duration,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            url: "sqlite:///var/lib/webhookd/events.db".into(),
            writers: 0,
            batch_max: 256,
            queue_capacity: 4096,
            pool_size: 4,
            connect_timeout: Duration::from_millis(700),
            stall_timeout: Duration::from_secs(15),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogTarget {
    /// The journal when stderr is connected to it, plain stderr otherwise.
    Auto,
    Journal,
    Syslog,
    Stderr,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    #[serde(deserialize_with = "de_level")]
    pub level: log::LevelFilter,
    pub target: LogTarget,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: log::LevelFilter::Info,
            target: LogTarget::Auto,
        }
    }
}

/// One `[[hooks]]` entry, as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HookConfig {
    pub id: String,
    pub scheme: String,
    #[serde(default)]
    pub secrets: Vec<SecretRef>,
    /// Event types to store; others are answered 2xx and dropped.
    #[serde(default)]
    pub events: Option<Vec<String>>,
    /// Per-hook body limit in bytes.
    #[serde(default)]
    pub body_limit: Option<u64>,
}

/// Where a secret lives. The value itself never appears in the config.
#[derive(Clone, PartialEq, Eq)]
pub enum SecretRef {
    File(PathBuf),
    Env(String),
    Credential(String),
}

impl fmt::Display for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretRef::File(p) => write!(f, "file:{}", p.display()),
            SecretRef::Env(n) => write!(f, "env:{n}"),
            SecretRef::Credential(n) => write!(f, "credential:{n}"),
        }
    }
}

impl fmt::Debug for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl SecretRef {
    /// Parse `file:/path`, `env:NAME` or `credential:NAME`.
    pub fn parse(s: &str) -> Result<SecretRef, String> {
        let bad = || {
            "expected a secret reference \"file:/path\", \"env:NAME\" or \"credential:NAME\" \
             (secrets are never written in the config itself)"
                .to_string()
        };
        let (kind, rest) = s.split_once(':').ok_or_else(bad)?;
        if rest.is_empty() {
            return Err(bad());
        }
        match kind {
            "file" if rest.starts_with('/') => Ok(SecretRef::File(PathBuf::from(rest))),
            "file" => Err("a file: secret reference needs an absolute path".into()),
            "env" => Ok(SecretRef::Env(rest.to_string())),
            "credential" if !rest.contains('/') => Ok(SecretRef::Credential(rest.to_string())),
            "credential" => Err("a credential name cannot contain '/'".into()),
            _ => Err(bad()),
        }
    }

    /// Read the secret. Errors say where we looked, never what we found.
    pub fn resolve(&self) -> Result<Secret, String> {
        let raw = match self {
            SecretRef::File(p) => std::fs::read(p)
                .map_err(|e| format!("cannot read secret file {}: {e}", p.display()))?,
            SecretRef::Env(n) => std::env::var_os(n)
                .ok_or_else(|| format!("environment variable {n} is not set"))?
                .into_encoded_bytes(),
            SecretRef::Credential(n) => {
                let dir = std::env::var_os("CREDENTIALS_DIRECTORY").ok_or_else(|| {
                    format!(
                        "credential {n}: CREDENTIALS_DIRECTORY is not set \
                         (add LoadCredential={n}:/path to the unit)"
                    )
                })?;
                let p = Path::new(&dir).join(n);
                std::fs::read(&p)
                    .map_err(|e| format!("cannot read credential {}: {e}", p.display()))?
            }
        };
        let trimmed = trim_newline(&raw);
        if trimmed.is_empty() {
            return Err(format!("secret {self} is empty"));
        }
        Ok(Secret(trimmed.to_vec()))
    }
}

/// Secret files usually end with the newline `echo` added; it is not part of the key.
fn trim_newline(b: &[u8]) -> &[u8] {
    let b = b.strip_suffix(b"\n").unwrap_or(b);
    b.strip_suffix(b"\r").unwrap_or(b)
}

/// Secret bytes; Debug never prints them.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub Vec<u8>);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret(<{} bytes>)", self.0.len())
    }
}

impl<'de> Deserialize<'de> for SecretRef {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        SecretRef::parse(&s).map_err(serde::de::Error::custom)
    }
}

fn de_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Secs(u64),
        Text(String),
    }
    match Raw::deserialize(d)? {
        Raw::Secs(s) => Ok(Duration::from_secs(s)),
        Raw::Text(t) => humantime::parse_duration(&t).map_err(|e| {
            serde::de::Error::custom(format!(
                "expected a duration such as \"10s\" or \"500ms\", got {t:?} ({e})"
            ))
        }),
    }
}

fn de_level<'de, D: Deserializer<'de>>(d: D) -> Result<log::LevelFilter, D::Error> {
    let s = String::deserialize(d)?;
    s.parse().map_err(|_| {
        serde::de::Error::custom(format!(
            "expected one of \"error\", \"warn\", \"info\", \"debug\", \"trace\", \"off\", got {s:?}"
        ))
    })
}

/// Say where a TOML error is (line and key) without quoting the line: the
/// value there might be a secret someone pasted in by mistake.
fn describe_toml_error(text: &str, e: &toml::de::Error) -> String {
    let msg = e.message().trim_end().replace('\n', " ");
    let Some(span) = e.span() else {
        return msg;
    };
    let start = span.start.min(text.len());
    let line_no = text[..start].matches('\n').count() + 1;
    let line = text.lines().nth(line_no - 1).unwrap_or("");
    let key = line
        .split_once('=')
        .map(|(k, _)| k.trim())
        .filter(|k| !k.is_empty() && !k.starts_with('['))
        .or_else(|| {
            let t = line.trim();
            t.starts_with('[').then_some(t)
        });
    match key {
        Some(k) => format!("line {line_no}, key `{k}`: {msg}"),
        None => format!("line {line_no}: {msg}"),
    }
}

/// Schemes this build can verify.
pub const SCHEMES: &[&str] = &["github"];

impl Config {
    /// Read and validate a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::parse(path, &text)
    }

    /// Parse and validate config text; `path` is only used in messages.
    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let cfg: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: describe_toml_error(text, &e),
        })?;
        cfg.validate(path)?;
        Ok(cfg)
    }

    fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let invalid = |key: String, message: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            key,
            message,
        };
        if !self.store.url.starts_with("sqlite:")
            && !self.store.url.starts_with("postgres://")
            && !self.store.url.starts_with("postgresql://")
        {
            return Err(invalid(
                "store.url".into(),
                "expected \"sqlite:///path/to/events.db\" or \"postgres://user@host/dbname\""
                    .into(),
            ));
        }
        if self.store.batch_max == 0 {
            return Err(invalid(
                "store.batch_max".into(),
                "must be at least 1".into(),
            ));
        }
        if self.store.queue_capacity == 0 {
            return Err(invalid(
                "store.queue_capacity".into(),
                "must be at least 1".into(),
            ));
        }
        if self.store.pool_size == 0 {
            return Err(invalid(
                "store.pool_size".into(),
                "must be at least 1".into(),
            ));
        }
        crate::server::parse_listen(&self.server.listen)
            .map_err(|m| invalid("server.listen".into(), m))?;
        if let Some(a) = &self.server.admin_listen {
            crate::server::parse_listen(a).map_err(|m| invalid("server.admin_listen".into(), m))?;
        }
        let mut seen = HashSet::new();
        for (i, h) in self.hooks.iter().enumerate() {
            let key = |k: &str| format!("hooks[{i}].{k}");
            if h.id.is_empty()
                || h.id.len() > 64
                || !h
                    .id
                    .bytes()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
            {
                return Err(invalid(
                    key("id"),
                    format!(
                        "expected 1-64 characters of A-Z a-z 0-9 - _ . (it is the URL path /hooks/ID), got {:?}",
                        h.id
                    ),
                ));
            }
            if !seen.insert(h.id.as_str()) {
                return Err(invalid(key("id"), format!("duplicate hook id {:?}", h.id)));
            }
            if !SCHEMES.contains(&h.scheme.as_str()) {
                return Err(invalid(
                    key("scheme"),
                    format!("unknown scheme {:?}; expected one of {SCHEMES:?}", h.scheme),
                ));
            }
            if h.secrets.is_empty() {
                return Err(invalid(
                    key("secrets"),
                    "at least one secret reference is required".into(),
                ));
            }
            if h.body_limit == Some(0) {
                return Err(invalid(key("body_limit"), "must be at least 1".into()));
            }
        }
        Ok(())
    }

    /// The config path from the command line, the environment, or the default.
    pub fn path_from(cli: Option<PathBuf>) -> PathBuf {
        cli.or_else(|| std::env::var_os("WEBHOOKD_CONFIG").map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from(DEFAULT_PATH))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Config, ConfigError> {
        Config::parse(Path::new("/etc/webhookd/test.toml"), s)
    }

    #[test]
    fn minimal_issue_shape_parses() {
        let c = parse(
            r#"
            [server]
            listen = "127.0.0.1:9000"
            [store]
            url = "sqlite:///var/lib/webhookd/events.db"
            [[hooks]]
            id = "github"
            scheme = "github"
            secrets = ["file:/etc/webhookd/github.secret", "env:GH", "credential:gh"]
            "#,
        )
        .unwrap();
        assert_eq!(c.hooks[0].secrets.len(), 3);
        assert_eq!(c.server.drain_timeout, Duration::from_secs(10));
        assert_eq!(c.server.body_limit, DEFAULT_BODY_LIMIT);
    }

    #[test]
    fn errors_name_file_and_key() {
        let e = parse("[server]\ndrain_timeout = \"ten\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("/etc/webhookd/test.toml"), "{e}");
        assert!(e.contains("drain_timeout"), "{e}");
        assert!(e.contains("expected a duration"), "{e}");

        let e = parse("[[hooks]]\nid = \"a b\"\nscheme = \"github\"\nsecrets = [\"env:X\"]\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("hooks[0].id"), "{e}");

        let e = parse("[[hooks]]\nid = \"a\"\nscheme = \"nope\"\nsecrets = [\"env:X\"]\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("hooks[0].scheme") && e.contains("unknown scheme"),
            "{e}"
        );

        let e = parse("[server]\nlisten = 5\n").unwrap_err().to_string();
        assert!(e.contains("listen"), "{e}");

        let e = parse("[serverr]\n").unwrap_err().to_string();
        assert!(e.contains("serverr"), "{e}");
    }

    #[test]
    fn literal_secrets_are_refused_without_echo() {
        let e =
            parse("[[hooks]]\nid = \"a\"\nscheme = \"github\"\nsecrets = [\"hunter2-literal\"]\n")
                .unwrap_err()
                .to_string();
        assert!(e.contains("secret reference"), "{e}");
        assert!(!e.contains("hunter2"), "secret echoed: {e}");
    }

    #[test]
    fn secret_file_newline_is_trimmed() {
        let dir = std::env::temp_dir().join(format!("whd-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("s");
        std::fs::write(&p, "abc\n").unwrap();
        let s = SecretRef::File(p.clone()).resolve().unwrap();
        assert_eq!(s.0, b"abc");
        assert_eq!(format!("{s:?}"), "Secret(<3 bytes>)");
        std::fs::remove_dir_all(&dir).unwrap();
        let e = SecretRef::File(p).resolve().unwrap_err();
        assert!(e.contains("cannot read secret file"));
    }
}
