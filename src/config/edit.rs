//! Safe edits of the users file for `postern user ...` and the admin API (through
//! the users store, `crate::users`).
//!
//! The file is edited as text, so that the operator's comments and layout survive:
//! a new user is appended to the `users:` list, `disable` sets or inserts a
//! `disabled: true` line in that user's entry, a changed user's entry is replaced
//! where it stands, a deleted one removed. The result is validated as a whole
//! before it replaces the file atomically (temporary file, fsync, rename; owner,
//! group and mode kept: [`write_atomically`]). When the
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

/// The block for a new user, indented as an item of the top-level `users:` list:
/// a password hash, or networks (a device user), or both.
pub fn user_block(
    name: &str,
    hash: Option<&str>,
    senders: &[String],
    networks: &[String],
) -> String {
    let list = |items: &[String]| {
        let quoted: Vec<String> = items.iter().map(|s| yaml_string(s)).collect();
        quoted.join(", ")
    };
    let mut block = format!("  - name: {}\n", yaml_string(name));
    if let Some(hash) = hash {
        block.push_str(&format!("    password: {}\n", yaml_string(hash)));
    }
    if !networks.is_empty() {
        block.push_str(&format!("    networks: [{}]\n", list(networks)));
    }
    block.push_str(&format!("    senders: [{}]\n", list(senders)));
    block
}

