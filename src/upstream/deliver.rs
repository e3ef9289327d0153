//! Delivering a finished message: the whole transaction for a set of recipients
//! along the sender's route, with a result per recipient. What one smarthost defers
//! (connection failure or 4xx) goes to the next, so each recipient is handed to
//! exactly one smarthost.

use super::outcome::{Failed, Outcome};
use super::pacing;
use super::relays::Relays;
use super::transaction::{Sender, Transaction};
use crate::proto::printable::Printable;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::io::AsyncReadExt;
use tracing::warn;

/// A finished message, readable from its first byte for each attempt.
pub enum Content {
    /// Held in memory (a small message).
    Bytes(Vec<u8>),
    /// A file holding just the message, streamed.
    File(PathBuf),
    /// Header fields Postern puts in front (the DKIM signatures), then a file as
    /// in [`Content::File`].
    HeaderAndFile(Vec<u8>, PathBuf),
}

impl Content {
    /// Writes the whole message into `txn`.
    async fn write_to(&self, txn: &mut Transaction) -> Result<(), Failed> {
        let file = match self {
            Content::Bytes(b) => return txn.write(b).await,
            Content::File(path) => path,
            Content::HeaderAndFile(header, path) => {
                txn.write(header).await?;
                path
            }
        };
        let unreadable = |e: std::io::Error| Failed::Lost(e.into());
        let mut file = tokio::fs::File::open(file).await.map_err(unreadable)?;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = file.read(&mut buf).await.map_err(unreadable)?;
            if n == 0 {
                return Ok(());
            }
            txn.write(&buf[..n]).await?;
        }
    }
}

/// Delivers `content` from `sender` to `rcpts` along the sender's route. The
/// caller has taken the first smarthost's turn ([`super::pacing::first_turn`]).
pub async fn deliver(
    relays: &Arc<Relays>,
    sender: &Sender,
    rcpts: Vec<String>,
    content: &Content,
) -> Outcome {
    let route = relays.route(sender.route_key()).to_vec();
    let mut pending = rcpts;
    let mut total = Outcome::default();
    for (n, &pool) in route.iter().enumerate() {
        let last = n + 1 == route.len();
        if n > 0
            && pacing::turn_at(relays, pool, pacing::QUEUE_WAIT)
                .await
                .is_err()
        {
            warn!(smarthost = %relays.name(pool), "failover smarthost's sending rate reached; deferring");
            total.settle(&pending, &Failed::Refused(pacing::paced_reply()));
            break;
        }
        let mut out = attempt_on(relays, pool, sender, &pending, content).await;
        if out.no_smtputf8 && last {
            // No smarthost on the route can take it: it fails, as passthrough refuses it.
            warn!(smarthost = %relays.name(pool), "no smarthost on the route offers SMTPUTF8");
            out.fail_for_smtputf8();
        }
        if out.deferred.is_empty() || last {
            total.absorb(out);
            break;
        }
        warn!(
            smarthost = %relays.name(pool),
            deferred = out.deferred.len(),
            reason = %Printable(&out.deferred[0].1),
            "failing over to the next smarthost"
        );
        pending = std::mem::take(&mut out.deferred)
            .into_iter()
            .map(|(a, _)| a)
            .collect();
        total.absorb(out);
    }
    total
}

/// One transaction at smarthost `pool` for `pending`.
async fn attempt_on(
    relays: &Arc<Relays>,
    pool: usize,
    sender: &Sender,
    pending: &[String],
    content: &Content,
) -> Outcome {
    let mut out = Outcome::default();
    let mut txn = match Transaction::open_on(relays, pool, sender).await {
        Ok(t) => t,
        Err(f) => {
            out.settle(pending, &f);
            return out;
        }
    };
    let mut accepted = Vec::new();
    for (n, a) in pending.iter().enumerate() {
        // DATA goes out with the last recipient when the smarthost pipelines.
        match txn.rcpt(a, n + 1 == pending.len()).await {
            Ok(()) => accepted.push(a.clone()),
            Err(f @ Failed::Refused(_)) => out.settle(std::slice::from_ref(a), &f),
            Err(f) => {
                out.settle(pending, &f);
                return out;
            }
        }
    }
    if accepted.is_empty() {
        txn.reset().await;
        return out;
    }
    if let Err(f) = txn.data().await {
        if matches!(f, Failed::Refused(_)) {
            txn.reset().await;
        }
        out.settle(&accepted, &f);
        return out;
    }
    if let Err(f) = content.write_to(&mut txn).await {
        // Dropping the transaction closes the connection mid-data: the smarthost
        // discards what it got.
        drop(txn);
        out.settle(&accepted, &f);
        return out;
    }
    match txn.finish().await {
        Ok(r) if r.is_positive() => {
            out.accepted_at = Some(std::time::Instant::now());
            out.delivered_reply = Some(r.to_string());
            out.delivered = accepted;
        }
        Ok(r) => out.settle(&accepted, &Failed::Refused(r)),
        Err(f) => out.settle(&accepted, &f),
    }
    out
}
