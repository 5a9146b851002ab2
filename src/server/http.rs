//! Accept loops and HTTP/1.1 connections (hyper + hyper-util), with a
//! header-read timeout and graceful shutdown.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::listen::{Bound, Role};
use super::routes;
use crate::app::App;
use crate::config::ServerConfig;
use crate::systemd::activation::Socket;

/// Connection settings taken from `[server]`.
#[derive(Debug, Clone)]
pub struct Options {
    pub header_timeout: Duration,
    pub max_headers: usize,
    pub max_header_bytes: usize,
}

impl From<&ServerConfig> for Options {
    fn from(c: &ServerConfig) -> Options {
        Options {
            header_timeout: c.header_timeout,
            max_headers: c.max_headers,
            max_header_bytes: c.max_header_bytes,
        }
    }
}

enum Listener {
    Tcp(tokio::net::TcpListener),
    Unix(tokio::net::UnixListener),
}

pub struct Server {
    stop: watch::Sender<bool>,
    loops: Vec<JoinHandle<()>>,
    graceful: Arc<GracefulShutdown>,
    describe: String,
}

impl Server {
    /// Start one accept loop per socket.
    pub fn start(app: Arc<App>, sockets: Vec<Bound>, opts: Options) -> Server {
        let mut builder = http1::Builder::new();
        // Without a timer hyper silently disables the header-read timeout.
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(opts.header_timeout)
            .max_headers(opts.max_headers)
            // hyper's read buffer bounds the head. It is set above
            // `max_header_bytes` so that a head just over the limit is parsed
            // and answered 431 by routes (exactly, and on a connection that
            // stays orderly); only a head over twice the limit is cut off by
            // hyper itself (431 and close). hyper panics below 8192.
            .max_buf_size(opts.max_header_bytes.saturating_mul(2).max(8192) + 8192)
            .keep_alive(true);
        let builder = Arc::new(builder);
        let graceful = Arc::new(GracefulShutdown::new());
        let (stop, stop_rx) = watch::channel(false);
        let mut loops = Vec::new();
        let mut names = Vec::new();
        for b in sockets {
            let what = match b.role {
                Role::Web => "hooks",
                Role::Admin => "admin",
                Role::All => "hooks+admin",
            };
            let what = if app.tls.is_some() && b.role.serves_hooks() {
                match &b.socket {
                    Socket::Tcp(_) => format!("{what}, HTTPS"),
                    Socket::Unix(_) => {
                        log::warn!(
                            "[server.tls] applies to TCP sockets; {} is a Unix socket and serves plain HTTP",
                            b.socket.describe()
                        );
                        what.to_string()
                    }
                }
            } else {
                what.to_string()
            };
            names.push(format!("{} ({what})", b.socket.describe()));
            let listener = match b.socket {
                Socket::Tcp(l) => tokio::net::TcpListener::from_std(l).map(Listener::Tcp),
                Socket::Unix(l) => tokio::net::UnixListener::from_std(l).map(Listener::Unix),
            };
            let listener = match listener {
                Ok(l) => l,
                Err(e) => {
                    log::error!("cannot register listener with the runtime: {e}");
                    continue;
                }
            };
            loops.push(tokio::spawn(accept_loop(
                listener,
                b.role,
                app.clone(),
                builder.clone(),
                graceful.clone(),
                stop_rx.clone(),
                opts.header_timeout,
            )));
        }
        Server {
            stop,
            loops,
            graceful,
            describe: names.join(", "),
        }
    }

    pub fn describe(&self) -> &str {
        &self.describe
    }

