//! TLS configuration: the server side (our certificate, reloadable) and the client
//! side towards the smarthost (verified against the system roots plus `ca_file`).
//!
//! Only TLS 1.2 and 1.3 with rustls' ring provider, whose suites are all
//! forward-secret AEADs; rustls has no compression and no renegotiation.

use crate::config::TlsFiles;
use crate::lock::RwLockExt;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
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
    let certs = load_certs(&files.certificate)?;
    let key = PrivateKeyDer::from_pem_file(&files.private_key).map_err(|e| TlsError::Key {
        path: files.private_key.clone(),
        why: e.to_string(),
    })?;
    let config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(VERSIONS)
        .map_err(|e| TlsError::Rustls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| TlsError::Mismatch(e.to_string()))?;
    Ok(Arc::new(config))
}

/// Reads the extra trust roots of `smarthost.ca_file`.
pub fn load_ca_file(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    load_certs(path)
}

/// Builds the client config for the smarthost: system roots plus `ca_file`.
pub fn client_config(ca_file: Option<&Path>) -> Result<Arc<ClientConfig>, TlsError> {
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
    let config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(VERSIONS)
        .map_err(|e| TlsError::Rustls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
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
