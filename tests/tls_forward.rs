//! Forwarding to a real local HTTPS sink (rustls, certificates made here):
//! the action's CA bundle or the system CA store (SSL_CERT_FILE), secret
//! headers that reach the target and nowhere else, keep-alive reuse and the
//! per-target connection limit; a wrong CA or hostname retried and then a
//! dead letter that says why; mTLS with the client certificate.

mod common;
mod tls_common;
use common::*;
use std::process::Command;
use std::time::Duration;
use tls_common::*;

const WAIT: Duration = Duration::from_secs(20);

/// A daemon with hook `gh` forwarding to `target` with `action_extra` in
/// `[hooks.action]` and `hook_extra` after it (retry, breaker).
fn start(
    env: &Env,
    target: &str,
    action_extra: &str,
    hook_extra: &str,
    vars: &[(&str, String)],
) -> (Daemon, String) {
    let secret = env.write("gh.secret", SECRET);
    let addr = format!("127.0.0.1:{}", free_port());
    let url = env.sqlite_url();
    let text = format!(
        "{}\n[hooks.action]\ntype = \"forward\"\nurl = \"{target}\"\ntimeout = \"3s\"\n{action_extra}\n{hook_extra}\n[delivery]\npoll_interval = \"100ms\"\nlease_margin = \"1s\"\n",
        config(&addr, &url, &secret, "")
    );
    (Daemon::start(env, &text, vars), url)
}

