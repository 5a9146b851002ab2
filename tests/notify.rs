//! The sd_notify protocol against a notify socket of our own: READY=1 after
//! the store is open, STATUS= with live counters, WATCHDOG=1 pings that
//! stop while a store writer is wedged, RELOADING=1 on SIGHUP, STOPPING=1.

mod common;
use common::*;
use nix::sys::signal::Signal;
use std::time::Duration;

fn pings(lines: &[String]) -> usize {
    lines.iter().filter(|l| *l == "WATCHDOG=1").count()
}

#[test]
fn notify_protocol_and_health_gated_watchdog() {
    let env = Env::new("notify");
    let secret = env.write("gh.secret", SECRET);
    let n = Notify::new(&env);
    let wedge = env.path("wedge");
    let addr = format!("127.0.0.1:{}", free_port());
    let extra = "store_timeout = \"3s\"";
    let cfg = config(&addr, &env.sqlite_url(), &secret, extra).replace(
        "connect_timeout = \"500ms\"",
        "connect_timeout = \"500ms\"\nstall_timeout = \"1s\"",
    );
    let mut d = Daemon::spawn(
        &env,
        &cfg,
        &[
            ("NOTIFY_SOCKET", n.path.display().to_string()),
            ("WATCHDOG_USEC", "300000".into()),
            ("WEBHOOKD_TEST_WEDGE_FILE", wedge.display().to_string()),
        ],
    );

    let first = n.wait_for("READY=1", Duration::from_secs(20));
    assert!(first.iter().any(|l| l.starts_with("STATUS=")), "{first:?}");
    // Ready means the store is usable: a delivery succeeds right away.
    assert_eq!(d.post("gh", "n-1", b"{}").status, 202);

    let healthy = n.collect(Duration::from_secs(1));
    assert!(
        pings(&healthy) >= 4,
        "expected a ping every ~100 ms: {healthy:?}"
    );

    let lines = n.wait_for("STATUS=accepted 1,", Duration::from_secs(5));
    assert!(
        lines.iter().any(|l| l.contains("store sqlite ok")),
        "{lines:?}"
    );

    d.signal(Signal::SIGHUP);
    let lines = n.wait_for("READY=1", Duration::from_secs(5));
    let reloading = lines
        .iter()
        .position(|l| l == "RELOADING=1")
        .expect("RELOADING=1");
    assert!(
        lines.iter().any(|l| l.starts_with("MONOTONIC_USEC=")),
        "{lines:?}"
    );
    assert!(reloading < lines.iter().rposition(|l| l == "READY=1").unwrap());

    // Wedge the writer: the next batch never finishes, pings must stop.
    std::fs::write(&wedge, "").unwrap();
    let addr2 = addr.clone();
    let stuck = std::thread::spawn(move || post_signed(&addr2, "gh", "n-2", b"{}", SECRET).status);
    let _ = n.collect(Duration::from_millis(1500));
    let wedged = n.collect(Duration::from_secs(1));
    assert_eq!(
        pings(&wedged),
        0,
        "pinged while a writer was wedged: {wedged:?}"
    );
    assert_eq!(
        stuck.join().unwrap(),
        503,
        "the stuck request times out with 503"
    );

    std::fs::remove_file(&wedge).unwrap();
    let _ = n.collect(Duration::from_millis(300));
    let resumed = n.collect(Duration::from_secs(1));
    assert!(pings(&resumed) >= 3, "pings did not resume: {resumed:?}");
    assert!(
        d.log_text().contains("withholding pings"),
        "{}",
        d.log_text()
    );

    d.signal(Signal::SIGTERM);
    n.wait_for("STOPPING=1", Duration::from_secs(5));
    let status = d
        .wait_exit(Duration::from_secs(15))
        .expect("exit after SIGTERM");
    assert!(status.success(), "{status:?}");
}

/// READY=1 does not wait for PostgreSQL (issue 10, item 2): with the
/// database unreachable at start READY=1 comes at once and STATUS= says the
/// store is unavailable; once it answers, STATUS= says so.
#[test]
fn ready_does_not_wait_for_the_store() {
    let env = Env::new("notify-pg");
    let secret = env.write("gh.secret", SECRET);
    let (_d, n, proxy, _) = spawn_with_postgres_cut(&env, &secret, "");
    let waiting = n.wait_for("READY=1", Duration::from_secs(5));
    let after = n.collect(Duration::from_millis(300));
    assert!(
        waiting
            .iter()
            .chain(&after)
            .any(|l| l.starts_with("STATUS=") && l.contains("store postgres unavailable")),
        "{waiting:?} {after:?}"
    );
    proxy.restore();
    n.wait_for(
        "STATUS=accepted 0, duplicates 0, rejected 0; store postgres ok",
        Duration::from_secs(10),
    );
}
