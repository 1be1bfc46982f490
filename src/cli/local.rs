//! The verbs that work on files and need no running server: `check-config`, `keys show`
//! and `import-ma1sd`. The import's arguments become `migrate::Options` here, so that
//! `migrate` never depends on the command line.

use super::args::{CheckConfigArgs, ImportMa1sdArgs, KeysShowArgs};
use super::{load_or_report, report_config_errors, write_out};
use crate::migrate;
use crate::outln;
use std::path::PathBuf;
use std::process::ExitCode;

/// `mxisd check-config -c FILE`
pub fn check_config(args: &CheckConfigArgs) -> ExitCode {
    let source = match super::find_config(args.config.as_deref(), false) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    match super::load_from(&source) {
        Ok(c) => {
            let unreadable = c.file_problems();
            if unreadable.is_empty() {
                outln!("{source}: valid");
            } else {
                outln!(
                    "{source}: valid, but {} file(s) it names cannot be read:",
                    unreadable.len()
                );
                for p in &unreadable {
                    outln!("  - {p}");
                }
            }
            for w in &c.warnings {
                outln!("  warning: {w}");
            }
            write_out(format_args!("{}", c.summary()));
            if unreadable.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(errors) => {
            report_config_errors(&errors);
            ExitCode::FAILURE
        }
    }
}

/// `mxisd keys show`
pub fn keys_show(args: &KeysShowArgs) -> ExitCode {
    let Some(config) = load_or_report(args.config.as_deref()) else {
        return ExitCode::FAILURE;
    };
    match crate::crypto::keyfile::load(&config.key.path) {
        Ok(Some(signer)) => {
            outln!("{} {}", signer.key_id(), signer.public_key_b64());
            ExitCode::SUCCESS
        }
        Ok(None) => {
            eprintln!(
                "error: no signing key in {}; `mxisd run` creates one on first start",
                config.key.path.display()
            );
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `mxisd import-ma1sd`
pub async fn import_ma1sd(args: &ImportMa1sdArgs) -> ExitCode {
    migrate::run(&args.into()).await
}

/// The defaults of the command line are the packaged paths.
impl From<&ImportMa1sdArgs> for migrate::Options {
    fn from(a: &ImportMa1sdArgs) -> Self {
        Self {
            config: a.config.clone(),
            output: a
                .output
                .clone()
                .unwrap_or_else(|| PathBuf::from("/etc/mxisd/mxisd.yaml")),
            storage: a
                .storage
                .clone()
                .unwrap_or_else(|| PathBuf::from("/var/lib/mxisd")),
            dry_run: a.dry_run,
            force: a.force,
            allow_existing_store: a.allow_existing_store,
        }
    }
}
