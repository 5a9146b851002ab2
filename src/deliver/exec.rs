//! The `exec` action: run a command with the event body on stdin.
//!
//! No shell unless asked. The child runs in its own process group so a
//! timeout (or our shutdown) kills everything it started, not just the
//! first process. Output goes to our log, truncated.

use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::Attempt;
use crate::payload::values::ExecValues;
use crate::payload::{Meta, RequestView};
use crate::store::Claimed;

/// The `PATH` a command gets unless its action's `env`/`pass_env` set one.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// How long output is still collected after the command exited (a
/// background job it started may hold the pipes open for much longer).
pub const OUTPUT_GRACE: Duration = Duration::from_millis(250);

/// A resolved exec action.
#[derive(Debug, Clone)]
pub struct ExecAction {
    pub command: Vec<String>,
    pub shell: bool,
    pub workdir: Option<PathBuf>,
    pub timeout: Duration,
    pub output_limit: usize,
    /// `args`, `env`, `files` from the stored event's request values.
    pub values: ExecValues,
    /// The hook's `payload_content_type`, to read the stored body as.
    pub payload_content_type: Option<String>,
    /// `pass_env`: names of the daemon's variables passed on when set.
    pub pass_env: Vec<String>,
}

/// Aborts a helper task when dropped, so no reader or feeder outlives the
/// attempt (an abort at shutdown included).
struct AbortOnDrop<T>(JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Temporary files handed to the command (`files`), removed when dropped.
struct TempFiles(Vec<PathBuf>);

impl Drop for TempFiles {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Write each file (mode 0600, a fresh name per event and attempt) in the
/// temporary directory ($TMPDIR, else /tmp: private to the unit with
/// PrivateTmp=, and writable where ProtectSystem=strict makes the working
/// directory read-only).
fn write_files(
    ev: &Claimed,
    files: &[(String, Vec<u8>)],
) -> Result<(TempFiles, Vec<(String, PathBuf)>), String> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let dir = std::env::temp_dir();
    let mut made = TempFiles(Vec::new());
    let mut env = Vec::new();
    for (i, (name, bytes)) in files.iter().enumerate() {
        let path = dir.join(format!(
            ".webhookd-{}-{}-{i}-{}",
            ev.id,
            ev.attempts,
            name.to_ascii_lowercase()
        ));
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| format!("files.{name}: cannot create {}: {e}", path.display()))?;
        made.0.push(path.clone());
        f.write_all(bytes)
            .map_err(|e| format!("files.{name}: cannot write {}: {e}", path.display()))?;
        env.push((name.clone(), path));
    }
    Ok((made, env))
}

/// Kills the process group when dropped (timeout, or the task aborted at
/// shutdown), unless the child has already been reaped.
struct GroupGuard {
    pgid: Option<i32>,
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(pgid) = self.pgid {
            let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
        }
    }
}

/// Keep up to `limit` bytes of `r` until EOF or until `stop` fires.
async fn read_limited(
    r: Option<impl AsyncRead + Unpin>,
    limit: usize,
    mut stop: watch::Receiver<bool>,
) -> (Vec<u8>, bool) {
    let Some(mut r) = r else {
        return (Vec::new(), false);
    };
    let mut kept = Vec::new();
    let mut buf = [0u8; 4096];
    let mut truncated = false;
    loop {
        tokio::select! {
            n = r.read(&mut buf) => match n {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let room = limit.saturating_sub(kept.len());
                    kept.extend_from_slice(&buf[..n.min(room)]);
                    truncated |= n > room;
                }
            },
            _ = stop.wait_for(|s| *s) => break,
        }
    }
    (kept, truncated)
}

fn shown(out: &[u8], truncated: bool) -> String {
    let mut s = String::from_utf8_lossy(out).trim_end().replace('\n', "\\n");
    if truncated {
        s.push_str("…[truncated]");
    }
    s
}

/// A command's output, kept for a request that waits for it.
#[derive(Debug, Clone, Default)]
pub struct Captured {
    /// stdout, then stderr.
    pub output: Vec<u8>,
    pub truncated: bool,
}

/// An exec or job action's `args`, `env` and `files`, read from the stored
/// event (headers, body, ids) as the request view saw them.
pub(crate) fn stored_values(
    values: &ExecValues,
    content_type: Option<&str>,
    ev: &Claimed,
) -> Result<crate::payload::values::Resolved, crate::payload::values::ValueError> {
    let view = RequestView::from_stored(
        ev.headers.0.iter().cloned(),
        &ev.body,
        Meta {
            event: Some(ev.event_type.clone()),
            delivery: Some(ev.delivery_id.clone()),
            hook: Some(ev.hook_id.clone()),
            id: Some(ev.id.clone()),
        },
    )
    .with_content_type(content_type);
    values.resolve(&view)
}

pub async fn run(a: &ExecAction, ev: &Claimed) -> Attempt {
    run_captured(a, ev).await.0
}

