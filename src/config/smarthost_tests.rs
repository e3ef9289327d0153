//! The smarthost entry's modern-auth keys: OAuth 2.0, Graph, pacing, client
//! certificates.

use super::*;

/// Parses `smarthost_yaml` under a minimal config whose files live in `dir`.
fn parse_in(dir: &Path, smarthost_yaml: &str) -> Result<Config, String> {
    let yaml = format!(
        "hostname: relay.test\nlisteners:\n  - address: \"127.0.0.1:2525\"\n    tls: none\nusers:\n  file: users.yaml\n{smarthost_yaml}"
    );
    let mut problems = Problems::default();
    let file = dir.join("postern.yaml");
    match Config::from_yaml(&yaml, &file, dir, &mut problems) {
        Some(c) if problems.is_empty() => Ok(c),
        _ => Err(problems
            .0
            .iter()
            .map(|p| p.to_string())
            .collect::<Vec<_>>()
            .join("\n")),
    }
}

fn dir_with_secrets() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for f in ["m365.secret", "google.refresh", "empty.secret"] {
        let text = if f == "empty.secret" {
            "\n"
        } else {
            "s3cret\n"
        };
        std::fs::write(dir.path().join(f), text).unwrap();
    }
    dir
}

const M365: &str = "smarthost:
  address: smtp.office365.com:587
  username: printer@contoso.example
  oauth2:
    token_url: https://login.microsoftonline.com/T/oauth2/v2.0/token
    client_id: app
    client_secret_file: m365.secret
    scope: https://outlook.office365.com/.default
  max_messages_per_minute: 30
";

#[test]
fn microsoft_365_client_credentials_and_graph_load() {
    let dir = dir_with_secrets();
    let c = parse_in(dir.path(), M365).unwrap();
    let s = &c.smarthosts[0];
    let o = s.oauth2.as_ref().unwrap();
    assert_eq!(o.grant_type(), "client_credentials");
    assert_eq!(o.client_secret.as_ref().unwrap().expose(), "s3cret");
    assert_eq!(s.max_messages_per_minute, Some(30));
    assert_eq!(s.transport, Transport::Smtp);
    assert!(s.password.is_none());

    let graph = "smarthost:
  transport: graph
  username: printer@contoso.example
  oauth2:
    token_url: https://login.microsoftonline.com/T/oauth2/v2.0/token
    client_id: app
    client_secret_file: m365.secret
    scope: https://graph.microsoft.com/.default
";
    let c = parse_in(dir.path(), graph).unwrap();
    let s = &c.smarthosts[0];
    assert_eq!(s.transport, Transport::Graph);
    assert_eq!(s.graph_url, DEFAULT_GRAPH_URL);
    assert!(s.host.is_empty(), "a graph entry needs no address");
}

#[test]
fn google_refresh_token_needs_no_scope() {
    let dir = dir_with_secrets();
    let google = "smarthost:
  address: smtp.gmail.com:587
  username: office@example.com
  oauth2:
    token_url: https://oauth2.googleapis.com/token
    client_id: app.apps.googleusercontent.com
    client_secret_file: m365.secret
    refresh_token_file: google.refresh
";
    let c = parse_in(dir.path(), google).unwrap();
    let o = c.smarthosts[0].oauth2.as_ref().unwrap();
    assert_eq!(o.grant_type(), "refresh_token");
    assert_eq!(o.secret_files.len(), 2);
}

