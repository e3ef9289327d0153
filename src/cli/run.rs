//! `postern serve`, `postern check-config` and `postern demo`: starting the server,
//! or checking what it would start with.

use super::{init_logging, load, runtime};
use postern::config::LogFormat;
use std::path::PathBuf;
use std::process::ExitCode;

pub fn serve(path: Option<PathBuf>) -> ExitCode {
    let (config, users) = match load(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    init_logging(config.log.format, &config.log.level);
    match runtime().block_on(postern::server::serve(config, users)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "cannot run");
            ExitCode::from(2)
        }
    }
}

pub fn check_config(path: Option<PathBuf>) -> ExitCode {
    let (config, users) = match load(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    // The server reads the keys at start and refuses to start on a bad one.
    let dkim = match postern::dkim::Keys::load(&config.dkim.keys_directory) {
        Ok(k) => k,
        Err(e) => {
            eprintln!("postern: cannot read the DKIM keys: {e}");
            return ExitCode::from(1);
        }
    };
    println!("{}: OK", config.path.display());
    for w in config.permission_warnings(None) {
        println!("  warning    {w}");
    }
    for l in &config.listeners {
        println!(
            "  listener   {} (tls: {}{})",
            l.address,
            l.tls,
            if l.insecure_auth {
                ", insecure_auth"
            } else {
                ""
            }
        );
    }
    if let Some(a) = &config.admin {
        let scheme = if a.tls { "https" } else { "http" };
        println!("  admin API  {scheme}://{}/api/v1/", a.address);
    }
    print_users(&config, &users);
    print_smarthosts(&config);
    println!("  delivery   {:?}", config.delivery.mode);
    if let Some(c) = &config.cluster {
        println!(
            "  cluster    {} (key prefix {:?})",
            c.display_url(),
            c.key_prefix
        );
    }
    for k in dkim.all() {
        println!(
            "  dkim       {} {} ({})",
            k.domain,
            k.selector,
            k.algorithm()
        );
    }
    match postern::policy::brake::read_state(&config.abuse.state_file) {
        Ok(s) if s.is_empty() => {}
        Ok(s) => {
            for (name, sus) in &s {
                println!("  suspended  {name}: {}", sus.reason);
            }
        }
        Err(e) => println!("  suspended  cannot read: {e}"),
    }
    ExitCode::SUCCESS
}

/// The users line of `check-config`, and each device network with its user.
fn print_users(config: &postern::config::Config, users: &postern::config::Users) {
    if let Some(db) = &config.users_database {
        print_database(config, db);
        return;
    }
    println!(
        "  users      {} in {} ({} disabled)",
        users.len(),
        config.users_file.display(),
        users.disabled_count()
    );
    print_domains(config, users);
    for u in users.iter() {
        for n in &u.networks {
            println!("  network    {n} -> {}", u.name);
            if !n.is_private() {
                println!(
                    "  warning    network {n} of user {} holds public addresses: every host there sends as {} without AUTH",
                    u.name, u.name
                );
            }
        }
    }
}

/// The per-domain limits line of `check-config`, when any domain has limits.
fn print_domains(config: &postern::config::Config, users: &postern::config::Users) {
    let listed = users.domains().len();
    match (listed, &config.domain_rate_limits) {
        (0, None) => {}
        (n, None) => println!("  domains    {n} with their own limits"),
        (n, Some(_)) => println!(
            "  domains    {n} with their own limits; domain_rate_limits for every other domain"
        ),
    }
}

/// The users line of `check-config` with `users.database`: which database (the URL
/// holds no password), and whether it answers now. A database that does not answer
/// is a warning, not a config problem: it may be down for maintenance.
fn print_database(config: &postern::config::Config, db: &postern::config::UsersDatabase) {
    let password = if db.password.is_some() {
        " (password from users.password_file)"
    } else {
        ""
    };
    println!("  users      in the database {}{password}", db.url);
    let loaded = runtime().block_on(async {
        let load = postern::users::postgres::load(db, &config.rate_limits, false);
        tokio::time::timeout(std::time::Duration::from_secs(10), load).await
    });
    match loaded {
        Ok(Ok(users)) => {
            println!(
                "  users      {} in the database ({} disabled)",
                users.len(),
                users.disabled_count()
            );
            print_domains(config, &users);
        }
        Ok(Err(e)) => println!("  warning    {e}"),
        Err(_) => println!("  warning    the users database did not answer within 10 seconds"),
    }
}

/// The smarthosts of `check-config`: the default list, then each route's.
fn print_smarthosts(config: &postern::config::Config) {
    use postern::config::{Smarthost, Transport};
    let describe = |s: &Smarthost| {
        let auth = match (&s.username, &s.oauth2) {
            (Some(u), Some(_)) => format!("OAuth 2.0 as {u}"),
            (Some(u), None) => format!("AUTH as {u}"),
            _ => "no AUTH".into(),
        };
        match s.transport {
            Transport::Graph => format!("Microsoft Graph {} ({auth})", s.graph_url),
            Transport::Smtp => format!("{}:{} (tls: {}, {auth})", s.host, s.port, s.tls),
        }
    };
    for s in &config.smarthosts {
        println!("  smarthost  {}", describe(s));
    }
    for r in &config.routes {
        for s in &r.smarthosts {
            println!("  route      {} -> {}", r.rule, describe(s));
        }
    }
}

pub fn demo(
    dir: PathBuf,
    submission: std::net::SocketAddr,
    smtps: std::net::SocketAddr,
    admin: std::net::SocketAddr,
) -> ExitCode {
    init_logging(LogFormat::Text, "info");
    let ports = postern::demo::DemoPorts {
        submission,
        smtps,
        admin,
    };
    match runtime().block_on(postern::demo::run(&dir, ports)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("postern demo: {e:#}");
            ExitCode::from(2)
        }
    }
}
