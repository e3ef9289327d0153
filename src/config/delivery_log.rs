//! `delivery_log`: where the delivery log is kept and how much of it.
//!
//! ```yaml
//! delivery_log:
//!   # enabled: true
//!   # directory: /var/spool/postern/delivery-log   # default: under the spool
//!   max_age: 30d
//!   max_size: 1GiB
//! ```

use super::ctx::Ctx;
use super::{HumanDuration, Size};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryLogConfig {
    /// Off: no entries are written (and `GET /api/v1/messages` has none).
    pub enabled: bool,
    pub directory: PathBuf,
    /// Entries older than this are removed.
    pub max_age: Duration,
    /// The log's files together stay under this many bytes.
    pub max_size: u64,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawDeliveryLog {
    enabled: Option<bool>,
    directory: Option<PathBuf>,
    max_age: Option<HumanDuration>,
    max_size: Option<Size>,
}

/// The smallest `max_size`: a few segments' worth.
const MIN_SIZE: u64 = 1024 * 1024;

/// `delivery_log`, every key with a default; the folder defaults to
/// `delivery-log` in the spool directory.
pub(super) fn delivery_log(cx: &mut Ctx, spool: &Path) -> DeliveryLogConfig {
    let raw: RawDeliveryLog = cx.section("delivery_log").unwrap_or_default();
    let c = DeliveryLogConfig {
        enabled: raw.enabled.unwrap_or(true),
        directory: raw
            .directory
            .map(|d| cx.resolve(d))
            .unwrap_or_else(|| spool.join("delivery-log")),
        max_age: raw
            .max_age
            .map_or(Duration::from_secs(30 * 86_400), |h| h.0),
        max_size: raw.max_size.map_or(1 << 30, |s| s.0),
    };
    if c.max_age < Duration::from_secs(60) {
        cx.add("delivery_log.max_age", "must be at least 1m");
    }
    if c.max_size < MIN_SIZE {
        cx.add("delivery_log.max_size", "must be at least 1MiB");
    }
    c
}

#[cfg(test)]
pub(super) mod tests {
    use crate::config::{Config, Problems};
    use std::path::{Path, PathBuf};
    use std::time::Duration;

    /// A config with `extra` appended, read from `dir`; the problems' texts if any.
    pub(crate) fn parse_in(dir: &Path, extra: &str) -> Result<Config, Vec<String>> {
        let yaml = format!(
            "hostname: relay.test\nlisteners:\n  - address: \"127.0.0.1:2525\"\n    tls: none\n\
             users:\n  file: users.yaml\nsmarthost:\n  address: \"[::1]:25\"\n  tls: none\n\
             delivery:\n  spool_directory: /var/spool/postern\n{extra}"
        );
        let mut problems = Problems::default();
        match Config::from_yaml(&yaml, &dir.join("postern.yaml"), dir, &mut problems) {
            Some(c) if problems.is_empty() => Ok(c),
            _ => Err(problems.0.iter().map(|p| p.to_string()).collect()),
        }
    }

    #[test]
    fn defaults_live_under_the_spool() {
        let c = parse_in(Path::new("/etc/postern"), "")
            .unwrap()
            .delivery_log;
        assert!(c.enabled);
        assert_eq!(
            c.directory,
            PathBuf::from("/var/spool/postern/delivery-log")
        );
        assert_eq!(c.max_age, Duration::from_secs(30 * 86_400));
        assert_eq!(c.max_size, 1 << 30);
    }

    #[test]
    fn keys_are_read_and_checked() {
        let c = parse_in(
            Path::new("/etc/postern"),
            "delivery_log:\n  enabled: false\n  directory: log\n  max_age: 7d\n  max_size: 64MiB\n",
        )
        .unwrap()
        .delivery_log;
        assert!(!c.enabled);
        assert_eq!(c.directory, PathBuf::from("/etc/postern/log"));
        assert_eq!(
            (c.max_age, c.max_size),
            (Duration::from_secs(7 * 86_400), 64 << 20)
        );
        let e = parse_in(
            Path::new("/etc/postern"),
            "delivery_log:\n  max_age: 10s\n  max_size: 1000\n  color: red\n",
        )
        .unwrap_err();
        assert!(
            e.iter().any(|p| p.contains("unknown field `color`")),
            "{e:?}"
        );
        let e = parse_in(
            Path::new("/etc/postern"),
            "delivery_log:\n  max_age: 10s\n  max_size: 1000\n",
        )
        .unwrap_err();
        assert!(
            e.iter().any(|p| p.contains("delivery_log.max_age")),
            "{e:?}"
        );
        assert!(
            e.iter().any(|p| p.contains("delivery_log.max_size")),
            "{e:?}"
        );
    }
}
