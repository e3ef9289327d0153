//! One SMTP session: a small state machine generic over its stream, with one file
//! per phase (`ehlo`, `auth`, `mail` for MAIL and RCPT, `data`).
//!
//! STARTTLS ends [`Session::run`] with [`Flow::StartTls`]; [`serve_connection`] then
//! does the handshake and runs the same session again over the TLS stream, with
//! everything the client pipelined after STARTTLS thrown away.

mod auth;
mod bounds;
mod data;
mod ehlo;
mod finish;
mod gate;
mod held;
pub mod io;
mod mail;
mod record;
#[cfg(test)]
mod testkit;
#[cfg(test)]
mod tests;

use crate::config::{Listener, TlsMode, User};
use crate::context::Context;
use crate::policy::rates::Reservation;
use crate::proto::command::{Command, parse_command};
use crate::proto::printable::Printable;
use crate::proto::reply::{Esc, Reply};
use crate::upstream;
use io::{ReadLine, SmtpStream};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tracing::{Instrument, Span, debug, info, info_span, warn};

/// Longest command line, CRLF included: RFC 5321's 512 plus room for the
/// parameters of SIZE, BODY, SMTPUTF8 and DSN.
pub const MAX_COMMAND_LINE: usize = 1024;
/// Longest AUTH command or SASL response line (RFC 4954 section 4).
pub const MAX_AUTH_LINE: usize = 12288;

/// What the session loop does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Continue,
    /// The client said QUIT.
    Quit,
    /// 220 was sent for STARTTLS: hand the stream to the TLS handshake.
    StartTls,
    /// Close the connection (timeout, too many errors, shutdown, client gone).
    Close,
}

/// One mail transaction, from MAIL to the end of DATA.
pub struct Transaction {
    pub from: String,
    pub rcpts: Vec<String>,
    /// Recipients refused at RCPT (by Postern or the smarthost), with the reply,
    /// for the delivery log; at most `max_recipients`.
    pub refused: Vec<(String, String)>,
    /// The transaction at the smarthost (passthrough mode).
    pub upstream: Option<upstream::Transaction>,
    /// The smarthost connection failed mid-transaction: only RSET helps now.
    pub broken: bool,
    /// The user's quota held for this message; given back unless committed.
    pub quota: Reservation,
    /// MAIL said SMTPUTF8 (or used a non-ASCII address).
    pub smtputf8: bool,
    /// MAIL said BODY=8BITMIME.
    pub eight_bit: bool,
    pub started: Instant,
}

pub struct Session {
    ctx: Arc<Context>,
    listener: Listener,
    peer: SocketAddr,
    id: String,
    /// TLS version and cipher, once TLS is up.
    tls: Option<String>,
    helo: Option<String>,
    esmtp: bool,
    user: Option<Arc<User>>,
    /// `user` is who the client's address says (the users' `networks`), not a login.
    by_network: bool,
    txn: Option<Transaction>,
    errors: u32,
    /// Failed AUTH attempts in this session.
    auth_failures: u32,
    messages: u32,
    /// NOOP, VRFY, HELP, RSET and ETRN since the last accepted message.
    junk: u32,
    /// When the connection was accepted: the session's lifetime counts from here,
    /// across STARTTLS.
    connected: Instant,
    span: Span,
}

impl Session {
    fn new(ctx: Arc<Context>, listener: Listener, peer: SocketAddr) -> Session {
        let id = ctx.new_session_id();
        let span = info_span!("session", id = %id, peer = %peer, user = tracing::field::Empty);
        Session {
            ctx,
            listener,
            peer,
            id,
            tls: None,
            helo: None,
            esmtp: false,
            user: None,
            by_network: false,
            txn: None,
            errors: 0,
            auth_failures: 0,
            messages: 0,
            junk: 0,
            connected: Instant::now(),
            span,
        }
    }

    /// Whether AUTH may be used now: after TLS, or on a `tls: none` listener that
    /// explicitly allows it.
    fn auth_allowed(&self) -> bool {
        self.tls.is_some() || (self.listener.tls == TlsMode::None && self.listener.insecure_auth)
    }

