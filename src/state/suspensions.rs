//! Suspensions shared through Redis: one hash of every suspension, a pub/sub
//! channel that says it changed, and each instance's [`Brake`] as the local cache.
//!
//! One task per instance keeps the cache in step: it re-reads the hash when a
//! change is announced, when Redis comes back, and every [`RESYNC_EVERY`] in case
//! an announcement was missed (pub/sub does not queue). Suspensions and lifts made
//! here wait in `pending` until Redis has them, so one made during an outage is
//! shared when Redis returns.

use super::keys::Keys;
use super::link::Link;
use crate::lock::MutexExt;
use crate::policy::brake::{Brake, SharedSuspensions, Suspension};
use futures_util::StreamExt;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;
use tracing::warn;

/// The cache is re-read at least this often even without an announcement.
pub const RESYNC_EVERY: Duration = Duration::from_secs(5);

/// The shared suspension list.
pub struct SharedBrake {
    link: Arc<Link>,
    keys: Keys,
    /// Made here, not yet in Redis: `Some` suspends, `None` lifts.
    pending: Mutex<BTreeMap<String, Option<Suspension>>>,
    wake: Notify,
}

impl SharedSuspensions for SharedBrake {
    fn suspend(&self, user: &str, suspension: &Suspension) {
        self.pending
            .locked()
            .insert(user.to_string(), Some(suspension.clone()));
        self.wake.notify_one();
    }

    fn lift(&self, user: &str) {
        self.pending.locked().insert(user.to_string(), None);
        self.wake.notify_one();
    }
}

impl SharedBrake {
    pub fn new(link: Arc<Link>, keys: Keys) -> SharedBrake {
        SharedBrake {
            link,
            keys,
            pending: Mutex::new(BTreeMap::new()),
            wake: Notify::new(),
        }
    }

    /// Writes what is pending, then reads the cluster's list into `brake`.
    async fn sync(&self, brake: &Brake) {
        let pending = self.pending.locked().clone();
        if !pending.is_empty() && self.push(&pending).await.is_some() {
            let mut p = self.pending.locked();
            p.retain(|user, change| pending.get(user) != Some(change));
        }
        let hash = self.keys.suspensions();
        let all: Option<HashMap<String, String>> = self
            .link
            .run("reading suspensions", |mut c| async move {
                redis::cmd("HGETALL").arg(&hash).query_async(&mut c).await
            })
            .await;
        let Some(all) = all else { return };
        let mut list: BTreeMap<String, Suspension> = all
            .into_iter()
            .filter_map(|(u, json)| Some((u, serde_json::from_str(&json).ok()?)))
            .collect();
        // A change made here since the push is not lost to an older read.
        for (user, change) in self.pending.locked().iter() {
            match change {
                Some(s) => list.insert(user.clone(), s.clone()),
                None => list.remove(user),
            };
        }
        brake.apply_shared(list);
    }

    /// Writes `changes` and announces them, in one round trip.
    async fn push(&self, changes: &BTreeMap<String, Option<Suspension>>) -> Option<()> {
        let (hash, channel) = (self.keys.suspensions(), self.keys.suspensions_channel());
        let mut pipe = redis::pipe();
        for (user, change) in changes {
            match change {
                Some(s) => {
                    let json = serde_json::to_string(s).unwrap_or_default();
                    pipe.cmd("HSET").arg(&hash).arg(user).arg(json).ignore();
                }
                None => {
                    pipe.cmd("HDEL").arg(&hash).arg(user).ignore();
                }
            }
        }
        pipe.cmd("PUBLISH").arg(&channel).arg("changed").ignore();
        self.link
            .run("sharing a suspension", |mut c| async move {
                pipe.query_async::<()>(&mut c).await
            })
            .await
    }

    /// Keeps `brake` in step with the cluster until aborted.
    pub async fn run(self: Arc<Self>, brake: Arc<Brake>) {
        // Redis is the truth once reachable: the state file's list (what this
        // instance knew when it stopped) is replaced by the cluster's, so a user
        // lifted elsewhere meanwhile is not suspended again by a restart. Only the
        // first instance ever to reach this Redis seeds it with its list, so that
        // turning cluster mode on lifts nobody.
        let mut seeded = false;
        let mut up = self.link.watch();
        let mut tick = tokio::time::interval(RESYNC_EVERY);
        let mut pubsub: Option<redis::aio::PubSub> = None;
        loop {
            if pubsub.is_none() && self.link.is_up() {
                pubsub = self.subscribe().await;
            }
            let announced = async {
                match pubsub.as_mut() {
                    Some(p) => p.on_message().next().await.is_some(),
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                got = announced => if !got { pubsub = None },
                _ = self.wake.notified() => {}
                _ = up.changed() => {}
                _ = tick.tick() => {}
            }
            if !seeded {
                seeded = self.seed(&brake).await;
            }
            self.sync(&brake).await;
        }
    }

    /// Shares this instance's suspensions if no instance has seeded this Redis
    /// yet; whether Redis answered.
    async fn seed(&self, brake: &Brake) -> bool {
        let marker = format!("{}:seeded", self.keys.suspensions());
        let first: Option<bool> = self
            .link
            .run("seeding suspensions", |mut c| async move {
                redis::cmd("SET")
                    .arg(&marker)
                    .arg(1)
                    .arg("NX")
                    .query_async::<Option<String>>(&mut c)
                    .await
                    .map(|r| r.is_some())
            })
            .await;
        if first == Some(true) {
            let mut pending = self.pending.locked();
            for (user, s) in brake.all() {
                pending.entry(user).or_insert(Some(s));
            }
        }
        first.is_some()
    }

    async fn subscribe(&self) -> Option<redis::aio::PubSub> {
        let channel = self.keys.suspensions_channel();
        let connect = async {
            let mut p = self.link.client().get_async_pubsub().await?;
            p.subscribe(&channel).await?;
            Ok::<_, redis::RedisError>(p)
        };
        match tokio::time::timeout(super::link::OP_TIMEOUT, connect).await {
            Ok(Ok(p)) => Some(p),
            Ok(Err(e)) => {
                warn!(error = %e, "cluster: cannot subscribe to suspension changes; re-reading them every few seconds instead");
                None
            }
            Err(_) => None,
        }
    }
}
