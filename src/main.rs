//! The `postern` command line: parse the arguments, run the command (see [`cli`]),
//! turn its outcome into the exit code.

mod cli;

use clap::Parser;
use cli::args::{Cli, Cmd, DkimCmd, QueueCmd, UserCmd};
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { 1 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    match cli.command {
        Cmd::Serve { config } => cli::run::serve(config),
        Cmd::CheckConfig { config } => cli::run::check_config(config),
        Cmd::HashPassword => cli::password::hash_password(),
        Cmd::Reload { config } => cli::reload::reload(config),
        Cmd::User(UserCmd::Enable { name, config }) => cli::user::enable(&name, config),
        Cmd::User(UserCmd::Add {
            name,
            senders,
            networks,
            config,
        }) => cli::user::add(&name, &senders, &networks, config),
        Cmd::User(UserCmd::Disable { name, config }) => cli::user::disable(&name, config),
        Cmd::User(UserCmd::List { config }) => cli::user::list(config),
        Cmd::Queue(QueueCmd::List { config }) => cli::queue::list(config),
        Cmd::Queue(QueueCmd::Flush { config }) => cli::queue::request(config, "flush".into()),
        Cmd::Queue(QueueCmd::Delete { id, config }) => cli::queue::delete(&id, config),
        Cmd::Dkim(DkimCmd::Generate {
            domain,
            selector,
            algorithm,
            config,
        }) => cli::dkim::generate(&domain, selector, algorithm, config),
        Cmd::Dkim(DkimCmd::List { config }) => cli::dkim::list(config),
        Cmd::Doctor {
            domains,
            json,
            config,
        } => cli::doctor::doctor(domains, json, config),
        Cmd::Demo {
            dir,
            submission,
            smtps,
            admin,
        } => cli::run::demo(dir, submission, smtps, admin),
    }
}