fn dead_letter_error(d: &Daemon, delivery: &str) -> String {
    let o = Command::new(bin())
        .arg("--config")
        .arg(&d.config)
        .args(["dead-letters", "list", "--json"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .find(|e| e["delivery_id"] == delivery)
        .map(|e| e.to_string())
        .unwrap_or_else(|| panic!("no dead letter {delivery}: {v}"))
}

const RETRY: &str =
    "[hooks.retry]\nmax_attempts = 2\ninitial_delay = \"50ms\"\nmax_delay = \"100ms\"\n[hooks.breaker]\nfailures = 0\n";

#[test]
fn forwards_over_https_with_the_action_ca_reusing_connections() {
    let env = Env::new("tlsfwd-ok");
    let ca = Ca::new("target CA");
    let ca_file = write_pem(&env.dir, "target-ca.pem", &ca.cert_pem);
    // Slow enough that four deliveries at once would need four connections.
    let sink = TlsSink::with_delay(
        &ca.server(&["localhost"], 30),
        None,
        Duration::from_millis(100),
    );
    let token = "Bearer ci-token-3f9a7c";
    let action = format!(
        "tls_ca = \"file:{}\"\nconcurrency = 4\nmax_connections = 1\n[hooks.action.headers]\nAuthorization = \"env:CI_TOKEN\"\n",
        ca_file.display()
    );
    let (d, url) = start(
        &env,
        &format!("https://localhost:{}/ci", sink.port),
        &action,
        "",
        &[("CI_TOKEN", token.to_string())],
    );
    let body = br#"{"ref":"refs/heads/main"}"#;
    for i in 0..6 {
        assert_eq!(d.post("gh", &format!("h-{i}"), body).status, 202);
    }
    let got = sink.wait_for(6, WAIT);
    for g in &got {
        assert_eq!(g.path, "/ci");
        assert_eq!(g.body, body, "byte for byte over TLS");
        assert_eq!(g.header("authorization"), Some(token));
        assert_eq!(g.header("x-github-event"), Some("push"));
    }
    for i in 0..6 {
        wait_state(&url, &format!("h-{i}"), "done", WAIT);
    }
    // max_connections = 1: one connection, kept alive, carried all six.
    let conns: Vec<usize> = got.iter().map(|g| g.conn).collect();
    assert_eq!(sink.connections(), 1, "connections used: {conns:?}");

    // The token is in no log, status, metrics or stored event.
    let st = request(&d.addr, "GET", "/status", &[], b"").unwrap().text();
    let m = request(&d.addr, "GET", "/metrics", &[], b"")
        .unwrap()
        .text();
    let c = rusqlite::Connection::open(url.strip_prefix("sqlite://").unwrap()).unwrap();
    let stored: String = c
        .query_row(
            "SELECT group_concat(headers, ' ') FROM event_bodies",
            [],
            |r| r.get(0),
        )
        .unwrap();
    for (what, text) in [
        ("log", d.log_text()),
        ("status", st),
        ("metrics", m),
        ("store", stored),
    ] {
        assert!(!text.contains("ci-token-3f9a7c"), "token in {what}");
    }
}

#[test]
fn http2_when_the_target_offers_it() {
    let env = Env::new("tlsfwd-h2");
    let ca = Ca::new("target CA");
    let ca_file = write_pem(&env.dir, "target-ca.pem", &ca.cert_pem);
    let sink = H2Sink::new(&ca.server(&["localhost"], 30));
    let (d, url) = start(
        &env,
        &format!("https://localhost:{}/h2", sink.port),
        &format!(
            "tls_ca = \"file:{}\"\nconcurrency = 4\nmax_connections = 4\n",
            ca_file.display()
        ),
        "",
        &[],
    );
    // The first delivery opens the connection and learns (ALPN) it is h2.
    assert_eq!(d.post("gh", "h2-first", b"{}").status, 202);
    wait_state(&url, "h2-first", "done", WAIT);
    for i in 0..6 {
        assert_eq!(d.post("gh", &format!("h2-{i}"), b"{}").status, 202);
    }
    let versions = sink.wait_for(7, WAIT);
    assert!(versions.iter().all(|v| v == "HTTP/2.0"), "{versions:?}");
    for i in 0..6 {
        wait_state(&url, &format!("h2-{i}"), "done", WAIT);
    }
    // Four at a time, multiplexed on that one connection.
    assert_eq!(*sink.connections.lock().unwrap(), 1);
}

#[test]
fn system_ca_store_is_the_default() {
    let env = Env::new("tlsfwd-system");
    let ca = Ca::new("system CA");
    let bundle = write_pem(&env.dir, "system-bundle.pem", &ca.cert_pem);
    let sink = TlsSink::new(&ca.server(&["localhost"], 30), None);
    // rustls-native-certs reads SSL_CERT_FILE like OpenSSL does.
    let (d, url) = start(
        &env,
        &format!("https://localhost:{}/", sink.port),
        "",
        "",
        &[("SSL_CERT_FILE", bundle.display().to_string())],
    );
    d.post("gh", "sys-1", b"{}");
    sink.wait_for(1, WAIT);
    wait_state(&url, "sys-1", "done", WAIT);
}

#[test]
fn wrong_ca_or_hostname_is_retried_then_a_dead_letter_with_the_reason() {
    let env = Env::new("tlsfwd-bad");
    let ca = Ca::new("target CA");
    let other = Ca::new("some other CA");
    let other_file = write_pem(&env.dir, "other-ca.pem", &other.cert_pem);
    let ca_file = write_pem(&env.dir, "target-ca.pem", &ca.cert_pem);
    let sink = TlsSink::new(&ca.server(&["localhost"], 30), None);

    // Wrong CA.
    let (d, url) = start(
        &env,
        &format!("https://localhost:{}/", sink.port),
        &format!("tls_ca = \"file:{}\"\n", other_file.display()),
        RETRY,
        &[],
    );
    d.post("gh", "wrong-ca", b"{}");
    assert_eq!(
        wait_state(&url, "wrong-ca", "dead", WAIT),
        ("dead".into(), 2),
        "retried, then dead"
    );
    let e = dead_letter_error(&d, "wrong-ca");
    assert!(
        e.contains("UnknownIssuer") || e.contains("unknown issuer"),
        "{e}"
    );
    assert_eq!(sink.count(), 0, "nothing sent to an unverified target");
    drop(d);

    // Right CA, wrong name: the certificate is for localhost, not 127.0.0.1.
    let env2 = Env::new("tlsfwd-name");
    let (d, url) = start(
        &env2,
        &format!("https://127.0.0.1:{}/", sink.port),
        &format!("tls_ca = \"file:{}\"\n", ca_file.display()),
        RETRY,
        &[],
    );
    d.post("gh", "wrong-name", b"{}");
    assert_eq!(
        wait_state(&url, "wrong-name", "dead", WAIT),
        ("dead".into(), 2)
    );
    let e = dead_letter_error(&d, "wrong-name");
    assert!(
        e.contains("NotValidForName") || e.contains("not valid for name"),
        "{e}"
    );
    assert_eq!(sink.count(), 0);
}

#[test]
fn mtls_target_gets_the_client_certificate() {
    let env = Env::new("tlsfwd-mtls");
    let ca = Ca::new("target CA");
    let clients = Ca::new("client CA");
    let ca_file = write_pem(&env.dir, "target-ca.pem", &ca.cert_pem);
    let client = clients.client("webhookd");
    let cert = write_pem(&env.dir, "client.crt", &client.cert_pem);
    let key = write_pem(&env.dir, "client.key", &client.key_pem);
    let sink = TlsSink::new(&ca.server(&["localhost"], 30), Some(&clients.cert_pem));
    let target = format!("https://localhost:{}/", sink.port);

    // Without a client certificate the sink refuses the handshake.
    let (d, url) = start(
        &env,
        &target,
        &format!("tls_ca = \"file:{}\"\n", ca_file.display()),
        RETRY,
        &[],
    );
    d.post("gh", "no-cert", b"{}");
    wait_state(&url, "no-cert", "dead", WAIT);
    assert_eq!(sink.count(), 0);
    drop(d);

    // With it (the key as a credential), delivered.
    std::fs::create_dir_all(env.path("creds")).unwrap();
    std::fs::copy(&key, env.path("creds/client.key")).unwrap();
    let env2 = Env::new("tlsfwd-mtls2");
    let (d, url) = start(
        &env2,
        &target,
        &format!(
            "tls_ca = \"file:{}\"\ntls_client_cert = \"file:{}\"\ntls_client_key = \"credential:client.key\"\n",
            ca_file.display(),
            cert.display()
        ),
        RETRY,
        &[(
            "CREDENTIALS_DIRECTORY",
            env.path("creds").display().to_string(),
        )],
    );
    d.post("gh", "with-cert", b"{}");
    let got = sink.wait_for(1, WAIT);
    wait_state(&url, "with-cert", "done", WAIT);
    assert_eq!(
        got[0].client_cert.as_deref(),
        Some(certs(&client.cert_pem)[0].as_ref())
    );
}

#[test]
fn tls_options_are_checked_without_echoing_secrets() {
    let env = Env::new("tlsfwd-config");
    let secret = env.write("gh.secret", SECRET);
    let check = |action: &str, vars: &[(&str, &str)]| -> (bool, String) {
        let text = format!(
            "{}\n[hooks.action]\ntype = \"forward\"\n{action}\n",
            config("127.0.0.1:1", &env.sqlite_url(), &secret, "")
        );
        let p = env.write("c.toml", &text);
        let mut cmd = Command::new(bin());
        cmd.arg("--config").arg(&p).arg("check-config");
        for (k, v) in vars {
            cmd.env(k, v);
        }
        let o = cmd.output().unwrap();
        (
            o.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            ),
        )
    };
    let (ok, out) = check(
        "url = \"http://localhost:1/\"\ntls_ca = \"file:/etc/ssl/x.pem\"",
        &[],
    );
    assert!(
        !ok && out.contains("tls_ca") && out.contains("https://"),
        "{out}"
    );
    let (ok, out) = check(
        "url = \"https://localhost:1/\"\ntls_client_cert = \"file:/x.crt\"",
        &[],
    );
    assert!(!ok && out.contains("go together"), "{out}");
    let (ok, out) = check(
        "url = \"https://localhost:1/\"\n[hooks.action.headers]\nAuthorization = \"Bearer literal-token\"",
        &[],
    );
    assert!(!ok && out.contains("secret reference"), "{out}");
    assert!(!out.contains("literal-token"), "{out}");
    let (ok, out) = check(
        "url = \"https://localhost:1/\"\n[hooks.action.headers]\nAuthorization = \"env:TOKEN_WITH_NL\"",
        &[("TOKEN_WITH_NL", "abc\ndef-secret")],
    );
    assert!(!ok && out.contains("not a valid header value"), "{out}");
    assert!(!out.contains("def-secret"), "{out}");
    let (ok, out) = check(
        "url = \"https://localhost:1/\"\ntls_ca = \"file:/nonexistent/ca.pem\"",
        &[],
    );
    assert!(!ok && out.contains("/nonexistent/ca.pem"), "{out}");
    let (ok, out) = check("url = \"ftp://localhost/\"", &[]);
    assert!(!ok && out.contains("https://"), "{out}");
}
