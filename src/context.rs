//! What every session shares: the config, the credential store, the TLS config in
//! force, the smarthost pool, and the shutdown signal; and what the admin API and
//! the control socket work on (the users store, the brake, the queue).

use crate::auth::Authenticator;
use crate::config::Config;
use crate::dkim::Keyring;
use crate::events::Events;
use crate::policy::auth_failures::AuthFailures;
use crate::policy::brake::Brake;
use crate::policy::rates::{MemoryRates, RateStore};
use crate::spool::queue::Queue;
use crate::state::Cluster;
use crate::tls::ServerTls;
use crate::upstream::Relays;
use crate::users::{FileStore, PgStore, UsersStore, postgres};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::watch;

/// The delivery mode the config asks for; in queue mode, the spool opened.
fn mode(
    config: &Config,
    relay: &Arc<Relays>,
    dkim: &Arc<Keyring>,
    events: &Arc<Events>,
) -> Result<Mode, String> {
    match config.delivery.mode {
        crate::config::DeliveryMode::Passthrough => Ok(Mode::Passthrough),
        crate::config::DeliveryMode::Queue => {
            let queue = Queue::open(
                &config.delivery,
                &config.hostname,
                relay.clone(),
                dkim.clone(),
                events.clone(),
            )
            .map_err(|e| {
                format!(
                    "cannot open the spool {}: {e}",
                    config.delivery.spool_directory.display()
                )
            })?;
            Ok(Mode::Queue(Arc::new(queue)))
        }
    }
}

/// The users store the config names (the users file or PostgreSQL); each change it
/// makes is put in force in `auth` at once.
fn users_store(config: &Config, auth: &Arc<Authenticator>) -> Result<Arc<dyn UsersStore>, String> {
    let in_force = auth.clone();
    Ok(match &config.users_database {
        Some(db) => Arc::new(PgStore::new(
            postgres::Database::new(db)?,
            config.rate_limits.clone(),
            Arc::new(move |users| in_force.replace_users(users)),
        )),
        None => Arc::new(FileStore::new(
            config.users_file.clone(),
            config.rate_limits.clone(),
            move |users| in_force.replace_users(users),
        )),
    })
}

/// How accepted mail is delivered.
pub enum Mode {
    /// Relayed to the smarthost during the session: the client gets its verdict.
    Passthrough,
    /// Made durable in the spool, then delivered by the queue.
    Queue(Arc<Queue>),
}

pub struct Context {
    pub config: Config,
    /// The users in force and their verification (shared with the users store,
    /// which replaces the users after each change).
    pub auth: Arc<Authenticator>,
    /// Where users are created, changed and removed (the admin API).
    pub users: Arc<dyn UsersStore>,
    /// `None` when no listener uses TLS.
    pub tls: Option<ServerTls>,
    /// Every smarthost's connection pool, and the routes between them.
    pub relay: Arc<Relays>,
    /// Per-user sending quotas.
    pub rates: Arc<dyn RateStore>,
    /// Failed-login penalties per address and username.
    pub auth_failures: AuthFailures,
    /// Automatic suspension of accounts that look compromised.
    pub brake: Arc<Brake>,
    /// How accepted mail leaves: while the client waits, or from the spool.
    pub mode: Mode,
    /// The DKIM keys in force (the queue holds the same ring).
    pub dkim: Arc<Keyring>,
    /// Cluster mode: the state shared with the other instances (`cluster:`).
    pub cluster: Option<Arc<Cluster>>,
    /// Becomes `true` when the server starts draining.
    pub shutdown: watch::Receiver<bool>,
    /// Where what happened is reported: the delivery log, webhooks, traffic counters.
    pub events: Arc<Events>,
    id_prefix: u64,
    next_id: AtomicU64,
}

impl Context {
    pub fn new(
        config: Config,
        auth: Authenticator,
        tls: Option<ServerTls>,
        relay: Arc<Relays>,
        shutdown: watch::Receiver<bool>,
    ) -> Result<Context, String> {
        let start = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let brake = Arc::new(Brake::new(
            config.abuse.brake.clone(),
            config.abuse.state_file.clone(),
        )?);
        let auth_failures = AuthFailures::new(config.abuse.auth_failures.clone());
        let dkim = Arc::new(
            Keyring::open(Some(&config.dkim.keys_directory))
                .map_err(|e| format!("cannot read the DKIM keys: {e}"))?,
        );
        let cluster = match &config.cluster {
            Some(c) => Some(Arc::new(Cluster::new(c)?)),
            None => None,
        };
        if let Some(c) = &cluster {
            auth_failures.share(c.failures.clone());
            relay.share_pacing(c.pacing.clone());
        }
        let rates: Arc<dyn RateStore> = match &cluster {
            Some(c) => c.rates.clone(),
            None => Arc::new(MemoryRates::new(Instant::now())),
        };
        let events = Events::start(&config)?;
        let mode = mode(&config, &relay, &dkim, &events)?;
        let auth = Arc::new(auth);
        let users = users_store(&config, &auth)?;
        Ok(Context {
            config,
            auth,
            users,
            tls,
            relay,
            rates,
            auth_failures,
            brake,
            mode,
            dkim,
            cluster,
            shutdown,
            events,
            id_prefix: start & 0xff_ffff,
            next_id: AtomicU64::new(1),
        })
    }

    /// The queue, in queue mode.
    pub fn queue(&self) -> Option<&Arc<Queue>> {
        match &self.mode {
            Mode::Queue(q) => Some(q),
            Mode::Passthrough => None,
        }
    }

    /// Forgets expired limiter state; run about once a minute.
    pub fn prune(&self) {
        let now = Instant::now();
        self.relay.prune();
        self.rates.prune(now);
        self.auth_failures.prune(now);
        self.brake.prune(now, SystemTime::now());
        self.events.prune(now);
    }

    /// A new session id, unique within this process and unlikely to repeat across
    /// restarts (it starts with the start time).
    pub fn new_session_id(&self) -> String {
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        format!("{:06X}{:06X}", self.id_prefix, n & 0xff_ffff)
    }
}
