//! Queue mode: the durable spool ([`store`]) and its envelope file format
//! ([`envelope`]), the delivery workers ([`queue`]) and delivery status
//! notifications ([`bounce`]).

pub mod bounce;
pub mod envelope;
pub mod queue;
pub mod remover;
pub mod schedule;
pub mod store;
