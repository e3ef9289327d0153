//! Several smarthosts: failover in order, and per-sender-domain routes with their own
//! credentials. A message only ever goes to one smarthost.

mod common;

use common::{Harness, Setup, TestUser, free_port};
use postern::proto::reply::{Esc, Reply};
use std::time::Duration;

const W: Duration = Duration::from_secs(20);

fn users() -> Vec<TestUser> {
    vec![TestUser::new(
        "alice",
        "alice-password",
        &["@alice.example", "@client-a.example"],
    )]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_to_the_second_smarthost_in_both_modes() {
    for queue in [false, true] {
        let down = free_port();
        let h = Harness::start(Setup {
            users: users(),
            queue,
            smarthost_yaml: Some(format!(
                "smarthost:\n  - address: \"localhost:{down}\"\n    {{RELAY}}\n  - address: \"localhost:{{SINK}}\"\n    {{RELAY}}\n"
            )),
            ..Setup::default()
        })
        .await;
        let mut c = h.session("alice", "alice-password").await;
        for i in 0..3 {
            let r = c
                .send_mail(
                    "a@alice.example",
                    &["b@example.org"],
                    &format!("X-Seq: {i}\r\n\r\nx\r\n"),
                )
                .await;
            assert_eq!(r.code, 250, "queue={queue}: {r:?}");
        }
        let msgs = h.sink.wait_for(3, W).await;
        assert_eq!(msgs.len(), 3, "queue={queue}");
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(h.sink.messages().len(), 3, "each message once");
        let needle = if queue {
            "failing over to the next smarthost"
        } else {
            "trying the next one"
        };
        assert!(h.wait_log(needle, W).await, "queue={queue}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_domain_route_uses_its_own_smarthost_and_credentials() {
    for queue in [false, true] {
        let routed_port = free_port();
        let h = Harness::start(Setup {
            users: users(),
            queue,
            files: vec![("client-a.secret", "client-a-password\n".into())],
            smarthost_yaml: Some(format!(
                "smarthost:\n  address: \"localhost:{{SINK}}\"\n  tls: starttls\n  ca_file: ca.pem\n  username: {}\n  password_file: smarthost.secret\nroutes:\n  - match: \"@client-a.example\"\n    smarthost:\n      address: \"localhost:{routed_port}\"\n      tls: starttls\n      ca_file: ca.pem\n      username: client-a\n      password_file: client-a.secret\n",
                common::RELAY_USER
            )),
            ..Setup::default()
        })
        .await;
        let routed = h
            .sink_at(routed_port, "client-a", "client-a-password")
            .await;
        let mut c = h.session("alice", "alice-password").await;
        assert_eq!(
            c.send_mail(
                "news@client-a.example",
                &["x@example.org"],
                "Subject: a\r\n\r\nx\r\n"
            )
            .await
            .code,
            250
        );
        assert_eq!(
            c.send_mail(
                "me@alice.example",
                &["y@example.org"],
                "Subject: b\r\n\r\nx\r\n"
            )
            .await
            .code,
            250
        );
        let r = routed.wait_for(1, W).await;
        let d = h.sink.wait_for(1, W).await;
        assert_eq!((r.len(), d.len()), (1, 1), "queue={queue}");
        assert_eq!(r[0].from, "news@client-a.example");
        assert_eq!(r[0].authenticated_as.as_deref(), Some("client-a"));
        assert_eq!(d[0].from, "me@alice.example");
        assert_eq!(d[0].authenticated_as.as_deref(), Some(common::RELAY_USER));
    }
}

/// One message needing SMTPUTF8, in passthrough; the reply to its end of data.
async fn send_utf8(h: &Harness) -> Reply {
    let mut c = h.session("alice", "alice-password").await;
    let r = c.cmd("MAIL FROM:<a@alice.example> SMTPUTF8").await;
    if r.code != 250 {
        return r;
    }
    c.expect("RCPT TO:<j\u{f6}rg@example.org>", 250).await;
    c.expect("DATA", 354).await;
    c.send_raw(b"Subject: utf8\r\n\r\nhallo\r\n.\r\n").await;
    c.read_reply().await
}

/// Passthrough and the queue share one delivery path: a smarthost without SMTPUTF8
/// is skipped for the next on the route, and a route with none refuses at MAIL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passthrough_smtputf8_goes_only_to_a_smarthost_that_offers_it() {
    let plain_port = free_port();
    let h = Harness::start(Setup {
        users: users(),
        smarthost_yaml: Some(format!(
            "smarthost:\n  - address: \"localhost:{plain_port}\"\n    {{RELAY}}\n  - address: \"localhost:{{SINK}}\"\n    {{RELAY}}\n"
        )),
        ..Setup::default()
    })
    .await;
    let plain = h.sink_without_smtputf8(plain_port).await;
    let r = send_utf8(&h).await;
    assert_eq!(r.code, 250, "{r:?}");
    let msgs = h.sink.wait_for(1, W).await;
    assert_eq!(msgs[0].rcpts, vec!["j\u{f6}rg@example.org"]);
    assert!(plain.messages().is_empty());

    let port = free_port();
    let only_plain = Harness::start(Setup {
        users: users(),
        smarthost_yaml: Some(format!(
            "smarthost:\n  - address: \"localhost:{port}\"\n    {{RELAY}}\n"
        )),
        ..Setup::default()
    })
    .await;
    let plain = only_plain.sink_without_smtputf8(port).await;
    let r = send_utf8(&only_plain).await;
    assert_eq!((r.code, r.esc), (553, Some(Esc(5, 6, 7))), "{r:?}");
    assert!(plain.messages().is_empty());
}

/// A read receipt or auto-reply (null sender) in queue mode takes the route of its
/// header `From:`: the domain's own smarthost, which accepts that domain's mail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn null_sender_mail_takes_the_route_of_its_header_from() {
    let routed_port = free_port();
    let h = Harness::start(Setup {
        users: users(),
        queue: true,
        files: vec![("client-a.secret", "client-a-password\n".into())],
        smarthost_yaml: Some(format!(
            "smarthost:\n  address: \"localhost:{{SINK}}\"\n  tls: starttls\n  ca_file: ca.pem\n  username: {}\n  password_file: smarthost.secret\nroutes:\n  - match: \"@client-a.example\"\n    smarthost:\n      address: \"localhost:{routed_port}\"\n      tls: starttls\n      ca_file: ca.pem\n      username: client-a\n      password_file: client-a.secret\n",
            common::RELAY_USER
        )),
        ..Setup::default()
    })
    .await;
    let routed = h
        .sink_at(routed_port, "client-a", "client-a-password")
        .await;
    let mut c = h.session("alice", "alice-password").await;
    for (from, subject) in [
        ("news@client-a.example", "receipt"),
        ("me@alice.example", "reply"),
    ] {
        let r = c
            .send_mail(
                "",
                &["x@example.org"],
                &format!("From: {from}\r\nSubject: {subject}\r\n\r\nx\r\n"),
            )
            .await;
        assert_eq!(r.code, 250, "{r:?}");
    }
    let r = routed.wait_for(1, W).await;
    let d = h.sink.wait_for(1, W).await;
    assert_eq!((r.len(), d.len()), (1, 1));
    assert_eq!(r[0].from, "");
    assert!(String::from_utf8_lossy(&r[0].content).contains("Subject: receipt"));
    assert!(String::from_utf8_lossy(&d[0].content).contains("Subject: reply"));
}
