//! [`PgStore`]: the users store in PostgreSQL (`users.database`), shared by every
//! instance that names the same database, and writable by a hosting panel.
//!
//! - `schema`: the tables, created on first start from `migrations/*.sql`.
//! - `rows`: the pure part: rows as values, validated by the users file's rules.
//! - `sync`: [`keep_in_sync`], the task that keeps the users in memory current
//!   (LISTEN/NOTIFY, a change counter polled as the fallback, reconnects).
//!
//! The running server authenticates from memory only: the database is read at
//! start ([`load_at_start`], which refuses to start without it), after each change
//! this process makes, and when another writer's change is announced. While the
//! database is down, logins go on against the users last loaded.
//!
//! - `tls`: TLS through rustls, with `sslmode=require` (plain otherwise: a unix
//!   socket or loopback).

mod domains;
mod rows;
mod schema;
mod sync;
mod tls;

pub use rows::{UserRow, users_from_rows};
pub use schema::migrate;
pub use sync::keep_in_sync;

use super::{
    BoxFuture, DomainEntry, NewUser, RateLimitsInput, StoreError, UserChange, UsersStore,
    entry::check_name,
};
use crate::config::{RateLimits, User, Users, UsersDatabase};
use rows::{COLUMNS, reasons_against};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;
use tokio_postgres::config::SslMode;
use tokio_postgres::{Client, GenericClient};
use tracing::{debug, info, warn};

/// How long a connection attempt may take when the URL does not say.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// What puts a new set of users in force.
pub type InForce = Arc<dyn Fn(Users) + Send + Sync>;

/// How to reach the database: the URL with the password from `users.password_file`.
#[derive(Clone)]
pub struct Database {
    config: tokio_postgres::Config,
    /// Used only with `sslmode=require`.
    tls: tls::MakeRustls,
    /// The URL as configured (it holds no password), for logs and errors.
    pub label: String,
}

impl Database {
    pub fn new(db: &UsersDatabase) -> Result<Database, String> {
        let mut config = tokio_postgres::Config::from_str(&db.url)
            .map_err(|e| format!("users.database: {}", clean(&e)))?;
        if let Some(p) = &db.password {
            config.password(p.expose());
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        if config.get_application_name().is_none() {
            config.application_name("postern");
        }
        // TLS is verified or not used: `prefer` (libpq's default, which would take
        // any certificate) is plain, like `disable`.
        if config.get_ssl_mode() != SslMode::Require {
            config.ssl_mode(SslMode::Disable);
        }
        let roots = crate::tls::client_config(db.ca_file.as_deref())
            .map_err(|e| format!("users.ca_file: {e}"))?;
        Ok(Database {
            config,
            tls: tls::MakeRustls::new(roots),
            label: db.url.clone(),
        })
    }

    /// A connection whose driver runs on its own task until the client is dropped.
    async fn connect(&self) -> Result<Client, tokio_postgres::Error> {
        let (client, connection) = self.config.connect(self.tls.clone()).await?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                debug!(error = %clean(&e), "users database connection closed");
            }
        });
        Ok(client)
    }
}

/// A driver or server error as one log-safe line (control characters escaped: the
/// server's message may quote what a client sent).
pub fn clean(e: &dyn std::fmt::Display) -> String {
    e.to_string()
        .chars()
        .flat_map(char::escape_default)
        .collect()
}

/// `Inner::connection` always leaves a client in place; this is for the type system.
fn no_connection() -> StoreError {
    StoreError::Unavailable("users database: no connection".into())
}

fn unavailable(e: tokio_postgres::Error) -> StoreError {
    StoreError::Unavailable(format!("users database: {}", clean(&e)))
}

/// Connects, creates or updates the tables, and reads the users: what `serve` does
/// before it accepts anything. An error names the database and says why.
pub async fn load_at_start(db: &UsersDatabase, defaults: &RateLimits) -> Result<Users, String> {
    load(db, defaults, true).await
}

/// Connects and reads the users; creates or updates the tables first when
/// `create_tables` (`check-config` only looks).
pub async fn load(
    db: &UsersDatabase,
    defaults: &RateLimits,
    create_tables: bool,
) -> Result<Users, String> {
    let database = Database::new(db)?;
    let fail = |what: &str, e: tokio_postgres::Error| {
        format!("users database {}: {what}: {}", database.label, clean(&e))
    };
    let mut client = (database.connect().await).map_err(|e| fail("cannot connect", e))?;
    if create_tables {
        let applied = migrate(&mut client).await;
        let applied = applied.map_err(|e| fail("cannot create the tables", e))?;
        if applied > 0 {
            info!(database = %database.label, migrations = applied, "users database: tables created or updated");
        }
    }
    let rows = read_rows(&client).await.map_err(|e| {
        if e.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE) {
            format!(
                "users database {}: no tables yet (`postern serve` creates them)",
                database.label
            )
        } else {
            fail("cannot read the users", e)
        }
    })?;
    let (users, problems) = users_from_rows(&rows, defaults)
        .map_err(|p| format!("users database {}: {}", database.label, p.join("; ")))?;
    log_problems(&problems);
    let users = (domains::with_domains(&client, users).await)
        .map_err(|e| fail("cannot read the domains", e))?;
    info!(database = %database.label, users = users.len(), "users loaded from the database");
    Ok(users)
}

