//! The configuration file: TOML in, typed values out.
//!
//! Every error names the file, the key and what was expected, because the
//! person reading it is usually looking at `journalctl` after a failed reload.
//! Secrets are never written in the file itself: the file holds references
//! (`file:`, `env:`, `credential:`) that are resolved when hooks are built.
//!
//! This is the bottom layer: it imports nothing from the rest of the crate.
//! The checks that need a scheme or a rule (does this `hooks[N]` entry
//! build?) are passed in by `src/check.rs`, which defines [`Config::load`] and
//! [`Config::parse`] on top of [`Config::load_with`] and [`Config::parse_with`].

use std::collections::HashSet;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::str::FromStr;
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
    #[error("config file {path}: {source}")]
    Invalid { path: PathBuf, source: Invalid },
}

/// One validation problem: the hook it belongs to (when the key does not
/// already say), the key, and what is wrong. The same type is reported by
/// `check-config`, a refused reload and a refused start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct Invalid {
    pub hook: Option<String>,
    /// Empty when the message names what it is about (a secret reference).
    pub key: String,
    pub message: String,
}

impl Invalid {
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Invalid {
        Invalid {
            hook: None,
            key: key.into(),
            message: message.into(),
        }
    }

    /// The same problem, attributed to hook `id`.
    pub fn in_hook(mut self, id: &str) -> Invalid {
        self.hook = Some(id.to_string());
        self
    }
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(h) = &self.hook {
            write!(f, "hook {h}: ")?;
        }
        match (self.hook.is_some(), self.key.is_empty()) {
            (_, true) => write!(f, "{}", self.message),
            (true, false) => write!(f, "{}: {}", self.key, self.message),
            (false, false) => write!(f, "key `{}`: {}", self.key, self.message),
        }
    }
}

/// Why a secret could not be read. Says where we looked, never what we found.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("cannot read secret file {}: {source}", path.display())]
    File {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("environment variable {0} is not set")]
    EnvUnset(String),
    #[error("cannot read credential {}: {source}", path.display())]
    Credential {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "credential {name}: CREDENTIALS_DIRECTORY is not set and {name} is not in {stores} \
         (add LoadCredential={name}:/path to the unit, or create /etc/credstore/{name})"
    )]
    NoCredential { name: String, stores: String },
    #[error("secret {0} is empty")]
    Empty(SecretRef),
}

/// A configured listen address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenAddr {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

/// A listen address that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ListenError {
    #[error("expected \"unix:/absolute/path\", got {0:?}")]
    RelativeUnix(String),
    #[error("expected \"IP:PORT\" (e.g. \"127.0.0.1:9000\", \"[::1]:9000\") or \"unix:/path\", got {0:?}")]
    Malformed(String),
}

/// Parse `host:port`, `[v6]:port` or `unix:/path`.
pub fn parse_listen(s: &str) -> Result<ListenAddr, ListenError> {
    if let Some(p) = s.strip_prefix("unix:") {
        if !p.starts_with('/') {
            return Err(ListenError::RelativeUnix(s.to_string()));
        }
        return Ok(ListenAddr::Unix(PathBuf::from(p)));
    }
    s.parse::<SocketAddr>()
        .map(ListenAddr::Tcp)
        .map_err(|_| ListenError::Malformed(s.to_string()))
}

/// Parse `10.0.0.0/8`, `2001:db8::/32`, or a single address (a /32 or /128).
pub fn parse_net(s: &str) -> Result<ipnet::IpNet, String> {
    let t = s.trim();
    if let Ok(n) = ipnet::IpNet::from_str(t) {
        return Ok(n.trunc());
    }
    IpAddr::from_str(t).map(ipnet::IpNet::from).map_err(|_| {
        format!("expected an IP address or CIDR such as \"192.0.2.0/24\" or \"2001:db8::/32\", got {s:?}")
    })
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
    pub delivery: DeliveryConfig,
    #[serde(default)]
    pub retention: RetentionConfig,
    #[serde(default)]
    pub tunnel: TunnelConfig,
    #[serde(default)]
    pub hooks: Vec<HookConfig>,
}

/// A check of one `[[hooks]]` entry by a layer above this one.
pub type HookCheck<'a> = dyn Fn(&HookConfig) -> Result<(), Invalid> + 'a;

/// `[tunnel]`: where to find the sidecar tunnel's public URL.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TunnelConfig {
    /// ngrok's local agent API (`host:port`); empty disables.
    pub ngrok_api: String,
    /// cloudflared's metrics server (`host:port`, its `--metrics`); empty disables.
    pub cloudflared_metrics: String,
    /// A fixed public URL (e.g. a named cloudflared tunnel's hostname), used
    /// when no agent reports one.
    pub public_url: Option<String>,
    #[serde(deserialize_with = "de_duration")]
    pub poll_interval: Duration,
}

impl Default for TunnelConfig {
    fn default() -> Self {
        TunnelConfig {
            ngrok_api: "127.0.0.1:4040".into(),
            cloudflared_metrics: "127.0.0.1:20241".into(),
            public_url: None,
            poll_interval: Duration::from_secs(5),
        }
    }
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
    /// Maximum size of the request head (request line and headers), in
    /// bytes; larger ones are answered 431. At least 8192.
    pub max_header_bytes: usize,
    /// Hook requests handled at once; more are answered 503 + Retry-After.
    pub max_in_flight: usize,
    /// A request body must have arrived this long after its head; later, 408.
    #[serde(deserialize_with = "de_duration")]
    pub body_timeout: Duration,
    /// Peers whose forwarding header is believed for `allow_ips`, each with
    /// the one header it sets: `{ from = "127.0.0.1", header = "X-Forwarded-For" }`.
    pub trusted_proxies: Vec<TrustedProxy>,
    /// `[server.tls]`: serve HTTPS on the web socket.
    pub tls: Option<ServerTlsConfig>,
}

/// `[server.tls]`: the certificate chain and key of the HTTPS listener, as
/// references (`file:` for certbot's files, `credential:` for a key loaded
/// with `LoadCredential=`). Re-read on reload.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerTlsConfig {
    /// PEM chain: the server's certificate first, then intermediates.
    pub cert: SecretRef,
    /// PEM private key (PKCS#8, RSA or EC), unencrypted.
    pub key: SecretRef,
    /// Warn in the log and /status when the certificate expires this soon.
    #[serde(default = "default_expiry_warning", deserialize_with = "de_duration")]
    pub expiry_warning: Duration,
}

