//! DKIM verdicts (pure): Postern's own keys published and matching (the
//! comparison is `dkim::published`'s), else the selectors the provider signs with
//! when the owner has turned on its custom-domain DKIM.

use super::route::{Provider, Relay};
use super::{Check, Status};
use crate::dkim::published::{self, Published};
use crate::dkim::record::{quoted_strings, record_name, record_value};
use crate::dns::Answer;

/// What DNS said about DKIM.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DkimFacts {
    /// Postern's keys for the domain and the TXT answer at each one's name.
    pub keys: Vec<KeyFacts>,
    /// The provider selectors looked up when Postern has no key for the domain.
    pub selectors: Vec<SelectorFacts>,
}

/// One of Postern's keys.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyFacts {
    pub selector: String,
    /// `rsa` or `ed25519`.
    pub algorithm: &'static str,
    /// The public key (DER), or why it cannot be read.
    pub public_key: Result<Vec<u8>, String>,
    pub txt: Answer<Vec<String>>,
}

/// A provider's selector: a CNAME (Microsoft 365 points it at its own key) or a
/// TXT record with a key.
#[derive(Debug, Clone, PartialEq)]
pub struct SelectorFacts {
    pub selector: String,
    pub cname: Answer<Vec<String>>,
    pub txt: Answer<Vec<String>>,
}

/// The selectors a provider signs a customer's domain with, where they can be
/// known in advance.
pub fn provider_selectors(provider: Provider) -> &'static [&'static str] {
    match provider {
        Provider::Microsoft365 => &["selector1", "selector2"],
        Provider::Google => &["google"],
        _ => &[],
    }
}

/// Every DKIM check of a domain.
pub fn judge(domain: &str, relays: &[&Relay], facts: &DkimFacts) -> Vec<Check> {
    if !facts.keys.is_empty() {
        return facts.keys.iter().map(|k| key_check(domain, k)).collect();
    }
    let mut providers: Vec<Provider> = Vec::new();
    for r in relays {
        if !providers.contains(&r.provider) {
            providers.push(r.provider);
        }
    }
    providers
        .into_iter()
        .map(|p| provider_check(domain, p, &facts.selectors))
        .collect()
}

fn key_check(domain: &str, key: &KeyFacts) -> Check {
    use base64::Engine;
    let name = record_name(&key.selector, domain);
    let public = match &key.public_key {
        Ok(p) => p,
        Err(e) => {
            return Check::fail(
                "dkim",
                format!("Postern's key {} cannot be read: {e}", key.selector),
                "make a new key with `postern dkim generate` and publish its record",
            )
            .subject(&key.selector);
        }
    };
    let b64 = base64::engine::general_purpose::STANDARD.encode(public);
    let value = record_value(key.algorithm, public);
    let publish = format!("publish a TXT record at {name}: {}", quoted_strings(&value));
    let check = match published::verdict(&key.txt, key.algorithm, &b64) {
        Published::Matches => Check::ok(
            "dkim",
            format!("{name} publishes Postern's {} key", key.algorithm),
        ),
        Published::Unknown(e) => Check::unknown("dkim", &e),
        Published::Missing => Check::fail(
            "dkim",
            format!("Postern signs with selector {} but {name} has no DKIM record, so the signatures fail", key.selector),
            publish,
        )
        .record(&name, "TXT", value),
        Published::Differs(d) => Check::fail(
            "dkim",
            format!("{name} holds another key than Postern signs with ({d}), so the signatures fail"),
            format!("replace it: {publish}"),
        )
        .record(&name, "TXT", value),
    };
    check.subject(&key.selector)
}

