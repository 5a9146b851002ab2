//! Shared test helpers: temp dirs, a throwaway database per test, the real
//! daemon binary as a child process, a minimal HTTP/1.1 client over real
//! sockets, a notify socket, and a TCP proxy that can cut a connection.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// GitHub's documentation secret.
pub const SECRET: &str = "It's a Secret to Everybody";

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_webhookd")
}

/// A temporary directory removed on drop, kept when the test failed (its
/// daemon logs are the first thing to read then).
pub struct Env {
    pub dir: PathBuf,
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

impl Env {
    pub fn new(name: &str) -> Env {
        let dir = std::env::temp_dir().join(format!(
            "webhookd-test-{name}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Env { dir }
    }

    pub fn path(&self, f: &str) -> PathBuf {
        self.dir.join(f)
    }

    pub fn write(&self, f: &str, contents: &str) -> PathBuf {
        let p = self.path(f);
        std::fs::write(&p, contents).unwrap();
        p
    }

    pub fn sqlite_url(&self) -> String {
        format!("sqlite://{}", self.path("events.db").display())
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "test failed: kept {} (daemon logs inside)",
                self.dir.display()
            );
            return;
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Which store a test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Sqlite,
    Postgres,
}

/// The throwaway cluster started by scripts/test.
pub fn pg_admin_url() -> String {
    std::env::var("WEBHOOKD_TEST_PG").unwrap_or_else(|_| {
        panic!(
            "WEBHOOKD_TEST_PG is not set: run the tests with scripts/test, which starts a throwaway PostgreSQL"
        )
    })
}

/// A fresh, empty database in the throwaway cluster.
pub fn pg_url() -> String {
    let admin = pg_admin_url();
    let name = format!(
        "t_{}_{}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos()
    );
    let mut c = postgres::Client::connect(&admin, postgres::NoTls).unwrap();
    c.batch_execute(&format!("CREATE DATABASE {name}")).unwrap();
    let (base, _) = admin.rsplit_once('/').unwrap();
    format!("{base}/{name}")
}

pub fn store_url(kind: Kind, env: &Env) -> String {
    match kind {
        Kind::Sqlite => env.sqlite_url(),
        Kind::Postgres => pg_url(),
    }
}

/// Rows stored for a delivery id (or all rows when None).
pub fn count_rows(url: &str, delivery: Option<&str>) -> i64 {
    if let Some(path) = url.strip_prefix("sqlite://") {
        let c = rusqlite::Connection::open(path).unwrap();
        match delivery {
            Some(d) => c
                .query_row(
                    "SELECT count(*) FROM events WHERE delivery_id = ?1",
                    [d],
                    |r| r.get(0),
                )
                .unwrap(),
            None => c
                .query_row("SELECT count(*) FROM events", [], |r| r.get(0))
                .unwrap(),
        }
    } else {
        let mut c = postgres::Client::connect(url, postgres::NoTls).unwrap();
        match delivery {
            Some(d) => c
                .query_one("SELECT count(*) FROM events WHERE delivery_id = $1", &[&d])
                .unwrap()
                .get(0),
            None => c
                .query_one("SELECT count(*) FROM events", &[])
                .unwrap()
                .get(0),
        }
    }
}

/// A stored body, byte for byte.
pub fn stored_body(url: &str, delivery: &str) -> Option<Vec<u8>> {
    if let Some(path) = url.strip_prefix("sqlite://") {
        let c = rusqlite::Connection::open(path).unwrap();
        // The embedded store keeps bodies in a table of their own.
        c.query_row(
            "SELECT b.body FROM events JOIN event_bodies b ON b.event_id = id WHERE delivery_id = ?1",
            [delivery],
            |r| r.get(0),
        )
        .ok()
    } else {
        let mut c = postgres::Client::connect(url, postgres::NoTls).unwrap();
        c.query_opt(
            "SELECT body FROM events WHERE delivery_id = $1",
            &[&delivery],
        )
        .unwrap()
        .map(|r| r.get(0))
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A config with one GitHub hook `gh` whose secret is in `secret_file`.
pub fn config(listen: &str, store_url: &str, secret_file: &Path, extra: &str) -> String {
    format!(
        r#"
[server]
listen = "{listen}"
drain_timeout = "10s"
{extra}
[store]
url = "{store_url}"
connect_timeout = "500ms"
spool = "off"

[log]
level = "debug"
target = "stderr"

[[hooks]]
id = "gh"
scheme = "github"
secrets = ["file:{}"]
"#,
        secret_file.display()
    )
}

/// The daemon as a child process.
pub struct Daemon {
    pub child: Child,
    pub addr: String,
    pub log: PathBuf,
    pub config: PathBuf,
}

impl Daemon {
    /// Start `webhookd serve` with `config_text` and wait until /healthz answers.
    pub fn start(env: &Env, config_text: &str, vars: &[(&str, String)]) -> Daemon {
        let d = Daemon::spawn(env, config_text, vars);
        d.wait_healthy(Duration::from_secs(20));
        d
    }

    /// Start without waiting.
    pub fn spawn(env: &Env, config_text: &str, vars: &[(&str, String)]) -> Daemon {
        let config = env.write("webhookd.toml", config_text);
        let log = env.path(&format!(
            "daemon-{}.log",
            COUNTER.fetch_add(1, Ordering::SeqCst)
        ));
        let listen = config_text
            .lines()
            .find_map(|l| l.trim().strip_prefix("listen = \""))
            .map(|s| s.trim_end_matches('"').to_string())
            .unwrap_or_default();
        let mut cmd = Command::new(bin());
        cmd.arg("--config")
            .arg(&config)
            .arg("serve")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            .env_remove("LISTEN_FDS")
            .env_remove("JOURNAL_STREAM")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        for (k, v) in vars {
            cmd.env(k, v);
        }
        let child = cmd.spawn().unwrap();
        Daemon {
            child,
            addr: listen,
            log,
            config,
        }
    }

    pub fn wait_healthy(&self, limit: Duration) {
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Ok(r) = request(&self.addr, "GET", "/healthz", &[], b"") {
                if r.status == 200 {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("daemon did not become healthy; log:\n{}", self.log_text());
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.child.id() as i32), sig).unwrap();
    }

    /// Wait for exit up to `limit`.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Some(s) = self.child.try_wait().unwrap() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    pub fn post(&self, hook: &str, delivery: &str, body: &[u8]) -> Resp {
        post_signed(&self.addr, hook, delivery, body, SECRET)
    }

    pub fn metric(&self, name: &str) -> f64 {
        let r = request(&self.addr, "GET", "/metrics", &[], b"").unwrap();
        metric_value(&String::from_utf8_lossy(&r.body), name)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The value of an un-labelled sample in exposition text.
pub fn metric_value(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            (k == name).then(|| v.parse().ok())?
        })
        .unwrap_or_else(|| panic!("metric {name} not found in:\n{text}"))
}

#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One HTTP/1.1 request with `Connection: close`, over a real TCP socket.
pub fn request(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> std::io::Result<Resp> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    s.write_all(req.as_bytes())?;
    s.write_all(body)?;
    read_response(&mut s)
}

pub fn read_response(s: &mut impl Read) -> std::io::Result<Resp> {
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    parse_response(&buf)
}

pub fn parse_response(buf: &[u8]) -> std::io::Result<Resp> {
    let bad = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, m.to_string());
    let end = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| bad("no header end"))?;
    let head = String::from_utf8_lossy(&buf[..end]);
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("bad status line"))?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    Ok(Resp {
        status,
        headers,
        body: buf[end + 4..].to_vec(),
    })
}

/// Headers GitHub would send for `body`.
pub fn github_headers(delivery: &str, body: &[u8], secret: &str) -> Vec<(String, String)> {
    let mac = webhookd::verify::hmac_sha256(secret.as_bytes(), &[body]);
    vec![
        (
            "X-Hub-Signature-256".into(),
            format!("sha256={}", webhookd::id::hex(&mac)),
        ),
        ("X-GitHub-Event".into(), "push".into()),
        ("X-GitHub-Delivery".into(), delivery.into()),
        ("Content-Type".into(), "application/json".into()),
    ]
}

pub fn post_signed(addr: &str, hook: &str, delivery: &str, body: &[u8], secret: &str) -> Resp {
    request(
        addr,
        "POST",
        &format!("/hooks/{hook}"),
        &github_headers(delivery, body, secret),
        body,
    )
    .unwrap()
}

/// A notify socket like systemd's, collecting datagrams.
pub struct Notify {
    pub path: PathBuf,
    sock: UnixDatagram,
}

impl Notify {
    pub fn new(env: &Env) -> Notify {
        let path = env.path("notify.sock");
        let sock = UnixDatagram::bind(&path).unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        Notify { path, sock }
    }

