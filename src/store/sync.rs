//! What each sync source last contributed, and how its runs went.
//!
//! Trees:
//! - `sync_entry`: source name ‖ 0 ‖ `threepid_digest` → [`SyncedBinding`] (the
//!   source's last applied snapshot, to diff the next fetch against)
//! - `sync_user`: source name ‖ 0 ‖ Matrix ID → [`DirectoryUser`] (who the source
//!   lists, with display name, 3PIDs and extra attributes: the directory entries)
//! - `sync_status`: source name → [`SyncStatus`]
//! - `sync_digest`: source name → SHA-256 of what the source gave at its last fully
//!   applied run (a run that fetches the same skips the diff)
//!
//! A run's bindings, directory entries, snapshot and status change in one atomic batch:
//! a sync is applied whole or not at all (see [`Store::apply_sync`] for big ones).

use super::bindings::{BindingChange, BindingEntry, Origin};
use super::codec::{decode, encode, Record};
use super::kv::Batch;
use super::{threepid_digest, Store, StoreError};
use crate::model::{DirectoryUser, ThreePid, MAX_PROBLEMS};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;

pub(crate) const SYNC_ENTRY: &str = "sync_entry";
pub(crate) const SYNC_STATUS: &str = "sync_status";
pub(crate) const SYNC_USER: &str = "sync_user";
pub(crate) const SYNC_DIGEST: &str = "sync_digest";

/// Most binding changes applied in one batch (see [`Store::apply_sync`]).
pub const SYNC_CHUNK: usize = 2_000;

/// Key prefix in the meta tree (+ source name): set while the index may not hold
/// that source's last change.
const KEY_INDEX_DIRTY: &[u8] = b"index_dirty:";

/// Validity of a synced binding: as long as the source keeps it.
const SYNC_VALIDITY_MS: u64 = 100 * 365 * 24 * 3600 * 1000;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncedBinding {
    pub threepid: ThreePid,
    pub mxid: String,
}

impl Record for SyncedBinding {
    const VERSION: u8 = 1;
    const NAME: &'static str = "synced binding";
}

impl Record for DirectoryUser {
    const VERSION: u8 = 1;
    const NAME: &'static str = "directory user";
}

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

/// What one applied run changed: the bindings now effective for added or changed
/// 3PIDs (for invites waiting on them), and counts.
#[derive(Debug, Default)]
pub struct SyncDiff {
    /// Added or changed bindings another origin outranks (reported in the status).
    pub overridden: u64,
    pub added: u64,
    pub changed: u64,
    pub removed: u64,
    pub now_bound: Vec<(ThreePid, BindingEntry)>,
    /// Users whose directory entry from this source was added, changed or removed.
    pub users_changed: Vec<String>,
}

/// Adds another source's entry for the same user: the first display name, everyone's
/// 3PIDs, attributes and roles.
fn merge_into(merged: &mut DirectoryUser, user: DirectoryUser) {
    if merged.display_name.is_none() {
        merged.display_name = user.display_name;
    }
    for t in user.threepids {
        if !merged.threepids.contains(&t) {
            merged.threepids.push(t);
        }
    }
    for (k, v) in user.attributes {
        merged.attributes.entry(k).or_default().extend(v);
    }
    merged.roles.extend(user.roles);
}

fn source_prefix(source: &str) -> Vec<u8> {
    let mut key = source.as_bytes().to_vec();
    key.push(0);
    key
}

fn entry_key(source: &str, threepid: &ThreePid) -> Vec<u8> {
    let mut key = source_prefix(source);
    key.extend_from_slice(&threepid_digest(threepid, b""));
    key
}

fn user_key(source: &str, mxid: &str) -> Vec<u8> {
    let mut key = source_prefix(source);
    key.extend_from_slice(mxid.as_bytes());
    key
}

/// One write of an applied run.
enum Step {
    Binding(BindingChange, Option<SyncedBinding>),
    User(String, Option<DirectoryUser>),
}

impl Store {
    /// The last applied snapshot of `source`.
    pub fn synced(&self, source: &str) -> Result<Vec<SyncedBinding>, StoreError> {
        self.kv
            .scan_prefix(SYNC_ENTRY, &source_prefix(source))
            .map(|e| e.and_then(|(_, v)| decode(&v)))
            .collect()
    }

