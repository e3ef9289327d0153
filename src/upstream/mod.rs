//! The smarthost side: an SMTP client ([`client`]) and a pool of reusable
//! authenticated connections ([`pool`]).

pub mod client;
pub mod pool;

pub use client::{Caps, Upstream, UpstreamError, UpstreamSettings};
pub use pool::Pool;