    /// Messages received within `limit` (each datagram split into lines).
    pub fn collect(&self, limit: Duration) -> Vec<String> {
        let start = Instant::now();
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        while start.elapsed() < limit {
            if let Ok(n) = self.sock.recv(&mut buf) {
                for l in String::from_utf8_lossy(&buf[..n]).lines() {
                    out.push(l.to_string());
                }
            }
        }
        out
    }

    /// Wait for a line starting with `prefix`; returns all lines seen so far.
    pub fn wait_for(&self, prefix: &str, limit: Duration) -> Vec<String> {
        let start = Instant::now();
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        while start.elapsed() < limit {
            if let Ok(n) = self.sock.recv(&mut buf) {
                let mut found = false;
                for l in String::from_utf8_lossy(&buf[..n]).lines() {
                    found |= l.starts_with(prefix);
                    out.push(l.to_string());
                }
                if found {
                    return out;
                }
            }
        }
        panic!("no {prefix} within {limit:?}; got {out:?}");
    }
}

/// A TCP forwarder between the daemon and PostgreSQL that the test can cut,
/// to make the real database unreachable without stopping the shared cluster.
pub struct Proxy {
    pub addr: String,
    open: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
}

impl Proxy {
    pub fn new(target: String) -> Proxy {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let open = Arc::new(AtomicBool::new(true));
        let conns: Arc<Mutex<Vec<TcpStream>>> = Arc::new(Mutex::new(Vec::new()));
        let (o, c) = (open.clone(), conns.clone());
        std::thread::spawn(move || {
            for s in l.incoming() {
                let Ok(client) = s else { continue };
                // Decide and register under the lock `cut` takes, so no
                // connection slips through while the path is being cut.
                let mut g = c.lock().unwrap();
                if !o.load(Ordering::SeqCst) {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                let Ok(server) = TcpStream::connect(&target) else {
                    continue;
                };
                g.push(client.try_clone().unwrap());
                g.push(server.try_clone().unwrap());
                drop(g);
                pipe(client.try_clone().unwrap(), server.try_clone().unwrap());
                pipe(server, client);
            }
        });
        Proxy { addr, open, conns }
    }

    /// Drop every connection and refuse new ones (they are closed at once).
    pub fn cut(&self) {
        let mut g = self.conns.lock().unwrap();
        self.open.store(false, Ordering::SeqCst);
        for c in g.drain(..) {
            let _ = c.shutdown(Shutdown::Both);
        }
    }

    pub fn restore(&self) {
        self.open.store(true, Ordering::SeqCst);
    }
}

fn pipe(mut from: TcpStream, mut to: TcpStream) {
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut from, &mut to);
        let _ = to.shutdown(Shutdown::Both);
    });
}

