use super::*;
use rustls::crypto::ring::cipher_suite as cs;
use rustls::{ClientConnection, ServerConnection, SupportedCipherSuite};

/// A server config for `localhost` from a fresh CA, and the CA's file.
fn server(dir: &Path) -> (Arc<ServerConfig>, PathBuf) {
    let ca = TestCa::new("test ca").unwrap();
    let leaf = ca.issue(&["localhost"]).unwrap();
    let files = TlsFiles {
        certificate: dir.join("cert.pem"),
        private_key: dir.join("key.pem"),
    };
    std::fs::write(&files.certificate, &leaf.cert_pem).unwrap();
    std::fs::write(&files.private_key, &leaf.key_pem).unwrap();
    let ca_file = dir.join("ca.pem");
    std::fs::write(&ca_file, &ca.cert_pem).unwrap();
    (load_server_config(&files).unwrap(), ca_file)
}

/// Runs a handshake in memory; the suite the two sides agreed on.
fn negotiate(server: Arc<ServerConfig>, client: Arc<ClientConfig>) -> SupportedCipherSuite {
    let name = "localhost".try_into().unwrap();
    let mut c = ClientConnection::new(client, name).unwrap();
    let mut s = ServerConnection::new(server).unwrap();
    for _ in 0..10 {
        let mut wire = Vec::new();
        while c.wants_write() {
            c.write_tls(&mut wire).unwrap();
        }
        s.read_tls(&mut &wire[..]).unwrap();
        s.process_new_packets().unwrap();
        let mut wire = Vec::new();
        while s.wants_write() {
            s.write_tls(&mut wire).unwrap();
        }
        c.read_tls(&mut &wire[..]).unwrap();
        c.process_new_packets().unwrap();
        if !c.is_handshaking() && !s.is_handshaking() {
            break;
        }
    }
    assert!(!s.is_handshaking(), "the handshake did not finish");
    s.negotiated_cipher_suite().unwrap()
}

/// A client config trusting `ca` that offers `suites` in that order.
fn client_offering(ca: &Path, suites: &[SupportedCipherSuite]) -> Arc<ClientConfig> {
    let provider = rustls::crypto::CryptoProvider {
        cipher_suites: suites.to_vec(),
        ..rustls::crypto::ring::default_provider()
    };
    let mut roots = RootCertStore::empty();
    roots.add_parsable_certificates(load_certs(ca).unwrap());
    let config = ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(VERSIONS)
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    Arc::new(config)
}

#[test]
fn the_server_picks_aes_128_even_when_the_client_prefers_aes_256() {
    let dir = tempfile::tempdir().unwrap();
    let (server, ca) = server(dir.path());
    // rustls' and OpenSSL's clients put AES-256 first.
    let client = client_config(Some(&ca)).unwrap();
    assert_eq!(
        negotiate(server.clone(), client).suite(),
        cs::TLS13_AES_128_GCM_SHA256.suite()
    );
    let tls12 = client_offering(
        &ca,
        &[
            cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
            cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        ],
    );
    assert_eq!(
        negotiate(server, tls12).suite(),
        cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256.suite()
    );
}

#[test]
fn every_default_suite_is_still_served() {
    let dir = tempfile::tempdir().unwrap();
    let (server, ca) = server(dir.path());
    // The certificate is ECDSA: the TLS 1.2 RSA suites cannot be used with it.
    for suite in rustls::crypto::ring::DEFAULT_CIPHER_SUITES {
        let name = format!("{:?}", suite.suite());
        if name.contains("_RSA_") {
            continue;
        }
        let client = client_offering(&ca, &[*suite]);
        assert_eq!(
            negotiate(server.clone(), client).suite(),
            suite.suite(),
            "{name}"
        );
    }
}

#[test]
fn the_server_offers_exactly_the_default_suites_reordered() {
    let names = |suites: &[SupportedCipherSuite]| {
        let mut v: Vec<String> = suites.iter().map(|s| format!("{:?}", s.suite())).collect();
        v.sort();
        v
    };
    assert_eq!(
        names(&server_provider().cipher_suites),
        names(rustls::crypto::ring::DEFAULT_CIPHER_SUITES)
    );
}
