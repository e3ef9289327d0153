//! A stand-in smarthost: a small SMTP server that demands STARTTLS (or implicit TLS)
//! and AUTH like Amazon SES or Mailgun do, and keeps every message it accepts.
//!
//! The demo uses it as the smarthost, the integration tests check what it received
//! byte for byte, and the benchmarks use it as a fast sink. It can be told to fail
//! on purpose through the addresses it is given:
//!
//! | address (local part starts with) | reply |
//! | --- | --- |
//! | sender `reject550` | `550 5.7.1` at MAIL |
//! | sender `throttle454` | `454 4.7.0 Throttling failure` at MAIL (as SES says it) |
//! | sender `throttledata` | the same throttle at DATA, valid recipients or not |
//! | recipient `reject550` | `550 5.1.1` at RCPT |
//! | recipient `defer450` | `450 4.2.1` at RCPT |
//! | recipient `hangup` | connection closed at RCPT |
//! | recipient `deferonce` | `450 4.2.1` the first time, accepted after |
//! | recipient `echo450` | `450 4.1.2 <ADDRESS>: Recipient address rejected: Domain not found` (Postfix echoes the address) |
//!
//! A sink whose `server_tls` was built with a client CA
//! ([`crate::tls::server_config`]) refuses a client without a certificate from
//! that CA (rustls' `WebPkiClientVerifier`), and records the fingerprint of the one
//! presented with each message, like a Microsoft 365 certificate connector.
//!
//! With `xoauth2` set it also offers `AUTH XOAUTH2` and asks the callback whether
//! the bearer token is valid for the user, answering a bad one as Microsoft 365
//! does: `334` with a base64 JSON error, then `535 5.7.3` after the client's empty
//! line.
//!
//! A message with a header line `X-Sink-Reply: 554` (or `451`) gets that reply
//! after DATA; one with `X-Sink-Stall: <seconds>` (at most 60) gets its reply that
//! much later, like a smarthost stalling a transaction.

use crate::config::TlsMode;
use crate::lock::MutexExt;
use crate::proto::command::{Command, parse_command};
use crate::proto::data::{DataReceiver, Feed};
use crate::proto::reply::{Esc, Reply};
use crate::proto::sasl;
use crate::session::io::{ReadChunk, ReadLine, SmtpStream};
use rustls::ServerConfig;
use smtp_proto::{AUTH_LOGIN, AUTH_PLAIN, AUTH_XOAUTH2};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::time::Instant;

/// How the sink behaves.
#[derive(Clone)]
pub struct SinkConfig {
    pub hostname: String,
    pub tls: TlsMode,
    pub server_tls: Option<Arc<ServerConfig>>,
    /// Username and password the client must authenticate with; `None`: no AUTH.
    pub credentials: Option<(String, String)>,
    /// Write every accepted message here as `<n>.eml`.
    pub save_dir: Option<PathBuf>,
    /// Print a line per accepted message on stderr.
    pub verbose: bool,
    /// Count messages without keeping them (benchmarks).
    pub discard: bool,
    /// Offer SMTPUTF8 in EHLO (a smarthost without it, for tests, when false).
    pub smtputf8: bool,
    /// Offer AUTH XOAUTH2: whether `(user, token)` may log in. `None`: not offered.
    pub xoauth2: Option<TokenCheck>,
}

/// Whether an XOAUTH2 bearer token is valid for a user (the stand-in's view of the
/// provider's tokens).
pub type TokenCheck = Arc<dyn Fn(&str, &str) -> bool + Send + Sync>;

/// The JSON Microsoft 365 sends (base64) in its `334` to a refused XOAUTH2 token.
pub const XOAUTH2_REFUSAL: &str =
    r#"{"status":"401","schemes":"bearer","scope":"https://outlook.office.com/SMTP.Send"}"#;

/// One accepted message.
#[derive(Debug, Clone)]
pub struct ReceivedMessage {
    pub from: String,
    pub rcpts: Vec<String>,
    /// The DATA bytes exactly as they came on the wire, terminator included.
    pub raw: Vec<u8>,
    /// The message with dot-stuffing removed.
    pub content: Vec<u8>,
    pub authenticated_as: Option<String>,
    pub tls: bool,
    /// The SHA-256 fingerprint of the TLS client certificate the client presented
    /// (a sink whose `server_tls` demands one, see [`crate::tls::server_config`]).
    pub client_cert_sha256: Option<String>,
    /// When the sink stored it (just before answering 250).
    pub received_at: std::time::Instant,
}

