//! Safe edits of the users file for `postern user add` and `user disable`.
//!
//! The file is edited as text, so that the operator's comments and layout survive:
//! a new user is appended to the `users:` list, `disable` sets or inserts a
//! `disabled: true` line in that user's entry. The result is validated as a whole
//! before it replaces the file atomically (temporary file, fsync, rename). When the
//! list is not the last thing in the file (or is written inline as `users: []`), the
//! file is rewritten from its parsed form instead, and comments are lost; the caller
//! is told so.

use std::io::Write;
use std::path::Path;

/// How an edit was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EditKind {
    /// Text edit: comments preserved.
    InPlace,
    /// Re-serialized: comments lost.
    Rewritten,
}

fn yaml_string(s: &str) -> String {
    serde_yaml::to_string(s)
        .map(|y| y.trim_end().to_string())
        .unwrap_or_else(|_| format!("{s:?}"))
}

/// The block for a new user, indented as an item of the top-level `users:` list.
pub fn user_block(name: &str, hash: &str, senders: &[String]) -> String {
    let senders: Vec<String> = senders.iter().map(|s| yaml_string(s)).collect();
    format!(
        "  - name: {}\n    password: {}\n    senders: [{}]\n",
        yaml_string(name),
        yaml_string(hash),
        senders.join(", ")
    )
}

/// Whether `users:` is a block list that runs to the end of the file, so a new item
/// can simply be appended.
fn users_list_is_last(text: &str) -> bool {
    let mut in_users = false;
    for line in text.lines() {
        let t = line.trim_end();
        if t.is_empty() || t.trim_start().starts_with('#') {
            continue;
        }
        let top_level = !t.starts_with(' ') && !t.starts_with('-');
        if top_level {
            in_users = t == "users:";
        }
    }
    in_users
}

/// The text with a new user appended; `None` if the file's shape needs a rewrite.
pub fn append_user(text: &str, block: &str) -> Option<String> {
    if !users_list_is_last(text) {
        return None;
    }
    let mut out = text.to_string();
    if !out.ends_with('\n') {
        out.push('\n');
    }
    out.push_str(block);
    Some(out)
}

/// The text with `disabled: true` set for `name` (`disabled: false`: the line
/// removed); `None` if the entry cannot be found as `- name: NAME` (the caller then
/// rewrites the file).
pub fn set_disabled(text: &str, name: &str, disabled: bool) -> Option<String> {
    let lines: Vec<&str> = text.lines().collect();
    let quoted = [name.to_string(), format!("\"{name}\""), format!("'{name}'")];
    let start = lines.iter().position(|l| {
        let t = l.trim_start();
        t.strip_prefix("- name:")
            .map(|v| {
                let v = v.split(" #").next().unwrap_or("").trim();
                quoted.iter().any(|q| v == q)
            })
            .unwrap_or(false)
    })?;
    let dash = lines[start].len() - lines[start].trim_start().len();
    let field_indent = dash + 2;
    let mut end = start + 1;
    while end < lines.len() {
        let l = lines[end];
        let indent = l.len() - l.trim_start().len();
        if !l.trim().is_empty() && indent <= dash {
            break;
        }
        end += 1;
    }
    let mut out: Vec<String> = lines.iter().map(|s| s.to_string()).collect();
    let pad = " ".repeat(field_indent);
    match (
        (start + 1..end).find(|&i| lines[i].trim_start().starts_with("disabled:")),
        disabled,
    ) {
        (Some(i), true) => out[i] = format!("{pad}disabled: true"),
        (None, true) => out.insert(start + 1, format!("{pad}disabled: true")),
        (Some(i), false) => {
            out.remove(i);
        }
        (None, false) => {}
    }
    let mut s = out.join("\n");
    s.push('\n');
    Some(s)
}

/// Writes `text` to `path` atomically, keeping the file's permissions.
pub fn write_atomically(path: &Path, text: &str) -> std::io::Result<()> {
    let tmp = path.with_extension("yaml.tmp");
    let perms = std::fs::metadata(path).map(|m| m.permissions()).ok();
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    drop(f);
    if let Some(p) = perms {
        std::fs::set_permissions(&tmp, p)?;
    }
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "# Our users\nusers:\n  # the blog\n  - name: blog\n    password: \"$argon2id$x\"\n    senders: [\"@blog.example\"]\n  - name: shop # the shop\n    password: \"$argon2id$y\"\n    disabled: false\n    senders: [\"@shop.example\"]\n";

    #[test]
    fn append_keeps_comments() {
        let block = user_block(
            "new",
            "$argon2id$z",
            &["@new.example".into(), "a@b.example".into()],
        );
        let out = append_user(FILE, &block).unwrap();
        assert!(out.starts_with(FILE));
        assert!(out.ends_with("  - name: new\n    password: $argon2id$z\n    senders: ['@new.example', a@b.example]\n"), "{out}");
        let v: serde_yaml::Value = serde_yaml::from_str(&out).unwrap();
        assert_eq!(v["users"][2]["senders"][0].as_str(), Some("@new.example"));
        // Not possible when another key follows the list, or with an inline list.
        assert_eq!(append_user("users:\n  - name: a\nother: 1\n", &block), None);
        assert_eq!(append_user("users: []\n", &block), None);
    }

    #[test]
    fn disable_sets_or_inserts() {
        let out = set_disabled(FILE, "blog", true).unwrap();
        assert!(
            out.contains("  - name: blog\n    disabled: true\n    password"),
            "{out}"
        );
        assert!(out.contains("# Our users") && out.contains("# the blog"));
        let out = set_disabled(FILE, "shop", true).unwrap();
        assert!(
            out.contains("    disabled: true\n    senders: [\"@shop.example\"]"),
            "{out}"
        );
        assert!(!out.contains("disabled: false"));
        assert_eq!(set_disabled(FILE, "nobody", true), None);
        assert_eq!(set_disabled(FILE, "blo", true), None);
    }

    #[test]
    fn enable_removes_the_line() {
        let disabled = set_disabled(FILE, "shop", true).unwrap();
        let out = set_disabled(&disabled, "shop", false).unwrap();
        assert!(!out.contains("disabled"), "{out}");
        assert!(out.contains(
            "  - name: shop # the shop
    password: \"$argon2id$y\"\n    senders"
        ));
        assert_eq!(set_disabled(FILE, "blog", false).unwrap(), FILE);
    }
}
