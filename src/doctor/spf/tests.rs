use super::tree::MAX_DEPTH;
use super::*;
use crate::doctor::route::Provider;

/// Facts with these TXT records; any other name does not exist.
fn facts(records: &[(&str, &str)]) -> SpfFacts {
    let mut f = SpfFacts::default();
    for (name, text) in records {
        let entry = f
            .txt
            .entry(name.to_string())
            .or_insert(Answer::Found(vec![]));
        if let Answer::Found(v) = entry {
            v.push(text.to_string());
        }
    }
    f
}

/// `facts`, with every include target it names answered NXDOMAIN unless given.
fn walked(records: &[(&str, &str)]) -> SpfFacts {
    let mut f = facts(records);
    for _ in 0..MAX_DEPTH {
        let names: Vec<String> = f.txt.keys().cloned().collect();
        for n in names {
            if let At::Record(spf, _) = at(&f, &n) {
                for t in next_names(&spf) {
                    f.txt.entry(t).or_insert(Answer::NoDomain);
                }
            }
        }
    }
    f
}

fn relay(provider: Provider, host: &str) -> Relay {
    Relay {
        name: format!("{host}:587"),
        host: host.into(),
        provider,
    }
}

fn status_of(checks: &[Check], id: &str) -> Status {
    checks.iter().find(|c| c.id == id).unwrap().status
}

#[test]
fn spf_records_are_recognised() {
    for (r, want) in [
        ("v=spf1 -all", true),
        ("V=SPF1 include:x.example ~all", true),
        ("v=spf1", true),
        ("v=spf10 -all", false),
        ("v=spf1-all", false),
        ("google-site-verification=abc", false),
        ("", false),
        ("é", false),
    ] {
        assert_eq!(is_spf(r), want, "{r:?}");
    }
}

#[test]
fn the_record_must_exist_once_and_parse() {
    let d = "a.example";
    let ses = relay(Provider::AmazonSes, "email-smtp.eu-west-1.amazonaws.com");
    let cases: Vec<(SpfFacts, Status, &str)> = vec![
        (
            facts(&[(d, "google-site-verification=x")]),
            Status::Fail,
            "has no SPF record",
        ),
        (SpfFacts::default(), Status::Unknown, "not looked up"),
        (
            facts(&[(d, "v=spf1 -all"), (d, "v=spf1 include:amazonses.com -all")]),
            Status::Fail,
            "has 2 SPF records",
        ),
        (
            facts(&[(d, "v=spf1 include -all")]),
            Status::Fail,
            "does not parse",
        ),
        (
            walked(&[
                (d, "v=spf1 include:amazonses.com -all"),
                ("amazonses.com", "v=spf1 ip4:192.0.2.0/24 -all"),
            ]),
            Status::Ok,
            "v=spf1",
        ),
    ];
    for (f, want, says) in cases {
        let checks = judge(d, &[&ses], &f);
        let c = &checks[0];
        assert_eq!((c.id, c.status), ("spf.record", want), "{c:?}");
        assert!(c.found.contains(says), "{c:?}");
        if want == Status::Fail {
            assert_eq!(
                c.record.as_ref().unwrap().value,
                "v=spf1 include:amazonses.com ~all"
            );
        }
    }
    let mut failed = SpfFacts::default();
    failed
        .txt
        .insert(d.into(), Answer::Failed("SERVFAIL".into()));
    assert_eq!(judge(d, &[&ses], &failed)[0].status, Status::Unknown);
}

