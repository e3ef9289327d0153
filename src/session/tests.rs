//! Ordering rules of the session, over an in-memory stream (see `testkit`): what
//! must come before what (EHLO, STARTTLS, AUTH, MAIL, RCPT, DATA), and what RSET,
//! EHLO and STARTTLS reset. Each test states one rule; the replies are exact codes
//! with their enhanced codes.

use super::Flow;
use super::testkit::{Kit, PASSWORD, parse_test_users, users_yaml};
use crate::config::TlsMode;
use crate::proto::sasl;

const BODY: &str =
    "From: alice@site1.example\r\nTo: bob@example.org\r\nSubject: t\r\n\r\nhello\r\n";

#[tokio::test]
async fn nothing_but_ehlo_opens_a_session() {
    let kit = Kit::new(TlsMode::None);
    let mut c = kit.connect().await;
    let plain = sasl::encode_plain("alice", PASSWORD);
    c.cmd(&format!("AUTH PLAIN {plain}"), "503 5.5.1").await;
    c.cmd("MAIL FROM:<alice@site1.example>", "503 5.5.1").await;
    c.cmd("RCPT TO:<bob@example.org>", "530 5.7.0").await;
    c.cmd("DATA", "530 5.7.0").await;
    c.cmd("HELO client.test", "250").await;
    c.cmd(&format!("AUTH PLAIN {plain}"), "235 2.7.0").await;
    c.cmd("QUIT", "221 2.0.0").await;
    let ended = c.finish().await;
    assert_eq!(ended.flow, Flow::Quit);
    assert_eq!(kit.spooled(), 0);
}

#[tokio::test]
async fn mail_rcpt_and_data_need_auth() {
    let kit = Kit::new(TlsMode::None);
    let mut c = kit.connect().await;
    c.cmd("EHLO client.test", "250").await;
    c.cmd("MAIL FROM:<alice@site1.example>", "530 5.7.0").await;
    c.cmd("RCPT TO:<bob@example.org>", "530 5.7.0").await;
    c.cmd("DATA", "530 5.7.0").await;
    let ended = c.finish().await;
    assert!(ended.session.txn.is_none());
    assert_eq!(ended.session.errors, 3);
}

#[tokio::test]
async fn rcpt_and_data_need_their_predecessors() {
    let kit = Kit::new(TlsMode::None);
    let mut c = kit.connect().await;
    c.login("alice").await;
    c.cmd("RCPT TO:<bob@example.org>", "503 5.5.1").await;
    c.cmd("DATA", "503 5.5.1").await;
    c.cmd("MAIL FROM:<alice@site1.example>", "250 2.1.0").await;
    c.cmd("DATA", "554 5.5.1").await;
    c.cmd("MAIL FROM:<alice@site1.example>", "503 5.5.1").await;
    c.cmd("RCPT TO:<bob@example.org>", "250 2.1.5").await;
    c.message(BODY, "250").await;
    assert_eq!(kit.spooled(), 1);
}

#[tokio::test]
async fn auth_waits_for_tls_on_a_starttls_listener() {
    let kit = Kit::new(TlsMode::Starttls);
    let mut c = kit.connect().await;
    let caps = c.cmd("EHLO client.test", "250").await;
    assert!(caps.text.lines().any(|l| l == "STARTTLS"), "{caps:?}");
    assert!(!caps.text.contains("AUTH"), "{caps:?}");
    let plain = sasl::encode_plain("alice", PASSWORD);
    c.cmd(&format!("AUTH PLAIN {plain}"), "530 5.7.0").await;
    c.cmd("MAIL FROM:<alice@site1.example>", "530 5.7.0").await;
    c.cmd("STARTTLS", "220 2.0.0").await;
    let caps = c.cmd("EHLO client.test", "250").await;
    assert!(!caps.text.contains("STARTTLS"), "{caps:?}");
    assert!(
        caps.text.lines().any(|l| l == "AUTH PLAIN LOGIN"),
        "{caps:?}"
    );
    c.cmd(&format!("AUTH PLAIN {plain}"), "235 2.7.0").await;
    c.cmd("STARTTLS", "503 5.5.1").await;
    let ended = c.finish().await;
    assert!(ended.session.tls.is_some());
    assert_eq!(
        ended.session.user.as_ref().map(|u| u.name.as_str()),
        Some("alice")
    );
}

