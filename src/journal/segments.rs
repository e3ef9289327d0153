//! The delivery log's files: append-only JSON-lines segments named by the
//! millisecond they were opened (`log-0001764676800000.jsonl`), so that name order
//! is age order. Listing them, reading one back (a torn last line, left by a crash
//! mid-write, is skipped), and deciding which ones retention removes (pure).

use super::entry::Entry;
use std::io;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const PREFIX: &str = "log-";
const SUFFIX: &str = ".jsonl";

/// How much the log keeps, and how finely it lets go of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Entries older than this are removed (whole segments) and never returned.
    pub max_age: Duration,
    /// The segments together stay under this many bytes.
    pub max_size: u64,
    /// A segment is closed at this size.
    pub segment_size: u64,
    /// A segment is closed after this long.
    pub segment_age: Duration,
}

impl Retention {
    /// Segments of 1/32 of `max_size` (between 64 KiB and 16 MiB: retention by
    /// size lets go of about 3% at a time, and a query holds at most one segment in
    /// memory) and of 1/30 of `max_age` (between a minute and a day).
    pub fn new(max_age: Duration, max_size: u64) -> Retention {
        Retention {
            max_age,
            max_size,
            segment_size: (max_size / 32).clamp(64 * 1024, 16 * 1024 * 1024),
            segment_age: (max_age / 30).clamp(Duration::from_secs(60), Duration::from_secs(86_400)),
        }
    }
}

/// One segment file on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    pub name: String,
    pub size: u64,
    /// Unix seconds of its last write.
    pub modified: u64,
}

/// The file name of a segment opened at `t`.
pub fn name_at(t: SystemTime) -> String {
    let ms = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis());
    format!("{PREFIX}{ms:016}{SUFFIX}")
}

/// The segments in `dir`, oldest first; other files are left alone.
pub fn list(dir: &Path) -> io::Result<Vec<Segment>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !(name.starts_with(PREFIX) && name.ends_with(SUFFIX)) {
            continue;
        }
        let Ok(meta) = entry.metadata() else { continue };
        let modified = meta
            .modified()
            .ok()
            .and_then(|m| m.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_secs());
        out.push(Segment {
            name,
            size: meta.len(),
            modified,
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// The entries of a segment's text, in the order written. A line that is not a
/// whole entry (the last one torn by a crash, or anything damaged) is skipped.
pub fn parse(text: &[u8]) -> Vec<Entry> {
    text.split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .filter_map(|l| serde_json::from_slice(l).ok())
        .collect()
}

/// Which segments retention removes now: those last written more than `max_age`
/// ago, then the oldest until the rest fit in `max_size`. `active` (the one being
/// written) is never removed.
pub fn expired(segments: &[Segment], active: Option<&str>, now: u64, r: Retention) -> Vec<String> {
    let cutoff = now.saturating_sub(r.max_age.as_secs());
    let mut total: u64 = segments.iter().map(|s| s.size).sum();
    let mut out = Vec::new();
    for s in segments {
        if Some(s.name.as_str()) == active {
            continue;
        }
        if s.modified < cutoff || total > r.max_size {
            total -= s.size;
            out.push(s.name.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(name: &str, size: u64, modified: u64) -> Segment {
        Segment {
            name: name.into(),
            size,
            modified,
        }
    }

    #[test]
    fn segment_names_sort_by_age() {
        let a = name_at(UNIX_EPOCH + Duration::from_millis(999));
        let b = name_at(UNIX_EPOCH + Duration::from_secs(1_764_676_800));
        assert_eq!(a, "log-0000000000000999.jsonl");
        assert!(a < b);
    }

    #[test]
    fn retention_removes_the_old_then_the_oldest_over_size() {
        let r = Retention::new(Duration::from_secs(100), 250);
        let segs = [
            seg("log-1", 100, 500),
            seg("log-2", 100, 950),
            seg("log-3", 100, 960),
            seg("log-4", 100, 990),
        ];
        // log-1 is too old; then 300 bytes remain, over 250: log-2 goes too.
        assert_eq!(expired(&segs, Some("log-4"), 1000, r), ["log-1", "log-2"]);
        // The active segment stays even when it alone is too large or too old.
        let one = [seg("log-9", 999, 0)];
        assert!(expired(&one, Some("log-9"), 1000, r).is_empty());
        assert_eq!(expired(&one, None, 1000, r), ["log-9"]);
    }

    #[test]
    fn segments_are_sized_and_aged_from_the_retention() {
        let r = Retention::new(Duration::from_secs(30 * 86_400), 1 << 30);
        assert_eq!(r.segment_size, 16 << 20);
        assert_eq!(r.segment_age, Duration::from_secs(86_400));
        let small = Retention::new(Duration::from_secs(60), 1000);
        assert_eq!(small.segment_size, 64 * 1024);
        assert_eq!(small.segment_age, Duration::from_secs(60));
    }
}
