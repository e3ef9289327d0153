//! The admin API: JSON over HTTP on its own listener (`admin.address`), off unless
//! configured. A hosting panel creates, changes, suspends and removes users and
//! steers the queue with it; every change is in force at once and persists.
//!
//! - this file: the router, the bearer-token check and the limits every request
//!   gets (body size, time);
//! - `listener`: the accept loop (connection cap, header timeout, TLS, drain);
//! - `users`: `/api/v1/users...`, through the users store (`crate::users`) and the
//!   brake; `queue`: `/api/v1/queue...`;
//! - `error`: the JSON error answers and the JSON body reader.
//!
//! The delivery log (`GET /api/v1/messages`) and the dashboard (`GET /`) join the
//! router here; webhooks are sent from elsewhere and need nothing from it.

mod error;
mod listener;
mod queue;
mod users;

pub use error::ApiError;
pub use listener::{MAX_CONNECTIONS, serve};

use crate::context::Context;
use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{Next, from_fn, from_fn_with_state};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use subtle::ConstantTimeEq;

/// Largest request body read (a user with many senders fits many times over).
pub const MAX_BODY: usize = 64 * 1024;

/// Longest a request may take, body included; past it the answer is `503`.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// What every handler works with.
pub struct AdminState {
    pub ctx: Arc<Context>,
    /// SHA-256 of the token: comparing digests of equal length in constant time
    /// tells a client nothing about the token, not even its length.
    token_digest: [u8; 32],
}

impl AdminState {
    pub fn new(ctx: Arc<Context>) -> Option<AdminState> {
        let token = ctx.config.admin.as_ref()?.token.expose().as_bytes();
        let token_digest = digest(token);
        Some(AdminState { ctx, token_digest })
    }

    fn token_matches(&self, given: &[u8]) -> bool {
        digest(given).ct_eq(&self.token_digest).into()
    }
}

fn digest(bytes: &[u8]) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, bytes);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// The client's address, put on each request by the listener (for the log).
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub SocketAddr);

/// Every route; `/api/...` behind the token.
pub fn router(state: Arc<AdminState>) -> Router {
    let api = Router::new()
        .route("/v1/users", get(users::list).post(users::create))
        .route(
            "/v1/users/{name}",
            get(users::get).patch(users::update).delete(users::delete),
        )
        .route("/v1/users/{name}/suspend", post(users::suspend))
        .route("/v1/users/{name}/unsuspend", post(users::unsuspend))
        .route("/v1/queue", get(queue::list))
        .route("/v1/queue/flush", post(queue::flush))
        .route("/v1/queue/{id}", axum::routing::delete(queue::delete))
        // GET /v1/messages (the delivery log) is added here with the log itself.
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed);
    Router::new()
        .nest("/api", api)
        .fallback(not_found)
        // Outermost but for the limits: whatever the router makes of a path (a
        // trailing slash, an unknown route), nothing under /api answers without it.
        .layer(from_fn_with_state(state.clone(), require_token))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(from_fn(time_limit))
        .with_state(state)
}

/// Whether a path is the API's (`/api`, `/api/...`), which only the token opens.
fn is_api(path: &str) -> bool {
    path == "/api" || path.starts_with("/api/")
}

/// `401` for an API path unless the request carries `Authorization: Bearer <token>`.
async fn require_token(State(state): State<Arc<AdminState>>, req: Request, next: Next) -> Response {
    if !is_api(req.uri().path()) {
        return next.run(req).await;
    }
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .map(|v| v.as_bytes())
        .and_then(|v| {
            let (scheme, token) = v.split_at_checked(7)?;
            scheme.eq_ignore_ascii_case(b"bearer ").then_some(token)
        });
    if given.is_some_and(|t| state.token_matches(t.trim_ascii())) {
        return next.run(req).await;
    }
    // At debug: a scanner would otherwise fill the log.
    let peer = req.extensions().get::<Peer>().map(|p| p.0);
    tracing::debug!(client = ?peer, "admin API: request without a valid token");
    let mut answer =
        ApiError::new(StatusCode::UNAUTHORIZED, "missing or wrong bearer token").into_response();
    answer
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    answer
}

/// `503` for a request not answered within [`REQUEST_TIMEOUT`] (a client that
/// sends its body slowly, a store that hangs).
async fn time_limit(req: Request, next: Next) -> Response {
    match tokio::time::timeout(REQUEST_TIMEOUT, next.run(req)).await {
        Ok(r) => r,
        Err(_) => {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "request timed out").into_response()
        }
    }
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "no such endpoint")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method not allowed here")
}