#[tokio::test]
async fn starttls_is_refused_where_not_offered() {
    let kit = Kit::new(TlsMode::None);
    let mut c = kit.connect().await;
    let caps = c.cmd("EHLO client.test", "250").await;
    assert!(!caps.text.contains("STARTTLS"), "{caps:?}");
    c.cmd("STARTTLS", "502 5.5.1").await;
    let ended = c.finish().await;
    assert!(ended.session.tls.is_none());
}

#[tokio::test]
async fn starttls_forgets_the_greeting() {
    let kit = Kit::new(TlsMode::Starttls);
    let mut c = kit.connect().await;
    c.cmd("EHLO client.test", "250").await;
    c.cmd("STARTTLS", "220").await;
    // RFC 3207 4.2: the client must say EHLO again, over TLS.
    let plain = sasl::encode_plain("alice", PASSWORD);
    c.cmd(&format!("AUTH PLAIN {plain}"), "503 5.5.1").await;
    c.cmd("MAIL FROM:<alice@site1.example>", "503 5.5.1").await;
    let ended = c.finish().await;
    assert!(ended.session.helo.is_none());
    assert!(!ended.session.esmtp);
}

/// Nothing from before TLS survives it (RFC 3207 section 4.2). Over the wire a
/// client cannot hold a login before STARTTLS (AUTH waits for TLS, and a `tls: none`
/// listener with insecure AUTH offers no STARTTLS), so a logged-in session with an
/// open transaction is built here and `tls_started` called on it directly.
#[tokio::test]
async fn tls_started_drops_the_login_and_the_transaction() {
    let kit = Kit::new(TlsMode::None);
    let mut c = kit.connect().await;
    c.login("alice").await;
    c.cmd("MAIL FROM:<alice@site1.example>", "250").await;
    c.cmd("RCPT TO:<bob@example.org>", "250").await;
    let mut session = c.finish().await.session;
    // `finish` ends the transaction as a closing connection does; open it again.
    session.txn = Some(open_transaction(&kit).await);
    assert!(session.user.is_some() && session.helo.is_some());
    session.tls_started("TLSv1.3".into());
    assert!(session.user.is_none());
    assert!(session.txn.is_none());
    assert!(session.helo.is_none());
    assert!(!session.esmtp);
    assert_eq!(session.tls.as_deref(), Some("TLSv1.3"));
}

async fn open_transaction(kit: &Kit) -> super::Transaction {
    let quota = crate::policy::rates::Reservation::message(
        kit.ctx.rates.clone(),
        "alice",
        &kit.ctx.config.rate_limits,
        std::time::Instant::now(),
    )
    .await
    .expect("within the quota");
    super::Transaction {
        refused: Vec::new(),
        from: "alice@site1.example".into(),
        rcpts: vec!["bob@example.org".into()],
        upstream: None,
        broken: false,
        quota,
        smtputf8: false,
        eight_bit: false,
        started: std::time::Instant::now(),
    }
}

#[tokio::test]
async fn commands_pipelined_after_starttls_are_not_answered() {
    let kit = Kit::new(TlsMode::Starttls);
    let mut c = kit.connect().await;
    c.cmd("EHLO client.test", "250").await;
    // An injection attempt: commands sent in the clear with STARTTLS must not run
    // inside the TLS session (CVE-2011-0411 and its relatives).
    c.send(b"STARTTLS\r\nEHLO injected.test\r\nNOOP\r\n").await;
    c.expect_reply("220 2.0.0").await;
    // The next reply answers the next command, not the injected ones.
    c.cmd("MAIL FROM:<alice@site1.example>", "503 5.5.1").await;
    let ended = c.finish().await;
    assert!(ended.session.helo.is_none());
    assert_eq!(ended.session.junk, 0, "the injected NOOP did not run");
}