/// Run once; also return what the command printed.
pub async fn run_captured(a: &ExecAction, ev: &Claimed) -> (Attempt, Captured) {
    // Values come from the stored event, so every attempt and every replay
    // gets the same; one that is missing will stay missing: a dead letter.
    let values = match stored_values(&a.values, a.payload_content_type.as_deref(), ev) {
        Ok(v) => v,
        Err(e) => return (Attempt::permanent(e.to_string()), Captured::default()),
    };
    let (_files, file_env) = match write_files(ev, &values.files) {
        Ok(f) => f,
        Err(e) => return (Attempt::retry(e, None), Captured::default()),
    };
    let mut cmd = if a.shell {
        // Values reach the script as "$1", "$2"..., never as script text.
        let mut c = Command::new("/bin/sh");
        c.arg("-c").arg(&a.command[0]).arg("webhookd");
        c
    } else {
        let mut c = Command::new(&a.command[0]);
        c.args(&a.command[1..]);
        c
    };
    cmd.args(&values.args);
    // The command's whole environment: PATH, `pass_env`, the action's `env`
    // and `files`, then WEBHOOK_*. Nothing else of the daemon's (other
    // hooks' `env:` secrets, CREDENTIALS_DIRECTORY, NOTIFY_SOCKET).
    cmd.env_clear().env("PATH", DEFAULT_PATH);
    for name in &a.pass_env {
        if let Some(v) = std::env::var_os(name) {
            cmd.env(name, v);
        }
    }
    for (k, v) in &values.env {
        cmd.env(k, v);
    }
    for (k, p) in &file_env {
        cmd.env(k, p);
    }
    cmd.env("WEBHOOK_HOOK", &ev.hook_id)
        .env("WEBHOOK_EVENT", &ev.event_type)
        .env("WEBHOOK_DELIVERY", &ev.delivery_id)
        .env("WEBHOOK_ID", &ev.id)
        .env("WEBHOOK_ATTEMPT", ev.attempts.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    if let Some(d) = &a.workdir {
        cmd.current_dir(d);
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            return (
                Attempt::retry(format!("cannot start {:?}: {e}", a.command[0]), None),
                Captured::default(),
            )
        }
    };
    let mut guard = GroupGuard {
        pgid: child.id().map(|p| p as i32),
    };
    let stdin = child.stdin.take();
    let body = ev.body.clone();
    let _feed = AbortOnDrop(tokio::spawn(async move {
        if let Some(mut s) = stdin {
            // A command that does not read its input is fine: ignore EPIPE.
            let _ = s.write_all(&body).await;
            let _ = s.shutdown().await;
        }
    }));
    let (stop, stop_rx) = watch::channel(false);
    let out = AbortOnDrop(tokio::spawn(read_limited(
        child.stdout.take(),
        a.output_limit,
        stop_rx.clone(),
    )));
    let err = AbortOnDrop(tokio::spawn(read_limited(
        child.stderr.take(),
        a.output_limit,
        stop_rx,
    )));
    // Done means exited: the exit status decides, not the pipes' EOF (a
    // `job &` the command started may hold them for as long as it runs).
    let status = match tokio::time::timeout(a.timeout, child.wait()).await {
        Ok(r) => r,
        Err(_) => {
            drop(guard); // kills the whole group
            let _ = child.wait().await;
            return (
                Attempt::retry(
                    format!("timed out after {:?}; process group killed", a.timeout),
                    None,
                ),
                Captured::default(),
            );
        }
    };
    // Exited: what it started is left alone, but its output is collected
    // for OUTPUT_GRACE at most.
    guard.pgid = None;
    let collect = async move {
        let (mut out, mut err) = (out, err);
        let o = (&mut out.0).await.unwrap_or_default();
        let e = (&mut err.0).await.unwrap_or_default();
        (o, e)
    };
    tokio::pin!(collect);
    let (out, err) = match tokio::time::timeout(OUTPUT_GRACE, &mut collect).await {
        Ok(v) => v,
        Err(_) => {
            let _ = stop.send(true);
            collect.await
        }
    };
    if !out.0.is_empty() {
        log::info!(
            "exec hook={} id={} stdout: {}",
            ev.hook_id,
            ev.id,
            shown(&out.0, out.1)
        );
    }
    if !err.0.is_empty() {
        log::warn!(
            "exec hook={} id={} stderr: {}",
            ev.hook_id,
            ev.id,
            shown(&err.0, err.1)
        );
    }
    let captured = Captured {
        truncated: out.1 || err.1,
        output: [out.0, err.0].concat(),
    };
    let attempt = match status {
        Ok(s) if s.success() => Attempt::Ok,
        Ok(s) => match (s.code(), s.signal()) {
            (Some(c), _) => Attempt::retry(format!("command exited with status {c}"), None),
            (_, Some(sig)) => Attempt::retry(format!("command killed by signal {sig}"), None),
            _ => Attempt::retry("command failed".into(), None),
        },
        Err(e) => Attempt::retry(format!("waiting for the command failed: {e}"), None),
    };
    (attempt, captured)
}
