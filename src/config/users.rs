//! The users file: who may authenticate, with which password or from which
//! networks, as which senders.

use super::networks::{self, NetworkIndex};
use super::{Cidr, Problems, RateLimits, RawRateLimits, SenderRule};
use serde::Deserialize;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUsersFile {
    #[serde(default)]
    users: Vec<RawUser>,
    /// Per-domain limits (see `domains.rs`).
    #[serde(default)]
    domains: Vec<super::domains::RawDomain>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUser {
    name: String,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    networks: Vec<String>,
    #[serde(default)]
    senders: Vec<String>,
    #[serde(default)]
    rate_limits: Option<RawRateLimits>,
    #[serde(default)]
    disabled: bool,
    #[serde(default)]
    allow_any_header_from: bool,
}

/// One user, validated.
#[derive(Debug, Clone)]
pub struct User {
    /// The AUTH username, matched exactly.
    pub name: String,
    /// The argon2 PHC string; `None` for a user known only by its `networks`, who
    /// cannot log in with AUTH.
    pub password_hash: Option<String>,
    /// Clients from these networks are this user without AUTH (printers, scanners).
    pub networks: Vec<Cidr>,
    pub senders: Vec<SenderRule>,
    /// Per-user overrides of the config's `rate_limits`, key by key.
    pub rate_limits: RateLimits,
    pub disabled: bool,
    pub allow_any_header_from: bool,
}

/// All users, by name.
#[derive(Debug, Default)]
pub struct Users {
    by_name: HashMap<String, Arc<User>>,
    networks: NetworkIndex,
    /// The `domains:` list: each listed domain's own limits, by domain key.
    domains: HashMap<String, RateLimits>,
}

impl Users {
    pub fn get(&self, name: &str) -> Option<&Arc<User>> {
        self.by_name.get(name)
    }

    /// The user a client at `ip` is, by the most specific of the users' `networks`
    /// that contains it; `None` when it is in no user's network.
    pub fn by_address(&self, ip: std::net::IpAddr) -> Option<&Arc<User>> {
        self.networks.lookup(ip)
    }

    /// The limits that apply to `domain` (a [`super::domain_key`]): its entry over
    /// `default` (the config's `domain_rate_limits`), else `default`.
    pub fn domain_limits(&self, domain: &str, default: Option<&RateLimits>) -> Option<RateLimits> {
        super::domains::limits_for(&self.domains, default, domain)
    }

    /// The listed domains with their own limits (only the keys they set), sorted.
    pub fn domains(&self) -> Vec<(&str, &RateLimits)> {
        let mut v: Vec<_> = self.domains.iter().map(|(d, l)| (d.as_str(), l)).collect();
        v.sort_by(|a, b| a.0.cmp(b.0));
        v
    }

    /// This user set with `domains` as its domain list (the users in a database,
    /// whose domains come from their own table).
    pub fn with_domains(mut self, domains: HashMap<String, RateLimits>) -> Users {
        self.domains = domains;
        self
    }

    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    pub fn disabled_count(&self) -> usize {
        self.by_name.values().filter(|u| u.disabled).count()
    }

    /// Users sorted by name.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<User>> {
        let mut v: Vec<_> = self.by_name.values().collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v.into_iter()
    }

    /// Builds a user set from users (for tests and the demo); a network listed
    /// twice keeps its first user.
    pub fn from_list(list: Vec<User>) -> Users {
        let list: Vec<(usize, Arc<User>)> = list.into_iter().map(Arc::new).enumerate().collect();
        let networks = networks::index(&list, Path::new(""), &mut Problems::default());
        Users {
            by_name: list.into_iter().map(|(_, u)| (u.name.clone(), u)).collect(),
            networks,
            domains: HashMap::new(),
        }
    }
}

/// Reads and validates a users file. `defaults` are the config's rate limits, which
/// each user's own `rate_limits` override key by key.
pub fn load_users(path: &Path, defaults: &RateLimits, problems: &mut Problems) -> Option<Users> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            problems.add(path, "", format!("cannot read the users file: {e}"));
            return None;
        }
    };
    parse_users(&text, path, defaults, problems)
}

/// Validates users-file text (`path` only names it in problems).
pub fn parse_users(
    text: &str,
    path: &Path,
    defaults: &RateLimits,
    problems: &mut Problems,
) -> Option<Users> {
    let raw: RawUsersFile = match serde_yaml::from_str(text) {
        Ok(r) => r,
        Err(e) => {
            problems.add(path, "", e.to_string());
            return None;
        }
    };
    let before = problems.len();
    let mut by_name = HashMap::new();
    let mut in_order = Vec::new();
    for (i, u) in raw.users.into_iter().enumerate() {
        let user = Arc::new(parse_user(u, i, path, defaults, problems));
        if by_name.insert(user.name.clone(), user.clone()).is_some() {
            problems.add(
                path,
                &format!("users[{i}].name"),
                format!("user {:?} is listed twice", user.name),
            );
        }
        in_order.push((i, user));
    }
    let networks = networks::index(&in_order, path, problems);
    let domains = super::domains::parse_domains(raw.domains, path, problems);
    (problems.len() == before).then_some(Users {
        by_name,
        networks,
        domains,
    })
}

/// Validates one entry (`users[i]`), recording its problems.
fn parse_user(
    u: RawUser,
    i: usize,
    path: &Path,
    defaults: &RateLimits,
    problems: &mut Problems,
) -> User {
    let key = format!("users[{i}]");
    let hidden = crate::proto::printable::hidden;
    if u.name.is_empty() || u.name.chars().any(|c| hidden(c) || c.is_whitespace()) {
        problems.add(
            path,
            &format!("{key}.name"),
            "must be non-empty, without spaces, control characters or invisible ones (bidi overrides, zero-width)",
        );
    }
    if let Some(Err(e)) = u.password.as_deref().map(super::check_phc) {
        problems.add(
            path,
            &format!("{key}.password"),
            format!("{e} (make one with `postern hash-password`)"),
        );
    }
    if u.password.is_none() && u.networks.is_empty() {
        problems.add(
            path,
            &key,
            format!(
                "user {:?} has neither a password nor networks, so it could never send: \
                 give it a password (from `postern hash-password`) or networks",
                u.name
            ),
        );
    }
    let networks = networks::parse(&u.networks, path, &format!("{key}.networks"), problems);
    let mut senders = Vec::new();
    for (j, s) in u.senders.iter().enumerate() {
        match SenderRule::parse(s) {
            Ok(r) => senders.push(r),
            Err(e) => problems.add(path, &format!("{key}.senders[{j}]"), e),
        }
    }
    let rate_limits = match &u.rate_limits {
        Some(r) => r.over(defaults),
        None => defaults.clone(),
    };
    User {
        name: u.name,
        password_hash: u.password,
        networks,
        senders,
        rate_limits,
        disabled: u.disabled,
        allow_any_header_from: u.allow_any_header_from,
    }
}
