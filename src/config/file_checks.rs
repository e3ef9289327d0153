//! The load-time checks that need the code which will later load the files: the TLS
//! certificate and key, a smarthost's CA file, and the suspension state file. They
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

/// Whether the suspension state file can be read (a missing file is fine).
pub(super) fn state_file(path: &Path) -> Result<(), String> {
    crate::policy::brake::read_state(path).map(|_| ())
}
