//! Finding the public URL of the tunnel sidecar (`webhook-tunnel@ngrok` or
//! `webhook-tunnel@cloudflared`) from the agents' local APIs, so /status,
//! the log and `webhookd tunnel-url` can tell the user what to paste into
//! GitHub's webhook settings.
//!
//! - ngrok: `GET http://127.0.0.1:4040/api/tunnels`, `tunnels[].public_url`
//!   (the https one preferred).
//! - cloudflared: its metrics server; `GET /ready` must say it has
//!   connections, then `GET /quicktunnel` gives `{"hostname": ...}`.
//!
//! The requests are tiny loopback GETs, done with a blocking socket and short
//! timeouts (callers run this on a blocking thread).

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use crate::config::TunnelConfig;

const TIMEOUT: Duration = Duration::from_millis(800);

/// A discovered public URL and which agent reported it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub url: String,
    pub source: &'static str,
}

/// `GET path` on `addr`; the status code and body.
fn get(addr: &str, path: &str) -> Option<(u16, Vec<u8>)> {
    let sa = addr.to_socket_addrs().ok()?.next()?;
    let mut s = TcpStream::connect_timeout(&sa, TIMEOUT).ok()?;
    s.set_read_timeout(Some(TIMEOUT)).ok()?;
    s.set_write_timeout(Some(TIMEOUT)).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: application/json\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut buf = Vec::new();
    s.take(1 << 20).read_to_end(&mut buf).ok()?;
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&buf[..end]).ok()?;
    let status = head.split(' ').nth(1)?.parse().ok()?;
    let chunked = head.lines().any(|l| {
        l.to_ascii_lowercase().starts_with("transfer-encoding:")
            && l.to_ascii_lowercase().contains("chunked")
    });
    let body = &buf[end + 4..];
    Some((
        status,
        if chunked {
            dechunk(body)?
        } else {
            body.to_vec()
        },
    ))
}

fn dechunk(mut b: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = b.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&b[..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        b = &b[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(b.get(..size)?);
        b = b.get(size + 2..)?;
    }
}

/// ngrok's agent API: the https tunnel's public URL, else the first one.
pub fn from_ngrok(addr: &str) -> Option<String> {
    let (status, body) = get(addr, "/api/tunnels")?;
    if status != 200 {
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(&body).ok()?;
    let urls: Vec<&str> = v["tunnels"]
        .as_array()?
        .iter()
        .filter_map(|t| t["public_url"].as_str())
        .collect();
    urls.iter()
        .find(|u| u.starts_with("https://"))
        .or(urls.first())
        .map(|u| u.trim_end_matches('/').to_string())
}

/// cloudflared's metrics server: the quick tunnel's hostname, once ready.
pub fn from_cloudflared(addr: &str) -> Option<String> {
    let (status, _) = get(addr, "/ready")?;
    if status != 200 {
        return None;
    }
    let (status, body) = get(addr, "/quicktunnel")?;
    if status != 200 {
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(&body).ok()?;
    let host = v["hostname"].as_str()?.trim();
    (!host.is_empty()).then(|| format!("https://{host}"))
}

/// Ask the configured agents, ngrok first.
pub fn discover(cfg: &TunnelConfig) -> Option<Found> {
    if !cfg.ngrok_api.is_empty() {
        if let Some(url) = from_ngrok(&cfg.ngrok_api) {
            return Some(Found {
                url,
                source: "ngrok",
            });
        }
    }
    if !cfg.cloudflared_metrics.is_empty() {
        if let Some(url) = from_cloudflared(&cfg.cloudflared_metrics) {
            return Some(Found {
                url,
                source: "cloudflared",
            });
        }
    }
    cfg.public_url.as_ref().map(|u| Found {
        url: u.trim_end_matches('/').to_string(),
        source: "config",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dechunks() {
        assert_eq!(
            dechunk(b"4\r\nWiki\r\n5\r\npedia\r\n0\r\n\r\n").as_deref(),
            Some(&b"Wikipedia"[..])
        );
        assert_eq!(dechunk(b"zz\r\n"), None);
    }

    #[test]
    fn nothing_listening_finds_nothing() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap_or(1);
        let cfg = TunnelConfig {
            ngrok_api: format!("127.0.0.1:{port}"),
            cloudflared_metrics: format!("127.0.0.1:{port}"),
            public_url: None,
            poll_interval: Duration::from_secs(1),
        };
        assert_eq!(discover(&cfg), None);
        let cfg = TunnelConfig {
            public_url: Some("https://hooks.example.com/".into()),
            ..cfg
        };
        assert_eq!(
            discover(&cfg).map(|f| f.url).as_deref(),
            Some("https://hooks.example.com")
        );
    }
}
