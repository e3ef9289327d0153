//! Unit tests of `store.rs`.

use super::*;
use crate::spool::envelope::{MAGIC, RcptState, body_of};

fn env(id: &str) -> Envelope {
    Envelope::sample(id)
}

#[tokio::test]
async fn commit_load_update_remove() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path()).unwrap();
    let mut w = spool.writer().await.unwrap();
    w.write(b"hello\r\n").await.unwrap();
    let id = w.id().to_string();
    spool.commit(w, &env(&id)).await.unwrap();
    // A small message is one file: its envelope in front, then the message.
    let file = std::fs::read(spool.message_path(&id)).unwrap();
    assert!(file.starts_with(MAGIC));
    assert_eq!(body_of(&file), b"hello\r\n");
    assert!(!dir.path().join(format!("queue/{id}.env")).exists());
    let all = spool.load_all(true).unwrap();
    assert_eq!(all, vec![env(&id)]);
    let mut e = env(&id);
    e.attempts = 3;
    e.rcpts[0].state = RcptState::Delivered;
    spool.write_envelope(&e).unwrap();
    assert_eq!(spool.read_envelope(&id).unwrap().unwrap().attempts, 3);
    // The .env takes precedence over the embedded envelope.
    assert_eq!(spool.load_all(false).unwrap()[0].attempts, 3);
    assert!(spool.remove(&id).unwrap());
    assert!(!spool.remove(&id).unwrap());
    assert!(spool.load_all(true).unwrap().is_empty());
    assert!(!spool.message_path(&id).exists());
}

#[tokio::test]
async fn delivered_files_are_emptied_and_reused() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path()).unwrap();
    let free = |d: &Path| std::fs::read_dir(d.join("free")).unwrap().count();
    let mut w = spool.writer().await.unwrap();
    w.write(b"first secret\r\n").await.unwrap();
    let first = w.id().to_string();
    spool.commit(w, &env(&first)).await.unwrap();
    let ino = |p: &Path| std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(p).unwrap());
    let inode = ino(&spool.message_path(&first));
    assert!(spool.remove(&first).unwrap());
    // Kept, but empty: nothing of the message lingers.
    assert_eq!(free(dir.path()), 1);
    let spare = dir.path().join("free").join(&first);
    assert_eq!(std::fs::metadata(&spare).unwrap().len(), 0);
    // The next small message is written into it.
    let mut w = spool.writer().await.unwrap();
    w.write(b"second\r\n").await.unwrap();
    let second = w.id().to_string();
    spool.commit(w, &env(&second)).await.unwrap();
    assert_eq!(free(dir.path()), 0);
    assert_eq!(ino(&spool.message_path(&second)), inode);
    let file = std::fs::read(spool.message_path(&second)).unwrap();
    assert_eq!(body_of(&file), b"second\r\n");
    assert_eq!(spool.load_all(true).unwrap(), vec![env(&second)]);
    // An operator's delete never recycles (a delivery may still be reading).
    let mut w = spool.writer().await.unwrap();
    w.write(b"third\r\n").await.unwrap();
    let third = w.id().to_string();
    spool.commit(w, &env(&third)).await.unwrap();
    assert!(spool.discard(&third).unwrap());
    assert_eq!(free(dir.path()), 0);
    // A spool opened for reading (queue tools) deletes outright.
    assert!(Spool::at(dir.path()).remove(&second).unwrap());
    assert_eq!(free(dir.path()), 0);
    // Spares left by an earlier run are not trusted after a restart.
    std::fs::write(dir.path().join("free/old"), "").unwrap();
    let _ = Spool::open(dir.path()).unwrap();
    assert_eq!(free(dir.path()), 0);
}

#[tokio::test]
async fn large_messages_and_crash_leftovers() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path()).unwrap();
    // Over the inline size: streamed to tmp/, then .msg (no header) plus .env.
    let mut w = spool.writer().await.unwrap();
    let line = [b'x'; 998];
    for _ in 0..300 {
        w.write(&line).await.unwrap();
        w.write(b"\r\n").await.unwrap();
    }
    assert!(w.file.is_some(), "written to tmp/ as it arrived");
    let id = w.id().to_string();
    spool.commit(w, &env(&id)).await.unwrap();
    let file = std::fs::read(spool.message_path(&id)).unwrap();
    assert_eq!(file.len(), 300_000);
    assert_eq!(body_of(&file).len(), 300_000);
    assert!(dir.path().join(format!("queue/{id}.env")).exists());
    assert_eq!(spool.load_all(true).unwrap(), vec![env(&id)]);
    // A crash between renaming a large message and writing its envelope: the
    // lone body is removed at the next start, never delivered.
    std::fs::remove_file(dir.path().join(format!("queue/{id}.env"))).unwrap();
    assert!(spool.load_all(true).unwrap().is_empty());
    assert!(!spool.message_path(&id).exists());
    // A crash between removing a delivered message and its .env: the .env goes.
    std::fs::write(dir.path().join("queue/ABC.env"), "x").unwrap();
    assert!(spool.load_all(true).unwrap().is_empty());
    assert!(!dir.path().join("queue/ABC.env").exists());
}