#[tokio::test]
async fn rset_ends_the_transaction_but_keeps_the_login() {
    let kit = Kit::new(TlsMode::None);
    let mut c = kit.connect().await;
    c.login("alice").await;
    c.cmd("MAIL FROM:<alice@site1.example>", "250").await;
    c.cmd("RCPT TO:<bob@example.org>", "250").await;
    c.cmd("RSET", "250 2.0.0").await;
    c.cmd("RCPT TO:<bob@example.org>", "503 5.5.1").await;
    c.cmd("DATA", "503 5.5.1").await;
    // Not a nested MAIL: the first transaction is gone, the login is not.
    c.cmd("MAIL FROM:<alice@site1.example>", "250 2.1.0").await;
    c.cmd("RCPT TO:<carol@example.org>", "250").await;
    c.message(BODY, "250").await;
    let ended = c.finish().await;
    assert_eq!(ended.session.messages, 1);
    assert_eq!(kit.spooled(), 1);
    let env = &kit.ctx.queue().unwrap().spool().load_all(false).unwrap()[0];
    let rcpts: Vec<_> = env.rcpts.iter().map(|r| r.address.as_str()).collect();
    assert_eq!(rcpts, ["carol@example.org"]);
}

#[tokio::test]
async fn ehlo_ends_the_transaction_but_keeps_the_login() {
    let kit = Kit::new(TlsMode::None);
    let mut c = kit.connect().await;
    c.login("alice").await;
    c.cmd("MAIL FROM:<alice@site1.example>", "250").await;
    c.cmd("RCPT TO:<bob@example.org>", "250").await;
    // RFC 5321 4.1.4: EHLO in a transaction is like RSET.
    let caps = c.cmd("EHLO client.test", "250").await;
    assert!(
        !caps.text.contains("AUTH"),
        "already authenticated: {caps:?}"
    );
    c.cmd("RCPT TO:<bob@example.org>", "503 5.5.1").await;
    c.cmd("MAIL FROM:<alice@site1.example>", "250 2.1.0").await;
}

#[tokio::test]
async fn auth_only_once_per_session() {
    let kit = Kit::new(TlsMode::None);
    let mut c = kit.connect().await;
    c.login("alice").await;
    let plain = sasl::encode_plain("alice", PASSWORD);
    c.cmd(&format!("AUTH PLAIN {plain}"), "503 5.5.1").await;
    c.cmd("MAIL FROM:<alice@site1.example>", "250").await;
    c.cmd(&format!("AUTH PLAIN {plain}"), "503 5.5.1").await;
    // The transaction survives the refused AUTH.
    c.cmd("RCPT TO:<bob@example.org>", "250").await;
}

#[tokio::test]
async fn a_user_disabled_after_auth_loses_the_login_at_mail() {
    let kit = Kit::new(TlsMode::None);
    let mut c = kit.connect().await;
    c.login("alice").await;
    c.cmd("MAIL FROM:<alice@site1.example>", "250").await;
    c.cmd("RCPT TO:<bob@example.org>", "250").await;
    c.message(BODY, "250").await;
    let users = users_yaml(&[("alice", &["\"@site1.example\""], true)]);
    kit.ctx
        .auth
        .replace_users(parse_test_users(&kit.ctx.config, &users));
    c.cmd("MAIL FROM:<alice@site1.example>", "530 5.7.0").await;
    // Withdrawn for good: RCPT and DATA ask for AUTH too.
    c.cmd("RCPT TO:<bob@example.org>", "530 5.7.0").await;
    let ended = c.finish().await;
    assert!(ended.session.user.is_none());
    assert_eq!(kit.spooled(), 1);
}

#[tokio::test]
async fn pipelined_commands_are_answered_in_order() {
    let kit = Kit::new(TlsMode::None);
    let mut c = kit.connect().await;
    c.login("alice").await;
    c.send(
        b"MAIL FROM:<alice@site1.example>\r\nRCPT TO:<bob@example.org>\r\n\
          RCPT TO:<bob>\r\nRCPT TO:<carol@example.org>\r\nDATA\r\n",
    )
    .await;
    for expected in ["250 2.1.0", "250 2.1.5", "501 5.1.3", "250 2.1.5", "354"] {
        c.expect_reply(expected).await;
    }
    c.send(format!("{BODY}.\r\nQUIT\r\n").as_bytes()).await;
    c.expect_reply("250").await;
    c.expect_reply("221").await;
    assert!(c.closed().await);
    assert_eq!(kit.spooled(), 1);
}

