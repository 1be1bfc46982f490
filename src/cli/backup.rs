//! `mxisd backup` and `mxisd restore`. A backup streams from a running server's admin
//! listener (it goes on serving), or reads the store directly when the server is
//! stopped; a restore always writes the files directly. The archive format and the
//! offline work belong to `service::backup`; this module only chooses the way and
//! reports.

use super::args::{BackupArgs, RestoreArgs};
use super::load_or_report;
use crate::outln;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// `mxisd backup`
pub async fn backup(args: &BackupArgs) -> ExitCode {
    let Some(config) = load_or_report(args.config.as_deref()) else {
        return ExitCode::FAILURE;
    };
    let out = args.output.clone().unwrap_or_else(|| {
        PathBuf::from(format!(
            "mxisd-{}.mxisd-backup",
            crate::model::utc_stamp(crate::model::now_ms())
        ))
    });
    if out.exists() {
        eprintln!("error: {} already exists", out.display());
        return ExitCode::FAILURE;
    }
    let online = if args.offline || !config.server.admin.enabled {
        None
    } else {
        super::client::Target::of(&config).ok()
    };
    let result = match online {
        Some(target) => match backup_online(&target, &out).await {
            Err(BackupFailure::Unreachable(why)) => {
                eprintln!("the server is not running ({why}); reading the store directly");
                // Nothing else runs on this runtime: blocking here is fine.
                crate::service::backup::offline(&config, &out)
            }
            Err(BackupFailure::Other(why)) => Err(why),
            Ok(s) => Ok(s),
        },
        None => crate::service::backup::offline(&config, &out),
    };
    match result {
        Ok(s) => {
            outln!(
                "backup written to {}: {} store entries, {} key files, {} bytes (checked)",
                out.display(),
                s.entries,
                s.files,
                s.bytes
            );
            outln!("it holds the signing key: keep it as private as the key itself");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

enum BackupFailure {
    /// Nothing listens: the server is probably stopped.
    Unreachable(String),
    Other(String),
}

/// Streams a backup from the admin API into `out` (through a `.partial` file that is
/// checked whole before it is renamed).
async fn backup_online(
    target: &super::client::Target,
    out: &Path,
) -> Result<crate::store::backup::Summary, BackupFailure> {
    use super::client::Failure;
    use http_body_util::BodyExt as _;
    use std::io::Write as _;
    let response = target
        .send(
            http::Method::GET,
            "backup",
            None,
            std::time::Duration::from_secs(30),
        )
        .await
        .map_err(|e| match e {
            Failure::NotRunning(why) => BackupFailure::Unreachable(why),
            Failure::Other(why) => BackupFailure::Other(why),
        })?;
    if !response.status().is_success() {
        let refused = super::client::json_answer(response)
            .await
            .map(|(status, body)| {
                format!(
                    "the admin API at {target} answered {status}: {}",
                    body["error"].as_str().unwrap_or("no reason given")
                )
            })
            .unwrap_or_else(|e| e.to_string());
        return Err(BackupFailure::Other(refused));
    }
    let partial = crate::service::backup::partial_path(out);
    let file = crate::service::backup::create_private(&partial).map_err(BackupFailure::Other)?;
    let mut writer = std::io::BufWriter::with_capacity(256 * 1024, file);
    let mut body = response.into_body();
    let written = async {
        // A stalled server is given up on after five minutes without a byte.
        let idle = std::time::Duration::from_secs(300);
        while let Some(frame) = tokio::time::timeout(idle, body.frame())
            .await
            .map_err(|_| "the backup stream stalled for 5 minutes".to_owned())?
        {
            let frame = frame.map_err(|e| format!("the backup stream broke off: {e}"))?;
            if let Some(chunk) = frame.data_ref() {
                writer
                    .write_all(chunk)
                    .map_err(|e| format!("{}: {e}", partial.display()))?;
            }
        }
        writer
            .into_inner()
            .map_err(|e| format!("{}: {e}", partial.display()))?
            .sync_all()
            .map_err(|e| format!("{}: {e}", partial.display()))?;
        Ok(crate::store::backup::Summary::default())
    }
    .await;
    crate::service::backup::finish_file(&partial, out, written).map_err(BackupFailure::Other)
}

/// `mxisd restore`
pub fn restore(args: &RestoreArgs) -> ExitCode {
    let Some(config) = load_or_report(args.config.as_deref()) else {
        return ExitCode::FAILURE;
    };
    match crate::service::backup::restore(&config, &args.file, args.force) {
        Ok(r) => {
            outln!(
                "restored {} store entries and {} key files from a backup of {} made by mxisd {} (store schema {})",
                r.summary.entries,
                r.summary.files,
                r.header.server_name,
                r.header.version,
                r.header.schema
            );
            if r.keys_written == 0 && r.summary.files > 0 {
                outln!(
                    "the signing key in {} is the backup's already; left as it is",
                    config.key.path.display()
                );
            }
            if let Some(p) = r.previous_store {
                outln!("the store it replaced is kept in {}", p.display());
            }
            if let Some(p) = r.previous_keys {
                outln!("the key directory it replaced is kept in {}", p.display());
            }
            outln!("start mxisd: the store is migrated if needed and the search index rebuilt");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
