//! Writing a checked plan: everything goes to a staging directory under
//! `storage.path` first (key files, a new store) and the config to a temporary file
//! beside the output, then each is renamed into place; a failure at any step removes
//! what was moved and what was created, so nothing is left half-imported. The only
//! store written in place is an existing one merged into with
//! `--allow-existing-store`, and that happens after every rename has succeeded.

use super::{keystore, Invites, Plan, Terms};
use crate::config::Config;
use crate::store::Store;
use std::fs;
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

/// Undoes the renames done so far when a later step fails.
#[derive(Default)]
struct Undo {
    dirs: Vec<PathBuf>,
}

impl Undo {
    fn run(&self) {
        for d in self.dirs.iter().rev() {
            let _ = fs::remove_dir_all(d);
        }
    }
}

/// Creates `dir` and its missing parents with `mode`; returns the top-most directory
/// it created, to remove on failure.
fn create_dirs(dir: &Path, mode: u32) -> std::io::Result<Option<PathBuf>> {
    let mut top = None;
    let mut p = Some(dir);
    while let Some(d) = p {
        if d.exists() {
            break;
        }
        top = Some(d.to_owned());
        p = d.parent();
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(dir)?;
    Ok(top)
}

pub(super) async fn write(plan: Plan, output: &Path, storage: &Path) -> Result<(), String> {
    let Some(config) = plan.config else {
        return Err("no configuration to write".into());
    };
    let created_storage = create_dirs(storage, 0o750)
        .map_err(|e| format!("cannot create {}: {e}", storage.display()))?;
    let staging = storage.join(format!(".import-ma1sd.{}", std::process::id()));
    let result = write_staged(
        &plan.yaml,
        &config,
        plan.key.as_ref().filter(|_| !plan.key_present),
        &plan.invites,
        &plan.terms,
        plan.existing_store,
        &staging,
        output,
        storage,
    )
    .await;
    let _ = fs::remove_dir_all(&staging);
    if result.is_err() {
        if let Some(top) = created_storage {
            let _ = fs::remove_dir_all(top);
        }
    }
    result
}

#[allow(clippy::too_many_arguments)]
async fn write_staged(
    yaml: &str,
    config: &Config,
    key: Option<&keystore::TheirKey>,
    invites: &Invites,
    terms: &Terms,
    existing_store: Option<Store>,
    staging: &Path,
    output: &Path,
    storage: &Path,
) -> Result<(), String> {
    fs::DirBuilder::new()
        .mode(0o700)
        .create(staging)
        .map_err(|e| format!("cannot create {}: {e}", staging.display()))?;
    // 1. Everything into staging.
    if let Some(k) = key {
        crate::crypto::keyfile::create(&staging.join("keys"), &k.serial, &k.seed)
            .map_err(|e| e.to_string())?;
    }
    if existing_store.is_none() {
        let path = staging.join("store");
        let (cache, pepper) = (config.storage.cache_size, config.hashing.pepper_length);
        let store = tokio::task::spawn_blocking(move || Store::open(&path, cache, pepper))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("the new store: {e}"))?;
        store
            .import(&invites.records, &terms.accepted)
            .await
            .map_err(|e| format!("the new store: {e}"))?;
        store.close().map_err(|e| format!("the new store: {e}"))?;
    }
    let out_dir = output
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
    let created_out_dir = create_dirs(&out_dir, 0o755)
        .map_err(|e| format!("cannot create {}: {e}", out_dir.display()))?;
    let name = output
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("mxisd.yaml");
    let tmp = out_dir.join(format!(".{name}.import-ma1sd.{}", std::process::id()));
    let write_tmp = || -> std::io::Result<()> {
        let _ = fs::remove_file(&tmp);
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o640)
            .open(&tmp)?;
        f.write_all(yaml.as_bytes())?;
        f.sync_all()
    };
    let fail_tmp = |e: String| {
        let _ = fs::remove_file(&tmp);
        if let Some(d) = &created_out_dir {
            let _ = fs::remove_dir_all(d);
        }
        e
    };
    write_tmp().map_err(|e| fail_tmp(format!("cannot write {}: {e}", tmp.display())))?;

    // 2. Into place, undoing on failure.
    let mut undo = Undo::default();
    let step = |from: PathBuf, to: PathBuf, undo: &mut Undo| -> Result<(), String> {
        fs::rename(&from, &to)
            .map_err(|e| format!("cannot move {} to {}: {e}", from.display(), to.display()))?;
        undo.dirs.push(to);
        Ok(())
    };
    let moved = (|| {
        if key.is_some() {
            step(staging.join("keys"), storage.join("keys"), &mut undo)?;
        }
        if existing_store.is_none() {
            step(staging.join("store"), storage.join("store"), &mut undo)?;
        }
        Ok::<(), String>(())
    })();
    if let Err(e) = moved {
        undo.run();
        if let Some(store) = existing_store {
            let _ = store.close();
        }
        return Err(fail_tmp(e));
    }
    if let Some(store) = existing_store {
        let merged = store
            .import(&invites.records, &terms.accepted)
            .await
            .map_err(|e| format!("the store in {}: {e}", storage.join("store").display()));
        let closed = store.close();
        if let Err(e) = merged {
            undo.run();
            return Err(fail_tmp(e));
        }
        closed.map_err(|e| format!("closing the store: {e}"))?;
    }
    if let Err(e) = fs::rename(&tmp, output) {
        undo.run();
        return Err(fail_tmp(format!(
            "cannot move {} to {}: {e}",
            tmp.display(),
            output.display()
        )));
    }
    if let Ok(d) = fs::File::open(&out_dir) {
        let _ = d.sync_all();
    }
    crate::outln!(
        "wrote {} (mode 0640){}{} and {} invite(s), {} user(s)' accepted terms into {}",
        output.display(),
        if key.is_some() {
            ", the signing key into "
        } else {
            ""
        },
        if key.is_some() {
            storage.join("keys").display().to_string()
        } else {
            String::new()
        },
        invites.records.len(),
        terms.accepted.len(),
        storage.join("store").display()
    );
    Ok(())
}
