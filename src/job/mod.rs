//! Jobs as systemd units: the wire protocol between webhookd (the `job`
//! action, `deliver::job`) and `webhookd job-run` (the wrapper systemd starts
//! once per connection of a `webhook-job-NAME.socket` with `Accept=yes`).
//!
//! Why a socket and not D-Bus: connecting to a socket root made (owned by
//! the webhookd user, mode 0600) is the only thing webhookd can do; which
//! command runs, as whom and in what sandbox is in the unit files. webhookd
//! needs no capability, no polkit rule and no D-Bus access, and the
//! connection itself carries the event in and the output and exit status
//! back. Closing it stops the job. See docs/jobs.md.
//!
//! Request (webhookd → job): `WHJ1`, u32 BE length + JSON [`Request`], u64 BE
//! length + body. Answer (job → webhookd): frames of one tag byte, u32 BE
//! length, data: `o` stdout bytes, `e` stderr bytes, `x` the JSON
//! [`Exit`], last.

pub mod run;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

pub const MAGIC: &[u8; 4] = b"WHJ1";
/// Largest request header and answer frame accepted.
pub const MAX_FRAME: u32 = 1 << 20;
/// Largest body accepted by the wrapper (webhookd's largest body limit is
/// far below; this only bounds a confused peer).
pub const MAX_BODY: u64 = 1 << 30;

pub const TAG_STDOUT: u8 = b'o';
pub const TAG_STDERR: u8 = b'e';
pub const TAG_EXIT: u8 = b'x';

/// What the job gets, as an `exec` action's command would.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Request {
    pub id: String,
    pub hook: String,
    pub event: String,
    pub delivery: String,
    pub attempt: i32,
    /// webhookd's timeout for this attempt; the wrapper enforces it too.
    pub timeout_ms: u64,
    /// Appended to the unit's command (only if the unit allows it).
    #[serde(default)]
    pub args: Vec<String>,
    /// Added to the command's environment (names checked by the wrapper).
    #[serde(default)]
    pub env: Vec<(String, String)>,
    /// `(NAME, base64 content)`: written by the wrapper to a private file
    /// in the job's temporary directory; NAME=path in the environment.
    #[serde(default)]
    pub files: Vec<(String, String)>,
}

/// How the job ended, the last frame.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct Exit {
    #[serde(default)]
    pub code: Option<i32>,
    #[serde(default)]
    pub signal: Option<i32>,
    /// The job could not run (refused request, command not found, timeout).
    #[serde(default)]
    pub error: Option<String>,
    /// Retrying cannot help (the unit refuses what webhookd sent).
    #[serde(default)]
    pub permanent: bool,
    /// The systemd unit this run was, for `journalctl -u`.
    #[serde(default)]
    pub unit: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ProtoError {
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("not a webhookd job request (bad magic)")]
    Magic,
    #[error("frame of {0} bytes is over the limit")]
    TooLarge(u64),
    #[error("bad JSON: {0}")]
    Json(#[from] serde_json::Error),
}

pub async fn write_request<W: AsyncWrite + Unpin>(
    w: &mut W,
    req: &Request,
    body: &[u8],
) -> Result<(), ProtoError> {
    let head = serde_json::to_vec(req)?;
    let hlen = u32::try_from(head.len()).map_err(|_| ProtoError::TooLarge(head.len() as u64))?;
    if hlen > MAX_FRAME {
        return Err(ProtoError::TooLarge(hlen.into()));
    }
    let mut buf = Vec::with_capacity(16 + head.len());
    buf.extend_from_slice(MAGIC);
    buf.extend_from_slice(&hlen.to_be_bytes());
    buf.extend_from_slice(&head);
    buf.extend_from_slice(&(body.len() as u64).to_be_bytes());
    w.write_all(&buf).await?;
    w.write_all(body).await?;
    w.flush().await?;
    Ok(())
}

