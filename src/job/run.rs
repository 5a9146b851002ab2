//! `webhookd job-run [--args] [--env NAME]... [--] COMMAND [ARG]...`: the
//! `ExecStart=` of a `webhook-job-NAME@.service` instance. systemd hands it
//! one accepted connection from webhookd (`Accept=yes`: fd 3 with
//! `LISTEN_FDS=1`, or stdin with `StandardInput=socket`). It reads the event,
//! runs the unit's command with the body on stdin and the values in its
//! environment, copies the output to its own stdout/stderr (the journal,
//! under this unit) and to webhookd, and reports the exit status.
//!
//! The command and the user are the unit's. What webhookd sends is data:
//! environment names other than `WEBHOOK_*` only if the unit lists them with
//! `--env`, arguments only with `--args`. When webhookd closes the
//! connection (its timeout, its shutdown) or the request's timeout passes,
//! the command's whole process group is killed and the wrapper exits, so the
//! unit instance stops.

use std::ffi::OsString;
use std::os::fd::{FromRawFd, RawFd};
use std::os::unix::process::ExitStatusExt;
use std::process::{ExitCode, Stdio};
use std::time::Duration;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use super::{read_request, write_frame, Exit, Request, TAG_EXIT, TAG_STDERR, TAG_STDOUT};

/// What the unit's `ExecStart=` says.
#[derive(Debug, Default, PartialEq, Eq)]
struct Options {
    allow_args: bool,
    allow_env: Vec<String>,
    command: Vec<OsString>,
}

const USAGE: &str = "usage: webhookd job-run [--args] [--env NAME]... [--] COMMAND [ARG]...";

fn parse(args: Vec<OsString>) -> Result<Options, String> {
    let mut o = Options::default();
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        match a.to_str() {
            Some("--args") => o.allow_args = true,
            Some("--env") => {
                let n = it
                    .next()
                    .and_then(|n| n.into_string().ok())
                    .ok_or("--env needs a variable name")?;
                o.allow_env.push(n);
            }
            Some("--") => {
                o.command.extend(it);
                break;
            }
            Some(s) if s.starts_with('-') => return Err(format!("unknown option {s:?}")),
            _ => {
                o.command.push(a);
                o.command.extend(it);
                break;
            }
        }
    }
    if o.command.is_empty() {
        return Err("no command given".into());
    }
    Ok(o)
}

/// Names that would let the sender change what the command does rather than
/// what it reads: refused even if listed.
fn dangerous(name: &str) -> bool {
    const EXACT: &[&str] = &[
        "PATH",
        "IFS",
        "ENV",
        "BASH_ENV",
        "SHELLOPTS",
        "BASHOPTS",
        "PS4",
        "HOME",
        "SHELL",
        "GCONV_PATH",
        "HOSTALIASES",
        "TMPDIR",
    ];
    const PREFIX: &[&str] = &[
        "LD_",
        "PYTHON",
        "PERL",
        "RUBY",
        "NODE_",
        "GIT_",
        "BASH_FUNC_",
    ];
    EXACT.contains(&name) || PREFIX.iter().any(|p| name.starts_with(p))
}

fn check(o: &Options, req: &Request) -> Result<(), String> {
    if !req.args.is_empty() && !o.allow_args {
        return Err(format!(
            "webhookd sent {} argument(s) but the unit does not allow them (add --args to job-run in ExecStart=)",
            req.args.len()
        ));
    }
    for (k, _) in req.env.iter().chain(req.files.iter()) {
        let shaped = !k.is_empty()
            && k.bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_');
        let allowed = k.starts_with("WEBHOOK_") || o.allow_env.iter().any(|a| a == k);
        if !shaped || dangerous(k) || !allowed {
            return Err(format!(
                "webhookd sent the environment variable {k:?}, which the unit does not allow (WEBHOOK_* or --env NAME)"
            ));
        }
    }
    Ok(())
}

