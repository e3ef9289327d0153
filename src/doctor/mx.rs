//! MX and PTR verdicts (pure). A sending domain without MX cannot receive
//! bounces and replies, and some receivers refuse its mail; a server of one's own
//! needs a PTR for its address that points back at it (forward-confirmed), or
//! large receivers refuse its mail.

use super::Check;
use super::spf::is_public;
use crate::dns::Answer;
use std::net::IpAddr;

/// The MX check of `domain`.
pub fn judge_mx(domain: &str, answer: &Answer<Vec<(u16, String)>>) -> Check {
    const ID: &str = "mx";
    match answer {
        Answer::Failed(e) => Check::unknown(ID, e),
        Answer::NoDomain => Check::fail(
            ID,
            format!("{domain} does not exist in DNS"),
            format!("register {domain} or fix its name in the users file"),
        ),
        Answer::NoRecord => Check::warn(
            ID,
            format!(
                "{domain} has no MX record, so bounces and replies cannot reach it and some receivers refuse its mail"
            ),
            format!("add an MX record for {domain} pointing at the server that receives its mail"),
        ),
        Answer::Found(mx) if mx.len() == 1 && mx[0].1.is_empty() => Check::warn(
            ID,
            format!(
                "{domain} has a null MX (\"0 .\"): it receives no mail, and receivers may refuse mail whose envelope sender is at {domain} (RFC 7505)"
            ),
            format!(
                "if {domain} sends mail with its own envelope sender, give it a real MX record"
            ),
        ),
        Answer::Found(mx) => {
            let mut sorted = mx.clone();
            sorted.sort();
            let list: Vec<String> = sorted.iter().map(|(p, h)| format!("{h} ({p})")).collect();
            Check::ok(ID, list.join(", "))
        }
    }
}