fn default_expiry_warning() -> Duration {
    Duration::from_secs(14 * 86_400)
}

/// The header a trusted proxy writes the client's address into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForwardHeader {
    /// nginx, ngrok, most load balancers: a list, the proxy appends.
    XForwardedFor,
    /// Cloudflare's edge (so cloudflared): one address, set by the edge.
    CfConnectingIp,
    /// nginx's `proxy_set_header X-Real-IP`: one address.
    XRealIp,
}

impl ForwardHeader {
    pub const NAMES: [&'static str; 3] = ["X-Forwarded-For", "CF-Connecting-IP", "X-Real-IP"];

    pub fn parse(s: &str) -> Option<ForwardHeader> {
        match s.to_ascii_lowercase().as_str() {
            "x-forwarded-for" => Some(ForwardHeader::XForwardedFor),
            "cf-connecting-ip" => Some(ForwardHeader::CfConnectingIp),
            "x-real-ip" => Some(ForwardHeader::XRealIp),
            _ => None,
        }
    }

    /// The lower-case header name.
    pub fn name(self) -> &'static str {
        match self {
            ForwardHeader::XForwardedFor => "x-forwarded-for",
            ForwardHeader::CfConnectingIp => "cf-connecting-ip",
            ForwardHeader::XRealIp => "x-real-ip",
        }
    }
}

/// One `server.trusted_proxies` entry: a peer (CIDR, address, or "unix")
/// and the one header it sets. Never several headers, never a default: a
/// proxy that does not set CF-Connecting-IP passes on whatever the client
/// wrote there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustedProxy {
    pub from: String,
    pub header: ForwardHeader,
}

impl<'de> Deserialize<'de> for TrustedProxy {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = TrustedProxy;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a table { from = \"127.0.0.1\", header = \"X-Forwarded-For\" }")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<TrustedProxy, E> {
                Err(E::custom(format!(
                    "{v:?} does not say which header this proxy sets; write {{ from = {v:?}, header = \"X-Forwarded-For\" }} (nginx, ngrok) or header = \"CF-Connecting-IP\" (cloudflared)"
                )))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                m: A,
            ) -> Result<TrustedProxy, A::Error> {
                #[derive(Deserialize)]
                #[serde(deny_unknown_fields)]
                struct Raw {
                    from: String,
                    header: String,
                }
                let r = Raw::deserialize(serde::de::value::MapAccessDeserializer::new(m))?;
                let header = ForwardHeader::parse(&r.header).ok_or_else(|| {
                    serde::de::Error::custom(format!(
                        "header: expected one of {:?}, got {:?}",
                        ForwardHeader::NAMES,
                        r.header
                    ))
                })?;
                Ok(TrustedProxy {
                    from: r.from,
                    header,
                })
            }
        }
        d.deserialize_any(V)
    }
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
            max_header_bytes: 64 * 1024,
            max_in_flight: 1024,
            body_timeout: Duration::from_secs(10),
            trusted_proxies: Vec::new(),
            tls: None,
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
    /// Most bytes (bodies and headers) committed in one transaction; a
    /// single larger event still goes alone.
    pub batch_max_bytes: usize,
    /// Requests that may wait for a writer; when full, new ones get 503 at once.
    pub queue_capacity: usize,
    /// PostgreSQL connection pool size; 0 = automatic (writers, the spool
    /// drain, and 4 for pings, counts, claims and results).
    pub pool_size: u32,
    /// How long to wait for a database connection before giving up.
    #[serde(deserialize_with = "de_duration")]
    pub connect_timeout: Duration,
    /// A writer thread that makes no progress for this long is reported as
    /// stuck, and the systemd watchdog stops being fed.
    #[serde(deserialize_with = "de_duration")]
    pub stall_timeout: Duration,
    /// PostgreSQL: a batch not committed within this time is treated as
    /// "unavailable" (its events are spooled, or answered 503); every other
    /// statement is bounded by it too (`statement_timeout` is one second
    /// more, so the server frees the session soon after we gave up).
    #[serde(deserialize_with = "de_duration")]
    pub write_timeout: Duration,
    /// PostgreSQL only: where to keep deliveries while the database is
    /// unreachable. "auto" = `spool.db` in the state directory
    /// ($STATE_DIRECTORY or /var/lib/webhookd) if it exists; "off"; or a path.
    pub spool: String,
    /// Most events the spool holds; beyond that, 503.
    pub spool_max_events: usize,
}

impl StoreConfig {
    /// Writer threads for this store (`writers = 0` means 1 for the
    /// embedded store, 2 for PostgreSQL).
    pub fn writer_threads(&self, postgres: bool) -> usize {
        match self.writers {
            0 if postgres => 2,
            0 => 1,
            n => n,
        }
    }

    /// The smallest PostgreSQL pool that works: each writer and the spool
    /// drain keep one connection, and the store monitor, the dispatcher's
    /// claims and its results need at least two more between them.
    pub fn pool_size_needed(&self) -> u32 {
        let held = self.writer_threads(true) + usize::from(self.spool != "off");
        u32::try_from(held + 2).unwrap_or(u32::MAX)
    }

