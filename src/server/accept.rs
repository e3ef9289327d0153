//! The accept loop of one listener: the PROXY header where the listener expects one,
//! the connection caps, then a session per admitted connection; a refusal costs the
//! loop one write and spawns nothing.

use super::limits::{ConnectionLimits, Refusal};
use crate::config::{Listener, TlsMode};
use crate::context::Context;
use crate::session::{Peer, serve_connection};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tracing::{error, warn};

pub(super) async fn accept_loop(
    ctx: Arc<Context>,
    socket: TcpListener,
    listener: Listener,
    limits: Arc<ConnectionLimits>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            biased;
            Ok(_) = shutdown.wait_for(|s| *s) => return,
            a = socket.accept() => a,
        };
        let (tcp, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors and the like: wait rather than spin.
                error!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        if listener.proxy_protocol {
            if !ctx
                .config
                .trusted_proxies
                .iter()
                .any(|c| c.contains(peer.ip()))
            {
                warn!(peer = %peer, "connection closed: PROXY listener and the peer is not in trusted_proxies");
                metrics::counter!("postern_connections_refused_total", "limit" => "untrusted_proxy")
                    .increment(1);
                continue;
            }
            let (ctx, listener, limits) = (ctx.clone(), listener.clone(), limits.clone());
            tokio::spawn(async move {
                let mut tcp = tcp;
                match crate::proxy::read_header(&mut tcp, PROXY_HEADER_TIMEOUT).await {
                    Ok(Some(client)) => {
                        admit_and_serve(ctx, listener, &limits, tcp, Peer::Client(client))
                    }
                    // LOCAL (a health check) or no address: the balancer's own.
                    Ok(None) => admit_and_serve(ctx, listener, &limits, tcp, Peer::Proxy(peer)),
                    Err(e) => {
                        warn!(peer = %peer, error = %crate::proto::printable::Printable(&e), "connection closed: no valid PROXY header");
                        metrics::counter!("postern_connections_refused_total", "limit" => "bad_proxy_header")
                            .increment(1);
                    }
                }
            });
        } else {
            admit_and_serve(
                ctx.clone(),
                listener.clone(),
                &limits,
                tcp,
                Peer::Client(peer),
            );
        }
    }
}

/// How long a load balancer has to send its PROXY header.
const PROXY_HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// Applies the connection caps to `peer` (the real client behind a proxy, or the
/// proxy itself when it named none) and runs a session, or refuses.
fn admit_and_serve(
    ctx: Arc<Context>,
    listener: Listener,
    limits: &Arc<ConnectionLimits>,
    tcp: TcpStream,
    peer: Peer,
) {
    // A dual-stack `[::]` listener sees IPv4 clients as `::ffff:a.b.c.d`: one client,
    // one address in limits, logs and Received.
    let whose = peer.canonical();
    let peer = whose.address();
    match limits.admit(crate::policy::client_key(
        peer.ip(),
        ctx.config.limits.ipv6_prefix,
    )) {
        Ok(admission) => {
            metrics::counter!("postern_connections_total", "tls" => listener.tls.to_string())
                .increment(1);
            tokio::spawn(async move {
                serve_connection(ctx, listener, tcp, whose).await;
                drop(admission);
            });
        }
        Err(why) => refuse_connection(tcp, peer, &listener, why),
    }
}

/// Answers `421` from the accept loop itself, without spawning a session: a full
/// server must not spend more on a refused client than one write.
fn refuse_connection(tcp: TcpStream, peer: SocketAddr, listener: &Listener, why: Refusal) {
    let what = match why {
        Refusal::Global => "max_connections",
        Refusal::PerIp => "max_connections_per_ip",
    };
    warn!(peer = %peer, limit = what, "connection refused: limit reached");
    metrics::counter!("postern_connections_refused_total", "limit" => what).increment(1);
    // On an implicit-TLS port the client expects a handshake, not text: just close.
    if listener.tls != TlsMode::Implicit {
        let _ = tcp.try_write(b"421 4.7.0 Too many connections, try again later\r\n");
    }
}
