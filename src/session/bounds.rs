//! How long and how much one session may do: its lifetime before and after AUTH,
//! the junk commands it may send, and the messages it may send. Each bound ends the
//! session with `421 4.7.0` and a log line saying which bound it met; a client that
//! reconnects starts afresh (and passes the connection and AUTH checks again, which
//! is the point: a disabled or suspended user cannot ride an old session).

use super::{Flow, Session};
use crate::proto::reply::{Esc, Reply};
use crate::session::io::SmtpStream;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tracing::{info, warn};

/// Which deadline limits the wait for the next command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Bound {
    /// `timeouts.command`: the client is idle.
    Command,
    /// `timeouts.unauthenticated`: no successful AUTH yet.
    Unauthenticated,
    /// `timeouts.session`: the whole session.
    Lifetime,
}

/// The nearest of the three deadlines, as time left from now; pure so that it can be
/// tested without a clock.
pub(super) fn nearest(
    command: Duration,
    unauthenticated: Option<Duration>,
    lifetime: Duration,
    age: Duration,
) -> (Duration, Bound) {
    let mut best = (command, Bound::Command);
    let mut consider = |total: Duration, bound: Bound| {
        let left = total.saturating_sub(age);
        if left < best.0 {
            best = (left, bound);
        }
    };
    if let Some(u) = unauthenticated {
        consider(u, Bound::Unauthenticated);
    }
    consider(lifetime, Bound::Lifetime);
    best
}

impl Session {
    /// How long the next command may take to arrive, and which bound that is.
    pub(super) fn read_limit(&self) -> (Duration, Bound) {
        let t = &self.ctx.config.timeouts;
        let unauthenticated = self.user.is_none().then_some(t.unauthenticated);
        nearest(
            t.command,
            unauthenticated,
            t.session,
            self.connected.elapsed(),
        )
    }

    /// The session met its lifetime (or its time to authenticate): 421 and close.
    pub(super) fn expired<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        io: &mut SmtpStream<S>,
        bound: Bound,
    ) -> Flow {
        let hostname = &self.ctx.config.hostname;
        let text = if bound == Bound::Unauthenticated {
            info!(
                age_s = self.connected.elapsed().as_secs(),
                "closing: no successful AUTH within timeouts.unauthenticated"
            );
            format!("{hostname} Too long without authentication, closing connection")
        } else {
            info!(
                age_s = self.connected.elapsed().as_secs(),
                messages = self.messages,
                "closing: session reached timeouts.session"
            );
            format!("{hostname} Session too long, reconnect to continue")
        };
        io.reply(&Reply::new(421, Esc(4, 7, 0), text));
        Flow::Close
    }

    /// Counts a junk command (NOOP, VRFY, HELP, RSET, ETRN); true once there are more
    /// than `limits.max_junk_commands` since the last accepted message, after the
    /// 421 has been queued.
    pub(super) fn junk_exceeded<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        io: &mut SmtpStream<S>,
    ) -> bool {
        self.junk += 1;
        let max = self.ctx.config.limits.max_junk_commands;
        if self.junk <= max {
            return false;
        }
        warn!(
            junk = self.junk,
            max, "too many NOOP/VRFY/HELP/RSET/ETRN without sending mail, closing"
        );
        io.reply(&Reply::new(
            421,
            Esc(4, 7, 0),
            "Too many commands without sending mail, closing connection",
        ));
        true
    }

    /// MAIL after `limits.max_messages_per_session` messages: like Exim's
    /// `smtp_accept_max_per_connection`, 421 and close, so that the client goes on
    /// over a new connection (and a new AUTH).
    pub(super) fn too_many_messages<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        io: &mut SmtpStream<S>,
    ) -> Flow {
        info!(
            messages = self.messages,
            "closing: session reached limits.max_messages_per_session"
        );
        io.reply(&Reply::new(
            421,
            Esc(4, 7, 0),
            "Too many messages in one session, reconnect to send more",
        ));
        Flow::Close
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn the_nearest_deadline_wins() {
        // Fresh, unauthenticated: the command timeout is nearest.
        assert_eq!(
            nearest(S(300), Some(S(600)), S(3600), S(0)),
            (S(300), Bound::Command)
        );
        // Four minutes in without AUTH: one minute left of the five.
        assert_eq!(
            nearest(S(300), Some(S(300)), S(3600), S(240)),
            (S(60), Bound::Unauthenticated)
        );
        // Authenticated: the time to authenticate no longer counts.
        assert_eq!(
            nearest(S(300), None, S(3600), S(3500)),
            (S(100), Bound::Lifetime)
        );
        // Past a deadline: nothing left, never an underflow.
        assert_eq!(
            nearest(S(300), None, S(3600), S(4000)),
            (S(0), Bound::Lifetime)
        );
        assert_eq!(
            nearest(S(300), Some(S(60)), S(3600), S(61)),
            (S(0), Bound::Unauthenticated)
        );
    }
}
