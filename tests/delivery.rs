//! Processing stored events over real HTTP to a local sink and with real
//! child processes: forwarding, retries with backoff, Retry-After, dead
//! letters and their retry, the circuit breaker, replay, exec (stdin, env,
//! timeout killing the process group, strict serial runs), retention, and
//! graceful shutdown that finishes or releases in-flight deliveries.

mod common;
use common::*;
use nix::sys::signal::Signal;
use std::process::Command;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(20);

fn forward_config(env: &Env, addr: &str, url: &str, target: &str, extra: &str) -> String {
    let secret = env.write("gh.secret", SECRET);
    format!(
        "{}\n[hooks.action]\ntype = \"forward\"\nurl = \"{target}\"\ntimeout = \"2s\"\n{extra}\n[delivery]\npoll_interval = \"100ms\"\nlease_margin = \"1s\"\n",
        config(addr, url, &secret, "")
    )
}

fn cli(d: &Daemon, args: &[&str]) -> std::process::Output {
    Command::new(bin())
        .arg("--config")
        .arg(&d.config)
        .args(args)
        .output()
        .unwrap()
}

fn forwards(kind: Kind) {
    let env = Env::new("fwd");
    let sink = Sink::new();
    let url = store_url(kind, &env);
    let addr = format!("127.0.0.1:{}", free_port());
    let d = Daemon::start(
        &env,
        &forward_config(&env, &addr, &url, &sink.url("/in"), ""),
        &[],
    );
    let body = br#"{"action":"opened","number":7}"#;
    let id = d.post("gh", "f-1", body).json()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let got = sink.wait_for(1, WAIT);
    let r = &got[0];
    assert_eq!(r.path, "/in");
    assert_eq!(r.body, body, "forwarded byte for byte");
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.header("x-github-event"), Some("push"));
    assert_eq!(r.header("x-github-delivery"), Some("f-1"));
    assert_eq!(r.header("webhookd-delivery"), Some(id.as_str()));
    assert_eq!(r.header("webhookd-attempt"), Some("1"));
    assert_eq!(wait_state(&url, "f-1", "done", WAIT), ("done".into(), 1));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(sink.count(), 1, "delivered exactly once");

    // Replay: delivered again, from attempt 1, same Webhookd-Delivery.
    let o = cli(&d, &["events", "replay", &id]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let got = sink.wait_for(2, WAIT);
    assert_eq!(got[1].header("webhookd-delivery"), Some(id.as_str()));
    assert_eq!(got[1].header("webhookd-attempt"), Some("1"));
    wait_state(&url, "f-1", "done", WAIT);
}

#[test]
fn forwards_sqlite() {
    forwards(Kind::Sqlite);
}

#[test]
fn forwards_postgres() {
    forwards(Kind::Postgres);
}

#[test]
fn retries_with_backoff_and_respects_retry_after() {
    let env = Env::new("retry");
    let sink = Sink::new();
    // 503, then 429 asking for 1 s, then success.
    sink.set_reply(|_, n| match n {
        1 => (503, vec![], Duration::ZERO),
        2 => (
            429,
            vec![("Retry-After".into(), "1".into())],
            Duration::ZERO,
        ),
        _ => (200, vec![], Duration::ZERO),
    });
    let url = env.sqlite_url();
    let addr = format!("127.0.0.1:{}", free_port());
    let extra = "[hooks.retry]\ninitial_delay = \"100ms\"\nmax_delay = \"200ms\"\n";
    let d = Daemon::start(
        &env,
        &forward_config(&env, &addr, &url, &sink.url("/"), extra),
        &[],
    );
    d.post("gh", "r-1", b"{}");
    let got = sink.wait_for(3, WAIT);
    let attempts: Vec<_> = got
        .iter()
        .map(|r| r.header("webhookd-attempt").unwrap().to_string())
        .collect();
    assert_eq!(attempts, ["1", "2", "3"]);
    let ids: std::collections::HashSet<_> = got
        .iter()
        .map(|r| r.header("webhookd-delivery").unwrap().to_string())
        .collect();
    assert_eq!(
        ids.len(),
        1,
        "every attempt carries the same Webhookd-Delivery"
    );
    let gap = got[2].at - got[1].at;
    assert!(
        gap >= Duration::from_millis(950),
        "Retry-After: 1 was not respected ({gap:?})"
    );
    assert_eq!(wait_state(&url, "r-1", "done", WAIT), ("done".into(), 3));
}

