//! Schemes and hook rules over real HTTP, against the daemon as a child
//! process: every scheme signed by `webhookd sign` and accepted, replays
//! refused, events filter, rate limit (429), in-flight cap (503), IP
//! allowlist with and without trusted proxies (403), header size cap (431)
//! and slow headers.

mod common;
use common::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

const WHSEC: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn base(addr: &str, url: &str, server_extra: &str) -> String {
    format!(
        r#"
[server]
listen = "{addr}"
{server_extra}
[store]
url = "{url}"
[log]
level = "debug"
target = "stderr"
"#
    )
}

fn hook(env: &Env, id: &str, scheme: &str, secret: &str, extra: &str) -> String {
    let f = env.write(&format!("{id}.secret"), &format!("{secret}\n"));
    format!(
        "\n[[hooks]]\nid = \"{id}\"\nscheme = \"{scheme}\"\nsecrets = [\"file:{}\"]\n{extra}\n",
        f.display()
    )
}

/// The headers `webhookd sign` prints for `body`.
fn sign(
    config: &std::path::Path,
    hook: &str,
    event: &str,
    delivery: &str,
    body: &[u8],
) -> Vec<(String, String)> {
    cli_sign(config, hook, event, delivery, body, &[])
}

fn post(addr: &str, hook: &str, headers: &[(String, String)], body: &[u8]) -> Resp {
    request(addr, "POST", &format!("/hooks/{hook}"), headers, body).unwrap()
}

#[test]
fn every_scheme_signed_by_the_cli_is_accepted() {
    let env = Env::new("schemes");
    let url = env.sqlite_url();
    let addr = format!("127.0.0.1:{}", free_port());
    let mut cfg = base(&addr, &url, "");
    cfg += &hook(&env, "gh", "github", SECRET, "");
    cfg += &hook(&env, "sw", "standard", WHSEC, "");
    cfg += &hook(
        &env,
        "st",
        "stripe",
        "whsec_stripe_test",
        "tolerance = \"2m\"",
    );
    cfg += &hook(
        &env,
        "sl",
        "slack",
        "slack-signing",
        "delivery_field = \"event_id\"",
    );
    cfg += &hook(&env, "gl", "gitlab", "gl-token", "");
    cfg += &hook(&env, "sh", "shopify", "shop-secret", "");
    cfg += &hook(
        &env,
        "hm",
        "hmac",
        "generic",
        "header = \"X-Signature\"\nprefix = \"sha512=\"\nalgorithm = \"sha512\"\nencoding = \"base64\"\ntimestamp_header = \"X-Timestamp\"\ndelivery_header = \"X-Request-Id\"\nevent_header = \"X-Event\"\ntemplate = \"{timestamp}:{delivery}:{body}\"",
    );
    let d = Daemon::start(&env, &cfg, &[]);
    let body =
        br#"{"id":"evt_1","type":"thing.done","event_id":"Ev1","event":{"type":"app_mention"}}"#;
    let mut stored = 0;
    for id in ["gh", "sw", "st", "sl", "gl", "sh", "hm"] {
        let h = sign(&d.config, id, "push", &format!("{id}-del-1"), body);
        let r = post(&addr, id, &h, body);
        assert_eq!(r.status, 202, "{id}: {}", r.text());
        stored += 1;
        // The same delivery again is a duplicate, never stored twice.
        let r = post(&addr, id, &h, body);
        assert_eq!(r.status, 200, "{id}: {}", r.text());
        assert_eq!(r.json()["status"], "duplicate", "{id}");
        // A flipped body byte is refused (GitLab signs nothing: its token is the check).
        if id != "gl" {
            let mut bad = body.to_vec();
            bad[10] ^= 1;
            let r = post(&addr, id, &h, &bad);
            assert_eq!(r.status, 401, "{id}: {}", r.text());
        }
        let log = d.log_text();
        assert!(
            log.contains(&format!("hook={id} ")) && log.contains("key=0"),
            "{log}"
        );
    }
    assert_eq!(count_rows(&url, None), stored);
    for (what, id) in [
        ("github", "gh-del-1"),
        ("standard", "sw-del-1"),
        ("stripe", "evt_1"),
        ("slack", "Ev1"),
        ("gitlab", "gl-del-1"),
        ("shopify", "sh-del-1"),
        ("hmac", "hm-del-1"),
    ] {
        assert_eq!(count_rows(&url, Some(id)), 1, "{what} delivery id {id}");
    }

    // Slack's URL check is answered with its challenge and not stored.
    let check = br#"{"token":"t","challenge":"3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P","type":"url_verification"}"#;
    let h = sign(&d.config, "sl", "-", "-", check);
    let r = post(&addr, "sl", &h, check);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json()["challenge"],
        "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"
    );
    assert_eq!(count_rows(&url, None), stored);

    // A replayed (stale) Stripe signature: 401 and the reason says so.
    let stale = format!(
        "t={},v1={}",
        1_600_000_000,
        webhookd::id::hex(&webhookd::verify::hmac_sha256(
            b"whsec_stripe_test",
            &[b"1600000000.", body]
        ))
    );
    let r = post(&addr, "st", &[("Stripe-Signature".into(), stale)], body);
    assert_eq!(r.status, 401);
    assert!(
        r.text().contains("timestamp outside tolerance"),
        "{}",
        r.text()
    );

    // Secrets never reach the log or /status.
    let log = d.log_text();
    for s in [
        SECRET,
        WHSEC,
        "whsec_stripe_test",
        "slack-signing",
        "gl-token",
        "shop-secret",
    ] {
        assert!(!log.contains(s), "secret {s} in the log");
    }
}

