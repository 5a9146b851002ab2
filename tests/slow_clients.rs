//! Slow request bodies over real sockets: a body must arrive within
//! `server.body_timeout` (408 after it), and clients that send headers and
//! then dribble their bodies cannot hold every in-flight slot: a genuine
//! delivery still gets 202 while `max_in_flight` of them are connected. The
//! unit bounds file descriptors and memory.

mod common;
use common::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn base(addr: &str, url: &str, server_extra: &str, secret: &std::path::Path) -> String {
    format!(
        "[server]\nlisten = \"{addr}\"\n{server_extra}\n[store]\nurl = \"{url}\"\n[log]\nlevel = \"debug\"\ntarget = \"stderr\"\n\n[[hooks]]\nid = \"gh\"\nscheme = \"github\"\nsecrets = [\"file:{}\"]\n",
        secret.display()
    )
}

/// Send a signed head announcing `body`, then only its first `sent` bytes.
fn start_slow(addr: &str, delivery: &str, body: &[u8], sent: usize) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    let mut head = format!(
        "POST /hooks/gh HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in github_headers(delivery, body, SECRET) {
        head += &format!("{k}: {v}\r\n");
    }
    head += "\r\n";
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(&body[..sent]).unwrap();
    s
}

/// Read whatever the server answers until it closes (or `limit`).
fn answer(s: &mut TcpStream, limit: Duration) -> (Option<u16>, Duration) {
    let start = Instant::now();
    s.set_read_timeout(Some(limit)).unwrap();
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    (parse_response(&buf).ok().map(|r| r.status), start.elapsed())
}

#[test]
fn body_must_arrive_within_body_timeout() {
    let env = Env::new("bodytimeout");
    let url = env.sqlite_url();
    let addr = format!("127.0.0.1:{}", free_port());
    let secret = env.write("gh.secret", SECRET);
    let d = Daemon::start(
        &env,
        &base(&addr, &url, "body_timeout = \"1s\"", &secret),
        &[],
    );
    let body = vec![b' '; 4096];
    // Announced, never sent.
    let silent = start_slow(&addr, "bt-1", &body, 0);
    // Dribbled: a byte every 200 ms keeps the connection busy but never finishes.
    let dribble = start_slow(&addr, "bt-2", &body, 10);
    let stop = Arc::new(AtomicBool::new(false));
    let mut w = dribble.try_clone().unwrap();
    let st = stop.clone();
    let feeder = std::thread::spawn(move || {
        while !st.load(Ordering::SeqCst) {
            if w.write_all(b" ").is_err() {
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    });
    // Both read at once: an answer left unread while the dribbler writes on
    // could be lost to the reset that follows the server's close.
    let readers: Vec<_> = [("silent", silent), ("dribbling", dribble)]
        .into_iter()
        .map(|(name, mut s)| {
            std::thread::spawn(move || (name, answer(&mut s, Duration::from_secs(10))))
        })
        .collect();
    for r in readers {
        let (name, (status, took)) = r.join().unwrap();
        assert_eq!(status, Some(408), "{name} body");
        assert!(took < Duration::from_secs(4), "{name} body held {took:?}");
    }
    stop.store(true, Ordering::SeqCst);
    feeder.join().unwrap();
    assert_eq!(count_rows(&url, None), 0);
    let log = d.log_text();
    assert!(log.contains("status=408"), "{log}");
    // A body that arrives in time is fine.
    assert_eq!(d.post("gh", "bt-3", &body).status, 202);
}

#[test]
fn slow_bodies_cannot_hold_every_slot() {
    let env = Env::new("slowslots");
    let url = env.sqlite_url();
    let addr = format!("127.0.0.1:{}", free_port());
    let secret = env.write("gh.secret", SECRET);
    // The default body_timeout: the deadline alone does not save us here.
    let d = Daemon::start(&env, &base(&addr, &url, "max_in_flight = 4", &secret), &[]);
    let body = vec![b' '; 2048];
    let stop = Arc::new(AtomicBool::new(false));
    let mut slow = Vec::new();
    let mut feeders = Vec::new();
    for i in 0..8 {
        let s = start_slow(&addr, &format!("slow-{i}"), &body, 10);
        let mut w = s.try_clone().unwrap();
        let st = stop.clone();
        feeders.push(std::thread::spawn(move || {
            while !st.load(Ordering::SeqCst) {
                if w.write_all(b" ").is_err() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(300));
            }
        }));
        slow.push(s);
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(1500));
    for i in 0..6 {
        let t = Instant::now();
        let r = d.post("gh", &format!("real-{i}"), b"{\"zen\":\"ok\"}");
        assert_eq!(
            r.status,
            202,
            "genuine delivery {i} behind slow bodies: {}\n{}",
            r.text(),
            d.log_text()
        );
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
        std::thread::sleep(Duration::from_millis(200));
    }
    stop.store(true, Ordering::SeqCst);
    for f in feeders {
        f.join().unwrap();
    }
    assert_eq!(count_rows(&url, None), 6);
}

/// The unit bounds what `max_in_flight × body_limit` and a connection
/// flood can take from the machine.
#[test]
fn unit_bounds_file_descriptors_and_memory() {
    let unit = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd/webhook.service"),
    )
    .unwrap();
    let value = |key: &str| {
        unit.lines()
            .find_map(|l| l.trim().strip_prefix(&format!("{key}=")))
            .map(str::to_string)
    };
    let nofile: u64 = value("LimitNOFILE")
        .expect("LimitNOFILE= set")
        .parse()
        .unwrap();
    assert!(nofile >= 4096, "LimitNOFILE={nofile}");
    assert!(value("MemoryMax").is_some(), "MemoryMax= set");
    assert!(value("MemoryHigh").is_some(), "MemoryHigh= set");
}
