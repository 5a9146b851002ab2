//! Payload rules, request values for commands, custom responses, handshakes
//! and the token/none schemes, against the real daemon: GitHub-shaped push,
//! tag and pull_request deliveries (JSON and form-encoded), Slack slash
//! commands, a command that records its argv, environment and file, a
//! retry and a replay that get the same arguments, and a missing value
//! that becomes a dead letter naming it.

mod common;
use common::*;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

fn base(addr: &str, url: &str) -> String {
    format!(
        "[server]\nlisten = \"{addr}\"\n[store]\nurl = \"{url}\"\nspool = \"off\"\n[delivery]\npoll_interval = \"100ms\"\n[log]\nlevel = \"debug\"\ntarget = \"stderr\"\n"
    )
}

fn secret_file(env: &Env, name: &str, value: &str) -> String {
    env.write(name, &format!("{value}\n")).display().to_string()
}

fn push(reference: &str, commit: &str, pusher: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "ref": reference,
        "before": "6113728f27ae82c7b1a177c8d03f9e96e0adf246",
        "after": commit,
        "created": false,
        "deleted": false,
        "forced": false,
        "base_ref": null,
        "compare": "https://github.com/octo-org/hello/compare/6113728f27ae...".to_string() + &commit[..12],
        "commits": [{
            "id": commit,
            "tree_id": "f9d2a07e9488b91af2641b26b9407fe22a451433",
            "distinct": true,
            "message": "Fix the thing",
            "timestamp": "2026-12-01T21:00:00Z",
            "author": {"name": "Mona", "email": "mona@example.com", "username": "mona"},
            "added": [], "removed": [], "modified": ["README.md"]
        }],
        "head_commit": {"id": commit, "message": "Fix the thing", "author": {"name": "Mona"}},
        "repository": {"id": 1296269, "name": "hello", "full_name": "octo-org/hello",
                       "owner": {"name": "octo-org", "login": "octo-org"}, "default_branch": "main"},
        "pusher": {"name": pusher, "email": "mona@example.com"},
        "sender": {"login": "mona", "id": 1, "type": "User"}
    }))
    .unwrap()
}

fn gh_headers(event: &str, delivery: &str, body: &[u8]) -> Vec<(String, String)> {
    let mut h = github_headers(delivery, body, SECRET);
    for (k, v) in h.iter_mut() {
        if k == "X-GitHub-Event" {
            *v = event.into();
        }
    }
    h
}

fn post(addr: &str, hook: &str, headers: &[(String, String)], body: &[u8]) -> Resp {
    request(addr, "POST", &format!("/hooks/{hook}"), headers, body).unwrap()
}

/// Percent-encode for a form body.
fn form_encode(pairs: &[(&str, &str)]) -> String {
    let enc = |s: &str| {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                    (b as char).to_string()
                }
                b' ' => "+".into(),
                _ => format!("%{b:02X}"),
            })
            .collect::<String>()
    };
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect::<Vec<_>>()
        .join("&")
}

