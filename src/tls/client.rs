//! HTTPS forward targets: a rustls client config per set of TLS options
//! (the system CA store, or the action's CA bundle; optionally a client
//! certificate for mTLS), the hyper-rustls connector around hyper-util's
//! HTTP connector, and pooled clients shared by every hook with the same
//! options, so HTTPS costs one handshake per connection, not per event
//! (HTTP/2 where the target offers it, else keep-alive HTTP/1.1).
//!
//! There is no way to skip verification: a target with a private CA gets
//! that CA as `tls_ca`.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rustls::client::ResolvesClientCert;
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, SignatureScheme};
use tokio::sync::Semaphore;

use super::{load_certs, load_pair, TlsError};
use crate::config::SecretRef;

/// The TLS options of one forward action.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settings {
    /// Trust only these CAs (PEM bundle) instead of the system store.
    pub ca: Option<SecretRef>,
    /// Client certificate chain and key for targets that require mTLS.
    pub client_cert: Option<SecretRef>,
    pub client_key: Option<SecretRef>,
}

/// A built client config and what identifies it (for sharing pools).
#[derive(Clone)]
pub struct ClientTls {
    pub config: Arc<rustls::ClientConfig>,
    /// Same value = same roots and client certificate: the pool is shared.
    pub fingerprint: u64,
    /// For logs: "system CA store" or the bundle's reference, and mTLS.
    pub describe: String,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ClientTls({})", self.describe)
    }
}

#[derive(Debug)]
struct ClientCert(Arc<CertifiedKey>);

impl ResolvesClientCert for ClientCert {
    fn resolve(&self, _hints: &[&[u8]], _schemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
    fn has_certs(&self) -> bool {
        true
    }
}

static SYSTEM_ROOTS: Mutex<Option<Arc<RootCertStore>>> = Mutex::new(None);

/// The system's CA store (rustls-native-certs: `SSL_CERT_FILE` /
/// `SSL_CERT_DIR` if set, else the distribution's bundle, e.g. Debian's
/// /etc/ssl/certs from `ca-certificates`). Read once and kept; reload reads
/// it again ([`forget_system_roots`]).
pub fn system_roots() -> Result<Arc<RootCertStore>, TlsError> {
    let mut g = SYSTEM_ROOTS.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(r) = g.as_ref() {
        return Ok(r.clone());
    }
    let found = rustls_native_certs::load_native_certs();
    let mut store = RootCertStore::empty();
    let (added, ignored) = store.add_parsable_certificates(found.certs);
    let errors: Vec<String> = found.errors.iter().map(|e| e.to_string()).collect();
    if added == 0 {
        return Err(TlsError::Config {
            what: "system CA store",
            message: format!(
                "no CA certificate found{} (install the ca-certificates package, or give the action a CA bundle with tls_ca)",
                if errors.is_empty() {
                    String::new()
                } else {
                    format!(": {}", errors.join("; "))
                }
            ),
        });
    }
    if !errors.is_empty() || ignored > 0 {
        log::warn!(
            "system CA store: {added} CA certificate(s) loaded, {ignored} unparsable skipped{}",
            if errors.is_empty() {
                String::new()
            } else {
                format!("; {}", errors.join("; "))
            }
        );
    }
    let store = Arc::new(store);
    *g = Some(store.clone());
    Ok(store)
}

/// Read the system CA store again on next use (called on reload).
pub fn forget_system_roots() {
    *SYSTEM_ROOTS.lock().unwrap_or_else(|p| p.into_inner()) = None;
}

impl ClientTls {
    /// Build the client config for an action's options.
    pub fn build(s: &Settings) -> Result<ClientTls, TlsError> {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        let (roots, roots_desc) = match &s.ca {
            Some(r) => {
                let mut store = RootCertStore::empty();
                for (i, c) in load_certs("CA bundle", r)?.into_iter().enumerate() {
                    c.as_ref().hash(&mut h);
                    store.add(c).map_err(|e| TlsError::BadCertificate {
                        what: "CA bundle",
                        reference: r.to_string(),
                        index: i + 1,
                        message: e.to_string(),
                    })?;
                }
                (Arc::new(store), format!("CA bundle {r}"))
            }
            None => {
                "system".hash(&mut h);
                (system_roots()?, "system CA store".to_string())
            }
        };
        let builder = rustls::ClientConfig::builder_with_provider(super::provider())
            .with_protocol_versions(super::VERSIONS)
            .map_err(|e| TlsError::Config {
                what: "client TLS",
                message: e.to_string(),
            })?
            .with_root_certificates(roots);
        let (config, mtls) = match (&s.client_cert, &s.client_key) {
            (Some(c), Some(k)) => {
                let (ck, _) = load_pair(c, k)?;
                for d in &ck.cert {
                    d.as_ref().hash(&mut h);
                }
                (
                    builder.with_client_cert_resolver(Arc::new(ClientCert(ck))),
                    format!(", client certificate {c}"),
                )
            }
            (None, None) => (builder.with_no_client_auth(), String::new()),
            _ => {
                return Err(TlsError::Config {
                    what: "client certificate",
                    message: "tls_client_cert and tls_client_key go together: give both or neither"
                        .into(),
                })
            }
        };
        Ok(ClientTls {
            config: Arc::new(config),
            fingerprint: h.finish(),
            describe: format!("{roots_desc}{mtls}"),
        })
    }

