//! `/api/v1/queue...`: what `postern queue list|flush|delete` do, over HTTP. In
//! passthrough mode there is no queue: `409`.

use super::error::{ApiError, ApiPath};
use super::{AdminState, Peer};
use crate::spool::queue::Queue;
use crate::spool::store::{Spool, unix_now, valid_id};
use axum::Json;
use axum::extract::{Extension, State};
use axum::http::StatusCode;
use serde::Serialize;
use std::sync::Arc;
use tracing::info;

/// A spooled message as `GET /api/v1/queue` shows it.
#[derive(Serialize)]
pub struct QueuedView {
    id: String,
    user: String,
    /// The envelope sender; empty for a bounce.
    from: String,
    /// Recipients not yet delivered.
    recipients: Vec<String>,
    size: u64,
    /// Unix seconds.
    created: u64,
    age_seconds: u64,
    attempts: u32,
    /// Unix seconds.
    next_attempt: u64,
    last_error: Option<String>,
}

type St = State<Arc<AdminState>>;

fn queue(s: &AdminState) -> Result<Arc<Queue>, ApiError> {
    s.ctx.queue().cloned().ok_or_else(|| {
        ApiError::new(
            StatusCode::CONFLICT,
            "no queue: delivery.mode is passthrough",
        )
    })
}

/// `GET /api/v1/queue`: every spooled message, oldest first.
pub async fn list(State(s): St) -> Result<Json<Vec<QueuedView>>, ApiError> {
    queue(&s)?;
    let dir = s.ctx.config.delivery.spool_directory.clone();
    let loaded = tokio::task::spawn_blocking(move || Spool::at(&dir).load_all(false)).await;
    let envelopes = match loaded {
        Ok(Ok(e)) => e,
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Ok(Err(e)) => return Err(spool_error(e.to_string())),
        Err(e) => return Err(spool_error(e.to_string())),
    };
    let now = unix_now();
    let mut out: Vec<QueuedView> = envelopes
        .into_iter()
        .map(|e| QueuedView {
            recipients: e.pending().map(|r| r.address.clone()).collect(),
            age_seconds: now.saturating_sub(e.created),
            id: e.id,
            user: e.user,
            from: e.from,
            size: e.size,
            created: e.created,
            attempts: e.attempts,
            next_attempt: e.next_attempt,
            last_error: e.last_error,
        })
        .collect();
    out.sort_by(|a, b| (a.created, &a.id).cmp(&(b.created, &b.id)));
    Ok(Json(out))
}

fn spool_error(why: String) -> ApiError {
    tracing::error!(error = %why, "admin API: cannot read the spool");
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "cannot read the spool; try again",
    )
}

#[derive(Serialize)]
pub struct Flushed {
    scheduled: usize,
}

/// `POST /api/v1/queue/flush`: every spooled message is retried now.
pub async fn flush(
    State(s): St,
    Extension(peer): Extension<Peer>,
) -> Result<Json<Flushed>, ApiError> {
    let scheduled = queue(&s)?.flush();
    info!(client = %peer.0, messages = scheduled, "admin API: queue flush");
    Ok(Json(Flushed { scheduled }))
}

/// `DELETE /api/v1/queue/{id}`: `204`, or `404` if no such message is queued.
pub async fn delete(
    State(s): St,
    Extension(peer): Extension<Peer>,
    ApiPath(id): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    let q = queue(&s)?;
    if !valid_id(&id) {
        return Err(ApiError::not_found("queued message"));
    }
    let target = id.clone();
    match tokio::task::spawn_blocking(move || q.delete(&target)).await {
        Ok(Ok(true)) => {
            info!(client = %peer.0, queue_id = %id, "admin API: queued message deleted");
            Ok(StatusCode::NO_CONTENT)
        }
        Ok(Ok(false)) => Err(ApiError::not_found("queued message")),
        Ok(Err(e)) => Err(spool_error(e.to_string())),
        Err(e) => Err(spool_error(e.to_string())),
    }
}
