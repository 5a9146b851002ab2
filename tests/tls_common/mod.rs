//! TLS helpers for the TLS tests: a CA and certificates made here (rcgen),
//! a blocking rustls client, and an HTTPS sink (optionally requiring a client
//! certificate), all over real loopback sockets.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

use crate::common::{parse_response, Resp};

pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A test CA that issues certificates.
pub struct Ca {
    pub cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

/// A certificate and its key, as PEM.
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
}

impl Ca {
    pub fn new(name: &str) -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(DnType::CommonName, name);
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = p.self_signed(&key).unwrap();
        Ca {
            cert_pem: cert.pem(),
            issuer: Issuer::new(p, key),
        }
    }

    /// A server certificate for `names` (DNS names or IP addresses), valid
    /// from yesterday for `days` days (negative: already expired).
    pub fn server(&self, names: &[&str], days: i64) -> Issued {
        self.issue(names, days, ExtendedKeyUsagePurpose::ServerAuth)
    }

    /// A client certificate (mTLS).
    pub fn client(&self, name: &str) -> Issued {
        self.issue(&[name], 30, ExtendedKeyUsagePurpose::ClientAuth)
    }

    fn issue(&self, names: &[&str], days: i64, eku: ExtendedKeyUsagePurpose) -> Issued {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .unwrap();
        p.distinguished_name.push(DnType::CommonName, names[0]);
        p.extended_key_usages = vec![eku];
        let now = time::OffsetDateTime::now_utc();
        if days >= 0 {
            p.not_before = now - time::Duration::days(1);
            p.not_after = now + time::Duration::days(days);
        } else {
            p.not_before = now - time::Duration::days(30);
            p.not_after = now + time::Duration::days(days);
        }
        let cert = p.signed_by(&key, &self.issuer).unwrap();
        Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }
}

pub fn certs(pem: &str) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .map(|c| c.unwrap())
        .collect()
}

pub fn key(pem: &str) -> PrivateKeyDer<'static> {
    PrivateKeyDer::from_pem_slice(pem.as_bytes()).unwrap()
}

/// A client config trusting `ca_pem` (and presenting `client` if given).
pub fn client_config(ca_pem: &str, client: Option<&Issued>) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for c in certs(ca_pem) {
        roots.add(c).unwrap();
    }
    let b = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let mut cfg = match client {
        Some(i) => b
            .with_client_auth_cert(certs(&i.cert_pem), key(&i.key_pem))
            .unwrap(),
        None => b.with_no_client_auth(),
    };
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(cfg)
}

/// A TLS session to `addr` with `sni` as the server name.
pub fn connect(
    addr: &str,
    sni: &str,
    cfg: Arc<rustls::ClientConfig>,
) -> std::io::Result<rustls::StreamOwned<rustls::ClientConnection, TcpStream>> {
    let tcp = TcpStream::connect(addr)?;
    tcp.set_read_timeout(Some(Duration::from_secs(30)))?;
    let name = ServerName::try_from(sni.to_string()).unwrap();
    let conn = rustls::ClientConnection::new(cfg, name).map_err(std::io::Error::other)?;
    let mut s = rustls::StreamOwned::new(conn, tcp);
    while s.conn.is_handshaking() {
        s.conn.complete_io(&mut s.sock)?;
    }
    Ok(s)
}

/// One request over TLS with `Connection: close`.
pub fn tls_request(
    addr: &str,
    sni: &str,
    cfg: Arc<rustls::ClientConfig>,
    method: &str,
    path: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> std::io::Result<Resp> {
    let mut s = connect(addr, sni, cfg)?;
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {sni}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    s.write_all(req.as_bytes())?;
    s.write_all(body)?;
    s.flush()?;
    let mut buf = Vec::new();
    match s.read_to_end(&mut buf) {
        Ok(_) => {}
        // A peer that closes without close_notify still sent a full answer.
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !buf.is_empty() => {}
        Err(e) => return Err(e),
    }
    parse_response(&buf)
}

/// The DER of the certificate the server presented on a fresh session.
pub fn peer_cert(addr: &str, sni: &str, cfg: Arc<rustls::ClientConfig>) -> Vec<u8> {
    // No resumption: a resumed session reports the certificate it began with.
    let mut fresh = (*cfg).clone();
    fresh.resumption = rustls::client::Resumption::disabled();
    let s = connect(addr, sni, Arc::new(fresh)).unwrap();
    s.conn.peer_certificates().unwrap()[0].as_ref().to_vec()
}

pub fn write_pem(dir: &Path, name: &str, pem: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, pem).unwrap();
    p
}

