//! DMARC verdicts (pure): a record exists (at the domain, or inherited from a
//! parent), parses (mail-auth's parser), has a policy that protects, asks for
//! aggregate reports, and DKIM or SPF can align with the From domain.

use super::{Check, Status};
use crate::dns::Answer;
use mail_auth::common::parse::TxtRecordParser;
use mail_auth::dmarc::{Alignment, Dmarc, Policy};

/// The TXT answer at `_dmarc.OWNER`, with the owner domain.
pub type DmarcAt = (String, Answer<Vec<String>>);

/// The names where a domain's DMARC record is looked for, in order: the domain's
/// own, then each parent's down to two labels (a simple stand-in for the
/// organisational domain, which would need the public suffix list).
pub fn candidates(domain: &str) -> Vec<(String, String)> {
    let labels: Vec<&str> = domain.split('.').collect();
    (0..labels.len().saturating_sub(1))
        .map(|i| {
            let owner = labels[i..].join(".");
            (owner.clone(), format!("_dmarc.{owner}"))
        })
        .collect()
}

/// Whether a TXT record is a DMARC record.
pub fn is_dmarc(record: &str) -> bool {
    let r = record.trim_start();
    r.get(..8)
        .is_some_and(|v| v.eq_ignore_ascii_case("v=DMARC1"))
}

/// `record` with tag `name` set to `value` (replaced, or added at the end).
pub fn with_tag(record: &str, name: &str, value: &str) -> String {
    let mut tags: Vec<String> = (record.split(';'))
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
        .collect();
    let new = format!("{name}={value}");
    match (tags.iter_mut()).find(|t| t.split_once('=').is_some_and(|(k, _)| k.trim() == name)) {
        Some(t) => *t = new,
        None => tags.push(new),
    }
    tags.join("; ")
}

/// The record to publish when there is none.
pub fn suggested_record(domain: &str) -> String {
    format!("v=DMARC1; p=none; rua=mailto:dmarc-reports@{domain}")
}

/// Every DMARC check. `facts` are the TXT answers at [`candidates`]' names (the
/// owner domain and the answer), in order; `dkim_aligned` and `spf_aligned` are
/// what the DKIM and SPF checks make plausible.
pub fn judge(
    domain: &str,
    facts: &[DmarcAt],
    dkim_aligned: Option<bool>,
    spf_aligned: Option<bool>,
) -> Vec<Check> {
    let name = format!("_dmarc.{domain}");
    let found = match first_record(facts) {
        Ok(found) => found,
        Err(e) => return vec![Check::unknown("dmarc.record", e)],
    };
    let Some((owner, records)) = found else {
        let suggestion = suggested_record(domain);
        return vec![
            Check::fail(
                "dmarc.record",
                format!("{domain} has no DMARC record; Gmail and Yahoo require one from bulk senders since 2024"),
                format!("publish a TXT record at {name}: {suggestion} (then p=quarantine once the reports show your mail passing)"),
            )
            .record(&name, "TXT", suggestion),
        ];
    };
    let at = format!("_dmarc.{owner}");
    if records.len() > 1 {
        return vec![Check::fail(
            "dmarc.record",
            format!(
                "{at} has {} DMARC records, so receivers ignore them all",
                records.len()
            ),
            format!("keep one TXT record at {at}"),
        )];
    }
    let text = records[0].trim().to_string();
    let dmarc = match Dmarc::parse(text.as_bytes()) {
        Ok(d) => d,
        Err(e) => {
            return vec![
                Check::fail(
                    "dmarc.record",
                    format!("the DMARC record at {at} does not parse ({e}): {text}"),
                    format!(
                        "replace it with a valid one, such as: {}",
                        suggested_record(owner)
                    ),
                )
                .record(&at, "TXT", suggested_record(owner)),
            ];
        }
    };
    let inherited = if owner == domain {
        String::new()
    } else {
        format!(" (inherited from {owner})")
    };
    vec![
        Check::ok("dmarc.record", format!("{text}{inherited}")),
        policy_check(domain, &at, &text, &dmarc, owner != domain),
        rua_check(&at, &text, owner, &dmarc),
        alignment_check(domain, &dmarc, dkim_aligned, spf_aligned),
    ]
}

