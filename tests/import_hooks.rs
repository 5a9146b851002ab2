//! `webhookd import-hooks` over hooks files shaped like every example in
//! adnanh/webhook's docs/Hook-Examples.md (tests/vectors/adnanh/): what
//! converts passes `check-config` and, served by the real daemon, accepts,
//! ignores and refuses the requests those docs describe, running the
//! command with the arguments and environment the docs promise (a recorder
//! script proves it); what does not convert is listed with hook id and
//! place; inline secrets land in 0600 files and nowhere else.

mod common;
use common::*;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

const INLINE_SECRETS: &[&str] = &[
    "ct-token",
    "gh-example-secret",
    "gitlab-example-token",
    "gogs-example-secret",
    "gitea-field-secret",
    "slack-legacy-token",
    "synology-api-key",
    "acr-static-token",
    "gitea-example-secret",
];

/// Writes, per run, `rec-<hook>-<n>`: argv, selected environment, and the
/// content of the file named by $ENV_VARIABLE.
fn recorder(env: &Env) -> String {
    let dir = env.dir.display();
    let script = format!(
        "#!/bin/sh\nn=$(ls {dir}/rec-$WEBHOOK_HOOK-* 2>/dev/null | wc -l)\nout={dir}/rec-$WEBHOOK_HOOK-$n\n\
         {{ for a in \"$@\"; do printf 'arg=[%s]\\n' \"$a\"; done\n\
         for v in ACTION REPO TAG DIGEST; do eval \"printf '%s=[%s]\\\\n' $v \\\"\\${{$v}}\\\"\"; done\n\
         if [ -n \"$ENV_VARIABLE\" ]; then printf 'file=['; cat \"$ENV_VARIABLE\"; printf ']\\n'; fi\n\
         printf 'cwd=[%s]\\n' \"$(pwd)\"; }} > $out.tmp\nmv $out.tmp $out\n"
    );
    let p = env.write("record.sh", &script);
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p.display().to_string()
}

/// The daemon's log, for failure messages.
static LOG: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();

