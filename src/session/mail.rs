//! MAIL and RCPT: local policy first, then the smarthost's own verdict.

use super::{Flow, Session, Transaction};
use crate::config::User;
use crate::context::Mode;
use crate::events::By;
use crate::policy::rates::{DomainLimits, Exceeded, Reservation, human};
use crate::policy::senders::sender_allowed;
use crate::proto::command::{MailFrom, RcptTo};
use crate::proto::printable::Printable;
use crate::proto::reply::{Esc, Reply};
use crate::session::io::SmtpStream;
use crate::upstream::{self, Failed, Sender, UpstreamError};
use smtp_proto::{MAIL_BODY_8BITMIME, MAIL_SMTPUTF8};
use std::sync::Arc;
use std::time::{Instant, SystemTime};
use tokio::io::{AsyncRead, AsyncWrite};
use tracing::{info, warn};

/// The client's reply for a step that failed at the smarthost: its own refusal
/// passed on, or a transient failure (never 5xx) when it could not be asked.
pub(super) fn failed_reply(f: Failed) -> Reply {
    match f {
        Failed::Refused(r) | Failed::Later(r, _) => relay_reply(r),
        Failed::NoSmtpUtf8 => Reply::new(
            553,
            Esc(5, 6, 7),
            "The smarthost does not support SMTPUTF8 addresses",
        ),
        Failed::Unavailable(UpstreamError::Refused { reply, .. }) if reply.code == 421 => {
            Reply::new(421, Esc(4, 4, 2), "Smarthost unavailable, try again later")
        }
        Failed::Unavailable(_) => {
            Reply::new(451, Esc(4, 4, 1), "Smarthost unavailable, try again later")
        }
        Failed::Lost(_) => upstream_lost(),
    }
}

/// The reply when the smarthost connection broke mid-transaction.
pub(super) fn upstream_lost() -> Reply {
    Reply::new(
        451,
        Esc(4, 4, 2),
        "Connection to the smarthost lost, try again later",
    )
}

/// A smarthost reply passed on to the client, with an enhanced code if it had none.
pub(super) fn relay_reply(mut r: Reply) -> Reply {
    if r.esc.is_none() {
        let class = (r.code / 100) as u8;
        r.esc = Some(Esc(class, 0, 0));
    }
    r
}

/// `450 4.7.1` for a rate limit reached (the user's or the domain's).
pub(super) fn rate_limit_reply(e: &Exceeded) -> Reply {
    Reply::new(450, Esc(4, 7, 1), format!("Rate limit {e}"))
}

