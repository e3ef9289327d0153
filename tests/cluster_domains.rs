//! Per-domain limits in cluster mode: two Postern instances, one redis-server.
//! A domain's quota is one across both instances, exact under concurrency, and
//! costs no extra round trip on the common path.

mod common;

use common::redis::Redis;
use common::{Harness, Setup, TestUser, have, users_yaml};
use std::sync::Arc;
use std::time::Duration;

const W: Duration = Duration::from_secs(10);

fn users() -> Vec<TestUser> {
    vec![
        TestUser {
            // Near its limits (under 128 left), so that every message asks Redis
            // and the round trips below are exact; far from every limit an
            // instance takes room ahead instead (tests/cluster_grants.rs).
            extra: "    rate_limits: { messages_per_hour: 100, recipients_per_hour: 100 }\n",
            ..TestUser::new("site1-a", "a-password", &["@site1.example"])
        },
        TestUser::new("site1-b", "b-password", &["@site1.example"]),
    ]
}

async fn instance(redis: &Redis) -> Harness {
    let file = users_yaml(&users())
        + "domains:\n  - name: site1.example\n    rate_limits: { messages_per_hour: 5, recipients_per_day: 50 }\n";
    Harness::start(Setup {
        users: users(),
        files: vec![("users.yaml", file)],
        extra: redis.cluster_yaml(),
        ..Setup::default()
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_domain_quota_is_exact_across_instances_users_and_restarts() {
    if !have("redis-server") {
        return;
    }
    let redis = Redis::start();
    let a = Arc::new(instance(&redis).await);
    let b = Arc::new(instance(&redis).await);
    assert!(a.wait_log("cluster: Redis reachable", W).await);
    assert!(b.wait_log("cluster: Redis reachable", W).await);
    // 12 transactions at once: both users, both instances, against a limit of 5.
    let barrier = Arc::new(tokio::sync::Barrier::new(12));
    let mut tasks = Vec::new();
    for i in 0..12 {
        let h = if i % 2 == 0 { a.clone() } else { b.clone() };
        let (user, password) = match i % 4 < 2 {
            true => ("site1-a", "a-password"),
            false => ("site1-b", "b-password"),
        };
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move {
            let mut c = h.session(user, password).await;
            barrier.wait().await;
            let body = format!("Subject: {i}\r\n\r\nx\r\n");
            let r = c
                .send_mail("x@site1.example", &["r@example.org"], &body)
                .await;
            if r.code != 250 {
                assert!(r.text.contains("of domain site1.example (5)"), "{r:?}");
            }
            r.code
        }));
    }
    let mut codes = Vec::new();
    for t in tasks {
        codes.push(tokio::time::timeout(W, t).await.unwrap().unwrap());
    }
    let accepted = codes.iter().filter(|&&c| c == 250).count();
    let limited = codes.iter().filter(|&&c| c == 450).count();
    assert_eq!((accepted, limited), (5, 7), "{codes:?}");
    let delivered = a.sink.messages().len() + b.sink.messages().len();
    assert_eq!(delivered, 5);
    let key = |k: &str| format!("test:{{d:site1.example}}:q:{k}");
    assert_eq!(redis.cli(&["HGET", &key("mh"), "#"]).trim(), "5");
    assert_eq!(redis.cli(&["HGET", &key("rd"), "#"]).trim(), "5");
    // The counts live in Redis: a restarted instance still refuses, at MAIL and
    // (the null sender) at the end of DATA.
    let mut a = Arc::try_unwrap(a).ok().expect("no other owner");
    a.terminate();
    a.launch().await;
    assert!(a.wait_log("cluster: Redis reachable", W).await);
    let mut c = a.session("site1-b", "b-password").await;
    let r = c.cmd("MAIL FROM:<b@site1.example>").await;
    assert_eq!(r.code, 450, "{r:?}");
    let body = "From: b@site1.example\r\n\r\naway\r\n";
    let r = c.send_mail("", &["r@example.org"], body).await;
    assert_eq!(r.code, 450, "{r:?}");
    assert!(r.text.contains("of domain site1.example"), "{r:?}");
    // Every reservation was committed or given back, in users and domain alike
    // (site1-b has no limits of its own: room taken ahead for it goes back
    // within about a second).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for k in [
        key("res"),
        "test:{u:site1-a}:q:res".into(),
        "test:{u:site1-b}:q:res".into(),
    ] {
        assert_eq!(redis.cli(&["HGET", &k, "#m"]).trim(), "0", "{k}");
        assert_eq!(redis.cli(&["HGET", &k, "#r"]).trim(), "0", "{k}");
    }
    assert!(!a.logs().iter().any(|l| l.contains("Redis unreachable")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_domain_costs_no_extra_round_trip_and_the_null_sender_one() {
    if !have("redis-server") {
        return;
    }
    let redis = Redis::start();
    let a = instance(&redis).await;
    let b = instance(&redis).await;
    assert!(a.wait_log("cluster: Redis reachable", W).await);
    let mut c = a.session("site1-a", "a-password").await;
    let body = "From: a@site1.example\r\n\r\naway\r\n";
    // Once each first, so that Redis has every script (the first call loads it).
    for from in ["a@site1.example", ""] {
        let r = c.send_mail(from, &["r@example.org"], body).await;
        assert_eq!(r.code, 250, "{r:?}");
    }
    redis.cli(&["CONFIG", "RESETSTAT"]);
    let r = c
        .send_mail("a@site1.example", &["r@example.org"], "x\r\n")
        .await;
    assert_eq!(r.code, 250);
    let stats = redis.cli(&["INFO", "commandstats"]);
    // MAIL reserves user and domain (and one recipient ahead in both), the end
    // of DATA commits both: two round trips, as without a domain.
    assert_eq!(redis.calls("evalsha") + redis.calls("eval"), 2, "{stats}");
    // A null-sender message learns its domain from the header: one more.
    redis.cli(&["CONFIG", "RESETSTAT"]);
    let r = c.send_mail("", &["r@example.org"], body).await;
    assert_eq!(r.code, 250);
    let stats = redis.cli(&["INFO", "commandstats"]);
    assert_eq!(redis.calls("evalsha") + redis.calls("eval"), 3, "{stats}");
    // All four count on the other instance too: 1 left of 5.
    let mut d = b.session("site1-b", "b-password").await;
    for i in 0..1 {
        let r = d
            .send_mail("b@site1.example", &["r@example.org"], "x\r\n")
            .await;
        assert_eq!(r.code, 250, "message {i}: {r:?}");
    }
    let r = d.cmd("MAIL FROM:<b@site1.example>").await;
    assert_eq!(r.code, 450, "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_redis_a_domain_limit_holds_in_each_instances_memory() {
    if !have("redis-server") {
        return;
    }
    let mut redis = Redis::start();
    let a = instance(&redis).await;
    assert!(a.wait_log("cluster: Redis reachable", W).await);
    // Two counted in Redis, and in this instance's memory too.
    let mut c = a.session("site1-a", "a-password").await;
    for _ in 0..2 {
        let r = c
            .send_mail("a@site1.example", &["r@example.org"], "x\r\n")
            .await;
        assert_eq!(r.code, 250, "{r:?}");
    }
    redis.kill();
    // Redis gone: memory answers, from the two it knows: three more, then 450.
    let mut d = a.session("site1-b", "b-password").await;
    for i in 0..3 {
        let r = d
            .send_mail("b@site1.example", &["r@example.org"], "x\r\n")
            .await;
        assert_eq!(r.code, 250, "message {i}: {r:?}");
    }
    let r = d.cmd("MAIL FROM:<b@site1.example>").await;
    assert_eq!(r.code, 450, "{r:?}");
    assert!(r.text.contains("of domain site1.example (5)"), "{r:?}");
    assert!(a.wait_log("Redis unreachable", W).await);
}
