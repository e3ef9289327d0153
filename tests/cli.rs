//! The command line: check-config, hash-password, exit codes, SIGTERM.

mod common;

use common::{Harness, Setup, TestUser, postern_bin, users_yaml};
use std::io::Write;
use std::process::{Command, Output, Stdio};

fn run(args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(postern_bin())
        .args(args)
        .env_remove("POSTERN_CONFIG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A command that fails early exits without reading its input: not an error here.
    match child.stdin.take().unwrap().write_all(stdin.as_bytes()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
        other => other.unwrap(),
    }
    child.wait_with_output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A minimal valid setup in a temp dir: certificate, users, smarthost secret.
fn valid_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let ca = postern::tls::TestCa::new("t").unwrap();
    common::write_cert(&ca, dir.path(), "server");
    std::fs::write(
        dir.path().join("users.yaml"),
        users_yaml(&[TestUser::new("u1", "pw", &["@a.example"])]),
    )
    .unwrap();
    common::write(&dir.path().join("secret"), "very-secret-relay-password\n");
    dir
}

const VALID: &str = "hostname: relay.test
listeners:
  - address: \"127.0.0.1:0\"
    tls: starttls
tls:
  certificate: server-cert.pem
  private_key: server-key.pem
users:
  file: users.yaml
smarthost:
  address: smtp.example.net:587
  username: relay
  password_file: secret
delivery:
  mode: passthrough
limits:
  max_message_size: 10MiB
timeouts:
  command: 2m
";

#[test]
fn check_config_accepts_a_valid_config() {
    let dir = valid_dir();
    let path = dir.path().join("postern.yaml");
    std::fs::write(&path, VALID).unwrap();
    let out = run(&["check-config", "-c", path.to_str().unwrap()], "");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("OK"));
    assert!(stdout.contains("users      1"));
    assert!(stdout.contains("smtp.example.net:587"));
    assert!(!stdout.contains("very-secret-relay-password"));
    // $POSTERN_CONFIG is used when -c is absent.
    let out = Command::new(postern_bin())
        .arg("check-config")
        .env("POSTERN_CONFIG", &path)
        .output()
        .unwrap();
    assert!(out.status.success());
}

#[test]
fn exposed_secrets_refuse_and_loose_files_warn() {
    use std::os::unix::fs::PermissionsExt;
    let dir = valid_dir();
    let path = dir.path().join("postern.yaml");
    std::fs::write(&path, VALID).unwrap();
    let chmod = |name: &str, mode: u32| {
        std::fs::set_permissions(dir.path().join(name), std::fs::Permissions::from_mode(mode))
            .unwrap()
    };
    // A users file anyone can read: a warning, still valid.
    chmod("users.yaml", 0o644);
    let out = run(&["check-config", "-c", path.to_str().unwrap()], "");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("users.yaml is readable by every user on this machine"),
        "{}",
        text(&out.stdout)
    );
    // A private key or smarthost password anyone can read: refused, by check-config
    // and by serve (exit 1 before binding anything).
    chmod("server-key.pem", 0o644);
    chmod("secret", 0o604);
    for args in [&["check-config", "-c"][..], &["serve", "-c"][..]] {
        let mut all = args.to_vec();
        all.push(path.to_str().unwrap());
        let out = run(&all, "");
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = text(&out.stderr);
        assert!(err.contains("tls.private_key:"), "{err}");
        assert!(
            err.contains("server-key.pem is readable or writable by every user"),
            "{err}"
        );
        assert!(err.contains("chmod o-rwx"), "{err}");
        assert!(err.contains("smarthost.password_file:"), "{err}");
        assert!(!err.contains("very-secret-relay-password"), "{err}");
    }
    // A users file anyone can write: refused.
    chmod("server-key.pem", 0o600);
    chmod("secret", 0o600);
    chmod("users.yaml", 0o646);
    let out = run(&["check-config", "-c", path.to_str().unwrap()], "");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("users.file:"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn check_config_lists_every_problem() {
    let dir = valid_dir();
    let path = dir.path().join("postern.yaml");
    let bad = VALID
        .replace("127.0.0.1:0", "not-an-address")
        .replace("smtp.example.net:587", "no-port-here")
        .replace("command: 2m", "command: soon")
        .replace("users.yaml", "missing-users.yaml")
        + "colour: blue\n";
    std::fs::write(&path, bad).unwrap();
    let out = run(&["check-config", "-c", path.to_str().unwrap()], "");
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    for needle in [
        "listeners[0].address",
        "smarthost.address",
        "timeouts",
        "colour: unknown key",
    ] {
        assert!(err.contains(needle), "missing {needle:?} in:\n{err}");
    }
    assert!(
        err.contains(path.to_str().unwrap()),
        "problems name the file"
    );
}

#[test]
fn check_config_reports_users_file_problems() {
    let dir = valid_dir();
    let path = dir.path().join("postern.yaml");
    std::fs::write(&path, VALID).unwrap();
    let good = postern::auth::hash_password("pw").unwrap();
    std::fs::write(
        dir.path().join("users.yaml"),
        format!(
            "users:\n  - name: a\n    password: plaintext\n  - name: b\n    password: \"{good}\"\n    senders: [\"no-at-sign\"]\n  - name: b\n    password: \"{good}\"\n"
        ),
    )
    .unwrap();
    let out = run(&["check-config", "-c", path.to_str().unwrap()], "");
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    for needle in [
        "users[0].password",
        "users[1].senders[0]",
        "listed twice",
        "users.yaml",
    ] {
        assert!(err.contains(needle), "missing {needle:?} in:\n{err}");
    }
    // An unknown key in the users file is an error too.
    std::fs::write(
        dir.path().join("users.yaml"),
        format!("users:\n  - name: a\n    password: \"{good}\"\n    sender: [x]\n"),
    )
    .unwrap();
    let out = run(&["check-config", "-c", path.to_str().unwrap()], "");
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("unknown field"));
}

