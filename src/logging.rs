//! Log set-up: tracing to stderr, human-readable or JSON lines. `RUST_LOG` overrides the
//! configured levels. What must never be logged (tokens, passwords, private keys, full
//! 3PID addresses) is kept out at the call sites; [`redact_address`] is the helper for
//! addresses.

use crate::config::{LogFormat, LoggingConfig};
use std::sync::OnceLock;
use tracing_subscriber::EnvFilter;

type SetFilter = Box<dyn Fn(EnvFilter) -> Result<(), String> + Send + Sync>;

/// Replaces the installed subscriber's filter (a SIGHUP changing `logging.root`/`.app`).
/// Process-wide like the subscriber it belongs to; set once by [`init`].
static SET_FILTER: OnceLock<SetFilter> = OnceLock::new();

fn filter_of(config: &LoggingConfig) -> EnvFilter {
    EnvFilter::new(format!("{},mxisd={}", config.root, config.app))
}

fn from_env() -> Option<EnvFilter> {
    std::env::var_os(EnvFilter::DEFAULT_ENV)
        .is_some()
        .then(EnvFilter::try_from_default_env)
        .and_then(Result::ok)
}

/// Installs the global subscriber. Safe to call once per process; later calls are no-ops.
pub fn init(config: &LoggingConfig) {
    let filter = from_env().unwrap_or_else(|| filter_of(config));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let installed = match config.format {
        LogFormat::Json => {
            let builder = builder.json().flatten_event(true).with_filter_reloading();
            let handle = builder.reload_handle();
            builder.try_init().map(|()| -> SetFilter {
                Box::new(move |f| handle.reload(f).map_err(|e| e.to_string()))
            })
        }
        LogFormat::Text => {
            let builder = builder
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                .with_filter_reloading();
            let handle = builder.reload_handle();
            builder.try_init().map(|()| -> SetFilter {
                Box::new(move |f| handle.reload(f).map_err(|e| e.to_string()))
            })
        }
    };
    if let Ok(set) = installed {
        let _ = SET_FILTER.set(set);
    }
}

/// What [`set_levels`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Levels {
    /// The new levels are in force.
    Applied,
    /// `RUST_LOG` decides the levels; the config's are not used.
    FromEnvironment,
    /// No subscriber of ours is installed (the server runs inside another program).
    NotOurs,
}

/// Puts `logging.root` and `logging.app` in force without a restart.
pub fn set_levels(config: &LoggingConfig) -> Result<Levels, String> {
    if from_env().is_some() {
        return Ok(Levels::FromEnvironment);
    }
    match SET_FILTER.get() {
        Some(set) => set(filter_of(config)).map(|()| Levels::Applied),
        None => Ok(Levels::NotOurs),
    }
}

/// Shortens a 3PID address for logs: `alice@example.org` → `al…@example.org`,
/// `447700900123` → `44…23`. Enough to tell entries apart, not enough to harvest.
pub fn redact_address(address: &str) -> String {
    let take = |s: &str, n: usize| s.chars().take(n).collect::<String>();
    match address.rsplit_once('@') {
        Some((local, domain)) => format!("{}…@{domain}", take(local, 2)),
        None => {
            let chars: Vec<char> = address.chars().collect();
            if chars.len() <= 4 {
                "…".into()
            } else {
                let tail: String = chars[chars.len() - 2..].iter().collect();
                format!("{}…{tail}", take(address, 2))
            }
        }
    }
}

/// Writes to standard output for the CLI's [`outln!`](crate::outln): when the reader
/// has gone away (`mxisd status | head -1`), exits quietly instead of panicking as
/// `println!` does; any other write error ends the command with exit status 1.
pub fn write_out(text: std::fmt::Arguments<'_>) {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_fmt(text).and_then(|()| out.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            // Whoever reads has what they wanted: no message, no failure.
            std::process::exit(0);
        }
        eprintln!("error: cannot write to standard output: {e}");
        std::process::exit(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_shortened() {
        assert_eq!(redact_address("alice@example.org"), "al…@example.org");
        assert_eq!(redact_address("447700900123"), "44…23");
        assert_eq!(redact_address("123"), "…");
        assert_eq!(redact_address("é@x"), "é…@x");
    }
}
