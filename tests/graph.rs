//! Microsoft Graph `sendMail` against the stand-in, in both delivery modes: Bcc
//! for envelope-only recipients, header recipients outside the envelope and
//! oversized messages refused before 250, and the 202/401/429/5xx/4xx mapping.

mod common;

use common::oauth_standins::{Grant, GraphAnswer, MAILBOX, Provider, TokenMode};
use common::{Harness, Setup, TestUser};
use postern::proto::reply::{Esc, Reply};
use postern::tls::TestCa;
use std::time::Duration;

const W: Duration = Duration::from_secs(20);

async fn start(queue: bool, before: impl FnOnce(&Provider)) -> (Harness, Provider) {
    let ca = TestCa::new("Postern test CA").unwrap();
    let p = Provider::start(&ca, Grant::ClientCredentials, 3600).await;
    before(&p);
    let (yaml, files) = p.graph_smarthost();
    let h = Harness::start(Setup {
        ca: Some(ca),
        smarthost_yaml: Some(yaml),
        files,
        queue,
        ..Setup::default()
    })
    .await;
    (h, p)
}

async fn send(h: &Harness, rcpts: &[&str], body: &str) -> Reply {
    let mut c = h.session("alice", "alice-password").await;
    c.send_mail("a@alice.example", rcpts, body).await
}

fn text(mime: &[u8]) -> String {
    String::from_utf8_lossy(mime).into_owned()
}

