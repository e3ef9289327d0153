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
use super::graph::{self, Graph, Unsendable};
use super::holding::{self, Held};
use super::outcome::Failed;
use super::pacing;
use super::relays::{Endpoint, Relays};
use super::throttle;
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
    /// The address whose route the message takes when it is not `address`: the
    /// header `From:` of a null-sender message (a read receipt, an auto-reply).
    pub route_by: Option<String>,
}

impl Sender {
    /// The address that picks the route.
    pub fn route_key(&self) -> &str {
        self.route_by.as_deref().unwrap_or(&self.address)
    }

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
    /// The smarthost entry it is open at.
    index: usize,
    kind: Kind,
    /// The client's sender, route address and recipients: words a reply may echo,
    /// which never make it a throttle (`outcome::is_throttle`).
    chosen: Vec<String>,
}

enum Kind {
    Smtp(Smtp),
    /// Graph takes the whole message in one request: gathered here until the end.
    Graph(Buffered),
}

struct Smtp {
    /// `None` once the connection is lost or handed back.
    conn: Option<Upstream>,
    /// DATA's verdict when DATA went out with the last RCPT (pipelined):
    /// `Some(Ok)` means the smarthost now takes content.
    data_ready: Option<Result<(), Failed>>,
    /// The smarthost answered 354 (pipelined or not): whatever follows is content,
    /// so the connection can never be RSET and pooled.
    in_content: bool,
    stuffer: DotStuffer,
    wire: Vec<u8>,
}

#[derive(Default)]
struct Buffered {
    rcpts: Vec<String>,
    message: Vec<u8>,
    /// The message outgrew what Graph takes; the rest is not kept.
    overflow: bool,
    /// Its share of the memory budget for held messages.
    held: Held,
    /// The budget could not spare room for it.
    no_room: bool,
}

impl Transaction {
    /// Opens a transaction on the sender's route: each smarthost in turn until one
    /// does not fail transiently (or lack SMTPUTF8). The last failure otherwise.
    /// Pacing is not asked here: a message takes its turn when it is handed over
    /// ([`Transaction::turn`]), so a MAIL the client resets uses no slot.
    pub async fn open(relays: &Arc<Relays>, sender: &Sender) -> Result<Transaction, Failed> {
        let route = relays.route(sender.route_key()).to_vec();
        let mut last = Failed::Lost(UpstreamError::Closed);
        for (n, &index) in route.iter().enumerate() {
            match Transaction::open_on(relays, index, sender).await {
                Ok(t) => return Ok(t),
                Err(f) if n + 1 < route.len() && !f.is_permanent() => {
                    warn!(smarthost = %relays.name(index), reason = %Printable(&f.reason()), "smarthost did not open the transaction; trying the next one");
                    last = f;
                }
                Err(Failed::NoSmtpUtf8) if n + 1 < route.len() => {
                    warn!(smarthost = %relays.name(index), "smarthost does not offer SMTPUTF8; trying the next one");
                    last = Failed::NoSmtpUtf8;
                }
                Err(f) => return Err(f),
            }
        }
        Err(last)
    }

    /// The pacing turn at this transaction's smarthost for a message about to be
    /// handed over (passthrough, before DATA goes upstream): waited for up to
    /// `max_wait`, else the transient refusal to pass on.
    pub async fn turn(&mut self, max_wait: std::time::Duration) -> Result<(), Failed> {
        // `&mut self`: a shared reference to the connection (not `Sync`) would
        // make the session's future not `Send`.
        let (relays, index) = (&self.relays, self.index);
        match pacing::turn_at(relays, index, max_wait).await {
            Ok(()) => Ok(()),
            Err(p) => {
                let wait_s = p.until.saturating_duration_since(std::time::Instant::now());
                warn!(smarthost = %relays.name(index), next_slot_s = wait_s.as_secs(), "smarthost sending rate reached (max_messages_per_minute); answering 451");
                Err(Failed::Refused(pacing::paced_reply()))
            }
        }
    }

    /// Opens a transaction at smarthost entry `index` only.
    pub async fn open_on(
        relays: &Arc<Relays>,
        index: usize,
        sender: &Sender,
    ) -> Result<Transaction, Failed> {
        if let Some(until) = relays.held_until(index) {
            // Not contacted: it asked for a pause that is not over.
            let left = until.saturating_duration_since(tokio::time::Instant::now().into_std());
            return Err(Failed::Later(throttle::held_reply(left), left));
        }
        let chosen: Vec<String> = std::iter::once(sender.address.clone())
            .chain(sender.route_by.clone())
            .collect();
        let kind = match relays.endpoint(index) {
            Endpoint::Smtp(_) => {
                let opened = Smtp::open(relays, index, sender).await;
                if let Err(f) = &opened {
                    relays.note_failure(index, f, &words(&chosen));
                }
                Kind::Smtp(opened?)
            }
            Endpoint::Graph(_) if sender.size > graph::MAX_MESSAGE => {
                return Err(Failed::Refused(Unsendable::TooLarge.reply()));
            }
            Endpoint::Graph(_) => Kind::Graph(Buffered::default()),
        };
        Ok(Transaction {
            relays: relays.clone(),
            index,
            kind,
            chosen,
        })
    }

