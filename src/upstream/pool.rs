//! A small pool of idle, authenticated smarthost connections.
//!
//! A busy site must not pay TCP + TLS + AUTH to the smarthost for every message:
//! after a transaction the connection goes back here (RSET first if the transaction
//! did not finish), and the next transaction takes the most recently used one.
//! Connections idle past `idle_timeout`, used for `max_messages_per_connection`
//! messages, or that saw any error are closed instead.
//!
//! `pool_size` is what stays idle between bursts. Under load more connections come
//! back than that at moments, and are wanted again a millisecond later: closing
//! them made 50 busy clients reconnect (TCP, TLS, EHLO, AUTH on both sides) every
//! few messages. A connection beyond `pool_size` is therefore kept while the
//! surplus is fresh, and the oldest surplus goes once idle for [`SURPLUS_GRACE`]:
//! the idle connections never outnumber those in use together a moment before.

use super::client::{Upstream, UpstreamError, UpstreamSettings};
use crate::lock::MutexExt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a connection beyond `pool_size` may stay idle.
pub const SURPLUS_GRACE: Duration = Duration::from_secs(2);

pub struct Pool {
    /// This pool's place in [`super::Relays`].
    index: usize,
    settings: Arc<UpstreamSettings>,
    idle: Mutex<Vec<(Upstream, Instant)>>,
    max_idle: usize,
    idle_timeout: Duration,
    max_messages: u32,
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
        }
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
        // `pool_size: 0` turns pooling off, surplus included.
        if conn.broken || conn.messages >= self.max_messages || self.max_idle == 0 {
            tokio::spawn(conn.quit());
            return;
        }
        let now = Instant::now();
        let mut idle = self.idle.locked();
        let stale = surplus(&mut idle, self.max_idle, now);
        idle.push((conn, now));
        drop(idle);
        for conn in stale {
            tokio::spawn(conn.quit());
        }
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

    /// Closes idle connections past their idle timeout, and the surplus past its
    /// grace; run periodically.
    pub fn prune(&self) {
        let mut idle = self.idle.locked();
        let now = Instant::now();
        let mut stale = surplus(&mut idle, self.max_idle, now);
        let (keep, timed_out): (Vec<_>, Vec<_>) = idle
            .drain(..)
            .partition(|(_, since)| now.duration_since(*since) < self.idle_timeout);
        *idle = keep;
        drop(idle);
        stale.extend(timed_out.into_iter().map(|(conn, _)| conn));
        for conn in stale {
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

/// Takes out the idle entries beyond `keep` that have been idle for [`SURPLUS_GRACE`],
/// oldest first. The list is oldest first: connections are taken from its end.
fn surplus<T>(idle: &mut Vec<(T, Instant)>, keep: usize, now: Instant) -> Vec<T> {
    let over = idle.len().saturating_sub(keep);
    let old = idle[..over]
        .iter()
        .take_while(|(_, since)| now.duration_since(*since) >= SURPLUS_GRACE)
        .count();
    idle.drain(..old).map(|(conn, _)| conn).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_stale_surplus_goes_oldest_first() {
        let t = Instant::now();
        let at = |ms: u64| t + Duration::from_millis(ms);
        // Five idle, oldest first; two are kept whatever their age.
        let mut idle: Vec<(u32, Instant)> = vec![
            (1, at(0)),
            (2, at(100)),
            (3, at(2500)),
            (4, at(2600)),
            (5, at(2700)),
        ];
        // At 2.05 s only the first has been idle for the grace.
        assert_eq!(surplus(&mut idle, 2, at(2050)), vec![1]);
        // Later the whole surplus (three beyond two kept) is stale; the two newest stay.
        assert_eq!(surplus(&mut idle, 2, at(10_000)), vec![2, 3]);
        assert_eq!(idle.iter().map(|(c, _)| *c).collect::<Vec<_>>(), vec![4, 5]);
        // Within the pool size nothing goes, however old.
        assert!(surplus(&mut idle, 2, at(99_000)).is_empty());
        assert!(surplus(&mut idle, 8, at(99_000)).is_empty());
    }
}
