//! `max_messages_per_minute` on a smarthost entry: messages are spaced evenly and
//! never more than N in any 60 seconds. In queue mode they wait their turn without
//! counting as attempts and without failing over; in passthrough a client waits
//! briefly at DATA, or gets a transient 451 4.7.0 there (a MAIL it resets uses no
//! slot).

mod common;

use common::{Harness, Setup, free_port, postern_bin};
use std::process::Command;
use std::time::Duration;

const W: Duration = Duration::from_secs(30);

/// Two smarthosts in failover order, the first paced to `per_minute`.
fn paced_route(per_minute: u32, second: u16) -> String {
    format!(
        "smarthost:\n  - address: \"localhost:{{SINK}}\"\n    {{RELAY}}\n    max_messages_per_minute: {per_minute}\n  - address: \"localhost:{second}\"\n    {{RELAY}}\n"
    )
}

fn queue_list(h: &Harness) -> String {
    let out = Command::new(postern_bin())
        .args(["queue", "list", "-c"])
        .arg(&h.config_path)
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The Prometheus page.
async fn get_metrics(port: u16) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut out = String::new();
    let read = s.read_to_string(&mut out);
    tokio::time::timeout(W, read).await.unwrap().unwrap();
    out
}

/// The gaps between consecutive arrivals at the sink.
fn gaps(h: &Harness) -> Vec<Duration> {
    let mut at: Vec<_> = h.sink.messages().iter().map(|m| m.received_at).collect();
    at.sort();
    at.windows(2).map(|w| w[1] - w[0]).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_burst_is_spaced_a_second_apart_without_counting_attempts() {
    let second_port = free_port();
    let h = Harness::start(Setup {
        queue: true,
        smarthost_yaml: Some(paced_route(60, second_port)),
        ..Setup::default()
    })
    .await;
    let second = h
        .sink_at(second_port, common::RELAY_USER, common::RELAY_PASSWORD)
        .await;
    let mut c = h.session("alice", "alice-password").await;
    for i in 0..5 {
        let r = c
            .send_mail(
                "a@alice.example",
                &["b@example.org"],
                &format!("X-Seq: {i}\r\n\r\nx\r\n"),
            )
            .await;
        assert_eq!(r.code, 250, "{r:?}");
    }
    // While the burst drains, the waiting messages show no attempt and no error.
    assert!(h.sink.wait_for(1, W).await.len() < 5, "not paced");
    let list = queue_list(&h);
    let waiting: Vec<&str> = list
        .lines()
        .filter(|l| l.contains("a@alice.example"))
        .collect();
    assert!(!waiting.is_empty(), "nothing left waiting:\n{list}");
    for line in &waiting {
        let attempts = line.split_whitespace().nth(4).unwrap();
        assert_eq!(attempts, "0", "a paced message counted an attempt:\n{list}");
    }
    assert!(!list.contains("last error:"), "{list}");
    let msgs = h.sink.wait_for(5, W).await;
    assert_eq!(msgs.len(), 5, "every message arrives");
    let gaps = gaps(&h);
    assert!(
        gaps.iter().all(|g| *g >= Duration::from_millis(800)),
        "closer than the pacing allows: {gaps:?}"
    );
    // Spaced, not held back much longer than their turn (bounded liveness).
    assert!(
        gaps.iter().all(|g| *g <= Duration::from_secs(3)),
        "{gaps:?}"
    );
    // Pacing is not failure: nothing went to the second smarthost, each message
    // took exactly one counted attempt, and none was deferred.
    assert!(second.messages().is_empty(), "failed over to the second");
    let attempt_lines = || -> Vec<String> {
        let logs = h.logs().into_iter();
        logs.filter(|l| l.contains("delivery attempt")).collect()
    };
    let deadline = std::time::Instant::now() + W;
    while attempt_lines().len() < 5 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let attempts = attempt_lines();
    assert_eq!(attempts.len(), 5, "{attempts:#?}");
    assert!(
        attempts
            .iter()
            .all(|l| l.contains("attempt=1") && l.contains("deferred=0")),
        "{attempts:#?}"
    );
    assert!(queue_list(&h).contains("0 message(s) queued"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passthrough_waits_briefly_for_its_turn_then_answers_451() {
    // One a second: the second message waits about a second at DATA.
    let h = Harness::start(Setup {
        smarthost_yaml: Some(paced_route(60, free_port())),
        ..Setup::default()
    })
    .await;
    let mut c = h.session("alice", "alice-password").await;
    for i in 0..2 {
        let r = c
            .send_mail(
                "a@alice.example",
                &["b@example.org"],
                &format!("X-Seq: {i}\r\n\r\nx\r\n"),
            )
            .await;
        assert_eq!(r.code, 250, "{r:?}");
    }
    assert_eq!(h.sink.wait_for(2, W).await.len(), 2);
    assert!(gaps(&h)[0] >= Duration::from_millis(800), "{:?}", gaps(&h));
    drop(h);

    // One a minute. A transaction the client resets before DATA hands nothing
    // over and uses no slot, however often it comes.
    let metrics = free_port();
    let h = Harness::start(Setup {
        smarthost_yaml: Some(paced_route(1, free_port())),
        extra: format!("metrics:\n  address: \"127.0.0.1:{metrics}\"\n"),
        ..Setup::default()
    })
    .await;
    let mut c = h.session("alice", "alice-password").await;
    for _ in 0..3 {
        c.expect("MAIL FROM:<a@alice.example>", 250).await;
        c.expect("RCPT TO:<b@example.org>", 250).await;
        c.expect("RSET", 250).await;
    }
    let r = c
        .send_mail("a@alice.example", &["b@example.org"], "x\r\n")
        .await;
    assert_eq!(r.code, 250, "{r:?}");
    // The next slot is too far off to wait for at DATA.
    c.expect("MAIL FROM:<a@alice.example>", 250).await;
    c.expect("RCPT TO:<b@example.org>", 250).await;
    let r = c.cmd("DATA").await;
    assert_eq!(r.code, 451, "{r:?}");
    assert_eq!(
        r.esc.map(|e| e.to_string()).as_deref(),
        Some("4.7.0"),
        "{r:?}"
    );
    assert!(r.text.contains("sending rate"), "{r:?}");
    assert!(h.wait_log("sending rate reached", W).await);
    let m = get_metrics(metrics).await;
    assert!(
        m.contains("postern_paced_total{result=\"refused\"} 1"),
        "{m}"
    );
    // The session goes on: the refused transaction is over.
    c.expect("NOOP", 250).await;
    // Not failed over to the second smarthost (which is down anyway: a 451 4.4.1
    // "unavailable" would say it was tried).
    assert_eq!(h.sink.messages().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paced_failover_smarthost_defers_instead_of_exceeding_its_rate() {
    // The first smarthost is down; the second, paced to one a minute, takes the
    // first message and has no slot for the second for a minute.
    for queue in [false, true] {
        let down = free_port();
        let h = Harness::start(Setup {
            queue,
            smarthost_yaml: Some(format!(
                "smarthost:\n  - address: \"localhost:{down}\"\n    {{RELAY}}\n  - address: \"localhost:{{SINK}}\"\n    {{RELAY}}\n    max_messages_per_minute: 1\n"
            )),
            ..Setup::default()
        })
        .await;
        let mut c = h.session("alice", "alice-password").await;
        let first = c
            .send_mail(
                "a@alice.example",
                &["b@example.org"],
                "X-Seq: 1\r\n\r\nx\r\n",
            )
            .await;
        assert_eq!(first.code, 250, "queue={queue}: {first:?}");
        assert_eq!(h.sink.wait_for(1, W).await.len(), 1, "queue={queue}");
        let second = c
            .send_mail(
                "a@alice.example",
                &["b@example.org"],
                "X-Seq: 2\r\n\r\nx\r\n",
            )
            .await;
        if queue {
            // Kept, with the reason; an ordinary deferral (the first smarthost failed).
            assert_eq!(second.code, 250, "{second:?}");
            assert!(
                h.wait_log("failover smarthost's sending rate reached", W)
                    .await
            );
            let deadline = std::time::Instant::now() + W;
            let mut list = queue_list(&h);
            while !list.contains("last error:") && std::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(50)).await;
                list = queue_list(&h);
            }
            assert!(
                list.contains("451 4.7.0 smarthost sending rate reached"),
                "{list}"
            );
        } else {
            assert_eq!(second.code, 451, "{second:?}");
            assert_eq!(second.esc.map(|e| e.to_string()).as_deref(), Some("4.7.0"));
        }
        assert_eq!(h.sink.messages().len(), 1, "queue={queue}: over the rate");
    }
}
