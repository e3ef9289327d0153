//! Postern: an authenticating SMTP submission proxy.
//!
//! Clients submit on 587 (STARTTLS) or 465 (implicit TLS), authenticate with AUTH PLAIN
//! or LOGIN against argon2id hashes, may send only as their own senders and within
//! their quotas, and their mail goes to one smarthost (or a route of them) over
//! verified TLS, either while they wait (passthrough) or from a durable spool (queue).
//!
//! # Layout
//!
//! One message, the straight path: [`server`] accepts (connection caps checked, a
//! [`proxy`] header read first behind a load balancer) →
//! [`session`] greets and reads commands through [`proto`] → STARTTLS swaps the stream
//! ([`tls`]) → AUTH asks [`auth`], with [`policy::auth_failures`] and
//! [`policy::brake`] around it → MAIL and RCPT ask [`policy`] (sender rules, quotas) →
//! DATA streams through [`proto::data`] and the header From check → a
//! [`upstream::Transaction`] at the smarthost (passthrough) or [`spool`] (queue,
//! delivered later by [`spool::queue`] through [`upstream::deliver`], the same
//! transaction) → the reply goes back to the client. Nothing in `proto`, `auth` or `policy` reaches back into
//! `session` or `server`.
//!
//! - [`proto`]: pure protocol code over bytes (framing, commands, replies, DATA, SASL).
//! - [`config`]: the YAML config and users file, validated as a whole; the ground floor
//!   (it imports only [`secret`], plus the file-load checks in `config/file_checks.rs`).
//! - [`context`]: what every session shares.
//! - [`control`]: the local control socket behind `postern queue flush` and reload.
//! - [`reload`]: re-reading the users file, suspensions, TLS files and DKIM keys at run time.
//! - [`dkim`]: DKIM keys per customer domain, and signing with them as mail leaves.
//! - [`doctor`]: `postern doctor`, the deliverability checks of a sender domain's
//!   DNS (SPF, DKIM, DMARC, MX) against the route its mail leaves through.
//! - [`dns`]: the resolver and the lookups behind `dkim list` and `doctor`.
//! - [`daemon`]: systemd notifications, socket activation, dropping root.
//! - [`metrics`]: the Prometheus endpoint.
//! - [`admin`]: the admin HTTP API (users, suspensions, queue) on its own listener.
//! - [`users`]: the users store behind one trait (the users file, or PostgreSQL
//!   shared by several instances), which the admin API and `postern user ...`
//!   change users through.
//! - [`private_fs`]: files 0600 and folders 0700 whatever the umask.
//! - [`lock`]: taking a std lock whether or not a panic poisoned it.
//! - [`sink`]: a stand-in smarthost for the demo, the tests and benchmarks.
//! - [`demo`]: `postern demo`.
//! - [`secret`]: strings that never reach a log.
//! - [`state`]: cluster mode: quotas, login failures, suspensions and pacing
//!   shared through Redis, with memory as the fallback.
//! - [`events`]: what happened (a message accepted or refused, an attempt, a
//!   suspension, a rate limit reached, a bounce), fanned out without ever blocking a
//!   session to the delivery log ([`journal`]), the [`webhooks`] and the traffic
//!   counters of the dashboard.
pub mod admin;
pub mod auth;
pub mod config;
pub mod context;
pub mod control;
pub mod daemon;
pub mod demo;
pub mod dkim;
pub mod dns;
pub mod doctor;
pub mod events;
pub mod journal;
pub mod lock;
pub mod metrics;
pub mod policy;
pub mod private_fs;
pub mod proto;
pub mod proxy;
pub mod reload;
pub mod secret;
pub mod server;
pub mod session;
pub mod sink;
pub mod spool;
pub mod state;
pub mod tls;
pub mod upstream;
pub mod users;
pub mod webhooks;
