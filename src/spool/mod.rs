//! Queue mode: the durable spool ([`store`]) and its envelope file format
//! ([`envelope`]), the scheduler ([`queue`]), one delivery attempt (`attempt`,
//! through [`crate::upstream::deliver`]) and its pure bookkeeping (`bookkeeping`),
//! and delivery status notifications ([`bounce`]).

mod attempt;
mod bookkeeping;
pub mod bounce;
pub mod envelope;
pub mod queue;
pub mod remover;
pub mod schedule;
pub mod store;
