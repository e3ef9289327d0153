//! The DNS half of the doctor: everything the checks need to know about one
//! domain, asked through [`crate::dns`] (each query under its deadline) and
//! returned unjudged.

use super::dkim::{DkimFacts, KeyFacts, SelectorFacts, provider_selectors};
use super::dmarc;
use super::mx::{PtrFacts, Reverse};
use super::route::{Leg, Provider, Relay};
use super::spf::{self, At, MAX_FETCHES, SpfFacts, is_public};
use crate::config::Config;
use crate::dkim::Keys;
use crate::dkim::record::record_name;
use crate::dns::{self, Answer};
use mail_auth::spf::verify::SpfParameters;
use mail_auth::{MessageAuthenticator, SpfResult};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

/// mail-auth's SPF evaluation may make up to ten lookups of its own.
const EVALUATION_TIMEOUT: Duration = Duration::from_secs(20);
/// PTR names followed per address.
const MAX_PTR_NAMES: usize = 3;

/// What DNS said, by check.
#[derive(Debug, Clone, PartialEq)]
pub struct Facts {
    pub spf: SpfFacts,
    pub dkim: DkimFacts,
    /// The TXT answers at `_dmarc.DOMAIN` and then its parents (see
    /// [`dmarc::candidates`]), up to the first with a DMARC record.
    pub dmarc: Vec<dmarc::DmarcAt>,
    pub mx: Answer<Vec<(u16, String)>>,
    /// One per smarthost of no known provider.
    pub ptr: Vec<PtrFacts>,
}

/// Asks DNS everything about `domain` whose mail leaves through `legs`.
pub async fn gather(
    dns: &MessageAuthenticator,
    config: &Config,
    keys: &Keys,
    domain: &str,
    legs: &[Leg],
) -> Facts {
    let mut relays: Vec<&Relay> = Vec::new();
    for r in legs.iter().flat_map(|l| &l.relays) {
        if !relays.iter().any(|x| x.name == r.name) {
            relays.push(r);
        }
    }
    let own: Vec<&Relay> = (relays.iter().copied())
        .filter(|r| r.provider == Provider::Other && !r.host.is_empty())
        .collect();
    let (spf, dkim, dmarc, mx, ptr) = tokio::join!(
        spf_facts(dns, &config.hostname, domain, &own),
        dkim_facts(dns, keys, domain, &relays),
        dmarc_facts(dns, domain),
        dns::mx(dns, domain),
        ptr_facts(dns, &own),
    );
    Facts {
        spf,
        dkim,
        dmarc,
        mx,
        ptr,
    }
}

/// The domain's record and every include and redirect under it (at most
/// [`MAX_FETCHES`] names), then the evaluation for each of `own`'s addresses.
async fn spf_facts(
    dns: &MessageAuthenticator,
    hostname: &str,
    domain: &str,
    own: &[&Relay],
) -> SpfFacts {
    let mut facts = SpfFacts {
        txt: BTreeMap::new(),
        evaluations: Vec::new(),
    };
    let mut queue = vec![domain.to_string()];
    while let Some(name) = queue.pop() {
        if facts.txt.contains_key(&name) || facts.txt.len() >= MAX_FETCHES {
            continue;
        }
        let answer = dns::txt(dns, &name).await;
        facts.txt.insert(name.clone(), answer);
        if let At::Record(record, _) = spf::at(&facts, &name) {
            queue.extend(spf::next_names(&record).into_iter().rev());
        }
    }
    if matches!(spf::at(&facts, domain), At::Record(..)) {
        for relay in own {
            let results = evaluate(dns, hostname, domain, &relay.host).await;
            facts.evaluations.push((relay.name.clone(), results));
        }
    }
    facts
}