fn provider_check(domain: &str, provider: Provider, facts: &[SelectorFacts]) -> Check {
    let generate = format!(
        "run `postern dkim generate {domain}` and publish the record it prints, so that Postern signs as {domain}"
    );
    let selectors = provider_selectors(provider);
    if selectors.is_empty() {
        let found = match provider {
            Provider::AmazonSes => format!(
                "Postern has no DKIM key for {domain}, and Amazon SES Easy DKIM's three CNAME names (TOKEN._domainkey.{domain}) cannot be guessed"
            ),
            Provider::Other => format!(
                "Postern has no DKIM key for {domain}; if your own server signs for it, the doctor cannot know its selector"
            ),
            p => format!(
                "Postern has no DKIM key for {domain}, and {}'s selectors cannot be guessed",
                p.name()
            ),
        };
        let fix = match provider {
            Provider::AmazonSes => format!(
                "check in the SES console (Identities, {domain}, Authentication) that Easy DKIM is verified, or {generate}"
            ),
            _ => generate,
        };
        return Check::warn("dkim", found, fix).subject(provider.name());
    }
    let missing: Vec<&str> = (selectors.iter().copied())
        .filter(|s| !selector_published(facts, s).unwrap_or(true))
        .collect();
    let unknown = selectors
        .iter()
        .any(|s| selector_published(facts, s).is_none());
    let names: Vec<String> = selectors.iter().map(|s| record_name(s, domain)).collect();
    let check = if !missing.is_empty() {
        let how = match provider {
            Provider::Microsoft365 => {
                "turn on DKIM for the domain in the Microsoft Defender portal (Email authentication settings) and publish the two CNAME records it shows"
            }
            _ => {
                "generate the key in the Google Admin console (Apps, Gmail, Authenticate email) and publish the TXT record it shows"
            }
        };
        let missing: Vec<String> = missing.iter().map(|s| record_name(s, domain)).collect();
        Check::fail(
            "dkim",
            format!(
                "{} has no DKIM record at {}, so its mail is signed for another domain than {domain}",
                provider.name(),
                missing.join(" and ")
            ),
            format!("{how}, or {generate}"),
        )
    } else if unknown {
        Check::unknown("dkim", &format!("no answer for {}", names.join(", ")))
    } else {
        Check::ok(
            "dkim",
            format!("{} publishes {}", provider.name(), names.join(" and ")),
        )
    };
    check.subject(provider.name())
}

/// Whether a provider selector is published: a CNAME, or a TXT with a key.
/// `None`: DNS did not answer.
fn selector_published(facts: &[SelectorFacts], selector: &str) -> Option<bool> {
    let f = facts.iter().find(|f| f.selector == selector)?;
    if f.cname.found().is_some() {
        return Some(true);
    }
    match &f.txt {
        Answer::Found(records) => Some(records.iter().any(|r| has_key(r))),
        Answer::Failed(_) => None,
        _ => match f.cname {
            Answer::Failed(_) => None,
            _ => Some(false),
        },
    }
}

/// A DKIM key record: a non-empty `p=` tag.
fn has_key(record: &str) -> bool {
    record.split(';').any(|t| {
        t.split_once('=')
            .is_some_and(|(k, v)| k.trim() == "p" && !v.trim().is_empty())
    })
}