    /// Reads and answers commands until the session ends or switches to TLS.
    pub async fn run<S: AsyncRead + AsyncWrite + Unpin>(&mut self, io: &mut SmtpStream<S>) -> Flow {
        let mut shutdown = self.ctx.shutdown.clone();
        loop {
            let (command_timeout, bound) = self.read_limit();
            if command_timeout.is_zero() {
                return self.expired(io, bound);
            }
            let messages = self.messages;
            let line = if self.txn.is_none() {
                tokio::select! {
                    biased;
                    Ok(_) = shutdown.wait_for(|s| *s) => {
                        io.reply(&Reply::new(421, Esc(4, 3, 2), format!("{} Service shutting down", self.ctx.config.hostname)));
                        info!("closing idle session for shutdown");
                        return Flow::Close;
                    }
                    l = io.read_line(MAX_AUTH_LINE, command_timeout) => l,
                }
            } else {
                io.read_line(MAX_AUTH_LINE, command_timeout).await
            };
            let flow = match line {
                ReadLine::Line(mut l) => {
                    // Boxed: a command's future (DATA and the upstream transaction
                    // within it) is several KiB, which every idle session's task
                    // would otherwise carry; allocated only while a command runs.
                    let flow = Box::pin(self.command(&l, io)).await;
                    // `AUTH PLAIN <initial response>` carries a password.
                    zeroize::Zeroize::zeroize(&mut l[..]);
                    flow
                }
                ReadLine::Bad(why) => self.refuse(
                    io,
                    Reply::new(
                        500,
                        Esc(5, 5, 2),
                        format!("Syntax error: {}", why.describe()),
                    ),
                ),
                ReadLine::TimedOut if bound != bounds::Bound::Command => {
                    return self.expired(io, bound);
                }
                ReadLine::TimedOut => {
                    info!("timeout waiting for a command");
                    io.reply(&Reply::new(
                        421,
                        Esc(4, 4, 2),
                        format!("{} Timeout, closing connection", self.ctx.config.hostname),
                    ));
                    Flow::Close
                }
                ReadLine::Closed => {
                    debug!("client closed the connection");
                    return Flow::Close;
                }
            };
            if flow != Flow::Continue {
                return flow;
            }
            if self.messages != messages {
                self.junk = 0;
            }
            if self.errors >= self.ctx.config.limits.max_errors {
                warn!(errors = self.errors, "too many errors, closing");
                io.reply(&Reply::new(
                    421,
                    Esc(4, 7, 0),
                    "Too many errors, closing connection",
                ));
                return Flow::Close;
            }
        }
    }

