//! Buffered SMTP framing over any stream: command lines in, replies out.
//!
//! Replies are buffered and flushed only when the session is about to wait for the
//! client, so a pipelined batch of commands gets its replies in one write
//! (RFC 2920), and no reply is ever held back while the client waits.
//!
//! Every flush is bounded by the write timeout, here and not at its callers, so no
//! caller can forget it: a client that stops reading cannot hold its connection
//! slot. A flush that times out or fails breaks the stream for good, and every later
//! read says [`ReadLine::Closed`], so the session ends whatever its caller does next.

use crate::proto::line::{Frame, LineError, next_line};
use crate::proto::reply::Reply;
use bytes::{Buf, BytesMut};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::{Instant, timeout, timeout_at};
use tracing::info;

/// What reading a line gave, as plain outcomes rather than errors.
#[derive(Debug)]
pub enum ReadLine {
    Line(BytesMut),
    Bad(LineError),
    TimedOut,
    Closed,
}

/// What reading a chunk of DATA gave.
#[derive(Debug)]
pub enum ReadChunk {
    /// New bytes are in the buffer: see [`SmtpStream::buffered`].
    Data,
    TimedOut,
    Closed,
}

/// Read buffer size per session.
const READ_CHUNK: usize = 16 * 1024;

pub struct SmtpStream<S> {
    io: S,
    rbuf: BytesMut,
    wbuf: Vec<u8>,
    /// Dropping the rest of an over-long line.
    discarding: bool,
    /// How long one flush may take.
    write_timeout: Duration,
    /// A flush failed or timed out: nothing more is read or written.
    broken: bool,
}

impl<S: AsyncRead + AsyncWrite + Unpin> SmtpStream<S> {
    /// `write_timeout` bounds every flush of replies.
    pub fn new(io: S, write_timeout: Duration) -> Self {
        SmtpStream {
            io,
            rbuf: BytesMut::with_capacity(1024),
            wbuf: Vec::with_capacity(512),
            discarding: false,
            write_timeout,
            broken: false,
        }
    }

    /// Queues a reply; it is sent at the next flush.
    pub fn reply(&mut self, reply: &Reply) {
        reply.write_to(&mut self.wbuf);
    }

    /// Sends queued replies now, within the write timeout. On a timeout or an error
    /// the stream is broken: this and every later flush fail, every later read is
    /// [`ReadLine::Closed`].
    pub async fn flush(&mut self) -> std::io::Result<()> {
        use std::io::{Error, ErrorKind};
        if self.broken {
            return Err(Error::new(
                ErrorKind::BrokenPipe,
                "connection already given up",
            ));
        }
        let send = async {
            if !self.wbuf.is_empty() {
                self.io.write_all(&self.wbuf).await?;
                self.wbuf.clear();
            }
            self.io.flush().await
        };
        let result = match timeout(self.write_timeout, send).await {
            Ok(r) => r,
            Err(_) => {
                info!(
                    timeout_ms = self.write_timeout.as_millis() as u64,
                    "client did not take its replies within the write timeout, closing"
                );
                Err(Error::new(ErrorKind::TimedOut, "write timeout"))
            }
        };
        if result.is_err() {
            self.broken = true;
            self.wbuf.clear();
        }
        result
    }

    /// Whether the next line, already received, is `DATA` (a client pipelining
    /// its transaction sends it with the last RCPT).
    pub fn next_is_data(&self) -> bool {
        let b = &self.rbuf[..];
        b.len() >= 6 && b[..4].eq_ignore_ascii_case(b"DATA") && &b[4..6] == b"\r\n"
    }

    /// Reads one command line of at most `max` bytes; the whole line must arrive
    /// within `limit`, so a client trickling bytes cannot hold the session forever.
    pub async fn read_line(&mut self, max: usize, limit: Duration) -> ReadLine {
        if self.broken {
            return ReadLine::Closed;
        }
        let deadline = Instant::now() + limit;
        loop {
            if self.discarding {
                match self.rbuf.iter().position(|&b| b == b'\n') {
                    Some(i) => {
                        self.rbuf.advance(i + 1);
                        self.discarding = false;
                        return ReadLine::Bad(LineError::TooLong);
                    }
                    None => self.rbuf.clear(),
                }
            } else {
                match next_line(&self.rbuf, max) {
                    Frame::Line(n) => return ReadLine::Line(self.rbuf.split_to(n)),
                    Frame::Bad { len, why } => {
                        self.rbuf.advance(len);
                        return ReadLine::Bad(why);
                    }
                    Frame::Overflow => {
                        self.rbuf.clear();
                        self.discarding = true;
                        continue;
                    }
                    Frame::Incomplete => {}
                }
            }
            match self.fill(deadline).await {
                ReadChunk::Data => {}
                ReadChunk::TimedOut => return ReadLine::TimedOut,
                ReadChunk::Closed => return ReadLine::Closed,
            }
        }
    }