    /// The users `source` listed at its last applied run, by Matrix ID.
    pub fn directory_users(
        &self,
        source: &str,
    ) -> Result<BTreeMap<String, DirectoryUser>, StoreError> {
        let prefix = source_prefix(source);
        self.kv
            .scan_prefix(SYNC_USER, &prefix)
            .map(|e| {
                e.and_then(|(k, v)| {
                    let mxid = String::from_utf8_lossy(&k[prefix.len()..]).into_owned();
                    Ok((mxid, decode(&v)?))
                })
            })
            .collect()
    }

    /// Every source's directory entries, merged by Matrix ID (what search indexes):
    /// the first source's display name, everyone's 3PIDs, attributes and roles.
    pub fn directory_entries(&self) -> Result<BTreeMap<String, DirectoryUser>, StoreError> {
        let mut out: BTreeMap<String, DirectoryUser> = BTreeMap::new();
        for e in self.kv.scan_prefix(SYNC_USER, b"") {
            let (k, v) = e?;
            let Some(at) = k.iter().position(|b| *b == 0) else {
                continue;
            };
            let mxid = String::from_utf8_lossy(&k[at + 1..]).into_owned();
            let user: DirectoryUser = decode(&v)?;
            match out.entry(mxid) {
                std::collections::btree_map::Entry::Vacant(slot) => {
                    slot.insert(user);
                }
                std::collections::btree_map::Entry::Occupied(mut slot) => {
                    merge_into(slot.get_mut(), user);
                }
            }
        }
        Ok(out)
    }

    /// One user's directory entry, merged across sources like [`Self::directory_entries`].
    pub fn directory_entry(&self, mxid: &str) -> Result<Option<DirectoryUser>, StoreError> {
        let mut merged: Option<DirectoryUser> = None;
        for source in self.sync_sources()? {
            let mut key = source_prefix(&source);
            key.extend_from_slice(mxid.as_bytes());
            let Some(raw) = self.kv.get(SYNC_USER, &key)? else {
                continue;
            };
            let user: DirectoryUser = decode(&raw)?;
            match &mut merged {
                None => merged = Some(user),
                Some(m) => merge_into(m, user),
            }
        }
        Ok(merged)
    }

    /// Sources with a recorded status (configured or not any more).
    pub fn sync_sources(&self) -> Result<Vec<String>, StoreError> {
        self.kv
            .scan_prefix(SYNC_STATUS, b"")
            .map(|e| e.map(|(k, _)| String::from_utf8_lossy(&k).into_owned()))
            .collect()
    }

    /// Removes everything `source` contributed (bindings, directory entries, status):
    /// for a source that is no longer configured.
    pub async fn forget_source(
        self: &Arc<Self>,
        source: &str,
        writer: Option<&tokio::runtime::Handle>,
    ) -> Result<SyncDiff, StoreError> {
        let diff = self
            .apply_sync(
                source,
                &BTreeMap::new(),
                &BTreeMap::new(),
                SyncStatus::default(),
                writer,
            )
            .await?;
        let mut batch = Batch::new();
        batch.delete(SYNC_STATUS, source.as_bytes().to_vec());
        batch.delete(SYNC_DIGEST, source.as_bytes().to_vec());
        self.commit(batch).await?;
        Ok(diff)
    }

