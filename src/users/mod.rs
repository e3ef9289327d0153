//! The users store: where users are created, changed and removed, behind one trait
//! that the admin API and `postern user ...` share, on a file or in PostgreSQL.
//!
//! - [`UsersStore`]: list, get, create, update, delete, with typed errors
//!   ([`StoreError`]) that callers map to their own answers (HTTP codes, exit codes).
//! - `file`: [`FileStore`], the users file: validated as a whole through
//!   `config::parse_users`, written atomically with comments kept where a text edit
//!   can, and put in force at once through the hook it is given.
//! - `entry`: the pure part: a new user or a change as a YAML entry, name rules.
//! - [`postgres`]: [`PgStore`], the users in PostgreSQL (`users.database`), shared
//!   by several instances and kept in sync in each one's memory.
//!
//! Passwords given in plain text are hashed here with argon2id, on the blocking
//! pool, and never logged or returned: [`Password`] holds them as a [`Secret`].

mod domains;
mod entry;
mod file;
pub mod postgres;

pub use entry::{MAX_NAME_LEN, check_argon2id, check_name};
pub use file::FileStore;
pub use postgres::PgStore;

use crate::config::User;
use crate::secret::Secret;
use serde::Deserialize;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

/// What the store's methods return: boxed so that the trait can be used as
/// `dyn UsersStore` (a file and a database behind the same pointer).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Why a store operation did not happen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("no such user")]
    NotFound,
    #[error("a user with that name exists")]
    Exists,
    /// The change would make an invalid user; one reason per problem.
    #[error("invalid: {}", .0.join("; "))]
    Invalid(Vec<String>),
    /// The store cannot be read or written now (a file error, a database down).
    #[error("users store unavailable: {0}")]
    Unavailable(String),
}

/// A password as a client gives it: plain (Postern hashes it) or already hashed.
#[derive(Debug, Clone)]
pub enum Password {
    Plain(Secret),
    /// An argon2id PHC string.
    Hash(String),
}

/// A user's own rate limits; a key not given falls back to the config's
/// `rate_limits`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitsInput {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub messages_per_hour: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recipients_per_hour: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recipients_per_day: Option<u32>,
}

/// A user to create.
#[derive(Debug, Clone, Default)]
pub struct NewUser {
    pub name: String,
    pub password: Option<Password>,
    pub senders: Vec<String>,
    pub networks: Vec<String>,
    pub rate_limits: Option<RateLimitsInput>,
    pub disabled: bool,
}

/// A change to a user: each `Some` field replaces what the user has.
#[derive(Debug, Clone, Default)]
pub struct UserChange {
    pub password: Option<Password>,
    pub senders: Option<Vec<String>>,
    pub networks: Option<Vec<String>>,
    /// `Some(None)`: drop the user's own limits (the config's apply).
    pub rate_limits: Option<Option<RateLimitsInput>>,
    pub disabled: Option<bool>,
}

impl UserChange {
    /// `Some(disabled)` when that is all the change does (a one-line edit, which
    /// keeps comments inside the user's entry too).
    pub fn only_disabled(&self) -> Option<bool> {
        let others = self.password.is_some()
            || self.senders.is_some()
            || self.networks.is_some()
            || self.rate_limits.is_some();
        if others { None } else { self.disabled }
    }
}

/// Where users live. Every method puts its change in force before it returns (the
/// running server's users are replaced), and persists it.
pub trait UsersStore: Send + Sync {
    /// Every user, sorted by name.
    fn list(&self) -> BoxFuture<'_, Result<Vec<Arc<User>>, StoreError>>;
    fn get<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Arc<User>, StoreError>>;
    /// Adds a user; [`StoreError::Exists`] if the name is taken.
    fn create(&self, user: NewUser) -> BoxFuture<'_, Result<Arc<User>, StoreError>>;
    fn update<'a>(
        &'a self,
        name: &'a str,
        change: UserChange,
    ) -> BoxFuture<'a, Result<Arc<User>, StoreError>>;
    fn delete<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<(), StoreError>>;
    /// Every listed domain (its domain key) with the limits it sets, sorted.
    fn domains(&self) -> BoxFuture<'_, Result<Vec<DomainEntry>, StoreError>>;
    /// Sets a domain's own limits, listing it if it was not; `Ok(true)` if it is
    /// new. `domain` must be a domain key (`config::check_domain_name`).
    fn put_domain<'a>(
        &'a self,
        domain: &'a str,
        limits: RateLimitsInput,
    ) -> BoxFuture<'a, Result<bool, StoreError>>;
    /// Unlists a domain; [`StoreError::NotFound`] if it is not listed.
    fn delete_domain<'a>(&'a self, domain: &'a str) -> BoxFuture<'a, Result<(), StoreError>>;
}

/// A listed domain and the limits it sets itself (the others fall back to the
/// config's `domain_rate_limits`).
pub type DomainEntry = (String, RateLimitsInput);

#[cfg(test)]
mod tests;
