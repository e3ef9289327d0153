//! TLS configuration: the server side (our certificate, reloadable) and the client
//! side towards the smarthost (verified against the system roots plus `ca_file`).
//!
//! Only TLS 1.2 and 1.3 with rustls' ring provider, whose suites are all
//! forward-secret AEADs; rustls has no compression and no renegotiation.

use crate::config::TlsFiles;
use crate::lock::RwLockExt;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

/// A TLS setup problem, naming the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read certificates from {path}: {why}")]
    Certificates { path: PathBuf, why: String },
    #[error("{path} holds no certificate")]
    NoCertificate { path: PathBuf },
    #[error("cannot read a private key from {path}: {why}")]
    Key { path: PathBuf, why: String },
    #[error("certificate and key do not fit together: {0}")]
    Mismatch(String),
    #[error("TLS setup: {0}")]
    Rustls(String),
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The server's provider: ring's suites, AES-128-GCM with SHA-256 first. Every
/// suite is a forward-secret AEAD; this order (Mozilla's, Go's) only makes the
/// handshake cheaper: SHA-256 runs on the CPU's SHA extensions where SHA-384
/// does not, and it was the largest symbol of a connection-per-message load.
fn server_provider() -> Arc<rustls::crypto::CryptoProvider> {
    use rustls::crypto::ring::cipher_suite as cs;
    Arc::new(rustls::crypto::CryptoProvider {
        cipher_suites: vec![
            cs::TLS13_AES_128_GCM_SHA256,
            cs::TLS13_AES_256_GCM_SHA384,
            cs::TLS13_CHACHA20_POLY1305_SHA256,
            cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
            cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
            cs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
            cs::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
            cs::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
            cs::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
        ],
        ..rustls::crypto::ring::default_provider()
    })
}

const VERSIONS: &[&rustls::SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

/// Reads every certificate in a PEM file.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| TlsError::Certificates {
            path: path.to_path_buf(),
            why: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}

/// Builds the server config from the certificate chain and key files.
pub fn load_server_config(files: &TlsFiles) -> Result<Arc<ServerConfig>, TlsError> {
    server_config(files, None)
}

/// The server config, demanding a client certificate issued by `client_ca` when
/// given (the stand-in smarthost of a certificate connector, in tests).
pub fn server_config(
    files: &TlsFiles,
    client_ca: Option<&Path>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let certs = load_certs(&files.certificate)?;
    let key = PrivateKeyDer::from_pem_file(&files.private_key).map_err(|e| TlsError::Key {
        path: files.private_key.clone(),
        why: e.to_string(),
    })?;
    let builder = ServerConfig::builder_with_provider(server_provider())
        .with_protocol_versions(VERSIONS)
        .map_err(|e| TlsError::Rustls(e.to_string()))?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(path) => {
            let mut roots = RootCertStore::empty();
            for cert in load_certs(path)? {
                roots.add(cert).map_err(|e| TlsError::Certificates {
                    path: path.to_path_buf(),
                    why: e.to_string(),
                })?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                .build()
                .map_err(|e| TlsError::Rustls(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|e| TlsError::Mismatch(e.to_string()))?;
    // The server's order, not the client's (most put AES-256 first).
    config.ignore_client_order = true;
    Ok(Arc::new(config))
}

/// The SHA-256 fingerprint of a certificate, lowercase hex (for logs and tests).
pub fn fingerprint(cert: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, cert);
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// Reads the extra trust roots of `smarthost.ca_file`.
pub fn load_ca_file(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    load_certs(path)
}

/// Builds the client config for the smarthost: system roots plus `ca_file`.
pub fn client_config(ca_file: Option<&Path>) -> Result<Arc<ClientConfig>, TlsError> {
    client_config_with_identity(ca_file, None)
}

/// The client config for a smarthost entry: system roots plus `ca_file`, and the
/// TLS client certificate it presents when `identity` (certificate and key
/// files) is given, for a connector that trusts a certificate.
pub fn client_config_with_identity(
    ca_file: Option<&Path>,
    identity: Option<(&Path, &Path)>,
) -> Result<Arc<ClientConfig>, TlsError> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(VERSIONS)
        .map_err(|e| TlsError::Rustls(e.to_string()))?
        .with_root_certificates(client_roots(ca_file)?);
    let config = match identity {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let certified = load_client_identity(cert, key)?;
            builder.with_client_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(
                certified,
            )))
        }
    };
    Ok(Arc::new(config))
}

