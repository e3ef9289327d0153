//! Cluster mode when Redis fails a settle (the call that counts what was sent
//! and gives back unused room), and mixed transaction endings on two instances:
//! every accepted message counted once, no room left held, no limit exceeded.

mod common;

use common::quota::{eventually, field, instance, send_until_refused, two_instances, user};
use common::redis::Redis;
use common::{Harness, have};
use std::time::Duration;

/// Sends one message as `user`; just before its final dot, `break_redis` runs
/// (on one redis-cli connection; every reply must be OK), and `mend` runs 1.8 s
/// later. Checks that Postern saw Redis fail meanwhile.
async fn send_across(h: &Harness, redis: &Redis, user: &str, break_redis: &str, mend: &str) {
    let outages = || {
        let logs = h.logs();
        logs.iter()
            .filter(|l| l.contains("cluster: Redis unreachable"))
            .count()
    };
    let before = outages();
    let mut c = h.session(user, &format!("{user}-password")).await;
    c.expect("MAIL FROM:<m@shop.example>", 250).await;
    c.expect("RCPT TO:<a@example.org>", 250).await;
    c.expect("DATA", 354).await;
    c.send_raw(b"Subject: across\r\n\r\nx\r\n").await;
    let replies = redis.cli_batch(break_redis);
    assert!(
        replies.iter().all(|r| r == "OK"),
        "{break_redis}: {replies:?}"
    );
    c.send_raw(b".\r\n").await;
    assert_eq!(
        c.read_reply().await.code,
        250,
        "an outage is never a refusal"
    );
    tokio::time::sleep(Duration::from_millis(1800)).await;
    redis.cli_batch(mend);
    assert!(outages() > before, "{user}: Postern never saw Redis fail");
}

/// `(counted this hour, messages held, recipients held)` for `user`, once they
/// are `want` or after 10 s.
async fn counts(redis: &Redis, user: &str, want: (i64, i64, i64)) -> (i64, i64, i64) {
    let f = |k, n| field(redis, user, k, n);
    eventually(want, || (f("mh", "#"), f("res", "#m"), f("res", "#r"))).await
}

/// Redis and one instance with two users: `far` (200 messages an hour: a
/// message draws on a grant) and `near` (10: counted at the end of DATA).
async fn far_and_near() -> (Redis, Harness) {
    let redis = Redis::start();
    let users = vec![
        user(
            "far",
            "far-password",
            "    rate_limits: { messages_per_hour: 200 }\n",
        ),
        user(
            "near",
            "near-password",
            "    rate_limits: { messages_per_hour: 10 }\n",
        ),
    ];
    let a = instance(&redis, users).await;
    (redis, a)
}

/// Runs every lease of `user` out (as if 15 minutes had passed).
fn run_leases_out(redis: &Redis, user: &str) {
    let lease = format!("test:{{u:{user}}}:q:lease");
    for id in redis.cli(&["ZRANGE", &lease, "0", "-1"]).lines() {
        if !id.trim().is_empty() {
            redis.cli(&["ZADD", &lease, "1", id.trim()]);
        }
    }
}

/// Redis refusing scripts for 1.8 s as a message ends: its count is made again
/// once Redis is back, so it is not lost, and nothing stays held; after every
/// lease has run out the user can still send exactly the rest of the limit.
/// Far from the limit (200: the message draws on a grant, counted in the
/// background) and near it (10: counted at the end of DATA).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_settle_redis_refused_is_made_again_and_nothing_is_lost() {
    if !have("redis-server") {
        return;
    }
    let (redis, a) = far_and_near().await;
    for (name, limit) in [("far", 200), ("near", 10)] {
        let deny = "ACL SETUSER default -@scripting\n";
        send_across(&a, &redis, name, deny, "ACL SETUSER default +@all\n").await;
        assert_eq!(
            counts(&redis, name, (1, 0, 0)).await,
            (1, 0, 0),
            "{name}: counted, held"
        );
        run_leases_out(&redis, name);
        let more = send_until_refused(&a, name).await;
        assert_eq!(1 + more, limit, "{name}: accepted within the hour");
    }
    assert!(
        a.logs()
            .iter()
            .any(|l| l.contains("cluster: Redis unreachable"))
    );
}

/// Redis answering a settle only after this instance gave up waiting (writes
/// paused for 1.5 s, three times its timeout): the call is made again, and
/// Redis, which then runs every copy, counts the message once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_settle_answered_too_late_and_made_again_counts_once() {
    if !have("redis-server") {
        return;
    }
    let (redis, a) = far_and_near().await;
    for name in ["far", "near"] {
        send_across(&a, &redis, name, "CLIENT PAUSE 1500 WRITE\n", "PING\n").await;
        // Once every copy has run (and a little longer), still one.
        assert_eq!(
            counts(&redis, name, (1, 0, 0)).await,
            (1, 0, 0),
            "{name}: counted, held"
        );
        tokio::time::sleep(Duration::from_millis(1000)).await;
        assert_eq!(
            counts(&redis, name, (1, 0, 0)).await,
            (1, 0, 0),
            "{name}: counted once"
        );
    }
}

