//! `postern queue list|flush|delete`: the spool, read directly or steered through the
//! running server's control socket.

use super::load;
use postern::proto::printable::Printable;
use std::path::PathBuf;
use std::process::ExitCode;

pub fn list(path: Option<PathBuf>) -> ExitCode {
    let (config, _) = match load(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let spool = postern::spool::store::Spool::at(&config.delivery.spool_directory);
    let envs = match spool.load_all(false) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => {
            eprintln!(
                "postern: cannot read the spool {}: {e}",
                config.delivery.spool_directory.display()
            );
            return ExitCode::from(2);
        }
    };
    let now = postern::spool::store::unix_now();
    println!(
        "{:<22} {:>8} {:<32} {:>4} {:>8}  recipients / last error",
        "id", "age", "sender", "rcpt", "attempts"
    );
    // Senders, recipients and errors come from clients and smarthosts: escaped, so
    // that nothing in them can drive the operator's terminal.
    let show = |s: &str| Printable(s).to_string();
    for e in &envs {
        let pending: Vec<String> = e.pending().map(|r| show(&r.address)).collect();
        println!(
            "{:<22} {:>8} {:<32} {:>4} {:>8}  {}",
            e.id,
            postern::policy::rates::human(std::time::Duration::from_secs(
                now.saturating_sub(e.created)
            )),
            if e.from.is_empty() {
                "<>".into()
            } else {
                show(&e.from)
            },
            pending.len(),
            e.attempts,
            pending.join(", ")
        );
        if let Some(err) = &e.last_error {
            println!("{:<22} last error: {}", "", show(err));
        }
    }
    println!("{} message(s) queued", envs.len());
    ExitCode::SUCCESS
}

pub fn request(path: Option<PathBuf>, line: String) -> ExitCode {
    let (config, _) = match load(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let socket = postern::control::socket_path(&config.delivery.spool_directory);
    match postern::control::request(&socket, &line) {
        Ok(answer) if answer.starts_with("ok") => {
            println!("{}", answer.trim_start_matches("ok "));
            ExitCode::SUCCESS
        }
        Ok(answer) => {
            eprintln!("postern: {}", answer.trim_start_matches("err "));
            ExitCode::from(1)
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

pub fn delete(id: &str, path: Option<PathBuf>) -> ExitCode {
    if !postern::spool::store::valid_id(id) {
        eprintln!("postern: {id:?} is not a queue id");
        return ExitCode::from(1);
    }
    let (config, _) = match load(path.clone()) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let socket = postern::control::socket_path(&config.delivery.spool_directory);
    if socket.exists() && postern::control::request(&socket, "status").is_ok() {
        // The server is running: let it delete, so an attempt in flight is not
        // written back.
        return request(path, format!("delete {id}"));
    }
    match postern::spool::store::Spool::at(&config.delivery.spool_directory).remove(id) {
        Ok(true) => {
            println!("{id} deleted");
            ExitCode::SUCCESS
        }
        Ok(false) => {
            eprintln!("postern: {id} is not queued");
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("postern: {e}");
            ExitCode::from(2)
        }
    }
}
