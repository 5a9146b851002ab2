//! Reading request bodies within a size limit.

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;

#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("request body exceeds the limit of {0} bytes")]
    TooLarge(u64),
    #[error("could not read request body: {0}")]
    Read(String),
}

/// Collect the whole body, refusing more than `limit` bytes. A declared
/// Content-Length over the limit is refused before reading anything.
pub async fn read_body(
    body: Incoming,
    content_length: Option<u64>,
    limit: u64,
) -> Result<Bytes, BodyError> {
    if content_length.is_some_and(|n| n > limit) {
        return Err(BodyError::TooLarge(limit));
    }
    let limited = Limited::new(body, usize::try_from(limit).unwrap_or(usize::MAX));
    match limited.collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) => {
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                Err(BodyError::TooLarge(limit))
            } else {
                Err(BodyError::Read(e.to_string()))
            }
        }
    }
}