/// The connection systemd passed: fd 3 when `LISTEN_FDS=1` is for us
/// (Accept=yes, or systemd-socket-activate --accept), else stdin.
fn connection_fd() -> RawFd {
    let ours = std::env::var("LISTEN_PID")
        .ok()
        .and_then(|p| p.parse::<u32>().ok())
        == Some(std::process::id());
    if ours && std::env::var("LISTEN_FDS").as_deref() == Ok("1") {
        3
    } else {
        0
    }
}

/// The systemd unit we run in (from our cgroup), for the journal hint.
fn own_unit() -> Option<String> {
    let cg = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    cg.lines()
        .flat_map(|l| l.rsplit('/'))
        .find(|c| c.ends_with(".service"))
        .map(str::to_string)
}

pub fn main(args: Vec<OsString>) -> ExitCode {
    let opts = match parse(args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("webhookd job-run: {e}\n{USAGE}");
            return ExitCode::from(64);
        }
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("webhookd job-run: cannot start the runtime: {e}");
            return ExitCode::from(70);
        }
    };
    let fd = connection_fd();
    // SAFETY: systemd passed this descriptor to us as the accepted
    // connection (fd 3 by LISTEN_FDS, or stdin); nothing else owns it.
    let std_sock = unsafe { std::os::unix::net::UnixStream::from_raw_fd(fd) };
    rt.block_on(serve(opts, std_sock))
}

async fn serve(opts: Options, sock: std::os::unix::net::UnixStream) -> ExitCode {
    let unit = own_unit();
    let sock = match sock
        .set_nonblocking(true)
        .and_then(|()| tokio::net::UnixStream::from_std(sock))
    {
        Ok(s) => s,
        Err(e) => {
            eprintln!("webhookd job-run: the connection from systemd is not a usable socket: {e}");
            return ExitCode::from(71);
        }
    };
    let (mut rd, wr) = sock.into_split();
    let (req, body) =
        match tokio::time::timeout(Duration::from_secs(10), read_request(&mut rd)).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                eprintln!("webhookd job-run: bad request from webhookd: {e}");
                return ExitCode::from(65);
            }
            Err(_) => {
                eprintln!("webhookd job-run: no request within 10s");
                return ExitCode::from(65);
            }
        };
    let (tx, mut frames) = mpsc::channel::<(u8, Vec<u8>)>(64);
    let writer = tokio::spawn(async move {
        let mut wr = wr;
        while let Some((tag, data)) = frames.recv().await {
            if write_frame(&mut wr, tag, &data).await.is_err() {
                // webhookd is gone; the EOF watch below ends the job.
                while frames.recv().await.is_some() {}
            }
        }
        let _ = wr.shutdown().await;
    });
    let exit = run(&opts, &req, body, &mut rd, &tx, unit.clone()).await;
    let code = match (&exit.error, exit.code, exit.signal) {
        (Some(e), _, _) => {
            eprintln!(
                "webhookd job-run: id={} hook={} attempt={}: {e}",
                req.id, req.hook, req.attempt
            );
            1
        }
        (None, Some(c), _) => {
            eprintln!(
                "webhookd job-run: id={} hook={} attempt={}: exited with status {c}",
                req.id, req.hook, req.attempt
            );
            c
        }
        (None, None, Some(s)) => {
            eprintln!(
                "webhookd job-run: id={} hook={} attempt={}: killed by signal {s}",
                req.id, req.hook, req.attempt
            );
            128 + s
        }
        _ => 1,
    };
    let mut exit = exit;
    exit.unit = unit;
    let _ = tx
        .send((TAG_EXIT, serde_json::to_vec(&exit).unwrap_or_default()))
        .await;
    drop(tx);
    let _ = writer.await;
    ExitCode::from(u8::try_from(code.clamp(0, 255)).unwrap_or(1))
}

/// Files handed to the command, removed when dropped.
struct TempFiles(Vec<std::path::PathBuf>);

