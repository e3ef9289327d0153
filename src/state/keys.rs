//! Redis key names: pure, so that every instance builds the same ones.
//!
//! Every key starts with the configured prefix. Keys that one script touches
//! together carry the same Redis Cluster hash tag (`{u:NAME}` for a user's quota,
//! login-failure and suspension keys), so they land in one slot. Names from clients
//! are escaped: only `A-Z a-z 0-9 . _ @ + -` pass as they are, every other byte
//! becomes `%XX`, so no name can close a hash tag, add a separator or forge another
//! user's key.

use std::fmt::Write;
use std::net::IpAddr;

/// `name` with every byte outside the safe set written as `%XX`.
pub fn escape(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b"._@+-".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// Builds the keys of one cluster (one prefix).
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    pub fn new(prefix: &str) -> Keys {
        Keys {
            prefix: prefix.to_string(),
        }
    }

    /// `PREFIX{u:NAME}:`, the start of every key of one user.
    pub fn user(&self, user: &str) -> String {
        format!("{}{{u:{}}}:", self.prefix, escape(user))
    }

    /// The quota keys of `user`, in the order the scripts expect them:
    /// reservations, their leases, then (bucket counts, bucket index) for messages
    /// per hour, recipients per hour and recipients per day.
    pub fn quota(&self, user: &str) -> [String; 8] {
        let u = self.user(user);
        ["res", "lease", "mh", "mh:i", "rh", "rh:i", "rd", "rd:i"].map(|k| format!("{u}q:{k}"))
    }

    /// The quota keys of a sender domain (a domain key), in the same order, under
    /// its own hash tag `{d:DOMAIN}`. A message's reservation touches its user's
    /// keys and its domain's in one script: atomic on the one Redis (or Valkey)
    /// primary that `cluster.redis` names. Under Redis Cluster the two tags would
    /// be two slots, which a script cannot span; Postern does not use Redis Cluster.
    pub fn domain_quota(&self, domain: &str) -> [String; 8] {
        let d = format!("{}{{d:{}}}:", self.prefix, escape(domain));
        ["res", "lease", "mh", "mh:i", "rh", "rh:i", "rd", "rd:i"].map(|k| format!("{d}q:{k}"))
    }

    /// The login-failure keys of one record (failures, offences, block), under the
    /// hash tag of what it counts: an address, a username, or a username from an
    /// address (in the user's slot).
    pub fn failure_record(&self, record: &Record<'_>) -> [String; 3] {
        let base = match record {
            Record::Address(ip) => format!("{}{{a:{}}}:f:", self.prefix, escape(&ip.to_string())),
            Record::User(u) => format!("{}f:", self.user(u)),
            Record::Pair(u, ip) => format!("{}f:{}:", self.user(u), escape(&ip.to_string())),
        };
        ["fails", "offences", "block"].map(|k| format!("{base}{k}"))
    }

    /// "This user logged in from this address lately" (lifts the address block).
    pub fn trusted(&self, user: &str, ip: IpAddr) -> String {
        format!("{}good:{}", self.user(user), escape(&ip.to_string()))
    }

    /// The key every instance keys password fingerprints with.
    pub fn fingerprint_key(&self) -> String {
        format!("{}fingerprint-key", self.prefix)
    }

    /// Every suspension, one hash (field: user name, value: JSON).
    pub fn suspensions(&self) -> String {
        format!("{}suspensions", self.prefix)
    }

    /// The channel that tells every instance a suspension changed.
    pub fn suspensions_channel(&self) -> String {
        format!("{}suspensions:changed", self.prefix)
    }

    /// The pacing state of one smarthost entry.
    pub fn pacing(&self, smarthost: &str) -> String {
        format!("{}{{p:{}}}:tat", self.prefix, escape(smarthost))
    }
}

/// What a login-failure record counts.
#[derive(Debug, Clone, Copy)]
pub enum Record<'a> {
    Address(IpAddr),
    User(&'a str),
    Pair(&'a str, IpAddr),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_cannot_break_out_of_their_hash_tag() {
        assert_eq!(escape("wp-site1"), "wp-site1");
        assert_eq!(escape("a}b{c:d e"), "a%7Db%7Bc%3Ad%20e");
        assert_eq!(escape("ü"), "%C3%BC");
        assert_eq!(escape("50%"), "50%25");
        let k = Keys::new("postern:");
        assert_eq!(k.user("x}:y"), "postern:{u:x%7D%3Ay}:");
        // Two different names never share a key.
        assert_ne!(k.user("a:b"), k.user("a%3Ab"));
    }

    #[test]
    fn a_users_keys_share_one_slot() {
        let k = Keys::new("p:");
        let q = k.quota("alice");
        assert_eq!(q[0], "p:{u:alice}:q:res");
        assert!(q.iter().all(|key| key.starts_with("p:{u:alice}:")));
        let pair = k.failure_record(&Record::Pair("alice", "192.0.2.1".parse().unwrap()));
        assert_eq!(pair[0], "p:{u:alice}:f:192.0.2.1:fails");
        let d = k.domain_quota("xn--bcher-kva.example");
        assert_eq!(d[2], "p:{d:xn--bcher-kva.example}:q:mh");
        // A user and a domain of the same name never share a key.
        assert!(
            k.quota("x")
                .iter()
                .all(|u| !k.domain_quota("x").contains(u))
        );
        let ip = k.failure_record(&Record::Address("2001:db8::1".parse().unwrap()));
        assert_eq!(ip[2], "p:{a:2001%3Adb8%3A%3A1}:f:block");
    }
}
