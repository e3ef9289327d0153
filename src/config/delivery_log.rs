//! `delivery_log`: where the delivery log is kept and how much of it.
//!
//! ```yaml
//! delivery_log:
//!   # enabled: true
//!   # directory: /var/spool/postern/delivery-log   # default: under the spool
//!   max_age: 30d
//!   max_size: 1GiB
//! ```

use super::ctx::Ctx;
use super::{HumanDuration, Size};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryLogConfig {
    /// Off: no entries are written (and `GET /api/v1/messages` has none).
    pub enabled: bool,
    pub directory: PathBuf,
    /// Entries older than this are removed.
    pub max_age: Duration,
    /// The log's files together stay under this many bytes.
    pub max_size: u64,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawDeliveryLog {
    enabled: Option<bool>,
    directory: Option<PathBuf>,
    max_age: Option<HumanDuration>,
    max_size: Option<Size>,
}

/// The smallest `max_size`: a few segments' worth.
const MIN_SIZE: u64 = 1024 * 1024;

/// `delivery_log`, every key with a default; the folder defaults to
/// `delivery-log` in the spool directory.
pub(super) fn delivery_log(cx: &mut Ctx, spool: &Path) -> DeliveryLogConfig {
    let raw: RawDeliveryLog = cx.section("delivery_log").unwrap_or_default();
    let c = DeliveryLogConfig {
        enabled: raw.enabled.unwrap_or(true),
        directory: raw
            .directory
            .map(|d| cx.resolve(d))
            .unwrap_or_else(|| spool.join("delivery-log")),
        max_age: raw
            .max_age
            .map_or(Duration::from_secs(30 * 86_400), |h| h.0),
        max_size: raw.max_size.map_or(1 << 30, |s| s.0),
    };
    if c.max_age < Duration::from_secs(60) {
        cx.add("delivery_log.max_age", "must be at least 1m");
    }
    if c.max_size < MIN_SIZE {
        cx.add("delivery_log.max_size", "must be at least 1MiB");
    }
    c
}
