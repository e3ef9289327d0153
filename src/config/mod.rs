//! Configuration: the YAML config file and the users file it names, parsed once into
//! typed structs and validated as a whole, so that every problem is reported at once.
//!
//! `config` is the ground floor: it imports nothing of Postern's other modules except
//! the leaf `secret` (the smarthost password is held as one), and the three load-time
//! file checks in [`file_checks`]. One file per section:
//!
//! - `load`: [`Config::load`] and [`Config::from_yaml`], which call each section in turn;
//! - `general`: `hostname`, `users` (with `database`: its PostgreSQL URL), `received`, `run_as`;
//! - `listeners`: `listeners`, `tls`, `trusted_proxies`;
//! - `smarthost`, `routes`, `delivery`, `limits` (with `rate_limits`), `timeouts`,
//!   `abuse`, `log`, `metrics`, `dkim`, `admin`, `delivery_log`, `webhooks`
//!   (`admin.webhooks`);
//! - the value types they parse: `units` (durations, sizes), `senders` (sender rules),
//!   `cidr` (networks), `phc` (password hashes);
//! - `users`: the users file, with `networks` (devices identified by their address);
//!   `edit`: editing it; `perms`: file permission audits.

mod abuse;
mod admin;
mod cidr;
mod cluster;
mod ctx;
mod database;
mod delivery;
mod delivery_log;
mod dkim;
mod domains;
pub mod edit;
mod file_checks;
mod general;
mod limits;
mod listeners;
mod load;
mod log;
mod metrics;
mod networks;
mod oauth2;
pub mod perms;
mod phc;
mod problems;
mod routes;
mod senders;
mod smarthost;
mod timeouts;
mod units;
pub mod users;
mod webhooks;

pub use abuse::{Abuse, AuthFailurePolicy, BrakePolicy};
pub use admin::{Admin, MIN_TOKEN_LEN};
pub use cidr::Cidr;
pub use cluster::Cluster;
pub use database::{UsersDatabase, check_url as check_database_url};
pub use delivery::{Delivery, DeliveryMode};
pub use delivery_log::DeliveryLogConfig;
pub use dkim::Dkim;
pub use domains::{address_domain, check_domain_name, domain_key};
pub use general::RunAs;
pub use limits::{Limits, RateLimits, RawRateLimits};
pub use listeners::{Listener, TlsFiles, TlsMode};
pub use log::{Log, LogFormat};
pub use metrics::Metrics;
pub use networks::NetworkIndex;
pub use oauth2::OAuth2;
pub use phc::{MAX_M_COST, check_phc};
pub use problems::{Problem, Problems};
pub use routes::Route;
pub use senders::{SenderRule, normalize_domain};
pub use smarthost::{DEFAULT_GRAPH_URL, Smarthost, Transport, split_host_port};
pub use timeouts::Timeouts;
pub use units::{HumanDuration, Size, parse_duration, parse_size};
pub use users::{User, Users, load_users, parse_users};
pub use webhooks::{WEBHOOK_EVENTS, Webhook};

use std::path::PathBuf;

/// Where the config is looked for when `-c` is not given and `$POSTERN_CONFIG` is unset.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/postern/postern.yaml";

/// The whole validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The config file itself.
    pub path: PathBuf,
    pub hostname: String,
    pub listeners: Vec<Listener>,
    pub tls: Option<TlsFiles>,
    /// The users file; empty when the users are in a database.
    pub users_file: PathBuf,
    /// `users.database`: the users are in PostgreSQL (shared by several instances).
    pub users_database: Option<UsersDatabase>,
    /// The smarthosts tried in order (failover) for senders no route matches.
    pub smarthosts: Vec<Smarthost>,
    /// Per-sender routes, first match wins.
    pub routes: Vec<Route>,
    pub delivery: Delivery,
    pub limits: Limits,
    pub rate_limits: RateLimits,
    /// `domain_rate_limits`: the limits of every sender domain the users file (or
    /// database) does not list; `None`: unlisted domains have no domain limit.
    pub domain_rate_limits: Option<RateLimits>,
    pub log: Log,
    pub timeouts: Timeouts,
    /// Whether the `Received:` header names the client's address.
    pub received_include_client_ip: bool,
    pub abuse: Abuse,
    pub metrics: Metrics,
    /// Load balancers allowed to send a PROXY header (listeners with `proxy_protocol`).
    pub trusted_proxies: Vec<Cidr>,
    /// The account to switch to after binding, when started as root.
    pub run_as: Option<RunAs>,
    /// DKIM signing keys.
    pub dkim: Dkim,
    /// Cluster mode: the Redis shared with the other instances, if any.
    pub cluster: Option<Cluster>,
    /// The admin API; `None`: off.
    pub admin: Option<Admin>,
    /// The delivery log's folder and retention.
    pub delivery_log: DeliveryLogConfig,
    /// `admin.webhooks`: where events are POSTed.
    pub webhooks: Vec<Webhook>,
}

/// Picks the config path: `-c`, then `$POSTERN_CONFIG`, then the default.
pub fn resolve_path(cli: Option<PathBuf>) -> PathBuf {
    cli.or_else(|| std::env::var_os("POSTERN_CONFIG").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG_PATH))
}

// tests.rs takes everything it uses from here (`use super::*`).
#[cfg(test)]
use std::{path::Path, time::Duration};

#[cfg(test)]
mod smarthost_tests;
#[cfg(test)]
mod tests;