/// Reads a TLS client certificate chain and its private key, and checks that the
/// key belongs to the certificate.
pub fn load_client_identity(
    cert: &Path,
    key: &Path,
) -> Result<rustls::sign::CertifiedKey, TlsError> {
    let certs = load_certs(cert)?;
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::Key {
        path: key.to_path_buf(),
        why: e.to_string(),
    })?;
    rustls::sign::CertifiedKey::from_der(certs, key_der, &provider())
        .map_err(|e| TlsError::Mismatch(e.to_string()))
}

/// The system's trust roots plus `ca_file`.
fn client_roots(ca_file: Option<&Path>) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for e in &native.errors {
        tracing::debug!(error = %e, "while loading the system's trust roots");
    }
    let (_added, _ignored) = roots.add_parsable_certificates(native.certs);
    if let Some(path) = ca_file {
        for cert in load_ca_file(path)? {
            roots.add(cert).map_err(|e| TlsError::Certificates {
                path: path.to_path_buf(),
                why: e.to_string(),
            })?;
        }
    }
    if roots.is_empty() {
        tracing::warn!("no trust roots: install ca-certificates or set smarthost.ca_file");
    }
    Ok(roots)
}

/// The server config in force, swapped whole on reload so that handshakes in
/// progress keep the config they started with.
#[derive(Debug)]
pub struct ServerTls {
    current: RwLock<Arc<ServerConfig>>,
}

impl ServerTls {
    pub fn new(config: Arc<ServerConfig>) -> ServerTls {
        ServerTls {
            current: RwLock::new(config),
        }
    }

    /// The config for a new handshake.
    pub fn get(&self) -> Arc<ServerConfig> {
        self.current.read_locked().clone()
    }

    /// Puts a new config in force.
    pub fn replace(&self, config: Arc<ServerConfig>) {
        *self.current.write_locked() = config;
    }

    /// An acceptor for one handshake.
    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.get())
    }
}

/// "TLSv1.3 with cipher TLS13_AES_256_GCM_SHA384", for logs and the Received header.
pub fn describe(state: &rustls::CommonState) -> String {
    let version = match state.protocol_version() {
        Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3".to_string(),
        Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2".to_string(),
        Some(v) => format!("{v:?}"),
        None => "TLS".to_string(),
    };
    match state.negotiated_cipher_suite() {
        Some(cs) => format!("{version} with cipher {:?}", cs.suite()),
        None => version,
    }
}

/// A self-signed certificate and key, PEM-encoded, for the demo and for tests.
pub struct GeneratedCert {
    pub cert_pem: String,
    pub key_pem: String,
}

/// A small certificate authority that issues leaf certificates: the demo and the
/// tests use it so that TLS is verified for real, never switched off.
pub struct TestCa {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    pub cert_pem: String,
}

impl TestCa {
    pub fn new(name: &str) -> Result<TestCa, rcgen::Error> {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let key = rcgen::KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        Ok(TestCa {
            issuer: rcgen::Issuer::new(params, key),
            cert_pem: cert.pem(),
        })
    }

    /// Issues a server certificate for `names` (DNS names or IP addresses).
    pub fn issue(&self, names: &[&str]) -> Result<GeneratedCert, rcgen::Error> {
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let mut params = rcgen::CertificateParams::new(names.clone())?;
        params.distinguished_name.push(
            rcgen::DnType::CommonName,
            names.first().cloned().unwrap_or_default(),
        );
        let key = rcgen::KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(GeneratedCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

#[cfg(test)]
mod tests;
