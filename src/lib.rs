//! Postern: an authenticating SMTP submission proxy.
pub mod proto;
pub mod secret;
