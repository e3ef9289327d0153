//! The clap definitions: every command, subcommand and flag of `postern`.
//!
//! These names are a fixed external interface (docs: the interface page): add to
//! them, never rename or remove one.

use clap::{Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "postern",
    version,
    about = "Authenticating SMTP submission proxy"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Cmd,
}

#[derive(Subcommand)]
pub enum Cmd {
    /// Run the proxy in the foreground, logging to stderr.
    Serve {
        /// Config file (default: $POSTERN_CONFIG, then /etc/postern/postern.yaml).
        #[arg(short = 'c', long = "config")]
        config: Option<PathBuf>,
    },
    /// Validate the config and the users file it names; list every problem.
    CheckConfig {
        #[arg(short = 'c', long = "config")]
        config: Option<PathBuf>,
    },
    /// Read one password and print its argon2id PHC string for the users file.
    HashPassword,
    /// Ask the running server to re-read the users file, the suspension list and the
    /// TLS certificate and key (like SIGHUP), and say whether it did.
    Reload {
        #[arg(short = 'c', long = "config")]
        config: Option<PathBuf>,
    },
    /// Inspect and steer the queue.
    #[command(subcommand)]
    Queue(QueueCmd),
    /// Manage users.
    #[command(subcommand)]
    User(UserCmd),
    /// DKIM keys per customer domain.
    #[command(subcommand)]
    Dkim(DkimCmd),
    /// Check each sender domain's DNS (SPF, DKIM, DMARC, MX) against the smarthost
    /// its mail leaves through, and say what to fix; exit 1 if a check failed.
    Doctor {
        /// Domains to check (default: every domain in the users' senders).
        domains: Vec<String>,
        /// Print JSON (for a panel) instead of text.
        #[arg(long)]
        json: bool,
        #[arg(short = 'c', long = "config")]
        config: Option<PathBuf>,
    },
    /// Run a self-contained demo on loopback: self-signed TLS, a sample user and a
    /// stand-in smarthost.
    Demo {
        /// Folder for the demo's files (config, certificates, received messages).
        #[arg(long, default_value = "postern-demo")]
        dir: PathBuf,
        /// Submission (STARTTLS) listener.
        #[arg(long, default_value = "127.0.0.1:2587")]
        submission: std::net::SocketAddr,
        /// Implicit-TLS listener.
        #[arg(long, default_value = "127.0.0.1:2465")]
        smtps: std::net::SocketAddr,
        /// Admin API and dashboard (HTTP; the token is printed on start).
        #[arg(long, default_value = "127.0.0.1:8025")]
        admin: std::net::SocketAddr,
    },
}

#[derive(Subcommand)]
pub enum QueueCmd {
    /// List spooled messages: id, age, sender, recipients, attempts, last error.
    List {
        #[arg(short = 'c', long = "config")]
        config: Option<PathBuf>,
    },
    /// Ask the running server to retry every spooled message now.
    Flush {
        #[arg(short = 'c', long = "config")]
        config: Option<PathBuf>,
    },
    /// Remove one spooled message.
    Delete {
        id: String,
        #[arg(short = 'c', long = "config")]
        config: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
pub enum UserCmd {
    /// Add a user (password read like hash-password), then reload the running server.
    Add {
        name: String,
        /// An address or @domain the user may send as; repeat for more.
        #[arg(long = "sender")]
        senders: Vec<String>,
        /// A network (CIDR, or one address) whose clients are this user without AUTH,
        /// for printers and scanners; repeat for more. With it no password is read.
        #[arg(long = "network")]
        networks: Vec<String>,
        #[arg(short = 'c', long = "config")]
        config: Option<PathBuf>,
    },
    /// Set `disabled: true` for a user, then reload the running server.
    Disable {
        name: String,
        #[arg(short = 'c', long = "config")]
        config: Option<PathBuf>,
    },
    /// List users: name, state, senders, networks.
    List {
        #[arg(short = 'c', long = "config")]
        config: Option<PathBuf>,
    },
    /// Clear `disabled` and lift an automatic suspension, then reload the running server.
    Enable {
        name: String,
        #[arg(short = 'c', long = "config")]
        config: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
pub enum DkimCmd {
    /// Make a key under dkim.keys_directory and print the DNS TXT record to publish.
    Generate {
        /// The domain whose header From: the key signs for.
        domain: String,
        /// The record's selector (default: dated, such as postern-202612).
        #[arg(long)]
        selector: Option<String>,
        #[arg(long, value_enum, default_value = "rsa")]
        algorithm: DkimAlgorithm,
        #[arg(short = 'c', long = "config")]
        config: Option<PathBuf>,
    },
    /// List the keys: domain, selector, algorithm, the DNS record each needs, and
    /// whether DNS has it (system resolver, or POSTERN_RESOLVER=IP:PORT).
    List {
        #[arg(short = 'c', long = "config")]
        config: Option<PathBuf>,
    },
}

/// Key types for `postern dkim generate --algorithm`.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DkimAlgorithm {
    /// RSA, 2048 bits: every verifier takes it.
    Rsa,
    /// Ed25519 (RFC 8463): short, but not every verifier takes it; pair it with RSA.
    Ed25519,
}
