//! DATA: stream the message through the receiver to the smarthost, then pass its
//! verdict back.
//!
//! The content is checked line by line as it arrives and forwarded in chunks. If the
//! message turns out bad (bare CR/LF, NUL, over-long line, too large), the smarthost
//! connection is dropped without the end-of-data marker, so the smarthost discards
//! the partial message: nothing that Postern refused is ever delivered.

use super::mail::{relay_reply, upstream_lost};
use super::{Flow, Session};
use crate::policy::header_from::{
    HeaderFromError, MAX_HEADER_SECTION, check_header_senders, header_end,
};
use crate::policy::senders::SenderRule;
use crate::proto::data::{DataError, DataReceiver, Feed};
use crate::proto::received::{Trace, received_header};
use crate::proto::reply::{Esc, Reply};
use crate::proto::stuff::DotStuffer;
use crate::session::io::{ReadChunk, SmtpStream};
use std::time::SystemTime;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;
use tracing::{info, warn};

/// Content on its way to the smarthost: held back until the header section has
/// passed the From/Sender check, then dot-stuffed into `wire`.
struct Outbound {
    /// The user's sender rules while the header check is pending; `None` once done
    /// (or for a user with `allow_any_header_from`).
    rules: Option<Vec<SenderRule>>,
    head: Vec<u8>,
    stuffer: DotStuffer,
    wire: Vec<u8>,
    refused: Option<HeaderFromError>,
}

impl Outbound {
    fn new(received: &str, rules: Option<Vec<SenderRule>>) -> Outbound {
        let mut out = Outbound {
            rules,
            head: Vec::new(),
            stuffer: DotStuffer::default(),
            wire: Vec::with_capacity(UPSTREAM_CHUNK + 1024),
            refused: None,
        };
        out.stuffer.stuff(received.as_bytes(), &mut out.wire);
        out
    }

    /// Takes the next content lines; `done` after the last.
    fn push(&mut self, content: &[u8], done: bool) {
        if self.refused.is_some() {
            return;
        }
        if let Some(rules) = &self.rules {
            self.head.extend_from_slice(content);
            let end = header_end(&self.head).or(done.then_some(self.head.len()));
            let Some(end) = end else {
                if self.head.len() > MAX_HEADER_SECTION {
                    self.refused = Some(HeaderFromError::TooLarge);
                    self.head = Vec::new();
                }
                return;
            };
            if let Err(e) = check_header_senders(&self.head[..end], rules) {
                self.refused = Some(e);
                self.head = Vec::new();
                return;
            }
            self.rules = None;
            let head = std::mem::take(&mut self.head);
            self.stuffer.stuff(&head, &mut self.wire);
        } else {
            self.stuffer.stuff(content, &mut self.wire);
        }
        if done {
            self.stuffer.finish(&mut self.wire);
        }
    }
}

/// Bytes gathered before a write to the smarthost.
const UPSTREAM_CHUNK: usize = 64 * 1024;