/// Whether a DKIM signature aligned with the From domain is plausible: some key
/// or provider selector checked out. `None`: cannot tell.
pub fn aligned(checks: &[Check]) -> Option<bool> {
    let dkim: Vec<&Check> = checks.iter().filter(|c| c.id == "dkim").collect();
    if dkim.iter().any(|c| c.status == Status::Ok) {
        Some(true)
    } else if !dkim.is_empty() && dkim.iter().all(|c| c.status == Status::Fail) {
        Some(false)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::route::Relay;

    fn relay(provider: Provider) -> Relay {
        Relay {
            name: "relay:587".into(),
            host: "relay".into(),
            provider,
        }
    }

    fn txt(s: &str) -> Answer<Vec<String>> {
        Answer::Found(vec![s.to_string()])
    }

    fn key(txt: Answer<Vec<String>>) -> KeyFacts {
        KeyFacts {
            selector: "s1".into(),
            algorithm: "ed25519",
            public_key: Ok(vec![1, 2, 3]),
            txt,
        }
    }

    #[test]
    fn postern_keys_are_compared_with_dns() {
        let d = "a.example";
        let r = relay(Provider::AmazonSes);
        let cases = [
            (txt("v=DKIM1; k=ed25519; p=AQID"), Status::Ok),
            (txt("v=DKIM1; k=ed25519; p=BBBB"), Status::Fail),
            (txt("v=DKIM1; k=rsa; p=AQID"), Status::Fail),
            (Answer::NoDomain, Status::Fail),
            (Answer::Failed("timeout".into()), Status::Unknown),
        ];
        for (answer, want) in cases {
            let facts = DkimFacts {
                keys: vec![key(answer.clone())],
                selectors: vec![],
            };
            let checks = judge(d, &[&r], &facts);
            assert_eq!(checks.len(), 1);
            assert_eq!(checks[0].status, want, "{answer:?}: {checks:?}");
            if want == Status::Fail {
                let rec = checks[0].record.as_ref().unwrap();
                assert_eq!(rec.name, "s1._domainkey.a.example");
                assert_eq!(rec.value, "v=DKIM1; k=ed25519; p=AQID");
            }
        }
    }

    #[test]
    fn provider_selectors_without_a_postern_key() {
        let d = "a.example";
        let sel = |s: &str, cname: Answer<Vec<String>>, txt: Answer<Vec<String>>| SelectorFacts {
            selector: s.into(),
            cname,
            txt,
        };
        let cn = || {
            Answer::Found(vec![
                "selector1-a-example._domainkey.t.onmicrosoft.com".into(),
            ])
        };
        let m365 = relay(Provider::Microsoft365);
        let both = DkimFacts {
            keys: vec![],
            selectors: vec![
                sel("selector1", cn(), Answer::NoRecord),
                sel("selector2", cn(), Answer::NoRecord),
            ],
        };
        assert_eq!(judge(d, &[&m365], &both)[0].status, Status::Ok);
        let one = DkimFacts {
            keys: vec![],
            selectors: vec![
                sel("selector1", cn(), Answer::NoRecord),
                sel("selector2", Answer::NoDomain, Answer::NoDomain),
            ],
        };
        let c = &judge(d, &[&m365], &one)[0];
        assert_eq!(c.status, Status::Fail);
        assert!(c.found.contains("selector2._domainkey.a.example"), "{c:?}");
        let google = relay(Provider::Google);
        let g = DkimFacts {
            keys: vec![],
            selectors: vec![sel(
                "google",
                Answer::NoRecord,
                txt("v=DKIM1; k=rsa; p=MIIB"),
            )],
        };
        assert_eq!(judge(d, &[&google], &g)[0].status, Status::Ok);
        let revoked = DkimFacts {
            keys: vec![],
            selectors: vec![sel("google", Answer::NoRecord, txt("v=DKIM1; p="))],
        };
        assert_eq!(judge(d, &[&google], &revoked)[0].status, Status::Fail);
        let silent = DkimFacts {
            keys: vec![],
            selectors: vec![sel(
                "google",
                Answer::Failed("x".into()),
                Answer::Failed("x".into()),
            )],
        };
        assert_eq!(judge(d, &[&google], &silent)[0].status, Status::Unknown);
        // SES's selectors cannot be guessed: a warning that says where to look.
        let ses = judge(d, &[&relay(Provider::AmazonSes)], &DkimFacts::default());
        assert_eq!(ses[0].status, Status::Warn);
        assert!(
            ses[0]
                .fix
                .as_ref()
                .unwrap()
                .contains("postern dkim generate a.example")
        );
    }

    #[test]
    fn alignment_from_the_checks() {
        let ok = Check::ok("dkim", "x");
        let fail = Check::fail("dkim", "x", "y");
        let warn = Check::warn("dkim", "x", "y");
        assert_eq!(aligned(&[fail.clone(), ok]), Some(true));
        assert_eq!(aligned(std::slice::from_ref(&fail)), Some(false));
        assert_eq!(aligned(&[warn]), None);
        assert_eq!(aligned(&[]), None);
    }
}
