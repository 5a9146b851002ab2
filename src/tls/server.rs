//! The HTTPS listener's TLS side: the rustls server config, the certificate
//! that reload swaps in place, the handshake (bounded in time and in number,
//! like requests), a clear answer to plain HTTP on the TLS port, and the
//! certificate's expiry for the log, /status and /readyz.
//!
//! Reload swaps the certificate behind a resolver, not the listener:
//! connections already open keep their session, the next handshake gets the
//! new certificate, and nothing is closed.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime};

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use super::{load_pair, TlsError, Validity};
use crate::config::SecretRef;

/// `[server.tls]`, as the listener needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub cert: SecretRef,
    pub key: SecretRef,
    /// Warn (log, /status) when the certificate expires within this time.
    pub expiry_warning: Duration,
}

impl From<&crate::config::ServerTlsConfig> for Settings {
    fn from(c: &crate::config::ServerTlsConfig) -> Settings {
        Settings {
            cert: c.cert.clone(),
            key: c.key.clone(),
            expiry_warning: c.expiry_warning,
        }
    }
}

/// A certificate pair, loaded and checked, ready to be installed.
#[derive(Debug)]
pub struct Loaded {
    key: Arc<CertifiedKey>,
    validity: Validity,
    settings: Settings,
    loaded_at: SystemTime,
}

impl Loaded {
    /// Read and check the pair the settings name.
    pub fn load(settings: &Settings) -> Result<Loaded, TlsError> {
        let (key, validity) = load_pair(&settings.cert, &settings.key)?;
        Ok(Loaded {
            key,
            validity,
            settings: settings.clone(),
            loaded_at: SystemTime::now(),
        })
    }
}

impl Loaded {
    /// The certificate's notAfter, for the expiry metric.
    pub fn not_after(&self) -> SystemTime {
        self.validity.not_after
    }

    /// One line for check-config: which certificate, for whom, until when.
    pub fn describe(&self) -> String {
        format!(
            "TLS certificate {} ({}), valid until {}",
            self.settings.cert,
            self.validity.subject,
            humantime::format_rfc3339_seconds(self.validity.not_after)
        )
    }
}

#[derive(Debug)]
struct Resolver {
    current: RwLock<Arc<Loaded>>,
}

impl Resolver {
    fn get(&self) -> Arc<Loaded> {
        match self.current.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.get().key.clone())
    }
}

/// Why a connection did not become a TLS session.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    #[error("too many TLS handshakes in progress (server.max_in_flight); connection closed")]
    Busy,
    #[error("TLS handshake not completed within {0:?}")]
    Timeout(Duration),
    #[error("plain HTTP request on the TLS port; answered 400")]
    PlainHttp,
    #[error("client closed the connection before the TLS handshake")]
    Closed,
    #[error("TLS handshake failed: {0}")]
    Failed(std::io::Error),
}

impl HandshakeError {
    /// A short reason for the rejection counter.
    pub fn reason(&self) -> &'static str {
        match self {
            HandshakeError::Busy => "tls_busy",
            HandshakeError::Timeout(_) => "tls_timeout",
            HandshakeError::PlainHttp => "tls_plain_http",
            HandshakeError::Closed | HandshakeError::Failed(_) => "tls_handshake",
        }
    }
}

/// The listener's TLS state, shared by the accept loops and reload.
pub struct ServerTls {
    config: Arc<rustls::ServerConfig>,
    resolver: Arc<Resolver>,
    handshakes: Arc<Semaphore>,
    max_handshakes: usize,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("certificate", &self.resolver.get().settings.cert)
            .finish_non_exhaustive()
    }
}

/// The ALPN protocols offered. HTTP/1.1 only: webhook senders speak it, and
/// the header timeout and exact head-size limit are HTTP/1 features of the
/// server (see README, "HTTPS").
pub const ALPN: &[&[u8]] = &[b"http/1.1"];