#[tokio::test]
async fn junk_commands_are_counted_until_a_message_is_sent() {
    let users = users_yaml(&[("alice", &["\"@site1.example\""], false)]);
    let kit = Kit::with(TlsMode::None, "limits:\n  max_junk_commands: 2\n", &users);
    let mut c = kit.connect().await;
    c.login("alice").await;
    c.cmd("NOOP", "250").await;
    c.cmd("RSET", "250").await;
    c.cmd("MAIL FROM:<alice@site1.example>", "250").await;
    c.cmd("RCPT TO:<bob@example.org>", "250").await;
    c.message(BODY, "250").await;
    // The message starts the count afresh: two more, then the third is one too many.
    c.cmd("HELP", "214").await;
    c.cmd("NOOP", "250").await;
    c.cmd("VRFY bob", "421 4.7.0").await;
    assert!(c.closed().await);
    assert_eq!(c.finish().await.flow, Flow::Close);
}

#[tokio::test]
async fn mail_after_the_message_cap_closes_the_session() {
    let users = users_yaml(&[("alice", &["\"@site1.example\""], false)]);
    let kit = Kit::with(
        TlsMode::None,
        "limits:\n  max_messages_per_session: 1\n",
        &users,
    );
    let mut c = kit.connect().await;
    c.login("alice").await;
    c.cmd("MAIL FROM:<alice@site1.example>", "250").await;
    c.cmd("RCPT TO:<bob@example.org>", "250").await;
    c.message(BODY, "250").await;
    c.cmd("MAIL FROM:<alice@site1.example>", "421 4.7.0").await;
    assert!(c.closed().await);
    assert_eq!(kit.spooled(), 1);
}

#[tokio::test]
async fn too_many_errors_close_the_session() {
    let users = users_yaml(&[("alice", &["\"@site1.example\""], false)]);
    let kit = Kit::with(TlsMode::None, "limits:\n  max_errors: 2\n", &users);
    let mut c = kit.connect().await;
    c.cmd("MAIL FROM:<alice@site1.example>", "503 5.5.1").await;
    // The second error gets its own reply, then the 421.
    c.cmd("EXPN staff", "502 5.5.1").await;
    c.expect_reply("421 4.7.0").await;
    assert!(c.closed().await);
}

#[tokio::test]
async fn a_cancelled_or_unknown_auth_leaves_the_session_usable() {
    let kit = Kit::new(TlsMode::None);
    let mut c = kit.connect().await;
    c.cmd("EHLO client.test", "250").await;
    c.cmd("AUTH CRAM-MD5", "504 5.5.4").await;
    c.cmd("AUTH LOGIN", "334").await;
    c.cmd("*", "501 5.0.0").await;
    c.cmd("AUTH PLAIN", "334").await;
    c.cmd("*", "501 5.0.0").await;
    c.cmd("MAIL FROM:<alice@site1.example>", "530 5.7.0").await;
    let plain = sasl::encode_plain("alice", PASSWORD);
    c.cmd(&format!("AUTH PLAIN {plain}"), "235 2.7.0").await;
    c.cmd("MAIL FROM:<alice@site1.example>", "250").await;
}

#[tokio::test]
async fn a_refused_sender_opens_no_transaction() {
    let kit = Kit::new(TlsMode::None);
    let mut c = kit.connect().await;
    c.login("alice").await;
    c.cmd("MAIL FROM:<ceo@bank.example>", "550 5.7.1").await;
    c.cmd("RCPT TO:<bob@example.org>", "503 5.5.1").await;
    c.cmd("DATA", "503 5.5.1").await;
    let ended = c.finish().await;
    assert!(ended.session.txn.is_none());
}

#[tokio::test]
async fn the_null_sender_is_taken_and_the_header_from_still_checked() {
    let kit = Kit::new(TlsMode::None);
    let mut c = kit.connect().await;
    c.login("alice").await;
    c.cmd("MAIL FROM:<>", "250 2.1.0").await;
    c.cmd("RCPT TO:<bob@example.org>", "250").await;
    let forged = BODY.replace("alice@site1.example", "ceo@bank.example");
    c.message(&forged, "550 5.7.1").await;
    assert_eq!(kit.spooled(), 0);
    // The refused message ended its transaction.
    c.cmd("RCPT TO:<bob@example.org>", "503 5.5.1").await;
    c.cmd("MAIL FROM:<>", "250 2.1.0").await;
    c.cmd("RCPT TO:<bob@example.org>", "250").await;
    c.message(BODY, "250").await;
    assert_eq!(kit.spooled(), 1);
}