/// Logs the rows left out, each on its own line.
fn log_problems(problems: &[String]) {
    for p in problems {
        warn!(problem = ?p, "users database: a user is left out");
    }
}

/// Every readable row of `postern_users`, by name. A row whose columns cannot be
/// read (a NULL inside an array, a two-dimensional array: what a panel's plain SQL
/// can write and the table's types allow) is left out and logged by name, like a row
/// that breaks a rule, instead of stopping every instance that reads it.
async fn read_rows(client: &impl GenericClient) -> Result<Vec<UserRow>, tokio_postgres::Error> {
    let sql = format!("SELECT {COLUMNS} FROM postern_users ORDER BY name");
    let rows = client.query(&sql, &[]).await?;
    let mut readable = Vec::with_capacity(rows.len());
    for r in &rows {
        match row_of(r) {
            Ok(row) => readable.push(row),
            Err(why) => {
                let name = r.try_get::<_, String>(0).unwrap_or_default();
                warn!(user = ?name, problem = %why, "users database: a user is left out");
            }
        }
    }
    Ok(readable)
}

fn row_of(r: &tokio_postgres::Row) -> Result<UserRow, String> {
    let column = |i: usize, e: tokio_postgres::Error| {
        let name = r.columns().get(i).map_or("?", |c| c.name());
        format!("column {name} cannot be read: {e}")
    };
    let list = |i: usize| -> Result<Vec<String>, String> {
        let items: Vec<Option<String>> = r.try_get(i).map_err(|e| column(i, e))?;
        let name = r.columns().get(i).map_or("?", |c| c.name());
        (items.into_iter().collect::<Option<Vec<String>>>())
            .ok_or_else(|| format!("column {name} holds a NULL"))
    };
    Ok(UserRow {
        name: r.try_get(0).map_err(|e| column(0, e))?,
        password_hash: r.try_get(1).map_err(|e| column(1, e))?,
        senders: list(2)?,
        networks: list(3)?,
        messages_per_hour: r.try_get(4).map_err(|e| column(4, e))?,
        recipients_per_hour: r.try_get(5).map_err(|e| column(5, e))?,
        recipients_per_day: r.try_get(6).map_err(|e| column(6, e))?,
        disabled: r.try_get(7).map_err(|e| column(7, e))?,
        allow_any_header_from: r.try_get(8).map_err(|e| column(8, e))?,
    })
}

/// The users store in PostgreSQL.
#[derive(Clone)]
pub struct PgStore {
    inner: Arc<Inner>,
}

struct Inner {
    db: Database,
    /// The config's `rate_limits`, which users' own override.
    defaults: RateLimits,
    in_force: InForce,
    /// One connection, opened when first needed and again after it broke; held
    /// while a change runs, which also serialises this process's changes.
    client: tokio::sync::Mutex<Option<Client>>,
}

impl PgStore {
    /// A store on `db`; `in_force` gets the users after each change made here (the
    /// CLI passes a no-op: the servers learn of it by NOTIFY).
    pub fn new(db: Database, defaults: RateLimits, in_force: InForce) -> PgStore {
        PgStore {
            inner: Arc::new(Inner {
                db,
                defaults,
                in_force,
                client: tokio::sync::Mutex::new(None),
            }),
        }
    }
}

type Guard<'a> = tokio::sync::MutexGuard<'a, Option<Client>>;