impl Session {
    pub(super) async fn data<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        io: &mut SmtpStream<S>,
    ) -> Flow {
        if self.user.is_none() {
            return self.refuse(io, Reply::new(530, Esc(5, 7, 0), "Authentication required"));
        }
        let Some(txn) = self.txn.as_mut() else {
            return self.refuse(io, Reply::new(503, Esc(5, 5, 1), "Need MAIL command first"));
        };
        if txn.broken {
            return self.refuse(io, upstream_lost());
        }
        if txn.rcpts.is_empty() {
            return self.refuse(io, Reply::new(554, Esc(5, 5, 1), "No valid recipients"));
        }
        let mut conn = txn
            .upstream
            .take()
            .expect("passthrough transaction has a connection");
        match conn.command("DATA", "DATA").await {
            Ok(r) if r.code == 354 => {}
            Ok(r) => {
                info!(reply = %r, "smarthost refused DATA");
                self.reset_transaction();
                if r.code == 421 {
                    return self.refuse(io, upstream_lost());
                }
                self.ctx.relay.reset_and_put(conn).await;
                return self.refuse(io, relay_reply(r));
            }
            Err(e) => {
                warn!(error = %e, "smarthost failed at DATA");
                self.reset_transaction();
                return self.refuse(io, upstream_lost());
            }
        }
        io.reply(&Reply::plain(354, "End data with <CR><LF>.<CR><LF>"));

        self.messages += 1;
        let queue_id = format!("{}.{}", self.id, self.messages);
        let header = self.trace_header(&queue_id);
        let timeouts = self.ctx.config.timeouts.clone();
        let mut rx = DataReceiver::new(self.ctx.config.limits.max_message_size as usize);
        let rules = self
            .user
            .as_ref()
            .filter(|u| !u.allow_any_header_from)
            .map(|u| u.senders.clone());
        let mut out = Outbound::new(&header, rules);
        let mut content = Vec::with_capacity(UPSTREAM_CHUNK);
        let mut upstream_ok = true;
        let total_deadline = Instant::now() + timeouts.data_total;

        loop {
            let (consumed, done) = match rx.feed(io.buffered(), &mut content) {
                Feed::Done { consumed } => (consumed, true),
                Feed::NeedMore => (io.buffered().len(), false),
            };
            io.consume(consumed);
            if rx.error().is_none() && upstream_ok {
                out.push(&content, done);
                if out.wire.len() >= UPSTREAM_CHUNK || (done && out.refused.is_none()) {
                    if let Err(e) = conn.write_data(&out.wire).await {
                        warn!(error = %e, "smarthost failed during DATA");
                        upstream_ok = false;
                    }
                    out.wire.clear();
                }
            }
            content.clear();
            if done {
                break;
            }
            let deadline = (Instant::now() + timeouts.data_block).min(total_deadline);
            match io.fill(deadline).await {
                ReadChunk::Data => {}
                ReadChunk::TimedOut => {
                    warn!(
                        received = rx.size(),
                        "timeout during DATA; message discarded"
                    );
                    self.txn = None;
                    io.reply(&Reply::new(
                        421,
                        Esc(4, 4, 2),
                        "Timeout during DATA, closing connection",
                    ));
                    return Flow::Close;
                }
                ReadChunk::Closed => {
                    warn!(
                        received = rx.size(),
                        "client closed the connection during DATA; message discarded"
                    );
                    self.txn = None;
                    return Flow::Close;
                }
            }
        }

        let txn = self.txn.take().expect("transaction is open");
        let elapsed_ms = txn.started.elapsed().as_millis() as u64;
        if let Some(e) = rx.error() {
            // Dropping `conn` closes the smarthost connection without the
            // end-of-data marker: the smarthost discards what it got.
            drop(conn);
            warn!(sender = %txn.from, rcpts = txn.rcpts.len(), error = %e, "message refused");
            let reply = match e {
                DataError::TooBig => Reply::new(
                    552,
                    Esc(5, 3, 4),
                    "Message size exceeds fixed maximum message size",
                ),
                e => Reply::new(554, Esc(5, 6, 0), format!("Message refused: {e}")),
            };
            return self.refuse(io, reply);
        }
        if let Some(e) = out.refused {
            drop(conn);
            warn!(sender = %txn.from, rcpts = txn.rcpts.len(), error = %e, "message refused: header sender not allowed");
            let reply = match e {
                HeaderFromError::TooLarge => {
                    Reply::new(554, Esc(5, 6, 0), format!("Message refused: {e}"))
                }
                e => Reply::new(550, Esc(5, 7, 1), format!("Message refused: {e}")),
            };
            return self.refuse(io, reply);
        }
        if !upstream_ok {
            return self.refuse(io, upstream_lost());
        }
        match conn.finish_data().await {
            Ok(reply) => {
                let positive = reply.is_positive();
                info!(
                    queue_id = %queue_id,
                    sender = %txn.from,
                    rcpts = txn.rcpts.len(),
                    size = rx.size(),
                    upstream = %reply,
                    duration_ms = elapsed_ms,
                    "{}", if positive { "message relayed" } else { "message refused by the smarthost" }
                );
                if reply.code == 421 {
                    return self.refuse(io, upstream_lost());
                }
                self.ctx.relay.put(conn);
                if positive {
                    // Counted now that it is accepted; any other ending gives it back.
                    txn.quota.commit(std::time::Instant::now());
                    let text = format!("Message accepted for delivery: {}", reply.first_line());
                    self.ok(io, Reply::new(250, Esc(2, 0, 0), text))
                } else {
                    self.refuse(io, relay_reply(reply))
                }
            }
            Err(e) => {
                // The smarthost may or may not have taken the message; a retry by the
                // client is the lesser evil (a possible duplicate, never a loss).
                warn!(queue_id = %queue_id, sender = %txn.from, error = %e, "no reply from the smarthost after DATA");
                self.refuse(io, upstream_lost())
            }
        }
    }

    /// The `Received:` header for this message.
    fn trace_header(&self, queue_id: &str) -> String {
        let txn = self.txn.as_ref().expect("transaction is open");
        let with = match (self.esmtp, self.tls.is_some(), self.user.is_some()) {
            (false, _, _) => "SMTP",
            (true, true, true) => "ESMTPSA",
            (true, true, false) => "ESMTPS",
            (true, false, true) => "ESMTPA",
            (true, false, false) => "ESMTP",
        };
        received_header(&Trace {
            helo: self.helo.as_deref().unwrap_or("unknown"),
            client_ip: self
                .ctx
                .config
                .received_include_client_ip
                .then_some(self.peer.ip()),
            by: &self.ctx.config.hostname,
            with,
            id: queue_id,
            tls: self.tls.as_deref(),
            for_rcpt: (txn.rcpts.len() == 1).then(|| txn.rcpts[0].as_str()),
            time: SystemTime::now(),
        })
    }
}
