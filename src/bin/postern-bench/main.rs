//! Benchmark tools: a load generator for any SMTP submission server, and a fast
//! discarding stand-in smarthost. Used by `bench/compare.sh`; never by the tests.
//!
//! ```text
//! postern-bench load --target 127.0.0.1:587 --tls starttls --ca ca.pem \
//!     --user bench1 --password-file pw --concurrency 50 --total 20000 --size 1024
//! postern-bench idle --target 127.0.0.1:587 --tls starttls --ca ca.pem --sessions 5000 --hold 20
//! postern-bench sink --listen 127.0.0.1:2525 --tls starttls --cert c.pem --key k.pem \
//!     --user relay --password-file pw
//! ```
//!
//! Layout: `args` (flags), `client` (connection, session setup), `load` (the load
//! generator), `report` (its figures and report), `idle` (held sessions), `sink`
//! (the stand-in smarthost), `token` (its OAuth 2.0 token endpoint, for XOAUTH2).

mod args;
mod client;
mod idle;
mod load;
mod report;
mod sink;
mod token;

use args::{Cli, Cmd};
use clap::Parser;
use load::{Plan, message};
use std::sync::Arc;
use std::time::Duration;

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let result = rt.block_on(async {
        match cli.cmd {
            Cmd::Load {
                target,
                concurrency,
                messages_per_connection,
                total,
                max_seconds,
                size,
                from,
                to,
                json,
            } => {
                let plan = Plan {
                    concurrency,
                    per_connection: messages_per_connection,
                    total,
                    deadline: Duration::from_secs(max_seconds),
                    message: Arc::new(message(size, &from, &to)),
                    from,
                    to,
                };
                load::load(target, plan, json).await
            }
            Cmd::Idle {
                target,
                sessions,
                hold,
                auth,
            } => idle::idle(target, sessions, Duration::from_secs(hold), auth).await,
            Cmd::Sink(args) => sink::sink(args).await,
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("postern-bench: {e}");
            std::process::ExitCode::from(2)
        }
    }
}
