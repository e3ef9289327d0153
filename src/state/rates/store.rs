//! [`SharedRates`] as the sessions' [`RateStore`]: Redis first (through this
//! instance's grants when it holds one), this instance's memory when Redis
//! cannot be reached.

use super::{SharedRates, settle_of, terms};
use crate::config::RateLimits;
use crate::policy::rates::{DomainLimits, Exceeded, Parties, Pending, RateStore, Ticket, Usage};
use std::time::Instant;

impl RateStore for SharedRates {
    fn reserve_message<'a>(
        &'a self,
        user: &'a str,
        limits: &'a RateLimits,
        domain: Option<&'a DomainLimits>,
        now: Instant,
    ) -> Pending<'a, Result<Ticket, Exceeded>> {
        Box::pin(async move {
            let name = domain.map(|d| d.domain.as_str());
            let t = terms(limits, domain.map(|d| &d.limits));
            if let Some(grant) = self.grants.take(user, name, &t) {
                return Ok(Ticket {
                    user: user.to_string(),
                    id: self.new_id(),
                    shared: true,
                    domain: name.map(str::to_string),
                    grant: Some(grant),
                    ..Ticket::default()
                });
            }
            match self.reserve_shared(user, limits, domain, now).await {
                Some(r) => r,
                None => self
                    .local
                    .reserve_message_now(user, limits, domain, now)
                    .map(|()| Ticket::local(user, domain)),
            }
        })
    }

    fn reserve_recipient<'a>(
        &'a self,
        ticket: &'a mut Ticket,
        limits: &'a RateLimits,
        domain: Option<&'a RateLimits>,
        now: Instant,
    ) -> Pending<'a, Result<(), Exceeded>> {
        Box::pin(async move {
            if !ticket.shared {
                let who = Parties::of(ticket);
                return self.local.reserve_recipient_now(who, limits, domain, now);
            }
            if let Some(grant) = &ticket.grant {
                if self.grants.take_rcpt(grant, &terms(limits, domain)) {
                    return Ok(());
                }
            } else if ticket.spare > 0 {
                // Reserved ahead at MAIL (or no recipient limit at all).
                ticket.spare = ticket.spare.saturating_sub(1);
                return Ok(());
            }
            match self.recipient_shared(ticket, limits, domain).await {
                Some(r) => {
                    if let (Ok(()), Some(grant)) = (&r, &ticket.grant) {
                        self.grants.rcpt_reserved(grant);
                    }
                    r
                }
                None => {
                    let who = Parties::of(ticket);
                    self.local.reserve_recipient_now(who, limits, domain, now)?;
                    ticket.local_rcpts += 1;
                    Ok(())
                }
            }
        })
    }

    fn reserve_domain<'a>(
        &'a self,
        ticket: &'a mut Ticket,
        domain: &'a DomainLimits,
        rcpts: u32,
        now: Instant,
    ) -> Pending<'a, Result<(), Exceeded>> {
        Box::pin(async move {
            let shared = match ticket.shared {
                true => self.domain_shared(ticket, domain, rcpts).await,
                false => None,
            };
            match shared {
                Some(r) => {
                    r?;
                    ticket.domain_apart = ticket.grant.is_some();
                }
                None => {
                    self.local.reserve_domain_now(domain, rcpts, now)?;
                    ticket.domain_local = ticket.shared;
                }
            }
            ticket.domain = Some(domain.domain.clone());
            Ok(())
        })
    }

    fn commit<'a>(&'a self, ticket: &'a Ticket, rcpts: u32, now: Instant) -> Pending<'a, ()> {
        Box::pin(async move {
            if !ticket.shared {
                self.local.commit_now(Parties::of(ticket), rcpts, now);
                return;
            }
            // Counted here too: if Redis goes away, this instance's own use is known.
            self.local
                .release_now(Parties::of(ticket), 0, ticket.local_rcpts);
            if let Some(d) = ticket.domain.as_deref().filter(|_| ticket.domain_local) {
                self.local.release_now(Parties::domain(d), 1, rcpts);
            }
            self.local.record(Parties::of(ticket), 1, rcpts, now);
            let shared = rcpts.saturating_sub(ticket.local_rcpts);
            // A call that fails is made again later (`settler`): never a refusal.
            let what = "counting a message";
            let Some(grant) = &ticket.grant else {
                let own = settle_of(&ticket.id, self.settler.seq(), (1, shared), (1, 0));
                let keys = self.ticket_keys(ticket);
                return self.settler.message(&self.link, what, keys, own).await;
            };
            // Counted with the grant's next settle; only a domain reserved apart
            // (at the end of DATA) is counted now.
            self.grants.sent(grant, shared);
            if let Some(d) = ticket.domain.as_deref().filter(|_| ticket.domain_apart) {
                let own = settle_of(&ticket.id, self.settler.seq(), (1, rcpts), (1, 0));
                let keys = self.keys.domain_quota(d).to_vec();
                self.settler.message(&self.link, what, keys, own).await;
            }
        })
    }

    fn release(&self, ticket: &Ticket, messages: u32, rcpts: u32) {
        if !ticket.shared {
            return self.local.release_now(Parties::of(ticket), messages, rcpts);
        }
        let local = rcpts.min(ticket.local_rcpts);
        self.local.release_now(Parties::of(ticket), 0, local);
        if let Some(d) = ticket.domain.as_deref().filter(|_| ticket.domain_local) {
            self.local.release_now(Parties::domain(d), messages, rcpts);
        }
        let shared = rcpts - local;
        let keys = match &ticket.grant {
            Some(grant) => {
                // Spare room of the grant again; the rest is for its settle.
                self.grants.give_back(grant, messages, shared);
                match ticket.domain.as_deref().filter(|_| ticket.domain_apart) {
                    Some(d) if messages > 0 => self.keys.domain_quota(d).to_vec(),
                    _ => return,
                }
            }
            None if messages == 0 && shared == 0 => return,
            None => self.ticket_keys(ticket),
        };
        // From Drop: nobody waits for this. Without a runtime (a test), the lease
        // gives it back.
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (link, settler) = (self.link.clone(), self.settler.clone());
        let own = settle_of(&ticket.id, settler.seq(), (0, 0), (messages.min(1), shared));
        rt.spawn(async move {
            let what = "giving back a reservation";
            settler.message(&link, what, keys, own).await;
        });
    }

    fn prune(&self, now: Instant) -> usize {
        self.local.prune_now(now)
    }

    fn usage<'a>(&'a self, user: &'a str, now: Instant) -> Pending<'a, Usage> {
        Box::pin(async move {
            // What this instance sent under its grants counts too.
            self.settle(false).await;
            match self.usage_shared(self.keys.quota(user)).await {
                Some(u) => u,
                None => self.local.usage_now(user, now),
            }
        })
    }

    fn domain_usage<'a>(&'a self, domain: &'a str, now: Instant) -> Pending<'a, Usage> {
        Box::pin(async move {
            self.settle(false).await;
            match self.usage_shared(self.keys.domain_quota(domain)).await {
                Some(u) => u,
                None => self.local.domain_usage_now(domain, now),
            }
        })
    }
}