/// One request received by the [`TlsSink`].
#[derive(Debug, Clone)]
pub struct Got {
    pub at: Instant,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Subject CN-bearing client certificate DER, if the client sent one.
    pub client_cert: Option<Vec<u8>>,
    /// Which TCP connection (counted from 1) carried it.
    pub conn: usize,
}

impl Got {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A real HTTPS server on loopback that answers 200 to every request and
/// records it. With `client_ca`, a client certificate from that CA is
/// required (mTLS).
pub struct TlsSink {
    pub addr: String,
    pub port: u16,
    pub received: Arc<Mutex<Vec<Got>>>,
    pub connections: Arc<Mutex<usize>>,
    pub handshake_errors: Arc<Mutex<Vec<String>>>,
}

impl TlsSink {
    pub fn new(server: &Issued, client_ca: Option<&str>) -> TlsSink {
        TlsSink::with_delay(server, client_ca, Duration::ZERO)
    }

    /// Like `new`, answering each request after `delay`.
    pub fn with_delay(server: &Issued, client_ca: Option<&str>, delay: Duration) -> TlsSink {
        let b = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap();
        let b = match client_ca {
            Some(ca) => {
                let mut roots = rustls::RootCertStore::empty();
                for c in certs(ca) {
                    roots.add(c).unwrap();
                }
                let v = rustls::server::WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots),
                    provider(),
                )
                .build()
                .unwrap();
                b.with_client_cert_verifier(v)
            }
            None => b.with_no_client_auth(),
        };
        let cfg = Arc::new(
            b.with_single_cert(certs(&server.cert_pem), key(&server.key_pem))
                .unwrap(),
        );
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let received: Arc<Mutex<Vec<Got>>> = Arc::default();
        let connections: Arc<Mutex<usize>> = Arc::default();
        let handshake_errors: Arc<Mutex<Vec<String>>> = Arc::default();
        let (rec, conns, errs) = (
            received.clone(),
            connections.clone(),
            handshake_errors.clone(),
        );
        std::thread::spawn(move || {
            for s in l.incoming() {
                let Ok(s) = s else { continue };
                let n = {
                    let mut g = conns.lock().unwrap();
                    *g += 1;
                    *g
                };
                let (cfg, rec, errs) = (cfg.clone(), rec.clone(), errs.clone());
                std::thread::spawn(move || serve_tls_conn(s, cfg, rec, errs, n, delay));
            }
        });
        TlsSink {
            addr: format!("127.0.0.1:{port}"),
            port,
            received,
            connections,
            handshake_errors,
        }
    }

    pub fn count(&self) -> usize {
        self.received.lock().unwrap().len()
    }

    pub fn all(&self) -> Vec<Got> {
        self.received.lock().unwrap().clone()
    }

    pub fn connections(&self) -> usize {
        *self.connections.lock().unwrap()
    }

    pub fn wait_for(&self, n: usize, limit: Duration) -> Vec<Got> {
        let start = Instant::now();
        while start.elapsed() < limit {
            if self.count() >= n {
                return self.all();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "TLS sink got {} requests, wanted {n}; handshake errors: {:?}",
            self.count(),
            self.handshake_errors.lock().unwrap()
        );
    }
}

