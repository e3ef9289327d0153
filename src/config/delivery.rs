//! `delivery`: queue or passthrough, the spool, and the retry schedule.

use super::HumanDuration;
use super::ctx::Ctx;
use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

/// How accepted mail leaves Postern.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryMode {
    /// Spool to disk, answer 250, deliver in the background.
    Queue,
    /// Relay each transaction to the smarthost while the client waits.
    Passthrough,
}

#[derive(Debug, Clone)]
pub struct Delivery {
    pub mode: DeliveryMode,
    pub spool_directory: PathBuf,
    /// Deliveries to the smarthost at once (queue mode).
    pub concurrency: usize,
    /// Waits between attempts; the last one repeats.
    pub retry_schedule: Vec<Duration>,
    /// After this, a message still not delivered is bounced.
    pub max_queue_lifetime: Duration,
    /// Tell the sender once when a message is still undelivered after this long.
    pub delay_warning: Option<Duration>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawDelivery {
    mode: Option<DeliveryMode>,
    spool_directory: Option<PathBuf>,
    concurrency: Option<usize>,
    retry_schedule: Option<Vec<HumanDuration>>,
    max_queue_lifetime: Option<HumanDuration>,
    delay_warning: Option<HumanDuration>,
}

/// `delivery`, every key with a default.
pub(super) fn delivery(cx: &mut Ctx) -> Delivery {
    let d: RawDelivery = cx.section("delivery").unwrap_or_default();
    let delivery = Delivery {
        mode: d.mode.unwrap_or(DeliveryMode::Queue),
        spool_directory: cx.resolve(
            d.spool_directory
                .unwrap_or_else(|| PathBuf::from("/var/spool/postern")),
        ),
        concurrency: d.concurrency.unwrap_or(8),
        retry_schedule: d
            .retry_schedule
            .map(|v| v.into_iter().map(|h| h.0).collect())
            .unwrap_or_else(|| {
                [60, 300, 900, 3600, 7200, 14400]
                    .map(Duration::from_secs)
                    .to_vec()
            }),
        max_queue_lifetime: d
            .max_queue_lifetime
            .map(|h| h.0)
            .unwrap_or(Duration::from_secs(5 * 86_400)),
        delay_warning: d.delay_warning.map(|h| h.0).filter(|d| !d.is_zero()),
    };
    if delivery.concurrency == 0 {
        cx.add("delivery.concurrency", "must be greater than 0");
    }
    if delivery.retry_schedule.is_empty() || delivery.retry_schedule.iter().any(|d| d.is_zero()) {
        cx.add(
            "delivery.retry_schedule",
            "needs at least one duration, none of them 0",
        );
    }
    delivery
}
