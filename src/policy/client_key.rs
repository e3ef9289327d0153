//! The key that per-address limits, gates and blocks count under.
//!
//! One IPv6 customer usually holds a whole /64 (privacy addresses rotate inside it,
//! and an attacker can pick any of its 2^64 addresses), so counting by /128 would give
//! every such client an unlimited supply of fresh addresses. IPv6 is aggregated by a
//! configurable prefix (`limits.ipv6_prefix`, default 64); IPv4, and IPv4-mapped IPv6
//! (`::ffff:a.b.c.d`), stay one IPv4 address each.

use std::net::{IpAddr, Ipv6Addr};

/// The default IPv6 prefix length per-address limits aggregate by.
pub const DEFAULT_IPV6_PREFIX: u8 = 64;

/// The address `ip` is counted under: IPv4 as is (an IPv4-mapped address becomes
/// IPv4), IPv6 with everything past the first `ipv6_prefix` bits zeroed (128 keeps
/// the full address).
pub fn client_key(ip: IpAddr, ipv6_prefix: u8) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => {
            let bits = u32::from(ipv6_prefix.min(128));
            let mask = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(u128::from(v6) & mask))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ipv6_aggregates_by_the_prefix() {
        let a = ip("2001:db8:1:2:aaaa:bbbb:cccc:dddd");
        let b = ip("2001:db8:1:2::1");
        assert_eq!(client_key(a, 64), ip("2001:db8:1:2::"));
        assert_eq!(client_key(a, 64), client_key(b, 64));
        // The next /64 is another client.
        assert_ne!(client_key(ip("2001:db8:1:3::1"), 64), client_key(b, 64));
        assert_eq!(client_key(a, 128), a);
        assert_ne!(client_key(a, 128), client_key(b, 128));
        assert_eq!(client_key(a, 48), ip("2001:db8:1::"));
        assert_eq!(client_key(a, 56), ip("2001:db8:1::"));
        assert_eq!(
            client_key(ip("2001:db8:1:2ff::1"), 56),
            ip("2001:db8:1:200::")
        );
        assert_eq!(client_key(a, 0), ip("::"));
        assert_eq!(
            client_key(a, 200),
            a,
            "more than 128 bits keeps the address"
        );
    }

    #[test]
    fn ipv4_and_mapped_ipv4_stay_whole_addresses() {
        for prefix in [0, 24, 64, 128] {
            assert_eq!(client_key(ip("192.0.2.77"), prefix), ip("192.0.2.77"));
            assert_eq!(
                client_key(ip("::ffff:192.0.2.77"), prefix),
                ip("192.0.2.77")
            );
        }
        assert_ne!(
            client_key(ip("::ffff:192.0.2.77"), 64),
            client_key(ip("::ffff:192.0.2.78"), 64)
        );
        // Loopback ::1 is IPv6, not mapped.
        assert_eq!(client_key(ip("::1"), 64), ip("::"));
    }
}
