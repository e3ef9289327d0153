//! Cluster mode: two Postern instances sharing one private redis-server.

mod common;

use common::client::Client;
use common::redis::Redis;
use common::{Harness, Setup, TestUser, have};
use std::sync::Arc;
use std::time::Duration;

const W: Duration = Duration::from_secs(10);

fn shop() -> TestUser {
    TestUser {
        extra: "    rate_limits: { messages_per_hour: 10, recipients_per_hour: 100 }\n",
        ..TestUser::new("shop", "shop-password", &["@shop.example"])
    }
}

/// An instance of the cluster on `redis`, with `users` and extra config.
async fn instance(redis: &Redis, users: Vec<TestUser>, extra: &str) -> Harness {
    Harness::start(Setup {
        users,
        extra: format!("{}{extra}", redis.cluster_yaml()),
        ..Setup::default()
    })
    .await
}

/// Sends one message as `user` through `h`; the reply code at the end (or at the
/// first refusal).
async fn send(h: &Harness, user: &str, password: &str, from: &str) -> u16 {
    let mut c = h.session(user, password).await;
    c.send_mail(from, &["rcpt@example.org"], "Subject: hi\r\n\r\nx\r\n")
        .await
        .code
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quota_is_exact_across_instances_and_survives_a_restart() {
    if !have("redis-server") {
        return;
    }
    let redis = Redis::start();
    let meter = || TestUser {
        extra: "    rate_limits: { messages_per_hour: 10, recipients_per_day: 100 }\n",
        ..TestUser::new("meter", "meter-password", &["m@shop.example"])
    };
    let a = Arc::new(instance(&redis, vec![shop(), meter()], "").await);
    let b = Arc::new(instance(&redis, vec![shop(), meter()], "").await);
    assert!(a.wait_log("cluster: Redis reachable", W).await);
    // 20 transactions at once, half on each instance, against a limit of 10.
    let barrier = Arc::new(tokio::sync::Barrier::new(20));
    let mut tasks = Vec::new();
    for i in 0..20 {
        let h = if i % 2 == 0 { a.clone() } else { b.clone() };
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move {
            let mut c = h.session("shop", "shop-password").await;
            barrier.wait().await;
            let r = c
                .send_mail(
                    "orders@shop.example",
                    &["rcpt@example.org"],
                    &format!("Subject: {i}\r\n\r\nx\r\n"),
                )
                .await;
            r.code
        }));
    }
    let mut codes = Vec::new();
    for t in tasks {
        codes.push(t.await.unwrap());
    }
    let accepted = codes.iter().filter(|&&c| c == 250).count();
    let limited = codes.iter().filter(|&&c| c == 450).count();
    assert_eq!((accepted, limited), (10, 10), "{codes:?}");
    let delivered = a.sink.messages().len() + b.sink.messages().len();
    assert_eq!(delivered, 10);
    assert_eq!(redis.cli(&["HGET", "test:{u:shop}:q:rh", "#"]).trim(), "10");
    // The common path costs two round trips: MAIL reserves the message and one
    // recipient ahead, the end of DATA commits; RCPT asks nothing.
    let mut c = a.session("meter", "meter-password").await;
    redis.cli(&["CONFIG", "RESETSTAT"]);
    let r = c
        .send_mail("m@shop.example", &["rcpt@example.org"], "x\r\n")
        .await;
    assert_eq!(r.code, 250);
    let stats = redis.cli(&["INFO", "commandstats"]);
    assert_eq!(redis.calls("evalsha"), 2, "{stats}");
    assert_eq!(redis.calls("eval"), 0, "{stats}");
    // The counts live in Redis: a restarted instance still refuses.
    let mut a = Arc::try_unwrap(a).ok().expect("no other owner");
    a.terminate();
    a.launch().await;
    assert!(a.wait_log("cluster: Redis reachable", W).await);
    assert_eq!(
        send(&a, "shop", "shop-password", "x@shop.example").await,
        450
    );
    // Every reservation was committed or given back; ten messages are counted.
    assert_eq!(
        redis.cli(&["HGET", "test:{u:shop}:q:res", "#m"]).trim(),
        "0"
    );
    assert_eq!(redis.cli(&["HGET", "test:{u:shop}:q:mh", "#"]).trim(), "10");
    assert!(!a.logs().iter().any(|l| l.contains("Redis unreachable")));
}

