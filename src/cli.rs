//! Command-line verbs. `run` starts the server; the others either read files directly
//! (`check-config`, `keys show`) or talk to a running server over HTTP (`healthcheck`,
//! `status`), because sled lets only one process open the store. Every error says what
//! to do next.
//!
//! `args` is the syntax argh parses; `admin` is the client of a running server's admin
//! listener and the verbs that are calls to it; `local` holds the verbs that work on
//! files (`check-config`, `keys show`, `import-ma1sd`); `backup` holds backup and
//! restore. This root loads the configuration for all of them and re-exports what
//! `main.rs` calls.

mod admin;
mod args;
mod backup;
mod client;
mod local;

pub use admin::{
    bindings, hashing, healthcheck, invites, outbox, reindex, reload, search, status, sync,
};
pub use args::*;
pub use backup::{backup, restore};
pub use local::{check_config, import_ma1sd, keys_show};

use crate::config::{self, Config};
use std::path::Path;

fn env_lookup(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// Loads the config named on the command line, or the embedded default.
pub fn load_config(path: Option<&Path>) -> Result<Config, config::ConfigErrors> {
    match path {
        Some(p) => config::load_file(p, &env_lookup),
        None => config::load_embedded(&env_lookup),
    }
}

/// Prints config problems the way every verb does.
pub fn report_config_errors(errors: &config::ConfigErrors) {
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
