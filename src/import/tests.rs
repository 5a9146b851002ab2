use super::*;

fn opts() -> Options {
    Options {
        secrets_dir: Some(PathBuf::from("/etc/webhookd/secrets")),
        allow_unauthenticated: false,
    }
}

fn conv(text: &str) -> Conversion {
    convert(text, &opts()).unwrap()
}

#[test]
fn github_example_becomes_a_github_hook_with_a_rule() {
    let c = conv(
        r#"[{"id":"webhook","execute-command":"/home/adnan/redeploy-go-webhook.sh",
        "command-working-directory":"/home/adnan/go",
        "pass-arguments-to-command":[{"source":"payload","name":"head_commit.id"},{"source":"payload","name":"pusher.name"}],
        "trigger-rule":{"and":[
          {"match":{"type":"payload-hmac-sha256","secret":"mysecret","parameter":{"source":"header","name":"X-Hub-Signature-256"}}},
          {"match":{"type":"value","value":"refs/heads/master","parameter":{"source":"payload","name":"ref"}}}]}}]"#,
    );
    assert!(c.problems.is_empty(), "{:?}", c.problems);
    assert!(!c.toml.contains("mysecret"), "{}", c.toml);
    assert_eq!(c.secrets.len(), 1);
    assert_eq!(c.secrets[0].bytes, b"mysecret");
    let t: toml::Table = toml::from_str(&c.toml).unwrap();
    let h = &t["hooks"][0];
    assert_eq!(h["scheme"].as_str(), Some("github"));
    assert_eq!(
        h["secrets"][0].as_str(),
        Some("file:/etc/webhookd/secrets/webhook-hmac.secret")
    );
    assert_eq!(h["rule"]["value"].as_str(), Some("body.ref"));
    assert_eq!(h["rule"]["equals"].as_str(), Some("refs/heads/master"));
    assert_eq!(
        h["action"]["args"][1]["value"].as_str(),
        Some("body.pusher.name")
    );
}

#[test]
fn templates_become_references_and_others_are_reported() {
    let c = conv(
        r#"[{"id":"a","execute-command":"/bin/true","trigger-rule":{"match":{"type":"payload-hmac-sha1",
           "secret":"{{ getenv "XXXTEST_SECRET" | js }}","parameter":{"source":"header","name":"X-Hub-Signature"}}}},
           {"id":"b","execute-command":"/bin/true","trigger-rule":{"match":{"type":"value",
           "value":"{{ credential "tok" | js }}","parameter":{"source":"url","name":"token"}}}},
           {"id":"c","execute-command":"{{ .Foo }}","trigger-rule":{"match":{"type":"value",
           "value":"{{ getenv "T" }}","parameter":{"source":"header","name":"X-Token"}}}}]"#,
    );
    let t: toml::Table = toml::from_str(&c.toml).unwrap();
    assert_eq!(
        t["hooks"][0]["secrets"][0].as_str(),
        Some("env:XXXTEST_SECRET")
    );
    assert_eq!(t["hooks"][0]["legacy_sha1"].as_bool(), Some(true));
    assert_eq!(t["hooks"][1]["scheme"].as_str(), Some("token"));
    assert_eq!(t["hooks"][1]["token"].as_str(), Some("query.token"));
    assert_eq!(t["hooks"][1]["secrets"][0].as_str(), Some("credential:tok"));
    assert!(c.secrets.is_empty());
    assert_eq!(c.skipped, 1);
    let p = &c.problems.iter().find(|p| p.hook == "c").unwrap();
    assert_eq!(p.place, "hooks[2].execute-command");
}

#[test]
fn unconvertible_things_are_listed_with_hook_and_place() {
    let c = conv(
        r#"- id: s
  execute-command: /bin/true
  trigger-rule:
    or:
      - match: {type: payload-hmac-sha256, secret: x, parameter: {source: header, name: X-Sig}}
      - match: {type: value, value: a, parameter: {source: payload, name: b}}
- id: open
  execute-command: /bin/true
"#,
    );
    assert_eq!(c.converted, 0);
    let places: Vec<String> = c.problems.iter().map(|p| p.to_string()).collect();
    assert!(
        places
            .iter()
            .any(|p| p.contains("hook \"s\" at hooks[0].trigger-rule.or[0].match")),
        "{places:?}"
    );
    assert!(
        places
            .iter()
            .any(|p| p.contains("hook \"open\"") && p.contains("--allow-unauthenticated")),
        "{places:?}"
    );
    assert!(!places.iter().any(|p| p.contains(": x")), "{places:?}");
}

