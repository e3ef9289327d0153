//! One mail transaction at a smarthost: MAIL, RCPT, DATA and the end of data, over
//! a pooled connection, for both delivery modes.
//!
//! Opening picks the sender's route and fails over to the next smarthost while
//! nothing has been handed over; a pooled connection that turns out dead is
//! replaced once; the MAIL line is built here only, from what the smarthost
//! offers. Every address reaching a command is the canonical wire form checked by
//! [`crate::proto::address`]. A transaction dropped before [`Transaction::finish`]
//! closes its connection without the end-of-data marker, so the smarthost discards
//! whatever it got.

use super::client::{Caps, Upstream, UpstreamError};
use super::outcome::Failed;
use super::pacing;
use super::relays::Relays;
use crate::proto::printable::Printable;
use crate::proto::reply::Reply;
use crate::proto::stuff::DotStuffer;
use std::sync::Arc;
use tracing::{info, warn};

/// Bytes gathered before a write to the smarthost.
const CHUNK: usize = 64 * 1024;

/// What MAIL says about the message.
#[derive(Debug, Clone, Default)]
pub struct Sender {
    /// The reverse path in its canonical wire form; empty for the null sender.
    pub address: String,
    /// The size declared or known; 0 when unknown.
    pub size: u64,
    /// The body is 8-bit MIME.
    pub eight_bit: bool,
    /// The message needs SMTPUTF8.
    pub smtputf8: bool,
}

impl Sender {
    /// The MAIL command for a smarthost offering `caps`.
    pub fn mail_line(&self, caps: &Caps) -> String {
        let mut line = format!("MAIL FROM:<{}>", self.address);
        if self.size > 0 && caps.size.is_some() {
            line.push_str(&format!(" SIZE={}", self.size));
        }
        if self.eight_bit && caps.eight_bit_mime {
            line.push_str(" BODY=8BITMIME");
        }
        if self.smtputf8 {
            line.push_str(" SMTPUTF8");
        }
        line
    }
}

/// An open transaction: MAIL was accepted.
pub struct Transaction {
    relays: Arc<Relays>,
    /// `None` once the connection is lost or handed back.
    conn: Option<Upstream>,
    stuffer: DotStuffer,
    wire: Vec<u8>,
}

impl Transaction {
    /// Opens a transaction on the sender's route: each smarthost in turn until one
    /// does not fail transiently (or lack SMTPUTF8). The last failure otherwise.
    pub async fn open(relays: &Arc<Relays>, sender: &Sender) -> Result<Transaction, Failed> {
        let route = relays.route(&sender.address).to_vec();
        let mut last = Failed::Lost(UpstreamError::Closed);
        for (n, &pool) in route.iter().enumerate() {
            // Pacing is not failure: a paced smarthost is waited for briefly, never
            // skipped for the next one.
            if let Err(p) = pacing::turn_at(relays, pool, pacing::PASSTHROUGH_WAIT).await {
                let wait_s = p.until.saturating_duration_since(std::time::Instant::now());
                warn!(smarthost = %relays.pool(pool).name(), next_slot_s = wait_s.as_secs(), "smarthost sending rate reached (max_messages_per_minute); answering 451");
                return Err(Failed::Refused(pacing::paced_reply()));
            }
            match Transaction::open_on(relays, pool, sender).await {
                Ok(t) => return Ok(t),
                Err(f) if n + 1 < route.len() && !f.is_permanent() => {
                    warn!(smarthost = %relays.pool(pool).name(), reason = %Printable(&f.reason()), "smarthost did not open the transaction; trying the next one");
                    last = f;
                }
                Err(Failed::NoSmtpUtf8) if n + 1 < route.len() => {
                    warn!(smarthost = %relays.pool(pool).name(), "smarthost does not offer SMTPUTF8; trying the next one");
                    last = Failed::NoSmtpUtf8;
                }
                Err(f) => return Err(f),
            }
        }
        Err(last)
    }

