//! PostgreSQL unavailable in every way it can be: frozen (SIGSTOP: the
//! kernel accepts connections, nothing answers), down when the daemon
//! starts, or unable to make a commit durable (a synchronous standby that
//! never answers, with `synchronous_commit = off` set for the database).
//! With the spool, deliveries keep getting 202 quickly and nothing
//! acknowledged is lost; without it they get a quick 503 and `/readyz` says
//! why; and the watchdog keeps being fed, because a database problem is a
//! readiness problem, not a hang of ours.

mod common;
use common::*;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn with_spool(cfg: &str, path: &std::path::Path) -> String {
    cfg.replace(
        "spool = \"off\"",
        &format!("spool = \"{}\"", path.display()),
    )
}

fn spooled(d: &Daemon) -> u64 {
    request(&d.addr, "GET", "/status", &[], b"").unwrap().json()["store"]["spooled"]
        .as_u64()
        .unwrap()
}

fn pings(lines: &[String]) -> usize {
    lines.iter().filter(|l| *l == "WATCHDOG=1").count()
}

/// Item 1: PostgreSQL frozen for 8 s under load. Every delivery is answered
/// 2xx (spooled) well within `store_timeout`, the watchdog keeps pinging
/// (stall_timeout is 2 s, shorter than the freeze), and after SIGCONT
/// every acknowledged delivery is in PostgreSQL exactly once.
#[test]
fn frozen_postgres_under_load_is_spooled_and_the_watchdog_keeps_pinging() {
    let env = Env::new("pgfreeze");
    let pg = PrivatePg::start(&env, &[]);
    let url = pg.db("");
    let secret = env.write("gh.secret", SECRET);
    let n = Notify::new(&env);
    let addr = format!("127.0.0.1:{}", free_port());
    let cfg = with_spool(
        &config(&addr, &url, &secret, "store_timeout = \"5s\""),
        &env.path("spool.db"),
    )
    .replace("[store]", "[store]\nstall_timeout = \"2s\"");
    let d = Daemon::start(
        &env,
        &cfg,
        &[
            ("NOTIFY_SOCKET", n.path.display().to_string()),
            ("WATCHDOG_USEC", "600000".into()),
        ],
    );
    assert_eq!(d.post("gh", "warm-up", b"{}").status, 202);

    let stop = Arc::new(AtomicBool::new(false));
    let loader = load(&d.addr, "fz", 4, Duration::from_millis(25), stop.clone());
    std::thread::sleep(Duration::from_secs(2));
    pg.freeze();
    let t = Instant::now();
    // Past the write deadline and past stall_timeout: writers that waited
    // on the frozen server would stop the pings here.
    let _ = n.collect(Duration::from_secs(3));
    let frozen = n.collect(Duration::from_secs(5));
    let ready = request(&d.addr, "GET", "/readyz", &[], b"").unwrap();
    pg.thaw();
    eprintln!("frozen for {:?}", t.elapsed());
    std::thread::sleep(Duration::from_secs(3));
    stop.store(true, Ordering::SeqCst);
    let res = loader.join().unwrap();
    let failed = res.failed();
    eprintln!(
        "sent {}, acked {}, spooled {}, failed {}, max latency {:?}, pings in the last 5 s of the freeze {}",
        res.sent.len(),
        res.acked().len(),
        res.spooled(),
        failed.len(),
        res.max_latency(),
        pings(&frozen)
    );
    assert!(
        failed.is_empty(),
        "{} of {} deliveries failed during the freeze, e.g. {:?}\n{}",
        failed.len(),
        res.sent.len(),
        &failed[..failed.len().min(5)],
        d.log_text()
    );
    assert!(res.spooled() > 0, "nothing was spooled during the freeze");
    assert!(
        res.max_latency() < Duration::from_secs(4),
        "slowest answer {:?}",
        res.max_latency()
    );
    assert!(
        pings(&frozen) >= 10,
        "the watchdog stopped while PostgreSQL was frozen: {frozen:?}\n{}",
        d.log_text()
    );
    assert_eq!(ready.status, 200, "spooling is ready: {}", ready.text());

    wait_until(Duration::from_secs(40), "the spool never drained", || {
        spooled(&d) == 0
    });
    let stored = pg_delivery_counts(&url);
    let acked = res.acked();
    let missing: Vec<_> = acked.iter().filter(|d| !stored.contains_key(*d)).collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged deliveries missing, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    assert!(stored.values().all(|&c| c == 1), "a delivery stored twice");
}

