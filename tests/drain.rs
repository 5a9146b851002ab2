//! SIGTERM drains: the listener closes at once (new connections are
//! refused), a request already in flight completes and is stored, and the
//! process exits 0.

mod common;
use common::*;
use nix::sys::signal::Signal;
use std::io::Write;
use std::time::Duration;

#[test]
fn in_flight_request_completes_after_sigterm() {
    let env = Env::new("drain");
    let secret = env.write("gh.secret", SECRET);
    let addr = format!("127.0.0.1:{}", free_port());
    let url = env.sqlite_url();
    let mut d = Daemon::start(&env, &config(&addr, &url, &secret, ""), &[]);

    // A slow client: headers and half the body now, the rest later.
    let body = br#"{"slow":"client","padding":"xxxxxxxxxxxxxxxxxxxxxxxx"}"#;
    let mut s = std::net::TcpStream::connect(&addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut head = String::from("POST /hooks/gh HTTP/1.1\r\nHost: x\r\n");
    for (k, v) in github_headers("slow-1", body, SECRET) {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(&body[..10]).unwrap();
    std::thread::sleep(Duration::from_millis(300));

    d.signal(Signal::SIGTERM);
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        std::net::TcpStream::connect(&addr).is_err(),
        "new connections must be refused while draining"
    );
    assert!(
        d.child.try_wait().unwrap().is_none(),
        "exited before the in-flight request finished"
    );

    s.write_all(&body[10..]).unwrap();
    let r = read_response(&mut s).unwrap();
    assert_eq!(r.status, 202, "{}", r.text());
    let status = d
        .wait_exit(Duration::from_secs(15))
        .expect("exit after drain");
    assert!(status.success(), "{status:?}");
    assert_eq!(stored_body(&url, "slow-1").as_deref(), Some(&body[..]));
    assert!(d.log_text().contains("drained cleanly"), "{}", d.log_text());
}

/// A client that never finishes is cut off at the drain deadline; we still exit 0.
#[test]
fn drain_deadline_bounds_shutdown() {
    let env = Env::new("drain-deadline");
    let secret = env.write("gh.secret", SECRET);
    let addr = format!("127.0.0.1:{}", free_port());
    let cfg = config(&addr, &env.sqlite_url(), &secret, "")
        .replace("drain_timeout = \"10s\"", "drain_timeout = \"1s\"");
    let mut d = Daemon::start(&env, &cfg, &[]);
    let mut s = std::net::TcpStream::connect(&addr).unwrap();
    s.write_all(b"POST /hooks/gh HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nabc")
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let t = std::time::Instant::now();
    d.signal(Signal::SIGTERM);
    let status = d
        .wait_exit(Duration::from_secs(10))
        .expect("exit within the deadline");
    assert!(status.success());
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "took {:?}",
        t.elapsed()
    );
}

/// On PostgreSQL too, SIGTERM after deliveries exits 0: the connection pool
/// must not drop its `postgres::Client`s on the runtime thread (that panics
/// and aborts with status 134; found by scripts/chaos).
#[test]
fn sigterm_exits_0_on_postgres() {
    let env = Env::new("drainpg");
    let secret = env.write("gh.secret", SECRET);
    let addr = format!("127.0.0.1:{}", free_port());
    let url = pg_url();
    let mut d = Daemon::start(&env, &config(&addr, &url, &secret, ""), &[]);
    for i in 0..5 {
        assert_eq!(d.post("gh", &format!("pg-exit-{i}"), b"{}").status, 202);
    }
    d.signal(Signal::SIGTERM);
    let status = d.wait_exit(Duration::from_secs(15)).expect("exit");
    assert!(status.success(), "{status:?}\n{}", d.log_text());
    assert!(!d.log_text().contains("panicked"), "{}", d.log_text());
}

/// A connection accepted just before SIGTERM whose request arrives just
/// after it is answered, not closed empty (hyper's graceful shutdown closes
/// connections with no request started; found by scripts/chaos's restarts).
#[test]
fn request_arriving_just_after_sigterm_is_answered() {
    let env = Env::new("drainfresh");
    let secret = env.write("gh.secret", SECRET);
    let addr = format!("127.0.0.1:{}", free_port());
    let url = env.sqlite_url();
    let mut d = Daemon::start(&env, &config(&addr, &url, &secret, ""), &[]);
    let body = br#"{"fresh":true}"#;
    let mut s = std::net::TcpStream::connect(&addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    std::thread::sleep(Duration::from_millis(200)); // accepted, nothing sent yet
    d.signal(Signal::SIGTERM);
    std::thread::sleep(Duration::from_millis(20));
    let mut head = String::from("POST /hooks/gh HTTP/1.1\r\nHost: x\r\nConnection: close\r\n");
    for (k, v) in github_headers("fresh-1", body, SECRET) {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let r = read_response(&mut s).expect("an answer, not an empty close");
    assert_eq!(r.status, 202, "{}", r.text());
    let status = d.wait_exit(Duration::from_secs(15)).expect("exit");
    assert!(status.success(), "{status:?}");
    assert_eq!(count_rows(&url, Some("fresh-1")), 1);
}
