//! `postern-bench load`: concurrent clients submit messages (pipelined MAIL, RCPT,
//! DATA) until the total or the time limit is reached; the report says throughput,
//! latency percentiles and errors by phase and reply code.

use crate::args::Target;
use crate::client::{Client, Conn, Failure};
use crate::report::{self, Stats, cpu_seconds, record};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A message of about `size` bytes: a few headers, then 76-character lines.
pub fn message(size: usize, from: &str, to: &str) -> Vec<u8> {
    let mut m = format!(
        "From: <{from}>\r\nTo: <{to}>\r\nSubject: benchmark\r\nMessage-ID: <bench@bench.example>\r\n\r\n"
    )
    .into_bytes();
    let line = b"0123456789abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ0123\r\n";
    while m.len() + line.len() <= size.max(m.len() + line.len()) && m.len() < size {
        m.extend_from_slice(line);
    }
    m
}

pub struct Plan {
    pub concurrency: usize,
    pub per_connection: u64,
    pub total: u64,
    pub deadline: Duration,
    pub message: Arc<Vec<u8>>,
    pub from: String,
    pub to: String,
}

/// What every worker shares: the client, the plan and the counters.
struct Run {
    client: Client,
    plan: Plan,
    /// Messages (or sessions) claimed by a worker, whether or not they succeed.
    issued: AtomicU64,
    /// Messages (or sessions) that succeeded.
    done: AtomicU64,
    stop: AtomicBool,
    started: Instant,
}

pub async fn load(target: Target, plan: Plan, json: bool) -> Result<(), String> {
    let run = Arc::new(Run {
        client: Client::new(target)?,
        plan,
        issued: AtomicU64::new(0),
        done: AtomicU64::new(0),
        stop: AtomicBool::new(false),
        started: Instant::now(),
    });
    let cpu0 = cpu_seconds();
    let workers: Vec<_> = (0..run.plan.concurrency)
        .map(|w| tokio::spawn(worker(w, run.clone())))
        .collect();
    let mut stats = Stats::default();
    for w in workers {
        if let Ok(s) = w.await {
            stats.merge(s);
        }
    }
    let elapsed = run.started.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu0;
    report::print(stats, run.done.load(Ordering::Relaxed), elapsed, cpu, json);
    Ok(())
}

/// One client: connects as user number `w`, `w + concurrency`, ... in turn, sends
/// `per_connection` messages on each connection, and returns what it measured.
async fn worker(w: usize, run: Arc<Run>) -> Stats {
    let (client, plan) = (&run.client, &run.plan);
    let (issued, done, stop, started) = (&run.issued, &run.done, &run.stop, run.started);
    let mut local = Stats::default();
    let mut n = w;
    'conns: while !stop.load(Ordering::Relaxed)
        && started.elapsed() < plan.deadline
        && issued.load(Ordering::Relaxed) < plan.total
    {
        let t0 = Instant::now();
        let mut conn = match client.session(n, true).await {
            Ok(c) => c,
            Err(e) => {
                record(&mut local, e, "setup");
                // A server that refuses everyone: report, do not hammer.
                if local.errors.values().sum::<u64>() >= 100 && done.load(Ordering::Relaxed) == 0 {
                    stop.store(true, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
                n += plan.concurrency;
                continue;
            }
        };
        local.setup.push(t0.elapsed());
        n += plan.concurrency;
        if plan.per_connection == 0 {
            if issued.fetch_add(1, Ordering::Relaxed) >= plan.total {
                stop.store(true, Ordering::Relaxed);
            } else {
                done.fetch_add(1, Ordering::Relaxed);
            }
            let _ = conn.send(b"QUIT\r\n").await;
            let _ = conn.reply().await;
            continue;
        }
        for _ in 0..plan.per_connection {
            if issued.fetch_add(1, Ordering::Relaxed) >= plan.total
                || started.elapsed() >= plan.deadline
            {
                stop.store(true, Ordering::Relaxed);
                let _ = conn.send(b"QUIT\r\n").await;
                break 'conns;
            }
            let t1 = Instant::now();
            match send_one(&mut conn, plan).await {
                Ok(()) => {
                    local.message.push(t1.elapsed());
                    done.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    record(&mut local, e, "message");
                    continue 'conns;
                }
            }
        }
        let _ = conn.send(b"QUIT\r\n").await;
        let _ = conn.reply().await;
    }
    local
}

/// One transaction, pipelined (RFC 2920): MAIL, RCPT and DATA in one write.
pub async fn send_one(conn: &mut Conn, plan: &Plan) -> Result<(), Failure> {
    let head = format!(
        "MAIL FROM:<{}>\r\nRCPT TO:<{}>\r\nDATA\r\n",
        plan.from, plan.to
    );
    conn.send(head.as_bytes()).await.map_err(Failure::Io)?;
    for want in [250, 250, 354] {
        let code = conn.reply().await.map_err(Failure::Io)?;
        if code != want {
            if want == 354 {
                return Err(Failure::Code(code));
            }
            // Keep the session in step: read the rest, then RSET.
            for _ in 0..(if want == 250 { 2 } else { 1 }) {
                let _ = conn.reply().await;
            }
            conn.expect("RSET\r\n", 250).await.ok();
            return Err(Failure::Code(code));
        }
    }
    let mut body = Vec::with_capacity(plan.message.len() + 5);
    body.extend_from_slice(&plan.message);
    body.extend_from_slice(b".\r\n");
    conn.send(&body).await.map_err(Failure::Io)?;
    match conn.reply().await.map_err(Failure::Io)? {
        250 => Ok(()),
        code => Err(Failure::Code(code)),
    }
}
