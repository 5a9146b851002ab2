//! The local spool: with PostgreSQL unreachable, deliveries are accepted
//! into a local file and moved into PostgreSQL when it is back, in order of
//! arrival, without storing anything twice; a full spool answers 503.

mod common;
use common::*;
use std::time::{Duration, Instant};

fn spool_daemon(env: &Env, via: &str, max: usize) -> Daemon {
    let secret = env.write("gh.secret", SECRET);
    let addr = format!("127.0.0.1:{}", free_port());
    let spool = env.path("spool.db");
    let cfg = config(&addr, via, &secret, "").replace(
        "spool = \"off\"",
        &format!("spool = \"{}\"\nspool_max_events = {max}", spool.display()),
    );
    Daemon::start(env, &cfg, &[])
}

#[test]
fn outage_is_spooled_then_drained_in_order_without_duplicates() {
    let env = Env::new("spool");
    let real = pg_url();
    let proxy = Proxy::new(pg_host_port(&real));
    let via = real.replace(&pg_host_port(&real), &proxy.addr);
    let d = spool_daemon(&env, &via, 1000);
    assert_eq!(d.post("gh", "before", b"{}").status, 202);

    proxy.cut();
    let mut ids = Vec::new();
    let t = Instant::now();
    for i in 0..20 {
        let r = d.post(
            "gh",
            &format!("sp-{i}"),
            format!("{{\"i\":{i}}}").as_bytes(),
        );
        assert_eq!(r.status, 202, "{}", r.text());
        assert_eq!(r.json()["spooled"], true);
        ids.push(r.json()["id"].as_str().unwrap().to_string());
    }
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "spooling took {:?}",
        t.elapsed()
    );
    // A duplicate of a spooled delivery: same id, not stored twice.
    let r = d.post("gh", "sp-3", b"{\"i\":3}");
    assert_eq!(
        (r.status, r.json()["id"].as_str().unwrap()),
        (200, ids[3].as_str())
    );
    // A re-send of a delivery that PostgreSQL already has is spooled too...
    assert_eq!(d.post("gh", "before", b"{}").status, 202);

    let ready = request(&d.addr, "GET", "/readyz", &[], b"").unwrap();
    assert_eq!(
        ready.status,
        200,
        "still ready while spooling: {}",
        ready.text()
    );
    assert!(
        ready.text().contains("spooling (21 events)"),
        "{}",
        ready.text()
    );
    let st = request(&d.addr, "GET", "/status", &[], b"").unwrap().json();
    assert_eq!(st["store"]["spooled"], 21);

    proxy.restore();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let st = request(&d.addr, "GET", "/status", &[], b"").unwrap().json();
        if st["store"]["spooled"] == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "spool never drained: {st}");
        std::thread::sleep(Duration::from_millis(100));
    }
    // ...and is not stored twice. Everything else arrived, in order.
    assert_eq!(count_rows(&real, None), 21);
    let mut c = postgres::Client::connect(&real, postgres::NoTls).unwrap();
    let order: Vec<String> = c
        .query("SELECT delivery_id FROM events ORDER BY ctid", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut want = vec!["before".to_string()];
    want.extend((0..20).map(|i| format!("sp-{i}")));
    assert_eq!(order, want, "moved into PostgreSQL in order of arrival");
    let stored_ids: Vec<String> = c
        .query(
            "SELECT id FROM events WHERE delivery_id LIKE 'sp-%' ORDER BY ctid",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(stored_ids, ids, "the ids given to senders stay valid");
    assert!(
        d.log_text().contains("spool drained: 21 event(s)"),
        "{}",
        d.log_text()
    );
}

#[test]
fn full_spool_answers_503() {
    let env = Env::new("spoolfull");
    let real = pg_url();
    let proxy = Proxy::new(pg_host_port(&real));
    let via = real.replace(&pg_host_port(&real), &proxy.addr);
    let d = spool_daemon(&env, &via, 3);
    proxy.cut();
    let statuses: Vec<u16> = (0..5)
        .map(|i| d.post("gh", &format!("f-{i}"), b"{}").status)
        .collect();
    assert_eq!(statuses, [202, 202, 202, 503, 503]);
    let r = d.post("gh", "f-9", b"{}");
    assert!(r.header("retry-after").is_some());
    proxy.restore();
    let deadline = Instant::now() + Duration::from_secs(20);
    while count_rows(&real, None) < 3 {
        assert!(Instant::now() < deadline, "spool never drained");
        std::thread::sleep(Duration::from_millis(100));
    }
}