/// What DNS says about one smarthost's reverse DNS.
#[derive(Debug, Clone, PartialEq)]
pub struct PtrFacts {
    /// The smarthost entry (`host:port`).
    pub relay: String,
    pub host: String,
    pub addresses: Answer<Vec<IpAddr>>,
    /// For each address: its PTR names, and each name's addresses.
    pub reverse: Vec<Reverse>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Reverse {
    pub ip: IpAddr,
    pub names: Answer<Vec<String>>,
    pub forward: Vec<(String, Answer<Vec<IpAddr>>)>,
}

/// The PTR check of one smarthost of no known provider.
pub fn judge_ptr(f: &PtrFacts) -> Check {
    const ID: &str = "ptr";
    let host = &f.host;
    let check = match &f.addresses {
        Answer::Failed(e) => Check::unknown(ID, e),
        Answer::NoRecord | Answer::NoDomain => Check::warn(
            ID,
            format!("{host} has no address in public DNS, so its reverse DNS cannot be checked"),
            "check that the public address it sends from has a PTR record naming a host that resolves back to it",
        ),
        Answer::Found(ips) if ips.iter().all(|ip| !is_public(ip)) => Check::warn(
            ID,
            format!(
                "{host} is at a private address, so the doctor cannot see the public address its mail leaves from"
            ),
            "check that the public address has a PTR record naming a host that resolves back to it",
        ),
        Answer::Found(_) => {
            let verdicts: Vec<Check> = (f.reverse.iter())
                .filter(|r| is_public(&r.ip))
                .map(|r| reverse_check(host, r))
                .collect();
            return worst(verdicts).subject(&f.relay);
        }
    };
    check.subject(&f.relay)
}

fn reverse_check(host: &str, r: &Reverse) -> Check {
    const ID: &str = "ptr";
    let ip = r.ip;
    let names = match &r.names {
        Answer::Failed(e) => return Check::unknown(ID, e),
        Answer::NoRecord | Answer::NoDomain => {
            return Check::fail(
                ID,
                format!("{ip} ({host}) has no PTR record; large receivers refuse mail from such addresses"),
                format!("ask whoever owns {ip} (the hosting or network provider) to set its reverse DNS to {host}"),
            )
            .record(&crate::dns::reverse_name(ip), "PTR", host);
        }
        Answer::Found(n) => n,
    };
    let confirmed =
        (r.forward.iter()).find(|(_, a)| a.found().is_some_and(|ips| ips.contains(&ip)));
    if let Some((name, _)) = confirmed {
        return Check::ok(
            ID,
            format!("{ip} has PTR {name}, which resolves back to it"),
        );
    }
    if r.forward
        .iter()
        .any(|(_, a)| matches!(a, Answer::Failed(_)))
    {
        return Check::unknown(ID, "the PTR name's addresses could not be looked up");
    }
    let name = names.first().map(String::as_str).unwrap_or_default();
    Check::fail(
        ID,
        format!("{ip} has PTR {name}, which does not resolve back to {ip} (not forward-confirmed)"),
        format!(
            "add an A record for {name} pointing at {ip}, or have the PTR of {ip} set to {host}"
        ),
    )
    .record(
        name,
        if ip.is_ipv4() { "A" } else { "AAAA" },
        ip.to_string(),
    )
}

fn worst(checks: Vec<Check>) -> Check {
    checks
        .into_iter()
        .max_by_key(|c| c.status)
        .unwrap_or_else(|| Check::unknown("ptr", "no public address to check"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::Status;

    #[test]
    fn mx_table() {
        let d = "a.example";
        let cases = [
            (
                Answer::Found(vec![
                    (10, "mx1.a.example".into()),
                    (5, "mx0.a.example".into()),
                ]),
                Status::Ok,
            ),
            (Answer::Found(vec![(0, String::new())]), Status::Warn),
            (Answer::NoRecord, Status::Warn),
            (Answer::NoDomain, Status::Fail),
            (Answer::Failed("timeout".into()), Status::Unknown),
        ];
        for (answer, want) in cases {
            let c = judge_mx(d, &answer);
            assert_eq!(c.status, want, "{answer:?}: {c:?}");
        }
        let ok = judge_mx(d, &Answer::Found(vec![(10, "b".into()), (5, "a".into())]));
        assert_eq!(ok.found, "a (5), b (10)");
    }

    fn facts(ip: &str, names: Answer<Vec<String>>, forward: Answer<Vec<IpAddr>>) -> PtrFacts {
        let ip: IpAddr = ip.parse().unwrap();
        PtrFacts {
            relay: "relay.example:25".into(),
            host: "relay.example".into(),
            addresses: Answer::Found(vec![ip]),
            reverse: vec![Reverse {
                ip,
                names,
                forward: vec![("relay.example".into(), forward)],
            }],
        }
    }

    #[test]
    fn ptr_table() {
        let ip: IpAddr = "192.0.2.25".parse().unwrap();
        let name = || Answer::Found(vec!["relay.example".to_string()]);
        let cases = [
            (
                facts("192.0.2.25", name(), Answer::Found(vec![ip])),
                Status::Ok,
            ),
            (
                facts(
                    "192.0.2.25",
                    name(),
                    Answer::Found(vec!["192.0.2.26".parse().unwrap()]),
                ),
                Status::Fail,
            ),
            (facts("192.0.2.25", name(), Answer::NoDomain), Status::Fail),
            (
                facts("192.0.2.25", Answer::NoDomain, Answer::NoDomain),
                Status::Fail,
            ),
            (
                facts("192.0.2.25", Answer::Failed("x".into()), Answer::NoDomain),
                Status::Unknown,
            ),
            (
                facts("10.0.0.5", Answer::NoDomain, Answer::NoDomain),
                Status::Warn,
            ),
        ];
        for (f, want) in cases {
            let c = judge_ptr(&f);
            assert_eq!(c.status, want, "{f:?}: {c:?}");
            assert_eq!(c.subject.as_deref(), Some("relay.example:25"));
        }
        let missing = judge_ptr(&facts("192.0.2.25", Answer::NoDomain, Answer::NoDomain));
        assert_eq!(missing.record.unwrap().name, "25.2.0.192.in-addr.arpa");
    }
}
