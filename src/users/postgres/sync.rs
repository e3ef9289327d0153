//! [`keep_in_sync`]: keeps the users in memory equal to the database's, whoever
//! changed them (this instance, another one, or a panel writing the table).
//!
//! One connection LISTENs on `postern_users` (the table's trigger NOTIFYs on every
//! change), so a change is usually in force within a round trip. As a fallback, for
//! a notification lost with a connection or a writer that bypassed the trigger, the
//! change counter (`postern_users_version`) is read every [`POLL`] and the users are
//! reloaded when it moved. A lost connection is logged once, the users in memory
//! keep serving, and reconnection is retried with backoff; once back, the users are
//! reloaded at once, since changes may have been missed.

use super::{Database, InForce, clean, log_problems, read_rows, users_from_rows};
use crate::config::RateLimits;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_postgres::{AsyncMessage, Client};
use tracing::{debug, info, warn};

/// How often the change counter is read.
pub const POLL: Duration = Duration::from_secs(5);
/// First and longest wait between reconnection attempts.
const BACKOFF_MIN: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(10);

/// Runs until aborted (at shutdown).
pub async fn keep_in_sync(db: Database, defaults: RateLimits, in_force: InForce) {
    let mut backoff = BACKOFF_MIN;
    // Whether the loss was logged: it is logged once, not at every retry.
    let mut reported_down = false;
    loop {
        match listen(&db).await {
            Ok((client, notes)) => {
                if reported_down {
                    info!(database = %db.label, "users database reachable again; reloading the users");
                }
                backoff = BACKOFF_MIN;
                let why = follow(&client, notes, &defaults, &in_force).await;
                warn!(database = %db.label, error = %why, "lost the users database; serving the users in memory and reconnecting");
                reported_down = true;
            }
            Err(e) if !reported_down => {
                warn!(database = %db.label, error = %clean(&e), "users database unreachable; serving the users in memory and reconnecting");
                reported_down = true;
            }
            Err(e) => {
                debug!(database = %db.label, error = %clean(&e), "users database still unreachable")
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// A connection that LISTENs, and the notifications it receives (coalesced: one
/// pending notification stands for any number).
async fn listen(db: &Database) -> Result<(Client, mpsc::Receiver<()>), tokio_postgres::Error> {
    let (client, mut connection) = db.config.connect(db.tls.clone()).await?;
    let (tx, rx) = mpsc::channel(1);
    tokio::spawn(async move {
        while let Some(message) = std::future::poll_fn(|cx| connection.poll_message(cx)).await {
            match message {
                Ok(AsyncMessage::Notification(_)) => {
                    let _ = tx.try_send(());
                }
                Ok(_) => {}
                Err(e) => {
                    debug!(error = %clean(&e), "users database connection ended");
                    break;
                }
            }
        }
    });
    client.batch_execute("LISTEN postern_users").await?;
    Ok((client, rx))
}

/// Reloads now, then on each notification and whenever the counter moved; returns
/// why the connection was lost.
async fn follow(
    client: &Client,
    mut notes: mpsc::Receiver<()>,
    defaults: &RateLimits,
    in_force: &InForce,
) -> String {
    let mut seen = match reload(client, defaults, in_force).await {
        Ok(counter) => counter,
        Err(why) => return why,
    };
    let mut poll = tokio::time::interval(POLL);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            note = notes.recv() => {
                if note.is_none() {
                    return "the connection closed".into();
                }
            }
            _ = poll.tick() => match counter(client).await {
                Ok(c) if c == seen => continue,
                Ok(_) => {}
                Err(why) => return why,
            },
        }
        seen = match reload(client, defaults, in_force).await {
            Ok(counter) => counter,
            Err(why) => return why,
        };
    }
}

async fn counter(client: &Client) -> Result<i64, String> {
    let row = client
        .query_one("SELECT counter FROM postern_users_version", &[])
        .await
        .map_err(|e| clean(&e))?;
    Ok(row.get(0))
}

/// Reads the counter, then the users, and puts them in force; returns the counter
/// (read first, so a change made in between is seen at the next poll).
async fn reload(client: &Client, defaults: &RateLimits, in_force: &InForce) -> Result<i64, String> {
    let c = counter(client).await?;
    let rows = read_rows(client).await.map_err(|e| clean(&e))?;
    match users_from_rows(&rows, defaults) {
        Ok((users, problems)) => {
            log_problems(&problems);
            let users =
                (super::domains::with_domains(client, users).await).map_err(|e| clean(&e))?;
            info!(users = users.len(), "users reloaded from the database");
            in_force(users);
        }
        Err(problems) => {
            log_problems(&problems);
            warn!("users database: the users cannot be read; keeping those in memory");
        }
    }
    Ok(c)
}
