//! The signing keys: `keys_directory/DOMAIN/SELECTOR.pem`, read at start and on
//! reload.
//!
//! Every `.pem` file under a domain's folder signs that domain's mail (an RSA key
//! and an Ed25519 key give two signatures; two selectors during a rotation give
//! two as well). Anything else in the folders is ignored, so an operator can park
//! a retired key as `SELECTOR.pem.retired`. A key that cannot be read, or that
//! every user on the machine may read, is an error: at start the server does not
//! start, on reload the keys in force are kept.

use crate::config::perms::{Kind, audit};
use crate::lock::RwLockExt;
use mail_auth::common::crypto::{DkimKey, Ed25519Key, RsaKey, SigningKey};
use rustls_pki_types::{PrivateKeyDer, pem::PemObject};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

/// One private key: the domain it signs for and the selector its DNS record has.
pub struct DomainKey {
    pub domain: String,
    pub selector: String,
    pub(super) key: DkimKey,
}

impl std::fmt::Debug for DomainKey {
    /// The key itself stays out of every debug print.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DomainKey({}, {})", self.domain, self.selector)
    }
}

impl DomainKey {
    /// Reads a PEM private key: RSA (PKCS#1 or PKCS#8) or Ed25519 (PKCS#8, with or
    /// without its public half, as `openssl genpkey` writes it).
    pub fn from_pem(domain: &str, selector: &str, pem: &[u8]) -> Result<DomainKey, String> {
        let der = PrivateKeyDer::from_pem_slice(pem)
            .map_err(|_| "no PEM private key in it".to_string())?;
        let key = match &der {
            PrivateKeyDer::Pkcs1(_) => DkimKey::Rsa(rsa_key(der.clone_key())?),
            PrivateKeyDer::Pkcs8(p8) => match rsa_key(der.clone_key()) {
                Ok(k) => DkimKey::Rsa(k),
                Err(_) => DkimKey::Ed25519(
                    Ed25519Key::from_pkcs8_maybe_unchecked_der(p8.secret_pkcs8_der())
                        .map_err(|_| "neither an RSA (2048 to 4096 bits) nor an Ed25519 key")?,
                ),
            },
            _ => return Err("an RSA or Ed25519 key is needed, not an EC key".into()),
        };
        Ok(DomainKey {
            domain: domain.to_string(),
            selector: selector.to_string(),
            key,
        })
    }

    /// `rsa` or `ed25519`, as the DNS record's `k=` says.
    pub fn algorithm(&self) -> &'static str {
        match self.key {
            DkimKey::Rsa(_) => "rsa",
            DkimKey::Ed25519(_) => "ed25519",
        }
    }

    /// The public key as the DNS record's `p=` carries it (before base64): the
    /// SubjectPublicKeyInfo of an RSA key, the 32 raw bytes of an Ed25519 key.
    pub fn public_key(&self) -> Result<Vec<u8>, String> {
        match &self.key {
            DkimKey::Rsa(k) => super::generate::rsa_spki(&k.public_key()),
            DkimKey::Ed25519(k) => Ok(k.public_key()),
        }
    }

    /// The signing algorithm mail-auth uses with this key.
    pub(super) fn mail_auth_algorithm(&self) -> mail_auth::common::crypto::Algorithm {
        self.key.algorithm()
    }
}

fn rsa_key(der: PrivateKeyDer<'_>) -> Result<RsaKey<mail_auth::common::crypto::Sha256>, String> {
    RsaKey::from_key_der(der).map_err(|e| e.to_string())
}

/// Every key read from a keys directory, by domain (lowercase, ASCII).
#[derive(Debug, Default)]
pub struct Keys {
    by_domain: BTreeMap<String, Vec<Arc<DomainKey>>>,
}

impl Keys {
    /// Reads `dir`. A missing folder holds no keys; any other failure names the
    /// file and why.
    pub fn load(dir: &Path) -> Result<Keys, String> {
        let mut keys = Keys::default();
        let domains = match read_dir_sorted(dir) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(keys),
            Err(e) => return Err(format!("{}: {e}", dir.display())),
        };
        for path in domains.into_iter().filter(|p| p.is_dir()) {
            let Some(domain) = dir_domain(&path)? else {
                continue;
            };
            let files = read_dir_sorted(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            for file in files {
                let Some(selector) = pem_selector(&file)? else {
                    continue;
                };
                let key = read_key(&file, &domain, &selector)?;
                keys.by_domain
                    .entry(domain.clone())
                    .or_default()
                    .push(Arc::new(key));
            }
        }
        Ok(keys)
    }

