//! The HTTP limit for `scripts/bench`: a bare hyper server that reads the
//! whole body, checks its GitHub `X-Hub-Signature-256` HMAC and answers 202
//! with no store, no log line, no routing. webhookd's ingest rate is
//! reported as a ratio of this one, measured in the same run with the same
//! load. It also serves as the pipeline's forward sink (it counts what it
//! accepted; `GET /count` answers the number).
//!
//!     cargo run --release --example bare_hmac -- 127.0.0.1:9000 SECRET_FILE
//!
//! Same crates as webhookd (tokio, hyper, hyper-util, hmac, sha2), so the
//! difference to webhookd is what webhookd does beyond HTTP and the HMAC.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use hmac::{KeyInit, Mac};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

struct State {
    secret: Vec<u8>,
    accepted: AtomicU64,
}

fn answer(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *r.status_mut() = status;
    r
}

fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

fn unhex(s: &[u8]) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    s.chunks(2)
        .map(|p| Some(hex_value(p[0])? << 4 | hex_value(p[1])?))
        .collect()
}

async fn serve(
    state: Arc<State>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if req.uri().path() == "/count" {
        let n = state.accepted.load(Ordering::Relaxed).to_string();
        return Ok(Response::new(Full::new(Bytes::from(n))));
    }
    let sig = req
        .headers()
        .get("x-hub-signature-256")
        .and_then(|v| v.as_bytes().strip_prefix(b"sha256="))
        .and_then(unhex);
    let body = match Limited::new(req.into_body(), 25 << 20).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return Ok(answer(StatusCode::BAD_REQUEST, "bad body\n")),
    };
    let Some(sig) = sig else {
        return Ok(answer(StatusCode::UNAUTHORIZED, "no signature\n"));
    };
    let Ok(mut mac) = HmacSha256::new_from_slice(&state.secret) else {
        return Ok(answer(StatusCode::INTERNAL_SERVER_ERROR, "bad key\n"));
    };
    mac.update(&body);
    if mac.verify_slice(&sig).is_err() {
        return Ok(answer(StatusCode::UNAUTHORIZED, "bad signature\n"));
    }
    state.accepted.fetch_add(1, Ordering::Relaxed);
    Ok(answer(StatusCode::ACCEPTED, "{\"status\":\"accepted\"}\n"))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let addr: SocketAddr = args
        .next()
        .ok_or("usage: bare_hmac ADDR SECRET_FILE")?
        .parse()?;
    let secret = std::fs::read(args.next().ok_or("usage: bare_hmac ADDR SECRET_FILE")?)?;
    let state = Arc::new(State {
        secret,
        accepted: AtomicU64::new(0),
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        loop {
            let (stream, _) = listener.accept().await?;
            let _ = stream.set_nodelay(true);
            let state = state.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req| serve(state.clone(), req));
                let _ = http1::Builder::new()
                    .timer(TokioTimer::new())
                    .keep_alive(true)
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    })
}
