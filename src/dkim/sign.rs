//! Signing one message: which keys (those of its header `From:` domains), which
//! header fields, and the `DKIM-Signature:` fields to put in front of it.
//!
//! Header canonicalization is relaxed (survives refolding and case changes by the
//! smarthost). Body canonicalization is simple: mail-auth 0.13's relaxed body
//! canonicalization keeps a trailing line of only spaces or tabs that RFC 6376
//! §3.4.4 drops, so a relaxed body hash would not verify elsewhere for such a body;
//! simple has no such gap, and Postern passes the body on unchanged anyway.
//!
//! The fields signed are those the smarthosts in the README leave alone, and only
//! those present (a field signed while absent breaks the signature if a smarthost
//! adds it later). `Date` and `Message-ID` are left out: Amazon SES replaces
//! `Message-ID` and may rewrite `Date`. The author fields are signed once more
//! than they occur ([`OVERSIGNED`]).

use super::keys::{DomainKey, Keys};
use crate::config::normalize_domain;
use crate::proto::header::{fields, header_end};
use crate::proto::mailbox_list::parse_address_list;
use crate::upstream::Content;
use mail_auth::common::crypto::{Algorithm, Sha256, SigningKey};
use mail_auth::common::headers::{HeaderWriter, Writable};
use mail_auth::dkim::{Canonicalization, DkimSigner, Done};
use std::path::Path;
use std::sync::Arc;
use tokio::io::AsyncReadExt;
use tracing::debug;

/// The header fields signed when present, in this order.
pub const SIGNED_HEADERS: &[&str] = &[
    "From",
    "Reply-To",
    "Subject",
    "To",
    "Cc",
    "In-Reply-To",
    "References",
    "MIME-Version",
    "Content-Type",
    "Content-Transfer-Encoding",
];

/// Fields signed once more than they occur, when present: a second `Subject:` or
/// `To:` added on the way (to replay a signed message with other words on top)
/// breaks the signature instead of riding on it. Absent fields are not signed at
/// all, so a smarthost that adds one does not break it.
pub const OVERSIGNED: &[&str] = &["From", "Reply-To", "Subject", "To", "Cc"];

/// How far into a message its header section is looked for (Postern refuses
/// longer header sections at DATA anyway).
const MAX_HEAD: usize = crate::policy::header_from::MAX_HEADER_SECTION + 64 * 1024;

/// Why a message could not be signed.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error("cannot read the message: {0}")]
    Read(#[from] std::io::Error),
    #[error("DKIM signing failed for {domain} (selector {selector}): {why}")]
    Crypto {
        domain: String,
        selector: String,
        why: String,
    },
}

/// What a message is signed with: its keys and the header fields to sign.
#[derive(Debug, Clone)]
pub struct Signing {
    keys: Vec<Arc<DomainKey>>,
    headers: Vec<&'static str>,
}

impl Signing {
    /// The signing plan for a message whose start is `head` (which must hold the
    /// whole header section); `None` when no `From:` domain has a key.
    pub fn for_message(keys: &Keys, head: &[u8]) -> Option<Signing> {
        let end = header_end(head).map_or(head.len(), |e| e - 2);
        let parsed = fields(&head[..end]).ok()?;
        let mut chosen: Vec<Arc<DomainKey>> = Vec::new();
        let from = parsed.iter().filter(|f| f.is("From"));
        for mailbox in from.flat_map(|f| parse_address_list(f.value).unwrap_or_default()) {
            for key in keys.for_domain(&normalize_domain(&mailbox.domain)) {
                if !chosen.iter().any(|k| Arc::ptr_eq(k, key)) {
                    chosen.push(key.clone());
                }
            }
        }
        if chosen.is_empty() {
            return None;
        }
        let present = |h: &&str| parsed.iter().any(|f| f.is(h));
        let mut headers: Vec<&'static str> =
            SIGNED_HEADERS.iter().copied().filter(present).collect();
        headers.extend(OVERSIGNED.iter().copied().filter(present));
        Some(Signing {
            keys: chosen,
            headers,
        })
    }