/// The first candidate with DMARC records: its owner and those records. An error
/// when DNS failed before one was found.
fn first_record(facts: &[DmarcAt]) -> Result<Option<(&String, Vec<&String>)>, &str> {
    for (owner, answer) in facts {
        match answer {
            Answer::Failed(e) => return Err(e),
            Answer::Found(records) => {
                let dmarc: Vec<&String> = records.iter().filter(|r| is_dmarc(r)).collect();
                if !dmarc.is_empty() {
                    return Ok(Some((owner, dmarc)));
                }
            }
            Answer::NoRecord | Answer::NoDomain => {}
        }
    }
    Ok(None)
}

/// The policy that applies to `domain`: `sp` when inherited and set, else `p`.
fn effective(dmarc: &Dmarc, inherited: bool) -> Policy {
    if inherited && dmarc.sp != Policy::Unspecified {
        dmarc.sp
    } else {
        dmarc.p
    }
}

fn policy_check(domain: &str, at: &str, text: &str, dmarc: &Dmarc, inherited: bool) -> Check {
    match effective(dmarc, inherited) {
        Policy::Quarantine => Check::ok(
            "dmarc.policy",
            "quarantine: mail that fails DMARC goes to spam",
        ),
        Policy::Reject => Check::ok("dmarc.policy", "reject: mail that fails DMARC is refused"),
        Policy::None | Policy::Unspecified => {
            let tag = if inherited { "sp" } else { "p" };
            let fixed = with_tag(text, tag, "quarantine");
            Check::warn(
                "dmarc.policy",
                format!("{tag}=none: receivers deliver mail that fails DMARC, so forgers of {domain} are not stopped"),
                format!("once the reports show all your own mail passing, change the TXT record at {at} to: {fixed}"),
            )
            .record(at, "TXT", fixed)
        }
    }
}

fn rua_check(at: &str, text: &str, owner: &str, dmarc: &Dmarc) -> Check {
    if !dmarc.rua.is_empty() {
        let to: Vec<&str> = dmarc.rua.iter().map(|u| u.uri()).collect();
        return Check::ok("dmarc.rua", format!("reports go to {}", to.join(", ")));
    }
    let fixed = with_tag(text, "rua", &format!("mailto:dmarc-reports@{owner}"));
    Check::warn(
        "dmarc.rua",
        "no rua: nobody receives the aggregate reports that show who sends as this domain",
        format!("add a mailbox that exists; change the TXT record at {at} to: {fixed}"),
    )
    .record(at, "TXT", fixed)
}

