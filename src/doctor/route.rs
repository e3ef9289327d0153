//! Which smarthosts a domain's mail leaves through, and who runs them.
//!
//! The same choice as delivery makes (`upstream::Relays::route`): the first of
//! `routes` whose `match` allows the sender, else the top-level `smarthost`. A
//! domain can be split (`alerts@d` routed one way, `@d` another), so the answer is
//! a list of legs, one per group of the domain's senders. Pure.

use crate::config::{Config, SenderRule, Smarthost, Transport};
use serde::Serialize;

/// Who runs a smarthost: what SPF include and DKIM selectors to expect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Provider {
    #[serde(rename = "amazon-ses")]
    AmazonSes,
    #[serde(rename = "mailgun")]
    Mailgun,
    #[serde(rename = "brevo")]
    Brevo,
    #[serde(rename = "microsoft-365")]
    Microsoft365,
    #[serde(rename = "google")]
    Google,
    /// A server of one's own (a hosting provider's MTA…): SPF must list its
    /// addresses, and its address needs a PTR.
    #[serde(rename = "other")]
    Other,
}

impl Provider {
    /// Recognises the provider from the smarthost's host name (or transport).
    pub fn of(s: &Smarthost) -> Provider {
        if s.transport == Transport::Graph {
            return Provider::Microsoft365;
        }
        let host = s.host.trim_end_matches('.').to_ascii_lowercase();
        let under = |suffix: &str| host == suffix || host.ends_with(&format!(".{suffix}"));
        if host.starts_with("email-smtp.") && under("amazonaws.com") {
            Provider::AmazonSes
        } else if under("mailgun.org") {
            Provider::Mailgun
        } else if under("brevo.com") || under("sendinblue.com") {
            Provider::Brevo
        } else if host == "smtp.office365.com"
            || host == "smtp-mail.outlook.com"
            || under("protection.outlook.com")
        {
            Provider::Microsoft365
        } else if under("gmail.com") || under("google.com") || under("googlemail.com") {
            Provider::Google
        } else {
            Provider::Other
        }
    }

    /// The name an owner knows.
    pub fn name(self) -> &'static str {
        match self {
            Provider::AmazonSes => "Amazon SES",
            Provider::Mailgun => "Mailgun",
            Provider::Brevo => "Brevo",
            Provider::Microsoft365 => "Microsoft 365",
            Provider::Google => "Google Workspace",
            Provider::Other => "your own server",
        }
    }

    /// The SPF includes that authorise the provider's servers; the first is the
    /// one to recommend. Empty for [`Provider::Other`].
    pub fn spf_includes(self) -> &'static [&'static str] {
        match self {
            Provider::AmazonSes => &["amazonses.com"],
            Provider::Mailgun => &["mailgun.org"],
            Provider::Brevo => &["spf.brevo.com", "spf.sendinblue.com", "sendinblue.com"],
            Provider::Microsoft365 => &["spf.protection.outlook.com"],
            Provider::Google => &["_spf.google.com"],
            Provider::Other => &[],
        }
    }

    /// Whether the envelope sender (Return-Path) stays the customer's address:
    /// SES, Mailgun and Brevo put their own bounce domain there unless a custom
    /// MAIL FROM domain is set up, so SPF then does not align with the From domain.
    pub fn keeps_envelope_sender(self) -> bool {
        matches!(
            self,
            Provider::Microsoft365 | Provider::Google | Provider::Other
        )
    }
}

/// One smarthost entry as the doctor sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Relay {
    /// `host:port`, or `graph:MAILBOX` for a Graph entry.
    pub name: String,
    /// The host name (empty for Graph).
    pub host: String,
    pub provider: Provider,
}

impl Relay {
    pub fn of(s: &Smarthost) -> Relay {
        let name = match s.transport {
            Transport::Graph => format!("graph:{}", s.username.as_deref().unwrap_or("")),
            Transport::Smtp => format!("{}:{}", s.host, s.port),
        };
        Relay {
            name,
            host: s.host.clone(),
            provider: Provider::of(s),
        }
    }
}

/// Some of a domain's senders and where their mail goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Leg {
    /// `@domain` (every sender not routed otherwise) or one address.
    pub senders: String,
    /// `smarthost` or `routes[N]`: the config entry that decides.
    pub source: String,
    /// The smarthosts in failover order.
    pub relays: Vec<Relay>,
}

