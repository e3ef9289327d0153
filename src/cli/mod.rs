//! The `postern` command line, one file per command group. Binary-private: the
//! library and the tests drive it only as a process.
//!
//! - `args`: the clap definitions (the fixed external interface).
//! - `run`: `serve`, `check-config`, `demo`.
//! - `password`: `hash-password` and the password prompt.
//! - `user`: `user add|disable|enable|list`, through the users store (file or PostgreSQL).
//! - `queue`: `queue list|flush|delete`.
//! - `reload`: `reload`, and telling the server to reload after an edit.
//! - `dkim`: `dkim generate|list`.
//! - `doctor`: `doctor`, the deliverability checks.
//!
//! Exit codes (fixed): 0 ok, 1 bad config or usage, 2 runtime failure.

pub mod args;
pub mod dkim;
pub mod doctor;
pub mod password;
pub mod queue;
pub mod reload;
pub mod run;
pub mod user;

use postern::config::{self, Config, LogFormat};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

pub fn init_logging(format: LogFormat, level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(level).unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(filter);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

pub fn load(path: Option<PathBuf>) -> Result<(Config, config::Users), ExitCode> {
    let path = config::resolve_path(path);
    Config::load(&path).map_err(|problems| {
        eprintln!(
            "postern: {} problem(s) in the configuration:",
            problems.len()
        );
        eprint!("{problems}");
        ExitCode::from(1)
    })
}
