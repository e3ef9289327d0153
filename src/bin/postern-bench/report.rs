//! What `load` measured: latencies and errors per worker, then the text or JSON
//! report that `bench/compare.sh` parses.

use crate::client::Failure;
use std::collections::BTreeMap;
use std::time::Duration;

#[derive(Default)]
pub struct Stats {
    pub setup: Vec<Duration>,
    pub message: Vec<Duration>,
    pub errors: BTreeMap<String, u64>,
}

impl Stats {
    /// Adds another worker's figures to these.
    pub fn merge(&mut self, other: Stats) {
        self.setup.extend(other.setup);
        self.message.extend(other.message);
        for (k, v) in other.errors {
            *self.errors.entry(k).or_default() += v;
        }
    }
}

pub fn record(stats: &mut Stats, e: Failure, phase: &str) {
    let key = match e {
        Failure::Io(_) => format!("{phase}_io"),
        Failure::Code(c) => format!("{phase}_{c}"),
    };
    *stats.errors.entry(key).or_default() += 1;
}

/// Prints the report: one JSON line (`json`) or the text form.
pub fn print(mut s: Stats, ok: u64, elapsed: f64, cpu: f64, json: bool) {
    let rate = ok as f64 / elapsed;
    let (s50, s99) = (
        percentile(&mut s.setup, 0.5),
        percentile(&mut s.setup, 0.99),
    );
    let (m50, m99) = (
        percentile(&mut s.message, 0.5),
        percentile(&mut s.message, 0.99),
    );
    if json {
        let errors: Vec<String> = s
            .errors
            .iter()
            .map(|(k, v)| format!("\"{k}\":{v}"))
            .collect();
        println!(
            "{{\"messages\":{ok},\"seconds\":{elapsed:.3},\"rate\":{rate:.1},\"sessions\":{},\
             \"setup_p50_ms\":{s50:.3},\"setup_p99_ms\":{s99:.3},\"message_p50_ms\":{m50:.3},\
             \"message_p99_ms\":{m99:.3},\"client_cpu_s\":{cpu:.2},\"errors\":{{{}}}}}",
            s.setup.len(),
            errors.join(",")
        );
    } else {
        println!("messages      {ok} in {elapsed:.2} s: {rate:.0} msg/s");
        println!(
            "sessions      {} (setup p50 {s50:.2} ms, p99 {s99:.2} ms)",
            s.setup.len()
        );
        println!("per message   p50 {m50:.2} ms, p99 {m99:.2} ms");
        println!("client CPU    {cpu:.2} s");
        for (k, v) in &s.errors {
            println!("error         {k}: {v}");
        }
    }
}

pub fn percentile(v: &mut [Duration], p: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_unstable();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i].as_secs_f64() * 1000.0
}

pub fn cpu_seconds() -> f64 {
    let usage = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF);
    match usage {
        Ok(u) => {
            let t = |tv: nix::sys::time::TimeVal| tv.tv_sec() as f64 + tv.tv_usec() as f64 / 1e6;
            t(u.user_time()) + t(u.system_time())
        }
        Err(_) => 0.0,
    }
}
