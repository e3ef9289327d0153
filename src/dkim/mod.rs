//! DKIM signing per customer domain.
//!
//! `dkim.keys_directory` holds `DOMAIN/SELECTOR.pem` private keys ([`keys`]), made
//! by `postern dkim generate` ([`generate`], which also prints the DNS record of
//! [`record`]). A message whose header `From:` domain has keys is signed with each
//! of them ([`sign`]) as it leaves for the smarthost: the queue signs the spooled
//! message at each delivery attempt, passthrough holds the message until its end
//! and signs it then. Signing comes after every check and after every header
//! Postern adds or removes, so the signature covers exactly what the smarthost gets.
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
