//! `GET /api/v1/stats/traffic`: messages accepted and refused per minute over the
//! last 24 hours and per hour over the last 7 days, for the dashboard's charts.
//!
//! The counts are the events hub's ([`crate::events::Traffic`]), in memory since
//! the start. The JSON: `{"per_minute": [{"start", "accepted", "refused"}...],
//! "per_hour": [...]}`, oldest first, `start` in Unix seconds.

use super::AdminState;
use crate::events::TrafficSeries;
use axum::Json;
use axum::extract::State;
use std::sync::Arc;

/// `GET /api/v1/stats/traffic`.
pub async fn get(State(s): State<Arc<AdminState>>) -> Json<TrafficSeries> {
    Json(s.ctx.events.traffic())
}
