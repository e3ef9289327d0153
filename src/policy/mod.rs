//! Policy decisions as plain functions and state, testable without a connection.

pub mod auth_failures;
pub mod brake;
pub mod header_from;
pub mod rates;
pub mod senders;
