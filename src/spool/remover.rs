//! Removal of delivered messages on a thread of its own.
//!
//! Between the smarthost's 250 and the removal of the message from the spool, a
//! crash delivers the message a second time at the next start. On the shared
//! blocking pool that removal would wait behind whatever else is queued there
//! (session commits, envelope writes, bounces), which under load stretched the window
//! to hundreds of milliseconds. Here nothing else runs: removals wait only for each
//! other, and those that arrive together share one directory fsync.

use super::store::Spool;
use std::io;
use std::sync::mpsc;
use tokio::sync::oneshot;

/// Most removals that share one directory fsync.
const BATCH: usize = 256;

struct Request {
    id: String,
    done: oneshot::Sender<io::Result<bool>>,
}

/// The handle to the removal thread; the thread ends when this is dropped.
pub struct Remover {
    tx: mpsc::Sender<Request>,
}

impl Remover {
    /// Starts the thread for `spool`.
    pub fn start(spool: Spool) -> io::Result<Remover> {
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("postern-remove".into())
            .spawn(move || run(&spool, &rx))?;
        Ok(Remover { tx })
    }

    /// Removes a finished message (see [`Spool::remove`]) and waits until that is
    /// durable; whether it was still there.
    pub async fn remove(&self, id: &str) -> io::Result<bool> {
        let (done, wait) = oneshot::channel();
        let request = Request {
            id: id.to_string(),
            done,
        };
        if self.tx.send(request).is_err() {
            return Err(io::Error::other("the removal thread has stopped"));
        }
        wait.await
            .unwrap_or_else(|_| Err(io::Error::other("the removal thread has stopped")))
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
        let results: Vec<io::Result<bool>> = batch.iter().map(|r| spool.unlink(&r.id)).collect();
        let synced = spool.sync_queue();
        for (request, result) in batch.into_iter().zip(results) {
            let result = match &synced {
                Ok(()) => result,
                Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
            };
            let _ = request.done.send(result);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spool::store::{Envelope, RcptState, Recipient};

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
                id: id.clone(),
                from: "a@b.example".into(),
                rcpts: vec![Recipient {
                    address: "c@d.example".into(),
                    state: RcptState::Pending,
                    last_reply: None,
                }],
                user: "u".into(),
                created: 1,
                attempts: 0,
                next_attempt: 0,
                last_error: None,
                smtputf8: false,
                eight_bit: false,
                size: 3,
                warned: false,
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
                tokio::spawn(async move { r.remove(&id).await.unwrap() })
            })
            .collect();
        for t in tasks {
            assert!(t.await.unwrap(), "each message was there to remove");
        }
        assert!(!remover.remove(&ids[0]).await.unwrap(), "already gone");
        assert!(spool.load_all(false).unwrap().is_empty());
    }
}
