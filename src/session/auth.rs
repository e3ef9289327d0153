//! AUTH PLAIN and AUTH LOGIN (RFC 4954, RFC 4616).

use super::bounds::Bound;
use super::{Flow, MAX_AUTH_LINE, Session};
use crate::auth::AuthOutcome;
use crate::config::User;
use crate::policy::auth_failures::Gate;
use crate::policy::rates::human;
use crate::proto::printable::Printable;
use crate::proto::reply::{Esc, Reply};
use crate::proto::sasl::{self, Credentials, SaslError};
use crate::secret::Secret;
use crate::session::io::{ReadLine, SmtpStream};
use smtp_proto::{AUTH_LOGIN, AUTH_PLAIN};
use std::sync::Arc;
use std::time::{Instant, SystemTime};
use tokio::io::{AsyncRead, AsyncWrite};
use tracing::{info, warn};

/// Why the SASL exchange did not produce credentials.
enum Exchange {
    Sasl(SaslError),
    /// The connection timed out or closed mid-exchange.
    Gone(Flow),
}

impl Session {
    pub(super) async fn auth<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        io: &mut SmtpStream<S>,
        mechanism: u64,
        initial: String,
    ) -> Flow {
        let initial = Secret::new(initial);
        if self.helo.is_none() {
            return self.refuse(io, Reply::new(503, Esc(5, 5, 1), "Send EHLO first"));
        }
        if !self.auth_allowed() {
            return self.refuse(
                io,
                Reply::new(530, Esc(5, 7, 0), "Must issue a STARTTLS command first"),
            );
        }
        // A client known by its network may still log in as a user of its own
        // (a PC with a password in the printers' LAN); after a login, no other.
        if self.user.is_some() && !self.by_network {
            return self.refuse(io, Reply::new(503, Esc(5, 5, 1), "Already authenticated"));
        }
        if self.txn.is_some() {
            return self.refuse(
                io,
                Reply::new(
                    503,
                    Esc(5, 5, 1),
                    "AUTH not allowed during a mail transaction",
                ),
            );
        }
        let exchanged = match mechanism {
            AUTH_PLAIN => self.exchange_plain(io, initial).await,
            AUTH_LOGIN => self.exchange_login(io, initial).await,
            _ => {
                return self.refuse(
                    io,
                    Reply::new(504, Esc(5, 5, 4), "Unrecognized authentication mechanism"),
                );
            }
        };
        let creds = match exchanged {
            Ok(c) => c,
            Err(Exchange::Gone(flow)) => return flow,
            Err(Exchange::Sasl(SaslError::Cancelled)) => {
                return self.refuse(
                    io,
                    Reply::new(501, Esc(5, 0, 0), "Authentication cancelled"),
                );
            }
            Err(Exchange::Sasl(SaslError::AuthzidMismatch)) => {
                warn!("authentication refused: authorization identity differs from the username");
                return self.refuse(
                    io,
                    Reply::new(535, Esc(5, 7, 8), "Authentication credentials invalid"),
                );
            }
            Err(Exchange::Sasl(e)) => {
                return self.refuse(
                    io,
                    Reply::new(
                        501,
                        Esc(5, 5, 2),
                        format!("Malformed authentication data: {e}"),
                    ),
                );
            }
        };
        self.check_credentials(io, creds).await
    }

    /// Makes a client whose address is in a user's `networks` that user, as if it
    /// had logged in (the most specific network wins). A disabled or suspended
    /// user's device is not identified: its MAIL gets `530 5.7.0` like any client
    /// that did not log in. The brake's count of a user's addresses is for
    /// passwords that may have leaked, so it is not asked here.
    pub(super) fn identify_by_network(&mut self) {
        let users = self.ctx.auth.users();
        let Some(user) = users.by_address(self.peer.ip()) else {
            return;
        };
        if user.disabled {
            auth_metric("disabled");
            warn!(user = %user.name, "client in the networks of a disabled user: not identified");
            return;
        }
        if let Some(s) = self.ctx.brake.suspended(&user.name) {
            auth_metric("suspended");
            warn!(user = %user.name, reason = %s.reason, "client in the networks of a suspended user: not identified");
            return;
        }
        self.span.record("user", user.name.as_str());
        auth_metric("network");
        info!(user = %user.name, "identified by network");
        self.user = Some(user.clone());
        self.by_network = true;
    }

    /// Applies the failure penalties and the brake around the password check.
    async fn check_credentials<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        io: &mut SmtpStream<S>,
        creds: Credentials,
    ) -> Flow {
        let ip = self.client_key();
        let gate = self
            .ctx
            .auth_failures
            .check(ip, creds.username.as_str(), Instant::now())
            .await;
        if let Some(flow) = self.refuse_blocked(io, creds.username.as_str(), gate) {
            return flow;
        }
        let user = match self.verify_password(io, &creds, ip).await {
            Ok(user) => user,
            Err(flow) => return flow,
        };
        if let Some(flow) = self.refuse_braked(io, &user, ip) {
            return flow;
        }
        self.ctx
            .auth_failures
            .record_success(ip, &user.name, Instant::now());
        self.span.record("user", user.name.as_str());
        auth_metric("success");
        if self.by_network {
            info!(user = %user.name, "authenticated, in place of the identity by network");
        } else {
            info!(user = %user.name, "authenticated");
        }
        self.user = Some(user);
        self.by_network = false;
        self.ok(
            io,
            Reply::new(235, Esc(2, 7, 0), "Authentication successful"),
        )
    }

    /// Refuses a login that the failure penalties block before any password check:
    /// 421 and close for a blocked address, 454 for a locked username.
    fn refuse_blocked<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        io: &mut SmtpStream<S>,
        username: &str,
        gate: Gate,
    ) -> Option<Flow> {
        match gate {
            Gate::Open => None,
            Gate::IpBlocked { retry_after } => {
                auth_metric("blocked");
                warn!(username = %Printable(username), retry_after = %human(retry_after), "AUTH refused: address blocked after repeated failures");
                io.reply(&Reply::new(
                    421,
                    Esc(4, 7, 0),
                    format!(
                        "Too many failed logins from your address, try again in {}",
                        human(retry_after)
                    ),
                ));
                Some(Flow::Close)
            }
            Gate::UserBlocked { retry_after } | Gate::PairBlocked { retry_after } => {
                auth_metric("blocked");
                let why = if matches!(gate, Gate::PairBlocked { .. }) {
                    "AUTH refused: username locked from this address after repeated failures"
                } else {
                    "AUTH refused: username locked after repeated failures"
                };
                warn!(username = %Printable(username), retry_after = %human(retry_after), "{why}");
                Some(self.refuse(
                    io,
                    Reply::new(
                        454,
                        Esc(4, 7, 0),
                        format!(
                            "Temporary authentication failure, try again in {}",
                            human(retry_after)
                        ),
                    ),
                ))
            }
        }
    }

    /// The password check: the user, or how the session answers when it fails.
    async fn verify_password<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        io: &mut SmtpStream<S>,
        creds: &Credentials,
        ip: std::net::IpAddr,
    ) -> Result<Arc<User>, Flow> {
        let username = creds.username.as_str();
        match self.ctx.auth.verify(ip, username, &creds.password).await {
            AuthOutcome::Ok(user) => Ok(user),
            AuthOutcome::BadCredentials => Err(self.login_failed(io, creds).await),
            AuthOutcome::Disabled => {
                auth_metric("disabled");
                warn!(username = %Printable(username), "authentication failed: user is disabled");
                Err(self.refuse(
                    io,
                    Reply::new(535, Esc(5, 7, 8), "Authentication credentials invalid"),
                ))
            }
            AuthOutcome::Busy => {
                auth_metric("busy");
                warn!("authentication deferred: too many verifications in progress");
                Err(self.refuse(
                    io,
                    Reply::new(
                        454,
                        Esc(4, 7, 0),
                        "Temporary authentication failure, try again later",
                    ),
                ))
            }
        }
    }

    /// Refuses a verified user that is suspended, or that this login gets suspended
    /// by the abuse brake; the client sees only invalid credentials.
    fn refuse_braked<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        io: &mut SmtpStream<S>,
        user: &User,
        ip: std::net::IpAddr,
    ) -> Option<Flow> {
        if let Some(s) = self.ctx.brake.suspended(&user.name) {
            auth_metric("suspended");
            warn!(user = %user.name, reason = %s.reason, "authentication refused: user is suspended");
        } else if let Some(reason) =
            self.ctx
                .brake
                .login(&user.name, ip, Instant::now(), SystemTime::now())
        {
            auth_metric("suspended");
            warn!(user = %user.name, reason = %reason, "user suspended by the abuse brake");
            let by = crate::events::By::Brake;
            self.ctx.events.suspended(&user.name, &reason, by);
        } else {
            return None;
        }
        Some(self.refuse(
            io,
            Reply::new(535, Esc(5, 7, 8), "Authentication credentials invalid"),
        ))
    }

    /// The address the login penalties, the verification gate and the brake count
    /// this client under (its IPv6 prefix; see `limits.ipv6_prefix`).
    fn client_key(&self) -> std::net::IpAddr {
        crate::policy::client_key(self.peer.ip(), self.ctx.config.limits.ipv6_prefix)
    }

    /// A wrong password (or unknown user): slow down, then maybe close.
    async fn login_failed<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        io: &mut SmtpStream<S>,
        creds: &Credentials,
    ) -> Flow {
        let ip = self.client_key();
        let p = self
            .ctx
            .auth_failures
            .record_failure(ip, &creds.username, creds.password.expose(), Instant::now())
            .await;
        self.auth_failures += 1;
        auth_metric("failure");
        warn!(
            username = %Printable(&creds.username),
            address_failures = p.ip_failures,
            session_failures = self.auth_failures,
            delay_ms = p.delay.as_millis() as u64,
            "authentication failed: bad username or password"
        );
        if let Some(d) = p.ip_blocked {
            warn!(blocked_for = %human(d), "address blocked after repeated login failures");
        }
        if let Some(d) = p.user_blocked {
            warn!(username = %Printable(&creds.username), blocked_for = %human(d), "username locked after repeated login failures");
        }
        if let Some(d) = p.pair_blocked {
            warn!(username = ?creds.username, blocked_for = %human(d), "username locked from this address after repeated login failures");
        }
        if !p.delay.is_zero() {
            // The tarpit: the reply waits, and so does the attacker. The flush is
            // bounded by the write timeout; a client that does not read is dropped.
            if io.flush().await.is_err() {
                return Flow::Close;
            }
            tokio::time::sleep(p.delay).await;
        }
        self.refuse(
            io,
            Reply::new(535, Esc(5, 7, 8), "Authentication credentials invalid"),
        );
        if p.ip_blocked.is_some()
            || p.pair_blocked.is_some()
            || self.auth_failures >= self.ctx.auth_failures.policy().per_session
        {
            io.reply(&Reply::new(
                421,
                Esc(4, 7, 0),
                "Too many failed login attempts, closing connection",
            ));
            return Flow::Close;
        }
        Flow::Continue
    }

    async fn exchange_plain<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        io: &mut SmtpStream<S>,
        initial: Secret,
    ) -> Result<Credentials, Exchange> {
        let response = if initial.expose().is_empty() {
            self.challenge(io, "").await?
        } else {
            initial
        };
        sasl::decode_plain(response.expose()).map_err(Exchange::Sasl)
    }

    async fn exchange_login<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        io: &mut SmtpStream<S>,
        initial: Secret,
    ) -> Result<Credentials, Exchange> {
        let user_line = if initial.expose().is_empty() {
            self.challenge(io, sasl::LOGIN_USERNAME_PROMPT).await?
        } else {
            initial
        };
        let username = sasl::decode_login(user_line.expose()).map_err(Exchange::Sasl)?;
        let pass_line = self.challenge(io, sasl::LOGIN_PASSWORD_PROMPT).await?;
        let password = Secret::new(sasl::decode_login(pass_line.expose()).map_err(Exchange::Sasl)?);
        if username.is_empty() || password.expose().is_empty() {
            return Err(Exchange::Sasl(SaslError::Malformed));
        }
        Ok(Credentials { username, password })
    }

    /// Sends a 334 challenge and reads the client's response line (never logged).
    async fn challenge<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        io: &mut SmtpStream<S>,
        prompt: &str,
    ) -> Result<Secret, Exchange> {
        io.reply(&Reply::plain(334, prompt));
        // The session's deadlines (command, time to authenticate, lifetime) hold
        // within the exchange too.
        let (limit, bound) = self.read_limit();
        match io.read_line(MAX_AUTH_LINE, limit).await {
            ReadLine::Line(mut line) => {
                let text = std::str::from_utf8(&line[..line.len() - 2])
                    .map(|t| Secret::new(t.to_string()))
                    .map_err(|_| Exchange::Sasl(SaslError::Base64));
                // The response carries the password (base64 is not encryption).
                zeroize::Zeroize::zeroize(&mut line[..]);
                text
            }
            ReadLine::Bad(_) => Err(Exchange::Sasl(SaslError::Base64)),
            ReadLine::TimedOut if bound != Bound::Command => {
                Err(Exchange::Gone(self.expired(io, bound)))
            }
            ReadLine::TimedOut => {
                io.reply(&Reply::new(
                    421,
                    Esc(4, 4, 2),
                    "Timeout during authentication, closing connection",
                ));
                Err(Exchange::Gone(Flow::Close))
            }
            ReadLine::Closed => Err(Exchange::Gone(Flow::Close)),
        }
    }
}

fn auth_metric(result: &'static str) {
    metrics::counter!("postern_auth_total", "result" => result).increment(1);
}
