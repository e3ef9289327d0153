//! Resource exhaustion: for each attack, Postern's memory stays bounded (peak RSS,
//! from /proc, against a fixed budget) and a well-behaved client on another address
//! is still served while the attack is going on. Every attack is bounded in count and
//! time.

mod common;

use common::client::Client;
use common::{Harness, Setup, crlf};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

const W: Duration = Duration::from_secs(20);
const MIB: u64 = 1024 * 1024;

fn setup() -> Setup {
    Setup {
        extra: "limits:\n  max_connections: 2000\n  max_connections_per_ip: 20\n\
                timeouts:\n  command: 2s\n  tls_handshake: 2s\n  data_block: 2s\n  data_total: 3s\n"
            .into(),
        ..Setup::default()
    }
}

/// A /proc/PID/status value in bytes (VmRSS, VmHWM).
fn proc_bytes(pid: u32, key: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}:")))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap();
    kib * 1024
}

/// Memory measured around an attack: the peak (VmHWM) over the RSS before it. The
/// high-water mark is reset first, so the peak is the attack's own.
struct Memory {
    pid: u32,
    before: u64,
}

impl Memory {
    fn start(h: &Harness) -> Memory {
        let pid = h.pid();
        // Writing 5 to clear_refs resets VmHWM to the current RSS.
        let _ = std::fs::write(format!("/proc/{pid}/clear_refs"), "5");
        Memory {
            pid,
            before: proc_bytes(pid, "VmRSS"),
        }
    }

    fn assert_growth_below(&self, budget: u64, what: &str) {
        let peak = proc_bytes(self.pid, "VmHWM");
        let growth = peak.saturating_sub(self.before);
        eprintln!(
            "{what}: RSS before {} KiB, peak {} KiB, growth {} KiB (budget {} KiB)",
            self.before / 1024,
            peak / 1024,
            growth / 1024,
            budget / 1024
        );
        assert!(
            growth < budget,
            "{what}: memory grew by {} KiB",
            growth / 1024
        );
    }
}

async fn connect_from(addr: SocketAddr, source: &str) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket
        .bind(SocketAddr::new(source.parse::<IpAddr>().unwrap(), 0))
        .unwrap();
    socket.connect(addr).await.unwrap()
}

/// A good client from its own address: TLS, AUTH, one message, QUIT, within `W`.
async fn well_behaved(h: &Harness, source: &str) {
    let done = tokio::time::timeout(W, async {
        let mut c =
            Client::connect_tls_from(h.implicit, source.parse().unwrap(), &h.ca_pem()).await;
        c.expect("EHLO good.example", 250).await;
        assert_eq!(c.auth_plain("alice", "alice-password").await.code, 235);
        let body = crlf("From: a@alice.example\nSubject: still served\n\nhello\n");
        let r = c
            .send_mail("a@alice.example", &["b@example.org"], &body)
            .await;
        assert_eq!(r.code, 250, "{r:?}");
        c.expect("QUIT", 221).await;
    })
    .await;
    assert!(
        done.is_ok(),
        "the well-behaved client was not served in time"
    );
}

/// Two logins at once, so that both argon2 verifier threads have their buffers
/// (19 MiB each, kept for reuse) before the baseline is taken: growth is then the
/// attack's own.
async fn warm_up(h: &Harness) {
    tokio::join!(
        well_behaved(h, "127.0.0.200"),
        well_behaved(h, "127.0.0.202")
    );
}

