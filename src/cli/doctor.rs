//! `postern doctor [DOMAIN...] [--json]`: the deliverability checks of each sender
//! domain (see `postern::doctor`), printed for a terminal or as JSON.
//!
//! Exit codes: 0 nothing failed, 1 a check failed (or bad config or usage), 2 no
//! DNS (the resolver cannot be set up, or it answered nothing at all).

use postern::config::normalize_domain;
use postern::dkim::Keys;
use postern::dkim::keys::is_domain;
use postern::doctor::{self, Report, Status, render};
use postern::proto::printable::Printable;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

/// Domains checked at the same time.
const PARALLEL: usize = 8;

pub fn doctor(domains: Vec<String>, json: bool, config: Option<PathBuf>) -> ExitCode {
    let (config, users) = match super::load(config) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let domains = match pick_domains(domains, &users) {
        Ok(d) => d,
        Err(code) => return code,
    };
    let keys = match Keys::load(&config.dkim.keys_directory) {
        Ok(k) => k,
        Err(e) => {
            eprintln!("postern: {e}");
            return ExitCode::from(1);
        }
    };
    let dns = match postern::dns::resolver() {
        Ok(d) => d,
        Err(e) => {
            eprintln!("postern: no DNS resolver: {e}");
            return ExitCode::from(2);
        }
    };
    let report = super::runtime().block_on(check_all(dns, config, keys, domains));
    let out = if json {
        render::json(&report) + "\n"
    } else {
        render::text(&report)
    };
    let _ = std::io::stdout().lock().write_all(out.as_bytes());
    if report.dns_silent() {
        eprintln!(
            "postern: DNS answered none of the doctor's questions: is the resolver reachable?"
        );
        return ExitCode::from(2);
    }
    match report.status {
        Status::Fail => ExitCode::from(1),
        _ => ExitCode::SUCCESS,
    }
}

/// The domains given (each must be an ASCII domain name), else every sender
/// domain of the users (one in UTF-8 is skipped with a note: DNS knows it by its
/// `xn--` form, which the doctor can be given).
fn pick_domains(
    given: Vec<String>,
    users: &postern::config::Users,
) -> Result<Vec<String>, ExitCode> {
    let not_ascii = |d: &str| {
        format!(
            "{} is not a domain name in ASCII (give an internationalised domain as its xn-- form)",
            Printable(d)
        )
    };
    if !given.is_empty() {
        let domains: Vec<String> = given.iter().map(|d| normalize_domain(d)).collect();
        if let Some(bad) = domains.iter().find(|d| !is_domain(d)) {
            eprintln!("postern: {}", not_ascii(bad));
            return Err(ExitCode::from(1));
        }
        return Ok(domains);
    }
    let (domains, skipped): (Vec<String>, Vec<String>) = doctor::sender_domains(users)
        .into_iter()
        .partition(|d| is_domain(d));
    for d in &skipped {
        eprintln!("postern: skipped: {}", not_ascii(d));
    }
    if domains.is_empty() {
        eprintln!(
            "postern: no user has sender domains to check; give them: postern doctor DOMAIN..."
        );
        return Err(ExitCode::from(1));
    }
    Ok(domains)
}

/// Every domain's report, in the order given, [`PARALLEL`] at a time.
async fn check_all(
    dns: mail_auth::MessageAuthenticator,
    config: postern::config::Config,
    keys: Keys,
    domains: Vec<String>,
) -> Report {
    let shared = Arc::new((dns, config, keys));
    let mut reports = Vec::with_capacity(domains.len());
    for batch in domains.chunks(PARALLEL) {
        let tasks: Vec<_> = (batch.iter().cloned())
            .map(|domain| {
                let shared = shared.clone();
                tokio::spawn(async move {
                    let (dns, config, keys) = &*shared;
                    doctor::check_domain(dns, config, keys, &domain).await
                })
            })
            .collect();
        for t in tasks {
            reports.push(t.await.expect("a doctor task panicked"));
        }
    }
    Report::new(reports)
}
