//! `log`: text or JSON lines, and the level filter.

use super::ctx::Ctx;
use serde::Deserialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone)]
pub struct Log {
    pub format: LogFormat,
    pub level: String,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLog {
    format: Option<LogFormat>,
    level: Option<String>,
}

/// `log`: text at `info` unless told otherwise; the level must be a valid filter.
pub(super) fn log(cx: &mut Ctx) -> Log {
    let lg: RawLog = cx.section("log").unwrap_or_default();
    let log = Log {
        format: lg.format.unwrap_or(LogFormat::Text),
        level: lg.level.unwrap_or_else(|| "info".into()),
    };
    if tracing_subscriber::EnvFilter::try_new(&log.level).is_err() {
        cx.add(
            "log.level",
            format!(
                "{:?} is not a level (error, warn, info, debug, trace)",
                log.level
            ),
        );
    }
    log
}
