//! Making a key: RSA-2048 (the `rsa` crate; ring cannot generate RSA keys) or
//! Ed25519 (ring), written as a PKCS#8 PEM file, 0600, that nobody else can read
//! even for a moment.

use crate::private_fs;
use rsa::pkcs1::DecodeRsaPublicKey;
use rsa::pkcs8::der::pem::{LineEnding, encode_string};
use rsa::pkcs8::{EncodePrivateKey, EncodePublicKey};
use std::io::Write;
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

/// RSA keys are this many bits: what every verifier takes, and short enough for
/// a DNS record that most panels accept.
pub const RSA_BITS: usize = 2048;

/// The key types `postern dkim generate --algorithm` offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyType {
    Rsa,
    Ed25519,
}

/// A freshly made key.
pub struct NewKey {
    /// The private key, PKCS#8 PEM.
    pub pem: Zeroizing<String>,
    /// What the DNS record's `p=` carries, before base64.
    pub public_key: Vec<u8>,
    pub key_type: KeyType,
}

/// Makes a key of `key_type`.
pub fn new_key(key_type: KeyType) -> Result<NewKey, String> {
    let (der, public_key) = match key_type {
        KeyType::Rsa => {
            let key = rsa::PrivateKey::new(&mut getrandom::SysRng, RSA_BITS)
                .map_err(|e| format!("cannot make an RSA key: {e}"))?;
            let der = key
                .to_pkcs8_der()
                .map_err(|e| format!("cannot encode the RSA key: {e}"))?;
            let public = key
                .to_public_key()
                .to_public_key_der()
                .map_err(|e| format!("cannot encode the RSA public key: {e}"))?;
            (Zeroizing::new(der.as_bytes().to_vec()), public.into_vec())
        }
        KeyType::Ed25519 => {
            use ring::signature::{Ed25519KeyPair, KeyPair};
            let rng = ring::rand::SystemRandom::new();
            let doc = Ed25519KeyPair::generate_pkcs8(&rng)
                .map_err(|_| "cannot make an Ed25519 key".to_string())?;
            let pair = Ed25519KeyPair::from_pkcs8(doc.as_ref())
                .map_err(|_| "cannot read the new Ed25519 key".to_string())?;
            let public = pair.public_key().as_ref().to_vec();
            (Zeroizing::new(doc.as_ref().to_vec()), public)
        }
    };
    let pem = encode_string("PRIVATE KEY", LineEnding::LF, &der)
        .map_err(|e| format!("cannot encode the key as PEM: {e}"))?;
    Ok(NewKey {
        pem: Zeroizing::new(pem),
        public_key,
        key_type,
    })
}

/// The SubjectPublicKeyInfo of an RSA public key given as PKCS#1 (how ring hands
/// it out): the form `p=` carries, as `openssl rsa -pubout` writes it.
pub fn rsa_spki(pkcs1: &[u8]) -> Result<Vec<u8>, String> {
    let key = rsa::PublicKey::from_pkcs1_der(pkcs1).map_err(|e| e.to_string())?;
    let spki = key.to_public_key_der().map_err(|e| e.to_string())?;
    Ok(spki.into_vec())
}

/// Writes `pem` as `dir/DOMAIN/SELECTOR.pem`, creating the folders (0700) as
/// needed; refuses to replace a key that is there. Returns the file's path.
pub fn write_key(dir: &Path, domain: &str, selector: &str, pem: &str) -> Result<PathBuf, String> {
    let folder = dir.join(domain);
    private_fs::create_dir_all(&folder)
        .map_err(|e| format!("cannot create {}: {e}", folder.display()))?;
    let path = folder.join(format!("{selector}.pem"));
    let mut file = private_fs::create_new(&path).map_err(|e| match e.kind() {
        std::io::ErrorKind::AlreadyExists => format!(
            "{} exists: pick another selector (--selector), or move the old key away first",
            path.display()
        ),
        _ => format!("cannot create {}: {e}", path.display()),
    })?;
    if let Err(e) = file
        .write_all(pem.as_bytes())
        .and_then(|()| file.sync_all())
    {
        let _ = std::fs::remove_file(&path);
        return Err(format!("cannot write {}: {e}", path.display()));
    }
    Ok(path)
}
