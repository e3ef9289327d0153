//! What every session shares: the config, the credential store, the TLS config in
//! force, the smarthost pool, and the shutdown signal.

use crate::auth::Authenticator;
use crate::config::Config;
use crate::tls::ServerTls;
use crate::upstream::Pool;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::sync::watch;

pub struct Context {
    pub config: Config,
    pub auth: Authenticator,
    /// `None` when no listener uses TLS.
    pub tls: Option<ServerTls>,
    pub relay: Pool,
    /// Becomes `true` when the server starts draining.
    pub shutdown: watch::Receiver<bool>,
    id_prefix: u64,
    next_id: AtomicU64,
}

impl Context {
    pub fn new(
        config: Config,
        auth: Authenticator,
        tls: Option<ServerTls>,
        relay: Pool,
        shutdown: watch::Receiver<bool>,
    ) -> Context {
        let start = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        Context {
            config,
            auth,
            tls,
            relay,
            shutdown,
            id_prefix: start & 0xff_ffff,
            next_id: AtomicU64::new(1),
        }
    }

    /// A new session id, unique within this process and unlikely to repeat across
    /// restarts (it starts with the start time).
    pub fn new_session_id(&self) -> String {
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        format!("{:06X}{:06X}", self.id_prefix, n & 0xff_ffff)
    }
}
