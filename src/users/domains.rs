//! Per-domain limits in the users store: the users file's `domains:` list as
//! text, and the conversions between the API's limits and the config's.
//!
//! The list is written as one block placed before `users:`, so that the users
//! list stays last in the file and new users are still appended as text; the
//! rest of the file, comments included, is kept (comments inside the `domains:`
//! block are not).

use super::RateLimitsInput;
use crate::config::RateLimits;

impl From<&RateLimits> for RateLimitsInput {
    fn from(r: &RateLimits) -> RateLimitsInput {
        RateLimitsInput {
            messages_per_hour: r.messages_per_hour,
            recipients_per_hour: r.recipients_per_hour,
            recipients_per_day: r.recipients_per_day,
        }
    }
}

impl From<&RateLimitsInput> for RateLimits {
    fn from(r: &RateLimitsInput) -> RateLimits {
        RateLimits {
            messages_per_hour: r.messages_per_hour,
            recipients_per_hour: r.recipients_per_hour,
            recipients_per_day: r.recipients_per_day,
        }
    }
}

/// Whether a line starts a top-level key (not indented, not a comment, not a list item).
fn top_level(line: &str) -> bool {
    let t = line.trim_end();
    !t.is_empty() && !t.starts_with([' ', '\t', '#', '-'])
}

/// The `domains:` block for `domains` (sorted by the caller); empty for none.
pub fn domains_block(domains: &[(String, RateLimitsInput)]) -> String {
    if domains.is_empty() {
        return String::new();
    }
    let mut out = String::from("domains:\n");
    for (name, l) in domains {
        let keys: Vec<String> = [
            ("messages_per_hour", l.messages_per_hour),
            ("recipients_per_hour", l.recipients_per_hour),
            ("recipients_per_day", l.recipients_per_day),
        ]
        .iter()
        .filter_map(|(k, v)| v.map(|v| format!("{k}: {v}")))
        .collect();
        // Names are checked domain keys (A-labels): no quoting needed, quoted anyway.
        out.push_str(&format!("  - name: \"{name}\"\n"));
        out.push_str(&format!("    rate_limits: {{ {} }}\n", keys.join(", ")));
    }
    out
}

/// `text` with its top-level `domains:` section (if any) taken out and `block`
/// put just before `users:` (or at the end without one): the users list then runs
/// to the end of the file, where new users are appended as text.
pub fn replace_domains(text: &str, block: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.iter().position(|l| l.starts_with("domains:"));
    let (cut, rest) = match start {
        Some(s) => {
            let mut end = (s + 1..lines.len())
                .find(|&i| top_level(lines[i]))
                .unwrap_or(lines.len());
            // Comments and blank lines after the list belong to what follows.
            while end > s + 1 && {
                let l = lines[end - 1];
                l.trim().is_empty() || l.starts_with('#')
            } {
                end -= 1;
            }
            (s, end)
        }
        None => (lines.len(), lines.len()),
    };
    let kept: Vec<&str> = lines[..cut].iter().chain(&lines[rest..]).copied().collect();
    let at = kept
        .iter()
        .position(|l| l.starts_with("users:"))
        .unwrap_or(kept.len());
    let mut out = String::new();
    for l in &kept[..at] {
        out.push_str(l);
        out.push('\n');
    }
    out.push_str(block);
    for l in &kept[at..] {
        out.push_str(l);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(m: u32) -> RateLimitsInput {
        RateLimitsInput {
            messages_per_hour: Some(m),
            ..RateLimitsInput::default()
        }
    }

    #[test]
    fn the_domains_block_goes_before_users_and_replaces_itself() {
        let text = "# my users\nusers:\n  - name: a # the first\n    senders: []\n";
        let block = domains_block(&[("site1.example".into(), limits(5))]);
        let once = replace_domains(text, &block);
        assert_eq!(
            once,
            "# my users\ndomains:\n  - name: \"site1.example\"\n    rate_limits: { messages_per_hour: 5 }\n\
             users:\n  - name: a # the first\n    senders: []\n"
        );
        let block = domains_block(&[
            ("a.example".into(), RateLimitsInput::default()),
            ("site1.example".into(), limits(7)),
        ]);
        let twice = replace_domains(&once, &block);
        assert!(
            twice.contains("name: \"a.example\"\n    rate_limits: {  }\n"),
            "{twice}"
        );
        assert!(twice.contains("messages_per_hour: 7"), "{twice}");
        assert!(!twice.contains("messages_per_hour: 5"), "{twice}");
        assert!(twice.ends_with("users:\n  - name: a # the first\n    senders: []\n"));
        // None left: the section goes.
        assert_eq!(replace_domains(&twice, ""), text);
    }

    #[test]
    fn a_domains_section_after_users_moves_before_them() {
        let text = "users: []\ndomains:\n- name: x.example\n  rate_limits: {messages_per_hour: 1}\n# end\n";
        let out = replace_domains(text, &domains_block(&[("y.example".into(), limits(2))]));
        assert_eq!(
            out,
            "domains:\n  - name: \"y.example\"\n    rate_limits: { messages_per_hour: 2 }\nusers: []\n# end\n"
        );
    }
}
