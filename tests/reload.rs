//! SIGHUP reloads hooks and secrets atomically; a broken config is refused
//! and the running one keeps serving.

mod common;
use common::*;
use nix::sys::signal::Signal;
use std::time::{Duration, Instant};

fn wait_reloads(d: &Daemon, result: &str, n: f64) {
    let name = format!("webhookd_config_reloads_total{{result=\"{result}\"}}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = request(&d.addr, "GET", "/metrics", &[], b"").unwrap();
        let text = r.text();
        let v = text
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0);
        if v >= n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no {result} reload #{n}:\n{}",
            d.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn rotated_secret_takes_effect_and_broken_config_is_refused() {
    let env = Env::new("reload");
    let old = env.write("old.secret", "old-secret");
    let new = env.write("new.secret", "new-secret");
    let addr = format!("127.0.0.1:{}", free_port());
    let url = env.sqlite_url();
    let d = Daemon::start(&env, &config(&addr, &url, &old, ""), &[]);
    assert_eq!(
        post_signed(&addr, "gh", "r-1", b"{}", "old-secret").status,
        202
    );
    assert_eq!(
        post_signed(&addr, "gh", "r-2", b"{}", "new-secret").status,
        401
    );

    // Rotate: only the new secret is configured now.
    std::fs::write(&d.config, config(&addr, &url, &new, "")).unwrap();
    d.signal(Signal::SIGHUP);
    wait_reloads(&d, "ok", 1.0);
    assert_eq!(
        post_signed(&addr, "gh", "r-3", b"{}", "old-secret").status,
        401
    );
    assert_eq!(
        post_signed(&addr, "gh", "r-4", b"{}", "new-secret").status,
        202
    );

    // A broken file is refused; the running config keeps serving.
    std::fs::write(&d.config, "[server\nlisten = ").unwrap();
    d.signal(Signal::SIGHUP);
    wait_reloads(&d, "refused", 1.0);
    assert_eq!(
        post_signed(&addr, "gh", "r-5", b"{}", "new-secret").status,
        202
    );

    // So is a config whose secret cannot be read.
    let missing = env.path("missing.secret");
    std::fs::write(&d.config, config(&addr, &url, &missing, "")).unwrap();
    d.signal(Signal::SIGHUP);
    wait_reloads(&d, "refused", 2.0);
    assert_eq!(
        post_signed(&addr, "gh", "r-6", b"{}", "new-secret").status,
        202
    );

    let log = d.log_text();
    assert!(log.contains("reload refused"), "{log}");
    assert!(
        log.contains("missing.secret"),
        "the log names the file: {log}"
    );
    assert!(
        !log.contains("new-secret") && !log.contains("old-secret"),
        "secret in log"
    );
    let st = request(&addr, "GET", "/status", &[], b"").unwrap().json();
    assert_eq!(st["config"]["last_reload"]["ok"], false);
}

/// A hook whose secret is missing at startup: the daemon starts, the hook
/// answers 503, /readyz names the problem, and a reload fixes it.
#[test]
fn missing_secret_at_start_is_reported_then_fixed() {
    let env = Env::new("nosecret");
    let path = env.path("later.secret");
    let addr = format!("127.0.0.1:{}", free_port());
    let d = Daemon::start(&env, &config(&addr, &env.sqlite_url(), &path, ""), &[]);
    assert_eq!(d.post("gh", "m-1", b"{}").status, 503);
    let r = request(&addr, "GET", "/readyz", &[], b"").unwrap();
    assert_eq!(r.status, 503);
    assert!(r.text().contains("later.secret"), "{}", r.text());
    std::fs::write(&path, SECRET).unwrap();
    d.signal(Signal::SIGHUP);
    wait_reloads(&d, "ok", 1.0);
    assert_eq!(d.post("gh", "m-1", b"{}").status, 202);
    assert_eq!(
        request(&addr, "GET", "/readyz", &[], b"").unwrap().status,
        200
    );
}
