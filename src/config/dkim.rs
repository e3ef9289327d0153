//! `dkim`: where the DKIM signing keys are (`DOMAIN/SELECTOR.pem`, made by
//! `postern dkim generate`).

use super::ctx::Ctx;
use serde::Deserialize;
use std::path::PathBuf;

#[derive(Debug, Clone)]
pub struct Dkim {
    /// Folder of `DOMAIN/SELECTOR.pem` keys; a folder that does not exist holds
    /// none (nothing is signed).
    pub keys_directory: PathBuf,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawDkim {
    keys_directory: Option<PathBuf>,
}

/// `dkim`: the keys folder defaults to `dkim` beside the config file
/// (`/etc/postern/dkim` for the default config).
pub(super) fn dkim(cx: &mut Ctx) -> Dkim {
    let d: RawDkim = cx.section("dkim").unwrap_or_default();
    Dkim {
        keys_directory: cx.resolve(d.keys_directory.unwrap_or_else(|| PathBuf::from("dkim"))),
    }
}
