//! Bad and hostile input: smuggling, STARTTLS injection, oversize, floods of errors,
//! huge lines, slow clients. Each gets the right reply and nothing reaches the
//! smarthost that should not.

mod common;

use common::client::{Client, stuff};
use common::{Harness, Setup};
use std::time::Duration;

const W: Duration = Duration::from_secs(10);

fn esc(r: &postern::proto::reply::Reply) -> String {
    r.esc.map(|e| e.to_string()).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smuggling_variants_are_refused_and_nothing_is_relayed() {
    smuggling_in(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smuggling_variants_are_refused_and_nothing_is_spooled() {
    smuggling_in(true).await;
}

/// Every end-of-data variant, in passthrough or queue mode: refused whole, the
/// smuggled commands swallowed, and what reaches the smarthost is only the clean
/// messages, in canonical CRLF with exact dot-stuffing.
async fn smuggling_in(queue: bool) {
    let h = Harness::start(Setup {
        queue,
        ..Setup::default()
    })
    .await;
    let variants: &[&[u8]] = &[
        b"\n.\n",
        b"\n.\r\n",
        b"\r.\r\n",
        b"\r\n.\r",
        b"\r\n.\n",
        b"\r\n\0.\r\n",
    ];
    for v in variants {
        let mut c = h.session("alice", "alice-password").await;
        c.expect("MAIL FROM:<a@alice.example>", 250).await;
        c.expect("RCPT TO:<victim@example.org>", 250).await;
        c.expect("DATA", 354).await;
        let mut body = b"Subject: smuggle\r\n\r\nfirst part".to_vec();
        body.extend_from_slice(v);
        body.extend_from_slice(
            b"MAIL FROM:<ceo@bank.example>\r\nRCPT TO:<victim@example.org>\r\nDATA\r\nSubject: forged\r\n\r\nsmuggled\r\n",
        );
        body.extend_from_slice(b".\r\n");
        c.send_raw(&body).await;
        let r = c.read_reply().await;
        assert_eq!((r.code, esc(&r)), (554, "5.6.0".into()), "variant {v:?}");
        // The smuggled commands were swallowed as content: the next reply is for NOOP.
        c.expect("NOOP", 250).await;
        // And the session still works for a clean message.
        let r = c
            .send_mail(
                "a@alice.example",
                &["friend@example.org"],
                "Subject: clean\r\n\r\n.leading dot\r\nok\r\n",
            )
            .await;
        assert_eq!(r.code, 250);
    }
    let msgs = h.sink.wait_for(variants.len(), W).await;
    assert_eq!(msgs.len(), variants.len(), "only the clean messages arrive");
    for m in &msgs {
        assert_eq!(m.rcpts, vec!["friend@example.org"]);
        let content = &m.content;
        assert!(!content.windows(8).any(|w| w == b"smuggled"));
        // On the wire: dot-stuffed exactly once, canonical terminator.
        let mut wire = stuff(content);
        wire.extend_from_slice(b".\r\n");
        assert_eq!(m.raw, wire);
        assert!(String::from_utf8_lossy(content).contains("\r\n.leading dot\r\n"));
        // Every line the smarthost got ends in CRLF.
        for (i, &b) in content.iter().enumerate() {
            if b == b'\n' {
                assert_eq!(content[i - 1], b'\r');
            }
            if b == b'\r' {
                assert_eq!(content.get(i + 1), Some(&b'\n'));
            }
        }
    }
    assert!(h.wait_log("message refused", W).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bare_newlines_and_nul_in_commands() {
    let h = Harness::start(Setup::default()).await;
    let mut c = Client::connect(h.starttls).await;
    c.send_raw(b"EHLO a\n").await;
    let r = c.read_reply().await;
    assert_eq!((r.code, esc(&r)), (500, "5.5.2".into()));
    c.send_raw(b"NOOP\rRSET\r\n").await;
    assert_eq!(c.read_reply().await.code, 500);
    c.send_raw(b"NO\0OP\r\n").await;
    assert_eq!(c.read_reply().await.code, 500);
    c.expect("NOOP", 250).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starttls_discards_pipelined_commands() {
    let h = Harness::start(Setup::default()).await;
    let mut c = Client::connect(h.starttls).await;
    c.expect("EHLO client.test", 250).await;
    // The classic injection: a command pipelined after STARTTLS in the same packet.
    c.send_raw(b"STARTTLS\r\nRSET\r\nMAIL FROM:<a@alice.example>\r\n")
        .await;
    let r = c.read_reply().await;
    assert_eq!(r.code, 220);
    // Hand-over to TLS: the client helper insists nothing else was sent in clear.
    let common::client::Stream::Plain(reader) = c.stream else {
        panic!()
    };
    assert!(reader.buffer().is_empty());
    let tls = common::client::tls_connector(&h.ca_pem())
        .connect(
            rustls::pki_types::ServerName::try_from("localhost").unwrap(),
            reader.into_inner(),
        )
        .await
        .unwrap();
    let mut c = Client {
        stream: common::client::Stream::Tls(tokio::io::BufReader::new(Box::new(tls))),
        greeting: c.greeting,
    };
    // If the injected commands had survived, their replies would come first.
    let r = c.cmd("NOOP").await;
    assert_eq!(r.code, 250, "{r:?}");
    assert_eq!(r.text, "OK");
    // The session restarted: EHLO is needed again and AUTH is now offered.
    let ehlo = c.expect("EHLO client.test", 250).await;
    assert!(ehlo.text.contains("AUTH PLAIN LOGIN"));
    assert!(
        h.wait_log("discarded data pipelined after STARTTLS", W)
            .await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_size_limits() {
    let h = Harness::start(Setup {
        extra: "limits:\n  max_message_size: 64KiB\n".into(),
        ..Setup::default()
    })
    .await;
    let mut c = h.session("alice", "alice-password").await;
    let ehlo = c.expect("EHLO client.test", 250).await;
    assert!(ehlo.text.contains("SIZE 65536"));
    // Declared too large.
    let r = c.cmd("MAIL FROM:<a@alice.example> SIZE=70000").await;
    assert_eq!((r.code, esc(&r)), (552, "5.3.4".into()));
    // Not declared, but too large when it arrives.
    let body = format!(
        "Subject: big\r\n\r\n{}",
        "0123456789012345678901234567890123456789\r\n".repeat(2000)
    );
    let r = c
        .send_mail("a@alice.example", &["b@example.org"], &body)
        .await;
    assert_eq!((r.code, esc(&r)), (552, "5.3.4".into()));
    // Just under the limit passes (the Received header counts on the smarthost side only).
    let body = format!("Subject: ok\r\n\r\n{}", "x".repeat(100) + "\r\n");
    let r = c
        .send_mail("a@alice.example", &["b@example.org"], &body)
        .await;
    assert_eq!(r.code, 250);
    let msgs = h.sink.wait_for(1, W).await;
    assert_eq!(msgs.len(), 1);
    assert!(String::from_utf8_lossy(&msgs[0].content).contains("Subject: ok"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_lines() {
    let h = Harness::start(Setup::default()).await;
    let mut c = h.session("alice", "alice-password").await;
    // A command line far over the limit: refused, and the session stays in step.
    let mut huge = b"NOOP ".to_vec();
    huge.extend(std::iter::repeat_n(b'a', 100_000));
    huge.extend_from_slice(b"\r\n");
    c.send_raw(&huge).await;
    let r = c.read_reply().await;
    assert_eq!((r.code, esc(&r)), (500, "5.5.2".into()));
    c.expect("NOOP", 250).await;
    // A 1001-byte line in DATA: the message is refused, not wrapped.
    let body = format!("Subject: long\r\n\r\n{}\r\n", "y".repeat(999));
    let r = c
        .send_mail("a@alice.example", &["b@example.org"], &body)
        .await;
    assert_eq!((r.code, esc(&r)), (554, "5.6.0".into()));
    // 998 characters is fine.
    let body = format!("Subject: long\r\n\r\n{}\r\n", "y".repeat(998));
    let r = c
        .send_mail("a@alice.example", &["b@example.org"], &body)
        .await;
    assert_eq!(r.code, 250);
    assert_eq!(h.sink.wait_for(1, W).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_errors_closes_with_421() {
    let h = Harness::start(Setup::default()).await;
    let mut c = Client::connect(h.starttls).await;
    for _ in 0..9 {
        assert_eq!(c.cmd("BOGUS").await.code, 500);
    }
    let r = c.cmd("BOGUS").await;
    assert_eq!(r.code, 500);
    let r = c.read_reply().await;
    assert_eq!((r.code, esc(&r)), (421, "4.7.0".into()));
    assert!(c.closed().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_client_times_out() {
    let h = Harness::start(Setup {
        extra: "timeouts:\n  command: 1s\n".into(),
        ..Setup::default()
    })
    .await;
    let mut c = Client::connect(h.starttls).await;
    c.expect("EHLO client.test", 250).await;
    // Trickle a command byte by byte: the whole line must arrive within the timeout.
    for b in b"NOOP" {
        c.send_raw(&[*b]).await;
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    let r = c.read_reply().await;
    assert_eq!((r.code, esc(&r)), (421, "4.4.2".into()));
    assert!(c.closed().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn informational_commands_reveal_nothing() {
    let h = Harness::start(Setup::default()).await;
    let mut c = Client::connect(h.starttls).await;
    c.expect("EHLO client.test", 250).await;
    let r = c.cmd("VRFY alice").await;
    assert_eq!((r.code, esc(&r)), (252, "2.1.5".into()));
    let r = c.cmd("EXPN staff").await;
    assert_eq!((r.code, esc(&r)), (502, "5.5.1".into()));
    c.expect("HELP", 214).await;
    c.expect("NOOP", 250).await;
    c.expect("RSET", 250).await;
    c.expect("BDAT 10 LAST", 502).await;
    c.expect("RCPT TO:<x@example.org>", 530).await;
    c.expect("QUIT", 221).await;
    assert!(c.closed().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_caps_answer_421() {
    let h = Harness::start(Setup {
        extra: "limits:\n  max_connections_per_ip: 2\n".into(),
        ..Setup::default()
    })
    .await;
    let a = Client::connect(h.starttls).await;
    let b = Client::connect(h.starttls).await;
    assert_eq!((a.greeting.code, b.greeting.code), (220, 220));
    let c = Client::connect(h.starttls).await;
    assert_eq!((c.greeting.code, esc(&c.greeting)), (421, "4.7.0".into()));
    drop(a);
    // Once a slot frees, a new client is served again.
    let mut ok = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        if Client::connect(h.starttls).await.greeting.code == 220 {
            ok = true;
            break;
        }
    }
    assert!(ok);
    assert!(h.wait_log("max_connections_per_ip", W).await);
}