    /// Makes `source`'s bindings exactly `wanted` (3PID → Matrix ID) and its
    /// directory entries exactly `users`, and records `status`, durably.
    ///
    /// A difference of up to [`SYNC_CHUNK`] changes is one atomic batch. A larger one
    /// (a first sync of a big directory) goes in chunks of that size, each atomic
    /// with its part of the snapshot, because sled keeps a whole batch in memory
    /// (100k users in one batch peaked at 2.8 GB): a crash between chunks leaves some
    /// users synced and the snapshot saying exactly which, so the next run finishes the
    /// job. The status is written with the last chunk.
    ///
    /// The part of a chunk that holds the bindings lock (reading the records, writing
    /// the batch) runs on `writer` when given: the sync driver computes at the lowest
    /// CPU priority, and a user's bind must not wait on a lock held by a thread that
    /// gets no CPU.
    pub async fn apply_sync(
        self: &Arc<Self>,
        source: &str,
        wanted: &BTreeMap<ThreePid, String>,
        users: &BTreeMap<String, DirectoryUser>,
        mut status: SyncStatus,
        writer: Option<&tokio::runtime::Handle>,
    ) -> Result<SyncDiff, StoreError> {
        let origin = Origin::Sync(source.to_owned());
        let mut diff = SyncDiff::default();
        let previous: BTreeMap<ThreePid, String> = self
            .synced(source)?
            .into_iter()
            .map(|b| (b.threepid, b.mxid))
            .collect();
        let now = super::now_ms();
        let mut steps: Vec<Step> = Vec::new();
        for (threepid, mxid) in wanted {
            match previous.get(threepid) {
                Some(old) if old == mxid => continue,
                Some(_) => diff.changed += 1,
                None => diff.added += 1,
            }
            steps.push(Step::Binding(
                BindingChange::Set {
                    threepid: threepid.clone(),
                    origin: origin.clone(),
                    mxid: mxid.clone(),
                    not_before_ms: now,
                    not_after_ms: now.saturating_add(SYNC_VALIDITY_MS),
                },
                Some(SyncedBinding {
                    threepid: threepid.clone(),
                    mxid: mxid.clone(),
                }),
            ));
        }
        for threepid in previous.keys().filter(|t| !wanted.contains_key(*t)) {
            diff.removed += 1;
            steps.push(Step::Binding(
                BindingChange::Remove {
                    threepid: threepid.clone(),
                    origin: origin.clone(),
                },
                None,
            ));
        }
        drop(previous);
        let previous_users = self.directory_users(source)?;
        for (mxid, user) in users {
            if previous_users.get(mxid) != Some(user) {
                diff.users_changed.push(mxid.clone());
                steps.push(Step::User(mxid.clone(), Some(user.clone())));
            }
        }
        for mxid in previous_users.keys().filter(|m| !users.contains_key(*m)) {
            diff.users_changed.push(mxid.clone());
            steps.push(Step::User(mxid.clone(), None));
        }
        drop(previous_users);
        status.added = diff.added;
        status.changed = diff.changed;
        status.removed = diff.removed;
        let chunks = steps.len().div_ceil(SYNC_CHUNK).max(1);
        let mut steps = steps.into_iter();
        for chunk in 0..chunks {
            let mut batch = Batch::new();
            let mut changes = Vec::new();
            let mut touched = Vec::new();
            for step in steps.by_ref().take(SYNC_CHUNK) {
                match step {
                    Step::Binding(change, entry) => {
                        match (&change, entry) {
                            (BindingChange::Set { threepid, mxid, .. }, Some(entry)) => {
                                touched.push((threepid.clone(), mxid.clone()));
                                batch.put(SYNC_ENTRY, entry_key(source, threepid), encode(&entry)?);
                            }
                            (BindingChange::Remove { threepid, .. }, _) => {
                                batch.delete(SYNC_ENTRY, entry_key(source, threepid));
                            }
                            _ => {}
                        }
                        changes.push(change);
                    }
                    Step::User(mxid, Some(user)) => {
                        batch.put(SYNC_USER, user_key(source, &mxid), encode(&user)?);
                    }
                    Step::User(mxid, None) => batch.delete(SYNC_USER, user_key(source, &mxid)),
                }
            }
            if chunk + 1 < chunks && chunk == 0 && self.sync_status(source)?.is_none() {
                // A first sync interrupted between chunks still leaves a status, so
                // the source is known (and purged if it leaves the config).
                batch.put(
                    SYNC_STATUS,
                    source.as_bytes().to_vec(),
                    encode(&SyncStatus {
                        last_attempt_ms: status.last_attempt_ms,
                        ..SyncStatus::default()
                    })?,
                );
            }
            let job = locked_chunk(
                Arc::clone(self),
                LockedChunk {
                    origin: origin.clone(),
                    changes,
                    touched,
                    batch,
                    status: (chunk + 1 == chunks).then(|| status.clone()),
                    source: source.to_owned(),
                },
            );
            let done = match writer {
                Some(handle) => handle.spawn(job).await.map_err(|e| StoreError::Io {
                    what: "the sync writer".into(),
                    detail: e.to_string(),
                })??,
                None => job.await?,
            };
            diff.overridden += done.overridden;
            diff.now_bound.extend(done.now_bound);
            for p in done.problems {
                if status.problems.len() < MAX_PROBLEMS {
                    status.problems.push(p);
                }
            }
            self.flusher.flush().await?;
            tokio::task::yield_now().await;
        }
        Ok(diff)
    }