/// `host:port` of a postgres URL.
pub fn pg_host_port(url: &str) -> String {
    let rest = url.split_once("@").map(|(_, r)| r).unwrap_or(url);
    rest.split('/').next().unwrap().to_string()
}

/// One request received by the [`Sink`].
#[derive(Debug, Clone)]
pub struct Received {
    pub at: Instant,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// What the sink answers: status, extra headers, delay before answering.
pub type Reply = (u16, Vec<(String, String)>, Duration);
type SharedReply = Arc<Mutex<Box<dyn Fn(&Received, usize) -> Reply + Send>>>;

/// A real local HTTP/1.1 server that records every request and answers as
/// the test's function says (keep-alive supported, like a real target).
pub struct Sink {
    pub addr: String,
    pub received: Arc<Mutex<Vec<Received>>>,
    reply: SharedReply,
}

impl Sink {
    pub fn new() -> Sink {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let received: Arc<Mutex<Vec<Received>>> = Arc::new(Mutex::new(Vec::new()));
        let reply: SharedReply =
            Arc::new(Mutex::new(Box::new(|_, _| (200, vec![], Duration::ZERO))));
        let (rec, rep) = (received.clone(), reply.clone());
        std::thread::spawn(move || {
            for s in l.incoming() {
                let Ok(s) = s else { continue };
                let (rec, rep) = (rec.clone(), rep.clone());
                std::thread::spawn(move || serve_sink_conn(s, rec, rep));
            }
        });
        Sink {
            addr,
            received,
            reply,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn set_reply(&self, f: impl Fn(&Received, usize) -> Reply + Send + 'static) {
        *self.reply.lock().unwrap() = Box::new(f);
    }

    pub fn count(&self) -> usize {
        self.received.lock().unwrap().len()
    }

    pub fn all(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    /// Wait until at least `n` requests arrived.
    pub fn wait_for(&self, n: usize, limit: Duration) -> Vec<Received> {
        let start = Instant::now();
        while start.elapsed() < limit {
            if self.count() >= n {
                return self.all();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("sink got {} requests, wanted {n}", self.count());
    }
}

fn serve_sink_conn(s: TcpStream, rec: Arc<Mutex<Vec<Received>>>, rep: SharedReply) {
    let mut reader = std::io::BufReader::new(s.try_clone().unwrap());
    let mut w = s;
    use std::io::BufRead;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let path = line.split(' ').nth(1).unwrap_or("").to_string();
        let mut headers = Vec::new();
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                headers.push((k.trim().to_string(), v.trim().to_string()));
            }
        }
        let len: usize = headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0u8; len];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let r = Received {
            at: Instant::now(),
            path,
            headers,
            body,
        };
        let n = {
            let mut g = rec.lock().unwrap();
            g.push(r.clone());
            g.len()
        };
        let (status, extra, delay) = (rep.lock().unwrap())(&r, n);
        std::thread::sleep(delay);
        let mut resp = format!("HTTP/1.1 {status} X\r\nContent-Length: 2\r\n");
        for (k, v) in extra {
            resp.push_str(&format!("{k}: {v}\r\n"));
        }
        resp.push_str("\r\nok");
        if w.write_all(resp.as_bytes()).is_err() {
            return;
        }
    }
}

/// Event states by delivery id, straight from the store.
pub fn state_of(url: &str, delivery: &str) -> Option<(String, i32)> {
    if let Some(path) = url.strip_prefix("sqlite://") {
        let c = rusqlite::Connection::open(path).unwrap();
        c.query_row(
            "SELECT state, attempts FROM events WHERE delivery_id = ?1",
            [delivery],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .ok()
    } else {
        let mut c = postgres::Client::connect(url, postgres::NoTls).unwrap();
        c.query_opt(
            "SELECT state, attempts FROM events WHERE delivery_id = $1",
            &[&delivery],
        )
        .unwrap()
        .map(|r| (r.get(0), r.get(1)))
    }
}

/// Wait until the event reaches `state`.
pub fn wait_state(url: &str, delivery: &str, state: &str, limit: Duration) -> (String, i32) {
    let start = Instant::now();
    let mut last = None;
    while start.elapsed() < limit {
        last = state_of(url, delivery);
        if let Some(s) = &last {
            if s.0 == state {
                return s.clone();
            }
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!("{delivery} never reached {state}; last {last:?}");
}

/// The headers `webhookd sign` prints for `body` (one `Name: value` a line),
/// with extra environment variables for `env:`/`credential:` secrets.
pub fn cli_sign(
    config: &Path,
    hook: &str,
    event: &str,
    delivery: &str,
    body: &[u8],
    vars: &[(&str, String)],
) -> Vec<(String, String)> {
    let mut cmd = Command::new(bin());
    cmd.args(["--config", config.to_str().unwrap(), "sign", "--hook", hook])
        .args(["--event", event, "--delivery", delivery])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in vars {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    child.stdin.take().unwrap().write_all(body).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "sign {hook}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let (k, v) = l.split_once(": ").unwrap();
            (k.to_string(), v.to_string())
        })
        .collect()
}

// ---------------------------------------------------------------------------
// Database outages (tests/pg_outage.rs, tests/store_bounds.rs): a private
// PostgreSQL cluster that a test may freeze (SIGSTOP) or stop without
// disturbing the shared one other tests use, and a steady load client.
// ---------------------------------------------------------------------------

/// A PostgreSQL cluster of one test's own, under the test's directory.
/// Dropping it always thaws it first (SIGCONT), then stops it, so a failed
/// assertion during a freeze never leaves stopped processes behind.
pub struct PrivatePg {
    pub root: PathBuf,
    pub port: u16,
    extra: Vec<String>,
    frozen: AtomicBool,
}

fn pg_bin(name: &str) -> PathBuf {
    let dir = std::env::var("WEBHOOKD_TEST_PGBIN")
        .expect("WEBHOOKD_TEST_PGBIN is not set: run the tests with scripts/test");
    Path::new(&dir).join(name)
}

fn running_as_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

/// Run a PostgreSQL tool as the `postgres` user when we are root (initdb and
/// the server refuse to run as root).
fn as_postgres(tool: &str, args: &[&str]) -> std::process::Output {
    let mut cmd = if running_as_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(pg_bin(tool));
        c
    } else {
        Command::new(pg_bin(tool))
    };
    cmd.args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {tool}: {e}"))
}

impl PrivatePg {
    /// initdb and start a cluster; `settings` are `name=value` server settings.
    pub fn start(env: &Env, settings: &[&str]) -> PrivatePg {
        let root = env.path("pg");
        std::fs::create_dir_all(&root).unwrap();
        if running_as_root() {
            let st = Command::new("chown")
                .arg("postgres:")
                .arg(&root)
                .status()
                .unwrap();
            assert!(st.success(), "chown postgres {}", root.display());
        }
        let data = root.join("data");
        let out = as_postgres(
            "initdb",
            &[
                "-D",
                data.to_str().unwrap(),
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
                "-E",
                "UTF8",
            ],
        );
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let pg = PrivatePg {
            root,
            port: free_port(),
            extra: settings.iter().map(|s| s.to_string()).collect(),
            frozen: AtomicBool::new(false),
        };
        pg.start_server();
        pg
    }

    fn data(&self) -> String {
        self.root.join("data").display().to_string()
    }

    /// Start the (stopped) server again.
    pub fn start_server(&self) {
        let mut opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.root.display()
        );
        for s in &self.extra {
            opts.push_str(&format!(" -c {s}"));
        }
        let log = self.root.join("server.log").display().to_string();
        let out = as_postgres(
            "pg_ctl",
            &["-D", &self.data(), "-l", &log, "-w", "-o", &opts, "start"],
        );
        assert!(
            out.status.success(),
            "pg_ctl start: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }

    /// Stop the server (`-m fast`, what an operator's restart does).
    pub fn stop_server(&self) {
        self.thaw();
        let _ = as_postgres("pg_ctl", &["-D", &self.data(), "-m", "fast", "-w", "stop"]);
    }

    pub fn admin_url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// A fresh database; `setup` is SQL run in it first (as the superuser).
    pub fn db(&self, setup: &str) -> String {
        let name = format!("t{}", COUNTER.fetch_add(1, Ordering::SeqCst));
        let mut c = postgres::Client::connect(&self.admin_url(), postgres::NoTls).unwrap();
        // `local`: the test's own commits must not wait for a synchronous
        // standby that a test configured never to answer.
        c.batch_execute("SET synchronous_commit = local").unwrap();
        c.batch_execute(&format!("CREATE DATABASE {name}")).unwrap();
        let url = format!("postgres://postgres@127.0.0.1:{}/{name}", self.port);
        if !setup.is_empty() {
            let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
            c.batch_execute("SET synchronous_commit = local").unwrap();
            c.batch_execute(setup).unwrap();
        }
        url
    }

    /// The postmaster and every process it forked.
    pub fn pids(&self) -> Vec<i32> {
        let pidfile = self.root.join("data/postmaster.pid");
        let Ok(text) = std::fs::read_to_string(pidfile) else {
            return Vec::new();
        };
        let Some(master) = text
            .lines()
            .next()
            .and_then(|l| l.trim().parse::<i32>().ok())
        else {
            return Vec::new();
        };
        let mut out = vec![master];
        for e in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
                continue;
            };
            // "pid (comm) state ppid ...": comm may hold spaces, so split after ')'.
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|p| p.parse::<i32>().ok());
            if ppid == Some(master) {
                out.push(pid);
            }
        }
        out
    }

