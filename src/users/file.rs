//! [`FileStore`]: the users store on the users file.
//!
//! Every change reads the file, makes the new text (a text edit that keeps the
//! operator's comments where `config::edit` can, else a rewrite of the parsed file,
//! logged), validates the whole of it with `config::parse_users`, replaces the file
//! atomically and hands the new users to the `in_force` hook (the running server's
//! `Authenticator::replace_users`), so no SIGHUP is needed. Changes are serialised
//! by a lock that other processes honour too (`postern user ...`), so two at once
//! cannot lose each other's edit. File work and argon2 run on the blocking pool,
//! never on the async runtime.

use super::domains::{domains_block, replace_domains};
use super::entry::{apply_change, check_argon2id, check_name, new_entry, reasons};
use super::{
    BoxFuture, DomainEntry, NewUser, Password, RateLimitsInput, StoreError, UserChange, UsersStore,
};
use crate::config::{Problems, RateLimits, User, Users, edit, parse_users};
use crate::lock::MutexExt;
use serde_yaml::Value;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use tracing::warn;

/// What puts a new set of users in force.
type InForce = Box<dyn Fn(Users) + Send + Sync>;

/// The users file as a [`UsersStore`].
#[derive(Clone)]
pub struct FileStore {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    /// The config's `rate_limits`, which users' own override.
    defaults: RateLimits,
    in_force: InForce,
    /// Held while a change reads, edits and writes the file.
    writing: Mutex<()>,
    /// The file's text digest and its users as last parsed: a read of an unchanged
    /// file (most are) costs a read and a hash, not a parse of every user.
    parsed: Mutex<Option<(u64, Arc<Users>)>>,
}

impl FileStore {
    /// A store on `path`; `in_force` is called with the new users after each change
    /// (the CLI, which has no server in its process, passes a no-op and asks the
    /// server to reload).
    pub fn new(
        path: PathBuf,
        defaults: RateLimits,
        in_force: impl Fn(Users) + Send + Sync + 'static,
    ) -> FileStore {
        FileStore {
            inner: Arc::new(Inner {
                path,
                defaults,
                in_force: Box::new(in_force),
                writing: Mutex::new(()),
                parsed: Mutex::new(None),
            }),
        }
    }

    /// Runs `f` on the blocking pool.
    fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Inner) -> Result<T, StoreError> + Send + 'static,
    ) -> BoxFuture<'static, Result<T, StoreError>> {
        let inner = self.inner.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || f(&inner))
                .await
                .map_err(|e| StoreError::Unavailable(e.to_string()))?
        })
    }
}