/// Item 1 without a spool: a frozen database is answered 503 + Retry-After
/// within the write deadline (not after `store_timeout`), and `/readyz`
/// says the store is unreachable.
#[test]
fn frozen_postgres_without_spool_answers_503_quickly() {
    let env = Env::new("pgfreeze-nospool");
    let pg = PrivatePg::start(&env, &[]);
    let url = pg.db("");
    let secret = env.write("gh.secret", SECRET);
    let addr = format!("127.0.0.1:{}", free_port());
    let d = Daemon::start(
        &env,
        &config(&addr, &url, &secret, "store_timeout = \"5s\""),
        &[],
    );
    assert_eq!(d.post("gh", "warm-up", b"{}").status, 202);
    pg.freeze();
    let mut answers = Vec::new();
    for i in 0..4 {
        let t = Instant::now();
        let r = d.post("gh", &format!("nf-{i}"), b"{}");
        answers.push((r.status, t.elapsed(), r.header("retry-after").is_some()));
    }
    let ready = request(&d.addr, "GET", "/readyz", &[], b"").unwrap();
    pg.thaw();
    eprintln!("answers while frozen: {answers:?}");
    for (status, took, retry) in &answers {
        assert_eq!(*status, 503, "{answers:?}");
        assert!(*retry, "503 without Retry-After");
        assert!(*took < Duration::from_secs(3), "503 took {took:?}");
    }
    assert_eq!(ready.status, 503, "{}", ready.text());
    assert!(
        ready.text().contains("store unreachable"),
        "{}",
        ready.text()
    );
    wait_until(Duration::from_secs(20), "no 202 after the thaw", || {
        d.post("gh", "after-thaw", b"{}").status == 202
    });
}

/// Item 2: with the spool on, READY=1 comes while PostgreSQL is down;
/// deliveries are spooled; once it answers, migrations run and the spool
/// drains into it.
#[test]
fn starts_while_postgres_is_down_and_spools() {
    let env = Env::new("pgdown-start");
    let secret = env.write("gh.secret", SECRET);
    let n = Notify::new(&env);
    let real = pg_url();
    let proxy = Proxy::new(pg_host_port(&real));
    proxy.cut();
    let via = real.replace(&pg_host_port(&real), &proxy.addr);
    let addr = format!("127.0.0.1:{}", free_port());
    let cfg = with_spool(&config(&addr, &via, &secret, ""), &env.path("spool.db"));
    let d = Daemon::spawn(
        &env,
        &cfg,
        &[("NOTIFY_SOCKET", n.path.display().to_string())],
    );
    let t = Instant::now();
    let lines = n.wait_for("READY=1", Duration::from_secs(5));
    eprintln!("READY=1 after {:?}: {lines:?}", t.elapsed());
    for i in 0..5 {
        let r = d.post("gh", &format!("down-{i}"), b"{}");
        assert_eq!(r.status, 202, "{}", r.text());
        assert_eq!(r.json()["spooled"], true);
    }
    let ready = request(&d.addr, "GET", "/readyz", &[], b"").unwrap();
    assert_eq!(ready.status, 200, "{}", ready.text());
    assert!(ready.text().contains("spooling"), "{}", ready.text());
    proxy.restore();
    wait_until(Duration::from_secs(20), "the spool never drained", || {
        spooled(&d) == 0
    });
    assert_eq!(count_rows(&real, None), 5);
    assert_eq!(d.post("gh", "up-1", b"{}").status, 202);
}

