//! The file store on real files: serialised writes, comments kept, a file that must
//! be rewritten, validation, and the in-force hook.

use super::*;
use crate::config::{RateLimits, Users};
use std::sync::Mutex;

const FILE: &str = "# by hand\nusers:\n  # the blog\n  - name: blog # ours\n    password: \"$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$KHOHz/F7rdyUGFx6QhDrgaDnvWgb6/aB9Ff5pNxpYdw\"\n    senders: [\"@blog.example\"]\n    allow_any_header_from: true\n";

/// A store on a copy of `text`, and the users it last put in force.
fn store(text: &str) -> (tempfile::TempDir, FileStore, Arc<Mutex<Option<Users>>>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("users.yaml");
    std::fs::write(&path, text).unwrap();
    let seen = Arc::new(Mutex::new(None));
    let hook = seen.clone();
    let s = FileStore::new(path, RateLimits::default(), move |u| {
        *hook.lock().unwrap() = Some(u)
    });
    (dir, s, seen)
}

fn hash() -> String {
    crate::auth::hash_password("pw").unwrap()
}

fn new_user(name: &str, hash: &str) -> NewUser {
    NewUser {
        name: name.into(),
        password: Some(Password::Hash(hash.into())),
        senders: vec![format!("@{name}.example")],
        ..Default::default()
    }
}

#[tokio::test]
async fn concurrent_creates_are_all_kept() {
    let (dir, s, seen) = store(FILE);
    let h = hash();
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let (s, h) = (s.clone(), h.clone());
            tokio::spawn(async move { s.create(new_user(&format!("u{i}"), &h)).await })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let users = s.list().await.unwrap();
    assert_eq!(users.len(), 17);
    assert_eq!(seen.lock().unwrap().as_ref().unwrap().len(), 17);
    let text = std::fs::read_to_string(dir.path().join("users.yaml")).unwrap();
    assert!(
        text.starts_with("# by hand\nusers:\n  # the blog\n"),
        "{text}"
    );
    assert_eq!(
        s.create(new_user("u3", &h)).await.unwrap_err(),
        StoreError::Exists
    );
}

#[tokio::test]
async fn update_keeps_comments_and_keys_it_does_not_name() {
    let (dir, s, seen) = store(FILE);
    let change = UserChange {
        password: Some(Password::Plain(Secret::new("new password".into()))),
        senders: Some(vec!["@new.example".into()]),
        ..Default::default()
    };
    let u = s.update("blog", change).await.unwrap();
    assert_eq!(u.senders[0].to_string(), "@new.example");
    assert!(u.allow_any_header_from);
    let hash = u.password_hash.clone().unwrap();
    assert!(hash.starts_with("$argon2id$") && !hash.contains("new password"));
    let text = std::fs::read_to_string(dir.path().join("users.yaml")).unwrap();
    assert!(
        text.starts_with("# by hand\nusers:\n  # the blog\n  - name: blog\n"),
        "{text}"
    );
    let in_force = seen.lock().unwrap().take().unwrap();
    assert_eq!(in_force.get("blog").unwrap().password_hash, Some(hash));
    let err = s.update("nobody", UserChange::default()).await.unwrap_err();
    assert_eq!(err, StoreError::NotFound);
}

#[tokio::test]
async fn an_inline_list_is_rewritten_and_still_valid() {
    let (dir, s, _) = store("users: []\n");
    s.create(new_user("first", &hash())).await.unwrap();
    s.create(new_user("second", &hash())).await.unwrap();
    s.delete("first").await.unwrap();
    let names: Vec<String> = s
        .list()
        .await
        .unwrap()
        .iter()
        .map(|u| u.name.clone())
        .collect();
    assert_eq!(names, ["second"]);
    let text = std::fs::read_to_string(dir.path().join("users.yaml")).unwrap();
    assert!(!text.contains("first"), "{text}");
    assert_eq!(s.delete("first").await.unwrap_err(), StoreError::NotFound);
}

#[tokio::test]
async fn an_invalid_user_is_refused_with_reasons_and_nothing_written() {
    let (dir, s, seen) = store(FILE);
    let mut u = new_user("bad", &hash());
    u.senders = vec!["nobody".into()];
    u.networks = vec!["10.0.0.0/33".into()];
    let Err(StoreError::Invalid(reasons)) = s.create(u).await else {
        panic!("not refused")
    };
    assert!(reasons[0].starts_with("networks[0]: "), "{reasons:?}");
    assert!(reasons[1].starts_with("senders[0]: "), "{reasons:?}");
    let mut u = new_user("../x", &hash());
    u.password = None;
    assert!(matches!(s.create(u).await, Err(StoreError::Invalid(_))));
    assert_eq!(
        std::fs::read_to_string(dir.path().join("users.yaml")).unwrap(),
        FILE
    );
    assert!(seen.lock().unwrap().is_none());
}

#[tokio::test]
async fn a_broken_file_makes_the_store_unavailable() {
    let (_dir, s, _) = store("users: [\n");
    assert!(matches!(s.list().await, Err(StoreError::Unavailable(_))));
    let err = s.create(new_user("x", &hash())).await.unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
}

/// Two stores on one file (the server's and `postern user add`'s) do not lose each
/// other's users: the folder lock serialises them across processes too.
#[tokio::test]
async fn two_stores_on_one_file_keep_every_change() {
    let (dir, a, _) = store(FILE);
    let b = FileStore::new(dir.path().join("users.yaml"), RateLimits::default(), |_| {});
    let h = hash();
    let tasks: Vec<_> = (0..12)
        .map(|i| {
            let s = if i % 2 == 0 { a.clone() } else { b.clone() };
            let h = h.clone();
            tokio::spawn(async move { s.create(new_user(&format!("p{i}"), &h)).await })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(a.list().await.unwrap().len(), 13);
}