    /// The PostgreSQL pool size to use (`pool_size = 0`: automatic, with
    /// room for retention sweeps and CLI-like readers besides the minimum).
    pub fn effective_pool_size(&self) -> u32 {
        match self.pool_size {
            0 => self.pool_size_needed().saturating_add(2),
            n => n,
        }
    }
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            url: "sqlite:///var/lib/webhookd/events.db".into(),
            writers: 0,
            batch_max: 256,
            batch_max_bytes: 8 * 1024 * 1024,
            queue_capacity: 4096,
            pool_size: 0,
            connect_timeout: Duration::from_millis(700),
            stall_timeout: Duration::from_secs(15),
            write_timeout: Duration::from_secs(2),
            spool: "auto".into(),
            spool_max_events: 100_000,
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

/// How lines written to stderr look (the journal always gets fields).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// A timestamp, the level and the message.
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    #[serde(deserialize_with = "de_level")]
    pub level: log::LevelFilter,
    pub target: LogTarget,
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: log::LevelFilter::Info,
            target: LogTarget::Auto,
            format: LogFormat::Text,
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
    // --- Verification options (src/verify/); which apply depends on `scheme`.
    /// Replay window of timestamped schemes (default 300s).
    #[serde(default, deserialize_with = "de_opt_duration")]
    pub tolerance: Option<Duration>,
    /// github: also accept the legacy `X-Hub-Signature: sha1=`.
    #[serde(default)]
    pub legacy_sha1: Option<bool>,
    /// hmac: signature header, value prefix, "hex"/"base64", "sha256"/"sha512",
    /// timestamp header, signed-content template, delivery and event headers.
    #[serde(default)]
    pub header: Option<String>,
    #[serde(default)]
    pub prefix: Option<String>,
    #[serde(default)]
    pub encoding: Option<String>,
    #[serde(default)]
    pub algorithm: Option<String>,
    #[serde(default)]
    pub timestamp_header: Option<String>,
    #[serde(default)]
    pub template: Option<String>,
    #[serde(default)]
    pub delivery_header: Option<String>,
    #[serde(default)]
    pub event_header: Option<String>,
    /// slack, hmac: JSON field (dotted path) holding the delivery id.
    #[serde(default)]
    pub delivery_field: Option<String>,
    // --- Request rules (src/rules.rs).
    /// Token bucket: "10/s", "600/min", "1000/h"; over it, 429 + Retry-After.
    #[serde(default)]
    pub rate_limit: Option<String>,
    /// Requests allowed in a burst (default: one second's worth, at least 1).
    #[serde(default)]
    pub rate_burst: Option<u32>,
    /// Requests that fail verification have a bucket of their own, so an
    /// unsigned flood never takes from `rate_limit` (default "60/min").
    #[serde(default)]
    pub unverified_rate_limit: Option<String>,
    /// Burst of that bucket (default 30).
    #[serde(default)]
    pub unverified_rate_burst: Option<u32>,
    /// Client addresses (CIDRs or single IPs) allowed to call this hook.
    #[serde(default)]
    pub allow_ips: Option<Vec<String>>,
    /// What to do with stored events (none: keep them only). The same as
    /// one `[[hooks.actions]]` entry with id `default`.
    #[serde(default)]
    pub action: Option<ActionConfig>,
    /// Several actions, each delivered on its own (fan-out); not together
    /// with `action`.
    #[serde(default)]
    pub actions: Vec<ActionEntry>,
    /// Retry policy of the action.
    #[serde(default)]
    pub retry: RetryConfig,
    /// Circuit breaker of the action's target.
    #[serde(default)]
    pub breaker: BreakerConfig,
    // --- Payload rules and responses (src/payload/, docs/rules.md).
    /// token: where the token is (`header.NAME`, `query.NAME`, `body.PATH`).
    #[serde(default)]
    pub token: Option<String>,
    /// Read bodies as this content type ("application/json" or
    /// "application/x-www-form-urlencoded") whatever the request says.
    #[serde(default)]
    pub payload_content_type: Option<String>,
    /// Only verified requests that match are stored; others are answered
    /// `response.ignored` and dropped.
    #[serde(default)]
    pub rule: Option<RuleSpec>,
    /// What to answer for accepted, duplicate and ignored requests.
    #[serde(default)]
    pub response: ResponsesConfig,
    /// Answer an endpoint check with a value from the request, without storing it.
    #[serde(default)]
    pub handshake: Option<HandshakeConfig>,
    /// "on_store" (default): answer once the event is durable;
    /// "after_action": wait for the action's first attempt, up to `respond_deadline`.
    #[serde(default)]
    pub respond: Respond,
    #[serde(default, deserialize_with = "de_opt_duration")]
    pub respond_deadline: Option<Duration>,
    /// after_action: also send a failed command's output (it may show
    /// internals; by default only webhookd's one-line reason is sent).
    #[serde(default)]
    pub respond_error_output: bool,
}

// --- Rule and request-value specs, as written; compiled (and their
// references checked) in src/payload/.

/// A literal to compare with: TOML strings, integers, floats and booleans
/// all compare as the text JSON would show.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum Scalar {
    Text(String),
    Int(i64),
    Float(f64),
    Bool(bool),
}

impl fmt::Display for Scalar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scalar::Text(s) => f.write_str(s),
            Scalar::Int(i) => write!(f, "{i}"),
            Scalar::Float(x) => write!(f, "{x}"),
            Scalar::Bool(b) => write!(f, "{b}"),
        }
    }
}

/// A number for `lt` / `gt` (TOML integers and floats).
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum Number {
    Int(i64),
    Float(f64),
}

impl Number {
    pub fn get(self) -> f64 {
        match self {
            Number::Int(i) => i as f64,
            Number::Float(f) => f,
        }
    }
}

/// One rule as written: either a combination (`all`, `any`, `not`) or a
/// match of `value` with exactly one operator.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    /// Shown in the mismatch log line instead of the rule's place.
    pub name: Option<String>,
    pub all: Option<Vec<RuleSpec>>,
    pub any: Option<Vec<RuleSpec>>,
    pub not: Option<Box<RuleSpec>>,
    /// The value reference (see `payload::path`).
    pub value: Option<String>,
    pub equals: Option<Scalar>,
    pub not_equals: Option<Scalar>,
    pub one_of: Option<Vec<Scalar>>,
    pub regex: Option<String>,
    pub exists: Option<bool>,
    pub lt: Option<Number>,
    pub gt: Option<Number>,
}

/// One value as written: a literal string, or a reference.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum ValueSpec {
    Literal(String),
    Ref(RefSpec),
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RefSpec {
    pub value: String,
    /// Used when the request has no such value.
    #[serde(default)]
    pub default: Option<String>,
    /// Files only: decode the value from base64 before writing it.
    #[serde(default)]
    pub base64: bool,
}

/// When a hook answers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Respond {
    #[default]
    OnStore,
    AfterAction,
}

/// How long `respond = "after_action"` waits when `respond_deadline` is not
/// set: below GitHub's 10 s and Slack's 3 s timeouts are what senders allow.
pub const DEFAULT_RESPOND_DEADLINE: Duration = Duration::from_millis(2500);

