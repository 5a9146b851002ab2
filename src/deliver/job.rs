//! The `job` action: run a job root defined as a systemd unit, by connecting
//! to its socket (`webhook-job-NAME.socket`, `Accept=yes`). systemd starts one
//! `webhook-job-NAME@….service` per connection with the unit's user, sandbox
//! and command; `webhookd job-run` in it reads the event from the connection
//! and answers with the output and the exit status (protocol: `crate::job`).
//!
//! On our timeout the connection is closed, which kills the job's process
//! group and stops its unit.

use std::path::PathBuf;
use std::time::Duration;

use tokio::net::UnixStream;

use super::exec::Captured;
use super::Attempt;
use crate::job::{self, Exit, Request, TAG_EXIT, TAG_STDERR, TAG_STDOUT};
use crate::payload::values::{ExecValues, Resolved};
use crate::store::Claimed;

/// A resolved job action.
#[derive(Debug, Clone)]
pub struct JobAction {
    pub name: String,
    pub socket: PathBuf,
    pub timeout: Duration,
    pub output_limit: usize,
    /// `args`, `env`, `files` from the stored event's request values.
    pub values: ExecValues,
    /// The hook's `payload_content_type`, to read the stored body as.
    pub payload_content_type: Option<String>,
}

fn shown(out: &[u8], truncated: bool) -> String {
    let mut s = String::from_utf8_lossy(out).trim_end().replace('\n', "\\n");
    if truncated {
        s.push_str("…[truncated]");
    }
    s
}

fn request(a: &JobAction, ev: &Claimed, values: Resolved) -> Request {
    use base64::Engine as _;
    Request {
        id: ev.id.clone(),
        hook: ev.hook_id.clone(),
        event: ev.event_type.clone(),
        delivery: ev.delivery_id.clone(),
        attempt: ev.attempts,
        timeout_ms: u64::try_from(a.timeout.as_millis()).unwrap_or(u64::MAX),
        args: values.args,
        env: values.env,
        files: values
            .files
            .into_iter()
            .map(|(k, v)| (k, base64::engine::general_purpose::STANDARD.encode(v)))
            .collect(),
    }
}

/// Output kept from the job (stdout and stderr interleaved as they came).
#[derive(Default)]
struct Output {
    kept: Vec<u8>,
    truncated: bool,
}

impl Output {
    fn add(&mut self, data: &[u8], limit: usize) {
        let room = limit.saturating_sub(self.kept.len());
        self.kept.extend_from_slice(&data[..data.len().min(room)]);
        self.truncated |= data.len() > room;
    }
}

async fn exchange(
    a: &JobAction,
    ev: &Claimed,
    values: Resolved,
    out: &mut Output,
) -> Result<Exit, Attempt> {
    let mut sock = UnixStream::connect(&a.socket).await.map_err(|e| {
        Attempt::retry(
            format!(
                "job {}: cannot connect to {} ({e}); is webhook-job-{}.socket enabled and started?",
                a.name,
                a.socket.display(),
                a.name
            ),
            None,
        )
    })?;
    let lost = |e: job::ProtoError| {
        Attempt::retry(
            format!("job {}: connection to the job lost: {e}", a.name),
            None,
        )
    };
    job::write_request(&mut sock, &request(a, ev, values), &ev.body)
        .await
        .map_err(lost)?;
    // We never half-close: the wrapper takes end of stream as "give up".
    loop {
        match job::read_frame(&mut sock).await.map_err(lost)? {
            None => {
                return Err(Attempt::retry(
                    format!(
                        "job {}: the job ended without reporting a status (see its unit's journal)",
                        a.name
                    ),
                    None,
                ))
            }
            Some((TAG_STDOUT | TAG_STDERR, data)) => out.add(&data, a.output_limit),
            Some((TAG_EXIT, data)) => {
                return serde_json::from_slice::<Exit>(&data).map_err(|e| {
                    Attempt::retry(
                        format!("job {}: bad status from the job: {e}", a.name),
                        None,
                    )
                })
            }
            Some((t, _)) => {
                return Err(Attempt::retry(
                    format!("job {}: unknown frame {t:#x} from the job", a.name),
                    None,
                ))
            }
        }
    }
}

pub async fn run(a: &JobAction, ev: &Claimed) -> Attempt {
    run_captured(a, ev).await.0
}

/// Run once; also return what the job printed (for `respond = "after_action"`).
pub async fn run_captured(a: &JobAction, ev: &Claimed) -> (Attempt, Captured) {
    // The same values an exec action's command gets, from the stored event.
    let values = match super::exec::stored_values(&a.values, a.payload_content_type.as_deref(), ev)
    {
        Ok(v) => v,
        Err(e) => return (Attempt::permanent(e.to_string()), Captured::default()),
    };
    let mut out = Output::default();
    let attempt = attempt(a, ev, values, &mut out).await;
    let captured = Captured {
        output: out.kept,
        truncated: out.truncated,
    };
    (attempt, captured)
}

async fn attempt(a: &JobAction, ev: &Claimed, values: Resolved, out: &mut Output) -> Attempt {
    let result = tokio::time::timeout(a.timeout, exchange(a, ev, values, &mut *out)).await;
    // The connection is dropped (closed) here on every path.
    let output = shown(&out.kept, out.truncated);
    if !output.is_empty() {
        log::info!("job hook={} id={} output: {output}", ev.hook_id, ev.id);
    }
    let with_output = |msg: String| {
        if output.is_empty() {
            msg
        } else {
            format!("{msg}; output: {output}")
        }
    };
    let exit = match result {
        Err(_) => {
            return Attempt::retry(
                with_output(format!(
                    "job {} timed out after {:?}; connection closed, the job's unit stops",
                    a.name, a.timeout
                )),
                None,
            )
        }
        Ok(Err(attempt)) => return attempt,
        Ok(Ok(exit)) => exit,
    };
    let unit = exit
        .unit
        .as_deref()
        .map(|u| format!(" ({u})"))
        .unwrap_or_default();
    match exit {
        Exit {
            error: Some(e),
            permanent,
            ..
        } => {
            let msg = with_output(format!("job {}{unit}: {e}", a.name));
            if permanent {
                Attempt::permanent(msg)
            } else {
                Attempt::retry(msg, None)
            }
        }
        Exit { code: Some(0), .. } => Attempt::Ok,
        Exit { code: Some(c), .. } => Attempt::retry(
            with_output(format!("job {}{unit} exited with status {c}", a.name)),
            None,
        ),
        Exit {
            signal: Some(s), ..
        } => Attempt::retry(
            with_output(format!("job {}{unit} killed by signal {s}", a.name)),
            None,
        ),
        _ => Attempt::retry(format!("job {}{unit}: no exit status", a.name), None),
    }
}
