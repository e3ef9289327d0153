//! `/api/v1/users...`: list, create, get, change, delete, suspend and unsuspend.
//!
//! Users are read and changed through the users store (`ctx.users`), which puts
//! every change in force before it answers; `suspended` and `usage` come from the
//! brake and the rate store of the running server. A password or its hash is never
//! in an answer or a log line.

use super::error::{ApiError, ApiPath, JsonBody};
use super::{AdminState, Peer};
use crate::config::User;
use crate::policy::rates::Usage;
use crate::proto::printable::Printable;
use crate::secret::Secret;
use crate::users::{NewUser, Password, RateLimitsInput, UserChange};
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Extension, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::{Deserialize, Deserializer, Serialize};
use std::sync::Arc;
use std::time::Instant;
use tracing::info;

/// Longest suspension reason taken.
const MAX_REASON_LEN: usize = 500;

/// A user as the API shows it.
#[derive(Serialize)]
pub struct UserView {
    name: String,
    senders: Vec<String>,
    networks: Vec<String>,
    disabled: bool,
    suspended: bool,
    /// Why and since when (Unix seconds), when suspended.
    suspension: Option<SuspensionView>,
    /// Whether the user can log in with AUTH (a device user may have only networks).
    has_password: bool,
    /// The limits in force for the user (its own over the config's); `null`: none.
    rate_limits: LimitsView,
    usage: Usage,
}

#[derive(Serialize)]
struct SuspensionView {
    reason: String,
    since: u64,
}

#[derive(Serialize)]
struct LimitsView {
    messages_per_hour: Option<u32>,
    recipients_per_hour: Option<u32>,
    recipients_per_day: Option<u32>,
}

impl AdminState {
    /// The user as the API shows it; its usage may need a round trip (cluster mode).
    async fn view(&self, u: &User) -> UserView {
        let suspension = self.ctx.brake.suspended(&u.name);
        let r = &u.rate_limits;
        UserView {
            name: u.name.clone(),
            senders: u.senders.iter().map(|s| s.to_string()).collect(),
            networks: u.networks.iter().map(|n| n.to_string()).collect(),
            disabled: u.disabled,
            suspended: suspension.is_some(),
            suspension: suspension.map(|s| SuspensionView {
                reason: s.reason,
                since: s.since,
            }),
            has_password: u.password_hash.is_some(),
            rate_limits: LimitsView {
                messages_per_hour: r.messages_per_hour,
                recipients_per_hour: r.recipients_per_hour,
                recipients_per_day: r.recipients_per_day,
            },
            usage: self.ctx.rates.usage(&u.name, Instant::now()).await,
        }
    }
}

type St = State<Arc<AdminState>>;
type Answer<T> = Result<T, ApiError>;

/// `GET /api/v1/users`: every user, sorted by name.
pub async fn list(State(s): St) -> Answer<Json<Vec<UserView>>> {
    let users = s.ctx.users.list().await?;
    let mut views = Vec::with_capacity(users.len());
    for u in users.iter() {
        views.push(s.view(u).await);
    }
    Ok(Json(views))
}

/// `GET /api/v1/users/{name}`.
pub async fn get(State(s): St, ApiPath(name): ApiPath<String>) -> Answer<Json<UserView>> {
    let user = s.ctx.users.get(&name).await?;
    Ok(Json(s.view(&user).await))
}

/// The body of `POST /api/v1/users`. No `Debug`: it holds a password.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateRequest {
    name: String,
    password: Option<String>,
    password_hash: Option<String>,
    #[serde(default)]
    senders: Vec<String>,
    #[serde(default)]
    networks: Vec<String>,
    rate_limits: Option<RateLimitsInput>,
    #[serde(default)]
    disabled: bool,
}

/// `password` or `password_hash`, not both.
fn password(plain: Option<String>, hash: Option<String>) -> Answer<Option<Password>> {
    match (plain, hash) {
        (Some(_), Some(_)) => Err(ApiError::invalid(vec![
            "give password or password_hash, not both".into(),
        ])),
        (Some(p), None) => Ok(Some(Password::Plain(Secret::new(p)))),
        (None, Some(h)) => Ok(Some(Password::Hash(h))),
        (None, None) => Ok(None),
    }
}

/// `POST /api/v1/users`: `201` with the user, `409` if the name is taken, `422`
/// with the reasons if the user would be invalid.
pub async fn create(
    State(s): St,
    Extension(peer): Extension<Peer>,
    JsonBody(req): JsonBody<CreateRequest>,
) -> Answer<impl IntoResponse> {
    let new = NewUser {
        password: password(req.password, req.password_hash)?,
        name: req.name,
        senders: req.senders,
        networks: req.networks,
        rate_limits: req.rate_limits,
        disabled: req.disabled,
    };
    let user = s.ctx.users.create(new).await?;
    info!(client = %peer.0, user = %Printable(&user.name), "admin API: user created");
    Ok((StatusCode::CREATED, Json(s.view(&user).await)))
}

