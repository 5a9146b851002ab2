//! Several instances on one PostgreSQL behave as one: a delivery POSTed to
//! two instances at once is stored and processed once; three instances
//! draining a backlog deliver every event exactly once; and when one is
//! killed mid-delivery, its events are delivered by the others (at least
//! once, same Webhookd-Delivery).

mod common;
use common::*;
use nix::sys::signal::Signal;
use std::collections::HashMap;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

fn instance(db: &str, sink: &Sink, extra_action: &str) -> (Env, Daemon) {
    let env = Env::new("scale");
    let secret = env.write("gh.secret", SECRET);
    let addr = format!("127.0.0.1:{}", free_port());
    let cfg = format!(
        "{}\n[hooks.action]\ntype = \"forward\"\nurl = \"{}\"\n{extra_action}\n[hooks.retry]\ninitial_delay = \"50ms\"\nmax_delay = \"100ms\"\n[delivery]\npoll_interval = \"100ms\"\nlease_margin = \"1s\"\n",
        config(&addr, db, &secret, ""),
        sink.url("/")
    );
    let d = Daemon::start(&env, &cfg, &[]);
    (env, d)
}

fn per_delivery(sink: &Sink) -> HashMap<String, usize> {
    let mut m = HashMap::new();
    for r in sink.all() {
        *m.entry(r.header("webhookd-delivery").unwrap_or("").to_string())
            .or_insert(0) += 1;
    }
    m
}

fn wait_all_done(db: &str, n: i64) {
    let mut c = postgres::Client::connect(db, postgres::NoTls).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let done: i64 = c
            .query_one("SELECT count(*) FROM events WHERE state = 'done'", &[])
            .unwrap()
            .get(0);
        if done == n {
            return;
        }
        assert!(Instant::now() < deadline, "only {done} of {n} events done");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn same_delivery_to_two_instances_is_stored_and_processed_once() {
    let db = pg_url();
    let sink = Sink::new();
    let (_ea, a) = instance(&db, &sink, "");
    let (_eb, b) = instance(&db, &sink, "");
    let barrier = Arc::new(Barrier::new(2));
    let threads: Vec<_> = [a.addr.clone(), b.addr.clone()]
        .into_iter()
        .map(|addr| {
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                barrier.wait();
                post_signed(&addr, "gh", "both", b"{}", SECRET)
            })
        })
        .collect();
    let mut statuses: Vec<u16> = threads
        .into_iter()
        .map(|t| t.join().unwrap().status)
        .collect();
    statuses.sort();
    assert_eq!(statuses, [200, 202]);
    wait_all_done(&db, 1);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(sink.count(), 1, "processed once");
    assert_eq!(count_rows(&db, Some("both")), 1, "stored once");
}

#[test]
fn three_instances_drain_a_backlog_exactly_once() {
    let db = pg_url();
    let sink = Sink::new();
    sink.set_reply(|_, _| (200, vec![], Duration::from_millis(3)));
    let instances: Vec<_> = (0..3)
        .map(|_| instance(&db, &sink, "concurrency = 4"))
        .collect();
    let total = 300;
    let clients = 6;
    let threads: Vec<_> = (0..clients)
        .map(|c| {
            let addrs: Vec<String> = instances.iter().map(|(_, d)| d.addr.clone()).collect();
            std::thread::spawn(move || {
                for i in (c..total).step_by(clients) {
                    let r = post_signed(&addrs[i % 3], "gh", &format!("bk-{i}"), b"{}", SECRET);
                    assert_eq!(r.status, 202);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    wait_all_done(&db, total as i64);
    std::thread::sleep(Duration::from_millis(500));
    let seen = per_delivery(&sink);
    assert_eq!(seen.len(), total, "every event delivered");
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        twice.is_empty(),
        "delivered more than once without a crash: {twice:?}"
    );
    for (_, d) in &instances {
        let m = request(&d.addr, "GET", "/metrics", &[], b"")
            .unwrap()
            .text();
        let done = m
            .lines()
            .find_map(|l| l.strip_prefix("webhookd_deliveries_total{hook=\"gh\",result=\"done\"} "))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0);
        assert!(done > 0.0, "an instance delivered nothing:\n{m}");
    }
}

#[test]
fn killed_instance_events_are_delivered_by_the_others() {
    let db = pg_url();
    let sink = Sink::new();
    // Slow target at first, so deliveries are in flight when we kill.
    sink.set_reply(|_, _| (200, vec![], Duration::from_millis(1500)));
    let extra = "concurrency = 4\ntimeout = \"3s\"";
    let mut instances: Vec<_> = (0..3).map(|_| instance(&db, &sink, extra)).collect();
    let total = 30;
    for i in 0..total {
        let addr = &instances[i % 3].1.addr;
        assert_eq!(
            post_signed(addr, "gh", &format!("k-{i}"), b"{}", SECRET).status,
            202
        );
    }
    // Kill the second instance while it has deliveries in flight.
    let victim = &mut instances[1].1;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let st = request(&victim.addr, "GET", "/status", &[], b"")
            .unwrap()
            .json();
        if st["delivery"]["in_flight"].as_u64().unwrap_or(0) > 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "victim never had deliveries in flight"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    victim.signal(Signal::SIGKILL);
    victim.wait_exit(Duration::from_secs(5)).unwrap();
    sink.set_reply(|_, _| (200, vec![], Duration::ZERO));

    wait_all_done(&db, total as i64);
    let seen = per_delivery(&sink);
    assert_eq!(seen.len(), total, "every event delivered at least once");
    let again = seen.values().filter(|n| **n > 1).count();
    assert!(
        again >= 1,
        "the killed instance's in-flight events were not redelivered"
    );
}