/// Each broken entry, and the key its problem must name.
#[test]
fn broken_entries_name_their_key() {
    let dir = dir_with_secrets();
    let oauth = "  oauth2:\n    token_url: https://t.example/token\n    client_id: app\n    client_secret_file: m365.secret\n    scope: s\n";
    let cases: Vec<(String, &str)> = vec![
        (
            format!("smarthost:\n  address: h:587\n{oauth}"),
            "smarthost.username: needed with oauth2",
        ),
        (
            format!("smarthost:\n  address: h:587\n  username: u\n  password_file: m365.secret\n{oauth}"),
            "use either smarthost.password_file or smarthost.oauth2",
        ),
        (
            "smarthost:\n  transport: graph\n  username: u\n  password_file: m365.secret\n".into(),
            "smarthost.oauth2: needed with transport: graph",
        ),
        (
            format!("smarthost:\n  username: u\n{oauth}"),
            "smarthost.address: is needed",
        ),
        (
            "smarthost:\n  address: h:587\n  username: u\n  oauth2:\n    token_url: http://t.example/token\n    client_id: app\n    client_secret_file: m365.secret\n    scope: s\n".into(),
            "smarthost.oauth2.token_url",
        ),
        (
            "smarthost:\n  address: h:587\n  username: u\n  oauth2:\n    token_url: https://t.example/token\n    client_id: app\n    client_secret_file: m365.secret\n".into(),
            "smarthost.oauth2.scope: needed for client credentials",
        ),
        (
            "smarthost:\n  address: h:587\n  username: u\n  oauth2:\n    token_url: https://t.example/token\n    client_id: app\n".into(),
            "needs client_secret_file",
        ),
        (
            "smarthost:\n  address: h:587\n  username: u\n  oauth2:\n    token_url: https://t.example/token\n    client_id: app\n    client_secret_file: empty.secret\n    scope: s\n".into(),
            "smarthost.oauth2.client_secret_file",
        ),
        (
            format!("smarthost:\n  address: h:587\n  username: u\n  tls: none\n{oauth}"),
            "smarthost.tls: credentials would be sent in clear text",
        ),
        (
            format!("smarthost:\n  transport: graph\n  username: u\n  graph_url: http://g.example\n{oauth}"),
            "smarthost.graph_url",
        ),
        (
            "smarthost:\n  address: h:25\n  tls: none\n  max_messages_per_minute: 0\n".into(),
            "smarthost.max_messages_per_minute: must be greater than 0",
        ),
        (
            "smarthost:\n  address: h:25\n  tls: none\n  client_certificate: c.pem\n".into(),
            "smarthost.client_key: needed with smarthost.client_certificate",
        ),
        (
            "smarthost:\n  address: h:25\n  tls: none\n  transport: carrier-pigeon\n".into(),
            "smarthost",
        ),
        (
            format!("smarthost:\n  - address: h:25\n    tls: none\n  - transport: graph\n    username: u\n  {}", oauth.replace("\n    ", "\n      ")),
            "smarthost: a transport: graph entry must come before every SMTP entry",
        ),
    ];
    for (yaml, needle) in cases {
        let problems = parse_in(dir.path(), &yaml).unwrap_err();
        assert!(
            problems.contains(needle),
            "{needle:?} not in:\n{problems}\nfor:\n{yaml}"
        );
    }
}

#[test]
fn no_secret_appears_in_a_problem() {
    let dir = dir_with_secrets();
    let yaml = "smarthost:\n  address: h:587\n  oauth2:\n    token_url: https://t.example/token\n    client_id: app\n    client_secret_file: m365.secret\n    refresh_token_file: google.refresh\n";
    let problems = parse_in(dir.path(), yaml).unwrap_err();
    assert!(!problems.contains("s3cret"), "{problems}");
}

/// `check-config` loads a client certificate and key as the server will, and names
/// the key at fault: unreadable, not PEM, or a key of another certificate.
#[test]
fn client_certificate_problems_name_their_key() {
    let dir = dir_with_secrets();
    let ca = crate::tls::TestCa::new("connector CA").unwrap();
    let (mine, other) = (ca.issue(&["printer"]).unwrap(), ca.issue(&["x"]).unwrap());
    for (name, text) in [
        ("c.pem", mine.cert_pem.as_str()),
        ("k.pem", mine.key_pem.as_str()),
        ("other-k.pem", other.key_pem.as_str()),
        ("junk.pem", "not pem\n"),
    ] {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    let entry = |cert: &str, key: &str| {
        format!("  address: h:587\n  client_certificate: {cert}\n  client_key: {key}\n")
    };
    let good = parse_in(
        dir.path(),
        &format!("smarthost:\n{}", entry("c.pem", "k.pem")),
    )
    .unwrap();
    assert_eq!(
        good.smarthosts[0].client_key.as_deref(),
        Some(dir.path().join("k.pem").as_path())
    );
    let cases = [
        (
            format!("smarthost:\n{}", entry("gone.pem", "k.pem")),
            "smarthost.client_certificate: cannot read certificates from",
        ),
        (
            format!("smarthost:\n{}", entry("junk.pem", "k.pem")),
            "smarthost.client_certificate:",
        ),
        (
            format!("smarthost:\n{}", entry("c.pem", "junk.pem")),
            "smarthost.client_key: cannot read a private key",
        ),
        (
            format!("smarthost:\n{}", entry("c.pem", "gone.pem")),
            "smarthost.client_key: cannot read a private key",
        ),
        (
            format!("smarthost:\n{}", entry("c.pem", "other-k.pem")),
            "smarthost.client_key: does not belong to client_certificate",
        ),
        (
            "smarthost:\n  - address: a:587\n  - address: h:587\n    client_certificate: c.pem\n    client_key: other-k.pem\n".to_string(),
            "smarthost[1].client_key: does not belong",
        ),
        (
            format!("smarthost:\n{}  tls: none\n", entry("c.pem", "k.pem")),
            "smarthost.client_certificate: needs tls",
        ),
    ];
    for (yaml, needle) in cases {
        let problems = parse_in(dir.path(), &yaml).unwrap_err();
        assert!(
            problems.contains(needle),
            "{needle:?} not in:\n{problems}\nfor:\n{yaml}"
        );
        assert!(!problems.contains("PRIVATE KEY"), "{problems}");
    }
}
