//! IP networks: `trusted_proxies` in the config (matched by the PROXY protocol
//! listener, `proxy`) and the users file's `networks` (devices identified by their
//! address, `users::NetworkIndex`).

use std::fmt;
use std::net::IpAddr;

/// An IP network such as `10.0.0.0/8` or `2001:db8::/32`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    pub fn parse(s: &str) -> Result<Cidr, String> {
        let (a, p) = s.split_once('/').unwrap_or((s, ""));
        let addr: IpAddr = a
            .trim()
            .parse()
            .map_err(|_| format!("{s:?} is not an address or network"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = if p.is_empty() {
            max
        } else {
            p.parse()
                .ok()
                .filter(|&n| n <= max)
                .ok_or_else(|| format!("{s:?} has a bad prefix length"))?
        };
        Ok(Cidr { addr, prefix })
    }

    /// The prefix length: 32 for one IPv4 address, 128 for one IPv6 address.
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// The network with its host bits cleared: `192.168.1.5/24` gives
    /// `192.168.1.0/24`. Two entries name the same network when these are equal.
    pub fn network(&self) -> Cidr {
        let addr = match self.addr {
            IpAddr::V4(a) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                IpAddr::V4((u32::from(a) & mask).into())
            }
            IpAddr::V6(a) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                IpAddr::V6((u128::from(a) & mask).into())
            }
        };
        Cidr {
            addr,
            prefix: self.prefix,
        }
    }

    /// Whether the network is written as an IPv4-mapped IPv6 one (`::ffff:a.b.c.d`),
    /// which [`Cidr::contains`] never matches: clients' mapped addresses are matched
    /// as IPv4, so such a network must be written as IPv4.
    pub fn is_ipv4_mapped(&self) -> bool {
        matches!(self.addr, IpAddr::V6(a) if a.to_ipv4_mapped().is_some())
    }

    /// Whether the whole network lies in loopback, private (RFC 1918, RFC 4193),
    /// shared (RFC 6598) or link-local space: a LAN, not the Internet.
    pub fn is_private(&self) -> bool {
        const LOCAL: [&str; 9] = [
            "127.0.0.0/8",
            "10.0.0.0/8",
            "172.16.0.0/12",
            "192.168.0.0/16",
            "100.64.0.0/10",
            "169.254.0.0/16",
            "::1/128",
            "fc00::/7",
            "fe80::/10",
        ];
        LOCAL.iter().any(|l| {
            let l = Cidr::parse(l).expect("a valid network");
            l.prefix <= self.prefix && l.contains(self.addr)
        })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}
