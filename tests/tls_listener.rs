//! The HTTPS listener with real TLS peers on loopback: certificates made here
//! (rcgen), the daemon serving TLS on a socket passed by the real
//! `systemd-socket-activate` with the key as a credential, deliveries sent
//! with a Rust client (rustls), curl and `openssl s_client`; TLS 1.2/1.3 only
//! and ALPN http/1.1; plain HTTP to the TLS port answered 400; renewal by
//! reload without dropping an open connection; a broken renewal refused;
//! startup errors that name the file and never show the key; the handshake
//! bounded by the header timeout and the in-flight cap; expiry in /status
//! and /readyz.

mod common;
mod tls_common;
use common::*;
use nix::sys::signal::Signal;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tls_common::*;

struct Activator(std::process::Child);

impl Drop for Activator {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Files of a server pair under `env`: cert.pem, and the key in creds/tls.key
/// (a credentials directory, like LoadCredential= makes).
fn write_pair(env: &Env, issued: &Issued) {
    std::fs::create_dir_all(env.path("creds")).unwrap();
    std::fs::write(env.path("cert.pem"), &issued.cert_pem).unwrap();
    std::fs::write(env.path("creds/tls.key"), &issued.key_pem).unwrap();
}

fn tls_section(env: &Env, extra: &str) -> String {
    format!(
        "[server.tls]\ncert = \"file:{}\"\nkey = \"file:{}\"\n{extra}\n",
        env.path("cert.pem").display(),
        env.path("creds/tls.key").display()
    )
}

/// Start the daemon bound to `web` (TLS) and `admin` (plain), waiting on admin.
fn start(env: &Env, web: &str, admin: &str, server_extra: &str) -> Daemon {
    let secret = env.write("gh.secret", SECRET);
    let extra = format!("admin_listen = \"{admin}\"\n{server_extra}");
    let text = config(web, &env.sqlite_url(), &secret, &extra);
    let mut d = Daemon::spawn(env, &text, &[]);
    d.addr = admin.to_string();
    d.wait_healthy(Duration::from_secs(20));
    d
}

fn signed(delivery: &str, body: &[u8]) -> Vec<(String, String)> {
    github_headers(delivery, body, SECRET)
}

/// One request on an open (keep-alive) TLS session; reads one response.
fn keepalive_request<S: Read + Write>(s: &mut S, delivery: &str, body: &[u8]) -> Resp {
    let mut req = "POST /hooks/gh HTTP/1.1\r\nHost: localhost\r\n".to_string();
    for (k, v) in signed(delivery, body) {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    s.write_all(req.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    s.flush().unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if buf.len() >= end + 4 + len {
                return parse_response(&buf[..end + 4 + len]).unwrap();
            }
        }
        let n = s.read(&mut chunk).unwrap();
        assert!(n > 0, "connection closed before the response");
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn wait_reloads(admin: &str, result: &str, n: f64, d: &Daemon) {
    let name = format!("webhookd_config_reloads_total{{result=\"{result}\"}}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = request(admin, "GET", "/metrics", &[], b"").unwrap().text();
        let v = text
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0);
        if v >= n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no {result} reload #{n}:\n{}",
            d.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn curl(args: &[&str]) -> std::process::Output {
    Command::new("curl")
        .args(["-sS", "--max-time", "10"])
        .args(args)
        .output()
        .expect("curl is required")
}

fn s_client(addr: &str, args: &[&str], ca: &std::path::Path) -> (bool, String) {
    let mut child = Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            addr,
            "-servername",
            "localhost",
            "-CAfile",
        ])
        .arg(ca)
        .args(["-verify_return_error"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("openssl is required");
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn serves_deliveries_over_tls_on_an_activated_socket() {
    let env = Env::new("tls-activate");
    let ca = Ca::new("webhookd test CA");
    let ca_file = write_pem(&env.dir, "ca.pem", &ca.cert_pem);
    write_pair(&env, &ca.server(&["localhost", "127.0.0.1"], 90));
    let secret = env.write("gh.secret", SECRET);
    let web = format!("127.0.0.1:{}", free_port());
    let admin = format!("127.0.0.1:{}", free_port());
    // The key is a credential, as LoadCredential=tls.key would pass it.
    let tls = format!(
        "[server.tls]\ncert = \"file:{}\"\nkey = \"credential:tls.key\"\n",
        env.path("cert.pem").display()
    );
    let cfg = env.write(
        "w.toml",
        &config(
            &format!("127.0.0.1:{}", free_port()),
            &env.sqlite_url(),
            &secret,
            &tls,
        ),
    );
    let log = env.path("activate.log");
    let mut cmd = Command::new("systemd-socket-activate");
    cmd.args(["-l", &web, "-l", &admin, "--fdname=web:admin"])
        .arg(format!(
            "--setenv=CREDENTIALS_DIRECTORY={}",
            env.path("creds").display()
        ))
        .arg(bin())
        .arg("--config")
        .arg(&cfg)
        .arg("serve")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
    let _a = Activator(cmd.spawn().expect("systemd-socket-activate is required"));
    for _ in 0..100 {
        if TcpStream::connect(&web).is_ok() && TcpStream::connect(&admin).is_ok() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let logtext = || std::fs::read_to_string(&log).unwrap_or_default();

    // A Rust client (rustls): the first connection starts the daemon.
    let cfg_ok = client_config(&ca.cert_pem, None);
    let body = br#"{"zen":"TLS"}"#;
    let r = tls_request(
        &web,
        "localhost",
        cfg_ok.clone(),
        "POST",
        "/hooks/gh",
        &signed("tls-1", body),
        body,
    )
    .unwrap_or_else(|e| panic!("TLS request failed: {e}\n{}", logtext()));
    assert_eq!(r.status, 202, "{}", r.text());
    assert_eq!(stored_body(&env.sqlite_url(), "tls-1").unwrap(), body);

    // curl, verifying against our CA and the name localhost.
    let port = web.rsplit(':').next().unwrap();
    let mut args: Vec<String> = vec![
        "--cacert".into(),
        ca_file.display().to_string(),
        "--resolve".into(),
        format!("localhost:{port}:127.0.0.1"),
        "-o".into(),
        "/dev/stdout".into(),
        "-w".into(),
        "\n%{http_code} %{http_version}".into(),
        "-X".into(),
        "POST".into(),
        "--data-binary".into(),
        String::from_utf8_lossy(body).into_owned(),
    ];
    for (k, v) in signed("tls-curl", body) {
        args.push("-H".into());
        args.push(format!("{k}: {v}"));
    }
    args.push(format!("https://localhost:{port}/hooks/gh"));
    let o = curl(&args.iter().map(|s| s.as_str()).collect::<Vec<_>>());
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.trim_end().ends_with("202 1.1"),
        "curl: {out} {}",
        String::from_utf8_lossy(&o.stderr)
    );

    // openssl s_client: TLS 1.3 and 1.2 are served, 1.1 is not; ALPN is http/1.1.
    let (ok, text) = s_client(&web, &["-tls1_3", "-alpn", "h2,http/1.1"], &ca_file);
    assert!(ok, "{text}");
    assert!(text.contains("TLSv1.3"), "{text}");
    assert!(text.contains("ALPN protocol: http/1.1"), "{text}");
    let (ok, text) = s_client(&web, &["-tls1_2"], &ca_file);
    assert!(ok && text.contains("TLSv1.2"), "{text}");
    let (ok, text) = s_client(
        &web,
        &["-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0"],
        &ca_file,
    );
    assert!(
        !ok && text.contains("Protocol  : TLSv1.1") && text.contains("alert"),
        "TLS 1.1 must be refused by the server: {text}"
    );

    // Plain HTTP to the TLS port: a clear 400, at once.
    let t = Instant::now();
    let r = post_signed(&web, "gh", "plain-1", body, SECRET);
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("HTTPS"), "{}", r.text());
    assert!(t.elapsed() < Duration::from_secs(3));
    assert!(stored_body(&env.sqlite_url(), "plain-1").is_none());
    let o = curl(&[&format!("http://{web}/hooks/gh"), "-d", "{}"]);
    assert!(String::from_utf8_lossy(&o.stdout).contains("speaks HTTPS"));

    // The admin socket stays plain; /status describes the certificate.
    let st = request(&admin, "GET", "/status", &[], b"").unwrap().json();
    assert_eq!(st["tls"]["state"], "ok", "{st}");
    assert_eq!(st["tls"]["subject"], "CN=localhost", "{st}");
    assert_eq!(st["tls"]["alpn"][0], "http/1.1", "{st}");
    let m = request(&admin, "GET", "/metrics", &[], b"").unwrap().text();
    assert!(
        m.contains("webhookd_requests_rejected_total{reason=\"tls_plain_http\"} 2"),
        "{m}"
    );
}

/// Days from now to webhookd_tls_certificate_expiry_timestamp_seconds, rounded.
fn expiry_days(admin: &str) -> i64 {
    let m = request(admin, "GET", "/metrics", &[], b"").unwrap().text();
    let v: i64 = m
        .lines()
        .find_map(|l| l.strip_prefix("webhookd_tls_certificate_expiry_timestamp_seconds "))
        .unwrap_or_else(|| panic!("no expiry metric in {m}"))
        .trim()
        .parse()
        .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    ((v - now) as f64 / 86_400.0).round() as i64
}

#[test]
fn renewal_by_reload_keeps_connections_and_a_broken_one_is_refused() {
    let env = Env::new("tls-reload");
    let ca = Ca::new("webhookd test CA");
    let first = ca.server(&["localhost"], 90);
    write_pair(&env, &first);
    let web = format!("127.0.0.1:{}", free_port());
    let admin = format!("127.0.0.1:{}", free_port());
    let d = start(&env, &web, &admin, &tls_section(&env, ""));
    let cfg = client_config(&ca.cert_pem, None);
    let der_first = certs(&first.cert_pem)[0].as_ref().to_vec();
    assert_eq!(peer_cert(&web, "localhost", cfg.clone()), der_first);
    assert_eq!(
        expiry_days(&admin),
        90,
        "the expiry metric names the served certificate"
    );

    // A keep-alive session open across the renewal.
    let mut open = connect(&web, "localhost", cfg.clone()).unwrap();
    assert_eq!(keepalive_request(&mut open, "ka-1", b"{}").status, 202);

    // Renew in place (as certbot does) and reload.
    let renewed = ca.server(&["localhost"], 180);
    write_pair(&env, &renewed);
    d.signal(Signal::SIGHUP);
    wait_reloads(&admin, "ok", 1.0, &d);
    let der_renewed = certs(&renewed.cert_pem)[0].as_ref().to_vec();
    assert_eq!(peer_cert(&web, "localhost", cfg.clone()), der_renewed);
    assert_eq!(expiry_days(&admin), 180, "the metric follows the renewal");
    // The open connection was not dropped: it still serves.
    assert_eq!(keepalive_request(&mut open, "ka-2", b"{}").status, 202);

    // A broken renewal: the new certificate with another key.
    let other = ca.server(&["localhost"], 365);
    std::fs::write(env.path("cert.pem"), &other.cert_pem).unwrap();
    d.signal(Signal::SIGHUP);
    wait_reloads(&admin, "refused", 1.0, &d);
    let log = d.log_text();
    assert!(
        log.contains("reload refused") && log.contains("does not match the certificate"),
        "{log}"
    );
    // Still serving the renewed pair, to new and open connections.
    assert_eq!(peer_cert(&web, "localhost", cfg.clone()), der_renewed);
    assert_eq!(keepalive_request(&mut open, "ka-3", b"{}").status, 202);
    let st = request(&admin, "GET", "/status", &[], b"").unwrap().json();
    assert_eq!(st["config"]["last_reload"]["ok"], false, "{st}");
    assert_eq!(
        expiry_days(&admin),
        180,
        "a refused renewal leaves the metric alone"
    );

    // An unreadable key is refused too, naming the file.
    std::fs::write(env.path("cert.pem"), &renewed.cert_pem).unwrap();
    std::fs::remove_file(env.path("creds/tls.key")).unwrap();
    d.signal(Signal::SIGHUP);
    wait_reloads(&admin, "refused", 2.0, &d);
    assert!(
        d.log_text().contains("creds/tls.key: cannot read"),
        "{}",
        d.log_text()
    );
    assert_eq!(peer_cert(&web, "localhost", cfg), der_renewed);

    // No key material anywhere in the log.
    let log = d.log_text();
    for k in [&first.key_pem, &renewed.key_pem, &other.key_pem] {
        let line = k.lines().nth(1).unwrap();
        assert!(!log.contains(line), "key material in the log");
    }
}

#[test]
fn startup_refuses_bad_pairs_with_clear_errors() {
    let env = Env::new("tls-bad");
    let ca = Ca::new("webhookd test CA");
    let a = ca.server(&["localhost"], 90);
    let b = ca.server(&["localhost"], 90);
    let secret = env.write("gh.secret", SECRET);
    let web = format!("127.0.0.1:{}", free_port());
    let run = |cert: &str, key: &str| -> (bool, String) {
        let text = config(
            &web,
            &env.sqlite_url(),
            &secret,
            &format!("[server.tls]\ncert = \"file:{cert}\"\nkey = \"file:{key}\"\n"),
        );
        let cfg = env.write("bad.toml", &text);
        let check = Command::new(bin())
            .arg("--config")
            .arg(&cfg)
            .arg("check-config")
            .output()
            .unwrap();
        let mut d = Daemon::spawn(&env, &text, &[]);
        let status = d.wait_exit(Duration::from_secs(20));
        assert!(
            matches!(status, Some(s) if !s.success()),
            "serve must exit with an error: {}",
            d.log_text()
        );
        let out = format!(
            "{}\n{}",
            String::from_utf8_lossy(&check.stderr),
            d.log_text()
        );
        (check.status.success(), out)
    };
    let dir = env.dir.display().to_string();
    std::fs::write(env.path("a.crt"), &a.cert_pem).unwrap();
    std::fs::write(env.path("a.key"), &a.key_pem).unwrap();
    std::fs::write(env.path("b.key"), &b.key_pem).unwrap();

    // The good pair: check-config says which certificate, for whom, until when.
    let good = env.write(
        "good.toml",
        &config(
            &web,
            &env.sqlite_url(),
            &secret,
            &format!("[server.tls]\ncert = \"file:{dir}/a.crt\"\nkey = \"file:{dir}/a.key\"\n"),
        ),
    );
    let o = Command::new(bin())
        .arg("--config")
        .arg(&good)
        .arg("check-config")
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{out}");
    assert!(
        out.contains("TLS certificate")
            && out.contains("CN=localhost")
            && out.contains("valid until"),
        "{out}"
    );

    let (ok, out) = run(&format!("{dir}/a.crt"), &format!("{dir}/missing.key"));
    assert!(!ok && out.contains("missing.key: cannot read"), "{out}");

    let (ok, out) = run(&format!("{dir}/a.crt"), &format!("{dir}/b.key"));
    assert!(
        !ok && out.contains("does not match the certificate"),
        "{out}"
    );

    let (ok, out) = run(&format!("{dir}/a.key"), &format!("{dir}/a.key"));
    assert!(!ok && out.contains("no PEM certificate found"), "{out}");

    // Ed448 is valid PEM that rustls/ring cannot sign with.
    let made = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ed448",
            "-nodes",
            "-subj",
            "/CN=localhost",
        ])
        .args(["-days", "3", "-keyout"])
        .arg(env.path("ed448.key"))
        .arg("-out")
        .arg(env.path("ed448.crt"))
        .output()
        .expect("openssl is required");
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let (ok, out) = run(&format!("{dir}/ed448.crt"), &format!("{dir}/ed448.key"));
    assert!(!ok && out.contains("unsupported key type"), "{out}");

    for k in [&a.key_pem, &b.key_pem] {
        assert!(
            !out.contains(k.lines().nth(1).unwrap()),
            "key material shown"
        );
    }
    let ed = std::fs::read_to_string(env.path("ed448.key")).unwrap();
    assert!(
        !out.contains(ed.lines().nth(1).unwrap()),
        "key material shown"
    );
}

#[test]
fn handshake_is_bounded_by_header_timeout_and_in_flight_cap() {
    let env = Env::new("tls-slow");
    let ca = Ca::new("webhookd test CA");
    write_pair(&env, &ca.server(&["localhost"], 90));
    let web = format!("127.0.0.1:{}", free_port());
    let admin = format!("127.0.0.1:{}", free_port());
    let extra = format!(
        "header_timeout = \"1s\"\nmax_in_flight = 2\n{}",
        tls_section(&env, "")
    );
    let _d = start(&env, &web, &admin, &extra);
    let cfg = client_config(&ca.cert_pem, None);

    // Two clients that connect and never start the handshake.
    let t = Instant::now();
    let mut idle: Vec<TcpStream> = (0..2).map(|_| TcpStream::connect(&web).unwrap()).collect();
    std::thread::sleep(Duration::from_millis(200));
    // Over the cap: a third connection is closed at once.
    let mut third = TcpStream::connect(&web).unwrap();
    third
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut b = [0u8; 1];
    let n = third.read(&mut b).unwrap_or(0);
    assert_eq!(n, 0, "over the cap: closed");
    assert!(
        t.elapsed() < Duration::from_millis(900),
        "{:?}",
        t.elapsed()
    );
    // The idle ones are closed after the header timeout.
    for s in &mut idle {
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        assert_eq!(s.read(&mut b).unwrap_or(0), 0);
    }
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(3),
        "idle handshakes closed after {took:?}"
    );
    // A client that starts the handshake and stalls is cut off too.
    let mut partial = TcpStream::connect(&web).unwrap();
    partial
        .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
        .unwrap();
    partial
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let t = Instant::now();
    let _ = partial.read(&mut b);
    assert!(t.elapsed() < Duration::from_secs(3));
    // And real clients are served again.
    let r = tls_request(
        &web,
        "localhost",
        cfg,
        "POST",
        "/hooks/gh",
        &signed("after", b"{}"),
        b"{}",
    )
    .unwrap();
    assert_eq!(r.status, 202);
    let m = request(&admin, "GET", "/metrics", &[], b"").unwrap().text();
    assert!(m.contains("reason=\"tls_busy\""), "{m}");
    assert!(m.contains("reason=\"tls_timeout\""), "{m}");
}

#[test]
fn expiry_is_a_warning_then_a_readiness_problem() {
    let env = Env::new("tls-expiry");
    let ca = Ca::new("webhookd test CA");
    write_pair(&env, &ca.server(&["localhost"], 5));
    let web = format!("127.0.0.1:{}", free_port());
    let admin = format!("127.0.0.1:{}", free_port());
    let d = start(
        &env,
        &web,
        &admin,
        &tls_section(&env, "expiry_warning = \"14d\""),
    );
    let st = request(&admin, "GET", "/status", &[], b"").unwrap().json();
    assert_eq!(st["tls"]["state"], "expires_soon", "{st}");
    assert!(
        st["tls"]["warning"]
            .as_str()
            .unwrap()
            .contains("expires in"),
        "{st}"
    );
    assert!(
        st["tls"]["seconds_left"].as_i64().unwrap() > 4 * 86_400,
        "{st}"
    );
    assert!(d.log_text().contains("expires in"), "{}", d.log_text());
    assert_eq!(
        request(&admin, "GET", "/readyz", &[], b"").unwrap().status,
        200
    );

    // Renewal fails and an expired certificate is installed: not ready.
    write_pair(&env, &ca.server(&["localhost"], -1));
    d.signal(Signal::SIGHUP);
    wait_reloads(&admin, "ok", 1.0, &d);
    let r = request(&admin, "GET", "/readyz", &[], b"").unwrap();
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(r.text().contains("expired"), "{}", r.text());
    let st = request(&admin, "GET", "/status", &[], b"").unwrap().json();
    assert_eq!(st["tls"]["state"], "expired", "{st}");
    assert!(st["tls"]["seconds_left"].as_i64().unwrap() < 0, "{st}");
}

#[test]
fn sigterm_drains_an_in_flight_tls_request_and_a_stalled_handshake_does_not_hold_it() {
    let env = Env::new("tls-drain");
    let ca = Ca::new("webhookd test CA");
    write_pair(&env, &ca.server(&["localhost"], 90));
    let web = format!("127.0.0.1:{}", free_port());
    let admin = format!("127.0.0.1:{}", free_port());
    let extra = format!("header_timeout = \"2s\"\n{}", tls_section(&env, ""));
    let mut d = start(&env, &web, &admin, &extra);
    let cfg = client_config(&ca.cert_pem, None);

    // A slow TLS client: headers and part of the body now, the rest later.
    let body = br#"{"slow":"tls client","padding":"xxxxxxxxxxxxxxxxxxxx"}"#;
    let mut s = connect(&web, "localhost", cfg).unwrap();
    let mut head = String::from("POST /hooks/gh HTTP/1.1\r\nHost: localhost\r\n");
    for (k, v) in signed("tls-slow", body) {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(&body[..10]).unwrap();
    s.flush().unwrap();
    // And a connection that never starts its handshake.
    let _stalled = TcpStream::connect(&web).unwrap();
    std::thread::sleep(Duration::from_millis(300));

    let t = Instant::now();
    d.signal(Signal::SIGTERM);
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        d.child.try_wait().unwrap().is_none(),
        "exited before the request finished"
    );
    s.write_all(&body[10..]).unwrap();
    s.flush().unwrap();
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let r = parse_response(&buf).unwrap();
    assert_eq!(r.status, 202, "{}", r.text());
    let status = d
        .wait_exit(Duration::from_secs(15))
        .expect("exit after drain");
    assert!(status.success(), "{status:?}");
    // The stalled handshake is cut off by the header timeout, well before
    // the 10 s drain deadline.
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "took {:?}",
        t.elapsed()
    );
    assert_eq!(
        stored_body(&env.sqlite_url(), "tls-slow").as_deref(),
        Some(&body[..])
    );
    assert!(d.log_text().contains("drained cleanly"), "{}", d.log_text());
}
