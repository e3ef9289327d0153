//! Cluster-mode quota tests: users with rate limits on instances sharing one
//! Redis, and what Redis holds for them.

use super::redis::Redis;
use super::{Harness, Setup, TestUser};
use std::sync::Arc;
use std::time::Duration;

const W: Duration = Duration::from_secs(10);

/// A user allowed to send as `@shop.example`, with `extra` (its rate limits).
pub fn user(name: &'static str, password: &'static str, extra: &'static str) -> TestUser {
    TestUser {
        extra,
        ..TestUser::new(name, password, &["@shop.example"])
    }
}

/// An instance with `users`, sharing `redis`, once it reached Redis.
pub async fn instance(redis: &Redis, users: Vec<TestUser>) -> Harness {
    let h = Harness::start(Setup {
        users,
        extra: redis.cluster_yaml(),
        ..Setup::default()
    })
    .await;
    assert!(h.wait_log("cluster: Redis reachable", W).await);
    h
}

/// Two instances sharing `redis`, each with the user `mk` makes.
pub async fn two_instances(
    redis: &Redis,
    mk: impl Fn() -> TestUser,
) -> (Arc<Harness>, Arc<Harness>) {
    let a = instance(redis, vec![mk()]).await;
    let b = instance(redis, vec![mk()]).await;
    (Arc::new(a), Arc::new(b))
}

/// A field of one of `user`'s quota hashes (`res`, `mh`, `rd`...), 0 if absent.
pub fn field(redis: &Redis, user: &str, key: &str, field: &str) -> i64 {
    let v = redis.cli(&["HGET", &format!("test:{{u:{user}}}:q:{key}"), field]);
    v.trim().parse().unwrap_or(0)
}

/// Sends up to `n` messages on one connection as `user`; how many were accepted
/// before the first refusal (which must be the message limit's).
pub async fn send_many(h: &Harness, user: &str, n: usize) -> usize {
    let mut c = h.session(user, &format!("{user}-password")).await;
    for i in 0..n {
        let body = format!("Subject: {i}\r\n\r\nx\r\n");
        let r = c
            .send_mail("m@shop.example", &["rcpt@example.org"], &body)
            .await;
        if r.code != 250 {
            assert_eq!(r.code, 450, "{r:?}");
            assert!(r.text.contains("messages_per_hour"), "{r:?}");
            return i;
        }
    }
    n
}

/// Sends messages in sessions of 50 (under max_messages_per_session) until the
/// message limit refuses one; how many were accepted.
pub async fn send_until_refused(h: &Harness, user: &str) -> usize {
    let mut total = 0;
    loop {
        let n = send_many(h, user, 50).await;
        total += n;
        if n < 50 {
            return total;
        }
    }
}

/// `f()` once it equals `want`, or its last value after 10 s (polled every 100 ms).
pub async fn eventually<T: PartialEq>(want: T, f: impl Fn() -> T) -> T {
    let deadline = tokio::time::Instant::now() + W;
    loop {
        let now = f();
        if now == want || tokio::time::Instant::now() > deadline {
            return now;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
