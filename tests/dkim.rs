//! DKIM signing end to end: keys made by `postern dkim generate`, put in force by
//! `postern reload`, and signatures checked by Debian's python3-dkim (a verifier
//! nobody here wrote) on exactly the message the stand-in smarthost received, with
//! the DNS answer taken from what `generate` printed.

mod common;

use common::client::{Client, stuff};
use common::{Harness, Setup, crlf, have, postern_bin};
use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// Verifies every DKIM-Signature of the message in argv[1] with the TXT records in
/// argv[2] (`NAME VALUE` lines); prints `pass|fail ALGORITHM DOMAIN SELECTOR` each.
const VERIFY_PY: &str = r#"
import sys, dkim
msg = open(sys.argv[1], 'rb').read()
records = {}
for line in open(sys.argv[2]):
    name, value = line.rstrip('\n').split(' ', 1)
    records[name.encode()] = value.encode()
def dnsfunc(name, timeout=5):
    return records.get(name.rstrip(b'.'))
d = dkim.DKIM(msg)
count = sum(1 for (k, _) in d.headers if k.lower() == b'dkim-signature')
for i in range(count):
    try:
        ok = d.verify(idx=i, dnsfunc=dnsfunc)
    except Exception as e:
        print('error', repr(e), file=sys.stderr)
        ok = False
    tags = dict(d.signature_fields) if hasattr(d, 'signature_fields') else {}
    print('pass' if ok else 'fail', tags.get(b'a', b'?').decode(), d.domain.decode(), d.selector.decode())
"#;

/// Debian's python3 (with python3-dkim), not a virtualenv's.
fn python() -> Option<&'static str> {
    let python = if Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3"
    } else {
        "python3"
    };
    if !have(python) {
        return None;
    }
    let ok = Command::new(python)
        .args(["-c", "import dkim, nacl"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok || std::env::var_os("CI").is_none(),
        "python3-dkim and python3-nacl must be installed in CI (.ci/run installs them)"
    );
    if !ok {
        eprintln!("skipping: python3-dkim is not installed");
    }
    ok.then_some(python)
}

