//! A client that pipelines its transaction sends DATA with its last RCPT; Postern
//! sends that RCPT and DATA to the smarthost in one write too (it offers
//! PIPELINING), and still answers every command in order with the smarthost's
//! verdict. A client that does not pipeline changes nothing upstream.

mod common;

use common::{Harness, Setup};
use std::time::Duration;

const W: Duration = Duration::from_secs(10);

/// MAIL, the RCPTs and DATA in one write; the codes of their replies.
async fn pipelined(c: &mut common::client::Client, rcpts: &[&str]) -> Vec<u16> {
    pipelined_from(c, "a@alice.example", rcpts).await
}

/// The same from `sender`.
async fn pipelined_from(c: &mut common::client::Client, sender: &str, rcpts: &[&str]) -> Vec<u16> {
    let mut batch = format!("MAIL FROM:<{sender}>\r\n");
    for r in rcpts {
        batch.push_str(&format!("RCPT TO:<{r}>\r\n"));
    }
    batch.push_str("DATA\r\n");
    c.send_raw(batch.as_bytes()).await;
    let mut codes = Vec::new();
    for _ in 0..rcpts.len() + 2 {
        codes.push(c.read_reply().await.code);
    }
    codes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_recipient_and_data_go_upstream_together() {
    let h = Harness::start(Setup::default()).await;
    let mut c = h.session("alice", "alice-password").await;
    for i in 0..3 {
        assert_eq!(
            pipelined(&mut c, &["bob@example.org"]).await,
            [250, 250, 354]
        );
        c.send_raw(format!("Subject: {i}\r\n\r\nx\r\n.\r\n").as_bytes())
            .await;
        assert_eq!(c.read_reply().await.code, 250);
    }
    assert_eq!(h.sink.wait_for(3, W).await.len(), 3);
    assert_eq!(h.sink.pipelined_data(), 3, "RCPT and DATA in one write");
    assert_eq!(h.sink.connections(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_last_recipient_keeps_every_reply_in_order() {
    let h = Harness::start(Setup::default()).await;
    let mut c = h.session("alice", "alice-password").await;
    // The only recipient refused: the smarthost refuses DATA too, and the client
    // hears that there is no valid recipient; the connection goes on.
    let codes = pipelined(&mut c, &["reject550@example.org"]).await;
    assert_eq!(codes, [250, 550, 554]);
    c.expect("RSET", 250).await;
    // The smarthost's RSET runs in the background; then its connection is pooled.
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The last of two refused: DATA still goes on, for the first.
    let codes = pipelined(&mut c, &["one@example.org", "reject550@example.org"]).await;
    assert_eq!(codes, [250, 250, 550, 354]);
    c.send_raw(b"Subject: y\r\n\r\ny\r\n.\r\n").await;
    assert_eq!(c.read_reply().await.code, 250);
    // And a recipient after a DATA the smarthost refused is asked as usual.
    let codes = pipelined(&mut c, &["reject550@example.org"]).await;
    assert_eq!(codes, [250, 550, 554]);
    c.expect("RCPT TO:<two@example.org>", 250).await;
    c.expect("DATA", 354).await;
    c.send_raw(b"Subject: z\r\n\r\nz\r\n.\r\n").await;
    assert_eq!(c.read_reply().await.code, 250);
    let msgs = h.sink.wait_for(2, W).await;
    assert_eq!(msgs[0].rcpts, ["one@example.org"]);
    assert_eq!(msgs[1].rcpts, ["two@example.org"]);
    assert_eq!(h.sink.connections(), 1, "the smarthost connection was kept");
}

/// The smarthost throttles the DATA that went up with the only recipient, which it
/// refused: the client hears of no valid recipient (its DATA never needed the
/// smarthost's), yet the throttle holds the smarthost like any other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_throttle_on_a_pipelined_data_holds_the_smarthost() {
    let h = Harness::start(Setup::default()).await;
    let mut c = h.session("alice", "alice-password").await;
    let codes = pipelined_from(
        &mut c,
        "throttledata@alice.example",
        &["reject550@example.org"],
    )
    .await;
    assert_eq!(codes, [250, 550, 554]);
    assert_eq!(h.sink.pipelined_data(), 1);
    c.expect("RSET", 250).await;
    let r = c.cmd("MAIL FROM:<a@alice.example>").await;
    assert_eq!(r.code / 100, 4, "the smarthost is held: {r:?}");
    assert!(
        h.logs()
            .iter()
            .any(|l| l.contains("smarthost is throttling"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_waits_for_each_reply_changes_nothing_upstream() {
    let h = Harness::start(Setup::default()).await;
    let mut c = h.session("alice", "alice-password").await;
    let r = c
        .send_mail(
            "a@alice.example",
            &["bob@example.org"],
            "Subject: w\r\n\r\nw\r\n",
        )
        .await;
    assert_eq!(r.code, 250);
    assert_eq!(h.sink.wait_for(1, W).await.len(), 1);
    assert_eq!(h.sink.pipelined_data(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_delivery_sends_data_with_the_last_recipient() {
    let h = Harness::start(Setup {
        queue: true,
        ..Setup::default()
    })
    .await;
    let mut c = h.session("alice", "alice-password").await;
    let r = c
        .send_mail(
            "a@alice.example",
            &[
                "one@example.org",
                "reject550@example.org",
                "two@example.org",
            ],
            "Subject: q\r\n\r\nq\r\n",
        )
        .await;
    assert_eq!(r.code, 250);
    let msgs = h.sink.wait_for(1, W).await;
    assert_eq!(msgs[0].rcpts, ["one@example.org", "two@example.org"]);
    assert_eq!(h.sink.pipelined_data(), 1);
}
