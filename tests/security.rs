//! Scans from tools nobody here wrote: sslscan grades the TLS of both listeners
//! (STARTTLS and implicit), nmap's smtp-open-relay script tries to relay through
//! every listener without authenticating.

mod common;

use common::{Harness, Setup, have};
use std::process::Output;

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

async fn sslscan(args: &[String]) -> String {
    let out = tokio::process::Command::new("sslscan")
        .arg("--no-colour")
        .args(args)
        .output()
        .await
        .unwrap();
    text(&out)
}

/// What sslscan must say of a Postern listener.
fn assert_modern_tls(report: &str, which: &str) {
    for line in [
        "SSLv2     disabled",
        "SSLv3     disabled",
        "TLSv1.0   disabled",
        "TLSv1.1   disabled",
        "TLSv1.2   enabled",
        "TLSv1.3   enabled",
        "Session renegotiation not supported",
    ] {
        assert!(report.contains(line), "{which}: missing {line:?}\n{report}");
    }
    assert!(!report.contains("Compression enabled"), "{which}\n{report}");
    let ciphers: Vec<&str> = report
        .lines()
        .filter(|l| l.starts_with("Accepted") || l.starts_with("Preferred"))
        .collect();
    assert!(ciphers.len() >= 4, "{which}: no cipher list\n{report}");
    for c in ciphers {
        // AEAD only, and forward secret: TLS 1.3 suites, or ECDHE in TLS 1.2.
        let aead = c.contains("GCM") || c.contains("CHACHA20");
        let fs = c.contains("TLSv1.3") || c.contains("ECDHE-");
        assert!(aead && fs, "{which}: weak suite {c:?}");
        assert!(!c.contains(" 40 bits") && !c.contains(" 56 bits"), "{c}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sslscan_finds_only_tls12_and_13_with_forward_secret_aead() {
    if !have("sslscan") {
        return;
    }
    let h = Harness::start(Setup::default()).await;
    let implicit = sslscan(&[format!("127.0.0.1:{}", h.implicit.port())]).await;
    assert_modern_tls(&implicit, "465 (implicit TLS)");
    let starttls = sslscan(&[
        "--starttls-smtp".into(),
        format!("127.0.0.1:{}", h.starttls.port()),
    ])
    .await;
    assert_modern_tls(&starttls, "587 (STARTTLS)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nmap_smtp_open_relay_finds_no_relay() {
    if !have("nmap") {
        return;
    }
    let h = Harness::start(Setup {
        // A cleartext listener that even offers AUTH: still no relaying without it.
        plain_listener: true,
        ..Setup::default()
    })
    .await;
    let plain = h.plain.expect("plain listener");
    let ports = format!(
        "{},{},{}",
        h.starttls.port(),
        h.implicit.port(),
        plain.port()
    );
    let out = tokio::process::Command::new("nmap")
        .args(["-Pn", "-n", "-sV", "-p", &ports])
        .args(["--script", "smtp-open-relay"])
        .args([
            "--script-args",
            "smtp-open-relay.domain=relay-victim.example,smtp-open-relay.ip=127.0.0.1,\
             smtp-open-relay.from=attacker@relay-victim.example,\
             smtp-open-relay.to=victim@elsewhere.example",
        ])
        .arg("127.0.0.1")
        .output()
        .await
        .unwrap();
    let report = text(&out);
    assert!(out.status.success(), "{report}");
    assert!(!report.contains("Server is an open relay"), "{report}");
    // The script ran on every port and was refused every time.
    assert_eq!(
        report.matches("Server isn't an open relay").count(),
        3,
        "{report}"
    );
    // Nothing reached the smarthost.
    assert!(h.sink.messages().is_empty());
}