    /// Opens a transaction at smarthost `pool` only, retrying once on a fresh
    /// connection when a pooled one turns out dead.
    pub async fn open_on(
        relays: &Arc<Relays>,
        pool: usize,
        sender: &Sender,
    ) -> Result<Transaction, Failed> {
        let mut taken = relays.take(pool).await.map_err(Failed::Unavailable)?;
        loop {
            let conn = &mut taken.conn;
            if sender.smtputf8 && !conn.caps.smtputf8 {
                relays.put(taken.conn);
                return Err(Failed::NoSmtpUtf8);
            }
            let result = conn.command(&sender.mail_line(&conn.caps), "MAIL").await;
            let dead = result.as_ref().map_or(true, |r| r.code == 421);
            if dead && taken.reused {
                info!("pooled smarthost connection was closed; opening a new one");
                taken.conn = relays.connect(pool).await.map_err(Failed::Unavailable)?;
                taken.reused = false;
                continue;
            }
            let mut txn = Transaction {
                relays: relays.clone(),
                conn: Some(taken.conn),
                stuffer: DotStuffer::default(),
                wire: Vec::new(),
            };
            return match txn.verdict(result, "MAIL") {
                Ok(()) => Ok(txn),
                Err(f) => {
                    txn.reset().await;
                    Err(f)
                }
            };
        }
    }

    /// Reads a command's result: `Ok` for a positive reply; a refusal keeps the
    /// connection, a 421 or an error loses it.
    fn verdict(
        &mut self,
        result: Result<Reply, UpstreamError>,
        phase: &'static str,
    ) -> Result<(), Failed> {
        match result {
            Ok(r) if r.is_positive() => Ok(()),
            Ok(reply) if reply.code == 421 => {
                self.conn = None;
                Err(Failed::Lost(UpstreamError::Refused { phase, reply }))
            }
            Ok(r) => Err(Failed::Refused(r)),
            Err(e) => {
                self.conn = None;
                Err(Failed::Lost(e))
            }
        }
    }

    fn conn(&mut self) -> Result<&mut Upstream, Failed> {
        self.conn
            .as_mut()
            .ok_or(Failed::Lost(UpstreamError::Closed))
    }

    /// Whether the connection is still there (nothing was lost).
    pub fn is_open(&self) -> bool {
        self.conn.is_some()
    }

    /// `host:port` of the smarthost, for logs.
    pub fn smarthost(&self) -> String {
        self.conn
            .as_ref()
            .map(|c| self.relays.pool(c.pool).name())
            .unwrap_or_default()
    }

    /// RCPT for one recipient.
    pub async fn rcpt(&mut self, address: &str) -> Result<(), Failed> {
        let line = format!("RCPT TO:<{address}>");
        let result = self.conn()?.command(&line, "RCPT").await;
        self.verdict(result, "RCPT")
    }

    /// DATA: `Ok` once the smarthost answered 354 and takes content.
    pub async fn data(&mut self) -> Result<(), Failed> {
        let result = self.conn()?.command("DATA", "DATA").await;
        match result {
            Ok(r) if r.code == 354 => Ok(()),
            Ok(reply) if reply.is_positive() => {
                // Not the 354 DATA needs: the two sides no longer agree.
                self.conn = None;
                Err(Failed::Lost(UpstreamError::Refused {
                    phase: "DATA",
                    reply,
                }))
            }
            other => self.verdict(other, "DATA"),
        }
    }

    /// Writes message content (not yet dot-stuffed), in chunks of [`CHUNK`].
    pub async fn write(&mut self, content: &[u8]) -> Result<(), Failed> {
        self.stuffer.stuff(content, &mut self.wire);
        if self.wire.len() >= CHUNK {
            self.flush_wire().await?;
        }
        Ok(())
    }

    async fn flush_wire(&mut self) -> Result<(), Failed> {
        let wire = std::mem::take(&mut self.wire);
        let written = self.conn()?.write_data(&wire).await;
        self.wire = wire;
        self.wire.clear();
        written.map_err(|e| {
            self.conn = None;
            Failed::Lost(e)
        })
    }

    /// Ends the data and returns the smarthost's verdict on the message, positive
    /// or not; the connection goes back to its pool unless it was lost.
    pub async fn finish(mut self) -> Result<Reply, Failed> {
        self.stuffer.finish(&mut self.wire);
        self.flush_wire().await?;
        let result = self.conn()?.finish_data().await;
        let class = result
            .as_ref()
            .map_or("error", |r| crate::metrics::code_class(r.code));
        metrics::counter!("postern_upstream_replies_total", "code" => class).increment(1);
        match result {
            Ok(reply) if reply.code != 421 => {
                let conn = self.conn.take().expect("the connection was there");
                self.relays.put(conn);
                Ok(reply)
            }
            // Dropping `self` closes the connection.
            Ok(reply) => Err(Failed::Lost(UpstreamError::Refused {
                phase: "end of data",
                reply,
            })),
            Err(e) => Err(Failed::Lost(e)),
        }
    }

    /// Abandons the transaction: RSET, and the connection goes back to its pool.
    pub async fn reset(mut self) {
        if let Some(conn) = self.conn.take() {
            self.relays.reset_and_put(conn).await;
        }
    }
}