impl UsersStore for FileStore {
    fn list(&self) -> BoxFuture<'_, Result<Vec<Arc<User>>, StoreError>> {
        self.blocking(|inner| Ok(inner.read()?.1.iter().cloned().collect()))
    }

    fn get<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Arc<User>, StoreError>> {
        let name = name.to_string();
        self.blocking(move |inner| {
            inner
                .read()?
                .1
                .get(&name)
                .cloned()
                .ok_or(StoreError::NotFound)
        })
    }

    fn create(&self, user: NewUser) -> BoxFuture<'_, Result<Arc<User>, StoreError>> {
        self.blocking(move |inner| {
            check_name(&user.name).map_err(|e| StoreError::Invalid(vec![e]))?;
            let hash = hash_of(user.password.as_ref())?;
            let _writing = inner.lock()?;
            let (text, users) = inner.read()?;
            if users.get(&user.name).is_some() {
                return Err(StoreError::Exists);
            }
            let entry = new_entry(&user, hash.as_deref());
            let index = users.len();
            let new = edit::mapping_block(&entry)
                .and_then(|block| edit::append_user(&text, &block))
                .map_or_else(|| inner.rewrite(&text, |list| list.push(entry)), Ok)?;
            inner
                .commit(&new, index, Some(&user.name))?
                .ok_or(StoreError::NotFound)
        })
    }

    fn update<'a>(
        &'a self,
        name: &'a str,
        change: UserChange,
    ) -> BoxFuture<'a, Result<Arc<User>, StoreError>> {
        let name = name.to_string();
        self.blocking(move |inner| {
            let hash = hash_of(change.password.as_ref())?;
            let _writing = inner.lock()?;
            let (text, _) = inner.read()?;
            let (index, mut entry) = find(&text, &name)?;
            apply_change(&mut entry, &change, hash.as_deref());
            let entry = Value::Mapping(entry);
            let edited = match change.only_disabled() {
                Some(disabled) => edit::set_disabled(&text, &name, disabled),
                None => edit::mapping_block(&entry)
                    .and_then(|block| edit::replace_entry(&text, &name, &block)),
            };
            let new =
                edited.map_or_else(|| inner.rewrite(&text, |list| list[index] = entry), Ok)?;
            inner
                .commit(&new, index, Some(&name))?
                .ok_or(StoreError::NotFound)
        })
    }

    fn delete<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        let name = name.to_string();
        self.blocking(move |inner| {
            let _writing = inner.lock()?;
            let (text, _) = inner.read()?;
            let (index, _) = find(&text, &name)?;
            let new = edit::remove_entry(&text, &name).map_or_else(
                || {
                    inner.rewrite(&text, |list| {
                        list.remove(index);
                    })
                },
                Ok,
            )?;
            inner.commit(&new, index, None).map(|_| ())
        })
    }

    fn domains(&self) -> BoxFuture<'_, Result<Vec<DomainEntry>, StoreError>> {
        self.blocking(|inner| {
            let users = inner.read()?.1;
            Ok((users.domains().into_iter())
                .map(|(d, l)| (d.to_string(), l.into()))
                .collect())
        })
    }

    fn put_domain<'a>(
        &'a self,
        domain: &'a str,
        limits: RateLimitsInput,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        let domain = domain.to_string();
        self.edit_domains(move |list| {
            let new = match list.iter_mut().find(|(d, _)| *d == domain) {
                Some(entry) => {
                    entry.1 = limits;
                    false
                }
                None => {
                    list.push((domain, limits));
                    true
                }
            };
            Ok(new)
        })
    }

    fn delete_domain<'a>(&'a self, domain: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        let domain = domain.to_string();
        self.edit_domains(move |list| {
            let before = list.len();
            list.retain(|(d, _)| *d != domain);
            if list.len() == before {
                return Err(StoreError::NotFound);
            }
            Ok(())
        })
    }
}

impl FileStore {
    /// Rewrites the `domains:` block with `change` made to the list (sorted), and
    /// puts the result in force.
    fn edit_domains<T: Send + 'static>(
        &self,
        change: impl FnOnce(&mut Vec<DomainEntry>) -> Result<T, StoreError> + Send + 'static,
    ) -> BoxFuture<'static, Result<T, StoreError>> {
        self.blocking(move |inner| {
            let _writing = inner.lock()?;
            let (text, users) = inner.read()?;
            let mut list: Vec<DomainEntry> = (users.domains().into_iter())
                .map(|(d, l)| (d.to_string(), l.into()))
                .collect();
            let answer = change(&mut list)?;
            list.sort_by(|a, b| a.0.cmp(&b.0));
            let new = replace_domains(&text, &domains_block(&list));
            let mut problems = Problems::default();
            let Some(users) = parse_users(&new, &inner.path, &inner.defaults, &mut problems) else {
                return Err(StoreError::Invalid(
                    problems
                        .0
                        .iter()
                        .map(|p| format!("{}: {}", p.key, p.why))
                        .collect(),
                ));
            };
            edit::write_atomically(&inner.path, &new).map_err(|e| {
                StoreError::Unavailable(format!("cannot write {}: {e}", inner.path.display()))
            })?;
            (inner.in_force)(users);
            Ok(answer)
        })
    }
}

/// The hash to store for a password given in a change: plain ones hashed with
/// argon2id, given hashes checked.
pub(super) fn hash_of(password: Option<&Password>) -> Result<Option<String>, StoreError> {
    let invalid = |why: String| StoreError::Invalid(vec![why]);
    match password {
        None => Ok(None),
        Some(Password::Plain(p)) if p.expose().is_empty() => {
            Err(invalid("password: must not be empty".into()))
        }
        Some(Password::Plain(p)) => crate::auth::hash_password(p.expose())
            .map(Some)
            .map_err(StoreError::Unavailable),
        Some(Password::Hash(h)) => check_argon2id(h).map(|()| Some(h.clone())).map_err(invalid),
    }
}