#[test]
fn github_rules_over_push_tag_pull_request_and_form_deliveries() {
    let env = Env::new("prules-gh");
    let url = env.sqlite_url();
    let addr = format!("127.0.0.1:{}", free_port());
    let s = secret_file(&env, "gh.secret", SECRET);
    let cfg = base(&addr, &url)
        + &format!(
            r#"
[[hooks]]
id = "deploy"
scheme = "github"
secrets = ["file:{s}"]
rule = {{ all = [ {{ value = "header.X-GitHub-Event", equals = "push" }}, {{ name = "main only", value = "body.ref", equals = "refs/heads/main" }} ] }}

[[hooks]]
id = "release"
scheme = "github"
secrets = ["file:{s}"]
[hooks.rule]
all = [
  {{ value = "event", equals = "push" }},
  {{ value = "body.ref", regex = "^refs/tags/v[0-9]+" }},
  {{ not = {{ value = "body.deleted", equals = true }} }},
]

[[hooks]]
id = "merged"
scheme = "github"
secrets = ["file:{s}"]
[hooks.rule]
all = [
  {{ value = "event", equals = "pull_request" }},
  {{ value = "body.action", equals = "closed" }},
  {{ value = "body.pull_request.merged", equals = true }},
  {{ value = "body.pull_request.commits", gt = 0 }},
]
"#
        );
    let d = Daemon::start(&env, &cfg, &[]);

    // Push to main: stored. Push to another branch: 200 ignored, not stored.
    let main = push(
        "refs/heads/main",
        "0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c",
        "mona",
    );
    let r = post(&addr, "deploy", &gh_headers("push", "d-main", &main), &main);
    assert_eq!(r.status, 202, "{}", r.text());
    let dev = push(
        "refs/heads/dev",
        "1111111111111111111111111111111111111111",
        "mona",
    );
    let r = post(&addr, "deploy", &gh_headers("push", "d-dev", &dev), &dev);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["status"], "ignored");
    assert_eq!(count_rows(&url, Some("d-dev")), 0);
    assert_eq!(count_rows(&url, Some("d-main")), 1);
    // The log says which rule, without the value it found.
    let log = d.log_text();
    let line = log
        .lines()
        .find(|l| l.contains("delivery=d-dev"))
        .unwrap_or_else(|| panic!("no log line for d-dev:\n{log}"));
    assert!(
        line.contains("ignored=rule rule=\"rule.all[1] (main only)\""),
        "{line}"
    );
    assert!(!line.contains("refs/heads/dev"), "value in log: {line}");
    assert_eq!(
        d.metric("webhookd_hook_requests_total{hook=\"deploy\",outcome=\"rule_mismatch\"}"),
        1.0
    );
    // A ping to the same hook does not match the event rule either.
    let r = post(
        &addr,
        "deploy",
        &gh_headers("ping", "d-ping", b"{\"zen\":\"x\"}"),
        b"{\"zen\":\"x\"}",
    );
    assert_eq!(r.json()["status"], "ignored");

    // Rules come after the signature: a bad signature is 401 even when the
    // rule would not match.
    let mut bad = gh_headers("push", "d-bad", &dev);
    bad[0].1 = format!("sha256={}", "0".repeat(64));
    assert_eq!(post(&addr, "deploy", &bad, &dev).status, 401);

    // GitHub's form encoding (payload=<JSON>) reads the same paths.
    let form = form_encode(&[("payload", std::str::from_utf8(&main).unwrap())]);
    let mut h = gh_headers("push", "d-form", form.as_bytes());
    h.retain(|(k, _)| k != "Content-Type");
    h.push((
        "Content-Type".into(),
        "application/x-www-form-urlencoded".into(),
    ));
    let r = post(&addr, "deploy", &h, form.as_bytes());
    assert_eq!(r.status, 202, "{}", r.text());
    let form_dev = form_encode(&[("payload", std::str::from_utf8(&dev).unwrap())]);
    let mut h = gh_headers("push", "d-form-dev", form_dev.as_bytes());
    h.retain(|(k, _)| k != "Content-Type");
    h.push((
        "Content-Type".into(),
        "application/x-www-form-urlencoded".into(),
    ));
    assert_eq!(
        post(&addr, "deploy", &h, form_dev.as_bytes()).json()["status"],
        "ignored"
    );

    // Tags.
    let tag = push(
        "refs/tags/v1.2.0",
        "2222222222222222222222222222222222222222",
        "mona",
    );
    assert_eq!(
        post(&addr, "release", &gh_headers("push", "t1", &tag), &tag).status,
        202
    );
    assert_eq!(
        post(&addr, "release", &gh_headers("push", "t2", &main), &main).json()["status"],
        "ignored"
    );

    // pull_request closed and merged vs closed unmerged.
    let pr = |merged: bool| {
        serde_json::to_vec(&serde_json::json!({
            "action": "closed", "number": 7,
            "pull_request": {"number": 7, "state": "closed", "merged": merged, "commits": 3,
                             "merge_commit_sha": if merged { serde_json::json!("abc") } else { serde_json::Value::Null },
                             "head": {"ref": "feature"}, "base": {"ref": "main"}},
            "repository": {"full_name": "octo-org/hello"}
        }))
        .unwrap()
    };
    let (yes, no) = (pr(true), pr(false));
    assert_eq!(
        post(
            &addr,
            "merged",
            &gh_headers("pull_request", "pr-yes", &yes),
            &yes
        )
        .status,
        202
    );
    let r = post(
        &addr,
        "merged",
        &gh_headers("pull_request", "pr-no", &no),
        &no,
    );
    assert_eq!(r.json()["status"], "ignored");
    assert_eq!(count_rows(&url, Some("pr-no")), 0);
}

