//! The durable spool on disk.
//!
//! ```text
//! <spool_directory>/tmp/<id>.msg     being received
//! <spool_directory>/queue/<id>.msg   the message (unstuffed, Received header first),
//!                                    for messages up to 256 KiB preceded by its envelope
//! <spool_directory>/queue/<id>.env   its envelope and delivery state (YAML), when the
//!                                    message is larger or after a delivery attempt
//! ```
//!
//! A message of up to 256 KiB (nearly all mail) is held in memory while it arrives
//! and becomes one file: the envelope as a header block (`POSTERN-ENVELOPE
//! <length>\n<yaml>`; the format is [`super::envelope`]'s), then the message.
//! [`Spool::commit`] writes it into a recycled file (or a new one in `tmp/`), fsyncs
//! it, renames it into `queue/` and fsyncs the directory before the client is
//! answered 250: at most one file created per message, which matters because
//! creating files is what a busy spool spends its time on. A larger message (or one
//! arriving when the memory budget for held messages is spent) is streamed to `tmp/`
//! while it arrives, so its envelope goes to a `.env` file (temporary file, fsync,
//! rename, directory fsync) after the message is renamed.
//!
//! A message is queued exactly when `queue/<id>.msg` exists and has an envelope:
//! its `.env`, or else its own header block. A `.env` always takes precedence (it
//! carries the delivery state). A crash at any instant leaves a complete queued message
//! or none: a large `.msg` without `.env`, or a `.env` without `.msg`, was never
//! acknowledged or was already delivered, and is removed at the next start. Removal
//! deletes the `.msg` first.

use super::envelope::{decode, embed, encode, split_embedded};
use crate::lock::MutexExt;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use super::envelope::Envelope;
use crate::upstream::holding::Held;

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Whether `id` can name a spool file (so `queue delete ../x` cannot escape).
pub fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A new queue id: time, process and a counter, so ids sort by age and never repeat.
pub fn new_id() -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "{:013X}{:05X}{:04X}",
        nanos / 1000 % (1 << 52),
        std::process::id() & 0xfffff,
        n & 0xffff
    )
}

mod dirsync;

/// Opens a file and fsyncs it; used for directories.
fn sync_dir(dir: &Path) -> io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// The largest message held in memory until commit, which then writes, fsyncs and
/// queues it as one file (envelope in front, into a recycled file) in one trip to
/// the blocking pool. With 64 KiB, a 100 KB message took the two-file path: two
/// new inodes, two renames, three fsyncs, two trips. At 256 KiB, on 2 busy cores
/// alternating the two builds, 100 KB queue throughput rose from about 230 to 390
/// msg/s (many per connection; CPU per message 3.5 → 2.55 ms) and from about 165 to
/// 300 msg/s (one per connection; 4.2 → 3.0 ms). The memory is taken from the budget for
/// messages held whole ([`crate::upstream::holding`]); when that is spent, the
/// message is written to disk as it arrives instead. Delivery reads messages up to
/// this size whole ([`super::attempt`]).
pub(crate) const INLINE: usize = 256 * 1024;

/// Bytes gathered before each write of a message going to disk as it arrives.
const SPILL: usize = 64 * 1024;

/// A message being received; held in memory (see [`INLINE`]) or written into
/// `tmp/`, where it is removed if dropped before commit.
pub struct MessageWriter {
    id: String,
    path: PathBuf,
    /// Received bytes not yet written.
    buf: Vec<u8>,
    /// Whether the message is still held whole in memory.
    inline: bool,
    /// The memory budget taken by `buf` while `inline`.
    held: Held,
    /// The file in `tmp/`, once the message is no longer held in memory.
    file: Option<std::fs::File>,
    pub written: u64,
}

impl MessageWriter {
    pub fn id(&self) -> &str {
        &self.id
    }