/// The block for an entry given as a YAML mapping (the users store's edits),
/// in the same shape as [`user_block`]: `  - KEY: ...`, then the other lines
/// indented four spaces.
pub fn mapping_block(entry: &serde_yaml::Value) -> Option<String> {
    let yaml = serde_yaml::to_string(entry).ok()?;
    let mut block = String::new();
    for (i, line) in yaml.lines().enumerate() {
        block.push_str(if i == 0 { "  - " } else { "    " });
        block.push_str(line);
        block.push('\n');
    }
    Some(block)
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

/// How far the items of the `users:` list are indented: two spaces as
/// [`user_block`] writes them, or none as a YAML serializer does (a file once
/// rewritten); `None` when the list has no item yet.
fn item_indent(text: &str) -> Option<usize> {
    let mut lines = text.lines().skip_while(|l| l.trim_end() != "users:");
    lines.next()?;
    lines
        .map(|l| l.trim_end())
        .find(|l| !l.is_empty() && !l.trim_start().starts_with('#'))
        .filter(|l| l.trim_start().starts_with("- "))
        .map(|l| l.len() - l.trim_start().len())
}

/// The text with a new user appended, indented like the items already there;
/// `None` if the file's shape needs a rewrite.
pub fn append_user(text: &str, block: &str) -> Option<String> {
    if !users_list_is_last(text) {
        return None;
    }
    let mut out = text.to_string();
    if !out.ends_with('\n') {
        out.push('\n');
    }
    let indent = " ".repeat(item_indent(text).unwrap_or(2));
    for line in block.lines() {
        out.push_str(&indent);
        out.push_str(line.strip_prefix("  ").unwrap_or(line));
        out.push('\n');
    }
    Some(out)
}

/// Where `name`'s entry is in the users file: the index of its `- name: NAME`
/// line inside the top-level `users:` list, the index just past its last line
/// (trailing blank lines left out), and the indentation of its dash. `None` when
/// the entry is not written that way, or when the file uses YAML anchors or aliases
/// (an entry removed or replaced as text could take an anchor others refer to): the
/// caller then rewrites the file from its parsed form.
fn entry_span(lines: &[&str], name: &str) -> Option<(usize, usize, usize)> {
    if lines.iter().any(|l| has_anchor_or_alias(l)) {
        return None;
    }
    let (first, last) = users_section(lines)?;
    let mut found = (first..last).filter(|&i| {
        lines[i]
            .trim_start()
            .strip_prefix("- name:")
            .is_some_and(|v| scalar_is(v, name))
    });
    let start = found.next()?;
    if found.next().is_some() {
        return None;
    }
    let dash = lines[start].len() - lines[start].trim_start().len();
    let mut end = start + 1;
    while end < last {
        let l = lines[end];
        let indent = l.len() - l.trim_start().len();
        if !l.trim().is_empty() && indent <= dash {
            break;
        }
        end += 1;
    }
    while end > start + 1 && lines[end - 1].trim().is_empty() {
        end -= 1;
    }
    Some((start, end, dash))
}

/// The lines of the top-level `users:` block list: from the line after `users:` to
/// the next top-level key (a `domains:` list may hold the same names).
fn users_section(lines: &[&str]) -> Option<(usize, usize)> {
    let first = lines.iter().position(|l| l.trim_end() == "users:")? + 1;
    let last = (first..lines.len())
        .find(|&i| {
            let l = lines[i];
            !l.is_empty() && !l.starts_with([' ', '-', '#'])
        })
        .unwrap_or(lines.len());
    Some((first, last))
}

/// Whether the value written after `- name:` is `name`, read as YAML reads it
/// (plain, single- or double-quoted with escapes), so `'"dave"'` is not `dave`.
fn scalar_is(written: &str, name: &str) -> bool {
    let value = written.split(" #").next().unwrap_or("").trim();
    serde_yaml::from_str::<String>(value).is_ok_and(|v| v == name)
}

/// Whether a line holds a YAML anchor (`&common`) or alias (`*common`) as a value
/// or an item (`senders: &common [...]`, `senders: *common`, `- *item`, `[*a, *b]`).
/// A false alarm costs only a rewrite.
fn has_anchor_or_alias(line: &str) -> bool {
    let t = line.trim_start();
    let t = t.strip_prefix("- ").unwrap_or(t);
    let value = t.split_once(": ").map_or(t, |(_, v)| v).trim_start();
    value.starts_with(['&', '*']) || value.contains("[*") || value.contains(", *")
}

/// Joins lines back into a file that ends with a line end.
fn join(lines: &[String]) -> String {
    let mut s = lines.join("\n");
    s.push('\n');
    s
}

/// The text with `disabled: true` set for `name` (`disabled: false`: the line
/// removed); `None` if the entry cannot be found as `- name: NAME` (the caller then
/// rewrites the file).
pub fn set_disabled(text: &str, name: &str, disabled: bool) -> Option<String> {
    let lines: Vec<&str> = text.lines().collect();
    let (start, end, dash) = entry_span(&lines, name)?;
    let mut out: Vec<String> = lines.iter().map(|s| s.to_string()).collect();
    let pad = " ".repeat(dash + 2);
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
    Some(join(&out))
}

/// The text with `name`'s entry replaced by `block` (an item as [`user_block`]
/// writes it: `  - name: ...` then fields indented four spaces), re-indented to
/// the entry's own indentation. Comments outside the entry are kept; those inside it
/// are lost. `None` if the entry cannot be found as `- name: NAME`.
pub fn replace_entry(text: &str, name: &str, block: &str) -> Option<String> {
    let lines: Vec<&str> = text.lines().collect();
    let (start, end, dash) = entry_span(&lines, name)?;
    let pad = " ".repeat(dash);
    let mut out: Vec<String> = lines[..start].iter().map(|s| s.to_string()).collect();
    out.extend(
        block
            .lines()
            .map(|l| format!("{pad}{}", l.strip_prefix("  ").unwrap_or(l))),
    );
    out.extend(lines[end..].iter().map(|s| s.to_string()));
    Some(join(&out))
}

/// The text without `name`'s entry; `None` if it cannot be found as `- name: NAME`.
pub fn remove_entry(text: &str, name: &str) -> Option<String> {
    let lines: Vec<&str> = text.lines().collect();
    let (start, end, _) = entry_span(&lines, name)?;
    let out: Vec<String> = (lines[..start].iter().chain(&lines[end..]))
        .map(|s| s.to_string())
        .collect();
    Some(join(&out))
}

/// Mode of a file that [`write_atomically`] creates (one that did not exist).
pub const NEW_FILE_MODE: u32 = 0o600;

/// Replaces `path` with `bytes` atomically (a temporary file beside it, fsync,
/// rename, fsync of the folder), keeping the replaced file's owner, group and mode.
///
/// Run as root, a plain rewrite would leave the file `root:root`, and a service
/// that dropped root could no longer read it. The temporary file is created `0600`,
/// then `fchown`ed and `fchmod`ed before it is renamed into place, so the new file is
/// never visible with other owners or looser permissions than the old one; if the
/// owner cannot be kept, nothing is replaced. A symlink is followed: its target is
/// replaced and the link stays. A file that does not exist yet is created
/// [`NEW_FILE_MODE`], owned by the caller.
pub fn write_atomically(path: &Path, bytes: impl AsRef<[u8]>) -> std::io::Result<()> {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
    let path = match std::fs::canonicalize(path) {
        Ok(real) => real,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => path.to_path_buf(),
        Err(e) => return Err(e),
    };
    let old = match std::fs::metadata(&path) {
        Ok(m) => Some(m),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e),
    };
    let tmp = temporary_name(&path);
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(NEW_FILE_MODE)
        .open(&tmp)?;
    let written = (|| {
        if let Some(m) = &old {
            let mine = f.metadata()?;
            if (mine.uid(), mine.gid()) != (m.uid(), m.gid()) {
                std::os::unix::fs::fchown(&f, Some(m.uid()), Some(m.gid()))?;
            }
            // After the chown, which may clear set-id bits.
            f.set_permissions(std::fs::Permissions::from_mode(m.mode() & 0o7777))?;
        }
        f.write_all(bytes.as_ref())?;
        f.sync_all()
    })();
    drop(f);
    if let Err(e) = written.and_then(|()| std::fs::rename(&tmp, &path)) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// `.NAME.tmp` beside `path`: same folder (so the rename is atomic), hidden.
fn temporary_name(path: &Path) -> std::path::PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "# Our users\nusers:\n  # the blog\n  - name: blog\n    password: \"$argon2id$x\"\n    senders: [\"@blog.example\"]\n  - name: shop # the shop\n    password: \"$argon2id$y\"\n    disabled: false\n    senders: [\"@shop.example\"]\n";

    #[test]
    fn append_keeps_comments() {
        let block = user_block(
            "new",
            Some("$argon2id$z"),
            &["@new.example".into(), "a@b.example".into()],
            &[],
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

    /// A file that was once rewritten has its items unindented; an item appended
    /// with two spaces would not parse.
    #[test]
    fn append_follows_the_indent_of_the_items() {
        let block = user_block("b", Some("$argon2id$z"), &["@b.example".into()], &[]);
        let flat = "users:\n- name: a\n  password: $argon2id$x\n  senders:\n  - '@a.example'\n";
        let out = append_user(flat, &block).unwrap();
        assert!(
            out.ends_with("\n- name: b\n  password: $argon2id$z\n  senders: ['@b.example']\n"),
            "{out}"
        );
        let v: serde_yaml::Value = serde_yaml::from_str(&out).unwrap();
        assert_eq!(v["users"][1]["senders"][0].as_str(), Some("@b.example"));
        let deep = "users:\n    # ours\n    - name: a\n      password: $argon2id$x\n";
        let out = append_user(deep, &block).unwrap();
        let v: serde_yaml::Value = serde_yaml::from_str(&out).unwrap();
        assert_eq!(v["users"][1]["name"].as_str(), Some("b"), "{out}");
        // An empty list: the usual two spaces.
        let out = append_user("users:\n", &block).unwrap();
        assert!(out.starts_with("users:\n  - name: b\n"), "{out}");
    }

    #[test]
    fn a_device_block_has_networks_and_no_password() {
        let block = user_block(
            "scanner",
            None,
            &["scanner@office.example".into()],
            &["192.168.10.0/24".into(), "2001:db8:10::/64".into()],
        );
        assert_eq!(
            block,
            "  - name: scanner\n    networks: [192.168.10.0/24, 2001:db8:10::/64]\n    senders: [scanner@office.example]\n"
        );
        let out = append_user(FILE, &block).unwrap();
        let v: serde_yaml::Value = serde_yaml::from_str(&out).unwrap();
        assert_eq!(
            v["users"][2]["networks"][1].as_str(),
            Some("2001:db8:10::/64")
        );
        assert!(v["users"][2]["password"].is_null());
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

    #[test]
    fn an_entry_is_replaced_where_it_stands_with_comments_around_kept() {
        let entry: serde_yaml::Value = serde_yaml::from_str(
            "name: blog\npassword: $argon2id$new\nsenders:\n- '@blog.example'\nallow_any_header_from: true\n",
        )
        .unwrap();
        let block = mapping_block(&entry).unwrap();
        let out = replace_entry(FILE, "blog", &block).unwrap();
        assert_eq!(
            out,
            "# Our users\nusers:\n  # the blog\n  - name: blog\n    password: $argon2id$new\n    senders:\n    - '@blog.example'\n    allow_any_header_from: true\n  - name: shop # the shop\n    password: \"$argon2id$y\"\n    disabled: false\n    senders: [\"@shop.example\"]\n"
        );
        let v: serde_yaml::Value = serde_yaml::from_str(&out).unwrap();
        assert_eq!(v["users"][0]["senders"][0].as_str(), Some("@blog.example"));
        assert_eq!(v["users"][1]["name"].as_str(), Some("shop"));
        // The last entry, and a file whose items are not indented.
        let out = replace_entry(FILE, "shop", &block.replace("blog", "shop")).unwrap();
        assert!(out.ends_with("  - name: shop\n    password: $argon2id$new\n    senders:\n    - '@shop.example'\n    allow_any_header_from: true\n"), "{out}");
        let flat =
            "users:\n- name: a\n  password: $argon2id$x\n- name: b\n  password: $argon2id$y\n";
        let out = replace_entry(flat, "a", &block.replace("blog", "a")).unwrap();
        let v: serde_yaml::Value = serde_yaml::from_str(&out).unwrap();
        assert_eq!(v["users"][0]["password"].as_str(), Some("$argon2id$new"));
        assert_eq!(v["users"][1]["name"].as_str(), Some("b"));
        assert_eq!(replace_entry(FILE, "nobody", &block), None);
    }

    #[test]
    fn an_entry_is_removed_and_the_rest_kept() {
        let out = remove_entry(FILE, "blog").unwrap();
        assert_eq!(
            out,
            "# Our users\nusers:\n  # the blog\n  - name: shop # the shop\n    password: \"$argon2id$y\"\n    disabled: false\n    senders: [\"@shop.example\"]\n"
        );
        let out = remove_entry(FILE, "shop").unwrap();
        let v: serde_yaml::Value = serde_yaml::from_str(&out).unwrap();
        assert_eq!(v["users"].as_sequence().unwrap().len(), 1);
        assert!(out.contains("# Our users"));
        assert_eq!(remove_entry(FILE, "sho"), None);
    }

    fn owner_and_mode(path: &Path) -> (u32, u32, u32) {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(path).unwrap();
        (m.uid(), m.gid(), m.mode() & 0o7777)
    }

    #[test]
    fn an_entry_is_found_by_its_yaml_value_in_the_users_list_only() {
        let text = "domains:\n  - name: \"site1.example\"\n    rate_limits: { messages_per_hour: 5 }\n\
                    users:\n  - name: \"dave\"\n    senders: [\"@d.example\"]\n\
                    \x20 - name: '\"dave\"'\n    senders: [\"@q.example\"]\n\
                    \x20 - name: site1.example\n    senders: [\"@s.example\"]\n";
        // `'"dave"'` is the user whose name has quotes in it, not dave.
        let out = set_disabled(text, "\"dave\"", true).unwrap();
        let dave_quoted = out.find("'\"dave\"'").unwrap();
        assert!(out[dave_quoted..].contains("disabled: true"), "{out}");
        assert!(!out[..dave_quoted].contains("disabled"), "{out}");
        // A user named like a listed domain: its own entry, not the domain's.
        let out = remove_entry(text, "site1.example").unwrap();
        assert!(out.contains("messages_per_hour: 5"), "{out}");
        assert!(!out.contains("@s.example"), "{out}");
        // A name written twice is not guessed at: the caller rewrites.
        let twice = format!("{text}  - name: dave\n    senders: []\n");
        assert!(remove_entry(&twice, "dave").is_none());
    }

    #[test]
    fn a_file_with_anchors_or_aliases_is_not_edited_as_text() {
        let text = "users:\n  - name: a\n    senders: &common [\"@x.example\"]\n\
                    \x20 - name: b\n    senders: *common\n";
        assert!(remove_entry(text, "a").is_none());
        assert!(set_disabled(text, "b", true).is_none());
        let plain = "users:\n  - name: a\n    senders: [\"@x.example\"] # R&D\n";
        assert!(remove_entry(plain, "a").is_some());
    }

    #[test]
    fn atomic_write_keeps_owner_group_and_mode() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.yaml");
        std::fs::write(&path, "old\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        // As root (as `postern user ...` runs), hand the file to another account
        // first: the rewrite must not make it root's.
        let root = nix::unistd::geteuid().is_root();
        if root {
            std::os::unix::fs::chown(&path, Some(65534), Some(65533)).unwrap();
        }
        let before = owner_and_mode(&path);
        write_atomically(&path, "new\n").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "new\n");
        assert_eq!(owner_and_mode(&path), before);
        if root {
            assert_eq!(before, (65534, 65533, 0o640));
        }
        // No temporary file is left behind.
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1);
    }

    #[test]
    fn atomic_write_follows_a_symlink_and_creates_private_files() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real.yaml");
        std::fs::write(&real, "old\n").unwrap();
        std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o604)).unwrap();
        let link = dir.path().join("link.yaml");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        write_atomically(&link, "new\n").unwrap();
        assert!(std::fs::symlink_metadata(&link).unwrap().is_symlink());
        assert_eq!(std::fs::read_to_string(&real).unwrap(), "new\n");
        assert_eq!(owner_and_mode(&real).2, 0o604);
        let fresh = dir.path().join("fresh.yaml");
        write_atomically(&fresh, "x").unwrap();
        assert_eq!(owner_and_mode(&fresh).2, NEW_FILE_MODE);
    }
}