fn wait_record(env: &Env, hook: &str) -> String {
    let p = env.path(&format!("rec-{hook}-0"));
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(15) {
        if let Ok(t) = std::fs::read(&p) {
            return String::from_utf8_lossy(&t).into_owned();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let log = LOG
        .get()
        .and_then(|p| std::fs::read_to_string(p).ok())
        .unwrap_or_default();
    panic!("{hook} never ran its command; daemon log:\n{log}");
}

fn fixture(env: &Env, name: &str) -> std::path::PathBuf {
    let rec = recorder(env);
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/vectors/adnanh")
            .join(name),
    )
    .unwrap()
    .replace("@RECORDER@", &rec)
    .replace("@DIR@", &env.dir.display().to_string());
    env.write(name, &text)
}

fn import(file: &Path, args: &[&str]) -> Output {
    Command::new(bin())
        .arg("import-hooks")
        .arg(file)
        .args(args)
        .output()
        .unwrap()
}

fn all_output(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn unconvertible_hooks_are_listed_and_fail_without_allow_partial() {
    let env = Env::new("import-partial");
    let file = fixture(&env, "hook-examples.json");
    let secrets = env.path("secrets");
    let out = import(&file, &["--secrets-dir", secrets.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(78), "{}", all_output(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    for (hook, place, why) in [
        (
            "scalr",
            "hooks[9].trigger-rule.match",
            "scalr-signature is not supported",
        ),
        (
            "xml",
            "hooks[12].trigger-rule.and[0].match.parameter",
            "XML",
        ),
        ("plex", "hooks[13].execute-command", "not an absolute path"),
        (
            "print-payload",
            "hooks[0].trigger-rule",
            "--allow-unauthenticated",
        ),
        ("bitbucket", "hooks[2].trigger-rule", "only an IP allowlist"),
    ] {
        assert!(
            err.lines()
                .any(|l| l.contains(&format!("hook {hook:?} at {place}")) && l.contains(why)),
            "{hook} {place}: {err}"
        );
    }
    // Nothing written when refusing.
    assert!(out.stdout.is_empty());
    assert!(!secrets.exists());
    for s in INLINE_SECRETS {
        assert!(!all_output(&out).contains(s), "secret {s} shown");
    }
}

#[test]
fn converted_examples_pass_check_config_and_serve_what_the_docs_describe() {
    let env = Env::new("import-serve");
    let file = fixture(&env, "hook-examples.json");
    let yaml = fixture(&env, "gitea.yaml");
    let secrets = env.path("secrets");
    let sd = secrets.to_str().unwrap();
    let out = import(
        &file,
        &[
            "--secrets-dir",
            sd,
            "--allow-partial",
            "--allow-unauthenticated",
        ],
    );
    assert!(out.status.success(), "{}", all_output(&out));
    let toml = String::from_utf8(out.stdout.clone()).unwrap();
    let out2 = import(&yaml, &["--secrets-dir", sd]);
    assert!(out2.status.success(), "{}", all_output(&out2));
    let toml2 = String::from_utf8(out2.stdout.clone()).unwrap();
    for s in INLINE_SECRETS {
        assert!(
            !all_output(&out).contains(s) && !all_output(&out2).contains(s),
            "secret {s} shown"
        );
    }
    // Secrets went to 0600 files and are referenced as file:.
    let gh = secrets.join("github-hmac.secret");
    assert_eq!(std::fs::read_to_string(&gh).unwrap(), "gh-example-secret");
    assert_eq!(
        std::fs::metadata(&gh).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert!(toml.contains(&format!("file:{}", gh.display())), "{toml}");
    assert!(
        toml.contains("secrets = [\"env:XXXTEST_SECRET\"]"),
        "{toml}"
    );

    // The output as printed passes check-config.
    let conf = env.write("imported.toml", &toml);
    let check = Command::new(bin())
        .args(["--config", conf.to_str().unwrap(), "check-config"])
        .env("XXXTEST_SECRET", "templated-secret")
        .output()
        .unwrap();
    assert!(check.status.success(), "{}\n{toml}", all_output(&check));

    // Served.
    let addr = format!("127.0.0.1:{}", free_port());
    let head = format!(
        "[server]\nlisten = \"{addr}\"\n[store]\nurl = \"{}\"\n[delivery]\npoll_interval = \"100ms\"\n[log]\nlevel = \"debug\"\ntarget = \"stderr\"\n",
        env.sqlite_url()
    );
    let d = Daemon::start(
        &env,
        &format!("{head}{toml}{toml2}"),
        &[("XXXTEST_SECRET", "templated-secret".into())],
    );
    let _ = LOG.set(d.log.clone());
    let json = |extra: &[(&str, &str)]| {
        let mut h = vec![("Content-Type".to_string(), "application/json".to_string())];
        h.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        h
    };
    let push = |r: &str| {
        format!(
            r#"{{"ref":"{r}","head_commit":{{"id":"c0ffee"}},"pusher":{{"name":"Adnan","full_name":"Adnan H","email":"a@example.com"}}}}"#
        )
        .into_bytes()
    };
    let post = |path: &str, h: &[(String, String)], body: &[u8]| {
        request(&addr, "POST", path, h, body).unwrap()
    };

    // GitHub: signed push to master runs with the three arguments.
    let body = push("refs/heads/master");
    let r = post(
        "/hooks/github",
        &github_headers("gh-1", &body, "gh-example-secret"),
        &body,
    );
    assert_eq!(r.status, 202, "{}", r.text());
    assert_eq!(r.text(), "I got the payload!");
    assert_eq!(r.header("access-control-allow-origin"), Some("*"));
    let rec = wait_record(&env, "github");
    assert!(
        rec.starts_with("arg=[c0ffee]\narg=[Adnan]\narg=[a@example.com]\n"),
        "{rec}"
    );
    assert!(
        rec.contains(&format!("cwd=[{}]", env.dir.display())),
        "{rec}"
    );
    let dev = push("refs/heads/dev");
    let r = post(
        "/hooks/github",
        &github_headers("gh-2", &dev, "gh-example-secret"),
        &dev,
    );
    assert_eq!(
        (r.status, r.json()["status"].clone()),
        (200, "ignored".into())
    );
    let r = post(
        "/hooks/github",
        &github_headers("gh-3", &body, "wrong-secret"),
        &body,
    );
    assert_eq!(r.status, 401);

    // Legacy SHA-1 with the secret from the environment (the template).
    let mac = {
        use hmac::{KeyInit, Mac};
        let mut m = hmac::Hmac::<sha1::Sha1>::new_from_slice(b"templated-secret").unwrap();
        m.update(&body);
        webhookd::id::hex(&m.finalize().into_bytes())
    };
    let h = json(&[
        ("X-Hub-Signature", &format!("sha1={mac}")),
        ("X-GitHub-Delivery", "tpl-1"),
        ("X-GitHub-Event", "push"),
    ]);
    assert_eq!(post("/hooks/templated", &h, &body).status, 202);
    assert!(wait_record(&env, "templated").starts_with("arg=[c0ffee]\n"));

    // GitLab: the token header.
    let gl = br#"{"object_kind":"push","user_name":"Jane Doe","ref":"refs/heads/main"}"#;
    let r = post(
        "/hooks/gitlab",
        &json(&[
            ("X-Gitlab-Token", "gitlab-example-token"),
            ("X-Gitlab-Event", "Push Hook"),
        ]),
        gl,
    );
    assert_eq!(
        (r.status, r.text().as_str()),
        (202, "Executing redeploy script")
    );
    assert!(wait_record(&env, "gitlab").starts_with("arg=[Jane Doe]\n"));
    let r = post("/hooks/gitlab", &json(&[("X-Gitlab-Token", "nope")]), gl);
    assert_eq!(r.status, 401);

    // Gogs and Gitea: HMAC-SHA256 hex in their own headers.
    let sig = |secret: &str, b: &[u8]| {
        webhookd::id::hex(&webhookd::verify::hmac_sha256(secret.as_bytes(), &[b]))
    };
    let r = post(
        "/hooks/gogs",
        &json(&[
            ("X-Gogs-Signature", &sig("gogs-example-secret", &body)),
            ("X-Gogs-Delivery", "gogs-1"),
            ("X-Gogs-Event", "push"),
        ]),
        &body,
    );
    assert_eq!(r.status, 202, "{}", r.text());
    assert!(
        wait_record(&env, "gogs").starts_with("arg=[c0ffee]\narg=[Adnan]\narg=[a@example.com]\n")
    );
    let main = push("refs/heads/main");
    let r = post(
        "/hooks/gitea",
        &json(&[
            ("X-Gitea-Signature", &sig("gitea-example-secret", &main)),
            ("X-Gitea-Delivery", "gitea-1"),
            ("X-Gitea-Event", "push"),
        ]),
        &main,
    );
    assert_eq!(r.status, 202, "{}", r.text());
    assert!(wait_record(&env, "gitea").starts_with("arg=[c0ffee]\narg=[Adnan H]\narg=[push]\n"));

    // Gitea's old secret-in-the-body form.
    let with_secret = br#"{"secret":"gitea-field-secret","ref":"refs/heads/master","head_commit":{"id":"d00d"},"pusher":{"name":"g"}}"#;
    assert_eq!(
        post("/hooks/gitea-secret-field", &json(&[]), with_secret).status,
        202
    );
    assert!(wait_record(&env, "gitea-secret-field").starts_with("arg=[d00d]\narg=[g]\n"));
    let wrong = br#"{"secret":"guess","ref":"refs/heads/master"}"#;
    assert_eq!(
        post("/hooks/gitea-secret-field", &json(&[]), wrong).status,
        401
    );

    // Slack slash command with the legacy verification token.
    let form = vec![(
        "Content-Type".to_string(),
        "application/x-www-form-urlencoded".to_string(),
    )];
    let r = post(
        "/hooks/slack",
        &form,
        b"token=slack-legacy-token&command=%2Fredeploy&text=now&user_name=Steve",
    );
    assert_eq!(
        (r.status, r.text().as_str()),
        (202, "Executing redeploy script")
    );
    wait_record(&env, "slack");
    assert_eq!(
        post("/hooks/slack", &form, b"token=x&command=%2Fredeploy").status,
        401
    );

    // The GET-query token: ?token=42 works, without it does not.
    assert_eq!(post("/hooks/simple-one", &json(&[]), b"{}").status, 401);
    let r = post("/hooks/simple-one?token=42", &json(&[]), b"{}");
    assert_eq!(
        (r.status, r.text().as_str()),
        (202, "Executing simple webhook...")
    );

    // Bitbucket: only the allowlist (loopback here) decides.
    let bb = br#"{"actor":{"username":"bb-user"}}"#;
    assert_eq!(post("/hooks/bitbucket", &json(&[]), bb).status, 202);
    assert!(wait_record(&env, "bitbucket").starts_with("arg=[bb-user]\n"));

    // Pass a file to the command, base64-decoded.
    let png = b"\x89PNG\r\n\x1a\n-binary-";
    let b64 = webhookd::verify::encode_base64(png);
    let r = post(
        "/hooks/test-file-webhook",
        &json(&[]),
        format!(r#"{{"binary":"{b64}"}}"#).as_bytes(),
    );
    assert!(r.status == 200 || r.status == 202, "{}", r.text());
    wait_record(&env, "test-file-webhook");
    let rec = std::fs::read(env.path("rec-test-file-webhook-0")).unwrap();
    let mut want = b"file=[".to_vec();
    want.extend_from_slice(png);
    want.extend_from_slice(b"]\n");
    assert!(
        rec.windows(want.len()).any(|w| w == want.as_slice()),
        "{}",
        String::from_utf8_lossy(&rec)
    );

    // Travis: payload=<JSON> form, state and branch.
    let travis = |state: &str| {
        format!(
            "payload={}",
            format!(r#"{{"state":"{state}","branch":"master"}}"#)
                .replace('{', "%7B")
                .replace('}', "%7D")
                .replace('"', "%22")
                .replace(':', "%3A")
                .replace(',', "%2C")
        )
    };
    assert_eq!(
        post("/hooks/travis", &form, travis("passed").as_bytes()).status,
        202
    );
    let r = post("/hooks/travis", &form, travis("failed").as_bytes());
    assert_eq!(r.json()["status"], "ignored");

    // SendGrid: an array body, addressed as root.N.
    let sg = br#"[{"event":"processed"},{"event":"deferred","attempt":"5"}]"#;
    assert_eq!(post("/hooks/sendgrid", &json(&[]), sg).status, 202);
    let sg2 = br#"[{"event":"processed"},{"event":"delivered"}]"#;
    assert_eq!(
        post("/hooks/sendgrid", &json(&[]), sg2).json()["status"],
        "ignored"
    );

    // Static string arguments.
    assert_eq!(
        post(
            "/hooks/string-args",
            &json(&[]),
            br#"{"pusher":{"email":"s@example.com"}}"#
        )
        .status,
        202
    );
    assert!(wait_record(&env, "string-args")
        .starts_with("arg=[-e]\narg=[123123]\narg=[s@example.com]\n"));

    // Synology: the api_key header; the relative command found in its directory.
    let r = post(
        "/hooks/synology",
        &json(&[("api_key", "synology-api-key")]),
        br#"{"message":"Disk 1 is failing"}"#,
    );
    assert_eq!((r.status, r.text().as_str()), (202, "Request accepted"));
    assert!(wait_record(&env, "synology").starts_with("arg=[Disk 1 is failing]\n"));

    // ACR: token header plus action rule; values in the environment.
    let acr = br#"{"action":"push","target":{"repository":"hello-world","tag":"v1","digest":"sha256:abc"}}"#;
    let r = post(
        "/hooks/acr-push-event",
        &json(&[("X-Static-Token", "acr-static-token")]),
        acr,
    );
    assert_eq!(r.status, 202);
    let rec = wait_record(&env, "acr-push-event");
    assert!(
        rec.contains("ACTION=[push]\nREPO=[hello-world]\nTAG=[v1]\nDIGEST=[sha256:abc]\n"),
        "{rec}"
    );
    let del = br#"{"action":"delete","target":{"repository":"hello-world"}}"#;
    let r = post(
        "/hooks/acr-push-event",
        &json(&[("X-Static-Token", "acr-static-token")]),
        del,
    );
    assert_eq!(r.json()["status"], "ignored");

    // print-payload: the whole body as one argument.
    let r = post("/hooks/print-payload", &json(&[]), br#"{"hello":"world"}"#);
    assert_eq!(r.status, 202);
    assert!(wait_record(&env, "print-payload").starts_with("arg=[{\"hello\":\"world\"}]\n"));

    // incoming-payload-content-type: a form body sent as text/plain.
    let plain = vec![("Content-Type".to_string(), "text/plain".to_string())];
    let r = post(
        "/hooks/wrong-content-type?token=ct-token",
        &plain,
        b"name=from+form",
    );
    assert_eq!(r.status, 202, "{}", r.text());
    assert!(wait_record(&env, "wrong-content-type").starts_with("arg=[from form]\n"));

    // No secret in the daemon's log either.
    let log = d.log_text();
    for s in INLINE_SECRETS {
        assert!(!log.contains(s), "secret {s} in the log");
    }
}

#[test]
fn an_inline_secret_needs_a_secrets_dir_and_is_never_printed() {
    let env = Env::new("import-nodir");
    let yaml = fixture(&env, "gitea.yaml");
    let out = import(&yaml, &[]);
    assert_eq!(out.status.code(), Some(78));
    let all = all_output(&out);
    assert!(all.contains("--secrets-dir"), "{all}");
    assert!(!all.contains("gitea-example-secret"), "{all}");
    let out = import(&env.path("missing.json"), &[]);
    assert_eq!(out.status.code(), Some(66), "{}", all_output(&out));
    let bad = env.write("bad.json", "{\"id\": 1");
    let out = import(&bad, &[]);
    assert_eq!(out.status.code(), Some(78), "{}", all_output(&out));
}
