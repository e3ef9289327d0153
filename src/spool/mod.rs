//! Queue mode: the durable spool ([`store`]), the delivery workers ([`queue`]) and
//! delivery status notifications ([`bounce`]).

pub mod bounce;
pub mod queue;
pub mod remover;
pub mod schedule;
pub mod store;
