//! Reading request bodies within a size limit and a deadline.

use std::sync::atomic::Ordering;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Incoming;

use crate::rules::SlotGuard;

#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("request body exceeds the limit of {0} bytes")]
    TooLarge(u64),
    #[error("request body did not arrive within server.body_timeout")]
    TimedOut,
    #[error("request body arriving too slowly while every slot is taken; its slot was given to another request")]
    Evicted,
    #[error("could not read request body: {0}")]
    Read(String),
}

/// Collect the whole body, refusing more than `limit` bytes. A declared
/// Content-Length over the limit is refused before reading anything. The
/// body must be complete by `deadline` (`server.body_timeout` after the
/// head), and reading stops at once when the slot is evicted for a faster
/// request (see [`crate::rules::Slots::enter`]). Progress is counted on the slot so the
/// slowest reader can be told apart.
pub async fn read_body(
    mut body: Incoming,
    content_length: Option<u64>,
    limit: u64,
    deadline: tokio::time::Instant,
    slot: Option<&SlotGuard<'_>>,
) -> Result<Bytes, BodyError> {
    if content_length.is_some_and(|n| n > limit) {
        return Err(BodyError::TooLarge(limit));
    }
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    // A body that arrives in one frame (the usual case for a webhook: hyper
    // reads it with the head) is kept as that frame's bytes, no copy; only
    // a body in several frames is gathered into `buf`, sized once from
    // Content-Length (bounded by the limit) instead of regrowing.
    let mut first: Option<Bytes> = None;
    let mut buf = bytes::BytesMut::new();
    // Without a slot (the console's forms) nothing can evict the reader.
    let never = tokio::sync::Notify::new();
    let evicted = slot.map_or(&never, |s| &*s.evict).notified();
    tokio::pin!(evicted);
    evicted.as_mut().enable();
    let sleep = tokio::time::sleep_until(deadline);
    tokio::pin!(sleep);
    loop {
        let frame = tokio::select! {
            f = body.frame() => f,
            _ = &mut sleep => return Err(BodyError::TimedOut),
            _ = &mut evicted => return Err(BodyError::Evicted),
        };
        match frame {
            None => break,
            Some(Err(e)) => return Err(BodyError::Read(e.to_string())),
            Some(Ok(f)) => {
                let Ok(d) = f.into_data() else { continue };
                let had = first.as_ref().map_or(0, Bytes::len);
                if had.saturating_add(buf.len()).saturating_add(d.len()) > limit {
                    return Err(BodyError::TooLarge(limit as u64));
                }
                if let Some(slot) = slot {
                    slot.received.fetch_add(d.len() as u64, Ordering::Relaxed);
                }
                if first.is_none() && buf.is_empty() {
                    first = Some(d);
                } else {
                    if let Some(f) = first.take() {
                        let want = content_length
                            .and_then(|n| usize::try_from(n).ok())
                            .unwrap_or(0)
                            .clamp(f.len() + d.len(), limit.max(f.len() + d.len()));
                        buf.reserve(want);
                        buf.extend_from_slice(&f);
                    }
                    buf.extend_from_slice(&d);
                }
            }
        }
    }
    if let Some(slot) = slot {
        slot.reading.store(false, Ordering::Release);
    }
    match first {
        Some(f) => Ok(f),
        None => Ok(buf.freeze()),
    }
}
