//! Users in PostgreSQL (`users.database`) against a private PostgreSQL server and
//! the real binary: tables created on first start (two instances at once), `postern
//! user ...` and the admin API writing to the database, a panel writing the table
//! directly, every change reaching every instance within seconds without SIGHUP,
//! the database going away and coming back, and a start refused without it.

mod common;

use common::postgres::{PASSWORD, Postgres};
use common::{Harness, Setup, client::Client, free_port, postern_bin};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const TOKEN: &str = "0123456789abcdef0123456789abcdef";
/// No login penalties in the way of tests that poll a login until it works.
const ABUSE: &str = "abuse:\n  auth_tarpit_after: 1000\n  auth_block_ip_after: 1000\n  auth_block_user_after: 1000\n";
const ADMIN: &str = "admin:\n  address: \"127.0.0.1:0\"\n  token_file: admin.token\n";
/// How long a change may take to reach an instance.
const FEW_SECONDS: Duration = Duration::from_secs(10);

/// Points the harness's config at the database named in `pg.url` (a `before_launch`
/// hook, which cannot capture the URL), with the `users` keys in `pg.extra` if any.
fn use_database(dir: &Path) {
    let url = std::fs::read_to_string(dir.join("pg.url")).unwrap();
    let extra = std::fs::read_to_string(dir.join("pg.extra")).unwrap_or_default();
    let path = dir.join("postern.yaml");
    let config = std::fs::read_to_string(&path).unwrap().replace(
        "users:\n  file: users.yaml\n",
        &format!(
            "users:\n  database: {}\n  password_file: pg.secret\n{extra}",
            url.trim()
        ),
    );
    common::write(&path, &config);
}

fn setup(pg: &Postgres, admin: bool) -> Setup {
    let mut extra = ABUSE.to_string();
    if admin {
        extra.push_str(ADMIN);
    }
    Setup {
        users: Vec::new(),
        extra,
        files: vec![
            ("pg.url", pg.url()),
            ("pg.secret", format!("{PASSWORD}\n")),
            ("admin.token", format!("{TOKEN}\n")),
        ],
        before_launch: Some(use_database),
        ..Setup::default()
    }
}

/// The reply code to AUTH PLAIN on a fresh STARTTLS connection.
async fn auth(h: &Harness, user: &str, password: &str) -> u16 {
    let mut c = Client::connect(h.starttls).await;
    c.expect("EHLO client.test", 250).await;
    let mut c = c.starttls(&h.ca_pem()).await;
    c.expect("EHLO client.test", 250).await;
    c.auth_plain(user, password).await.code
}

