//! Processing stored events when the other side misbehaves, over real
//! sockets and real child processes: a target's absurd `Retry-After` is
//! capped at the time left before `max_age` and never costs the hook its
//! delivery slot; an `exec` command is
//! done when it exits (a background job holding its pipes does not make it
//! time out), in an explicit environment, not the daemon's; and a target
//! that answers with an endless body does not hold the attempt.

mod common;
use common::*;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(20);

fn forward_config(env: &Env, addr: &str, target: &str, extra: &str) -> String {
    let secret = env.write("gh.secret", SECRET);
    format!(
        "{}\n[hooks.action]\ntype = \"forward\"\nurl = \"{target}\"\ntimeout = \"2s\"\n{extra}\n[delivery]\npoll_interval = \"100ms\"\nlease_margin = \"1s\"\n",
        config(addr, &env.sqlite_url(), &secret, "")
    )
}

fn exec_config(env: &Env, addr: &str, command: &str, extra: &str) -> String {
    let secret = env.write("gh.secret", SECRET);
    format!(
        "{}\n[hooks.action]\ntype = \"exec\"\nshell = true\ncommand = [{command:?}]\nworkdir = \"{}\"\n{extra}\n[delivery]\npoll_interval = \"100ms\"\nlease_margin = \"1s\"\n",
        config(addr, &env.sqlite_url(), &secret, ""),
        env.dir.display()
    )
}

/// Item 11: `Retry-After: 18446744073709551615` overflowed the retry time
/// and panicked the delivery task, leaking its slot: with concurrency 1
/// the hook never delivered again.
#[test]
fn huge_retry_after_is_capped_and_keeps_the_slot() {
    let env = Env::new("retryafter");
    let url = env.sqlite_url();
    let sink = Sink::new();
    sink.set_reply(|r, _| {
        let first = r.header("webhookd-attempt") == Some("1")
            && r.header("x-github-delivery") == Some("ra-1");
        if first {
            (
                503,
                vec![("Retry-After".into(), "18446744073709551615".into())],
                Duration::ZERO,
            )
        } else {
            (200, vec![], Duration::ZERO)
        }
    });
    let addr = format!("127.0.0.1:{}", free_port());
    let extra = "concurrency = 1\n[hooks.retry]\ninitial_delay = \"100ms\"\nmax_delay = \"1s\"\nmax_age = \"3s\"\n[hooks.breaker]\nfailures = 0\n";
    let d = Daemon::start(
        &env,
        &forward_config(&env, &addr, &sink.url("/in"), extra),
        &[],
    );
    assert_eq!(d.post("gh", "ra-1", b"{\"n\":1}").status, 202);
    sink.wait_for(1, WAIT);
    assert_eq!(d.post("gh", "ra-2", b"{\"n\":2}").status, 202);
    let t = Instant::now();
    assert_eq!(
        wait_state(&url, "ra-2", "done", WAIT),
        ("done".into(), 1),
        "{}",
        d.log_text()
    );
    // Retry-After is capped at the time left before max_age (3 s): one
    // last attempt then, which succeeds.
    assert_eq!(wait_state(&url, "ra-1", "done", WAIT), ("done".into(), 2));
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    assert!(!d.log_text().contains("panicked"), "{}", d.log_text());
    assert_eq!(sink.count(), 3);
}

/// Item 12: `job & exit 0` leaves a child holding stdout; the attempt is
/// done when the shell exits, not when the pipes close.
#[test]
fn exec_is_done_when_the_command_exits() {
    let env = Env::new("exec-bg");
    let addr = format!("127.0.0.1:{}", free_port());
    let cmd = "echo run >> runs; sleep 4 & echo started; exit 0";
    let d = Daemon::start(
        &env,
        &exec_config(&env, &addr, cmd, "timeout = \"2s\""),
        &[],
    );
    let t = Instant::now();
    d.post("gh", "bg-1", b"{}");
    assert_eq!(
        wait_state(&env.sqlite_url(), "bg-1", "done", WAIT),
        ("done".into(), 1),
        "{}",
        d.log_text()
    );
    assert!(
        t.elapsed() < Duration::from_millis(1800),
        "{:?}",
        t.elapsed()
    );
    std::thread::sleep(Duration::from_millis(500));
    let runs = std::fs::read_to_string(env.path("runs")).unwrap();
    assert_eq!(runs.lines().count(), 1, "ran once: {runs}");
    assert!(d.log_text().contains("stdout: started"), "{}", d.log_text());
}

