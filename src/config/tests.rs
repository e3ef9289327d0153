use super::*;

fn parse(yaml: &str) -> Result<Config, Vec<String>> {
    let mut problems = Problems::default();
    let file = Path::new("/etc/postern/postern.yaml");
    match Config::from_yaml(yaml, file, Path::new("/etc/postern"), &mut problems) {
        Some(c) if problems.is_empty() => Ok(c),
        _ => Err(problems.0.iter().map(|p| p.to_string()).collect()),
    }
}

const MINIMAL: &str = "
hostname: relay.test
listeners:
  - address: \"127.0.0.1:2525\"
    tls: none
users:
  file: users.yaml
smarthost:
  address: \"[::1]:25\"
  tls: none
";

#[test]
fn minimal_config_gets_documented_defaults() {
    let c = parse(MINIMAL).unwrap();
    assert_eq!(c.hostname, "relay.test");
    assert_eq!(c.users_file, PathBuf::from("/etc/postern/users.yaml"));
    assert_eq!(
        (c.smarthosts[0].host.as_str(), c.smarthosts[0].port),
        ("::1", 25)
    );
    assert_eq!(c.delivery.mode, DeliveryMode::Queue);
    assert_eq!(
        c.delivery.max_queue_lifetime,
        Duration::from_secs(5 * 86_400)
    );
    assert_eq!(c.limits.max_message_size, 25 << 20);
    assert_eq!(c.limits.max_recipients, 100);
    assert_eq!(c.limits.max_connections, 1000);
    assert_eq!(c.limits.max_connections_per_ip, 50);
    assert_eq!(c.limits.ipv6_prefix, 64);
    assert_eq!(c.timeouts.command, Duration::from_secs(300));
    assert_eq!(c.timeouts.data_block, Duration::from_secs(180));
    assert_eq!(c.timeouts.upstream_data_done, Duration::from_secs(600));
    assert_eq!(c.log.format, LogFormat::Text);
    assert!(c.received_include_client_ip);
    assert!(c.tls.is_none());
}

#[test]
fn every_problem_is_reported_with_its_key() {
    let yaml = "
listeners:
  - address: nowhere
    tls: sometimes
  - address: \"0.0.0.0:465\"
    tls: implicit
    insecure_auth: true
smarthost:
  address: no-port
  username: u
limits:
  max_recipients: 0
  ipv6_prefix: 129
log:
  format: xml
extra: 1
";
    let problems = parse(yaml).unwrap_err();
    let all = problems.join("\n");
    for needle in [
        "listeners: ",
        "users: users.file is needed (or users.database)",
        "smarthost.address",
        "smarthost.password_file",
        "limits.max_recipients: must be greater than 0",
        "limits.ipv6_prefix: must be between 1 and 128",
        "log: ",
        "extra: unknown key",
    ] {
        assert!(all.contains(needle), "missing {needle:?} in:\n{all}");
    }
}

#[test]
fn listener_problems() {
    let yaml = MINIMAL.replace(
        "tls: none\nusers",
        "tls: none\n    insecure_auth: true\n    proxy_protocol: true\nusers",
    );
    let all = parse(&yaml).unwrap_err().join("\n");
    assert!(
        all.contains("trusted_proxies: a listener has proxy_protocol"),
        "{all}"
    );
    let trusted = format!("trusted_proxies: [\"10.0.0.0/8\", \"2001:db8::1\"]\n{yaml}");
    let c = parse(&trusted).unwrap();
    assert!(c.listeners[0].proxy_protocol);
    assert_eq!(c.trusted_proxies.len(), 2);
    let bad = format!("trusted_proxies: [\"10.0.0.0/33\", \"proxy.lan\"]\n{yaml}");
    let all = parse(&bad).unwrap_err().join("\n");
    assert!(
        all.contains("trusted_proxies[0]: \"10.0.0.0/33\" has a bad prefix"),
        "{all}"
    );
    assert!(all.contains("trusted_proxies[1]"), "{all}");
    let yaml = MINIMAL.replace("tls: none\nusers", "tls: implicit\nusers");
    let all = parse(&yaml).unwrap_err().join("\n");
    assert!(
        all.contains("tls.certificate and tls.private_key are needed"),
        "{all}"
    );
}