    /// Stop accepting (listeners are closed), then wait for open connections
    /// to finish their current request, until `deadline`. True if all did.
    pub async fn shutdown(self, deadline: Instant) -> bool {
        let _ = self.stop.send(true);
        for l in self.loops {
            let _ = l.await;
        }
        // hyper's graceful shutdown closes a connection whose request has not
        // started to arrive, even when the client has already sent it: the
        // client sees the connection closed without an answer (1 request in
        // ~2500 during `systemctl restart` under load, scripts/chaos). Give
        // connections accepted just before the signal a moment for their
        // request to arrive; hyper then serves it before closing.
        let grace = deadline.saturating_duration_since(Instant::now());
        tokio::time::sleep(grace.min(Duration::from_millis(250))).await;
        // The accept loops are gone, so this is the last reference.
        let Ok(graceful) = Arc::try_unwrap(self.graceful) else {
            return false;
        };
        let remaining = deadline.saturating_duration_since(Instant::now());
        tokio::time::timeout(remaining, graceful.shutdown())
            .await
            .is_ok()
    }
}

async fn accept_loop(
    listener: Listener,
    role: Role,
    app: Arc<App>,
    builder: Arc<http1::Builder>,
    graceful: Arc<GracefulShutdown>,
    mut stop: watch::Receiver<bool>,
    header_timeout: Duration,
) {
    let tls = app.tls.clone().filter(|_| role.serves_hooks());
    loop {
        let accepted = tokio::select! {
            _ = stop.changed() => break,
            a = accept(&listener) => a,
        };
        match accepted {
            Ok(Conn::Tcp(stream, peer)) => {
                let _ = stream.set_nodelay(true);
                match &tls {
                    Some(tls) => spawn_tls_conn(
                        tls.clone(),
                        stream,
                        peer,
                        role,
                        &app,
                        builder.clone(),
                        graceful.watcher(),
                        header_timeout,
                    ),
                    None => spawn_conn(stream, Some(peer), role, &app, &builder, &graceful),
                }
            }
            Ok(Conn::Unix(stream)) => {
                spawn_conn(stream, None, role, &app, &builder, &graceful);
            }
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                log::warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    // Dropping the listener here closes our copy of the socket. Under
    // systemd the socket unit keeps its own, so new connections wait in
    // the backlog for the next instance instead of being refused.
}

enum Conn {
    Tcp(tokio::net::TcpStream, SocketAddr),
    Unix(tokio::net::UnixStream),
}

async fn accept(l: &Listener) -> std::io::Result<Conn> {
    match l {
        Listener::Tcp(l) => l.accept().await.map(|(s, a)| Conn::Tcp(s, a)),
        Listener::Unix(l) => l.accept().await.map(|(s, _)| Conn::Unix(s)),
    }
}

fn spawn_conn<I>(
    io: I,
    peer: Option<SocketAddr>,
    role: Role,
    app: &Arc<App>,
    builder: &http1::Builder,
    graceful: &GracefulShutdown,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let app = app.clone();
    let svc = service_fn(move |req| {
        let app = app.clone();
        async move { Ok::<_, Infallible>(routes::handle(&app, role, peer, req).await) }
    });
    let conn = builder.serve_connection(TokioIo::new(io), svc);
    let fut = graceful.watch(conn);
    tokio::spawn(async move {
        if let Err(e) = fut.await {
            log::debug!("connection error: {e}");
        }
    });
}

/// A TLS connection: the handshake runs in its own task (the accept loop
/// never waits for a client), bounded by the header timeout and by the
/// handshake cap; then HTTP/1.1 over the session like a plain connection.
#[allow(clippy::too_many_arguments)]
fn spawn_tls_conn(
    tls: Arc<crate::tls::server::ServerTls>,
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    role: Role,
    app: &Arc<App>,
    builder: Arc<http1::Builder>,
    watcher: hyper_util::server::graceful::Watcher,
    header_timeout: Duration,
) {
    let app = app.clone();
    tokio::spawn(async move {
        let session = match tls.accept(stream, header_timeout).await {
            Ok(s) => s,
            Err(e) => {
                app.metrics.reject(e.reason());
                log::debug!("peer={peer} {e}");
                return;
            }
        };
        let svc_app = app.clone();
        let svc = service_fn(move |req| {
            let app = svc_app.clone();
            async move { Ok::<_, Infallible>(routes::handle(&app, role, Some(peer), req).await) }
        });
        let conn = builder.serve_connection(TokioIo::new(session), svc);
        if let Err(e) = watcher.watch(conn).await {
            log::debug!("connection error: {e}");
        }
    });
}
