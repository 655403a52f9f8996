//! Logging to stderr (journald picks it up under systemd), with a filter that can change
//! while the agent runs: a config reload, or central's `set_log_level` command with an expiry.

use crate::config::{Config, LogFormat};
use std::sync::Arc;
use tracing_subscriber::EnvFilter;

/// Changes the log filter of the running process.
#[derive(Clone)]
pub struct LogControl {
    set: Arc<dyn Fn(EnvFilter) -> Result<(), String> + Send + Sync>,
    /// `RELAIS_LOG` was set: a person is debugging; config changes do not override them.
    pinned_by_env: bool,
}

impl LogControl {
    /// A control that changes nothing (logging was initialised elsewhere, e.g. in tests).
    pub fn inert() -> LogControl {
        LogControl {
            set: Arc::new(|_| Ok(())),
            pinned_by_env: false,
        }
    }

    /// Apply `directives` (`info`, `info,relais::sync=debug`, …). Refused when `RELAIS_LOG`
    /// pins the filter, or when the directives do not parse.
    pub fn set(&self, directives: &str) -> Result<(), String> {
        if self.pinned_by_env {
            return Err("RELAIS_LOG is set in the environment and takes precedence".into());
        }
        let filter = EnvFilter::try_new(directives).map_err(|e| e.to_string())?;
        (self.set)(filter)
    }
}

/// Install the global subscriber. Call once per process.
pub fn init(config: &Config) -> LogControl {
    let from_env = std::env::var("RELAIS_LOG")
        .ok()
        .and_then(|v| EnvFilter::try_new(v).ok());
    let pinned_by_env = from_env.is_some();
    let filter = from_env
        .or_else(|| EnvFilter::try_new(&config.log.level).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    // Colours only for a person at a terminal: journald and log shippers get plain text.
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    // The handle's type depends on the formatter, hence one closure per format.
    let set: Arc<dyn Fn(EnvFilter) -> Result<(), String> + Send + Sync> = match config.log.format {
        LogFormat::Json => {
            let builder = builder.json().with_filter_reloading();
            let handle = builder.reload_handle();
            let _ = builder.try_init();
            Arc::new(move |f| handle.reload(f).map_err(|e| e.to_string()))
        }
        LogFormat::Text => {
            let builder = builder.with_filter_reloading();
            let handle = builder.reload_handle();
            let _ = builder.try_init();
            Arc::new(move |f| handle.reload(f).map_err(|e| e.to_string()))
        }
    };
    LogControl { set, pinned_by_env }
}
