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

/// Records read between two pauses of a paced run.
const PACE_EVERY: usize = 5_000;

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
/// 3PIDs that have invites waiting on them, and counts.
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
    /// How many bindings the last applied snapshot of `source` holds (counted, not
    /// decoded: a resync asks before its apply, while it holds what it fetched).
    pub fn synced_count(&self, source: &str) -> Result<usize, StoreError> {
        let mut n = 0;
        for entry in self.kv.scan_prefix(SYNC_ENTRY, &source_prefix(source)) {
            entry?;
            n += 1;
        }
        Ok(n)
    }

    /// The last applied snapshot of `source`.
    #[cfg(test)]
    pub fn synced(&self, source: &str) -> Result<Vec<SyncedBinding>, StoreError> {
        self.kv
            .scan_prefix(SYNC_ENTRY, &source_prefix(source))
            .map(|e| e.and_then(|(_, v)| decode(&v)))
            .collect()
    }

    /// Removes everything `source` contributed (bindings, directory entries, status):
    /// for a source that is no longer configured.
    pub async fn forget_source(self: &Arc<Self>, source: &str) -> Result<SyncDiff, StoreError> {
        let diff = self
            .apply_sync(
                source,
                BTreeMap::new(),
                BTreeMap::new(),
                SyncStatus::default(),
                Driving {
                    progress: &crate::progress::Progress::default(),
                    pacer: &crate::pace::Pacer::default(),
                },
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
    /// Each chunk takes the bindings lock for as long as it reads the records and
    /// writes its batch, on the caller's thread, and does not await while holding it:
    /// whatever pauses the run does between chunks, with the lock free.
    pub async fn apply_sync(
        self: &Arc<Self>,
        source: &str,
        wanted: BTreeMap<ThreePid, String>,
        users: BTreeMap<String, DirectoryUser>,
        status: SyncStatus,
        driving: Driving<'_>,
    ) -> Result<SyncDiff, StoreError> {
        let Driving { progress, pacer } = driving;
        // The difference is found and written a chunk at a time: what the source gave
        // last time is read back one record at a time (by key, then one scan for what
        // is gone), never held whole, so a run costs its chunk and what it was given
        // (`wanted` and `users`, consumed as they are written).
        progress.phase("applying", "changes", None);
        let mut run = Run {
            store: self,
            source,
            origin: Origin::Sync(source.to_owned()),
            now: now_ms(),
            status,
            progress,
            pacer,
            diff: SyncDiff::default(),
            steps: Vec::new(),
            chunks: 0,
        };
        // One pass over the last snapshot, in store order (sequential reads, where a
        // read per wanted 3PID thrashed the page cache): what changed and what is gone
        // is noted, and which wanted 3PIDs it had, one bit each.
        // Bit `i` of `seen`: the `i`th wanted 3PID (in order) is in the last snapshot;
        // of `differs`: with another Matrix ID there.
        let mut seen = bits(wanted.len());
        let mut differs = bits(wanted.len());
        let mut gone = Vec::new();
        {
            let keys: Vec<&ThreePid> = wanted.keys().collect();
            for (i, e) in self
                .kv
                .scan_prefix(SYNC_ENTRY, &source_prefix(source))
                .enumerate()
            {
                let (_, raw) = e?;
                let old: SyncedBinding = decode(&raw)?;
                match keys.binary_search(&&old.threepid) {
                    Ok(at) => {
                        set(&mut seen, at);
                        if wanted.get(&old.threepid) != Some(&old.mxid) {
                            set(&mut differs, at);
                        }
                    }
                    Err(_) => gone.push(old.threepid),
                }
                if (i + 1) % PACE_EVERY == 0 {
                    pacer.pause_blocking();
                }
            }
        }
        run.diff.added = wanted.len() as u64 - ones(&seen);
        run.diff.changed = ones(&differs);
        // Taken out of `wanted` one by one, so its memory goes as the run goes: a
        // first sync of a large directory must not hold the source's bindings twice.
        for (at, (threepid, mxid)) in wanted.into_iter().enumerate() {
            if is_set(&seen, at) && !is_set(&differs, at) {
                continue;
            }
            let record = SyncedBinding {
                threepid: threepid.clone(),
                mxid: mxid.clone(),
            };
            run.push(Step::Binding(
                BindingChange::Set {
                    threepid,
                    origin: run.origin.clone(),
                    mxid,
                    not_before_ms: run.now,
                    not_after_ms: run.now.saturating_add(SYNC_VALIDITY_MS),
                },
                Some(record),
            ))
            .await?;
        }
        drop((seen, differs));
        for threepid in gone {
            run.diff.removed += 1;
            run.push(Step::Binding(
                BindingChange::Remove {
                    threepid,
                    origin: run.origin.clone(),
                },
                None,
            ))
            .await?;
        }
        // Directory entries: one merge of the last snapshot's (in store order) with
        // `users` (sorted the same way) marks the listed entries that are new or
        // differ; those are then moved out of `users` as they are written.
        let prefix = source_prefix(source);
        let mut differs = bits(users.len());
        let mut unlisted: Vec<String> = Vec::new();
        {
            let mut listed = users.iter().enumerate().peekable();
            for (i, e) in self.kv.scan_prefix(SYNC_USER, &prefix).enumerate() {
                let (k, raw) = e?;
                let mxid = String::from_utf8_lossy(&k[prefix.len()..]).into_owned();
                while let Some((at, _)) = listed.next_if(|(_, (m, _))| m.as_str() < mxid.as_str()) {
                    set(&mut differs, at);
                }
                match listed.next_if(|(_, (m, _))| **m == mxid) {
                    Some((at, (_, user))) => {
                        if decode::<DirectoryUser>(&raw)? != *user {
                            set(&mut differs, at);
                        }
                    }
                    None => unlisted.push(mxid),
                }
                if (i + 1) % PACE_EVERY == 0 {
                    pacer.pause_blocking();
                }
            }
            for (at, _) in listed {
                set(&mut differs, at);
            }
        }
        let changed = usize::try_from(ones(&differs)).unwrap_or(usize::MAX);
        run.diff
            .users_changed
            .reserve_exact(changed.saturating_add(unlisted.len()));
        for mxid in unlisted {
            run.diff.users_changed.push(mxid.clone());
            run.push(Step::User(mxid, None)).await?;
        }
        for (at, (mxid, user)) in users.into_iter().enumerate() {
            if is_set(&differs, at) {
                run.diff.users_changed.push(mxid.clone());
                run.push(Step::User(mxid, Some(user))).await?;
            }
        }
        run.write_chunk(true).await?;
        Ok(run.diff)
    }
}

/// A bit per item of a list, all clear.
fn bits(items: usize) -> Vec<u64> {
    vec![0; items.div_ceil(64)]
}

fn set(bits: &mut [u64], at: usize) {
    bits[at / 64] |= 1 << (at % 64);
}

fn is_set(bits: &[u64], at: usize) -> bool {
    bits[at / 64] & (1 << (at % 64)) != 0
}

fn ones(bits: &[u64]) -> u64 {
    bits.iter().map(|w| u64::from(w.count_ones())).sum()
}

/// How a sync run is driven: what reports its progress, and what paces it against
/// the requests being served.
#[derive(Clone, Copy)]
pub struct Driving<'a> {
    pub progress: &'a crate::progress::Progress,
    pub pacer: &'a crate::pace::Pacer,
}

