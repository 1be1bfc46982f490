//! `mxisd backup` and `mxisd restore`. A backup streams from a running server's admin
//! listener (it goes on serving), or reads the store directly when the server is
//! stopped; a restore always writes the files directly. The archive format and the
//! offline work belong to `service::backup`; this module only chooses the way and
//! reports.

use super::args::{BackupArgs, RestoreArgs};
use super::load_or_report;
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
            crate::model::now_ms() / 1000
        ))
    });
    if out.exists() {
        eprintln!("error: {} already exists", out.display());
        return ExitCode::FAILURE;
    }
    let online = if args.offline {
        None
    } else {
        config.admin_url()
    };
    let result = match online {
        Some(admin) => match backup_online(&admin, &out).await {
            Err(BackupFailure::Unreachable(why)) => {
                eprintln!("the admin listener does not answer ({why}); reading the store directly");
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
            println!(
                "backup written to {}: {} store entries, {} key files, {} bytes (checked)",
                out.display(),
                s.entries,
                s.files,
                s.bytes
            );
            println!("it holds the signing key: keep it as private as the key itself");
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

/// Streams a backup from the admin listener into `out` (through a `.partial` file that
/// is checked whole before it is renamed).
async fn backup_online(
    admin: &str,
    out: &Path,
) -> Result<crate::store::backup::Summary, BackupFailure> {
    use std::io::Write as _;
    let url = format!("{admin}_mxisd/admin/v1/backup");
    let client = reqwest::Client::builder()
        .dns_resolver(crate::dns::ForReqwest::new().map_err(BackupFailure::Other)?)
        .connect_timeout(std::time::Duration::from_secs(5))
        .read_timeout(std::time::Duration::from_secs(300))
        .no_proxy()
        .build()
        .map_err(|e| BackupFailure::Other(format!("cannot build an HTTP client: {e}")))?;
    let mut response = client.get(&url).send().await.map_err(|e| {
        if e.is_connect() {
            BackupFailure::Unreachable(e.to_string())
        } else {
            BackupFailure::Other(format!("{url}: {e}"))
        }
    })?;
    if !response.status().is_success() {
        let status = response.status();
        let body = response
            .json::<serde_json::Value>()
            .await
            .unwrap_or_default();
        return Err(BackupFailure::Other(format!(
            "{url} answered {status}: {}",
            body["error"].as_str().unwrap_or("no reason given")
        )));
    }
    let partial = crate::service::backup::partial_path(out);
    let file = crate::service::backup::create_private(&partial).map_err(BackupFailure::Other)?;
    let mut writer = std::io::BufWriter::with_capacity(256 * 1024, file);
    let written = async {
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| format!("the backup stream broke off: {e}"))?
        {
            writer
                .write_all(&chunk)
                .map_err(|e| format!("{}: {e}", partial.display()))?;
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
            println!(
                "restored {} store entries and {} key files from a backup of {} made by mxisd {} (store schema {})",
                r.summary.entries,
                r.summary.files,
                r.header.server_name,
                r.header.version,
                r.header.schema
            );
            if r.keys_written == 0 && r.summary.files > 0 {
                println!(
                    "the signing key in {} is the backup's already; left as it is",
                    config.key.path.display()
                );
            }
            if let Some(p) = r.previous_store {
                println!("the store it replaced is kept in {}", p.display());
            }
            if let Some(p) = r.previous_keys {
                println!("the key directory it replaced is kept in {}", p.display());
            }
            println!("start mxisd: the store is migrated if needed and the search index rebuilt");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
