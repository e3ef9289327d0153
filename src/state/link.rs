//! The connection to Redis, and whether it is usable.
//!
//! Every shared operation goes through [`Link::run`]: a short timeout, and on any
//! failure the link is marked down so that callers fall back to this instance's
//! memory at once instead of each waiting for a timeout. While down, a probe pings
//! Redis every second; when it answers, the link is up again and the watchers (the
//! suspension cache, the fingerprint key) resynchronise. Down and up are each logged
//! once, and `postern_cluster_redis_up` says which it is.

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::watch;
use tracing::{info, warn};

/// How long one shared operation may take before this instance stops waiting for
/// Redis and answers from memory. A session must never hang on Redis.
pub const OP_TIMEOUT: Duration = Duration::from_millis(500);

/// How often a down link is probed.
pub const PROBE_EVERY: Duration = Duration::from_secs(1);

/// The shared connection (multiplexed: every session uses it at once).
pub struct Link {
    conn: ConnectionManager,
    client: redis::Client,
    up: AtomicBool,
    /// `true` while up; watchers resynchronise on every change to `true`.
    changes: watch::Sender<bool>,
    shown: String,
}

impl Link {
    /// A link that connects lazily (Redis may be down when Postern starts).
    pub fn new(url: &str, shown: String) -> Result<Arc<Link>, String> {
        let client = redis::Client::open(url).map_err(|e| format!("cluster.redis: {e}"))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(OP_TIMEOUT))
            .set_response_timeout(Some(OP_TIMEOUT))
            .set_number_of_retries(1)
            .set_max_delay(PROBE_EVERY);
        let conn = ConnectionManager::new_lazy_with_config(client.clone(), config)
            .map_err(|e| format!("cluster.redis: {e}"))?;
        metrics::gauge!("postern_cluster_redis_up").set(0.0);
        Ok(Arc::new(Link {
            conn,
            client,
            up: AtomicBool::new(false),
            changes: watch::channel(false).0,
            shown,
        }))
    }

    /// Whether shared state is in use now.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    /// Says `true` each time the link comes (back) up.
    pub fn watch(&self) -> watch::Receiver<bool> {
        self.changes.subscribe()
    }

    /// A client for connections of their own (pub/sub).
    pub fn client(&self) -> &redis::Client {
        &self.client
    }

    /// Runs `op` on the shared connection, or `None` when the link is down, the
    /// operation fails or it takes longer than [`OP_TIMEOUT`].
    pub async fn run<T, F>(
        &self,
        what: &'static str,
        op: impl FnOnce(ConnectionManager) -> F,
    ) -> Option<T>
    where
        F: Future<Output = redis::RedisResult<T>>,
    {
        if !self.is_up() {
            return None;
        }
        match tokio::time::timeout(OP_TIMEOUT, op(self.conn.clone())).await {
            Ok(Ok(v)) => Some(v),
            Ok(Err(e)) => {
                self.down(what, &e.to_string());
                None
            }
            Err(_) => {
                self.down(what, "timed out");
                None
            }
        }
    }

    /// Marks the link down (logged once per outage).
    pub fn down(&self, what: &str, why: &str) {
        if self.up.swap(false, Ordering::AcqRel) {
            metrics::gauge!("postern_cluster_redis_up").set(0.0);
            let _ = self.changes.send(false);
            warn!(redis = %self.shown, during = what, error = %why, "cluster: Redis unreachable; this instance goes on with its own in-memory limits until it is back");
        }
    }

    /// One ping; marks the link up if Redis answers.
    pub async fn probe(&self) -> bool {
        let mut conn = self.conn.clone();
        let cmd = redis::cmd("PING");
        let ping = cmd.query_async::<String>(&mut conn);
        let ok = matches!(tokio::time::timeout(OP_TIMEOUT, ping).await, Ok(Ok(_)));
        if ok && !self.up.swap(true, Ordering::AcqRel) {
            metrics::gauge!("postern_cluster_redis_up").set(1.0);
            info!(redis = %self.shown, "cluster: Redis reachable; quotas, login failures, suspensions and pacing are shared");
            let _ = self.changes.send(true);
        }
        ok
    }

    /// Probes every [`PROBE_EVERY`] while down, forever (the task is aborted at
    /// shutdown).
    pub async fn keep_probing(self: Arc<Self>) {
        let mut tick = tokio::time::interval(PROBE_EVERY);
        loop {
            tick.tick().await;
            if !self.is_up() {
                self.probe().await;
            }
        }
    }
}
