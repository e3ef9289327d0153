//! `postern demo`: a complete, real setup on loopback in one command.
//!
//! It makes a throw-away certificate authority, a certificate for Postern, a sample
//! user, and starts the stand-in smarthost ([`crate::sink`]) that demands STARTTLS
//! and AUTH; then it writes an ordinary config file pointing at all of that and runs
//! the real server on it. Nothing is switched off: TLS to the smarthost is verified
//! against the demo CA, and the user's password is checked with argon2id. The
//! admin API and the dashboard listen too, with a fresh token printed on start.

use crate::config::{Config, TlsMode};
use crate::sink::{Sink, SinkConfig};
use crate::tls::{TestCa, load_server_config};
use anyhow::Context as _;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// The demo user's name and password.
pub const DEMO_USER: &str = "demo";
pub const DEMO_PASSWORD: &str = "demo-password";

/// Where the demo listens.
pub struct DemoPorts {
    pub submission: SocketAddr,
    pub smtps: SocketAddr,
    /// The admin API and dashboard (plain HTTP on loopback).
    pub admin: SocketAddr,
}

/// A fresh admin token: 32 random bytes as hex.
fn new_token() -> anyhow::Result<String> {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 32];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| anyhow::anyhow!("no system randomness"))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

fn write_private(path: &Path, contents: &str) -> anyhow::Result<()> {
    std::fs::write(path, contents).with_context(|| format!("writing {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(())
}

/// Sets up `dir`, starts the sink, and runs Postern until SIGTERM/SIGINT.
pub async fn run(dir: &Path, ports: DemoPorts) -> anyhow::Result<()> {
    let dir = std::path::absolute(dir)?;
    let tls_dir = dir.join("tls");
    let received = dir.join("received");
    std::fs::create_dir_all(&tls_dir)?;
    std::fs::create_dir_all(&received)?;

    let ca = TestCa::new("Postern demo CA")?;
    let cert = ca.issue(&["localhost", "127.0.0.1"])?;
    std::fs::write(tls_dir.join("ca.pem"), &ca.cert_pem)?;
    std::fs::write(tls_dir.join("cert.pem"), &cert.cert_pem)?;
    write_private(&tls_dir.join("key.pem"), &cert.key_pem)?;

    let relay_password = "demo-smarthost-secret";
    write_private(&dir.join("smarthost.secret"), relay_password)?;

    let files = crate::config::TlsFiles {
        certificate: tls_dir.join("cert.pem"),
        private_key: tls_dir.join("key.pem"),
    };
    let sink = Sink::start(
        "127.0.0.1:0".parse()?,
        SinkConfig {
            hostname: "smarthost.demo".into(),
            tls: TlsMode::Starttls,
            server_tls: Some(load_server_config(&files)?),
            credentials: Some(("demo-relay".into(), relay_password.into())),
            save_dir: Some(received.clone()),
            verbose: true,
            discard: false,
            smtputf8: true,
            xoauth2: None,
        },
    )
    .await?;

    let hash = crate::auth::hash_password(DEMO_PASSWORD).map_err(anyhow::Error::msg)?;
    write_private(
        &dir.join("users.yaml"),
        &format!(
            "# Demo users. Make a hash with `postern hash-password`.\n\
             users:\n  - name: {DEMO_USER}\n    password: \"{hash}\"\n    senders: [\"@demo.example\"]\n"
        ),
    )?;
    let admin_token = new_token()?;
    write_private(&dir.join("admin.token"), &format!("{admin_token}\n"))?;
    let config_path = dir.join("postern.yaml");
    std::fs::write(
        &config_path,
        format!(
            "# Written by `postern demo`; an ordinary config file.\n\
             hostname: localhost\n\
             listeners:\n  - address: \"{sub}\"\n    tls: starttls\n  - address: \"{smtps}\"\n    tls: implicit\n\
             tls:\n  certificate: tls/cert.pem\n  private_key: tls/key.pem\n\
             users:\n  file: users.yaml\n\
             smarthost:\n  address: \"127.0.0.1:{port}\"\n  tls: starttls\n  ca_file: tls/ca.pem\n  username: demo-relay\n  password_file: smarthost.secret\n\
             delivery:\n  mode: queue\n  spool_directory: spool\n\
             admin:\n  address: \"{admin}\"\n  token_file: admin.token\n",
            sub = ports.submission,
            admin = ports.admin,
            smtps = ports.smtps,
            port = sink.addr.port(),
        ),
    )?;

    let (config, users) =
        Config::load(&config_path).map_err(|p| anyhow::anyhow!("demo config invalid:\n{p}"))?;
    banner(&config_path, &ports, sink.addr, &received, &admin_token);
    crate::server::serve(config, users).await?;
    drop(sink);
    Ok(())
}

/// What the demo tells the newcomer: where it listens, how to send, the dashboard.
fn banner(
    config_path: &Path,
    ports: &DemoPorts,
    sink: SocketAddr,
    received: &Path,
    admin_token: &str,
) {
    eprintln!(
        "\n  Postern demo\n  ------------\n  config:     {cfg}\n  submission: {sub} (STARTTLS)   smtps: {smtps} (implicit TLS)\n  \
         user:       {DEMO_USER} / {DEMO_PASSWORD}, may send as anything@demo.example\n  \
         smarthost:  stand-in on {sink} (STARTTLS + AUTH); messages land in {recv}\n\n  \
         Try:  swaks --server {sub} --tls --auth PLAIN --auth-user {DEMO_USER} --auth-password {DEMO_PASSWORD} \\\n          \
         --from you@demo.example --to friend@example.org\n        \
         swaks --server {smtps} --tls-on-connect --auth LOGIN --auth-user {DEMO_USER} --auth-password {DEMO_PASSWORD} \\\n          \
         --from you@demo.example --to friend@example.org\n  \
         dashboard:  http://{admin}/  (sign in with the admin token below)\n  \
         admin token: {admin_token}\n  \
         API:        curl -H 'Authorization: Bearer {admin_token}' http://{admin}/api/v1/users\n  Stop with Ctrl-C.\n",
        cfg = config_path.display(),
        sub = ports.submission,
        smtps = ports.smtps,
        sink = sink,
        recv = received.display(),
        admin = ports.admin,
    );
}
