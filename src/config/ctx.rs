//! What each section's parser works with: the YAML mapping, the file it came from
//! (to name it in problems and to resolve relative paths), and the problems so far.

use super::Problems;
use serde::de::DeserializeOwned;
use std::path::{Path, PathBuf};

pub(super) struct Ctx<'a> {
    pub map: &'a serde_yaml::Mapping,
    pub file: &'a Path,
    /// Relative paths in the config are relative to this folder (the config's own).
    pub base: &'a Path,
    pub problems: &'a mut Problems,
}

impl Ctx<'_> {
    /// Deserializes one top-level section, recording its error under its key.
    pub fn section<T: DeserializeOwned>(&mut self, key: &str) -> Option<T> {
        let value = self.map.get(key)?;
        match serde_yaml::from_value(value.clone()) {
            Ok(v) => Some(v),
            Err(e) => {
                self.add(key, e.to_string());
                None
            }
        }
    }

    /// Records a problem under `key` in this file.
    pub fn add(&mut self, key: &str, why: impl Into<String>) {
        self.problems.add(self.file, key, why);
    }

    /// Whether a problem is already recorded under exactly `key`.
    pub fn has_problem(&self, key: &str) -> bool {
        self.problems.0.iter().any(|p| p.key == key)
    }

    /// `p` as is when absolute, else relative to the config's folder.
    pub fn resolve(&self, p: PathBuf) -> PathBuf {
        if p.is_absolute() {
            p
        } else {
            self.base.join(p)
        }
    }
}