impl Drop for TempFiles {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Write each file (mode 0600, a fresh name) in the job's temporary
/// directory ($TMPDIR, else /tmp: private to the unit with PrivateTmp=).
fn write_files(req: &Request) -> Result<(TempFiles, Vec<(String, std::path::PathBuf)>), String> {
    use base64::Engine as _;
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let dir = std::env::temp_dir();
    let mut made = TempFiles(Vec::new());
    let mut env = Vec::new();
    for (i, (name, b64)) in req.files.iter().enumerate() {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|e| format!("file {name}: not base64: {e}"))?;
        let path = dir.join(format!(
            ".webhookd-job-{}-{}-{i}-{}",
            req.id,
            req.attempt,
            name.to_ascii_lowercase()
        ));
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| format!("file {name}: cannot create {}: {e}", path.display()))?;
        made.0.push(path.clone());
        f.write_all(&bytes)
            .map_err(|e| format!("file {name}: cannot write {}: {e}", path.display()))?;
        env.push((name.clone(), path));
    }
    Ok((made, env))
}

/// Kills the command's process group when dropped, unless it was reaped.
struct Group(Option<i32>);

impl Drop for Group {
    fn drop(&mut self) {
        if let Some(p) = self.0 {
            let _ = killpg(Pid::from_raw(p), Signal::SIGKILL);
        }
    }
}

async fn pump(r: Option<impl AsyncRead + Unpin>, tag: u8, tx: mpsc::Sender<(u8, Vec<u8>)>) {
    use std::io::Write as _;
    let Some(mut r) = r else { return };
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                // Our own stdout/stderr are the journal, under this unit.
                if tag == TAG_STDOUT {
                    let _ = std::io::stdout().write_all(&buf[..n]);
                    let _ = std::io::stdout().flush();
                } else {
                    let _ = std::io::stderr().write_all(&buf[..n]);
                }
                let _ = tx.send((tag, buf[..n].to_vec())).await;
            }
        }
    }
}

