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

/// Under steady ingest the WAL starts over instead of growing by every
/// byte stored: the checkpoint's last pass runs in the writers' turn, so a
/// write transaction finds it all copied. Before, commits always came while
/// the checkpoint beside them was still copying, and the WAL of this load
/// grew past the 50 MB of its bodies (every write on new pages of the file).
#[test]
fn the_wal_starts_over_under_steady_ingest() {
    let env = Env::new("group-wal-restart");
    let secret = env.write("gh.secret", SECRET);
    let url = env.sqlite_url();
    let addr = format!("127.0.0.1:{}", free_port());
    let _d = Daemon::start(&env, &config(&addr, &url, &secret, ""), &[]);
    let wal = env.path("events.db-wal");
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = {
        let (wal, done) = (wal.clone(), done.clone());
        std::thread::spawn(move || {
            let mut largest = 0;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                largest = largest.max(std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0));
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            largest
        })
    };
    let (clients, each) = (16, 375);
    let body = Arc::new(format!(r#"{{"pad":"{}"}}"#, "x".repeat(8 * 1024)));
    let threads: Vec<_> = (0..clients)
        .map(|c| {
            let (addr, body) = (addr.clone(), body.clone());
            std::thread::spawn(move || {
                (0..each)
                    .filter(|i| {
                        post_signed(&addr, "gh", &format!("wr-{c}-{i}"), body.as_bytes(), SECRET)
                            .status
                            != 202
                    })
                    .count()
            })
        })
        .collect();
    let refused: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let largest = watcher.join().unwrap();
    assert_eq!(refused, 0, "every event is stored");
    assert_eq!(count_rows(&url, None), (clients * each) as i64);
    let stored = (clients * each * body.len()) as u64;
    eprintln!("WAL at most {largest} bytes for {stored} bytes of bodies");
    assert!(
        largest < stored / 2,
        "the WAL grew to {largest} bytes for {stored} bytes of bodies: it never started over"
    );
}

/// Durability, watched from outside: under `strace`, the 202 for an event
/// is written only after an `fdatasync` (or `fsync`) of the WAL file that
/// completed after the last write into the WAL. The embedded store's
/// commits skip SQLite's own sync (synchronous = NORMAL) and the batch is
/// synced after its turn: leaving that sync out makes this test fail.
#[test]
fn a_202_is_written_only_after_the_wal_is_synced() {
    use std::collections::{HashMap, HashSet};
    let env = Env::new("group-durable");
    let secret = env.write("gh.secret", SECRET);
    let url = env.sqlite_url();
    let addr = format!("127.0.0.1:{}", free_port());
    let cfg = env.write("webhookd.toml", &config(&addr, &url, &secret, ""));
    let trace = env.path("trace.txt");
    let child = std::process::Command::new("strace")
        .args(["-f", "-qq", "-s", "24", "-o"])
        .arg(&trace)
        .args([
            "-e",
            "trace=openat,close,write,pwrite64,writev,sendto,sendmsg,fsync,fdatasync",
            bin(),
            "--config",
        ])
        .arg(&cfg)
        .arg("serve")
        .env_remove("NOTIFY_SOCKET")
        .env_remove("LISTEN_FDS")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(env.path("daemon.log")).unwrap())
        .spawn()
        .expect("strace (scripts/test installs it)");
    let d = Daemon {
        child,
        addr: addr.clone(),
        log: env.path("daemon.log"),
        config: cfg,
    };
    d.wait_healthy(std::time::Duration::from_secs(30));
    let r = post_signed(&addr, "gh", "durable-1", br#"{"n":1}"#, SECRET);
    assert_eq!(r.status, 202);
    std::thread::sleep(std::time::Duration::from_millis(300));
    let text = std::fs::read_to_string(&trace).unwrap();
    let fd_of =
        |args: &str| -> Option<i64> { args.split([',', ' ', '<', ')']).next()?.parse().ok() };
    let mut wal: HashSet<i64> = HashSet::new();
    // Per thread: the open path or synced fd of a call still unfinished.
    let mut pending_open: HashMap<String, bool> = HashMap::new();
    let mut pending_sync: HashMap<String, i64> = HashMap::new();
    let (mut last_wal_write, mut syncs, mut answered) = (None, Vec::new(), None);
    for (i, line) in text.lines().enumerate() {
        let Some((pid, call)) = line.split_once(' ') else {
            continue;
        };
        let call = call.trim_start();
        let ret = call
            .rsplit_once(" = ")
            .and_then(|(_, r)| r.split(' ').next()?.parse::<i64>().ok());
        if let Some(rest) = call.strip_prefix("openat(") {
            let is_wal = rest.contains("-wal\"");
            match ret {
                Some(fd) if fd >= 0 && is_wal => {
                    wal.insert(fd);
                }
                None if call.ends_with("<unfinished ...>") => {
                    pending_open.insert(pid.to_string(), is_wal);
                }
                _ => {}
            }
        } else if call.starts_with("<... openat resumed>") {
            if let (Some(true), Some(fd)) = (pending_open.remove(pid), ret) {
                if fd >= 0 {
                    wal.insert(fd);
                }
            }
        } else if let Some(rest) = call.strip_prefix("close(") {
            if let Some(fd) = fd_of(rest) {
                wal.remove(&fd);
            }
        } else if let Some(rest) = call
            .strip_prefix("pwrite64(")
            .or_else(|| call.strip_prefix("write("))
        {
            if fd_of(rest).is_some_and(|fd| wal.contains(&fd)) {
                last_wal_write = Some(i);
            }
            if rest.contains("HTTP/1.1 202") && answered.is_none() {
                answered = Some(i);
            }
        } else if let Some(rest) = call
            .strip_prefix("fdatasync(")
            .or_else(|| call.strip_prefix("fsync("))
        {
            if let Some(fd) = fd_of(rest).filter(|fd| wal.contains(fd)) {
                if call.ends_with("<unfinished ...>") {
                    pending_sync.insert(pid.to_string(), fd);
                } else if ret == Some(0) {
                    syncs.push(i);
                }
            }
        } else if call.starts_with("<... fdatasync resumed>")
            || call.starts_with("<... fsync resumed>")
        {
            if pending_sync.remove(pid).is_some() && ret == Some(0) {
                syncs.push(i);
            }
        } else if (call.starts_with("writev(")
            || call.starts_with("sendto(")
            || call.starts_with("sendmsg("))
            && call.contains("HTTP/1.1 202")
            && answered.is_none()
        {
            answered = Some(i);
        }
    }
    let answered = answered.unwrap_or_else(|| panic!("no 202 in the trace:\n{text}"));
    let written = last_wal_write
        .filter(|w| *w < answered)
        .unwrap_or_else(|| panic!("no write into the WAL before the 202"));
    assert!(
        syncs.iter().any(|s| *s > written && *s < answered),
        "the 202 (trace line {answered}) was written with no sync of the WAL after its last write (line {written}); syncs at {syncs:?}"
    );
}