fn serve_tls_conn(
    tcp: TcpStream,
    cfg: Arc<rustls::ServerConfig>,
    rec: Arc<Mutex<Vec<Got>>>,
    errs: Arc<Mutex<Vec<String>>>,
    conn_no: usize,
    delay: Duration,
) {
    let _ = tcp.set_read_timeout(Some(Duration::from_secs(60)));
    let Ok(conn) = rustls::ServerConnection::new(cfg) else {
        return;
    };
    let mut s = rustls::StreamOwned::new(conn, tcp);
    while s.conn.is_handshaking() {
        if let Err(e) = s.conn.complete_io(&mut s.sock) {
            errs.lock().unwrap().push(e.to_string());
            return;
        }
    }
    let client_cert = s
        .conn
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.as_ref().to_vec());
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = [0u8; 16384];
    loop {
        // Read one request head.
        let end = loop {
            if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break p;
            }
            match s.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        let mut lines = head.split("\r\n");
        let path = lines
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .unwrap_or("")
            .to_string();
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .collect();
        let len: usize = headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0);
        buf.drain(..end + 4);
        while buf.len() < len {
            match s.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let body: Vec<u8> = buf.drain(..len).collect();
        rec.lock().unwrap().push(Got {
            at: Instant::now(),
            path,
            headers,
            body,
            client_cert: client_cert.clone(),
            conn: conn_no,
        });
        std::thread::sleep(delay);
        if s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            .and_then(|_| s.flush())
            .is_err()
        {
            return;
        }
    }
}

/// An HTTPS target that offers h2 (then http/1.1) in ALPN, served by hyper:
/// records each request's HTTP version and counts connections.
pub struct H2Sink {
    pub port: u16,
    pub versions: Arc<Mutex<Vec<String>>>,
    pub connections: Arc<Mutex<usize>>,
}

impl H2Sink {
    pub fn new(server: &Issued) -> H2Sink {
        use http_body_util::BodyExt;
        let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs(&server.cert_pem), key(&server.key_pem))
            .unwrap();
        cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.set_nonblocking(true).unwrap();
        let port = l.local_addr().unwrap().port();
        let versions: Arc<Mutex<Vec<String>>> = Arc::default();
        let connections: Arc<Mutex<usize>> = Arc::default();
        let (v, c) = (versions.clone(), connections.clone());
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let l = tokio::net::TcpListener::from_std(l).unwrap();
                loop {
                    let Ok((s, _)) = l.accept().await else {
                        continue;
                    };
                    *c.lock().unwrap() += 1;
                    let (acc, v) = (acceptor.clone(), v.clone());
                    tokio::spawn(async move {
                        let Ok(tls) = acc.accept(s).await else { return };
                        let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
                        let svc = hyper::service::service_fn(
                            move |req: hyper::Request<hyper::body::Incoming>| {
                                let v = v.clone();
                                async move {
                                    let ver = format!("{:?}", req.version());
                                    let _ = req.into_body().collect().await;
                                    // Hold the request a little, so several overlap.
                                    tokio::time::sleep(Duration::from_millis(100)).await;
                                    v.lock().unwrap().push(ver);
                                    Ok::<_, std::convert::Infallible>(hyper::Response::new(
                                        http_body_util::Full::new(bytes::Bytes::from_static(b"ok")),
                                    ))
                                }
                            },
                        );
                        let io = hyper_util::rt::TokioIo::new(tls);
                        if h2 {
                            let _ = hyper::server::conn::http2::Builder::new(
                                hyper_util::rt::TokioExecutor::new(),
                            )
                            .serve_connection(io, svc)
                            .await;
                        } else {
                            let _ = hyper::server::conn::http1::Builder::new()
                                .serve_connection(io, svc)
                                .await;
                        }
                    });
                }
            });
        });
        H2Sink {
            port,
            versions,
            connections,
        }
    }

    pub fn wait_for(&self, n: usize, limit: Duration) -> Vec<String> {
        let start = Instant::now();
        while start.elapsed() < limit {
            let v = self.versions.lock().unwrap().clone();
            if v.len() >= n {
                return v;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("h2 sink got {:?}", self.versions.lock().unwrap());
    }
}
