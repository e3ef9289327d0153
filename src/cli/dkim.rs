//! `postern dkim generate|list`: a key per customer domain under
//! `dkim.keys_directory`, and the DNS record that publishes it.
//!
//! `list` prints each key with its record and what DNS has at that name.
//! `generate` prints the record on stdout (`name:`, `type:`, `value:` lines, the
//! value cut into quoted strings of at most 255 bytes) and what to do next on
//! stderr. Run as root with `run_as` set, the files it creates are given to that
//! account, which reads them at start and on reload.

use super::args::DkimAlgorithm;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use postern::config::{Config, RunAs};
use postern::dkim::generate::{KeyType, NewKey, new_key, write_key};
use postern::dkim::keys::{is_domain, is_selector};
use postern::dkim::published::{self, Published};
use postern::dkim::record::{default_selector, quoted_strings, record_name, record_value};
use postern::dkim::{DomainKey, Keys};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

pub fn generate(
    domain: &str,
    selector: Option<String>,
    algorithm: DkimAlgorithm,
    config: Option<PathBuf>,
) -> ExitCode {
    let (config, users) = match super::load(config) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let domain = postern::config::normalize_domain(domain);
    if !is_domain(&domain) {
        eprintln!(
            "postern: {:?} is not a domain name in ASCII (give an internationalised domain as its xn-- form)",
            domain.escape_default().to_string()
        );
        return ExitCode::from(1);
    }
    if !someone_sends_as(&users, &domain) {
        eprintln!(
            "postern: note: no user may send as @{domain} yet (postern user add NAME --sender @{domain}); the key is made all the same"
        );
    }
    let key_type = match algorithm {
        DkimAlgorithm::Rsa => KeyType::Rsa,
        DkimAlgorithm::Ed25519 => KeyType::Ed25519,
    };
    let dir = &config.dkim.keys_directory;
    let selector = match pick_selector(dir, &domain, selector, key_type) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("postern: {e}");
            return ExitCode::from(1);
        }
    };
    let created = missing_folders(dir, &domain);
    let key = match new_key(key_type) {
        Ok(k) => k,
        Err(e) => {
            eprintln!("postern: {e}");
            return ExitCode::from(2);
        }
    };
    let path = match write_key(dir, &domain, &selector, &key.pem) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("postern: {e}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = give_to_service(&config, &created, &path) {
        eprintln!("postern: {e}");
        return ExitCode::from(2);
    }
    print_record(&domain, &selector, &key);
    eprintln!("postern: wrote {}", path.display());
    eprintln!(
        "postern: publish the TXT record above; once `dig +short TXT {}` shows it, run `postern reload` and mail From @{domain} is signed",
        record_name(&selector, &domain)
    );
    ExitCode::SUCCESS
}

/// Whether some user's `senders` name the domain or an address in it.
fn someone_sends_as(users: &postern::config::Users, domain: &str) -> bool {
    use postern::config::SenderRule;
    users.iter().any(|u| {
        u.allow_any_header_from
            || u.senders.iter().any(|r| match r {
                SenderRule::Domain(d) => d == domain,
                SenderRule::Address(a) => a.rsplit_once('@').is_some_and(|(_, d)| d == domain),
            })
    })
}

/// The selector given (checked), or a dated default not yet in use.
fn pick_selector(
    dir: &Path,
    domain: &str,
    given: Option<String>,
    key_type: KeyType,
) -> Result<String, String> {
    let taken = |s: &str| dir.join(domain).join(format!("{s}.pem")).exists();
    if let Some(s) = given {
        let s = s.to_ascii_lowercase();
        if !is_selector(&s) {
            return Err(format!(
                "{:?} is not a selector (letters, digits, hyphens; dots between labels)",
                s.escape_default().to_string()
            ));
        }
        if taken(&s) {
            return Err(format!(
                "{domain} already has a key with selector {s}: pick another selector, or move the old key away first"
            ));
        }
        return Ok(s);
    }
    let base = default_selector(key_type == KeyType::Ed25519, std::time::SystemTime::now());
    std::iter::once(base.clone())
        .chain(('b'..='z').map(|c| format!("{base}{c}")))
        .find(|s| !taken(s))
        .ok_or_else(|| format!("every default selector {base}* is taken: give --selector"))
}