    /// Parses and answers one command line.
    async fn command<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        line: &[u8],
        io: &mut SmtpStream<S>,
    ) -> Flow {
        let command = match parse_command(line) {
            Ok(c) => c,
            Err(reply) => return self.refuse(io, reply),
        };
        if line.len() > MAX_COMMAND_LINE && !matches!(command, Command::Auth { .. }) {
            return self.refuse(
                io,
                Reply::new(500, Esc(5, 5, 2), "Syntax error: line too long"),
            );
        }
        match command {
            Command::Ehlo { host } => self.ehlo(io, host, true),
            Command::Helo { host } => self.ehlo(io, host, false),
            Command::StartTls => self.starttls(io),
            Command::Auth {
                mechanism,
                initial_response,
            } => self.auth(io, mechanism, initial_response).await,
            Command::Mail { .. } if self.messages >= self.ctx.config.limits.max_messages_per_session => {
                self.too_many_messages(io)
            }
            Command::Mail { from } => self.mail(io, from).await,
            Command::Rcpt { to } => self.rcpt(io, to).await,
            Command::Data => self.data(io).await,
            Command::Noop { .. } | Command::Vrfy { .. } | Command::Help { .. } | Command::Rset | Command::Etrn { .. }
                if self.junk_exceeded(io) =>
            {
                Flow::Close
            }
            Command::Rset => {
                self.reset_transaction();
                self.ok(io, Reply::new(250, Esc(2, 0, 0), "Reset OK"))
            }
            Command::Noop { .. } => self.ok(io, Reply::new(250, Esc(2, 0, 0), "OK")),
            Command::Quit => {
                io.reply(&Reply::new(221, Esc(2, 0, 0), format!("{} closing connection", self.ctx.config.hostname)));
                Flow::Quit
            }
            Command::Vrfy { .. } => self.ok(
                io,
                Reply::new(252, Esc(2, 1, 5), "Cannot VRFY user, but will accept message and attempt delivery"),
            ),
            Command::Expn { .. } => self.refuse(io, Reply::new(502, Esc(5, 5, 1), "EXPN not supported")),
            Command::Help { .. } => self.ok(
                io,
                Reply::new(214, Esc(2, 0, 0), "Postern submission service: EHLO, STARTTLS, AUTH, MAIL, RCPT, DATA, RSET, NOOP, QUIT"),
            ),
            Command::Lhlo { .. }
            | Command::Bdat { .. }
            | Command::Etrn { .. }
            | Command::Atrn { .. }
            | Command::Burl { .. } => self.refuse(io, Reply::new(502, Esc(5, 5, 1), "Command not implemented")),
        }
    }

    fn ok<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        io: &mut SmtpStream<S>,
        reply: Reply,
    ) -> Flow {
        io.reply(&reply);
        Flow::Continue
    }

    /// Sends an error reply, logs why, and counts it towards `max_errors`.
    fn refuse<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        io: &mut SmtpStream<S>,
        reply: Reply,
    ) -> Flow {
        self.errors += 1;
        info!(reply = %Printable(&reply), "command refused");
        io.reply(&reply);
        Flow::Continue
    }

    fn starttls<S: AsyncRead + AsyncWrite + Unpin>(&mut self, io: &mut SmtpStream<S>) -> Flow {
        if self.tls.is_some() {
            return self.refuse(io, Reply::new(503, Esc(5, 5, 1), "TLS already active"));
        }
        if self.listener.tls != TlsMode::Starttls {
            return self.refuse(
                io,
                Reply::new(502, Esc(5, 5, 1), "STARTTLS not available on this port"),
            );
        }
        io.reply(&Reply::new(220, Esc(2, 0, 0), "Ready to start TLS"));
        Flow::StartTls
    }

    /// After the TLS handshake the session starts afresh (RFC 3207 section 4.2).
    fn tls_started(&mut self, description: String) {
        self.reset_transaction();
        self.helo = None;
        self.esmtp = false;
        // What the client said goes; who its address says it is stays.
        if !self.by_network {
            self.user = None;
        }
        self.tls = Some(description);
    }

    /// Ends the open transaction, if any; its smarthost connection is RSET and pooled
    /// in the background.
    fn reset_transaction(&mut self) {
        if let Some(Transaction {
            upstream: Some(smarthost),
            broken: false,
            ..
        }) = self.txn.take()
        {
            tokio::spawn(smarthost.reset());
        }
    }
}

/// Who is at the other end of an accepted connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    /// The client's own address (the connection's, or the one a PROXY header named).
    Client(SocketAddr),
    /// A load balancer's connection that names no client (PROXY v2 `LOCAL`, a
    /// health check; v1 `UNKNOWN`): its own address stands in for limits and logs,
    /// but nobody is identified by it, even inside a device network.
    Proxy(SocketAddr),
}

impl Peer {
    /// The address limits, logs and Received see.
    pub fn address(self) -> SocketAddr {
        match self {
            Peer::Client(a) | Peer::Proxy(a) => a,
        }
    }

    /// The same peer with an IPv4-mapped IPv6 address written as IPv4.
    pub fn canonical(self) -> Peer {
        let c = |a: SocketAddr| SocketAddr::new(a.ip().to_canonical(), a.port());
        match self {
            Peer::Client(a) => Peer::Client(c(a)),
            Peer::Proxy(a) => Peer::Proxy(c(a)),
        }
    }
}

