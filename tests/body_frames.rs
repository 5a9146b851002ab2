//! A body is stored byte for byte however it arrives: in one piece (kept
//! as the frame hyper read, without a copy), in several pieces of a
//! Content-Length body, or as several chunks; and a body over the limit
//! that arrives in pieces is still refused with 413 and stores nothing.

mod common;
use common::*;
use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

/// A body with every byte value, so a dropped, doubled or reordered piece shows.
fn body(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 % 251) as u8).collect()
}

/// POST `body` to hook `gh`, writing the head and then each of `pieces`
/// (already framed) with a pause between, so they arrive as separate reads.
fn send_in_pieces(
    addr: &str,
    delivery: &str,
    body: &[u8],
    framing: &str,
    pieces: &[Vec<u8>],
) -> Resp {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_nodelay(true).unwrap();
    let mut head =
        "POST /hooks/gh HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n".to_string();
    for (k, v) in github_headers(delivery, body, SECRET) {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str(framing);
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).unwrap();
    for p in pieces {
        std::thread::sleep(Duration::from_millis(60));
        s.write_all(p).unwrap();
    }
    read_response(&mut s).unwrap()
}

fn chunked(parts: &[&[u8]]) -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = parts
        .iter()
        .map(|p| {
            let mut c = format!("{:x}\r\n", p.len()).into_bytes();
            c.extend_from_slice(p);
            c.extend_from_slice(b"\r\n");
            c
        })
        .collect();
    out.push(b"0\r\n\r\n".to_vec());
    out
}

#[test]
fn bodies_are_stored_byte_for_byte_however_they_arrive() {
    let env = Env::new("body-frames");
    let secret = env.write("gh.secret", SECRET);
    let url = env.sqlite_url();
    let addr = format!("127.0.0.1:{}", free_port());
    let _d = Daemon::start(
        &env,
        &config(&addr, &url, &secret, "body_limit = 20000"),
        &[],
    );

    // One piece, the common case.
    let one = body(8360);
    let r = post_signed(&addr, "gh", "one-piece", &one, SECRET);
    assert_eq!(r.status, 202, "{}", r.text());
    assert_eq!(stored_body(&url, "one-piece").as_deref(), Some(&one[..]));

    // A Content-Length body in three writes.
    let three = body(12_000);
    let pieces = vec![
        three[..100].to_vec(),
        three[100..7000].to_vec(),
        three[7000..].to_vec(),
    ];
    let framing = format!("Content-Length: {}\r\n", three.len());
    let r = send_in_pieces(&addr, "three-writes", &three, &framing, &pieces);
    assert_eq!(r.status, 202, "{}", r.text());
    assert_eq!(
        stored_body(&url, "three-writes").as_deref(),
        Some(&three[..])
    );

    // Chunked, four chunks.
    let ch = body(9000);
    let pieces = chunked(&[&ch[..1], &ch[1..4000], &ch[4000..8999], &ch[8999..]]);
    let r = send_in_pieces(
        &addr,
        "chunked",
        &ch,
        "Transfer-Encoding: chunked\r\n",
        &pieces,
    );
    assert_eq!(r.status, 202, "{}", r.text());
    assert_eq!(stored_body(&url, "chunked").as_deref(), Some(&ch[..]));

    // Over the limit in pieces (no Content-Length to refuse it up front).
    let big = body(30_000);
    let pieces = chunked(&[&big[..10_000], &big[10_000..20_000], &big[20_000..]]);
    let r = send_in_pieces(
        &addr,
        "too-large",
        &big,
        "Transfer-Encoding: chunked\r\n",
        &pieces,
    );
    assert_eq!(r.status, 413, "{}", r.text());
    assert_eq!(count_rows(&url, Some("too-large")), 0);
}
