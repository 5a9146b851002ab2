//! Logging over the real binary: `log.format = "json"` gives one JSON object
//! per line with the request's fields (and no secret, no body), and
//! `log.target = "journal"` writes through journald's socket when there is
//! one, else `<N>`-prefixed lines on stderr. (The journal's own view of the
//! fields is checked under a real systemd in scripts/e2e-systemd, step 3b.)

mod common;
use common::*;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

fn config_with_log(env: &Env, addr: &str, log: &str) -> String {
    let secret = env.write("gh.secret", SECRET);
    config(addr, &env.sqlite_url(), &secret, "").replace(
        "[log]\nlevel = \"debug\"\ntarget = \"stderr\"\n",
        &format!("[log]\nlevel = \"info\"\n{log}\n"),
    )
}

fn wait_log(d: &Daemon, needle: &str) -> String {
    let start = Instant::now();
    loop {
        let t = d.log_text();
        if t.contains(needle) || start.elapsed() > Duration::from_secs(10) {
            return t;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn json_format_writes_one_object_per_line_with_the_request_fields() {
    let env = Env::new("log-json");
    let addr = format!("127.0.0.1:{}", free_port());
    let cfg = config_with_log(&env, &addr, "target = \"stderr\"\nformat = \"json\"");
    assert!(cfg.contains("format = \"json\""), "{cfg}");
    let d = Daemon::start(&env, &cfg, &[]);
    let body = br#"{"zen":"a body that must not be logged"}"#;
    let r = d.post("gh", "log-json-1", body);
    assert_eq!(r.status, 202);
    let id = r.json()["id"].as_str().unwrap().to_string();
    assert_eq!(
        post_signed(&addr, "gh", "log-json-2", body, "wrong").status,
        401
    );
    let text = wait_log(&d, "\"status\":401");
    let mut request = None;
    let mut refused = None;
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not one JSON object per line ({e}): {line:?}"));
        assert!(v["ts"].is_string() && v["level"].is_string() && v["msg"].is_string());
        if v["delivery"] == "log-json-1" {
            request = Some(v.clone());
        }
        if v["status"] == 401 {
            refused = Some(v);
        }
    }
    let v = request.expect("the 202 request line");
    assert_eq!(v["level"], "info");
    assert_eq!(v["hook"], "gh");
    assert_eq!(v["event_type"], "push");
    assert_eq!(v["status"], 202);
    assert_eq!(v["event_id"], id.as_str());
    assert_eq!(v["secret_index"], 0);
    assert!(v["duration"].as_f64().is_some(), "{v}");
    assert!(v["peer"].as_str().unwrap().starts_with("127.0.0.1:"));
    let v = refused.expect("the 401 line");
    assert_eq!(v["level"], "warn");
    assert_eq!(v["status"], 401);
    assert_eq!(v["hook"], "gh");
    // refused before the delivery id was read, and no secret matched
    assert!(
        v.get("delivery").is_none() && v.get("secret_index").is_none(),
        "{v}"
    );
    assert!(!text.contains(SECRET), "secret in the log");
    assert!(!text.contains("must not be logged"), "body in the log");
}

#[test]
fn journal_target_uses_the_socket_or_falls_back_to_priority_prefixes() {
    let env = Env::new("log-journal");
    let addr = format!("127.0.0.1:{}", free_port());
    let cfg = config_with_log(&env, &addr, "target = \"journal\"");
    let d = Daemon::start(&env, &cfg, &[]);
    let delivery = format!("log-journal-{}", std::process::id());
    assert_eq!(d.post("gh", &delivery, b"{}").status, 202);
    if Path::new(webhookd::systemd::journal::JOURNAL_SOCKET).exists() {
        // A journald is running here: the entry is in it, with our fields.
        let start = Instant::now();
        loop {
            let o = Command::new("journalctl")
                .args(["-o", "json", "--no-pager"])
                .arg(format!("WEBHOOKD_DELIVERY={delivery}"))
                .output()
                .expect("journalctl");
            let out = String::from_utf8_lossy(&o.stdout);
            if out.contains("\"WEBHOOKD_STATUS\":\"202\"") {
                assert!(out.contains("\"WEBHOOKD_HOOK\":\"gh\""), "{out}");
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "entry not in the journal: {out}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    } else {
        let text = wait_log(&d, &delivery);
        let line = text
            .lines()
            .find(|l| l.contains(&delivery))
            .unwrap_or_else(|| panic!("no request line:\n{text}"));
        assert!(line.starts_with("<6>hook=gh "), "{line}");
        assert!(text.lines().all(|l| l.starts_with('<')), "{text}");
    }
}