#[test]
fn events_filter_answers_2xx_and_stores_nothing() {
    let env = Env::new("events");
    let url = env.sqlite_url();
    let addr = format!("127.0.0.1:{}", free_port());
    let cfg = base(&addr, &url, "") + &hook(&env, "gh", "github", SECRET, "events = [\"push\"]");
    let d = Daemon::start(&env, &cfg, &[]);
    let mut h = github_headers("ping-1", b"{}", SECRET);
    h[1].1 = "ping".into();
    let r = post(&addr, "gh", &h, b"{}");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["status"], "ignored");
    assert_eq!(count_rows(&url, None), 0);
    assert_eq!(d.post("gh", "push-1", b"{}").status, 202);
    assert_eq!(count_rows(&url, None), 1);
    assert!(d.log_text().contains("ignored=event-filter"));
    let m = request(&addr, "GET", "/metrics", &[], b"").unwrap().text();
    assert!(
        m.contains(r#"webhookd_hook_requests_total{hook="gh",outcome="ignored"} 1"#),
        "{m}"
    );
}

#[test]
fn rate_limit_answers_429_with_retry_after() {
    let env = Env::new("rate");
    let addr = format!("127.0.0.1:{}", free_port());
    let cfg = base(&addr, &env.sqlite_url(), "")
        + &hook(
            &env,
            "gh",
            "github",
            SECRET,
            "rate_limit = \"1/min\"\nrate_burst = 2",
        )
        + &hook(&env, "other", "github", SECRET, "");
    let d = Daemon::start(&env, &cfg, &[]);
    assert_eq!(d.post("gh", "r-1", b"{}").status, 202);
    assert_eq!(d.post("gh", "r-2", b"{}").status, 202);
    let r = d.post("gh", "r-3", b"{}");
    assert_eq!(r.status, 429, "{}", r.text());
    let wait: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&wait), "Retry-After {wait}");
    // Per hook: another hook is not affected.
    assert_eq!(d.post("other", "o-1", b"{}").status, 202);
    let m = request(&addr, "GET", "/metrics", &[], b"").unwrap().text();
    assert!(
        m.contains(r#"webhookd_hook_requests_total{hook="gh",outcome="rate_limited"} 1"#),
        "{m}"
    );
}

#[test]
fn in_flight_cap_answers_503_with_retry_after() {
    let env = Env::new("inflight");
    let url = env.sqlite_url();
    let addr = format!("127.0.0.1:{}", free_port());
    let cfg = base(&addr, &url, "max_in_flight = 1") + &hook(&env, "gh", "github", SECRET, "");
    // A request waiting for the store holds the only slot (a request still
    // reading its body would be evicted for the newcomer: tests/slow_clients.rs).
    let wedge = env.path("wedge");
    std::fs::write(&wedge, "").unwrap();
    let d = Daemon::start(
        &env,
        &cfg,
        &[("WEBHOOKD_TEST_WEDGE_FILE", wedge.display().to_string())],
    );
    let a = addr.clone();
    let held = std::thread::spawn(move || post_signed(&a, "gh", "held-1", b"{}", SECRET));
    std::thread::sleep(Duration::from_millis(1000));
    let r = d.post("gh", "fast-1", b"{}");
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.header("retry-after"), Some("1"));
    assert!(r.text().contains("in flight"), "{}", r.text());
    // The held one is stored once the store answers; the slot is free again.
    std::fs::remove_file(&wedge).unwrap();
    let r = held.join().unwrap();
    assert_eq!(r.status, 202, "{}", r.text());
    assert_eq!(d.post("gh", "fast-2", b"{}").status, 202);
    assert_eq!(count_rows(&url, Some("fast-1")), 0);
}