#[test]
fn cleartext_smarthost_credentials_need_insecure_auth() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pw"), "secret\n").unwrap();
    let yaml = format!(
        "{MINIMAL}  username: u\n  password_file: {}\n",
        dir.path().join("pw").display()
    );
    let all = parse(&yaml).unwrap_err().join("\n");
    assert!(all.contains("clear text"), "{all}");
    let c = parse(&format!("{yaml}  insecure_auth: true\n")).unwrap();
    assert_eq!(
        c.smarthosts[0].password.as_ref().unwrap().expose(),
        "secret"
    );
    assert!(
        !format!("{c:?}").contains("secret\""),
        "Debug must not print the password"
    );
}

#[test]
fn host_port_forms() {
    assert_eq!(
        split_host_port("smtp.example.net:587"),
        Some(("smtp.example.net".into(), 587))
    );
    assert_eq!(
        split_host_port("[2001:db8::1]:465"),
        Some(("2001:db8::1".into(), 465))
    );
    assert_eq!(
        split_host_port("127.0.0.1:25"),
        Some(("127.0.0.1".into(), 25))
    );
    for bad in [
        "smtp.example.net",
        ":25",
        "host:0",
        "host:99999",
        "[::1]25",
        "a b:25",
    ] {
        assert_eq!(split_host_port(bad), None, "{bad}");
    }
}

#[test]
fn user_rate_limits_override_key_by_key() {
    let defaults = RateLimits {
        messages_per_hour: Some(200),
        recipients_per_hour: None,
        recipients_per_day: Some(2000),
    };
    let raw: RawRateLimits = serde_yaml::from_str("messages_per_hour: 50").unwrap();
    assert_eq!(
        raw.over(&defaults),
        RateLimits {
            messages_per_hour: Some(50),
            recipients_per_hour: None,
            recipients_per_day: Some(2000),
        }
    );
}

#[test]
fn example_files_stay_in_sync_with_the_parser() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let text = std::fs::read_to_string(root.join("postern.example.yaml")).unwrap();
    let mut problems = Problems::default();
    Config::from_yaml(
        &text,
        Path::new("postern.example.yaml"),
        &root,
        &mut problems,
    );
    // The example names files that only exist on a real server; nothing else may fail.
    for p in &problems.0 {
        assert!(
            (p.key == "tls" || p.key == "smarthost.password_file")
                && p.why.contains("No such file"),
            "unexpected problem in the example config: {p}"
        );
    }
    let mut problems = Problems::default();
    let users = load_users(
        &root.join("users.example.yaml"),
        &RateLimits::default(),
        &mut problems,
    );
    assert!(problems.is_empty(), "{problems}");
    let users = users.unwrap();
    assert_eq!(users.len(), 3);
    let device = users.by_address("192.168.10.20".parse().unwrap());
    assert_eq!(device.map(|u| u.name.as_str()), Some("scanner-3rd-floor"));
}

#[test]
fn the_microsoft_365_example_loads() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let text = std::fs::read_to_string(root.join("m365.example.yaml")).unwrap();
    let mut problems = Problems::default();
    let config = Config::from_yaml(&text, Path::new("m365.example.yaml"), &root, &mut problems);
    // Only the files of a real server are missing.
    for p in &problems.0 {
        assert!(
            (p.key == "tls" || p.key.ends_with("client_secret_file"))
                && p.why.contains("No such file"),
            "unexpected problem in the example config: {p}"
        );
    }
    assert!(config.is_none(), "the secret file is missing here");
}

