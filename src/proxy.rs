//! The PROXY protocol (v1 text, v2 binary) for listeners behind a load balancer.
//!
//! Only connections from `trusted_proxies` may use such a listener; the header is read
//! before anything else (on 465, before the TLS ClientHello), exactly to its end and no
//! further, so the SMTP or TLS bytes after it are left for the session. Parsing is
//! ppp's; the address it names is what limits, logs and the Received header see.

pub use crate::config::Cidr;
use ppp::{HeaderResult, v1, v2};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt};

/// The v2 signature.
const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
/// Longest v1 header (RFC: 107 bytes with CRLF).
const V1_MAX: usize = 107;
/// Most bytes of v2 address and TLV data accepted.
const V2_MAX_PAYLOAD: usize = 4096;

/// The client address a complete header names; `None` for v1 `UNKNOWN`, for v2
/// `LOCAL` and for address families other than IPv4/IPv6, where the connection's own
/// address stands. A `LOCAL` header marks a connection the proxy made itself (a
/// health check): whatever addresses it carries must be ignored (PROXY protocol
/// spec, section 2.2), or a proxy's health checker could be blocked or rate limited
/// as some client.
pub fn parse_header(bytes: &[u8]) -> Result<Option<SocketAddr>, String> {
    match HeaderResult::parse(bytes) {
        HeaderResult::V1(Ok(h)) => Ok(match h.addresses {
            v1::Addresses::Tcp4(a) => Some(SocketAddr::new(a.source_address.into(), a.source_port)),
            v1::Addresses::Tcp6(a) => Some(SocketAddr::new(a.source_address.into(), a.source_port)),
            v1::Addresses::Unknown => None,
        }),
        HeaderResult::V2(Ok(h)) if h.command == v2::Command::Local => Ok(None),
        HeaderResult::V2(Ok(h)) => Ok(match h.addresses {
            v2::Addresses::IPv4(a) => Some(SocketAddr::new(a.source_address.into(), a.source_port)),
            v2::Addresses::IPv6(a) => Some(SocketAddr::new(a.source_address.into(), a.source_port)),
            v2::Addresses::Unspecified | v2::Addresses::Unix(_) => None,
        }),
        HeaderResult::V1(Err(e)) => Err(format!("bad PROXY v1 header: {e}")),
        HeaderResult::V2(Err(e)) => Err(format!("bad PROXY v2 header: {e}")),
    }
}

/// How much of a header `buf` (the bytes read so far) still lacks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Read exactly this many more bytes, then ask again.
    More(usize),
    /// `buf` is one whole header.
    Complete,
}

/// The framing of a PROXY header, apart from any I/O: reading exactly what this asks
/// for never consumes a byte of what follows the header.
pub fn header_need(buf: &[u8]) -> Result<Need, String> {
    if buf.len() < 12 {
        return Ok(Need::More(12 - buf.len()));
    }
    if &buf[..12] == V2_SIGNATURE {
        if buf.len() < 16 {
            return Ok(Need::More(16 - buf.len()));
        }
        let len = usize::from(u16::from_be_bytes([buf[14], buf[15]]));
        if len > V2_MAX_PAYLOAD {
            return Err(format!("PROXY v2 header too long ({len} bytes)"));
        }
        let total = 16 + len;
        return match buf.len().cmp(&total) {
            std::cmp::Ordering::Less => Ok(Need::More(total - buf.len())),
            std::cmp::Ordering::Equal => Ok(Need::Complete),
            std::cmp::Ordering::Greater => Err("PROXY v2 header overrun".into()),
        };
    }
    if !buf.starts_with(b"PROXY ") {
        return Err("no PROXY header".into());
    }
    if buf.ends_with(b"\r\n") {
        Ok(Need::Complete)
    } else if buf.len() >= V1_MAX {
        Err("PROXY v1 header too long".into())
    } else {
        Ok(Need::More(1))
    }
}

