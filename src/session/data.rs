//! DATA: stream the message through the receiver to its target, then answer.
//!
//! The target is the smarthost itself (passthrough: the client gets the smarthost's
//! verdict) or a spool file (queue: the client gets 250 once the message is durable).
//! The content is checked line by line as it arrives and written out in chunks, after
//! the header section has passed the From/Sender check. If the message turns out bad
//! (bare CR/LF, NUL, over-long line, too large, forged From), the smarthost connection
//! is dropped without the end-of-data marker, so the smarthost discards the partial
//! message, or the spool file is deleted: nothing Postern refused is ever delivered.

use super::finish::Route;
use super::gate::{Fixups, HeaderGate, RecipientCheck, Refusal};
use super::held::Relay;
use super::mail::{failed_reply, upstream_lost};
use super::record::Verdict;
use super::{Flow, Session, Transaction};
use crate::context::Mode;
use crate::policy::rates::DomainLimits;
use crate::proto::data::{DataError, DataReceiver, Feed};
use crate::proto::printable::Printable;
use crate::proto::received::{Trace, received_header};
use crate::proto::reply::{Esc, Reply};
use crate::session::io::{ReadChunk, SmtpStream};
use crate::spool::store::MessageWriter;
use crate::upstream;
use crate::upstream::graph::Unsendable;
use std::time::SystemTime;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;
use tracing::{error, info, warn};

/// Where accepted content goes.
enum Target {
    /// Passthrough: to the smarthost's transaction (held back when it is to be
    /// DKIM-signed).
    Relay(Box<Relay>),
    /// Queue: to a spool file.
    Spool(MessageWriter),
}

impl Target {
    /// Writes content (the relay dot-stuffs and batches it; it holds a message to
    /// be signed, which only one whose `From:` the user may send as is).
    async fn write(&mut self, content: &[u8], may_sign: bool) -> Result<(), String> {
        match self {
            Target::Relay(t) => t.write(content, may_sign).await.map_err(|e| e.to_string()),
            Target::Spool(w) => w.write(content).await.map_err(|e| e.to_string()),
        }
    }
}

/// How the receive loop ended, once the client sent the end-of-data marker.
struct Received {
    /// What the receiver found wrong with the content, if anything.
    error: Option<DataError>,
    /// Content bytes received.
    size: usize,
    /// Writing to the target failed (already logged); the message cannot be finished.
    target_failed: bool,
}

pub(super) fn insufficient_storage() -> Reply {
    Reply::new(
        452,
        Esc(4, 3, 1),
        "Insufficient system storage, try again later",
    )
}

/// The metric reason and reply for content the DATA receiver refused.
fn content_refusal(e: DataError) -> (&'static str, Reply) {
    match e {
        DataError::TooBig => (
            "size",
            Reply::new(
                552,
                Esc(5, 3, 4),
                "Message size exceeds fixed maximum message size",
            ),
        ),
        e => (
            "content",
            Reply::new(554, Esc(5, 6, 0), format!("Message refused: {e}")),
        ),
    }
}

/// The metric reason, log wording and reply for a header section the gate refused.
fn header_refusal(e: &Refusal) -> (&'static str, &'static str, Reply) {
    match e {
        Refusal::Sender(_) => (
            "header_from",
            "header sender not allowed",
            Reply::new(550, Esc(5, 7, 1), format!("Message refused: {e}")),
        ),
        Refusal::Recipients(u) => (
            "header_recipients",
            "header names recipients outside the envelope (Graph route)",
            u.reply(),
        ),
        Refusal::Malformed(_) | Refusal::TooLarge => (
            "header",
            "header section unreadable",
            Reply::new(554, Esc(5, 6, 0), format!("Message refused: {e}")),
        ),
    }
}

/// Passes freshly received content through the header gate and writes what it
/// releases to the target. The end of data is the caller's, once the message has
/// passed every check. Once the header section is out, the body goes to the target
/// as it is, without a copy into the gate.
async fn pass_on(
    gate: &mut HeaderGate,
    target: &mut Target,
    content: &[u8],
    done: bool,
) -> Result<(), String> {
    if gate.passes_through() {
        return target.write(content, gate.from_allowed).await;
    }
    gate.push(content, done);
    if gate.ready.is_empty() {
        return Ok(());
    }
    let written = target.write(&gate.ready, gate.from_allowed).await;
    gate.ready.clear();
    written
}

