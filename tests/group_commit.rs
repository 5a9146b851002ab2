//! Group commit: many concurrent deliveries are stored in fewer transactions
//! than requests, and every one of them is stored.

mod common;
use common::*;
use std::sync::{Arc, Barrier};

fn batches(kind: Kind) {
    let env = Env::new("group");
    let secret = env.write("gh.secret", SECRET);
    let url = store_url(kind, &env);
    let addr = format!("127.0.0.1:{}", free_port());
    let d = Daemon::start(&env, &config(&addr, &url, &secret, ""), &[]);
    let before = d.metric("webhookd_store_commits_total");

    let (clients, each) = (64, 8);
    let barrier = Arc::new(Barrier::new(clients));
    let threads: Vec<_> = (0..clients)
        .map(|c| {
            let (b, addr) = (barrier.clone(), addr.clone());
            std::thread::spawn(move || {
                b.wait();
                (0..each)
                    .map(|i| {
                        let body = format!(r#"{{"client":{c},"i":{i}}}"#);
                        post_signed(&addr, "gh", &format!("gc-{c}-{i}"), body.as_bytes(), SECRET)
                            .status
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let statuses: Vec<u16> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    let total = clients * each;
    assert!(statuses.iter().all(|&s| s == 202), "{statuses:?}");
    assert_eq!(count_rows(&url, None), total as i64);
    let commits = d.metric("webhookd_store_commits_total") - before;
    eprintln!("{kind:?}: {total} deliveries in {commits} transactions");
    assert!(commits >= 1.0);
    assert!(
        commits < total as f64,
        "{total} deliveries took {commits} transactions: no batching"
    );
}

#[test]
fn batches_sqlite() {
    batches(Kind::Sqlite);
}

#[test]
fn batches_postgres() {
    batches(Kind::Postgres);
}

/// The embedded store's WAL is checkpointed while the daemon runs, by a
/// thread of its own (the writers' automatic checkpoints are off): what the
/// daemon stores keeps reaching the database file.
#[test]
fn the_wal_is_checkpointed_while_the_daemon_runs() {
    let env = Env::new("group-checkpoint");
    let secret = env.write("gh.secret", SECRET);
    let url = env.sqlite_url();
    let addr = format!("127.0.0.1:{}", free_port());
    let _d = Daemon::start(&env, &config(&addr, &url, &secret, ""), &[]);
    let db = env.path("events.db");
    let size = || std::fs::metadata(&db).map(|m| m.len()).unwrap_or(0);
    let before = size();
    // 4 MB of bodies per round, about SQLite's own checkpoint limit (1,000
    // pages); the database file only grows by checkpoints.
    let body = format!(r#"{{"pad":"{}"}}"#, "x".repeat(16 * 1024));
    for round in 1..=3u64 {
        for i in 0..256 {
            let r = post_signed(
                &addr,
                "gh",
                &format!("ck-{round}-{i}"),
                body.as_bytes(),
                SECRET,
            );
            assert_eq!(r.status, 202);
        }
        wait_until(
            std::time::Duration::from_secs(10),
            &format!("round {round}'s bodies reach the database file"),
            || size() > before + round * 4 * 1024 * 1024,
        );
    }
}
