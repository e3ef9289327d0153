//! End to end: a client submits over TLS with AUTH, the stand-in smarthost (which
//! demands STARTTLS and AUTH) receives exactly what it should.

mod common;

use common::client::{Client, stuff};
use common::{Harness, RELAY_USER, Setup, crlf};
use std::time::Duration;

const W: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starttls_plain_auth_relays_byte_for_byte() {
    let h = Harness::start(Setup::default()).await;
    let mut c = h.session("alice", "alice-password").await;
    let body = crlf(
        "From: Alice <a@alice.example>\nTo: bob@example.org\nSubject: test\nDate: Wed, 2 Dec 2026 06:00:00 +0000\nMessage-ID: <t1@alice.example>\n\n.leading dot\n..two dots\nplain\n",
    );
    let r = c
        .send_mail("a@alice.example", &["bob@example.org"], &body)
        .await;
    assert_eq!(
        (r.code, r.esc.map(|e| e.to_string())),
        (250, Some("2.0.0".into())),
        "{r:?}"
    );
    c.expect("QUIT", 221).await;

    let msgs = h.sink.wait_for(1, W).await;
    assert_eq!(msgs.len(), 1);
    let m = &msgs[0];
    assert_eq!(m.from, "a@alice.example");
    assert_eq!(m.rcpts, vec!["bob@example.org"]);
    assert_eq!(m.authenticated_as.as_deref(), Some(RELAY_USER));
    assert!(m.tls, "the smarthost connection must be TLS");
    // The content is our Received header followed by the client's message, unchanged.
    let content = String::from_utf8(m.content.clone()).unwrap();
    let (received, rest) = content.split_at(content.find("From: Alice").unwrap());
    assert_eq!(rest, body);
    assert!(received.starts_with(
        "Received: from client.test ([127.0.0.1])\r\n\tby postern.test (Postern) with ESMTPSA id "
    ));
    assert!(received.contains("(using TLSv1."), "{received}");
    assert!(received.contains("for <bob@example.org>;"), "{received}");
    // On the wire, dot-stuffing is exactly right and the terminator is canonical.
    let mut wire = stuff(content.as_bytes());
    wire.extend_from_slice(b".\r\n");
    assert_eq!(m.raw, wire);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn implicit_tls_with_auth_login() {
    let h = Harness::start(Setup::default()).await;
    let mut c = Client::connect_tls(h.implicit, &h.ca_pem()).await;
    assert_eq!(c.greeting.code, 220);
    let ehlo = c.expect("EHLO client.test", 250).await;
    assert!(ehlo.text.contains("AUTH PLAIN LOGIN"));
    assert!(
        !ehlo.text.contains("STARTTLS"),
        "no STARTTLS once TLS is up"
    );
    let r = c.auth_login("alice", "alice-password").await;
    assert_eq!(r.code, 235);
    let r = c
        .send_mail(
            "boss@corp.example",
            &["x@example.org", "y@example.org"],
            "Subject: hi\r\n\r\nbody\r\n",
        )
        .await;
    assert_eq!(r.code, 250, "{r:?}");
    let msgs = h.sink.wait_for(1, W).await;
    assert_eq!(msgs[0].rcpts, vec!["x@example.org", "y@example.org"]);
    assert!(
        !String::from_utf8_lossy(&msgs[0].content).contains("\tfor <"),
        "no 'for' with two recipients"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_transaction_gets_replies_in_order() {
    let h = Harness::start(Setup::default()).await;
    let mut c = h.session("alice", "alice-password").await;
    c.send_raw(b"MAIL FROM:<a@alice.example>\r\nRCPT TO:<one@example.org>\r\nRCPT TO:<reject550@example.org>\r\nRCPT TO:<two@example.org>\r\nDATA\r\n").await;
    let codes = [250, 250, 550, 250, 354];
    for want in codes {
        assert_eq!(c.read_reply().await.code, want);
    }
    c.send_raw(b"Subject: p\r\n\r\nx\r\n.\r\nNOOP\r\n").await;
    assert_eq!(c.read_reply().await.code, 250);
    assert_eq!(c.read_reply().await.code, 250);
    let msgs = h.sink.wait_for(1, W).await;
    assert_eq!(msgs[0].rcpts, vec!["one@example.org", "two@example.org"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_connections_are_reused() {
    let h = Harness::start(Setup::default()).await;
    for i in 0..5 {
        let mut c = h.session("alice", "alice-password").await;
        let r = c
            .send_mail(
                "a@alice.example",
                &["bob@example.org"],
                &format!("Subject: {i}\r\n\r\nx\r\n"),
            )
            .await;
        assert_eq!(r.code, 250);
        c.expect("QUIT", 221).await;
    }
    assert_eq!(h.sink.wait_for(5, W).await.len(), 5);
    assert_eq!(
        h.sink.connections(),
        1,
        "one smarthost connection for five messages"
    );
    assert_eq!(h.sink.auths(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_megabyte_message_arrives_intact() {
    let h = Harness::start(Setup::default()).await;
    let mut c = h.session("alice", "alice-password").await;
    let mut body = String::from(
        "Subject: big\r\nDate: Wed, 2 Dec 2026 06:00:00 +0000\r\nMessage-ID: <big@alice.example>\r\n\r\n",
    );
    let mut i = 0u64;
    while body.len() < 10 * 1024 * 1024 {
        // Lines of varied content, some starting with a dot.
        let line = format!(
            "{}{:08} {}\r\n",
            if i.is_multiple_of(7) { "." } else { "" },
            i,
            "x".repeat((i % 90) as usize)
        );
        body.push_str(&line);
        i += 1;
    }
    let r = c
        .send_mail("a@alice.example", &["bob@example.org"], &body)
        .await;
    assert_eq!(r.code, 250, "{r:?}");
    let msgs = h.sink.wait_for(1, W).await;
    let content = &msgs[0].content;
    let start = content
        .windows(13)
        .position(|w| w == b"Subject: big\r")
        .unwrap();
    assert_eq!(content.len() - start, body.len());
    assert!(content[start..] == *body.as_bytes());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn utf8_addresses_and_body() {
    let h = Harness::start(Setup {
        users: vec![common::TestUser::new(
            "j\u{f6}rg",
            "p\u{e4}ssw\u{f6}rd",
            &["@b\u{fc}ro.example"],
        )],
        ..Setup::default()
    })
    .await;
    let mut c = h.session("j\u{f6}rg", "p\u{e4}ssw\u{f6}rd").await;
    let body = "Subject: =?UTF-8?Q?Gr=C3=BC=C3=9Fe?=\r\nDate: Wed, 2 Dec 2026 06:00:00 +0000\r\nMessage-ID: <u@b\u{fc}ro.example>\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nGr\u{fc}\u{df}e aus K\u{f6}ln \u{2709}\r\n";
    c.expect(
        "MAIL FROM:<j\u{f6}rg@b\u{fc}ro.example> SMTPUTF8 BODY=8BITMIME",
        250,
    )
    .await;
    c.expect("RCPT TO:<fran\u{e7}oise@exemple.fr>", 250).await;
    c.expect("DATA", 354).await;
    c.send_raw(body.as_bytes()).await;
    c.send_raw(b".\r\n").await;
    assert_eq!(c.read_reply().await.code, 250);
    let msgs = h.sink.wait_for(1, W).await;
    assert_eq!(msgs[0].from, "j\u{f6}rg@b\u{fc}ro.example");
    assert_eq!(msgs[0].rcpts, vec!["fran\u{e7}oise@exemple.fr"]);
    assert!(
        String::from_utf8(msgs[0].content.clone())
            .unwrap()
            .ends_with(body)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smarthost_verdicts_are_passed_back() {
    let h = Harness::start(Setup::default()).await;
    let mut c = h.session("alice", "alice-password").await;
    // 5xx and 4xx per recipient.
    c.expect("MAIL FROM:<a@alice.example>", 250).await;
    let r = c.cmd("RCPT TO:<reject550@example.org>").await;
    assert_eq!((r.code, r.esc.unwrap().to_string()), (550, "5.1.1".into()));
    let r = c.cmd("RCPT TO:<defer450@example.org>").await;
    assert_eq!((r.code, r.esc.unwrap().to_string()), (450, "4.2.1".into()));
    c.expect("DATA", 554).await;
    c.expect("RSET", 250).await;
    // Sender refused upstream.
    c.expect("MAIL FROM:<reject550@alice.example>", 550).await;
    // Final reply after DATA.
    let r = c
        .send_mail(
            "a@alice.example",
            &["bob@example.org"],
            "X-Sink-Reply: 554\r\n\r\nx\r\n",
        )
        .await;
    assert_eq!((r.code, r.esc.unwrap().to_string()), (554, "5.7.1".into()));
    let r = c
        .send_mail(
            "a@alice.example",
            &["bob@example.org"],
            "X-Sink-Reply: 451\r\n\r\nx\r\n",
        )
        .await;
    assert_eq!(r.code, 451);
    // The session and the pooled connection still work afterwards.
    let r = c
        .send_mail(
            "a@alice.example",
            &["bob@example.org"],
            "Subject: ok\r\n\r\nx\r\n",
        )
        .await;
    assert_eq!(r.code, 250);
    assert_eq!(h.sink.wait_for(1, W).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smarthost_down_is_a_transient_failure() {
    let h = Harness::start(Setup {
        smarthost_down: true,
        ..Setup::default()
    })
    .await;
    let mut c = h.session("alice", "alice-password").await;
    let r = c.cmd("MAIL FROM:<a@alice.example>").await;
    assert_eq!(
        (r.code, r.esc.unwrap().to_string()),
        (451, "4.4.1".into()),
        "{r:?}"
    );
    assert!(h.wait_log("smarthost unavailable", W).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smarthost_hangup_mid_transaction_is_transient_and_nothing_is_sent() {
    let h = Harness::start(Setup::default()).await;
    let mut c = h.session("alice", "alice-password").await;
    c.expect("MAIL FROM:<a@alice.example>", 250).await;
    c.expect("RCPT TO:<ok@example.org>", 250).await;
    let r = c.cmd("RCPT TO:<hangup@example.org>").await;
    assert_eq!((r.code, r.esc.unwrap().to_string()), (451, "4.4.2".into()));
    c.expect("DATA", 451).await;
    c.expect("RSET", 250).await;
    // A new transaction opens a new smarthost connection and works.
    let r = c
        .send_mail(
            "a@alice.example",
            &["ok@example.org"],
            "Subject: again\r\n\r\nx\r\n",
        )
        .await;
    assert_eq!(r.code, 250);
    let msgs = h.sink.wait_for(1, W).await;
    assert_eq!(msgs.len(), 1);
    assert_eq!(h.sink.connections(), 2);
}