    /// SIGSTOP the whole cluster: it accepts TCP connections (the kernel
    /// does) but never answers, like a hung server or a lost network path.
    pub fn freeze(&self) {
        self.frozen.store(true, Ordering::SeqCst);
        for pid in self.pids() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGSTOP,
            );
        }
    }

    pub fn thaw(&self) {
        if self.frozen.swap(false, Ordering::SeqCst) {
            for pid in self.pids() {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGCONT,
                );
            }
        }
    }
}

impl Drop for PrivatePg {
    fn drop(&mut self) {
        self.thaw();
        let _ = as_postgres(
            "pg_ctl",
            &["-D", &self.data(), "-m", "immediate", "-w", "stop"],
        );
    }
}

/// What a load client saw: per delivery id, the status (0 = no answer)
/// and the latency.
#[derive(Debug, Default, Clone)]
pub struct LoadResult {
    pub sent: Vec<(String, u16, Duration, bool)>,
}

impl LoadResult {
    /// Delivery ids answered 2xx.
    pub fn acked(&self) -> Vec<String> {
        self.sent
            .iter()
            .filter(|(_, s, _, _)| (200..300).contains(s))
            .map(|(d, ..)| d.clone())
            .collect()
    }

    pub fn failed(&self) -> Vec<(String, u16, Duration)> {
        self.sent
            .iter()
            .filter(|(_, s, _, _)| !(200..300).contains(s))
            .map(|(d, s, t, _)| (d.clone(), *s, *t))
            .collect()
    }

