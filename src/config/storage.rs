//! `storage` (where mxisd keeps its state, and the store's cache) and `key` (where the
//! signing keys live; by default a `keys` directory under `storage.path`). ma1sd's
//! database settings have no meaning here and get a hint saying so.

use super::reader::Section;
use std::path::PathBuf;

#[derive(Debug, Clone)]
pub struct KeyConfig {
    /// Directory of the key store.
    pub path: PathBuf,
}

#[derive(Debug, Clone)]
pub struct StorageConfig {
    pub path: PathBuf,
    pub cache_size: u64,
}

const STORAGE_HINTS: &[(&str, &str)] = &[];

/// ma1sd's database settings: mxisd's state lives in storage.path instead.
fn ignore_ma1sd_database(s: &Section<'_, '_>) {
    s.ignored(
        "backend",
        "ignored: mxisd keeps its state in an embedded store under storage.path (`mxisd import-ma1sd` reads ma1sd's database)",
    );
    s.ignored(
        "provider",
        "ignored: mxisd keeps its state in an embedded store under storage.path (`mxisd import-ma1sd` reads ma1sd's database)",
    );
}

pub(crate) fn read_key(s: &Section<'_, '_>, storage: Option<&StorageConfig>) -> Option<KeyConfig> {
    let path = match s.string("path").as_deref() {
        Some(":memory:") => {
            s.problem("path", "an in-memory key is not supported: signatures must survive restarts; give a directory");
            return None;
        }
        Some(_) => s.path("path"),
        None => storage.map(|st| st.path.join("keys")),
    };
    s.finish(&[]);
    path.map(|path| KeyConfig { path })
}

pub(crate) fn read_storage(s: &Section<'_, '_>) -> Option<StorageConfig> {
    let path = s.path("path");
    let cache_size = s.size("cacheSize").unwrap_or(8 << 20);
    ignore_ma1sd_database(s);
    s.finish(STORAGE_HINTS);
    let mut ok = true;
    if cache_size < (1 << 20) {
        s.problem("cacheSize", "must be at least 1MiB");
        ok = false;
    }
    if path.is_none() && s.string_is_absent("path") {
        s.problem(
            "path",
            "required: the directory for mxisd's state, e.g. /var/lib/mxisd",
        );
    }
    let path = path?;
    ok.then_some(StorageConfig { path, cache_size })
}