/// The body of `PATCH /api/v1/users/{name}`: what is given is replaced.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateRequest {
    password: Option<String>,
    password_hash: Option<String>,
    senders: Option<Vec<String>>,
    networks: Option<Vec<String>>,
    /// `null`: drop the user's own limits.
    #[serde(default, deserialize_with = "present")]
    rate_limits: Option<Option<RateLimitsInput>>,
    disabled: Option<bool>,
}

/// A field that is present, even as `null`, is `Some` (absent stays `None`).
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

/// `PATCH /api/v1/users/{name}`: the changed user.
pub async fn update(
    State(s): St,
    Extension(peer): Extension<Peer>,
    ApiPath(name): ApiPath<String>,
    JsonBody(req): JsonBody<UpdateRequest>,
) -> Answer<Json<UserView>> {
    let change = UserChange {
        password: password(req.password, req.password_hash)?,
        senders: req.senders,
        networks: req.networks,
        rate_limits: req.rate_limits,
        disabled: req.disabled,
    };
    let fields = changed_fields(&change);
    if fields.is_empty() {
        return Err(ApiError::invalid(vec!["nothing to change".into()]));
    }
    let user = s.ctx.users.update(&name, change).await?;
    info!(client = %peer.0, user = %Printable(&user.name), fields = %fields.join(","), "admin API: user changed");
    Ok(Json(s.view(&user).await))
}

/// The names of the fields a change sets, for the log (never their values).
fn changed_fields(c: &UserChange) -> Vec<&'static str> {
    [
        ("password", c.password.is_some()),
        ("senders", c.senders.is_some()),
        ("networks", c.networks.is_some()),
        ("rate_limits", c.rate_limits.is_some()),
        ("disabled", c.disabled.is_some()),
    ]
    .into_iter()
    .filter_map(|(f, set)| set.then_some(f))
    .collect()
}

/// `DELETE /api/v1/users/{name}`: `204`; a suspension of the user goes with it, so
/// that a new user given the name later starts clean.
pub async fn delete(
    State(s): St,
    Extension(peer): Extension<Peer>,
    ApiPath(name): ApiPath<String>,
) -> Answer<StatusCode> {
    s.ctx.users.delete(&name).await?;
    info!(client = %peer.0, user = %Printable(&name), "admin API: user deleted");
    if let Err(e) = brake(&s, name, None).await {
        tracing::error!(error = %e, "admin API: cannot lift the deleted user's suspension");
    }
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct SuspendRequest {
    reason: Option<String>,
}

/// `POST /api/v1/users/{name}/suspend` with an optional `{"reason": "..."}`: the
/// user's logins get `535 5.7.8` from now on, across restarts, until unsuspended.
pub async fn suspend(
    State(s): St,
    Extension(peer): Extension<Peer>,
    ApiPath(name): ApiPath<String>,
    body: Bytes,
) -> Answer<Json<UserView>> {
    let req: SuspendRequest = if body.iter().all(u8::is_ascii_whitespace) {
        SuspendRequest::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| ApiError::invalid(vec![format!("body: {e}")]))?
    };
    let reason = req
        .reason
        .unwrap_or_else(|| "suspended through the admin API".into());
    let hidden = crate::proto::printable::hidden;
    if reason.chars().count() > MAX_REASON_LEN || reason.chars().any(hidden) {
        return Err(ApiError::invalid(vec![format!(
            "reason: at most {MAX_REASON_LEN} characters, no control or invisible characters"
        )]));
    }
    let user = s.ctx.users.get(&name).await?;
    brake(&s, name, Some(reason.clone()))
        .await
        .map_err(unavailable)?;
    s.ctx
        .events
        .suspended(&user.name, &reason, crate::events::By::Operator);
    info!(client = %peer.0, user = %Printable(&user.name), reason = %Printable(&reason), "admin API: user suspended");
    Ok(Json(s.view(&user).await))
}

/// `POST /api/v1/users/{name}/unsuspend`: lifts a suspension (the brake's or the
/// API's); the user as it is now.
pub async fn unsuspend(
    State(s): St,
    Extension(peer): Extension<Peer>,
    ApiPath(name): ApiPath<String>,
) -> Answer<Json<UserView>> {
    let user = s.ctx.users.get(&name).await?;
    let lifted = brake(&s, name, None).await.map_err(unavailable)?;
    if lifted {
        s.ctx
            .events
            .unsuspended(&user.name, crate::events::By::Operator);
        info!(client = %peer.0, user = %Printable(&user.name), "admin API: suspension lifted");
    }
    Ok(Json(s.view(&user).await))
}

/// Suspends (`Some(reason)`) or lifts a suspension, on the blocking pool (the
/// state file is fsynced); whether the user's state changed.
async fn brake(s: &Arc<AdminState>, name: String, reason: Option<String>) -> Result<bool, String> {
    let ctx = s.ctx.clone();
    tokio::task::spawn_blocking(move || match reason {
        Some(r) => ctx.brake.suspend(&name, &r).map(|()| true),
        None => ctx.brake.unsuspend(&name),
    })
    .await
    .map_err(|e| e.to_string())?
}

fn unavailable(why: String) -> ApiError {
    tracing::error!(error = %why, "admin API: cannot save the suspension state");
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "cannot save the suspension state; try again",
    )
}