#[derive(Default)]
struct SinkState {
    messages: Mutex<Vec<ReceivedMessage>>,
    connections: AtomicUsize,
    auths: AtomicUsize,
    auth_failures: AtomicUsize,
    accepted: AtomicUsize,
    /// DATA commands answered 354.
    data_commands: AtomicUsize,
    /// RCPT commands that arrived with a DATA right behind them (pipelined).
    pipelined_data: AtomicUsize,
    arrived: Notify,
    deferred_once: Mutex<std::collections::HashSet<String>>,
}

/// A running sink.
pub struct Sink {
    pub addr: SocketAddr,
    state: Arc<SinkState>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Sink {
    /// Binds `addr` (port 0 for any) and serves until dropped.
    pub async fn start(addr: SocketAddr, config: SinkConfig) -> std::io::Result<Sink> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(SinkState::default());
        let config = Arc::new(config);
        let task = {
            let state = state.clone();
            tokio::spawn(async move {
                while let Ok((tcp, _)) = listener.accept().await {
                    state.connections.fetch_add(1, Ordering::SeqCst);
                    tokio::spawn(serve(tcp, config.clone(), state.clone()));
                }
            })
        };
        Ok(Sink { addr, state, task })
    }

    /// Every message accepted so far.
    pub fn messages(&self) -> Vec<ReceivedMessage> {
        self.state.messages.locked().clone()
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        self.state.connections.load(Ordering::SeqCst)
    }

    /// Messages accepted so far (kept or discarded).
    pub fn accepted(&self) -> usize {
        self.state.accepted.load(Ordering::SeqCst)
    }

    /// RCPT commands received together with the DATA after them (the client
    /// pipelined them).
    pub fn pipelined_data(&self) -> usize {
        self.state.pipelined_data.load(Ordering::SeqCst)
    }

    /// DATA commands answered `354` so far (a transaction that reached the message).
    pub fn data_commands(&self) -> usize {
        self.state.data_commands.load(Ordering::SeqCst)
    }

    /// Successful AUTH exchanges so far.
    pub fn auths(&self) -> usize {
        self.state.auths.load(Ordering::SeqCst)
    }

    /// Refused AUTH exchanges so far.
    pub fn auth_failures(&self) -> usize {
        self.state.auth_failures.load(Ordering::SeqCst)
    }

    /// Waits until at least `n` messages arrived, or `limit` passes; returns them all.
    pub async fn wait_for(&self, n: usize, limit: Duration) -> Vec<ReceivedMessage> {
        let deadline = Instant::now() + limit;
        loop {
            let notified = self.state.arrived.notified();
            let msgs = self.messages();
            if msgs.len() >= n || Instant::now() >= deadline {
                return msgs;
            }
            let _ = tokio::time::timeout_at(deadline, notified).await;
        }
    }
}

async fn challenge<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut SmtpStream<S>,
    prompt: &str,
) -> Option<String> {
    io.reply(&Reply::plain(334, prompt));
    match io.read_line(16 * 1024, T).await {
        ReadLine::Line(l) => Some(String::from_utf8_lossy(&l[..l.len() - 2]).into_owned()),
        _ => None,
    }
}

struct Conn {
    config: Arc<SinkConfig>,
    state: Arc<SinkState>,
    tls: bool,
    client_cert: Option<String>,
    user: Option<String>,
    from: Option<String>,
    rcpts: Vec<String>,
}

const T: Duration = Duration::from_secs(60);

async fn serve(tcp: TcpStream, config: Arc<SinkConfig>, state: Arc<SinkState>) {
    let _ = tcp.set_nodelay(true);
    let mut conn = Conn {
        config: config.clone(),
        state,
        tls: false,
        client_cert: None,
        user: None,
        from: None,
        rcpts: vec![],
    };
    let greeting = Reply::plain(220, format!("{} ESMTP sink", config.hostname));
    let acceptor = config
        .server_tls
        .clone()
        .map(tokio_rustls::TlsAcceptor::from);
    match (config.tls, acceptor) {
        (TlsMode::Implicit, Some(acceptor)) => {
            let Ok(tls) = acceptor.accept(tcp).await else {
                return;
            };
            conn.tls_up(tls.get_ref().1);
            let mut io = SmtpStream::new(tls, T);
            io.reply(&greeting);
            conn.run(&mut io).await;
            let _ = io.flush().await;
        }
        (_, acceptor) => {
            let mut io = SmtpStream::new(tcp, T);
            io.reply(&greeting);
            let starttls = conn.run(&mut io).await;
            let _ = io.flush().await;
            if starttls && let Some(acceptor) = acceptor {
                let (tcp, _) = io.into_inner();
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                conn.tls_up(tls.get_ref().1);
                let mut io = SmtpStream::new(tls, T);
                conn.run(&mut io).await;
                let _ = io.flush().await;
            }
        }
    }
}