fn alignment_check(domain: &str, dmarc: &Dmarc, dkim: Option<bool>, spf: Option<bool>) -> Check {
    const ID: &str = "dmarc.alignment";
    let strict = match (dmarc.adkim, dmarc.aspf) {
        (Alignment::Strict, _) | (_, Alignment::Strict) => {
            " (strict alignment: the domains must match exactly)"
        }
        _ => "",
    };
    let sign = format!(
        "sign as {domain}: run `postern dkim generate {domain}` and publish the record it prints"
    );
    match (dkim, spf) {
        (Some(true), _) => Check::ok(ID, format!("DKIM signatures for {domain} align{strict}")),
        (_, Some(true)) => Check::ok(
            ID,
            format!("SPF aligns: the smarthost keeps the envelope sender at {domain}{strict}"),
        ),
        (Some(false), Some(false)) => {
            let status = match dmarc.p {
                Policy::Quarantine | Policy::Reject => Status::Fail,
                _ => Status::Warn,
            };
            let mut c = Check::warn(
                ID,
                format!("neither DKIM nor SPF aligns with {domain}, so its mail fails DMARC"),
                sign,
            );
            c.status = status;
            c
        }
        _ => Check::warn(
            ID,
            format!("cannot confirm that DKIM or SPF aligns with {domain}{strict}"),
            format!("make sure the provider signs with d={domain}, or {sign}"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(owner: &str, r: &str) -> DmarcAt {
        (owner.into(), Answer::Found(vec![r.to_string()]))
    }

    fn statuses(checks: &[Check]) -> Vec<(&'static str, Status)> {
        checks.iter().map(|c| (c.id, c.status)).collect()
    }

    #[test]
    fn records_policies_and_reports() {
        use Status::*;
        let d = "a.example";
        let none: DmarcAt = (d.into(), Answer::NoDomain);
        type Case = (Vec<DmarcAt>, Vec<(&'static str, Status)>);
        let cases: Vec<Case> = vec![
            (vec![none.clone()], vec![("dmarc.record", Fail)]),
            (
                vec![(d.into(), Answer::Found(vec!["v=spf1 -all".into()]))],
                vec![("dmarc.record", Fail)],
            ),
            (
                vec![(d.into(), Answer::Failed("SERVFAIL".into()))],
                vec![("dmarc.record", Unknown)],
            ),
            (
                vec![found(d, "v=DMARC1; p=reject; rua=mailto:r@a.example")],
                vec![
                    ("dmarc.record", Ok),
                    ("dmarc.policy", Ok),
                    ("dmarc.rua", Ok),
                    ("dmarc.alignment", Ok),
                ],
            ),
            (
                vec![found(d, "v=DMARC1; p=none")],
                vec![
                    ("dmarc.record", Ok),
                    ("dmarc.policy", Warn),
                    ("dmarc.rua", Warn),
                    ("dmarc.alignment", Ok),
                ],
            ),
            (
                vec![found(d, "v=DMARC1; p=bogus")],
                vec![("dmarc.record", Fail)],
            ),
            (
                vec![(
                    d.into(),
                    Answer::Found(vec!["v=DMARC1; p=none".into(), "v=DMARC1; p=reject".into()]),
                )],
                vec![("dmarc.record", Fail)],
            ),
        ];
        for (facts, want) in cases {
            let got = judge(d, &facts, Some(true), None);
            assert_eq!(statuses(&got), want, "{facts:?}: {got:?}");
        }
    }

    #[test]
    fn a_parent_record_applies_with_its_subdomain_policy() {
        let facts = vec![
            ("mail.a.example".to_string(), Answer::NoDomain),
            found(
                "a.example",
                "v=DMARC1; p=reject; sp=none; rua=mailto:r@a.example",
            ),
        ];
        let got = judge("mail.a.example", &facts, Some(true), None);
        assert!(got[0].found.contains("inherited from a.example"), "{got:?}");
        assert_eq!(got[1].status, Status::Warn);
        assert!(
            got[1]
                .record
                .as_ref()
                .unwrap()
                .value
                .contains("sp=quarantine")
        );
        assert_eq!(
            candidates("mail.a.example"),
            vec![
                (
                    "mail.a.example".to_string(),
                    "_dmarc.mail.a.example".to_string()
                ),
                ("a.example".to_string(), "_dmarc.a.example".to_string()),
            ]
        );
    }

    #[test]
    fn alignment_table() {
        use Status::*;
        let reject = vec![found(
            "a.example",
            "v=DMARC1; p=reject; rua=mailto:r@a.example",
        )];
        let none = vec![found(
            "a.example",
            "v=DMARC1; p=none; rua=mailto:r@a.example",
        )];
        let cases = [
            (&reject, Some(true), Some(false), Ok),
            (&reject, Some(false), Some(true), Ok),
            (&reject, Some(false), Some(false), Fail),
            (&none, Some(false), Some(false), Warn),
            (&reject, None, Some(false), Warn),
        ];
        for (facts, dkim, spf, want) in cases {
            let got = judge("a.example", facts, dkim, spf);
            assert_eq!(got[3].id, "dmarc.alignment");
            assert_eq!(got[3].status, want, "{dkim:?} {spf:?}");
        }
    }

    #[test]
    fn tags_are_replaced_or_added() {
        assert_eq!(
            with_tag("v=DMARC1; p=none; rua=mailto:x@a", "p", "quarantine"),
            "v=DMARC1; p=quarantine; rua=mailto:x@a"
        );
        assert_eq!(
            with_tag("v=DMARC1;p=none;", "rua", "mailto:r@a.example"),
            "v=DMARC1; p=none; rua=mailto:r@a.example"
        );
    }
}
