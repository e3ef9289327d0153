//! Per-user limits and abuse protection over real TLS sessions: one leaked password
//! must not burn a shared IP.

mod common;

use common::client::Client;
use common::{Harness, Setup, TestUser};
use std::net::IpAddr;
use std::process::Command;
use std::time::{Duration, Instant};

const W: Duration = Duration::from_secs(10);

fn esc(r: &postern::proto::reply::Reply) -> String {
    r.esc.map(|e| e.to_string()).unwrap_or_default()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

async fn login_from(h: &Harness, source: &str, user: &str, password: &str) -> (Client, u16) {
    let mut c = Client::connect_tls_from(h.implicit, ip(source), &h.ca_pem()).await;
    c.expect("EHLO client.test", 250).await;
    let code = c.auth_plain(user, password).await.code;
    (c, code)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_per_hour_from_the_users_file() {
    let h = Harness::start(Setup {
        users: vec![
            TestUser {
                extra: "    rate_limits: { messages_per_hour: 3 }\n",
                ..TestUser::new("wp", "wp-password", &["@wp.example"])
            },
            TestUser::new("other", "other-password", &["@other.example"]),
        ],
        extra: "rate_limits:\n  messages_per_hour: 100\n".into(),
        ..Setup::default()
    })
    .await;
    let mut c = h.session("wp", "wp-password").await;
    // A refused message costs nothing.
    let r = c
        .send_mail("a@wp.example", &["reject550@example.org"], "x\r\n")
        .await;
    assert_eq!(r.code, 550);
    c.expect("RSET", 250).await;
    for i in 0..3 {
        let r = c
            .send_mail(
                "a@wp.example",
                &["b@example.org"],
                &format!("Subject: {i}\r\n\r\nx\r\n"),
            )
            .await;
        assert_eq!(r.code, 250, "message {i}: {r:?}");
    }
    let r = c.cmd("MAIL FROM:<a@wp.example>").await;
    assert_eq!((r.code, esc(&r)), (450, "4.7.1".into()));
    assert!(r.text.contains("messages_per_hour (3)"), "{}", r.text);
    assert!(r.text.contains("resets in"), "{}", r.text);
    // Another user is not affected.
    let mut o = h.session("other", "other-password").await;
    assert_eq!(
        o.send_mail("o@other.example", &["b@example.org"], "x\r\n")
            .await
            .code,
        250
    );
    assert_eq!(h.sink.wait_for(4, W).await.len(), 4);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        h.sink.messages().len(),
        4,
        "the refused message was not forwarded"
    );
    assert!(h.wait_log("rate limit reached", W).await);
    let line = h
        .logs()
        .into_iter()
        .find(|l| l.contains("rate limit reached"))
        .unwrap();
    assert!(
        line.contains("user=wp")
            && line.contains("messages_per_hour")
            && line.contains("127.0.0.1"),
        "{line}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recipient_limits() {
    let h = Harness::start(Setup {
        extra: "limits:\n  max_recipients: 5\nrate_limits:\n  recipients_per_hour: 7\n".into(),
        ..Setup::default()
    })
    .await;
    let mut c = h.session("alice", "alice-password").await;
    c.expect("MAIL FROM:<a@alice.example>", 250).await;
    for i in 0..5 {
        c.expect(&format!("RCPT TO:<r{i}@example.org>"), 250).await;
    }
    let r = c.cmd("RCPT TO:<r5@example.org>").await;
    assert_eq!((r.code, esc(&r)), (452, "4.5.3".into()));
    c.expect("DATA", 354).await;
    c.send_raw(b"Subject: five\r\n\r\nx\r\n.\r\n").await;
    assert_eq!(c.read_reply().await.code, 250);
    // Two recipients of the hourly seven are left.
    c.expect("MAIL FROM:<a@alice.example>", 250).await;
    c.expect("RCPT TO:<s1@example.org>", 250).await;
    c.expect("RCPT TO:<s2@example.org>", 250).await;
    let r = c.cmd("RCPT TO:<s3@example.org>").await;
    assert_eq!((r.code, esc(&r)), (450, "4.7.1".into()));
    assert!(r.text.contains("recipients_per_hour (7)"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_header_from_is_refused_and_nothing_forwarded() {
    let h = Harness::start(Setup {
        users: vec![
            TestUser::new("alice", "alice-password", &["@alice.example"]),
            TestUser {
                extra: "    allow_any_header_from: true\n",
                ..TestUser::new("lists", "lists-password", &["@lists.example"])
            },
        ],
        ..Setup::default()
    })
    .await;
    let mut c = h.session("alice", "alice-password").await;
    for head in [
        "From: CEO <ceo@bank.example>\r\n",
        "From: a@alice.example\r\nSender: x@bank.example\r\n",
        "From: a@alice.example\r\nFrom: ceo@bank.example\r\n",
    ] {
        let body = format!("{head}Subject: pay now\r\n\r\nwire the money\r\n");
        let r = c
            .send_mail("a@alice.example", &["victim@example.org"], &body)
            .await;
        assert_eq!((r.code, esc(&r)), (550, "5.7.1".into()), "{head:?}");
    }
    // A long header section does not hide a forged From from the check.
    let padding = "X-Pad: ".to_string() + &"p".repeat(900) + "\r\n";
    let body = format!("{}From: ceo@bank.example\r\n\r\nx\r\n", padding.repeat(300));
    let r = c
        .send_mail("a@alice.example", &["victim@example.org"], &body)
        .await;
    assert_eq!(r.code, 550);
    let r = c
        .send_mail(
            "a@alice.example",
            &["friend@example.org"],
            "From: Alice <a@alice.example>\r\n\r\nhi\r\n",
        )
        .await;
    assert_eq!(r.code, 250);
    let mut l = h.session("lists", "lists-password").await;
    let r = l
        .send_mail(
            "x@lists.example",
            &["m@example.org"],
            "From: someone@else.example\r\n\r\nlist mail\r\n",
        )
        .await;
    assert_eq!(r.code, 250);
    let msgs = h.sink.wait_for(2, W).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(h.sink.messages().len(), 2);
    assert!(msgs.iter().all(|m| m.rcpts != vec!["victim@example.org"]));
    assert!(h.wait_log("header sender not allowed", W).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn brute_force_is_throttled_then_blocked_while_others_get_in() {
    let h = Harness::start(Setup {
        extra: "abuse:\n  auth_tarpit_after: 2\n  auth_block_ip_after: 5\n".into(),
        ..Setup::default()
    })
    .await;
    let attacker = "127.0.0.1";
    // Session 1: three guesses; the third closes the session.
    let mut c = Client::connect_tls_from(h.implicit, ip(attacker), &h.ca_pem()).await;
    c.expect("EHLO x", 250).await;
    let mut times = Vec::new();
    for i in 0..3 {
        let t = Instant::now();
        assert_eq!(c.auth_plain("alice", &format!("guess-{i}")).await.code, 535);
        times.push(t.elapsed());
    }
    let r = c.read_reply().await;
    assert_eq!((r.code, esc(&r)), (421, "4.7.0".into()));
    assert!(c.closed().await);
    assert!(
        times[2] >= Duration::from_millis(900),
        "third failure is slowed: {times:?}"
    );
    // Session 2: two more distinct guesses reach the block threshold.
    let (mut c, code) = login_from(&h, attacker, "alice", "guess-3").await;
    assert_eq!(code, 535);
    assert_eq!(c.auth_plain("alice", "guess-4").await.code, 535);
    assert_eq!(c.read_reply().await.code, 421);
    // Now even the right password from that address is refused for a while...
    let (mut c, _) = (
        Client::connect_tls_from(h.implicit, ip(attacker), &h.ca_pem()).await,
        (),
    );
    c.expect("EHLO x", 250).await;
    let r = c.auth_plain("alice", "alice-password").await;
    assert_eq!((r.code, esc(&r)), (421, "4.7.0".into()));
    assert!(r.text.contains("try again in"));
    // ...while a good user elsewhere gets in at once.
    let t = Instant::now();
    let (_c, code) = login_from(&h, "127.0.0.2", "alice", "alice-password").await;
    assert_eq!(code, 235);
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    assert!(
        h.wait_log("address blocked after repeated login failures", W)
            .await
    );
    let logs = h.logs().join("\n");
    assert!(
        !logs.contains("guess-"),
        "attempted passwords never reach the log"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_password_is_not_a_brute_force() {
    let h = Harness::start(Setup {
        extra: "abuse:\n  auth_block_ip_after: 3\n  auth_failures_per_session: 50\n".into(),
        ..Setup::default()
    })
    .await;
    // A printer retrying the same old password many times is never blocked.
    let mut c = Client::connect_tls(h.implicit, &h.ca_pem()).await;
    c.expect("EHLO printer", 250).await;
    for _ in 0..8 {
        let t = Instant::now();
        assert_eq!(c.auth_plain("alice", "old-password").await.code, 535);
        assert!(t.elapsed() < Duration::from_millis(800));
    }
    assert_eq!(c.auth_plain("alice", "alice-password").await.code, 235);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suspension_triggered_and_lifted() {
    let h = Harness::start(Setup {
        extra: "abuse:\n  max_ips_per_user_per_hour: 2\n".into(),
        ..Setup::default()
    })
    .await;
    assert_eq!(
        login_from(&h, "127.0.0.1", "alice", "alice-password")
            .await
            .1,
        235
    );
    assert_eq!(
        login_from(&h, "127.0.0.2", "alice", "alice-password")
            .await
            .1,
        235
    );
    // A third address within the hour: suspended.
    assert_eq!(
        login_from(&h, "127.0.0.3", "alice", "alice-password")
            .await
            .1,
        535
    );
    assert_eq!(
        login_from(&h, "127.0.0.1", "alice", "alice-password")
            .await
            .1,
        535
    );
    assert!(h.wait_log("user suspended by the abuse brake", W).await);
    let line = h
        .logs()
        .into_iter()
        .find(|l| l.contains("user suspended by the abuse brake"))
        .unwrap();
    assert!(
        line.contains("WARN") && line.contains("3 addresses"),
        "{line}"
    );
    // Other users are unaffected.
    assert_eq!(
        login_from(&h, "127.0.0.3", "mallory", "mallory-password")
            .await
            .1,
        535
    ); // disabled anyway
    // The operator lifts it.
    let out = Command::new(common::postern_bin())
        .args(["user", "enable", "alice", "-c"])
        .arg(&h.config_path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // It told the running server to reload (over the control socket): no SIGHUP.
    assert!(String::from_utf8_lossy(&out.stdout).contains("the running server reloaded"));
    // The CLI answered after the server's reload finished: nothing to wait for.
    let (mut c, code) = login_from(&h, "127.0.0.1", "alice", "alice-password").await;
    assert_eq!(code, 235);
    assert_eq!(
        c.send_mail("a@alice.example", &["b@example.org"], "x\r\n")
            .await
            .code,
        250
    );
    // Enabling someone who is not suspended says so.
    let out = Command::new(common::postern_bin())
        .args(["user", "enable", "alice", "-c"])
        .arg(&h.config_path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trusted_address_gives_no_unlimited_guesses() {
    let h = Harness::start(Setup {
        users: vec![
            TestUser::new("alice", "alice-password", &["@alice.example"]),
            TestUser::new("bob", "bob-password", &["@bob.example"]),
        ],
        extra: "abuse:\n  auth_block_ip_after: 4\n  auth_tarpit_after: 50\n  auth_failures_per_session: 50\n".into(),
        ..Setup::default()
    })
    .await;
    // Both users have logged in from the shared (NAT, hosting) address before.
    let nat = "127.0.0.5";
    assert_eq!(login_from(&h, nat, "alice", "alice-password").await.1, 235);
    assert_eq!(login_from(&h, nat, "bob", "bob-password").await.1, 235);
    // Someone else behind it guesses at alice: the trust does not make it unlimited.
    let mut c = Client::connect_tls_from(h.implicit, ip(nat), &h.ca_pem()).await;
    c.expect("EHLO x", 250).await;
    for i in 0..4 {
        let r = c.auth_plain("alice", &format!("guess-{i}")).await;
        assert_eq!((r.code, esc(&r)), (535, "5.7.8".into()), "guess {i}");
    }
    let r = c.read_reply().await;
    assert_eq!((r.code, esc(&r)), (421, "4.7.0".into()));
    // Blocked now, the right password included, and more guesses go nowhere.
    for password in ["guess-5", "alice-password"] {
        let (_c, code) = login_from(&h, nat, "alice", password).await;
        assert_eq!(code, 454, "{password}");
    }
    assert!(
        h.wait_log(
            "username locked from this address after repeated login failures",
            W
        )
        .await
    );
    // Bob, trusted there too, still gets in; so does alice from elsewhere.
    assert_eq!(login_from(&h, nat, "bob", "bob-password").await.1, 235);
    assert_eq!(
        login_from(&h, "127.0.0.6", "alice", "alice-password")
            .await
            .1,
        235
    );
    // A user never seen from the address is held by the address block.
    let (mut c, _) = (
        Client::connect_tls_from(h.implicit, ip(nat), &h.ca_pem()).await,
        (),
    );
    c.expect("EHLO x", 250).await;
    let r = c.auth_plain("mallory", "mallory-password").await;
    assert_eq!((r.code, esc(&r)), (421, "4.7.0".into()));
}

/// A TLS client on the implicit listener whose PROXY v1 header names `source`.
async fn via_proxy(h: &Harness, source: &str) -> Client {
    use tokio::io::AsyncWriteExt;
    let mut tcp = tokio::net::TcpStream::connect(h.implicit).await.unwrap();
    let family = if source.contains(':') { "TCP6" } else { "TCP4" };
    let dest = if source.contains(':') {
        "2001:db8::25"
    } else {
        "192.0.2.25"
    };
    tcp.write_all(format!("PROXY {family} {source} {dest} 40000 465\r\n").as_bytes())
        .await
        .unwrap();
    let mut c = Client::over_tls(tcp, &h.ca_pem()).await;
    c.expect("EHLO x", 250).await;
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv6_clients_are_blocked_per_64() {
    let h = Harness::start(Setup {
        proxy_from: Some("127.0.0.0/8"),
        extra: "abuse:\n  auth_block_ip_after: 3\n  auth_tarpit_after: 50\n  auth_failures_per_session: 50\n".into(),
        ..Setup::default()
    })
    .await;
    // Three guesses, each from a fresh address of the same /64.
    for i in 1..=3 {
        let mut c = via_proxy(&h, &format!("2001:db8:1:2::{i:x}")).await;
        assert_eq!(c.auth_plain("alice", &format!("guess-{i}")).await.code, 535);
    }
    // The whole /64 is blocked, addresses never used before included...
    for source in ["2001:db8:1:2::99", "2001:db8:1:2:ffff:ffff:ffff:ffff"] {
        let mut c = via_proxy(&h, source).await;
        let r = c.auth_plain("alice", "alice-password").await;
        assert_eq!((r.code, esc(&r)), (421, "4.7.0".into()), "{source}");
    }
    // ...and only it: the next /64 and IPv4 clients get in.
    let mut c = via_proxy(&h, "2001:db8:1:3::1").await;
    assert_eq!(c.auth_plain("alice", "alice-password").await.code, 235);
    let mut c = via_proxy(&h, "192.0.2.1").await;
    assert_eq!(c.auth_plain("alice", "alice-password").await.code, 235);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_per_ip_count_an_ipv6_prefix() {
    use tokio::io::AsyncWriteExt;
    for (prefix, same_64_admitted) in [("", false), ("  ipv6_prefix: 128\n", true)] {
        let h = Harness::start(Setup {
            proxy_from: Some("127.0.0.0/8"),
            extra: format!("limits:\n  max_connections_per_ip: 1\n{prefix}"),
            ..Setup::default()
        })
        .await;
        let open = |source: &'static str| {
            let addr = h.starttls;
            async move {
                let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
                tcp.write_all(format!("PROXY TCP6 {source} 2001:db8::25 40000 587\r\n").as_bytes())
                    .await
                    .unwrap();
                Client::over(tcp).await
            }
        };
        let first = open("2001:db8:1:2::1").await;
        assert_eq!(first.greeting.code, 220);
        let neighbour = open("2001:db8:1:2::2").await;
        let want = if same_64_admitted { 220 } else { 421 };
        assert_eq!(neighbour.greeting.code, want, "{prefix:?}");
        let elsewhere = open("2001:db8:1:3::1").await;
        assert_eq!(elsewhere.greeting.code, 220, "{prefix:?}");
        drop((first, neighbour, elsewhere));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_brake_counts_an_ipv6_prefix_as_one_address() {
    let h = Harness::start(Setup {
        proxy_from: Some("127.0.0.0/8"),
        extra: "abuse:\n  max_ips_per_user_per_hour: 1\n".into(),
        ..Setup::default()
    })
    .await;
    // Privacy addresses rotating inside one /64 are one client...
    for source in ["2001:db8:1:2::1", "2001:db8:1:2::2", "2001:db8:1:2:abcd::9"] {
        let mut c = via_proxy(&h, source).await;
        assert_eq!(
            c.auth_plain("alice", "alice-password").await.code,
            235,
            "{source}"
        );
    }
    // ...another /64 is a second address, over the limit of one.
    let mut c = via_proxy(&h, "2001:db8:1:3::1").await;
    assert_eq!(c.auth_plain("alice", "alice-password").await.code, 535);
    assert!(h.wait_log("user suspended by the abuse brake", W).await);
}
