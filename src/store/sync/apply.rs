//! Applying a sync run: the source's full snapshot diffed against the last applied one,
//! the difference written as binding changes (origin `sync:<source>`) and directory
//! entries, in one atomic batch or, for big differences, in atomic chunks that each
//! carry their part of the snapshot. It must not decide which origin wins a 3PID (the
//! bindings' priority order does, see [`super::chunk`]) nor format the run's status
//! beyond the counts it measured.

use super::chunk::{locked_chunk, LockedChunk};
use super::status::SyncStatus;
use super::{entry_key, source_prefix, user_key, SYNC_DIGEST, SYNC_ENTRY, SYNC_STATUS, SYNC_USER};
use crate::model::{now_ms, DirectoryUser, ThreePid, MAX_PROBLEMS};
use crate::store::bindings::{BindingChange, BindingEntry, Origin};
use crate::store::codec::{decode, encode, Record};
use crate::store::kv::Batch;
use crate::store::{Store, StoreError};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Most binding changes applied in one batch (see [`Store::apply_sync`]).
pub const SYNC_CHUNK: usize = 2_000;

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
                &crate::progress::Progress::default(),
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
        progress: &crate::progress::Progress,
    ) -> Result<SyncDiff, StoreError> {
        let origin = Origin::Sync(source.to_owned());
        let mut diff = SyncDiff::default();
        let previous: BTreeMap<ThreePid, String> = self
            .synced(source)?
            .into_iter()
            .map(|b| (b.threepid, b.mxid))
            .collect();
        let now = now_ms();
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
        progress.phase("applying", "changes", Some(steps.len() as u64));
        let mut steps = steps.into_iter();
        for chunk in 0..chunks {
            let mut batch = Batch::new();
            let mut changes = Vec::new();
            let mut touched = Vec::new();
            let mut in_chunk = 0;
            for step in steps.by_ref().take(SYNC_CHUNK) {
                in_chunk += 1;
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
            progress.add(in_chunk);
            tokio::task::yield_now().await;
        }
        Ok(diff)
    }
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
                &crate::progress::Progress::default(),
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
                &crate::progress::Progress::default(),
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
                &crate::progress::Progress::default(),
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
            .apply_sync(
                "file",
                &wanted,
                &users,
                SyncStatus::default(),
                None,
                &crate::progress::Progress::default(),
            )
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
                &crate::progress::Progress::default(),
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
                &crate::progress::Progress::default(),
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
