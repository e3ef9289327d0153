//! Postern: an authenticating SMTP submission proxy.
pub mod auth;
pub mod config;
pub mod policy;
pub mod proto;
pub mod secret;
pub mod tls;
