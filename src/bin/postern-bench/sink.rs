//! `postern-bench sink`: the library's discarding stand-in smarthost on a port, with
//! an optional file that counts accepted messages for end-to-end measurements.

use crate::args::Tls;
use postern::config::{TlsFiles, TlsMode};
use postern::sink::{Sink, SinkConfig};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub async fn sink(
    listen: SocketAddr,
    tls: Tls,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    user: Option<String>,
    password_file: Option<PathBuf>,
    count_file: Option<PathBuf>,
) -> Result<(), String> {
    let server_tls = match (cert, key) {
        (Some(certificate), Some(private_key)) => Some(
            postern::tls::load_server_config(&TlsFiles {
                certificate,
                private_key,
            })
            .map_err(|e| e.to_string())?,
        ),
        _ => None,
    };
    let credentials = match (user, password_file) {
        (Some(u), Some(p)) => Some((
            u,
            std::fs::read_to_string(&p)
                .map_err(|e| format!("{}: {e}", p.display()))?
                .trim_end()
                .to_string(),
        )),
        _ => None,
    };
    let config = SinkConfig {
        hostname: "bench-sink".into(),
        tls: match tls {
            Tls::Starttls => TlsMode::Starttls,
            Tls::Implicit => TlsMode::Implicit,
            Tls::None => TlsMode::None,
        },
        server_tls,
        credentials,
        save_dir: None,
        verbose: false,
        discard: true,
        smtputf8: true,
        xoauth2: None,
    };
    let sink = Sink::start(listen, config)
        .await
        .map_err(|e| format!("{listen}: {e}"))?;
    println!("sink listening on {}", sink.addr);
    let sink = Arc::new(sink);
    if let Some(path) = count_file {
        let sink = sink.clone();
        tokio::spawn(async move {
            let mut last = usize::MAX;
            loop {
                let n = sink.accepted();
                if n != last {
                    let tmp = path.with_extension("tmp");
                    if std::fs::write(&tmp, format!("{n}\n")).is_ok() {
                        let _ = std::fs::rename(&tmp, &path);
                    }
                    last = n;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
    }
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| e.to_string())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    println!("sink accepted {} messages", sink.accepted());
    Ok(())
}