#[test]
fn known_providers_are_authorised_by_their_include_anywhere_in_the_tree() {
    let d = "a.example";
    let cases = [
        (
            Provider::AmazonSes,
            "v=spf1 include:amazonses.com -all",
            Status::Ok,
        ),
        (
            Provider::AmazonSes,
            "v=spf1 include:_spf.a.example -all",
            Status::Ok,
        ),
        (
            Provider::AmazonSes,
            "v=spf1 -include:amazonses.com -all",
            Status::Fail,
        ),
        (
            Provider::Mailgun,
            "v=spf1 include:amazonses.com -all",
            Status::Fail,
        ),
        (
            Provider::Brevo,
            "v=spf1 include:spf.sendinblue.com ~all",
            Status::Ok,
        ),
        (
            Provider::Microsoft365,
            "v=spf1 include:spf.protection.outlook.com -all",
            Status::Ok,
        ),
        (
            Provider::Google,
            "v=spf1 redirect=_spf.a.example",
            Status::Ok,
        ),
        (
            Provider::Google,
            "v=spf1 include:missing.example -all",
            Status::Fail,
        ),
    ];
    for (provider, record, want) in cases {
        let f = walked(&[
            (d, record),
            (
                "_spf.a.example",
                "v=spf1 include:amazonses.com include:_spf.google.com -all",
            ),
            ("amazonses.com", "v=spf1 ip4:192.0.2.0/24 -all"),
            ("_spf.google.com", "v=spf1 ip4:198.51.100.0/24 -all"),
            ("spf.sendinblue.com", "v=spf1 ip4:203.0.113.0/24 -all"),
            (
                "spf.protection.outlook.com",
                "v=spf1 ip4:203.0.113.0/24 -all",
            ),
        ]);
        let r = relay(provider, "smtp.provider.example");
        let checks = judge(d, &[&r], &f);
        let c = checks.iter().find(|c| c.id == "spf.authorises").unwrap();
        assert_eq!(c.status, want, "{provider:?} {record}: {c:?}");
        assert_eq!(c.subject.as_deref(), Some("smtp.provider.example:587"));
        if want == Status::Fail {
            let include = format!("include:{}", provider.spf_includes()[0]);
            let fixed = &c.record.as_ref().unwrap().value;
            assert!(fixed.contains(&include), "{fixed}");
            assert!(fixed.ends_with("-all"), "{fixed}");
        }
    }
    // An include that could not be looked up: unknown, not fail.
    let mut f = walked(&[(d, "v=spf1 include:_spf.a.example -all")]);
    f.txt
        .insert("_spf.a.example".into(), Answer::Failed("timeout".into()));
    let r = relay(Provider::AmazonSes, "email-smtp.x.amazonaws.com");
    assert_eq!(
        status_of(&judge(d, &[&r], &f), "spf.authorises"),
        Status::Unknown
    );
    assert_eq!(
        status_of(&judge(d, &[&r], &f), "spf.lookups"),
        Status::Unknown
    );
}

#[test]
fn own_servers_are_authorised_by_evaluation() {
    let d = "a.example";
    let ip: IpAddr = "192.0.2.25".parse().unwrap();
    let private: IpAddr = "10.1.2.3".parse().unwrap();
    let r = relay(Provider::Other, "relay.example");
    let cases: Vec<(Evaluation, Status)> = vec![
        (Answer::Found(vec![(ip, SpfResult::Pass)]), Status::Ok),
        (Answer::Found(vec![(ip, SpfResult::SoftFail)]), Status::Fail),
        (Answer::Found(vec![(ip, SpfResult::Neutral)]), Status::Fail),
        (
            Answer::Found(vec![(ip, SpfResult::TempError)]),
            Status::Unknown,
        ),
        (
            Answer::Found(vec![(ip, SpfResult::PermError)]),
            Status::Fail,
        ),
        (
            Answer::Found(vec![(private, SpfResult::None)]),
            Status::Warn,
        ),
        (Answer::NoDomain, Status::Warn),
        (Answer::Failed("timeout".into()), Status::Unknown),
    ];
    for (evaluation, want) in cases {
        let mut f = facts(&[(d, "v=spf1 mx -all")]);
        f.evaluations.push((r.name.clone(), evaluation.clone()));
        let checks = judge(d, &[&r], &f);
        assert_eq!(status_of(&checks, "spf.authorises"), want, "{evaluation:?}");
    }
    let mut f = facts(&[(d, "v=spf1 mx -all")]);
    f.evaluations
        .push((r.name.clone(), Answer::Found(vec![(ip, SpfResult::Fail)])));
    let checks = judge(d, &[&r], &f);
    let c = checks.iter().find(|c| c.id == "spf.authorises").unwrap();
    assert_eq!(
        c.record.as_ref().unwrap().value,
        "v=spf1 mx ip4:192.0.2.25 -all"
    );
}