#[test]
fn smarthost_lists_and_routes() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.secret"), "pa").unwrap();
    let yaml = format!(
        "{}smarthost:
  - address: \"first.example:587\"
  - address: \"second.example:465\"
    tls: implicit
routes:
  - match: \"@client-a.example\"
    smarthost:
      address: \"mg.example:587\"
      username: client-a
      password_file: {}
  - match: \"boss@client-b.example\"
    smarthost: [{{ address: \"x.example:587\" }}, {{ address: \"y.example:587\" }}]
",
        MINIMAL.split("smarthost:").next().unwrap(),
        dir.path().join("a.secret").display()
    );
    let c = parse(&yaml).unwrap();
    let names: Vec<_> = c.smarthosts.iter().map(|s| s.host.as_str()).collect();
    assert_eq!(names, ["first.example", "second.example"]);
    assert_eq!(c.smarthosts[1].tls, TlsMode::Implicit);
    assert_eq!(c.routes.len(), 2);
    assert!(c.routes[0].rule.allows("x@CLIENT-A.example"));
    assert_eq!(
        c.routes[0].smarthosts[0].username.as_deref(),
        Some("client-a")
    );
    assert_eq!(c.routes[1].smarthosts.len(), 2);

    let bad = yaml
        .replace("\"@client-a.example\"", "\"nonsense\"")
        .replace("x.example:587", "x.example");
    let all = parse(&bad).unwrap_err().join("\n");
    assert!(all.contains("routes[0].match"), "{all}");
    assert!(all.contains("routes[1].smarthost[0].address"), "{all}");
}

#[test]
fn session_bounds_have_defaults_and_refuse_zero() {
    let c = parse(MINIMAL).unwrap();
    assert_eq!(c.timeouts.write, Duration::from_secs(30));
    assert_eq!(c.timeouts.unauthenticated, Duration::from_secs(300));
    assert_eq!(c.timeouts.session, Duration::from_secs(3600));
    assert_eq!(c.limits.max_junk_commands, 100);
    assert_eq!(c.limits.max_messages_per_session, 100);
    let c = parse(&format!(
        "{MINIMAL}timeouts:\n  write: 2s\n  unauthenticated: 1m\n  session: 2h\n\
         limits:\n  max_junk_commands: 5\n  max_messages_per_session: 7\n"
    ))
    .unwrap();
    assert_eq!(c.timeouts.write, Duration::from_secs(2));
    assert_eq!(c.timeouts.unauthenticated, Duration::from_secs(60));
    assert_eq!(c.timeouts.session, Duration::from_secs(7200));
    assert_eq!(c.limits.max_junk_commands, 5);
    assert_eq!(c.limits.max_messages_per_session, 7);
    let errs = parse(&format!(
        "{MINIMAL}timeouts:\n  write: 0s\n  session: 0s\n\
         limits:\n  max_junk_commands: 0\n  max_messages_per_session: 0\n"
    ))
    .unwrap_err();
    for key in [
        "timeouts.write",
        "timeouts.session",
        "limits.max_junk_commands",
        "limits.max_messages_per_session",
    ] {
        assert!(errs.iter().any(|e| e.contains(key)), "{key}: {errs:?}");
    }
}

#[test]
fn cluster_section() {
    assert_eq!(parse(MINIMAL).unwrap().cluster, None);
    let c = parse(&format!(
        "{MINIMAL}cluster:\n  redis: redis://127.0.0.1:6379/0\n"
    ))
    .unwrap()
    .cluster
    .unwrap();
    assert_eq!(
        (c.redis.as_str(), c.key_prefix.as_str()),
        ("redis://127.0.0.1:6379/0", "postern:")
    );
    let tls = parse(&format!(
        "{MINIMAL}cluster:\n  redis: rediss://r.example:6380\n  key_prefix: \"mail:\"\n"
    ))
    .unwrap()
    .cluster
    .unwrap();
    assert_eq!(tls.key_prefix, "mail:");
    let bad = parse(&format!("{MINIMAL}cluster:\n  redis: http://x\n")).unwrap_err();
    assert!(bad[0].contains("cluster.redis"), "{bad:?}");
    let bad = parse(&format!(
        "{MINIMAL}cluster:\n  redis: redis://x\n  key_prefix: \"a{{b\"\n"
    ))
    .unwrap_err();
    assert!(bad[0].contains("cluster.key_prefix"), "{bad:?}");
    let bad = parse(&format!("{MINIMAL}cluster:\n  redis: redis://x\n  db: 1\n")).unwrap_err();
    assert!(bad[0].contains("cluster"), "{bad:?}");
}
