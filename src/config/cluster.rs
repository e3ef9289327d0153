//! `cluster`: the Redis (or Valkey) that several instances share their limits in.

use super::ctx::Ctx;
use serde::Deserialize;

/// Cluster mode: where the shared state lives. `None` in [`super::Config`] when the
/// section is absent (every instance on its own, in memory).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cluster {
    /// `redis://[user:password@]host:port[/db]` or `rediss://` for TLS. May hold a
    /// password, so it is never logged whole (see [`Cluster::display_url`]).
    pub redis: String,
    /// Prepended to every key, so that several clusters can share one Redis.
    pub key_prefix: String,
}

impl Cluster {
    /// The URL without its password, for logs and `check-config`.
    pub fn display_url(&self) -> String {
        match (self.redis.split_once("://"), self.redis.rfind('@')) {
            (Some((scheme, _)), Some(at)) => format!("{scheme}://***@{}", &self.redis[at + 1..]),
            _ => self.redis.clone(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCluster {
    redis: String,
    key_prefix: Option<String>,
}

/// `cluster`: absent means no cluster mode.
/// Whether the Redis client takes `url` (parsed only; nothing is connected).
fn parses(url: &str) -> bool {
    redis::IntoConnectionInfo::into_connection_info(url).is_ok()
}

pub(super) fn cluster(cx: &mut Ctx) -> Option<Cluster> {
    let raw: RawCluster = cx.section("cluster")?;
    let scheme = raw.redis.split_once("://").map(|(s, _)| s);
    if !matches!(scheme, Some("redis" | "rediss")) {
        cx.add(
            "cluster.redis",
            "must be a redis:// or rediss:// URL, such as redis://127.0.0.1:6379/0",
        );
        return None;
    }
    // What `serve` will parse, checked here so `check-config` agrees with it. The
    // parser's words are left out: they may quote the URL, password and all.
    if !parses(&raw.redis) {
        cx.add(
            "cluster.redis",
            "is not a Redis URL: write redis://[user:password@]host:port[/db], with an IPv6 host in brackets",
        );
        return None;
    }
    let key_prefix = raw.key_prefix.unwrap_or_else(|| "postern:".to_string());
    if key_prefix
        .chars()
        .any(|c| c.is_control() || c == '{' || c == '}')
    {
        cx.add(
            "cluster.key_prefix",
            "may not hold control characters or braces (braces are Redis Cluster hash tags)",
        );
        return None;
    }
    Some(Cluster {
        redis: raw.redis,
        key_prefix,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_password_never_shows() {
        let c = Cluster {
            redis: "rediss://postern:s3cret@redis.example:6380/2".into(),
            key_prefix: "postern:".into(),
        };
        assert_eq!(c.display_url(), "rediss://***@redis.example:6380/2");
        let plain = Cluster {
            redis: "redis://127.0.0.1:6379".into(),
            ..c
        };
        assert_eq!(plain.display_url(), "redis://127.0.0.1:6379");
    }

    #[test]
    fn urls_serve_could_not_use_are_found_at_load() {
        for bad in ["redis://u:p@[::1/0", "redis://u:p@127.0.0.1:6379/xx"] {
            assert!(!parses(bad), "{bad}");
        }
        for good in [
            "redis://127.0.0.1:6379/0",
            "rediss://u:p@[::1]:6380/2",
            "redis://redis.example",
        ] {
            assert!(parses(good), "{good}");
        }
    }
}
