//! `postern doctor` against a real DNS server: Debian's dnsmasq, started on a free
//! loopback port with good and broken zones, and reached via POSTERN_RESOLVER.
//!
//! The smarthost `relay.hosting.test` (a server of one's own, so SPF is evaluated
//! for its address and its PTR checked) is at 192.0.2.25, which the doctor only
//! looks up and never contacts.

mod common;

use common::{postern_bin, write};
use serde_json::Value;
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The dnsmasq binary (often in /usr/sbin, outside a user's PATH); in CI a
/// missing one fails the test instead of skipping it.
fn dnsmasq() -> Option<PathBuf> {
    let in_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    let found = (in_path.into_iter().chain([PathBuf::from("/usr/sbin")]))
        .map(|d| d.join("dnsmasq"))
        .find(|p| p.is_file());
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "dnsmasq must be installed in CI (.ci/run installs dnsmasq-base)"
        );
        eprintln!("skipping: dnsmasq is not installed");
    }
    found
}

/// A dnsmasq serving only the records given, stopped when dropped.
struct Dns {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Dns {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Dns {
    fn start(binary: &Path, records: &[String]) -> Dns {
        for _ in 0..5 {
            let port = UdpSocket::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let child = Command::new(binary)
                .args([
                    "--keep-in-foreground",
                    "--conf-file=/dev/null",
                    "--pid-file=",
                ])
                .args(["--no-resolv", "--no-hosts", "--bind-interfaces"])
                .args(["--listen-address=127.0.0.1", &format!("--port={port}")])
                // Every name is local: one not listed is NXDOMAIN, not REFUSED.
                .arg("--local=/#/")
                .args(records)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start dnsmasq");
            let mut dns = Dns {
                child,
                addr: SocketAddr::from(([127, 0, 0, 1], port)),
            };
            if dns.ready() {
                return dns;
            }
        }
        panic!("dnsmasq did not start");
    }

    /// Whether it answers a query within 5 s (false if it exited: port taken).
    fn ready(&mut self) -> bool {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        // A query for relay.hosting.test A.
        let mut query = vec![0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        for label in ["relay", "hosting", "test"] {
            query.push(label.len() as u8);
            query.extend_from_slice(label.as_bytes());
        }
        query.extend_from_slice(&[0, 0, 1, 0, 1]);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return false;
            }
            let _ = socket.send_to(&query, self.addr);
            let mut buf = [0u8; 512];
            if socket.recv_from(&mut buf).is_ok() {
                return true;
            }
        }
        false
    }
}

const GOOD_DMARC: &str = "v=DMARC1; p=reject; rua=mailto:dmarc@example.test";
const SPF_OK: &str = "v=spf1 a:relay.hosting.test -all";

/// A DNS server on a loopback UDP port that answers SERVFAIL to everything (an
/// upstream dnsmasq forwards one name to); the thread ends with the process.
fn servfail_server() -> SocketAddr {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = socket.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 1500];
        while let Ok((n, peer)) = socket.recv_from(&mut buf) {
            let q = &buf[..n];
            // The question: labels from byte 12 to a zero byte, then type and class.
            let mut end = 12;
            while end < n && q[end] != 0 {
                end += 1 + q[end] as usize;
            }
            let end = (end + 5).min(n);
            let mut reply = vec![q[0], q[1], 0x81, 0x82, 0, 1, 0, 0, 0, 0, 0, 0];
            reply.extend_from_slice(&q[12..end]);
            let _ = socket.send_to(&reply, peer);
        }
    });
    addr
}