/// Runs one accepted connection to its end: TLS (implicit or after STARTTLS),
/// greeting, commands.
///
/// Each phase (the plain-text part, the handshake, the session over TLS) runs as
/// its own boxed future, freed when the phase ends: a task's future is as large as
/// its largest state, and every idle session pays for that allocation (per idle TLS
/// session: 13 KiB of future before, under 4 KiB after).
pub async fn serve_connection(ctx: Arc<Context>, listener: Listener, tcp: TcpStream, peer: Peer) {
    let mut session = Session::new(ctx.clone(), listener.clone(), peer.address());
    let span = session.span.clone();
    async move {
        debug!(listener = %listener.address, tls = %listener.tls, "connection accepted");
        match peer {
            Peer::Client(_) => session.identify_by_network(),
            Peer::Proxy(_) => {
                debug!("no client address (PROXY LOCAL or UNKNOWN): not identified by network")
            }
        }
        let greeting = Reply::plain(220, format!("{} ESMTP Postern", ctx.config.hostname));
        match listener.tls {
            TlsMode::Implicit => {
                let Some(tls) = Box::pin(handshake(&ctx, tcp)).await else {
                    return;
                };
                session.tls = Some(describe(&tls));
                Box::pin(over_tls(&mut session, tls, Some(greeting))).await;
            }
            TlsMode::Starttls | TlsMode::None => {
                let mut io = SmtpStream::new(tcp, ctx.config.timeouts.write);
                io.reply(&greeting);
                let Ok(tcp) = Box::pin(until_starttls(&mut session, io)).await else {
                    return;
                };
                let Some(tls) = Box::pin(handshake(&ctx, tcp)).await else {
                    return;
                };
                session.tls_started(describe(&tls));
                Box::pin(over_tls(&mut session, tls, None)).await;
            }
        }
    }
    .instrument(span)
    .await
}

/// The session over TLS, after the handshake: the greeting first for implicit TLS.
async fn over_tls(
    session: &mut Session,
    tls: tokio_rustls::server::TlsStream<TcpStream>,
    greeting: Option<Reply>,
) {
    let mut io = SmtpStream::new(tls, session.ctx.config.timeouts.write);
    if let Some(greeting) = greeting {
        io.reply(&greeting);
    }
    let flow = session.run(&mut io).await;
    Box::pin(finish(session, &mut io, flow)).await;
}

/// Runs the session over a plain stream until it ends (with how) or says 220 to
/// STARTTLS: then the 220 is flushed and the stream handed back for the handshake,
/// without whatever the client pipelined after STARTTLS (commands sent in the clear
/// must not run inside the TLS session, RFC 3207 section 4.2).
async fn until_starttls<S: AsyncRead + AsyncWrite + Unpin>(
    session: &mut Session,
    mut io: SmtpStream<S>,
) -> Result<S, Flow> {
    let flow = session.run(&mut io).await;
    if flow != Flow::StartTls {
        finish(session, &mut io, flow).await;
        return Err(flow);
    }
    io.flush().await.map_err(|_| Flow::Close)?;
    let (stream, discarded) = io.into_inner();
    if discarded > 0 {
        warn!(bytes = discarded, "discarded data pipelined after STARTTLS");
    }
    Ok(stream)
}

/// Flushes the last replies and releases the transaction's smarthost connection.
async fn finish<S: AsyncRead + AsyncWrite + Unpin>(
    session: &mut Session,
    io: &mut SmtpStream<S>,
    flow: Flow,
) {
    session.reset_transaction();
    let _ = io.flush().await;
    debug!(?flow, messages = session.messages, "session ended");
}

async fn handshake(
    ctx: &Context,
    tcp: TcpStream,
) -> Option<tokio_rustls::server::TlsStream<TcpStream>> {
    let Some(tls) = &ctx.tls else {
        warn!("TLS requested but no certificate is configured");
        return None;
    };
    let limit = ctx.config.timeouts.tls_handshake;
    match tokio::time::timeout(limit, tls.acceptor().accept(tcp)).await {
        Ok(Ok(stream)) => {
            metrics::counter!("postern_tls_handshakes_total", "result" => "ok").increment(1);
            Some(stream)
        }
        Ok(Err(e)) => {
            metrics::counter!("postern_tls_handshakes_total", "result" => "failed").increment(1);
            info!(error = %e, "TLS handshake failed");
            None
        }
        Err(_) => {
            metrics::counter!("postern_tls_handshakes_total", "result" => "failed").increment(1);
            info!("TLS handshake timed out");
            None
        }
    }
}

fn describe(tls: &tokio_rustls::server::TlsStream<TcpStream>) -> String {
    crate::tls::describe(tls.get_ref().1)
}
