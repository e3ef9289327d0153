//! `postern hash-password`, and the password prompt that `postern user add` shares.

use std::io::{BufRead, IsTerminal, Write};
use std::process::ExitCode;

/// Reads a password: a no-echo prompt (twice) on a terminal, else one stdin line.
pub fn read_password() -> Result<postern::secret::Secret, ExitCode> {
    let password = if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password("Password: ");
        let second = rpassword::prompt_password("Again: ");
        match (first, second) {
            (Ok(a), Ok(b)) if a == b => a,
            (Ok(_), Ok(_)) => {
                eprintln!("postern: the passwords differ");
                return Err(ExitCode::from(1));
            }
            (Err(e), _) | (_, Err(e)) => {
                eprintln!("postern: cannot read the password: {e}");
                return Err(ExitCode::from(2));
            }
        }
    } else {
        let mut line = String::new();
        if let Err(e) = std::io::stdin().lock().read_line(&mut line) {
            eprintln!("postern: cannot read the password: {e}");
            return Err(ExitCode::from(2));
        }
        line.trim_end_matches(['\r', '\n']).to_string()
    };
    let password = postern::secret::Secret::new(password);
    if password.expose().is_empty() {
        eprintln!("postern: the password is empty");
        return Err(ExitCode::from(1));
    }
    Ok(password)
}

pub fn hash_password() -> ExitCode {
    let password = match read_password() {
        Ok(p) => p,
        Err(code) => return code,
    };
    match postern::auth::hash_password(password.expose()) {
        Ok(h) => {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{h}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("postern: hashing failed: {e}");
            ExitCode::from(2)
        }
    }
}