/// `[hooks.response]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResponsesConfig {
    #[serde(default)]
    pub accepted: Option<ResponseConfig>,
    #[serde(default)]
    pub duplicate: Option<ResponseConfig>,
    #[serde(default)]
    pub ignored: Option<ResponseConfig>,
}

/// One custom answer; unset parts keep webhookd's own.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResponseConfig {
    #[serde(default)]
    pub status: Option<u16>,
    /// Sent as it is, instead of webhookd's JSON.
    #[serde(default)]
    pub body: Option<String>,
    /// Of `body` (default "text/plain; charset=utf-8").
    #[serde(default)]
    pub content_type: Option<String>,
    #[serde(default)]
    pub headers: std::collections::BTreeMap<String, String>,
}

/// `[hooks.handshake]`: when `rule` matches a verified request, answer
/// with the value at `echo` (as text, or as `{"<json_field>": value}`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HandshakeConfig {
    pub rule: RuleSpec,
    pub echo: String,
    #[serde(default)]
    pub json_field: Option<String>,
}

/// `[[hooks.actions]]`: one of several actions of a hook, with its own id,
/// condition, retries and breaker (each defaults to the hook's).
#[derive(Debug, Clone, Deserialize)]
pub struct ActionEntry {
    /// Unique within the hook: `[a-z0-9_-]{1,64}`; kept with each delivery.
    pub id: String,
    /// Deliver only events that match (the payload-rules language).
    #[serde(default)]
    pub rule: Option<RuleSpec>,
    /// Deliver only events of these types.
    #[serde(default)]
    pub events: Option<Vec<String>>,
    /// Replaces the hook's `[hooks.retry]` for this action.
    #[serde(default)]
    pub retry: Option<RetryConfig>,
    /// Replaces the hook's `[hooks.breaker]` for this action.
    #[serde(default)]
    pub breaker: Option<BreakerConfig>,
    /// `type` and the fields of that type, as in `[hooks.action]`.
    #[serde(flatten)]
    pub action: ActionConfig,
}

/// One action of a hook as the rest of the program sees it, whichever
/// way it was written.
#[derive(Debug, Clone, Copy)]
pub struct ActionSpec<'a> {
    pub id: &'a str,
    /// Where it is in the hook, for messages: `action` or `actions[N]`.
    pub index: Option<usize>,
    pub action: &'a ActionConfig,
    pub rule: Option<&'a RuleSpec>,
    pub events: Option<&'a [String]>,
    pub retry: &'a RetryConfig,
    pub breaker: &'a BreakerConfig,
}

impl ActionSpec<'_> {
    /// The key prefix of this action's fields: `action` or `actions[N]`.
    pub fn key(&self) -> String {
        match self.index {
            None => "action".into(),
            Some(i) => format!("actions[{i}]"),
        }
    }

    /// Rewrite a key relative to `action.` (as the builders report it) to
    /// this action's place.
    pub fn rekey(&self, key: &str) -> String {
        match key.strip_prefix("action") {
            Some(rest) if rest.is_empty() || rest.starts_with('.') => {
                format!("{}{rest}", self.key())
            }
            _ => key.to_string(),
        }
    }
}

/// The implicit id of a hook's single `[hooks.action]`.
pub const DEFAULT_ACTION_ID: &str = "default";

impl HookConfig {
    /// The hook's actions in order: its `[hooks.action]` (id `default`), or
    /// its `[[hooks.actions]]`.
    pub fn action_specs(&self) -> Vec<ActionSpec<'_>> {
        if let Some(a) = &self.action {
            return vec![ActionSpec {
                id: DEFAULT_ACTION_ID,
                index: None,
                action: a,
                rule: None,
                events: None,
                retry: &self.retry,
                breaker: &self.breaker,
            }];
        }
        self.actions
            .iter()
            .enumerate()
            .map(|(i, e)| ActionSpec {
                id: &e.id,
                index: Some(i),
                action: &e.action,
                rule: e.rule.as_ref(),
                events: e.events.as_deref(),
                retry: e.retry.as_ref().unwrap_or(&self.retry),
                breaker: e.breaker.as_ref().unwrap_or(&self.breaker),
            })
            .collect()
    }

    /// Does the hook act on its events (store them `pending`)?
    pub fn has_actions(&self) -> bool {
        self.action.is_some() || !self.actions.is_empty()
    }
}

/// `[hooks.action]`: forward to an HTTP target, or run a command.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum ActionConfig {
    Forward {
        /// `http://host:port/path` of the target.
        url: String,
        #[serde(default = "default_forward_timeout", deserialize_with = "de_duration")]
        timeout: Duration,
        /// Re-sign forwarded events in the Standard Webhooks format.
        #[serde(default)]
        sign_secret: Option<SecretRef>,
        #[serde(default = "default_forward_concurrency")]
        concurrency: usize,
        /// https:// only: trust this PEM CA bundle instead of the system store.
        #[serde(default)]
        tls_ca: Option<SecretRef>,
        /// https:// only: client certificate chain and key (mTLS).
        #[serde(default)]
        tls_client_cert: Option<SecretRef>,
        #[serde(default)]
        tls_client_key: Option<SecretRef>,
        /// Extra request headers; each value is a secret reference
        /// (`Authorization = "env:CI_TOKEN"`), never logged or stored.
        #[serde(default)]
        headers: std::collections::BTreeMap<String, SecretRef>,
        /// Connections (requests at once) to this target's origin, shared
        /// by every hook that forwards there.
        #[serde(default = "default_forward_connections")]
        max_connections: usize,
    },
    Exec {
        /// Program and arguments (no shell), or with `shell = true` one string
        /// given to `/bin/sh -c`.
        command: Vec<String>,
        #[serde(default)]
        shell: bool,
        #[serde(default)]
        workdir: Option<PathBuf>,
        #[serde(default = "default_exec_timeout", deserialize_with = "de_duration")]
        timeout: Duration,
        /// Runs at once for this hook; 1 runs them strictly one after another.
        #[serde(default = "default_exec_concurrency")]
        concurrency: usize,
        /// More arguments after `command`: literals or request values.
        #[serde(default)]
        args: Vec<ValueSpec>,
        /// Environment variables from literals or request values.
        #[serde(default)]
        env: std::collections::BTreeMap<String, ValueSpec>,
        /// Environment variables holding the path of a file with a value.
        #[serde(default)]
        files: std::collections::BTreeMap<String, ValueSpec>,
        /// Names of the daemon's environment variables passed on when set.
        /// Besides these, the command gets only `PATH`, `env`, `files` and
        /// `WEBHOOK_*`: never the daemon's own environment (other hooks'
        /// `env:` secrets, `CREDENTIALS_DIRECTORY`).
        #[serde(default)]
        pass_env: Vec<String>,
    },
    /// A job root defined as systemd units (`webhook-job-NAME.socket` with
    /// `Accept=yes`); see docs/jobs.md.
    Job {
        /// The NAME in `webhook-job-NAME.socket`.
        name: String,
        /// Default `/run/webhookd-jobs/webhook-job-NAME.sock` (the packaged drop-in's path).
        #[serde(default)]
        socket: Option<PathBuf>,
        #[serde(default = "default_exec_timeout", deserialize_with = "de_duration")]
        timeout: Duration,
        #[serde(default = "default_exec_concurrency")]
        concurrency: usize,
        /// As for exec; the unit must allow them (`job-run --args`, `--env NAME`).
        #[serde(default)]
        args: Vec<ValueSpec>,
        #[serde(default)]
        env: std::collections::BTreeMap<String, ValueSpec>,
        #[serde(default)]
        files: std::collections::BTreeMap<String, ValueSpec>,
    },
}

