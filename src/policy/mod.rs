//! Policy decisions as plain functions and state, testable without a connection.

pub mod auth_failures;
pub mod brake;
pub mod client_key;
pub mod header_from;
pub mod rates;
pub mod senders;

pub use client_key::client_key;
