//! The monitoring that ships (packaging/monitoring/): the alert rules pass
//! `promtool check rules` and their unit tests (`promtool test rules`), the
//! live /metrics of the real daemon passes `promtool check metrics`, and
//! every metric and label the rules and the Grafana dashboard use exists in
//! that output. promtool is Debian's (package `prometheus`); scripts/test
//! provides it and sets WEBHOOKD_PROMTOOL.

mod common;
use common::*;
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn promtool() -> PathBuf {
    if let Some(p) = std::env::var_os("WEBHOOKD_PROMTOOL") {
        return PathBuf::from(p);
    }
    if Command::new("promtool").arg("--version").output().is_ok() {
        return PathBuf::from("promtool");
    }
    panic!("promtool not found: run the tests with scripts/test (it fetches Debian's promtool) or set WEBHOOKD_PROMTOOL");
}

fn monitoring(f: &str) -> PathBuf {
    Path::new(ROOT).join("packaging/monitoring").join(f)
}

#[test]
fn alert_rules_pass_promtool_and_their_unit_tests() {
    for args in [
        vec!["check", "rules", "webhookd.rules.yml"],
        vec!["test", "rules", "webhookd.rules.test.yml"],
    ] {
        let o = Command::new(promtool())
            .args(&args)
            .current_dir(monitoring(""))
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "promtool {args:?}:\n{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
    }
}

/// sample name -> label names seen on it
fn samples(text: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let name_end = line.find(['{', ' ']).unwrap_or(line.len());
        let labels = out.entry(line[..name_end].to_string()).or_default();
        if line[name_end..].starts_with('{') {
            let body = &line[name_end + 1..line.find('}').unwrap_or(line.len())];
            for pair in body.split("\",") {
                if let Some((k, _)) = pair.split_once('=') {
                    labels.insert(k.trim().to_string());
                }
            }
        }
    }
    out
}

/// `webhookd_x{a="..", b=~".."}` uses in a rules or dashboard file: metric -> label names.
fn uses(text: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let b = text.as_bytes();
    let mut i = 0;
    while let Some(at) = text[i..].find("webhookd_") {
        let start = i + at;
        i = start + 1;
        if start > 0 && (b[start - 1].is_ascii_alphanumeric() || b[start - 1] == b'_') {
            continue;
        }
        let mut end = start;
        while end < b.len() && (b[end].is_ascii_alphanumeric() || b[end] == b'_') {
            end += 1;
        }
        let name = text[start..end].to_string();
        let labels = out.entry(name).or_default();
        if end < b.len() && b[end] == b'{' {
            let close = text[end..].find('}').map(|c| end + c).unwrap_or(b.len());
            for m in text[end + 1..close].split(',') {
                let k: String = m
                    .trim()
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if !k.is_empty() {
                    labels.insert(k);
                }
            }
        }
        i = end;
    }
    out
}

fn wait_for(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

#[test]
fn live_metrics_pass_promtool_and_have_every_metric_rules_and_dashboard_use() {
    let env = Env::new("monitoring");
    let secret = env.write("secret", SECRET);
    let addr = format!("127.0.0.1:{}", free_port());
    // A target that refuses connections: one attempt, then a dead letter, and
    // a breaker that opens after one failure; so every labelled family exists.
    let dead_target = format!("http://127.0.0.1:{}/nowhere", free_port());
    let hook_extra = format!(
        "[hooks.action]\ntype = \"forward\"\nurl = \"{dead_target}\"\ntimeout = \"1s\"\n\
         [hooks.retry]\nmax_attempts = 1\n[hooks.breaker]\nfailures = 1\ncooldown = \"1h\"\n"
    );
    let cfg = config(&addr, &env.sqlite_url(), &secret, "") + &hook_extra;
    let mut d = Daemon::start(&env, &cfg, &[]);
    assert_eq!(d.post("gh", "mon-1", br#"{"zen":"x"}"#).status, 202);
    assert_eq!(
        post_signed(&addr, "gh", "mon-2", b"{}", "wrong secret").status,
        401
    );
    assert_eq!(
        request(&addr, "POST", "/nowhere", &[], b"").unwrap().status,
        404
    );
    // a refused reload
    std::fs::write(&d.config, format!("{cfg}\n[not_a_section]\n")).unwrap();
    d.signal(nix::sys::signal::Signal::SIGHUP);
    let scrape = || request(&addr, "GET", "/metrics", &[], b"").unwrap().text();
    assert!(
        wait_for(Duration::from_secs(20), || {
            let m = scrape();
            m.contains("result=\"dead\"")
                && m.contains("result=\"refused\"")
                && m.contains("webhookd_breaker_state{")
        }),
        "dead letter, refused reload and breaker never showed in /metrics:\n{}\nlog:\n{}",
        scrape(),
        d.log_text()
    );
    let text = scrape();

    // Prometheus itself asks for OpenMetrics; without that Accept header the
    // classic text format is served, which is what promtool checks.
    let mut child = Command::new(promtool())
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(
        o.status.success(),
        "promtool check metrics:\n{}{}\n--- /metrics:\n{text}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    let om = request(
        &addr,
        "GET",
        "/metrics",
        &[(
            "Accept".to_string(),
            "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5".to_string(),
        )],
        b"",
    )
    .unwrap();
    assert!(
        om.header("content-type")
            .unwrap_or("")
            .starts_with("application/openmetrics-text"),
        "Prometheus' Accept header gets OpenMetrics"
    );
    assert!(om.text().trim_end().ends_with("# EOF"));

    let have = samples(&text);
    let mut problems = Vec::new();
    for file in ["webhookd.rules.yml", "grafana-dashboard.json"] {
        let used = uses(&std::fs::read_to_string(monitoring(file)).unwrap());
        assert!(used.len() > 8, "{file}: only {} metrics found", used.len());
        for (metric, labels) in used {
            match have.get(&metric) {
                None => problems.push(format!("{file}: {metric} is not in /metrics")),
                Some(seen) => {
                    for l in labels.difference(seen) {
                        if !["instance", "job", "le"].contains(&l.as_str()) {
                            problems.push(format!("{file}: {metric} has no label {l}"));
                        }
                    }
                }
            }
        }
    }
    assert!(
        problems.is_empty(),
        "{}\n--- /metrics:\n{text}",
        problems.join("\n")
    );
    d.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(d.wait_exit(Duration::from_secs(15)).is_some());
}
