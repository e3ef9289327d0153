//! Queue mode: a message answered 250 is never lost, and delivered exactly once.

mod common;

use common::{Harness, Setup, postern_bin};
use std::collections::HashMap;
use std::process::Command;
use std::time::Duration;

const W: Duration = Duration::from_secs(20);

fn queued() -> Setup {
    Setup {
        queue: true,
        ..Setup::default()
    }
}

fn cli(h: &Harness, args: &[&str]) -> (bool, String) {
    let out = Command::new(postern_bin())
        .args(args)
        .arg("-c")
        .arg(&h.config_path)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

fn queued_id(r: &postern::proto::reply::Reply) -> String {
    assert_eq!(r.code, 250, "{r:?}");
    r.text.rsplit(' ').next().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accepted_to_the_spool_then_delivered() {
    let h = Harness::start(queued()).await;
    let mut c = h.session("alice", "alice-password").await;
    let r = c
        .send_mail(
            "a@alice.example",
            &["b@example.org"],
            "Subject: q\r\nDate: Wed, 2 Dec 2026 06:00:00 +0000\r\nMessage-ID: <q@alice.example>\r\n\r\n.dot line\r\nbody\r\n",
        )
        .await;
    let id = queued_id(&r);
    let msgs = h.sink.wait_for(1, W).await;
    assert_eq!(msgs.len(), 1);
    let content = String::from_utf8(msgs[0].content.clone()).unwrap();
    assert!(
        content.contains(&format!("with ESMTPSA id {id}")),
        "{content}"
    );
    assert!(content.ends_with(
        "Subject: q\r\nDate: Wed, 2 Dec 2026 06:00:00 +0000\r\nMessage-ID: <q@alice.example>\r\n\r\n.dot line\r\nbody\r\n"
    ));
    assert!(
        msgs[0].raw.ends_with(b"\r\n..dot line\r\nbody\r\n.\r\n"),
        "dot-stuffed on the wire"
    );
    // The spool is empty once delivered.
    assert!(h.wait_log("delivery attempt", W).await);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (ok, list) = cli(&h, &["queue", "list"]);
    assert!(ok && list.contains("0 message(s) queued"), "{list}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smarthost_down_at_submission_then_up_delivers_exactly_once() {
    let h = Harness::start(Setup {
        smarthost_down: true,
        ..queued()
    })
    .await;
    let mut c = h.session("alice", "alice-password").await;
    let id = queued_id(
        &c.send_mail(
            "a@alice.example",
            &["b@example.org"],
            "Subject: later\r\n\r\nx\r\n",
        )
        .await,
    );
    assert!(h.wait_log("delivery attempt", W).await);
    // The attempt is logged just before its result is written to the spool.
    let deadline = std::time::Instant::now() + W;
    let list = loop {
        let (ok, list) = cli(&h, &["queue", "list"]);
        assert!(
            ok && list.contains(&id) && list.contains("1 message(s) queued"),
            "{list}"
        );
        if list.contains("cannot connect") || std::time::Instant::now() > deadline {
            break list;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        list.contains("cannot connect"),
        "the last error is shown: {list}"
    );
    let sink = h.start_smarthost().await;
    let (ok, out) = cli(&h, &["queue", "flush"]);
    assert!(ok, "{out}");
    assert_eq!(sink.wait_for(1, W).await.len(), 1);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        sink.messages().len(),
        1,
        "delivered once, not again on a later retry"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_after_250_loses_nothing() {
    let mut h = Harness::start(Setup {
        smarthost_down: true,
        ..queued()
    })
    .await;
    let mut c = h.session("alice", "alice-password").await;
    let mut ids = Vec::new();
    for i in 0..3 {
        let r = c
            .send_mail(
                "a@alice.example",
                &["b@example.org"],
                &format!("X-Seq: {i}\r\n\r\nx\r\n"),
            )
            .await;
        ids.push(queued_id(&r));
    }
    h.kill9();
    let sink = h.start_smarthost().await;
    h.launch().await;
    assert!(h.wait_log("resuming the queue", W).await);
    let msgs = sink.wait_for(3, W).await;
    assert_eq!(msgs.len(), 3);
    let mut seqs: Vec<String> = msgs
        .iter()
        .map(|m| {
            String::from_utf8_lossy(&m.content)
                .lines()
                .find(|l| l.starts_with("X-Seq"))
                .unwrap()
                .to_string()
        })
        .collect();
    seqs.sort();
    assert_eq!(seqs, vec!["X-Seq: 0", "X-Seq: 1", "X-Seq: 2"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permanent_failure_is_bounced_to_the_sender() {
    let h = Harness::start(queued()).await;
    let mut c = h.session("alice", "alice-password").await;
    let r = c
        .send_mail(
            "a@alice.example",
            &["good@example.org", "reject550@example.org"],
            "From: a@alice.example\r\nSubject: partly\r\n\r\nbody\r\n",
        )
        .await;
    let id = queued_id(&r);
    let msgs = h.sink.wait_for(2, W).await;
    assert_eq!(
        msgs.len(),
        2,
        "the message to the good recipient and the bounce"
    );
    assert_eq!(msgs[0].rcpts, vec!["good@example.org"]);
    let dsn = &msgs[1];
    assert_eq!(dsn.from, "", "bounces use the null reverse-path");
    assert_eq!(dsn.rcpts, vec!["a@alice.example"]);
    let text = String::from_utf8(dsn.content.clone()).unwrap();
    for needle in [
        "report-type=delivery-status",
        "Final-Recipient: rfc822; reject550@example.org",
        "Status: 5.1.1",
        "Action: failed",
        &format!("X-Postern-Queue-ID: {id}"),
        "Subject: partly",
    ] {
        assert!(text.contains(needle), "DSN lacks {needle:?}:\n{text}");
    }
    assert!(
        !text.contains("good@example.org"),
        "only the failed recipient is reported"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn temporary_failure_is_retried_then_delivered() {
    let h = Harness::start(queued()).await;
    let mut c = h.session("alice", "alice-password").await;
    queued_id(
        &c.send_mail(
            "a@alice.example",
            &["deferonce@example.org"],
            "Subject: retry\r\n\r\nx\r\n",
        )
        .await,
    );
    let msgs = h.sink.wait_for(1, W).await;
    assert_eq!(msgs.len(), 1);
    assert_eq!(msgs[0].rcpts, vec!["deferonce@example.org"]);
    assert!(h.wait_log("delivered=1", W).await);
    let attempts: Vec<String> = h
        .logs()
        .into_iter()
        .filter(|l| l.contains("delivery attempt"))
        .collect();
    assert!(attempts.len() >= 2, "{attempts:?}");
    assert!(attempts[0].contains("deferred=1"), "{}", attempts[0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unwritable_spool_answers_452() {
    let h = Harness::start(queued()).await;
    // Root ignores permissions, so make the spool's tmp/ something that is not a folder.
    let tmp = h.dir.path().join("spool/tmp");
    std::fs::remove_dir_all(&tmp).unwrap();
    std::fs::write(&tmp, b"not a folder").unwrap();
    let mut c = h.session("alice", "alice-password").await;
    c.expect("MAIL FROM:<a@alice.example>", 250).await;
    c.expect("RCPT TO:<b@example.org>", 250).await;
    let r = c.cmd("DATA").await;
    assert_eq!((r.code, r.esc.unwrap().to_string()), (452, "4.3.1".into()));
    assert!(h.wait_log("cannot write to the spool", W).await);
    assert!(h.sink.messages().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_delete_removes_a_message() {
    let h = Harness::start(Setup {
        smarthost_down: true,
        ..queued()
    })
    .await;
    let mut c = h.session("alice", "alice-password").await;
    let id = queued_id(
        &c.send_mail("a@alice.example", &["b@example.org"], "x\r\n")
            .await,
    );
    let (ok, out) = cli(&h, &["queue", "delete", &id]);
    assert!(ok, "{out}");
    let (_, list) = cli(&h, &["queue", "list"]);
    assert!(list.contains("0 message(s) queued"), "{list}");
    let (ok, _) = cli(&h, &["queue", "delete", &id]);
    assert!(!ok, "deleting twice fails");
    let (ok, _) = cli(&h, &["queue", "delete", "../../etc/passwd"]);
    assert!(!ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_messages_over_twenty_connections_none_lost_none_twice() {
    let h = Harness::start(Setup {
        extra: "limits:\n  max_connections_per_ip: 100\n".into(),
        ..queued()
    })
    .await;
    let h = std::sync::Arc::new(h);
    let mut tasks = Vec::new();
    for conn in 0..20 {
        let h = h.clone();
        tasks.push(tokio::spawn(async move {
            let mut c = h.session("alice", "alice-password").await;
            for i in 0..25 {
                let body = format!("X-Seq: {conn}-{i}\r\nSubject: load\r\n\r\nx\r\n");
                let r = c
                    .send_mail("a@alice.example", &["b@example.org"], &body)
                    .await;
                assert_eq!(r.code, 250, "{r:?}");
            }
            c.expect("QUIT", 221).await;
        }));
    }
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(120), t)
            .await
            .expect("bounded")
            .unwrap();
    }
    let msgs = h.sink.wait_for(500, Duration::from_secs(60)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let msgs = if msgs.len() == 500 {
        h.sink.messages()
    } else {
        msgs
    };
    let mut seen: HashMap<String, usize> = HashMap::new();
    for m in &msgs {
        let text = String::from_utf8_lossy(&m.content).into_owned();
        let seq = text
            .lines()
            .find(|l| l.starts_with("X-Seq"))
            .unwrap()
            .to_string();
        *seen.entry(seq).or_default() += 1;
    }
    assert_eq!(seen.len(), 500, "every message delivered");
    assert!(seen.values().all(|&n| n == 1), "none twice");
    assert_eq!(msgs.len(), 500);
}

/// A smarthost that throttles (`454` at MAIL) is held on its own: mail for another
/// route's smarthost goes on at once, mail for the held one waits without an
/// attempt being counted, and a flush ends the hold.
/// A smarthost that echoes a refused address (Postfix: `450 4.1.2 <ADDRESS>:
/// Recipient address rejected`) must not be taken for one that throttles because
/// the client put "throttling" in the address: no hold, everyone's mail goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_word_the_client_chose_in_a_refusal_holds_nothing() {
    for queue in [false, true] {
        let h = Harness::start(Setup {
            queue,
            ..Setup::default()
        })
        .await;
        let mut c = h.session("alice", "alice-password").await;
        let r = c
            .send_mail(
                "a@alice.example",
                &[
                    "echo450-throttling@nowhere.invalid",
                    "echo450@throttled.invalid",
                ],
                "Subject: bait\r\n\r\nx\r\n",
            )
            .await;
        // Passthrough: every recipient refused for now; queue: taken, tried later.
        assert_eq!(
            r.code,
            if queue { 250 } else { 450 },
            "queue={queue}: {r:?}"
        );
        assert!(
            h.wait_log("Recipient address rejected", W).await,
            "queue={queue}"
        );
        let mut other = h.session("alice", "alice-password").await;
        let r = other
            .send_mail(
                "b@alice.example",
                &["b@example.org"],
                "Subject: goes\r\n\r\nx\r\n",
            )
            .await;
        assert_eq!(r.code, 250, "queue={queue}: {r:?}");
        assert_eq!(
            h.sink.wait_for(1, Duration::from_secs(5)).await.len(),
            1,
            "queue={queue}"
        );
        assert!(
            !h.logs().iter().any(|l| l.contains("holding its mail")),
            "queue={queue}: {}",
            h.logs().join("\n")
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_throttled_smarthost_holds_only_its_own_mail() {
    let routed_port = common::free_port();
    let h = Harness::start(Setup {
        users: vec![common::TestUser::new(
            "alice",
            "alice-password",
            &["@alice.example", "@client-a.example"],
        )],
        files: vec![("client-a.secret", "client-a-password\n".into())],
        smarthost_yaml: Some(format!(
            "smarthost:\n  - address: \"localhost:{{SINK}}\"\n    {{RELAY}}\nroutes:\n  - match: \"@client-a.example\"\n    smarthost:\n      address: \"localhost:{routed_port}\"\n      tls: starttls\n      ca_file: ca.pem\n      username: client-a\n      password_file: client-a.secret\n"
        )),
        ..queued()
    })
    .await;
    let routed = h
        .sink_at(routed_port, "client-a", "client-a-password")
        .await;
    let mut c = h.session("alice", "alice-password").await;
    let throttled = queued_id(
        &c.send_mail("throttle454@client-a.example", &["b@example.org"], "x\r\n")
            .await,
    );
    assert!(h.wait_log("holding its mail", W).await);
    // The default route's smarthost did not throttle: its mail goes now, not after
    // the 30 s hold.
    queued_id(
        &c.send_mail(
            "a@alice.example",
            &["b@example.org"],
            "Subject: goes\r\n\r\nx\r\n",
        )
        .await,
    );
    assert_eq!(h.sink.wait_for(1, Duration::from_secs(10)).await.len(), 1);
    // Mail for the held smarthost waits, and waiting is not an attempt.
    let waits = queued_id(
        &c.send_mail(
            "news@client-a.example",
            &["b@example.org"],
            "Subject: waits\r\n\r\nx\r\n",
        )
        .await,
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(routed.messages().is_empty(), "delivered during the hold");
    let (ok, list) = cli(&h, &["queue", "list"]);
    assert!(ok, "{list}");
    let line = list.lines().find(|l| l.starts_with(&waits)).unwrap();
    assert!(
        line.contains(" 0  b@example.org"),
        "no attempt counted: {list}"
    );
    assert!(!list.contains("on hold"), "no error recorded: {list}");
    // The operator removes the offending message and flushes: the rest goes out.
    let (ok, out) = cli(&h, &["queue", "delete", &throttled]);
    assert!(ok, "{out}");
    let (ok, out) = cli(&h, &["queue", "flush"]);
    assert!(ok, "{out}");
    assert_eq!(routed.wait_for(1, W).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delay_warning_is_sent_once() {
    let h = Harness::start(Setup {
        delivery_extra: "  delay_warning: 1s\n",
        ..queued()
    })
    .await;
    let mut c = h.session("alice", "alice-password").await;
    let id = queued_id(
        &c.send_mail(
            "a@alice.example",
            &["defer450@example.org"],
            "Subject: slow\r\n\r\nx\r\n",
        )
        .await,
    );
    let msgs = h.sink.wait_for(1, W).await;
    assert_eq!(msgs.len(), 1);
    let dsn = String::from_utf8_lossy(&msgs[0].content).into_owned();
    assert_eq!(msgs[0].from, "");
    assert!(
        dsn.contains("Subject: Delayed Mail (still being retried)"),
        "{dsn}"
    );
    assert!(dsn.contains("Action: delayed"));
    assert!(dsn.contains(&id));
    // Further retries do not warn again.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(h.sink.messages().len(), 1);
    let (_, list) = cli(&h, &["queue", "list"]);
    assert!(list.contains(&id), "still queued for retry: {list}");
}

fn mode(p: &std::path::Path) -> u32 {
    std::os::unix::fs::MetadataExt::mode(&std::fs::metadata(p).unwrap()) & 0o777
}

/// Waits until `cond` holds (checked every 50 ms), at most `limit`.
async fn until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = std::time::Instant::now() + limit;
    while std::time::Instant::now() < end {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cond()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spool_files_are_private_whatever_the_umask() {
    // Run as a service outside systemd would be: umask 022.
    let h = Harness::start(Setup {
        smarthost_down: true,
        wrapper: vec![
            "sh".into(),
            "-c".into(),
            "umask 022; exec \"$0\" \"$@\"".into(),
        ],
        ..queued()
    })
    .await;
    let mut c = h.session("alice", "alice-password").await;
    // Over the 256 KiB held in memory: a message file without an envelope, plus a .env.
    let big = format!("Subject: big\r\n\r\n{}", "x".repeat(998) + "\r\n").repeat(300);
    let ids = [
        queued_id(
            &c.send_mail("a@alice.example", &["b@example.org"], "x\r\n")
                .await,
        ),
        queued_id(
            &c.send_mail("a@alice.example", &["b@example.org"], &big)
                .await,
        ),
    ];
    let spool = h.dir.path().join("spool");
    // The first deferral writes each envelope back (its last error changed).
    let env = |id: &str| spool.join(format!("queue/{id}.env"));
    assert!(until(W, || ids.iter().all(|id| env(id).exists())).await);
    for dir in ["", "queue", "tmp", "free"] {
        assert_eq!(mode(&spool.join(dir)), 0o700, "spool/{dir}");
    }
    for id in &ids {
        assert_eq!(
            mode(&spool.join(format!("queue/{id}.msg"))),
            0o600,
            "{id}.msg"
        );
        assert_eq!(mode(&env(id)), 0o600, "{id}.env");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deferral_that_changes_nothing_is_not_written_back() {
    let h = Harness::start(Setup {
        smarthost_down: true,
        ..queued()
    })
    .await;
    let mut c = h.session("alice", "alice-password").await;
    let id = queued_id(
        &c.send_mail("a@alice.example", &["b@example.org"], "x\r\n")
            .await,
    );
    let env = h.dir.path().join(format!("spool/queue/{id}.env"));
    assert!(
        until(W, || env.exists()).await,
        "the first deferral is recorded"
    );
    let ino = |p: &std::path::Path| {
        std::fs::metadata(p)
            .ok()
            .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
    };
    let first = ino(&env);
    // Two more attempts with the same result (retries after 1 s, then 2 s).
    let attempts = || {
        h.logs()
            .iter()
            .filter(|l| l.contains("delivery attempt"))
            .count()
    };
    assert!(until(W, || attempts() >= 3).await, "{:?}", h.logs());
    assert_eq!(
        ino(&env),
        first,
        "the envelope was rewritten for a deferral that changed nothing"
    );
    // Delivery still works, once.
    let sink = h.start_smarthost().await;
    assert_eq!(sink.wait_for(1, W).await.len(), 1);
    assert!(until(W, || !env.exists()).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_transaction_does_not_hold_up_the_queue() {
    // One delivery slot: before, a stalled transaction held it for its whole length.
    let h = Harness::start(Setup {
        delivery_extra: "  concurrency: 1\n",
        ..queued()
    })
    .await;
    let mut c = h.session("alice", "alice-password").await;
    let slow = "X-Seq: slow\r\nX-Sink-Stall: 15\r\n\r\nx\r\n";
    queued_id(
        &c.send_mail("a@alice.example", &["b@example.org"], slow)
            .await,
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    queued_id(
        &c.send_mail(
            "a@alice.example",
            &["b@example.org"],
            "X-Seq: fast\r\n\r\nx\r\n",
        )
        .await,
    );
    let msgs = h.sink.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(
        msgs.len(),
        1,
        "the second message waited for the stalled one"
    );
    assert!(String::from_utf8_lossy(&msgs[0].content).contains("X-Seq: fast"));
    assert_eq!(h.sink.wait_for(2, W).await.len(), 2);
}

/// Sends one message that needs SMTPUTF8 (a UTF-8 recipient, MAIL … SMTPUTF8).
async fn send_utf8(h: &Harness) -> String {
    let mut c = h.session("alice", "alice-password").await;
    c.expect("MAIL FROM:<a@alice.example> SMTPUTF8", 250).await;
    c.expect("RCPT TO:<jörg@example.org>", 250).await;
    c.expect("DATA", 354).await;
    c.send_raw(b"Subject: utf8\r\n\r\nhallo\r\n.\r\n").await;
    queued_id(&c.read_reply().await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smtputf8_goes_only_to_a_smarthost_that_offers_it() {
    // The first smarthost lacks SMTPUTF8: the message fails over to the second.
    let plain_port = common::free_port();
    let h = Harness::start(Setup {
        smarthost_yaml: Some(format!(
            "smarthost:\n  - address: \"localhost:{plain_port}\"\n    {{RELAY}}\n  - address: \"localhost:{{SINK}}\"\n    {{RELAY}}\n"
        )),
        ..queued()
    })
    .await;
    let plain = h.sink_without_smtputf8(plain_port).await;
    send_utf8(&h).await;
    let msgs = h.sink.wait_for(1, W).await;
    assert_eq!(msgs.len(), 1);
    assert_eq!(msgs[0].rcpts, vec!["jörg@example.org"]);
    assert!(plain.messages().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smtputf8_to_a_route_without_it_bounces_with_5_6_7() {
    // alice's route has one smarthost, without SMTPUTF8; the bounce (null sender)
    // takes the default route, whose smarthost offers it (a DSN about a UTF-8
    // message needs it too).
    let plain_port = common::free_port();
    let h = Harness::start(Setup {
        smarthost_yaml: Some(format!(
            "smarthost:\n  address: \"localhost:{{SINK}}\"\n  tls: starttls\n  ca_file: ca.pem\n  username: {user}\n  password_file: smarthost.secret\nroutes:\n  - match: \"@alice.example\"\n    smarthost:\n      address: \"localhost:{plain_port}\"\n      tls: starttls\n      ca_file: ca.pem\n      username: {user}\n      password_file: smarthost.secret\n",
            user = common::RELAY_USER
        )),
        ..queued()
    })
    .await;
    let plain = h.sink_without_smtputf8(plain_port).await;
    let id = send_utf8(&h).await;
    let msgs = h.sink.wait_for(1, W).await;
    assert_eq!(msgs.len(), 1, "only the bounce");
    assert!(plain.messages().is_empty());
    assert_eq!(msgs[0].from, "");
    let text = String::from_utf8_lossy(&msgs[0].content).into_owned();
    assert!(text.contains("Status: 5.6.7"), "{text}");
    assert!(
        text.contains(&format!("X-Postern-Queue-ID: {id}")),
        "{text}"
    );
    assert!(
        h.wait_log("no smarthost on the route offers SMTPUTF8", W)
            .await
    );
}