    pub async fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.buf.extend_from_slice(bytes);
        self.written += bytes.len() as u64;
        if self.inline && (self.buf.len() > INLINE || !self.held.grow(bytes.len())) {
            self.inline = false;
        }
        if !self.inline && self.buf.len() >= SPILL {
            self.spill().await?;
            self.held.release();
        }
        Ok(())
    }

    /// Writes what is buffered to the file (creating it), off the async runtime.
    async fn spill(&mut self) -> io::Result<()> {
        let buf = std::mem::replace(&mut self.buf, Vec::with_capacity(SPILL));
        let file = self.file.take();
        let path = self.path.clone();
        let file = tokio::task::spawn_blocking(move || {
            let mut file = match file {
                Some(f) => f,
                None => create_new(&path)?,
            };
            file.write_all(&buf)?;
            io::Result::Ok(file)
        })
        .await
        .map_err(io::Error::other)??;
        self.file = Some(file);
        Ok(())
    }
}

fn create_new(path: &Path) -> io::Result<std::fs::File> {
    crate::private_fs::create_new(path)
}

impl Drop for MessageWriter {
    fn drop(&mut self) {
        if self.file.is_some() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// The spool directory.
#[derive(Debug, Clone)]
pub struct Spool {
    queue: PathBuf,
    tmp: PathBuf,
    /// Files of delivered messages, emptied and kept for reuse: writing a new message
    /// into one avoids allocating an inode, the largest cost left in the profile (on
    /// this machine, end-to-end queue throughput rose from about 830 to 1,320 msg/s
    /// under sustained load).
    free_dir: PathBuf,
    free: std::sync::Arc<std::sync::Mutex<Vec<PathBuf>>>,
    /// Only a spool opened by the server recycles files.
    recycle: bool,
    /// Fsyncs of `queue/`, shared by the commits and removals that arrive together.
    queue_sync: std::sync::Arc<dirsync::DirSync>,
}

/// What [`Spool::take_out`] did with a message file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TakenOut {
    /// Moved to `free/` for reuse.
    Kept,
    /// Unlinked.
    Removed,
    /// It was not there.
    Absent,
}

/// Most delivered files kept for reuse.
const MAX_FREE: usize = 1024;

impl Spool {
    /// Opens (creating if needed) the spool and clears `tmp/`: anything there was
    /// never answered 250.
    pub fn open(dir: &Path) -> io::Result<Spool> {
        let mut spool = Spool::at(dir);
        spool.recycle = true;
        // Postern's own folders are 0700 (and the spool itself when new), whatever
        // the umask: they hold mail.
        for dir in [&spool.queue, &spool.tmp, &spool.free_dir] {
            crate::private_fs::own_dir(dir)?;
        }
        for e in std::fs::read_dir(&spool.tmp)? {
            let _ = std::fs::remove_file(e?.path());
        }
        // Spare files from before a restart are not reused: after a crash in the
        // middle of a rename, a file system without a journal could leave one also
        // linked into queue/, and reusing it would overwrite a queued message.
        for e in std::fs::read_dir(&spool.free_dir)? {
            let _ = std::fs::remove_file(e?.path());
        }
        Ok(spool)
    }

    /// The spool at `dir` without touching it (for `queue list` on a stopped server).
    pub fn at(dir: &Path) -> Spool {
        Spool {
            queue: dir.join("queue"),
            tmp: dir.join("tmp"),
            free_dir: dir.join("free"),
            free: Default::default(),
            recycle: false,
            queue_sync: std::sync::Arc::new(dirsync::DirSync::new(dir.join("queue"))),
        }
    }

    pub fn message_path(&self, id: &str) -> PathBuf {
        self.queue.join(format!("{id}.msg"))
    }

    fn envelope_path(&self, id: &str) -> PathBuf {
        self.queue.join(format!("{id}.env"))
    }

    /// Starts receiving a message. Nothing is written yet, but a spool that is
    /// plainly unusable is reported now, before the client sends the message.
    pub async fn writer(&self) -> io::Result<MessageWriter> {
        if !std::fs::metadata(&self.tmp)?.is_dir() {
            return Err(io::Error::other(format!(
                "{} is not a directory",
                self.tmp.display()
            )));
        }
        let id = new_id();
        let path = self.tmp.join(format!("{id}.msg"));
        Ok(MessageWriter {
            id,
            path,
            buf: Vec::with_capacity(4096),
            inline: true,
            held: Held::default(),
            file: None,
            written: 0,
        })
    }

