//! The users file's `networks`: devices (printers, scanners) that cannot log in are
//! identified by their client address instead. Each network belongs to one user; a
//! client in several users' networks is the user of the most specific one.

use super::{Cidr, Problems, User};
use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

/// Every user's networks, most specific first.
#[derive(Debug, Default)]
pub struct NetworkIndex {
    /// Sorted by prefix length, longest first: the first network that contains an
    /// address is the most specific one (an address is only ever in networks of its
    /// own family, and two networks of one family and length that both contain it
    /// are the same network, which [`index`] refuses).
    entries: Vec<(Cidr, Arc<User>)>,
}

impl NetworkIndex {
    /// The user whose most specific network contains `ip` (an IPv4-mapped IPv6
    /// address is matched as IPv4).
    pub fn lookup(&self, ip: IpAddr) -> Option<&Arc<User>> {
        self.entries
            .iter()
            .find(|(net, _)| net.contains(ip))
            .map(|(_, user)| user)
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// Parses one user's `networks` (key `users[i].networks`), recording each entry that
/// is not a network, or one that could not mean what it says.
/// The widest device network accepted: a /8 (10.0.0.0/8, fd00::/8 for every IPv6
/// unique local address).
const MIN_PREFIX: u8 = 8;

pub(super) fn parse(raw: &[String], path: &Path, key: &str, problems: &mut Problems) -> Vec<Cidr> {
    let mut nets = Vec::new();
    for (j, s) in raw.iter().enumerate() {
        let key = format!("{key}[{j}]");
        let net = match Cidr::parse(s) {
            Ok(n) => n,
            Err(e) => {
                problems.add(path, &key, format!("{e} (write a network as 192.168.10.0/24 or 2001:db8:10::/64, or one address)"));
                continue;
            }
        };
        if net.prefix() < MIN_PREFIX {
            // 0.0.0.0/0 or ::/0 would let every client on the Internet send as
            // the user without AUTH: an open relay.
            problems.add(
                path,
                &key,
                format!("{s:?} is wider than a /{MIN_PREFIX}: a device network must not hand out a user's identity to whole swathes of the Internet (write the LAN's own network, such as 192.168.10.0/24 or fd00:10::/64)"),
            );
        } else if net.is_ipv4_mapped() {
            problems.add(
                path,
                &key,
                format!("{s:?} is an IPv4-mapped IPv6 network: write it as IPv4 (IPv4 clients are matched as IPv4 whatever the listener)"),
            );
        } else if net.network() != net {
            // 192.168.10.5/24 may mean the /24 or the one printer at .5: a guess
            // either way could hand a whole LAN a user's identity.
            problems.add(
                path,
                &key,
                format!(
                    "{s:?} has host bits set: write {} for the network, or {}/{} for one address",
                    net.network(),
                    s.split('/').next().unwrap_or(s).trim(),
                    if s.contains(':') { 128 } else { 32 }
                ),
            );
        } else {
            nets.push(net);
        }
    }
    nets
}

/// Builds the index over `users` (with their index in the file, for the problem
/// keys), refusing a network listed twice, whether for two users or one.
pub(super) fn index(
    users: &[(usize, Arc<User>)],
    path: &Path,
    problems: &mut Problems,
) -> NetworkIndex {
    let mut owner: HashMap<Cidr, &str> = HashMap::new();
    let mut entries = Vec::new();
    for (i, user) in users {
        for (j, net) in user.networks.iter().enumerate() {
            let key = format!("users[{i}].networks[{j}]");
            match owner.get(net) {
                Some(other) if *other == user.name => problems.add(
                    path,
                    &key,
                    format!("network {net} is listed twice for user {:?}", user.name),
                ),
                Some(other) => problems.add(
                    path,
                    &key,
                    format!(
                        "network {net} of user {:?} is also a network of user {other:?}: a network may belong to one user only",
                        user.name
                    ),
                ),
                None => {
                    owner.insert(*net, &user.name);
                    entries.push((*net, user.clone()));
                }
            }
        }
    }
    entries.sort_by_key(|(net, _)| std::cmp::Reverse(net.prefix()));
    NetworkIndex { entries }
}

#[cfg(test)]
mod tests {
    use super::super::{RateLimits, parse_users};
    use super::*;

    const HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$WCRuXLvL3CDgYzeIpdL9GA$z5SO1Q5mct7m1mN6VI+RbbEYnAuxcU8RjUej5o3FtSU";

    fn load(yaml: &str) -> Result<super::super::Users, Vec<String>> {
        let mut problems = Problems::default();
        let users = parse_users(
            yaml,
            Path::new("users.yaml"),
            &RateLimits::default(),
            &mut problems,
        );
        users.ok_or_else(|| problems.0.iter().map(|p| p.to_string()).collect())
    }

    fn who(users: &super::super::Users, ip: &str) -> Option<String> {
        users
            .by_address(ip.parse().unwrap())
            .map(|u| u.name.clone())
    }

    #[test]
    fn the_most_specific_network_wins_in_either_order() {
        for (first, second) in [("office", "printers"), ("printers", "office")] {
            let net = |n: &str| match n {
                "office" => "[\"127.0.0.0/16\", \"2001:db8::/32\"]",
                _ => "[\"127.0.0.0/24\", \"2001:db8:10::/64\", \"10.1.1.1\"]",
            };
            let yaml = format!(
                "users:\n  - name: {first}\n    networks: {}\n  - name: {second}\n    networks: {}\n    password: \"{HASH}\"\n",
                net(first),
                net(second)
            );
            let users = load(&yaml).unwrap();
            assert_eq!(who(&users, "127.0.0.9").as_deref(), Some("printers"));
            assert_eq!(who(&users, "127.0.1.9").as_deref(), Some("office"));
            assert_eq!(who(&users, "127.1.0.1"), None);
            assert_eq!(who(&users, "2001:db8:10::5").as_deref(), Some("printers"));
            assert_eq!(who(&users, "2001:db8:11::5").as_deref(), Some("office"));
            assert_eq!(who(&users, "10.1.1.1").as_deref(), Some("printers"));
            assert_eq!(who(&users, "10.1.1.2"), None);
            // A dual-stack listener's view of an IPv4 client.
            assert_eq!(who(&users, "::ffff:127.0.0.9").as_deref(), Some("printers"));
            assert_eq!(who(&users, "::ffff:127.0.1.9").as_deref(), Some("office"));
        }
    }

    #[test]
    fn a_password_is_optional_only_with_networks() {
        let users = load("users:\n  - name: scanner\n    networks: [\"192.168.10.0/24\"]\n    senders: [\"scanner@office.example\"]\n").unwrap();
        let u = users.get("scanner").unwrap();
        assert!(u.password_hash.is_none());
        assert_eq!(u.networks[0].to_string(), "192.168.10.0/24");
        let e = load("users:\n  - name: ghost\n    senders: [\"a@b.example\"]\n").unwrap_err();
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(
            e[0].starts_with(
                "users.yaml: users[0]: user \"ghost\" has neither a password nor networks"
            ),
            "{e:?}"
        );
        let e = load("users:\n  - name: ghost\n    networks: []\n").unwrap_err();
        assert!(e[0].contains("neither a password nor networks"), "{e:?}");
    }

    #[test]
    fn bad_networks_are_named_with_their_key() {
        let e = load(
            "users:\n  - name: a\n    networks: [\"192.168.10.0/33\", \"printer.lan\", \"192.168.10.5/24\", \"::ffff:10.0.0.0/104\", \"2001:db8::1/64\"]\n",
        )
        .unwrap_err();
        assert_eq!(e.len(), 5, "{e:?}");
        assert!(
            e[0].starts_with(
                "users.yaml: users[0].networks[0]: \"192.168.10.0/33\" has a bad prefix length"
            ),
            "{e:?}"
        );
        assert!(
            e[1].starts_with(
                "users.yaml: users[0].networks[1]: \"printer.lan\" is not an address or network"
            ),
            "{e:?}"
        );
        assert!(e[2].contains("users[0].networks[2]: \"192.168.10.5/24\" has host bits set: write 192.168.10.0/24 for the network, or 192.168.10.5/32 for one address"), "{e:?}");
        assert!(
            e[3].contains("users[0].networks[3]") && e[3].contains("write it as IPv4"),
            "{e:?}"
        );
        assert!(
            e[4].contains("2001:db8::/64 for the network, or 2001:db8::1/128"),
            "{e:?}"
        );
    }

    #[test]
    fn the_same_network_on_two_users_is_refused_naming_both() {
        // Written differently, the same network: a bare address is its /32.
        let e = load(&format!(
            "users:\n  - name: scanner\n    networks: [\"192.168.10.7\", \"2001:db8:10::/64\"]\n  - name: printer\n    password: \"{HASH}\"\n    networks: [\"192.168.10.7/32\", \"2001:0db8:0010:0000::/64\", \"192.168.10.0/24\"]\n"
        ))
        .unwrap_err();
        assert_eq!(e.len(), 2, "{e:?}");
        assert_eq!(
            e[0],
            "users.yaml: users[1].networks[0]: network 192.168.10.7/32 of user \"printer\" is also a network of user \"scanner\": a network may belong to one user only"
        );
        assert!(e[1].contains("users[1].networks[1]: network 2001:db8:10::/64 of user \"printer\" is also a network of user \"scanner\""), "{e:?}");
        let e = load("users:\n  - name: a\n    networks: [\"10.0.0.0/8\", \"10.0.0.0/8\"]\n")
            .unwrap_err();
        assert_eq!(
            e,
            ["users.yaml: users[0].networks[1]: network 10.0.0.0/8 is listed twice for user \"a\""]
        );
    }

    #[test]
    fn private_networks_are_told_from_public_ones() {
        for lan in [
            "192.168.10.0/24",
            "10.0.0.0/8",
            "172.16.5.0/24",
            "127.0.0.2",
            "fd00:1::/64",
            "fe80::/64",
        ] {
            assert!(Cidr::parse(lan).unwrap().is_private(), "{lan}");
        }
        for public in [
            "0.0.0.0/0",
            "192.168.0.0/15",
            "172.32.0.0/24",
            "203.0.113.7",
            "2001:db8::/32",
            "::/0",
            "fc00::/6",
        ] {
            assert!(!Cidr::parse(public).unwrap().is_private(), "{public}");
        }
    }
}
