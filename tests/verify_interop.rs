//! Verification where senders and receivers must agree, over the real
//! daemon: a webhookd `standard` hook accepts what another webhookd
//! re-signs and forwards (one key decoding for both), the de-duplication key
//! of a timestamped scheme without a delivery id includes the signed
//! timestamp (two identical heartbeats a minute apart are two events), and a
//! Standard Webhooks header with several signatures skips entries that
//! cannot match, as the reference libraries do.

mod common;
use common::*;
use std::time::{Duration, SystemTime};

const WAIT: Duration = Duration::from_secs(20);

fn base(addr: &str, url: &str) -> String {
    format!(
        "[server]\nlisten = \"{addr}\"\n[store]\nurl = \"{url}\"\n[log]\nlevel = \"debug\"\ntarget = \"stderr\"\n[delivery]\npoll_interval = \"100ms\"\n"
    )
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn post(addr: &str, hook: &str, headers: &[(String, String)], body: &[u8]) -> Resp {
    request(addr, "POST", &format!("/hooks/{hook}"), headers, body).unwrap()
}

/// Standard Webhooks headers for `body` with a signature list as given.
fn standard_headers(id: &str, ts: u64, signatures: &str) -> Vec<(String, String)> {
    vec![
        ("webhook-id".into(), id.into()),
        ("webhook-timestamp".into(), ts.to_string()),
        ("webhook-signature".into(), signatures.into()),
        ("Content-Type".into(), "application/json".into()),
    ]
}

fn standard_sig(key: &[u8], id: &str, ts: u64, body: &[u8]) -> String {
    let ts = ts.to_string();
    let mac = webhookd::verify::hmac_sha256(key, &[id.as_bytes(), b".", ts.as_bytes(), b".", body]);
    format!("v1,{}", webhookd::verify::encode_base64(&mac))
}

/// Item 14: webhookd A forwards with `sign_secret`, webhookd B verifies
/// with a `standard` hook holding the same secret. Written without the
/// `whsec_` prefix (B base64-decodes it; A used to sign with the raw text)
/// and with the prefix but unpadded base64 (A used to fall back to raw).
#[test]
fn standard_hook_accepts_what_another_webhookd_forwards() {
    let env = Env::new("interop");
    let b_url = env.sqlite_url();
    let b_addr = format!("127.0.0.1:{}", free_port());
    let plain = env.write("plain.secret", "c2VjcmV0LWtleS1ieXRlcw==\n");
    let unpadded = env.write("unpadded.secret", "whsec_c2VjcmV0LWtleS1ieXRlcw\n");
    let mut b_cfg = base(&b_addr, &b_url);
    for (id, f) in [("plain", &plain), ("unpadded", &unpadded)] {
        b_cfg += &format!(
            "\n[[hooks]]\nid = \"{id}\"\nscheme = \"standard\"\nsecrets = [\"file:{}\"]\n",
            f.display()
        );
    }
    let env_b = Env::new("interop-b");
    let b = Daemon::start(&env_b, &b_cfg, &[]);

    let a_env = Env::new("interop-a");
    let a_url = a_env.sqlite_url();
    let a_addr = format!("127.0.0.1:{}", free_port());
    let gh = a_env.write("gh.secret", SECRET);
    let mut a_cfg = base(&a_addr, &a_url);
    for (id, f) in [("plain", &plain), ("unpadded", &unpadded)] {
        a_cfg += &format!(
            "\n[[hooks]]\nid = \"{id}\"\nscheme = \"github\"\nsecrets = [\"file:{}\"]\n[hooks.action]\ntype = \"forward\"\nurl = \"http://{b_addr}/hooks/{id}\"\ntimeout = \"2s\"\nsign_secret = \"file:{}\"\n[hooks.retry]\nmax_attempts = 1\n",
            gh.display(),
            f.display()
        );
    }
    let a = Daemon::start(&a_env, &a_cfg, &[]);
    for id in ["plain", "unpadded"] {
        let body = format!("{{\"type\":\"ping\",\"hook\":\"{id}\"}}");
        let r = post_signed(&a.addr, id, &format!("d-{id}"), body.as_bytes(), SECRET);
        assert_eq!(r.status, 202, "{}", r.text());
        let (state, _) = wait_state(&a_url, &format!("d-{id}"), "done", WAIT);
        assert_eq!(state, "done", "{id}: A log:\n{}", a.log_text());
    }
    assert_eq!(count_rows(&b_url, None), 2, "B log:\n{}", b.log_text());
}

/// Item 15: a timestamped `hmac` hook without a delivery header or field.
/// The same body signed at two different times is two events; the same
/// body and timestamp again is a duplicate.
#[test]
fn fallback_dedupe_key_includes_the_signed_timestamp() {
    let env = Env::new("tskey");
    let url = env.sqlite_url();
    let addr = format!("127.0.0.1:{}", free_port());
    let f = env.write("hb.secret", "heartbeat-secret\n");
    let cfg = base(&addr, &url)
        + &format!(
            "\n[[hooks]]\nid = \"hb\"\nscheme = \"hmac\"\nsecrets = [\"file:{}\"]\nheader = \"X-Signature\"\ntimestamp_header = \"X-Timestamp\"\n",
            f.display()
        );
    let _d = Daemon::start(&env, &cfg, &[]);
    let body = br#"{"status":"alive"}"#;
    let signed = |ts: u64| {
        let t = ts.to_string();
        let mac = webhookd::verify::hmac_sha256(b"heartbeat-secret", &[t.as_bytes(), b".", body]);
        vec![
            ("X-Signature".to_string(), webhookd::id::hex(&mac)),
            ("X-Timestamp".to_string(), t),
        ]
    };
    let t = now();
    let first = post(&addr, "hb", &signed(t - 60), body);
    assert_eq!(first.status, 202, "{}", first.text());
    let second = post(&addr, "hb", &signed(t), body);
    assert_eq!(
        second.status,
        202,
        "a heartbeat a minute later is a new event: {}",
        second.text()
    );
    let again = post(&addr, "hb", &signed(t), body);
    assert_eq!(again.status, 200, "{}", again.text());
    assert_eq!(again.json()["status"], "duplicate");
    assert_eq!(count_rows(&url, None), 2);
}

/// Item 16: entries that cannot match (not base64, not 32 bytes, no comma)
/// are skipped; a valid entry anywhere in the list is accepted; a header
/// with no valid entry is still 401.
#[test]
fn standard_signature_list_skips_entries_that_cannot_match() {
    let env = Env::new("multisig");
    let url = env.sqlite_url();
    let addr = format!("127.0.0.1:{}", free_port());
    let f = env.write("sw.secret", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n");
    let key = webhookd::verify::decode_base64(b"MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
    let cfg = base(&addr, &url)
        + &format!(
            "\n[[hooks]]\nid = \"sw\"\nscheme = \"standard\"\nsecrets = [\"file:{}\"]\n",
            f.display()
        );
    let d = Daemon::start(&env, &cfg, &[]);
    let body = br#"{"type":"invoice.paid"}"#;
    let ts = now();
    let cases = [
        ("m-1", "v1,!!not-base64!! {valid}"),
        ("m-2", "v1,AAAA {valid}"),
        ("m-3", "{valid} v1,AAAA"),
        ("m-4", "nocomma {valid}"),
    ];
    for (id, list) in cases {
        let sigs = list.replace("{valid}", &standard_sig(&key, id, ts, body));
        let r = post(&addr, "sw", &standard_headers(id, ts, &sigs), body);
        assert_eq!(r.status, 202, "{list}: {}", r.text());
    }
    for (id, list) in [("n-1", "v1,AAAA v1,!!"), ("n-2", "v1,AAAA")] {
        let r = post(&addr, "sw", &standard_headers(id, ts, list), body);
        assert_eq!(r.status, 401, "{list}: {}", r.text());
    }
    // A valid-looking entry signed with another key is still a mismatch.
    let other = standard_sig(b"another key of thirty-two bytes!", "n-3", ts, body);
    let r = post(
        &addr,
        "sw",
        &standard_headers("n-3", ts, &format!("v1,AAAA {other}")),
        body,
    );
    assert_eq!(r.status, 401, "{}", r.text());
    assert_eq!(count_rows(&url, None), 4, "{}", d.log_text());
}