    /// Flushes replies (within the write timeout), then reads more bytes into the
    /// buffer before `deadline`.
    pub async fn fill(&mut self, deadline: Instant) -> ReadChunk {
        if self.flush().await.is_err() {
            return ReadChunk::Closed;
        }
        self.rbuf.reserve(READ_CHUNK);
        match timeout_at(deadline, self.io.read_buf(&mut self.rbuf)).await {
            Err(_) => ReadChunk::TimedOut,
            Ok(Ok(0)) | Ok(Err(_)) => ReadChunk::Closed,
            Ok(Ok(_)) => ReadChunk::Data,
        }
    }

    /// Bytes received but not yet consumed.
    pub fn buffered(&self) -> &[u8] {
        &self.rbuf
    }

    /// Drops `n` consumed bytes from the front of the buffer.
    pub fn consume(&mut self, n: usize) {
        self.rbuf.advance(n);
    }

    /// Gives back the stream (for the TLS handshake) and how many received bytes were
    /// thrown away: anything pipelined after STARTTLS must not survive into the TLS
    /// session (CVE-2011-0411 and its many successors).
    pub fn into_inner(self) -> (S, usize) {
        (self.io, self.rbuf.len())
    }

    pub fn get_ref(&self) -> &S {
        &self.io
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::reply::Esc;
    use tokio::io::duplex;

    #[tokio::test]
    async fn lines_bad_lines_and_overflow() {
        let (client, server) = duplex(1 << 16);
        let mut s = SmtpStream::new(server, Duration::from_secs(5));
        let mut c = client;
        c.write_all(b"NOOP\r\nBAD\nX").await.unwrap();
        let long = vec![b'a'; 3000];
        c.write_all(&long).await.unwrap();
        c.write_all(b"\r\nQUIT\r\n").await.unwrap();
        let t = Duration::from_secs(5);
        assert!(matches!(s.read_line(512, t).await, ReadLine::Line(l) if &l[..] == b"NOOP\r\n"));
        assert!(matches!(
            s.read_line(512, t).await,
            ReadLine::Bad(LineError::BareLf)
        ));
        assert!(matches!(
            s.read_line(512, t).await,
            ReadLine::Bad(LineError::TooLong)
        ));
        assert!(matches!(s.read_line(512, t).await, ReadLine::Line(l) if &l[..] == b"QUIT\r\n"));
        drop(c);
        assert!(matches!(s.read_line(512, t).await, ReadLine::Closed));
    }

    #[tokio::test(start_paused = true)]
    async fn trickling_client_times_out_per_line() {
        let (mut c, server) = duplex(1024);
        let mut s = SmtpStream::new(server, Duration::from_secs(5));
        let feeder = tokio::spawn(async move {
            for _ in 0..100 {
                if c.write_all(b"x").await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
        let r = s.read_line(512, Duration::from_secs(10)).await;
        assert!(matches!(r, ReadLine::TimedOut), "{r:?}");
        feeder.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_stops_reading_breaks_the_stream_at_the_write_timeout() {
        // A 64-byte pipe stands for full socket buffers.
        let (mut c, server) = duplex(64);
        let mut s = SmtpStream::new(server, Duration::from_secs(2));
        c.write_all(b"NOOP\r\nNOOP\r\n").await.unwrap();
        s.reply(&Reply::new(535, Esc(5, 7, 8), "x".repeat(200)));
        let started = Instant::now();
        let e = s.flush().await.unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), Duration::from_secs(2));
        // Broken for good: no further flush waits, and the buffered commands are
        // not read (the session ends).
        s.reply(&Reply::plain(250, "more"));
        assert!(s.flush().await.is_err());
        assert_eq!(started.elapsed(), Duration::from_secs(2));
        assert!(matches!(
            s.read_line(512, Duration::from_secs(60)).await,
            ReadLine::Closed
        ));
        // The command deadline is no longer what bounds a stalled reply.
        let (_c2, server) = duplex(64);
        let mut s = SmtpStream::new(server, Duration::from_secs(1));
        s.reply(&Reply::plain(250, "y".repeat(200)));
        let started = Instant::now();
        let r = s.read_line(512, Duration::from_secs(300)).await;
        assert!(matches!(r, ReadLine::Closed), "{r:?}");
        assert_eq!(started.elapsed(), Duration::from_secs(1));
    }

    #[tokio::test]
    async fn replies_are_flushed_when_the_session_waits() {
        let (mut c, server) = duplex(1024);
        let mut s = SmtpStream::new(server, Duration::from_secs(5));
        s.reply(&Reply::new(250, Esc(2, 0, 0), "one"));
        s.reply(&Reply::new(250, Esc(2, 0, 0), "two"));
        let reader = tokio::spawn(async move { s.read_line(512, Duration::from_secs(5)).await });
        // The client sees both replies, in one write, before it sends anything more.
        let mut buf = vec![0u8; 64];
        let n = c.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"250 2.0.0 one\r\n250 2.0.0 two\r\n");
        c.write_all(b"QUIT\r\n").await.unwrap();
        assert!(matches!(reader.await.unwrap(), ReadLine::Line(l) if &l[..] == b"QUIT\r\n"));
    }
}
