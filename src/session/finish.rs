//! The end of a message that passed every check: handed to the smarthost
//! (passthrough: the client gets its verdict) or made durable in the spool (queue:
//! the client gets 250 once it is on disk).

use super::data::insufficient_storage;
use super::held::{Relay, Unsent};
use super::mail::{failed_reply, relay_reply, upstream_lost};
use super::record::Verdict;
use super::{Flow, Session, Transaction};
use crate::proto::printable::Printable;
use crate::proto::reply::{Esc, Reply};
use crate::session::io::SmtpStream;
use crate::spool::envelope::{Envelope, RcptState, Recipient};
use crate::spool::store::{MessageWriter, unix_now};
use crate::upstream::Failed;
use crate::upstream::graph::Unsendable;
use tokio::io::{AsyncRead, AsyncWrite};
use tracing::{error, info, warn};

/// What the header decided for a queued message: the address whose route it
/// takes (a null sender's `From:`, when the user may send as it), and whether it
/// must go unsigned (a `From:` the user may not send as).
pub(super) struct Route {
    pub(super) by: Option<String>,
    pub(super) unsigned: bool,
}

/// A message that should be signed could not be: the client may try again.
fn cannot_sign() -> Reply {
    Reply::new(
        451,
        Esc(4, 3, 0),
        "Local error: the message could not be signed; try again later",
    )
}