    pub fn max_latency(&self) -> Duration {
        self.sent.iter().map(|x| x.2).max().unwrap_or_default()
    }

    pub fn spooled(&self) -> usize {
        self.sent.iter().filter(|x| x.3).count()
    }
}

/// `clients` threads posting signed GitHub deliveries (`{prefix}-{client}-{n}`)
/// to hook `gh` back to back, each pausing `pause` between requests, until
/// `stop` is set.
pub fn load(
    addr: &str,
    prefix: &str,
    clients: usize,
    pause: Duration,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<LoadResult> {
    let (addr, prefix) = (addr.to_string(), prefix.to_string());
    std::thread::spawn(move || {
        let threads: Vec<_> = (0..clients)
            .map(|c| {
                let (addr, prefix, stop) = (addr.clone(), prefix.clone(), stop.clone());
                std::thread::spawn(move || {
                    let mut out = Vec::new();
                    let mut n = 0;
                    while !stop.load(Ordering::SeqCst) {
                        let d = format!("{prefix}-{c}-{n}");
                        n += 1;
                        let body = format!(r#"{{"load":"{d}"}}"#);
                        let t = Instant::now();
                        let r = request(
                            &addr,
                            "POST",
                            "/hooks/gh",
                            &github_headers(&d, body.as_bytes(), SECRET),
                            body.as_bytes(),
                        );
                        let (status, spooled) = match r {
                            Ok(r) => {
                                let sp = r.status == 202 && r.text().contains("\"spooled\":true");
                                (r.status, sp)
                            }
                            Err(_) => (0, false),
                        };
                        out.push((d, status, t.elapsed(), spooled));
                        std::thread::sleep(pause);
                    }
                    out
                })
            })
            .collect();
        let mut all = LoadResult::default();
        for t in threads {
            all.sent.extend(t.join().unwrap());
        }
        all
    })
}

/// Delivery ids stored in a PostgreSQL database, with how often each is there.
pub fn pg_delivery_counts(url: &str) -> std::collections::HashMap<String, i64> {
    let mut c = postgres::Client::connect(url, postgres::NoTls).unwrap();
    c.query(
        "SELECT delivery_id, count(*) FROM events GROUP BY delivery_id",
        &[],
    )
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1)))
    .collect()
}

/// Wait until `f` holds, or panic with `what`.
pub fn wait_until(limit: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while start.elapsed() < limit {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("{what} (waited {limit:?})");
}

/// A daemon on PostgreSQL reached through a proxy that is already cut, with
/// NOTIFY_SOCKET set: a database that is down when the daemon starts.
/// `proxy.restore()` brings it back; the last value is the database's own
/// URL (each `pg_url()` is a fresh database).
pub fn spawn_with_postgres_cut(
    env: &Env,
    secret: &Path,
    extra: &str,
) -> (Daemon, Notify, Proxy, String) {
    let n = Notify::new(env);
    let real = pg_url();
    let proxy = Proxy::new(pg_host_port(&real));
    proxy.cut();
    let via = real.replace(&pg_host_port(&real), &proxy.addr);
    let addr = format!("127.0.0.1:{}", free_port());
    let d = Daemon::spawn(
        env,
        &config(&addr, &via, secret, extra),
        &[("NOTIFY_SOCKET", n.path.display().to_string())],
    );
    (d, n, proxy, real)
}
