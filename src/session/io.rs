//! Buffered SMTP framing over any stream: command lines in, replies out.
//!
//! Replies are buffered and flushed only when the session is about to wait for the
//! client, so a pipelined batch of commands gets its replies in one write
//! (RFC 2920), and no reply is ever held back while the client waits.

use crate::proto::line::{Frame, LineError, next_line};
use crate::proto::reply::Reply;
use bytes::{Buf, BytesMut};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::{Instant, timeout_at};

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
}

impl<S: AsyncRead + AsyncWrite + Unpin> SmtpStream<S> {
    pub fn new(io: S) -> Self {
        SmtpStream {
            io,
            rbuf: BytesMut::with_capacity(1024),
            wbuf: Vec::with_capacity(512),
            discarding: false,
        }
    }

    /// Queues a reply; it is sent at the next flush.
    pub fn reply(&mut self, reply: &Reply) {
        reply.write_to(&mut self.wbuf);
    }

    /// Sends queued replies now.
    pub async fn flush(&mut self) -> std::io::Result<()> {
        if !self.wbuf.is_empty() {
            self.io.write_all(&self.wbuf).await?;
            self.wbuf.clear();
        }
        self.io.flush().await
    }

    /// Sends queued replies, giving up after `limit` (a client that never reads).
    pub async fn flush_within(&mut self, limit: Duration) -> bool {
        matches!(tokio::time::timeout(limit, self.flush()).await, Ok(Ok(())))
    }

    /// Reads one command line of at most `max` bytes; the whole line must arrive
    /// within `limit`, so a client trickling bytes cannot hold the session forever.
    pub async fn read_line(&mut self, max: usize, limit: Duration) -> ReadLine {
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

    /// Flushes replies, then reads more bytes into the buffer before `deadline`.
    pub async fn fill(&mut self, deadline: Instant) -> ReadChunk {
        let io = async {
            self.flush().await?;
            self.rbuf.reserve(READ_CHUNK);
            self.io.read_buf(&mut self.rbuf).await
        };
        match timeout_at(deadline, io).await {
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
        let mut s = SmtpStream::new(server);
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
        let mut s = SmtpStream::new(server);
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

    #[tokio::test]
    async fn replies_are_flushed_when_the_session_waits() {
        let (mut c, server) = duplex(1024);
        let mut s = SmtpStream::new(server);
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
