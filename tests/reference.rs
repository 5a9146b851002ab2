//! docs/reference.toml, the one source of the man pages and completions, is
//! kept true here: the config keys it documents are exactly the keys the real
//! parser accepts (asked of the binary, section by section), its defaults are
//! the parser's, its commands, options and exit codes are `webhookd --help`'s
//! and the README's, the README's config examples use only documented keys
//! (with the documented defaults in the complete example), the rendered man
//! pages pass `man --warnings`, and the bash completion completes.

mod common;
use common::*;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn reference() -> toml::Table {
    let text = std::fs::read_to_string(Path::new(ROOT).join("docs/reference.toml")).unwrap();
    text.parse().expect("docs/reference.toml parses")
}

fn readme() -> String {
    std::fs::read_to_string(Path::new(ROOT).join("README.md")).unwrap()
}

fn arr<'a>(t: &'a toml::Table, k: &str) -> &'a Vec<toml::Value> {
    t[k].as_array()
        .unwrap_or_else(|| panic!("reference: {k} is an array"))
}

fn s<'a>(v: &'a toml::Value, k: &str) -> &'a str {
    v.get(k)
        .and_then(|x| x.as_str())
        .unwrap_or_else(|| panic!("reference entry without {k}: {v:?}"))
}

/// (section name with variant, probe, documented keys, tag key, defaults)
struct Section {
    name: String,
    probe: String,
    keys: BTreeSet<String>,
    defaults: BTreeMap<String, String>,
    /// A table that takes its own keys plus those of another section
    /// (`[[hooks.actions]]`: `id`, `rule`... and the fields of an action
    /// type): serde's unknown-field list names only the other section's.
    inherits: Option<String>,
}

fn sections() -> Vec<Section> {
    arr(&reference(), "config")
        .iter()
        .map(|sec| {
            let mut name = s(sec, "section").to_string();
            if let Some(v) = sec.get("variant").and_then(|v| v.as_str()) {
                name = format!("{name} ({v})");
            }
            let keys: Vec<&toml::Value> = sec["keys"].as_array().unwrap().iter().collect();
            Section {
                name,
                probe: s(sec, "probe").to_string(),
                inherits: sec
                    .get("inherits")
                    .and_then(|v| v.as_str())
                    .map(String::from),
                keys: keys.iter().map(|k| s(k, "key").to_string()).collect(),
                defaults: keys
                    .iter()
                    .filter_map(|k| {
                        k.get("default")
                            .map(|d| (s(k, "key").to_string(), d.as_str().unwrap().to_string()))
                    })
                    .collect(),
            }
        })
        .collect()
}

/// The keys the parser accepts in a section: add an unknown key and read
/// serde's "unknown field `x`, expected one of `a`, `b`" from check-config.
fn accepted_keys(env: &Env, probe: &str) -> BTreeSet<String> {
    let path = env.write("probe.toml", &format!("{probe}\nzz_probe_key = 1\n"));
    let out = Command::new(bin())
        .args(["--config", path.to_str().unwrap(), "check-config"])
        .env_remove("WEBHOOKD_CONFIG")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(78), "probe {probe:?}: {err}");
    let marker = "unknown field `zz_probe_key`, expected ";
    let at = err
        .find(marker)
        .unwrap_or_else(|| panic!("probe {probe:?}: no unknown-field error: {err}"));
    let rest = err[at + marker.len()..].lines().next().unwrap_or("");
    rest.split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