impl Session {
    /// Answers `450 4.7.1` for a rate limit, after [`Session::note_rate_limit`].
    fn rate_limited<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        io: &mut SmtpStream<S>,
        e: &Exceeded,
    ) -> Flow {
        // No transaction yet: the refusal is at MAIL, of a whole message.
        self.note_rate_limit(e, self.txn.is_none());
        self.refuse(io, rate_limit_reply(e))
    }

    /// Logs a rate limit reached, counts it, emits the event and tells the brake.
    /// A domain's limit is not the user's doing (its other users may have used
    /// the quota up): the brake hears only of the user's own limits.
    pub(super) fn note_rate_limit(&mut self, e: &Exceeded, message_refused: bool) {
        let user = self
            .user
            .as_ref()
            .map(|u| u.name.clone())
            .unwrap_or_default();
        let retry_after = human(e.retry_after);
        let Some(domain) = &e.domain else {
            warn!(user = %user, limit = e.limit, max = e.max, retry_after = %retry_after, "rate limit reached");
            metrics::counter!("postern_rate_limit_hits_total", "limit" => e.limit, "scope" => "user").increment(1);
            self.ctx.events.rate_limited(&user, e, message_refused);
            if let Some(reason) = self.ctx.brake.limited(&user, SystemTime::now()) {
                warn!(user = %user, reason = %reason, "user suspended by the abuse brake");
                self.ctx.events.suspended(&user, &reason, By::Brake);
            }
            return;
        };
        warn!(user = %user, domain = %Printable(domain), limit = e.limit, max = e.max, retry_after = %retry_after, "domain rate limit reached");
        metrics::counter!("postern_rate_limit_hits_total", "limit" => e.limit, "scope" => "domain")
            .increment(1);
        self.ctx.events.rate_limited(&user, e, message_refused);
    }

    /// The limits of the sender domain of `address` (a domain key), if it has any.
    pub(super) fn domain_limits(&self, address: &str) -> Option<DomainLimits> {
        let domain = crate::config::address_domain(address)?;
        let default = self.ctx.config.domain_rate_limits.as_ref();
        let limits = self.ctx.auth.users().domain_limits(&domain, default)?;
        Some(DomainLimits { domain, limits })
    }

    /// Checks that a transaction may start; the reply if not.
    fn mail_precheck(&self) -> Option<Reply> {
        if self.helo.is_none() {
            Some(Reply::new(503, Esc(5, 5, 1), "Send EHLO first"))
        } else if self.user.is_none() {
            Some(Reply::new(530, Esc(5, 7, 0), "Authentication required"))
        } else if self.txn.is_some() {
            Some(Reply::new(503, Esc(5, 5, 1), "Nested MAIL command"))
        } else {
            None
        }
    }

    /// The session's user as the users store and the brake see it now: a user
    /// disabled, removed or suspended since AUTH loses the login here, and a changed
    /// one (new senders, new limits) applies from this transaction on. A device
    /// known by its network is looked up by its address again, as a new connection
    /// would be: a reload that took the network away (or gave it to another user)
    /// ends the identity too.
    fn current_user(&mut self) -> Result<Arc<User>, Reply> {
        let name = self
            .user
            .as_ref()
            .map(|u| u.name.clone())
            .unwrap_or_default();
        let users = self.ctx.auth.users();
        let current = match self.by_network {
            true => users
                .by_address(self.peer.ip())
                .filter(|u| u.name == name)
                .ok_or("no longer in its networks"),
            false => users.get(&name).ok_or("removed"),
        };
        let why = match current {
            Err(why) => why,
            Ok(u) if u.disabled => "disabled",
            Ok(_) if self.ctx.brake.suspended(&name).is_some() => "suspended",
            Ok(u) => {
                self.user = Some(u.clone());
                return Ok(u.clone());
            }
        };
        warn!(user = %name, state = why, by_network = self.by_network, "login withdrawn: the user was {why} after AUTH or identification by network");
        self.user = None;
        self.by_network = false;
        Err(Reply::new(530, Esc(5, 7, 0), "Authentication required"))
    }

    pub(super) async fn mail<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        io: &mut SmtpStream<S>,
        from: MailFrom<String>,
    ) -> Flow {
        if let Some(reply) = self.mail_precheck() {
            return self.refuse(io, reply);
        }
        let user = match self.current_user() {
            Ok(u) => u,
            Err(reply) => return self.refuse(io, reply),
        };
        if let Some(reply) = self.sender_refusal(&user, &from) {
            return self.refuse(io, reply);
        }
        // The null sender's domain is its header From's, reserved at the end of DATA.
        let quota = match Reservation::message_in(
            self.ctx.rates.clone(),
            &user.name,
            &user.rate_limits,
            self.domain_limits(&from.address),
            Instant::now(),
        )
        .await
        {
            Ok(r) => r,
            Err(e) => return self.rate_limited(io, &e),
        };
        let utf8 = from.flags & MAIL_SMTPUTF8 != 0 || !from.address.is_ascii();
        let eight_bit = from.flags & MAIL_BODY_8BITMIME != 0;
        let upstream = match self.open_upstream(&from, eight_bit, utf8).await {
            Ok(u) => u,
            Err(reply) => return self.refuse(io, reply),
        };
        self.txn = Some(Transaction {
            from: from.address,
            rcpts: Vec::new(),
            refused: Vec::new(),
            upstream,
            broken: false,
            quota,
            smtputf8: utf8,
            eight_bit,
            started: Instant::now(),
        });
        self.ok(io, Reply::new(250, Esc(2, 1, 0), "Sender OK"))
    }

    /// Why `user` may not open a transaction as `from`: a sender not theirs, or a
    /// declared size over the limit.
    fn sender_refusal(&self, user: &User, from: &MailFrom<String>) -> Option<Reply> {
        // The null sender (read receipts, auto-replies) names no one to check; the
        // header From still is, and must be there. A user who may send as nobody
        // may not use it either.
        let allowed = if from.address.is_empty() {
            !user.senders.is_empty()
        } else {
            sender_allowed(&user.senders, &from.address)
        };
        if !allowed {
            warn!(user = %user.name, sender = %Printable(&from.address), "sender not allowed for this user");
            return Some(Reply::new(
                550,
                Esc(5, 7, 1),
                format!("Sender <{}> not allowed for this user", from.address),
            ));
        }
        let route_max = self.ctx.relay.max_message_size(&from.address);
        let max = route_max.map_or(self.ctx.config.limits.max_message_size, |r| {
            r.min(self.ctx.config.limits.max_message_size)
        });
        if from.size as u64 > max {
            info!(declared = from.size, max, "declared size too large");
            return Some(Reply::new(
                552,
                Esc(5, 3, 4),
                "Message size exceeds fixed maximum message size",
            ));
        }
        None
    }

    /// Passthrough: MAIL at the smarthost now, and the transaction there that the
    /// client's goes on. Queue mode: `None`, the smarthost is asked later.
    async fn open_upstream(
        &mut self,
        from: &MailFrom<String>,
        eight_bit: bool,
        utf8: bool,
    ) -> Result<Option<upstream::Transaction>, Reply> {
        if let Mode::Queue(_) = self.ctx.mode {
            return Ok(None);
        }
        let sender = Sender {
            address: from.address.clone(),
            size: from.size as u64,
            eight_bit,
            smtputf8: utf8,
            route_by: None,
        };
        match upstream::Transaction::open(&self.ctx.relay, &sender).await {
            Ok(t) => Ok(Some(t)),
            Err(f) => {
                match &f {
                    // Later: a smarthost on hold after throttling (not contacted).
                    Failed::Refused(_) | Failed::NoSmtpUtf8 | Failed::Later(..) => {
                        info!(sender = %Printable(&from.address), reply = %Printable(&f), "no transaction at the smarthost for this sender")
                    }
                    _ => warn!(error = %Printable(&f), "smarthost unavailable at MAIL"),
                }
                Err(failed_reply(f))
            }
        }
    }

    pub(super) async fn rcpt<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        io: &mut SmtpStream<S>,
        to: RcptTo<String>,
    ) -> Flow {
        if let Some(reply) = self.rcpt_precheck(&to.address) {
            self.note_refused(&to.address, &reply);
            return self.refuse(io, reply);
        }
        let limits = self
            .user
            .as_ref()
            .map(|u| u.rate_limits.clone())
            .unwrap_or_default();
        let txn = self.txn.as_mut().expect("checked by rcpt_precheck");
        if let Err(e) = txn.quota.recipient(&limits, Instant::now()).await {
            let flow = self.rate_limited(io, &e);
            self.note_refused(&to.address, &rate_limit_reply(&e));
            return flow;
        }
        if txn.upstream.is_none() {
            // Queue mode: accepted here, delivered later.
            txn.rcpts.push(to.address);
            return self.ok(io, Reply::new(250, Esc(2, 1, 5), "Recipient OK"));
        }
        self.upstream_rcpt(io, to.address).await
    }

    /// Keeps a refused recipient for the delivery log (up to `max_recipients`).
    fn note_refused(&mut self, address: &str, reply: &Reply) {
        let max = self.ctx.config.limits.max_recipients;
        if let Some(txn) = self.txn.as_mut()
            && txn.refused.len() < max
        {
            txn.refused.push((address.to_string(), reply.to_string()));
        }
    }

    /// Why RCPT cannot be taken now, in the order the checks must run.
    fn rcpt_precheck(&self, address: &str) -> Option<Reply> {
        if self.user.is_none() {
            return Some(Reply::new(530, Esc(5, 7, 0), "Authentication required"));
        }
        let max = self.ctx.config.limits.max_recipients;
        let Some(txn) = self.txn.as_ref() else {
            return Some(Reply::new(503, Esc(5, 5, 1), "Need MAIL command first"));
        };
        if txn.broken {
            return Some(upstream_lost());
        }
        if txn.rcpts.len() >= max {
            info!(max, "too many recipients");
            return Some(Reply::new(
                452,
                Esc(4, 5, 3),
                format!("Too many recipients (at most {max} per message)"),
            ));
        }
        if address.is_empty() || !address.contains('@') {
            return Some(Reply::new(
                501,
                Esc(5, 1, 3),
                "Bad recipient address syntax",
            ));
        }
        if !address.is_ascii() && !txn.smtputf8 {
            // RFC 6531 section 3.4: the transaction did not ask for SMTPUTF8.
            return Some(Reply::new(
                553,
                Esc(5, 6, 7),
                "SMTPUTF8 required for this address",
            ));
        }
        None
    }

    /// Passthrough: RCPT at the smarthost, whose verdict the client gets. A lost
    /// connection breaks the transaction; a recipient not taken gives its quota back.
    async fn upstream_rcpt<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        io: &mut SmtpStream<S>,
        address: String,
    ) -> Flow {
        // A client that pipelines sends DATA with its last RCPT: it goes upstream
        // in the same write (not when DKIM keys may make DATA wait for the header).
        let then_data = io.next_is_data() && self.ctx.dkim.current().is_empty();
        let txn = self.txn.as_mut().expect("transaction is open");
        let smarthost = txn.upstream.as_mut().expect("passthrough transaction");
        match smarthost.rcpt(&address, then_data).await {
            Ok(()) => {
                txn.rcpts.push(address);
                self.ok(io, Reply::new(250, Esc(2, 1, 5), "Recipient OK"))
            }
            Err(f @ Failed::Refused(_)) => {
                txn.quota.drop_recipient();
                info!(rcpt = %Printable(&address), reply = %Printable(&f), "smarthost refused the recipient");
                let reply = failed_reply(f);
                self.note_refused(&address, &reply);
                self.refuse(io, reply)
            }
            Err(f) => {
                txn.quota.drop_recipient();
                warn!(error = %Printable(&f), "smarthost connection lost at RCPT");
                txn.broken = true;
                txn.upstream = None;
                self.refuse(io, failed_reply(f))
            }
        }
    }
}
