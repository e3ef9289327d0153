//! The clap definitions of `postern-bench`: `bench/compare.sh` calls these flags.

use clap::{Parser, Subcommand, ValueEnum};
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Parser)]
#[command(name = "postern-bench", about = "SMTP load generator and fast sink")]
pub struct Cli {
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq, Debug)]
pub enum Tls {
    Starttls,
    Implicit,
    None,
}

#[derive(clap::Args, Clone)]
pub struct Target {
    /// Server to submit to.
    #[arg(long)]
    pub target: SocketAddr,
    #[arg(long, value_enum, default_value = "starttls")]
    pub tls: Tls,
    /// CA certificate (PEM) that signed the server's certificate.
    #[arg(long)]
    pub ca: Option<PathBuf>,
    /// Server name to verify (SNI).
    #[arg(long, default_value = "localhost")]
    pub server_name: String,
    /// AUTH PLAIN as this user (repeat with --users-file for several).
    #[arg(long)]
    pub user: Option<String>,
    /// The user's password, in a file.
    #[arg(long)]
    pub password_file: Option<PathBuf>,
    /// Lines of `user:password`; connections use them in turn.
    #[arg(long)]
    pub users_file: Option<PathBuf>,
}

#[derive(Subcommand)]
pub enum Cmd {
    /// Submit messages and report throughput, latency and errors.
    Load {
        #[command(flatten)]
        target: Target,
        /// Concurrent client connections.
        #[arg(long, default_value_t = 20)]
        concurrency: usize,
        /// Messages per connection before QUIT and a new connection (1: the
        /// WordPress pattern, one message per connection; 0: log in and QUIT only,
        /// counting sessions instead of messages).
        #[arg(long, default_value_t = 100)]
        messages_per_connection: u64,
        /// Messages in all.
        #[arg(long, default_value_t = 10_000)]
        total: u64,
        /// Stop after this many seconds even if `total` is not reached.
        #[arg(long, default_value_t = 120)]
        max_seconds: u64,
        /// Message size in bytes (headers included).
        #[arg(long, default_value_t = 1024)]
        size: usize,
        #[arg(long, default_value = "bench@bench.example")]
        from: String,
        #[arg(long, default_value = "rcpt@example.org")]
        to: String,
        /// Print one JSON line instead of the text report.
        #[arg(long)]
        json: bool,
    },
    /// Open idle sessions (TLS and EHLO done) and hold them.
    Idle {
        #[command(flatten)]
        target: Target,
        #[arg(long, default_value_t = 1000)]
        sessions: usize,
        /// Seconds to hold them once all are open.
        #[arg(long, default_value_t = 10)]
        hold: u64,
        /// Also authenticate each session.
        #[arg(long)]
        auth: bool,
    },
    /// A discarding smarthost stand-in that demands STARTTLS (or implicit TLS) and AUTH.
    Sink(SinkArgs),
}

#[derive(clap::Args)]
pub struct SinkArgs {
    #[arg(long)]
    pub listen: SocketAddr,
    #[arg(long, value_enum, default_value = "starttls")]
    pub tls: Tls,
    #[arg(long)]
    pub cert: Option<PathBuf>,
    #[arg(long)]
    pub key: Option<PathBuf>,
    #[arg(long)]
    pub user: Option<String>,
    #[arg(long)]
    pub password_file: Option<PathBuf>,
    /// Keep the number of accepted messages in this file (rewritten every 20 ms),
    /// for measuring end-to-end delivery.
    #[arg(long)]
    pub count_file: Option<PathBuf>,
    /// Also serve an OAuth 2.0 token endpoint (HTTPS, client credentials, the
    /// sink's certificate) here, and take AUTH XOAUTH2 with its tokens only.
    #[arg(long, requires_all = ["token_user", "token_secret_file", "cert"])]
    pub token_endpoint: Option<SocketAddr>,
    /// The mailbox the tokens log in as (XOAUTH2's `user=`).
    #[arg(long)]
    pub token_user: Option<String>,
    /// The client secret the token endpoint expects, in a file.
    #[arg(long)]
    pub token_secret_file: Option<PathBuf>,
    /// Seconds a token lives.
    #[arg(long, default_value_t = 3600)]
    pub token_lifetime: u64,
    /// Keep the number of token requests in this file.
    #[arg(long)]
    pub token_count_file: Option<PathBuf>,
}