#[test]
fn documented_config_keys_are_exactly_the_parsers() {
    let env = Env::new("ref-keys");
    let mut problems = Vec::new();
    let all = sections();
    for sec in &all {
        let accepted = accepted_keys(&env, &sec.probe);
        let mut documented = sec.keys.clone();
        if let Some(parent) = &sec.inherits {
            let parent = all
                .iter()
                .find(|p| &p.name == parent)
                .unwrap_or_else(|| panic!("[{}] inherits unknown {parent}", sec.name));
            // Its own keys are taken by the table itself: never in the
            // parser's list of the inherited type's fields.
            for k in &sec.keys {
                if k != "type" && accepted.contains(k) {
                    problems.push(format!(
                        "[{}] {k}: documented as its own key, but the parser takes it as a field of {}",
                        sec.name, parent.name
                    ));
                }
            }
            documented = parent.keys.clone();
        }
        // An internally tagged table: serde lists the variant's fields, not the tag.
        if sec.name.contains('(') {
            documented.remove("type");
        }
        let missing: Vec<_> = accepted.difference(&documented).collect();
        let stale: Vec<_> = documented.difference(&accepted).collect();
        if !missing.is_empty() {
            problems.push(format!(
                "[{}]: the parser accepts {missing:?}, docs/reference.toml does not document them",
                sec.name
            ));
        }
        if !stale.is_empty() {
            problems.push(format!(
                "[{}]: docs/reference.toml documents {stale:?}, the parser refuses them",
                sec.name
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn documented_defaults_are_the_parsers() {
    let parse = |text: &str| {
        webhookd::config::Config::parse(Path::new("/probe.toml"), text)
            .map(|c| format!("{c:?}"))
            .unwrap_or_else(|e| panic!("{text:?}: {e}"))
    };
    let mut problems = Vec::new();
    let mut checked = 0;
    for sec in sections() {
        let base = parse(&sec.probe);
        for (key, default) in &sec.defaults {
            let with = parse(&format!("{}\n{key} = {default}\n", sec.probe));
            if with != base {
                problems.push(format!(
                    "[{}] {key}: documented default {default} is not what the parser uses when it is left out",
                    sec.name
                ));
            }
            checked += 1;
        }
    }
    assert!(checked > 40, "only {checked} defaults checked");
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// Lines of a `--help` section ("COMMANDS:") indented by exactly four spaces,
/// cut at the first run of two spaces (the description).
fn help_section(help: &str, title: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut inside = false;
    for line in help.lines() {
        if !line.starts_with(' ') && !line.is_empty() {
            inside = line.trim_end() == title;
            continue;
        }
        if inside && line.starts_with("    ") && !line.starts_with("     ") {
            let t = line.trim_start();
            out.push(t.split("  ").next().unwrap().trim().to_string());
        }
    }
    out
}

fn numbers_before_words(text: &str) -> BTreeSet<i64> {
    // "0 ok, 1 not found, 64 usage, ..." -> {0, 1, 64, ...}
    text.split(',')
        .filter_map(|part| part.split_whitespace().next()?.parse().ok())
        .collect()
}

fn reference_usages() -> BTreeSet<String> {
    arr(&reference(), "commands")
        .iter()
        .map(|c| s(c, "usage").to_string())
        .collect()
}

fn reference_exit_codes() -> BTreeSet<i64> {
    arr(&reference(), "exit_codes")
        .iter()
        .map(|e| e["code"].as_integer().unwrap())
        .collect()
}

#[test]
fn help_shows_the_documented_commands_options_and_exit_codes() {
    let out = Command::new(bin()).arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout).into_owned();

    let commands: BTreeSet<String> = help_section(&help, "COMMANDS:").into_iter().collect();
    assert_eq!(
        commands,
        reference_usages(),
        "`webhookd --help` COMMANDS and docs/reference.toml differ"
    );

    let options: BTreeSet<String> = help_section(&help, "OPTIONS:").into_iter().collect();
    let documented: BTreeSet<String> = arr(&reference(), "options")
        .iter()
        .map(|o| s(o, "flags").to_string())
        .collect();
    assert_eq!(
        options, documented,
        "`webhookd --help` OPTIONS and docs/reference.toml differ"
    );

    let codes_text = help
        .split("EXIT CODES:")
        .nth(1)
        .expect("--help has EXIT CODES");
    let codes = numbers_before_words(&codes_text.replace('\n', " "));
    assert_eq!(
        codes,
        reference_exit_codes(),
        "`webhookd --help` EXIT CODES and docs/reference.toml differ"
    );
}

/// The README's "## NAME" section.
fn readme_section(readme: &str, title: &str) -> String {
    let start = readme
        .find(&format!("\n## {title}\n"))
        .unwrap_or_else(|| panic!("README has no section {title}"));
    let rest = &readme[start + title.len() + 5..];
    rest[..rest.find("\n## ").unwrap_or(rest.len())].to_string()
}

fn code_blocks(text: &str, lang: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur: Option<String> = None;
    for line in text.lines() {
        match &mut cur {
            None if line.trim_start().starts_with("```") => {
                if line.trim_start().trim_start_matches('`') == lang {
                    cur = Some(String::new());
                } else {
                    cur = Some("\u{0}skip".into());
                }
            }
            Some(c) if line.trim_start().starts_with("```") => {
                if !c.starts_with('\u{0}') {
                    out.push(std::mem::take(c));
                }
                cur = None;
            }
            Some(c) => {
                c.push_str(line);
                c.push('\n');
            }
            None => {}
        }
    }
    out
}

#[test]
fn readme_command_line_and_exit_codes_match_the_reference() {
    let section = readme_section(&readme(), "Command line");
    let block = &code_blocks(&section, "")[0];
    let usages: BTreeSet<String> = block
        .lines()
        .filter_map(|l| l.strip_prefix("webhookd "))
        .filter(|l| !l.starts_with("--"))
        .map(|l| {
            let l = l.strip_prefix("[--config PATH] ").unwrap_or(l);
            l.split("  ").next().unwrap().trim().to_string()
        })
        .collect();
    assert_eq!(
        usages,
        reference_usages(),
        "README \"Command line\" and docs/reference.toml differ"
    );
    let para = section
        .split("\n\n")
        .find(|p| p.starts_with("Exit codes"))
        .expect("README has an \"Exit codes\" paragraph");
    let after_colon = para.split_once(':').unwrap().1.replace('\n', " ");
    assert_eq!(
        numbers_before_words(&after_colon),
        reference_exit_codes(),
        "README exit codes and docs/reference.toml differ"
    );
}

/// (section, key, value text, comment) of each `key = value` line of a TOML block.
fn toml_lines(block: &str) -> Vec<(String, String, String, String)> {
    let mut out = Vec::new();
    let mut section = String::new();
    for line in block.lines() {
        let (code, comment) = match line.find(" #") {
            Some(i) if !line[..i].contains('"') || line[..i].matches('"').count() % 2 == 0 => {
                (&line[..i], &line[i..])
            }
            _ => (line, ""),
        };
        let code = code.trim();
        if code.starts_with('#') || code.is_empty() {
            continue;
        }
        if code.starts_with('[') {
            section = code.trim_matches(|c| c == '[' || c == ']').to_string();
            continue;
        }
        if let Some((k, v)) = code.split_once('=') {
            let k = k.trim().to_string();
            let mut sec = section.clone();
            if section == "hooks.action" && k == "type" {
                section = format!("hooks.action ({})", v.trim().trim_matches('"'));
                sec = section.clone();
            }
            out.push((sec, k, v.trim().to_string(), comment.to_string()));
        }
    }
    out
}

fn same_toml_value(a: &str, b: &str) -> bool {
    let parse = |v: &str| -> Option<toml::Value> {
        format!("v = {v}")
            .parse::<toml::Table>()
            .ok()
            .and_then(|t| t.get("v").cloned())
    };
    match (parse(a), parse(b)) {
        (Some(toml::Value::Integer(x)), Some(toml::Value::Float(y)))
        | (Some(toml::Value::Float(y)), Some(toml::Value::Integer(x))) => (x as f64) == y,
        (Some(x), Some(y)) => x == y,
        _ => false,
    }
}

#[test]
fn readme_config_examples_use_documented_keys_and_defaults() {
    let secs = sections();
    let by_name: BTreeMap<&str, &Section> = secs.iter().map(|s| (s.name.as_str(), s)).collect();
    let config = readme_section(&readme(), "Configuration");
    let blocks = code_blocks(&config, "toml");
    assert!(!blocks.is_empty(), "README Configuration has TOML examples");
    let mut problems = Vec::new();
    for (i, block) in blocks.iter().enumerate() {
        for (sec, key, value, comment) in toml_lines(block) {
            let candidates: Vec<&Section> = if sec == "hooks.action" {
                secs.iter()
                    .filter(|s| s.name.starts_with("hooks.action"))
                    .collect()
            } else if sec == "hooks.actions" {
                // An entry of the list: its own keys and any action type's.
                secs.iter()
                    .filter(|s| s.name.starts_with("hooks.action"))
                    .collect()
            } else if let Some(sub) = sec.strip_prefix("hooks.actions.") {
                // [hooks.actions.retry] is an action's own [hooks.retry].
                by_name
                    .get(format!("hooks.{sub}").as_str())
                    .into_iter()
                    .copied()
                    .collect()
            } else {
                by_name.get(sec.as_str()).into_iter().copied().collect()
            };
            if !candidates.iter().any(|s| s.keys.contains(&key)) {
                problems.push(format!(
                    "README TOML block {i}: [{sec}] {key} is not documented in docs/reference.toml"
                ));
                continue;
            }
            // The first block is the complete example, "every key with its default unless noted".
            let noted = ["no default", "optional", "e.g."]
                .iter()
                .any(|n| comment.contains(n));
            if i == 0 && !noted {
                if let Some(d) = candidates.iter().find_map(|s| s.defaults.get(&key)) {
                    if !same_toml_value(&value, d) {
                        problems.push(format!(
                            "README complete example: [{sec}] {key} = {value}, but the default is {d} (note it in the comment if meant)"
                        ));
                    }
                }
            }
        }
    }
    // and every documented key appears in the complete example
    let complete: BTreeSet<(String, String)> = toml_lines(&blocks[0])
        .into_iter()
        .map(|(s, k, _, _)| (s, k))
        .collect();
    for s in &secs {
        if s.name.is_empty() {
            continue;
        }
        for k in &s.keys {
            let table = if s.name == "hooks" {
                format!("[hooks.{k}]")
            } else {
                format!("[{k}]")
            };
            let in_readme = complete.contains(&(s.name.clone(), k.clone()))
                || blocks
                    .iter()
                    .any(|b| b.contains(&format!("{k} =")) || b.contains(&table));
            if !in_readme && !readme().contains(&format!("`{k}`")) {
                problems.push(format!(
                    "[{}] {k}: documented in docs/reference.toml, missing from the README",
                    s.name
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

fn render(env: &Env) -> std::path::PathBuf {
    let out = env.path("rendered");
    let o = Command::new("python3")
        .arg(Path::new(ROOT).join("scripts/reference"))
        .arg(&out)
        .output()
        .expect("python3 runs scripts/reference");
    assert!(
        o.status.success(),
        "scripts/reference failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    out
}

#[test]
fn man_pages_render_without_warnings() {
    let env = Env::new("ref-man");
    let dir = render(&env);
    for page in ["webhookd.8", "webhookd.toml.5"] {
        // what lintian's manpage check runs
        let o = Command::new("man")
            .args(["--warnings", "-E", "UTF-8", "-l", "-Tutf8", "-Z"])
            .arg(dir.join(page))
            .env("LC_ALL", "C.UTF-8")
            .env("MANWIDTH", "80")
            .output()
            .expect("man (man-db) is installed; scripts/test installs it");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success() && err.trim().is_empty(), "{page}: {err}");
        assert!(o.stdout.len() > 2000, "{page} rendered to almost nothing");
    }
    // the man page lists every documented config key
    let text = std::fs::read_to_string(dir.join("webhookd.toml.5")).unwrap();
    for s in sections() {
        for k in &s.keys {
            assert!(
                text.contains(&format!("\\fB{}\\fR", k.replace('-', "\\-"))),
                "{k} missing"
            );
        }
    }
}

fn complete(script: &Path, words: &[&str], config: Option<&Path>) -> Vec<String> {
    let quoted: Vec<String> = words.iter().map(|w| format!("'{w}'")).collect();
    let prog = format!(
        "source '{}'; COMP_WORDS=({}); COMP_CWORD={}; _webhookd; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        script.display(),
        quoted.join(" "),
        words.len() - 1
    );
    let mut c = Command::new("bash");
    c.args(["--norc", "--noprofile", "-c", &prog]);
    match config {
        Some(p) => c.env("WEBHOOKD_CONFIG", p),
        None => c.env_remove("WEBHOOKD_CONFIG"),
    };
    let o = c.output().unwrap();
    assert!(
        o.status.success(),
        "{words:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn bash_completion_completes_commands_options_and_hooks() {
    let env = Env::new("ref-bash");
    let dir = render(&env);
    let script = dir.join("webhookd.bash");
    let top = complete(&script, &["webhookd", ""], None);
    for c in [
        "serve",
        "events",
        "dead-letters",
        "check-config",
        "--config",
    ] {
        assert!(top.contains(&c.to_string()), "{c} not in {top:?}");
    }
    assert_eq!(complete(&script, &["webhookd", "ev"], None), vec!["events"]);
    assert_eq!(
        complete(&script, &["webhookd", "events", ""], None),
        vec!["list", "show", "replay"]
    );
    assert_eq!(
        complete(
            &script,
            &["webhookd", "-c", "/x.toml", "events", "list", "--"],
            None
        ),
        vec!["--hook", "--state", "--limit", "--json"]
    );
    assert_eq!(
        complete(&script, &["webhookd", "dead-letters", "retry", "--a"], None),
        vec!["--all", "--action"]
    );
    assert_eq!(
        complete(
            &script,
            &["webhookd", "events", "list", "--state", "d"],
            None
        ),
        vec!["delivering", "done", "dead"]
    );
    let cfg = env.write(
        "c.toml",
        "[[hooks]]\nid = \"github\"\nscheme = \"github\"\n[[hooks]]\n  id = \"deploy\"\n",
    );
    assert_eq!(
        complete(&script, &["webhookd", "sign", "--hook", ""], Some(&cfg)),
        vec!["github", "deploy"]
    );
    // the zsh completion at least parses, where zsh is installed
    if Command::new("zsh").arg("-c").arg("true").output().is_ok() {
        let o = Command::new("zsh")
            .arg("-n")
            .arg(dir.join("_webhookd"))
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "_webhookd: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
}
