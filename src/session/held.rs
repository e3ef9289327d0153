//! Passthrough's target: the smarthost's transaction, with the message held back
//! whole when it is to be DKIM-signed.
//!
//! A signature covers the body but goes in front of the header, while passthrough
//! otherwise streams the header to the smarthost before the body has arrived. So a
//! message whose header `From:` domain has keys is gathered here (it is at most
//! `limits.max_message_size`: the receiver stops passing content on beyond that)
//! and written out, signed, at its end. The decision is made once the header gate
//! has released the whole header section.
//!
//! DATA goes upstream, with the smarthost's pacing turn taken just before, only
//! when the message is handed over ([`Relay::open`]): at the client's DATA when no
//! domain has keys, once the header section shows the message will not be signed,
//! or at the end for a held one. So a message refused while it is gathered never
//! opened DATA at the smarthost (its connection is RSET and pooled), no smarthost
//! connection sits in DATA while a client uploads a message to sign, and a
//! transaction that never reaches DATA uses no pacing slot. The one exception is
//! upstream pipelining: with no key loaded and no pacing at the smarthost, a
//! client's DATA pipelined behind its last RCPT went upstream with that RCPT, and
//! the relay then finds DATA already open.

use crate::dkim::sign::SignError;
use crate::dkim::{Keys, Signing};
use crate::proto::header::header_end;
use crate::proto::printable::Printable;
use crate::upstream::holding::Held;
use crate::upstream::{Failed, Transaction, UpstreamError, pacing};
use std::sync::Arc;
use tracing::{debug, info};

pub(super) struct Relay {
    /// `None` once given up (DATA refused, the connection lost).
    txn: Option<Transaction>,
    /// DATA went upstream: the message is being handed over.
    opened: bool,
    /// DATA could not be opened after the client's 354: the rest is dropped and the
    /// message refused with this at its end.
    unopened: Option<Failed>,
    /// Until the header section is complete: the keys to look its `From:` up in.
    keys: Option<Arc<Keys>>,
    /// Content before the header section was complete (the gate releases
    /// `Received:` first, then the whole section).
    head: Vec<u8>,
    /// The message to sign, gathered until its end.
    held: Option<(Signing, Vec<u8>)>,
    /// Its share of the memory budget for held messages.
    budget: Held,
    /// The budget could not spare room for it: dropped, refused at the end.
    no_room: bool,
}

/// Why a held message did not reach the smarthost.
pub(super) enum Unsent {
    Sign(SignError),
    Upstream(Failed),
    /// No room left in the memory budget for held messages.
    NoRoom,
}

impl Relay {
    pub(super) fn new(txn: Transaction, keys: Arc<Keys>) -> Relay {
        // The session never hands over keys with a transaction whose DATA already
        // went upstream (with its last RCPT): it answers 451 instead.
        debug_assert!(keys.is_empty() || !txn.took_data());
        Relay {
            txn: Some(txn),
            opened: false,
            unopened: None,
            keys: (!keys.is_empty()).then_some(keys),
            head: Vec::new(),
            held: None,
            budget: Held::default(),
            no_room: false,
        }
    }

    /// Whether DATA waits until the header section is read (some domain has keys);
    /// otherwise the caller opens it at once, before its 354.
    pub(super) fn waits_for_header(&self) -> bool {
        self.keys.is_some()
    }

    /// Takes the smarthost's pacing turn (waiting up to
    /// [`pacing::PASSTHROUGH_WAIT`]) and sends DATA, once. A refusal gives the
    /// transaction up (RSET and pooled when the connection is still good).
    pub(super) async fn open(&mut self) -> Result<(), Failed> {
        if self.opened {
            return Ok(());
        }
        let Some(txn) = self.txn.as_mut() else {
            return Err(Failed::Lost(UpstreamError::Closed));
        };
        let result = match txn.turn(pacing::PASSTHROUGH_WAIT).await {
            Ok(()) => txn.data().await,
            Err(f) => Err(f),
        };
        match result {
            Ok(()) => {
                self.opened = true;
                Ok(())
            }
            Err(f) => {
                info!(reply = %Printable(&f), "smarthost did not take DATA");
                if let Some(txn) = self.txn.take()
                    && matches!(f, Failed::Refused(_))
                {
                    tokio::spawn(txn.reset());
                }
                Err(f)
            }
        }
    }

