//! Reading request bodies under a size limit.

use axum::body::Body;
use http_body_util::BodyExt;

use crate::problem::ApiError;

/// How much of an oversized body is read (and discarded) so the client receives the 413
/// answer instead of a reset connection. Beyond this the connection is simply closed.
const DRAIN_LIMIT: usize = 32 * 1024 * 1024;

/// Reads the whole body if it is at most `limit` bytes; otherwise answers 413.
pub async fn read_limited(body: Body, limit: usize) -> Result<Vec<u8>, ApiError> {
    let mut body = body;
    let mut buf = Vec::new();
    let mut seen = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            ApiError::bad_request("bad-body", format!("the request body could not be read: {e}"))
        })?;
        let Ok(chunk) = frame.into_data() else { continue };
        seen = seen.saturating_add(chunk.len());
        if seen > limit {
            if seen > DRAIN_LIMIT {
                break;
            }
            continue;
        }
        buf.extend_from_slice(&chunk);
    }
    if seen > limit {
        return Err(ApiError::payload_too_large(limit));
    }
    Ok(buf)
}