/// The folders `write_key` will create: the keys folder and the domain's.
fn missing_folders(dir: &Path, domain: &str) -> Vec<PathBuf> {
    [dir.to_path_buf(), dir.join(domain)]
        .into_iter()
        .filter(|p| !p.exists())
        .collect()
}

/// Run as root with `run_as`: the new folders and the key belong to that account,
/// so the server can read them after dropping root.
fn give_to_service(config: &Config, created: &[PathBuf], key: &Path) -> Result<(), String> {
    let Some(run_as) = &config.run_as else {
        return Ok(());
    };
    if !nix::unistd::geteuid().is_root() {
        return Ok(());
    }
    let (uid, gid) = service_ids(run_as)?;
    for p in created.iter().map(PathBuf::as_path).chain([key]) {
        std::os::unix::fs::chown(p, Some(uid), Some(gid))
            .map_err(|e| format!("cannot give {} to {}: {e}", p.display(), run_as.user))?;
    }
    Ok(())
}

fn service_ids(run_as: &RunAs) -> Result<(u32, u32), String> {
    let (user, gid) = postern::daemon::run_as_account(run_as)?;
    Ok((user.uid.as_raw(), gid.as_raw()))
}

fn print_record(domain: &str, selector: &str, key: &NewKey) {
    let algorithm = match key.key_type {
        KeyType::Rsa => "rsa",
        KeyType::Ed25519 => "ed25519",
    };
    let value = record_value(algorithm, &key.public_key);
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "name:  {}", record_name(selector, domain));
    let _ = writeln!(out, "type:  TXT");
    let _ = writeln!(out, "value: {}", quoted_strings(&value));
}

pub fn list(config: Option<PathBuf>) -> ExitCode {
    let (config, _) = match super::load(config) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let keys = match Keys::load(&config.dkim.keys_directory) {
        Ok(k) => k,
        Err(e) => {
            eprintln!("postern: {e}");
            return ExitCode::from(1);
        }
    };
    if keys.is_empty() {
        eprintln!(
            "postern: no DKIM keys in {} (make one with `postern dkim generate DOMAIN`)",
            config.dkim.keys_directory.display()
        );
        return ExitCode::SUCCESS;
    }
    let dns = postern::dns::resolver();
    let verdicts = super::runtime().block_on(check_all(&keys, dns));
    let mut out = std::io::stdout().lock();
    for (key, verdict) in keys.all().zip(verdicts) {
        let _ = writeln!(out, "{}\n  DNS: {verdict}", listing(key));
    }
    ExitCode::SUCCESS
}

/// Each key's DNS verdict, in the order of `keys.all()`, looked up at once.
async fn check_all(
    keys: &Keys,
    dns: Result<mail_auth::MessageAuthenticator, String>,
) -> Vec<Published> {
    let dns = match dns {
        Ok(d) => std::sync::Arc::new(d),
        Err(e) => return keys.all().map(|_| Published::Unknown(e.clone())).collect(),
    };
    let mut tasks = Vec::new();
    for key in keys.all() {
        let dns = dns.clone();
        let name = record_name(&key.selector, &key.domain);
        let algorithm = key.algorithm();
        let public = key.public_key().map(|p| STANDARD.encode(p));
        tasks.push(tokio::spawn(async move {
            match public {
                Ok(p) => published::check(&dns, &name, algorithm, &p).await,
                Err(e) => Published::Unknown(e),
            }
        }));
    }
    let mut out = Vec::new();
    for t in tasks {
        out.push(
            t.await
                .unwrap_or_else(|e| Published::Unknown(e.to_string())),
        );
    }
    out
}

/// One key: domain, selector, algorithm, then its record's name and value.
fn listing(key: &DomainKey) -> String {
    let value = match key.public_key() {
        Ok(p) => quoted_strings(&record_value(key.algorithm(), &p)),
        Err(e) => format!("(cannot read the public key: {e})"),
    };
    format!(
        "{} {} {}\n  {} TXT {}",
        key.domain,
        key.selector,
        key.algorithm(),
        record_name(&key.selector, &key.domain),
        value
    )
}
