//! No secret ever reaches the log, /status, /metrics or a response: one
//! distinctive secret per scheme (from a file, the environment and a systemd
//! credential), good and bad requests for every hook, a reload with a broken
//! config (the broken line holds a secret) and one with a missing secret file;
//! then every output is searched for every secret.

mod common;
use common::*;
use nix::sys::signal::Signal;
use std::process::Command;
use std::time::{Duration, Instant};

/// (hook id, scheme, secret, how it is referenced, extra hook keys)
const HOOKS: &[(&str, &str, &str, &str, &str)] = &[
    ("gh", "github", "gh-SECRET-7f3a9c1e5b", "file", ""),
    ("gh2", "github", "gh-OLD-SECRET-2d8e4a6c", "credential", ""),
    (
        "sw",
        "standard",
        "whsec_U0VDUkVULXN0YW5kYXJkLTlhN2IzYw==",
        "file",
        "",
    ),
    ("st", "stripe", "whsec_STRIPE-SECRET-4c1d8e", "env", ""),
    (
        "sl",
        "slack",
        "SLACK-SECRET-8b2f6a0d",
        "file",
        "delivery_field = \"event_id\"",
    ),
    ("gl", "gitlab", "GITLAB-TOKEN-3e9c7b1f", "file", ""),
    ("sh", "shopify", "SHOPIFY-SECRET-6a4d2e8c", "file", ""),
    (
        "hm",
        "hmac",
        "HMAC-SECRET-1f5b9d3a",
        "file",
        "header = \"X-Signature\"\nprefix = \"sha256=\"\ntimestamp_header = \"X-Timestamp\"\ndelivery_header = \"X-Request-Id\"",
    ),
];

/// What each secret may also look like in an output: itself, and the
/// base64 payload of a `whsec_` secret.
fn needles() -> Vec<String> {
    let mut v = Vec::new();
    for (_, _, s, _, _) in HOOKS {
        v.push(s.to_string());
        if let Some(b) = s.strip_prefix("whsec_") {
            v.push(b.trim_end_matches('=').to_string());
        }
    }
    // The forward action's re-signing key: whsec_ + base64 of this.
    v.push("forward-SIGN-SECRET-0c7e5a".into());
    v.push("Zm9yd2FyZC1TSUdOLVNFQ1JFVC0wYzdlNWE".into());
    v
}

fn config_text(env: &Env, addr: &str, url: &str) -> String {
    let mut c = format!(
        r#"
[server]
listen = "{addr}"
[store]
url = "{url}"
[log]
level = "trace"
target = "stderr"
"#
    );
    for (id, scheme, secret, how, extra) in HOOKS {
        let reference = match *how {
            "file" => format!(
                "file:{}",
                env.write(&format!("{id}.secret"), secret).display()
            ),
            "env" => format!("env:WEBHOOKD_TEST_{}", id.to_uppercase()),
            _ => format!("credential:{id}"),
        };
        if *how == "credential" {
            std::fs::create_dir_all(env.path("creds")).unwrap();
            std::fs::write(env.path("creds").join(id), secret).unwrap();
        }
        c.push_str(&format!(
            "\n[[hooks]]\nid = \"{id}\"\nscheme = \"{scheme}\"\nsecrets = [\"{reference}\"]\n{extra}\n"
        ));
    }
    // A forward action that re-signs (a secret of its own) to a closed port.
    // A Standard Webhooks secret, as the target's verifier decodes it.
    let sign = env.write(
        "forward.secret",
        "whsec_Zm9yd2FyZC1TSUdOLVNFQ1JFVC0wYzdlNWE=",
    );
    c.push_str(&format!(
        "[hooks.action]\ntype = \"forward\"\nurl = \"http://127.0.0.1:9/x\"\nsign_secret = \"file:{}\"\n[hooks.retry]\nmax_attempts = 2\ninitial_delay = \"100ms\"\n",
        sign.display()
    ));
    c
}

fn sign(
    config: &std::path::Path,
    env: &Env,
    hook: &str,
    delivery: &str,
    body: &[u8],
) -> Vec<(String, String)> {
    cli_sign(
        config,
        hook,
        "push",
        delivery,
        body,
        &[
            ("WEBHOOKD_TEST_ST", "whsec_STRIPE-SECRET-4c1d8e".to_string()),
            (
                "CREDENTIALS_DIRECTORY",
                env.path("creds").display().to_string(),
            ),
        ],
    )
}

fn record(outputs: &mut Vec<(String, String)>, what: String, r: &Resp) {
    let heads: String = r
        .headers
        .iter()
        .map(|(k, v)| format!("{k}: {v}\n"))
        .collect();
    outputs.push((what, format!("{heads}{}", r.text())));
}

