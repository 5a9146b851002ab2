//! The console in a real browser: headless Chromium (Debian's `chromium`)
//! driven over the DevTools protocol loads the list, follows an event, sees
//! a new delivery appear without a reload, and replays a dead letter, which
//! then reaches the local sink. Screenshots go to
//! `target/console-screenshots/`.
//!
//! Without Chromium the test says so loudly and passes, except under CI
//! (`CI=true`), where it fails: scripts/test installs the package.

mod common;

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::*;
use serde_json::{json, Value};
use tungstenite::{Message, WebSocket};

fn chromium() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("WEBHOOKD_TEST_CHROMIUM") {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("chromium"))
        .find(|p| p.is_file())
}

/// The browser, in a process group of its own so that the whole group
/// (renderers, zygote) is stopped with it.
struct Browser {
    child: Child,
    port: u16,
    _profile: Env,
}

impl Browser {
    fn start(bin: &Path) -> Browser {
        use std::os::unix::process::CommandExt;
        let profile = Env::new("chromium-profile");
        let log = std::fs::File::create(profile.path("chromium.log")).unwrap();
        let child = Command::new(bin)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-dev-shm-usage",
                "--window-size=1280,860",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.dir.display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .process_group(0)
            .spawn()
            .unwrap();
        // Chromium writes the port it chose into the profile.
        let file = profile.path("DevToolsActivePort");
        let start = Instant::now();
        let port = loop {
            if let Some(p) = std::fs::read_to_string(&file)
                .ok()
                .and_then(|s| s.lines().next().and_then(|l| l.trim().parse().ok()))
            {
                break p;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "chromium did not start: {}",
                std::fs::read_to_string(profile.path("chromium.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        Browser {
            child,
            port,
            _profile: profile,
        }
    }

    /// A DevTools session on the browser's page.
    fn page(&self) -> Cdp {
        let addr = format!("127.0.0.1:{}", self.port);
        let start = Instant::now();
        let ws_url = loop {
            let pages = get_json(&addr, "/json/list");
            if let Some(u) = pages.as_array().and_then(|a| {
                a.iter()
                    .find(|t| t["type"] == "page")
                    .and_then(|t| t["webSocketDebuggerUrl"].as_str().map(String::from))
            }) {
                break u;
            }
            assert!(start.elapsed() < Duration::from_secs(20), "no page target");
            std::thread::sleep(Duration::from_millis(100));
        };
        let stream = TcpStream::connect(&addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let (ws, _) = tungstenite::client(ws_url.as_str(), stream).unwrap();
        let mut cdp = Cdp {
            ws,
            next: 1,
            events: Vec::new(),
        };
        cdp.call("Page.enable", json!({}));
        cdp.call("Runtime.enable", json!({}));
        cdp.call("Log.enable", json!({}));
        cdp
    }
}

/// GET a JSON document from the DevTools HTTP endpoint, which keeps the
/// connection open: read exactly Content-Length bytes.
fn get_json(addr: &str, path: &str) -> Value {
    use std::io::{BufRead, BufReader, Read, Write};
    let Ok(mut s) = TcpStream::connect(addr) else {
        return Value::Null;
    };
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    let mut r = BufReader::new(s);
    let mut len = 0usize;
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            return Value::Null;
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                len = v.trim().parse().unwrap_or(0);
            }
        }
    }
    let mut body = vec![0u8; len];
    if r.read_exact(&mut body).is_err() {
        return Value::Null;
    }
    serde_json::from_slice(&body).unwrap_or(Value::Null)
}

impl Drop for Browser {
    fn drop(&mut self) {
        let pgid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

/// A minimal DevTools protocol client: one command at a time, events kept.
struct Cdp {
    ws: WebSocket<TcpStream>,
    next: u64,
    events: Vec<Value>,
}

impl Cdp {
    fn call(&mut self, method: &str, params: Value) -> Value {
        let id = self.next;
        self.next += 1;
        let msg = json!({"id": id, "method": method, "params": params}).to_string();
        self.ws.send(Message::text(msg)).unwrap();
        loop {
            let m = self.ws.read().unwrap();
            let Message::Text(t) = m else { continue };
            let v: Value = serde_json::from_str(t.as_str()).unwrap();
            if v["id"] == id {
                assert!(v.get("error").is_none(), "{method}: {v}");
                return v["result"].clone();
            }
            self.events.push(v);
        }
    }

    fn eval(&mut self, expr: &str) -> Value {
        let r = self.call(
            "Runtime.evaluate",
            json!({"expression": expr, "returnByValue": true, "awaitPromise": true}),
        );
        assert!(r.get("exceptionDetails").is_none(), "{expr}: {r}");
        r["result"]["value"].clone()
    }

    /// Evaluate `expr` until it is truthy.
    fn wait_for(&mut self, expr: &str, limit: Duration) -> Value {
        let start = Instant::now();
        loop {
            let v = self.eval(expr);
            let truthy = !(v.is_null() || v == false || v == 0 || v == "");
            if truthy {
                return v;
            }
            assert!(start.elapsed() < limit, "timed out waiting for {expr}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn goto(&mut self, url: &str) {
        self.call("Page.navigate", json!({"url": url}));
        self.loaded(url);
    }

    /// Wait until the document at `url` has loaded.
    fn loaded(&mut self, url: &str) {
        let expr = format!(
            "document.readyState === 'complete' && location.href === {}",
            serde_json::to_string(url).unwrap()
        );
        self.wait_for(&expr, Duration::from_secs(15));
    }

    fn screenshot(&mut self, dir: &Path, name: &str) {
        let r = self.call("Page.captureScreenshot", json!({"format": "png"}));
        let png = base64::engine::general_purpose::STANDARD
            .decode(r["data"].as_str().unwrap())
            .unwrap();
        std::fs::write(dir.join(name), png).unwrap();
    }

    /// Script errors and policy violations the page reported.
    fn problems(&self) -> Vec<String> {
        self.events
            .iter()
            .filter(|e| {
                e["method"] == "Runtime.exceptionThrown"
                    || (e["method"] == "Log.entryAdded" && e["params"]["entry"]["level"] == "error")
            })
            .map(|e| e.to_string())
            .collect()
    }
}

fn screenshots_dir() -> PathBuf {
    // CARGO_TARGET_TMPDIR is <target>/tmp.
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .unwrap()
        .join("console-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn console_in_a_real_browser() {
    let Some(bin) = chromium() else {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("chromium is not installed, and CI=true: scripts/test must install it (apt-get install -y --no-install-recommends chromium)");
        }
        eprintln!("\n\n*** SKIPPED console_in_a_real_browser: chromium is not installed (apt-get install -y --no-install-recommends chromium). Under CI=true this fails. ***\n\n");
        return;
    };
    let shots = screenshots_dir();
    let env = Env::new("console-browser");
    let secret = env.write("secret", SECRET);
    let addr = format!("127.0.0.1:{}", free_port());
    let sink = Sink::new();
    let poison = Arc::new(AtomicBool::new(true));
    let p = poison.clone();
    sink.set_reply(move |r, _| {
        let refuse = p.load(Ordering::SeqCst) && r.body.windows(6).any(|w| w == b"poison");
        (if refuse { 422 } else { 200 }, vec![], Duration::ZERO)
    });
    let url = env.sqlite_url();
    let cfg = config(&addr, &url, &secret, "")
        + &format!(
            "[hooks.action]\ntype = \"forward\"\nurl = \"{}\"\ntimeout = \"2s\"\n[delivery]\npoll_interval = \"100ms\"\nlease_margin = \"1s\"\n",
            sink.url("/in")
        );
    let d = Daemon::start(&env, &cfg, &[]);
    for i in 0..3 {
        let body = format!(
            "{{\"ref\":\"refs/heads/main\",\"n\":{i},\"note\":\"<script>alert({i})</script>\"}}"
        );
        assert_eq!(
            d.post("gh", &format!("ok-{i}"), body.as_bytes()).status,
            202
        );
    }
    let r = d.post("gh", "bad-1", b"{\"poison\":true}");
    assert_eq!(r.status, 202);
    let dead_id = r.json()["id"].as_str().unwrap().to_string();
    wait_state(&url, "bad-1", "dead", Duration::from_secs(10));
    for i in 0..3 {
        wait_state(&url, &format!("ok-{i}"), "done", Duration::from_secs(10));
    }

    let browser = Browser::start(&bin);
    let mut page = browser.page();
    let base = format!("http://{addr}");

    // The list, newest first.
    page.goto(&format!("{base}/ui/"));
    let rows = page.eval("document.querySelectorAll('#events tbody tr').length");
    assert_eq!(rows, 4);
    let first = page.eval("document.querySelector('#events tbody tr').getAttribute('data-id')");
    assert_eq!(first, dead_id.as_str());
    page.screenshot(&shots, "01-events.png");

    // Follow an event.
    page.eval("document.querySelector('#events tbody tr:last-child a').click(), true");
    page.wait_for(
        "location.pathname.startsWith('/ui/events/') && document.readyState === 'complete'",
        Duration::from_secs(10),
    );
    let body = page.eval("document.getElementById('body').textContent");
    assert!(
        body.as_str().unwrap().contains("<script>alert(0)</script>"),
        "{body}"
    );
    let attempts = page.eval("document.querySelectorAll('table.attempts tbody tr').length");
    assert_eq!(attempts, 1);
    page.screenshot(&shots, "02-event.png");

    // A new delivery appears on the open list without a reload.
    page.goto(&format!("{base}/ui/"));
    page.eval("window.__marker = 'same document'; true");
    let r = d.post("gh", "live-1", b"{\"live\":true}");
    assert_eq!(r.status, 202);
    let live_id = r.json()["id"].as_str().unwrap().to_string();
    page.wait_for(
        &format!("!!document.querySelector('#events tbody tr[data-id=\"{live_id}\"]')"),
        Duration::from_secs(15),
    );
    assert_eq!(
        page.eval("window.__marker"),
        "same document",
        "no reload happened"
    );
    assert_eq!(
        page.eval("document.querySelector('#events tbody tr').getAttribute('data-id')"),
        live_id.as_str()
    );
    page.screenshot(&shots, "03-live-update.png");

    // Replay the dead letter from the dead-letters page.
    page.goto(&format!("{base}/ui/dead"));
    assert_eq!(
        page.eval("document.querySelectorAll('table.dead tbody tr').length"),
        1
    );
    page.screenshot(&shots, "04-dead-letters.png");
    poison.store(false, Ordering::SeqCst);
    let before = sink.count();
    page.eval(&format!(
        "document.querySelector('button[form=\"replay-one\"][value=\"{dead_id}\"]').click(), true"
    ));
    let start = Instant::now();
    while page.eval("location.search.includes('replayed=1') && document.readyState === 'complete'")
        != true
    {
        if start.elapsed() > Duration::from_secs(10) {
            page.screenshot(&shots, "05-replay-failed.png");
            panic!(
                "the replay did not come back: at {} showing {:?}; daemon log:\n{}",
                page.eval("location.href"),
                page.eval("document.body.innerText"),
                d.log_text()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let note = page.eval("document.getElementById('replayed').textContent");
    assert!(note.as_str().unwrap().starts_with("1 event"), "{note}");
    wait_state(&url, "bad-1", "done", Duration::from_secs(10));
    let got = sink.wait_for(before + 1, Duration::from_secs(10));
    assert!(got
        .iter()
        .skip(before)
        .any(|r| r.header("Webhookd-Delivery") == Some(dead_id.as_str())));
    page.screenshot(&shots, "05-replayed.png");

    // The event page now shows the refused attempt and the delivery.
    page.goto(&format!("{base}/ui/events/{dead_id}"));
    assert_eq!(
        page.eval("document.querySelectorAll('table.attempts tbody tr').length"),
        2
    );
    page.screenshot(&shots, "06-replayed-event.png");

    page.goto(&format!("{base}/ui/glance"));
    assert_eq!(
        page.eval("document.querySelectorAll('svg.chart polyline').length"),
        5
    );
    page.screenshot(&shots, "07-glance.png");

    let problems = page.problems();
    assert!(
        problems.is_empty(),
        "the page reported errors: {problems:#?}"
    );
    let log = d.log_text();
    assert!(
        log.contains("console: replay requested") && log.contains(&dead_id),
        "{log}"
    );
    eprintln!("screenshots in {}", shots.display());
}
