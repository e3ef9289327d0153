//! `GET /api/v1/doctor/{domain}`: what `postern doctor DOMAIN --json` says of one
//! domain (SPF, DKIM, DMARC, MX for the route its mail leaves through), for a panel
//! that shows its customers what to fix.

use super::AdminState;
use super::error::{ApiError, ApiPath};
use crate::config::normalize_domain;
use crate::dkim::keys::is_domain;
use crate::doctor::{self, DomainReport};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use std::sync::Arc;

/// One domain's report. `422` for a name that is not an ASCII domain (IDNs in their
/// `xn--` form), `503` when no resolver can be set up. A DNS failure is not an
/// error here: the report says "could not check" (`unknown`) for what it concerns.
pub async fn get(
    State(s): State<Arc<AdminState>>,
    ApiPath(domain): ApiPath<String>,
) -> Result<Json<DomainReport>, ApiError> {
    let domain = normalize_domain(&domain);
    if !is_domain(&domain) {
        return Err(ApiError::invalid(vec![
            "domain: not a domain name (write an internationalised one as xn--...)".into(),
        ]));
    }
    let dns = crate::dns::resolver().map_err(|e| {
        tracing::error!(error = %e, "admin API: no DNS resolver for the doctor");
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "no DNS resolver")
    })?;
    let keys = s.ctx.dkim.current();
    let report = doctor::check_domain(&dns, &s.ctx.config, &keys, &domain).await;
    Ok(Json(report))
}