fn postern(args: &[&str], config: &Path) -> std::process::Output {
    let out = Command::new(postern_bin())
        .args(args)
        .arg("-c")
        .arg(config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "postern {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Runs `postern dkim generate` and returns the record it printed: (name, value
/// with its quoted strings joined). Checks that no string is over 255 bytes.
fn generate(h: &Harness, args: &[&str]) -> (String, String) {
    let mut all = vec!["dkim", "generate"];
    all.extend_from_slice(args);
    let out = postern(&all, &h.config_path);
    let stdout = String::from_utf8(out.stdout).unwrap();
    let line = |key: &str| {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .unwrap_or_else(|| panic!("no {key} in {stdout:?}"))
            .trim()
            .to_string()
    };
    assert_eq!(line("type:"), "TXT");
    let quoted = line("value:");
    let strings: Vec<&str> = quoted.split('"').skip(1).step_by(2).collect();
    assert!(
        !strings.is_empty() && strings.iter().all(|s| s.len() <= 255),
        "{quoted}"
    );
    (line("name:"), strings.concat())
}

/// Runs the verifier; one `pass|fail a= d= s=` line per signature.
fn verify(
    python: &str,
    dir: &Path,
    message: &[u8],
    records: &BTreeMap<String, String>,
) -> Vec<String> {
    let script = dir.join("verify.py");
    std::fs::write(&script, VERIFY_PY).unwrap();
    let msg = dir.join("received.eml");
    std::fs::write(&msg, message).unwrap();
    let dns = dir.join("dns.txt");
    let lines: String = records.iter().map(|(n, v)| format!("{n} {v}\n")).collect();
    std::fs::write(&dns, lines).unwrap();
    let out = Command::new(python)
        .arg(&script)
        .arg(&msg)
        .arg(&dns)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut result: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    result.sort();
    result
}

/// A message with what trips signers up: dot-stuffed lines (one that is just a
/// dot), an 8-bit body, trailing whitespace, a whitespace-only last line and
/// trailing empty lines; `filler` lines make it large.
fn message(from: &str, filler: usize) -> String {
    let mut body = format!(
        "From: Alice <{from}>\nTo: bob@example.net\nSubject: quarterly report\n\
         MIME-Version: 1.0\nContent-Type: text/plain; charset=utf-8\n\
         Content-Transfer-Encoding: 8bit\n\n\
         Grüße aus Köln, ça va? 8-bit body\n.leading dot\n..two dots\n.\n\
         trailing spaces   \n\ttab first\n"
    );
    for i in 0..filler {
        body.push_str(&format!(
            "filler line {i} to make the message large enough\n"
        ));
    }
    body.push_str(" \n\n\n");
    crlf(&body)
}

async fn send(c: &mut Client, from: &str, content: &str) {
    c.expect(&format!("MAIL FROM:<{from}> BODY=8BITMIME"), 250)
        .await;
    c.expect("RCPT TO:<bob@example.net>", 250).await;
    c.expect("DATA", 354).await;
    c.send_raw(&stuff(content.as_bytes())).await;
    c.send_raw(b".\r\n").await;
    let r = c.read_reply().await;
    assert_eq!(r.code, 250, "{r:?}");
}

/// The whole story in one mode: unsigned before any key, then RSA and Ed25519
/// keys made and reloaded, signed mail that verifies (small, large, header only),
/// mail from a domain without a key left unsigned, and a failed reload that keeps
/// the keys in force.
async fn signs_what_verifies(queue: bool) {
    let Some(python) = python() else {
        return;
    };
    let h = Harness::start(Setup {
        queue,
        ..Setup::default()
    })
    .await;
    let dir = h.dir.path();
    let alice = "alice@alice.example";
    let mut c = h.session("alice", "alice-password").await;
    send(&mut c, alice, &message(alice, 0)).await;
    let got = h.sink.wait_for(1, Duration::from_secs(20)).await;
    assert!(!contains(&got[0].content, b"DKIM-Signature"), "no key yet");

    let records = make_keys(&h);
    let small = message(alice, 0);
    let large = message(alice, 8000); // over 256 KiB: streamed from its file in queue mode
    assert!(large.len() > 300 * 1024);
    for (n, content) in [small, large].iter().enumerate() {
        send(&mut c, alice, content).await;
        let got = h.sink.wait_for(2 + n, Duration::from_secs(20)).await;
        let received = &got[1 + n].content;
        assert!(
            received.starts_with(b"DKIM-Signature: "),
            "signatures go first"
        );
        let verdicts = verify(python, dir, received, &records);
        let both = [
            "pass ed25519-sha256 alice.example e1",
            "pass rsa-sha256 alice.example s1",
        ];
        assert_eq!(verdicts, both, "message {n}");
        what_breaks_the_signatures(python, dir, received, &records);
    }

    // A domain without a key: relayed as it was, unsigned.
    send(
        &mut c,
        "boss@corp.example",
        &message("boss@corp.example", 0),
    )
    .await;
    let got = h.sink.wait_for(4, Duration::from_secs(20)).await;
    assert!(!contains(&got[3].content, b"DKIM-Signature"));

    // A key everyone may read: the reload fails and says why, and the keys in
    // force keep signing.
    let key = dir.join("dkim/alice.example/s1.pem");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = Command::new(postern_bin())
        .args(["reload", "-c"])
        .arg(&h.config_path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let why = String::from_utf8_lossy(&out.stderr);
    assert!(why.contains("DKIM keys") && why.contains("s1.pem"), "{why}");
    send(&mut c, alice, &message(alice, 0)).await;
    // A message that is all header (no blank line, no body) is signed as well.
    let header_only =
        crlf("From: alice@alice.example\nTo: bob@example.net\nSubject: header only\n");
    send(&mut c, alice, &header_only).await;
    let got = h.sink.wait_for(6, Duration::from_secs(20)).await;
    for received in [&got[4].content, &got[5].content] {
        assert!(received.starts_with(b"DKIM-Signature: "));
        let verdicts = verify(python, dir, received, &records);
        assert_eq!(verdicts.len(), 2);
        assert!(
            verdicts.iter().all(|v| v.starts_with("pass")),
            "{verdicts:?}"
        );
    }
}

/// Makes an RSA key (s1) and an Ed25519 key (e1) for alice.example with `generate`
/// (and sees it refuse what it must), reloads, checks that `list` and
/// `check-config` show them; returns the records as DNS would serve them.
fn make_keys(h: &Harness) -> BTreeMap<String, String> {
    let out = postern(
        &["dkim", "generate", "alice.example", "--selector", "s1"],
        &h.config_path,
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("postern reload"));
    let out = postern(&["dkim", "generate", "nobody.example"], &h.config_path);
    let note = String::from_utf8_lossy(&out.stderr);
    assert!(
        note.contains("no user may send as @nobody.example"),
        "{note}"
    );
    std::fs::remove_file(h.dir.path().join("dkim/alice.example/s1.pem")).unwrap();
    let mut records = BTreeMap::new();
    let (name, value) = generate(h, &["alice.example", "--selector", "s1"]);
    assert_eq!(name, "s1._domainkey.alice.example");
    assert!(value.starts_with("v=DKIM1; k=rsa; p=MII"), "{value}");
    records.insert(name, value);
    let (name, value) = generate(
        h,
        &[
            "Alice.Example",
            "--selector",
            "e1",
            "--algorithm",
            "ed25519",
        ],
    );
    assert_eq!(name, "e1._domainkey.alice.example");
    assert!(value.starts_with("v=DKIM1; k=ed25519; p="), "{value}");
    records.insert(name, value);
    // Refusals: a selector in use, a name that is no domain, a bad selector.
    for args in [
        &["alice.example", "--selector", "s1"][..],
        &["alice..example"][..],
        &["alice.example", "--selector", "bad/../x"][..],
    ] {
        let out = Command::new(postern_bin())
            .args(["dkim", "generate"])
            .args(args)
            .arg("-c")
            .arg(&h.config_path)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(out.stdout.is_empty(), "{args:?}");
    }
    let out = postern(&["reload"], &h.config_path);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains(", 3 DKIM keys)"), "{said}");
    let listed = String::from_utf8(postern(&["dkim", "list"], &h.config_path).stdout).unwrap();
    for (name, value) in &records {
        let line = listed
            .lines()
            .find(|l| l.contains(name.as_str()))
            .expect(name);
        let strings: Vec<&str> = line.split('"').skip(1).step_by(2).collect();
        assert_eq!(&strings.concat(), value, "{listed}");
    }
    let checked = String::from_utf8(postern(&["check-config"], &h.config_path).stdout).unwrap();
    assert!(
        checked.contains("dkim       alice.example e1 (ed25519)"),
        "{checked}"
    );
    assert!(
        checked.contains("dkim       alice.example s1 (rsa)"),
        "{checked}"
    );
    records
}

/// The verifier is not a rubber stamp: a changed body byte or a second Subject
/// fails every signature, while what providers do on the way (a header of their
/// own, SES's new Message-ID and Date) fails none.
fn what_breaks_the_signatures(
    python: &str,
    dir: &Path,
    received: &[u8],
    records: &BTreeMap<String, String>,
) {
    let all = |message: &[u8], verdict: &str| {
        let verdicts = verify(python, dir, message, records);
        assert!(
            verdicts.len() == 2 && verdicts.iter().all(|v| v.starts_with(verdict)),
            "{verdicts:?}"
        );
    };
    let mut tampered = received.to_vec();
    let at = tampered.windows(7).position(|w| w == b"leading").unwrap();
    tampered[at] = b'L';
    all(&tampered, "fail");
    let at = received.windows(9).position(|w| w == b"Received:").unwrap();
    let mut added = received.to_vec();
    added.splice(
        at..at,
        b"Subject: urgent: wire the money\r\n".iter().copied(),
    );
    all(&added, "fail");
    let mut added = received.to_vec();
    added.splice(
        at..at,
        b"X-SES-Outgoing: 2026.12.02-54.240.1.1\r\n".iter().copied(),
    );
    all(&added, "pass");
    let text = String::from_utf8_lossy(received).into_owned();
    let replaced: String = (text.split_inclusive("\r\n"))
        .map(|l| match l {
            l if l.starts_with("Message-ID:") => "Message-ID: <0100018c@email.amazonses.com>\r\n",
            l if l.starts_with("Date:") => "Date: Thu, 3 Dec 2026 10:00:00 +0000\r\n",
            l => l,
        })
        .collect();
    assert_ne!(replaced, text);
    all(replaced.as_bytes(), "pass");
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test(flavor = "multi_thread")]
async fn passthrough_signs_with_rsa_and_ed25519_and_python_dkim_verifies() {
    signs_what_verifies(false).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn queue_signs_with_rsa_and_ed25519_and_python_dkim_verifies() {
    signs_what_verifies(true).await;
}

fn is_root() -> bool {
    nix_uid() == 0
}

fn nix_uid() -> u32 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").unwrap().uid()
}

/// As the README installs it: the config folder readable, the spool nobody's, the
/// server dropping to nobody.
fn installed_for_nobody(dir: &Path) {
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let spool = dir.join("spool");
    std::fs::create_dir_all(&spool).unwrap();
    std::os::unix::fs::chown(&spool, Some(65534), Some(65534)).unwrap();
    for f in ["users.yaml", "server-cert.pem", "server-key.pem"] {
        let p = dir.join(f);
        std::os::unix::fs::chown(&p, Some(0), Some(65534)).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o640)).unwrap();
    }
}

