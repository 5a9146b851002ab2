//! De-duplication is atomic in the database: the same delivery POSTed 50
//! times at once is stored once, answered 202 once and 200 49 times, always
//! with the same event id.

mod common;
use common::*;
use std::sync::{Arc, Barrier};

fn fifty_at_once(kind: Kind) {
    let env = Env::new("dedupe");
    let secret = env.write("gh.secret", SECRET);
    let url = store_url(kind, &env);
    let addr = format!("127.0.0.1:{}", free_port());
    let _d = Daemon::start(&env, &config(&addr, &url, &secret, ""), &[]);

    let n = 50;
    let barrier = Arc::new(Barrier::new(n));
    let threads: Vec<_> = (0..n)
        .map(|_| {
            let (b, addr) = (barrier.clone(), addr.clone());
            std::thread::spawn(move || {
                b.wait();
                post_signed(&addr, "gh", "same-delivery", br#"{"n":1}"#, SECRET)
            })
        })
        .collect();
    let resps: Vec<Resp> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let created = resps.iter().filter(|r| r.status == 202).count();
    let dups = resps.iter().filter(|r| r.status == 200).count();
    assert_eq!(
        (created, dups),
        (1, 49),
        "statuses: {:?}",
        resps.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    let ids: std::collections::HashSet<String> = resps
        .iter()
        .map(|r| r.json()["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 1, "every answer names the same event id");
    assert_eq!(count_rows(&url, Some("same-delivery")), 1);
}

#[test]
fn fifty_at_once_sqlite() {
    fifty_at_once(Kind::Sqlite);
}

#[test]
fn fifty_at_once_postgres() {
    fifty_at_once(Kind::Postgres);
}
