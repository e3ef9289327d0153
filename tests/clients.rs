//! Clients nobody here wrote: Python's smtplib, curl and swaks, against the real
//! server and the stand-in smarthost.

mod common;

use common::{Harness, Setup, have};
use std::time::Duration;

const W: Duration = Duration::from_secs(10);

const SMTPLIB: &str = r#"
import os, smtplib, ssl, sys
ctx = ssl.create_default_context(cafile=os.environ["CA"])
msg = "From: a@alice.example\r\nTo: bob@example.org\r\nSubject: from smtplib\r\n\r\nHello from Python.\r\n.starts with a dot\r\n"
with smtplib.SMTP("127.0.0.1", int(os.environ["PORT587"]), local_hostname="py.test") as s:
    s.starttls(context=ctx)
    s.login("alice", "alice-password")
    s.sendmail("a@alice.example", ["bob@example.org"], msg)
with smtplib.SMTP_SSL("127.0.0.1", int(os.environ["PORT465"]), context=ctx) as s:
    s.login("alice", "alice-password")
    s.sendmail("boss@corp.example", ["carol@example.org", "dave@example.org"], msg)
    try:
        s.sendmail("ceo@corp.example", ["x@example.org"], msg)
        sys.exit("forged sender accepted")
    except smtplib.SMTPSenderRefused as e:
        assert e.smtp_code == 550, e
with smtplib.SMTP_SSL("127.0.0.1", int(os.environ["PORT465"]), context=ctx) as s:
    try:
        s.login("alice", "not-the-password")
        sys.exit("bad password accepted")
    except smtplib.SMTPAuthenticationError as e:
        assert e.smtp_code == 535, e
with smtplib.SMTP("127.0.0.1", int(os.environ["PORT587"])) as s:
    s.ehlo()
    assert not s.has_extn("auth"), "AUTH offered before TLS"
print("ok")
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_smtplib() {
    let h = Harness::start(Setup::default()).await;
    let ca = h.dir.path().join("ca.pem");
    let out = tokio::process::Command::new("python3")
        .arg("-c")
        .arg(SMTPLIB)
        .env("CA", &ca)
        .env("PORT587", h.starttls.port().to_string())
        .env("PORT465", h.implicit.port().to_string())
        .output()
        .await
        .expect("python3 is needed");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let msgs = h.sink.wait_for(2, W).await;
    assert_eq!(msgs.len(), 2);
    assert!(String::from_utf8_lossy(&msgs[0].content).contains("\r\n.starts with a dot\r\n"));
    assert_eq!(msgs[1].rcpts, vec!["carol@example.org", "dave@example.org"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_over_starttls_and_implicit_tls() {
    if !have("curl") {
        return;
    }
    let h = Harness::start(Setup::default()).await;
    let dir = h.dir.path();
    std::fs::write(
        dir.join("mail.txt"),
        "From: a@alice.example\r\nSubject: from curl\r\n\r\nhi\r\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("netrc"),
        "machine 127.0.0.1 login alice password alice-password\n",
    )
    .unwrap();
    for url in [
        format!("smtp://127.0.0.1:{}", h.starttls.port()),
        format!("smtps://127.0.0.1:{}", h.implicit.port()),
    ] {
        let out = tokio::process::Command::new("curl")
            .args(["--silent", "--show-error", "--ssl-reqd", "--url", &url])
            .arg("--cacert")
            .arg(dir.join("ca.pem"))
            .arg("--netrc-file")
            .arg(dir.join("netrc"))
            .args([
                "--mail-from",
                "a@alice.example",
                "--mail-rcpt",
                "bob@example.org",
                "--upload-file",
            ])
            .arg(dir.join("mail.txt"))
            .output()
            .await
            .unwrap();
        assert!(
            out.status.success(),
            "{url}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let msgs = h.sink.wait_for(2, W).await;
    assert_eq!(msgs.len(), 2);
    assert!(
        msgs.iter()
            .all(|m| String::from_utf8_lossy(&m.content).contains("Subject: from curl"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swaks_over_587_and_465() {
    if !have("swaks") {
        return;
    }
    let h = Harness::start(Setup::default()).await;
    let cases = [
        (h.starttls.port(), "--tls", "PLAIN"),
        (h.implicit.port(), "--tls-on-connect", "LOGIN"),
    ];
    for (port, tls, mech) in cases {
        let out = tokio::process::Command::new("swaks")
            .args([
                "--server",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                tls,
                "--auth",
                mech,
            ])
            .args(["--auth-user", "alice", "--auth-password", "alice-password"])
            .args([
                "--from",
                "a@alice.example",
                "--to",
                "bob@example.org",
                "--helo",
                "swaks.test",
            ])
            .args(["--header", "Subject: from swaks"])
            .output()
            .await
            .unwrap();
        assert!(
            out.status.success(),
            "swaks {tls} {mech}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    let msgs = h.sink.wait_for(2, W).await;
    assert_eq!(msgs.len(), 2);
    // A wrong password: swaks reports the 535 and exits non-zero.
    let out = tokio::process::Command::new("swaks")
        .args([
            "--server",
            "127.0.0.1",
            "--port",
            &h.implicit.port().to_string(),
            "--tls-on-connect",
        ])
        .args([
            "--auth",
            "PLAIN",
            "--auth-user",
            "alice",
            "--auth-password",
            "wrong",
        ])
        .args(["--from", "a@alice.example", "--to", "bob@example.org"])
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("535 5.7.8"));
}
