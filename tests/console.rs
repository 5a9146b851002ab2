//! The events console (/ui/) over the real binary: hostile bodies and
//! headers are rendered as text (the HTML is parsed and its structure
//! checked), replay needs the session token and a same-origin request, the
//! console is only on the admin role, and the list pages by cursor.

mod common;

use std::time::Duration;

use common::*;
use scraper::{Html, Selector};

fn sel(s: &str) -> Selector {
    Selector::parse(s).unwrap()
}

fn get(addr: &str, path: &str) -> Resp {
    request(addr, "GET", path, &[], b"").unwrap()
}

/// GET with the session cookie.
fn get_with(addr: &str, path: &str, cookie: &str) -> Resp {
    request(addr, "GET", path, &[("Cookie".into(), cookie.into())], b"").unwrap()
}

/// A signed GitHub delivery with extra or replaced headers.
fn post_raw(addr: &str, delivery: &str, event: &str, body: &[u8], extra: &[(&str, &[u8])]) -> Resp {
    use std::io::Write;
    let mac = webhookd::verify::hmac_sha256(SECRET.as_bytes(), &[body]);
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut req: Vec<u8> = format!(
        "POST /hooks/gh HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nX-Hub-Signature-256: sha256={}\r\nX-GitHub-Delivery: {delivery}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        webhookd::id::hex(&mac),
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(b"X-GitHub-Event: ");
    req.extend_from_slice(event.as_bytes());
    req.extend_from_slice(b"\r\n");
    for (k, v) in extra {
        req.extend_from_slice(k.as_bytes());
        req.extend_from_slice(b": ");
        req.extend_from_slice(v);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"\r\n");
    req.extend_from_slice(body);
    s.write_all(&req).unwrap();
    read_response(&mut s).unwrap()
}

/// The structure every console page must keep, whatever it shows: one
/// document, the layout's landmarks, the only script the console's own,
/// no element or attribute an event could have smuggled in.
fn assert_intact(doc: &Html, what: &str) {
    let scripts: Vec<_> = doc.select(&sel("script")).collect();
    assert_eq!(scripts.len(), 1, "{what}: scripts: {:?}", doc.html());
    assert_eq!(scripts[0].value().attr("src"), Some("/ui/static/ui.js"));
    assert_eq!(
        scripts[0].inner_html(),
        "",
        "{what}: the script has no inline code"
    );
    for bad in [
        "textarea",
        "img",
        "iframe",
        "object",
        "embed",
        "svg script",
        "style",
        "base",
    ] {
        assert_eq!(
            doc.select(&sel(bad)).count(),
            0,
            "{what}: a <{bad}> element appeared"
        );
    }
    for el in doc.select(&sel("*")) {
        for (name, value) in el.value().attrs() {
            assert!(
                !name.starts_with("on"),
                "{what}: event handler attribute {name}={value:?}"
            );
            assert!(
                !value
                    .trim_start()
                    .to_ascii_lowercase()
                    .starts_with("javascript:"),
                "{what}: javascript: URL in {name}"
            );
        }
    }
    assert_eq!(
        doc.select(&sel("body > header")).count(),
        1,
        "{what}: header"
    );
    assert_eq!(doc.select(&sel("body > main")).count(), 1, "{what}: main");
}

const HOSTILE_BODY: &str = "{\"comment\":\"</textarea></pre><script>alert(1)</script><img src=x onerror=alert(2)>\",\"esc\":\"\\u001b[31mred\\u0000\\u0007\",\"q\":\"\\\"'><svg onload=alert(3)>\"}";

#[test]
fn hostile_bodies_and_headers_render_as_text() {
    let env = Env::new("console-escape");
    let secret = env.write("secret", SECRET);
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let d = Daemon::start(&env, &config(&addr, &env.sqlite_url(), &secret, ""), &[]);

    // 1: JSON with markup and escaped control characters in strings.
    let r = post_raw(&addr, "d-json", "push", HOSTILE_BODY.as_bytes(), &[]);
    assert_eq!(r.status, 202, "{}", r.text());
    let json_id = r.json()["id"].as_str().unwrap().to_string();
    // 2: not JSON: raw markup, raw control characters, invalid UTF-8.
    let mut raw = b"</textarea><script>alert(4)</script>\x1b[2J\x00\x08\x7f".to_vec();
    raw.extend_from_slice(b"\xff\xfe\xc3(<b>bold</b>");
    let r = post_raw(&addr, "d-raw", "push", &raw, &[]);
    assert_eq!(r.status, 202, "{}", r.text());
    let raw_id = r.json()["id"].as_str().unwrap().to_string();
    // 3: markup in the event type, the delivery id and header names'
    // values, with obs-text bytes (invalid UTF-8) in a header.
    let r = post_raw(
        &addr,
        "\"><script>alert(5)</script>",
        "<img src=x onerror=alert(6)>",
        b"{}",
        &[
            ("X-Evil", b"</td></tr></table><script>alert(7)</script>"),
            ("X-Bytes", b"\xff\xfe<i>\xc3"),
            ("Authorization", b"Bearer do-not-show-me"),
        ],
    );
    assert_eq!(r.status, 202, "{}", r.text());
    let hdr_id = r.json()["id"].as_str().unwrap().to_string();

    let list = get(&addr, "/ui/");
    assert_eq!(list.status, 200, "{}", list.text());
    assert!(list
        .header("content-security-policy")
        .is_some_and(|v| v.contains("script-src 'self'") && !v.contains("unsafe-inline")));
    assert_eq!(list.header("x-content-type-options"), Some("nosniff"));
    let doc = Html::parse_document(&list.text());
    assert_intact(&doc, "list");
    let rows: Vec<_> = doc.select(&sel("table#events tbody tr")).collect();
    assert_eq!(rows.len(), 3, "{}", list.text());
    // Newest first, and the hostile event type is a cell's text.
    assert_eq!(rows[0].value().attr("data-id"), Some(hdr_id.as_str()));
    let cells: Vec<String> = rows[0]
        .select(&sel("td"))
        .map(|c| c.text().collect())
        .collect();
    assert_eq!(cells.len(), 7, "row structure kept: {cells:?}");
    assert_eq!(cells[2], "<img src=x onerror=alert(6)>");

    // The JSON body, pretty-printed, as text inside <pre>.
    let page = get(&addr, &format!("/ui/events/{json_id}"));
    assert_eq!(page.status, 200);
    let doc = Html::parse_document(&page.text());
    assert_intact(&doc, "json event");
    let pre: String = doc
        .select(&sel("pre#body"))
        .next()
        .unwrap()
        .text()
        .collect();
    let parsed: serde_json::Value = serde_json::from_str(&pre).expect("the shown body is the JSON");
    let original: serde_json::Value = serde_json::from_str(HOSTILE_BODY).unwrap();
    assert_eq!(parsed, original);
    assert!(pre.contains('\n'), "pretty-printed");
    let h2: Vec<String> = doc
        .select(&sel("main h2"))
        .map(|h| h.text().collect())
        .collect();
    assert_eq!(
        h2,
        ["Deliveries", "Attempts", "Headers", "Body"],
        "no section swallowed"
    );

    // The raw body: text with visible control characters, U+FFFD for bad bytes.
    let page = get(&addr, &format!("/ui/events/{raw_id}"));
    let doc = Html::parse_document(&page.text());
    assert_intact(&doc, "raw event");
    let pre: String = doc
        .select(&sel("pre#body"))
        .next()
        .unwrap()
        .text()
        .collect();
    assert!(
        pre.starts_with("</textarea><script>alert(4)</script>"),
        "{pre:?}"
    );
    assert!(
        pre.contains("\\u{1b}[2J\\u{0}\\u{8}\\u{7f}"),
        "controls shown: {pre:?}"
    );
    assert!(
        pre.contains("\u{fffd}\u{fffd}\u{fffd}(<b>bold</b>"),
        "{pre:?}"
    );
    assert!(!pre.chars().any(|c| c.is_control() && c != '\n'), "{pre:?}");
    let h2: Vec<String> = doc
        .select(&sel("main h2"))
        .map(|h| h.text().collect())
        .collect();
    assert_eq!(h2, ["Deliveries", "Attempts", "Headers", "Body"]);
    // Its download is the stored bytes exactly, as an attachment.
    let dl = get(&addr, &format!("/ui/events/{raw_id}/raw"));
    assert_eq!(dl.status, 200);
    assert_eq!(dl.body, raw);
    assert_eq!(dl.header("content-type"), Some("application/octet-stream"));
    assert!(dl
        .header("content-disposition")
        .unwrap()
        .starts_with("attachment"));

    // Headers: values as text, credentials never stored nor shown.
    let page = get(&addr, &format!("/ui/events/{hdr_id}"));
    let text = page.text();
    assert!(!text.contains("do-not-show-me"));
    let doc = Html::parse_document(&text);
    assert_intact(&doc, "header event");
    let headers: Vec<(String, String)> = doc
        .select(&sel("table.headers tr"))
        .map(|tr| {
            let th: String = tr.select(&sel("th")).next().unwrap().text().collect();
            let td: String = tr.select(&sel("td")).next().unwrap().text().collect();
            (th, td)
        })
        .collect();
    let find = |k: &str| headers.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    assert_eq!(
        find("x-evil").as_deref(),
        Some("</td></tr></table><script>alert(7)</script>")
    );
    assert_eq!(
        find("x-bytes").as_deref(),
        Some("\u{fffd}\u{fffd}<i>\u{fffd}")
    );
    assert_eq!(find("authorization"), None);
    let kv: Vec<String> = doc
        .select(&sel("table.kv td"))
        .map(|c| c.text().collect())
        .collect();
    assert!(
        kv.contains(&"\"><script>alert(5)</script>".to_string()),
        "{kv:?}"
    );
    assert_eq!(doc.select(&sel("table.headers")).count(), 1);

    // Filter values echo back into inputs as attribute text.
    let page = get(
        &addr,
        "/ui/?event=%22%3E%3Cscript%3Ealert(8)%3C%2Fscript%3E",
    );
    let doc = Html::parse_document(&page.text());
    assert_intact(&doc, "filter echo");
    let v = doc.select(&sel("input[name=event]")).next().unwrap();
    assert_eq!(
        v.value().attr("value"),
        Some("\"><script>alert(8)</script>")
    );
    drop(d);
}

#[test]
fn list_pages_by_cursor_and_filters_sqlite() {
    list_pages_by_cursor_and_filters(Kind::Sqlite);
}

#[test]
fn list_pages_by_cursor_and_filters_postgres() {
    list_pages_by_cursor_and_filters(Kind::Postgres);
}

fn list_pages_by_cursor_and_filters(kind: Kind) {
    let env = Env::new("console-list");
    let secret = env.write("secret", SECRET);
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let extra_hook = format!(
        "\n[[hooks]]\nid = \"other\"\nscheme = \"github\"\nsecrets = [\"file:{}\"]\n",
        secret.display()
    );
    let cfg = config(&addr, &store_url(kind, &env), &secret, "") + &extra_hook;
    let d = Daemon::start(&env, &cfg, &[]);
    let mut ids = Vec::new();
    for i in 0..7 {
        let hook = if i % 2 == 0 { "gh" } else { "other" };
        let r = post_signed(
            &addr,
            hook,
            &format!("del-{i}"),
            format!("{{\"n\":{i}}}").as_bytes(),
            SECRET,
        );
        assert_eq!(r.status, 202);
        ids.push((hook, r.json()["id"].as_str().unwrap().to_string()));
    }
    let row_ids = |path: &str| -> (Vec<String>, Option<String>) {
        let r = get(&addr, path);
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        let doc = Html::parse_document(&r.text());
        let rows = doc
            .select(&sel("table#events tbody tr"))
            .map(|tr| tr.value().attr("data-id").unwrap().to_string())
            .collect();
        let next = doc
            .select(&sel("a[rel=next]"))
            .next()
            .map(|a| a.value().attr("href").unwrap().to_string());
        (rows, next)
    };
    // Three per page, newest first, following the "Older" link.
    let mut seen = Vec::new();
    let mut path = "/ui/?limit=3".to_string();
    loop {
        let (rows, next) = row_ids(&path);
        assert!(rows.len() <= 3);
        seen.extend(rows);
        match next {
            Some(n) => path = n,
            None => break,
        }
    }
    let want: Vec<String> = ids.iter().rev().map(|(_, id)| id.clone()).collect();
    assert_eq!(seen, want);
    // By hook.
    let (rows, _) = row_ids("/ui/?hook=other");
    let want: Vec<String> = ids
        .iter()
        .rev()
        .filter(|(h, _)| *h == "other")
        .map(|(_, i)| i.clone())
        .collect();
    assert_eq!(rows, want);
    // By delivery id, with and without the hook.
    assert_eq!(row_ids("/ui/?delivery=del-4").0, [ids[4].1.clone()]);
    assert_eq!(row_ids("/ui/?hook=gh&delivery=del-4").0, [ids[4].1.clone()]);
    assert!(row_ids("/ui/?hook=other&delivery=del-4").0.is_empty());
    // By state and event type and time.
    assert_eq!(row_ids("/ui/?state=stored&event=push").0.len(), 7);
    assert!(row_ids("/ui/?state=dead").0.is_empty());
    assert!(row_ids("/ui/?event=release").0.is_empty());
    assert_eq!(row_ids("/ui/?since=1h").0.len(), 7);
    assert!(row_ids("/ui/?until=1h").0.is_empty());
    // Live rows: only what is newer than the given id.
    let r = get(&addr, &format!("/ui/rows?after={}", ids[4].1));
    let frag = Html::parse_fragment(&format!("<table><tbody>{}</tbody></table>", r.text()));
    let newer: Vec<String> = frag
        .select(&sel("tr"))
        .map(|tr| tr.value().attr("data-id").unwrap().to_string())
        .collect();
    assert_eq!(newer, [ids[6].1.clone(), ids[5].1.clone()]);
    // The glance page draws its chart and counts what arrived.
    let g = get(&addr, "/ui/glance");
    assert_eq!(g.status, 200);
    let doc = Html::parse_document(&g.text());
    assert_intact(&doc, "glance");
    assert_eq!(doc.select(&sel("svg.chart polyline")).count(), 5);
    let accepted: String = doc
        .select(&sel("strong[data-total=accepted]"))
        .next()
        .unwrap()
        .text()
        .collect();
    assert_eq!(accepted, "7");
    // No page shows a hook's secret, plain or escaped.
    for path in [
        "/ui/",
        "/ui/glance",
        "/ui/dead",
        &format!("/ui/events/{}", ids[0].1),
    ] {
        let t = get(&addr, path).text();
        assert!(
            !t.contains(SECRET) && !t.contains(&SECRET.replace('\'', "&#39;")),
            "{path}"
        );
    }
    drop(d);
}

#[test]
fn console_is_only_on_the_admin_role() {
    let env = Env::new("console-roles");
    let secret = env.write("secret", SECRET);
    let (web, admin) = (free_port(), free_port());
    let web = format!("127.0.0.1:{web}");
    let admin = format!("127.0.0.1:{admin}");
    let extra = format!("admin_listen = \"{admin}\"");
    let d = Daemon::spawn(&env, &config(&web, &env.sqlite_url(), &secret, &extra), &[]);
    let start = std::time::Instant::now();
    while request(&admin, "GET", "/healthz", &[], b"")
        .map(|r| r.status)
        .ok()
        != Some(200)
    {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{}",
            d.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    for path in ["/ui/", "/ui", "/ui/dead", "/ui/glance", "/ui/static/ui.js"] {
        let r = get(&web, path);
        assert_eq!(r.status, 404, "{path} on the public socket: {}", r.text());
        assert!(!r.text().contains("<html"), "{path}");
    }
    let r = request(&web, "POST", "/ui/replay", &[], b"").unwrap();
    assert_eq!(r.status, 404);
    assert_eq!(get(&admin, "/ui/").status, 200);
    assert_eq!(get(&admin, "/ui").status, 303);
    drop(d);

    // A single socket serves the admin views, /status and the console alike.
    let env = Env::new("console-single");
    let secret = env.write("secret", SECRET);
    let addr = format!("127.0.0.1:{}", free_port());
    let d = Daemon::start(&env, &config(&addr, &env.sqlite_url(), &secret, ""), &[]);
    assert_eq!(get(&addr, "/status").status, 200);
    assert_eq!(get(&addr, "/ui/").status, 200);
    drop(d);
}

/// The session cookie and the form token from a console page.
fn session(addr: &str, path: &str) -> (String, String) {
    let r = get(addr, path);
    let cookie = r
        .header("set-cookie")
        .expect("a session cookie")
        .split(';')
        .next()
        .unwrap()
        .to_string();
    assert!(r.header("set-cookie").unwrap().contains("SameSite=Strict"));
    let r = get_with(addr, path, &cookie);
    let doc = Html::parse_document(&r.text());
    let token = doc
        .select(&sel("form[action='/ui/replay'] input[name=token]"))
        .next()
        .expect("a replay form")
        .value()
        .attr("value")
        .unwrap()
        .to_string();
    (cookie, token)
}

#[test]
fn replay_needs_token_and_same_origin_sqlite() {
    replay_needs_token_and_same_origin(Kind::Sqlite);
}

#[test]
fn replay_needs_token_and_same_origin_postgres() {
    replay_needs_token_and_same_origin(Kind::Postgres);
}

fn replay_needs_token_and_same_origin(kind: Kind) {
    let env = Env::new("console-csrf");
    let url = store_url(kind, &env);
    let secret = env.write("secret", SECRET);
    let addr = format!("127.0.0.1:{}", free_port());
    let sink = Sink::new();
    sink.set_reply(|_, _| (400, vec![], Duration::ZERO));
    let cfg = config(&addr, &url, &secret, "")
        .replace("target = \"stderr\"", "target = \"journal\"")
        + &format!(
            "[hooks.action]\ntype = \"forward\"\nurl = \"{}\"\ntimeout = \"2s\"\n[delivery]\npoll_interval = \"100ms\"\nlease_margin = \"1s\"\n",
            sink.url("/in")
        );
    let d = Daemon::start(&env, &cfg, &[]);
    let r = d.post("gh", "dead-1", b"{\"x\":1}");
    assert_eq!(r.status, 202);
    let id = r.json()["id"].as_str().unwrap().to_string();
    let r = d.post("gh", "dead-2", b"{\"x\":2}");
    let id2 = r.json()["id"].as_str().unwrap().to_string();
    wait_state(&url, "dead-1", "dead", Duration::from_secs(10));
    wait_state(&url, "dead-2", "dead", Duration::from_secs(10));
    assert_eq!(sink.count(), 2);

    let (cookie, token) = session(&addr, "/ui/dead");
    // A selection of two, as the dead-letters form sends it.
    let form = format!("token={token}&id={id}&id={id2}");
    let origin = format!("http://{addr}");
    let post = |headers: Vec<(String, String)>, body: &str| {
        let mut h = vec![(
            "Content-Type".to_string(),
            "application/x-www-form-urlencoded".to_string(),
        )];
        h.extend(headers);
        request(&addr, "POST", "/ui/replay", &h, body.as_bytes()).unwrap()
    };
    let c = || ("Cookie".to_string(), cookie.clone());
    let o = |v: &str| ("Origin".to_string(), v.to_string());
    let refused = [
        (
            "cross-origin",
            post(vec![c(), o("http://evil.example")], &form),
        ),
        ("origin null", post(vec![c(), o("null")], &form)),
        (
            "look-alike origin",
            post(vec![c(), o(&format!("http://{addr}.evil.example"))], &form),
        ),
        ("no Origin", post(vec![c()], &form)),
        ("no token", post(vec![c(), o(&origin)], &format!("id={id}"))),
        (
            "wrong token",
            post(
                vec![c(), o(&origin)],
                &format!("token={}&id={id}", "0".repeat(64)),
            ),
        ),
        ("no cookie", post(vec![o(&origin)], &form)),
        (
            "another session's cookie",
            post(
                vec![
                    ("Cookie".into(), format!("webhookd_ui={}", "a".repeat(32))),
                    o(&origin),
                ],
                &form,
            ),
        ),
    ];
    for (what, r) in &refused {
        assert_eq!(r.status, 403, "{what}: {}", r.text());
    }
    // A GET never changes anything either.
    assert_eq!(
        get_with(&addr, &format!("/ui/replay?{form}"), &cookie).status,
        405
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(state_of(&url, "dead-1").unwrap().0, "dead");
    assert_eq!(state_of(&url, "dead-2").unwrap().0, "dead");
    assert_eq!(sink.count(), 2, "nothing was replayed");
    let log = d.log_text();
    assert!(log.contains("replay refused"), "{log}");

    // The real thing: same origin, the session's token.
    sink.set_reply(|_, _| (200, vec![], Duration::ZERO));
    let r = post(vec![c(), o(&origin)], &form);
    assert_eq!(r.status, 303, "{}", r.text());
    assert_eq!(r.header("location"), Some("/ui/dead?replayed=2"));
    wait_state(&url, "dead-1", "done", Duration::from_secs(10));
    wait_state(&url, "dead-2", "done", Duration::from_secs(10));
    assert_eq!(sink.count(), 4);
    let log = d.log_text();
    let notice = log
        .lines()
        .find(|l| l.contains("console: replay requested"))
        .unwrap_or_else(|| panic!("no replay line in {log}"));
    assert!(notice.starts_with("<5>"), "logged at notice: {notice}");
    assert!(notice.contains(&id) && notice.contains(&id2), "{notice}");

    // The event page shows both attempts: the refused one and the delivery.
    let page = get(&addr, &format!("/ui/events/{id}"));
    let doc = Html::parse_document(&page.text());
    let results: Vec<Vec<String>> = doc
        .select(&sel("table.attempts tbody tr"))
        .map(|tr| tr.select(&sel("td")).map(|c| c.text().collect()).collect())
        .collect();
    assert_eq!(results.len(), 2, "{results:?}");
    assert_eq!(results[0][3], "dead");
    assert_eq!(results[0][4], "400");
    assert!(results[0][5].contains("400"), "{results:?}");
    assert_eq!(results[1][3], "done");
    assert_eq!(results[1][4], "200", "a success keeps its status too");
    assert_eq!(results[1][5], "", "no error on success");
    drop(d);
}

/// Each attempt keeps what the command printed, on failure and on success,
/// apart from the error.
#[test]
fn attempts_keep_the_command_output() {
    let env = Env::new("console-output");
    let secret = env.write("secret", SECRET);
    let addr = format!("127.0.0.1:{}", free_port());
    let cfg = config(&addr, &env.sqlite_url(), &secret, "")
        + "[hooks.action]\ntype = \"exec\"\nshell = true\n\
           command = ['echo \"out-$WEBHOOK_ATTEMPT <b>\"; echo err-line >&2; test \"$WEBHOOK_ATTEMPT\" -ge 2']\n\
           [hooks.retry]\ninitial_delay = \"100ms\"\nmax_delay = \"200ms\"\n\
           [delivery]\npoll_interval = \"100ms\"\n";
    let d = Daemon::start(&env, &cfg, &[]);
    let r = d.post("gh", "out-1", b"{}");
    assert_eq!(r.status, 202, "{}", r.text());
    let id = r.json()["id"].as_str().unwrap().to_string();
    wait_state(&env.sqlite_url(), "out-1", "done", Duration::from_secs(10));
    let page = get(&addr, &format!("/ui/events/{id}"));
    let doc = Html::parse_document(&page.text());
    assert_intact(&doc, "event page with command output");
    let rows: Vec<Vec<String>> = doc
        .select(&sel("table.attempts tbody tr"))
        .map(|tr| tr.select(&sel("td")).map(|c| c.text().collect()).collect())
        .collect();
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(rows[0][3], "retry");
    assert!(
        rows[0][5].contains("exit"),
        "the error names the exit: {rows:?}"
    );
    assert!(
        !rows[0][5].contains("out-1"),
        "the error is apart from the output: {rows:?}"
    );
    assert!(
        rows[0][6].contains("out-1 <b>") && rows[0][6].contains("err-line"),
        "{rows:?}"
    );
    assert_eq!(rows[1][3], "done");
    assert_eq!(rows[1][5], "");
    assert!(
        rows[1][6].contains("out-2 <b>"),
        "a success keeps its output: {rows:?}"
    );
    drop(d);
}
