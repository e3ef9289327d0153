//! SMTP with AUTH XOAUTH2 against the stand-ins: the token is fetched once and
//! shared, renewed before it expires, fetched again once when the smarthost refuses
//! it; a token endpoint that is down defers (queue) or answers 4xx (passthrough);
//! and no secret or token reaches the log.

mod common;

use common::oauth_standins::{Grant, MAILBOX, Provider, TokenMode};
use common::{Harness, Setup};
use postern::tls::TestCa;
use std::time::Duration;

const W: Duration = Duration::from_secs(20);

/// Postern relaying to the stand-in smarthost with XOAUTH2 tokens from `p`;
/// `entry_extra` adds keys to the smarthost entry.
async fn start(
    queue: bool,
    grant: Grant,
    lifetime: u64,
    entry_extra: &str,
    before: impl FnOnce(&Provider),
) -> (Harness, Provider) {
    let ca = TestCa::new("Postern test CA").unwrap();
    let p = Provider::start(&ca, grant, lifetime).await;
    before(&p);
    let (yaml, files) = p.smtp_smarthost();
    let h = Harness::start(Setup {
        ca: Some(ca),
        sink_xoauth2: Some(p.token_check()),
        smarthost_yaml: Some(yaml + entry_extra),
        files,
        queue,
        ..Setup::default()
    })
    .await;
    (h, p)
}

async fn send(h: &Harness, subject: &str) -> postern::proto::reply::Reply {
    let mut c = h.session("alice", "alice-password").await;
    c.send_mail(
        "a@alice.example",
        &["b@example.org"],
        &format!("Subject: {subject}\r\n\r\nbody\r\n"),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_token_is_fetched_and_shared_by_concurrent_deliveries() {
    let (h, p) = start(false, Grant::ClientCredentials, 3600, "", |_| {}).await;
    let h = std::sync::Arc::new(h);
    let mut sends = Vec::new();
    for n in 0..4 {
        let h = h.clone();
        sends.push(tokio::spawn(
            async move { send(&h, &format!("m{n}")).await },
        ));
    }
    for s in sends {
        let r = s.await.unwrap();
        assert_eq!(r.code, 250, "{r:?}");
    }
    let msgs = h.sink.wait_for(4, W).await;
    assert_eq!(msgs.len(), 4);
    for m in &msgs {
        assert_eq!(m.authenticated_as.as_deref(), Some(MAILBOX));
        assert!(m.tls, "XOAUTH2 only after STARTTLS");
    }
    assert!(h.sink.auths() >= 1);
    assert_eq!(p.token_requests(), 1, "one token for every connection");
    assert_eq!(h.sink.auth_failures(), 0);
    common::assert_no_secrets(&h.logs(), &p.issued());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_google_refresh_token_grant_delivers_in_queue_mode() {
    let (h, p) = start(true, Grant::RefreshToken, 3600, "", |_| {}).await;
    for n in 0..2 {
        assert_eq!(send(&h, &format!("g{n}")).await.code, 250);
    }
    let msgs = h.sink.wait_for(2, W).await;
    assert_eq!(msgs.len(), 2);
    assert_eq!(msgs[0].authenticated_as.as_deref(), Some(MAILBOX));
    assert_eq!(p.token_requests(), 1);
    common::assert_no_secrets(&h.logs(), &p.issued());
}

/// A token living 4 s is renewed at half-life: messages sent over 7 s on fresh
/// connections all go through, new tokens are fetched, and none is presented after
/// it expired.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_lived_token_is_renewed_before_it_expires() {
    let (h, p) = start(
        false,
        Grant::ClientCredentials,
        4,
        "  max_messages_per_connection: 1\n",
        |_| {},
    )
    .await;
    let started = std::time::Instant::now();
    let mut n = 0;
    while started.elapsed() < Duration::from_secs(7) {
        let r = send(&h, &format!("r{n}")).await;
        assert_eq!(r.code, 250, "message {n}: {r:?}");
        n += 1;
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    assert_eq!(h.sink.wait_for(n, W).await.len(), n);
    assert!(
        p.token_requests() >= 3,
        "renewed at 2 s, 4 s, 6 s: {} requests",
        p.token_requests()
    );
    assert_eq!(p.expired_presented(), 0, "an expired token was presented");
    assert_eq!(h.sink.auth_failures(), 0);
    common::assert_no_secrets(&h.logs(), &p.issued());
}

/// The provider revokes the token Postern holds: the smarthost answers `334` and
/// `535`, Postern fetches a new token once and the message goes through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_token_is_replaced_once_and_the_message_delivered() {
    for queue in [false, true] {
        let (h, p) = start(queue, Grant::ClientCredentials, 3600, "", |_| {}).await;
        assert!(p.wait(W, |p| p.token_requests() == 1).await);
        p.invalidate_all();
        let r = send(&h, "revoked").await;
        assert_eq!(r.code, 250, "queue={queue}: {r:?}");
        let msgs = h.sink.wait_for(1, W).await;
        assert_eq!(msgs.len(), 1, "queue={queue}");
        assert_eq!(p.token_requests(), 2, "queue={queue}: fetched again once");
        assert_eq!(h.sink.auth_failures(), 1, "queue={queue}");
        assert!(h.wait_log("refused the access token", W).await);
        common::assert_no_secrets(&h.logs(), &p.issued());
    }
}

/// A token the provider keeps refusing fails the attempt after one new token,
/// with a 4xx in passthrough: no loop of token requests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_refused_twice_is_a_transient_failure() {
    let (h, p) = start(false, Grant::ClientCredentials, 3600, "", |_| {}).await;
    assert!(p.wait(W, |p| p.token_requests() == 1).await);
    // Every token, also the next one, is refused by the smarthost.
    p.set_smtp_refuses(true);
    let mut c = h.session("alice", "alice-password").await;
    let r = c.cmd("MAIL FROM:<a@alice.example>").await;
    assert_eq!((r.code / 100, r.code), (4, 451), "{r:?}");
    assert_eq!(p.token_requests(), 2, "one new token, not a loop");
    assert_eq!(h.sink.auth_failures(), 2);
    assert!(h.sink.messages().is_empty());
    common::assert_no_secrets(&h.logs(), &p.issued());
}

/// The token endpoint is down, refuses the client, or hangs up: passthrough
/// answers 451 at MAIL, never 5xx.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_endpoint_down_passthrough_answers_451() {
    let (h, p) = start(false, Grant::ClientCredentials, 3600, "", |p| {
        p.set_mode(TokenMode::Unavailable)
    })
    .await;
    for mode in [TokenMode::Unavailable, TokenMode::Refuse, TokenMode::Hangup] {
        p.set_mode(mode);
        let mut c = h.session("alice", "alice-password").await;
        let r = c.cmd("MAIL FROM:<a@alice.example>").await;
        assert_eq!(r.code, 451, "{mode:?}: {r:?}");
    }
    assert!(h.sink.messages().is_empty());
    assert!(h.wait_log("access token", W).await);
    common::assert_no_secrets(&h.logs(), &p.issued());
}

