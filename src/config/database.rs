//! `users.database`: the PostgreSQL users store's address, checked without
//! connecting (check-config connects separately, and `serve` refuses to start when
//! it cannot).
//!
//! With `sslmode=require` the connection uses TLS, the server's certificate checked
//! against the system's roots and `users.ca_file`; otherwise it is plain.
//!
//! The URL must not hold a password: the config file is shown by `check-config`,
//! copied into tickets and often readable by more than the service. The password,
//! when one is needed, lives in `users.password_file` (read at start, before root is
//! dropped); peer or trust authentication over a unix socket needs none.

use super::ctx::Ctx;
use crate::secret::Secret;
use std::path::PathBuf;
use std::str::FromStr;

/// Where the users live when they are in PostgreSQL.
#[derive(Debug, Clone)]
pub struct UsersDatabase {
    /// The URL as given, which holds no password (safe to print and log).
    pub url: String,
    /// `users.password_file`, if given.
    pub password_file: Option<PathBuf>,
    /// Its contents, read at start.
    pub password: Option<Secret>,
    /// `users.ca_file`: extra trust roots for the server's certificate.
    pub ca_file: Option<PathBuf>,
}

/// Validates `users.database` (and reads `users.password_file`), recording problems.
pub(super) fn database(
    cx: &mut Ctx,
    url: String,
    password_file: Option<PathBuf>,
    ca_file: Option<PathBuf>,
) -> Option<UsersDatabase> {
    if let Err(why) = check_url(&url) {
        cx.add("users.database", why);
        return None;
    }
    let password_file = password_file.map(|p| cx.resolve(p));
    let password = match &password_file {
        Some(f) => Some(super::oauth2::read_secret(cx, "users.password_file", f)?),
        None => None,
    };
    let ca_file = ca_file.map(|p| cx.resolve(p));
    if let Some(f) = &ca_file
        && !f.is_file()
    {
        cx.add("users.ca_file", format!("{} is not a file", f.display()));
    }
    Some(UsersDatabase {
        url,
        password_file,
        password,
        ca_file,
    })
}

/// Why `url` cannot be used, if it cannot. Pure. The driver's own message is kept
/// only when the URL has no password that it could quote.
pub fn check_url(url: &str) -> Result<(), String> {
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return Err("must be a URL starting with postgres:// or postgresql://".into());
    }
    let parsed = tokio_postgres::Config::from_str(url)
        .map_err(|e| format!("not a valid PostgreSQL URL: {e}"))?;
    if parsed.get_password().is_some() {
        return Err("holds a password: put it in users.password_file instead (the URL is shown by check-config and in logs)".into());
    }
    if parsed.get_hosts().is_empty() {
        return Err("names no host (give a host name, an address or host=/run/postgresql for the unix socket)".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::check_url;

    #[test]
    fn urls_without_passwords_and_tls_pass() {
        for ok in [
            "postgres://postern@127.0.0.1:5432/postern",
            "postgresql://postern@db.example/postern?connect_timeout=5",
            "postgres://postern@%2Frun%2Fpostgresql/postern",
            "postgres:///postern?host=/run/postgresql",
            "postgres://postern@db.example/postern?sslmode=require",
        ] {
            assert_eq!(check_url(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn passwords_and_other_schemes_are_refused_without_quoting_the_password() {
        let e = check_url("postgres://postern:hunter2@db/postern").unwrap_err();
        assert!(e.contains("password_file"), "{e}");
        assert!(!e.contains("hunter2"));
        assert!(check_url("mysql://db/postern").is_err());
        assert!(check_url("host=db user=postern").is_err());
        assert!(check_url("postgres://db:notaport/postern").is_err());
    }
}