impl Session {
    pub(super) async fn data<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        io: &mut SmtpStream<S>,
    ) -> Flow {
        if let Some(reply) = self.data_refusal() {
            self.record_without_recipients(&reply);
            return self.refuse(io, reply);
        }
        let upstream = self.txn.as_mut().and_then(|t| t.upstream.take());
        let (mut target, queue_id) = match self.open_target(upstream).await {
            Ok(t) => t,
            Err(reply) => return self.refuse(io, reply),
        };
        io.reply(&Reply::plain(354, "End data with <CR><LF>.<CR><LF>"));
        self.messages += 1;
        let mut gate = self.header_gate(&queue_id);
        match self.receive(io, &mut gate, &mut target).await {
            Ok(received) => {
                self.end_of_data(io, received, gate, target, &queue_id)
                    .await
            }
            Err(flow) => flow,
        }
    }

    /// Why DATA cannot start now, in the order the checks must run.
    fn data_refusal(&self) -> Option<Reply> {
        if self.user.is_none() {
            return Some(Reply::new(530, Esc(5, 7, 0), "Authentication required"));
        }
        let Some(txn) = self.txn.as_ref() else {
            return Some(Reply::new(503, Esc(5, 5, 1), "Need MAIL command first"));
        };
        if txn.broken {
            return Some(upstream_lost());
        }
        if txn.rcpts.is_empty() {
            return Some(Reply::new(554, Esc(5, 5, 1), "No valid recipients"));
        }
        None
    }

    /// The header check for this message: the user's sender rules (none for a user
    /// allowed any `From:`), the trace header and the fixups to add.
    fn header_gate(&self, queue_id: &str) -> HeaderGate {
        let rules = self
            .user
            .as_ref()
            .filter(|u| !u.allow_any_header_from)
            .map(|u| u.senders.clone());
        let txn = self.txn.as_ref().expect("transaction is open");
        let senders = self
            .user
            .as_ref()
            .map(|u| u.senders.clone())
            .unwrap_or_default();
        let gate = HeaderGate::new(
            &self.trace_header(queue_id),
            rules,
            txn.from.is_empty(),
            self.fixups(queue_id),
        )
        .senders(senders);
        // A null-sender message in the queue takes its header From's route (known
        // only once the header is read); in passthrough the route was picked at MAIL.
        let route_key = match self.ctx.mode {
            Mode::Queue(_) if txn.from.is_empty() => None,
            _ => Some(txn.from.clone()),
        };
        gate.check_recipients(RecipientCheck {
            rcpts: txn.rcpts.clone(),
            relays: self.ctx.relay.clone(),
            route_key,
        })
    }

    /// Streams the message from the client through the receiver and the header
    /// gate to the target, up to the end-of-data marker. After the first fault
    /// (bad content, failed write) the rest is read and dropped. `Err` carries how
    /// the session ends when the client stalls or goes away mid-message.
    async fn receive<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        io: &mut SmtpStream<S>,
        gate: &mut HeaderGate,
        target: &mut Target,
    ) -> Result<Received, Flow> {
        let timeouts = self.ctx.config.timeouts.clone();
        let mut rx = DataReceiver::new(self.ctx.config.limits.max_message_size as usize);
        let mut content = Vec::with_capacity(64 * 1024);
        let mut target_failed = false;
        let total_deadline = Instant::now() + timeouts.data_total;
        loop {
            let (consumed, done) = match rx.feed(io.buffered(), &mut content) {
                Feed::Done { consumed } => (consumed, true),
                Feed::NeedMore => (io.buffered().len(), false),
            };
            io.consume(consumed);
            if rx.error().is_none()
                && !target_failed
                && let Err(e) = pass_on(gate, target, &content, done).await
            {
                warn!(error = %Printable(&e), "cannot pass the message on");
                target_failed = true;
            }
            content.clear();
            if done {
                return Ok(Received {
                    error: rx.error(),
                    size: rx.size(),
                    target_failed,
                });
            }
            let deadline = (Instant::now() + timeouts.data_block).min(total_deadline);
            match io.fill(deadline).await {
                ReadChunk::Data => {}
                ReadChunk::TimedOut => return Err(self.data_timed_out(io, rx.size())),
                ReadChunk::Closed => return Err(self.data_abandoned(rx.size())),
            }
        }
    }

    /// The client went quiet mid-message: discard it and close.
    fn data_timed_out<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        io: &mut SmtpStream<S>,
        received: usize,
    ) -> Flow {
        warn!(received, "timeout during DATA; message discarded");
        self.txn = None;
        io.reply(&Reply::new(
            421,
            Esc(4, 4, 2),
            "Timeout during DATA, closing connection",
        ));
        Flow::Close
    }

    /// The client closed the connection mid-message: discard it.
    fn data_abandoned(&mut self, received: usize) -> Flow {
        warn!(
            received,
            "client closed the connection during DATA; message discarded"
        );
        self.txn = None;
        Flow::Close
    }

    /// After the end-of-data marker: refuse a bad message, or finish a good one at
    /// its target and answer with the outcome.
    async fn end_of_data<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        io: &mut SmtpStream<S>,
        received: Received,
        gate: HeaderGate,
        target: Target,
        queue_id: &str,
    ) -> Flow {
        let mut txn = self.txn.take().expect("transaction is open");
        // From here on, returning without finishing drops `target`: the smarthost
        // connection closes without end of data, or the spool file is deleted.
        if let Some(flow) = self.refuse_bad_message(io, &txn, &received, &gate, queue_id) {
            return flow;
        }
        if let Some(domain) = self.header_domain(&txn, &gate)
            && let Err(e) = txn.quota.domain(domain, std::time::Instant::now()).await
        {
            self.note_rate_limit(&e, true);
            let at = (queue_id, received.size as u64);
            let v = Verdict::refused("rate_limit", super::mail::rate_limit_reply(&e));
            return self.conclude(io, &txn, at, v);
        }
        if gate.bcc_removed > 0 {
            info!(
                fields = gate.bcc_removed,
                "Bcc header removed before relaying"
            );
        }
        match target {
            Target::Relay(smarthost) => {
                let at = (queue_id, received.size as u64);
                if received.target_failed {
                    let v = Verdict::refused("smarthost_lost", upstream_lost());
                    return self.conclude(io, &txn, at, v);
                }
                if let Some(max) = self.ctx.relay.max_message_size(&txn.from)
                    && received.size as u64 > max
                {
                    warn!(sender = %Printable(&txn.from), size = received.size, max, "message too large for the sender's route");
                    let v = Verdict::refused("size", Unsendable::TooLarge.reply());
                    return self.conclude(io, &txn, at, v);
                }
                let smarthost = (*smarthost, gate.from_allowed);
                self.finish_relay(io, txn, smarthost, queue_id, received.size)
                    .await
            }
            Target::Spool(writer) => {
                if received.target_failed {
                    let at = (queue_id, received.size as u64);
                    let v = Verdict::refused("storage", insufficient_storage());
                    return self.conclude(io, &txn, at, v);
                }
                let route = Route {
                    by: gate.header_from.clone().filter(|_| txn.from.is_empty()),
                    unsigned: !gate.from_allowed,
                };
                self.finish_spool(io, txn, writer, received.size, route)
                    .await
            }
        }
    }

    /// The domain a null-sender message counts against: its header From's (an
    /// allowed sender of the user's, checked by the gate), if it has limits. It is
    /// reserved with every recipient before anything is relayed or spooled, so
    /// concurrent sessions cannot overshoot the domain's limit any more than at MAIL.
    fn header_domain(&self, txn: &Transaction, gate: &HeaderGate) -> Option<DomainLimits> {
        if !txn.from.is_empty() || txn.quota.has_domain() {
            return None;
        }
        self.domain_limits(gate.header_from.as_deref()?)
    }

    /// Refuses a message whose content or header section was found bad: logs why,
    /// counts it and answers. `None` when the message passed both checks.
    fn refuse_bad_message<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        io: &mut SmtpStream<S>,
        txn: &Transaction,
        received: &Received,
        gate: &HeaderGate,
        queue_id: &str,
    ) -> Option<Flow> {
        let at = (queue_id, received.size as u64);
        if let Some(e) = received.error {
            warn!(sender = %Printable(&txn.from), rcpts = txn.rcpts.len(), error = %Printable(&e), "message refused");
            let (reason, reply) = content_refusal(e);
            return Some(self.conclude(io, txn, at, Verdict::refused(reason, reply)));
        }
        let e = gate.refused.as_ref()?;
        let (reason, what, reply) = header_refusal(e);
        warn!(sender = %Printable(&txn.from), rcpts = txn.rcpts.len(), error = %Printable(e), "message refused: {what}");
        Some(self.conclude(io, txn, at, Verdict::refused(reason, reply)))
    }

    /// Opens where the message goes: the smarthost's transaction (DATA sent now,
    /// or once the header section is read when the message may be DKIM-signed,
    /// see [`Relay::open`]), or a spool file. Returns the target and the id for the
    /// Received header.
    async fn open_target(
        &mut self,
        upstream: Option<upstream::Transaction>,
    ) -> Result<(Target, String), Reply> {
        let Some(smarthost) = upstream else {
            return match self.ctx.queue().expect("queue mode").spool().writer().await {
                Ok(w) => {
                    let id = w.id().to_string();
                    Ok((Target::Spool(w), id))
                }
                Err(e) => {
                    error!(error = %Printable(&e), "cannot write to the spool");
                    self.txn = None;
                    Err(insufficient_storage())
                }
            };
        };
        let id = format!("{}.{}", self.id, self.messages + 1);
        let keys = self.ctx.dkim.current();
        if smarthost.took_data() && !keys.is_empty() {
            // DATA went upstream with the last RCPT while no key was loaded, and a
            // reload brought keys since: the smarthost waits for content that can
            // no longer be signed first. Not sent unsigned: the client tries again.
            warn!("DKIM keys were loaded between the pipelined RCPT and DATA; answering 451");
            smarthost.reset().await;
            self.txn = None;
            return Err(Reply::new(
                451,
                Esc(4, 3, 0),
                "Signing keys changed during the transaction; try again",
            ));
        }
        let mut relay = Relay::new(smarthost, keys);
        if !relay.waits_for_header()
            && let Err(f) = relay.open().await
        {
            self.txn = None;
            return Err(failed_reply(f));
        }
        Ok((Target::Relay(Box::new(relay)), id))
    }

    /// Counts a message's outcome, and per user when configured.
    pub(super) fn message_metric(&self, result: &'static str, reason: &'static str) {
        metrics::counter!("postern_messages_total", "result" => result, "reason" => reason)
            .increment(1);
        if let (true, Some(u)) = (self.ctx.config.metrics.per_user, &self.user) {
            metrics::counter!("postern_user_messages_total", "user" => u.name.clone(), "result" => result).increment(1);
        }
    }

    /// The `Date:` and `Message-ID:` a message gets when it has none.
    fn fixups(&self, queue_id: &str) -> Fixups {
        let mut nonce = [0u8; 8];
        // A failing system RNG leaves the nonce zero; the id stays unique by queue id.
        let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut nonce);
        let nonce: String = nonce.iter().map(|b| format!("{b:02x}")).collect();
        Fixups {
            date: crate::proto::received::rfc5322_date(SystemTime::now()),
            message_id: format!("<{queue_id}.{nonce}@{}>", self.ctx.config.hostname),
        }
    }

    /// The `Received:` header for this message.
    fn trace_header(&self, queue_id: &str) -> String {
        let txn = self.txn.as_ref().expect("transaction is open");
        // "A" is for SMTP AUTH (RFC 3848): a client known by its network did not.
        let logged_in = self.user.is_some() && !self.by_network;
        let with = match (self.esmtp, self.tls.is_some(), logged_in) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::header_from::HeaderFromError;
    use crate::proto::header::HeaderDefect;

    fn code(r: &Reply) -> (u16, Option<Esc>) {
        (r.code, r.esc)
    }

    #[test]
    fn bad_content_gets_552_for_size_and_554_otherwise() {
        let (reason, r) = content_refusal(DataError::TooBig);
        assert_eq!((reason, code(&r)), ("size", (552, Some(Esc(5, 3, 4)))));
        for e in [
            DataError::BareLf,
            DataError::BareCr,
            DataError::Nul,
            DataError::LineTooLong,
        ] {
            let (reason, r) = content_refusal(e);
            assert_eq!((reason, code(&r)), ("content", (554, Some(Esc(5, 6, 0)))));
            assert!(r.text.contains(&e.to_string()), "{}", r.text);
        }
    }

    #[test]
    fn a_forged_sender_gets_550_and_an_unreadable_header_554() {
        let forged = Refusal::Sender(HeaderFromError::Unparseable { header: "From" });
        let (reason, _, r) = header_refusal(&forged);
        assert_eq!(
            (reason, code(&r)),
            ("header_from", (550, Some(Esc(5, 7, 1))))
        );
        for e in [
            Refusal::Malformed(HeaderDefect::NotAField(2)),
            Refusal::TooLarge,
        ] {
            let (reason, _, r) = header_refusal(&e);
            assert_eq!((reason, code(&r)), ("header", (554, Some(Esc(5, 6, 0)))));
        }
    }
}
