//! `postern reload`, and the reload that `postern user ...` asks for after an edit.

use postern::config::{self, Config};
use std::path::PathBuf;
use std::process::ExitCode;

/// Tells a running server to reload and says what happened: exit 0 when it reloaded
/// or when no server runs (the change applies at its next start), 2 when a server
/// answered that the reload failed, or could not be asked.
pub fn tell_server_to_reload(config: &Config) -> ExitCode {
    use std::io::ErrorKind::{ConnectionRefused, NotFound};
    let socket = postern::control::socket_path(&config.delivery.spool_directory);
    match postern::control::request(&socket, "reload") {
        Ok(a) if a.starts_with("ok") => {
            println!("the running server reloaded the users file");
            ExitCode::SUCCESS
        }
        Ok(a) => {
            eprintln!(
                "postern: the file was changed, but the running server's reload failed (it keeps the old version of what failed): {}",
                a.trim_start_matches("err ")
            );
            ExitCode::from(2)
        }
        Err(e) if matches!(e.kind(), NotFound | ConnectionRefused) => {
            println!("no running server answered; the change applies at the next start or SIGHUP");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!(
                "postern: the file was changed, but the running server at {} could not be asked to reload: {e}",
                socket.display()
            );
            ExitCode::from(2)
        }
    }
}

/// `postern reload`: exit 0 when the server reloaded, 2 when it did not (saying
/// why) or when no server answers.
pub fn reload(path: Option<PathBuf>) -> ExitCode {
    // Only the config file is read here: whether the users file is valid is the
    // server's answer to give (it keeps the old one if not).
    let path = config::resolve_path(path);
    let mut problems = config::Problems::default();
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("postern: cannot read {}: {e}", path.display());
            return ExitCode::from(1);
        }
    };
    let base = path
        .parent()
        .unwrap_or(std::path::Path::new("."))
        .to_path_buf();
    let Some(config) = Config::from_yaml(&text, &path, &base, &mut problems) else {
        eprintln!(
            "postern: {} problem(s) in the configuration:\n{problems}",
            problems.len()
        );
        return ExitCode::from(1);
    };
    let socket = postern::control::socket_path(&config.delivery.spool_directory);
    match postern::control::request(&socket, "reload") {
        Ok(a) if a.starts_with("ok") => {
            println!("{}", a.trim_start_matches("ok "));
            ExitCode::SUCCESS
        }
        Ok(a) => {
            eprintln!(
                "postern: reload failed (the server keeps the old version of what failed): {}",
                a.trim_start_matches("err ")
            );
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!(
                "postern: cannot reach the running server at {}: {e}",
                socket.display()
            );
            ExitCode::from(2)
        }
    }
}
