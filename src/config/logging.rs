//! `logging`: the log line format (text or JSON) and the levels for all crates and for
//! mxisd itself. Request and response bodies are never logged, so ma1sd's
//! `logging.requests` is refused with a hint.

use super::reader::Section;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone)]
pub struct LoggingConfig {
    pub format: LogFormat,
    /// Level for all crates.
    pub root: String,
    /// Level for mxisd's own messages.
    pub app: String,
}

const LOGGING_HINTS: &[(&str, &str)] = &[];

pub(crate) fn read_logging(s: &Section<'_, '_>) -> Option<LoggingConfig> {
    let format = match s.string("format").as_deref() {
        None | Some("text") => Some(LogFormat::Text),
        Some("json") => Some(LogFormat::Json),
        Some(other) => {
            s.problem("format", format!("{other:?} is not text or json"));
            None
        }
    };
    let level = |key: &str| match s.string(key) {
        None => Some("info".to_owned()),
        Some(l) => {
            let lower = l.to_ascii_lowercase();
            if ["error", "warn", "info", "debug", "trace", "off"].contains(&lower.as_str()) {
                Some(lower)
            } else {
                s.problem(
                    key,
                    format!("{l:?} is not one of error, warn, info, debug, trace, off"),
                );
                None
            }
        }
    };
    s.absent_feature(
        "requests",
        "logging request and response bodies (mxisd never logs request or response bodies: they carry tokens and 3PIDs)",
        &[],
    );
    let root = level("root");
    let app = level("app");
    s.finish(LOGGING_HINTS);
    Some(LoggingConfig {
        format: format?,
        root: root?,
        app: app?,
    })
}
