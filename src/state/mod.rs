//! Where shared state lives in cluster mode: Redis (or Valkey), behind the seams
//! `policy` defines ([`crate::policy::rates::RateStore`] and friends), with this
//! instance's memory as the fallback whenever Redis cannot be reached.
//!
//! - [`keys`]: key names (pure; hash tags for Redis Cluster, escaped names);
//! - [`link`]: the connection, its timeouts, and up/down (log and metric);
//! - [`rates`]: quotas (Lua scripts, leases on reservations);
//! - [`grants`]: room for several messages taken ahead far from a limit;
//! - [`failures`]: login failures (the same records as in memory, a shared key);
//! - [`pacing`]: `max_messages_per_minute` (GCRA, burst one, one key per entry);
//! - [`suspensions`]: the suspension list (a hash, pub/sub, the brake as cache).

pub mod failures;
pub mod grants;
pub mod keys;
pub mod link;
pub mod pacing;
pub mod rates;
pub mod suspensions;

use crate::config::Cluster as ClusterConfig;
use crate::policy::brake::Brake;
use keys::Keys;
use link::Link;
use rates::Pass;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;

/// Everything cluster mode shares, built once from `cluster:`.
pub struct Cluster {
    pub link: Arc<Link>,
    pub keys: Keys,
    pub rates: Arc<rates::SharedRates>,
    pub suspensions: Arc<suspensions::SharedBrake>,
    pub failures: Arc<failures::SharedAuthFailures>,
    pub pacing: Arc<pacing::SharedPace>,
}

impl Cluster {
    /// Builds the shared stores; nothing is connected yet (see [`Cluster::start`]).
    pub fn new(config: &ClusterConfig) -> Result<Cluster, String> {
        if config.redis.starts_with("rediss://") {
            // The redis crate's rustls support is built with ring only; make sure
            // the process-wide provider is ring before it looks for one.
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        let link = Link::new(&config.redis, config.display_url())?;
        let keys = Keys::new(&config.key_prefix);
        let rates = Arc::new(rates::SharedRates::new(
            link.clone(),
            keys.clone(),
            Instant::now(),
        ));
        let suspensions = Arc::new(suspensions::SharedBrake::new(link.clone(), keys.clone()));
        let failures = Arc::new(failures::SharedAuthFailures::new(
            link.clone(),
            keys.clone(),
        ));
        let pacing = Arc::new(pacing::SharedPace::new(link.clone(), keys.clone()));
        Ok(Cluster {
            link,
            keys,
            rates,
            suspensions,
            failures,
            pacing,
        })
    }

    /// Connects (waiting up to a couple of seconds, so that the first sessions
    /// already share), then keeps the link probed and the caches in step. Returns
    /// the background tasks, aborted at shutdown.
    pub async fn start(&self, brake: Arc<Brake>) -> Vec<JoinHandle<()>> {
        for _ in 0..4 {
            if self.link.probe().await {
                break;
            }
        }
        if !self.link.is_up() {
            self.link.down("starting", "no answer");
            tracing::warn!(
                "cluster: Redis not reachable at start; serving with in-memory limits until it is"
            );
        }
        brake.share(self.suspensions.clone());
        vec![
            tokio::spawn(self.link.clone().keep_probing()),
            tokio::spawn(self.suspensions.clone().run(brake)),
            tokio::spawn(self.rates.clone().keep_settling()),
        ]
    }

    /// At shutdown, once the last transaction is over: every grant is settled,
    /// so what this instance sent is counted and its unused room given back.
    /// A settle Redis does not answer is made again for up to two seconds; what
    /// is still unsettled then is lost (logged): its room comes back with the lease.
    pub async fn stop(&self) {
        let all_settled = async {
            loop {
                match self.rates.settle(true).await {
                    Pass::Idle => return,
                    Pass::Done => {}
                    Pass::Failed => tokio::time::sleep(Duration::from_millis(200)).await,
                }
            }
        };
        if tokio::time::timeout(Duration::from_secs(2), all_settled)
            .await
            .is_err()
        {
            tracing::warn!(
                grants = self.rates.grants(),
                "cluster: some counts could not be settled with Redis at shutdown; they are lost, and the room they held comes back when its lease runs out"
            );
        }
    }
}
