//! `/api/v1/domains...`: per-domain limits, listed beside the users and changed
//! through the same users store (the users file's `domains:` or `postern_domains`),
//! in force at once; `usage` comes from the rate store of the running server.

use super::AdminState;
use super::Peer;
use super::error::{ApiError, JsonBody};
use crate::config::{RateLimits, check_domain_name};
use crate::policy::rates::Usage;
use crate::proto::printable::Printable;
use crate::users::{RateLimitsInput, StoreError};
use axum::Json;
use axum::extract::{Extension, Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Instant;
use tracing::info;

/// A domain as the API shows it.
#[derive(Serialize)]
pub struct DomainView {
    /// The domain key: A-label, lower-case.
    name: String,
    /// Listed (in the users file or the database); else only the config's
    /// `domain_rate_limits` apply to it.
    listed: bool,
    /// The limits its entry sets itself; `null` when not listed.
    own_rate_limits: Option<RateLimitsInput>,
    /// The limits in force (its own over `domain_rate_limits`); `null`: none.
    rate_limits: RateLimitsInput,
    /// What its users sent as it, counted while it had limits.
    usage: Usage,
}

type St = State<Arc<AdminState>>;
type Answer<T> = Result<T, ApiError>;

fn domain_error(e: StoreError) -> ApiError {
    match e {
        StoreError::NotFound => ApiError::not_found("domain"),
        e => e.into(),
    }
}

impl AdminState {
    async fn domain_view(&self, name: &str, own: Option<RateLimitsInput>) -> DomainView {
        let none = RateLimits::default();
        let default = self.ctx.config.domain_rate_limits.as_ref().unwrap_or(&none);
        let effective = match &own {
            Some(o) => RateLimits::from(o).or(default),
            None => default.clone(),
        };
        DomainView {
            name: name.to_string(),
            listed: own.is_some(),
            own_rate_limits: own,
            rate_limits: (&effective).into(),
            usage: self.ctx.rates.domain_usage(name, Instant::now()).await,
        }
    }
}

/// `GET /api/v1/domains`: every listed domain, sorted.
pub async fn list(State(s): St) -> Answer<Json<Vec<DomainView>>> {
    let domains = s.ctx.users.domains().await?;
    let mut views = Vec::with_capacity(domains.len());
    for (name, own) in domains {
        views.push(s.domain_view(&name, Some(own)).await);
    }
    Ok(Json(views))
}

/// `GET /api/v1/domains/{domain}`: a listed domain, or one the config's
/// `domain_rate_limits` cover (`listed: false`); `404` for any other.
pub async fn get(State(s): St, Path(domain): Path<String>) -> Answer<Json<DomainView>> {
    let name = check_domain_name(&domain).map_err(|_| ApiError::not_found("domain"))?;
    let domains = s.ctx.users.domains().await?;
    let own = domains
        .into_iter()
        .find(|(d, _)| *d == name)
        .map(|(_, l)| l);
    if own.is_none() && s.ctx.config.domain_rate_limits.is_none() {
        return Err(ApiError::not_found("domain"));
    }
    Ok(Json(s.domain_view(&name, own).await))
}

/// The body of `PUT /api/v1/domains/{domain}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PutRequest {
    rate_limits: RateLimitsInput,
}

/// `PUT /api/v1/domains/{domain}`: sets the domain's own limits (the keys not
/// given fall back to `domain_rate_limits`); `201` when it was not listed, `200`
/// when it was, `422` for a name that is not a domain.
pub async fn put(
    State(s): St,
    Extension(peer): Extension<Peer>,
    Path(domain): Path<String>,
    JsonBody(req): JsonBody<PutRequest>,
) -> Answer<impl IntoResponse> {
    let name = check_domain_name(&domain).map_err(|why| ApiError::invalid(vec![why]))?;
    let own = req.rate_limits;
    let new = s.ctx.users.put_domain(&name, own.clone()).await?;
    info!(client = %peer.0, domain = %Printable(&name), new, "admin API: domain limits set");
    let status = if new {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(s.domain_view(&name, Some(own)).await)))
}

/// `DELETE /api/v1/domains/{domain}`: unlists it (`domain_rate_limits`, if any,
/// then apply); `204`, or `404` if it was not listed.
pub async fn delete(
    State(s): St,
    Extension(peer): Extension<Peer>,
    Path(domain): Path<String>,
) -> Answer<StatusCode> {
    let name = check_domain_name(&domain).map_err(|_| ApiError::not_found("domain"))?;
    s.ctx
        .users
        .delete_domain(&name)
        .await
        .map_err(domain_error)?;
    info!(client = %peer.0, domain = %Printable(&name), "admin API: domain unlisted");
    Ok(StatusCode::NO_CONTENT)
}