/// Queue mode keeps the message while the token endpoint is down and delivers it
/// once it is back (`queue flush`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_endpoint_down_queue_keeps_the_message_and_delivers_later() {
    let (h, p) = start(true, Grant::ClientCredentials, 3600, "", |p| {
        p.set_mode(TokenMode::Unavailable)
    })
    .await;
    let r = send(&h, "waits").await;
    assert_eq!(r.code, 250, "{r:?}");
    let id = r.text.rsplit(' ').next().unwrap().to_string();
    let deadline = std::time::Instant::now() + W;
    loop {
        let (ok, list) = common::cli(&h, &["queue", "list"]);
        assert!(ok && list.contains(&id), "{list}");
        if list.contains("token") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no token error: {list}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(h.sink.messages().is_empty());
    p.set_mode(TokenMode::Up);
    let (ok, out) = common::cli(&h, &["queue", "flush"]);
    assert!(ok, "{out}");
    let msgs = h.sink.wait_for(1, W).await;
    assert_eq!(msgs.len(), 1);
    assert_eq!(msgs[0].authenticated_as.as_deref(), Some(MAILBOX));
    // Nor in what the commands print.
    let (_, list) = common::cli(&h, &["queue", "list"]);
    let (ok, check) = common::cli(&h, &["check-config"]);
    assert!(ok, "{check}");
    let printed = vec![list, check, out];
    common::assert_no_secrets(&printed, &p.issued());
    common::assert_no_secrets(&h.logs(), &p.issued());
}

/// The token endpoint is down when the token is due for renewal: deliveries go on
/// with the current token, which is still valid, instead of failing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_endpoint_down_at_renewal_keeps_the_valid_token_in_use() {
    let (h, p) = start(
        false,
        Grant::ClientCredentials,
        6,
        "  max_messages_per_connection: 1\n",
        |_| {},
    )
    .await;
    assert!(p.wait(W, |p| p.token_requests() == 1).await);
    p.set_mode(TokenMode::Unavailable);
    // The renewal at half-life (3 s) fails; the token is good until 6 s.
    assert!(p.wait(W, |p| p.token_requests() >= 2).await);
    let r = send(&h, "still valid").await;
    assert_eq!(r.code, 250, "{r:?}");
    assert_eq!(h.sink.wait_for(1, W).await.len(), 1);
    assert_eq!(p.issued().len(), 1);
    assert_eq!(p.expired_presented(), 0);
    common::assert_no_secrets(&h.logs(), &p.issued());
}