    /// A config for plain http:// targets (no roots: never used to verify).
    pub fn plain() -> Result<ClientTls, TlsError> {
        let config = rustls::ClientConfig::builder_with_provider(super::provider())
            .with_protocol_versions(super::VERSIONS)
            .map_err(|e| TlsError::Config {
                what: "client TLS",
                message: e.to_string(),
            })?
            .with_root_certificates(RootCertStore::empty())
            .with_no_client_auth();
        Ok(ClientTls {
            config: Arc::new(config),
            fingerprint: 0,
            describe: "plain HTTP".into(),
        })
    }
}

/// The HTTP client used for forwarding.
pub type HttpsClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// A pooled client for one TLS config. `https_or_http`: an `http://` URL is
/// plain HTTP/1.1 as configured, an `https://` URL is only ever TLS
/// (hyper-rustls never falls back), HTTP/2 when the target offers it in
/// ALPN, else HTTP/1.1 with keep-alive. SNI and the name checked are the
/// URL's host.
pub fn http_client(tls: &ClientTls) -> HttpsClient {
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    http.set_connect_timeout(Some(Duration::from_secs(5)));
    http.enforce_http(false);
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config((*tls.config).clone())
        .https_or_http()
        // ALPN offers h2 and http/1.1 on https://; a target that picks h2
        // gets every request multiplexed on one connection.
        .enable_all_versions()
        .wrap_connector(http);
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .build(connector)
}

/// Clients shared by TLS config, and the per-target connection limits.
#[derive(Default)]
pub struct Clients {
    by_tls: Mutex<HashMap<u64, HttpsClient>>,
    limits: Mutex<HashMap<String, (usize, Arc<Semaphore>)>>,
}

impl Clients {
    /// The pooled client for `tls` (made on first use; kept across reloads
    /// while the certificates stay the same, so its connections are reused).
    pub fn client(&self, tls: &ClientTls) -> HttpsClient {
        let mut g = self.by_tls.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = g.get(&tls.fingerprint) {
            return c.clone();
        }
        // Old configs (replaced certificates) are dropped eventually.
        if g.len() >= 64 {
            g.clear();
        }
        let c = http_client(tls);
        g.insert(tls.fingerprint, c.clone());
        c
    }

    /// The semaphore limiting requests (so connections) to `target` at
    /// once. A changed limit (reload) starts a new one.
    pub fn limit(&self, target: &str, max: usize) -> Arc<Semaphore> {
        let mut g = self.limits.lock().unwrap_or_else(|p| p.into_inner());
        match g.get(target) {
            Some((n, s)) if *n == max => s.clone(),
            _ => {
                let s = Arc::new(Semaphore::new(max.max(1)));
                g.insert(target.to_string(), (max, s.clone()));
                s
            }
        }
    }
}
