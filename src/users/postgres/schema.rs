//! Postern's tables, created on first start: the migrations in `migrations/*.sql`
//! (embedded in the binary), applied in order and recorded in `postern_schema`.
//!
//! All of it runs in one transaction that first takes a transaction-level advisory
//! lock, so two instances starting at once on an empty database do not both create
//! the tables: the second waits, then sees the migrations recorded and does nothing.
//! PostgreSQL's DDL is transactional, so a failed migration leaves nothing behind.

use tokio_postgres::Client;

/// Every migration, in the order applied: (version, name, SQL). Append only: an
/// applied migration is never edited, a change is a new file.
const MIGRATIONS: &[(i32, &str, &str)] = &[
    (
        1,
        "users",
        include_str!("../../../migrations/0001_users.sql"),
    ),
    (
        2,
        "domains",
        include_str!("../../../migrations/0002_domains.sql"),
    ),
];

/// The advisory lock key ("postern" in ASCII), shared by every instance.
const LOCK_KEY: i64 = 0x0070_6f73_7465_726e;

/// Applies the migrations this database has not seen; returns how many were applied.
pub async fn migrate(client: &mut Client) -> Result<usize, tokio_postgres::Error> {
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK_KEY])
        .await?;
    // Looked up rather than CREATE TABLE IF NOT EXISTS, which needs the right to
    // create even when the table exists: once set up, Postern's role needs no more
    // than the grants the README lists.
    let exists: bool = tx
        .query_one("SELECT to_regclass('postern_schema') IS NOT NULL", &[])
        .await?
        .get(0);
    if !exists {
        tx.batch_execute(
            "CREATE TABLE postern_schema (
                 version integer PRIMARY KEY,
                 name text NOT NULL,
                 applied_at timestamptz NOT NULL DEFAULT now()
             )",
        )
        .await?;
    }
    let done: Vec<i32> = tx
        .query("SELECT version FROM postern_schema", &[])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut applied = 0;
    for (version, name, sql) in MIGRATIONS {
        if done.contains(version) {
            continue;
        }
        tx.batch_execute(sql).await?;
        tx.execute(
            "INSERT INTO postern_schema (version, name) VALUES ($1, $2)",
            &[version, name],
        )
        .await?;
        applied += 1;
    }
    tx.commit().await?;
    Ok(applied)
}

#[cfg(test)]
mod tests {
    use super::MIGRATIONS;

    #[test]
    fn versions_run_in_order_without_gaps() {
        for (i, (v, _, sql)) in MIGRATIONS.iter().enumerate() {
            assert_eq!(*v as usize, i + 1);
            assert!(!sql.trim().is_empty());
        }
    }
}
