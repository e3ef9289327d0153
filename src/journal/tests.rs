use super::entry::{Kind, Recipient, format_time};
use super::*;
use std::time::{Duration, UNIX_EPOCH};

fn entry(id: &str, user: &str, at: SystemTime) -> Entry {
    Entry {
        id: id.into(),
        time: format_time(at),
        user: user.into(),
        client_ip: Some("192.0.2.7".into()),
        from: format!("{user}@example.org"),
        size: 1234,
        status: "delivered".into(),
        recipients: vec![Recipient::new(
            "rcpt@example.net",
            "delivered",
            Some("250 2.0.0 Ok".into()),
        )],
        kind: Kind::Submission,
        reason: None,
        reply: None,
        attempt: None,
    }
}

fn ids(entries: &[Entry]) -> Vec<&str> {
    entries.iter().map(|e| e.id.as_str()).collect()
}

/// A log whose segments hold about three entries each.
fn small_log(dir: &Path, max_size: u64) -> Arc<DeliveryLog> {
    let mut r = Retention::new(Duration::from_secs(3600), max_size);
    r.segment_size = 3 * 330;
    DeliveryLog::open(dir, r).unwrap()
}

#[test]
fn newest_first_filtered_by_user_with_a_limit() {
    let dir = tempfile::tempdir().unwrap();
    let log = small_log(dir.path(), 1 << 20);
    let mut w = Writer::new(log.clone());
    let now = SystemTime::now();
    for i in 0..10 {
        let user = if i % 2 == 0 { "even" } else { "odd" };
        w.append(&entry(&format!("m{i}"), user, now), now).unwrap();
    }
    w.flush().unwrap();
    assert!(
        segments::list(dir.path()).unwrap().len() >= 3,
        "rotated by size"
    );
    assert_eq!(ids(&log.query(None, 4)), ["m9", "m8", "m7", "m6"]);
    assert_eq!(ids(&log.query(Some("even"), 3)), ["m8", "m6", "m4"]);
    assert_eq!(
        ids(&log.query(Some("odd"), 100)),
        ["m9", "m7", "m5", "m3", "m1"]
    );
    assert!(log.query(Some("nobody"), 10).is_empty());
    // Asked again, the index skips the segments without the user: same answer.
    assert_eq!(ids(&log.query(Some("even"), 3)), ["m8", "m6", "m4"]);
}

#[test]
fn retention_by_size_removes_the_oldest_segments() {
    let dir = tempfile::tempdir().unwrap();
    let log = small_log(dir.path(), 4 * 330);
    let mut w = Writer::new(log.clone());
    let now = SystemTime::now();
    for i in 0..30 {
        w.append(&entry(&format!("m{i}"), "u", now), now).unwrap();
    }
    w.flush().unwrap();
    w.tick(now).unwrap();
    let segs = segments::list(dir.path()).unwrap();
    let total: u64 = segs.iter().map(|s| s.size).sum();
    // The closed segments fit in max_size; the one being written comes on top.
    assert!(total <= 4 * 330 + log.retention().segment_size, "{total}");
    let kept = log.query(None, 100);
    assert_eq!(kept.first().map(|e| e.id.as_str()), Some("m29"));
    assert!(
        kept.len() < 30 && !ids(&kept).contains(&"m0"),
        "{:?}",
        ids(&kept)
    );
}

#[test]
fn retention_by_age_removes_old_segments_and_hides_old_entries() {
    let dir = tempfile::tempdir().unwrap();
    let log = small_log(dir.path(), 1 << 20);
    let mut w = Writer::new(log.clone());
    let now = SystemTime::now();
    let old = now - Duration::from_secs(7200);
    for i in 0..3 {
        w.append(&entry(&format!("old{i}"), "u", old), old).unwrap();
    }
    // Written at `old`: the next append (at `now`) closes it for its age.
    w.append(&entry("new", "u", now), now).unwrap();
    w.flush().unwrap();
    let first = segments::list(dir.path()).unwrap()[0].name.clone();
    File::options()
        .write(true)
        .open(dir.path().join(&first))
        .unwrap()
        .set_modified(old)
        .unwrap();
    assert_eq!(
        ids(&log.query(None, 10)),
        ["new"],
        "old entries are not returned"
    );
    w.tick(now).unwrap();
    let names: Vec<String> = segments::list(dir.path())
        .unwrap()
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert!(
        !names.contains(&first),
        "the old segment is removed: {names:?}"
    );
    assert_eq!(names.len(), 1);
}

#[test]
fn the_log_survives_a_reopen_and_skips_a_torn_last_line() {
    let dir = tempfile::tempdir().unwrap();
    let now = SystemTime::now();
    {
        let log = small_log(dir.path(), 1 << 20);
        let mut w = Writer::new(log);
        w.append(&entry("before", "u", now), now).unwrap();
        w.flush().unwrap();
    }
    // A crash in the middle of the next line.
    let seg = segments::list(dir.path()).unwrap()[0].name.clone();
    let mut f = File::options()
        .append(true)
        .open(dir.path().join(&seg))
        .unwrap();
    f.write_all(br#"{"id":"torn","time":"2026-"#).unwrap();
    drop(f);
    let log = small_log(dir.path(), 1 << 20);
    assert_eq!(ids(&log.query(Some("u"), 10)), ["before"]);
    let mut w = Writer::new(log.clone());
    w.append(&entry("after", "u", now), now).unwrap();
    w.flush().unwrap();
    assert_eq!(ids(&log.query(None, 10)), ["after", "before"]);
    assert_eq!(
        segments::list(dir.path()).unwrap().len(),
        2,
        "a new run writes a new segment"
    );
}

#[test]
fn the_writer_thread_writes_in_order_and_flushes_on_demand() {
    let dir = tempfile::tempdir().unwrap();
    let journal = Journal::start(small_log(dir.path(), 1 << 20)).unwrap();
    for i in 0..50 {
        journal.record(entry(&format!("m{i}"), "u", SystemTime::now()));
    }
    assert!(journal.flush_blocking(Duration::from_secs(5)));
    let got = journal.log().query(None, 1000);
    assert_eq!(got.len(), 50);
    assert_eq!(got[0].id, "m49");
    assert_eq!(got[49].id, "m0");
}

#[test]
fn segment_files_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let sub = dir.path().join("log");
    let log = small_log(&sub, 1 << 20);
    let mut w = Writer::new(log);
    w.append(
        &entry("a", "u", UNIX_EPOCH + Duration::from_secs(1)),
        SystemTime::now(),
    )
    .unwrap();
    w.flush().unwrap();
    let seg = segments::list(&sub).unwrap()[0].name.clone();
    let mode = std::fs::metadata(sub.join(seg))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let dmode = std::fs::metadata(&sub).unwrap().permissions().mode();
    assert_eq!(dmode & 0o777, 0o700);
}

use std::fs::File;
use std::io::Write;