pub async fn read_request<R: AsyncRead + Unpin>(
    r: &mut R,
) -> Result<(Request, Vec<u8>), ProtoError> {
    let mut magic = [0u8; 4];
    r.read_exact(&mut magic).await?;
    if &magic != MAGIC {
        return Err(ProtoError::Magic);
    }
    let hlen = r.read_u32().await?;
    if hlen > MAX_FRAME {
        return Err(ProtoError::TooLarge(hlen.into()));
    }
    let mut head = vec![0u8; hlen as usize];
    r.read_exact(&mut head).await?;
    let req: Request = serde_json::from_slice(&head)?;
    let blen = r.read_u64().await?;
    if blen > MAX_BODY {
        return Err(ProtoError::TooLarge(blen));
    }
    let mut body = Vec::new();
    (&mut *r).take(blen).read_to_end(&mut body).await?;
    if body.len() as u64 != blen {
        return Err(ProtoError::Io(std::io::ErrorKind::UnexpectedEof.into()));
    }
    Ok((req, body))
}

pub async fn write_frame<W: AsyncWrite + Unpin>(
    w: &mut W,
    tag: u8,
    data: &[u8],
) -> Result<(), ProtoError> {
    let len = u32::try_from(data.len()).map_err(|_| ProtoError::TooLarge(data.len() as u64))?;
    let mut buf = Vec::with_capacity(5 + data.len());
    buf.push(tag);
    buf.extend_from_slice(&len.to_be_bytes());
    buf.extend_from_slice(data);
    w.write_all(&buf).await?;
    w.flush().await?;
    Ok(())
}

/// One answer frame; `None` at a clean end of stream.
pub async fn read_frame<R: AsyncRead + Unpin>(
    r: &mut R,
) -> Result<Option<(u8, Vec<u8>)>, ProtoError> {
    let mut tag = [0u8; 1];
    if r.read(&mut tag).await? == 0 {
        return Ok(None);
    }
    let len = r.read_u32().await?;
    if len > MAX_FRAME {
        return Err(ProtoError::TooLarge(len.into()));
    }
    let mut data = vec![0u8; len as usize];
    r.read_exact(&mut data).await?;
    Ok(Some((tag[0], data)))
}

/// A job name is part of unit and socket names: `webhook-job-NAME.socket`.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// The socket `webhook-job-NAME.socket` listens on with the packaged
/// drop-in (`ListenStream=/run/webhookd-jobs/%N.sock`).
pub fn default_socket(name: &str) -> std::path::PathBuf {
    std::path::PathBuf::from(format!("/run/webhookd-jobs/webhook-job-{name}.sock"))
}

/// Where the runs of a job are in the journal.
pub fn journal_hint(name: &str, id: &str) -> String {
    format!("journalctl -u 'webhook-job-{name}@*' --grep 'id={id}' (then journalctl -u UNIT for the run's output)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn request_round_trip() {
        let req = Request {
            id: "01J".into(),
            hook: "h".into(),
            event: "push".into(),
            delivery: "d".into(),
            attempt: 2,
            timeout_ms: 1000,
            args: vec!["a".into()],
            env: vec![("WEBHOOK_X".into(), "1".into())],
            files: vec![("WEBHOOK_F".into(), "aGk=".into())],
        };
        let mut buf = Vec::new();
        write_request(&mut buf, &req, b"body").await.unwrap();
        let (r, b) = read_request(&mut buf.as_slice()).await.unwrap();
        assert_eq!(r, req);
        assert_eq!(b, b"body");
        // A truncated body is an error, not a short body.
        let cut = &buf[..buf.len() - 1];
        assert!(read_request(&mut &cut[..]).await.is_err());
        assert!(matches!(
            read_request(&mut &b"XXXX"[..]).await,
            Err(ProtoError::Magic)
        ));
    }

    #[test]
    fn names() {
        assert!(valid_name("deploy-prod_1"));
        assert!(!valid_name(""));
        assert!(!valid_name("a/b"));
        assert!(!valid_name("a.b"));
        assert!(!valid_name("a@b"));
    }
}