/// `name`'s entry in the file's `users:` list: its index and a copy of it.
fn find(text: &str, name: &str) -> Result<(usize, serde_yaml::Mapping), StoreError> {
    let doc: Value =
        serde_yaml::from_str(text).map_err(|e| StoreError::Unavailable(e.to_string()))?;
    let list = doc["users"].as_sequence().ok_or(StoreError::NotFound)?;
    list.iter()
        .enumerate()
        .find(|(_, u)| u["name"].as_str() == Some(name))
        .and_then(|(i, u)| Some((i, u.as_mapping()?.clone())))
        .ok_or(StoreError::NotFound)
}

impl Inner {
    /// Serialises changes: within this process (the lock), and with other processes
    /// (`postern user ...` beside the server's admin API) by an exclusive `flock` on
    /// the users file's folder, which every change's atomic rename writes in anyway.
    /// The file itself cannot carry the lock: each change replaces it.
    fn lock(&self) -> Result<(std::sync::MutexGuard<'_, ()>, std::fs::File), StoreError> {
        let guard = self.writing.locked();
        let dir = match self.path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => std::path::Path::new("."),
        };
        let folder = std::fs::File::open(dir)
            .and_then(|f| f.lock().map(|()| f))
            .map_err(|e| {
                StoreError::Unavailable(format!("cannot lock {} for a change: {e}", dir.display()))
            })?;
        Ok((guard, folder))
    }

    /// The file's text and its users, validated (parsed again only when the text
    /// changed).
    fn read(&self) -> Result<(String, Arc<Users>), StoreError> {
        let text = std::fs::read_to_string(&self.path).map_err(|e| {
            StoreError::Unavailable(format!("cannot read {}: {e}", self.path.display()))
        })?;
        let digest = {
            use std::hash::{Hash, Hasher};
            let mut h = std::hash::DefaultHasher::new();
            text.hash(&mut h);
            h.finish()
        };
        if let Some((d, users)) = &*self.parsed.locked()
            && *d == digest
        {
            return Ok((text, users.clone()));
        }
        let mut problems = Problems::default();
        let users = parse_users(&text, &self.path, &self.defaults, &mut problems);
        let users = Arc::new(users.ok_or_else(|| {
            StoreError::Unavailable(format!("the users file is invalid: {problems}"))
        })?);
        *self.parsed.locked() = Some((digest, users.clone()));
        Ok((text, users))
    }

    /// The file rewritten from its parsed form with `change` made to the list; its
    /// comments are lost, which is logged.
    fn rewrite(
        &self,
        text: &str,
        change: impl FnOnce(&mut Vec<Value>),
    ) -> Result<String, StoreError> {
        let mut doc: Value =
            serde_yaml::from_str(text).map_err(|e| StoreError::Unavailable(e.to_string()))?;
        if !doc["users"].is_sequence() {
            doc["users"] = Value::Sequence(Vec::new());
        }
        if let Some(list) = doc["users"].as_sequence_mut() {
            change(list);
        }
        warn!(file = %self.path.display(), "the users file had to be rewritten; its comments are lost");
        serde_yaml::to_string(&doc).map_err(|e| StoreError::Unavailable(e.to_string()))
    }

    /// Validates `new` (problems about entry `index` become the reasons), writes it,
    /// puts it in force, and returns `name`'s user in it.
    fn commit(
        &self,
        new: &str,
        index: usize,
        name: Option<&str>,
    ) -> Result<Option<Arc<User>>, StoreError> {
        let mut problems = Problems::default();
        let Some(users) = parse_users(new, &self.path, &self.defaults, &mut problems) else {
            return Err(StoreError::Invalid(reasons(&problems, index)));
        };
        edit::write_atomically(&self.path, new).map_err(|e| {
            StoreError::Unavailable(format!("cannot write {}: {e}", self.path.display()))
        })?;
        let user = name.and_then(|n| users.get(n).cloned());
        (self.in_force)(users);
        Ok(user)
    }
}