    /// Makes a received message durable and queued; only then may the client hear
    /// 250. One trip to the blocking pool. A message still in memory is written with
    /// its envelope in front, fsynced, renamed into `queue/`, and the directory
    /// fsynced; a larger one gets the rest written, is fsynced and renamed, and its
    /// envelope goes to a `.env` (fsynced, renamed, directory fsynced).
    pub async fn commit(&self, mut w: MessageWriter, env: &Envelope) -> io::Result<()> {
        let spool = self.clone();
        let env = env.clone();
        let tmp_path = w.path.clone();
        let buf = std::mem::take(&mut w.buf);
        let file = w.file.take();
        let reused = if file.is_none() {
            self.free.locked().pop()
        } else {
            None
        };
        tokio::task::spawn_blocking(move || {
            let inline = file.is_none();
            let tmp_path = reused.clone().unwrap_or(tmp_path);
            let durable = (|| {
                let file = match file {
                    Some(mut f) => {
                        f.write_all(&buf)?;
                        f
                    }
                    None => {
                        let mut f = match &reused {
                            Some(p) => std::fs::OpenOptions::new().write(true).open(p)?,
                            None => create_new(&tmp_path)?,
                        };
                        f.write_all(&embed(&env, &buf).map_err(io::Error::other)?)?;
                        f
                    }
                };
                file.sync_all()
            })();
            if let Err(e) = durable {
                let _ = std::fs::remove_file(&tmp_path);
                return Err(e);
            }
            let msg = spool.message_path(&env.id);
            std::fs::rename(&tmp_path, &msg).inspect_err(|_| {
                let _ = std::fs::remove_file(&tmp_path);
            })?;
            if inline {
                return spool.sync_queue().inspect_err(|_| {
                    let _ = std::fs::remove_file(&msg);
                });
            }
            if let Err(e) = spool.write_envelope(&env) {
                let _ = std::fs::remove_file(&msg);
                return Err(e);
            }
            Ok(())
        })
        .await
        .map_err(io::Error::other)?
    }

    /// Writes a whole new message at once (bounces).
    pub fn store(&self, env: &Envelope, content: &[u8]) -> io::Result<()> {
        let tmp = self.tmp.join(format!("{}.msg", env.id));
        let mut f = crate::private_fs::create(&tmp)?;
        f.write_all(&embed(env, content).map_err(io::Error::other)?)?;
        f.sync_all()?;
        std::fs::rename(&tmp, self.message_path(&env.id))?;
        self.sync_queue()
    }

    /// Atomically writes (or replaces) an envelope, then fsyncs the directory.
    pub fn write_envelope(&self, env: &Envelope) -> io::Result<()> {
        let text = encode(env).map_err(io::Error::other)?;
        let tmp = self.tmp.join(format!("{}.env", env.id));
        let mut f = crate::private_fs::create(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, self.envelope_path(&env.id))?;
        self.sync_queue()
    }

