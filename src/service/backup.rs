//! Backup and restore of everything mxisd keeps: the store (bindings, sessions, invites,
//! accounts, terms, the pepper, sync state) and the signing key files. The directory
//! index is not included: it is rebuilt from the store at the first start after a
//! restore.

use crate::config::Config;
use crate::error::{ErrCode, Error};
use crate::store::backup::Summary;
use crate::store::{Store, StoreError};
use std::fs;
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Component, Path, PathBuf};

/// The files of the key store, as (path relative to `key.path`, content). Symbolic
/// links and other non-files are skipped; a missing directory gives none.
pub fn key_files(dir: &Path) -> Result<Vec<(String, Vec<u8>)>, String> {
    let mut out = Vec::new();
    if !dir.exists() {
        return Ok(out);
    }
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let here = dir.join(&rel);
        let entries =
            fs::read_dir(&here).map_err(|e| format!("key.path {}: {e}", here.display()))?;
        for entry in entries {
            let entry = entry.map_err(|e| format!("key.path {}: {e}", here.display()))?;
            let kind = entry
                .file_type()
                .map_err(|e| format!("key.path {}: {e}", entry.path().display()))?;
            let name = rel.join(entry.file_name());
            if kind.is_dir() {
                stack.push(name);
            } else if kind.is_file() {
                let content = fs::read(entry.path())
                    .map_err(|e| format!("key file {}: {e}", entry.path().display()))?;
                let name = name
                    .to_str()
                    .ok_or_else(|| format!("key file {}: not UTF-8", name.display()))?
                    .to_owned();
                out.push((name, content));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// A key file name from a backup, checked to stay inside the key directory.
fn safe_relative(name: &str) -> Option<PathBuf> {
    let path = Path::new(name);
    let normal = path.components().all(|c| matches!(c, Component::Normal(_)));
    (normal && !name.is_empty()).then(|| path.to_owned())
}

/// Creates `path` for writing with mode 0600, failing if it exists.
pub fn create_private(path: &Path) -> Result<fs::File, String> {
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("cannot create {}: {e}", path.display()))
}

/// Reads a finished backup file through and checks it whole.
pub fn verify(path: &Path) -> Result<Summary, String> {
    let file = fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut input = std::io::BufReader::with_capacity(256 * 1024, file);
    crate::store::backup::read(&mut input, &mut |_| Ok(()), &mut |_| Ok(()))
        .map(|(_, summary)| summary)
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// Backs up a stopped server's store and keys into `out`.
pub fn offline(config: &Config, out: &Path) -> Result<Summary, String> {
    let keys = key_files(&config.key.path)?;
    let partial = partial_path(out);
    let file = create_private(&partial)?;
    let mut writer = std::io::BufWriter::with_capacity(256 * 1024, file);
    let written = Store::offline_backup(
        &crate::store::dir(config),
        &config.server.name,
        &keys,
        &mut writer,
    )
    .map_err(|e| e.to_string())
    .and_then(|s| {
        writer
            .into_inner()
            .map_err(|e| e.to_string())?
            .sync_all()
            .map_err(|e| e.to_string())?;
        Ok(s)
    });
    finish_file(&partial, out, written)
}

/// Where a backup is written before it is known to be whole.
pub fn partial_path(out: &Path) -> PathBuf {
    let mut name = out.as_os_str().to_owned();
    name.push(".partial");
    PathBuf::from(name)
}

/// Checks the written file and moves it into place, or removes it.
pub fn finish_file(
    partial: &Path,
    out: &Path,
    written: Result<Summary, String>,
) -> Result<Summary, String> {
    let checked = written.and_then(|_| verify(partial));
    match checked {
        Ok(summary) => {
            fs::rename(partial, out)
                .map_err(|e| format!("cannot move the backup to {}: {e}", out.display()))?;
            Ok(summary)
        }
        Err(e) => {
            let _ = fs::remove_file(partial);
            Err(e)
        }
    }
}

/// What a restore did.
#[derive(Debug)]
pub struct Restored {
    pub summary: Summary,
    pub header: crate::store::backup::Header,
    /// Where the store that was replaced now is.
    pub previous_store: Option<PathBuf>,
    /// Where the key directory that was replaced now is.
    pub previous_keys: Option<PathBuf>,
    pub keys_written: usize,
}

/// Restores `file` into `storage.path` and `key.path`. The server must be stopped.
/// An existing store (or a different signing key) is replaced only with `force`, and
/// then kept beside the new one. Nothing changes unless the whole file checks out.
pub fn restore(config: &Config, file: &Path, force: bool) -> Result<Restored, String> {
    let store_path = crate::store::dir(config);
    if store_path.exists() {
        // Proves no server has it open (sled's lock); released at once.
        drop(
            crate::store::sled_kv::SledKv::open(&store_path, 1 << 20).map_err(|e| match e {
                StoreError::Locked(_) => format!(
                    "mxisd is running on {} (the store is locked); stop it before restoring",
                    store_path.display()
                ),
                other => other.to_string(),
            })?,
        );
        if !force {
            return Err(format!(
                "{} already holds a store; pass --force to replace it (it is kept as store.before-restore-<time>)",
                store_path.display()
            ));
        }
    }
    let staging = config.storage.path.join("store.restoring");
    if staging.exists() {
        fs::remove_dir_all(&staging)
            .map_err(|e| format!("cannot remove the leftover {}: {e}", staging.display()))?;
    }
    let input = fs::File::open(file).map_err(|e| format!("{}: {e}", file.display()))?;
    let mut input = std::io::BufReader::with_capacity(256 * 1024, input);
    let mut keys: Vec<(PathBuf, Vec<u8>)> = Vec::new();
    let (header, summary) = Store::restore_new(&staging, &mut input, &mut |name, content| {
        let rel = safe_relative(&name).ok_or_else(|| {
            StoreError::Corrupt(format!(
                "backup: key file name {name:?} leaves the key directory"
            ))
        })?;
        keys.push((rel, content));
        Ok(())
    })
    .map_err(|e| format!("{}: {e}", file.display()))?;

    let key_dir = &config.key.path;
    let existing = key_files(key_dir).inspect_err(|_| {
        let _ = fs::remove_dir_all(&staging);
    })?;
    let same_keys = existing.is_empty()
        || (existing.len() == keys.len()
            && existing
                .iter()
                .zip(&keys)
                .all(|((n, c), (p, d))| Path::new(n) == p && c == d));
    if !same_keys && !force {
        let _ = fs::remove_dir_all(&staging);
        return Err(format!(
            "key.path {} holds a different signing key than the backup; pass --force to replace it (it is kept beside)",
            key_dir.display()
        ));
    }

    // Everything checked: switch over.
    let stamp = crate::model::utc_stamp(crate::model::now_ms());
    let previous_store = if store_path.exists() {
        let aside = config
            .storage
            .path
            .join(format!("store.before-restore-{stamp}"));
        fs::rename(&store_path, &aside)
            .map_err(|e| format!("cannot move {} aside: {e}", store_path.display()))?;
        Some(aside)
    } else {
        None
    };
    fs::rename(&staging, &store_path)
        .map_err(|e| format!("cannot move the restored store into place: {e}"))?;
    let index = config.storage.path.join("index");
    if index.exists() {
        fs::remove_dir_all(&index)
            .map_err(|e| format!("cannot remove the old index {}: {e}", index.display()))?;
    }
    let mut previous_keys = None;
    let mut keys_written = 0;
    if !existing.is_empty() && !same_keys {
        let mut aside = key_dir.as_os_str().to_owned();
        aside.push(format!(".before-restore-{stamp}"));
        let aside = PathBuf::from(aside);
        fs::rename(key_dir, &aside)
            .map_err(|e| format!("cannot move {} aside: {e}", key_dir.display()))?;
        previous_keys = Some(aside);
    }
    if existing.is_empty() || !same_keys {
        for (rel, content) in &keys {
            let path = key_dir.join(rel);
            if let Some(parent) = path.parent() {
                fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(parent)
                    .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
            }
            let mut f = create_private(&path)?;
            f.write_all(content)
                .and_then(|()| f.sync_all())
                .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
            keys_written += 1;
        }
    }
    Ok(Restored {
        summary,
        header,
        previous_store,
        previous_keys,
        keys_written,
    })
}

/// An online backup that has started: the store's point in time is fixed, writes go
/// on, and [`OnlineBackup::write`] streams it.
pub struct OnlineBackup {
    services: super::Services,
    running: crate::store::backup::Running,
    keys: Vec<(String, Vec<u8>)>,
}

/// Starts an online backup (`GET /_mxisd/admin/v1/backup`); one at a time.
pub fn start_online(services: &super::Services) -> Result<OnlineBackup, Error> {
    let running = match services.store.start_backup() {
        Ok(r) => r,
        Err(StoreError::BackupRunning) => {
            return Err(Error::new(
                ErrCode::Conflict,
                "A backup is already running; wait for it to finish",
            ))
        }
        Err(e) => return Err(e.into()),
    };
    let keys = key_files(&services.config().key.path)
        .map_err(|e| Error::internal("reading the key files", e))?;
    Ok(OnlineBackup {
        services: services.clone(),
        running,
        keys,
    })
}

impl OnlineBackup {
    /// Writes the backup to `out` (blocking: run it on a blocking thread) and logs how
    /// it went; the error is for the caller to cut its output short.
    pub fn write(self, out: &mut dyn std::io::Write) -> Result<Summary, String> {
        let started = std::time::Instant::now();
        let s = &self.services;
        let written = s
            .store
            .write_backup(&self.running, &s.config().server.name, &self.keys, out);
        let saved = self.running.snapshot_len();
        drop(self.running);
        match written {
            Ok(summary) => {
                tracing::info!(
                    entries = summary.entries,
                    bytes = summary.bytes,
                    changed_meanwhile = saved,
                    ms = started.elapsed().as_millis() as u64,
                    "backup written"
                );
                Ok(summary)
            }
            Err(e) => {
                tracing::warn!(error = %e, "backup failed");
                Err(e.to_string())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_file_names_stay_inside() {
        assert!(safe_relative("regular/ed25519/0").is_some());
        assert!(safe_relative("current").is_some());
        for bad in ["", "/etc/passwd", "../x", "regular/../../x", "./current"] {
            assert!(safe_relative(bad).is_none(), "{bad}");
        }
    }
}