/// Opens a session on `h`'s implicit-TLS port from `source` and logs in; the
/// client and the AUTH reply code.
async fn login_from(h: &Harness, source: &str, user: &str, password: &str) -> (Client, u16) {
    let mut c = Client::connect_tls_from(h.implicit, source.parse().unwrap(), &h.ca_pem()).await;
    c.expect("EHLO client.test", 250).await;
    let code = c.auth_plain(user, password).await.code;
    (c, code)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_suspension_on_one_instance_stops_the_other_within_two_seconds() {
    if !have("redis-server") {
        return;
    }
    let redis = Redis::start();
    let brake = "abuse:\n  max_ips_per_user_per_hour: 1\n";
    let user = || TestUser::new("wp", "wp-password", &["@wp.example"]);
    let a = instance(&redis, vec![user()], brake).await;
    let b = instance(&redis, vec![user()], brake).await;
    assert!(b.wait_log("cluster: Redis reachable", W).await);
    // A session open on B before anything happens.
    let (mut open, code) = login_from(&b, "127.0.0.1", "wp", "wp-password").await;
    assert_eq!(code, 235);
    open.expect("MAIL FROM:<x@wp.example>", 250).await;
    open.expect("RSET", 250).await;
    // Two addresses within the hour on A: the brake suspends the user there.
    let (_c, code) = login_from(&a, "127.0.0.1", "wp", "wp-password").await;
    assert_eq!(code, 235);
    let (_c, code) = login_from(&a, "127.0.0.2", "wp", "wp-password").await;
    assert_eq!(code, 535);
    let suspended_at = std::time::Instant::now();
    // B's open session loses its login at its next MAIL, within two seconds.
    loop {
        let r = open.cmd("MAIL FROM:<x@wp.example>").await;
        if r.code == 530 {
            break;
        }
        assert_eq!(r.code, 250, "{r:?}");
        open.expect("RSET", 250).await;
        assert!(
            suspended_at.elapsed() < Duration::from_secs(2),
            "still open on B after two seconds"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_c, code) = login_from(&b, "127.0.0.1", "wp", "wp-password").await;
    assert_eq!(code, 535, "a new login on B is refused too");
    assert!(b.wait_log("user is suspended", W).await);
    // `postern user enable` on A lifts it everywhere.
    let (ok, out) = common::cli(&a, &["user", "enable", "wp"]);
    assert!(ok, "{out}");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let (_c, code) = login_from(&b, "127.0.0.1", "wp", "wp-password").await;
        if code == 235 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "still suspended on B");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_failures_spread_over_both_instances_reach_the_block() {
    if !have("redis-server") {
        return;
    }
    let redis = Redis::start();
    let abuse = "abuse:\n  auth_tarpit_after: 100\n  auth_block_ip_after: 4\n";
    let user = || TestUser::new("wp", "wp-password", &["@wp.example"]);
    let a = instance(&redis, vec![user()], abuse).await;
    let b = instance(&redis, vec![user()], abuse).await;
    assert!(b.wait_log("cluster: Redis reachable", W).await);
    // The same stale password on both counts once.
    for h in [&a, &b, &a] {
        let (_c, code) = login_from(h, "127.0.0.1", "wp", "stale").await;
        assert_eq!(code, 535);
    }
    // Three more distinct guesses, alternating: two on each instance would never
    // block in memory; together they reach four.
    for (i, h) in [&b, &a].into_iter().enumerate() {
        let (_c, code) = login_from(h, "127.0.0.1", "wp", &format!("guess{i}")).await;
        assert_eq!(code, 535);
    }
    let (mut c, code) = login_from(&b, "127.0.0.1", "wp", "guess-last").await;
    assert_eq!(code, 535);
    let r = c.read_reply().await;
    assert_eq!(r.code, 421, "the fourth distinct failure blocks: {r:?}");
    for h in [&a, &b] {
        let (_c, code) = login_from(h, "127.0.0.1", "wp", "wp-password").await;
        assert_eq!(
            code, 421,
            "blocked on both instances, even with the password"
        );
    }
    // Another address is not blocked.
    let (_c, code) = login_from(&a, "127.0.0.2", "wp", "wp-password").await;
    assert_eq!(code, 235);
    assert!(a.wait_log("address blocked", W).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pacing_is_shared_by_every_instance_that_sends_through_one_entry() {
    if !have("redis-server") {
        return;
    }
    let redis = Redis::start();
    let paced = "max_messages_per_minute: 60";
    let user = || TestUser::new("wp", "wp-password", &["@wp.example"]);
    let a = Harness::start(Setup {
        users: vec![user()],
        extra: redis.cluster_yaml(),
        smarthost_yaml: Some(format!(
            "smarthost:\n  address: \"localhost:{{SINK}}\"\n  tls: starttls\n  ca_file: ca.pem\n  username: {}\n  password_file: smarthost.secret\n  {paced}\n",
            common::RELAY_USER,
        )),
        ..Setup::default()
    })
    .await;
    // B sends through A's stand-in smarthost: the same entry, the same pace.
    let b = Harness::start(Setup {
        users: vec![user()],
        extra: redis.cluster_yaml(),
        files: vec![("a-ca.pem", a.ca_pem())],
        smarthost_yaml: Some(format!(
            "smarthost:\n  address: \"localhost:{}\"\n  tls: starttls\n  ca_file: a-ca.pem\n  username: {}\n  password_file: smarthost.secret\n  {paced}\n",
            a.sink.addr.port(),
            common::RELAY_USER,
        )),
        ..Setup::default()
    })
    .await;
    assert!(b.wait_log("cluster: Redis reachable", W).await);
    for h in [&a, &b, &a, &b] {
        assert_eq!(send(h, "wp", "wp-password", "x@wp.example").await, 250);
    }
    let mut at: Vec<_> = a.sink.messages().iter().map(|m| m.received_at).collect();
    assert_eq!(at.len(), 4);
    at.sort();
    for w in at.windows(2) {
        let gap = w[1] - w[0];
        assert!(
            gap >= Duration::from_millis(900),
            "{gap:?} between two messages at 60 a minute"
        );
    }
    let key = redis.cli(&["KEYS", "test:{p:*"]);
    assert!(
        key.contains(&format!("localhost%3A{}", a.sink.addr.port())),
        "{key}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_redis_mail_flows_and_sharing_resumes_when_it_returns() {
    if !have("redis-server") {
        return;
    }
    let mut redis = Redis::start();
    let user = || TestUser {
        extra: "    rate_limits: { messages_per_hour: 2 }\n",
        ..TestUser::new("wp", "wp-password", &["@wp.example"])
    };
    let metrics_port = common::free_port();
    let a = instance(
        &redis,
        vec![user()],
        &format!("metrics:\n  address: \"127.0.0.1:{metrics_port}\"\n"),
    )
    .await;
    let b = instance(&redis, vec![user()], "").await;
    assert!(b.wait_log("cluster: Redis reachable", W).await);
    assert!(
        metric(metrics_port)
            .await
            .contains("postern_cluster_redis_up 1")
    );
    redis.kill();
    // Redis gone: the mail goes on, answered from memory, promptly and never 5xx.
    let started = std::time::Instant::now();
    assert_eq!(send(&a, "wp", "wp-password", "x@wp.example").await, 250);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert!(a.wait_log("cluster: Redis unreachable", W).await);
    assert!(
        metric(metrics_port)
            .await
            .contains("postern_cluster_redis_up 0")
    );
    // Redis back (empty: it kept nothing): both instances share again.
    redis.launch();
    assert!(a.wait_log("cluster: Redis reachable; quotas", W).await);
    for h in [&a, &b] {
        let deadline = std::time::Instant::now() + W;
        while h
            .logs()
            .iter()
            .filter(|l| l.contains("cluster: Redis reachable"))
            .count()
            < 2
        {
            assert!(
                std::time::Instant::now() < deadline,
                "not back to shared state"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    assert_eq!(send(&a, "wp", "wp-password", "x@wp.example").await, 250);
    assert_eq!(send(&b, "wp", "wp-password", "x@wp.example").await, 250);
    // B has sent one message itself; only the shared count refuses the next.
    assert_eq!(send(&b, "wp", "wp-password", "x@wp.example").await, 450);
    assert!(
        metric(metrics_port)
            .await
            .contains("postern_cluster_redis_up 1")
    );
}

/// The Prometheus page of an instance.
async fn metric(port: u16) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = String::new();
    tokio::time::timeout(W, s.read_to_string(&mut out))
        .await
        .unwrap()
        .unwrap();
    out
}

/// A private HAProxy in front of `backends` (implicit-TLS address, metrics port):
/// TCP mode, PROXY v2 to Postern, health checks on `/healthz` (not SMTP sessions).
struct Haproxy {
    port: u16,
    child: std::process::Child,
    _dir: tempfile::TempDir,
}

impl Haproxy {
    fn start(backends: &[(std::net::SocketAddr, u16)]) -> Haproxy {
        let dir = tempfile::tempdir().unwrap();
        let port = common::free_port();
        let mut cfg = format!(
            "global\n  maxconn 200\n\
             defaults\n  mode tcp\n  timeout connect 2s\n  timeout client 30s\n  timeout server 30s\n\
             frontend submissions\n  bind 127.0.0.1:{port}\n  default_backend postern\n\
             backend postern\n  balance roundrobin\n  option httpchk GET /healthz\n"
        );
        for (i, (smtp, metrics)) in backends.iter().enumerate() {
            cfg.push_str(&format!(
                "  server p{i} {smtp} send-proxy-v2 check port {metrics} inter 500ms\n"
            ));
        }
        let path = dir.path().join("haproxy.cfg");
        std::fs::write(&path, cfg).unwrap();
        let child = std::process::Command::new("haproxy")
            .arg("-db")
            .arg("-f")
            .arg(&path)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("haproxy runs");
        Haproxy {
            port,
            child,
            _dir: dir,
        }
    }

    fn addr(&self) -> std::net::SocketAddr {
        ([127, 0, 0, 1], self.port).into()
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Logs in through HAProxy from `source`; the AUTH reply code, or the code of the
/// reply that closed the session.
async fn login_via(lb: &Haproxy, ca: &str, source: &str, password: &str) -> u16 {
    let mut c = Client::connect_tls_from(lb.addr(), source.parse().unwrap(), ca).await;
    assert_eq!(c.greeting.code, 220, "{:?}", c.greeting);
    c.expect("EHLO client.test", 250).await;
    c.auth_plain("wp", password).await.code
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_haproxy_per_address_limits_see_the_client() {
    if !have("redis-server") || !have("haproxy") {
        return;
    }
    let redis = Redis::start();
    let mut instances = Vec::new();
    for _ in 0..2 {
        let metrics = common::free_port();
        let h = Harness::start(Setup {
            users: vec![TestUser::new("wp", "wp-password", &["@wp.example"])],
            extra: format!(
                "{}metrics:\n  address: \"127.0.0.1:{metrics}\"\nabuse:\n  auth_tarpit_after: 100\n  auth_block_ip_after: 3\n",
                redis.cluster_yaml()
            ),
            proxy_from: Some("127.0.0.1/32"),
            ..Setup::default()
        })
        .await;
        assert!(h.wait_log("cluster: Redis reachable", W).await);
        instances.push((h, metrics));
    }
    let lb = Haproxy::start(
        &instances
            .iter()
            .map(|(h, m)| (h.implicit, *m))
            .collect::<Vec<_>>(),
    );
    // Each instance has its own test CA; the client trusts both.
    let pem = format!("{}{}", instances[0].0.ca_pem(), instances[1].0.ca_pem());
    // HAProxy up and both servers healthy (checks every 500 ms on /healthz).
    let deadline = std::time::Instant::now() + W;
    while tokio::net::TcpStream::connect(lb.addr()).await.is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "HAProxy did not start"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for _ in 0..2 {
        assert_eq!(login_via(&lb, &pem, "127.0.0.3", "wp-password").await, 235);
    }
    // Three wrong passwords from 127.0.0.2, spread by HAProxy over both instances.
    for i in 0..3 {
        assert_eq!(
            login_via(&lb, &pem, "127.0.0.2", &format!("guess{i}")).await,
            535
        );
    }
    // 127.0.0.2 is blocked on whichever instance it reaches...
    for _ in 0..2 {
        assert_eq!(login_via(&lb, &pem, "127.0.0.2", "wp-password").await, 421);
    }
    // ...and 127.0.0.3, the same HAProxy in between, is not.
    for _ in 0..2 {
        assert_eq!(login_via(&lb, &pem, "127.0.0.3", "wp-password").await, 235);
    }
    let logs: Vec<String> = instances.iter().flat_map(|(h, _)| h.logs()).collect();
    assert!(
        logs.iter()
            .any(|l| l.contains("127.0.0.2") && l.contains("authentication failed"))
    );
    // Both instances served some of it (round robin).
    for (h, _) in &instances {
        assert!(h.logs().iter().any(|l| l.contains("authentication failed")
            || l.contains("address blocked")
            || l.contains("AUTH refused")));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_uses_tls_with_ring() {
    if !have("redis-server") {
        return;
    }
    let ca = postern::tls::TestCa::new("redis CA").unwrap();
    let redis = Redis::start_tls(&ca);
    let ca_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(ca_file.path(), &ca.cert_pem).unwrap();
    let user = TestUser {
        extra: "    rate_limits: { messages_per_hour: 1 }\n",
        ..TestUser::new("wp", "wp-password", &["@wp.example"])
    };
    // The system's trust roots, here only the test CA (rustls-native-certs reads
    // SSL_CERT_FILE).
    let h = Harness::start(Setup {
        users: vec![user],
        extra: format!("cluster:\n  redis: rediss://localhost:{}/0\n", redis.port),
        env: vec![("SSL_CERT_FILE", ca_file.path().display().to_string())],
        ..Setup::default()
    })
    .await;
    assert!(
        h.wait_log("cluster: Redis reachable", W).await,
        "{}",
        h.logs().join("\n")
    );
    assert_eq!(send(&h, "wp", "wp-password", "x@wp.example").await, 250);
    assert_eq!(send(&h, "wp", "wp-password", "x@wp.example").await, 450);
    assert!(!h.logs().iter().any(|l| l.contains("Redis unreachable")));
}

/// A state file from before cluster mode: `wp` suspended.
fn suspended_before(dir: &std::path::Path) {
    std::fs::create_dir_all(dir.join("spool")).unwrap();
    common::write(
        &dir.join("spool/suspended.yaml"),
        "suspended:\n  wp:\n    reason: suspended before cluster mode\n    since: 1\n",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn turning_cluster_mode_on_shares_the_suspensions_already_there() {
    if !have("redis-server") {
        return;
    }
    let redis = Redis::start();
    let user = || TestUser::new("wp", "wp-password", &["@wp.example"]);
    let a = Harness::start(Setup {
        users: vec![user()],
        extra: redis.cluster_yaml(),
        before_launch: Some(suspended_before),
        ..Setup::default()
    })
    .await;
    assert!(a.wait_log("cluster: Redis reachable", W).await);
    let b = instance(&redis, vec![user()], "").await;
    let deadline = std::time::Instant::now() + W;
    while !redis
        .cli(&["HGET", "test:suspensions", "wp"])
        .contains("before cluster")
    {
        assert!(std::time::Instant::now() < deadline, "not shared");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_c, code) = login_from(&b, "127.0.0.1", "wp", "wp-password").await;
    assert_eq!(code, 535, "suspended on B too");
    let (_c, code) = login_from(&a, "127.0.0.1", "wp", "wp-password").await;
    assert_eq!(code, 535, "still suspended on A");
}