    /// Hands content over: DATA first if it has not gone yet (a failure then is
    /// kept for the end of the message, the client being past its 354).
    async fn send(&mut self, content: &[u8]) -> Result<(), Failed> {
        if let Err(f) = self.open().await {
            self.unopened = Some(f);
            return Ok(());
        }
        let txn = self.txn.as_mut().expect("open");
        txn.write(content).await
    }

    /// Writes content through to the smarthost, or holds it while the header
    /// section is incomplete or when the message is to be signed.
    pub(super) async fn write(&mut self, content: &[u8], may_sign: bool) -> Result<(), Failed> {
        if self.no_room || self.unopened.is_some() {
            return Ok(());
        }
        if let Some((_, message)) = &mut self.held {
            if !self.budget.grow(content.len()) {
                // Dropped now, refused at the end: memory stays bounded.
                self.no_room = true;
                self.held = None;
                self.budget.release();
                return Ok(());
            }
            message.extend_from_slice(content);
            return Ok(());
        }
        if self.keys.is_none() {
            return self.send(content).await;
        }
        self.head.extend_from_slice(content);
        if header_end(&self.head).is_none() {
            return Ok(());
        }
        if !may_sign {
            // A `From:` the user may not send as (allowed any): no signature.
            self.keys = Some(Arc::new(Keys::default()));
        }
        self.decide().await
    }

    /// With the header section complete (or the message ended without a blank
    /// line): hold the message for signing, or write out what was held.
    async fn decide(&mut self) -> Result<(), Failed> {
        let keys = self.keys.take().expect("undecided");
        let head = std::mem::take(&mut self.head);
        match Signing::for_message(&keys, &head) {
            Some(_) if !self.budget.grow(head.len()) => {
                self.no_room = true;
                Ok(())
            }
            Some(signing) => {
                self.held = Some((signing, head));
                Ok(())
            }
            None => self.send(&head).await,
        }
    }

    /// The transaction, ready for its end of data: a held message is signed (off
    /// the runtime: hashing a large body takes a while), then DATA goes upstream
    /// and the message is written.
    pub(super) async fn into_transaction(mut self, may_sign: bool) -> Result<Transaction, Unsent> {
        if self.keys.is_some() {
            if !may_sign {
                self.keys = Some(Arc::new(Keys::default()));
            }
            self.decide().await.map_err(Unsent::Upstream)?;
        }
        if self.no_room {
            return Err(Unsent::NoRoom);
        }
        if let Some(f) = self.unopened.take() {
            return Err(Unsent::Upstream(f));
        }
        if let Some((signing, message)) = self.held.take() {
            let keys = signing.describe();
            let (signed, message) =
                tokio::task::spawn_blocking(move || (signing.sign(&message), message))
                    .await
                    .map_err(|e| Unsent::Sign(SignError::Read(std::io::Error::other(e))))?;
            let header = signed.map_err(Unsent::Sign)?;
            debug!(keys = %keys, "DKIM-signed");
            self.open().await.map_err(Unsent::Upstream)?;
            let txn = self.txn.as_mut().expect("open");
            txn.write(&header).await.map_err(Unsent::Upstream)?;
            for chunk in message.chunks(64 * 1024) {
                txn.write(chunk).await.map_err(Unsent::Upstream)?;
            }
            // The budget share lived until the message was written.
            self.budget.release();
        }
        self.open().await.map_err(Unsent::Upstream)?;
        Ok(self.txn.take().expect("open"))
    }
}

impl Drop for Relay {
    /// A message refused or given up before DATA went upstream leaves its
    /// smarthost connection after RCPT, still good: RSET and pooled, not closed.
    fn drop(&mut self) {
        if !self.opened
            && let Some(txn) = self.txn.take()
        {
            tokio::spawn(txn.reset());
        }
    }
}
