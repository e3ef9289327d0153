//! Pure SMTP protocol code: no sockets, no tokio, no clocks.
//!
//! Everything here works on byte slices so it can be table-tested and fuzzed:
//! line framing ([`line`](mod@line)), command parsing ([`command`], on top of smtp-proto),
//! replies ([`reply`]), the DATA receiver ([`data`]), SASL decoding ([`sasl`]),
//! dot-stuffing for the upstream side ([`stuff`]), the `Received:` header ([`received`])
//! and client text made safe for logs and terminals ([`printable`]).

pub mod command;
pub mod data;
pub mod line;
pub mod printable;
pub mod received;
pub mod reply;
pub mod sasl;
pub mod stuff;