/// Where mail from `domain` goes: one leg per address routed on its own, then one
/// for the rest of the domain.
pub fn legs(config: &Config, domain: &str) -> Vec<Leg> {
    let relays = |hosts: &[Smarthost]| hosts.iter().map(Relay::of).collect::<Vec<_>>();
    let mut legs: Vec<Leg> = Vec::new();
    for (i, route) in config.routes.iter().enumerate() {
        let senders = match &route.rule {
            SenderRule::Domain(d) if d == domain => format!("@{domain}"),
            SenderRule::Address(a) if a.rsplit_once('@').is_some_and(|(_, d)| d == domain) => {
                a.clone()
            }
            _ => continue,
        };
        if legs.iter().any(|l| l.senders == senders) {
            continue; // an earlier route already took this address
        }
        let whole_domain = senders.starts_with('@');
        legs.push(Leg {
            senders,
            source: format!("routes[{i}]"),
            relays: relays(&route.smarthosts),
        });
        if whole_domain {
            return legs;
        }
    }
    legs.push(Leg {
        senders: format!("@{domain}"),
        source: "smarthost".into(),
        relays: relays(&config.smarthosts),
    });
    legs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(yaml_routes: &str) -> Config {
        let yaml = format!(
            "listeners:\n  - address: \"127.0.0.1:0\"\n    tls: none\n\
             users:\n  file: users.yaml\n\
             smarthost:\n  address: \"email-smtp.eu-west-1.amazonaws.com:587\"\n{yaml_routes}"
        );
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("users.yaml"), "users: []\n").unwrap();
        let path = dir.path().join("postern.yaml");
        std::fs::write(&path, yaml).unwrap();
        Config::load(&path).unwrap().0
    }

    #[test]
    fn providers_are_recognised_by_host() {
        let cases = [
            ("email-smtp.eu-west-1.amazonaws.com", Provider::AmazonSes),
            ("ec2-1-2-3-4.compute.amazonaws.com", Provider::Other),
            ("smtp.eu.mailgun.org", Provider::Mailgun),
            ("smtp-relay.brevo.com", Provider::Brevo),
            ("smtp-relay.sendinblue.com", Provider::Brevo),
            ("smtp.office365.com", Provider::Microsoft365),
            (
                "contoso-com.mail.protection.outlook.com",
                Provider::Microsoft365,
            ),
            ("smtp-relay.gmail.com", Provider::Google),
            ("SMTP.Gmail.com.", Provider::Google),
            ("relay.hosting.example", Provider::Other),
            ("notmailgun.org", Provider::Other),
        ];
        let c = config("");
        for (host, want) in cases {
            let mut s = c.smarthosts[0].clone();
            s.host = host.into();
            assert_eq!(Provider::of(&s), want, "{host}");
        }
        let mut graph = c.smarthosts[0].clone();
        graph.transport = Transport::Graph;
        assert_eq!(Provider::of(&graph), Provider::Microsoft365);
    }

    #[test]
    fn a_domain_takes_its_route_or_the_default() {
        let c = config(
            "routes:\n\
             \x20 - match: \"alerts@a.example\"\n    smarthost:\n      address: \"smtp.eu.mailgun.org:587\"\n\
             \x20 - match: \"@a.example\"\n    smarthost:\n      address: \"smtp-relay.brevo.com:587\"\n\
             \x20 - match: \"@b.example\"\n    smarthost:\n      address: \"relay.hosting.example:25\"\n",
        );
        let a = legs(&c, "a.example");
        let seen: Vec<(&str, &str, Provider)> = (a.iter())
            .map(|l| (&*l.senders, &*l.source, l.relays[0].provider))
            .collect();
        assert_eq!(
            seen,
            [
                ("alerts@a.example", "routes[0]", Provider::Mailgun),
                ("@a.example", "routes[1]", Provider::Brevo),
            ]
        );
        let b = legs(&c, "b.example");
        assert_eq!(b.len(), 1);
        assert_eq!(b[0].relays[0].name, "relay.hosting.example:25");
        let other = legs(&c, "c.example");
        assert_eq!(other.len(), 1);
        assert_eq!(other[0].source, "smarthost");
        assert_eq!(other[0].relays[0].provider, Provider::AmazonSes);
    }
}
