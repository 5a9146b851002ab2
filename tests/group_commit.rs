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