#[test]
fn ip_allowlist_and_trusted_proxies() {
    let env = Env::new("allow");
    let url = env.sqlite_url();
    let hooks = |env: &Env| {
        hook(
            env,
            "local",
            "github",
            SECRET,
            "allow_ips = [\"127.0.0.0/8\", \"::1\"]",
        ) + &hook(
            env,
            "remote",
            "github",
            SECRET,
            "allow_ips = [\"192.0.2.0/24\", \"2001:db8::/32\"]",
        )
    };
    let xff = |v: &str, d: &str| {
        let mut h = github_headers(d, b"{}", SECRET);
        h.push(("X-Forwarded-For".into(), v.into()));
        h
    };

    // No trusted proxies: the peer (127.0.0.1) counts, forwarding headers do not.
    let addr = format!("127.0.0.1:{}", free_port());
    let d = Daemon::start(&env, &(base(&addr, &url, "") + &hooks(&env)), &[]);
    assert_eq!(d.post("local", "l-1", b"{}").status, 202);
    let r = d.post("remote", "r-1", b"{}");
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(d.log_text().contains("client=127.0.0.1"));
    let r = post(&addr, "remote", &xff("192.0.2.10", "r-2"), b"{}");
    assert_eq!(
        r.status, 403,
        "X-Forwarded-For from an untrusted peer is ignored"
    );
    drop(d);

    // 127.0.0.1 is a trusted proxy (a tunnel on this host).
    let env2 = Env::new("allow2");
    let addr = format!("127.0.0.1:{}", free_port());
    let cfg = base(
        &addr,
        &env2.sqlite_url(),
        "trusted_proxies = [{ from = \"127.0.0.1\", header = \"X-Forwarded-For\" }]",
    ) + &hooks(&env2);
    let _d = Daemon::start(&env2, &cfg, &[]);
    assert_eq!(
        post(&addr, "remote", &xff("192.0.2.10", "t-1"), b"{}").status,
        202
    );
    // Only the right-most untrusted entry counts: a client cannot prepend.
    assert_eq!(
        post(
            &addr,
            "remote",
            &xff("192.0.2.10, 198.51.100.7", "t-2"),
            b"{}"
        )
        .status,
        403
    );
    // (Which header each proxy sets, and that no other is believed:
    // tests/client_trust.rs.)
    assert_eq!(
        post(&addr, "remote", &xff("2001:db8::42", "t-3"), b"{}").status,
        202,
        "IPv6 client"
    );
    // Through the proxy, the local hook sees the real client, not 127.0.0.1.
    assert_eq!(
        post(&addr, "local", &xff("198.51.100.7", "t-4"), b"{}").status,
        403
    );
    // A garbled chain fails closed.
    assert_eq!(
        post(&addr, "remote", &xff("192.0.2.10, not-an-ip", "t-5"), b"{}").status,
        403
    );
    let m = request(&addr, "GET", "/metrics", &[], b"").unwrap().text();
    assert!(
        m.contains(r#"webhookd_hook_requests_total{hook="remote",outcome="forbidden"} 2"#),
        "{m}"
    );
}

#[test]
fn header_size_cap_and_slow_headers() {
    let env = Env::new("heads");
    let url = env.sqlite_url();
    let addr = format!("127.0.0.1:{}", free_port());
    let cfg = base(
        &addr,
        &url,
        "max_header_bytes = 8192\nheader_timeout = \"1s\"",
    ) + &hook(&env, "gh", "github", SECRET, "");
    let d = Daemon::start(&env, &cfg, &[]);
    let mut h = github_headers("big-head", b"{}", SECRET);
    h.push(("X-Padding".into(), "a".repeat(16 * 1024)));
    let r = post(&addr, "gh", &h, b"{}");
    assert_eq!(r.status, 431, "{}", r.text());
    // The cap is on the head only: a large body is fine.
    let body = vec![b' '; 200 * 1024];
    assert_eq!(d.post("gh", "big-body", &body).status, 202);

    // A client that never finishes its headers is cut off.
    let mut s = TcpStream::connect(&addr).unwrap();
    s.write_all(b"POST /hooks/gh HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let start = Instant::now();
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let took = start.elapsed();
    assert!(
        took < Duration::from_secs(5),
        "slow client held the connection {took:?}"
    );
}
