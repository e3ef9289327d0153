//! Passthrough's target: the smarthost's transaction, with the message held back
//! whole when it is to be DKIM-signed.
//!
//! A signature covers the body but goes in front of the header, while passthrough
//! otherwise streams the header to the smarthost before the body has arrived. So a
//! message whose header `From:` domain has keys is gathered here (it is at most
//! `limits.max_message_size`: the receiver stops passing content on beyond that)
//! and written out, signed, at its end. The decision is made once the header gate
//! has released the whole header section.

use crate::dkim::sign::SignError;
use crate::dkim::{Keys, Signing};
use crate::proto::header::header_end;
use crate::upstream::holding::Held;
use crate::upstream::{Failed, Transaction};
use std::sync::Arc;
use tracing::debug;

pub(super) struct Relay {
    txn: Transaction,
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
        Relay {
            txn,
            keys: (!keys.is_empty()).then_some(keys),
            head: Vec::new(),
            held: None,
            budget: Held::default(),
            no_room: false,
        }
    }

    /// Writes content through to the smarthost, or holds it while the header
    /// section is incomplete or when the message is to be signed.
    pub(super) async fn write(&mut self, content: &[u8], may_sign: bool) -> Result<(), Failed> {
        if self.no_room {
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
            return self.txn.write(content).await;
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
            None => self.txn.write(&head).await,
        }
    }

    /// The transaction, ready for its end of data: a held message is signed (off
    /// the runtime: hashing a large body takes a while) and written first.
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
        // The budget share lives until the message is written.
        let Relay {
            mut txn,
            held,
            budget: _budget,
            ..
        } = self;
        let Some((signing, message)) = held else {
            return Ok(txn);
        };
        let keys = signing.describe();
        let (signed, message) =
            tokio::task::spawn_blocking(move || (signing.sign(&message), message))
                .await
                .map_err(|e| Unsent::Sign(SignError::Read(std::io::Error::other(e))))?;
        let header = signed.map_err(Unsent::Sign)?;
        debug!(keys = %keys, "DKIM-signed");
        txn.write(&header).await.map_err(Unsent::Upstream)?;
        for chunk in message.chunks(64 * 1024) {
            txn.write(chunk).await.map_err(Unsent::Upstream)?;
        }
        Ok(txn)
    }
}
