//! Log set-up: tracing to stderr, human-readable or JSON lines. `RUST_LOG` overrides the
//! configured levels. What must never be logged (tokens, passwords, private keys, full
//! 3PID addresses) is kept out at the call sites; [`redact_address`] is the helper for
//! addresses.

use crate::config::{LogFormat, LoggingConfig};
use tracing_subscriber::EnvFilter;

/// Installs the global subscriber. Safe to call once per process; later calls are no-ops.
pub fn init(config: &LoggingConfig) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(format!("{},mxisd={}", config.root, config.app)));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match config.format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init(),
    };
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