#[test]
fn hash_password_reads_stdin_and_prints_a_phc_string() {
    let out = run(&["hash-password"], "correct horse battery staple\n");
    assert!(out.status.success());
    let phc = text(&out.stdout).trim().to_string();
    assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
    assert!(postern::auth::check_phc(&phc).is_ok());
    // It verifies: a users file with it authenticates (checked through the store).
    let users = postern::config::Users::from_list(vec![postern::config::User {
        name: "x".into(),
        password_hash: Some(phc),
        networks: vec![],
        senders: vec![],
        rate_limits: Default::default(),
        disabled: false,
        allow_any_header_from: false,
    }]);
    let auth = postern::auth::Authenticator::new(users, 1, 1);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let ok = rt.block_on(auth.verify(
        "127.0.0.1".parse().unwrap(),
        "x",
        &postern::secret::Secret::new("correct horse battery staple".into()),
    ));
    assert!(matches!(ok, postern::auth::AuthOutcome::Ok(_)));
    // An empty password is refused.
    let out = run(&["hash-password"], "\n");
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn usage_errors_exit_1() {
    assert_eq!(run(&["frobnicate"], "").status.code(), Some(1));
    assert_eq!(run(&["serve", "--bogus"], "").status.code(), Some(1));
    let out = run(&["serve", "-c", "/nonexistent/postern.yaml"], "");
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("/nonexistent/postern.yaml"));
}

