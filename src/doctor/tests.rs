//! The whole judgement of a domain, from facts to checks.

use super::gather::Facts;
use super::route::{Leg, Provider, Relay};
use super::*;
use crate::dkim::published::Published;
use crate::dns::Answer;
use mail_auth::SpfResult;

fn found<T>(t: T) -> Answer<T> {
    Answer::Found(t)
}

fn txt(s: &str) -> Answer<Vec<String>> {
    found(vec![s.to_string()])
}

fn own_relay_leg() -> Vec<Leg> {
    vec![Leg {
        senders: "@a.example".into(),
        source: "smarthost".into(),
        relays: vec![Relay {
            name: "relay.example:25".into(),
            host: "relay.example".into(),
            provider: Provider::Other,
        }],
    }]
}

/// A domain that does everything right behind a server of its own.
fn good() -> Facts {
    let ip = "192.0.2.25".parse().unwrap();
    let mut spf = spf::SpfFacts::default();
    spf.txt
        .insert("a.example".into(), txt("v=spf1 a:relay.example -all"));
    spf.evaluations.push((
        "relay.example:25".into(),
        found(vec![(ip, SpfResult::Pass)]),
    ));
    Facts {
        spf,
        dkim: dkim::DkimFacts {
            keys: vec![dkim::KeyFacts {
                selector: "s1".into(),
                algorithm: "ed25519",
                public_key: Ok(vec![1, 2, 3]),
                txt: txt("v=DKIM1; k=ed25519; p=AQID"),
            }],
            selectors: vec![],
        },
        dmarc: vec![(
            "a.example".into(),
            txt("v=DMARC1; p=reject; rua=mailto:dmarc@a.example"),
        )],
        mx: found(vec![(10, "mx.a.example".into())]),
        ptr: vec![mx::PtrFacts {
            relay: "relay.example:25".into(),
            host: "relay.example".into(),
            addresses: found(vec![ip]),
            reverse: vec![mx::Reverse {
                ip,
                names: found(vec!["relay.example".into()]),
                forward: vec![("relay.example".into(), found(vec![ip]))],
            }],
        }],
    }
}

#[test]
fn a_good_domain_passes_every_check() {
    let checks = judge("a.example", &own_relay_leg(), &good());
    let ids: Vec<&str> = checks.iter().map(|c| c.id).collect();
    assert_eq!(
        ids,
        [
            "spf.record",
            "spf.authorises",
            "spf.lookups",
            "spf.all",
            "dkim",
            "dmarc.record",
            "dmarc.policy",
            "dmarc.rua",
            "dmarc.alignment",
            "mx",
            "ptr"
        ]
    );
    for c in &checks {
        assert_eq!(c.status, Status::Ok, "{c:?}");
        assert!(c.fix.is_none(), "{c:?}");
    }
}

#[test]
fn dns_failures_are_unknown_never_fail() {
    fn failed<T>() -> Answer<T> {
        Answer::Failed("SERVFAIL".to_string())
    }
    let mut f = good();
    f.spf.txt.insert("a.example".into(), failed());
    f.dkim.keys[0].txt = failed();
    f.dmarc = vec![("a.example".into(), failed())];
    f.mx = failed();
    f.ptr[0].addresses = failed();
    let checks = judge("a.example", &own_relay_leg(), &f);
    for c in &checks {
        assert!(matches!(c.status, Status::Unknown | Status::Warn), "{c:?}");
    }
    let report = Report::new(vec![DomainReport {
        domain: "a.example".into(),
        status: Status::Unknown,
        routes: own_relay_leg(),
        checks: checks
            .into_iter()
            .filter(|c| c.status == Status::Unknown)
            .collect(),
    }]);
    assert!(report.dns_silent());
    assert_eq!(report.status, Status::Unknown);
}

#[test]
fn the_worst_status_wins() {
    assert!(Status::Fail > Status::Warn && Status::Warn > Status::Unknown);
    assert!(Status::Unknown > Status::Ok);
    let _ = Published::Matches; // the DKIM comparison is dkim::published's
}

#[test]
fn sender_domains_come_from_every_users_senders() {
    use crate::config::{Problems, RateLimits, parse_users};
    let yaml = "users:\n\
        \x20 - name: a\n    networks: [\"192.0.2.0/24\"]\n    senders: [\"@B.example\", \"alerts@a.example\"]\n\
        \x20 - name: b\n    networks: [\"198.51.100.0/24\"]\n    senders: [\"x@a.example\", \"@c.example\"]\n";
    let mut problems = Problems::default();
    let users = parse_users(
        yaml,
        std::path::Path::new("users.yaml"),
        &RateLimits::default(),
        &mut problems,
    );
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(
        sender_domains(&users.unwrap()),
        ["a.example", "b.example", "c.example"]
    );
}