/// An endpoint granting tokens that expire at once is not asked in a tight loop by
/// the background refresher.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zero_lifetime_token_is_not_fetched_in_a_loop() {
    let (h, p) = start(false, Grant::ClientCredentials, 0, "", |_| {}).await;
    assert!(p.wait(W, |p| p.token_requests() >= 1).await);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let n = p.token_requests();
    assert!(n <= 6, "{n} token requests in 3 s");
    common::assert_no_secrets(&h.logs(), &p.issued());
}

/// At `trace`, where the HTTP and TLS libraries log too, neither the client
/// secret nor a token reaches the log: over SMTP and Graph, with a token refused
/// and replaced, and with the endpoint refusing the client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_reaches_the_log_even_at_trace() {
    for graph in [false, true] {
        let ca = TestCa::new("Postern test CA").unwrap();
        let p = Provider::start(&ca, Grant::ClientCredentials, 3600).await;
        let (yaml, files) = if graph {
            p.graph_smarthost()
        } else {
            let (yaml, files) = p.smtp_smarthost();
            (yaml + "  max_messages_per_connection: 1\n", files)
        };
        let h = Harness::start(Setup {
            ca: Some(ca),
            sink_xoauth2: Some(p.token_check()),
            smarthost_yaml: Some(yaml),
            files,
            log_level: Some("trace"),
            ..Setup::default()
        })
        .await;
        assert!(p.wait(W, |p| p.token_requests() == 1).await);
        p.invalidate_all();
        assert_eq!(send(&h, "one").await.code, 250, "graph={graph}");
        p.invalidate_all();
        p.set_mode(TokenMode::Refuse);
        assert_eq!(send(&h, "two").await.code, 451, "graph={graph}");
        assert_eq!(p.issued().len(), 2, "graph={graph}");
        assert!(h.wait_log("invalid_client", W).await, "graph={graph}");
        assert!(h.logs().len() > 50, "trace logs");
        common::assert_no_secrets(&h.logs(), &p.issued());
    }
}

/// No token at hand (the endpoint was down at start) and four deliveries at once:
/// one request to the endpoint, the others wait for its answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_deliveries_without_a_token_make_one_request() {
    let (h, p) = start(false, Grant::ClientCredentials, 3600, "", |p| {
        p.set_mode(TokenMode::Unavailable)
    })
    .await;
    assert!(p.wait(W, |p| p.token_requests() == 1).await);
    p.set_mode(TokenMode::Up);
    let h = std::sync::Arc::new(h);
    let mut sends = Vec::new();
    for n in 0..4 {
        let h = h.clone();
        sends.push(tokio::spawn(
            async move { send(&h, &format!("c{n}")).await },
        ));
    }
    for s in sends {
        let r = s.await.unwrap();
        assert_eq!(r.code, 250, "{r:?}");
    }
    assert_eq!(h.sink.wait_for(4, W).await.len(), 4);
    assert_eq!(p.issued().len(), 1, "one token for all four");
    assert_eq!(p.token_requests(), 2, "the failed one and one more");
    common::assert_no_secrets(&h.logs(), &p.issued());
}

/// A token endpoint that accepts the connection and never answers holds a
/// message no longer than an SMTP command would (`upstream_command`), not the
/// end-of-data timeout: the client gets its 451 before it gives up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_token_endpoint_is_given_up_after_the_command_timeout() {
    let ca = TestCa::new("Postern test CA").unwrap();
    let p = Provider::start(&ca, Grant::ClientCredentials, 3600).await;
    p.set_mode(TokenMode::Stall);
    let (yaml, files) = p.smtp_smarthost();
    let h = Harness::start(Setup {
        ca: Some(ca),
        sink_xoauth2: Some(p.token_check()),
        smarthost_yaml: Some(yaml),
        files,
        extra: "timeouts:\n  upstream_command: 2s\n  upstream_data_done: 120s\n".into(),
        ..Setup::default()
    })
    .await;
    let mut c = h.session("alice", "alice-password").await;
    c.send_raw(b"MAIL FROM:<a@alice.example>\r\n").await;
    let r = tokio::time::timeout(W, c.read_reply())
        .await
        .expect("no reply within 20 s");
    assert_eq!(r.code, 451, "{r:?}");
    // The delivery waited for the background refresher's request and shared its
    // failure instead of stalling on a second one.
    assert_eq!(p.token_requests(), 1);
    assert!(h.sink.messages().is_empty());
}