#[test]
fn cannot_bind_exits_2() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let dir = valid_dir();
    let path = dir.path().join("postern.yaml");
    std::fs::write(
        &path,
        VALID.replace("127.0.0.1:0", &format!("127.0.0.1:{port}")),
    )
    .unwrap();
    let out = run(&["serve", "-c", path.to_str().unwrap()], "");
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("cannot listen"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_and_exits_0() {
    let mut h = Harness::start(Setup::default()).await;
    // An idle session is told the server is going away.
    let mut idle = common::client::Client::connect(h.starttls).await;
    idle.expect("EHLO client.test", 250).await;
    let status = tokio::task::block_in_place(|| h.terminate());
    assert!(status.success(), "{status:?}");
    let r = idle.read_reply().await;
    assert_eq!((r.code, r.esc.unwrap().to_string()), (421, "4.3.2".into()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_users_and_keeps_them_on_a_broken_file() {
    let h = Harness::start(Setup::default()).await;
    let hup = || {
        Command::new("kill")
            .args(["-HUP", &h.pid().to_string()])
            .status()
            .unwrap();
    };
    let users = h.dir.path().join("users.yaml");
    std::fs::write(
        &users,
        users_yaml(&[TestUser::new(
            "newbie",
            "newbie-password",
            &["@new.example"],
        )]),
    )
    .unwrap();
    hup();
    assert!(
        h.wait_log("reload complete", std::time::Duration::from_secs(10))
            .await
    );
    let mut c = h.session("newbie", "newbie-password").await;
    c.expect("MAIL FROM:<n@new.example>", 250).await;
    // alice is gone with the old file.
    let mut c = common::client::Client::connect_tls(h.implicit, &h.ca_pem()).await;
    c.expect("EHLO client.test", 250).await;
    assert_eq!(c.auth_plain("alice", "alice-password").await.code, 535);
    // A broken file is refused and newbie keeps working.
    std::fs::write(&users, "users:\n  - name: x\n    password: not-a-hash\n").unwrap();
    hup();
    assert!(
        h.wait_log("reload rejected", std::time::Duration::from_secs(10))
            .await
    );
    assert_eq!(c.auth_plain("newbie", "newbie-password").await.code, 235);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_a_transaction_in_progress_finish() {
    let mut h = Harness::start(Setup::default()).await;
    let mut c = h.session("alice", "alice-password").await;
    c.expect("MAIL FROM:<a@alice.example>", 250).await;
    c.expect("RCPT TO:<b@example.org>", 250).await;
    c.expect("DATA", 354).await;
    c.send_raw(b"Subject: in flight\r\n\r\nfirst half\r\n")
        .await;
    let pid = h.pid().to_string();
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(
        h.wait_log("draining", std::time::Duration::from_secs(5))
            .await
    );
    // The server no longer accepts connections, but this transaction completes.
    c.send_raw(b"second half\r\n.\r\n").await;
    assert_eq!(c.read_reply().await.code, 250);
    // Then, idle again, the session is told the server is going away.
    assert_eq!(c.read_reply().await.code, 421);
    assert!(c.closed().await);
    let status = tokio::task::block_in_place(|| h.terminate());
    assert!(status.success(), "{status:?}");
    let msgs = h.sink.wait_for(1, std::time::Duration::from_secs(5)).await;
    assert!(String::from_utf8_lossy(&msgs[0].content).ends_with("first half\r\nsecond half\r\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_swaps_the_tls_certificate() {
    let h = Harness::start(Setup::default()).await;
    let serial = |h: &Harness| {
        let out = Command::new("openssl")
            .args([
                "s_client",
                "-connect",
                &h.implicit.to_string(),
                "-servername",
                "localhost",
            ])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.lines()
            .find(|l| l.contains("s:CN"))
            .unwrap_or("")
            .to_string()
    };
    let before = tokio::task::block_in_place(|| serial(&h));
    assert!(
        before.contains("CN = localhost") || before.contains("CN=localhost"),
        "{before}"
    );
    // A new certificate for another name, same paths.
    let ca = postern::tls::TestCa::new("Renewed CA").unwrap();
    let cert = ca.issue(&["renewed.example", "127.0.0.1"]).unwrap();
    std::fs::write(h.dir.path().join("server-cert.pem"), &cert.cert_pem).unwrap();
    std::fs::write(h.dir.path().join("server-key.pem"), &cert.key_pem).unwrap();
    Command::new("kill")
        .args(["-HUP", &h.pid().to_string()])
        .status()
        .unwrap();
    assert!(
        h.wait_log("reload complete", std::time::Duration::from_secs(10))
            .await
    );
    let after = tokio::task::block_in_place(|| serial(&h));
    assert!(after.contains("renewed.example"), "{after}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_add_disable_list_with_a_running_server() {
    let h = Harness::start(Setup::default()).await;
    let users_file = h.dir.path().join("users.yaml");
    let mut original = std::fs::read_to_string(&users_file).unwrap();
    original.insert_str(0, "# operator's comment\n");
    std::fs::write(&users_file, &original).unwrap();
    let user = |args: &[&str], stdin: &str| {
        let mut full = vec!["user"];
        full.extend_from_slice(args);
        full.extend_from_slice(&["-c", h.config_path.to_str().unwrap()]);
        run(&full, stdin)
    };
    let out = user(
        &["add", "newsite", "--sender", "@newsite.example"],
        "newsite-password\n",
    );
    assert!(out.status.success(), "{}", text_of(&out));
    assert!(
        text(&out.stdout).contains("the running server reloaded"),
        "{}",
        text_of(&out)
    );
    let after = std::fs::read_to_string(&users_file).unwrap();
    assert!(
        after.starts_with("# operator's comment\n"),
        "comments survive"
    );
    assert!(!after.contains("newsite-password"));
    // The new user works at once.
    let mut c = h.session("newsite", "newsite-password").await;
    c.expect("MAIL FROM:<x@newsite.example>", 250).await;
    // Adding twice, or with a bad sender, fails.
    assert_eq!(user(&["add", "newsite"], "pw\n").status.code(), Some(1));
    assert_eq!(
        user(&["add", "other", "--sender", "nonsense"], "pw\n")
            .status
            .code(),
        Some(1)
    );
    // Disable, then the login fails.
    let out = user(&["disable", "newsite"], "");
    assert!(out.status.success(), "{}", text_of(&out));
    let mut c = common::client::Client::connect_tls(h.implicit, &h.ca_pem()).await;
    c.expect("EHLO x", 250).await;
    assert_eq!(c.auth_plain("newsite", "newsite-password").await.code, 535);
    let out = user(&["list"], "");
    let listing = text(&out.stdout);
    assert!(
        listing.contains("newsite") && listing.contains("disabled"),
        "{listing}"
    );
    assert!(
        listing.contains("alice") && listing.contains("active"),
        "{listing}"
    );
    // Enable again: the line goes, the server reloads, the login works.
    let out = user(&["enable", "newsite"], "");
    assert!(out.status.success(), "{}", text_of(&out));
    let users = std::fs::read_to_string(h.dir.path().join("users.yaml")).unwrap();
    // Only mallory (disabled from the start) is left disabled.
    assert_eq!(users.matches("disabled: true").count(), 1, "{users}");
    let mut c = common::client::Client::connect_tls(h.implicit, &h.ca_pem()).await;
    c.expect("EHLO x", 250).await;
    assert_eq!(c.auth_plain("newsite", "newsite-password").await.code, 235);
}

fn text_of(out: &Output) -> String {
    format!("{}{}", text(&out.stdout), text(&out.stderr))
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0"))
}

fn owner_and_mode(path: &std::path::Path) -> (u32, u32, u32) {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).unwrap();
    (m.uid(), m.gid(), m.mode() & 0o7777)
}

/// As the README installs it: the files the service re-reads are `0640
/// root:nogroup`, the spool belongs to nobody, the server drops to nobody.
fn installed_for_nobody(dir: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let spool = dir.join("spool");
    std::fs::create_dir_all(&spool).unwrap();
    std::os::unix::fs::chown(&spool, Some(65534), Some(65534)).unwrap();
    for f in ["users.yaml", "server-cert.pem", "server-key.pem"] {
        let p = dir.join(f);
        std::os::unix::fs::chown(&p, Some(0), Some(65534)).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o640)).unwrap();
    }
    // The brake's state file, which the server writes: nobody's, private.
    let state = spool.join("suspended.yaml");
    std::fs::write(
        &state,
        "suspended:\n  mallory:\n    reason: test\n    since: 1700000000\n",
    )
    .unwrap();
    std::os::unix::fs::chown(&state, Some(65534), Some(65534)).unwrap();
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// Like [`installed_for_nobody`], but the users file is readable by root only: the
/// server reads it at start (as root), and cannot re-read it after dropping root.
fn users_file_for_root_only(dir: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    installed_for_nobody(dir);
    let p = dir.join("users.yaml");
    std::os::unix::fs::chown(&p, Some(0), Some(0)).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
}

fn run_as_nobody(before_launch: fn(&std::path::Path)) -> Setup {
    Setup {
        extra: "run_as:\n  user: nobody\n  group: nogroup\n".into(),
        before_launch: Some(before_launch),
        ..Setup::default()
    }
}

fn user_cmd(h: &Harness, args: &[&str]) -> Output {
    let mut full = vec!["user"];
    full.extend_from_slice(args);
    full.extend_from_slice(&["-c", h.config_path.to_str().unwrap()]);
    run(&full, "")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_disable_as_root_keeps_the_owner_and_the_unprivileged_server_reloads() {
    if !is_root() {
        eprintln!("not root; skipped");
        return;
    }
    let h = Harness::start(run_as_nobody(installed_for_nobody)).await;
    let users_file = h.dir.path().join("users.yaml");
    assert_eq!(owner_and_mode(&users_file), (0, 65534, 0o640));
    let mut c = h.session("alice", "alice-password").await;
    c.expect("MAIL FROM:<a@alice.example>", 250).await;

    let out = tokio::task::block_in_place(|| user_cmd(&h, &["disable", "alice"]));
    assert!(out.status.success(), "{}", text_of(&out));
    assert!(text(&out.stdout).contains("the running server reloaded"));
    assert_eq!(owner_and_mode(&users_file), (0, 65534, 0o640));
    // The server really re-read it: alice is out once the CLI says so.
    let mut c = common::client::Client::connect_tls(h.implicit, &h.ca_pem()).await;
    c.expect("EHLO x", 250).await;
    assert_eq!(c.auth_plain("alice", "alice-password").await.code, 535);

    // And back: still the same owner, and alice logs in again.
    let out = tokio::task::block_in_place(|| user_cmd(&h, &["enable", "alice"]));
    assert!(out.status.success(), "{}", text_of(&out));
    assert_eq!(owner_and_mode(&users_file), (0, 65534, 0o640));
    assert_eq!(c.auth_plain("alice", "alice-password").await.code, 235);

    // Lifting a suspension rewrites the brake's state file: it stays nobody's.
    let state = h.dir.path().join("spool/suspended.yaml");
    let out = tokio::task::block_in_place(|| user_cmd(&h, &["enable", "mallory"]));
    assert!(out.status.success(), "{}", text_of(&out));
    assert!(
        text(&out.stdout).contains("suspension lifted"),
        "{}",
        text_of(&out)
    );
    assert_eq!(owner_and_mode(&state), (65534, 65534, 0o600));
    let mut c = common::client::Client::connect_tls(h.implicit, &h.ca_pem()).await;
    c.expect("EHLO x", 250).await;
    assert_eq!(c.auth_plain("mallory", "mallory-password").await.code, 235);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_disable_exits_2_and_says_why_when_the_server_cannot_reload() {
    if !is_root() {
        eprintln!("not root; skipped");
        return;
    }
    let h = Harness::start(run_as_nobody(users_file_for_root_only)).await;
    let users_file = h.dir.path().join("users.yaml");
    let out = tokio::task::block_in_place(|| user_cmd(&h, &["disable", "alice"]));
    assert_eq!(out.status.code(), Some(2), "{}", text_of(&out));
    let err = text(&out.stderr);
    assert!(err.contains("reload failed"), "{err}");
    assert!(err.contains("users file"), "{err}");
    assert!(err.contains("Permission denied"), "{err}");
    // What did reload is named; the users file is not among it.
    assert!(
        err.contains("(reloaded: suspension list, TLS certificate)"),
        "{err}"
    );
    assert!(!text(&out.stdout).contains("reloaded"), "{}", text_of(&out));
    // The file was written (with its owner kept); the server still has the old list.
    assert_eq!(owner_and_mode(&users_file), (0, 0, 0o600));
    assert!(
        std::fs::read_to_string(&users_file)
            .unwrap()
            .contains("disabled: true")
    );
    let mut c = h.session("alice", "alice-password").await;
    c.expect("MAIL FROM:<a@alice.example>", 250).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_over_the_control_socket_reports_an_invalid_users_file() {
    let h = Harness::start(Setup::default()).await;
    let socket = h.dir.path().join("spool/control.sock");
    let ask = || postern::control::request(&socket, "reload").unwrap();
    let answer = tokio::task::block_in_place(ask);
    assert!(answer.starts_with("ok reloaded"), "{answer}");
    let out =
        tokio::task::block_in_place(|| run(&["reload", "-c", h.config_path.to_str().unwrap()], ""));
    assert!(out.status.success(), "{}", text_of(&out));
    assert!(
        text(&out.stdout).contains("reloaded (2 users"),
        "{}",
        text_of(&out)
    );
    // A users file that does not validate: the answer says so and why, on one line,
    // and the users in force stay.
    std::fs::write(
        h.dir.path().join("users.yaml"),
        "users:\n  - name: x\n    password: not-a-hash\n",
    )
    .unwrap();
    let answer = tokio::task::block_in_place(ask);
    assert!(answer.starts_with("err "), "{answer}");
    assert!(answer.contains("users[0].password"), "{answer}");
    // `postern reload` says the same and exits 2.
    let out =
        tokio::task::block_in_place(|| run(&["reload", "-c", h.config_path.to_str().unwrap()], ""));
    assert_eq!(out.status.code(), Some(2), "{}", text_of(&out));
    assert!(
        text(&out.stderr).contains("users[0].password"),
        "{}",
        text_of(&out)
    );
    let mut c = h.session("alice", "alice-password").await;
    c.expect("MAIL FROM:<a@alice.example>", 250).await;
    // A broken certificate is reported too.
    std::fs::write(
        h.dir.path().join("users.yaml"),
        users_yaml(&[TestUser::new(
            "alice",
            "alice-password",
            &["@alice.example"],
        )]),
    )
    .unwrap();
    std::fs::write(h.dir.path().join("server-cert.pem"), "not a certificate\n").unwrap();
    let answer = tokio::task::block_in_place(ask);
    assert!(
        answer.starts_with("err ") && answer.contains("TLS certificate"),
        "{answer}"
    );
}
