//! Metrics: Prometheus text at `/metrics` and a liveness check at `/healthz`, on an
//! optional HTTP listener (`metrics.address`).
//!
//! Counters are recorded with the `metrics` crate everywhere in the code (they cost
//! nothing when no listener is configured, since no recorder is installed), and
//! rendered by metrics-exporter-prometheus. The HTTP side is a few lines of tokio:
//! one GET per connection, read with a size cap and a timeout; there is nothing else
//! to serve, so no HTTP framework is pulled in.
//!
//! | metric | labels |
//! | --- | --- |
//! | `postern_connections_total` | `tls` (listener) |
//! | `postern_connections_refused_total` | `limit` (`max_connections`, `max_connections_per_ip`, `untrusted_proxy`, `bad_proxy_header`) |
//! | `postern_tls_handshakes_total` | `result` (`ok`, `failed`) |
//! | `postern_auth_total` | `result` (`success`, `failure`, `blocked`, `disabled`, `suspended`, `busy`) |
//! | `postern_messages_total` | `result` (`accepted`, `rejected`), `reason` |
//! | `postern_recipients_total` | `result` |
//! | `postern_rate_limit_hits_total` | `limit` |
//! | `postern_upstream_replies_total` | `code` (class: `2xx`, `4xx`, `5xx`, `error`) |
//! | `postern_upstream_duration_seconds` | histogram of the smarthost's time per message |
//! | `postern_spool_removal_seconds` | summary of the time from the smarthost's 250 to the message's durable removal from the spool (unlink and directory fsync: the window in which a power loss duplicates it) |
//! | `postern_spool_unlink_seconds` | summary of the time from the smarthost's 250 to the unlink (the window in which a kill -9 duplicates it) |
//! | `postern_deliveries_total` | `result` (`delivered`, `deferred`, `failed`) |
//! | `postern_queue_messages`, `postern_queue_oldest_seconds` | gauges |
//! | `postern_user_messages_total` | `user` (only with `metrics.per_user: true`) |

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tracing::{info, warn};

/// Installs the Prometheus recorder for this process.
pub fn install() -> Result<PrometheusHandle, String> {
    PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full("postern_upstream_duration_seconds".into()),
            &[
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            ],
        )
        .map_err(|e| e.to_string())?
        .install_recorder()
        .map_err(|e| e.to_string())
}

/// The reply class of an SMTP code, as a label.
pub fn code_class(code: u16) -> &'static str {
    match code / 100 {
        2 => "2xx",
        3 => "3xx",
        4 => "4xx",
        _ => "5xx",
    }
}

/// Serves `/metrics` and `/healthz` on an already bound listener until dropped.
pub async fn serve(listener: TcpListener, handle: PrometheusHandle) {
    if let Ok(a) = listener.local_addr() {
        info!(address = %a, "serving metrics at /metrics and /healthz");
    }
    let upkeep = handle.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tick.tick().await;
            upkeep.run_upkeep();
        }
    });
    loop {
        let Ok((mut stream, peer)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let handle = handle.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            let mut n = 0;
            let read = tokio::time::timeout(Duration::from_secs(5), async {
                while n < buf.len() && !buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf[n..]).await {
                        Ok(0) | Err(_) => break,
                        Ok(k) => n += k,
                    }
                }
            })
            .await;
            if read.is_err() {
                return;
            }
            let (status, body) = respond(&buf[..n], &handle);
            let response = format!(
                "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            if let Err(e) = stream.write_all(response.as_bytes()).await {
                warn!(peer = %peer, error = %e, "metrics response failed");
            }
        });
    }
}

/// The status line and body for one request head.
fn respond(head: &[u8], handle: &PrometheusHandle) -> (&'static str, String) {
    let line = head.split(|&b| b == b'\r').next().unwrap_or(&[]);
    let mut parts = line.split(|&b| b == b' ');
    match (parts.next(), parts.next()) {
        (Some(b"GET"), Some(b"/metrics")) => ("200 OK", handle.render()),
        (Some(b"GET"), Some(b"/healthz")) => ("200 OK", "ok\n".into()),
        (Some(b"GET"), _) => ("404 Not Found", "not found\n".into()),
        _ => ("405 Method Not Allowed", "only GET\n".into()),
    }
}

/// Binds the metrics listener (at start-up, so a bad address fails early).
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}