    /// Whether the smarthost already took DATA (sent with the last RCPT): the
    /// content must follow now, not wait for anything.
    pub fn took_data(&self) -> bool {
        matches!(&self.kind, Kind::Smtp(s) if s.took_data())
    }

    /// Whether the connection is still there (nothing was lost).
    pub fn is_open(&self) -> bool {
        match &self.kind {
            Kind::Smtp(s) => s.conn.is_some(),
            Kind::Graph(_) => true,
        }
    }

    /// The smarthost entry's name, for logs.
    pub fn smarthost(&self) -> String {
        self.relays.name(self.index)
    }

    /// Holds the smarthost when `result` is a throttle.
    fn observed<T>(&self, result: Result<T, Failed>) -> Result<T, Failed> {
        if let Err(f) = &result {
            self.relays
                .note_failure(self.index, f, &words(&self.chosen));
        }
        result
    }

    /// RCPT for one recipient. With `then_data` (the client pipelined DATA right
    /// after it), DATA goes out in the same write when the smarthost pipelines and
    /// paces nothing, and its verdict waits for [`Transaction::data`].
    pub async fn rcpt(&mut self, address: &str, then_data: bool) -> Result<(), Failed> {
        self.chosen.push(address.to_string());
        let paced = self.relays.pacer(self.index).is_some();
        match &mut self.kind {
            Kind::Smtp(s) => {
                let verdict = s.rcpt(address, then_data && !paced).await;
                // DATA's refusal, back with this RCPT, counts now (a throttle holds
                // the smarthost) even if the client's DATA never asks for it.
                if let Some(Err(f)) = &s.data_ready {
                    self.relays
                        .note_failure(self.index, f, &words(&self.chosen));
                }
                self.observed(verdict)
            }
            Kind::Graph(b) => {
                b.rcpts.push(address.to_string());
                Ok(())
            }
        }
    }

    /// DATA: `Ok` once the smarthost takes content.
    pub async fn data(&mut self) -> Result<(), Failed> {
        let (result, noted) = match &mut self.kind {
            // A pipelined DATA's refusal was noted when it came back.
            Kind::Smtp(s) => {
                let noted = s.data_ready.is_some();
                (s.data().await, noted)
            }
            Kind::Graph(_) => (Ok(()), false),
        };
        if noted { result } else { self.observed(result) }
    }

    /// Writes message content (not yet dot-stuffed).
    pub async fn write(&mut self, content: &[u8]) -> Result<(), Failed> {
        match &mut self.kind {
            Kind::Smtp(s) => s.write(content).await,
            Kind::Graph(b) => {
                b.push(content);
                Ok(())
            }
        }
    }

    /// Ends the data and returns the smarthost's verdict on the message, positive
    /// or not; `Err` when the connection was lost and the outcome is unknown.
    pub async fn finish(self) -> Result<Reply, Failed> {
        let Transaction {
            relays,
            index,
            kind,
            chosen,
        } = self;
        let result = match kind {
            Kind::Smtp(s) => s.finish(&relays).await,
            Kind::Graph(b) => {
                let Endpoint::Graph(g) = relays.endpoint(index) else {
                    unreachable!("a Graph transaction is open at a Graph entry");
                };
                b.finish(g).await
            }
        };
        match &result {
            Ok(r) if r.is_positive() => relays.note_success(index),
            Ok(r) => relays.note_failure(index, &Failed::Refused(r.clone()), &words(&chosen)),
            Err(f) => relays.note_failure(index, f, &words(&chosen)),
        }
        result
    }

    /// Abandons the transaction: RSET, and the connection goes back to its pool
    /// (closed instead if it already took DATA: RSET would be content there).
    pub async fn reset(self) {
        if let Kind::Smtp(mut s) = self.kind
            && !s.took_data()
            && let Some(conn) = s.conn.take()
        {
            self.relays.reset_and_put(conn).await;
        }
    }
}

