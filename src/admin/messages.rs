//! `GET /api/v1/messages?user=NAME&limit=N`: the delivery log, newest first.

use super::AdminState;
use super::error::{ApiError, ApiQuery};
use crate::journal::Entry;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use std::sync::Arc;

/// How many entries a query returns when it names no `limit`.
const DEFAULT_LIMIT: usize = 100;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MessagesQuery {
    user: Option<String>,
    limit: Option<usize>,
}

/// The log's newest entries (at most `limit`, capped by the log), only `user`'s
/// when given. `503` when the log is off or could not be opened.
pub async fn list(
    State(s): State<Arc<AdminState>>,
    ApiQuery(q): ApiQuery<MessagesQuery>,
) -> Result<Json<Vec<Entry>>, ApiError> {
    let Some(log) = s.ctx.events.delivery_log().cloned() else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the delivery log is off (delivery_log.enabled) or could not be opened",
        ));
    };
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT);
    if limit == 0 {
        return Err(ApiError::invalid(vec!["limit: at least 1".into()]));
    }
    let entries = tokio::task::spawn_blocking(move || log.query(q.user.as_deref(), limit))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    Ok(Json(entries))
}
