//! Tunnel URL discovery. The real tunnel servers are on the internet and
//! cannot be reached here, so these tests run small fake agents that serve
//! exactly the agents' local APIs: ngrok's `GET /api/tunnels` on its agent
//! API port, and cloudflared's metrics server (`/ready`, `/quicktunnel`).

mod common;
use common::*;
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A fake agent: answers GET path with (status, JSON body).
struct FakeAgent {
    addr: String,
    routes: Arc<Mutex<HashMap<String, (u16, String)>>>,
}

impl FakeAgent {
    fn new() -> FakeAgent {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let routes: Arc<Mutex<HashMap<String, (u16, String)>>> = Arc::default();
        let r = routes.clone();
        std::thread::spawn(move || {
            for s in l.incoming() {
                let Ok(mut s) = s else { continue };
                let mut line = String::new();
                let mut reader = BufReader::new(s.try_clone().unwrap());
                if reader.read_line(&mut line).is_err() {
                    continue;
                }
                loop {
                    let mut h = String::new();
                    if reader.read_line(&mut h).unwrap_or(0) == 0 || h.trim().is_empty() {
                        break;
                    }
                }
                let path = line.split(' ').nth(1).unwrap_or("").to_string();
                let (status, body) = r
                    .lock()
                    .unwrap()
                    .get(&path)
                    .cloned()
                    .unwrap_or((404, "{}".into()));
                let _ = write!(
                    s,
                    "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        FakeAgent { addr, routes }
    }

    fn route(&self, path: &str, status: u16, body: &str) {
        self.routes
            .lock()
            .unwrap()
            .insert(path.into(), (status, body.into()));
    }
}

/// The shape of ngrok v3's agent API answer (trimmed to what matters).
fn ngrok_tunnels(url: &str) -> String {
    format!(
        r#"{{"tunnels":[{{"name":"command_line (http)","uri":"/api/tunnels/command_line%20%28http%29","public_url":"{}","proto":"http","config":{{"addr":"http://127.0.0.1:9000","inspect":true}}}},{{"name":"command_line","uri":"/api/tunnels/command_line","public_url":"{url}","proto":"https","config":{{"addr":"http://127.0.0.1:9000","inspect":true}}}}],"uri":"/api/tunnels"}}"#,
        url.replace("https://", "http://")
    )
}

fn tunnel_config(env: &Env, addr: &str, ngrok: &str, cloudflared: &str) -> String {
    let secret = env.write("gh.secret", SECRET);
    format!(
        "{}\n[tunnel]\nngrok_api = \"{ngrok}\"\ncloudflared_metrics = \"{cloudflared}\"\npoll_interval = \"200ms\"\n",
        config(addr, &env.sqlite_url(), &secret, "")
    )
}

fn wait_tunnel_url(addr: &str, want: Option<&str>) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let st = request(addr, "GET", "/status", &[], b"").unwrap().json();
        if st["tunnel_url"].as_str() == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "tunnel_url {} != {want:?}",
            st["tunnel_url"]
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn ngrok_url_in_status_log_and_cli() {
    let env = Env::new("ngrok");
    let ngrok = FakeAgent::new();
    ngrok.route(
        "/api/tunnels",
        200,
        &ngrok_tunnels("https://ab12-cd34.ngrok-free.app"),
    );
    let addr = format!("127.0.0.1:{}", free_port());
    let d = Daemon::start(&env, &tunnel_config(&env, &addr, &ngrok.addr, ""), &[]);
    wait_tunnel_url(&addr, Some("https://ab12-cd34.ngrok-free.app"));
    let log = d.log_text();
    assert!(
        log.contains("tunnel public URL is now https://ab12-cd34.ngrok-free.app (from ngrok)"),
        "{log}"
    );
    assert!(
        log.contains("https://ab12-cd34.ngrok-free.app/hooks/gh"),
        "{log}"
    );

    let o = Command::new(bin())
        .args(["--config", d.config.to_str().unwrap(), "tunnel-url"])
        .output()
        .unwrap();
    assert!(o.status.success());
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        "https://ab12-cd34.ngrok-free.app"
    );

    // The agent restarts with a new random URL: noticed and logged.
    ngrok.route(
        "/api/tunnels",
        200,
        &ngrok_tunnels("https://ef56.ngrok-free.app"),
    );
    wait_tunnel_url(&addr, Some("https://ef56.ngrok-free.app"));
    // The agent stops.
    ngrok.route("/api/tunnels", 502, "{}");
    wait_tunnel_url(&addr, None);
    assert!(d.log_text().contains("tunnel public URL is gone"));
}

#[test]
fn cloudflared_quick_tunnel_once_ready() {
    let env = Env::new("cloudflared");
    let cf = FakeAgent::new();
    cf.route(
        "/ready",
        503,
        r#"{"status":503,"readyConnections":0,"connectorId":"5c1a"}"#,
    );
    cf.route(
        "/quicktunnel",
        200,
        r#"{"hostname":"tall-river-quiet-lake.trycloudflare.com"}"#,
    );
    let addr = format!("127.0.0.1:{}", free_port());
    let _d = Daemon::start(&env, &tunnel_config(&env, &addr, "", &cf.addr), &[]);
    std::thread::sleep(Duration::from_millis(600));
    wait_tunnel_url(&addr, None);
    cf.route(
        "/ready",
        200,
        r#"{"status":200,"readyConnections":4,"connectorId":"5c1a"}"#,
    );
    wait_tunnel_url(
        &addr,
        Some("https://tall-river-quiet-lake.trycloudflare.com"),
    );
}

#[test]
fn tunnel_url_without_agents_fails_clearly() {
    let env = Env::new("notunnel");
    let secret = env.write("gh.secret", SECRET);
    let port = free_port();
    let cfg = env.write(
        "w.toml",
        &format!(
            "{}\n[tunnel]\nngrok_api = \"127.0.0.1:{port}\"\ncloudflared_metrics = \"127.0.0.1:{port}\"\n",
            config("127.0.0.1:1", &env.sqlite_url(), &secret, "")
        ),
    );
    let o = Command::new(bin())
        .args(["--config", cfg.to_str().unwrap(), "tunnel-url"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("webhook-tunnel@ngrok"));
}
