//! `timeouts`: every network wait, each with a default and none of them 0 (only
//! `shutdown_grace` may be 0).

use super::HumanDuration;
use super::ctx::Ctx;
use super::units::or_default;
use serde::Deserialize;
use std::time::Duration;

/// Network timeouts; defaults follow RFC 5321 section 4.5.3.2.
#[derive(Debug, Clone)]
pub struct Timeouts {
    /// Waiting for the next command line from a client.
    pub command: Duration,
    /// Waiting for the next chunk of DATA from a client.
    pub data_block: Duration,
    /// The whole DATA phase of one message, however the client trickles it.
    pub data_total: Duration,
    pub tls_handshake: Duration,
    pub upstream_connect: Duration,
    /// Waiting for the smarthost's reply to a command (greeting, EHLO, MAIL, RCPT, DATA).
    pub upstream_command: Duration,
    /// Waiting for the smarthost's reply after the end of data.
    pub upstream_data_done: Duration,
    /// How long SIGTERM waits for transactions in progress.
    pub shutdown_grace: Duration,
    /// Sending replies to a client that does not read them.
    pub write: Duration,
    /// From connection to a successful AUTH.
    pub unauthenticated: Duration,
    /// The whole life of a session, from connection to close.
    pub session: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            command: Duration::from_secs(300),
            data_block: Duration::from_secs(180),
            data_total: Duration::from_secs(1800),
            tls_handshake: Duration::from_secs(30),
            upstream_connect: Duration::from_secs(30),
            upstream_command: Duration::from_secs(300),
            upstream_data_done: Duration::from_secs(600),
            shutdown_grace: Duration::from_secs(30),
            write: Duration::from_secs(30),
            unauthenticated: Duration::from_secs(300),
            session: Duration::from_secs(3600),
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawTimeouts {
    command: Option<HumanDuration>,
    data_block: Option<HumanDuration>,
    data_total: Option<HumanDuration>,
    tls_handshake: Option<HumanDuration>,
    upstream_connect: Option<HumanDuration>,
    upstream_command: Option<HumanDuration>,
    upstream_data_done: Option<HumanDuration>,
    shutdown_grace: Option<HumanDuration>,
    write: Option<HumanDuration>,
    unauthenticated: Option<HumanDuration>,
    session: Option<HumanDuration>,
}

/// `timeouts`, each key falling back to [`Timeouts::default`].
pub(super) fn timeouts(cx: &mut Ctx) -> Timeouts {
    let t: RawTimeouts = cx.section("timeouts").unwrap_or_default();
    let d = Timeouts::default();
    let timeouts = Timeouts {
        command: or_default(t.command, d.command),
        data_block: or_default(t.data_block, d.data_block),
        data_total: or_default(t.data_total, d.data_total),
        tls_handshake: or_default(t.tls_handshake, d.tls_handshake),
        upstream_connect: or_default(t.upstream_connect, d.upstream_connect),
        upstream_command: or_default(t.upstream_command, d.upstream_command),
        upstream_data_done: or_default(t.upstream_data_done, d.upstream_data_done),
        shutdown_grace: or_default(t.shutdown_grace, d.shutdown_grace),
        write: or_default(t.write, d.write),
        unauthenticated: or_default(t.unauthenticated, d.unauthenticated),
        session: or_default(t.session, d.session),
    };
    for (k, v) in [
        ("command", timeouts.command),
        ("data_block", timeouts.data_block),
        ("data_total", timeouts.data_total),
        ("tls_handshake", timeouts.tls_handshake),
        ("upstream_connect", timeouts.upstream_connect),
        ("upstream_command", timeouts.upstream_command),
        ("upstream_data_done", timeouts.upstream_data_done),
        ("write", timeouts.write),
        ("unauthenticated", timeouts.unauthenticated),
        ("session", timeouts.session),
    ] {
        if v.is_zero() {
            cx.add(&format!("timeouts.{k}"), "must be greater than 0");
        }
    }
    timeouts
}