impl Conn {
    /// TLS is up: notes the client certificate, if one was presented.
    fn tls_up(&mut self, tls: &rustls::ServerConnection) {
        self.tls = true;
        let first = tls.peer_certificates().and_then(|c| c.first());
        self.client_cert = first.map(|c| crate::tls::fingerprint(c));
    }

    /// Returns true when the client asked for STARTTLS.
    async fn run<S: AsyncRead + AsyncWrite + Unpin>(&mut self, io: &mut SmtpStream<S>) -> bool {
        loop {
            let line = match io.read_line(16 * 1024, T).await {
                ReadLine::Line(l) => l,
                ReadLine::Bad(why) => {
                    io.reply(&Reply::new(500, Esc(5, 5, 2), why.describe()));
                    continue;
                }
                ReadLine::TimedOut | ReadLine::Closed => return false,
            };
            let cmd = match parse_command(&line) {
                Ok(c) => c,
                Err(r) => {
                    io.reply(&r);
                    continue;
                }
            };
            let need_tls = self.config.tls != TlsMode::None && !self.tls;
            let reply = match cmd {
                Command::Ehlo { .. } => self.ehlo(need_tls),
                Command::Helo { .. } => Reply::plain(250, self.config.hostname.clone()),
                Command::StartTls if need_tls => {
                    io.reply(&Reply::new(220, Esc(2, 0, 0), "Go ahead"));
                    return true;
                }
                Command::Auth {
                    mechanism,
                    initial_response,
                } => {
                    if need_tls {
                        Reply::new(530, Esc(5, 7, 0), "Must issue a STARTTLS command first")
                    } else {
                        match self.auth(io, mechanism, initial_response).await {
                            Some(r) => r,
                            None => return false,
                        }
                    }
                }
                Command::Mail { from } => self.mail(from.address, need_tls),
                Command::Rcpt { to } if io.next_is_data() => {
                    self.state.pipelined_data.fetch_add(1, Ordering::SeqCst);
                    match self.rcpt(to.address) {
                        Some(r) => r,
                        None => return false,
                    }
                }
                Command::Rcpt { to } => match self.rcpt(to.address) {
                    Some(r) => r,
                    None => return false,
                },
                Command::Data => {
                    if self
                        .from
                        .as_deref()
                        .is_some_and(|f| f.starts_with("throttledata"))
                    {
                        Reply::new(
                            454,
                            Esc(4, 7, 0),
                            "Throttling failure: Maximum sending rate exceeded.",
                        )
                    } else if self.from.is_none() || self.rcpts.is_empty() {
                        Reply::new(503, Esc(5, 5, 1), "MAIL and RCPT first")
                    } else {
                        self.state.data_commands.fetch_add(1, Ordering::SeqCst);
                        io.reply(&Reply::plain(354, "Go ahead"));
                        match self.data(io).await {
                            Some(r) => r,
                            None => return false,
                        }
                    }
                }
                Command::Rset => {
                    self.from = None;
                    self.rcpts.clear();
                    Reply::new(250, Esc(2, 0, 0), "OK")
                }
                Command::Noop { .. } => Reply::new(250, Esc(2, 0, 0), "OK"),
                Command::Quit => {
                    io.reply(&Reply::new(221, Esc(2, 0, 0), "Bye"));
                    return false;
                }
                _ => Reply::new(502, Esc(5, 5, 1), "Not implemented"),
            };
            io.reply(&reply);
        }
    }

    /// The EHLO reply: STARTTLS until TLS is up, then AUTH when credentials are set.
    fn ehlo(&self, need_tls: bool) -> Reply {
        let mut caps = vec![
            self.config.hostname.clone(),
            "PIPELINING".into(),
            "SIZE 104857600".into(),
            "8BITMIME".into(),
            "ENHANCEDSTATUSCODES".into(),
        ];
        if self.config.smtputf8 {
            caps.push("SMTPUTF8".into());
        }
        if need_tls {
            caps.push("STARTTLS".into());
        } else {
            let mut auth = String::from("AUTH");
            if self.config.credentials.is_some() {
                auth.push_str(" PLAIN LOGIN");
            }
            if self.config.xoauth2.is_some() {
                auth.push_str(" XOAUTH2");
            }
            if auth.len() > 4 {
                caps.push(auth);
            }
        }
        Reply::plain(250, caps.join("\n"))
    }

