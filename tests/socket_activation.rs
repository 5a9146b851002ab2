//! Sockets from systemd (via the real `systemd-socket-activate`), named
//! `web` and `admin`; a Unix-domain socket; and the fallback bind with its
//! "address in use" error.

mod common;
use common::*;
use std::io::Write;
use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};
use std::time::Duration;

struct Activator(std::process::Child);

impl Drop for Activator {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn activate(
    listen: &[String],
    names: &str,
    config: &std::path::Path,
    log: &std::path::Path,
) -> Activator {
    let mut cmd = Command::new("systemd-socket-activate");
    for l in listen {
        cmd.arg("-l").arg(l);
    }
    cmd.arg(format!("--fdname={names}"))
        .arg(bin())
        .arg("--config")
        .arg(config)
        .arg("serve")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap());
    let a = Activator(
        cmd.spawn()
            .expect("systemd-socket-activate (package systemd) is required"),
    );
    // It binds before it execs us; give it a moment to listen.
    for _ in 0..100 {
        if listen.iter().all(|l| {
            if l.starts_with('/') {
                std::path::Path::new(l).exists()
            } else {
                std::net::TcpStream::connect(l).is_ok()
            }
        }) {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    a
}

#[test]
fn named_web_and_admin_sockets() {
    let env = Env::new("activate");
    let secret = env.write("gh.secret", SECRET);
    let web = format!("127.0.0.1:{}", free_port());
    let admin = format!("127.0.0.1:{}", free_port());
    // The configured address must NOT be bound when sockets are inherited.
    let configured = format!("127.0.0.1:{}", free_port());
    let cfg = env.write(
        "w.toml",
        &config(&configured, &env.sqlite_url(), &secret, ""),
    );
    let log = env.path("activate.log");
    let _a = activate(&[web.clone(), admin.clone()], "web:admin", &cfg, &log);

    // The first connection starts the daemon; it waits in the backlog until ready.
    let r = post_signed(&web, "gh", "sa-1", b"{}", SECRET);
    assert_eq!(r.status, 202, "{}", r.text());

    // The web socket serves hooks only; the admin socket serves the rest.
    assert_eq!(
        request(&web, "GET", "/status", &[], b"").unwrap().status,
        404
    );
    let st = request(&admin, "GET", "/status", &[], b"").unwrap();
    assert_eq!(st.status, 200);
    assert_eq!(st.json()["counters"]["accepted"], 1);
    assert_eq!(
        request(&admin, "GET", "/metrics", &[], b"").unwrap().status,
        200
    );
    assert_eq!(post_signed(&admin, "gh", "sa-2", b"{}", SECRET).status, 404);
    assert!(
        std::net::TcpStream::connect(&configured).is_err(),
        "configured address was bound"
    );

    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("passed by systemd: web="), "{text}");
    assert!(text.contains("admin="), "{text}");
}

#[test]
fn single_unix_socket_serves_everything() {
    let env = Env::new("unix");
    let secret = env.write("gh.secret", SECRET);
    let sock = env.path("web.sock");
    let cfg = env.write(
        "w.toml",
        &config(
            &format!("127.0.0.1:{}", free_port()),
            &env.sqlite_url(),
            &secret,
            "",
        ),
    );
    let log = env.path("unix.log");
    let _a = activate(&[sock.display().to_string()], "web", &cfg, &log);

    let body = b"{\"via\":\"unix\"}";
    let mut req = String::from("POST /hooks/gh HTTP/1.1\r\nHost: x\r\nConnection: close\r\n");
    for (k, v) in github_headers("ux-1", body, SECRET) {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    let mut s = UnixStream::connect(&sock).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(req.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let r = read_response(&mut s).unwrap();
    assert_eq!(r.status, 202, "{}", r.text());

    let mut s = UnixStream::connect(&sock).unwrap();
    s.write_all(b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    assert_eq!(read_response(&mut s).unwrap().status, 200);
}

#[test]
fn fallback_bind_and_address_in_use() {
    let env = Env::new("fallback");
    let secret = env.write("gh.secret", SECRET);
    let addr = format!("127.0.0.1:{}", free_port());
    let d = Daemon::start(&env, &config(&addr, &env.sqlite_url(), &secret, ""), &[]);
    assert_eq!(d.post("gh", "fb-1", b"{}").status, 202);

    // A second daemon on the same address fails clearly, exit code 71.
    let env2 = Env::new("fallback2");
    let secret2 = env2.write("gh.secret", SECRET);
    let cfg2 = env2.write("w.toml", &config(&addr, &env2.sqlite_url(), &secret2, ""));
    let out = Command::new(bin())
        .args(["--config", cfg2.to_str().unwrap(), "serve"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(71));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&addr) && err.contains("address already in use"),
        "{err}"
    );
    assert!(err.contains("webhook.socket"), "{err}");
}

#[test]
fn separate_admin_listen_when_binding() {
    let env = Env::new("adminbind");
    let secret = env.write("gh.secret", SECRET);
    let addr = format!("127.0.0.1:{}", free_port());
    let admin = format!("127.0.0.1:{}", free_port());
    let extra = format!("admin_listen = \"{admin}\"");
    let d = Daemon::spawn(
        &env,
        &config(&addr, &env.sqlite_url(), &secret, &extra),
        &[],
    );
    for _ in 0..200 {
        if request(&admin, "GET", "/healthz", &[], b"").is_ok() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        request(&admin, "GET", "/healthz", &[], b"").unwrap().status,
        200
    );
    assert_eq!(
        request(&addr, "GET", "/healthz", &[], b"").unwrap().status,
        404
    );
    assert_eq!(d.post("gh", "ab-1", b"{}").status, 202);
}