impl Session {
    /// Passthrough: end of data to the smarthost, and its verdict to the client.
    pub(super) async fn finish_relay<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        io: &mut SmtpStream<S>,
        txn: Transaction,
        (smarthost, may_sign): (Relay, bool),
        queue_id: &str,
        size: usize,
    ) -> Flow {
        let waited = std::time::Instant::now();
        let at = (queue_id, size as u64);
        let smarthost = match smarthost.into_transaction(may_sign).await {
            Ok(t) => t,
            Err(Unsent::Sign(e)) => {
                error!(queue_id = %queue_id, sender = %Printable(&txn.from), error = %Printable(&e), "cannot DKIM-sign the message");
                return self.conclude(io, &txn, at, Verdict::refused("dkim", cannot_sign()));
            }
            Err(Unsent::NoRoom) => {
                warn!(queue_id = %queue_id, sender = %Printable(&txn.from), "no memory left for held messages; message refused for now");
                let reply = crate::upstream::holding::no_room();
                return self.conclude(io, &txn, at, Verdict::refused("storage", reply));
            }
            Err(Unsent::Upstream(f)) => {
                // DATA refused or not paced in time (the smarthost's word or a 451),
                // or the connection lost while the message was written.
                warn!(queue_id = %queue_id, sender = %Printable(&txn.from), error = %Printable(&f), "cannot pass the message on");
                let reason = match f {
                    Failed::Refused(_) => "smarthost",
                    _ => "smarthost_lost",
                };
                let v = Verdict::refused(reason, failed_reply(f));
                return self.conclude(io, &txn, at, v);
            }
        };
        let result = smarthost.finish().await;
        metrics::histogram!("postern_upstream_duration_seconds")
            .record(waited.elapsed().as_secs_f64());
        let reply = match result {
            // Graph throttling: the client is told to come back later.
            Ok(reply) | Err(Failed::Later(reply, _)) => reply,
            Err(f @ Failed::Unavailable(_)) => {
                // Nothing was sent (Graph without an access token).
                warn!(queue_id = %queue_id, sender = %Printable(&txn.from), error = %Printable(&f), "smarthost unavailable at the end of data; message not sent");
                let v = Verdict::refused("smarthost_unavailable", failed_reply(f));
                return self.conclude(io, &txn, at, v);
            }
            Err(f) => {
                // The smarthost may or may not have taken the message; a retry by the
                // client is the lesser evil (a possible duplicate, never a loss).
                warn!(queue_id = %queue_id, sender = %Printable(&txn.from), error = %Printable(&f), "no reply from the smarthost after DATA");
                let v = Verdict::refused("smarthost_lost", upstream_lost());
                return self.conclude(io, &txn, at, v);
            }
        };
        let positive = reply.is_positive();
        info!(
            queue_id = %queue_id,
            sender = %Printable(&txn.from),
            rcpts = txn.rcpts.len(),
            size,
            upstream = %Printable(&reply),
            duration_ms = txn.started.elapsed().as_millis() as u64,
            "{}", if positive { "message relayed" } else { "message refused by the smarthost" }
        );
        if !positive {
            let v = Verdict::refused("smarthost", relay_reply(reply.clone()))
                .with_smarthost_reply(reply);
            return self.conclude(io, &txn, at, v);
        }
        // Counted now that it is accepted; any other ending gives it back.
        metrics::counter!("postern_recipients_total", "result" => "accepted")
            .increment(txn.rcpts.len() as u64);
        let text = format!("Message accepted for delivery: {}", reply.first_line());
        let ok = Reply::new(250, Esc(2, 0, 0), text);
        let flow = self.conclude(io, &txn, at, Verdict::accepted("relayed", ok, Some(reply)));
        txn.quota.commit(std::time::Instant::now()).await;
        flow
    }

    /// Queue: make the message durable, then answer 250.
    pub(super) async fn finish_spool<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        io: &mut SmtpStream<S>,
        txn: Transaction,
        writer: MessageWriter,
        size: usize,
        route: Route,
    ) -> Flow {
        let queue = self.ctx.queue().expect("queue mode").clone();
        let route_key = route.by.as_deref().unwrap_or(&txn.from);
        if let Some(max) = self.ctx.relay.max_message_size(route_key)
            && writer.written > max
        {
            // Refused now rather than bounced later: the route cannot take it.
            warn!(sender = %Printable(&txn.from), size = writer.written, max, "message too large for the sender's route");
            let v = Verdict::refused("size", Unsendable::TooLarge.reply());
            return self.conclude(io, &txn, (writer.id(), writer.written), v);
        }
        let now = unix_now();
        let env = Envelope {
            id: writer.id().to_string(),
            from: txn.from.clone(),
            rcpts: txn
                .rcpts
                .iter()
                .map(|a| Recipient {
                    address: a.clone(),
                    state: RcptState::Pending,
                    last_reply: None,
                })
                .collect(),
            user: self
                .user
                .as_ref()
                .map(|u| u.name.clone())
                .unwrap_or_default(),
            created: now,
            attempts: 0,
            next_attempt: now,
            last_error: None,
            smtputf8: txn.smtputf8,
            eight_bit: txn.eight_bit,
            size: writer.written,
            warned: false,
            route_by: route.by,
            unsigned: route.unsigned,
            client_ip: Some(self.peer.ip().to_string()),
        };
        let at = (env.id.as_str(), env.size);
        if let Err(e) = queue.accept(writer, &env).await {
            error!(error = %Printable(&e), sender = %Printable(&txn.from), "cannot make the message durable; refused");
            return self.conclude(
                io,
                &txn,
                at,
                Verdict::refused("storage", insufficient_storage()),
            );
        }
        metrics::counter!("postern_recipients_total", "result" => "accepted")
            .increment(txn.rcpts.len() as u64);
        info!(
            queue_id = %env.id,
            sender = %Printable(&txn.from),
            rcpts = txn.rcpts.len(),
            size,
            duration_ms = txn.started.elapsed().as_millis() as u64,
            "message queued"
        );
        let ok = Reply::new(250, Esc(2, 0, 0), format!("Ok: queued as {}", env.id));
        let flow = self.conclude(io, &txn, at, Verdict::accepted("queued", ok, None));
        // Scheduled only now: its intake is in the delivery log before any attempt.
        queue.enqueued(&env);
        txn.quota.commit(std::time::Instant::now()).await;
        flow
    }
}