    /// The keys that sign for `domain` (any case, a trailing dot allowed).
    pub fn for_domain(&self, domain: &str) -> &[Arc<DomainKey>] {
        let domain = crate::config::normalize_domain(domain);
        self.by_domain.get(&domain).map_or(&[], Vec::as_slice)
    }

    /// Every key, by domain then selector.
    pub fn all(&self) -> impl Iterator<Item = &Arc<DomainKey>> {
        self.by_domain.values().flatten()
    }

    /// How many keys there are.
    pub fn len(&self) -> usize {
        self.by_domain.values().map(Vec::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.by_domain.is_empty()
    }
}

fn read_dir_sorted(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut out = std::fs::read_dir(dir)?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<Vec<_>>>()?;
    out.sort();
    Ok(out)
}

/// The domain a folder is named after; `None` for a hidden folder.
fn dir_domain(path: &Path) -> Result<Option<String>, String> {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    if name.starts_with('.') {
        return Ok(None);
    }
    if !is_domain(name) {
        return Err(format!(
            "{}: the folder's name is not a domain name in ASCII (an internationalised domain goes as its xn-- form)",
            path.display()
        ));
    }
    Ok(Some(name.to_ascii_lowercase()))
}

/// The selector of a `SELECTOR.pem` file; `None` for any other file.
fn pem_selector(path: &Path) -> Result<Option<String>, String> {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let Some(selector) = name.strip_suffix(".pem") else {
        return Ok(None);
    };
    if !path.is_file() {
        return Ok(None);
    }
    if !is_selector(selector) {
        return Err(format!(
            "{}: {selector:?} is not a selector (letters, digits, hyphens, dots)",
            path.display()
        ));
    }
    Ok(Some(selector.to_string()))
}

fn read_key(file: &Path, domain: &str, selector: &str) -> Result<DomainKey, String> {
    if let Some(f) = audit(file, Kind::Secret, None)
        .into_iter()
        .find(|f| f.fatal)
    {
        return Err(f.message);
    }
    let pem = zeroize::Zeroizing::new(
        std::fs::read(file).map_err(|e| format!("{}: {e}", file.display()))?,
    );
    DomainKey::from_pem(domain, selector, &pem).map_err(|e| format!("{}: {e}", file.display()))
}

/// A domain name in ASCII: dot-separated labels of letters, digits and hyphens.
pub fn is_domain(name: &str) -> bool {
    let label = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    // The last label is never all digits (RFC 3696 section 2): `127.0.0.1` is an
    // address, not a domain.
    let tld_has_a_letter = name
        .rsplit('.')
        .next()
        .is_some_and(|tld| tld.bytes().any(|b| !b.is_ascii_digit()));
    name.len() <= 253 && name.contains('.') && name.split('.').all(label) && tld_has_a_letter
}

/// A selector: one or more labels, as in `s1` or `2026.eu`.
pub fn is_selector(name: &str) -> bool {
    let label = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    name.len() <= 63 && name.split('.').all(label)
}

/// The keys in force, replaced whole on reload.
pub struct Keyring {
    dir: Option<PathBuf>,
    keys: RwLock<Arc<Keys>>,
}

impl Keyring {
    /// Reads the keys under `dir`; `None`: signing is off.
    pub fn open(dir: Option<&Path>) -> Result<Keyring, String> {
        let keys = match dir {
            Some(d) => Keys::load(d)?,
            None => Keys::default(),
        };
        Ok(Keyring {
            dir: dir.map(Path::to_path_buf),
            keys: RwLock::new(Arc::new(keys)),
        })
    }

    /// No keys, for the tests and for when signing is off.
    pub fn empty() -> Keyring {
        Keyring {
            dir: None,
            keys: RwLock::new(Arc::new(Keys::default())),
        }
    }

    /// The keys in force.
    pub fn current(&self) -> Arc<Keys> {
        self.keys.read_locked().clone()
    }

    /// Re-reads the folder; on failure the keys in force stay. Returns how many
    /// keys are in force now, `None` when there is no folder (signing is off).
    pub fn reload(&self) -> Result<Option<usize>, String> {
        let keys = match &self.dir {
            Some(dir) => Keys::load(dir)?,
            None => Keys::default(),
        };
        let n = keys.len();
        *self.keys.write_locked() = Arc::new(keys);
        Ok(self.dir.as_deref().filter(|d| d.is_dir()).map(|_| n))
    }
}
