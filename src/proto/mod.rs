//! Pure SMTP protocol code: no sockets, no tokio, no clocks.
//!
//! Everything here works on byte slices so it can be table-tested and fuzzed:
//! line framing ([`line`](mod@line)), command parsing ([`command`], on top of smtp-proto),
//! envelope addresses as they go on the wire ([`address`]), the header section of a
//! message ([`header`]) and its address lists ([`mailbox_list`]),
//! replies ([`reply`]), the DATA receiver ([`data`]), SASL decoding ([`sasl`]),
//! dot-stuffing for the upstream side ([`stuff`]), the `Received:` header ([`received`])
//! and client text made safe for logs and terminals ([`printable`]).

pub mod address;
pub mod command;
pub mod data;
pub mod header;
pub mod line;
pub mod mailbox_list;
pub mod printable;
pub mod received;
pub mod reply;
pub mod sasl;
pub mod stuff;
