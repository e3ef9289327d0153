//! Policy decisions as plain functions and state, testable without a connection.

pub mod senders;
