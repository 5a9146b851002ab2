//! The command line: help and exit codes, check-config errors that name the
//! file and key, `sign` against GitHub's documented vector, `migrate` run
//! twice at once, and `events list` / `events show`.

mod common;
use common::*;
use std::io::Write;
use std::process::{Command, Output, Stdio};

fn run(args: &[&str], stdin: &[u8]) -> Output {
    let mut c = Command::new(bin())
        .args(args)
        .env_remove("WEBHOOKD_CONFIG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    c.stdin.take().unwrap().write_all(stdin).unwrap();
    c.wait_with_output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn help_version_and_usage_errors() {
    let o = run(&["--help"], b"");
    assert!(o.status.success());
    assert!(text(&o.stdout).contains("events list"));
    let o = run(&["--version"], b"");
    assert!(text(&o.stdout).starts_with("webhookd "));
    let o = run(&["frobnicate"], b"");
    assert_eq!(o.status.code(), Some(64));
    assert!(text(&o.stderr).contains("unknown command"));
}

#[test]
fn check_config_reports_file_key_and_problem() {
    let env = Env::new("checkcfg");
    let bad = env.write("bad.toml", "[store]\nbatch_max = \"many\"\n");
    let o = run(&["--config", bad.to_str().unwrap(), "check-config"], b"");
    assert_eq!(o.status.code(), Some(78));
    let err = text(&o.stderr);
    assert!(
        err.contains("bad.toml") && err.contains("batch_max"),
        "{err}"
    );

    let missing = env.write(
        "missing.toml",
        "[[hooks]]\nid = \"gh\"\nscheme = \"github\"\nsecrets = [\"file:/nonexistent/gh.secret\"]\n",
    );
    let o = run(
        &["--config", missing.to_str().unwrap(), "check-config"],
        b"",
    );
    assert_eq!(o.status.code(), Some(78));
    assert!(
        text(&o.stderr).contains("/nonexistent/gh.secret"),
        "{}",
        text(&o.stderr)
    );

    let secret = env.write("gh.secret", SECRET);
    let good = env.write(
        "good.toml",
        &config("127.0.0.1:1", &env.sqlite_url(), &secret, ""),
    );
    let o = run(&["--config", good.to_str().unwrap(), "check-config"], b"");
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(text(&o.stdout).contains("OK"));
    assert!(!text(&o.stdout).contains(SECRET));

    let o = run(
        &[
            "--config",
            env.path("absent.toml").to_str().unwrap(),
            "check-config",
        ],
        b"",
    );
    assert_eq!(o.status.code(), Some(78));
    assert!(
        text(&o.stderr).contains("cannot read config file"),
        "{}",
        text(&o.stderr)
    );
}

#[test]
fn sign_reproduces_githubs_documented_vector() {
    let env = Env::new("sign");
    let secret = env.write("gh.secret", "It's a Secret to Everybody\n");
    let cfg = env.write(
        "w.toml",
        &config("127.0.0.1:1", &env.sqlite_url(), &secret, ""),
    );
    let o = run(
        &[
            "--config",
            cfg.to_str().unwrap(),
            "sign",
            "--hook",
            "gh",
            "--delivery",
            "abc",
        ],
        b"Hello, World!",
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
    let out = text(&o.stdout);
    assert!(
        out.contains("X-Hub-Signature-256: sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"),
        "{out}"
    );
    assert!(out.contains("X-GitHub-Delivery: abc"), "{out}");
    let o = run(
        &["--config", cfg.to_str().unwrap(), "sign", "--hook", "nope"],
        b"",
    );
    assert_eq!(o.status.code(), Some(1));
}

#[test]
fn migrate_twice_at_once_on_postgres() {
    let env = Env::new("migrate");
    let secret = env.write("gh.secret", SECRET);
    let url = pg_url();
    let cfg = env.write("w.toml", &config("127.0.0.1:1", &url, &secret, ""));
    let kids: Vec<_> = (0..3)
        .map(|_| {
            Command::new(bin())
                .args(["--config", cfg.to_str().unwrap(), "migrate"])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let outs: Vec<Output> = kids
        .into_iter()
        .map(|k| k.wait_with_output().unwrap())
        .collect();
    for o in &outs {
        assert!(o.status.success(), "{}", text(&o.stderr));
    }
    let latest = webhookd::store::migrations::latest(webhookd::store::migrations::POSTGRES);
    let steps = webhookd::store::migrations::POSTGRES.len();
    let applied: usize = outs
        .iter()
        .filter(|o| text(&o.stdout).contains(&format!("applied {steps} migration")))
        .count();
    assert_eq!(applied, 1, "exactly one process applies the migrations");
    let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    let n: i64 = c
        .query_one("SELECT count(*) FROM webhookd_schema", &[])
        .unwrap()
        .get(0);
    assert_eq!(n, steps as i64);
    let by: Option<String> = c
        .query_one(
            "SELECT applied_by FROM webhookd_schema WHERE version = $1",
            &[&latest],
        )
        .unwrap()
        .get(0);
    assert_eq!(by.as_deref(), Some(env!("CARGO_PKG_VERSION")));
}

/// A database migrated by a newer webhookd (a downgrade): every command
/// refuses it with exit 69, says which version migrated it and what to do,
/// and changes nothing.
#[test]
fn a_newer_schema_is_refused_and_left_untouched() {
    let env = Env::new("too-new");
    let secret = env.write("gh.secret", SECRET);
    let db = env.path("events.db");
    let addr = format!("127.0.0.1:{}", free_port());
    let cfg = env.write("w.toml", &config(&addr, &env.sqlite_url(), &secret, ""));
    let c = cfg.to_str().unwrap();
    assert!(run(&["--config", c, "migrate"], b"").status.success());
    {
        let conn = rusqlite::Connection::open(&db).unwrap();
        conn.execute(
            "INSERT INTO webhookd_schema (version, name, applied_at, applied_by) VALUES (99, 'future', 0, '9.9.9')",
            [],
        )
        .unwrap();
    }
    let before = std::fs::read(&db).unwrap();
    for args in [
        vec!["--config", c, "migrate"],
        vec!["--config", c, "events", "list"],
        vec!["--config", c, "serve"],
    ] {
        let o = run(&args, b"");
        let err = text(&o.stderr);
        assert_eq!(o.status.code(), Some(69), "{args:?}: {err}");
        assert!(
            err.contains(&format!(
                "database schema version 99 is newer than this webhookd knows ({}",
                webhookd::store::migrations::latest(webhookd::store::migrations::SQLITE)
            )) && err.contains("migrated by webhookd 9.9.9")
                && err.contains("install that version (or newer) again"),
            "{args:?}: {err}"
        );
    }
    assert_eq!(std::fs::read(&db).unwrap(), before, "the database changed");
}

#[test]
fn events_list_and_show() {
    let env = Env::new("events");
    let secret = env.write("gh.secret", SECRET);
    let addr = format!("127.0.0.1:{}", free_port());
    let d = Daemon::start(&env, &config(&addr, &env.sqlite_url(), &secret, ""), &[]);
    let body = b"{\"raw\": \"bytes \\u00e9\"}\n";
    let id = d.post("gh", "ev-1", body).json()["id"]
        .as_str()
        .unwrap()
        .to_string();
    d.post("gh", "ev-2", b"{}");
    let cfg = d.config.to_str().unwrap().to_string();

    let o = run(&["--config", &cfg, "events", "list", "--json"], b"");
    assert!(o.status.success(), "{}", text(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 2);
    assert_eq!(v[1]["delivery_id"], "ev-1", "newest first");

    let o = run(
        &["--config", &cfg, "events", "list", "--hook", "other"],
        b"",
    );
    assert_eq!(text(&o.stdout).lines().count(), 1, "header only");

    let o = run(&["--config", &cfg, "events", "show", &id, "--body"], b"");
    assert_eq!(o.stdout, body, "body is byte-identical");

    let o = run(&["--config", &cfg, "events", "show", &id], b"");
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["hook"], "gh");
    let headers = v["headers"].to_string();
    assert!(headers.contains("x-github-delivery"), "{headers}");

    let o = run(&["--config", &cfg, "events", "show", "NOPE"], b"");
    assert_eq!(o.status.code(), Some(1));
}