/// Reads one header from the start of `stream`, not a byte more, and parses it.
pub async fn read_header<R: AsyncRead + Unpin>(
    stream: &mut R,
    limit: Duration,
) -> Result<Option<SocketAddr>, String> {
    tokio::time::timeout(limit, async {
        let mut buf = Vec::with_capacity(V1_MAX);
        loop {
            match header_need(&buf)? {
                Need::Complete => return parse_header(&buf),
                Need::More(n) => {
                    let start = buf.len();
                    buf.resize(start + n, 0);
                    stream
                        .read_exact(&mut buf[start..])
                        .await
                        .map_err(|e| e.to_string())?;
                }
            }
        }
    })
    .await
    .map_err(|_| "timed out waiting for the PROXY header".to_string())?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_and_v2() {
        assert_eq!(
            parse_header(b"PROXY TCP4 192.0.2.7 198.51.100.1 40000 587\r\n").unwrap(),
            Some("192.0.2.7:40000".parse().unwrap())
        );
        assert_eq!(
            parse_header(b"PROXY TCP6 2001:db8::7 2001:db8::1 40000 465\r\n").unwrap(),
            Some("[2001:db8::7]:40000".parse().unwrap())
        );
        assert_eq!(parse_header(b"PROXY UNKNOWN\r\n").unwrap(), None);
        let v2 = v2::Builder::with_addresses(
            v2::Version::Two | v2::Command::Proxy,
            v2::Protocol::Stream,
            (
                "203.0.113.9:5555".parse::<SocketAddr>().unwrap(),
                "198.51.100.1:587".parse::<SocketAddr>().unwrap(),
            ),
        )
        .build()
        .unwrap();
        assert_eq!(
            parse_header(&v2).unwrap(),
            Some("203.0.113.9:5555".parse().unwrap())
        );
        // LOCAL: the addresses it carries are not the client's.
        let local = v2::Builder::with_addresses(
            v2::Version::Two | v2::Command::Local,
            v2::Protocol::Stream,
            (
                "203.0.113.9:5555".parse::<SocketAddr>().unwrap(),
                "198.51.100.1:587".parse::<SocketAddr>().unwrap(),
            ),
        )
        .build()
        .unwrap();
        assert_eq!(parse_header(&local).unwrap(), None);
        let local_unspec = v2::Builder::with_addresses(
            v2::Version::Two | v2::Command::Local,
            v2::Protocol::Unspecified,
            v2::Addresses::Unspecified,
        )
        .build()
        .unwrap();
        assert_eq!(parse_header(&local_unspec).unwrap(), None);
        for bad in [
            &b"PROXY TCP4 nonsense\r\n"[..],
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2",
        ] {
            assert!(parse_header(bad).is_err(), "{bad:?}");
        }
    }

    #[tokio::test]
    async fn reads_the_header_and_not_a_byte_more() {
        let v2 = v2::Builder::with_addresses(
            v2::Version::Two | v2::Command::Proxy,
            v2::Protocol::Stream,
            (
                "203.0.113.9:5555".parse::<SocketAddr>().unwrap(),
                "198.51.100.1:465".parse::<SocketAddr>().unwrap(),
            ),
        )
        .build()
        .unwrap();
        let v1 = b"PROXY TCP4 192.0.2.7 198.51.100.1 40000 587\r\n".to_vec();
        for (header, client) in [(v1, "192.0.2.7:40000"), (v2, "203.0.113.9:5555")] {
            // What follows (a TLS ClientHello, or EHLO) stays in the stream.
            let mut input = header.clone();
            input.extend_from_slice(b"\x16\x03\x01EHLO x\r\n");
            let mut stream: &[u8] = &input;
            let got = read_header(&mut stream, Duration::from_secs(1)).await;
            assert_eq!(got, Ok(Some(client.parse().unwrap())));
            assert_eq!(stream, b"\x16\x03\x01EHLO x\r\n");
            // Cut short anywhere: an error, never a guess.
            for cut in 0..header.len() {
                let mut short: &[u8] = &header[..cut];
                assert!(
                    read_header(&mut short, Duration::from_secs(1))
                        .await
                        .is_err()
                );
            }
        }
        for bad in [
            &b"EHLO spoofer.example\r\n"[..],
            &[b'P', b'R', b'O', b'X', b'Y', b' '].repeat(40),
        ] {
            let mut stream: &[u8] = bad;
            assert!(
                read_header(&mut stream, Duration::from_secs(1))
                    .await
                    .is_err()
            );
        }
        // A v2 length beyond the cap is refused before reading the payload.
        let mut huge = V2_SIGNATURE.to_vec();
        huge.extend_from_slice(&[0x21, 0x11, 0xff, 0xff]);
        assert!(header_need(&huge).unwrap_err().contains("too long"));
    }

    #[test]
    fn cidrs() {
        let c = Cidr::parse("10.0.0.0/8").unwrap();
        assert!(c.contains("10.1.2.3".parse().unwrap()));
        assert!(!c.contains("11.0.0.1".parse().unwrap()));
        assert!(c.contains("::ffff:10.9.9.9".parse().unwrap()));
        let one = Cidr::parse("127.0.0.1").unwrap();
        assert!(one.contains("127.0.0.1".parse().unwrap()));
        assert!(!one.contains("127.0.0.2".parse().unwrap()));
        let v6 = Cidr::parse("2001:db8::/32").unwrap();
        assert!(v6.contains("2001:db8:1::5".parse().unwrap()));
        assert!(!v6.contains("2001:db9::5".parse().unwrap()));
        assert!(
            Cidr::parse("0.0.0.0/0")
                .unwrap()
                .contains("8.8.8.8".parse().unwrap())
        );
        for bad in ["10.0.0.0/33", "nonsense", "10.0.0/8", "::/129"] {
            assert!(Cidr::parse(bad).is_err(), "{bad}");
        }
    }
}