    /// MAIL: senders starting `throttle454` or `reject550` get those replies.
    fn mail(&mut self, address: String, need_tls: bool) -> Reply {
        if need_tls {
            Reply::new(530, Esc(5, 7, 0), "Must issue a STARTTLS command first")
        } else if (self.config.credentials.is_some() || self.config.xoauth2.is_some())
            && self.user.is_none()
        {
            Reply::new(530, Esc(5, 7, 0), "Authentication required")
        } else if address.starts_with("throttle454") {
            Reply::new(
                454,
                Esc(4, 7, 0),
                "Throttling failure: Maximum sending rate exceeded.",
            )
        } else if address.starts_with("reject550") {
            Reply::new(550, Esc(5, 7, 1), "Sender rejected by sink")
        } else {
            self.from = Some(address);
            self.rcpts.clear();
            Reply::new(250, Esc(2, 1, 0), "OK")
        }
    }

    /// RCPT: recipients starting `reject550`, `defer450`, `echo450`, `deferonce`
    /// (the first time) get those replies; `None` for `hangup`, which drops the connection.
    fn rcpt(&mut self, address: String) -> Option<Reply> {
        Some(if self.from.is_none() {
            Reply::new(503, Esc(5, 5, 1), "MAIL first")
        } else if address.starts_with("reject550") {
            Reply::new(550, Esc(5, 1, 1), "No such user here")
        } else if address.starts_with("defer450") {
            Reply::new(450, Esc(4, 2, 1), "Mailbox busy, try later")
        } else if address.starts_with("echo450") {
            let text = format!("<{address}>: Recipient address rejected: Domain not found");
            Reply::new(450, Esc(4, 1, 2), &text)
        } else if address.starts_with("deferonce")
            && self.state.deferred_once.locked().insert(address.clone())
        {
            Reply::new(450, Esc(4, 2, 1), "Try again later (first attempt)")
        } else if address.starts_with("hangup") {
            return None;
        } else {
            self.rcpts.push(address);
            Reply::new(250, Esc(2, 1, 5), "OK")
        })
    }

