//! Removal of delivered messages, off the blocking pool.
//!
//! Between the smarthost's 250 and the removal of the message from the spool, a
//! crash delivers the message a second time at the next start. So the step that
//! ends the message (its file leaving `queue/`, one metadata operation without an
//! fsync) is taken by the delivery task itself the moment the 250 arrives; the rest
//! (emptying a recycled file, removing a `.env`, the directory fsync that makes it
//! survive a power loss) runs on a thread of its own, where it waits for nothing but
//! other removals, and removals that arrive together share one fsync. The delivery
//! does not wait for it: its slot is free for the next message at once. On the shared
//! blocking pool the whole removal waited behind session commits, envelope writes
//! and bounces.

use super::store::{Spool, TakenOut};
use std::io;
use std::sync::mpsc;
use std::time::Instant;
use tokio::sync::oneshot;

/// Most removals that share one directory fsync.
const BATCH: usize = 256;

struct Request {
    id: String,
    taken: TakenOut,
    /// When the smarthost took the message, for `postern_spool_removal_seconds`.
    since: Option<Instant>,
    /// Told when the removal is durable, if someone waits for it.
    done: Option<oneshot::Sender<io::Result<()>>>,
}

/// The handle to the removal thread; the thread ends when this is dropped.
pub struct Remover {
    spool: Spool,
    tx: mpsc::Sender<Request>,
}

impl Remover {
    /// Starts the thread for `spool`.
    pub fn start(spool: Spool) -> io::Result<Remover> {
        let (tx, rx) = mpsc::channel();
        let theirs = spool.clone();
        std::thread::Builder::new()
            .name("postern-remove".into())
            .spawn(move || run(&theirs, &rx))?;
        Ok(Remover { spool, tx })
    }

    /// Removes a finished message (see [`Spool::remove`]); whether it was still
    /// there. `since` is when the smarthost took it: the time to the message leaving
    /// `queue/` (the window in which a kill -9 duplicates it) is recorded as
    /// `postern_spool_unlink_seconds`, and the time until that is durable as
    /// `postern_spool_removal_seconds`. Does not wait for the directory fsync, so a
    /// delivery slot is free again at once; [`Remover::remove_durably`] does.
    pub fn remove(&self, id: &str, since: Option<Instant>) -> io::Result<bool> {
        self.request(id, since, None)
    }

    /// Like [`Remover::remove`], and waits until the removal is durable.
    pub async fn remove_durably(&self, id: &str) -> io::Result<bool> {
        let (done, wait) = oneshot::channel();
        let existed = self.request(id, None, Some(done))?;
        wait.await
            .unwrap_or_else(|_| Err(io::Error::other("the removal thread has stopped")))?;
        Ok(existed)
    }

    fn request(
        &self,
        id: &str,
        since: Option<Instant>,
        done: Option<oneshot::Sender<io::Result<()>>>,
    ) -> io::Result<bool> {
        let taken = self.spool.take_out(id)?;
        if let Some(t) = since {
            metrics::histogram!("postern_spool_unlink_seconds").record(t.elapsed().as_secs_f64());
        }
        let request = Request {
            id: id.to_string(),
            taken,
            since,
            done,
        };
        if self.tx.send(request).is_err() {
            return Err(io::Error::other("the removal thread has stopped"));
        }
        Ok(taken != TakenOut::Absent)
    }
}

fn run(spool: &Spool, rx: &mpsc::Receiver<Request>) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok(r) => batch.push(r),
                Err(_) => break,
            }
        }
        for r in &batch {
            spool.tidy(&r.id, r.taken);
        }
        let synced = spool.sync_queue();
        if let Err(e) = &synced {
            tracing::error!(error = %e, "cannot make removals from the spool durable");
        }
        for request in batch {
            if let Some(t) = request.since {
                metrics::histogram!("postern_spool_removal_seconds")
                    .record(t.elapsed().as_secs_f64());
            }
            if let Some(done) = request.done {
                let _ = done.send(match &synced {
                    Ok(()) => Ok(()),
                    Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spool::envelope::Envelope;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn removes_concurrent_requests_each_once() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        let mut ids = Vec::new();
        for _ in 0..20 {
            let mut w = spool.writer().await.unwrap();
            w.write(b"x\r\n").await.unwrap();
            let id = w.id().to_string();
            let env = Envelope {
                client_ip: None,
                size: 3,
                ..Envelope::sample(&id)
            };
            spool.commit(w, &env).await.unwrap();
            ids.push(id);
        }
        let remover = std::sync::Arc::new(Remover::start(spool.clone()).unwrap());
        let tasks: Vec<_> = ids
            .iter()
            .cloned()
            .map(|id| {
                let r = remover.clone();
                tokio::spawn(async move { r.remove_durably(&id).await.unwrap() })
            })
            .collect();
        for t in tasks {
            assert!(t.await.unwrap(), "each message was there to remove");
        }
        assert!(!remover.remove(&ids[0], None).unwrap(), "already gone");
        assert!(spool.load_all(false).unwrap().is_empty());
    }
}
