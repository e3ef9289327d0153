//! DKIM signing per customer domain.
//!
//! `dkim.keys_directory` holds `DOMAIN/SELECTOR.pem` private keys ([`keys`]), made
//! by `postern dkim generate` ([`generate`]; the DNS record it prints is
//! [`record`]'s, and `postern dkim list` asks DNS for it through [`published`]). A
//! message whose header `From:` domain has keys is signed with each of them
//! ([`sign`]) as it leaves for the smarthost: the queue signs the spooled message
//! at each delivery attempt (`spool::attempt`), passthrough holds the message until
//! its end and signs it then (`session::held`). Signing comes after every check and
//! after every header Postern adds or removes, so the signature covers exactly what
//! the smarthost gets.
//!
//! The cryptography is mail-auth's over ring; key generation is ring's (Ed25519)
//! and the `rsa` crate's (RSA, which ring cannot generate).

pub mod generate;
pub mod keys;
pub mod published;
pub mod record;
pub mod sign;

pub use keys::{DomainKey, Keyring, Keys};
pub use sign::{OVERSIGNED, SIGNED_HEADERS, Signing};

#[cfg(test)]
mod tests;