impl ServerTls {
    /// Load the pair and build the server config; `max_handshakes` bounds
    /// handshakes in progress (the same number as `server.max_in_flight`).
    pub fn new(settings: &Settings, max_handshakes: usize) -> Result<ServerTls, TlsError> {
        ServerTls::from_loaded(Arc::new(Loaded::load(settings)?), max_handshakes)
    }

    pub fn from_loaded(loaded: Arc<Loaded>, max_handshakes: usize) -> Result<ServerTls, TlsError> {
        let resolver = Arc::new(Resolver {
            current: RwLock::new(loaded),
        });
        let mut config = rustls::ServerConfig::builder_with_provider(super::provider())
            .with_protocol_versions(super::VERSIONS)
            .map_err(|e| TlsError::Config {
                what: "server TLS",
                message: e.to_string(),
            })?
            .with_no_client_auth()
            .with_cert_resolver(resolver.clone());
        config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
        Ok(ServerTls {
            config: Arc::new(config),
            resolver,
            handshakes: Arc::new(Semaphore::new(max_handshakes.max(1))),
            max_handshakes: max_handshakes.max(1),
        })
    }

    /// Serve `loaded` from the next handshake on. Open connections keep
    /// the session they have.
    pub fn install(&self, new: Arc<Loaded>) {
        match self.resolver.current.write() {
            Ok(mut g) => *g = new,
            Err(p) => *p.into_inner() = new,
        }
    }

    /// The settings of the certificate being served.
    pub fn settings(&self) -> Settings {
        self.resolver.get().settings.clone()
    }

    /// Handshakes in progress now.
    pub fn handshakes_in_progress(&self) -> usize {
        self.max_handshakes
            .saturating_sub(self.handshakes.available_permits())
    }

    /// Turn an accepted TCP connection into a TLS session within `limit`
    /// (the header timeout). Over the handshake cap the connection is closed
    /// at once. A plain HTTP request is answered 400 with a message saying
    /// the port speaks HTTPS, so the client sees why instead of garbage.
    pub async fn accept(
        &self,
        stream: TcpStream,
        limit: Duration,
    ) -> Result<TlsStream<TcpStream>, HandshakeError> {
        let Ok(_permit) = self.handshakes.clone().try_acquire_owned() else {
            return Err(HandshakeError::Busy);
        };
        let deadline = super::deadline_after(limit);
        let mut first = [0u8; 1];
        let n = match tokio::time::timeout_at(deadline, stream.peek(&mut first)).await {
            Err(_) => return Err(HandshakeError::Timeout(limit)),
            Ok(Err(e)) => return Err(HandshakeError::Failed(e)),
            Ok(Ok(n)) => n,
        };
        if n == 0 {
            return Err(HandshakeError::Closed);
        }
        // A TLS record starts with its content type (22, handshake); an
        // HTTP request starts with a method name.
        if first[0].is_ascii_alphabetic() {
            answer_plain_http(stream).await;
            return Err(HandshakeError::PlainHttp);
        }
        let acceptor = TlsAcceptor::from(self.config.clone());
        match tokio::time::timeout_at(deadline, acceptor.accept(stream)).await {
            Err(_) => Err(HandshakeError::Timeout(limit)),
            Ok(Err(e)) => Err(HandshakeError::Failed(e)),
            Ok(Ok(s)) => Ok(s),
        }
    }

    /// Why the listener should not receive traffic: an expired (or not yet
    /// valid) certificate, which every client will refuse.
    pub fn problem(&self, now: SystemTime) -> Option<String> {
        let l = self.resolver.get();
        let v = &l.validity;
        if now > v.not_after {
            Some(format!(
                "TLS certificate {} ({}) expired at {}",
                l.settings.cert,
                v.subject,
                humantime::format_rfc3339_seconds(v.not_after)
            ))
        } else if now < v.not_before {
            Some(format!(
                "TLS certificate {} ({}) is not valid before {}",
                l.settings.cert,
                v.subject,
                humantime::format_rfc3339_seconds(v.not_before)
            ))
        } else {
            None
        }
    }

