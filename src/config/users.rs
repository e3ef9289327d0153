//! The users file: who may authenticate, with which password, as which senders.

use super::{Problems, RateLimits, RawRateLimits, SenderRule};
use serde::Deserialize;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUsersFile {
    #[serde(default)]
    users: Vec<RawUser>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUser {
    name: String,
    password: String,
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
    /// The argon2 PHC string.
    pub password_hash: String,
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
}

impl Users {
    pub fn get(&self, name: &str) -> Option<&Arc<User>> {
        self.by_name.get(name)
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

    /// Builds a user set from users (for tests and the demo).
    pub fn from_list(list: Vec<User>) -> Users {
        Users {
            by_name: list
                .into_iter()
                .map(|u| (u.name.clone(), Arc::new(u)))
                .collect(),
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
    for (i, u) in raw.users.into_iter().enumerate() {
        let key = format!("users[{i}]");
        if u.name.is_empty() || u.name.chars().any(|c| c.is_control() || c == ' ') {
            problems.add(
                path,
                &format!("{key}.name"),
                "must be non-empty, without spaces or control characters",
            );
        }
        if let Err(e) = super::check_phc(&u.password) {
            problems.add(
                path,
                &format!("{key}.password"),
                format!("{e} (make one with `postern hash-password`)"),
            );
        }
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
        let user = User {
            name: u.name.clone(),
            password_hash: u.password,
            senders,
            rate_limits,
            disabled: u.disabled,
            allow_any_header_from: u.allow_any_header_from,
        };
        if by_name.insert(u.name.clone(), Arc::new(user)).is_some() {
            problems.add(
                path,
                &format!("{key}.name"),
                format!("user {:?} is listed twice", u.name),
            );
        }
    }
    (problems.len() == before).then_some(Users { by_name })
}
