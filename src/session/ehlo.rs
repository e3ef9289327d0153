//! EHLO and HELO.

use super::{Flow, Session};
use crate::config::TlsMode;
use crate::proto::printable::Printable;
use crate::proto::reply::Reply;
use crate::session::io::SmtpStream;
use tokio::io::{AsyncRead, AsyncWrite};
use tracing::debug;

impl Session {
    /// Answers EHLO (`esmtp`) or HELO; either resets any transaction (RFC 5321 4.1.4).
    pub(super) fn ehlo<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        io: &mut SmtpStream<S>,
        host: String,
        esmtp: bool,
    ) -> Flow {
        self.reset_transaction();
        debug!(helo = %Printable(&host), esmtp, "client said hello");
        let hostname = &self.ctx.config.hostname;
        let greeting = format!(
            "{hostname} Hello {} [{}]",
            clean_helo(&host),
            self.peer.ip()
        );
        self.helo = Some(host);
        self.esmtp = esmtp;
        if !esmtp {
            io.reply(&Reply::plain(250, greeting));
            return Flow::Continue;
        }
        let mut lines = vec![
            greeting,
            "PIPELINING".to_string(),
            format!("SIZE {}", self.ctx.config.limits.max_message_size),
            "8BITMIME".to_string(),
            "ENHANCEDSTATUSCODES".to_string(),
            "SMTPUTF8".to_string(),
        ];
        if self.listener.tls == TlsMode::Starttls && self.tls.is_none() {
            lines.push("STARTTLS".to_string());
        }
        // Offered to a client known by its network too: one that was configured
        // with a password logs in as usual instead of failing for want of AUTH.
        if self.auth_allowed() && (self.user.is_none() || self.by_network) {
            lines.push("AUTH PLAIN LOGIN".to_string());
        }
        lines.push("HELP".to_string());
        io.reply(&Reply::plain(250, lines.join("\n")));
        Flow::Continue
    }
}

/// The client's EHLO argument as it may appear in our reply: printable ASCII only.
fn clean_helo(host: &str) -> String {
    host.chars()
        .take(255)
        .map(|c| if c.is_ascii_graphic() { c } else { '?' })
        .collect()
}