/// The zones: one domain per case, each broken in one way.
fn zone(good_key: &str) -> Vec<String> {
    let mut r = vec![
        "--host-record=relay.hosting.test,192.0.2.25".to_string(),
        "--ptr-record=25.2.0.192.in-addr.arpa,relay.hosting.test".to_string(),
    ];
    let mut domain = |name: &str, spf: Option<&str>, dmarc: Option<&str>, mx: bool| {
        if let Some(spf) = spf {
            r.push(format!("--txt-record={name},{spf}"));
        }
        if let Some(dmarc) = dmarc {
            r.push(format!("--txt-record=_dmarc.{name},{dmarc}"));
        }
        if mx {
            r.push(format!("--mx-host={name},mx.{name},10"));
        }
    };
    domain("good.test", Some(SPF_OK), Some(GOOD_DMARC), true);
    domain("nospf.test", None, Some(GOOD_DMARC), true);
    // SPF that names another server, not the smarthost this domain's mail leaves through.
    domain(
        "notours.test",
        Some("v=spf1 ip4:198.51.100.7 -all"),
        Some(GOOD_DMARC),
        true,
    );
    domain(
        "plusall.test",
        Some("v=spf1 a:relay.hosting.test +all"),
        Some(GOOD_DMARC),
        true,
    );
    let ten: Vec<String> = (1..=10).map(|i| format!("a:h{i}.test")).collect();
    domain(
        "toomany.test",
        Some("v=spf1 a:relay.hosting.test include:more.toomany.test -all"),
        Some(GOOD_DMARC),
        true,
    );
    domain(
        "more.toomany.test",
        Some(&format!("v=spf1 {} -all", ten.join(" "))),
        None,
        false,
    );
    domain("nodmarc.test", Some(SPF_OK), None, true);
    domain("servfail.test", Some(SPF_OK), None, true);
    domain(
        "pnone.test",
        Some(SPF_OK),
        Some("v=DMARC1; p=none; rua=mailto:d@pnone.test"),
        true,
    );
    domain("nomx.test", Some(SPF_OK), Some(GOOD_DMARC), false);
    domain("wrongkey.test", Some(SPF_OK), Some(GOOD_DMARC), true);
    domain(
        "escape.test",
        Some("v=spf1 a:relay.hosting.test \u{1b}[2J\u{1b}]0;pwned\u{7} -all"),
        Some(GOOD_DMARC),
        true,
    );
    // Routed to Amazon SES: authorised by its include; Easy DKIM cannot be guessed.
    domain(
        "ses.test",
        Some("v=spf1 include:amazonses.com -all"),
        Some(GOOD_DMARC),
        true,
    );
    // Routed to Microsoft 365: no include for it, and only selector1 published
    // (a CNAME, whose target dnsmasq must know).
    domain(
        "m365.test",
        Some("v=spf1 include:amazonses.com -all"),
        Some(GOOD_DMARC),
        true,
    );
    r.push("--txt-record=amazonses.com,v=spf1 ip4:199.255.192.0/22 -all".into());
    let target = "selector1-m365-test._domainkey.contoso.onmicrosoft.com";
    r.push(format!("--host-record={target},192.0.2.99"));
    r.push(format!("--cname=selector1._domainkey.m365.test,{target}"));
    // Its DMARC name is forwarded to a server that answers SERVFAIL.
    let sf = servfail_server();
    r.push(format!(
        "--server=/_dmarc.servfail.test/{}#{}",
        sf.ip(),
        sf.port()
    ));
    r.push(format!("--txt-record=s1._domainkey.good.test,{good_key}"));
    // wrongkey.test publishes good.test's key, not its own.
    r.push(format!(
        "--txt-record=s1._domainkey.wrongkey.test,{good_key}"
    ));
    r
}

/// A config folder (users may send as good.test) with keys for good.test and
/// wrongkey.test, and the DNS server with the zones above.
struct Setup {
    dir: tempfile::TempDir,
    dns: Dns,
}

fn setup() -> Option<Setup> {
    let binary = dnsmasq()?;
    let dir = tempfile::tempdir().unwrap();
    write(
        &dir.path().join("postern.yaml"),
        "hostname: postern.test\n\
         listeners:\n  - address: \"127.0.0.1:0\"\n    tls: none\n\
         users:\n  file: users.yaml\n\
         smarthost:\n  address: \"relay.hosting.test:587\"\n\
         routes:\n\
         \x20 - match: \"@ses.test\"\n    smarthost:\n      address: \"email-smtp.eu-west-1.amazonaws.com:587\"\n\
         \x20 - match: \"@m365.test\"\n    smarthost:\n      address: \"smtp.office365.com:587\"\n\
         dkim:\n  keys_directory: dkim\n",
    );
    let hash = postern::auth::hash_password("a password").unwrap();
    write(
        &dir.path().join("users.yaml"),
        &format!(
            "users:\n  - name: web\n    password: \"{hash}\"\n    senders: [\"@good.test\"]\n"
        ),
    );
    let good_key = generate(dir.path(), "good.test");
    generate(dir.path(), "wrongkey.test");
    let dns = Dns::start(&binary, &zone(&good_key));
    Some(Setup { dir, dns })
}

