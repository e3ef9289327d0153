//! `postern-bench idle`: open many sessions (TLS and EHLO done, AUTH if asked) and
//! hold them while `bench/compare.sh` measures the server's memory.

use crate::args::Target;
use crate::client::{Client, Failure};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub async fn idle(
    target: Target,
    sessions: usize,
    hold: Duration,
    auth: bool,
) -> Result<(), String> {
    let client = Arc::new(Client::new(target)?);
    let started = Instant::now();
    let mut open = Vec::with_capacity(sessions);
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    // Open in batches so the server sees a realistic arrival, not one burst.
    for batch in (0..sessions).collect::<Vec<_>>().chunks(200) {
        let tasks: Vec<_> = batch
            .iter()
            .map(|&n| {
                let client = client.clone();
                tokio::spawn(async move { client.session(n, auth).await })
            })
            .collect();
        for t in tasks {
            match t.await {
                Ok(Ok(c)) => open.push(c),
                Ok(Err(Failure::Code(c))) => *errors.entry(format!("code_{c}")).or_default() += 1,
                Ok(Err(Failure::Io(e))) => *errors.entry(format!("io: {e}")).or_default() += 1,
                Err(_) => *errors.entry("panic".into()).or_default() += 1,
            }
        }
    }
    println!(
        "open {} of {sessions} sessions in {:.1} s; errors {errors:?}",
        open.len(),
        started.elapsed().as_secs_f64()
    );
    // The compare script measures the server now.
    tokio::time::sleep(hold).await;
    drop(open);
    Ok(())
}
