//! The admin API: JSON over HTTP on its own listener (`admin.address`), off unless
//! configured. A hosting panel creates, changes, suspends and removes users and
//! steers the queue with it; every change is in force at once and persists.
//!
//! - this file: the router, the bearer-token check and the limits every request
//!   gets (body size, time);
//! - `listener`: the accept loop (connection cap, header timeout, TLS, drain);
//! - `users`: `/api/v1/users...`, through the users store (`crate::users`) and the
//!   brake; `queue`: `/api/v1/queue...`;
//! - `error`: the JSON error answers and the JSON body reader;
//! - `auth`: the bearer token or the dashboard's session cookie (with its CSRF
//!   token and origin check) in front of `/api/...`;
//! - `dashboard`: `GET /` and its embedded assets, sign-in, sign-out and the
//!   security headers; `sessions`: the sessions and the sign-in throttle;
//! - `traffic`: `GET /api/v1/stats/traffic`, the charts' counts.
//!
//! The delivery log is read in `messages.rs`; the dashboard (`GET /`) joins the
//! router here; webhooks are sent from elsewhere ([`crate::webhooks`]), and the
//! suspensions made here reach them through [`crate::events`].

mod auth;
mod dashboard;
mod doctor;
mod domains;
mod error;
mod listener;
mod messages;
mod queue;
pub mod sessions;
pub mod traffic;
mod users;

pub use error::ApiError;
pub use listener::{MAX_CONNECTIONS, serve};

use crate::context::Context;
use axum::Router;
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::StatusCode;
use axum::middleware::{Next, from_fn, from_fn_with_state};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use sessions::{Sessions, SignInThrottle};
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
    /// Dashboard sign-ins.
    sessions: Sessions,
    sessions_lifetime: Duration,
    sign_ins: SignInThrottle,
    /// The listener serves HTTPS (cookies get `Secure`, origins `https://`).
    tls: bool,
}

impl AdminState {
    pub fn new(ctx: Arc<Context>) -> Option<AdminState> {
        let admin = ctx.config.admin.as_ref()?;
        let token_digest = digest(admin.token.expose().as_bytes());
        let tls = admin.tls && ctx.tls.is_some();
        let sessions = Sessions::new(admin.session_idle, admin.session_lifetime);
        let sessions_lifetime = admin.session_lifetime;
        Some(AdminState {
            ctx,
            token_digest,
            sessions,
            sessions_lifetime,
            sign_ins: SignInThrottle::default(),
            tls,
        })
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
        .route("/v1/domains", get(domains::list))
        .route(
            "/v1/domains/{domain}",
            get(domains::get).put(domains::put).delete(domains::delete),
        )
        .route("/v1/queue", get(queue::list))
        .route("/v1/queue/flush", post(queue::flush))
        .route("/v1/queue/{id}", axum::routing::delete(queue::delete))
        .route("/v1/messages", get(messages::list))
        .route("/v1/stats/traffic", get(traffic::get))
        .route("/v1/doctor/{domain}", get(doctor::get))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed);
    Router::new()
        .nest("/api", api)
        .route("/", get(dashboard::index))
        .route("/assets/app.js", get(dashboard::script))
        .route("/assets/app.css", get(dashboard::style))
        .route("/favicon.ico", get(|| async { StatusCode::NO_CONTENT }))
        .route("/session", get(dashboard::session))
        .route("/signin", post(dashboard::sign_in))
        .route("/signout", post(dashboard::sign_out))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        // Outermost but for the limits: whatever the router makes of a path (a
        // trailing slash, an unknown route), nothing under /api answers without
        // the token or a session.
        .layer(from_fn_with_state(state.clone(), auth::require_auth))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(from_fn(time_limit))
        .layer(from_fn(dashboard::security_headers))
        .with_state(state)
}

/// Whether a path is the API's (`/api`, `/api/...`), which only the token or a
/// dashboard session opens.
fn is_api(path: &str) -> bool {
    path == "/api" || path.starts_with("/api/")
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
