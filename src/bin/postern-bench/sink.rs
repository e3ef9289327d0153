//! `postern-bench sink`: the library's discarding stand-in smarthost on a port, with
//! an optional file that counts accepted messages for end-to-end measurements, and
//! an optional token endpoint for AUTH XOAUTH2 (see [`crate::token`]).

use crate::args::{SinkArgs, Tls};
use crate::token::{self, Tokens};
use postern::config::{TlsFiles, TlsMode};
use postern::sink::{Sink, SinkConfig};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// A secret's file, its trailing newline dropped.
fn read_secret(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path)
        .map(|s| s.trim_end().to_string())
        .map_err(|e| format!("{}: {e}", path.display()))
}

pub async fn sink(args: SinkArgs) -> Result<(), String> {
    let server_tls = match (&args.cert, &args.key) {
        (Some(certificate), Some(private_key)) => Some(
            postern::tls::load_server_config(&TlsFiles {
                certificate: certificate.clone(),
                private_key: private_key.clone(),
            })
            .map_err(|e| e.to_string())?,
        ),
        _ => None,
    };
    let credentials = match (args.user, &args.password_file) {
        (Some(u), Some(p)) => Some((u, read_secret(p)?)),
        _ => None,
    };
    let xoauth2 = match (args.token_endpoint, &server_tls) {
        (Some(listen), Some(tls)) => {
            let secret = args.token_secret_file.as_deref().expect("required by clap");
            let tokens = Tokens::new(
                args.token_user.clone().expect("required by clap"),
                read_secret(secret)?,
                Duration::from_secs(args.token_lifetime),
                args.token_count_file.clone(),
            );
            token::serve(listen, tls.clone(), tokens.clone()).await?;
            Some(tokens.check())
        }
        (Some(_), None) => return Err("--token-endpoint needs --cert and --key".into()),
        _ => None,
    };
    let config = SinkConfig {
        hostname: "bench-sink".into(),
        tls: match args.tls {
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
        xoauth2,
    };
    let listen = args.listen;
    let sink = Sink::start(listen, config)
        .await
        .map_err(|e| format!("{listen}: {e}"))?;
    println!("sink listening on {}", sink.addr);
    let sink = Arc::new(sink);
    if let Some(path) = args.count_file {
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