#[test]
fn dead_letters_and_their_retry() {
    let env = Env::new("dead");
    let sink = Sink::new();
    sink.set_reply(|r, _| {
        if r.header("x-github-delivery") == Some("bad-request") {
            (400, vec![], Duration::ZERO)
        } else {
            (500, vec![], Duration::ZERO)
        }
    });
    let url = env.sqlite_url();
    let addr = format!("127.0.0.1:{}", free_port());
    let extra = "[hooks.retry]\nmax_attempts = 3\ninitial_delay = \"50ms\"\nmax_delay = \"100ms\"\n[hooks.breaker]\nfailures = 0\n";
    let d = Daemon::start(
        &env,
        &forward_config(&env, &addr, &url, &sink.url("/"), extra),
        &[],
    );

    // A 4xx other than 408/429 is a dead letter at once.
    d.post("gh", "bad-request", b"{}");
    assert_eq!(
        wait_state(&url, "bad-request", "dead", WAIT),
        ("dead".into(), 1)
    );
    // A 5xx is retried until max_attempts.
    d.post("gh", "always-500", b"{}");
    assert_eq!(
        wait_state(&url, "always-500", "dead", WAIT),
        ("dead".into(), 3)
    );

    let o = cli(&d, &["dead-letters", "list", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 2, "{v}");
    assert!(v.to_string().contains("gave up after 3 attempts"), "{v}");
    let st = request(&addr, "GET", "/status", &[], b"").unwrap().json();
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut st = st;
    while st["delivery"]["dead_letters"] != 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        st = request(&addr, "GET", "/status", &[], b"").unwrap().json();
    }
    assert_eq!(st["delivery"]["dead_letters"], 2, "{st}");

    // The target is fixed: retry one by id, then the rest with --all.
    sink.set_reply(|_, _| (200, vec![], Duration::ZERO));
    let bad_id = v
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["delivery_id"] == "bad-request")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let o = cli(&d, &["dead-letters", "retry", &bad_id]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        wait_state(&url, "bad-request", "done", WAIT),
        ("done".into(), 1)
    );
    let o = cli(&d, &["dead-letters", "retry", "--all", "--since", "1h"]);
    assert!(String::from_utf8_lossy(&o.stdout).contains("1 dead letter(s) queued"));
    wait_state(&url, "always-500", "done", WAIT);
    let o = cli(&d, &["dead-letters", "list", "--json"]);
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "[]");
}

#[test]
fn circuit_breaker_opens_probes_and_closes() {
    let env = Env::new("breaker");
    let sink = Sink::new();
    sink.set_reply(|_, _| (500, vec![], Duration::ZERO));
    let url = env.sqlite_url();
    let addr = format!("127.0.0.1:{}", free_port());
    let extra = "concurrency = 1\n[hooks.retry]\ninitial_delay = \"10ms\"\nmax_delay = \"20ms\"\n[hooks.breaker]\nfailures = 2\ncooldown = \"1500ms\"\n";
    let d = Daemon::start(
        &env,
        &forward_config(&env, &addr, &url, &sink.url("/"), extra),
        &[],
    );
    for i in 0..4 {
        d.post("gh", &format!("b-{i}"), b"{}");
    }
    sink.wait_for(2, WAIT);
    // Open: nothing reaches the target during the cool-down.
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(sink.count(), 2, "requests sent while the breaker was open");
    let st = request(&addr, "GET", "/status", &[], b"").unwrap().json();
    assert_eq!(st["delivery"]["breakers"][0]["state"], "open", "{st}");
    let m = request(&addr, "GET", "/metrics", &[], b"").unwrap().text();
    assert!(m.contains("webhookd_breaker_state{target=\"http://"), "{m}");

    // The target recovers: one probe, then the breaker closes and the rest flow.
    sink.set_reply(|_, _| (200, vec![], Duration::ZERO));
    for i in 0..4 {
        wait_state(&url, &format!("b-{i}"), "done", WAIT);
    }
    let st = request(&addr, "GET", "/status", &[], b"").unwrap().json();
    assert_eq!(st["delivery"]["breakers"][0]["state"], "closed", "{st}");
    let log = d.log_text();
    assert!(
        log.contains("circuit breaker for") && log.contains("closed"),
        "{log}"
    );
}