/// Item 12: the command does not inherit the daemon's environment (other
/// hooks' `env:` secrets, CREDENTIALS_DIRECTORY).
#[test]
fn exec_does_not_inherit_the_daemon_environment() {
    let env = Env::new("exec-env");
    let addr = format!("127.0.0.1:{}", free_port());
    let cmd = "env > env-$WEBHOOK_DELIVERY";
    let d = Daemon::start(
        &env,
        &exec_config(&env, &addr, cmd, ""),
        &[
            ("OTHER_HOOK_SECRET", "hunter2-other-hook".into()),
            ("CREDENTIALS_DIRECTORY", env.dir.display().to_string()),
        ],
    );
    d.post("gh", "env-1", b"{}");
    wait_state(&env.sqlite_url(), "env-1", "done", WAIT);
    let vars = std::fs::read_to_string(env.path("env-env-1")).unwrap();
    assert!(!vars.contains("hunter2"), "{vars}");
    assert!(!vars.contains("CREDENTIALS_DIRECTORY"), "{vars}");
    assert!(vars.contains("WEBHOOK_HOOK=gh"), "{vars}");
    assert!(vars.lines().any(|l| l.starts_with("PATH=")), "{vars}");
}

/// Item 12: what the command gets besides WEBHOOK_* is what the action
/// lists: `env` values and `pass_env` names from the daemon's environment.
#[test]
fn exec_environment_is_explicit() {
    let env = Env::new("exec-env2");
    let addr = format!("127.0.0.1:{}", free_port());
    let cmd = "env > env-$WEBHOOK_DELIVERY";
    let extra = "env = { GREETING = \"hello\" }\npass_env = [\"KEEP_ME\", \"NOT_SET_ANYWHERE\"]";
    let d = Daemon::start(
        &env,
        &exec_config(&env, &addr, cmd, extra),
        &[("KEEP_ME", "kept".into()), ("DROP_ME", "dropped".into())],
    );
    d.post("gh", "env-2", b"{}");
    wait_state(&env.sqlite_url(), "env-2", "done", WAIT);
    let vars = std::fs::read_to_string(env.path("env-env-2")).unwrap();
    assert!(vars.contains("GREETING=hello"), "{vars}");
    assert!(vars.contains("KEEP_ME=kept"), "{vars}");
    assert!(!vars.contains("DROP_ME"), "{vars}");
    assert!(!vars.contains("NOT_SET_ANYWHERE"), "{vars}");
}

/// A target that answers 200 and then streams a body for ever.
fn endless_target() -> (String, Arc<AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let count = Arc::new(AtomicUsize::new(0));
    let c = count.clone();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(s) = s else { continue };
            let c = c.clone();
            std::thread::spawn(move || {
                let mut r = BufReader::new(s.try_clone().unwrap());
                let mut len = 0usize;
                loop {
                    let mut line = String::new();
                    if r.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap_or(0);
                    }
                    if line == "\r\n" {
                        break;
                    }
                }
                let mut body = vec![0u8; len];
                let _ = r.read_exact(&mut body);
                c.fetch_add(1, Ordering::SeqCst);
                let mut w = s;
                let _ = w.write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
                let chunk = format!("4000\r\n{}\r\n", "x".repeat(0x4000));
                let start = Instant::now();
                while start.elapsed() < Duration::from_secs(30) {
                    if w.write_all(chunk.as_bytes()).is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, count)
}

/// Item 13: only a bounded part of the target's answer is read.
#[test]
fn endless_forward_response_does_not_hold_the_attempt() {
    let env = Env::new("endless");
    let (target, count) = endless_target();
    let addr = format!("127.0.0.1:{}", free_port());
    let d = Daemon::start(
        &env,
        &forward_config(&env, &addr, &format!("http://{target}/in"), ""),
        &[],
    );
    let t = Instant::now();
    d.post("gh", "end-1", b"{}");
    assert_eq!(
        wait_state(&env.sqlite_url(), "end-1", "done", WAIT),
        ("done".into(), 1),
        "{}",
        d.log_text()
    );
    assert!(
        t.elapsed() < Duration::from_millis(1900),
        "{:?}",
        t.elapsed()
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(count.load(Ordering::SeqCst), 1, "delivered once");
}
