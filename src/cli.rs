//! Command-line verbs. `run` starts the server; the others either read files directly
//! (`check-config`, `keys show`) or talk to a running server over HTTP (`healthcheck`,
//! `status`), because sled lets only one process open the store. Every error says what
//! to do next.
//!
//! `args` is the syntax argh parses; `admin` is the client of a running server's admin
//! listener and the verbs that are calls to it; `local` holds the verbs that work on
//! files (`check-config`, `keys show`, `import-ma1sd`); `backup` holds backup and
//! restore; `human` formats times, durations and counts for people and `show` lays out
//! each answer with it (`--json` keeps answers as they came, for scripts); `progress` draws the bar of long work. This root finds and loads the
//! configuration for all of them and re-exports what `main.rs` calls.

mod admin;
mod args;
mod backup;
mod client;
mod human;
mod local;
mod progress;
mod show;

pub use admin::{
    bindings, hashing, healthcheck, invites, outbox, reindex, reload, search, status, sync,
};
pub use args::*;
pub use backup::{backup, restore};
pub use local::{check_config, import_ma1sd, keys_show};

use crate::config::{self, Config};
use std::path::{Path, PathBuf};

/// Writes a line to standard output; when the reader has gone away (`mxisd status |
/// head -1`), exits quietly instead of panicking as `println!` does.
#[macro_export]
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::logging::write_out(format_args!("{}\n", format_args!($($arg)*)))
    };
}

pub use crate::logging::write_out;

fn env_lookup(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// The packaged configuration file, used when neither `-c` nor `$MXISD_CONFIG` names one.
pub const SYSTEM_CONFIG: &str = "/etc/mxisd/mxisd.yaml";

/// Where the configuration of a verb comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigSource {
    /// `-c FILE`.
    Given(PathBuf),
    /// `$MXISD_CONFIG`.
    Environment(PathBuf),
    /// [`SYSTEM_CONFIG`].
    System(PathBuf),
    /// The configuration compiled in (state under `./mxisd-data`).
    Embedded,
}

impl std::fmt::Display for ConfigSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConfigSource::Given(p) => write!(f, "{}", p.display()),
            ConfigSource::Environment(p) => write!(f, "{} (from $MXISD_CONFIG)", p.display()),
            ConfigSource::System(p) => write!(f, "{}", p.display()),
            ConfigSource::Embedded => f.write_str("the embedded default configuration"),
        }
    }
}

/// The state directory of the embedded default, relative to where `mxisd run` started.
const EMBEDDED_STATE: &str = "mxisd-data";

/// Finds the configuration: `-c`, then `$MXISD_CONFIG`, then [`SYSTEM_CONFIG`]; then the
/// embedded default, for `run` (`for_run`) or, for the other verbs, only where a server
/// on the embedded default keeps its state (`./mxisd-data`). Else says where it looked.
pub fn find_config(given: Option<&Path>, for_run: bool) -> Result<ConfigSource, String> {
    find_config_in(
        given,
        for_run,
        std::env::var_os("MXISD_CONFIG").filter(|v| !v.is_empty()),
        Path::new(SYSTEM_CONFIG),
        Path::new(EMBEDDED_STATE),
    )
}

fn find_config_in(
    given: Option<&Path>,
    for_run: bool,
    from_env: Option<std::ffi::OsString>,
    system: &Path,
    embedded_state: &Path,
) -> Result<ConfigSource, String> {
    if let Some(p) = given {
        return Ok(ConfigSource::Given(p.to_owned()));
    }
    if let Some(p) = from_env {
        return Ok(ConfigSource::Environment(PathBuf::from(p)));
    }
    if system.exists() {
        return Ok(ConfigSource::System(system.to_owned()));
    }
    if for_run || embedded_state.is_dir() {
        return Ok(ConfigSource::Embedded);
    }
    Err(format!(
        "no configuration: give one with -c FILE, set MXISD_CONFIG, or create {}",
        system.display()
    ))
}

/// Loads the configuration a source names.
pub fn load_from(source: &ConfigSource) -> Result<Config, config::ConfigErrors> {
    match source {
        ConfigSource::Given(p) | ConfigSource::Environment(p) | ConfigSource::System(p) => {
            config::load_file(p, &env_lookup)
        }
        ConfigSource::Embedded => config::load_embedded(&env_lookup),
    }
}

/// Finds and loads the configuration of a verb other than `run` (see [`find_config`]).
/// The embedded default is announced on standard error: it is rarely what a verb on a
/// real installation wants.
pub fn load_config(path: Option<&Path>) -> Result<Config, config::ConfigErrors> {
    let source = find_config(path, false).map_err(|e| config::ConfigErrors {
        source: "the command line".into(),
        problems: vec![e],
    })?;
    if source == ConfigSource::Embedded {
        eprintln!("note: no -c, $MXISD_CONFIG or {SYSTEM_CONFIG}: using the embedded default configuration (state in ./{EMBEDDED_STATE})");
    }
    load_from(&source)
}

/// Prints config problems the way every verb does.
pub fn report_config_errors(errors: &config::ConfigErrors) {
    if errors.source == "the command line" {
        for p in &errors.problems {
            eprintln!("error: {p}");
        }
        return;
    }
    eprintln!("error: invalid configuration in {}", errors.source);
    for p in &errors.problems {
        eprintln!("  - {p}");
    }
}

/// [`load_config`], its problems printed: on `None` the verb has nothing more to say
/// and fails.
fn load_or_report(path: Option<&Path>) -> Option<Config> {
    load_config(path).map_err(|e| report_config_errors(&e)).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_configuration_is_found_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let system = dir.path().join("mxisd.yaml");
        let state = dir.path().join("mxisd-data");
        let env = || Some(std::ffi::OsString::from("/from/env.yaml"));
        let find =
            |given: Option<&Path>, run, env| find_config_in(given, run, env, &system, &state);
        assert_eq!(
            find(Some(Path::new("c.yaml")), false, env()),
            Ok(ConfigSource::Given("c.yaml".into()))
        );
        assert_eq!(
            find(None, false, env()),
            Ok(ConfigSource::Environment("/from/env.yaml".into()))
        );
        // Nothing anywhere: only `run` falls back to the embedded default.
        assert_eq!(find(None, true, None), Ok(ConfigSource::Embedded));
        let refused = find(None, false, None).unwrap_err();
        assert!(refused.contains("-c FILE") && refused.contains("MXISD_CONFIG"));
        std::fs::create_dir(&state).unwrap();
        assert_eq!(find(None, false, None), Ok(ConfigSource::Embedded));
        std::fs::write(&system, "").unwrap();
        assert_eq!(
            find(None, false, None),
            Ok(ConfigSource::System(system.clone()))
        );
    }
}
