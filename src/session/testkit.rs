//! A harness for [`Session`] unit tests: the session runs over an in-memory duplex
//! stream, with a [`Context`] built from config text (queue mode with a temporary
//! spool, so no smarthost is ever contacted) and a client that sends command lines
//! and reads whole replies.
//!
//! The driver is `serve_connection` without the TLS handshake: the same
//! `until_starttls` (which flushes the 220 and drops whatever the client pipelined
//! after STARTTLS), then [`Session::tls_started`] over the same stream, so ordering
//! rules around TLS are tested without certificates. TLS itself is the integration
//! tests' job.

use super::io::SmtpStream;
use super::{Flow, Session, until_starttls};
use crate::auth::{Authenticator, hash_password};
use crate::config::{Config, Listener, Problems, TlsMode, Users, parse_users};
use crate::context::Context;
use crate::proto::reply::{Reply, ReplyBuilder};
use crate::proto::sasl;
use crate::upstream::Relays;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, DuplexStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The password of every test user.
pub(super) const PASSWORD: &str = "correct horse";

/// How long a test waits for a reply before it fails: a bound that only a hung
/// session meets, not a measure of speed.
const REPLY_LIMIT: Duration = Duration::from_secs(20);

/// One argon2 hash of [`PASSWORD`], shared by every test (hashing is the slow part).
fn password_hash() -> &'static str {
    static HASH: OnceLock<String> = OnceLock::new();
    HASH.get_or_init(|| hash_password(PASSWORD).expect("hash the test password"))
}

/// The users file text for `(name, senders, disabled)` entries.
pub(super) fn users_yaml(users: &[(&str, &[&str], bool)]) -> String {
    let mut out = String::from("users:\n");
    for (name, senders, disabled) in users {
        out += &format!(
            "  - name: {name}\n    password: \"{}\"\n    disabled: {disabled}\n    senders: [{}]\n",
            password_hash(),
            senders.join(", ")
        );
    }
    out
}

/// Parses users-file text as the server would, with the config's rate limits.
pub(super) fn parse_test_users(config: &Config, yaml: &str) -> Users {
    let mut problems = Problems::default();
    let users = parse_users(
        yaml,
        Path::new("users.yaml"),
        &config.rate_limits,
        &mut problems,
    );
    assert!(problems.is_empty(), "users file: {problems:?}");
    users.expect("users file")
}

/// A context shared by the sessions of one test, and the listener they run on.
pub(super) struct Kit {
    pub ctx: Arc<Context>,
    pub listener: Listener,
    shutdown: watch::Sender<bool>,
    _spool: tempfile::TempDir,
}

impl Kit {
    /// `alice` may send as `@site1.example`; the listener is `tls`, with AUTH allowed
    /// before TLS when that is `none`.
    pub fn new(tls: TlsMode) -> Kit {
        Kit::with(
            tls,
            "",
            &users_yaml(&[("alice", &["\"@site1.example\""], false)]),
        )
    }

    /// `extra`: more top-level config keys (e.g. a `limits:` section).
    pub fn with(tls: TlsMode, extra: &str, users: &str) -> Kit {
        let spool = tempfile::tempdir().expect("temporary spool");
        let text = format!(
            "hostname: relay.test\n\
             listeners:\n  - address: \"127.0.0.1:2525\"\n    tls: none\n    insecure_auth: true\n\
             users:\n  file: users.yaml\n\
             smarthost:\n  address: \"127.0.0.1:9\"\n  tls: none\n\
             delivery:\n  mode: queue\n  spool_directory: \"{}\"\n{extra}",
            spool.path().display()
        );
        let mut problems = Problems::default();
        let config = Config::from_yaml(
            &text,
            Path::new("postern.yaml"),
            spool.path(),
            &mut problems,
        );
        assert!(problems.is_empty(), "config: {problems:?}");
        let config = config.expect("config");
        let mut listener = config.listeners[0].clone();
        listener.tls = tls;
        listener.insecure_auth = tls == TlsMode::None;
        let users = parse_test_users(&config, users);
        let relays = Arc::new(Relays::new(&config).expect("relays"));
        let auth = Authenticator::new(users, 2, 16);
        let (tx, rx) = watch::channel(false);
        let ctx = Context::new(config, auth, None, relays, rx).expect("context");
        Kit {
            ctx: Arc::new(ctx),
            listener,
            shutdown: tx,
            _spool: spool,
        }
    }