/// Reads until EOF (or `limit`), returning what arrived.
async fn read_to_close(tcp: &mut TcpStream, limit: Duration) -> String {
    let mut all = Vec::new();
    let _ = tokio::time::timeout(limit, tcp.read_to_end(&mut all)).await;
    String::from_utf8_lossy(&all).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_trickling_connections_are_cut_at_the_command_deadline() {
    let h = Harness::start(setup()).await;
    warm_up(&h).await;
    let mem = Memory::start(&h);
    // 300 connections from 15 addresses, each trickling "EHLO x\r\n" one byte every
    // 400 ms: every byte arrives in time, but the whole line never does within 2 s.
    let mut tricklers = Vec::new();
    for i in 0..300 {
        let addr = h.starttls;
        let source = format!("127.0.1.{}", 10 + i % 15);
        tricklers.push(tokio::spawn(async move {
            let mut tcp = connect_from(addr, &source).await;
            let mut greeting = [0u8; 256];
            let _ = tcp.read(&mut greeting).await;
            for b in b"EHLO x\r\n" {
                if tcp.write_all(&[*b]).await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(400)).await;
            }
            read_to_close(&mut tcp, Duration::from_secs(10)).await
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    well_behaved(&h, "127.0.0.201").await;
    for t in tricklers {
        let got = t.await.unwrap();
        assert!(got.contains("421 4.4.2"), "a trickler got {got:?}");
    }
    mem.assert_growth_below(16 * MIB, "300 slowloris connections");
    assert!(h.wait_log("timeout waiting for a command", W).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_never_ending_command_line_is_discarded_not_buffered() {
    let h = Harness::start(setup()).await;
    warm_up(&h).await;
    let mem = Memory::start(&h);
    let mut tcp = connect_from(h.starttls, "127.0.1.1").await;
    let mut greeting = [0u8; 256];
    let _ = tcp.read(&mut greeting).await;
    // 64 MiB without a line end, as fast as loopback takes it (within the deadline).
    let chunk = vec![b'A'; MIB as usize];
    let flood = async {
        for _ in 0..64 {
            if tcp.write_all(&chunk).await.is_err() {
                break;
            }
        }
    };
    let (_, ()) = tokio::join!(flood, well_behaved(&h, "127.0.0.201"));
    let _ = tcp.write_all(b"\r\nNOOP\r\n").await;
    let got = read_to_close(&mut tcp, Duration::from_secs(5)).await;
    // Either the line was refused and the session went on, or it ran out of time.
    assert!(
        got.contains("500 5.5.2") || got.contains("421 4.4.2"),
        "{got:?}"
    );
    mem.assert_growth_below(4 * MIB, "a 64 MiB command line");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_100_mb_message_against_the_25_mib_limit_is_streamed_and_refused() {
    let h = Harness::start(Setup {
        extra: "limits:\n  max_message_size: 25MiB\ntimeouts:\n  data_total: 2m\n".into(),
        ..Setup::default()
    })
    .await;
    warm_up(&h).await;
    let received_before = h.sink.wait_for(2, W).await.len();
    let mem = Memory::start(&h);
    let mut c = h.session("alice", "alice-password").await;
    c.expect("MAIL FROM:<a@alice.example>", 250).await;
    c.expect("RCPT TO:<b@example.org>", 250).await;
    c.expect("DATA", 354).await;
    let line = format!("{}\r\n", "x".repeat(998));
    let block = line.repeat(1024); // about 1 MiB
    let send = async {
        c.send_raw(b"Subject: huge\r\n\r\n").await;
        for _ in 0..100 {
            c.send_raw(block.as_bytes()).await;
        }
        c.send_raw(b".\r\n").await;
        c.read_reply().await
    };
    let (r, ()) = tokio::join!(send, well_behaved(&h, "127.0.0.201"));
    assert_eq!(
        (r.code, r.esc.map(|e| e.to_string())),
        (552, Some("5.3.4".into())),
        "{r:?}"
    );
    c.expect("NOOP", 250).await;
    mem.assert_growth_below(4 * MIB, "a 100 MB message");
    // Only the well-behaved client's message arrived.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let msgs = h.sink.messages();
    assert_eq!(msgs.len(), received_before + 1);
    assert!(
        msgs.iter()
            .all(|m| !String::from_utf8_lossy(&m.content).contains("Subject: huge"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_never_ending_data_phase_is_cut_at_data_total() {
    let h = Harness::start(setup()).await;
    warm_up(&h).await;
    let mem = Memory::start(&h);
    let mut c = h.session("alice", "alice-password").await;
    c.expect("MAIL FROM:<a@alice.example>", 250).await;
    c.expect("RCPT TO:<b@example.org>", 250).await;
    c.expect("DATA", 354).await;
    let Some(mut tcp) = c.into_tls_stream() else {
        panic!("session is TLS")
    };
    // Keep sending lines (fast enough for data_block) for longer than data_total.
    let started = std::time::Instant::now();
    let line = b"more and more and more\r\n".repeat(40);
    let mut cut = false;
    while started.elapsed() < Duration::from_secs(8) {
        if tcp.write_all(&line).await.is_err() {
            cut = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(3), tcp.read_to_end(&mut rest)).await;
    let rest = String::from_utf8_lossy(&rest);
    assert!(
        cut || rest.contains("421 4.4.2"),
        "still open after 8 s: {rest:?}"
    );
    assert!(rest.contains("421 4.4.2"), "{rest:?}");
    well_behaved(&h, "127.0.0.201").await;
    mem.assert_growth_below(4 * MIB, "a never-ending DATA");
    assert_eq!(
        h.sink.messages().len(),
        3,
        "only the good clients' messages"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_rcpt_are_capped() {
    let h = Harness::start(Setup {
        extra: "limits:\n  max_recipients: 100\n".into(),
        ..Setup::default()
    })
    .await;
    warm_up(&h).await;
    let mem = Memory::start(&h);
    let mut c = h.session("alice", "alice-password").await;
    c.expect("MAIL FROM:<a@alice.example>", 250).await;
    let mut batch = String::new();
    for i in 0..5000 {
        batch.push_str(&format!("RCPT TO:<r{i}@example.org>\r\n"));
    }
    let send = async {
        c.send_raw(batch.as_bytes()).await;
        let mut codes = Vec::new();
        while let Some(r) = c.try_read_reply().await {
            codes.push((r.code, r.esc.map(|e| e.to_string())));
            if codes.len() == 5000 || r.code == 421 {
                break;
            }
        }
        codes
    };
    let (codes, ()) = tokio::join!(send, well_behaved(&h, "127.0.0.201"));
    assert!(codes[..100].iter().all(|(c, _)| *c == 250));
    assert_eq!(codes[100], (452, Some("4.5.3".into())));
    // Either every extra RCPT got 452, or the session was closed for too many errors.
    assert!(codes[100..].iter().all(|(c, _)| *c == 452 || *c == 421));
    mem.assert_growth_below(4 * MIB, "5000 pipelined RCPT");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_auth_flood_is_bounded_and_others_still_log_in() {
    let h = Harness::start(Setup {
        extra: "limits:\n  max_connections_per_ip: 100\n".into(),
        ..Setup::default()
    })
    .await;
    warm_up(&h).await;
    let mem = Memory::start(&h);
    // 160 TLS connections from 4 addresses, each trying one wrong password at once:
    // 160 concurrent argon2 verifies would need about 3 GiB.
    let mut flood = Vec::new();
    for i in 0..160 {
        let (addr, ca) = (h.implicit, h.ca_pem());
        let source: IpAddr = format!("127.0.2.{}", 1 + i % 4).parse().unwrap();
        flood.push(tokio::spawn(async move {
            let mut c = Client::connect_tls_from(addr, source, &ca).await;
            c.expect("EHLO flood.example", 250).await;
            // Credential stuffing: many usernames (none of them alice's, whose lockout
            // after repeated failures is tested in tests/auth.rs).
            c.auth_plain(&format!("user{}", i % 40), &format!("guess-{i}"))
                .await
                .code
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    well_behaved(&h, "127.0.0.201").await;
    let mut codes = std::collections::BTreeMap::new();
    for t in flood {
        *codes.entry(t.await.unwrap()).or_insert(0) += 1;
    }
    eprintln!("flood replies: {codes:?}");
    // Wrong passwords are refused (535), deferred (454), or the address is throttled
    // or blocked (421): never accepted.
    assert!(
        codes.keys().all(|c| [535, 454, 421].contains(c)),
        "{codes:?}"
    );
    mem.assert_growth_below(16 * MIB, "160 concurrent AUTH attempts");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_handshakes_that_never_finish_are_cut() {
    let h = Harness::start(setup()).await;
    warm_up(&h).await;
    let mem = Memory::start(&h);
    // 200 connections to 465 that send half a ClientHello record header and stall.
    let mut stalled = Vec::new();
    for i in 0..200 {
        let addr = h.implicit;
        let source = format!("127.0.3.{}", 1 + i % 10);
        stalled.push(tokio::spawn(async move {
            let mut tcp = connect_from(addr, &source).await;
            tcp.write_all(&[0x16, 0x03, 0x01, 0x02]).await.unwrap();
            let started = std::time::Instant::now();
            let _ = read_to_close(&mut tcp, Duration::from_secs(10)).await;
            started.elapsed()
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    well_behaved(&h, "127.0.0.201").await;
    for t in stalled {
        let held = t.await.unwrap();
        assert!(
            held < Duration::from_secs(8),
            "a stalled handshake was held {held:?}"
        );
    }
    mem.assert_growth_below(12 * MIB, "200 stalled TLS handshakes");
    assert!(h.wait_log("TLS handshake", W).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_is_dropped() {
    let h = Harness::start(setup()).await;
    warm_up(&h).await;
    let mem = Memory::start(&h);
    let mut tcp = connect_from(h.starttls, "127.0.1.1").await;
    // 32 MiB of pipelined NOOPs, never reading a reply: the replies back up into the
    // socket buffers and Postern must stop reading rather than queue them in memory.
    let noops = b"NOOP\r\n".repeat(1 << 20);
    let flood = async {
        let started = std::time::Instant::now();
        for _ in 0..6 {
            match tokio::time::timeout(Duration::from_secs(10), tcp.write_all(&noops)).await {
                Ok(Ok(())) => {}
                _ => break,
            }
        }
        started.elapsed()
    };
    let (held, ()) = tokio::join!(flood, well_behaved(&h, "127.0.0.201"));
    assert!(held < Duration::from_secs(30));
    mem.assert_growth_below(4 * MIB, "a client that never reads");
    // The connection is closed by the command deadline once writes stall.
    let mut buf = vec![0u8; 1 << 16];
    let closed = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the non-reading client was never dropped");
}

/// Whether a new connection from `source` gets the 220 greeting (its address is
/// under `max_connections_per_ip`) rather than 421.
async fn greeted(addr: SocketAddr, source: &str) -> bool {
    let mut tcp = connect_from(addr, source).await;
    let mut buf = [0u8; 256];
    match tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf)).await {
        Ok(Ok(n)) => buf[..n].starts_with(b"220 "),
        _ => false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_fails_auth_and_never_reads_frees_its_slot_at_the_write_timeout() {
    // One connection per address, a command timeout far beyond the test, and a 1 s
    // write timeout: only the write timeout can free the slot in time. The tarpit
    // starts at the first failure, so its reply is flushed while the client stalls.
    let h = Harness::start(Setup {
        plain_listener: true,
        extra: "limits:\n  max_connections_per_ip: 1\n  max_errors: 1000\n\
                timeouts:\n  command: 5m\n  write: 1s\n\
                abuse:\n  auth_tarpit_after: 0\n  auth_failures_per_session: 100\n  \
                auth_block_ip_after: 1000\n  auth_block_user_after: 1000\n"
            .into(),
        ..Setup::default()
    })
    .await;
    let addr = h.plain.unwrap();
    let source = "127.0.4.1";
    // A tiny receive buffer, never read: the replies back up at once.
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(1024).unwrap();
    socket
        .bind(SocketAddr::new(source.parse().unwrap(), 0))
        .unwrap();
    let mut tcp = socket.connect(addr).await.unwrap();
    // Batches of EHLO (about 180 bytes of reply each, 1.4 MB a batch) ending in a
    // failed AUTH: within a few batches the socket buffers are full.
    let mut batch = "EHLO stall.example\r\n".repeat(8000);
    batch.push_str(&format!(
        "AUTH PLAIN {}\r\n",
        postern::proto::sasl::encode_plain("alice", "wrong")
    ));
    let writer = tokio::spawn(async move {
        for _ in 0..20 {
            match tokio::time::timeout(Duration::from_secs(60), tcp.write_all(batch.as_bytes()))
                .await
            {
                Ok(Ok(())) => {}
                _ => break,
            }
        }
        tcp
    });
    // The stalled session holds the address's only slot for a while...
    assert!(h.wait_log("authentication failed", W).await);
    // ...and gives it back once the buffers are full, within the write timeout
    // (plus a 1 s tarpit per batch until then), not after the 5 minute command
    // timeout.
    let started = std::time::Instant::now();
    let mut freed = false;
    for _ in 0..120 {
        if greeted(addr, source).await {
            freed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let held = started.elapsed();
    if !freed {
        for l in h.logs() {
            eprintln!("{l}");
        }
    }
    assert!(freed, "the slot was still held after {held:?}");
    assert!(held < Duration::from_secs(30), "the slot was held {held:?}");
    assert!(h.wait_log("within the write timeout", W).await);
    writer.abort();
}
