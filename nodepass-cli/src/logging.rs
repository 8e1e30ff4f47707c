//! Logging set up from the URL's `log=` level: human-readable or JSON lines on stderr.
//!
//! - `none`: nothing is logged.
//! - `debug`, `info`, `warn`, `error`: that level and above from nodepass itself; other crates
//!   (TLS, HTTP) only from `warn` up, so `debug` stays readable.
//! - `event`: only the periodic status events, which the tunnel emits with the tracing target
//!   [`EVENT_TARGET`].
//!
//! `NODEPASS_LOG_FORMAT=json` writes one JSON object per line instead of text. Nothing here ever
//! sees the key: callers log the masked canonical URL (`Display` of `Config`).

use nodepass_core::supervisor::LogCapture;
use std::io::IsTerminal;

use anyhow::bail;
use nodepass_core::config::LogLevel;
use tracing::level_filters::LevelFilter;
use tracing_subscriber::filter::Targets;

/// The tracing target of the periodic status events (`log=event` shows only these).
pub const EVENT_TARGET: &str = "nodepass::event";

/// The environment variable choosing the log format: `text` (default) or `json`.
pub const FORMAT_ENV: &str = "NODEPASS_LOG_FORMAT";

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Human-readable lines (colored when stderr is a terminal).
    Text,
    /// One JSON object per line.
    Json,
}

impl Format {
    /// The format named by `value` (the content of [`FORMAT_ENV`]); unset or empty is text.
    pub fn from_env_value(value: Option<&str>) -> anyhow::Result<Format> {
        match value.map(str::trim) {
            None | Some("" | "text") => Ok(Format::Text),
            Some("json") => Ok(Format::Json),
            Some(other) => bail!("{FORMAT_ENV} must be text or json, not {other:?}"),
        }
    }
}

/// The filter for a `log=` level: which targets and levels are written.
pub fn filter(level: LogLevel) -> Targets {
    let ours = match level {
        LogLevel::None | LogLevel::Event => LevelFilter::OFF,
        LogLevel::Debug => LevelFilter::DEBUG,
        LogLevel::Info => LevelFilter::INFO,
        LogLevel::Warn => LevelFilter::WARN,
        LogLevel::Error => LevelFilter::ERROR,
    };
    match level {
        LogLevel::None => Targets::new(),
        LogLevel::Event => Targets::new().with_target(EVENT_TARGET, LevelFilter::TRACE),
        _ => Targets::new()
            // Every nodepass crate (`nodepass_core`, ...) and the event target start with this.
            .with_target("nodepass", ours)
            .with_default(ours.min(LevelFilter::WARN)),
    }
}

/// Install the global subscriber for `level` in `format`, writing to stderr. Call once.
///
/// With `capture`, also installs the supervisor's [`LogCapture`] layer (the master keeps each
/// instance's recent log lines for its API), whatever the master's own level, even `none`.
pub fn init(level: LogLevel, format: Format, capture: bool) -> anyhow::Result<()> {
    use tracing_subscriber::filter::{LevelFilter, Targets};
    use tracing_subscriber::prelude::*;
    let output = (level != LogLevel::None).then(|| {
        let base = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
        let layer = match format {
            Format::Text => base.with_ansi(std::io::stderr().is_terminal()).boxed(),
            Format::Json => base.json().with_ansi(false).boxed(),
        };
        layer.with_filter(filter(level))
    });
    // Instances filter their own lines by their URL's `log=`; the layer sees nodepass events.
    let capture = capture.then(|| {
        LogCapture::new().with_filter(
            Targets::new()
                .with_target("nodepass_core", LevelFilter::DEBUG)
                .with_target("nodepass", LevelFilter::DEBUG),
        )
    });
    tracing_subscriber::registry()
        .with(output)
        .with(capture)
        .try_init()?;
    Ok(())
}

/// True when `level` shows error records from nodepass (so a fatal error can be logged rather
/// than printed).
pub fn shows_errors(level: LogLevel) -> bool {
    !matches!(level, LogLevel::None | LogLevel::Event)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing::Level;

    fn enabled(level: LogLevel, target: &str, at: Level) -> bool {
        filter(level).would_enable(target, &at)
    }

    #[test]
    fn levels_pick_targets() {
        assert!(enabled(
            LogLevel::Info,
            "nodepass_core::tunnel",
            Level::INFO
        ));
        assert!(!enabled(
            LogLevel::Info,
            "nodepass_core::tunnel",
            Level::DEBUG
        ));
        assert!(enabled(
            LogLevel::Debug,
            "nodepass_core::tunnel",
            Level::DEBUG
        ));
        assert!(!enabled(LogLevel::Debug, "rustls::conn", Level::DEBUG));
        assert!(enabled(LogLevel::Debug, "rustls::conn", Level::WARN));
        assert!(!enabled(LogLevel::Error, "nodepass_core", Level::WARN));
        assert!(enabled(LogLevel::Event, EVENT_TARGET, Level::INFO));
        assert!(!enabled(
            LogLevel::Event,
            "nodepass_core::tunnel",
            Level::ERROR
        ));
        assert!(!enabled(LogLevel::None, EVENT_TARGET, Level::ERROR));
    }

    #[test]
    fn format_from_env() {
        assert_eq!(Format::from_env_value(None).unwrap(), Format::Text);
        assert_eq!(Format::from_env_value(Some("json")).unwrap(), Format::Json);
        assert!(Format::from_env_value(Some("yaml")).is_err());
    }
}
