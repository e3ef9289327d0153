//! The load-time checks that need the code which will later load the files: the TLS
//! certificate and key, a smarthost's CA file and client certificate, and the suspension state file. They
//! are config's only calls out of itself, kept here so that the arrows out are in one
//! place: checking that a file loads needs its loader, and reporting the failure at
//! `check-config` time, with its key, is what operators rely on.

use super::TlsFiles;
use std::path::Path;

/// Whether the certificate and private key load and match.
pub(super) fn tls_files(t: &TlsFiles) -> Result<(), String> {
    crate::tls::load_server_config(t)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Whether a smarthost's CA file loads.
pub(super) fn ca_file(path: &Path) -> Result<(), String> {
    crate::tls::load_ca_file(path)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Whether a smarthost's TLS client certificate and key load and belong together;
/// the problem names the key it is about (`client_certificate` or `client_key`).
pub(super) fn client_identity(cert: &Path, key: &Path) -> Result<(), (&'static str, String)> {
    use crate::tls::TlsError;
    match crate::tls::load_client_identity(cert, key) {
        Ok(_) => Ok(()),
        Err(e @ TlsError::Key { .. }) => Err(("client_key", e.to_string())),
        Err(TlsError::Mismatch(why)) => Err((
            "client_key",
            format!("does not belong to client_certificate: {why}"),
        )),
        Err(e) => Err(("client_certificate", e.to_string())),
    }
}

/// Whether the suspension state file can be read (a missing file is fine).
pub(super) fn state_file(path: &Path) -> Result<(), String> {
    crate::policy::brake::read_state(path).map(|_| ())
}
