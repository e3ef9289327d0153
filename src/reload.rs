//! Reload: what SIGHUP, the control socket (`postern user ...`) and the admin API
//! all call to make the running server see changed files.
//!
//! Only what may change at run time is re-read: the users file, the suspension list,
//! the TLS certificate and key, and the DKIM keys. The config file itself and the secrets it names
//! (the smarthost password) were read once at start, before `run_as` dropped root,
//! and are kept: re-reading them as the unprivileged user would fail, and changing
//! them needs a restart anyway. Each part is replaced only if its new file is valid;
//! a part that fails keeps what is in force and is named in the error, so whoever
//! asked for the reload learns that it did not (fully) happen, and why.

use crate::config::{Problems, load_users};
use crate::context::Context;
use crate::tls::load_server_config;
use std::fmt;
use tracing::{error, info};

/// What a successful reload put in force.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reloaded {
    /// Users now in force.
    pub users: usize,
    /// Users suspended now.
    pub suspended: usize,
    /// Whether a TLS certificate was re-read (there is none without TLS listeners).
    pub tls: bool,
    /// DKIM keys now in force.
    pub dkim_keys: usize,
}

/// Which parts could not be reloaded, and why; the others were reloaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReloadError {
    /// One line per failed part, e.g. `users file: /etc/postern/users.yaml: cannot
    /// read the users file: Permission denied (os error 13)`.
    pub failures: Vec<String>,
    /// The parts that were reloaded all the same (`users file`, `suspension list`,
    /// `TLS certificate`, `DKIM keys`).
    pub reloaded: Vec<&'static str>,
}

impl fmt::Display for ReloadError {
    /// One line (the control socket answers with one line), control characters
    /// escaped: the reasons may quote file content.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut joined = self.failures.join("; ");
        if !self.reloaded.is_empty() {
            joined.push_str(&format!(" (reloaded: {})", self.reloaded.join(", ")));
        }
        for c in joined.chars() {
            if c.is_control() {
                write!(f, "{}", c.escape_default())?;
            } else {
                write!(f, "{c}")?;
            }
        }
        Ok(())
    }
}

impl std::error::Error for ReloadError {}

/// Re-reads the users file, the suspension list, the TLS certificate and key and
/// the DKIM keys; each part whose new file is invalid or unreadable keeps the old
/// one in force.
pub fn reload(ctx: &Context) -> Result<Reloaded, ReloadError> {
    let mut failures = Vec::new();
    let mut reloaded = Vec::new();
    let mut problems = Problems::default();
    // Users in a database are kept in sync by their own task, not by reload.
    let from_file = ctx.config.users_database.is_none();
    match from_file.then(|| {
        load_users(
            &ctx.config.users_file,
            &ctx.config.rate_limits,
            &mut problems,
        )
    }) {
        None => {}
        Some(Some(users)) => {
            ctx.auth.replace_users(users);
            reloaded.push("users file");
        }
        Some(None) => {
            let why: Vec<String> = problems.0.iter().map(|p| p.to_string()).collect();
            failures.push(format!("users file: {}", why.join("; ")));
        }
    }
    let suspended = match ctx.brake.reload() {
        Ok(n) => {
            reloaded.push("suspension list");
            n
        }
        Err(e) => {
            failures.push(format!("suspension list: {e}"));
            0
        }
    };
    let mut tls = false;
    if let (Some(server_tls), Some(files)) = (&ctx.tls, &ctx.config.tls) {
        match load_server_config(files) {
            Ok(c) => {
                server_tls.replace(c);
                reloaded.push("TLS certificate");
                tls = true;
            }
            Err(e) => failures.push(format!("TLS certificate: {e}")),
        }
    }
    let dkim_keys = match ctx.dkim.reload() {
        Ok(Some(n)) => {
            reloaded.push("DKIM keys");
            n
        }
        // No keys folder: signing is off, nothing to name.
        Ok(None) => 0,
        Err(e) => {
            failures.push(format!("DKIM keys: {e}"));
            ctx.dkim.current().len()
        }
    };
    let users = ctx.auth.users().len();
    if failures.is_empty() {
        info!(users, suspended, tls, dkim_keys, "reload complete");
        Ok(Reloaded {
            users,
            suspended,
            tls,
            dkim_keys,
        })
    } else {
        let err = ReloadError { failures, reloaded };
        error!(problem = %err, users, "reload rejected; keeping the old files for what failed");
        Err(err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_error_is_one_line_with_control_characters_escaped() {
        let e = ReloadError {
            failures: vec![
                "users file: bad\nline\x1b[31m".into(),
                "TLS certificate: gone".into(),
            ],
            reloaded: vec!["suspension list"],
        };
        let s = e.to_string();
        assert_eq!(
            s,
            "users file: bad\\nline\\u{1b}[31m; TLS certificate: gone (reloaded: suspension list)"
        );
        assert!(!s.contains('\n'));
    }
}
