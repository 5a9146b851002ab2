//! What one bad row, a small pool or a shared spool file must not do: fail
//! the requests batched with a refused row, stall the spool drain behind a
//! row PostgreSQL refuses, forge a journal line, exceed a batch's byte
//! budget, starve the pool, or let two processes (or a changed config)
//! misuse one spool file.

mod common;
use common::*;
use nix::sys::signal::Signal;
use std::path::Path;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant, SystemTime};
use webhookd::config::Secret;
use webhookd::verify::Scheme;

/// The Standard Webhooks documentation's example secret.
const SW_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// `config` plus a Standard Webhooks hook `sw` (its event type comes from
/// the body's `type`, so a sender controls every byte of it).
fn config_sw(env: &Env, listen: &str, url: &str, extra_server: &str) -> String {
    let gh = env.write("gh.secret", SECRET);
    let sw = env.write("sw.secret", SW_SECRET);
    format!(
        "{}\n[[hooks]]\nid = \"sw\"\nscheme = \"standard\"\nsecrets = [\"file:{}\"]\n",
        config(listen, url, &gh, extra_server),
        sw.display()
    )
}

fn post_sw(addr: &str, delivery: &str, body: &[u8]) -> Resp {
    let s = Scheme::from_name("standard").unwrap();
    let key = s
        .prepare_secret(Secret(SW_SECRET.as_bytes().to_vec()))
        .unwrap();
    let headers = s.sign(body, &key, delivery, "", SystemTime::now());
    request(addr, "POST", "/hooks/sw", &headers, body).unwrap()
}

fn with_spool(cfg: &str, path: &Path) -> String {
    cfg.replace(
        "spool = \"off\"",
        &format!("spool = \"{}\"", path.display()),
    )
}

fn status_json(d: &Daemon) -> serde_json::Value {
    request(&d.addr, "GET", "/status", &[], b"").unwrap().json()
}

fn event_types(url: &str) -> Vec<(String, String)> {
    let mut c = postgres::Client::connect(url, postgres::NoTls).unwrap();
    c.query(
        "SELECT delivery_id, event_type FROM events ORDER BY delivery_id",
        &[],
    )
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1)))
    .collect()
}

/// A body whose `type` holds NUL (which `text` cannot store) and a newline
/// followed by what would look like a journal line of its own.
const POISON: &[u8] = br#"{"type":"push\u0000\nFORGED-LINE status=202 hook=admin","n":0}"#;

fn assert_no_forged_line(log: &str) {
    assert!(
        !log.lines().any(|l| l.starts_with("FORGED-LINE")),
        "a logged value forged a log line:\n{log}"
    );
}