/// Two instances, concurrent sessions mixing sent messages, RSET,
/// recipients refused by the smarthost, messages refused after DATA and
/// connections dropped mid-transaction. Once idle: every accepted message and
/// recipient counted once, nothing held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_endings_on_two_instances_leave_exact_counts() {
    if !have("redis-server") {
        return;
    }
    let redis = Redis::start();
    let limits = "    rate_limits: { messages_per_hour: 100000, recipients_per_day: 100000 }\n";
    let (a, b) = two_instances(&redis, || user("bulk", "bulk-password", limits)).await;
    let mut tasks = Vec::new();
    for i in 0..12 {
        let h = if i % 2 == 0 { a.clone() } else { b.clone() };
        tasks.push(tokio::spawn(async move {
            let (mut msgs, mut rcpts) = (0u32, 0u32);
            let mut c = h.session("bulk", "bulk-password").await;
            for j in 0..20 {
                match (i + j) % 6 {
                    0 => {
                        let r = c
                            .send_mail(
                                "m@shop.example",
                                &["a@example.org", "b@example.org"],
                                "Subject: x\r\n\r\nx\r\n",
                            )
                            .await;
                        assert_eq!(r.code, 250, "{r:?}");
                        msgs += 1;
                        rcpts += 2;
                    }
                    1 => {
                        c.expect("MAIL FROM:<m@shop.example>", 250).await;
                        c.expect("RCPT TO:<a@example.org>", 250).await;
                        c.expect("RSET", 250).await;
                    }
                    2 => {
                        // One recipient refused by the smarthost, one sent.
                        c.expect("MAIL FROM:<m@shop.example>", 250).await;
                        c.expect("RCPT TO:<reject550@example.org>", 550).await;
                        c.expect("RCPT TO:<a@example.org>", 250).await;
                        c.expect("DATA", 354).await;
                        c.send_raw(b"Subject: y\r\n\r\ny\r\n.\r\n").await;
                        assert_eq!(c.read_reply().await.code, 250);
                        msgs += 1;
                        rcpts += 1;
                    }
                    3 => {
                        // Refused by the smarthost after DATA.
                        let r = c
                            .send_mail(
                                "m@shop.example",
                                &["a@example.org"],
                                "X-Sink-Reply: 554\r\nSubject: z\r\n\r\nz\r\n",
                            )
                            .await;
                        assert_ne!(r.code, 250, "{r:?}");
                    }
                    4 => {
                        // Dropped mid-DATA; a new connection goes on.
                        c.expect("MAIL FROM:<m@shop.example>", 250).await;
                        c.expect("RCPT TO:<a@example.org>", 250).await;
                        c.expect("DATA", 354).await;
                        c.send_raw(b"Subject: half\r\n").await;
                        drop(c);
                        c = h.session("bulk", "bulk-password").await;
                    }
                    _ => {
                        let r = c
                            .send_mail(
                                "m@shop.example",
                                &["a@example.org"],
                                "Subject: w\r\n\r\nw\r\n",
                            )
                            .await;
                        assert_eq!(r.code, 250, "{r:?}");
                        msgs += 1;
                        rcpts += 1;
                    }
                }
            }
            (msgs, rcpts)
        }));
    }
    let (mut msgs, mut rcpts) = (0, 0);
    for t in tasks {
        let (m, r) = t.await.unwrap();
        msgs += m;
        rcpts += r;
    }
    assert_eq!(
        a.sink.messages().len() + b.sink.messages().len(),
        msgs as usize
    );
    let f = |k, n| field(&redis, "bulk", k, n);
    let want = (msgs as i64, rcpts as i64, 0, 0);
    assert_eq!(
        eventually(want, || (
            f("mh", "#"),
            f("rd", "#"),
            f("res", "#m"),
            f("res", "#r")
        ))
        .await,
        want
    );
}

/// Near a recipient limit: 300 recipients an hour, no message limit
/// (so grants of messages are made, recipients asked one by one), two
/// instances, messages of three recipients with one refused by the smarthost
/// and RSETs in between. Never more than 300 recipients, all counted, none held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn near_a_recipient_limit_two_instances_never_overshoot() {
    if !have("redis-server") {
        return;
    }
    let redis = Redis::start();
    let limits = "    rate_limits: { recipients_per_hour: 300 }\n";
    let (a, b) = two_instances(&redis, || user("rcpt", "rcpt-password", limits)).await;
    let mut tasks = Vec::new();
    for i in 0..16 {
        let h = if i % 2 == 0 { a.clone() } else { b.clone() };
        tasks.push(tokio::spawn(async move {
            let mut sent_rcpts = 0u32;
            for j in 0..15 {
                let mut c = h.session("rcpt", "rcpt-password").await;
                c.expect("MAIL FROM:<m@shop.example>", 250).await;
                let mut ok = 0;
                for to in ["a@example.org", "reject550@example.org", "b@example.org"] {
                    let r = c.cmd(&format!("RCPT TO:<{to}>")).await;
                    if r.code == 250 {
                        ok += 1;
                    }
                }
                if j % 4 == 3 || ok == 0 {
                    c.expect("RSET", 250).await;
                    continue;
                }
                c.expect("DATA", 354).await;
                c.send_raw(b"Subject: r\r\n\r\nr\r\n.\r\n").await;
                assert_eq!(c.read_reply().await.code, 250);
                sent_rcpts += ok;
            }
            sent_rcpts
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    let delivered: usize = a
        .sink
        .messages()
        .iter()
        .chain(b.sink.messages().iter())
        .map(|m| m.rcpts.len())
        .sum();
    assert_eq!(delivered as u32, total);
    assert!(total <= 300, "{total} recipients against 300");
    let f = |k, n| field(&redis, "rcpt", k, n);
    let want = (total as i64, 0, 0);
    let now = eventually(want, || (f("rh", "#"), f("res", "#m"), f("res", "#r"))).await;
    assert_eq!(now, want);
}
