//! All smarthosts: one pool each, the default route and the per-sender routes.
//!
//! A route is a list of smarthosts tried in order: on a connection failure or a 4xx
//! before the message was handed over, the next one is tried. A message is only
//! ever sent to one smarthost: failover happens for what the previous one did not
//! accept.

use super::client::{Upstream, UpstreamError, UpstreamSettings};
use super::pool::{Pool, Taken};
use crate::config::{Config, Smarthost};
use crate::policy::senders::SenderRule;
use crate::tls::{TlsError, client_config_with_identity};
use std::time::Duration;

pub struct Relays {
    pools: Vec<Pool>,
    default_route: Vec<usize>,
    routes: Vec<(SenderRule, Vec<usize>)>,
}

impl Relays {
    /// One pool per configured smarthost.
    pub fn new(config: &Config) -> Result<Relays, TlsError> {
        let mut pools = Vec::new();
        let mut add = |hosts: &[Smarthost]| -> Result<Vec<usize>, TlsError> {
            let mut route = Vec::new();
            for s in hosts {
                let identity = s.client_certificate.as_deref().zip(s.client_key.as_deref());
                let tls = client_config_with_identity(s.ca_file.as_deref(), identity)?;
                let settings = UpstreamSettings::new(s, &config.timeouts, &config.hostname, tls);
                let index = pools.len();
                pools.push(
                    Pool::new(
                        index,
                        settings,
                        s.pool_size,
                        s.idle_timeout,
                        s.max_messages_per_connection,
                    )
                    .paced(s.max_messages_per_minute),
                );
                route.push(index);
            }
            Ok(route)
        };
        let default_route = add(&config.smarthosts)?;
        let mut routes = Vec::new();
        for r in &config.routes {
            routes.push((r.rule.clone(), add(&r.smarthosts)?));
        }
        Ok(Relays {
            pools,
            default_route,
            routes,
        })
    }

    /// The smarthosts (pool indices, in failover order) for mail from `sender`.
    pub fn route(&self, sender: &str) -> &[usize] {
        self.routes
            .iter()
            .find(|(rule, _)| rule.allows(sender))
            .map(|(_, r)| r.as_slice())
            .unwrap_or(&self.default_route)
    }

    pub fn pool(&self, index: usize) -> &Pool {
        &self.pools[index]
    }

    /// A connection from pool `index` (idle if possible).
    pub async fn take(&self, index: usize) -> Result<Taken, UpstreamError> {
        self.pools[index].take().await
    }

    /// A fresh connection from pool `index`.
    pub async fn connect(&self, index: usize) -> Result<Upstream, UpstreamError> {
        self.pools[index].connect().await
    }

    /// Back to its own pool after a completed transaction.
    pub fn put(&self, conn: Upstream) {
        let i = conn.pool;
        self.pools[i].put(conn);
    }

    /// RSET, then back to its pool.
    pub async fn reset_and_put(&self, conn: Upstream) {
        let i = conn.pool;
        self.pools[i].reset_and_put(conn).await;
    }

    pub fn prune(&self) {
        self.pools.iter().for_each(Pool::prune);
    }

    pub async fn close_all(&self) {
        for p in &self.pools {
            p.close_all().await;
        }
    }

    /// The shortest idle timeout, for the pruning interval.
    pub fn idle_timeout(&self) -> Duration {
        self.pools
            .iter()
            .map(Pool::idle_timeout)
            .min()
            .unwrap_or(Duration::from_secs(30))
    }
}