/// Tries AUTH until it is answered `code`; how long that took. Fails after
/// [`FEW_SECONDS`].
async fn until_auth(h: &Harness, user: &str, password: &str, code: u16) -> Duration {
    let start = Instant::now();
    loop {
        let got = auth(h, user, password).await;
        if got == code {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < FEW_SECONDS,
            "{user}: AUTH still {got}, not {code}, after {FEW_SECONDS:?}:\n{}",
            h.logs().join("\n")
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `postern ARGS -c CONFIG` with `stdin` as its input: success, and the output.
fn cli_with_input(h: &Harness, args: &[&str], stdin: &str) -> (bool, String) {
    use std::io::Write;
    let mut child = Command::new(postern_bin())
        .args(args)
        .arg("-c")
        .arg(&h.config_path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

/// A user row as a panel would insert it.
fn insert_user(pg: &Postgres, name: &str, password: &str, sender: &str) {
    let hash = postern::auth::hash_password(password).unwrap();
    pg.psql(
        "postern",
        &format!(
            "INSERT INTO postern_users (name, password_hash, senders) VALUES ('{name}', '{hash}', ARRAY['{sender}'])"
        ),
    );
}

/// One admin API call with curl: the status and the body.
fn api(h: &Harness, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
    let logs = h.logs();
    let line = logs
        .iter()
        .find(|l| l.contains("serving the admin API"))
        .expect("admin API log line");
    let start = line.find("address=").unwrap() + "address=".len();
    let addr = line[start..].split_whitespace().next().unwrap();
    let mut cmd = Command::new("curl");
    cmd.args([
        "-sS",
        "--max-time",
        "20",
        "-X",
        method,
        "-w",
        "\n%{http_code}",
    ])
    .args(["-H", &format!("Authorization: Bearer {TOKEN}")]);
    if let Some(b) = body {
        cmd.args(["-H", "Content-Type: application/json", "--data-binary", b]);
    }
    let out = cmd.arg(format!("http://{addr}{path}")).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

fn assert_password_never_logged(h: &Harness) {
    for line in h.logs() {
        assert!(!line.contains(PASSWORD), "database password logged: {line}");
    }
}

#[tokio::test]
async fn first_start_creates_the_tables_and_the_cli_reaches_the_server() {
    let Some(pg) = Postgres::start() else { return };
    let mut h = Harness::start(setup(&pg, false)).await;
    assert_eq!(
        pg.psql(
            "postern",
            "SELECT version, name FROM postern_schema ORDER BY version"
        ),
        "1|users\n2|domains"
    );
    assert_eq!(
        pg.psql("postern", "SELECT count(*) FROM postern_users"),
        "0"
    );
    assert!(h.logs().iter().any(|l| l.contains("tables created")));

    let (ok, out) = cli_with_input(
        &h,
        &["user", "add", "carol", "--sender", "@carol.example"],
        "carol-password\n",
    );
    assert!(ok, "{out}");
    assert!(out.contains("added carol to the users database"), "{out}");
    let took = until_auth(&h, "carol", "carol-password", 235).await;
    eprintln!("measured: postern user add -> AUTH accepted after {took:?}");
    assert_eq!(auth(&h, "carol", "wrong").await, 535);
    let hash = pg.psql(
        "postern",
        "SELECT password_hash FROM postern_users WHERE name = 'carol'",
    );
    assert!(hash.starts_with("$argon2id$"), "{hash}");

    let (ok, out) = cli_with_input(&h, &["user", "add", "carol"], "x\n");
    assert!(!ok && out.contains("already exists"), "{out}");
    let (ok, out) = cli_with_input(&h, &["user", "add", "bad", "--sender", "nope"], "x\n");
    assert!(!ok && out.contains("nope"), "{out}");

    let (ok, out) = common::cli(&h, &["user", "disable", "carol"]);
    assert!(ok, "{out}");
    until_auth(&h, "carol", "carol-password", 535).await;
    let (ok, out) = common::cli(&h, &["user", "list"]);
    assert!(
        ok && out.contains("carol") && out.contains("disabled"),
        "{out}"
    );
    let (ok, out) = common::cli(&h, &["user", "enable", "carol"]);
    assert!(ok, "{out}");
    until_auth(&h, "carol", "carol-password", 235).await;

    let (ok, out) = common::cli(&h, &["check-config"]);
    assert!(ok, "{out}");
    assert!(
        out.contains(&format!(
            "in the database {} (password from users.password_file)",
            pg.url()
        )),
        "{out}"
    );
    assert!(out.contains("1 in the database (0 disabled)"), "{out}");
    assert!(!out.contains(PASSWORD));

    // Restarted as a role with only the grants the README lists (no right to
    // create): the tables exist, so it starts, and reads and writes users.
    pg.psql(
        "postern",
        &format!(
            "CREATE ROLE limited LOGIN PASSWORD '{PASSWORD}';
             GRANT SELECT, INSERT, UPDATE, DELETE ON postern_users TO limited;
             GRANT SELECT, INSERT, UPDATE, DELETE ON postern_domains TO limited;
             GRANT SELECT, UPDATE ON postern_users_version TO limited;
             GRANT SELECT ON postern_schema TO limited;"
        ),
    );
    assert!(h.terminate().success());
    let config = std::fs::read_to_string(&h.config_path).unwrap();
    common::write(
        &h.config_path,
        &config.replace("postgres://postern@", "postgres://limited@"),
    );
    h.launch().await;
    assert_eq!(auth(&h, "carol", "carol-password").await, 235);
    let (ok, out) = cli_with_input(
        &h,
        &["user", "add", "dave", "--sender", "@dave.example"],
        "dave-password\n",
    );
    assert!(ok, "{out}");
    until_auth(&h, "dave", "dave-password", 235).await;
    assert_password_never_logged(&h);
}

#[tokio::test]
async fn two_instances_share_one_database_and_a_panel_writes_to_it() {
    let Some(pg) = Postgres::start() else { return };
    // Both start at once on the empty database: the advisory lock lets one create
    // the tables while the other waits.
    let (a, b) = tokio::join!(
        Harness::start(setup(&pg, true)),
        Harness::start(setup(&pg, true))
    );
    assert_eq!(
        pg.psql("postern", "SELECT count(*) FROM postern_schema"),
        "2",
        "each migration applied once"
    );

    let (status, body) = api(
        &a,
        "POST",
        "/api/v1/users",
        Some(r#"{"name":"shop","password":"shop-password","senders":["@shop.example"]}"#),
    );
    assert_eq!(status, 201, "{body}");
    assert_eq!(
        auth(&a, "shop", "shop-password").await,
        235,
        "at once on the instance written to"
    );
    let took = until_auth(&b, "shop", "shop-password", 235).await;
    eprintln!("measured: admin API create on instance 1 -> AUTH on instance 2 after {took:?}");
    let (status, _) = api(
        &b,
        "POST",
        "/api/v1/users",
        Some(r#"{"name":"shop","password":"x","senders":[]}"#),
    );
    assert_eq!(status, 409);

    // A panel disables the user with a plain UPDATE.
    pg.psql(
        "postern",
        "UPDATE postern_users SET disabled = true WHERE name = 'shop'",
    );
    let took = until_auth(&b, "shop", "shop-password", 535).await;
    eprintln!("measured: SQL UPDATE disabled -> refused on instance 2 after {took:?}");
    until_auth(&a, "shop", "shop-password", 535).await;

    // A writer that bypasses the trigger (no NOTIFY) but bumps the counter is
    // picked up by the poll.
    pg.psql(
        "postern",
        "ALTER TABLE postern_users DISABLE TRIGGER postern_users_changed;
         UPDATE postern_users SET disabled = false WHERE name = 'shop';
         UPDATE postern_users_version SET counter = counter + 1;
         ALTER TABLE postern_users ENABLE TRIGGER postern_users_changed;",
    );
    let took = until_auth(&b, "shop", "shop-password", 235).await;
    eprintln!(
        "measured: change without NOTIFY (counter only) -> AUTH on instance 2 after {took:?}"
    );

    // And creates one, with a hash it made itself.
    insert_user(&pg, "panel", "panel-password", "@panel.example");
    until_auth(&b, "panel", "panel-password", 235).await;
    let (status, body) = api(&a, "GET", "/api/v1/users/shop", None);
    assert_eq!(status, 200, "{body}");
    let shop: serde_json::Value = serde_json::from_str(&body).unwrap();
    // Re-enabled by the writer that bypassed the trigger.
    assert_eq!(shop["disabled"], false, "{body}");

    // A row no instance can use is left out and named; the others keep working.
    pg.psql(
        "postern",
        "INSERT INTO postern_users (name, password_hash, senders) VALUES ('broken', 'plain-text', '{}')",
    );
    assert!(b.wait_log("broken", FEW_SECONDS).await);
    assert!(
        b.logs()
            .iter()
            .any(|l| l.contains("left out") && l.contains("broken"))
    );
    assert_eq!(auth(&b, "panel", "panel-password").await, 235);
    let (status, _) = api(&a, "DELETE", "/api/v1/users/panel", None);
    assert_eq!(status, 204);
    until_auth(&b, "panel", "panel-password", 535).await;
    assert_password_never_logged(&a);
    assert_password_never_logged(&b);
}

#[tokio::test]
async fn database_down_keeps_known_users_and_changes_flow_when_it_returns() {
    let Some(mut pg) = Postgres::start() else {
        return;
    };
    let h = Harness::start(setup(&pg, true)).await;
    insert_user(&pg, "known", "known-password", "@known.example");
    until_auth(&h, "known", "known-password", 235).await;

    pg.stop();
    assert!(
        h.wait_log("lost the users database", FEW_SECONDS).await,
        "{}",
        h.logs().join("\n")
    );
    // A panel's change cannot be kept: 503 (try again later), never a 4xx or a 500
    // that would tell it the request itself was wrong.
    let body = r#"{"name":"during","password":"during-password-1","senders":["@d.example"]}"#;
    let (status, answer) = api(&h, "POST", "/api/v1/users", Some(body));
    assert_eq!(status, 503, "{answer}");
    let (status, answer) = api(
        &h,
        "PATCH",
        "/api/v1/users/known",
        Some(r#"{"disabled":true}"#),
    );
    assert_eq!(status, 503, "{answer}");
    // Sessions for users in memory go on: AUTH and a message relayed.
    let mut c = h.session("known", "known-password").await;
    let reply = c
        .send_mail(
            "a@known.example",
            &["rcpt@dest.example"],
            "Subject: hi\r\n\r\nwhile the database is down\r\n",
        )
        .await;
    assert_eq!(reply.code, 250, "{reply:?}");
    // A few reconnection attempts later, the loss is still logged once.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let warnings = h
        .logs()
        .into_iter()
        .filter(|l| l.contains("WARN") && l.contains("users database"))
        .count();
    assert_eq!(warnings, 1, "{}", h.logs().join("\n"));

    pg.resume();
    assert!(
        h.wait_log("users database reachable again", Duration::from_secs(20))
            .await,
        "{}",
        h.logs().join("\n")
    );
    insert_user(&pg, "later", "later-password", "@later.example");
    let took = until_auth(&h, "later", "later-password", 235).await;
    eprintln!("measured: after the database returned, SQL INSERT -> AUTH after {took:?}");
}

#[tokio::test]
async fn no_database_at_start_is_exit_2_and_bad_urls_are_config_errors() {
    // No PostgreSQL needed: the harness gives a valid config to vary.
    let h = Harness::start(Setup::default()).await;
    let base = std::fs::read_to_string(&h.config_path).unwrap();
    let variant = |name: &str, users: &str| {
        let path = h.dir.path().join(name);
        common::write(&path, &base.replace("users:\n  file: users.yaml\n", users));
        path
    };
    let run = |args: &[&str], path: &Path| {
        let out = Command::new(postern_bin())
            .args(args)
            .arg("-c")
            .arg(path)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        (out.status.code(), text)
    };
    let port = free_port();
    let down = variant(
        "down.yaml",
        &format!("users:\n  database: postgres://postern@127.0.0.1:{port}/postern\n"),
    );
    let (code, out) = run(&["serve"], &down);
    assert_eq!(code, Some(2), "{out}");
    assert!(
        out.contains(&format!(
            "users database postgres://postern@127.0.0.1:{port}/postern: cannot connect"
        )),
        "{out}"
    );
    let (code, out) = run(&["check-config"], &down);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("warning") && out.contains("cannot connect"),
        "{out}"
    );

    let secret = variant(
        "secret.yaml",
        "users:\n  database: postgres://postern:hunter2@127.0.0.1/postern\n",
    );
    let (code, out) = run(&["check-config"], &secret);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("users.database") && out.contains("password_file"),
        "{out}"
    );
    assert!(!out.contains("hunter2"), "{out}");

    let both = variant(
        "both.yaml",
        "users:\n  file: users.yaml\n  database: postgres://postern@127.0.0.1/postern\n",
    );
    let (code, out) = run(&["check-config"], &both);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("not both"), "{out}");
}

#[tokio::test]
async fn tls_to_the_database_is_verified() {
    let ca = postern::tls::TestCa::new("database CA").unwrap();
    let cert = ca.issue(&["localhost", "127.0.0.1"]).unwrap();
    let Some(pg) = Postgres::start_with(Some((&cert.cert_pem, &cert.key_pem))) else {
        return;
    };
    let url = format!(
        "postgres://postern@localhost:{}/postern?sslmode=require",
        pg.port
    );
    let mut s = setup(&pg, false);
    s.files[0].1 = url.clone();
    s.files.push(("pg.extra", "  ca_file: ca.pem\n".into()));
    s.ca = Some(ca);
    let h = Harness::start(s).await;
    insert_user(&pg, "secure", "secure-password", "@secure.example");
    until_auth(&h, "secure", "secure-password", 235).await;
    // Postern's connections (the LISTEN one stays open) use TLS.
    let count = |ssl: &str| {
        pg.psql(
            "postern",
            &format!(
                "SELECT count(*) FROM pg_stat_ssl JOIN pg_stat_activity USING (pid) \
                 WHERE ssl = {ssl} AND application_name = 'postern'"
            ),
        )
    };
    assert_ne!(count("true"), "0");
    assert_eq!(count("false"), "0");

    // Without the CA that issued the server's certificate, no connection: the start
    // is refused.
    let base = std::fs::read_to_string(&h.config_path).unwrap();
    let untrusted = h.dir.path().join("untrusted.yaml");
    common::write(&untrusted, &base.replace("  ca_file: ca.pem\n", ""));
    let out = Command::new(postern_bin())
        .args(["serve", "-c"])
        .arg(&untrusted)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(
        text.contains("cannot connect") && text.contains("certificate"),
        "{text}"
    );
}

/// Rows that the table's types allow but Postern cannot read (a NULL inside an array,
/// a two-dimensional array) are left out by name: a running instance keeps syncing
/// the others, the API still answers, and a new instance starts.
#[tokio::test]
async fn an_unreadable_row_is_left_out_and_everything_else_goes_on() {
    let Some(pg) = Postgres::start() else { return };
    let h = Harness::start(setup(&pg, true)).await;
    insert_user(&pg, "good", "good-password", "@good.example");
    until_auth(&h, "good", "good-password", 235).await;
    let hash = postern::auth::hash_password("bad-password").unwrap();
    for (name, senders, networks) in [
        ("nullsender", "ARRAY[NULL, '@n.example']::text[]", "'{}'"),
        ("nullnetwork", "ARRAY['@n.example']", "ARRAY[NULL]::text[]"),
        (
            "twodims",
            "'{{\"@a.example\"},{\"@b.example\"}}'::text[]",
            "'{}'",
        ),
    ] {
        pg.psql(
            "postern",
            &format!(
                "INSERT INTO postern_users (name, password_hash, senders, networks) \
                 VALUES ('{name}', '{hash}', {senders}, {networks})"
            ),
        );
    }
    // A change after the bad rows still reaches the running instance.
    pg.psql(
        "postern",
        "UPDATE postern_users SET disabled = true WHERE name = 'good'",
    );
    until_auth(&h, "good", "good-password", 535).await;
    assert!(
        h.wait_log("nullsender", FEW_SECONDS).await,
        "{}",
        h.logs().join("\n")
    );
    let logs = h.logs().join("\n");
    assert!(!logs.contains("panicked"), "{logs}");
    let (status, body) = api(&h, "GET", "/api/v1/users", None);
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("\"good\"") && !body.contains("twodims"),
        "{body}"
    );
    // A new instance on the same database starts and leaves them out too.
    let second = Harness::start(setup(&pg, false)).await;
    let logs = second.logs().join("\n");
    for name in ["nullsender", "nullnetwork", "twodims"] {
        assert!(logs.contains(name), "{name} not named: {logs}");
    }
    assert_eq!(auth(&second, "nullsender", "bad-password").await, 535);
    assert_password_never_logged(&second);
}

#[tokio::test]
async fn domain_limits_from_the_database_and_the_api_apply_at_once_and_persist() {
    let Some(pg) = Postgres::start() else { return };
    let mut h = Harness::start(setup(&pg, true)).await;
    // A panel lists the domain, then adds its user: one reload brings both.
    pg.psql(
        "postern",
        "INSERT INTO postern_domains (name, messages_per_hour) VALUES ('site1.example', 1)",
    );
    insert_user(&pg, "shop", "shop-password", "@site1.example");
    until_auth(&h, "shop", "shop-password", 235).await;
    let mut c = Client::connect(h.starttls).await;
    c.expect("EHLO client.test", 250).await;
    let mut c = c.starttls(&h.ca_pem()).await;
    c.expect("EHLO client.test", 250).await;
    assert_eq!(c.auth_plain("shop", "shop-password").await.code, 235);
    let r = c
        .send_mail("a@site1.example", &["r@example.org"], "x\r\n")
        .await;
    assert_eq!(r.code, 250, "{r:?}");
    let r = c.cmd("MAIL FROM:<a@site1.example>").await;
    assert_eq!(r.code, 450, "{r:?}");
    assert!(r.text.contains("of domain site1.example (1)"), "{}", r.text);
    // The API raises it: in force at the next MAIL, and written to the table.
    let body = r#"{"rate_limits": {"messages_per_hour": 3}}"#;
    let (status, answer) = api(&h, "PUT", "/api/v1/domains/site1.example", Some(body));
    assert_eq!(status, 200, "{answer}");
    c.expect("MAIL FROM:<a@site1.example>", 250).await;
    c.expect("RSET", 250).await;
    assert_eq!(
        pg.psql(
            "postern",
            "SELECT messages_per_hour FROM postern_domains WHERE name = 'site1.example'"
        ),
        "3"
    );
    let (status, answer) = api(&h, "PUT", "/api/v1/domains/B%C3%BCcher.example", Some(body));
    assert_eq!(status, 201, "{answer}");
    assert!(
        answer.contains("\"name\":\"xn--bcher-kva.example\""),
        "{answer}"
    );
    // After a restart, read back from the database.
    assert!(h.terminate().success());
    h.launch().await;
    let (status, answer) = api(&h, "GET", "/api/v1/domains", None);
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(v[0]["name"], "site1.example", "{answer}");
    assert_eq!(v[0]["own_rate_limits"]["messages_per_hour"], 3, "{answer}");
    assert_eq!(v[1]["name"], "xn--bcher-kva.example", "{answer}");
    assert_eq!(
        api(&h, "DELETE", "/api/v1/domains/site1.example", None).0,
        204
    );
    assert_eq!(
        pg.psql("postern", "SELECT count(*) FROM postern_domains"),
        "1"
    );
    assert_password_never_logged(&h);
}
