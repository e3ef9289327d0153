//! The smarthost side: an SMTP client ([`client`]) and a pool of reusable
//! authenticated connections ([`pool`]), one per smarthost, grouped into routes
//! with failover ([`relays`]), each paced to its `max_messages_per_minute`
//! ([`pacing`]) and held while it asks to slow down ([`throttle`]).
//!
//! Both delivery modes go through one path: a [`Transaction`] (MAIL, RCPT, DATA,
//! end of data, with route failover and the MAIL line built in one place), and
//! [`deliver`] on top of it for a finished message, returning an [`Outcome`] per
//! recipient. Passthrough drives the transaction step by step, because the client
//! waits for each of the smarthost's verdicts; the queue calls [`deliver`].

pub mod client;
pub mod deliver;
pub mod graph;
pub mod holding;
pub mod http;
pub mod oauth;
pub mod outcome;
pub mod pacing;
pub mod pool;
pub mod relays;
pub mod throttle;
pub mod transaction;

pub use client::{Caps, Upstream, UpstreamError, UpstreamSettings};
pub use deliver::{Content, deliver};
pub use outcome::{Failed, Failure, Outcome};
pub use pool::Pool;
pub use relays::{Endpoint, Relays, SetupError};
pub use transaction::{Sender, Transaction};
