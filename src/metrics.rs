//! Metrics: Prometheus text at `/metrics` and a liveness check at `/healthz`, on an
//! optional HTTP listener (`metrics.address`).
//!
//! Counters are recorded with the `metrics` crate everywhere in the code (they cost
//! nothing when no listener is configured, since no recorder is installed), and
//! rendered by metrics-exporter-prometheus. The HTTP side is a few lines of tokio:
//! one GET per connection, read with a size cap and a timeout, answered within a
//! timeout, at most [`MAX_CONNECTIONS`] connections at once; there is nothing else
//! to serve, so no HTTP framework is pulled in.
//!
//! | metric | labels |
//! | --- | --- |
//! | `postern_connections_total` | `tls` (listener) |
//! | `postern_connections_refused_total` | `limit` (`max_connections`, `max_connections_per_ip`, `untrusted_proxy`, `bad_proxy_header`) |
//! | `postern_tls_handshakes_total` | `result` (`ok`, `failed`) |
//! | `postern_auth_total` | `result` (`success`, `failure`, `blocked`, `disabled`, `suspended`, `busy`; `network` for a client identified by its network) |
//! | `postern_auth_verifications_total` | argon2 verifications run (cached results are not) |
//! | `postern_messages_total` | `result` (`accepted`, `rejected`), `reason` |
//! | `postern_recipients_total` | `result` |
//! | `postern_rate_limit_hits_total` | `limit`, `scope` (`user`, `domain`) |
//! | `postern_upstream_replies_total` | `code` (class: `2xx`, `4xx`, `5xx`, `error`) |
//! | `postern_upstream_duration_seconds` | histogram of the smarthost's time per message |
//! | `postern_spool_removal_seconds` | summary of the time from the smarthost's 250 to the message's durable removal from the spool (unlink and directory fsync: the window in which a power loss duplicates it) |
//! | `postern_spool_unlink_seconds` | summary of the time from the smarthost's 250 to the unlink (the window in which a kill -9 duplicates it) |
//! | `postern_deliveries_total` | `result` (`delivered`, `deferred`, `failed`) |
//! | `postern_paced_total` | `result`: `delayed` (a message's turn under a smarthost's `max_messages_per_minute` was not yet due: it waited, or went back to the queue; counted each time), `refused` (no turn soon: passthrough answered 451 4.7.0, or a failover smarthost deferred a queued message) |
//! | `postern_queue_messages`, `postern_queue_oldest_seconds` | gauges |
//! | `postern_user_messages_total` | `user` (only with `metrics.per_user: true`) |

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tracing::{info, warn};

/// What renders the recorded metrics.
pub type Handle = PrometheusHandle;

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

/// Most metrics connections served at once; more are closed at once, unanswered.
/// A scraper needs one; the cap keeps a flood of idle connections from taking every
/// file descriptor the SMTP listeners need.
pub const MAX_CONNECTIONS: usize = 64;

/// How long a client has to send its request head, and to take the response.
const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// Longest request head read.
const MAX_HEAD: usize = 4096;

/// Serves `/metrics` and `/healthz` on an already bound listener until dropped, at
/// most [`MAX_CONNECTIONS`] at a time.
pub async fn serve(listener: TcpListener, handle: PrometheusHandle) {
    if let Ok(a) = listener.local_addr() {
        info!(address = %a, max_connections = MAX_CONNECTIONS, "serving metrics at /metrics and /healthz");
    }
    let upkeep = handle.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tick.tick().await;
            upkeep.run_upkeep();
        }
    });
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok((stream, peer)) = listener.accept().await else {
            // Out of file descriptors and the like: wait rather than spin.
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            // Closed unanswered: a refusal costs no task and no buffer (an answer
            // would be lost to a reset anyway, the request being unread).
            warn!(peer = %peer, limit = MAX_CONNECTIONS, "metrics connection closed: too many open");
            drop(stream);
            continue;
        };
        let handle = handle.clone();
        tokio::spawn(async move {
            answer(stream, peer, &handle).await;
            drop(slot);
        });
    }
}

/// Reads one request head and answers it; every read and write is bounded by
/// [`IO_TIMEOUT`].
async fn answer(mut stream: TcpStream, peer: SocketAddr, handle: &PrometheusHandle) {
    let mut buf = vec![0u8; MAX_HEAD];
    let mut n = 0;
    let read = tokio::time::timeout(IO_TIMEOUT, async {
        while n < buf.len() && !buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
            match stream.read(&mut buf[n..]).await {
                Ok(0) | Err(_) => break,
                Ok(k) => n += k,
            }
        }
    })
    .await;
    if read.is_err() || n == 0 {
        return;
    }
    let (status, body) = respond(&buf[..n], handle);
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    match tokio::time::timeout(IO_TIMEOUT, stream.write_all(response.as_bytes())).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => warn!(peer = %peer, error = %e, "metrics response failed"),
        Err(_) => warn!(peer = %peer, "metrics response timed out"),
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
