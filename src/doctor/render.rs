//! The doctor's report as text for a terminal or as JSON for a panel.
//!
//! Record text comes from DNS, which anyone can write to: in the text form every
//! string goes through [`Escaped`] (control and format characters as `\u{…}`);
//! in the JSON form serde escapes the C0 controls and [`json`] escapes the rest
//! (DEL, C1, bidi and zero-width characters) as `\uXXXX`, so the parsed value is
//! unchanged and the raw output is safe on a terminal too.

use super::{Check, DomainReport, Report, Status};
use crate::proto::printable::{Escaped, hidden};
use std::fmt::Write;

/// The report for a terminal.
pub fn text(report: &Report) -> String {
    let mut out = String::new();
    for d in &report.domains {
        domain(&mut out, d);
        out.push('\n');
    }
    let count = |s: Status| report.domains.iter().filter(|d| d.status == s).count();
    let _ = writeln!(
        out,
        "{} domain(s): {} ok, {} with warnings, {} failing, {} not fully checked",
        report.domains.len(),
        count(Status::Ok),
        count(Status::Warn),
        count(Status::Fail),
        count(Status::Unknown),
    );
    out
}

fn domain(out: &mut String, d: &DomainReport) {
    let _ = writeln!(out, "{}: {}", Escaped(&d.domain), label(d.status));
    for leg in &d.routes {
        let relays: Vec<String> = (leg.relays.iter())
            .map(|r| format!("{} ({})", Escaped(&r.name), r.provider.name()))
            .collect();
        let _ = writeln!(
            out,
            "  mail from {} leaves through {} [{}]",
            Escaped(&leg.senders),
            relays.join(", then "),
            leg.source
        );
    }
    for c in &d.checks {
        check(out, c);
    }
}

fn check(out: &mut String, c: &Check) {
    let subject = match &c.subject {
        Some(s) => format!("[{}] ", Escaped(s)),
        None => String::new(),
    };
    let _ = writeln!(
        out,
        "  {:<7} {:<16} {subject}{}",
        c.status.as_str(),
        c.id,
        Escaped(&c.found)
    );
    if let Some(fix) = &c.fix {
        let _ = writeln!(out, "  {:<7} {:<16} fix: {}", "", "", Escaped(fix));
    }
}

fn label(s: Status) -> &'static str {
    match s {
        Status::Ok => "OK",
        Status::Unknown => "NOT FULLY CHECKED",
        Status::Warn => "WARNINGS",
        Status::Fail => "FAILING",
    }
}

/// The report as JSON (pretty), every hidden character escaped.
pub fn json(report: &Report) -> String {
    let raw = serde_json::to_string_pretty(report).expect("a report always serializes");
    let mut out = String::with_capacity(raw.len());
    for c in raw.chars() {
        if hidden(c) && c != '\n' {
            // Only inside strings: outside them serde writes no control but the
            // pretty form's line ends, and inside them it escapes those.
            let _ = write!(out, "\\u{:04x}", c as u32);
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::route::{Leg, Provider, Relay};

    fn report(found: &str) -> Report {
        Report::new(vec![DomainReport {
            domain: "a.example".into(),
            status: Status::Fail,
            routes: vec![Leg {
                senders: "@a.example".into(),
                source: "smarthost".into(),
                relays: vec![Relay {
                    name: "relay.example:25".into(),
                    host: "relay.example".into(),
                    provider: Provider::Other,
                }],
            }],
            checks: vec![Check::fail("spf.record", found, "publish x").record(
                "a.example",
                "TXT",
                found,
            )],
        }])
    }

    #[test]
    fn text_escapes_what_dns_says() {
        let t = text(&report("v=spf1 \u{1b}[2J\u{9b}31m\u{202e} -all"));
        assert!(!t.chars().any(|c| hidden(c) && c != '\n'), "{t:?}");
        assert!(
            t.contains("v=spf1 \\u{1b}[2J\\u{9b}31m\\u{202e} -all"),
            "{t}"
        );
        assert!(t.contains("a.example: FAILING"), "{t}");
        assert!(
            t.contains("relay.example:25 (your own server) [smarthost]"),
            "{t}"
        );
    }

    #[test]
    fn json_escapes_and_round_trips() {
        let found = "v=spf1 \u{1b}[2J\u{7f}\u{9b}\u{202e} -all";
        let j = json(&report(found));
        assert!(!j.chars().any(|c| hidden(c) && c != '\n'), "{j:?}");
        let v: serde_json::Value = serde_json::from_str(&j).unwrap();
        assert_eq!(v["version"], 1);
        assert_eq!(v["status"], "fail");
        let d = &v["domains"][0];
        assert_eq!(d["routes"][0]["relays"][0]["provider"], "other");
        let c = &d["checks"][0];
        assert_eq!(c["id"], "spf.record");
        assert_eq!(c["found"], found);
        assert_eq!(c["record"]["type"], "TXT");
        assert!(c["subject"].is_null());
    }
}