/// Item 3: an event type PostgreSQL cannot store, spooled during an
/// outage together with 20 normal events, must not stall the drain: all 21
/// reach PostgreSQL, the poisoned one with its event type made safe.
#[test]
fn poisoned_event_type_does_not_stall_the_spool() {
    let env = Env::new("poison-spool");
    let real = pg_url();
    let proxy = Proxy::new(pg_host_port(&real));
    let via = real.replace(&pg_host_port(&real), &proxy.addr);
    let addr = format!("127.0.0.1:{}", free_port());
    let cfg = with_spool(&config_sw(&env, &addr, &via, ""), &env.path("spool.db"));
    let d = Daemon::start(&env, &cfg, &[]);
    assert_eq!(d.post("gh", "before", b"{}").status, 202);
    proxy.cut();
    let r = post_sw(&d.addr, "msg_poison", POISON);
    assert_eq!(r.status, 202, "{}", r.text());
    for i in 0..20 {
        let r = d.post("gh", &format!("after-{i}"), b"{}");
        assert_eq!(r.status, 202, "{}", r.text());
    }
    proxy.restore();
    let deadline = Instant::now() + Duration::from_secs(20);
    while count_rows(&real, None) < 22 {
        assert!(
            Instant::now() < deadline,
            "only {} of 22 events reached PostgreSQL; spool: {}\n{}",
            count_rows(&real, None),
            status_json(&d)["store"],
            d.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let types = event_types(&real);
    let (_, t) = types.iter().find(|(d, _)| d == "msg_poison").unwrap();
    assert!(
        !t.chars().any(|c| c.is_control()),
        "stored event type has control characters: {t:?}"
    );
    assert_eq!(
        stored_body(&real, "msg_poison").unwrap(),
        POISON,
        "the raw body is kept byte for byte"
    );
    assert_no_forged_line(&d.log_text());
}

/// Item 3: event types are bounded and made safe whatever the source (a
/// header or the body), with PostgreSQL up; the log line cannot be forged.
#[test]
fn event_type_is_bounded_and_logged_safely() {
    let env = Env::new("event-bounds");
    let url = pg_url();
    let addr = format!("127.0.0.1:{}", free_port());
    let d = Daemon::start(&env, &config_sw(&env, &addr, &url, ""), &[]);
    let r = post_sw(&d.addr, "msg_poison", POISON);
    assert_eq!(r.status, 202, "{}", r.text());
    let long = "x".repeat(5000);
    let body = b"{}";
    let mut headers = github_headers("long-event", body, SECRET);
    headers.retain(|(k, _)| k != "X-GitHub-Event");
    headers.push(("X-GitHub-Event".into(), long));
    let r = request(&d.addr, "POST", "/hooks/gh", &headers, body).unwrap();
    assert_eq!(r.status, 202, "{}", r.text());
    for (delivery, t) in event_types(&url) {
        assert!(
            t.len() <= 200,
            "{delivery}: event type of {} bytes",
            t.len()
        );
        assert!(!t.chars().any(|c| c.is_control()), "{delivery}: {t:?}");
    }
    assert_no_forged_line(&d.log_text());
}

/// Item 3: a row PostgreSQL refuses (here: a DBA's trigger) fails only its
/// own request; the events batched with it are stored and get 202.
#[test]
fn refused_row_is_isolated_from_its_batch() {
    let env = Env::new("refused-row");
    let url = pg_url();
    let secret = env.write("gh.secret", SECRET);
    let wedge = env.path("wedge");
    let addr = format!("127.0.0.1:{}", free_port());
    let cfg = config(&addr, &url, &secret, "store_timeout = \"8s\"")
        .replace("[store]", "[store]\nwriters = 1");
    let d = Daemon::start(
        &env,
        &cfg,
        &[("WEBHOOKD_TEST_WEDGE_FILE", wedge.display().to_string())],
    );
    let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    c.batch_execute(
        "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
           IF NEW.delivery_id = 'refused' THEN \
             RAISE EXCEPTION 'refused by a test trigger' USING ERRCODE = 'check_violation'; \
           END IF; RETURN NEW; END $$; \
         CREATE TRIGGER refuse BEFORE INSERT ON events FOR EACH ROW EXECUTE FUNCTION refuse();",
    )
    .unwrap();
    // The writer takes "lead" and stalls; the next 11 queue up behind it and
    // are then written as one batch.
    std::fs::write(&wedge, "").unwrap();
    let a = addr.clone();
    let lead = std::thread::spawn(move || post_signed(&a, "gh", "lead", b"{}", SECRET).status);
    std::thread::sleep(Duration::from_millis(300));
    let ids: Vec<String> = (0..10)
        .map(|i| format!("mate-{i}"))
        .chain(["refused".to_string()])
        .collect();
    let barrier = Arc::new(Barrier::new(ids.len()));
    let posts: Vec<_> = ids
        .iter()
        .map(|id| {
            let (a, id, b) = (addr.clone(), id.clone(), barrier.clone());
            std::thread::spawn(move || {
                b.wait();
                (id.clone(), post_signed(&a, "gh", &id, b"{}", SECRET))
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(700));
    std::fs::remove_file(&wedge).unwrap();
    assert_eq!(lead.join().unwrap(), 202);
    for p in posts {
        let (id, r) = p.join().unwrap();
        if id == "refused" {
            assert!(r.status >= 500, "refused row answered {}", r.status);
        } else {
            assert_eq!(r.status, 202, "{id}: {} {}", r.status, r.text());
        }
    }
    assert_eq!(count_rows(&url, None), 11);
    assert!(
        d.log_text().contains("refused"),
        "no log line about the refused row:\n{}",
        d.log_text()
    );
}

/// The spool's table as webhookd 0.1 creates it: a test can plant rows.
fn seed_spool(path: &Path, rows: &[(&str, &str, &str)]) {
    let c = rusqlite::Connection::open(path).unwrap();
    c.execute_batch(
        "CREATE TABLE IF NOT EXISTS spool (
             seq         INTEGER PRIMARY KEY AUTOINCREMENT,
             id          TEXT    NOT NULL,
             hook_id     TEXT    NOT NULL,
             delivery_id TEXT    NOT NULL,
             event_type  TEXT    NOT NULL,
             received_at INTEGER NOT NULL,
             headers     TEXT    NOT NULL,
             body        BLOB    NOT NULL,
             state       TEXT    NOT NULL,
             UNIQUE (hook_id, delivery_id)
         );",
    )
    .unwrap();
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64;
    for (i, (id, delivery, event)) in rows.iter().enumerate() {
        c.execute(
            "INSERT INTO spool (id, hook_id, delivery_id, event_type, received_at, headers, body, state) \
             VALUES (?1, 'gh', ?2, ?3, ?4, '[]', x'7b7d', 'stored')",
            rusqlite::params![id, delivery, event, now + i as i64],
        )
        .unwrap();
    }
}

/// Item 3: a spooled row that PostgreSQL refuses (planted by an older
/// version, with NUL in its event type) is set aside with a log line and a
/// metric; the rows behind it are drained.
#[test]
fn poisoned_spool_row_is_set_aside() {
    let env = Env::new("spool-aside");
    let url = pg_url();
    let spool = env.path("spool.db");
    let mut rows = vec![("01M8S0000000000000000POISN", "poisoned", "a\u{0}b")];
    let ids: Vec<String> = (0..5)
        .map(|i| format!("01M8S00000000000000000000{i}"))
        .collect();
    let deliveries: Vec<String> = (0..5).map(|i| format!("ok-{i}")).collect();
    for i in 0..5 {
        rows.push((ids[i].as_str(), deliveries[i].as_str(), "push"));
    }
    seed_spool(&spool, &rows);
    let secret = env.write("gh.secret", SECRET);
    let addr = format!("127.0.0.1:{}", free_port());
    let d = Daemon::start(
        &env,
        &with_spool(&config(&addr, &url, &secret, ""), &spool),
        &[],
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while count_rows(&url, None) < 5 {
        assert!(
            Instant::now() < deadline,
            "the drain stalled behind a refused row: {} of 5 moved; {}\n{}",
            count_rows(&url, None),
            status_json(&d)["store"],
            d.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    wait_until(Duration::from_secs(10), "spool not empty", || {
        status_json(&d)["store"]["spooled"] == 0
    });
    assert_eq!(d.metric("webhookd_spool_rejected_total"), 1.0);
    assert!(
        d.log_text().contains("set aside"),
        "no log line for the set-aside row:\n{}",
        d.log_text()
    );
    assert_eq!(d.post("gh", "later", b"{}").status, 202);
}

/// Item 3: a batch is bounded by bytes as well as by count.
#[test]
fn batches_are_bounded_by_bytes() {
    let env = Env::new("batch-bytes");
    let url = pg_url();
    let secret = env.write("gh.secret", SECRET);
    let wedge = env.path("wedge");
    let addr = format!("127.0.0.1:{}", free_port());
    let cfg = config(&addr, &url, &secret, "store_timeout = \"8s\"")
        .replace("[store]", "[store]\nwriters = 1\nbatch_max_bytes = 16384");
    let d = Daemon::start(
        &env,
        &cfg,
        &[("WEBHOOKD_TEST_WEDGE_FILE", wedge.display().to_string())],
    );
    let before = d.metric("webhookd_store_commits_total");
    std::fs::write(&wedge, "").unwrap();
    let a = addr.clone();
    let lead = std::thread::spawn(move || post_signed(&a, "gh", "lead", b"{}", SECRET).status);
    std::thread::sleep(Duration::from_millis(300));
    let body = format!("{{\"pad\":\"{}\"}}", "p".repeat(6000));
    let posts: Vec<_> = (0..10)
        .map(|i| {
            let (a, b) = (addr.clone(), body.clone());
            std::thread::spawn(move || {
                post_signed(&a, "gh", &format!("big-{i}"), b.as_bytes(), SECRET).status
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(700));
    std::fs::remove_file(&wedge).unwrap();
    assert_eq!(lead.join().unwrap(), 202);
    for p in posts {
        assert_eq!(p.join().unwrap(), 202);
    }
    let commits = d.metric("webhookd_store_commits_total") - before;
    // "lead", then 10 × 6 KB in batches of at most 16 KB: two events each.
    assert!(commits >= 6.0, "10 × 6 KB went in {commits} commits");
}

/// Item 5: a pool that the writers and the spool drain would use up is
/// refused with a clear error, by check-config and by serve.
#[test]
fn pool_smaller_than_the_writers_need_is_refused() {
    let env = Env::new("pool-small");
    let secret = env.write("gh.secret", SECRET);
    let addr = format!("127.0.0.1:{}", free_port());
    let cfg = config(&addr, "postgres://u@127.0.0.1:1/db", &secret, "")
        .replace("[store]", "[store]\nwriters = 4\npool_size = 4");
    let path = env.write("webhookd.toml", &cfg);
    let out = std::process::Command::new(bin())
        .args(["--config", path.to_str().unwrap(), "check-config"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "check-config accepted it: {err}");
    assert_eq!(out.status.code(), Some(78), "EX_CONFIG");
    assert!(err.contains("store.pool_size"), "{err}");
    let mut d = Daemon::spawn(&env, &cfg, &[]);
    let st = d
        .wait_exit(Duration::from_secs(10))
        .expect("serve must refuse this config");
    assert!(!st.success());
    assert!(d.log_text().contains("store.pool_size"), "{}", d.log_text());
}

/// Item 5: with the default (automatic) pool size, many writers do not
/// starve pings and counts: the store stays "up" after a burst of load.
#[test]
fn automatic_pool_does_not_starve_the_monitor() {
    let env = Env::new("pool-auto");
    let url = pg_url();
    let secret = env.write("gh.secret", SECRET);
    let addr = format!("127.0.0.1:{}", free_port());
    let cfg = config(&addr, &url, &secret, "").replace("[store]", "[store]\nwriters = 4");
    let d = Daemon::start(&env, &cfg, &[]);
    let barrier = Arc::new(Barrier::new(32));
    let posts: Vec<_> = (0..32)
        .map(|c| {
            let (a, b) = (addr.clone(), barrier.clone());
            std::thread::spawn(move || {
                b.wait();
                (0..10)
                    .map(|i| post_signed(&a, "gh", &format!("p-{c}-{i}"), b"{}", SECRET).status)
                    .filter(|&s| s != 202)
                    .count()
            })
        })
        .collect();
    let failed: usize = posts.into_iter().map(|p| p.join().unwrap()).sum();
    assert_eq!(failed, 0);
    // The monitor pings every 2 s; give it three rounds.
    std::thread::sleep(Duration::from_secs(6));
    let ready = request(&d.addr, "GET", "/readyz", &[], b"").unwrap();
    assert_eq!(ready.status, 200, "{}", ready.text());
    assert_eq!(d.metric("webhookd_store_up"), 1.0, "{}", d.log_text());
}

/// Item 6: a second process cannot use a spool file another one holds.
#[test]
fn two_instances_cannot_share_a_spool_file() {
    let env = Env::new("spool-lock");
    let url = pg_url();
    let secret = env.write("gh.secret", SECRET);
    let spool = env.path("spool.db");
    let a = format!("127.0.0.1:{}", free_port());
    let _first = Daemon::start(
        &env,
        &with_spool(&config(&a, &url, &secret, ""), &spool),
        &[],
    );
    let env2 = Env::new("spool-lock-2");
    let b = format!("127.0.0.1:{}", free_port());
    let mut second = Daemon::spawn(
        &env2,
        &with_spool(&config(&b, &url, &secret, ""), &spool),
        &[],
    );
    let st = second.wait_exit(Duration::from_secs(10));
    assert!(
        st.is_some_and(|s| !s.success()),
        "a second instance runs on the same spool file:\n{}",
        second.log_text()
    );
    assert_eq!(st.and_then(|s| s.code()), Some(75), "EX_TEMPFAIL");
    let log = second.log_text();
    assert!(log.contains(&spool.display().to_string()), "{log}");
    assert!(log.contains("another process"), "{log}");
}

/// Item 6: events left in the default spool are drained at start even when
/// the spool has since been turned off.
#[test]
fn leftover_spool_is_drained_when_the_spool_is_turned_off() {
    let env = Env::new("spool-leftover");
    let state = env.path("state");
    std::fs::create_dir_all(&state).unwrap();
    let real = pg_url();
    let proxy = Proxy::new(pg_host_port(&real));
    let via = real.replace(&pg_host_port(&real), &proxy.addr);
    let secret = env.write("gh.secret", SECRET);
    let addr = format!("127.0.0.1:{}", free_port());
    let vars = [("STATE_DIRECTORY", state.display().to_string())];
    let mut first = Daemon::start(
        &env,
        &config(&addr, &via, &secret, "").replace("spool = \"off\"", "spool = \"auto\""),
        &vars,
    );
    assert_eq!(first.post("gh", "before", b"{}").status, 202);
    proxy.cut();
    for i in 0..5 {
        let r = first.post("gh", &format!("left-{i}"), b"{}");
        assert_eq!(r.json()["spooled"], true, "{}", r.text());
    }
    first.signal(Signal::SIGKILL);
    first.wait_exit(Duration::from_secs(5)).unwrap();
    proxy.restore();
    let addr2 = format!("127.0.0.1:{}", free_port());
    let second = Daemon::start(&env, &config(&addr2, &via, &secret, ""), &vars);
    let deadline = Instant::now() + Duration::from_secs(20);
    while count_rows(&real, None) < 6 {
        assert!(
            Instant::now() < deadline,
            "{} of 6 events in PostgreSQL: the spool left behind was ignored\n{}",
            count_rows(&real, None),
            second.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Item 6: a spool holding events for another database is refused loudly
/// at start instead of being moved into the wrong one.
#[test]
fn spool_for_another_store_is_refused() {
    let env = Env::new("spool-other");
    let first_db = pg_url();
    let proxy = Proxy::new(pg_host_port(&first_db));
    let via = first_db.replace(&pg_host_port(&first_db), &proxy.addr);
    let secret = env.write("gh.secret", SECRET);
    let spool = env.path("spool.db");
    let addr = format!("127.0.0.1:{}", free_port());
    let mut first = Daemon::start(
        &env,
        &with_spool(&config(&addr, &via, &secret, ""), &spool),
        &[],
    );
    assert_eq!(first.post("gh", "before", b"{}").status, 202);
    proxy.cut();
    for i in 0..3 {
        let r = first.post("gh", &format!("for-first-{i}"), b"{}");
        assert_eq!(r.json()["spooled"], true, "{}", r.text());
    }
    first.signal(Signal::SIGKILL);
    first.wait_exit(Duration::from_secs(5)).unwrap();

    let other_db = pg_url();
    let addr2 = format!("127.0.0.1:{}", free_port());
    let mut second = Daemon::spawn(
        &env,
        &with_spool(&config(&addr2, &other_db, &secret, ""), &spool),
        &[],
    );
    let st = second.wait_exit(Duration::from_secs(10));
    let log = second.log_text();
    assert!(
        st.is_some_and(|s| !s.success()),
        "started on a spool that holds another database's events:\n{log}"
    );
    assert!(log.contains("spool"), "{log}");
    assert_eq!(st.and_then(|s| s.code()), Some(78), "EX_CONFIG");
    let mut c = postgres::Client::connect(&other_db, postgres::NoTls).unwrap();
    let moved: i64 = c
        .query_one(
            "SELECT count(*) FROM pg_tables WHERE tablename = 'events'",
            &[],
        )
        .unwrap()
        .get(0);
    if moved > 0 {
        assert_eq!(
            count_rows(&other_db, None),
            0,
            "moved into the wrong database"
        );
    }
}