/// A recorder: each run writes its argv, two environment variables and the
/// file it was handed into one numbered file, and fails while `fail-first`
/// exists (once).
fn recorder(env: &Env) -> String {
    let dir = env.dir.display();
    let script = format!(
        "#!/bin/sh\nn=$(ls {dir}/rec-* 2>/dev/null | wc -l)\nout={dir}/rec-$n\n\
         {{ for a in \"$@\"; do printf 'arg=[%s]\\n' \"$a\"; done\n\
         printf 'BRANCH=[%s]\\nPUSHER=[%s]\\nEVENT=[%s]\\nATTEMPT=%s\\n' \"$BRANCH\" \"$PUSHER\" \"$EVENT\" \"$WEBHOOK_ATTEMPT\"\n\
         printf 'file=['; cat \"$BODY_FILE\"; printf ']\\n'; }} > $out.tmp\nmv $out.tmp $out\n\
         if [ -e {dir}/fail-first ]; then rm {dir}/fail-first; exit 1; fi\n"
    );
    let p = env.write("record.sh", &script);
    std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    p.display().to_string()
}

fn records(env: &Env) -> Vec<String> {
    let mut out = Vec::new();
    for n in 0.. {
        match std::fs::read_to_string(env.path(&format!("rec-{n}"))) {
            Ok(t) => out.push(t),
            Err(_) => break,
        }
    }
    out
}