/// Writes `lines` lines of 1,000 bytes.
async fn write_lines(w: &mut MessageWriter, lines: usize) {
    let line = [b'y'; 998];
    for _ in 0..lines {
        w.write(&line).await.unwrap();
        w.write(b"\r\n").await.unwrap();
    }
}

#[tokio::test]
async fn messages_up_to_the_inline_size_are_one_file_from_the_memory_budget() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path()).unwrap();
    // 100 KB: held in memory (taking its share of the budget), one file at commit.
    let budget = std::sync::Arc::new(tokio::sync::Semaphore::new(200_000));
    let mut w = spool.writer().await.unwrap();
    w.held = Held::from(budget.clone());
    write_lines(&mut w, 100).await;
    assert!(w.file.is_none());
    assert_eq!(budget.available_permits(), 100_000);
    let id = w.id().to_string();
    spool.commit(w, &env(&id)).await.unwrap();
    assert_eq!(budget.available_permits(), 200_000, "given back at commit");
    let file = std::fs::read(spool.message_path(&id)).unwrap();
    assert!(file.starts_with(MAGIC));
    assert_eq!(body_of(&file).len(), 100_000);
    assert!(!dir.path().join(format!("queue/{id}.env")).exists());
    // When the budget cannot spare the memory, the message goes to disk as it
    // arrives (and gives back what it held): the two-file path, never a refusal.
    let mut w = spool.writer().await.unwrap();
    w.held = Held::from(std::sync::Arc::new(tokio::sync::Semaphore::new(50_000)));
    write_lines(&mut w, 100).await;
    assert!(w.file.is_some());
    let second = w.id().to_string();
    spool.commit(w, &env(&second)).await.unwrap();
    let file = std::fs::read(spool.message_path(&second)).unwrap();
    assert_eq!(body_of(&file).len(), 100_000);
    assert!(dir.path().join(format!("queue/{second}.env")).exists());
    let mut all = spool.load_all(true).unwrap();
    all.sort_by(|a, b| a.id.cmp(&b.id));
    assert_eq!(all, vec![env(&id), env(&second)]);
}

#[tokio::test]
async fn abandoned_and_orphaned_files_never_become_queued() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path()).unwrap();
    // Dropped before commit: the temporary file goes away.
    let mut w = spool.writer().await.unwrap();
    w.write(b"partial").await.unwrap();
    drop(w);
    assert_eq!(
        std::fs::read_dir(dir.path().join("tmp")).unwrap().count(),
        0
    );
    // A body without an envelope (crash between the two renames) is cleaned up.
    std::fs::write(spool.message_path("ORPHAN"), b"x").unwrap();
    std::fs::write(dir.path().join("tmp/LEFTOVER.msg"), b"x").unwrap();
    let spool = Spool::open(dir.path()).unwrap();
    assert!(spool.load_all(false).unwrap().is_empty());
    assert!(
        spool.message_path("ORPHAN").exists(),
        "queue list does not clean"
    );
    spool.load_all(true).unwrap();
    assert!(!spool.message_path("ORPHAN").exists());
    assert_eq!(
        std::fs::read_dir(dir.path().join("tmp")).unwrap().count(),
        0
    );
}

/// Files as release 1 wrote them (one small message with its envelope in front,
/// one large message with a `.env`) load as they did.
#[test]
fn a_release_1_spool_loads() {
    let dir = tempfile::tempdir().unwrap();
    let queue = dir.path().join("queue");
    std::fs::create_dir_all(&queue).unwrap();
    let yaml = |id: &str, created: u32| {
        format!(
            "id: {id}\nfrom: a@b.example\nrcpts:\n- address: c@d.example\n  state: pending\n  last_reply: null\nuser: u\ncreated: {created}\nattempts: 0\nnext_attempt: 0\nlast_error: null\nsmtputf8: false\neight_bit: false\nsize: 5\nwarned: false\n"
        )
    };
    let small = yaml("SMALL", 1);
    let file = format!("POSTERN-ENVELOPE {}\n{small}hello\r\n", small.len());
    std::fs::write(queue.join("SMALL.msg"), file).unwrap();
    std::fs::write(queue.join("LARGE.msg"), b"big\r\n").unwrap();
    std::fs::write(queue.join("LARGE.env"), yaml("LARGE", 2)).unwrap();
    let spool = Spool::open(dir.path()).unwrap();
    let mut large = env("LARGE");
    large.created = 2;
    assert_eq!(spool.load_all(true).unwrap(), vec![env("SMALL"), large]);
    let file = std::fs::read(spool.message_path("SMALL")).unwrap();
    assert_eq!(body_of(&file), b"hello\r\n");
}

#[test]
fn ids() {
    let a = new_id();
    let b = new_id();
    assert_ne!(a, b);
    assert!(valid_id(&a));
    assert!(!valid_id("../etc/passwd"));
    assert!(!valid_id(""));
    assert!(!valid_id("a/b"));
}