/// Item 2 without a spool: READY=1 too, and every delivery gets a quick
/// 503 (visible in GitHub's delivery log, unlike a connection left in the
/// backlog); `/readyz` and STATUS= say why; 202 once the database answers.
#[test]
fn starts_while_postgres_is_down_without_spool_answering_503() {
    let env = Env::new("pgdown-nospool");
    let secret = env.write("gh.secret", SECRET);
    let (d, n, proxy, real) = spawn_with_postgres_cut(&env, &secret, "");
    let lines = n.wait_for("READY=1", Duration::from_secs(5));
    let status: Vec<_> = lines.iter().filter(|l| l.starts_with("STATUS=")).collect();
    assert!(
        status
            .last()
            .is_some_and(|l| l.contains("unavailable") || l.contains("waiting")),
        "STATUS= does not say the store is down: {lines:?}"
    );
    let t = Instant::now();
    let r = d.post("gh", "nodb-1", b"{}");
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(r.header("retry-after").is_some());
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "took {:?}",
        t.elapsed()
    );
    let ready = request(&d.addr, "GET", "/readyz", &[], b"").unwrap();
    assert_eq!(ready.status, 503);
    assert!(ready.text().contains("store"), "{}", ready.text());
    proxy.restore();
    wait_until(
        Duration::from_secs(20),
        "no 202 once PostgreSQL is back",
        || d.post("gh", "nodb-2", b"{}").status == 202,
    );
    assert_eq!(count_rows(&real, Some("nodb-2")), 1);
}

/// Item 4: the database says `synchronous_commit = off`, and a synchronous
/// standby is configured that never answers. A session that inherited "off"
/// would commit at once and answer 202 for an event that is not durable as
/// the DBA defined it; ingest pins `synchronous_commit = on`, so the commit
/// waits, the batch overruns its deadline and the delivery is spooled.
#[test]
fn synchronous_commit_off_is_not_inherited() {
    let env = Env::new("pgsynccommit");
    let pg = PrivatePg::start(&env, &["synchronous_standby_names=ghost"]);
    let url = pg.db(
        "DO $$ BEGIN EXECUTE format('ALTER DATABASE %I SET synchronous_commit = off', current_database()); END $$;",
    );
    let secret = env.write("gh.secret", SECRET);
    let addr = format!("127.0.0.1:{}", free_port());
    let cfg = with_spool(&config(&addr, &url, &secret, ""), &env.path("spool.db"));
    let d = Daemon::start(&env, &cfg, &[]);
    let t = Instant::now();
    let r = d.post("gh", "sync-1", b"{}");
    eprintln!("answer after {:?}: {} {}", t.elapsed(), r.status, r.text());
    assert_eq!(r.status, 202, "{}", r.text());
    assert_eq!(
        r.json()["spooled"],
        true,
        "answered as stored although the commit could not be made durable: {}",
        r.text()
    );
}

/// A batch of delivery results that PostgreSQL refuses once with a
/// transient error (here a real 40P01 raised by a trigger, as a deadlock
/// victim gets) is recorded again at once: the delivery is done, not left
/// leased until its lease expires and delivered a second time.
#[test]
fn a_result_refused_once_by_postgres_is_recorded_again_at_once() {
    let db = pg_url();
    let sink = Sink::new();
    let env = Env::new("pgfinishretry");
    let secret = env.write("gh.secret", SECRET);
    let addr = format!("127.0.0.1:{}", free_port());
    let cfg = format!(
        "{}[hooks.action]\ntype = \"forward\"\nurl = \"{}\"\ntimeout = \"10s\"\n\
         [delivery]\npoll_interval = \"100ms\"\nlease_margin = \"1s\"\n",
        config(&addr, &db, &secret, ""),
        sink.url("/r")
    );
    let d = Daemon::start(&env, &cfg, &[]);
    let mut c = postgres::Client::connect(&db, postgres::NoTls).unwrap();
    // A sequence is not rolled back with the transaction it is used in:
    // only the first result fails.
    c.batch_execute(
        "CREATE SEQUENCE refuse_once; \
         CREATE FUNCTION refuse_once() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
           IF NEW.state = 'done' AND nextval('refuse_once') = 1 THEN \
             RAISE EXCEPTION 'injected deadlock' USING ERRCODE = '40P01'; \
           END IF; RETURN NEW; END $$; \
         CREATE TRIGGER refuse_once BEFORE UPDATE ON deliveries FOR EACH ROW EXECUTE FUNCTION refuse_once();",
    )
    .unwrap();
    let r = d.post("gh", "refused-1", b"{}");
    assert_eq!(r.status, 202, "{}", r.text());
    wait_state(&db, "refused-1", "done", Duration::from_secs(5));
    let used: i64 = c
        .query_one("SELECT last_value FROM refuse_once", &[])
        .unwrap()
        .get(0);
    assert!(used >= 2, "the trigger refused nothing ({used})");
    assert_eq!(sink.count(), 1, "delivered again");
    assert!(
        d.log_text().contains("trying again"),
        "no log line says the result is tried again"
    );
}