fn wait_reload(d: &Daemon, result: &str, n: f64) {
    let name = format!("webhookd_config_reloads_total{{result=\"{result}\"}}");
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(10) {
        let r = request(&d.addr, "GET", "/metrics", &[], b"").unwrap();
        let text = r.text();
        if text.lines().any(|l| {
            l.starts_with(&name)
                && l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) >= Some(n)
        }) {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("no {result} reload #{n}:\n{}", d.log_text());
}

#[test]
fn no_secret_reaches_log_status_metrics_or_responses() {
    let env = Env::new("nosecrets");
    let url = env.sqlite_url();
    let addr = format!("127.0.0.1:{}", free_port());
    let cfg = config_text(&env, &addr, &url);
    let vars = [
        ("WEBHOOKD_TEST_ST", "whsec_STRIPE-SECRET-4c1d8e".to_string()),
        (
            "CREDENTIALS_DIRECTORY",
            env.path("creds").display().to_string(),
        ),
    ];
    let d = Daemon::start(&env, &cfg, &vars);
    // `webhookd check-config` output counts too.
    let out = Command::new(bin())
        .args(["--config", d.config.to_str().unwrap(), "check-config"])
        .env("WEBHOOKD_TEST_ST", "whsec_STRIPE-SECRET-4c1d8e")
        .env("CREDENTIALS_DIRECTORY", env.path("creds"))
        .output()
        .unwrap();
    let mut outputs: Vec<(String, String)> = vec![(
        "check-config".into(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )];

    let body = br#"{"id":"evt_ns","type":"thing.done","event_id":"EvNS","event":{"type":"x"}}"#;
    for (id, _, _, _, _) in HOOKS {
        let h = sign(&d.config, &env, id, &format!("{id}-ns-1"), body);
        let r = request(&addr, "POST", &format!("/hooks/{id}"), &h, body).unwrap();
        assert_eq!(r.status, 202, "{id}: {}", r.text());
        record(&mut outputs, format!("{id} good"), &r);
        let r = request(&addr, "POST", &format!("/hooks/{id}"), &h, body).unwrap();
        record(&mut outputs, format!("{id} duplicate"), &r);
        // tampered body, then every signature header replaced by garbage
        let mut bad = body.to_vec();
        bad[5] ^= 1;
        let r = request(&addr, "POST", &format!("/hooks/{id}"), &h, &bad).unwrap();
        record(&mut outputs, format!("{id} tampered"), &r);
        let garbage: Vec<(String, String)> = h
            .iter()
            .map(|(k, v)| {
                let sig = k.to_ascii_lowercase().contains("sign")
                    || k.to_ascii_lowercase().contains("hmac")
                    || k.eq_ignore_ascii_case("x-gitlab-token");
                (
                    k.clone(),
                    if sig {
                        "v1,not-a-signature==".into()
                    } else {
                        v.clone()
                    },
                )
            })
            .collect();
        let r = request(&addr, "POST", &format!("/hooks/{id}"), &garbage, body).unwrap();
        assert!(r.status >= 400, "{id}: {}", r.text());
        record(&mut outputs, format!("{id} garbage signature"), &r);
        // the right secret sent as the signature itself
        let leaked: Vec<(String, String)> = h
            .iter()
            .map(|(k, v)| {
                let sig = k.to_ascii_lowercase().contains("sign")
                    || k.to_ascii_lowercase().contains("hmac");
                let secret = HOOKS.iter().find(|x| x.0 == *id).unwrap().2;
                (k.clone(), if sig { secret.to_string() } else { v.clone() })
            })
            .collect();
        let r = request(&addr, "POST", &format!("/hooks/{id}"), &leaked, body).unwrap();
        record(&mut outputs, format!("{id} secret as signature"), &r);
    }
    // The forward action fails (closed port) and is retried, then dead.
    std::thread::sleep(Duration::from_millis(800));

    // Reload 1: a broken config whose broken line holds a secret (pasted by
    // mistake into the file, with a syntax error).
    let broken = format!(
        "{cfg}\n[[hooks]]\nid = \"pasted\"\nscheme = \"github\"\nsecrets = [\"gh-SECRET-7f3a9c1e5b\"]\n"
    );
    std::fs::write(&d.config, &broken).unwrap();
    d.signal(Signal::SIGHUP);
    wait_reload(&d, "refused", 1.0);
    let syntax = format!("{cfg}\nbogus = \"GITLAB-TOKEN-3e9c7b1f\n");
    std::fs::write(&d.config, &syntax).unwrap();
    d.signal(Signal::SIGHUP);
    wait_reload(&d, "refused", 2.0);
    // Reload 2: a secret file that is gone.
    std::fs::write(&d.config, &cfg).unwrap();
    std::fs::remove_file(env.path("gh.secret")).unwrap();
    d.signal(Signal::SIGHUP);
    wait_reload(&d, "refused", 3.0);
    // check-config on the broken files as well
    for text in [&broken, &syntax] {
        let p = env.write("broken.toml", text);
        let out = Command::new(bin())
            .args(["--config", p.to_str().unwrap(), "check-config"])
            .env("WEBHOOKD_TEST_ST", "whsec_STRIPE-SECRET-4c1d8e")
            .env("CREDENTIALS_DIRECTORY", env.path("creds"))
            .output()
            .unwrap();
        assert!(!out.status.success());
        outputs.push((
            "check-config on a broken file".into(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        ));
    }

    for path in ["/status", "/metrics", "/readyz", "/healthz", "/nowhere"] {
        let r = request(&addr, "GET", path, &[], b"").unwrap();
        record(&mut outputs, path.to_string(), &r);
    }
    let log = d.log_text();
    assert!(log.contains("reload refused"), "{log}");
    assert!(log.contains("hook=gh "), "the log is the daemon's: {log}");
    outputs.push(("daemon log".into(), log));

    let mut leaks = Vec::new();
    for (what, text) in &outputs {
        for n in needles() {
            if text.contains(&n) {
                let at = text.find(&n).unwrap();
                let from = text[..at]
                    .char_indices()
                    .rev()
                    .nth(80)
                    .map(|(i, _)| i)
                    .unwrap_or(0);
                leaks.push(format!(
                    "{n} in {what}: …{}…",
                    &text[from..(at + n.len()).min(text.len())]
                ));
            }
        }
    }
    assert!(leaks.is_empty(), "secrets leaked:\n{}", leaks.join("\n"));
}