impl Inner {
    /// The connection, opened (again) if there is none or it broke.
    async fn connection(&self) -> Result<Guard<'_>, StoreError> {
        let mut guard = self.client.lock().await;
        if guard.as_ref().is_none_or(Client::is_closed) {
            *guard = Some(self.db.connect().await.map_err(unavailable)?);
        }
        Ok(guard)
    }

    /// The users as the database has them now.
    async fn users(&self, client: &impl GenericClient) -> Result<Users, StoreError> {
        let rows = read_rows(client).await.map_err(unavailable)?;
        let (users, problems) = users_from_rows(&rows, &self.defaults)
            .map_err(|p| StoreError::Unavailable(p.join("; ")))?;
        log_problems(&problems);
        domains::with_domains(client, users)
            .await
            .map_err(unavailable)
    }

    /// After a change: the users put in force, and `name`'s.
    async fn commit_in_force(&self, client: &Client, name: &str) -> Result<Arc<User>, StoreError> {
        let users = self.users(client).await?;
        let user = users.get(name).cloned();
        (self.in_force)(users);
        user.ok_or(StoreError::NotFound)
    }

    async fn create(&self, user: NewUser) -> Result<Arc<User>, StoreError> {
        check_name(&user.name).map_err(|e| StoreError::Invalid(vec![e]))?;
        let hash = hash_blocking(user.password.clone()).await?;
        let mut guard = self.connection().await?;
        let client = guard.as_mut().ok_or_else(no_connection)?;
        let tx = client.transaction().await.map_err(unavailable)?;
        let rows = read_rows(&tx).await.map_err(unavailable)?;
        if rows.iter().any(|r| r.name == user.name) {
            return Err(StoreError::Exists);
        }
        let row = UserRow::new(&user, hash);
        let why = reasons_against(&row, &rows, &self.defaults);
        if !why.is_empty() {
            return Err(StoreError::Invalid(why));
        }
        let sql = format!(
            "INSERT INTO postern_users ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
             ON CONFLICT (name) DO NOTHING"
        );
        let inserted = tx.execute(&sql, &params(&row)).await.map_err(unavailable)?;
        if inserted == 0 {
            return Err(StoreError::Exists);
        }
        tx.commit().await.map_err(unavailable)?;
        self.commit_in_force(client, &user.name).await
    }

    async fn update(&self, name: &str, change: UserChange) -> Result<Arc<User>, StoreError> {
        let hash = hash_blocking(change.password.clone()).await?;
        let mut guard = self.connection().await?;
        let client = guard.as_mut().ok_or_else(no_connection)?;
        let tx = client.transaction().await.map_err(unavailable)?;
        let sql = format!("SELECT {COLUMNS} FROM postern_users WHERE name = $1 FOR UPDATE");
        let found = tx.query_opt(&sql, &[&name]).await.map_err(unavailable)?;
        let found = found.ok_or(StoreError::NotFound)?;
        let mut row = row_of(&found).map_err(|why| StoreError::Invalid(vec![why]))?;
        row.apply(&change, hash);
        let rows = read_rows(&tx).await.map_err(unavailable)?;
        let why = reasons_against(&row, &rows, &self.defaults);
        if !why.is_empty() {
            return Err(StoreError::Invalid(why));
        }
        let sql = "UPDATE postern_users SET password_hash = $2, senders = $3, networks = $4, \
             messages_per_hour = $5, recipients_per_hour = $6, recipients_per_day = $7, \
             disabled = $8, allow_any_header_from = $9 WHERE name = $1";
        tx.execute(sql, &params(&row)).await.map_err(unavailable)?;
        tx.commit().await.map_err(unavailable)?;
        self.commit_in_force(client, name).await
    }

    async fn delete(&self, name: &str) -> Result<(), StoreError> {
        let guard = self.connection().await?;
        let client = guard.as_ref().ok_or_else(no_connection)?;
        let deleted = (client.execute("DELETE FROM postern_users WHERE name = $1", &[&name]))
            .await
            .map_err(unavailable)?;
        if deleted == 0 {
            return Err(StoreError::NotFound);
        }
        let users = self.users(client).await?;
        (self.in_force)(users);
        Ok(())
    }

    async fn list(&self) -> Result<Users, StoreError> {
        let guard = self.connection().await?;
        let client = guard.as_ref().ok_or_else(no_connection)?;
        self.users(client).await
    }
}

/// The row's columns as query parameters, in [`COLUMNS`] order.
fn params(r: &UserRow) -> [&(dyn tokio_postgres::types::ToSql + Sync); 9] {
    [
        &r.name,
        &r.password_hash,
        &r.senders,
        &r.networks,
        &r.messages_per_hour,
        &r.recipients_per_hour,
        &r.recipients_per_day,
        &r.disabled,
        &r.allow_any_header_from,
    ]
}

/// The hash to store for a given password, made on the blocking pool (argon2).
async fn hash_blocking(password: Option<super::Password>) -> Result<Option<String>, StoreError> {
    tokio::task::spawn_blocking(move || super::file::hash_of(password.as_ref()))
        .await
        .map_err(|e| StoreError::Unavailable(e.to_string()))?
}

impl UsersStore for PgStore {
    fn list(&self) -> BoxFuture<'_, Result<Vec<Arc<User>>, StoreError>> {
        Box::pin(async move { Ok(self.inner.list().await?.iter().cloned().collect()) })
    }

    fn get<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Arc<User>, StoreError>> {
        Box::pin(async move {
            let users = self.inner.list().await?;
            users.get(name).cloned().ok_or(StoreError::NotFound)
        })
    }

    fn create(&self, user: NewUser) -> BoxFuture<'_, Result<Arc<User>, StoreError>> {
        Box::pin(self.inner.create(user))
    }

    fn update<'a>(
        &'a self,
        name: &'a str,
        change: UserChange,
    ) -> BoxFuture<'a, Result<Arc<User>, StoreError>> {
        Box::pin(self.inner.update(name, change))
    }

    fn delete<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(self.inner.delete(name))
    }

    fn domains(&self) -> BoxFuture<'_, Result<Vec<DomainEntry>, StoreError>> {
        self.list_domains()
    }

    fn put_domain<'a>(
        &'a self,
        domain: &'a str,
        limits: RateLimitsInput,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        self.put(domain.to_string(), limits)
    }

    fn delete_domain<'a>(&'a self, domain: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        self.unlist(domain.to_string())
    }
}