/// The SPF result for mail from `postmaster@domain` sent by each of `host`'s
/// public addresses (private ones are listed with `none`, not evaluated).
async fn evaluate(
    dns: &MessageAuthenticator,
    hostname: &str,
    domain: &str,
    host: &str,
) -> spf::Evaluation {
    let ips = match addresses_of(dns, host).await {
        Answer::Found(ips) => ips,
        other => return other.map(|_| Vec::new()),
    };
    let sender = format!("postmaster@{domain}");
    let mut out = Vec::new();
    for ip in ips {
        if !is_public(&ip) {
            out.push((ip, SpfResult::None));
            continue;
        }
        let params = SpfParameters::verify_mail_from(ip, hostname, hostname, &sender);
        let result = tokio::time::timeout(EVALUATION_TIMEOUT, dns.verify_spf(params))
            .await
            .map_or(SpfResult::TempError, |o| o.result());
        out.push((ip, result));
    }
    Answer::Found(out)
}

/// A host's addresses: itself when it is an address literal.
async fn addresses_of(dns: &MessageAuthenticator, host: &str) -> Answer<Vec<IpAddr>> {
    match host.parse::<IpAddr>() {
        Ok(ip) => Answer::Found(vec![ip]),
        Err(_) => dns::addresses(dns, host).await,
    }
}

/// Postern's keys for the domain and their records; without keys, the records
/// of the selectors the relays' providers use.
async fn dkim_facts(
    dns: &MessageAuthenticator,
    keys: &Keys,
    domain: &str,
    relays: &[&Relay],
) -> DkimFacts {
    let mut facts = DkimFacts::default();
    for key in keys.for_domain(domain) {
        facts.keys.push(KeyFacts {
            selector: key.selector.clone(),
            algorithm: key.algorithm(),
            public_key: key.public_key(),
            txt: dns::txt(dns, &record_name(&key.selector, domain)).await,
        });
    }
    if !facts.keys.is_empty() {
        return facts;
    }
    let mut selectors: Vec<&str> = Vec::new();
    for r in relays {
        for s in provider_selectors(r.provider) {
            if !selectors.contains(s) {
                selectors.push(s);
            }
        }
    }
    for selector in selectors {
        let name = record_name(selector, domain);
        let (cname, txt) = tokio::join!(dns::cname(dns, &name), dns::txt(dns, &name));
        facts.selectors.push(SelectorFacts {
            selector: selector.to_string(),
            cname,
            txt,
        });
    }
    facts
}

/// `_dmarc.DOMAIN`, then its parents until one has a DMARC record (or DNS
/// fails).
async fn dmarc_facts(dns: &MessageAuthenticator, domain: &str) -> Vec<dmarc::DmarcAt> {
    let mut out = Vec::new();
    for (owner, name) in dmarc::candidates(domain) {
        let answer = dns::txt(dns, &name).await;
        let done = match &answer {
            Answer::Found(r) => r.iter().any(|t| dmarc::is_dmarc(t)),
            Answer::Failed(_) => true,
            _ => false,
        };
        out.push((owner, answer));
        if done {
            break;
        }
    }
    out
}

/// For each smarthost of no known provider: its addresses, their PTR names, and
/// those names' addresses.
async fn ptr_facts(dns: &MessageAuthenticator, own: &[&Relay]) -> Vec<PtrFacts> {
    let mut out = Vec::new();
    for relay in own {
        let addresses = addresses_of(dns, &relay.host).await;
        let mut reverse = Vec::new();
        for &ip in addresses.found().into_iter().flatten() {
            if !is_public(&ip) {
                continue;
            }
            let names = dns::ptr(dns, ip).await;
            let mut forward = Vec::new();
            for name in names.found().into_iter().flatten().take(MAX_PTR_NAMES) {
                forward.push((name.clone(), dns::addresses(dns, name).await));
            }
            reverse.push(Reverse { ip, names, forward });
        }
        out.push(PtrFacts {
            relay: relay.name.clone(),
            host: relay.host.clone(),
            addresses,
            reverse,
        });
    }
    out
}
