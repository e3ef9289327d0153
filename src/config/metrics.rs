//! `metrics`: the optional Prometheus endpoint.

use super::ctx::Ctx;
use serde::Deserialize;
use std::net::SocketAddr;

/// The optional Prometheus endpoint.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    /// Where `/metrics` and `/healthz` are served; `None`: no listener.
    pub address: Option<SocketAddr>,
    /// Also count messages per user (one time series per user).
    pub per_user: bool,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawMetrics {
    address: Option<String>,
    per_user: Option<bool>,
}

/// `metrics`: no listener unless `address` is given.
pub(super) fn metrics(cx: &mut Ctx) -> Metrics {
    let m: RawMetrics = cx.section("metrics").unwrap_or_default();
    let address = m
        .address
        .as_ref()
        .and_then(|a| match a.parse::<SocketAddr>() {
            Ok(addr) => Some(addr),
            Err(_) => {
                cx.add(
                    "metrics.address",
                    format!("{a:?} is not an IP:port such as \"127.0.0.1:9587\""),
                );
                None
            }
        });
    Metrics {
        address,
        per_user: m.per_user.unwrap_or(false),
    }
}
