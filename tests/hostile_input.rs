//! Hostile requests over real HTTP, written byte for byte on raw TCP
//! sockets: each is answered 4xx or has its connection closed, nothing is
//! stored, and the daemon keeps serving (a valid delivery still gets 202).
//! Then slowloris: 500 connections dribbling headers do not keep a valid
//! delivery from its 202 within a second, and a daemon that runs out of file
//! descriptors (EMFILE) backs off and recovers instead of dying.

mod common;
use common::*;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The signed head of a GitHub delivery for `body` (no final CRLF), with
/// `content_length` as the announced length.
fn signed_head(
    version: &str,
    path: &str,
    delivery: &str,
    body: &[u8],
    content_length: usize,
) -> String {
    let mut head = format!("POST {path} {version}\r\nHost: 127.0.0.1\r\n");
    for (k, v) in github_headers(delivery, body, SECRET) {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str(&format!("Content-Length: {content_length}\r\n"));
    head
}

fn valid(path: &str, delivery: &str) -> Vec<u8> {
    let body = format!("{{\"delivery\":\"{delivery}\"}}");
    let mut r = signed_head("HTTP/1.1", path, delivery, body.as_bytes(), body.len());
    r.push_str("Connection: close\r\n\r\n");
    let mut r = r.into_bytes();
    r.extend_from_slice(body.as_bytes());
    r
}

/// What came back on one connection: the status of every complete
/// response, and whether the server closed the connection.
#[derive(Debug)]
struct Outcome {
    statuses: Vec<u16>,
    closed: bool,
}

/// Read responses until `want` of them arrived, the server closed, or the
/// time limit passed (a hang is reported as not closed, no status).
fn read_responses(s: &mut TcpStream, want: usize, limit: Duration) -> Outcome {
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let start = Instant::now();
    let mut buf = Vec::new();
    let mut closed = false;
    loop {
        let statuses = complete_responses(&buf);
        if statuses.len() >= want || start.elapsed() > limit {
            return Outcome { statuses, closed };
        }
        let mut chunk = [0u8; 65536];
        match s.read(&mut chunk) {
            Ok(0) => closed = true,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => closed = true, // reset
        }
        if closed {
            return Outcome {
                statuses: complete_responses(&buf),
                closed,
            };
        }
    }
}

/// Statuses of the complete responses (head + Content-Length body) in `buf`.
fn complete_responses(mut buf: &[u8]) -> Vec<u16> {
    let mut out = Vec::new();
    while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
        let Ok(r) = parse_response(&buf[..end + 4]) else {
            break;
        };
        let len: usize = r
            .header("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        if buf.len() < end + 4 + len {
            break;
        }
        out.push(r.status);
        buf = &buf[end + 4 + len..];
    }
    out
}

struct Case {
    name: &'static str,
    /// Bytes written at once (write errors are ignored: the server may
    /// answer and close before it has read everything).
    bytes: Vec<u8>,
    /// Shut down our write side afterwards (the client gives up).
    half_close: bool,
    /// Responses expected at most (pipelining: several).
    responses: usize,
}

fn case(name: &'static str, bytes: impl Into<Vec<u8>>) -> Case {
    Case {
        name,
        bytes: bytes.into(),
        half_close: false,
        responses: 1,
    }
}

