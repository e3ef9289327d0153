//! What loading reports: every problem found, each with its file and key, so that
//! one run of `check-config` lists them all.

use std::fmt;
use std::path::{Path, PathBuf};

/// One problem in a config or users file: which file, which key, why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub file: PathBuf,
    pub key: String,
    pub why: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}: {}", self.file.display(), self.why)
        } else {
            write!(f, "{}: {}: {}", self.file.display(), self.key, self.why)
        }
    }
}

/// Every problem found while loading.
#[derive(Debug, Default)]
pub struct Problems(pub Vec<Problem>);

impl Problems {
    pub fn add(&mut self, file: &Path, key: &str, why: impl Into<String>) {
        self.0.push(Problem {
            file: file.to_path_buf(),
            key: key.to_string(),
            why: why.into(),
        });
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for p in &self.0 {
            writeln!(f, "{p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Problems {}
