//! The smarthost side: an SMTP client ([`client`]) and a pool of reusable
//! authenticated connections ([`pool`]), one per smarthost, grouped into routes
//! with failover ([`relays`]).

pub mod client;
pub mod pool;
pub mod relays;

pub use client::{Caps, Upstream, UpstreamError, UpstreamSettings};
pub use pool::Pool;
pub use relays::Relays;