fn cases() -> Vec<Case> {
    let body = br#"{"zen":"hostile"}"#;
    let mut v = Vec::new();

    // Oversized headers: one 256 KiB header (max_header_bytes is 64 KiB;
    // hyper's read buffer grows in steps, so heads up to about 100 KiB still
    // get through: the cap is approximate).
    let mut h = signed_head("HTTP/1.1", "/hooks/gh", "h-big", body, body.len());
    h.push_str(&format!("X-Padding: {}\r\n\r\n", "a".repeat(256 * 1024)));
    v.push(case("one 256 KiB header", [h.as_bytes(), body].concat()));

    // Thousands of headers (max_headers is 100).
    let mut h = signed_head("HTTP/1.1", "/hooks/gh", "h-many", body, body.len());
    for i in 0..3000 {
        h.push_str(&format!("X-H{i}: v\r\n"));
    }
    h.push_str("\r\n");
    v.push(case("3000 headers", [h.as_bytes(), body].concat()));

    // Invalid UTF-8: in the delivery id (signature valid), in a header name,
    // and in the request target.
    let mut b = signed_head("HTTP/1.1", "/hooks/gh", "PLACEHOLDER", body, body.len()).into_bytes();
    let at = b.windows(11).position(|w| w == b"PLACEHOLDER").unwrap();
    b.splice(at..at + 11, b"d-\xff\xfe\xc3\x28".iter().copied());
    b.extend_from_slice(b"\r\n");
    b.extend_from_slice(body);
    v.push(case("invalid UTF-8 in the delivery id", b));
    let mut b = signed_head("HTTP/1.1", "/hooks/gh", "h-utf8name", body, body.len()).into_bytes();
    b.extend_from_slice(b"X-\xff\xfe: v\r\n\r\n");
    b.extend_from_slice(body);
    v.push(case("invalid UTF-8 in a header name", b));
    let mut b = b"POST /hooks/g\xffh HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}".to_vec();
    b.extend_from_slice(b"");
    v.push(case("invalid UTF-8 in the path", b));
    v.push(case(
        "NUL in a header value",
        [
            signed_head("HTTP/1.1", "/hooks/gh", "h-nul", body, body.len()).as_bytes(),
            b"X-Evil: a\0b\r\n\r\n",
            body,
        ]
        .concat(),
    ));
    v.push(case(
        "header line without a colon",
        [
            signed_head("HTTP/1.1", "/hooks/gh", "h-nocolon", body, body.len()).as_bytes(),
            b"this is not a header\r\n\r\n",
            body,
        ]
        .concat(),
    ));

    // Bad chunked framing.
    let mut h = signed_head("HTTP/1.1", "/hooks/gh", "h-chunk", body, 0);
    h = h.replace("Content-Length: 0\r\n", "Transfer-Encoding: chunked\r\n");
    v.push(case(
        "chunked: size is not hex",
        format!(
            "{h}\r\nzz\r\n{}\r\n0\r\n\r\n",
            String::from_utf8_lossy(body)
        ),
    ));
    v.push(case(
        "chunked: chunk longer than its size",
        format!("{h}\r\n3\r\n{}\r\n0\r\n\r\n", String::from_utf8_lossy(body)),
    ));
    v.push(case(
        "chunked: size overflows u64",
        format!("{h}\r\nFFFFFFFFFFFFFFFFFF\r\nx\r\n0\r\n\r\n"),
    ));
    v.push(Case {
        half_close: true,
        ..case(
            "chunked: no last chunk, client gives up",
            format!("{h}\r\n5\r\nhello\r\n"),
        )
    });
    // Content-Length and Transfer-Encoding together (request smuggling). The
    // signature covers the bytes as Content-Length frames them; hyper frames
    // by chunked (RFC 9112 6.1) and closes the connection afterwards, so the
    // signature does not match: 401, nothing stored, nothing left over.
    let chunked_body = format!(
        "{:x}\r\n{}\r\n0\r\n\r\n",
        body.len(),
        String::from_utf8_lossy(body)
    );
    let smuggle = signed_head(
        "HTTP/1.1",
        "/hooks/gh",
        "h-smuggle",
        chunked_body.as_bytes(),
        chunked_body.len(),
    );
    v.push(case(
        "Content-Length and Transfer-Encoding: chunked (smuggling)",
        format!("{smuggle}Transfer-Encoding: chunked\r\n\r\n{chunked_body}"),
    ));
    let two = signed_head("HTTP/1.1", "/hooks/gh", "h-twocl", body, body.len());
    v.push(case(
        "two different Content-Lengths",
        format!(
            "{two}Content-Length: 5\r\n\r\n{}",
            String::from_utf8_lossy(body)
        ),
    ));
    let neg = signed_head("HTTP/1.1", "/hooks/gh", "h-negcl", body, body.len()).replace(
        &format!("Content-Length: {}", body.len()),
        "Content-Length: -17",
    );
    v.push(case(
        "negative Content-Length",
        format!("{neg}\r\n{}", String::from_utf8_lossy(body)),
    ));

    // Body shorter than Content-Length, then the client gives up.
    let short = signed_head("HTTP/1.1", "/hooks/gh", "h-short", body, body.len() + 100);
    v.push(Case {
        half_close: true,
        ..case(
            "body shorter than Content-Length",
            [short.as_bytes(), b"\r\n", body].concat(),
        )
    });
    // Body longer than Content-Length: the signature covers the whole body,
    // the server reads only the announced part (401), and the rest is not a
    // request (400 or close).
    let long_body = br#"{"zen":"hostile","more":"GET / HTTP/1.1"}"#;
    let mut long = signed_head("HTTP/1.1", "/hooks/gh", "h-long", long_body, 10).into_bytes();
    long.extend_from_slice(b"\r\n");
    long.extend_from_slice(long_body);
    v.push(Case {
        responses: 2,
        ..case("body longer than Content-Length", long)
    });

    // HTTP/1.0 and other versions.
    let mut h10 = signed_head("HTTP/1.0", "/hooks/gh", "h-10", body, body.len()).into_bytes();
    h10.extend_from_slice(b"X-Hub-Signature-256: sha256=00\r\n\r\n");
    h10.extend_from_slice(body);
    v.push(case("HTTP/1.0 with two signature headers", h10));
    let h10c = signed_head("HTTP/1.0", "/hooks/gh", "h-10c", body, 0)
        .replace("Content-Length: 0\r\n", "Transfer-Encoding: chunked\r\n");
    v.push(case(
        "HTTP/1.0 with chunked encoding",
        format!(
            "{h10c}\r\n{:x}\r\n{}\r\n0\r\n\r\n",
            body.len(),
            String::from_utf8_lossy(body)
        ),
    ));
    v.push(case("HTTP/0.9 request line", "GET /healthz\r\n\r\n"));
    v.push(case(
        "HTTP/2 preface on HTTP/1",
        "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    ));
    v.push(case(
        "HTTP/9.9",
        "POST /hooks/gh HTTP/9.9\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
    ));
    v.push(case(
        "garbage",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 not http at all\r\n\r\n".to_vec(),
    ));
    v.push(case(
        "request target of 100 KiB",
        format!(
            "POST /hooks/{} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
            "a".repeat(100 * 1024)
        ),
    ));

    // Pipelining: three bad requests in one write, answered in order.
    let mut p = Vec::new();
    let mut bad_sig = signed_head(
        "HTTP/1.1",
        "/hooks/gh",
        "h-pipe-1",
        b"other body",
        body.len(),
    )
    .into_bytes();
    bad_sig.extend_from_slice(b"\r\n");
    bad_sig.extend_from_slice(body);
    p.extend_from_slice(&bad_sig);
    p.extend_from_slice(b"GET /hooks/gh HTTP/1.1\r\nHost: x\r\n\r\n");
    let mut unknown =
        signed_head("HTTP/1.1", "/hooks/nope", "h-pipe-3", body, body.len()).into_bytes();
    unknown.extend_from_slice(b"Connection: close\r\n\r\n");
    unknown.extend_from_slice(body);
    p.extend_from_slice(&unknown);
    v.push(Case {
        responses: 3,
        ..case("pipelining: bad signature, GET, unknown hook", p)
    });

    // Paths with `..` and encoded bytes, all correctly signed for hook gh:
    // none may reach it.
    for (name, path) in [
        ("path /hooks/../hooks/gh", "/hooks/../hooks/gh"),
        ("path /hooks/./gh", "/hooks/./gh"),
        ("path /hooks/gh/..", "/hooks/gh/.."),
        ("path /hooks/%67%68 (encoded gh)", "/hooks/%67%68"),
        ("path /hooks/%2e%2e/hooks/gh", "/hooks/%2e%2e/hooks/gh"),
        ("path /hooks/..%2fhooks%2fgh", "/hooks/..%2fhooks%2fgh"),
        ("path /hooks/gh%00", "/hooks/gh%00"),
        ("path /hooks/gh%2f..", "/hooks/gh%2f.."),
        ("path //hooks/gh", "//hooks/gh"),
        (
            "absolute-form http://evil/hooks/../gh",
            "http://evil/hooks/../gh",
        ),
    ] {
        v.push(case(name, valid(path, "h-path")));
    }

    // Duplicate signature headers, both valid.
    let mut dup = signed_head("HTTP/1.1", "/hooks/gh", "h-dupsig", body, body.len());
    let sig = github_headers("h-dupsig", body, SECRET)[0].1.clone();
    dup.push_str(&format!(
        "X-Hub-Signature-256: {sig}\r\nConnection: close\r\n\r\n"
    ));
    v.push(case(
        "duplicate signature headers",
        [dup.as_bytes(), body].concat(),
    ));

    // 25 MiB + 1 byte, really sent: announced and chunked.
    let big = vec![b'x'; 25 * 1024 * 1024 + 1];
    let head = signed_head("HTTP/1.1", "/hooks/gh", "h-huge", &big, big.len());
    v.push(case(
        "25 MiB + 1 byte body",
        [head.as_bytes(), b"\r\n", &big].concat(),
    ));
    let head = signed_head("HTTP/1.1", "/hooks/gh", "h-huge-chunked", &big, 0)
        .replace("Content-Length: 0\r\n", "Transfer-Encoding: chunked\r\n");
    let mut chunked = head.into_bytes();
    chunked.extend_from_slice(b"\r\n");
    for part in big.chunks(1024 * 1024) {
        chunked.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
        chunked.extend_from_slice(part);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    v.push(case("25 MiB + 1 byte body, chunked", chunked));
    v
}

#[test]
fn hostile_requests_get_4xx_or_a_closed_connection_and_store_nothing() {
    let env = Env::new("hostile");
    let secret = env.write("gh.secret", SECRET);
    let url = env.sqlite_url();
    let addr = format!("127.0.0.1:{}", free_port());
    let mut d = Daemon::start(
        &env,
        &config(&addr, &url, &secret, "header_timeout = \"2s\""),
        &[],
    );
    let mut failures = Vec::new();
    for c in cases() {
        let mut s = TcpStream::connect(&addr).unwrap();
        let writer = {
            let mut w = s.try_clone().unwrap();
            let bytes = c.bytes;
            let half = c.half_close;
            std::thread::spawn(move || {
                let _ = w.write_all(&bytes);
                if half {
                    let _ = w.shutdown(Shutdown::Write);
                }
            })
        };
        let o = read_responses(&mut s, c.responses, Duration::from_secs(8));
        drop(s);
        let _ = writer.join();
        let all_4xx = o.statuses.iter().all(|s| (400..500).contains(s));
        let ok = all_4xx && (!o.statuses.is_empty() || o.closed);
        eprintln!("{:<60} {:?} closed={}", c.name, o.statuses, o.closed);
        if !ok {
            failures.push(format!("{}: {:?}", c.name, o));
        }
        assert!(
            d.child.try_wait().unwrap().is_none(),
            "daemon died after {}; log:\n{}",
            c.name,
            d.log_text()
        );
    }
    assert!(failures.is_empty(), "not refused: {failures:#?}");
    assert_eq!(count_rows(&url, None), 0, "a hostile request was stored");
    // Still serving.
    let r = d.post("gh", "after-hostile", b"{}");
    assert_eq!(r.status, 202, "{}", r.text());
    assert_eq!(count_rows(&url, None), 1);
    assert!(d.wait_exit(Duration::from_millis(10)).is_none());
}

/// One connection that sends a request head slowly, a header at a time.
fn dribbler(addr: &str) -> Option<TcpStream> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.write_all(b"POST /hooks/gh HTTP/1.1\r\nHost: x\r\n")
        .ok()?;
    Some(s)
}

fn timed_delivery(addr: &str, delivery: &str) -> (u16, Duration) {
    let t = Instant::now();
    let r = post_signed(addr, "gh", delivery, b"{\"slow\":\"loris\"}", SECRET);
    (r.status, t.elapsed())
}

#[test]
fn slowloris_does_not_delay_a_valid_delivery() {
    let env = Env::new("slowloris");
    let secret = env.write("gh.secret", SECRET);
    let url = env.sqlite_url();
    let addr = format!("127.0.0.1:{}", free_port());
    // Default header_timeout (10 s): the slow clients are not cut off
    // during this test, they really hold their connections.
    let d = Daemon::start(&env, &config(&addr, &url, &secret, ""), &[]);
    let mut slow: Vec<TcpStream> = (0..500).filter_map(|_| dribbler(&addr)).collect();
    assert_eq!(slow.len(), 500, "could not open 500 connections");
    let start = Instant::now();
    let mut i = 0;
    while start.elapsed() < Duration::from_secs(4) {
        for s in slow.iter_mut() {
            let _ = s.write_all(format!("X-Slow-{i}: a\r\n").as_bytes());
        }
        let (status, took) = timed_delivery(&addr, &format!("valid-{i}"));
        assert_eq!(status, 202, "delivery {i} while 500 connections dribble");
        assert!(took < Duration::from_secs(1), "delivery {i} took {took:?}");
        i += 1;
        std::thread::sleep(Duration::from_millis(300));
    }
    assert_eq!(count_rows(&url, None), i as i64);
    drop(slow);
    assert_eq!(d.post("gh", "after-loris", b"{}").status, 202);
}

/// With fewer file descriptors than connections, accept() fails with
/// EMFILE: the daemon must back off, keep running, and serve again once the
/// slow clients are cut off by header_timeout.
#[test]
fn running_out_of_file_descriptors_is_survived() {
    let env = Env::new("emfile");
    let secret = env.write("gh.secret", SECRET);
    let url = env.sqlite_url();
    let addr = format!("127.0.0.1:{}", free_port());
    let cfg = env.write(
        "webhookd.toml",
        &config(&addr, &url, &secret, "header_timeout = \"2s\""),
    );
    let log = env.path("daemon.log");
    // prlimit(1) execs the daemon with a soft and hard limit of 128 fds.
    let child = Command::new("prlimit")
        .args(["--nofile=128:128", "--"])
        .arg(bin())
        .arg("--config")
        .arg(&cfg)
        .arg("serve")
        .env_remove("NOTIFY_SOCKET")
        .env_remove("LISTEN_FDS")
        .env_remove("JOURNAL_STREAM")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("prlimit (util-linux)");
    let mut d = Daemon {
        child,
        addr: addr.clone(),
        log,
        config: cfg,
    };
    d.wait_healthy(Duration::from_secs(20));
    let slow: Vec<TcpStream> = (0..500).filter_map(|_| dribbler(&addr)).collect();
    assert!(slow.len() >= 400, "only {} connections", slow.len());
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        d.child.try_wait().unwrap().is_none(),
        "daemon died: {}",
        d.log_text()
    );
    // The slow clients are cut off after header_timeout, a batch at a
    // time; then deliveries are served again.
    drop(slow);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = request(
            &addr,
            "POST",
            "/hooks/gh",
            &github_headers("after-emfile", b"{}", SECRET),
            b"{}",
        );
        if matches!(&r, Ok(r) if r.status == 202) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not serving after EMFILE: {r:?}\n{}",
            d.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(d.child.try_wait().unwrap().is_none(), "daemon died");
    let log = d.log_text();
    assert!(
        log.contains("accept failed") || log.contains("Too many open files"),
        "EMFILE never happened? {log}"
    );
}