    /// The digest of what `source` gave at its last fully applied run.
    /// Whether the search index may lag behind the directory entries: a source's
    /// change was being applied, or its index update had not finished, when the
    /// process stopped. The index is then rebuilt at start.
    pub fn index_dirty(&self) -> Result<bool, StoreError> {
        Ok(self
            .kv
            .scan_prefix(super::META, KEY_INDEX_DIRTY)
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
            batch.put(super::META, key, vec![1]);
        } else {
            batch.delete(super::META, key);
        }
        self.commit(batch).await
    }

    /// Clears every source's mark (after a full rebuild at start, before any run).
    pub async fn clear_index_dirty(&self) -> Result<(), StoreError> {
        let mut batch = Batch::new();
        for entry in self.kv.scan_prefix(super::META, KEY_INDEX_DIRTY) {
            batch.delete(super::META, entry?.0);
        }
        self.commit(batch).await
    }

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

/// What one chunk writes under the bindings lock.
struct LockedChunk {
    origin: Origin,
    changes: Vec<BindingChange>,
    /// The 3PIDs the chunk sets, with the Matrix ID this source gives each, in the
    /// order of their changes (sets come before removals).
    touched: Vec<(ThreePid, String)>,
    batch: Batch,
    /// The run's status, on the last chunk.
    status: Option<SyncStatus>,
    source: String,
}

struct ChunkDone {
    now_bound: Vec<(ThreePid, BindingEntry)>,
    problems: Vec<String>,
    overridden: u64,
}

async fn locked_chunk(store: Arc<Store>, chunk: LockedChunk) -> Result<ChunkDone, StoreError> {
    let LockedChunk {
        origin,
        changes,
        touched,
        mut batch,
        status,
        source,
    } = chunk;
    let _guard = Arc::clone(&store.bindings_lock).lock_owned().await;
    let effective = store.stage_binding_changes(changes, &mut batch)?;
    let mut done = ChunkDone {
        now_bound: Vec::new(),
        problems: Vec::new(),
        overridden: 0,
    };
    for ((threepid, ours), entry) in touched.into_iter().zip(effective) {
        let Some(entry) = entry else { continue };
        // Another origin (an operator, a user's own bind, another source) outranks
        // this source for the address: say so.
        if entry.origin != origin && entry.mxid != ours {
            done.overridden += 1;
            done.problems.push(format!(
                "{} {} is {ours} here but stays {} ({} outranks this source)",
                threepid.medium(),
                crate::logging::redact_address(threepid.address()),
                entry.mxid,
                entry.origin
            ));
        }
        done.now_bound.push((threepid, entry));
    }
    if let Some(mut status) = status {
        for p in &done.problems {
            if status.problems.len() < MAX_PROBLEMS {
                status.problems.push(p.clone());
            }
        }
        batch.put(SYNC_STATUS, source.as_bytes().to_vec(), encode(&status)?);
    }
    store.apply(batch)?;
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Medium;

    fn tp(a: &str) -> ThreePid {
        ThreePid::new(Medium::Email, a).unwrap()
    }

    #[tokio::test]
    async fn runs_apply_the_difference_and_leave_other_origins_alone() {
        let store = Arc::new(Store::in_memory().unwrap());
        let mut wanted = BTreeMap::new();
        wanted.insert(tp("a@x.org"), "@a:x.org".to_owned());
        wanted.insert(tp("b@x.org"), "@b:x.org".to_owned());
        let d = store
            .apply_sync(
                "ldap",
                &wanted,
                &BTreeMap::new(),
                SyncStatus::default(),
                None,
            )
            .await
            .unwrap();
        assert_eq!((d.added, d.changed, d.removed), (2, 0, 0));
        assert_eq!(d.now_bound.len(), 2);
        // An operator binding for b outranks the source.
        store
            .change_bindings(vec![BindingChange::Set {
                threepid: tp("b@x.org"),
                origin: Origin::Admin,
                mxid: "@boss:x.org".into(),
                not_before_ms: 0,
                not_after_ms: u64::MAX,
            }])
            .await
            .unwrap();
        wanted.remove(&tp("a@x.org"));
        wanted.insert(tp("b@x.org"), "@b2:x.org".to_owned());
        wanted.insert(tp("c@x.org"), "@c:x.org".to_owned());
        let d = store
            .apply_sync(
                "ldap",
                &wanted,
                &BTreeMap::new(),
                SyncStatus::default(),
                None,
            )
            .await
            .unwrap();
        assert_eq!((d.added, d.changed, d.removed), (1, 1, 1));
        // The operator's binding of b outranks the source's change: reported.
        assert_eq!(d.overridden, 1);
        let problems = store.sync_status("ldap").unwrap().unwrap().problems;
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("@b2:x.org here but stays @boss:x.org (admin outranks"));
        assert!(!problems[0].contains("b@x.org"), "{problems:?}");
        assert!(store.binding(&tp("a@x.org")).unwrap().is_none());
        let b = store.binding(&tp("b@x.org")).unwrap().unwrap();
        assert_eq!(b.effective().unwrap().mxid, "@boss:x.org");
        assert_eq!(b.entries.len(), 2);
        // Nothing changed: nothing written but the status.
        let d = store
            .apply_sync(
                "ldap",
                &wanted,
                &BTreeMap::new(),
                SyncStatus::default(),
                None,
            )
            .await
            .unwrap();
        assert_eq!((d.added, d.changed, d.removed), (0, 0, 0));
        assert_eq!(store.synced("ldap").unwrap().len(), 2);
        assert!(store.synced("sql").unwrap().is_empty());
        store.sync_failed("ldap", "down", 5).await.unwrap();
        let st = store.sync_status("ldap").unwrap().unwrap();
        assert_eq!(st.last_error.as_deref(), Some("down"));
    }

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
            super::super::migrations::CURRENT
        );
    }

    #[tokio::test]
    async fn big_differences_go_in_chunks_and_add_up() {
        let store = Arc::new(Store::in_memory().unwrap());
        let n = SYNC_CHUNK * 2 + 500;
        let wanted: BTreeMap<ThreePid, String> = (0..n)
            .map(|i| (tp(&format!("u{i}@x.org")), format!("@u{i}:x.org")))
            .collect();
        let users: BTreeMap<String, DirectoryUser> = (0..n)
            .map(|i| {
                (
                    format!("@u{i}:x.org"),
                    DirectoryUser {
                        display_name: Some(format!("U {i}")),
                        threepids: vec![tp(&format!("u{i}@x.org"))],
                        ..DirectoryUser::default()
                    },
                )
            })
            .collect();
        let d = store
            .apply_sync("file", &wanted, &users, SyncStatus::default(), None)
            .await
            .unwrap();
        assert_eq!(d.added as usize, n);
        assert_eq!(d.users_changed.len(), n);
        assert_eq!(store.directory_users("file").unwrap(), users);
        assert!(store.directory_users("ldap").unwrap().is_empty());
        // A second source listing one of them: the entry is merged (first source's
        // name, both sources' 3PIDs), for one user as for all.
        let other = BTreeMap::from([(
            "@u7:x.org".to_owned(),
            DirectoryUser {
                display_name: Some("Seven".into()),
                threepids: vec![tp("seven@y.org")],
                ..DirectoryUser::default()
            },
        )]);
        let d2 = store
            .apply_sync(
                "ldap",
                &BTreeMap::new(),
                &other,
                SyncStatus::default(),
                None,
            )
            .await
            .unwrap();
        assert_eq!(d2.users_changed, vec!["@u7:x.org".to_owned()]);
        let merged = store.directory_entry("@u7:x.org").unwrap().unwrap();
        assert_eq!(merged.threepids.len(), 2);
        assert_eq!(
            Some(&merged),
            store.directory_entries().unwrap().get("@u7:x.org")
        );
        assert!(store.directory_entry("@nobody:x.org").unwrap().is_none());
        store.forget_source("ldap", None).await.unwrap();
        assert_eq!(d.now_bound.len(), n);
        assert_eq!(store.synced("file").unwrap().len(), n);
        assert_eq!(
            store.sync_status("file").unwrap().unwrap().added as usize,
            n
        );
        let d = store
            .apply_sync(
                "file",
                &BTreeMap::new(),
                &BTreeMap::new(),
                SyncStatus::default(),
                None,
            )
            .await
            .unwrap();
        assert_eq!(d.removed as usize, n);
        assert!(store.synced("file").unwrap().is_empty());
        assert!(store.directory_users("file").unwrap().is_empty());
        assert!(store.binding(&tp("u7@x.org")).unwrap().is_none());
        assert_eq!(store.sync_sources().unwrap(), vec!["file".to_owned()]);
        store.forget_source("file", None).await.unwrap();
        assert!(store.sync_sources().unwrap().is_empty());
    }
}