fn exec_config(env: &Env, addr: &str, command: &str, extra: &str) -> String {
    let secret = env.write("gh.secret", SECRET);
    format!(
        "{}\n[hooks.action]\ntype = \"exec\"\nshell = true\ncommand = [{command:?}]\nworkdir = \"{}\"\n{extra}\n[delivery]\npoll_interval = \"100ms\"\nlease_margin = \"1s\"\n",
        config(addr, &env.sqlite_url(), &secret, ""),
        env.dir.display()
    )
}

#[test]
fn exec_gets_body_on_stdin_and_environment() {
    let env = Env::new("exec");
    let addr = format!("127.0.0.1:{}", free_port());
    let cmd = "cat > body-$WEBHOOK_ID; env | grep ^WEBHOOK_ | sort > env-$WEBHOOK_ID; echo done-$WEBHOOK_DELIVERY";
    let d = Daemon::start(&env, &exec_config(&env, &addr, cmd, ""), &[]);
    let body = b"{\"exec\":true}\n";
    let id = d.post("gh", "e-1", body).json()["id"]
        .as_str()
        .unwrap()
        .to_string();
    wait_state(&env.sqlite_url(), "e-1", "done", WAIT);
    assert_eq!(
        std::fs::read(env.path(&format!("body-{id}"))).unwrap(),
        body
    );
    let vars = std::fs::read_to_string(env.path(&format!("env-{id}"))).unwrap();
    for want in [
        "WEBHOOK_HOOK=gh",
        "WEBHOOK_EVENT=push",
        "WEBHOOK_DELIVERY=e-1",
        "WEBHOOK_ATTEMPT=1",
    ] {
        assert!(vars.contains(want), "{want} missing in {vars}");
    }
    assert!(
        d.log_text().contains("stdout: done-e-1"),
        "{}",
        d.log_text()
    );
}