fn wait_records(env: &Env, n: usize) -> Vec<String> {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(20) {
        let r = records(env);
        if r.len() >= n {
            return r;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("only {} records", records(env).len());
}

fn cli(config: &Path, args: &[&str]) -> std::process::Output {
    Command::new(bin())
        .arg("--config")
        .arg(config)
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn exec_gets_request_values_from_the_stored_event_on_retry_and_replay() {
    exec_values(Kind::Sqlite);
}

#[test]
fn exec_gets_request_values_from_the_stored_event_on_postgres() {
    exec_values(Kind::Postgres);
}

fn exec_values(kind: Kind) {
    let env = Env::new("prules-exec");
    let url = store_url(kind, &env);
    let addr = format!("127.0.0.1:{}", free_port());
    let s = secret_file(&env, "gh.secret", SECRET);
    let rec = recorder(&env);
    let cfg = base(&addr, &url)
        + &format!(
            r#"
[[hooks]]
id = "deploy"
scheme = "github"
secrets = ["file:{s}"]
[hooks.action]
type = "exec"
command = ["{rec}", "--fixed"]
args = [{{ value = "body.ref" }}, {{ value = "body.head_commit.id" }}, {{ value = "query.env", default = "prod" }}, {{ value = "delivery" }}]
env = {{ BRANCH = {{ value = "body.ref" }}, PUSHER = {{ value = "body.pusher.name" }}, EVENT = {{ value = "header.X-GitHub-Event" }} }}
files = {{ BODY_FILE = {{ value = "body" }} }}
[hooks.retry]
initial_delay = "50ms"
max_delay = "100ms"
max_attempts = 3
"#
        );
    let d = Daemon::start(&env, &cfg, &[]);
    std::fs::write(env.path("fail-first"), "").unwrap();
    let hostile = "Mona $(touch pwned); rm -rf / `id` \"quoted\" 'single'";
    let body = push(
        "refs/heads/main",
        "0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c",
        hostile,
    );
    let r = request(
        &addr,
        "POST",
        "/hooks/deploy?env=staging",
        &gh_headers("push", "x-1", &body),
        &body,
    )
    .unwrap();
    assert_eq!(r.status, 202, "{}", r.text());
    let id = r.json()["id"].as_str().unwrap().to_string();
    // First attempt fails, the retry succeeds: both saw the same values.
    let recs = wait_records(&env, 2);
    wait_state(&url, "x-1", "done", Duration::from_secs(10));
    let strip = |t: &str| {
        t.lines()
            .filter(|l| !l.starts_with("ATTEMPT="))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(strip(&recs[0]), strip(&recs[1]));
    assert!(
        recs[0].contains("ATTEMPT=1") && recs[1].contains("ATTEMPT=2"),
        "{recs:?}"
    );
    let expected_args = "arg=[--fixed]\narg=[refs/heads/main]\narg=[0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c]\narg=[staging]\narg=[x-1]\n";
    assert!(recs[0].starts_with(expected_args), "{}", recs[0]);
    assert!(
        recs[0].contains(&format!("PUSHER=[{hostile}]")),
        "{}",
        recs[0]
    );
    assert!(
        recs[0].contains("BRANCH=[refs/heads/main]\n"),
        "{}",
        recs[0]
    );
    assert!(recs[0].contains("EVENT=[push]\n"), "{}", recs[0]);
    assert!(
        recs[0].contains(&format!("file=[{}]", std::str::from_utf8(&body).unwrap())),
        "{}",
        recs[0]
    );
    assert!(!Path::new("pwned").exists() && !env.path("pwned").exists());
    // The temporary file is gone after the run.
    let leftovers: Vec<_> = std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(&id))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // A replay, from the CLI, gets exactly the same again.
    let out = cli(&d.config, &["events", "replay", &id]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let recs = wait_records(&env, 3);
    assert_eq!(strip(&recs[2]), strip(&recs[0]));

    // A push without head_commit (a branch deletion): dead letter naming it.
    let mut del: serde_json::Value = serde_json::from_slice(&push(
        "refs/heads/old",
        "0000000000000000000000000000000000000000",
        "mona",
    ))
    .unwrap();
    del.as_object_mut().unwrap().remove("head_commit");
    del["deleted"] = serde_json::json!(true);
    let del = serde_json::to_vec(&del).unwrap();
    let r = post(&addr, "deploy", &gh_headers("push", "x-del", &del), &del);
    assert_eq!(r.status, 202);
    let del_id = r.json()["id"].as_str().unwrap().to_string();
    let (_, attempts) = wait_state(&url, "x-del", "dead", Duration::from_secs(10));
    assert_eq!(attempts, 1, "a missing value is not retried");
    let out = cli(&d.config, &["events", "show", &del_id]);
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(
        shown.contains("args[1]")
            && shown.contains("body.head_commit.id")
            && shown.contains("missing"),
        "{shown}"
    );
    assert_eq!(
        records(&env).len(),
        3,
        "the command must not run without its value"
    );
    assert!(d.log_text().contains("body.head_commit.id"));
}

#[test]
fn slack_slash_command_signed_and_answered_with_a_fixed_body() {
    let env = Env::new("prules-slack");
    let url = env.sqlite_url();
    let addr = format!("127.0.0.1:{}", free_port());
    let s = secret_file(&env, "slack.secret", "8f742231b10e8888abcd99yyyzzz85a5");
    let cfg = base(&addr, &url)
        + &format!(
            r#"
[[hooks]]
id = "slash"
scheme = "slack"
secrets = ["file:{s}"]
rule = {{ value = "body.command", one_of = ["/deploy", "/rollback"] }}
[hooks.response]
accepted = {{ status = 200, body = "Deploying, hang on.", headers = {{ X-Example = "it works" }} }}
duplicate = {{ status = 200, body = "Deploying, hang on." }}
ignored = {{ status = 200, body = "Unknown command." }}
"#
        );
    let d = Daemon::start(&env, &cfg, &[]);
    let cmd = |command: &str, trigger: &str| {
        form_encode(&[
            ("token", "gIkuvaNzQIHg97ATvDxqgjtO"),
            ("team_id", "T0001"),
            ("team_domain", "example"),
            ("channel_id", "C2147483705"),
            ("channel_name", "test"),
            ("user_id", "U2147483697"),
            ("user_name", "Steve"),
            ("command", command),
            ("text", "prod now"),
            ("response_url", "https://hooks.slack.com/commands/1234/5678"),
            ("trigger_id", trigger),
        ])
    };
    let body = cmd("/deploy", "13345224609.738474920.8088930838d88f008e0");
    let mut h = cli_sign(&d.config, "slash", "slash", "-", body.as_bytes(), &[]);
    h.retain(|(k, _)| !k.eq_ignore_ascii_case("content-type"));
    h.push((
        "Content-Type".into(),
        "application/x-www-form-urlencoded".into(),
    ));
    let r = post(&addr, "slash", &h, body.as_bytes());
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "Deploying, hang on.");
    assert_eq!(r.header("x-example"), Some("it works"));
    assert!(r.header("content-type").unwrap().starts_with("text/plain"));
    // The same request again is a duplicate: the same fixed answer.
    let r = post(&addr, "slash", &h, body.as_bytes());
    assert_eq!(r.text(), "Deploying, hang on.");
    assert_eq!(count_rows(&url, None), 1);
    let other = cmd("/weather", "2");
    let mut h = cli_sign(&d.config, "slash", "slash", "-", other.as_bytes(), &[]);
    h.retain(|(k, _)| !k.eq_ignore_ascii_case("content-type"));
    h.push((
        "Content-Type".into(),
        "application/x-www-form-urlencoded".into(),
    ));
    let r = post(&addr, "slash", &h, other.as_bytes());
    assert_eq!((r.status, r.text().as_str()), (200, "Unknown command."));
    assert_eq!(count_rows(&url, None), 1);
}

#[test]
fn tokens_handshakes_and_unauthenticated_hooks() {
    let env = Env::new("prules-token");
    let url = env.sqlite_url();
    let addr = format!("127.0.0.1:{}", free_port());
    let t = secret_file(&env, "t.secret", "s3cr3t-token-value");
    let cfg = base(&addr, &url)
        + &format!(
            r#"
[[hooks]]
id = "q"
scheme = "token"
token = "query.token"
secrets = ["file:{t}"]
[hooks.handshake]
rule = {{ value = "body.type", equals = "url_verification" }}
echo = "body.challenge"
json_field = "challenge"

[[hooks]]
id = "h"
scheme = "token"
token = "header.X-Static-Token"
secrets = ["file:{t}"]
delivery_header = "X-Request-Id"
rule = {{ value = "body.action", exists = true }}
[hooks.response]
ignored = {{ status = 202 }}
[hooks.handshake]
rule = {{ value = "query.validationToken", exists = true }}
echo = "query.validationToken"

[[hooks]]
id = "open"
scheme = "none"
allow_ips = ["127.0.0.1/32"]
rule = {{ value = "body.action", equals = "push" }}
"#
        );
    let d = Daemon::start(&env, &cfg, &[]);
    let json = vec![("Content-Type".to_string(), "application/json".to_string())];
    let body = br#"{"action":"push","n":1}"#;
    let r = request(
        &addr,
        "POST",
        "/hooks/q?token=s3cr3t-token-value&x=1",
        &json,
        body,
    )
    .unwrap();
    assert_eq!(r.status, 202, "{}", r.text());
    let id = r.json()["id"].as_str().unwrap().to_string();
    // The same body again: the body's digest is the delivery id.
    let r = request(
        &addr,
        "POST",
        "/hooks/q?token=s3cr3t-token-value",
        &json,
        body,
    )
    .unwrap();
    assert_eq!(r.json()["status"], "duplicate");
    for bad in [
        "/hooks/q?token=wrong",
        "/hooks/q",
        "/hooks/q?tokens=s3cr3t-token-value",
    ] {
        let r = request(&addr, "POST", bad, &json, body).unwrap();
        assert_eq!(r.status, 401, "{bad}");
    }
    // The token is not stored with the event; the rest of the query is.
    let out = cli(&d.config, &["events", "show", &id]);
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(shown.contains("x=1"), "{shown}");
    assert!(!shown.contains("s3cr3t"), "{shown}");
    // Handshake: answered with the challenge, not stored.
    let hs = br#"{"type":"url_verification","challenge":"3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"}"#;
    let r = request(
        &addr,
        "POST",
        "/hooks/q?token=s3cr3t-token-value",
        &json,
        hs,
    )
    .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(
        r.json()["challenge"],
        "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"
    );
    // An unsigned handshake is refused like anything else.
    assert_eq!(
        request(&addr, "POST", "/hooks/q", &json, hs)
            .unwrap()
            .status,
        401
    );
    assert_eq!(count_rows(&url, None), 1);

    // Header token with a plain-text echo of a query value.
    let mut h = json.clone();
    h.push(("X-Static-Token".into(), "s3cr3t-token-value".into()));
    h.push(("X-Request-Id".into(), "req-1".into()));
    let r = request(&addr, "POST", "/hooks/h?validationToken=abc%20123", &h, b"").unwrap();
    assert_eq!((r.status, r.text().as_str()), (200, "abc 123"));
    let r = request(&addr, "POST", "/hooks/h", &h, body).unwrap();
    assert_eq!(r.status, 202);
    assert_eq!(r.json()["status"], "accepted");
    // Its ignored answer is configured as 202 (a sender that wants 202).
    let mut h2 = h.clone();
    h2.retain(|(k, _)| k != "X-Request-Id");
    h2.push(("X-Request-Id".into(), "req-2".into()));
    let ig = request(&addr, "POST", "/hooks/h", &h2, br#"{"other":1}"#).unwrap();
    assert_eq!(
        (ig.status, ig.json()["status"].clone()),
        (202, "ignored".into())
    );
    let out = cli(
        &d.config,
        &["events", "show", r.json()["id"].as_str().unwrap()],
    );
    assert!(!String::from_utf8_lossy(&out.stdout).contains("s3cr3t"));

    // No authentication at all: accepted, and marked in /status and the log.
    let r = request(&addr, "POST", "/hooks/open", &json, body).unwrap();
    assert_eq!(r.status, 202, "{}", r.text());
    let r = request(
        &addr,
        "POST",
        "/hooks/open",
        &json,
        br#"{"action":"other"}"#,
    )
    .unwrap();
    assert_eq!(r.json()["status"], "ignored");
    let status = request(&addr, "GET", "/status", &[], b"").unwrap().json();
    let hooks = status["hooks"].as_array().unwrap();
    let open = hooks.iter().find(|h| h["id"] == "open").unwrap();
    assert_eq!(open["authenticated"], false);
    assert_eq!(open["ready"], true);
    let q = hooks.iter().find(|h| h["id"] == "q").unwrap();
    assert_eq!(q["authenticated"], true);
    let log = d.log_text();
    assert!(
        log.lines()
            .any(|l| l.contains("hook open") && l.contains("UNAUTHENTICATED")),
        "{log}"
    );
    assert!(!log.contains("s3cr3t-token-value"), "token in log");
}

#[test]
fn bad_rules_are_config_errors_and_refused_on_reload() {
    let env = Env::new("prules-bad");
    let url = env.sqlite_url();
    let addr = format!("127.0.0.1:{}", free_port());
    let s = secret_file(&env, "gh.secret", SECRET);
    let hook = |rule: &str| {
        format!("\n[[hooks]]\nid = \"gh\"\nscheme = \"github\"\nsecrets = [\"file:{s}\"]\nrule = {rule}\n")
    };
    let cases = [
        (
            r#"{ value = "body.ref", regex = "(unclosed" }"#,
            "hooks[0].rule.regex",
            "invalid regular expression",
        ),
        (
            r#"{ all = [{ value = "payload.ref", equals = "x" }] }"#,
            "hooks[0].rule.all[0].value",
            "unknown value reference",
        ),
        (
            r#"{ value = "body..ref", exists = true }"#,
            "hooks[0].rule.value",
            "empty path segment",
        ),
        (
            r#"{ value = "body.ref" }"#,
            "hooks[0].rule",
            "exactly one of",
        ),
        (
            r#"{ any = [{ value = "body.a", equalz = "x" }] }"#,
            "equalz",
            "unknown field",
        ),
    ];
    for (rule, key, what) in cases {
        let p = env.write("bad.toml", &(base(&addr, &url) + &hook(rule)));
        let out = Command::new(bin())
            .args(["--config", p.to_str().unwrap(), "check-config"])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(78), "{rule}: {err}");
        assert!(err.contains(key) && err.contains(what), "{rule}: {err}");
    }
    let whole = |body: &str| format!("\n[[hooks]]\nid = \"gh\"\n{body}\n");
    let gh = format!("scheme = \"github\"\nsecrets = [\"file:{s}\"]");
    let more = [
        (whole(&format!("{gh}\nrespond = \"after_action\"")), "hooks[0].respond", "needs an [hooks.action]"),
        (whole(&format!("{gh}\n[hooks.response]\naccepted = {{ status = 99 }}")), "hooks[0].response.accepted.status", "200-599"),
        (whole(&format!("{gh}\n[hooks.response]\nignored = {{ headers = {{ \"Content-Length\" = \"1\" }} }}")), "hooks[0].response.ignored.headers.Content-Length", "set by the server"),
        (whole(&format!("scheme = \"none\"\nsecrets = [\"file:{s}\"]")), "hooks[0].secrets", "checks nothing"),
        (whole(&format!("scheme = \"token\"\nsecrets = [\"file:{s}\"]")), "hooks[0].token", "needs `token`"),
        (whole(&format!("scheme = \"token\"\ntoken = \"event\"\nsecrets = [\"file:{s}\"]")), "hooks[0].token", "expected header.NAME"),
        (whole(&format!("{gh}\ntoken = \"query.t\"")), "hooks[0].token", "does not apply"),
        (whole(&format!("{gh}\n[hooks.handshake]\nrule = {{ value = \"body.x\", exists = true }}\necho = \"nope\"")), "hooks[0].handshake.echo", "unknown value reference"),
    ];
    for (text, key, what) in more {
        let p = env.write("bad3.toml", &(base(&addr, &url) + &text));
        let out = Command::new(bin())
            .args(["--config", p.to_str().unwrap(), "check-config"])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(78), "{text}: {err}");
        assert!(err.contains(key) && err.contains(what), "{text}: {err}");
    }
    let e = base(&addr, &url)
        + &format!("\n[[hooks]]\nid = \"gh\"\nscheme = \"github\"\nsecrets = [\"file:{s}\"]\n[hooks.action]\ntype = \"exec\"\ncommand = [\"/bin/true\"]\nargs = [{{ value = \"bdy.x\" }}]\n");
    let p = env.write("bad2.toml", &e);
    let out = Command::new(bin())
        .args(["--config", p.to_str().unwrap(), "check-config"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("hooks[0].action.args[0].value"), "{err}");

    // A reload with a bad rule is refused; the running rule stays.
    let good = base(&addr, &url) + &hook(r#"{ value = "body.ref", equals = "refs/heads/main" }"#);
    let mut d = Daemon::start(&env, &good, &[]);
    std::fs::write(
        &d.config,
        base(&addr, &url) + &hook(r#"{ value = "body.ref", regex = "[" }"#),
    )
    .unwrap();
    d.signal(nix::sys::signal::Signal::SIGHUP);
    let start = Instant::now();
    loop {
        let m = request(&addr, "GET", "/metrics", &[], b"").unwrap().text();
        if m.contains("webhookd_config_reloads_total{result=\"refused\"} 1") {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{}",
            d.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(d.log_text().contains("rule.regex"), "{}", d.log_text());
    let dev = push(
        "refs/heads/dev",
        "1111111111111111111111111111111111111111",
        "m",
    );
    assert_eq!(
        d.post("gh", "after-reload", &dev).json()["status"],
        "ignored"
    );
    let main = push(
        "refs/heads/main",
        "1111111111111111111111111111111111111111",
        "m",
    );
    assert_eq!(d.post("gh", "after-reload-2", &main).status, 202);
    d.signal(nix::sys::signal::Signal::SIGTERM);
    d.wait_exit(Duration::from_secs(10));
}

#[test]
fn after_action_answers_with_the_first_attempt_or_202_past_the_deadline() {
    let env = Env::new("prules-sync");
    let url = env.sqlite_url();
    let addr = format!("127.0.0.1:{}", free_port());
    let t = secret_file(&env, "t.secret", "sync-token");
    let sink = Sink::new();
    sink.set_reply(|_, _| (201, vec![], Duration::ZERO));
    let done = env.path("slow-done").display().to_string();
    let hook = |id: &str, action: &str, extra: &str| {
        format!(
            "\n[[hooks]]\nid = \"{id}\"\nscheme = \"token\"\ntoken = \"header.X-Token\"\nsecrets = [\"file:{t}\"]\ndelivery_header = \"X-Request-Id\"\nrespond = \"after_action\"\n{extra}\n[hooks.action]\n{action}\n[hooks.retry]\ninitial_delay = \"50ms\"\nmax_delay = \"50ms\"\nmax_attempts = 2\n"
        )
    };
    let cfg = base(&addr, &url)
        + &hook(
            "fast",
            "type = \"exec\"\nshell = true\ncommand = [\"echo \\\"hello $1\\\"\"]\nargs = [{ value = \"body.name\" }]",
            "respond_deadline = \"5s\"",
        )
        + &hook(
            "fails",
            "type = \"exec\"\nshell = true\ncommand = [\"echo partial; echo boom >&2; exit 3\"]",
            "respond_error_output = true",
        )
        + &hook(
            "fails-quietly",
            "type = \"exec\"\nshell = true\ncommand = [\"echo internal-detail; exit 4\"]",
            "",
        )
        + &hook(
            "slow",
            &format!("type = \"exec\"\nshell = true\ncommand = [\"sleep 1.5; touch {done}\"]"),
            "respond_deadline = \"300ms\"",
        )
        + &hook(
            "missing",
            "type = \"exec\"\ncommand = [\"/bin/echo\"]\nargs = [{ value = \"body.nope\" }]",
            "",
        )
        + &hook(
            "fwd",
            &format!("type = \"forward\"\nurl = \"{}\"", sink.url("/in")),
            "",
        );
    let d = Daemon::start(&env, &cfg, &[]);
    let h = |delivery: &str| {
        vec![
            ("Content-Type".to_string(), "application/json".to_string()),
            ("X-Token".to_string(), "sync-token".to_string()),
            ("X-Request-Id".to_string(), delivery.to_string()),
        ]
    };
    // A fast command's output comes back in the response.
    let r = post(&addr, "fast", &h("f1"), br#"{"name":"world $(id)"}"#);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), "hello world $(id)\n");
    let id = r.header("x-webhookd-event-id").unwrap().to_string();
    // The event was committed before the command ran; its result is
    // recorded right after the answer went out.
    let out = cli(&d.config, &["events", "show", &id]);
    assert!(
        out.status.success(),
        "not stored: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_state(&url, "f1", "done", Duration::from_secs(5));

    // A failing one: 500 with its output; the event stays queued for retries.
    let r = post(&addr, "fails", &h("f2"), b"{}");
    assert_eq!(r.status, 500);
    assert!(
        r.text().contains("partial") && r.text().contains("boom"),
        "{}",
        r.text()
    );
    let id = r.header("x-webhookd-event-id").unwrap().to_string();
    let start = Instant::now();
    loop {
        let out = cli(&d.config, &["events", "show", &id, "--json"]);
        let shown = String::from_utf8_lossy(&out.stdout).to_string();
        if shown.contains("\"attempts\":2") || shown.contains("\"attempts\": 2") {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "not retried: {shown}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // By default a failure says why in one line, without the output.
    let r = post(&addr, "fails-quietly", &h("f6"), b"{}");
    assert_eq!(r.status, 500);
    assert!(r.text().contains("exited with status 4"), "{}", r.text());
    assert!(!r.text().contains("internal-detail"), "{}", r.text());

    // A command that cannot run for a missing value: 500 saying which; a dead letter.
    let r = post(&addr, "missing", &h("f5"), b"{}");
    assert_eq!(r.status, 500);
    assert!(
        r.text().contains("body.nope") && r.text().contains("missing"),
        "{}",
        r.text()
    );
    wait_state(&url, "f5", "dead", Duration::from_secs(5));

    // A slow one: 202 once the deadline passes, and it still runs to the end.
    let t0 = Instant::now();
    let r = post(&addr, "slow", &h("f3"), b"{}");
    let took = t0.elapsed();
    assert_eq!(r.status, 202, "{}", r.text());
    assert!(took < Duration::from_millis(1200), "{took:?}");
    assert!(!Path::new(&done).exists());
    let id = r.json()["id"].as_str().unwrap().to_string();
    let start = Instant::now();
    while !Path::new(&done).exists() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "slow command never finished"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    wait_state(&url, "f3", "done", Duration::from_secs(5));
    assert!(!id.is_empty());

    // Forward: the target's status.
    let r = post(&addr, "fwd", &h("f4"), b"{\"a\":1}");
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.json()["status"], "done");
    assert_eq!(sink.count(), 1);
    // A duplicate answers as a duplicate at once (nothing runs twice).
    let t0 = Instant::now();
    let r = post(&addr, "fwd", &h("f4"), b"{\"a\":1}");
    assert_eq!(r.json()["status"], "duplicate");
    assert!(
        t0.elapsed() < Duration::from_millis(1500),
        "duplicate waited {:?}",
        t0.elapsed()
    );
    assert_eq!(sink.count(), 1);
}