    /// Reads one envelope; `None` if it is gone (delivered or deleted).
    pub fn read_envelope(&self, id: &str) -> io::Result<Option<Envelope>> {
        let bad = |what: &str, e: serde_yaml::Error| {
            io::Error::new(io::ErrorKind::InvalidData, format!("{id}{what}: {e}"))
        };
        match std::fs::read_to_string(self.envelope_path(id)) {
            Ok(text) => {
                return decode(text.as_bytes())
                    .map(Some)
                    .map_err(|e| bad(".env", e));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        // No .env: the envelope is the message file's header block, if it has one.
        let bytes = match std::fs::read(self.message_path(id)) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        match split_embedded(&bytes).0 {
            Some(yaml) => decode(yaml).map(Some).map_err(|e| bad(".msg envelope", e)),
            None => Ok(None),
        }
    }

    /// Removes a delivered (or bounced) message: the message file first, so a crash
    /// in between leaves only a stray `.env`, removed at the next start. In a server's
    /// spool the file is emptied and kept for reuse.
    pub fn remove(&self, id: &str) -> io::Result<bool> {
        self.remove_inner(id, self.recycle)
    }

    /// Removes a message whose file someone may still be reading (an operator's
    /// delete during a delivery): unlinked, never recycled, so an open reader keeps
    /// seeing this message and only this message.
    pub fn discard(&self, id: &str) -> io::Result<bool> {
        self.remove_inner(id, false)
    }

    fn remove_inner(&self, id: &str, recycle: bool) -> io::Result<bool> {
        let existed = self.unlink_inner(id, recycle)?;
        self.sync_queue()?;
        Ok(existed)
    }

    /// Makes removals and renames in `queue/` made before this call durable: one
    /// directory fsync, shared with the callers that arrive at about the same time
    /// (group commit, see [`dirsync`]).
    pub fn sync_queue(&self) -> io::Result<()> {
        self.queue_sync.sync()
    }

    /// Removes an envelope written back after its message was deleted.
    pub fn remove_envelope(&self, id: &str) -> io::Result<()> {
        match std::fs::remove_file(self.envelope_path(id)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    fn unlink_inner(&self, id: &str, recycle: bool) -> io::Result<bool> {
        let taken = self.take_out_inner(id, recycle)?;
        self.tidy(id, taken);
        Ok(taken != TakenOut::Absent)
    }

    /// The one step of a removal that ends the message: its file leaves `queue/`
    /// (a rename into `free/`, or an unlink). A single metadata operation with no
    /// fsync, so the delivery task does it the moment the smarthost says 250;
    /// [`Spool::tidy`] and the directory fsync follow elsewhere.
    pub fn take_out(&self, id: &str) -> io::Result<TakenOut> {
        self.take_out_inner(id, self.recycle)
    }

    fn take_out_inner(&self, id: &str, recycle: bool) -> io::Result<TakenOut> {
        let keep = recycle && self.free.locked().len() < MAX_FREE;
        let gone = if keep {
            std::fs::rename(self.message_path(id), self.free_dir.join(id))
        } else {
            std::fs::remove_file(self.message_path(id))
        };
        match gone {
            Ok(()) if keep => Ok(TakenOut::Kept),
            Ok(()) => Ok(TakenOut::Removed),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(TakenOut::Absent),
            Err(e) => Err(e),
        }
    }

    /// The rest of a removal after [`Spool::take_out`]: a kept file is emptied at
    /// once (no message content lingers in `free/`) and offered for reuse, and the
    /// `.env` goes.
    pub fn tidy(&self, id: &str, taken: TakenOut) {
        if taken == TakenOut::Kept {
            let spare = self.free_dir.join(id);
            match std::fs::OpenOptions::new()
                .write(true)
                .truncate(true)
                .open(&spare)
            {
                Ok(_) => self.free.locked().push(spare),
                Err(_) => {
                    let _ = std::fs::remove_file(&spare);
                }
            }
        }
        let _ = std::fs::remove_file(self.envelope_path(id));
    }

    /// Every queued envelope, oldest first. With `clean`, orphan bodies are removed
    /// (only the server does that; `queue list` only reads).
    pub fn load_all(&self, clean: bool) -> io::Result<Vec<Envelope>> {
        let mut envs = Vec::new();
        let mut messages = std::collections::HashSet::new();
        let mut states = std::collections::HashSet::new();
        for e in std::fs::read_dir(&self.queue)? {
            let path = e?.path();
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            if let Some(id) = name.strip_suffix(".env") {
                states.insert(id.to_string());
            } else if let Some(id) = name.strip_suffix(".msg") {
                messages.insert(id.to_string());
            }
        }
        for id in &messages {
            match self.read_envelope(id) {
                Ok(Some(env)) => envs.push(env),
                Ok(None) => {
                    // A large message whose envelope was never written: never acked.
                    if clean {
                        tracing::info!(id = %id, "removing an incomplete spool file (never acknowledged)");
                        let _ = std::fs::remove_file(self.message_path(id));
                    }
                }
                Err(e) => tracing::error!(error = %e, "unreadable envelope left in the spool"),
            }
        }
        if clean {
            for id in states.difference(&messages) {
                // Its message was removed (delivered or deleted) just before a crash.
                tracing::info!(id = %id, "removing a leftover envelope");
                let _ = std::fs::remove_file(self.envelope_path(id));
            }
        }
        envs.sort_by(|a, b| (a.created, &a.id).cmp(&(b.created, &b.id)));
        Ok(envs)
    }
}

#[cfg(test)]
mod tests;
