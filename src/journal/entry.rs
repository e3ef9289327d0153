//! One delivery-log entry, as it is stored (a JSON line) and as the admin API
//! returns it: the field names are the interface's (`id`, `time`, `user`,
//! `client_ip`, `from`, `size`, `status`, and per recipient `address`, `status`,
//! `reply`).
//!
//! Every string a client chose (the sender, the recipients, a reply quoting them)
//! is data here: `serde_json` escapes it, so a CR, LF or quote can never start a
//! line of its own in the log file.

use serde::{Deserialize, Serialize};
use std::time::{SystemTime, UNIX_EPOCH};

/// What one entry records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A transaction at the end of DATA: what the client was answered.
    Submission,
    /// One delivery attempt from the queue.
    Attempt,
}

/// One recipient's fate in a transaction or an attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recipient {
    pub address: String,
    /// `delivered`, `queued`, `refused`, `deferred` or `failed`.
    pub status: String,
    /// The smarthost's reply for it, or Postern's own reason; `null` when there is
    /// none yet (a message just queued).
    pub reply: Option<String>,
}

impl Recipient {
    pub fn new(address: &str, status: &str, reply: Option<String>) -> Recipient {
        Recipient {
            address: address.to_string(),
            status: status.to_string(),
            reply,
        }
    }
}

/// One transaction or delivery attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The queue id (queue mode) or the session's message id (passthrough); an
    /// attempt carries its message's id.
    pub id: String,
    /// RFC 3339, UTC, to the second.
    pub time: String,
    pub user: String,
    /// The client's address (behind a load balancer, the one its PROXY header
    /// gave); `null` when not known (a bounce Postern wrote itself).
    pub client_ip: Option<String>,
    /// The envelope sender (empty for the null sender).
    pub from: String,
    /// Message bytes as received.
    pub size: u64,
    /// Submission: `accepted` (queued), `delivered` (passthrough, the smarthost took
    /// it) or `refused`. Attempt: `delivered`, `deferred`, `failed` or `partial`.
    pub status: String,
    pub recipients: Vec<Recipient>,
    pub kind: Kind,
    /// Why a submission was refused (a short word: `size`, `content`,
    /// `header_from`, `smarthost`…).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// What Postern answered the client at the end of DATA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply: Option<String>,
    /// The attempt's number, counting from 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
}

impl Entry {
    /// The entry's time as Unix seconds (0 when unreadable, so it sorts as old).
    pub fn unix_time(&self) -> u64 {
        parse_time(&self.time).unwrap_or(0)
    }
}

/// `t` as RFC 3339 in UTC: `2026-12-02T12:00:00Z`.
pub fn format_time(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    mail_parser::DateTime::from_timestamp(secs as i64).to_rfc3339()
}

/// Unix seconds of an RFC 3339 time.
pub fn parse_time(s: &str) -> Option<u64> {
    let t = mail_parser::DateTime::parse_rfc3339(s)?.to_timestamp();
    u64::try_from(t).ok()
}

/// The summary status of an attempt from its recipients' statuses.
pub fn attempt_status(recipients: &[Recipient]) -> &'static str {
    let all = |s: &str| recipients.iter().all(|r| r.status == s);
    if all("delivered") {
        "delivered"
    } else if all("failed") {
        "failed"
    } else if recipients.iter().any(|r| r.status == "deferred")
        && !recipients.iter().any(|r| r.status == "failed")
    {
        "deferred"
    } else {
        "partial"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn times_are_rfc3339_utc_and_read_back() {
        let t = UNIX_EPOCH + Duration::from_secs(1_764_676_800);
        assert_eq!(format_time(t), "2025-12-02T12:00:00Z");
        assert_eq!(parse_time("2025-12-02T12:00:00Z"), Some(1_764_676_800));
        assert_eq!(parse_time("yesterday"), None);
    }

    #[test]
    fn client_strings_stay_inside_one_json_line() {
        let e = Entry {
            id: "A1".into(),
            time: format_time(SystemTime::now()),
            user: "u".into(),
            client_ip: Some("192.0.2.1".into()),
            from: "evil\r\n{\"id\":\"forged\"}@x".into(),
            size: 10,
            status: "refused".into(),
            recipients: vec![Recipient::new("a\"b@x", "refused", Some("550 no\n".into()))],
            kind: Kind::Submission,
            reason: Some("content".into()),
            reply: None,
            attempt: None,
        };
        let line = serde_json::to_string(&e).unwrap();
        assert!(!line.contains('\n') && !line.contains('\r'), "{line}");
        let back: Entry = serde_json::from_str(&line).unwrap();
        assert_eq!(back, e);
    }

    #[test]
    fn an_attempt_is_summed_up_from_its_recipients() {
        let r = |s: &str| Recipient::new("a@x", s, None);
        for (statuses, want) in [
            (vec!["delivered", "delivered"], "delivered"),
            (vec!["failed"], "failed"),
            (vec!["deferred", "delivered"], "deferred"),
            (vec!["failed", "delivered"], "partial"),
            (vec!["failed", "deferred"], "partial"),
        ] {
            let rs: Vec<Recipient> = statuses.iter().map(|s| r(s)).collect();
            assert_eq!(attempt_status(&rs), want, "{statuses:?}");
        }
    }
}
