//! `postern_domains`: per-domain limits in the database, read with the users
//! (one change counter and NOTIFY for both) and written by the admin API or a panel.

use super::{Inner, PgStore, no_connection, unavailable};
use crate::config::{RateLimits, Users, check_domain_name};
use crate::users::{BoxFuture, DomainEntry, RateLimitsInput, StoreError};
use std::collections::HashMap;
use tokio_postgres::GenericClient;

const SELECT: &str = "SELECT name, messages_per_hour, recipients_per_hour, recipients_per_day \
                      FROM postern_domains ORDER BY name";

/// A limit column: `NULL` none, a negative one (the table refuses them) none too.
fn limit(v: Option<i32>) -> Option<u32> {
    v.and_then(|n| u32::try_from(n).ok())
}

/// Every usable row as (domain key, limits); a name that is not a domain key is
/// left out with a problem (a panel wrote `Bücher.example`, say).
pub(super) async fn read_domains(
    client: &impl GenericClient,
) -> Result<(HashMap<String, RateLimits>, Vec<String>), tokio_postgres::Error> {
    let mut domains = HashMap::new();
    let mut problems = Vec::new();
    let rows = match client.query(SELECT, &[]).await {
        // Not created yet (`check-config` before the first `serve` of this release).
        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE) => {
            return Ok((domains, problems));
        }
        r => r?,
    };
    for r in rows {
        let name: String = r.get(0);
        match check_domain_name(&name) {
            Ok(key) if key == name => {
                let limits = RateLimits {
                    messages_per_hour: limit(r.get(1)),
                    recipients_per_hour: limit(r.get(2)),
                    recipients_per_day: limit(r.get(3)),
                };
                domains.insert(name, limits);
            }
            Ok(key) => problems.push(format!(
                "domain {name:?}: write it as {key:?} (the A-label, lower-case)"
            )),
            Err(why) => problems.push(format!("domain {name:?}: {why}")),
        }
    }
    Ok((domains, problems))
}

/// `users` with the database's domains, the rows left out logged.
pub(super) async fn with_domains(
    client: &impl GenericClient,
    users: Users,
) -> Result<Users, tokio_postgres::Error> {
    let (domains, problems) = read_domains(client).await?;
    for p in problems {
        tracing::warn!(problem = ?p, "users database: a domain is left out");
    }
    Ok(users.with_domains(domains))
}

/// A limit as a column value.
fn column(v: Option<u32>) -> Option<i32> {
    v.map(|n| i32::try_from(n).unwrap_or(i32::MAX))
}

impl Inner {
    async fn put_domain(&self, domain: &str, l: RateLimitsInput) -> Result<bool, StoreError> {
        let guard = self.connection().await?;
        let client = guard.as_ref().ok_or_else(no_connection)?;
        // xmax = 0 only for a row this statement inserted.
        let sql = "INSERT INTO postern_domains AS d \
                   (name, messages_per_hour, recipients_per_hour, recipients_per_day) \
                   VALUES ($1, $2, $3, $4) ON CONFLICT (name) DO UPDATE SET \
                   messages_per_hour = $2, recipients_per_hour = $3, recipients_per_day = $4 \
                   RETURNING (xmax = 0)";
        let (m, rh, rd) = (
            column(l.messages_per_hour),
            column(l.recipients_per_hour),
            column(l.recipients_per_day),
        );
        let row = (client.query_one(sql, &[&domain, &m, &rh, &rd]).await).map_err(unavailable)?;
        let users = self.users(client).await?;
        (self.in_force)(users);
        Ok(row.get(0))
    }

    async fn delete_domain(&self, domain: &str) -> Result<(), StoreError> {
        let guard = self.connection().await?;
        let client = guard.as_ref().ok_or_else(no_connection)?;
        let sql = "DELETE FROM postern_domains WHERE name = $1";
        let deleted = client.execute(sql, &[&domain]).await.map_err(unavailable)?;
        if deleted == 0 {
            return Err(StoreError::NotFound);
        }
        let users = self.users(client).await?;
        (self.in_force)(users);
        Ok(())
    }
}

impl PgStore {
    pub(super) fn list_domains(&self) -> BoxFuture<'_, Result<Vec<DomainEntry>, StoreError>> {
        Box::pin(async move {
            let guard = self.inner.connection().await?;
            let client = guard.as_ref().ok_or_else(no_connection)?;
            let (domains, _) = read_domains(client).await.map_err(unavailable)?;
            let mut list: Vec<DomainEntry> =
                domains.iter().map(|(d, l)| (d.clone(), l.into())).collect();
            list.sort_by(|a, b| a.0.cmp(&b.0));
            Ok(list)
        })
    }

    pub(super) fn put(
        &self,
        domain: String,
        limits: RateLimitsInput,
    ) -> BoxFuture<'_, Result<bool, StoreError>> {
        Box::pin(async move { self.inner.put_domain(&domain, limits).await })
    }

    pub(super) fn unlist(&self, domain: String) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move { self.inner.delete_domain(&domain).await })
    }
}
