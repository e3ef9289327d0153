//! What a submission server owes: envelope addresses checked and sent in exactly one
//! wire form (issue 11, finding 1), the header section checked as it is relayed
//! (findings 2 and 3), the null sender, Bcc removal, Date and Message-ID (RFC 6409),
//! and a login that ends when its user is disabled (finding 7).

mod common;

use common::{Harness, Setup, users_yaml, write};
use std::time::Duration;

const W: Duration = Duration::from_secs(10);

fn esc(r: &postern::proto::reply::Reply) -> String {
    r.esc.map(|e| e.to_string()).unwrap_or_default()
}

const CLEAN: &str = "From: a@alice.example\r\nSubject: s\r\n\r\nbody\r\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quoted_addresses_reach_the_smarthost_as_checked_passthrough() {
    quoted_addresses(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quoted_addresses_reach_the_smarthost_as_checked_queue() {
    quoted_addresses(true).await;
}

/// Finding 1: a quoted local part is checked and sent in one canonical form; one
/// that holds `>`, `@` or other specials is refused outright (a next hop that
/// unquotes it would read syntax in it), so nothing reaches MAIL or RCPT upstream
/// but a clean address.
async fn quoted_addresses(queue: bool) {
    let h = Harness::start(Setup {
        queue,
        ..Setup::default()
    })
    .await;
    let mut c = h.session("alice", "alice-password").await;
    // Not a bank.example sender, whatever the quotes say.
    for forged in [
        "<\"alice\"@bank.example>",
        "<\"ceo\".x@alice.example.evil>",
        "<@alice.example:ceo@bank.example>",
    ] {
        let r = c.cmd(&format!("MAIL FROM:{forged}")).await;
        assert_eq!(r.code / 100, 5, "{forged}: {r:?}");
    }
    let spaced = "\"john smith\"@example.org";
    let r = c
        .send_mail("\"a b\"@alice.example", &[spaced, "c@example.org"], CLEAN)
        .await;
    assert_eq!(r.code, 250, "{r:?}");
    let got = h.sink.wait_for(1, W).await;
    assert_eq!(got[0].from, "\"a b\"@alice.example");
    assert_eq!(
        got[0].rcpts,
        vec![spaced.to_string(), "c@example.org".into()]
    );
    // Needless quotes go; case and plain forms are kept.
    c.expect("MAIL FROM:<\"Alerts\"@Alice.Example> SIZE=100", 250)
        .await;
    c.expect("RCPT TO:<\"b\"@example.org>", 250).await;
    c.expect("RSET", 250).await;
    // The injections of finding 1 and their kin, and control characters anywhere
    // (Unicode ones included): refused with the code of the side they are on.
    for line in [
        "MAIL FROM:<\"ceo@bank.example> AUTH=\"@alice.example>",
        "MAIL FROM:<\"ceo@bank.example\"@alice.example>",
        "MAIL FROM:<\"a\\\"b\"@alice.example>",
        "MAIL FROM:<\"a\u{1}b\"@alice.example>",
        "MAIL FROM:<a\u{1b}[31m@alice.example>",
        "MAIL FROM:<a@alice.example> X=\u{7f}",
        "MAIL FROM:<a\u{202e}b@alice.example> SMTPUTF8",
    ] {
        let r = c.cmd(line).await;
        assert_eq!((r.code, esc(&r)), (501, "5.1.7".into()), "{line:?}");
    }
    // A fresh session: each refusal counts towards max_errors.
    let mut c = h.session("alice", "alice-password").await;
    c.expect("MAIL FROM:<a@alice.example>", 250).await;
    for line in [
        "RCPT TO:<\"x> NOTIFY=SUCCESS ORCPT=rfc822;victim@evil.example\"@example.org>",
        "RCPT TO:<\"x,y\"@example.org>",
        "RCPT TO:<\"x\u{7}\"@example.org>",
        "RCPT TO:<x@exam\u{1}ple.org>",
        "RCPT TO:<x\u{85}@example.org>",
        "RCPT TO:<\"unterminated@example.org>",
        "RCPT TO:<a@b@example.org>",
        "RCPT TO:<postmaster>",
    ] {
        let r = c.cmd(line).await;
        assert_eq!((r.code, esc(&r)), (501, "5.1.3".into()), "{line:?}");
    }
    // UTF-8 needs SMTPUTF8 on MAIL (RFC 6531 section 3.4).
    let r = c.cmd("RCPT TO:<fran\u{e7}oise@example.org>").await;
    assert_eq!((r.code, esc(&r)), (553, "5.6.7".into()));
    assert_eq!(h.sink.messages().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_section_is_checked_as_it_is_relayed() {
    let h = Harness::start(Setup::default()).await;
    // Finding 2: a header section a reader cannot read is refused, not passed.
    for head in [
        " \r\nFrom: ceo@bank.example\r\n",
        "\t\r\nFrom: ceo@bank.example\r\n",
        "  \t \r\nFrom: ceo@bank.example\r\nSubject: x\r\n",
    ] {
        // A session each: every refusal counts towards max_errors.
        let mut c = h.session("alice", "alice-password").await;
        let r = c
            .send_mail(
                "a@alice.example",
                &["b@example.org"],
                &format!("{head}\r\nbody\r\n"),
            )
            .await;
        assert_eq!((r.code, esc(&r)), (554, "5.6.0".into()), "{head:?}");
    }
    // Finding 3: every checked address is one addr-spec, and every field is checked.
    for head in [
        "From: <ceo@bank.example> <a@alice.example>\r\n",
        "From: ceo@bank.example a@alice.example\r\n",
        "From: ceo@bank.example (a@alice.example)\r\n",
        "From : ceo@bank.example\r\n",
        "FROM:ceo@bank.example\r\n",
        "From: a@alice.example\r\nfrom: ceo@bank.example\r\n",
        "From: a@alice.example\r\nSender: <ceo@bank.example>, a@alice.example\r\n",
        "From: a@alice.example,\r\n ceo@bank.example\r\n",
        "From: \"a@alice.example\" <ceo@bank.example>\r\n",
        "From: a@alice.example\r\nSender: x@alice.example.evil\r\n",
        "From: a@alice.example\r\nResent-From: ceo@bank.example\r\n",
        "From: =?a?=<ceo@bank.example>,?b?= <a@alice.example>\r\n",
        "From: \"ceo@bank.example\":;, a@alice.example\r\n",
    ] {
        // A session each: every refusal counts towards max_errors.
        let mut c = h.session("alice", "alice-password").await;
        let r = c
            .send_mail(
                "a@alice.example",
                &["b@example.org"],
                &format!("{head}\r\nbody\r\n"),
            )
            .await;
        assert_eq!((r.code, esc(&r)), (550, "5.7.1".into()), "{head:?}");
    }
    assert!(h.wait_log("malformed header section", W).await);
    assert!(h.sink.messages().is_empty(), "{:?}", h.sink.messages());
    let mut c = h.session("alice", "alice-password").await;
    // Where the header section ends without a blank line (a script's body, a line
    // that is no field), Postern ends it there with one of its own: a From: line
    // further down stays body, downstream too.
    for (n, (msg, body)) in [
        (
            "hello\r\nFrom: ceo@bank.example\r\n",
            "hello\r\nFrom: ceo@bank.example\r\n",
        ),
        (
            "Subject: x\r\nnot a field\r\nFrom: ceo@bank.example\r\n\r\ny\r\n",
            "not a field\r\nFrom: ceo@bank.example\r\n\r\ny\r\n",
        ),
        ("Status: OK\r\nall done\r\n", "all done\r\n"),
    ]
    .into_iter()
    .enumerate()
    {
        let r = c
            .send_mail("a@alice.example", &["b@example.org"], msg)
            .await;
        assert_eq!(r.code, 250, "{msg:?}: {r:?}");
        let got = h.sink.wait_for(n + 1, W).await;
        let text = String::from_utf8_lossy(&got[n].content).to_string();
        let (head, rest) = text.split_once("\r\n\r\n").expect("a header section");
        assert!(!head.contains("bank.example"), "{text}");
        assert_eq!(rest, body);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn null_sender_is_accepted_and_header_from_still_checked() {
    let h = Harness::start(Setup::default()).await;
    let mut c = h.session("alice", "alice-password").await;
    let receipt = "From: a@alice.example\r\nSubject: Read: hello\r\nContent-Type: multipart/report; report-type=disposition-notification; boundary=x\r\n\r\n--x--\r\n";
    let r = c.send_mail("", &["b@example.org"], receipt).await;
    assert_eq!(r.code, 250, "{r:?}");
    let got = h.sink.wait_for(1, W).await;
    assert_eq!(got[0].from, "");
    let r = c
        .send_mail(
            "",
            &["b@example.org"],
            "From: ceo@bank.example\r\n\r\nx\r\n",
        )
        .await;
    assert_eq!((r.code, esc(&r)), (550, "5.7.1".into()));
    // With the null sender, the From is not optional: nobody would be accountable.
    let r = c
        .send_mail("", &["b@example.org"], "Subject: anonymous\r\n\r\nx\r\n")
        .await;
    assert_eq!((r.code, esc(&r)), (550, "5.7.1".into()));
    assert!(h.wait_log("null sender must have a From", W).await);
    assert_eq!(h.sink.messages().len(), 1);
}

/// A user who may send as nobody may not use the null sender either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn null_sender_needs_a_user_with_senders() {
    let h = Harness::start(Setup {
        users: vec![common::TestUser::new("nobody", "nobody-password", &[])],
        ..Setup::default()
    })
    .await;
    let mut c = h.session("nobody", "nobody-password").await;
    let r = c.cmd("MAIL FROM:<>").await;
    assert_eq!((r.code, esc(&r)), (550, "5.7.1".into()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bcc_is_removed_and_date_and_message_id_added() {
    for queue in [false, true] {
        let h = Harness::start(Setup {
            queue,
            ..Setup::default()
        })
        .await;
        let mut c = h.session("alice", "alice-password").await;
        let msg = "From: a@alice.example\r\nTo: b@example.org\r\nBcc: hidden@example.org,\r\n other@example.org\r\nSubject: printer scan\r\nBCC: third@example.org\r\n\r\nBcc: this line is body\r\n";
        let r = c
            .send_mail(
                "a@alice.example",
                &["b@example.org", "hidden@example.org"],
                msg,
            )
            .await;
        assert_eq!(r.code, 250, "{r:?}");
        let got = h.sink.wait_for(1, W).await;
        assert_eq!(got[0].rcpts.len(), 2, "Bcc recipients still get it");
        let text = String::from_utf8_lossy(&got[0].content).to_string();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(!head.to_ascii_lowercase().contains("bcc"), "{head}");
        assert!(
            !head.contains("hidden@") && !head.contains("other@"),
            "{head}"
        );
        assert_eq!(body, "Bcc: this line is body\r\n");
        assert_eq!(head.matches("\r\nDate: ").count(), 1, "{head}");
        let id = head
            .lines()
            .find_map(|l| l.strip_prefix("Message-ID: "))
            .expect("a Message-ID");
        assert!(
            id.starts_with('<') && id.ends_with('>') && id.contains('@'),
            "{id}"
        );
        let date = head.lines().find_map(|l| l.strip_prefix("Date: ")).unwrap();
        assert!(
            mail_parser::MessageParser::default()
                .parse(format!("Date: {date}\r\n\r\n").as_bytes())
                .and_then(|m| m.date().cloned())
                .is_some(),
            "{date}"
        );
        // A message that has both keeps its own, once.
        let own = "From: a@alice.example\r\ndate: Tue, 1 Dec 2026 10:00:00 +0100\r\nMessage-Id: <own@alice.example>\r\n\r\nx\r\n";
        assert_eq!(
            c.send_mail("a@alice.example", &["b@example.org"], own)
                .await
                .code,
            250
        );
        let got = h.sink.wait_for(2, W).await;
        let text = String::from_utf8_lossy(&got[1].content).to_string();
        let head = text.split_once("\r\n\r\n").unwrap().0.to_ascii_lowercase();
        assert_eq!(head.matches("\r\ndate:").count(), 1, "{head}");
        assert_eq!(head.matches("\r\nmessage-id:").count(), 1, "{head}");
        assert!(head.contains("<own@alice.example>"));
    }
}

/// Finding 7: a session authenticated before its user was disabled loses its login
/// at the next MAIL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_ends_when_its_user_is_disabled() {
    let h = Harness::start(Setup::default()).await;
    let mut c = h.session("alice", "alice-password").await;
    assert_eq!(
        c.send_mail("a@alice.example", &["b@example.org"], CLEAN)
            .await
            .code,
        250
    );
    let mut users = Setup::default().users;
    users[0].disabled = true;
    write(&h.dir.path().join("users.yaml"), &users_yaml(&users));
    let hup = std::process::Command::new("kill")
        .args(["-HUP", &h.pid().to_string()])
        .status()
        .unwrap();
    assert!(hup.success());
    // Wait until a new login is refused: the reload is in force.
    let deadline = std::time::Instant::now() + W;
    loop {
        let mut n = common::client::Client::connect(h.starttls).await;
        n.expect("EHLO t", 250).await;
        let mut n = n.starttls(&h.ca_pem()).await;
        n.expect("EHLO t", 250).await;
        if n.auth_plain("alice", "alice-password").await.code == 535 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "reload not seen");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let r = c.cmd("MAIL FROM:<a@alice.example>").await;
    assert_eq!((r.code, esc(&r)), (530, "5.7.0".into()));
    let r = c.cmd("RCPT TO:<b@example.org>").await;
    assert_eq!(r.code, 530);
    assert!(h.wait_log("login withdrawn", W).await);
    assert_eq!(h.sink.messages().len(), 1);
}