impl Buffered {
    fn push(&mut self, content: &[u8]) {
        if self.overflow || self.no_room {
            return;
        }
        if (self.message.len() + content.len()) as u64 > graph::MAX_MESSAGE + graph::ADDED_ROOM {
            self.overflow = true;
        } else if !self.held.grow(content.len()) {
            self.no_room = true;
        } else {
            self.message.extend_from_slice(content);
            return;
        }
        self.message = Vec::new();
        self.held.release();
    }

    async fn finish(self, graph: &Graph) -> Result<Reply, Failed> {
        if self.no_room {
            warn!(graph = %graph.name, "no memory left for held messages; message refused for now");
            return Ok(holding::no_room());
        }
        let prepared = if self.overflow {
            Err(Unsendable::TooLarge)
        } else {
            graph::prepare(&self.message, &self.rcpts)
        };
        let prepared = match prepared {
            Ok(p) => p,
            Err(why) => {
                warn!(graph = %graph.name, reason = %Printable(&why.reply()), "message cannot go to Graph");
                return Ok(why.reply());
            }
        };
        let result = match graph.send(&prepared).await {
            Ok(reply) | Err(Failed::Refused(reply)) => Ok(reply),
            Err(f) => Err(f),
        };
        let class = result
            .as_ref()
            .map_or("error", |r| crate::metrics::code_class(r.code));
        metrics::counter!("postern_upstream_replies_total", "code" => class).increment(1);
        result
    }
}

impl Smtp {
    /// MAIL at pool `index`, retrying once on a fresh connection when a pooled one
    /// turns out dead.
    async fn open(relays: &Arc<Relays>, index: usize, sender: &Sender) -> Result<Smtp, Failed> {
        let mut taken = relays.take(index).await.map_err(Failed::Unavailable)?;
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
                taken.conn = relays.connect(index).await.map_err(Failed::Unavailable)?;
                taken.reused = false;
                continue;
            }
            let mut smtp = Smtp {
                conn: Some(taken.conn),
                data_ready: None,
                in_content: false,
                stuffer: DotStuffer::default(),
                wire: Vec::new(),
            };
            return match smtp.verdict(result, "MAIL") {
                Ok(()) => Ok(smtp),
                Err(f) => {
                    if let Some(conn) = smtp.conn.take() {
                        relays.reset_and_put(conn).await;
                    }
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

    /// RCPT, and DATA with it when `then_data` and the smarthost pipelines.
    async fn rcpt(&mut self, address: &str, then_data: bool) -> Result<(), Failed> {
        let line = format!("RCPT TO:<{address}>");
        // Already taking content: a RCPT now would be part of the message.
        if self.took_data() {
            self.conn = None;
            return Err(Failed::Lost(UpstreamError::Closed));
        }
        // A pipelined DATA refused earlier: this RCPT starts over.
        self.data_ready = None;
        let conn = self.conn()?;
        if !(then_data && conn.caps.pipelining) {
            let result = conn.command(&line, "RCPT").await;
            return self.verdict(result, "RCPT");
        }
        let (rcpt, data) = conn.command_then_data(&line, "RCPT").await;
        let verdict = self.verdict(rcpt, "RCPT");
        if let Some(data) = data
            && self.conn.is_some()
        {
            self.data_ready = Some(self.data_verdict(data));
        }
        verdict
    }

    async fn data(&mut self) -> Result<(), Failed> {
        let verdict = match self.data_ready.take() {
            Some(ready) => ready,
            None => {
                let result = self.conn()?.command("DATA", "DATA").await;
                self.data_verdict(result)
            }
        };
        self.in_content = verdict.is_ok();
        verdict
    }

    /// Whether the smarthost took DATA (answered 354): content must follow.
    fn took_data(&self) -> bool {
        self.in_content || matches!(self.data_ready, Some(Ok(())))
    }

    /// DATA's reply: 354 or a refusal; any other positive reply means the two
    /// sides no longer agree.
    fn data_verdict(&mut self, result: Result<Reply, UpstreamError>) -> Result<(), Failed> {
        match result {
            Ok(r) if r.code == 354 => Ok(()),
            Ok(reply) if reply.is_positive() => {
                self.conn = None;
                Err(Failed::Lost(UpstreamError::Refused {
                    phase: "DATA",
                    reply,
                }))
            }
            other => self.verdict(other, "DATA"),
        }
    }

    /// Dot-stuffs content and writes it in chunks of [`CHUNK`].
    async fn write(&mut self, content: &[u8]) -> Result<(), Failed> {
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

    /// The end of data, and the connection back to its pool unless it was lost.
    async fn finish(mut self, relays: &Relays) -> Result<Reply, Failed> {
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
                relays.put(conn);
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
}

/// `chosen` as the string slices `Relays::note_failure` takes.
fn words(chosen: &[String]) -> Vec<&str> {
    chosen.iter().map(String::as_str).collect()
}
