//! Writing the delivery log: [`Writer`] appends entries to the current segment and
//! rotates and prunes; [`Journal`] runs it on a thread of its own behind a bounded
//! channel, so that nobody who records an entry ever waits for the disk.

use super::{DeliveryLog, Entry, segments};
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel};
use std::time::{Duration, SystemTime};
use tracing::{error, warn};

/// Entries waiting for the writer thread; beyond this, new ones are dropped (and
/// counted in `postern_delivery_log_dropped_total`).
const BACKLOG: usize = 16 * 1024;

/// How often the writer thread checks retention and the segment's age when idle.
const TICK: Duration = Duration::from_secs(30);

struct Current {
    name: String,
    file: BufWriter<File>,
    size: u64,
    opened: SystemTime,
}

/// Appends to the log's current segment. A new writer always opens a new segment:
/// appending to the last one of a previous run could glue an entry to a line torn
/// by a crash, and lose it.
pub struct Writer {
    log: Arc<DeliveryLog>,
    current: Option<Current>,
}

impl Writer {
    pub fn new(log: Arc<DeliveryLog>) -> Writer {
        Writer { log, current: None }
    }

    /// Appends one entry (buffered: [`Writer::flush`] hands it to the kernel).
    pub fn append(&mut self, e: &Entry, now: SystemTime) -> io::Result<()> {
        let mut line = serde_json::to_vec(e).map_err(io::Error::other)?;
        line.push(b'\n');
        let r = self.log.retention;
        let full = self.current.as_ref().is_some_and(|c| {
            c.size > 0
                && (c.size + line.len() as u64 > r.segment_size
                    || now.duration_since(c.opened).unwrap_or_default() >= r.segment_age)
        });
        if full {
            self.rotate(now)?;
        }
        let current = match &mut self.current {
            Some(c) => c,
            None => self.current.insert(self.open(now)?),
        };
        current.file.write_all(&line)?;
        current.size += line.len() as u64;
        self.log.note_user(&current.name, &e.user);
        Ok(())
    }

    /// Hands what is buffered to the kernel (not `fsync`: a crash of the host may
    /// lose the last moments of the log, never the mail).
    pub fn flush(&mut self) -> io::Result<()> {
        match &mut self.current {
            Some(c) => c.file.flush(),
            None => Ok(()),
        }
    }

    /// Closes a segment that is old enough, and removes what retention says must go.
    pub fn tick(&mut self, now: SystemTime) -> io::Result<()> {
        let aged = self.current.as_ref().is_some_and(|c| {
            now.duration_since(c.opened).unwrap_or_default() >= self.log.retention.segment_age
        });
        if aged {
            self.rotate(now)?;
        }
        let active = self.current.as_ref().map(|c| c.name.clone());
        self.log.enforce_retention(active.as_deref(), now)?;
        Ok(())
    }

    fn rotate(&mut self, now: SystemTime) -> io::Result<()> {
        if let Some(mut c) = self.current.take() {
            c.file.flush()?;
        }
        self.log.enforce_retention(None, now)?;
        Ok(())
    }

    fn open(&self, now: SystemTime) -> io::Result<Current> {
        // Two segments opened in the same millisecond: the next name is free.
        let mut t = now;
        loop {
            let name = segments::name_at(t);
            match crate::private_fs::create_new(&self.log.dir.join(&name)) {
                Ok(file) => {
                    return Ok(Current {
                        name,
                        file: BufWriter::with_capacity(64 * 1024, file),
                        size: 0,
                        opened: now,
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    t += Duration::from_millis(1);
                }
                Err(e) => return Err(e),
            }
        }
    }
}

enum Command {
    Append(Box<Entry>),
    Flush(std::sync::mpsc::Sender<()>),
}

/// The handle to the writer thread: entries sent here are written in order, in
/// the background.
#[derive(Clone)]
pub struct Journal {
    log: Arc<DeliveryLog>,
    tx: SyncSender<Command>,
}

impl Journal {
    /// Starts the writer thread for `log`.
    pub fn start(log: Arc<DeliveryLog>) -> io::Result<Journal> {
        let (tx, rx) = sync_channel(BACKLOG);
        let writer = Writer::new(log.clone());
        std::thread::Builder::new()
            .name("delivery-log".into())
            .spawn(move || run(writer, rx))?;
        Ok(Journal { log, tx })
    }

    /// The log, for queries.
    pub fn log(&self) -> &Arc<DeliveryLog> {
        &self.log
    }

    /// Queues an entry for writing; never waits. A full backlog drops it (counted).
    pub fn record(&self, e: Entry) {
        match self.tx.try_send(Command::Append(Box::new(e))) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                metrics::counter!("postern_delivery_log_dropped_total").increment(1);
            }
            Err(TrySendError::Disconnected(_)) => {
                metrics::counter!("postern_delivery_log_dropped_total").increment(1);
            }
        }
    }

    /// Waits (blocking, at most `within`) until everything recorded so far is in
    /// the file: at shutdown, and in tests.
    pub fn flush_blocking(&self, within: Duration) -> bool {
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        if self.tx.send(Command::Flush(done_tx)).is_err() {
            return false;
        }
        done_rx.recv_timeout(within).is_ok()
    }
}

/// The writer thread: writes what comes, flushes when nothing more is waiting,
/// and looks after retention when idle.
fn run(mut w: Writer, rx: Receiver<Command>) {
    let mut last_tick = SystemTime::now();
    loop {
        let first = match rx.recv_timeout(TICK) {
            Ok(c) => c,
            Err(RecvTimeoutError::Timeout) => {
                tick(&mut w, &mut last_tick);
                continue;
            }
            Err(RecvTimeoutError::Disconnected) => {
                let _ = w.flush();
                return;
            }
        };
        let mut next = Some(first);
        while let Some(c) = next {
            match c {
                Command::Append(e) => {
                    if let Err(e) = w.append(&e, SystemTime::now()) {
                        error!(error = %e, "cannot write the delivery log; entry lost");
                        metrics::counter!("postern_delivery_log_dropped_total").increment(1);
                    }
                }
                Command::Flush(done) => {
                    if let Err(e) = w.flush() {
                        error!(error = %e, "cannot write the delivery log");
                    }
                    let _ = done.send(());
                }
            }
            next = rx.try_recv().ok();
        }
        if let Err(e) = w.flush() {
            error!(error = %e, "cannot write the delivery log");
        }
        if last_tick.elapsed().unwrap_or_default() >= TICK {
            tick(&mut w, &mut last_tick);
        }
    }
}

fn tick(w: &mut Writer, last: &mut SystemTime) {
    *last = SystemTime::now();
    if let Err(e) = w.tick(*last) {
        warn!(error = %e, "delivery log retention failed");
    }
}