    async fn auth<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        io: &mut SmtpStream<S>,
        mechanism: u64,
        initial: String,
    ) -> Option<Reply> {
        if mechanism == AUTH_XOAUTH2 {
            return self.xoauth2(io, initial).await;
        }
        let Some((want_user, want_pass)) = self.config.credentials.clone() else {
            return Some(Reply::new(503, Esc(5, 5, 1), "AUTH not offered"));
        };
        let creds = match mechanism {
            AUTH_PLAIN => {
                let resp = if initial.is_empty() {
                    challenge(io, "").await?
                } else {
                    initial
                };
                sasl::decode_plain(&resp)
                    .ok()
                    .map(|c| (c.username, c.password.expose().to_string()))
            }
            AUTH_LOGIN => {
                let u = if initial.is_empty() {
                    challenge(io, sasl::LOGIN_USERNAME_PROMPT).await?
                } else {
                    initial
                };
                let p = challenge(io, sasl::LOGIN_PASSWORD_PROMPT).await?;
                match (sasl::decode_login(&u), sasl::decode_login(&p)) {
                    (Ok(u), Ok(p)) => Some((u, p)),
                    _ => None,
                }
            }
            _ => return Some(Reply::new(504, Esc(5, 5, 4), "Unknown mechanism")),
        };
        match creds {
            Some((u, p)) if u == want_user && p == want_pass => Some(self.logged_in(u)),
            _ => {
                self.state.auth_failures.fetch_add(1, Ordering::SeqCst);
                Some(Reply::new(535, Esc(5, 7, 8), "Bad credentials"))
            }
        }
    }

    fn logged_in(&mut self, user: String) -> Reply {
        self.state.auths.fetch_add(1, Ordering::SeqCst);
        self.user = Some(user);
        Reply::new(235, Esc(2, 7, 0), "Authenticated")
    }

    /// AUTH XOAUTH2 (`user=U ^A auth=Bearer T ^A ^A`); a token the check refuses is
    /// answered as Microsoft 365 does.
    async fn xoauth2<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        io: &mut SmtpStream<S>,
        initial: String,
    ) -> Option<Reply> {
        let Some(check) = self.config.xoauth2.clone() else {
            return Some(Reply::new(504, Esc(5, 5, 4), "Unknown mechanism"));
        };
        let resp = if initial.is_empty() {
            challenge(io, "").await?
        } else {
            initial
        };
        let decoded = sasl::decode_response(&resp).unwrap_or_default();
        let text = String::from_utf8_lossy(&decoded);
        let mut parts = text.split('\x01');
        let user = parts.next().and_then(|p| p.strip_prefix("user="));
        let token = parts.next().and_then(|p| p.strip_prefix("auth=Bearer "));
        let well_formed = parts.next() == Some("") && parts.next() == Some("");
        match (user, token) {
            (Some(u), Some(t)) if well_formed && check(u, t) => Some(self.logged_in(u.to_string())),
            _ => {
                self.state.auth_failures.fetch_add(1, Ordering::SeqCst);
                // The error, then 535 once the client sends its empty line.
                challenge(io, &sasl::encode(XOAUTH2_REFUSAL)).await?;
                Some(Reply::new(535, Esc(5, 7, 3), "Authentication unsuccessful"))
            }
        }
    }

    async fn data<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        io: &mut SmtpStream<S>,
    ) -> Option<Reply> {
        let mut rx = DataReceiver::new(usize::MAX);
        let mut content = Vec::new();
        let mut raw = Vec::new();
        loop {
            let feed = rx.feed(io.buffered(), &mut content);
            let n = match feed {
                Feed::Done { consumed } => consumed,
                Feed::NeedMore => io.buffered().len(),
            };
            raw.extend_from_slice(&io.buffered()[..n]);
            io.consume(n);
            if matches!(feed, Feed::Done { .. }) {
                break;
            }
            match io.fill(Instant::now() + T).await {
                ReadChunk::Data => {}
                _ => return None,
            }
        }
        let from = self.from.take().unwrap_or_default();
        let rcpts = std::mem::take(&mut self.rcpts);
        if let Some(e) = rx.error() {
            return Some(Reply::new(554, Esc(5, 6, 0), format!("sink refused: {e}")));
        }
        let text = String::from_utf8_lossy(&content);
        if text.contains("\r\nX-Sink-Reply: 554") {
            return Some(Reply::new(554, Esc(5, 7, 1), "Content rejected by sink"));
        }
        if let Some(secs) = stall_of(&text) {
            tokio::time::sleep(Duration::from_secs(secs)).await;
        }
        if text.contains("\r\nX-Sink-Reply: 451") {
            return Some(Reply::new(451, Esc(4, 3, 0), "Sink deferred the message"));
        }
        Some(self.accept(from, rcpts, raw, content))
    }

    /// Counts an accepted message and, unless discarding, keeps it (and saves or
    /// prints it when configured).
    fn accept(
        &mut self,
        from: String,
        rcpts: Vec<String>,
        raw: Vec<u8>,
        content: Vec<u8>,
    ) -> Reply {
        let n = self.state.accepted.fetch_add(1, Ordering::SeqCst) + 1;
        if self.config.discard {
            return Reply::new(250, Esc(2, 0, 0), format!("Ok: queued as sink-{n}"));
        }
        let msg = ReceivedMessage {
            from,
            rcpts,
            raw,
            content,
            authenticated_as: self.user.clone(),
            tls: self.tls,
            client_cert_sha256: self.client_cert.clone(),
            received_at: std::time::Instant::now(),
        };
        let n = {
            let mut all = self.state.messages.locked();
            all.push(msg.clone());
            all.len()
        };
        if let Some(dir) = &self.config.save_dir {
            let _ = std::fs::write(dir.join(format!("{n}.eml")), &msg.content);
        }
        if self.config.verbose {
            eprintln!(
                "[sink] message {n} from <{}> to {:?}, {} bytes{}",
                msg.from,
                msg.rcpts,
                msg.content.len(),
                self.config
                    .save_dir
                    .as_ref()
                    .map(|d| format!(", saved as {}", d.join(format!("{n}.eml")).display()))
                    .unwrap_or_default()
            );
        }
        self.state.arrived.notify_waiters();
        Reply::new(250, Esc(2, 0, 0), format!("Ok: queued as sink-{n}"))
    }
}

/// The seconds asked for by an `X-Sink-Stall:` header line, capped at a minute.
fn stall_of(text: &str) -> Option<u64> {
    let rest = &text[text.find("\r\nX-Sink-Stall: ")? + 16..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok().map(|s: u64| s.min(60))
}
