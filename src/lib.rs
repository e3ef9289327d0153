//! Postern: an authenticating SMTP submission proxy.
pub mod auth;
pub mod config;
pub mod context;
pub mod control;
pub mod demo;
pub mod policy;
pub mod proto;
pub mod secret;
pub mod server;
pub mod session;
pub mod sink;
pub mod spool;
pub mod tls;
pub mod upstream;