/// `generate` run as root gives the new folders and key to `run_as`, so the
/// server, which dropped root, reads them on reload and signs.
#[tokio::test(flavor = "multi_thread")]
async fn a_key_generated_as_root_is_read_by_the_unprivileged_server() {
    use std::os::unix::fs::MetadataExt;
    if !is_root() {
        eprintln!("not root; skipped");
        return;
    }
    let Some(python) = python() else {
        return;
    };
    let h = Harness::start(Setup {
        extra: "run_as:\n  user: nobody\n  group: nogroup\n".into(),
        before_launch: Some(installed_for_nobody),
        ..Setup::default()
    })
    .await;
    let dir = h.dir.path();
    let (name, value) = generate(&h, &["alice.example", "--algorithm", "ed25519"]);
    assert!(
        name.starts_with("postern-2") && name.ends_with("-ed25519._domainkey.alice.example"),
        "{name}"
    );
    let owner = |p: &Path| {
        let m = std::fs::metadata(p).unwrap();
        (m.uid(), m.gid(), m.mode() & 0o777)
    };
    let selector = name.split('.').next().unwrap();
    let key = dir.join(format!("dkim/alice.example/{selector}.pem"));
    assert_eq!(owner(&dir.join("dkim")), (65534, 65534, 0o700));
    assert_eq!(
        owner(&dir.join("dkim/alice.example")),
        (65534, 65534, 0o700)
    );
    assert_eq!(owner(&key), (65534, 65534, 0o600));
    postern(&["reload"], &h.config_path);
    let mut c = h.session("alice", "alice-password").await;
    send(
        &mut c,
        "alice@alice.example",
        &message("alice@alice.example", 0),
    )
    .await;
    let got = h.sink.wait_for(1, Duration::from_secs(20)).await;
    let records = BTreeMap::from([(name, value)]);
    let verdicts = verify(python, dir, &got[0].content, &records);
    assert_eq!(verdicts.len(), 1);
    assert!(
        verdicts[0].starts_with("pass ed25519-sha256"),
        "{verdicts:?}"
    );
}

