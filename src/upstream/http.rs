//! What the HTTPS transports (the token endpoint, Microsoft Graph) share.

use crate::config::Timeouts;
use std::sync::Arc;

/// The most of an answer's body that is read: token answers and Graph's errors
/// are a few kilobytes; anything beyond is not kept in memory.
pub const MAX_BODY: usize = 64 * 1024;

/// Reads at most [`MAX_BODY`] bytes of `answer`'s body; the rest is dropped with
/// the connection.
pub async fn body(mut answer: reqwest::Response) -> Result<Vec<u8>, reqwest::Error> {
    let mut body = Vec::new();
    while let Some(chunk) = answer.chunk().await? {
        let room = MAX_BODY - body.len();
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if body.len() == MAX_BODY {
            break;
        }
    }
    Ok(body)
}

/// An HTTPS client trusting what the entry's SMTP connections trust (the system's
/// roots and its `ca_file`), with the upstream timeouts, no redirects.
pub fn client(tls: &Arc<rustls::ClientConfig>, t: &Timeouts) -> Result<reqwest::Client, String> {
    let mut tls = rustls::ClientConfig::clone(tls);
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .https_only(true)
        .connect_timeout(t.upstream_connect)
        .timeout(t.upstream_data_done)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("Postern/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| e.to_string())
}
