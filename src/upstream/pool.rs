//! A small pool of idle, authenticated smarthost connections.
//!
//! A busy site must not pay TCP + TLS + AUTH to the smarthost for every message:
//! after a transaction the connection goes back here (RSET first if the transaction
//! did not finish), and the next transaction takes the most recently used one.
//! Connections idle past `idle_timeout`, used for `max_messages_per_connection`
//! messages, or that saw any error are closed instead.

use super::client::{Upstream, UpstreamError, UpstreamSettings};
use super::pacing::Pacer;
use crate::lock::MutexExt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub struct Pool {
    /// This pool's place in [`super::Relays`].
    index: usize,
    settings: Arc<UpstreamSettings>,
    idle: Mutex<Vec<(Upstream, Instant)>>,
    max_idle: usize,
    idle_timeout: Duration,
    max_messages: u32,
    /// `max_messages_per_minute` for this smarthost, if set.
    pacer: Option<Pacer>,
}

/// A connection taken from the pool, and whether it was reused (a reused one may
/// turn out to have been closed by the smarthost meanwhile: retry once on a new one).
pub struct Taken {
    pub conn: Upstream,
    pub reused: bool,
}

impl Pool {
    pub fn new(
        index: usize,
        settings: UpstreamSettings,
        max_idle: usize,
        idle_timeout: Duration,
        max_messages: u32,
    ) -> Pool {
        Pool {
            index,
            settings: Arc::new(settings),
            idle: Mutex::new(Vec::new()),
            max_idle,
            idle_timeout,
            max_messages,
            pacer: None,
        }
    }

    /// Paces this smarthost to at most `per_minute` messages in any 60 seconds.
    pub fn paced(mut self, per_minute: Option<u32>) -> Pool {
        self.pacer = per_minute.map(Pacer::new);
        self
    }

    /// This smarthost's pacing, if it has one.
    pub fn pacer(&self) -> Option<&Pacer> {
        self.pacer.as_ref()
    }

    /// An idle connection if a fresh one is pooled, else a new connection.
    pub async fn take(&self) -> Result<Taken, UpstreamError> {
        if let Some(conn) = self.take_idle() {
            return Ok(Taken { conn, reused: true });
        }
        self.connect().await.map(|conn| Taken {
            conn,
            reused: false,
        })
    }

    /// A brand-new connection.
    pub async fn connect(&self) -> Result<Upstream, UpstreamError> {
        let mut conn = Upstream::connect(self.settings.clone()).await?;
        conn.pool = self.index;
        Ok(conn)
    }

    /// `host:port` of this pool's smarthost.
    pub fn name(&self) -> String {
        self.settings.name()
    }

    fn take_idle(&self) -> Option<Upstream> {
        let mut idle = self.idle.locked();
        let now = Instant::now();
        while let Some((conn, since)) = idle.pop() {
            if now.duration_since(since) < self.idle_timeout {
                return Some(conn);
            }
            // Stale: dropping it closes the socket.
        }
        None
    }

    /// Returns a connection whose last transaction is complete (or was RSET).
    pub fn put(&self, conn: Upstream) {
        if conn.broken || conn.messages >= self.max_messages {
            tokio::spawn(conn.quit());
            return;
        }
        let mut idle = self.idle.locked();
        if idle.len() >= self.max_idle {
            drop(idle);
            tokio::spawn(conn.quit());
            return;
        }
        idle.push((conn, Instant::now()));
    }

    /// Resets an unfinished transaction, then pools the connection if that worked.
    pub async fn reset_and_put(&self, mut conn: Upstream) {
        if conn.broken {
            return;
        }
        match conn.command("RSET", "RSET").await {
            Ok(r) if r.is_positive() => self.put(conn),
            _ => {}
        }
    }

    /// Closes idle connections past their idle timeout; run periodically.
    pub fn prune(&self) {
        let mut idle = self.idle.locked();
        let now = Instant::now();
        let (keep, stale): (Vec<_>, Vec<_>) = idle
            .drain(..)
            .partition(|(_, since)| now.duration_since(*since) < self.idle_timeout);
        *idle = keep;
        drop(idle);
        for (conn, _) in stale {
            tokio::spawn(conn.quit());
        }
    }

    /// Says QUIT on every idle connection (at shutdown).
    pub async fn close_all(&self) {
        let all: Vec<_> = self.idle.locked().drain(..).collect();
        for (conn, _) in all {
            conn.quit().await;
        }
    }

    /// How many connections are idle now.
    pub fn idle_count(&self) -> usize {
        self.idle.locked().len()
    }

    pub fn idle_timeout(&self) -> Duration {
        self.idle_timeout
    }
}