/// A DNS server for TXT records on a loopback UDP port, just enough for a
/// resolver: the answer for a known name, NXDOMAIN for any other.
fn txt_server(records: BTreeMap<String, String>) -> std::net::SocketAddr {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = socket.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 1500];
        while let Ok((n, peer)) = socket.recv_from(&mut buf) {
            let query = &buf[..n];
            // The question: labels from byte 12 to a zero byte, then type and class.
            let (mut at, mut labels) = (12, Vec::new());
            while at < n && query[at] != 0 {
                let len = query[at] as usize;
                labels.push(String::from_utf8_lossy(&query[at + 1..at + 1 + len]).to_lowercase());
                at += 1 + len;
            }
            let question_end = at + 5;
            let value = records.get(&labels.join("."));
            let mut reply = query[..2].to_vec();
            reply.extend_from_slice(if value.is_some() {
                &[0x81, 0x80]
            } else {
                &[0x81, 0x83]
            });
            reply.extend_from_slice(&[0, 1, 0, u8::from(value.is_some()), 0, 0, 0, 0]);
            reply.extend_from_slice(&query[12..question_end]);
            if let Some(value) = value {
                let mut rdata = Vec::new();
                for chunk in value.as_bytes().chunks(255) {
                    rdata.push(chunk.len() as u8);
                    rdata.extend_from_slice(chunk);
                }
                reply.extend_from_slice(&[0xc0, 0x0c, 0, 16, 0, 1, 0, 0, 0, 60]);
                reply.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
                reply.extend_from_slice(&rdata);
            }
            let _ = socket.send_to(&reply, peer);
        }
    });
    addr
}

