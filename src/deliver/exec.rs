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

use super::Attempt;
use crate::store::Claimed;

/// A resolved exec action.
#[derive(Debug, Clone)]
pub struct ExecAction {
    pub command: Vec<String>,
    pub shell: bool,
    pub workdir: Option<PathBuf>,
    pub timeout: Duration,
    pub output_limit: usize,
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

async fn read_limited(r: Option<impl AsyncRead + Unpin>, limit: usize) -> (Vec<u8>, bool) {
    let Some(mut r) = r else {
        return (Vec::new(), false);
    };
    let mut kept = Vec::new();
    let mut buf = [0u8; 4096];
    let mut truncated = false;
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let room = limit.saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
                truncated |= n > room;
            }
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

pub async fn run(a: &ExecAction, ev: &Claimed) -> Attempt {
    let mut cmd = if a.shell {
        let mut c = Command::new("/bin/sh");
        c.arg("-c").arg(&a.command[0]);
        c
    } else {
        let mut c = Command::new(&a.command[0]);
        c.args(&a.command[1..]);
        c
    };
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
        Err(e) => return Attempt::retry(format!("cannot start {:?}: {e}", a.command[0]), None),
    };
    let mut guard = GroupGuard {
        pgid: child.id().map(|p| p as i32),
    };
    let stdin = child.stdin.take();
    let body = ev.body.clone();
    let feed = async move {
        if let Some(mut s) = stdin {
            // A command that does not read its input is fine: ignore EPIPE.
            let _ = s.write_all(&body).await;
            let _ = s.shutdown().await;
        }
    };
    let out = read_limited(child.stdout.take(), a.output_limit);
    let err = read_limited(child.stderr.take(), a.output_limit);
    let work = async {
        let (_, out, err, status) = tokio::join!(feed, out, err, child.wait());
        (out, err, status)
    };
    let (out, err, status) = match tokio::time::timeout(a.timeout, work).await {
        Ok(r) => r,
        Err(_) => {
            drop(guard); // kills the whole group
            let _ = child.wait().await;
            return Attempt::retry(
                format!("timed out after {:?}; process group killed", a.timeout),
                None,
            );
        }
    };
    guard.pgid = None;
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
    match status {
        Ok(s) if s.success() => Attempt::Ok,
        Ok(s) => match (s.code(), s.signal()) {
            (Some(c), _) => Attempt::retry(format!("command exited with status {c}"), None),
            (_, Some(sig)) => Attempt::retry(format!("command killed by signal {sig}"), None),
            _ => Attempt::retry("command failed".into(), None),
        },
        Err(e) => Attempt::retry(format!("waiting for the command failed: {e}"), None),
    }
}
