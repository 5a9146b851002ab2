//! The HTTP contract of POST /hooks/{id} on both stores: 202 new, 200
//! duplicate with the same id, and every kind of bad input refused with the
//! right status, a JSON error, and nothing stored.

mod common;
use common::*;
use std::time::{Duration, Instant};

fn contract(kind: Kind) {
    let env = Env::new("contract");
    let secret = env.write("gh.secret", &format!("{SECRET}\n"));
    let url = store_url(kind, &env);
    let addr = format!("127.0.0.1:{}", free_port());
    let d = Daemon::start(
        &env,
        &config(&addr, &url, &secret, "body_limit = 4096"),
        &[],
    );

    // A valid delivery is stored byte for byte and answered 202.
    let body = br#"{"ref":"refs/heads/main","zen":"Keep it logically awesome."}"#;
    let r = d.post("gh", "d-1", body);
    assert_eq!(r.status, 202, "{}", r.text());
    let id = r.json()["id"].as_str().unwrap().to_string();
    assert_eq!(r.json()["status"], "accepted");
    assert_eq!(stored_body(&url, "d-1").as_deref(), Some(&body[..]));

    // The same delivery again: 200 with the same id, still one row.
    let r = d.post("gh", "d-1", body);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["id"], id.as_str());
    assert_eq!(r.json()["status"], "duplicate");

    // GitHub's ping is accepted like any event.
    let mut h = github_headers("d-ping", b"{}", SECRET);
    h[1].1 = "ping".into();
    let r = request(&addr, "POST", "/hooks/gh", &h, b"{}").unwrap();
    assert_eq!(r.status, 202, "{}", r.text());

    let wrong = post_signed(&addr, "gh", "bad-1", body, "not the secret");
    assert_eq!(wrong.status, 401);
    assert!(wrong.json()["error"]
        .as_str()
        .unwrap()
        .contains("does not match"));

    let mut flipped = body.to_vec();
    flipped[3] ^= 1;
    let h = github_headers("bad-2", body, SECRET);
    let r = request(&addr, "POST", "/hooks/gh", &h, &flipped).unwrap();
    assert_eq!(r.status, 401, "flipped body byte");

    let mut h = github_headers("bad-3", body, SECRET);
    h.remove(0);
    let r = request(&addr, "POST", "/hooks/gh", &h, body).unwrap();
    assert_eq!(r.status, 401);
    assert!(
        r.text().contains("missing X-Hub-Signature-256"),
        "{}",
        r.text()
    );

    let mut h = github_headers("bad-4", body, SECRET);
    h[0].1 = "sha1=0123".into();
    let r = request(&addr, "POST", "/hooks/gh", &h, body).unwrap();
    assert_eq!(r.status, 401);
    assert!(r.text().contains("malformed"), "{}", r.text());

    let mut h = github_headers("bad-5", body, SECRET);
    h.push(h[0].clone());
    let r = request(&addr, "POST", "/hooks/gh", &h, body).unwrap();
    assert_eq!(r.status, 401, "duplicate signature headers");

    let mut h = github_headers("ignored", body, SECRET);
    h.retain(|(k, _)| k != "X-GitHub-Delivery");
    let r = request(&addr, "POST", "/hooks/gh", &h, body).unwrap();
    assert_eq!(r.status, 400);
    assert!(r.text().contains("X-GitHub-Delivery"), "{}", r.text());

    let r = post_signed(&addr, "nope", "bad-6", body, SECRET);
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"], "unknown hook");

    let r = request(&addr, "GET", "/hooks/gh", &[], b"").unwrap();
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("POST"));

    let big = vec![b'x'; 4097];
    let r = post_signed(&addr, "gh", "bad-7", &big, SECRET);
    assert_eq!(r.status, 413, "{}", r.text());

    let r = request(&addr, "GET", "/nowhere", &[], b"").unwrap();
    assert_eq!(r.status, 404);

    // Nothing of the bad requests was stored, and no error leaked the secret.
    assert_eq!(
        count_rows(&url, None),
        2,
        "only d-1 and the ping are stored"
    );
    let log = d.log_text();
    assert!(!log.contains(SECRET), "secret in log");
    let status = request(&addr, "GET", "/status", &[], b"").unwrap().text();
    assert!(!status.contains(SECRET), "secret in /status");
    assert!(
        log.contains("hook=gh delivery=d-1 event=push status=202"),
        "{log}"
    );
}