fn default_forward_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_exec_timeout() -> Duration {
    Duration::from_secs(60)
}
fn default_forward_concurrency() -> usize {
    8
}
fn default_forward_connections() -> usize {
    16
}
fn default_exec_concurrency() -> usize {
    1
}

impl ActionConfig {
    pub fn timeout(&self) -> Duration {
        match self {
            ActionConfig::Forward { timeout, .. }
            | ActionConfig::Exec { timeout, .. }
            | ActionConfig::Job { timeout, .. } => *timeout,
        }
    }
    pub fn concurrency(&self) -> usize {
        match self {
            ActionConfig::Forward { concurrency, .. }
            | ActionConfig::Exec { concurrency, .. }
            | ActionConfig::Job { concurrency, .. } => *concurrency,
        }
    }
}

/// `[hooks.retry]`: exponential backoff with full jitter.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryConfig {
    /// Attempts in all, the first included; then the event is a dead letter.
    pub max_attempts: u32,
    /// An event older than this is not retried again.
    #[serde(deserialize_with = "de_duration")]
    pub max_age: Duration,
    /// Upper bound of the first retry's delay; doubles each attempt.
    #[serde(deserialize_with = "de_duration")]
    pub initial_delay: Duration,
    #[serde(deserialize_with = "de_duration")]
    pub max_delay: Duration,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            max_attempts: 10,
            max_age: Duration::from_secs(24 * 3600),
            initial_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(600),
        }
    }
}

/// `[hooks.breaker]`: stop calling a failing target for a while.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BreakerConfig {
    /// Consecutive failures that open the breaker (0 disables it).
    pub failures: u32,
    /// How long it stays open before one probe is let through.
    #[serde(deserialize_with = "de_duration")]
    pub cooldown: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            failures: 5,
            cooldown: Duration::from_secs(30),
        }
    }
}

/// `[delivery]`: how this instance processes stored events.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeliveryConfig {
    /// How often to look for due events when nothing wakes us earlier.
    #[serde(deserialize_with = "de_duration")]
    pub poll_interval: Duration,
    /// Extra lease time beyond the action's timeout before another worker may
    /// take over an event whose worker died.
    #[serde(deserialize_with = "de_duration")]
    pub lease_margin: Duration,
    /// Bytes of a command's stdout/stderr kept for the log.
    pub output_limit: usize,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        DeliveryConfig {
            poll_interval: Duration::from_secs(1),
            lease_margin: Duration::from_secs(30),
            output_limit: 4096,
        }
    }
}

/// `[retention]`: delete old finished events in small batches.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionConfig {
    /// Delivered events (and events of hooks without an action) older than
    /// this many days are deleted; 0 keeps them forever. Fractions are fine.
    pub days: f64,
    /// Dead letters are kept longer; 0 keeps them forever.
    pub dead_days: f64,
    #[serde(deserialize_with = "de_duration")]
    pub interval: Duration,
    /// Rows deleted per statement, so ingest never waits long on a lock.
    pub batch: u32,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            days: 7.0,
            dead_days: 30.0,
            interval: Duration::from_secs(3600),
            batch: 1000,
        }
    }
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
    pub fn resolve(&self) -> Result<Secret, SecretError> {
        let raw = match self {
            SecretRef::File(p) => std::fs::read(p).map_err(|source| SecretError::File {
                path: p.clone(),
                source,
            })?,
            SecretRef::Env(n) => std::env::var_os(n)
                .ok_or_else(|| SecretError::EnvUnset(n.clone()))?
                .into_encoded_bytes(),
            SecretRef::Credential(n) => read_credential(n)?,
        };
        let trimmed = trim_newline(&raw);
        if trimmed.is_empty() {
            return Err(SecretError::Empty(self.clone()));
        }
        Ok(Secret(trimmed.to_vec()))
    }
}