async fn run(
    opts: &Options,
    req: &Request,
    body: Vec<u8>,
    rd: &mut tokio::net::unix::OwnedReadHalf,
    tx: &mpsc::Sender<(u8, Vec<u8>)>,
    unit: Option<String>,
) -> Exit {
    let fail = |error: String, permanent: bool| Exit {
        error: Some(error),
        permanent,
        ..Exit::default()
    };
    eprintln!(
        "webhookd job-run: id={} hook={} event={} delivery={} attempt={} unit={}: running {:?}",
        req.id,
        req.hook,
        req.event,
        req.delivery,
        req.attempt,
        unit.as_deref().unwrap_or("-"),
        opts.command[0]
    );
    if let Err(e) = check(opts, req) {
        return fail(e, true);
    }
    if req.id.contains('/') {
        return fail("bad event id".into(), true);
    }
    let (_files, file_env) = match write_files(req) {
        Ok(f) => f,
        Err(e) => return fail(e, false),
    };
    let mut cmd = tokio::process::Command::new(&opts.command[0]);
    cmd.args(&opts.command[1..])
        .args(&req.args)
        .env("WEBHOOK_HOOK", &req.hook)
        .env("WEBHOOK_EVENT", &req.event)
        .env("WEBHOOK_DELIVERY", &req.delivery)
        .env("WEBHOOK_ID", &req.id)
        .env("WEBHOOK_ATTEMPT", req.attempt.to_string())
        .envs(req.env.iter().map(|(k, v)| (k, v)))
        .envs(file_env.iter().map(|(k, p)| (k, p)))
        .env_remove("LISTEN_FDS")
        .env_remove("LISTEN_PID")
        .env_remove("LISTEN_FDNAMES")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return fail(format!("cannot start {:?}: {e}", opts.command[0]), false),
    };
    let mut group = Group(child.id().map(|p| p as i32));
    let stdin = child.stdin.take();
    let feed = async move {
        if let Some(mut s) = stdin {
            // A command that does not read its input is fine: ignore EPIPE.
            let _ = s.write_all(&body).await;
            let _ = s.shutdown().await;
        }
    };
    let out = pump(child.stdout.take(), TAG_STDOUT, tx.clone());
    let err = pump(child.stderr.take(), TAG_STDERR, tx.clone());
    let work = async {
        let (_, _, _, status) = tokio::join!(feed, out, err, child.wait());
        status
    };
    // webhookd never half-closes: end of stream means it gave up on us.
    let closed = async {
        let mut b = [0u8; 64];
        loop {
            match rd.read(&mut b).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    };
    let timeout = Duration::from_millis(req.timeout_ms.max(1));
    let status = tokio::select! {
        s = work => s,
        () = closed => {
            drop(group);
            return fail("webhookd closed the connection (its timeout or shutdown); process group killed".into(), false);
        }
        () = tokio::time::sleep(timeout) => {
            drop(group);
            return fail(format!("timed out after {timeout:?}; process group killed"), false);
        }
    };
    group.0 = None;
    match status {
        Ok(s) => Exit {
            code: s.code(),
            signal: s.signal(),
            ..Exit::default()
        },
        Err(e) => fail(format!("waiting for the command failed: {e}"), false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    #[test]
    fn options() {
        let o = parse(os(&["--args", "--env", "REF", "--", "/bin/sh", "-c", "x"])).unwrap();
        assert!(o.allow_args);
        assert_eq!(o.allow_env, vec!["REF"]);
        assert_eq!(o.command, os(&["/bin/sh", "-c", "x"]));
        let o = parse(os(&["/usr/local/bin/deploy", "--prod"])).unwrap();
        assert_eq!(o.command, os(&["/usr/local/bin/deploy", "--prod"]));
        assert!(parse(os(&["--bogus", "x"])).is_err());
        assert!(parse(os(&["--args"])).is_err());
    }

    #[test]
    fn environment_policy() {
        let o = parse(os(&["--env", "REF", "--env", "LD_PRELOAD", "/bin/true"])).unwrap();
        let mut req = Request {
            id: "i".into(),
            hook: "h".into(),
            event: "e".into(),
            delivery: "d".into(),
            attempt: 1,
            timeout_ms: 1,
            args: vec![],
            env: vec![
                ("WEBHOOK_REF".into(), "x".into()),
                ("REF".into(), "y".into()),
            ],
            files: vec![],
        };
        assert!(check(&o, &req).is_ok());
        req.env.push(("LD_PRELOAD".into(), "/tmp/x.so".into()));
        assert!(check(&o, &req).is_err(), "listed but dangerous");
        req.env.pop();
        req.env.push(("OTHER".into(), "1".into()));
        assert!(check(&o, &req).is_err(), "not listed");
        req.env.pop();
        req.args.push("a".into());
        assert!(check(&o, &req).is_err(), "args not allowed");
        req.args.clear();
        req.files.push(("BASH_ENV".into(), String::new()));
        assert!(
            check(&o, &req).is_err(),
            "a file's name is an environment name too"
        );
    }

    #[test]
    fn files_are_private_and_removed() {
        use std::os::unix::fs::PermissionsExt as _;
        let req = Request {
            id: format!("files-test-{}", std::process::id()),
            hook: "h".into(),
            event: "e".into(),
            delivery: "d".into(),
            attempt: 1,
            timeout_ms: 1,
            args: vec![],
            env: vec![],
            files: vec![("WEBHOOK_PAYLOAD".into(), "aGVsbG8=".into())],
        };
        let (made, env) = write_files(&req).unwrap();
        assert_eq!(env[0].0, "WEBHOOK_PAYLOAD");
        let p = env[0].1.clone();
        assert_eq!(std::fs::read(&p).unwrap(), b"hello");
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        drop(made);
        assert!(!p.exists());
        let bad = Request {
            files: vec![("WEBHOOK_X".into(), "!!".into())],
            ..req
        };
        assert!(write_files(&bad).is_err());
    }
}
