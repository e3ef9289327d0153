//! `GET /api/v1/stats/traffic`: messages accepted and refused per minute over the
//! last 24 hours and per hour over the last 7 days, for the dashboard's charts.
//!
//! The counts come from a [`TrafficSource`]: the events hub's counters where the
//! server has them, [`NoTraffic`] (empty series: the charts draw an empty frame)
//! where it does not. The JSON is the counters' own shape:
//! `{"per_minute": [{"start", "accepted", "refused"}...], "per_hour": [...]}`,
//! oldest first, `start` in Unix seconds.

use super::AdminState;
use axum::Json;
use axum::extract::State;
use serde::Serialize;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// One bar of a chart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Point {
    /// Unix second the interval starts.
    pub start: u64,
    pub accepted: u64,
    pub refused: u64,
}

/// Both series, oldest first.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TrafficSeries {
    pub per_minute: Vec<Point>,
    pub per_hour: Vec<Point>,
}

/// Where the counts come from.
pub trait TrafficSource: Send + Sync {
    /// The series as of `unix` (seconds).
    fn series(&self, unix: u64) -> TrafficSeries;
}

/// A server that counts nothing: both series empty.
pub struct NoTraffic;

impl TrafficSource for NoTraffic {
    fn series(&self, _unix: u64) -> TrafficSeries {
        TrafficSeries::default()
    }
}

/// `GET /api/v1/stats/traffic`.
pub async fn get(State(s): State<Arc<AdminState>>) -> Json<TrafficSeries> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    Json(s.traffic.series(now))
}