/// A run being applied: its counts so far and the chunk being filled.
struct Run<'a> {
    store: &'a Arc<Store>,
    source: &'a str,
    origin: Origin,
    now: u64,
    status: SyncStatus,
    progress: &'a crate::progress::Progress,
    pacer: &'a crate::pace::Pacer,
    diff: SyncDiff,
    steps: Vec<Step>,
    /// Chunks written so far.
    chunks: usize,
}

impl Run<'_> {
    /// Adds a write to the chunk, writing the chunk when it is full.
    async fn push(&mut self, step: Step) -> Result<(), StoreError> {
        self.steps.push(step);
        if self.steps.len() >= SYNC_CHUNK {
            self.write_chunk(false).await?;
        }
        Ok(())
    }

    /// Writes the chunk under the bindings lock; the `last` one carries the run's status.
    async fn write_chunk(&mut self, last: bool) -> Result<(), StoreError> {
        let source = self.source;
        let mut batch = Batch::new();
        let mut changes = Vec::new();
        let mut touched = Vec::new();
        let in_chunk = self.steps.len();
        for step in self.steps.drain(..) {
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
        if !last && self.chunks == 0 && self.store.sync_status(source)?.is_none() {
            // A first sync interrupted between chunks still leaves a status, so the
            // source is known (and purged if it leaves the config).
            batch.put(
                SYNC_STATUS,
                source.as_bytes().to_vec(),
                encode(&SyncStatus {
                    last_attempt_ms: self.status.last_attempt_ms,
                    ..SyncStatus::default()
                })?,
            );
        }
        let status = last.then(|| {
            let mut status = self.status.clone();
            status.added = self.diff.added;
            status.changed = self.diff.changed;
            status.removed = self.diff.removed;
            status
        });
        let done = locked_chunk(
            self.store,
            LockedChunk {
                origin: self.origin.clone(),
                changes,
                touched,
                batch,
                status,
                source: source.to_owned(),
            },
        )
        .await?;
        self.chunks += 1;
        self.diff.overridden += done.overridden;
        // Kept only where an invite waits (all that the caller does with them): a first
        // sync binds every address, and holding them all would cost more than the run.
        if self.store.has_any_invites()? {
            for (threepid, entry) in done.now_bound {
                if self.store.has_invites(&threepid)? {
                    self.diff.now_bound.push((threepid, entry));
                }
            }
        }
        for p in done.problems {
            if self.status.problems.len() < MAX_PROBLEMS {
                self.status.problems.push(p);
            }
        }
        self.store.flusher.flush().await?;
        self.progress.add(in_chunk as u64);
        tokio::task::yield_now().await;
        self.pacer.pause().await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Medium;

    /// A sync run of `source` with nobody waiting on it and no pacing.
    async fn unpaced(
        store: &Arc<Store>,
        source: &str,
        wanted: &BTreeMap<ThreePid, String>,
        users: &BTreeMap<String, DirectoryUser>,
    ) -> Result<SyncDiff, StoreError> {
        store
            .apply_sync(
                source,
                wanted.clone(),
                users.clone(),
                SyncStatus::default(),
                Driving {
                    progress: &crate::progress::Progress::default(),
                    pacer: &crate::pace::Pacer::default(),
                },
            )
            .await
    }

    fn tp(a: &str) -> ThreePid {
        ThreePid::new(Medium::Email, a).unwrap()
    }

    #[tokio::test]
    async fn runs_apply_the_difference_and_leave_other_origins_alone() {
        let store = Arc::new(Store::in_memory().unwrap());
        // An invite waits for a: its new binding is handed back, b's (none) is not.
        store
            .put_invite(&crate::store::invites::InviteRecord {
                token: "t".into(),
                threepid: tp("a@x.org"),
                room_id: "!r:x.org".into(),
                sender: "@s:x.org".into(),
                ephemeral_public_key: "k".into(),
                created_ms: 0,
                details: BTreeMap::new(),
            })
            .await
            .unwrap();
        let mut wanted = BTreeMap::new();
        wanted.insert(tp("a@x.org"), "@a:x.org".to_owned());
        wanted.insert(tp("b@x.org"), "@b:x.org".to_owned());
        let d = unpaced(&store, "ldap", &wanted, &BTreeMap::new())
            .await
            .unwrap();
        assert_eq!((d.added, d.changed, d.removed), (2, 0, 0));
        assert_eq!(d.now_bound.len(), 1);
        assert_eq!(d.now_bound[0].0, tp("a@x.org"));
        assert_eq!(d.now_bound[0].1.mxid, "@a:x.org");
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
        let d = unpaced(&store, "ldap", &wanted, &BTreeMap::new())
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
        let d = unpaced(&store, "ldap", &wanted, &BTreeMap::new())
            .await
            .unwrap();
        assert_eq!((d.added, d.changed, d.removed), (0, 0, 0));
        assert_eq!(store.synced("ldap").unwrap().len(), 2);
        assert!(store.synced("sql").unwrap().is_empty());
        store.sync_failed("ldap", "down", 5).await.unwrap();
        let st = store.sync_status("ldap").unwrap().unwrap();
        assert_eq!(st.last_error.as_deref(), Some("down"));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_paced_run_never_pauses_holding_the_bindings_lock() {
        use std::sync::atomic::{AtomicU64, Ordering};
        let store = Arc::new(Store::in_memory().unwrap());
        let n = SYNC_CHUNK * 3 + 100;
        let wanted: BTreeMap<ThreePid, String> = (0..n)
            .map(|i| (tp(&format!("u{i}@x.org")), format!("@u{i}:x.org")))
            .collect();
        // Requests "answered" before every pause, so each one sleeps; and at each pause
        // whether a writer could take the bindings lock now.
        let pauses = Arc::new(AtomicU64::new(0));
        let blocked = Arc::new(AtomicU64::new(0));
        let activity: crate::pace::Activity = {
            let (store, pauses, blocked) = (store.clone(), pauses.clone(), blocked.clone());
            Arc::new(move || {
                if store.bindings_lock.try_lock().is_err() {
                    blocked.fetch_add(1, Ordering::SeqCst);
                }
                pauses.fetch_add(1, Ordering::SeqCst)
            })
        };
        let pacer = crate::pace::Pacer::new(activity, 0.5);
        let d = store
            .apply_sync(
                "file",
                wanted.clone(),
                BTreeMap::new(),
                SyncStatus::default(),
                Driving {
                    progress: &crate::progress::Progress::default(),
                    pacer: &pacer,
                },
            )
            .await
            .unwrap();
        assert_eq!(d.added as usize, n);
        assert!(
            pauses.load(Ordering::SeqCst) >= 4,
            "a pause after each chunk"
        );
        assert_eq!(
            blocked.load(Ordering::SeqCst),
            0,
            "a pause came while the run held the bindings lock"
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
        let d = unpaced(&store, "file", &wanted, &users).await.unwrap();
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
        let d2 = unpaced(&store, "ldap", &BTreeMap::new(), &other)
            .await
            .unwrap();
        assert_eq!(d2.users_changed, vec!["@u7:x.org".to_owned()]);
        let merged = store.directory_entry("@u7:x.org").unwrap().unwrap();
        assert_eq!(merged.threepids.len(), 2);
        let mut all = BTreeMap::new();
        let listed = store
            .each_directory_entry(|m, u| {
                all.insert(m.to_owned(), u);
                Ok::<_, StoreError>(())
            })
            .unwrap();
        assert_eq!((listed, all.len()), (n as u64, n));
        assert_eq!(store.directory_listings().unwrap(), n as u64 + 1);
        assert_eq!(Some(&merged), all.get("@u7:x.org"));
        assert_eq!(all["@u8:x.org"], users["@u8:x.org"]);
        assert!(store.directory_entry("@nobody:x.org").unwrap().is_none());
        store.forget_source("ldap").await.unwrap();
        assert!(d.now_bound.is_empty(), "no invite waits");
        assert_eq!(store.synced("file").unwrap().len(), n);
        assert_eq!(store.synced_count("file").unwrap(), n);
        assert_eq!(
            store.sync_status("file").unwrap().unwrap().added as usize,
            n
        );
        let d = unpaced(&store, "file", &BTreeMap::new(), &BTreeMap::new())
            .await
            .unwrap();
        assert_eq!(d.removed as usize, n);
        assert!(store.synced("file").unwrap().is_empty());
        assert!(store.directory_users("file").unwrap().is_empty());
        assert!(store.binding(&tp("u7@x.org")).unwrap().is_none());
        assert_eq!(store.sync_sources().unwrap(), vec!["file".to_owned()]);
        store.forget_source("file").await.unwrap();
        assert!(store.sync_sources().unwrap().is_empty());
    }
}
