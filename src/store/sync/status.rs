//! What is recorded about each source's runs: its status (last success, last error,
//! counts, duration, problems) for `/status` and the CLI, the digest of what it gave at
//! its last fully applied run, and the marks saying the search index may lag behind its
//! last change. Bookkeeping only: nothing here changes bindings or directory entries.

use super::{SYNC_DIGEST, SYNC_STATUS};
use crate::store::codec::{encode, Record};
use crate::store::kv::Batch;
use crate::store::{Store, StoreError, META};
use serde::{Deserialize, Serialize};

/// Key prefix in the meta tree (+ source name): set while the index may not hold
/// that source's last change.
const KEY_INDEX_DIRTY: &[u8] = b"index_dirty:";

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncStatus {
    pub last_success_ms: Option<u64>,
    pub last_attempt_ms: Option<u64>,
    /// Why the last run failed (cleared by a success).
    pub last_error: Option<String>,
    /// Users and bindings the source gave at its last success.
    pub users: u64,
    pub bindings: u64,
    /// Entries skipped at the last success, and the first few reasons.
    pub skipped: u64,
    pub problems: Vec<String>,
    pub duration_ms: u64,
    /// What the last success changed.
    pub added: u64,
    pub changed: u64,
    pub removed: u64,
}

impl Record for SyncStatus {
    const VERSION: u8 = 1;
    const NAME: &'static str = "sync status";
}

impl Store {
    /// Sources with a recorded status (configured or not any more).
    pub fn sync_sources(&self) -> Result<Vec<String>, StoreError> {
        self.kv
            .scan_prefix(SYNC_STATUS, b"")
            .map(|e| e.map(|(k, _)| String::from_utf8_lossy(&k).into_owned()))
            .collect()
    }

    /// Whether the search index may lag behind the directory entries: a source's
    /// change was being applied, or its index update had not finished, when the
    /// process stopped. The index is then rebuilt at start.
    pub fn index_dirty(&self) -> Result<bool, StoreError> {
        Ok(self
            .kv
            .scan_prefix(META, KEY_INDEX_DIRTY)
            .next()
            .transpose()?
            .is_some())
    }

    /// Marks (or clears) `source`'s change as not yet in the index. Each source has
    /// its own mark, so one finishing cannot clear another's.
    pub async fn set_index_dirty(&self, source: &str, dirty: bool) -> Result<(), StoreError> {
        let mut key = KEY_INDEX_DIRTY.to_vec();
        key.extend_from_slice(source.as_bytes());
        let mut batch = Batch::new();
        if dirty {
            batch.put(META, key, vec![1]);
        } else {
            batch.delete(META, key);
        }
        self.commit(batch).await
    }

    /// Clears every source's mark (after a full rebuild at start, before any run).
    pub async fn clear_index_dirty(&self) -> Result<(), StoreError> {
        let mut batch = Batch::new();
        for entry in self.kv.scan_prefix(META, KEY_INDEX_DIRTY) {
            batch.delete(META, entry?.0);
        }
        self.commit(batch).await
    }

    /// The digest of what `source` gave at its last fully applied run.
    pub fn sync_digest(&self, source: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.kv.get(SYNC_DIGEST, source.as_bytes())
    }

    /// Records (or, with `None`, forgets) that digest. Forgotten when an apply fails,
    /// so the next run diffs in full whatever it fetches.
    pub async fn set_sync_digest(
        &self,
        source: &str,
        digest: Option<&[u8]>,
    ) -> Result<(), StoreError> {
        let mut batch = Batch::new();
        match digest {
            Some(d) => batch.put(SYNC_DIGEST, source.as_bytes().to_vec(), d.to_vec()),
            None => batch.delete(SYNC_DIGEST, source.as_bytes().to_vec()),
        }
        self.commit(batch).await
    }

    /// Records a run that fetched exactly what was last applied: a success that
    /// changed nothing.
    pub async fn sync_unchanged(
        &self,
        source: &str,
        at_ms: u64,
        duration_ms: u64,
    ) -> Result<SyncStatus, StoreError> {
        let mut status = self.sync_status(source)?.unwrap_or_default();
        status.last_success_ms = Some(at_ms);
        status.last_attempt_ms = Some(at_ms);
        status.last_error = None;
        status.duration_ms = duration_ms;
        status.added = 0;
        status.changed = 0;
        status.removed = 0;
        let mut batch = Batch::new();
        batch.put(SYNC_STATUS, source.as_bytes().to_vec(), encode(&status)?);
        self.commit(batch).await?;
        Ok(status)
    }

    /// Records a failed run (the source's bindings stay as they were).
    pub async fn sync_failed(
        &self,
        source: &str,
        error: &str,
        at_ms: u64,
    ) -> Result<(), StoreError> {
        let mut status = self.sync_status(source)?.unwrap_or_default();
        status.last_attempt_ms = Some(at_ms);
        status.last_error = Some(error.to_owned());
        let mut batch = Batch::new();
        batch.put(SYNC_STATUS, source.as_bytes().to_vec(), encode(&status)?);
        self.commit(batch).await
    }

    /// Records how long the last run took, all steps included.
    pub async fn sync_duration(&self, source: &str, duration_ms: u64) -> Result<(), StoreError> {
        let Some(mut status) = self.sync_status(source)? else {
            return Ok(());
        };
        status.duration_ms = duration_ms;
        let mut batch = Batch::new();
        batch.put(SYNC_STATUS, source.as_bytes().to_vec(), encode(&status)?);
        self.commit(batch).await
    }

    pub fn sync_status(&self, source: &str) -> Result<Option<SyncStatus>, StoreError> {
        self.get(SYNC_STATUS, source.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn each_source_clears_only_its_own_not_indexed_mark() {
        let store = Store::in_memory().unwrap();
        assert!(!store.index_dirty().unwrap());
        store.set_index_dirty("ldap", true).await.unwrap();
        store.set_index_dirty("sql", true).await.unwrap();
        store.set_index_dirty("ldap", false).await.unwrap();
        assert!(store.index_dirty().unwrap(), "sql's change is not in yet");
        store.set_index_dirty("sql", false).await.unwrap();
        assert!(!store.index_dirty().unwrap());
        store.set_index_dirty("a", true).await.unwrap();
        store.set_index_dirty("b", true).await.unwrap();
        store.clear_index_dirty().await.unwrap();
        assert!(!store.index_dirty().unwrap());
        // The marks live beside the schema version, which they leave alone.
        assert_eq!(
            store.schema_version().unwrap(),
            crate::store::migrations::CURRENT
        );
    }
}
