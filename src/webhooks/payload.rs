//! The JSON body of each webhook event: `{"event": ..., "time": ..., ...}`.

use crate::events::Event;
use crate::journal::entry::format_time;
use serde_json::json;
use std::time::SystemTime;

/// The body for `event`, named `name`, that happened at `at`.
pub(super) fn body(name: &str, event: &Event, at: SystemTime) -> Vec<u8> {
    let time = format_time(at);
    let value = match event {
        Event::Suspended { user, reason, by } => {
            json!({"event": name, "time": time, "user": user, "reason": reason, "by": by.as_str()})
        }
        Event::Unsuspended { user, by } => {
            json!({"event": name, "time": time, "user": user, "by": by.as_str()})
        }
        Event::RateLimited {
            user,
            limit,
            max,
            retry_after,
            domain,
            ..
        } => {
            let mut v = json!({
                "event": name, "time": time, "user": user, "limit": limit, "max": max,
                "retry_after_seconds": retry_after.as_secs(),
                "scope": if domain.is_some() { "domain" } else { "user" },
            });
            if let Some(d) = domain {
                v["domain"] = json!(d);
            }
            v
        }
        Event::Bounced {
            id,
            user,
            from,
            recipients,
        } => json!({
            "event": name, "time": time, "id": id, "user": user, "from": from,
            "recipients": recipients,
        }),
        Event::Logged(entry) => json!({"event": name, "time": time, "entry": entry}),
    };
    serde_json::to_vec(&value).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::By;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn a_suspension_names_the_user_the_reason_and_who() {
        let e = Event::Suspended {
            user: "wp-site1".into(),
            reason: "hit its rate limit in 3 consecutive hours".into(),
            by: By::Brake,
        };
        let at = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let v: serde_json::Value = serde_json::from_slice(&body("user.suspended", &e, at)).unwrap();
        assert_eq!(v["event"], "user.suspended");
        assert_eq!(v["time"], "2023-11-14T22:13:20Z");
        assert_eq!(v["user"], "wp-site1");
        assert_eq!(v["by"], "brake");
    }

    #[test]
    fn a_rate_limit_says_whether_it_was_the_users_or_the_domains() {
        let event = |domain: Option<&str>| Event::RateLimited {
            user: "wp-site1".into(),
            limit: "messages_per_hour",
            max: 5,
            retry_after: Duration::from_secs(60),
            domain: domain.map(str::to_string),
            message_refused: true,
            first: true,
        };
        let at = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let of = |e: &Event| -> serde_json::Value {
            serde_json::from_slice(&body("rate_limit.reached", e, at)).unwrap()
        };
        let user = of(&event(None));
        assert_eq!(
            (user["scope"].as_str(), user.get("domain")),
            (Some("user"), None)
        );
        let domain = of(&event(Some("site1.example")));
        assert_eq!(domain["scope"], "domain");
        assert_eq!(domain["domain"], "site1.example");
        assert_eq!(
            (domain["user"].as_str(), domain["max"].as_u64()),
            (Some("wp-site1"), Some(5))
        );
    }
}