/// Waits until the queue is empty (every message delivered or bounced).
async fn queue_drained(h: &Harness) {
    let deadline = std::time::Instant::now() + W;
    loop {
        let (ok, list) = common::cli(h, &["queue", "list"]);
        if ok && list.contains("0 message(s) queued") {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "{list}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envelope_only_recipients_are_added_as_bcc() {
    for queue in [false, true] {
        let (h, p) = start(queue, |_| {}).await;
        let r = send(
            &h,
            &["b@example.org", "hidden@example.net", "also@example.net"],
            "From: a@alice.example\r\nTo: B <b@example.org>\r\nBcc: also@example.net\r\nSubject: g\r\n\r\nbody\r\n",
        )
        .await;
        assert_eq!(r.code, 250, "queue={queue}: {r:?}");
        assert!(p.wait(W, |p| p.sent().len() == 1).await, "queue={queue}");
        let (mailbox, mime) = p.sent().remove(0);
        assert_eq!(mailbox, MAILBOX);
        let mime = text(&mime);
        assert!(
            mime.starts_with("Bcc: hidden@example.net,\r\n also@example.net\r\n"),
            "queue={queue}: {mime}"
        );
        assert!(mime.contains("\r\nTo: B <b@example.org>\r\n"), "{mime}");
        assert!(mime.ends_with("\r\n\r\nbody\r\n"), "{mime}");
        assert_eq!(p.token_requests(), 1);
        assert!(h.sink.messages().is_empty(), "nothing went over SMTP");
        common::assert_no_secrets(&h.logs(), &p.issued());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_header_recipient_outside_the_envelope_is_refused_before_250() {
    for queue in [false, true] {
        let (h, p) = start(queue, |_| {}).await;
        let r = send(
            &h,
            &["b@example.org"],
            "From: a@alice.example\r\nTo: b@example.org\r\nCc: boss@example.org\r\nSubject: x\r\n\r\nbody\r\n",
        )
        .await;
        assert_eq!(
            (r.code, r.esc),
            (554, Some(Esc(5, 7, 1))),
            "queue={queue}: {r:?}"
        );
        assert!(r.text.contains("boss@example.org"), "{r:?}");
        if queue {
            queue_drained(&h).await;
        }
        assert_eq!(p.graph_requests(), 0, "queue={queue}");
        assert!(
            h.wait_log("boss@example.org", W).await,
            "the refusal is logged"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_is_waited_out_once_then_delivered() {
    for queue in [false, true] {
        let (h, p) = start(queue, |p| p.script(&[GraphAnswer::Throttle(1)])).await;
        let r = send(&h, &["b@example.org"], "To: b@example.org\r\n\r\nx\r\n").await;
        assert_eq!(r.code, 250, "queue={queue}: {r:?}");
        assert!(p.wait(W, |p| p.sent().len() == 1).await, "queue={queue}");
        assert_eq!(p.graph_requests(), 2, "queue={queue}: one retry");
        assert!(h.wait_log("Graph is throttling", W).await);
    }
}

/// Two 429s in a row: the message is not delivered in this attempt, and the
/// client (passthrough) gets a 4xx.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_429_is_temporary() {
    let (h, p) = start(false, |p| {
        p.script(&[GraphAnswer::Throttle(1), GraphAnswer::Throttle(1)])
    })
    .await;
    let r = send(&h, &["b@example.org"], "To: b@example.org\r\n\r\nx\r\n").await;
    assert_eq!((r.code, r.esc), (451, Some(Esc(4, 7, 0))), "{r:?}");
    assert_eq!(p.graph_requests(), 2);
    assert!(p.sent().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_503_is_451_in_passthrough_and_retried_by_the_queue() {
    let (h, p) = start(false, |p| p.script(&[GraphAnswer::Unavailable])).await;
    let r = send(&h, &["b@example.org"], "To: b@example.org\r\n\r\nx\r\n").await;
    assert_eq!(r.code, 451, "{r:?}");
    assert!(p.sent().is_empty());
    drop(h);

    let (h, p) = start(true, |p| p.script(&[GraphAnswer::Unavailable])).await;
    let r = send(&h, &["b@example.org"], "To: b@example.org\r\n\r\nx\r\n").await;
    assert_eq!(r.code, 250, "{r:?}");
    assert!(p.wait(W, |p| p.sent().len() == 1).await);
    assert_eq!(p.graph_requests(), 2, "delivered on the retry");
    queue_drained(&h).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_400_is_554_in_passthrough_and_bounced_by_the_queue() {
    let (h, p) = start(false, |p| p.script(&[GraphAnswer::BadRequest])).await;
    let r = send(&h, &["b@example.org"], "To: b@example.org\r\n\r\nx\r\n").await;
    assert_eq!(r.code, 554, "{r:?}");
    assert!(r.text.contains("ErrorInvalidRecipients"), "{r:?}");
    drop(h);

    let (h, p2) = start(true, |p| p.script(&[GraphAnswer::BadRequest])).await;
    let r = send(
        &h,
        &["b@example.org"],
        "From: a@alice.example\r\nTo: b@example.org\r\nSubject: bounce me\r\n\r\nx\r\n",
    )
    .await;
    assert_eq!(r.code, 250, "{r:?}");
    // The bounce goes to the sender through the same route (Graph).
    assert!(p2.wait(W, |p| p.sent().len() == 1).await, "no bounce");
    let dsn = text(&p2.sent()[0].1);
    for needle in [
        "a@alice.example",
        "b@example.org",
        "Status: 5.0.0",
        "ErrorInvalidRecipients",
        // Microsoft 365 sends only as the mailbox: the DSN comes from it.
        &format!("From: Mail Delivery System <{MAILBOX}>\r\n"),
    ] {
        assert!(dsn.contains(needle), "DSN lacks {needle:?}:\n{dsn}");
    }
    queue_drained(&h).await;
    drop(p);
}

/// Graph takes about 4 MB a request: a bigger message is refused with 552 5.3.4
/// at MAIL when SIZE says so, and at the end of DATA otherwise; never accepted
/// and bounced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_over_the_graph_limit_is_refused_before_250() {
    let max = postern::upstream::graph::MAX_MESSAGE as usize;
    let big = format!(
        "To: b@example.org\r\n\r\n{}",
        ("y".repeat(998) + "\r\n").repeat(max / 1000 + 10)
    );
    for queue in [false, true] {
        let (h, p) = start(queue, |_| {}).await;
        let mut c = h.session("alice", "alice-password").await;
        let r = c
            .cmd(&format!("MAIL FROM:<a@alice.example> SIZE={}", max + 1))
            .await;
        assert_eq!((r.code, r.esc), (552, Some(Esc(5, 3, 4))), "{r:?}");
        let r = c
            .send_mail("a@alice.example", &["b@example.org"], &big)
            .await;
        assert_eq!(
            (r.code, r.esc),
            (552, Some(Esc(5, 3, 4))),
            "queue={queue}: {r:?}"
        );
        // The session goes on, and a small message goes through.
        let small = "To: b@example.org\r\n\r\nsmall\r\n";
        let r = c
            .send_mail("a@alice.example", &["b@example.org"], small)
            .await;
        assert_eq!(r.code, 250, "queue={queue}: {r:?}");
        assert!(p.wait(W, |p| p.sent().len() == 1).await);
        if queue {
            queue_drained(&h).await;
        }
        assert_eq!(p.graph_requests(), 1, "queue={queue}: only the small one");
    }
}

/// The provider revokes the token: Graph answers 401, Postern fetches a new token
/// once and the message is delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_401_fetches_a_new_token_once() {
    for queue in [false, true] {
        let (h, p) = start(queue, |_| {}).await;
        assert!(p.wait(W, |p| p.token_requests() == 1).await);
        p.invalidate_all();
        let r = send(&h, &["b@example.org"], "To: b@example.org\r\n\r\nx\r\n").await;
        assert_eq!(r.code, 250, "queue={queue}: {r:?}");
        assert!(p.wait(W, |p| p.sent().len() == 1).await);
        assert_eq!(p.token_requests(), 2, "queue={queue}");
        assert_eq!(p.graph_requests(), 2, "queue={queue}");
        common::assert_no_secrets(&h.logs(), &p.issued());
    }
}

/// The token endpoint is down: passthrough answers 451 after DATA, never 5xx; the
/// queue keeps the message and delivers it once the endpoint is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_endpoint_down_defers_graph_delivery() {
    let (h, p) = start(false, |p| p.set_mode(TokenMode::Unavailable)).await;
    let r = send(&h, &["b@example.org"], "To: b@example.org\r\n\r\nx\r\n").await;
    // Not "connection lost": nothing was sent.
    assert_eq!((r.code, r.esc), (451, Some(Esc(4, 4, 1))), "{r:?}");
    assert!(h.wait_log("message not sent", W).await);
    assert_eq!(p.graph_requests(), 0);
    drop(h);

    let (h, p) = start(true, |p| p.set_mode(TokenMode::Refuse)).await;
    let r = send(&h, &["b@example.org"], "To: b@example.org\r\n\r\nx\r\n").await;
    assert_eq!(r.code, 250, "{r:?}");
    assert!(h.wait_log("delivery attempt", W).await);
    assert!(p.sent().is_empty());
    p.set_mode(TokenMode::Up);
    let (ok, out) = common::cli(&h, &["queue", "flush"]);
    assert!(ok, "{out}");
    assert!(p.wait(W, |p| p.sent().len() == 1).await);
    common::assert_no_secrets(&h.logs(), &p.issued());
}

/// A second 429 asking for longer than Postern waits within an attempt: the Graph
/// entry is held at least that long (its own first pause is 30 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_queue_honours_a_long_retry_after() {
    let (h, p) = start(true, |p| {
        p.script(&[GraphAnswer::Throttle(1), GraphAnswer::Throttle(45)])
    })
    .await;
    let r = send(&h, &["b@example.org"], "To: b@example.org\r\n\r\nx\r\n").await;
    assert_eq!(r.code, 250, "{r:?}");
    assert!(h.wait_log("holding its mail", W).await);
    let logs = h.logs();
    let pause = logs
        .iter()
        .find(|l| l.contains("holding its mail"))
        .unwrap();
    assert!(pause.contains("pause_s=45"), "{pause}");
    assert_eq!(p.graph_requests(), 2);
    assert!(p.sent().is_empty());
}

/// A 503 with `Retry-After`: the queue does not try again before it, although its
/// schedule (1 s) would; a flush delivers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_queue_waits_out_a_503_retry_after() {
    let (h, p) = start(true, |p| p.script(&[GraphAnswer::UnavailableFor(60)])).await;
    let r = send(&h, &["b@example.org"], "To: b@example.org\r\n\r\nx\r\n").await;
    assert_eq!(r.code, 250, "{r:?}");
    assert!(p.wait(W, |p| p.graph_requests() == 1).await);
    // The schedule's 1 s and 2 s retries would have come by now.
    assert!(
        !p.wait(Duration::from_secs(4), |p| p.graph_requests() > 1)
            .await
    );
    let (ok, out) = common::cli(&h, &["queue", "flush"]);
    assert!(ok, "{out}");
    assert!(p.wait(W, |p| p.sent().len() == 1).await);
}

/// Graph documents 202, but any 2xx means it took the message (answered 250, never
/// bounced); a redirect, which Postern does not follow, is temporary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_2xx_is_delivered_and_a_redirect_is_temporary() {
    let (h, p) = start(false, |p| {
        p.script(&[
            GraphAnswer::Status(200),
            GraphAnswer::Status(301),
            GraphAnswer::Status(307),
        ])
    })
    .await;
    let r = send(&h, &["b@example.org"], "To: b@example.org\r\n\r\nx\r\n").await;
    assert_eq!(r.code, 250, "200: {r:?}");
    for status in [301, 307] {
        let r = send(&h, &["b@example.org"], "To: b@example.org\r\n\r\nx\r\n").await;
        assert_eq!(r.code, 451, "{status}: {r:?}");
    }
    assert_eq!(p.graph_requests(), 3);
}

/// Mail from `@client-a.example` goes to Graph, the rest to the SMTP stand-in.
async fn start_routed(queue: bool, before: impl FnOnce(&Provider)) -> (Harness, Provider) {
    let ca = TestCa::new("Postern test CA").unwrap();
    let p = Provider::start(&ca, Grant::ClientCredentials, 3600).await;
    before(&p);
    let (oauth, files) = p.oauth2_yaml();
    let oauth: String = oauth.lines().map(|l| format!("    {l}\n")).collect();
    let yaml = format!(
        "smarthost:\n  address: \"localhost:{{SINK}}\"\n  {{RELAY}}\nroutes:\n  - match: \"@client-a.example\"\n    smarthost:\n      transport: graph\n      graph_url: {}\n      ca_file: ca.pem\n      username: {MAILBOX}\n{oauth}",
        p.graph_url()
    )
    .replace("{RELAY}", "tls: starttls\n  ca_file: ca.pem\n  username: relay-user\n  password_file: smarthost.secret");
    let h = Harness::start(Setup {
        ca: Some(ca),
        users: vec![TestUser::new(
            "alice",
            "alice-password",
            &["@alice.example", "@client-a.example"],
        )],
        smarthost_yaml: Some(yaml),
        files,
        queue,
        ..Setup::default()
    })
    .await;
    (h, p)
}

/// A Graph mailbox that answers 429 with a long `Retry-After` is held on its own:
/// the SMTP route's mail goes on at once, while mail for the mailbox waits for the
/// hold without Graph being asked (queue: no attempt counted; passthrough: 451 at
/// MAIL).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_throttled_graph_mailbox_holds_only_its_route() {
    for queue in [false, true] {
        let (h, p) = start_routed(queue, |p| p.script(&[GraphAnswer::Throttle(120)])).await;
        let mut c = h.session("alice", "alice-password").await;
        let body = "To: b@example.org\r\n\r\nx\r\n";
        let r = c
            .send_mail("news@client-a.example", &["b@example.org"], body)
            .await;
        let expect = if queue { 250 } else { 451 };
        assert_eq!(r.code, expect, "queue={queue}: {r:?}");
        assert!(h.wait_log("holding its mail", W).await, "queue={queue}");
        let r = c
            .send_mail("me@alice.example", &["b@example.org"], body)
            .await;
        assert_eq!(r.code, 250, "queue={queue}: {r:?}");
        assert_eq!(h.sink.wait_for(1, Duration::from_secs(10)).await.len(), 1);
        let r = c
            .send_mail("news@client-a.example", &["b@example.org"], body)
            .await;
        if queue {
            assert_eq!(r.code, 250, "{r:?}");
            let id = r.text.rsplit(' ').next().unwrap().to_string();
            tokio::time::sleep(Duration::from_secs(2)).await;
            let (_, list) = common::cli(&h, &["queue", "list"]);
            let line = list.lines().find(|l| l.starts_with(&id)).unwrap();
            assert!(line.contains(" 0  b@example.org"), "counted: {list}");
        } else {
            assert_eq!((r.code, r.esc), (451, Some(Esc(4, 7, 0))), "{r:?}");
            assert!(r.text.contains("on hold"), "{r:?}");
        }
        assert_eq!(
            p.graph_requests(),
            1,
            "queue={queue}: Graph asked during the hold"
        );
        assert!(p.sent().is_empty());
    }
}

/// Graph on one sender's route only: its limits (header recipients, size) apply to
/// that sender's mail, not to mail on the default SMTP route.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graph_limits_apply_to_the_senders_routed_to_graph_only() {
    let max = postern::upstream::graph::MAX_MESSAGE as usize;
    let big = format!(
        "To: b@example.org\r\n\r\n{}",
        ("y".repeat(998) + "\r\n").repeat(max / 1000 + 10)
    );
    let outside = "To: b@example.org\r\nCc: boss@example.org\r\n\r\nx\r\n";
    for queue in [false, true] {
        let (h, p) = start_routed(queue, |_| {}).await;
        let mut c = h.session("alice", "alice-password").await;
        let routed = "news@client-a.example";
        let r = c.send_mail(routed, &["b@example.org"], outside).await;
        assert_eq!(
            (r.code, r.esc),
            (554, Some(Esc(5, 7, 1))),
            "queue={queue}: {r:?}"
        );
        let r = c.send_mail(routed, &["b@example.org"], &big).await;
        assert_eq!(
            (r.code, r.esc),
            (552, Some(Esc(5, 3, 4))),
            "queue={queue}: {r:?}"
        );
        let r = c
            .send_mail(
                routed,
                &["b@example.org", "c@example.org"],
                "To: b@example.org\r\n\r\nx\r\n",
            )
            .await;
        assert_eq!(r.code, 250, "queue={queue}: {r:?}");
        // The default route (SMTP) takes both.
        let r = c
            .send_mail("me@alice.example", &["b@example.org"], outside)
            .await;
        assert_eq!(r.code, 250, "queue={queue}: {r:?}");
        let r = c
            .send_mail("me@alice.example", &["b@example.org"], &big)
            .await;
        assert_eq!(r.code, 250, "queue={queue}: {r:?}");
        assert!(p.wait(W, |p| p.sent().len() == 1).await);
        assert!(text(&p.sent()[0].1).starts_with("Bcc: c@example.org\r\n"));
        assert_eq!(h.sink.wait_for(2, W).await.len(), 2, "queue={queue}");
    }
}
