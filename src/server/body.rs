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
                if let Some(d) = f.data_ref() {
                    if buf.len().saturating_add(d.len()) > limit {
                        return Err(BodyError::TooLarge(limit as u64));
                    }
                    buf.extend_from_slice(d);
                    if let Some(slot) = slot {
                        slot.received.fetch_add(d.len() as u64, Ordering::Relaxed);
                    }
                }
            }
        }
    }
    if let Some(slot) = slot {
        slot.reading.store(false, Ordering::Release);
    }
    Ok(buf.freeze())
}