    /// A session from `192.0.2.10` (a device if that is in a user's `networks`),
    /// running; the greeting is already read.
    pub async fn connect(&self) -> Client {
        let peer: SocketAddr = "192.0.2.10:40000".parse().expect("peer");
        let mut session = Session::new(self.ctx.clone(), self.listener.clone(), peer);
        // As `serve_connection` does before its greeting.
        session.identify_by_network();
        let (client, server) = tokio::io::duplex(64 * 1024);
        let write_timeout = self.ctx.config.timeouts.write;
        let task = tokio::spawn(drive(session, server, write_timeout));
        let mut client = Client {
            stream: BufReader::new(client),
            task,
        };
        client.expect_reply("220").await;
        client
    }

    /// Starts draining, as the server does on SIGTERM.
    pub fn shut_down(&self) {
        self.shutdown.send_replace(true);
    }

    /// Messages accepted into the spool so far.
    pub fn spooled(&self) -> usize {
        let queue = self.ctx.queue().expect("queue mode");
        queue.spool().load_all(false).expect("read the spool").len()
    }
}

/// How a driven session ended.
pub(super) struct Ended {
    pub session: Session,
    pub flow: Flow,
}

/// Runs `session` as `serve_connection` does, with the TLS handshake left out.
async fn drive(mut session: Session, stream: DuplexStream, write_timeout: Duration) -> Ended {
    let hostname = session.ctx.config.hostname.clone();
    let mut io = SmtpStream::new(stream, write_timeout);
    io.reply(&Reply::plain(220, format!("{hostname} ESMTP Postern")));
    loop {
        let stream = match until_starttls(&mut session, io).await {
            Ok(stream) => stream,
            Err(flow) => return Ended { session, flow },
        };
        session.tls_started("TLSv1.3 (simulated)".into());
        io = SmtpStream::new(stream, write_timeout);
    }
}

/// The client end of a session under test.
pub(super) struct Client {
    stream: BufReader<DuplexStream>,
    task: JoinHandle<Ended>,
}

impl Client {
    /// Sends raw bytes as they are.
    pub async fn send(&mut self, bytes: &[u8]) {
        self.stream
            .get_mut()
            .write_all(bytes)
            .await
            .expect("write to the session");
    }

    /// Reads one whole reply; `None` if the session closed the stream first.
    pub async fn reply(&mut self) -> Option<Reply> {
        let mut builder = ReplyBuilder::default();
        loop {
            let mut line = Vec::new();
            let read = tokio::time::timeout(REPLY_LIMIT, self.stream.read_until(b'\n', &mut line))
                .await
                .expect("the session did not answer");
            if read.expect("read from the session") == 0 {
                return None;
            }
            if let Some(r) = builder.push(&line).expect("a well-formed reply") {
                return Some(r);
            }
        }
    }

    /// Reads one reply and asserts that it starts with `expected`, a code with or
    /// without its enhanced code (`"530 5.7.0"`, `"250"`).
    pub async fn expect_reply(&mut self, expected: &str) -> Reply {
        let r = self
            .reply()
            .await
            .expect("the session closed instead of replying");
        assert!(
            status(&r).starts_with(expected),
            "expected {expected}, got {r:?}"
        );
        r
    }

    /// Sends one command line and asserts its reply (see [`Client::expect_reply`]).
    pub async fn cmd(&mut self, line: &str, expected: &str) -> Reply {
        self.send(format!("{line}\r\n").as_bytes()).await;
        self.expect_reply(expected).await
    }

    /// EHLO, then AUTH PLAIN as `user` with [`PASSWORD`].
    pub async fn login(&mut self, user: &str) {
        self.cmd("EHLO client.test", "250").await;
        let plain = sasl::encode_plain(user, PASSWORD);
        self.cmd(&format!("AUTH PLAIN {plain}"), "235 2.7.0").await;
    }

    /// Sends a whole message after DATA (the body must end with CRLF) and asserts the
    /// final reply.
    pub async fn message(&mut self, body: &str, expected: &str) -> Reply {
        self.cmd("DATA", "354").await;
        self.send(format!("{body}.\r\n").as_bytes()).await;
        self.expect_reply(expected).await
    }

    /// Whether the session has closed the stream (reads to its end).
    pub async fn closed(&mut self) -> bool {
        self.reply().await.is_none()
    }

    /// Closes the client's end and returns the session as it ended.
    pub async fn finish(self) -> Ended {
        let Client { stream, task } = self;
        drop(stream);
        tokio::time::timeout(REPLY_LIMIT, task)
            .await
            .expect("the session did not end")
            .expect("the session task panicked")
    }
}

/// `"250 2.1.0"`: the code and, if any, the enhanced code.
pub(super) fn status(r: &Reply) -> String {
    match r.esc {
        Some(esc) => format!("{} {esc}", r.code),
        None => r.code.to_string(),
    }
}