/// `$CREDENTIALS_DIRECTORY/NAME` inside the unit (LoadCredential=). Outside
/// it (`webhookd check-config` or `sign` run by an administrator), look where
/// systemd itself looks for `LoadCredential=NAME` without a path.
fn read_credential(name: &str) -> Result<Vec<u8>, SecretError> {
    let read = |path: PathBuf| {
        std::fs::read(&path).map_err(|source| SecretError::Credential { path, source })
    };
    if let Some(dir) = std::env::var_os("CREDENTIALS_DIRECTORY") {
        return read(Path::new(&dir).join(name));
    }
    const STORES: [&str; 3] = ["/etc/credstore", "/run/credstore", "/usr/lib/credstore"];
    for dir in STORES {
        let p = Path::new(dir).join(name);
        if p.exists() {
            return read(p);
        }
    }
    Err(SecretError::NoCredential {
        name: name.to_string(),
        stores: STORES.join(", "),
    })
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

fn de_opt_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    de_duration(d).map(Some)
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

fn validate_responses(h: &HookConfig) -> Result<(), (String, String)> {
    let r = &h.response;
    for (name, c) in [
        ("accepted", &r.accepted),
        ("duplicate", &r.duplicate),
        ("ignored", &r.ignored),
    ] {
        let Some(c) = c else { continue };
        let k = |x: &str| format!("response.{name}.{x}");
        if let Some(s) = c.status {
            if !(200..=599).contains(&s) {
                return Err((
                    k("status"),
                    format!("expected an HTTP status 200-599, got {s}"),
                ));
            }
        }
        if let Some(ct) = &c.content_type {
            if http::HeaderValue::from_str(ct).is_err() {
                return Err((k("content_type"), "not a valid header value".into()));
            }
        }
        for (n, v) in &c.headers {
            if http::HeaderName::from_bytes(n.as_bytes()).is_err()
                || http::HeaderValue::from_str(v).is_err()
            {
                return Err((
                    k(&format!("headers.{n}")),
                    "not a valid header name and value".into(),
                ));
            }
            let lower = n.to_ascii_lowercase();
            if matches!(
                lower.as_str(),
                "content-length" | "transfer-encoding" | "connection"
            ) {
                return Err((k(&format!("headers.{n}")), "is set by the server".into()));
            }
        }
    }
    if let Some(ct) = &h.payload_content_type {
        let known = ["application/json", "application/x-www-form-urlencoded"];
        if !known.contains(&ct.trim().to_ascii_lowercase().as_str()) {
            return Err((
                "payload_content_type".into(),
                format!("expected one of {known:?}, got {ct:?} (other bodies are not parsed)"),
            ));
        }
    }
    if h.respond == Respond::AfterAction && !h.has_actions() {
        return Err((
            "respond".into(),
            "\"after_action\" needs an [hooks.action] (or [[hooks.actions]]) to wait for".into(),
        ));
    }
    if h.respond_error_output && h.respond != Respond::AfterAction {
        return Err((
            "respond_error_output".into(),
            "applies only with respond = \"after_action\"".into(),
        ));
    }
    if let Some(d) = h.respond_deadline {
        if h.respond != Respond::AfterAction {
            return Err((
                "respond_deadline".into(),
                "applies only with respond = \"after_action\"".into(),
            ));
        }
        if d.is_zero() || d > Duration::from_secs(60) {
            return Err((
                "respond_deadline".into(),
                "expected a duration between 1ms and 60s (below the sender's timeout)".into(),
            ));
        }
    }
    Ok(())
}

fn validate_action(a: &ActionConfig) -> Result<(), (&'static str, String)> {
    if a.concurrency() == 0 {
        return Err(("concurrency", "must be at least 1".into()));
    }
    if a.timeout().is_zero() {
        return Err(("timeout", "must be more than 0".into()));
    }
    match a {
        ActionConfig::Forward {
            url,
            tls_ca,
            tls_client_cert,
            tls_client_key,
            headers,
            max_connections,
            ..
        } => {
            let uri: http::Uri = url
                .parse()
                .map_err(|_| ("url", format!("not a valid URL: {url:?}")))?;
            let https = match uri.scheme_str() {
                Some("https") => true,
                Some("http") => false,
                _ => {
                    return Err((
                        "url",
                        format!("expected an http:// or https://host[:port]/path URL, got {url:?}"),
                    ))
                }
            };
            if uri.host().is_none() {
                return Err(("url", format!("the URL has no host: {url:?}")));
            }
            if !https {
                for (key, set) in [
                    ("tls_ca", tls_ca.is_some()),
                    ("tls_client_cert", tls_client_cert.is_some()),
                    ("tls_client_key", tls_client_key.is_some()),
                ] {
                    if set {
                        return Err((
                            key,
                            format!("applies to https:// URLs only, and url is {url:?}"),
                        ));
                    }
                }
            }
            if tls_client_cert.is_some() != tls_client_key.is_some() {
                return Err((
                    if tls_client_cert.is_some() {
                        "tls_client_key"
                    } else {
                        "tls_client_cert"
                    },
                    "tls_client_cert and tls_client_key go together: give both or neither".into(),
                ));
            }
            if *max_connections == 0 {
                return Err(("max_connections", "must be at least 1".into()));
            }
            for name in headers.keys() {
                let n = http::HeaderName::try_from(name.as_str())
                    .map_err(|_| ("headers", format!("{name:?} is not a valid header name")))?;
                let reserved = matches!(
                    n.as_str(),
                    "host"
                        | "content-length"
                        | "transfer-encoding"
                        | "connection"
                        | "te"
                        | "upgrade"
                ) || n.as_str().starts_with("webhookd-")
                    || n.as_str().starts_with("webhook-");
                if reserved {
                    return Err((
                        "headers",
                        format!("{name:?} is set by webhookd and cannot be configured"),
                    ));
                }
            }
        }
        ActionConfig::Exec {
            command,
            shell,
            pass_env,
            ..
        } => {
            let bad_name = |n: &str| {
                n.is_empty() || n.contains('=') || n.contains('\0') || n.starts_with("WEBHOOK_")
            };
            if let Some(n) = pass_env.iter().find(|n| bad_name(n)) {
                return Err((
                    "pass_env",
                    format!("{n:?} is not a usable variable name (empty, contains '=' or NUL, or WEBHOOK_*, which webhookd sets)"),
                ));
            }
            if command.is_empty() || command[0].is_empty() {
                return Err(("command", "must name a program".into()));
            }
            if *shell && command.len() != 1 {
                return Err((
                    "command",
                    "with shell = true, give the whole command line as one string".into(),
                ));
            }
            if !*shell && !command[0].starts_with('/') {
                return Err((
                    "command",
                    format!("the program must be an absolute path, got {:?}", command[0]),
                ));
            }
        }
        ActionConfig::Job { name, socket, .. } => {
            // Part of unit names (webhook-job-NAME.socket); config imports
            // nothing from the crate, so the rule is spelled out here.
            let ok = !name.is_empty()
                && name.len() <= 64
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
            if !ok {
                return Err((
                    "name",
                    format!("expected 1-64 of A-Z a-z 0-9 - _ (the NAME of webhook-job-NAME.socket), got {name:?}"),
                ));
            }
            if let Some(p) = socket {
                if !p.is_absolute() {
                    return Err(("socket", format!("must be an absolute path, got {p:?}")));
                }
            }
        }
    }
    Ok(())
}

/// `scheme://authority` of a forward URL: the circuit breaker's and the
/// connection limit's key.
pub fn forward_origin(url: &str) -> String {
    match url.parse::<http::Uri>() {
        Ok(u) => format!(
            "{}://{}",
            u.scheme_str().unwrap_or("http"),
            u.authority().map(|a| a.as_str()).unwrap_or("")
        ),
        Err(_) => url.to_string(),
    }
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

impl Config {
    /// Read and validate a config file; `check_hook` is asked about each
    /// `[[hooks]]` entry (see [`Config::parse_with`]).
    pub fn load_with(path: &Path, check_hook: &HookCheck<'_>) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::parse_with(path, &text, check_hook)
    }

    /// Parse and validate config text; `path` is only used in messages.
    /// `check_hook` runs on each hook after its id is checked: the checks
    /// that need the layers above (its scheme's options, its rules). Its
    /// error key is relative to the hook (`scheme`, `allow_ips[0]`).
    pub fn parse_with(
        path: &Path,
        text: &str,
        check_hook: &HookCheck<'_>,
    ) -> Result<Config, ConfigError> {
        let cfg: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: describe_toml_error(text, &e),
        })?;
        cfg.validate(path, check_hook)?;
        Ok(cfg)
    }

    fn validate(&self, path: &Path, check_hook: &HookCheck<'_>) -> Result<(), ConfigError> {
        let invalid = |key: String, message: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            source: Invalid::new(key, message),
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
        if self.store.batch_max_bytes == 0 {
            return Err(invalid(
                "store.batch_max_bytes".into(),
                "must be at least 1".into(),
            ));
        }
        if self.store.write_timeout.is_zero()
            || self.store.write_timeout >= self.server.store_timeout
        {
            return Err(invalid(
                "store.write_timeout".into(),
                format!(
                    "must be more than 0 and less than server.store_timeout ({}): a batch that overruns it is spooled, and that must happen before the request gives up",
                    humantime::format_duration(self.server.store_timeout)
                ),
            ));
        }
        let needed = self.store.pool_size_needed();
        if self.is_postgres() && self.store.pool_size != 0 && self.store.pool_size < needed {
            return Err(invalid(
                "store.pool_size".into(),
                format!(
                    "{} is too small: {} writer(s){} each hold a connection for good, and pings, counts, claims and results need at least 2 more; use at least {needed}, or 0 to size the pool automatically",
                    self.store.pool_size,
                    self.store.writer_threads(true),
                    if self.store.spool == "off" { "" } else { " and the spool drain" },
                ),
            ));
        }
        parse_listen(&self.server.listen)
            .map_err(|e| invalid("server.listen".into(), e.to_string()))?;
        if self.server.max_header_bytes < 8192 {
            return Err(invalid(
                "server.max_header_bytes".into(),
                "must be at least 8192 (hyper's minimum read buffer)".into(),
            ));
        }
        if self.server.body_timeout.is_zero() {
            return Err(invalid(
                "server.body_timeout".into(),
                "must be more than 0".into(),
            ));
        }
        if self.server.max_in_flight == 0 {
            return Err(invalid(
                "server.max_in_flight".into(),
                "must be at least 1".into(),
            ));
        }
        for (i, t) in self.server.trusted_proxies.iter().enumerate() {
            if t.from != "unix" {
                parse_net(&t.from)
                    .map_err(|m| invalid(format!("server.trusted_proxies[{i}].from"), m))?;
            }
        }
        if let Some(a) = &self.server.admin_listen {
            parse_listen(a).map_err(|e| invalid("server.admin_listen".into(), e.to_string()))?;
        }
        let mut seen = HashSet::new();
        let mut targets: std::collections::HashMap<String, (usize, usize)> = Default::default();
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
            check_hook(h).map_err(|e| invalid(key(&e.key), e.message))?;
            if h.scheme == "none" {
                if !h.secrets.is_empty() {
                    return Err(invalid(
                        key("secrets"),
                        "scheme \"none\" checks nothing; remove the secrets or choose a scheme"
                            .into(),
                    ));
                }
            } else if h.secrets.is_empty() {
                return Err(invalid(
                    key("secrets"),
                    "at least one secret reference is required".into(),
                ));
            }
            if h.body_limit == Some(0) {
                return Err(invalid(key("body_limit"), "must be at least 1".into()));
            }
            if h.action.is_some() && !h.actions.is_empty() {
                return Err(invalid(
                    key("actions"),
                    "a hook has either one [hooks.action] or a list of [[hooks.actions]], not both: \
                     move the single action into the list (give it an id, e.g. \"default\" to keep its deliveries)"
                        .into(),
                ));
            }
            let mut action_ids = HashSet::new();
            for spec in h.action_specs() {
                let akey = |k: &str| key(&format!("{}.{k}", spec.key()));
                if spec.index.is_some() {
                    let ok = !spec.id.is_empty()
                        && spec.id.len() <= 64
                        && spec.id.bytes().all(|b| {
                            b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-'
                        });
                    if !ok {
                        return Err(invalid(
                            akey("id"),
                            format!(
                                "expected 1-64 of a-z 0-9 _ - (kept with each delivery), got {:?}",
                                spec.id
                            ),
                        ));
                    }
                    if !action_ids.insert(spec.id) {
                        return Err(invalid(
                            akey("id"),
                            format!("duplicate action id {:?} in this hook", spec.id),
                        ));
                    }
                    if let Some(ev) = spec.events {
                        if ev.is_empty() {
                            return Err(invalid(
                                akey("events"),
                                "an empty list matches nothing: remove the action, or the key"
                                    .into(),
                            ));
                        }
                    }
                }
                validate_action(spec.action).map_err(|(k, m)| invalid(akey(k), m))?;
                if let ActionConfig::Forward {
                    url,
                    max_connections,
                    ..
                } = spec.action
                {
                    let origin = forward_origin(url);
                    match targets.get(&origin) {
                        Some((j, n)) if n != max_connections => {
                            return Err(invalid(
                                akey("max_connections"),
                                format!(
                                    "hooks[{j}] forwards to the same target {origin} with max_connections = {n}; the limit is per target, so give the same value"
                                ),
                            ))
                        }
                        Some(_) => {}
                        None => {
                            targets.insert(origin, (i, *max_connections));
                        }
                    }
                }
                if spec.retry.max_attempts == 0 {
                    let k = if std::ptr::eq(spec.retry, &h.retry) {
                        key("retry.max_attempts")
                    } else {
                        akey("retry.max_attempts")
                    };
                    return Err(invalid(k, "must be at least 1".into()));
                }
            }
            if h.retry.max_attempts == 0 {
                return Err(invalid(
                    key("retry.max_attempts"),
                    "must be at least 1".into(),
                ));
            }
            validate_responses(h).map_err(|(k, m)| invalid(key(&k), m))?;
        }
        Ok(())
    }

    fn is_postgres(&self) -> bool {
        self.store.url.starts_with("postgres://") || self.store.url.starts_with("postgresql://")
    }

    /// The spool file to use, if any (only for PostgreSQL).
    pub fn spool_path(&self) -> Option<PathBuf> {
        if self.store.url.starts_with("sqlite:") {
            return None;
        }
        match self.store.spool.as_str() {
            "off" | "" => None,
            "auto" => Config::default_spool_path(),
            p => Some(PathBuf::from(p)),
        }
    }

    /// Where `spool = "auto"` puts the spool: `spool.db` in the state
    /// directory, if that exists. Also where a spool left behind by an
    /// earlier configuration is looked for at start.
    pub fn default_spool_path() -> Option<PathBuf> {
        let dir = std::env::var_os("STATE_DIRECTORY")
            .map(|d| {
                // systemd may pass several, colon-separated.
                let d = d.to_string_lossy().into_owned();
                PathBuf::from(d.split(':').next().unwrap_or_default())
            })
            .unwrap_or_else(|| PathBuf::from("/var/lib/webhookd"));
        dir.is_dir().then(|| dir.join("spool.db"))
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
        Config::parse_with(Path::new("/etc/webhookd/test.toml"), s, &|_| Ok(()))
    }

    #[test]
    fn minimal_config_parses() {
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
    fn trusted_proxies_name_their_header() {
        let c = parse(
            "[server]\ntrusted_proxies = [{ from = \"127.0.0.1\", header = \"cf-connecting-ip\" }, { from = \"unix\", header = \"X-Forwarded-For\" }]\n",
        )
        .unwrap();
        assert_eq!(
            c.server.trusted_proxies[0].header,
            ForwardHeader::CfConnectingIp
        );
        assert_eq!(c.server.trusted_proxies[1].from, "unix");
        assert_eq!(c.server.body_timeout, Duration::from_secs(10));
        let e = parse("[server]\ntrusted_proxies = [\"127.0.0.1\"]\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("trusted_proxies") && e.contains("header = \"X-Forwarded-For\""),
            "{e}"
        );
        let e = parse(
            "[server]\ntrusted_proxies = [{ from = \"127.0.0.1\", header = \"Forwarded\" }]\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("CF-Connecting-IP"), "{e}");
        let e =
            parse("[server]\ntrusted_proxies = [{ from = \"nope\", header = \"X-Real-IP\" }]\n")
                .unwrap_err()
                .to_string();
        assert!(e.contains("trusted_proxies[0].from"), "{e}");
        let e = parse("[server]\nbody_timeout = \"0s\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("body_timeout"), "{e}");
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

        let e = parse("[server]\nlisten = 5\n").unwrap_err().to_string();
        assert!(e.contains("listen"), "{e}");

        let e = parse("[serverr]\n").unwrap_err().to_string();
        assert!(e.contains("serverr"), "{e}");
    }

    #[test]
    fn listen_addresses() {
        assert_eq!(
            parse_listen("127.0.0.1:9000"),
            Ok(ListenAddr::Tcp("127.0.0.1:9000".parse().unwrap()))
        );
        assert!(matches!(parse_listen("[::1]:9000"), Ok(ListenAddr::Tcp(_))));
        assert_eq!(
            parse_listen("unix:/run/w.sock"),
            Ok(ListenAddr::Unix("/run/w.sock".into()))
        );
        assert!(parse_listen("unix:rel").is_err());
        assert!(parse_listen("localhost").is_err());
    }

    #[test]
    fn tls_listener_and_https_forward_options_parse() {
        let c = parse(
            r#"
            [server.tls]
            cert = "file:/etc/webhookd/tls/fullchain.pem"
            key = "credential:tls.key"
            [[hooks]]
            id = "a"
            scheme = "github"
            secrets = ["env:X"]
            [hooks.action]
            type = "forward"
            url = "https://ci.example.com/x"
            tls_ca = "file:/etc/webhookd/ca.pem"
            [hooks.action.headers]
            Authorization = "env:CI_TOKEN"
            "#,
        )
        .unwrap();
        let t = c.server.tls.unwrap();
        assert_eq!(t.key, SecretRef::Credential("tls.key".into()));
        assert_eq!(t.expiry_warning, Duration::from_secs(14 * 86_400));
        let e = parse("[server.tls]\ncert = \"file:/c\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("key"), "{e}");
    }

    #[test]
    fn hooks_sharing_a_target_share_its_connection_limit() {
        let hook = |id: &str, n: usize| {
            format!(
                "[[hooks]]\nid = \"{id}\"\nscheme = \"github\"\nsecrets = [\"env:X\"]\n[hooks.action]\ntype = \"forward\"\nurl = \"https://ci.example.com/{id}\"\nmax_connections = {n}\n"
            )
        };
        assert!(parse(&format!("{}{}", hook("a", 4), hook("b", 4))).is_ok());
        let e = parse(&format!("{}{}", hook("a", 4), hook("b", 8)))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("hooks[1].action.max_connections") && e.contains("hooks[0]"),
            "{e}"
        );
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
        let e = SecretRef::File(p).resolve().unwrap_err().to_string();
        assert!(e.contains("cannot read secret file"));
    }
}