    /// The keys, as `domain/selector` for logs.
    pub fn describe(&self) -> String {
        let names: Vec<String> = (self.keys.iter())
            .map(|k| format!("{}/{}", k.domain, k.selector))
            .collect();
        names.join(",")
    }

    /// The `DKIM-Signature:` fields (one per key, each ending in CRLF) for the
    /// whole message `message`, as it goes to the smarthost (not dot-stuffed).
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>, SignError> {
        let signers = self.signers();
        let mut streams: Vec<_> = signers.iter().map(|s| s.sign_streaming()).collect();
        for s in &mut streams {
            s.write(message);
        }
        self.finish(streams)
    }

    /// Like [`Signing::sign`] for a message held in a file, read in chunks.
    pub async fn sign_file(&self, path: &Path) -> Result<Vec<u8>, SignError> {
        let mut file = tokio::fs::File::open(path).await?;
        let signers = self.signers();
        let mut streams: Vec<_> = signers.iter().map(|s| s.sign_streaming()).collect();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = file.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            for s in &mut streams {
                s.write(&buf[..n]);
            }
        }
        self.finish(streams)
    }

    fn signers(&self) -> Vec<DkimSigner<Shared, Done>> {
        (self.keys.iter())
            .map(|k| {
                DkimSigner::from_key(Shared(k.clone()))
                    .domain(k.domain.clone())
                    .selector(k.selector.clone())
                    .headers(self.headers.iter().copied())
                    .header_canonicalization(Canonicalization::Relaxed)
                    .body_canonicalization(Canonicalization::Simple)
            })
            .collect()
    }

    fn finish(
        &self,
        streams: Vec<mail_auth::dkim::DkimSigningStream<'_, Shared>>,
    ) -> Result<Vec<u8>, SignError> {
        let mut out = Vec::new();
        for (stream, key) in streams.into_iter().zip(&self.keys) {
            let signature = stream.finish().map_err(|e| SignError::Crypto {
                domain: key.domain.clone(),
                selector: key.selector.clone(),
                why: e.to_string(),
            })?;
            signature.write_header(&mut out);
        }
        Ok(out)
    }
}

/// The signing plan for the message in `path`, read up to its header section's end.
pub async fn plan_for_file(keys: &Keys, path: &Path) -> Result<Option<Signing>, SignError> {
    if keys.is_empty() {
        return Ok(None);
    }
    let mut file = tokio::fs::File::open(path).await?;
    let mut head = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    while header_end(&head).is_none() && head.len() < MAX_HEAD {
        let n = file.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    Ok(Signing::for_message(keys, &head))
}

/// A spooled message with its signatures in front, when its `From:` domain has
/// keys; as it was otherwise. A large message is read twice (once to hash, once
/// to send) rather than held in memory.
pub async fn sign_content(keys: &Keys, content: Content) -> Result<Content, SignError> {
    match content {
        Content::Bytes(message) => {
            let Some(signing) = Signing::for_message(keys, &message) else {
                return Ok(Content::Bytes(message));
            };
            let mut signed = signing.sign(&message)?;
            debug!(keys = %signing.describe(), "DKIM-signed");
            signed.extend_from_slice(&message);
            Ok(Content::Bytes(signed))
        }
        Content::File(path) => {
            let Some(signing) = plan_for_file(keys, &path).await? else {
                return Ok(Content::File(path));
            };
            let header = signing.sign_file(&path).await?;
            debug!(keys = %signing.describe(), "DKIM-signed");
            Ok(Content::HeaderAndFile(header, path))
        }
        signed @ Content::HeaderAndFile(..) => Ok(signed),
    }
}

/// A shared key as mail-auth's signer takes it (it wants to own its key).
struct Shared(Arc<DomainKey>);

impl SigningKey for Shared {
    type Hasher = Sha256;

    fn sign(&self, input: impl Writable) -> mail_auth::Result<Vec<u8>> {
        self.0.key.sign(input)
    }

    fn algorithm(&self) -> Algorithm {
        self.0.mail_auth_algorithm()
    }
}