/// `postern dkim generate DOMAIN --selector s1 --algorithm ed25519`: the record value.
fn generate(dir: &Path, domain: &str) -> String {
    let out = Command::new(postern_bin())
        .args([
            "dkim",
            "generate",
            domain,
            "--selector",
            "s1",
            "--algorithm",
            "ed25519",
            "-c",
        ])
        .arg(dir.join("postern.yaml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let value = stdout
        .lines()
        .find_map(|l| l.strip_prefix("value:"))
        .unwrap();
    value.trim().trim_matches('"').to_string()
}

impl Setup {
    fn doctor(&self, args: &[&str]) -> Output {
        Command::new(postern_bin())
            .arg("doctor")
            .args(args)
            .arg("-c")
            .arg(self.dir.path().join("postern.yaml"))
            .env("POSTERN_RESOLVER", self.dns.addr.to_string())
            .output()
            .unwrap()
    }

    /// The JSON report for `domain`, and the exit code.
    fn json(&self, domain: &str) -> (Value, i32) {
        let out = self.doctor(&[domain, "--json"]);
        let text = String::from_utf8(out.stdout).unwrap();
        let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
        (v, out.status.code().unwrap())
    }
}

fn checks(report: &Value) -> &Vec<Value> {
    report["domains"][0]["checks"].as_array().unwrap()
}

#[test]
fn a_well_configured_domain_passes_every_check() {
    let Some(s) = setup() else { return };
    // No domain given: every domain of the users' senders (good.test).
    let out = s.doctor(&[]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.starts_with("good.test: OK\n"), "{text}");
    assert!(
        text.contains("mail from @good.test leaves through relay.hosting.test:587 (your own server) [smarthost]"),
        "{text}"
    );
    let (report, code) = s.json("good.test");
    assert_eq!(code, 0);
    let ids: Vec<&str> = checks(&report)
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    for id in [
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
        "ptr",
    ] {
        assert!(ids.contains(&id), "{id} missing: {report}");
    }
    for c in checks(&report) {
        assert_eq!(c["status"], "ok", "{c}");
        assert!(c["fix"].is_null(), "{c}");
    }
}

#[test]
fn each_broken_zone_gets_its_verdict_and_exit_code() {
    let Some(s) = setup() else { return };
    // (domain, check, status, words in found or fix, exit code)
    let cases = [
        (
            "nospf.test",
            "spf.record",
            "fail",
            "v=spf1 a:relay.hosting.test ~all",
            1,
        ),
        ("plusall.test", "spf.all", "fail", "+all", 1),
        (
            "notours.test",
            "spf.authorises",
            "fail",
            "ip4:192.0.2.25",
            1,
        ),
        ("toomany.test", "spf.lookups", "fail", "12 DNS lookups", 1),
        (
            "nodmarc.test",
            "dmarc.record",
            "fail",
            "_dmarc.nodmarc.test",
            1,
        ),
        ("pnone.test", "dmarc.policy", "warn", "p=quarantine", 0),
        ("nomx.test", "mx", "warn", "no MX record", 0),
        ("wrongkey.test", "dkim", "fail", "another key", 1),
        ("absent.test", "mx", "fail", "does not exist", 1),
    ];
    for (domain, id, status, words, code) in cases {
        let (report, got_code) = s.json(domain);
        let c = checks(&report)
            .iter()
            .find(|c| c["id"] == id)
            .unwrap_or_else(|| panic!("{domain}: no {id} in {report}"));
        assert_eq!(c["status"], status, "{domain}: {c}");
        let said = format!("{} {}", c["found"], c["fix"]);
        assert!(said.contains(words), "{domain}: {words:?} not in {said}");
        assert_eq!(got_code, code, "{domain}: {report}");
        assert_eq!(
            report["domains"][0]["status"], status,
            "{domain}: worst status"
        );
    }
    // The fix for a record is the record to publish.
    let (report, _) = s.json("plusall.test");
    let all = checks(&report)
        .iter()
        .find(|c| c["id"] == "spf.all")
        .unwrap();
    assert_eq!(all["record"]["name"], "plusall.test");
    assert_eq!(all["record"]["type"], "TXT");
    assert_eq!(all["record"]["value"], "v=spf1 a:relay.hosting.test ~all");
}

#[test]
fn providers_on_routes_are_checked_by_their_include_and_selectors() {
    let Some(s) = setup() else { return };
    let find = |report: &Value, id: &str| {
        let c = checks(report).iter().find(|c| c["id"] == id);
        c.unwrap_or_else(|| panic!("no {id} in {report}")).clone()
    };
    let (ses, code) = s.json("ses.test");
    assert_eq!(code, 0, "{ses}");
    let leg = &ses["domains"][0]["routes"][0];
    assert_eq!(leg["source"], "routes[0]");
    assert_eq!(leg["relays"][0]["provider"], "amazon-ses");
    let spf = find(&ses, "spf.authorises");
    assert_eq!(spf["status"], "ok", "{spf}");
    assert_eq!(spf["subject"], "email-smtp.eu-west-1.amazonaws.com:587");
    let dkim = find(&ses, "dkim");
    assert_eq!(dkim["status"], "warn", "{dkim}");
    assert!(
        dkim["fix"].as_str().unwrap().contains("SES console"),
        "{dkim}"
    );

    let (m365, code) = s.json("m365.test");
    assert_eq!(code, 1, "{m365}");
    assert_eq!(
        m365["domains"][0]["routes"][0]["relays"][0]["provider"],
        "microsoft-365"
    );
    let spf = find(&m365, "spf.authorises");
    assert_eq!(spf["status"], "fail", "{spf}");
    assert_eq!(
        spf["record"]["value"],
        "v=spf1 include:amazonses.com include:spf.protection.outlook.com -all"
    );
    let dkim = find(&m365, "dkim");
    assert_eq!(dkim["status"], "fail", "{dkim}");
    let found = dkim["found"].as_str().unwrap();
    assert!(found.contains("selector2._domainkey.m365.test"), "{found}");
    assert!(!found.contains("selector1._domainkey"), "{found}");
}

/// A SERVFAIL is "could not check", never a failure: the other checks stand and
/// the exit code is 0.
#[test]
fn a_servfail_is_could_not_check_not_fail() {
    let Some(s) = setup() else { return };
    let out = s.doctor(&["servfail.test"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    let line = text.lines().find(|l| l.contains("dmarc.record")).unwrap();
    assert!(line.trim_start().starts_with("unknown"), "{text}");
    assert!(line.contains("could not check"), "{text}");
    assert!(!text.contains(" fail "), "{text}");
    assert!(
        text.lines()
            .any(|l| l.trim_start().starts_with("ok      spf.record")),
        "{text}"
    );
}

/// Reads the JSON on stdin with Python's own parser and checks the documented
/// shape; prints each domain's status.
const SHAPE_PY: &str = r#"
import json, sys
r = json.load(sys.stdin)
assert r["version"] == 1 and r["status"] in ("ok", "warn", "fail", "unknown")
for d in r["domains"]:
    assert set(d) == {"domain", "status", "routes", "checks"}, d.keys()
    for leg in d["routes"]:
        assert set(leg) == {"senders", "source", "relays"}
        for relay in leg["relays"]:
            assert set(relay) == {"name", "host", "provider"}
    for c in d["checks"]:
        assert set(c) == {"id", "status", "subject", "found", "fix", "record"}, c.keys()
        assert c["status"] in ("ok", "warn", "fail", "unknown")
        if c["record"] is not None:
            assert set(c["record"]) == {"name", "type", "value"}
    print(d["domain"], d["status"])
"#;

#[test]
fn json_parses_with_python_and_has_the_documented_fields() {
    let Some(s) = setup() else { return };
    let out = s.doctor(&["good.test", "nospf.test", "escape.test", "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let mut py = Command::new("python3")
        .args(["-c", SHAPE_PY])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3");
    use std::io::Write;
    py.stdin.take().unwrap().write_all(&out.stdout).unwrap();
    let py = py.wait_with_output().unwrap();
    assert!(
        py.status.success(),
        "{}",
        String::from_utf8_lossy(&py.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&py.stdout),
        "good.test ok\nnospf.test fail\nescape.test fail\n"
    );
}

#[test]
fn terminal_escapes_in_dns_text_are_shown_escaped() {
    let Some(s) = setup() else { return };
    let out = s.doctor(&["escape.test"]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(!text.contains(['\u{1b}', '\u{7}']), "{text:?}");
    assert!(text.contains("\\u{1b}[2J\\u{1b}]0;pwned"), "{text}");
    let json = s.doctor(&["escape.test", "--json"]).stdout;
    assert!(!json.contains(&0x1b) && !json.contains(&0x07));
    let v: Value = serde_json::from_slice(&json).unwrap();
    let record = &checks(&v)[0]["found"];
    assert!(record.as_str().unwrap().contains("\u{1b}[2J"), "{record}");
}

#[test]
fn no_dns_is_a_runtime_failure() {
    let Some(s) = setup() else { return };
    let run = |resolver: &str| {
        Command::new(postern_bin())
            .args(["doctor", "good.test", "-c"])
            .arg(s.dir.path().join("postern.yaml"))
            .env("POSTERN_RESOLVER", resolver)
            .output()
            .unwrap()
    };
    let out = run("not-an-address");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("POSTERN_RESOLVER"));
    // A port nothing answers on: every query fails, nothing is reported as
    // failed, and the run is a runtime failure.
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    let started = Instant::now();
    let out = run(&silent.local_addr().unwrap().to_string());
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(!text.contains(" fail "), "{text}");
    assert!(text.contains("could not check"), "{text}");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
}

/// Kills the server on drop, whatever the test does.
struct Serving(Child);

impl Drop for Serving {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn the_admin_api_gives_a_panel_the_same_report() {
    let Some(s) = setup() else { return };
    let port = common::free_port();
    let token = "doctor-test-token-0123456789";
    write(&s.dir.path().join("admin.token"), token);
    let config = s.dir.path().join("postern.yaml");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(&format!(
        "delivery:\n  mode: passthrough\n  spool_directory: spool\n\
         admin:\n  address: \"127.0.0.1:{port}\"\n  token_file: admin.token\n"
    ));
    write(&config, &text);
    let _server = Serving(
        Command::new(postern_bin())
            .args(["serve", "-c"])
            .arg(&config)
            .env("POSTERN_RESOLVER", s.dns.addr.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let get = |path: &str| -> (String, String) {
        let out = Command::new("curl")
            .args(["-s", "-w", "\n%{http_code}", "-H"])
            .arg(format!("Authorization: Bearer {token}"))
            .arg(format!("http://127.0.0.1:{port}{path}"))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", "000"));
        (body.to_string(), code.to_string())
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    let (body, code) = loop {
        let answer = get("/api/v1/doctor/good.test");
        if answer.1 != "000" || Instant::now() > deadline {
            break answer;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(code, "200", "{body}");
    let api: Value = serde_json::from_str(&body).unwrap();
    let (cli, _) = s.json("good.test");
    assert_eq!(api["domain"], "good.test", "{body}");
    assert_eq!(api["status"], "ok", "{body}");
    assert_eq!(api["checks"], cli["domains"][0]["checks"], "{body}");
    // A broken zone is reported, not an error.
    let (body, code) = get("/api/v1/doctor/NOSPF.test.");
    assert_eq!(code, "200", "{body}");
    let report: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(report["domain"], "nospf.test", "{body}");
    assert_eq!(report["status"], "fail", "{body}");
    // A name that is not a domain is 422; without the token, 401.
    for bad in ["bad%20name", "127.0.0.1", "%2A.example"] {
        let (body, code) = get(&format!("/api/v1/doctor/{bad}"));
        assert_eq!(code, "422", "{bad}: {body}");
    }
    let out = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}"])
        .arg(format!("http://127.0.0.1:{port}/api/v1/doctor/good.test"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "401");
}