#[test]
fn contract_sqlite() {
    contract(Kind::Sqlite);
}

#[test]
fn contract_postgres() {
    contract(Kind::Postgres);
}

/// An oversize body announced by Content-Length is refused before it is sent.
#[test]
fn oversize_content_length_is_refused_early() {
    let env = Env::new("early413");
    let secret = env.write("gh.secret", SECRET);
    let addr = format!("127.0.0.1:{}", free_port());
    let _d = Daemon::start(&env, &config(&addr, &env.sqlite_url(), &secret, ""), &[]);
    use std::io::Write;
    let mut s = std::net::TcpStream::connect(&addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    // 25 MiB + 1, the default limit plus one byte; we never send the body.
    write!(
        s,
        "POST /hooks/gh HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
        25 * 1024 * 1024 + 1
    )
    .unwrap();
    let r = read_response(&mut s).unwrap();
    assert_eq!(r.status, 413);
}

/// `server.max_header_bytes` is exact, not hyper's buffer growth steps.
#[test]
fn header_size_limit_is_exact() {
    let env = Env::new("hdrlimit");
    let secret = env.write("gh.secret", SECRET);
    let addr = format!("127.0.0.1:{}", free_port());
    let d = Daemon::start(
        &env,
        &config(
            &addr,
            &env.sqlite_url(),
            &secret,
            "max_header_bytes = 16384",
        ),
        &[],
    );
    let mut h = github_headers("big-1", b"{}", SECRET);
    h.push(("X-Padding".into(), "p".repeat(17_000)));
    let r = request(&addr, "POST", "/hooks/gh", &h, b"{}").unwrap();
    assert_eq!(r.status, 431, "{}", r.text());
    let mut h = github_headers("big-2", b"{}", SECRET);
    h.push(("X-Padding".into(), "p".repeat(15_000)));
    let r = request(&addr, "POST", "/hooks/gh", &h, b"{}").unwrap();
    assert_eq!(r.status, 202, "{}", r.text());
    assert_eq!(d.post("gh", "small", b"{}").status, 202);
}

/// PostgreSQL unreachable: 503 with Retry-After within a second, /readyz
/// says so, and deliveries are accepted again once it is back.
#[test]
fn store_unreachable_answers_503_quickly() {
    let env = Env::new("pgdown");
    let secret = env.write("gh.secret", SECRET);
    let real = pg_url();
    let proxy = Proxy::new(pg_host_port(&real));
    let via = real.replace(&pg_host_port(&real), &proxy.addr);
    let addr = format!("127.0.0.1:{}", free_port());
    let d = Daemon::start(&env, &config(&addr, &via, &secret, ""), &[]);
    assert_eq!(d.post("gh", "up-1", b"{}").status, 202);

    proxy.cut();
    let t = Instant::now();
    let r = d.post("gh", "down-1", b"{}");
    let took = t.elapsed();
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(took < Duration::from_secs(1), "503 took {took:?}");
    assert!(r.header("retry-after").is_some());
    assert!(
        !r.text().contains("postgres://"),
        "error body leaks the URL"
    );

    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = request(&addr, "GET", "/readyz", &[], b"").unwrap();
        if r.status == 503 {
            assert!(r.text().contains("store unreachable"), "{}", r.text());
            break;
        }
        assert!(
            Instant::now() < deadline,
            "/readyz never reported the outage"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // Under concurrent load too: nobody waits for a second connect timeout.
    let t = Instant::now();
    let threads: Vec<_> = (0..20)
        .map(|i| {
            let addr = addr.clone();
            std::thread::spawn(move || {
                let t = Instant::now();
                let r = post_signed(&addr, "gh", &format!("down-c{i}"), b"{}", SECRET);
                (r.status, t.elapsed())
            })
        })
        .collect();
    for th in threads {
        let (status, took) = th.join().unwrap();
        assert_eq!(status, 503);
        assert!(
            took < Duration::from_secs(1),
            "a concurrent 503 took {took:?}"
        );
    }
    assert!(t.elapsed() < Duration::from_secs(2));

    proxy.restore();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let r = d.post("gh", "down-1", b"{}");
        if r.status == 202 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "store never came back: {}",
            r.text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(count_rows(&real, None), 2);
}