/// `dkim list` asks DNS for each key's record: published and matching, another
/// key published there, or nothing.
#[tokio::test(flavor = "multi_thread")]
async fn list_says_whether_dns_has_each_key() {
    let h = Harness::start(Setup::default()).await;
    let (s1, s1_value) = generate(&h, &["alice.example", "--selector", "s1"]);
    let (e1, _) = generate(
        &h,
        &[
            "alice.example",
            "--selector",
            "e1",
            "--algorithm",
            "ed25519",
        ],
    );
    let (_, other) = generate(
        &h,
        &[
            "alice.example",
            "--selector",
            "x1",
            "--algorithm",
            "ed25519",
        ],
    );
    // e1's name carries x1's key; x1's name has nothing.
    let dns = txt_server(BTreeMap::from([(s1, s1_value), (e1, other)]));
    let out = Command::new(postern_bin())
        .args(["dkim", "list", "-c"])
        .arg(&h.config_path)
        .env("POSTERN_RESOLVER", dns.to_string())
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let verdict = |selector: &str| {
        let mut lines = text.lines().skip_while(|l| {
            *l != format!(
                "alice.example {selector} {}",
                if selector == "s1" { "rsa" } else { "ed25519" }
            )
        });
        lines
            .nth(2)
            .unwrap_or_else(|| panic!("{selector} not listed in {text}"))
            .to_string()
    };
    assert_eq!(
        verdict("s1"),
        "  DNS: published, matches this key",
        "{text}"
    );
    assert!(
        verdict("e1").starts_with("  DNS: DIFFERS from this key: DNS has k=ed25519, p="),
        "{text}"
    );
    assert_eq!(
        verdict("x1"),
        "  DNS: NOT PUBLISHED: add the TXT record above",
        "{text}"
    );
}

/// Passthrough with a key in force: DATA goes to the smarthost only when the
/// message is handed over. A message to sign is gathered first (no smarthost
/// connection sits in DATA while the client uploads), and one refused while it is
/// gathered never opened DATA there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passthrough_opens_data_upstream_only_to_hand_the_message_over() {
    let h = Harness::start(Setup::default()).await;
    generate(
        &h,
        &[
            "alice.example",
            "--selector",
            "e1",
            "--algorithm",
            "ed25519",
        ],
    );
    let out = postern(&["reload"], &h.config_path);
    assert!(out.status.success(), "{out:?}");
    let alice = "alice@alice.example";
    let mut c = h.session("alice", "alice-password").await;
    c.expect(&format!("MAIL FROM:<{alice}> BODY=8BITMIME"), 250)
        .await;
    c.expect("RCPT TO:<bob@example.net>", 250).await;
    c.expect("DATA", 354).await;
    let content = message(alice, 50);
    let (first, rest) = content.split_at(content.len() / 2);
    c.send_raw(&stuff(first.as_bytes())).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(h.sink.data_commands(), 0, "DATA upstream while uploading");
    c.send_raw(&stuff(rest.as_bytes())).await;
    c.send_raw(b".\r\n").await;
    let r = c.read_reply().await;
    assert_eq!(r.code, 250, "{r:?}");
    let got = h.sink.wait_for(1, Duration::from_secs(20)).await;
    assert!(got[0].content.starts_with(b"DKIM-Signature: "));
    assert_eq!(h.sink.data_commands(), 1);

    // Refused at its end (a bare LF) or at its header (a From: not alice's):
    // DATA never reached the smarthost, and the session goes on.
    let bare_lf = format!("{}bare\nline\r\n", message(alice, 0));
    let forged = message("ceo@elsewhere.example", 0);
    for (content, code) in [(bare_lf, 554), (forged, 550)] {
        c.expect(&format!("MAIL FROM:<{alice}> BODY=8BITMIME"), 250)
            .await;
        c.expect("RCPT TO:<bob@example.net>", 250).await;
        c.expect("DATA", 354).await;
        c.send_raw(&stuff(content.as_bytes())).await;
        c.send_raw(b".\r\n").await;
        let r = c.read_reply().await;
        assert_eq!(r.code, code, "{r:?}");
    }
    assert_eq!(
        h.sink.data_commands(),
        1,
        "DATA opened for a refused message"
    );
    send(&mut c, alice, &message(alice, 0)).await;
    assert_eq!(h.sink.wait_for(2, Duration::from_secs(20)).await.len(), 2);
}