    /// A warning when the certificate expires within `expiry_warning`.
    pub fn warning(&self, now: SystemTime) -> Option<String> {
        let l = self.resolver.get();
        let v = &l.validity;
        let left = v.not_after.duration_since(now).ok()?;
        (left <= l.settings.expiry_warning).then(|| {
            format!(
                "TLS certificate {} ({}) expires in {} (at {}); renew it and run `systemctl reload webhook`",
                l.settings.cert,
                v.subject,
                humantime::format_duration(Duration::from_secs(left.as_secs() / 3600 * 3600)),
                humantime::format_rfc3339_seconds(v.not_after)
            )
        })
    }

    /// Log the certificate's state (at start, after a reload, and daily).
    pub fn log_state(&self, now: SystemTime) {
        if let Some(p) = self.problem(now) {
            log::error!("{p}; clients will refuse the connection");
        } else if let Some(w) = self.warning(now) {
            log::warn!("{w}");
        }
    }

    /// The `tls` object of /status.
    pub fn status_json(&self, now: SystemTime) -> serde_json::Value {
        let l = self.resolver.get();
        let v = &l.validity;
        let seconds_left = match v.not_after.duration_since(now) {
            Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
            Err(e) => i64::try_from(e.duration().as_secs())
                .map(|s| -s)
                .unwrap_or(i64::MIN),
        };
        let state = if self.problem(now).is_some() {
            if now > v.not_after {
                "expired"
            } else {
                "not_yet_valid"
            }
        } else if self.warning(now).is_some() {
            "expires_soon"
        } else {
            "ok"
        };
        json!({
            "certificate": l.settings.cert.to_string(),
            "subject": v.subject,
            "not_before": humantime::format_rfc3339_seconds(v.not_before).to_string(),
            "not_after": humantime::format_rfc3339_seconds(v.not_after).to_string(),
            "seconds_left": seconds_left,
            "state": state,
            "warning": self.warning(now),
            "loaded_at": humantime::format_rfc3339_seconds(l.loaded_at).to_string(),
            "handshakes_in_progress": self.handshakes_in_progress(),
            "alpn": ALPN.iter().map(|p| String::from_utf8_lossy(p).into_owned()).collect::<Vec<_>>(),
        })
    }
}

/// Log the certificate's state now and then (hourly check, a repeated
/// warning at most daily), so an unattended renewal failure is noticed.
pub async fn watch_expiry(tls: Arc<ServerTls>) {
    let mut last_logged: Option<Instant> = None;
    let mut last_state = (false, false);
    loop {
        tokio::time::sleep(Duration::from_secs(3600)).await;
        let now = SystemTime::now();
        let state = (tls.problem(now).is_some(), tls.warning(now).is_some());
        let due = last_logged.is_none_or(|t| t.elapsed() >= Duration::from_secs(86_400));
        if (state.0 || state.1) && (state != last_state || due) {
            tls.log_state(now);
            last_logged = Some(Instant::now());
        }
        last_state = state;
    }
}

/// Answer a plain-HTTP request on the TLS port with a 400 that says why.
/// The request head is read first (bounded), so closing does not reset the
/// connection before the client has read the answer.
async fn answer_plain_http(mut s: TcpStream) {
    let mut buf = vec![0u8; 16 * 1024];
    let mut got = 0usize;
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        while got < buf.len() {
            let n = s.read(&mut buf[got..]).await?;
            if n == 0 {
                break;
            }
            got += n;
            if buf[..got].windows(4).any(|w| w == b"\r\n\r\n") {
                break;
            }
        }
        Ok::<_, std::io::Error>(())
    })
    .await;
    let body = r#"{"error":"this port speaks HTTPS (TLS): send the request to an https:// URL"}"#;
    let resp = format!(
        "HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(1), s.write_all(resp.as_bytes())).await;
    let _ = s.shutdown().await;
    // Drain what the client still sends (a body) for a moment, then close.
    let _ = tokio::time::timeout(Duration::from_millis(500), async {
        while s.read(&mut buf).await? > 0 {}
        Ok::<_, std::io::Error>(())
    })
    .await;
}