#[test]
fn inline_secret_without_secrets_dir_is_a_problem_not_an_echo() {
    let c = convert(
        r#"[{"id":"g","execute-command":"/bin/true","trigger-rule":{"match":{"type":"value","value":"hunter2",
        "parameter":{"source":"header","name":"X-Gitlab-Token"}}}}]"#,
        &Options::default(),
    )
    .unwrap();
    assert_eq!(c.converted, 0);
    let all = format!("{:?}{}", c.problems, c.toml);
    assert!(all.contains("--secrets-dir"), "{all}");
    assert!(!all.contains("hunter2"), "{all}");
}

#[test]
fn or_not_regex_and_several_signatures() {
    let c = conv(
        r#"[{"id":"r","execute-command":"/bin/true","trigger-rule":{"and":[
          {"match":{"type":"payload-hmac-sha512","secret":"k","parameter":{"source":"header","name":"X-Sig"}}},
          {"or":[{"match":{"type":"value","value":"refs/heads/main","parameter":{"source":"payload","name":"ref"}}},
                 {"match":{"type":"regex","regex":"^refs/tags/v","parameter":{"source":"payload","name":"ref"}}}]},
          {"not":{"match":{"type":"value","value":"true","parameter":{"source":"payload","name":"deleted"}}}}]}},
          {"id":"two","execute-command":"/bin/true","trigger-rule":{"and":[
          {"match":{"type":"payload-hmac-sha256","secret":"a","parameter":{"source":"header","name":"X-A"}}},
          {"match":{"type":"payload-hmac-sha256","secret":"b","parameter":{"source":"header","name":"X-B"}}}]}},
          {"id":"r","execute-command":"/bin/true","http-methods":["GET","POST"],"trigger-rule":{"match":{"type":"value","value":"t","parameter":{"source":"url","name":"token"}}}},
          {"id":"badre","execute-command":"/bin/true","trigger-rule":{"and":[
          {"match":{"type":"value","value":"t","parameter":{"source":"url","name":"token"}}},
          {"match":{"type":"regex","regex":"(?<!x)y","parameter":{"source":"payload","name":"a"}}}]}}]"#,
    );
    let t: toml::Table = toml::from_str(&c.toml).unwrap();
    let h = &t["hooks"][0];
    assert_eq!(h["scheme"].as_str(), Some("hmac"));
    assert_eq!(h["algorithm"].as_str(), Some("sha512"));
    let all = h["rule"]["all"].as_array().unwrap();
    assert_eq!(all[0]["any"][1]["regex"].as_str(), Some("^refs/tags/v"));
    assert_eq!(all[1]["not"]["value"].as_str(), Some("body.deleted"));
    // The compiled rule is valid for webhookd.
    let spec: crate::config::RuleSpec = h["rule"].clone().try_into().unwrap();
    crate::payload::Rule::compile(&spec, "rule").unwrap();
    assert_eq!(t["hooks"].as_array().unwrap().len(), 1, "{}", c.toml);
    let msgs: Vec<String> = c.problems.iter().map(|p| p.to_string()).collect();
    assert!(
        msgs.iter()
            .any(|m| m.contains("\"two\"") && m.contains("more than one")),
        "{msgs:?}"
    );
    assert!(
        msgs.iter()
            .any(|m| m.contains("hooks[2].http-methods") && m.contains("GET")),
        "{msgs:?}"
    );
    assert!(
        msgs.iter()
            .any(|m| m.contains("hooks[2].id") && m.contains("came earlier")),
        "{msgs:?}"
    );
    assert!(
        msgs.iter()
            .any(|m| m.contains("hooks[3].trigger-rule.and[1].match.regex")),
        "{msgs:?}"
    );
}

#[test]
fn value_matches_next_to_a_signature_stay_rules() {
    // JIRA-like: a project key next to an HMAC is a rule, not a token.
    let c = conv(
        r#"[{"id":"j","execute-command":"/bin/true","trigger-rule":{"and":[
          {"match":{"type":"payload-hmac-sha256","secret":"s","parameter":{"source":"header","name":"X-Hub-Signature-256"}}},
          {"match":{"type":"value","value":"PROJ","parameter":{"source":"payload","name":"issue.fields.project.key"}}}]}},
          {"id":"k","execute-command":"/bin/true","trigger-rule":{"and":[
          {"match":{"type":"value","value":"PROJ","parameter":{"source":"payload","name":"issue.fields.project.key"}}}]}}]"#,
    );
    assert!(c.problems.is_empty(), "{:?}", c.problems);
    let t: toml::Table = toml::from_str(&c.toml).unwrap();
    assert_eq!(t["hooks"][0]["scheme"].as_str(), Some("github"));
    assert_eq!(t["hooks"][0]["rule"]["equals"].as_str(), Some("PROJ"));
    // Alone, the same match is the only check there is: a token, said so.
    assert_eq!(t["hooks"][1]["scheme"].as_str(), Some("token"));
    assert!(c
        .toml
        .contains("# from adnanh/webhook's value match on body.issue.fields.project.key"));
}