#[test]
fn exec_failure_retries_and_timeout_kills_the_group() {
    let env = Env::new("exec-fail");
    let addr = format!("127.0.0.1:{}", free_port());
    // Attempt 1 exits 3; attempt 2 starts a grandchild and hangs past the
    // timeout; attempt 3 succeeds.
    let cmd = "case $WEBHOOK_ATTEMPT in 1) exit 3;; 2) sleep 300 & echo $! > grandchild; sleep 300;; *) exit 0;; esac";
    let extra = "timeout = \"700ms\"\n[hooks.retry]\ninitial_delay = \"50ms\"\nmax_delay = \"50ms\"\n[hooks.breaker]\nfailures = 0\n";
    let d = Daemon::start(&env, &exec_config(&env, &addr, cmd, extra), &[]);
    d.post("gh", "x-1", b"{}");
    assert_eq!(
        wait_state(&env.sqlite_url(), "x-1", "done", WAIT),
        ("done".into(), 3)
    );
    let log = d.log_text();
    assert!(log.contains("command exited with status 3"), "{log}");
    assert!(
        log.contains("timed out after 700ms; process group killed"),
        "{log}"
    );
    let pid: i32 = std::fs::read_to_string(env.path("grandchild"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let alive = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .contains(") Z ");
    assert!(!alive, "the grandchild {pid} survived the timeout");
}

#[test]
fn exec_concurrency_one_runs_strictly_serially() {
    let env = Env::new("serial");
    let addr = format!("127.0.0.1:{}", free_port());
    let cmd = "echo start $(date +%s%N) >> runs; sleep 0.2; echo end $(date +%s%N) >> runs";
    let d = Daemon::start(&env, &exec_config(&env, &addr, cmd, "concurrency = 1"), &[]);
    for i in 0..4 {
        d.post("gh", &format!("s-{i}"), b"{}");
    }
    for i in 0..4 {
        wait_state(&env.sqlite_url(), &format!("s-{i}"), "done", WAIT);
    }
    let runs = std::fs::read_to_string(env.path("runs")).unwrap();
    let kinds: Vec<&str> = runs.lines().map(|l| l.split(' ').next().unwrap()).collect();
    assert_eq!(
        kinds,
        ["start", "end", "start", "end", "start", "end", "start", "end"],
        "{runs}"
    );
}

#[test]
fn retention_deletes_old_finished_events() {
    let env = Env::new("retention");
    let secret = env.write("gh.secret", SECRET);
    let addr = format!("127.0.0.1:{}", free_port());
    let url = env.sqlite_url();
    // 0.00002 days = 1.7 s; dead letters are kept (dead_days = 0).
    let cfg = format!(
        "{}\n[retention]\ndays = 0.00002\ndead_days = 0\ninterval = \"300ms\"\nbatch = 2\n",
        config(&addr, &url, &secret, "")
    );
    let d = Daemon::start(&env, &cfg, &[]);
    for i in 0..5 {
        d.post("gh", &format!("old-{i}"), b"{}");
    }
    let deadline = Instant::now() + WAIT;
    while count_rows(&url, None) > 0 {
        assert!(Instant::now() < deadline, "retention never deleted");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        d.log_text().contains("retention: deleted"),
        "{}",
        d.log_text()
    );
    assert!(d.metric("webhookd_retention_deleted_total") >= 5.0);
}

#[test]
fn shutdown_finishes_running_deliveries() {
    let env = Env::new("drain-exec");
    let addr = format!("127.0.0.1:{}", free_port());
    let cmd = "sleep 0.8; touch finished-$WEBHOOK_DELIVERY";
    let mut d = Daemon::start(&env, &exec_config(&env, &addr, cmd, ""), &[]);
    d.post("gh", "g-1", b"{}");
    wait_state(&env.sqlite_url(), "g-1", "delivering", WAIT);
    d.signal(Signal::SIGTERM);
    assert!(d.wait_exit(Duration::from_secs(15)).unwrap().success());
    assert!(env.path("finished-g-1").exists());
    assert_eq!(state_of(&env.sqlite_url(), "g-1").unwrap().0, "done");
}

#[test]
fn shutdown_releases_deliveries_that_outlive_the_drain() {
    let env = Env::new("release");
    let addr = format!("127.0.0.1:{}", free_port());
    let cfg = exec_config(&env, &addr, "sleep 30", "")
        .replace("drain_timeout = \"10s\"", "drain_timeout = \"1s\"");
    let mut d = Daemon::start(&env, &cfg, &[]);
    d.post("gh", "h-1", b"{}");
    wait_state(&env.sqlite_url(), "h-1", "delivering", WAIT);
    d.signal(Signal::SIGTERM);
    assert!(d.wait_exit(Duration::from_secs(15)).unwrap().success());
    // Back in the queue for the next start, with the interrupted attempt not counted.
    assert_eq!(
        state_of(&env.sqlite_url(), "h-1").unwrap(),
        ("pending".into(), 0)
    );
    assert!(
        d.log_text().contains("released 1 unfinished event"),
        "{}",
        d.log_text()
    );
}