#[tokio::test]
async fn shutdown_closes_an_idle_session_and_lets_a_transaction_finish() {
    let kit = Kit::new(TlsMode::None);
    let mut c = kit.connect().await;
    c.login("alice").await;
    c.cmd("MAIL FROM:<alice@site1.example>", "250").await;
    kit.shut_down();
    c.cmd("RCPT TO:<bob@example.org>", "250").await;
    c.message(BODY, "250").await;
    // Between transactions the session is idle: it says why it closes.
    c.expect_reply("421 4.3.2").await;
    assert!(c.closed().await);
    assert_eq!(kit.spooled(), 1);

    let mut idle = kit.connect().await;
    idle.expect_reply("421 4.3.2").await;
    assert!(idle.closed().await);
}

#[tokio::test]
async fn a_transaction_ended_without_a_message_gives_its_quota_back() {
    let users = users_yaml(&[("alice", &["\"@site1.example\""], false)]);
    let kit = Kit::with(
        TlsMode::None,
        "rate_limits:\n  messages_per_hour: 1\n",
        &users,
    );
    let mut c = kit.connect().await;
    c.login("alice").await;
    // RSET, EHLO and a refused message each end a transaction that sent nothing.
    c.cmd("MAIL FROM:<alice@site1.example>", "250").await;
    c.cmd("RSET", "250").await;
    c.cmd("MAIL FROM:<alice@site1.example>", "250").await;
    c.cmd("EHLO client.test", "250").await;
    c.cmd("MAIL FROM:<alice@site1.example>", "250").await;
    c.cmd("RCPT TO:<bob@example.org>", "250").await;
    let forged = BODY.replace("alice@site1.example", "ceo@bank.example");
    c.message(&forged, "550 5.7.1").await;
    c.cmd("MAIL FROM:<alice@site1.example>", "250").await;
    c.cmd("RCPT TO:<bob@example.org>", "250").await;
    c.message(BODY, "250").await;
    // The one message sent used the hour's quota.
    c.cmd("MAIL FROM:<alice@site1.example>", "450 4.7.1").await;
    assert_eq!(kit.spooled(), 1);
}

/// The users file with `printer` owning `network` (the test peer is 192.0.2.10)
/// and `alice` as in [`Kit::new`]; `printer` disabled when asked.
fn device_users(network: &str, disabled: bool) -> String {
    let mut yaml = users_yaml(&[("alice", &["\"@site1.example\""], false)]);
    yaml += &format!(
        "  - name: printer\n    networks: [\"{network}\"]\n    disabled: {disabled}\n    senders: [\"printer@site1.example\"]\n"
    );
    yaml
}

/// A device known by its network is looked up again at each MAIL, as a new
/// connection would be: a reload that removes or disables its user, or takes its
/// network away, withdraws the identity (530 at the next MAIL).
#[tokio::test]
async fn a_device_reloaded_out_of_its_network_is_refused_at_mail() {
    let alice_only = users_yaml(&[("alice", &["\"@site1.example\""], false)]);
    for (what, reloaded) in [
        ("removed", alice_only),
        ("disabled", device_users("192.0.2.0/24", true)),
        ("network taken away", device_users("198.51.100.0/24", false)),
    ] {
        let kit = Kit::with(TlsMode::None, "", &device_users("192.0.2.0/24", false));
        let mut c = kit.connect().await;
        c.cmd("EHLO printer.lan", "250").await;
        c.cmd("MAIL FROM:<printer@site1.example>", "250").await;
        c.cmd("RCPT TO:<bob@example.org>", "250").await;
        c.message(
            "From: printer@site1.example\r\nTo: bob@example.org\r\n\r\nscan\r\n",
            "250",
        )
        .await;
        let users = parse_test_users(&kit.ctx.config, &reloaded);
        kit.ctx.auth.replace_users(users);
        let r = c.cmd("MAIL FROM:<printer@site1.example>", "530").await;
        assert_eq!(super::testkit::status(&r), "530 5.7.0", "{what}");
        let ended = c.finish().await;
        assert!(ended.session.user.is_none(), "{what}");
        assert!(!ended.session.by_network, "{what}");
        assert_eq!(kit.spooled(), 1, "{what}");
    }
}
