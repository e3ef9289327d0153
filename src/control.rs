//! The local control socket: how `postern queue flush`, `queue delete` and the
//! `user` commands (to reload) reach the running server. A Unix socket in the spool directory, mode 0600, so only the
//! server's own user (and root) can use it; one line in, one line out.

use crate::context::Context;
use crate::spool::store::valid_id;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio::net::UnixListener;
use tracing::{info, warn};

/// Where the socket lives.
pub fn socket_path(spool_directory: &Path) -> PathBuf {
    spool_directory.join("control.sock")
}

/// Answers one request line.
pub fn handle(ctx: &Context, line: &str) -> String {
    if line == "reload" {
        info!("reload requested over the control socket");
        return match crate::reload::reload(ctx) {
            Ok(r) => format!("ok reloaded ({} users, {} suspended)", r.users, r.suspended),
            Err(e) => format!("err reload failed, the old files stay in force for: {e}"),
        };
    }
    let Some(queue) = &ctx.queue else {
        return "err not in queue mode".into();
    };
    let mut words = line.split_whitespace();
    match (words.next(), words.next(), words.next()) {
        (Some("flush"), None, _) => {
            let n = queue.flush();
            info!(messages = n, "queue flush requested");
            format!("ok {n} messages scheduled now")
        }
        (Some("delete"), Some(id), None) if valid_id(id) => match queue.delete(id) {
            Ok(true) => {
                info!(queue_id = %id, "message deleted by the operator");
                format!("ok {id} deleted")
            }
            Ok(false) => format!("err {id} is not queued"),
            Err(e) => format!("err {e}"),
        },
        (Some("status"), None, _) => format!("ok {} queued", queue.len()),
        _ => "err unknown request".into(),
    }
}

/// Serves the socket until the task is dropped.
pub async fn serve(ctx: Arc<Context>, path: PathBuf) -> std::io::Result<()> {
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    loop {
        let (stream, _) = listener.accept().await?;
        let ctx = ctx.clone();
        tokio::spawn(async move {
            let (r, mut w) = stream.into_split();
            let mut line = String::new();
            let read = tokio::time::timeout(
                Duration::from_secs(5),
                tokio::io::BufReader::new(tokio::io::AsyncReadExt::take(r, 256))
                    .read_line(&mut line),
            )
            .await;
            if !matches!(read, Ok(Ok(_))) {
                warn!("control socket: no request");
                return;
            }
            let answer = handle(&ctx, line.trim());
            let _ = w.write_all(format!("{answer}\n").as_bytes()).await;
        });
    }
}

/// Sends one request to a running server (for the CLI).
pub fn request(path: &Path, line: &str) -> std::io::Result<String> {
    let mut s = std::os::unix::net::UnixStream::connect(path)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.write_all(format!("{line}\n").as_bytes())?;
    let mut answer = String::new();
    BufReader::new(s).read_line(&mut answer)?;
    Ok(answer.trim().to_string())
}