#[test]
fn lookups_are_counted_through_includes_and_redirects() {
    let d = "a.example";
    let ok = walked(&[
        (d, "v=spf1 a mx include:one.example ip4:192.0.2.1 -all"),
        (
            "one.example",
            "v=spf1 include:two.example exists:%{i}.x.example -all",
        ),
        ("two.example", "v=spf1 ptr ip6:2001:db8::/32 -all"),
    ]);
    let l = lookups(&ok, d);
    assert_eq!(
        l,
        Lookups {
            count: 6,
            ..Default::default()
        }
    );
    // Eleven a: terms: over the limit.
    let many = format!(
        "v=spf1 {} -all",
        (0..11)
            .map(|i| format!("a:h{i}.example"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    let f = walked(&[(d, &many)]);
    assert_eq!(lookups(&f, d).count, 11);
    assert_eq!(status_of(&judge(d, &[], &f), "spf.lookups"), Status::Fail);
    // A redirect counts when there is no all, and is followed.
    let f = walked(&[
        (d, "v=spf1 redirect=r.example"),
        ("r.example", "v=spf1 mx -all"),
    ]);
    assert_eq!(lookups(&f, d).count, 2);
    // Loops, missing includes and macros.
    let f = walked(&[
        (d, "v=spf1 include:l.example -all"),
        ("l.example", "v=spf1 include:a.example -all"),
    ]);
    assert_eq!(
        lookups(&f, d).broken,
        vec!["a.example (a loop)".to_string()]
    );
    let f = walked(&[(d, "v=spf1 include:gone.example -all")]);
    assert_eq!(
        lookups(&f, d).broken,
        vec!["gone.example (no SPF record)".to_string()]
    );
    assert_eq!(status_of(&judge(d, &[], &f), "spf.lookups"), Status::Fail);
    let f = walked(&[(d, "v=spf1 include:%{d}.spf.example -all")]);
    assert_eq!(
        lookups(&f, d),
        Lookups {
            count: 1,
            macros: 1,
            ..Default::default()
        }
    );
    let checks = judge(d, &[], &f);
    let c = checks.iter().find(|c| c.id == "spf.lookups").unwrap();
    assert_eq!(
        (c.status, c.found.as_str()),
        (Status::Ok, "at least 1 of 10 DNS lookups")
    );
}

#[test]
fn the_all_term() {
    let d = "a.example";
    let cases = [
        ("v=spf1 mx -all", Status::Ok, None),
        ("v=spf1 mx ~all", Status::Ok, None),
        ("v=spf1 mx ?all", Status::Warn, Some("v=spf1 mx ~all")),
        ("v=spf1 mx +all", Status::Fail, Some("v=spf1 mx ~all")),
        ("v=spf1 mx all", Status::Fail, Some("v=spf1 mx ~all")),
        ("v=spf1 mx", Status::Warn, Some("v=spf1 mx ~all")),
        ("v=spf1 redirect=r.example", Status::Ok, None),
    ];
    for (record, want, fixed) in cases {
        let f = walked(&[(d, record), ("r.example", "v=spf1 -all")]);
        let checks = judge(d, &[], &f);
        let c = checks.iter().find(|c| c.id == "spf.all").unwrap();
        assert_eq!(c.status, want, "{record}: {c:?}");
        assert_eq!(
            c.record.as_ref().map(|r| r.value.as_str()),
            fixed,
            "{record}"
        );
    }
}

#[test]
fn records_are_edited_in_place() {
    assert_eq!(
        with_mechanism("v=spf1 mx -all", "include:amazonses.com"),
        "v=spf1 mx include:amazonses.com -all"
    );
    assert_eq!(
        with_mechanism("v=spf1 mx redirect=x.example", "ip4:192.0.2.1"),
        "v=spf1 mx ip4:192.0.2.1 redirect=x.example"
    );
    assert_eq!(with_mechanism("v=spf1 mx", "a"), "v=spf1 mx a");
    assert_eq!(with_mechanism("v=spf1 a -all", "a"), "v=spf1 a -all");
    assert_eq!(with_all("v=spf1 mx +all", "~all"), "v=spf1 mx ~all");
    let own = relay(Provider::Other, "192.0.2.7");
    let named = relay(Provider::Other, "relay.example");
    let mg = relay(Provider::Mailgun, "smtp.mailgun.org");
    assert_eq!(
        suggested_record(&[&own, &named, &mg]),
        "v=spf1 ip4:192.0.2.7 a:relay.example include:mailgun.org ~all"
    );
}

#[test]
fn spf_alignment_needs_authorisation_and_a_kept_envelope_sender() {
    let d = "a.example";
    let f = walked(&[
        (
            d,
            "v=spf1 include:amazonses.com include:spf.protection.outlook.com -all",
        ),
        ("amazonses.com", "v=spf1 -all"),
        ("spf.protection.outlook.com", "v=spf1 -all"),
    ]);
    let ses = relay(Provider::AmazonSes, "email-smtp.x.amazonaws.com");
    let m365 = relay(Provider::Microsoft365, "smtp.office365.com");
    assert_eq!(aligned(&judge(d, &[&m365], &f), &[&m365]), Some(true));
    assert_eq!(aligned(&judge(d, &[&ses], &f), &[&ses]), Some(false));
    let none = facts(&[]);
    let mut failed = none.clone();
    failed.txt.insert(d.into(), Answer::Failed("x".into()));
    assert_eq!(aligned(&judge(d, &[&m365], &failed), &[&m365]), None);
}
