//! Cluster mode far from a limit: an instance takes room for several messages
//! ahead (a grant), so most messages ask Redis nothing, and what it sent is
//! counted in Redis shortly after and at shutdown. Near a limit the room taken
//! ahead never lets the instances overshoot, and room one instance took and did
//! not use comes back.

mod common;

use common::quota::{field, instance, send_many, two_instances, user};
use common::redis::Redis;
use common::{Harness, Setup, have};
use std::sync::Arc;
use std::time::Duration;

const W: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn far_from_its_limit_most_messages_ask_redis_nothing_and_all_are_counted() {
    if !have("redis-server") {
        return;
    }
    let redis = Redis::start();
    let bulk = || {
        user(
            "bulk",
            "bulk-password",
            "    rate_limits: { messages_per_hour: 100000, recipients_per_day: 100000 }\n",
        )
    };
    let mut a = instance(&redis, vec![bulk()]).await;
    redis.cli(&["CONFIG", "RESETSTAT"]);
    assert_eq!(send_many(&a, "bulk", 40).await, 40);
    // Two calls per message before grants: 80. Now one grant (a reserve) and a
    // settle every 200 ms while they were sent.
    let scripts = redis.calls("evalsha") + redis.calls("eval");
    assert!(scripts <= 20, "{scripts} script calls for 40 messages");
    assert_eq!(a.sink.messages().len(), 40);
    // A graceful stop settles everything: all 40 counted, nothing still held.
    assert!(a.terminate().success());
    assert_eq!(field(&redis, "bulk", "mh", "#"), 40);
    assert_eq!(field(&redis, "bulk", "rd", "#"), 40);
    assert_eq!(field(&redis, "bulk", "res", "#m"), 0);
    assert_eq!(field(&redis, "bulk", "res", "#r"), 0);
    // Without a stop, a running instance settles within its settling period.
    a.launch().await;
    assert!(a.wait_log("cluster: Redis reachable", W).await);
    assert_eq!(send_many(&a, "bulk", 5).await, 5);
    tokio::time::sleep(Duration::from_millis(1600)).await;
    assert_eq!(field(&redis, "bulk", "mh", "#"), 45);
    assert_eq!(field(&redis, "bulk", "res", "#m"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn near_a_limit_room_taken_ahead_never_overshoots_and_comes_back() {
    if !have("redis-server") {
        return;
    }
    let redis = Redis::start();
    // 300 an hour: room is taken ahead only while more than 128 remain.
    let limits = "    rate_limits: { messages_per_hour: 300 }\n";
    let (a, b) = two_instances(&redis, || user("meter", "meter-password", limits)).await;
    // 40 connections at once, half on each instance, 10 messages each: 400
    // attempts against 300.
    let barrier = Arc::new(tokio::sync::Barrier::new(40));
    let mut tasks = Vec::new();
    for i in 0..40 {
        let h = if i % 2 == 0 { a.clone() } else { b.clone() };
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            send_many(&h, "meter", 10).await
        }));
    }
    let mut accepted = 0;
    for t in tasks {
        accepted += t.await.unwrap();
    }
    let delivered = a.sink.messages().len() + b.sink.messages().len();
    assert_eq!(delivered, accepted);
    assert!(
        accepted <= 300,
        "{accepted} accepted against a limit of 300"
    );
    // Room still held by a grant goes back within about a second; then the rest
    // of the quota can be used, from either instance, and not one message more.
    tokio::time::sleep(Duration::from_millis(1600)).await;
    let mut more = 0;
    for i in 0..120 {
        let h = if i % 2 == 0 { &a } else { &b };
        match send_many(h, "meter", 1).await {
            1 => more += 1,
            _ => break,
        }
    }
    assert_eq!(accepted + more, 300, "{accepted} at once, then {more}");
    assert_eq!(
        a.sink.messages().len() + b.sink.messages().len(),
        300,
        "every accepted message was relayed once"
    );
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(field(&redis, "meter", "mh", "#"), 300);
    assert_eq!(field(&redis, "meter", "res", "#m"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_null_sender_message_drawing_on_room_taken_ahead_counts_against_its_domain() {
    if !have("redis-server") {
        return;
    }
    let redis = Redis::start();
    let bulk = user(
        "bulk",
        "bulk-password",
        "    rate_limits: { messages_per_hour: 100000 }\n",
    );
    let file = common::users_yaml(std::slice::from_ref(&bulk))
        + "domains:\n  - name: shop.example\n    rate_limits: { messages_per_hour: 3 }\n";
    let mut a = Harness::start(Setup {
        users: vec![bulk],
        files: vec![("users.yaml", file)],
        extra: redis.cluster_yaml(),
        ..Setup::default()
    })
    .await;
    assert!(a.wait_log("cluster: Redis reachable", W).await);
    // The user is far from its limit (room taken ahead); the domain, known only
    // from the header From, is reserved at the end of DATA: 3 of 5 go.
    let mut c = a.session("bulk", "bulk-password").await;
    let mut codes = Vec::new();
    for i in 0..5 {
        let body = format!("From: news@shop.example\r\nSubject: {i}\r\n\r\nx\r\n");
        codes.push(c.send_mail("", &["rcpt@example.org"], &body).await.code);
    }
    assert_eq!(codes, [250, 250, 250, 450, 450]);
    assert_eq!(a.sink.messages().len(), 3);
    let domain = |k: &str, f: &str| {
        let v = redis.cli(&["HGET", &format!("test:{{d:shop.example}}:q:{k}"), f]);
        v.trim().parse::<i64>().unwrap_or(0)
    };
    // The domain's count is kept at once; the user's with its grant.
    assert_eq!(domain("mh", "#"), 3);
    assert!(a.terminate().success());
    assert_eq!(field(&redis, "bulk", "mh", "#"), 3);
    assert_eq!(field(&redis, "bulk", "res", "#m"), 0);
    assert_eq!((domain("res", "#m"), domain("res", "#r")), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn near_a_message_limit_mail_reserves_one_recipient_ahead_not_a_grants_worth() {
    if !have("redis-server") {
        return;
    }
    let redis = Redis::start();
    // Near the message limit (no grant), far from the recipient limit.
    let small = user(
        "small",
        "small-password",
        "    rate_limits: { messages_per_hour: 10, recipients_per_day: 100000 }\n",
    );
    let a = instance(&redis, vec![small]).await;
    let mut c = a.session("small", "small-password").await;
    c.expect("MAIL FROM:<m@shop.example>", 250).await;
    let held = (
        field(&redis, "small", "res", "#m"),
        field(&redis, "small", "res", "#r"),
    );
    c.expect("RSET", 250).await;
    assert_eq!(
        held,
        (1, 1),
        "(messages, recipients) held by one MAIL near a limit"
    );
}
