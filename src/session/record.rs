//! How a transaction that reached the end of DATA ends: counted in the metrics,
//! recorded in the delivery log (through the events hub, never waiting), and
//! answered. Every ending of a message goes through [`Session::conclude`].

use super::{Flow, Session, Transaction};
use crate::events::Event;
use crate::journal::entry::format_time;
use crate::journal::{Entry, Kind, Recipient};
use crate::proto::reply::Reply;
use crate::session::io::SmtpStream;
use std::time::SystemTime;
use tokio::io::{AsyncRead, AsyncWrite};

/// The outcome of a message at the end of DATA.
pub(super) struct Verdict {
    /// The metric's `result`: `accepted` or `rejected`.
    result: &'static str,
    /// The metric's `reason`: `relayed`, `queued`, `size`, `smarthost`…
    reason: &'static str,
    /// What the client is answered.
    reply: Reply,
    /// The smarthost's own reply to the message, when it gave one.
    upstream: Option<Reply>,
}

impl Verdict {
    /// Refused, for `reason`, with `reply` (Postern's, or the smarthost's passed on).
    pub(super) fn refused(reason: &'static str, reply: Reply) -> Verdict {
        Verdict {
            result: "rejected",
            reason,
            reply,
            upstream: None,
        }
    }

    /// Accepted: `relayed` (with the smarthost's reply) or `queued`.
    pub(super) fn accepted(reason: &'static str, reply: Reply, upstream: Option<Reply>) -> Verdict {
        Verdict {
            result: "accepted",
            reason,
            reply,
            upstream,
        }
    }

    /// The smarthost's reply, recorded per recipient.
    pub(super) fn with_smarthost_reply(mut self, reply: Reply) -> Verdict {
        self.upstream = Some(reply);
        self
    }
}

impl Session {
    /// Ends a message: counts it, records it in the delivery log, and answers.
    pub(super) fn conclude<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        io: &mut SmtpStream<S>,
        txn: &Transaction,
        (id, size): (&str, u64),
        v: Verdict,
    ) -> Flow {
        self.message_metric(v.result, v.reason);
        let entry = self.entry(txn, id, size, &v);
        self.ctx.events.emit(Event::Logged(entry));
        if v.reply.is_positive() {
            self.ok(io, v.reply)
        } else {
            self.refuse(io, v.reply)
        }
    }

    /// DATA came with no recipient left (the smarthost refused them all): recorded
    /// so that the log says why, though no message was sent.
    pub(super) fn record_without_recipients(&self, reply: &Reply) {
        let Some(txn) = self
            .txn
            .as_ref()
            .filter(|t| t.rcpts.is_empty() && !t.refused.is_empty())
        else {
            return;
        };
        let v = Verdict::refused("no_recipients", reply.clone());
        let id = format!("{}.{}", self.id, self.messages + 1);
        self.ctx
            .events
            .emit(Event::Logged(self.entry(txn, &id, 0, &v)));
    }

    fn entry(&self, txn: &Transaction, id: &str, size: u64, v: &Verdict) -> Entry {
        let (status, rcpt_status, rcpt_reply) = match (v.result, v.reason) {
            ("accepted", "queued") => ("accepted", "queued", None),
            ("accepted", _) => ("delivered", "delivered", v.upstream.as_ref()),
            _ => (
                "refused",
                "refused",
                Some(v.upstream.as_ref().unwrap_or(&v.reply)),
            ),
        };
        let accepted = txn
            .rcpts
            .iter()
            .map(|a| Recipient::new(a, rcpt_status, rcpt_reply.map(Reply::to_string)));
        let refused = txn
            .refused
            .iter()
            .map(|(a, r)| Recipient::new(a, "refused", Some(r.clone())));
        Entry {
            id: id.to_string(),
            time: format_time(SystemTime::now()),
            user: self
                .user
                .as_ref()
                .map(|u| u.name.clone())
                .unwrap_or_default(),
            client_ip: Some(self.peer.ip().to_string()),
            from: txn.from.clone(),
            size,
            status: status.to_string(),
            recipients: accepted.chain(refused).collect(),
            kind: Kind::Submission,
            reason: (status == "refused").then(|| v.reason.to_string()),
            reply: Some(v.reply.to_string()),
            attempt: None,
        }
    }
}
