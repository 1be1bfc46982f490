//! 3PID bindings in the store. One record per 3PID holds what each origin says about it
//! (an operator command, a user's `/3pid/bind`, each sync source); the *effective*
//! binding is the entry of highest priority, and it is what lookups answer.
//!
//! Tree `binding`: `generation (u32 BE) ‖ sha256("<address> <medium> <pepper>")` →
//! [`ThreePidRecord`] (with its 3PID), under the current pepper generation. One entry
//! per 3PID serves both lookups: a hashed one reads the client's hash directly, a plain
//! one hashes the normalised address first. (A second index keyed by address doubled
//! sled's entries, and sled's memory at open grows with their number: measured ~50
//! bytes per entry.) A pepper rotation rewrites every record under the new generation.
//!
//! Writers of bindings are serialised by `Store::bindings_lock`, so read-modify-write of
//! a record cannot interleave; the flush happens after the lock is released, so
//! concurrent writers still share fsyncs.

use super::codec::{decode, encode, Record};
use super::kv::Batch;
use super::{now_ms, Store, StoreError, META};
use crate::model::ThreePid;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::HashMap;

pub(crate) const BINDING: &str = "binding";
pub(crate) const KEY_PEPPER: &[u8] = b"pepper";

/// Borrowed views of the stored layout, for lookups: only the effective entry is kept
/// and nothing is allocated but its Matrix ID.
mod view {
    use super::HashEntry;
    use crate::model::Medium;
    use serde::de::{Deserializer, SeqAccess, Visitor};
    use serde::Deserialize;

    #[derive(Deserialize)]
    pub struct ThreePid<'a> {
        #[allow(dead_code)]
        medium: Medium,
        #[allow(dead_code)]
        address: &'a str,
    }

    #[derive(Deserialize)]
    pub enum Origin<'a> {
        Admin,
        Bind,
        Sync(#[allow(dead_code)] &'a str),
    }

    #[derive(Deserialize)]
    pub struct Entry<'a> {
        #[allow(dead_code)]
        #[serde(borrow)]
        origin: Origin<'a>,
        mxid: &'a str,
        #[allow(dead_code)]
        created_ms: u64,
        #[allow(dead_code)]
        updated_ms: u64,
        not_before_ms: u64,
        not_after_ms: u64,
    }

    impl Entry<'_> {
        pub fn to_hash_entry(&self) -> HashEntry {
            HashEntry {
                mxid: self.mxid.to_owned(),
                not_before_ms: self.not_before_ms,
                not_after_ms: self.not_after_ms,
            }
        }
    }

    /// The first element of the entries list (the effective one); the rest are read
    /// past without being kept.
    pub struct First<'a>(pub Option<Entry<'a>>);

    impl<'de: 'a, 'a> Deserialize<'de> for First<'a> {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V<'a>(std::marker::PhantomData<&'a ()>);
            impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
                type Value = First<'a>;
                fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    f.write_str("a list of binding entries")
                }
                fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<First<'a>, A::Error> {
                    let first = seq.next_element::<Entry<'a>>()?;
                    while seq.next_element::<Entry<'a>>()?.is_some() {}
                    Ok(First(first))
                }
            }
            d.deserialize_seq(V(std::marker::PhantomData))
        }
    }

    #[derive(Deserialize)]
    pub struct Record<'a> {
        #[allow(dead_code)]
        #[serde(borrow)]
        threepid: Option<ThreePid<'a>>,
        #[serde(borrow)]
        pub first: First<'a>,
    }
}

/// Who asserted a binding. The order of the variants is the priority: an operator's
/// command beats a user's bind, which beats a sync source; sync sources rank by name
/// until sources carry a configured priority.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Origin {
    Admin,
    Bind,
    Sync(String),
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Admin => f.write_str("admin"),
            Self::Bind => f.write_str("bind"),
            Self::Sync(source) => write!(f, "sync:{source}"),
        }
    }
}

/// One origin's statement about a 3PID.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BindingEntry {
    pub origin: Origin,
    pub mxid: String,
    /// When this origin first bound the 3PID (unix ms), and when it last changed it.
    pub created_ms: u64,
    pub updated_ms: u64,
    /// Validity window of the association (spec: `not_before`, `not_after`).
    pub not_before_ms: u64,
    pub not_after_ms: u64,
}

/// Everything known about one 3PID, entries sorted by priority.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThreePidRecord {
    /// The 3PID itself (the key is only its hash), for rotations and operators.
    pub threepid: Option<ThreePid>,
    pub entries: Vec<BindingEntry>,
}

impl Record for ThreePidRecord {
    const VERSION: u8 = 1;
    const NAME: &'static str = "3PID binding";
}

impl ThreePidRecord {
    /// The binding lookups answer with.
    pub fn effective(&self) -> Option<&BindingEntry> {
        self.entries.first()
    }
}

/// What a lookup needs of the effective binding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HashEntry {
    pub mxid: String,
    pub not_before_ms: u64,
    pub not_after_ms: u64,
}

/// The lookup pepper and the generation of the hash index built with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PepperState {
    pub pepper: String,
    pub generation: u32,
    pub since_ms: u64,
}

impl Record for PepperState {
    const VERSION: u8 = 1;
    const NAME: &'static str = "lookup pepper";
}

/// A change requested by one origin.
#[derive(Debug, Clone)]
pub enum BindingChange {
    Set {
        threepid: ThreePid,
        origin: Origin,
        mxid: String,
        not_before_ms: u64,
        not_after_ms: u64,
    },
    Remove {
        threepid: ThreePid,
        origin: Origin,
    },
    /// Removes the origin's entry only if it names `mxid` (an unbind must not take away
    /// a binding that changed meanwhile).
    RemoveIfMxid {
        threepid: ThreePid,
        origin: Origin,
        mxid: String,
    },
}

/// `sha256("<address> <medium> <pepper>")`, the spec's lookup hash.
pub fn lookup_hash(threepid: &ThreePid, pepper: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(threepid.address().as_bytes());
    h.update(b" ");
    h.update(threepid.medium().as_str().as_bytes());
    h.update(b" ");
    h.update(pepper.as_bytes());
    h.finalize().into()
}

/// Where the record of `threepid` lives under `pepper`.
fn record_key(pepper: &PepperState, threepid: &ThreePid) -> [u8; 36] {
    hash_key(pepper.generation, &lookup_hash(threepid, &pepper.pepper))
}

pub(crate) fn hash_key(generation: u32, digest: &[u8; 32]) -> [u8; 36] {
    let mut key = [0u8; 36];
    key[..4].copy_from_slice(&generation.to_be_bytes());
    key[4..].copy_from_slice(digest);
    key
}

impl Store {
    /// The current pepper (kept in memory; the store holds the durable copy).
    pub fn pepper(&self) -> PepperState {
        self.pepper
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The generation of the current pepper, without taking a lock.
    pub fn pepper_generation(&self) -> u32 {
        self.pepper_generation
            .load(std::sync::atomic::Ordering::Acquire)
    }

    /// The generation of the current pepper if `pepper` is it, else the current pepper
    /// (for the error). The hot path of every lookup: no allocation when it matches.
    pub fn check_pepper(&self, pepper: &str) -> Result<u32, String> {
        let current = self.pepper.read().unwrap_or_else(|p| p.into_inner());
        if current.pepper == pepper {
            Ok(current.generation)
        } else {
            Err(current.pepper.clone())
        }
    }

    /// Creates the first pepper if the store has none. Called once at open.
    pub(crate) fn load_or_init_pepper(
        kv: &dyn super::kv::Kv,
        make: impl FnOnce() -> Result<String, StoreError>,
    ) -> Result<PepperState, StoreError> {
        if let Some(bytes) = kv.get(META, KEY_PEPPER)? {
            return decode(&bytes);
        }
        let state = PepperState {
            pepper: make()?,
            generation: 1,
            since_ms: now_ms(),
        };
        let mut batch = Batch::new();
        batch.put(META, KEY_PEPPER.to_vec(), encode(&state)?);
        kv.apply(batch)?;
        kv.flush()?;
        Ok(state)
    }

    pub fn binding(&self, threepid: &ThreePid) -> Result<Option<ThreePidRecord>, StoreError> {
        let pepper = self.pepper();
        self.get(BINDING, &record_key(&pepper, threepid))
    }

    /// The effective binding of the 3PID whose hash is `digest` under pepper
    /// `generation`.
    pub fn hashed(
        &self,
        generation: u32,
        digest: &[u8; 32],
    ) -> Result<Option<HashEntry>, StoreError> {
        let mut found: Result<Option<HashEntry>, StoreError> = Ok(None);
        self.kv
            .get_with(BINDING, &hash_key(generation, digest), &mut |bytes| {
                found = super::codec::decode_view::<ThreePidRecord, view::Record<'_>>(bytes)
                    .map(|r| r.first.0.map(|e| e.to_hash_entry()));
            })?;
        found
    }

    /// Applies origin changes atomically and durably. Returns, for each change, the
    /// effective binding of its 3PID afterwards.
    pub async fn change_bindings(
        &self,
        changes: Vec<BindingChange>,
    ) -> Result<Vec<Option<BindingEntry>>, StoreError> {
        if changes.is_empty() {
            return Ok(Vec::new());
        }
        let outcome = {
            let _guard = self.bindings_lock.lock().await;
            let mut batch = Batch::new();
            let outcome = self.stage_binding_changes(changes, &mut batch)?;
            self.apply(batch)?;
            outcome
        };
        self.flusher.flush().await?;
        Ok(outcome)
    }

    /// Adds what `changes` do to the binding records to `batch` (the caller holds the
    /// bindings lock and applies the batch). Returns, for each change, the effective
    /// binding of its 3PID afterwards.
    pub(crate) fn stage_binding_changes(
        &self,
        changes: Vec<BindingChange>,
        batch: &mut Batch,
    ) -> Result<Vec<Option<BindingEntry>>, StoreError> {
        let pepper = self.pepper();
        let mut pending: HashMap<ThreePid, ThreePidRecord> = HashMap::new();
        let mut order = Vec::with_capacity(changes.len());
        let now = now_ms();
        for change in changes {
            let threepid = match &change {
                BindingChange::Set { threepid, .. }
                | BindingChange::Remove { threepid, .. }
                | BindingChange::RemoveIfMxid { threepid, .. } => threepid.clone(),
            };
            if !pending.contains_key(&threepid) {
                let mut record: ThreePidRecord = self
                    .get(BINDING, &record_key(&pepper, &threepid))?
                    .unwrap_or_default();
                record.threepid = Some(threepid.clone());
                pending.insert(threepid.clone(), record);
            }
            let record = pending.entry(threepid.clone()).or_default();
            apply_change(record, change, now);
            order.push(threepid);
        }
        for (threepid, record) in &pending {
            let key = record_key(&pepper, threepid).to_vec();
            if record.entries.is_empty() {
                batch.delete(BINDING, key);
            } else {
                batch.put(BINDING, key, encode(record)?);
            }
        }
        Ok(order
            .iter()
            .map(|t| pending.get(t).and_then(|r| r.effective().cloned()))
            .collect())
    }

    /// Replaces the pepper and rebuilds the hash index for it. Lookups keep using the
    /// old generation until the switch, which is one atomic write; writers of bindings
    /// wait meanwhile. Old-generation entries are removed afterwards.
    pub async fn rotate_pepper(
        self: &std::sync::Arc<Self>,
        new_pepper: String,
    ) -> Result<PepperState, StoreError> {
        let guard = std::sync::Arc::clone(&self.bindings_lock)
            .lock_owned()
            .await;
        let store = std::sync::Arc::clone(self);
        let state = tokio::task::spawn_blocking(move || {
            let _guard = guard;
            store.rebuild_hashes(new_pepper)
        })
        .await
        .map_err(|e| StoreError::Io {
            what: "pepper rotation".into(),
            detail: e.to_string(),
        })??;
        self.flusher.flush().await?;
        Ok(state)
    }

    fn rebuild_hashes(&self, new_pepper: String) -> Result<PepperState, StoreError> {
        let old = self.pepper();
        let next = PepperState {
            pepper: new_pepper,
            generation: old.generation.wrapping_add(1),
            since_ms: now_ms(),
        };
        // Leftovers of an interrupted rotation to the same generation.
        self.delete_generation(next.generation)?;
        let mut batch = Batch::new();
        for item in self.kv.scan_prefix(BINDING, &old.generation.to_be_bytes()) {
            let (_, value) = item?;
            let record: ThreePidRecord = decode(&value)?;
            let Some(threepid) = &record.threepid else {
                continue;
            };
            // Same record, new place.
            batch.put(BINDING, record_key(&next, threepid).to_vec(), value);
            if batch.len() >= 10_000 {
                self.apply(std::mem::take(&mut batch))?;
            }
        }
        self.apply(batch)?;
        self.kv.flush()?;
        let mut switch = Batch::new();
        switch.put(META, KEY_PEPPER.to_vec(), encode(&next)?);
        self.apply(switch)?;
        self.kv.flush()?;
        {
            let mut current = self.pepper.write().unwrap_or_else(|p| p.into_inner());
            *current = next.clone();
            self.pepper_generation
                .store(next.generation, std::sync::atomic::Ordering::Release);
        }
        self.delete_generation(old.generation)?;
        Ok(next)
    }

    /// Removes every hash entry of one generation, in batches.
    fn delete_generation(&self, generation: u32) -> Result<(), StoreError> {
        loop {
            let keys: Vec<Vec<u8>> = self
                .kv
                .scan_prefix(BINDING, &generation.to_be_bytes())
                .take(10_000)
                .map(|r| r.map(|(k, _)| k))
                .collect::<Result<_, _>>()?;
            if keys.is_empty() {
                return Ok(());
            }
            let mut batch = Batch::new();
            for k in keys {
                batch.delete(BINDING, k);
            }
            self.apply(batch)?;
        }
    }

    /// Removes records of generations other than the current one (left by a rotation
    /// that was interrupted). Called at open.
    pub(crate) fn clean_stale_generations(&self) -> Result<(), StoreError> {
        // Keys start with the generation (big-endian), so a leftover generation is
        // either below the current one (then it holds the first key of the tree) or the
        // next one (an interrupted rotation). Look only there: a scan of the whole tree
        // at every start would read, and keep in memory, every record.
        let current = self.pepper().generation;
        let generation_of = |k: &[u8]| {
            k.get(..4)
                .map(|g| u32::from_be_bytes([g[0], g[1], g[2], g[3]]))
        };
        loop {
            let first = self
                .kv
                .scan_prefix(BINDING, b"")
                .next()
                .transpose()?
                .and_then(|(k, _)| generation_of(&k));
            let next = current.wrapping_add(1);
            let leftover_next = self
                .kv
                .scan_prefix(BINDING, &next.to_be_bytes())
                .next()
                .transpose()?
                .is_some();
            let stale = match first {
                Some(g) if g != current => Some(g),
                _ if leftover_next => Some(next),
                _ => None,
            };
            match stale {
                Some(generation) => {
                    tracing::info!(
                        generation,
                        "removing records of an interrupted pepper rotation"
                    );
                    self.delete_generation(generation)?;
                }
                None => return Ok(()),
            }
        }
    }

    /// Number of 3PIDs with at least one binding (a full scan).
    pub fn binding_count(&self) -> Result<u64, StoreError> {
        let generation = self.pepper_generation();
        let mut n = 0;
        for item in self.kv.scan_prefix(BINDING, &generation.to_be_bytes()) {
            item?;
            n += 1;
        }
        Ok(n)
    }
}

/// Applies one origin's change to a record, keeping entries sorted by priority.
fn apply_change(record: &mut ThreePidRecord, change: BindingChange, now: u64) {
    match change {
        BindingChange::Set {
            origin,
            mxid,
            not_before_ms,
            not_after_ms,
            ..
        } => {
            // A new association starts when the caller said it does (its `not_before`,
            // read from the same clock reading as the rest of its answer), never later
            // than now.
            let created = not_before_ms.min(now);
            match record.entries.iter_mut().find(|e| e.origin == origin) {
                Some(e) => {
                    if e.mxid != mxid {
                        e.created_ms = created;
                    }
                    e.mxid = mxid;
                    e.updated_ms = now;
                    e.not_before_ms = not_before_ms;
                    e.not_after_ms = not_after_ms;
                }
                None => record.entries.push(BindingEntry {
                    origin,
                    mxid,
                    created_ms: created,
                    updated_ms: now,
                    not_before_ms,
                    not_after_ms,
                }),
            }
            record.entries.sort_by(|a, b| a.origin.cmp(&b.origin));
        }
        BindingChange::Remove { origin, .. } => {
            record.entries.retain(|e| e.origin != origin);
        }
        BindingChange::RemoveIfMxid { origin, mxid, .. } => {
            record
                .entries
                .retain(|e| !(e.origin == origin && e.mxid == mxid));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Medium;
    use base64::Engine as _;

    fn tp(a: &str) -> ThreePid {
        ThreePid::new(
            if a.contains('@') {
                Medium::Email
            } else {
                Medium::Msisdn
            },
            a,
        )
        .unwrap()
    }

    fn b64url(d: &[u8; 32]) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(d)
    }

    /// The spec's hashing test vectors (pepper `matrixrocks`).
    #[test]
    fn spec_hash_vectors() {
        assert_eq!(
            b64url(&lookup_hash(&tp("alice@example.com"), "matrixrocks")),
            "4kenr7N9drpCJ4AfalmlGQVsOn3o2RHjkADUpXJWZUc"
        );
        assert_eq!(
            b64url(&lookup_hash(&tp("bob@example.com"), "matrixrocks")),
            "LJwSazmv46n0hlMlsb_iYxI0_HXEqy_yj6Jm636cdT8"
        );
        assert_eq!(
            b64url(&lookup_hash(&tp("18005552067"), "matrixrocks")),
            "nlo35_T5fzSGZzJApqu8lgIudJvmOQtDaHtr-I4rU7I"
        );
    }

    fn set(t: &ThreePid, origin: Origin, mxid: &str) -> BindingChange {
        BindingChange::Set {
            threepid: t.clone(),
            origin,
            mxid: mxid.into(),
            not_before_ms: 0,
            not_after_ms: u64::MAX,
        }
    }

    #[tokio::test]
    async fn priority_and_the_hash_index_follow_the_effective_binding() {
        let store = Store::in_memory().unwrap();
        let a = tp("alice@example.org");
        let pepper = store.pepper();
        let digest = lookup_hash(&a, &pepper.pepper);
        let mxid_at = |s: &Store| {
            s.hashed(pepper.generation, &digest)
                .unwrap()
                .map(|h| h.mxid)
        };

        store
            .change_bindings(vec![set(&a, Origin::Sync("ldap".into()), "@sync:x")])
            .await
            .unwrap();
        assert_eq!(mxid_at(&store).as_deref(), Some("@sync:x"));
        store
            .change_bindings(vec![set(&a, Origin::Bind, "@bound:x")])
            .await
            .unwrap();
        assert_eq!(mxid_at(&store).as_deref(), Some("@bound:x"));
        store
            .change_bindings(vec![set(&a, Origin::Admin, "@admin:x")])
            .await
            .unwrap();
        assert_eq!(mxid_at(&store).as_deref(), Some("@admin:x"));
        let out = store
            .change_bindings(vec![BindingChange::Remove {
                threepid: a.clone(),
                origin: Origin::Admin,
            }])
            .await
            .unwrap();
        assert_eq!(out[0].as_ref().map(|e| e.mxid.as_str()), Some("@bound:x"));
        assert_eq!(mxid_at(&store).as_deref(), Some("@bound:x"));
        store
            .change_bindings(vec![
                BindingChange::Remove {
                    threepid: a.clone(),
                    origin: Origin::Bind,
                },
                BindingChange::Remove {
                    threepid: a.clone(),
                    origin: Origin::Sync("ldap".into()),
                },
            ])
            .await
            .unwrap();
        assert_eq!(mxid_at(&store), None);
        assert_eq!(store.binding(&a).unwrap(), None);
    }

    #[tokio::test]
    async fn rotation_rehashes_everything_and_drops_the_old_generation() {
        let store = std::sync::Arc::new(Store::in_memory().unwrap());
        let all: Vec<ThreePid> = (0..50)
            .map(|i| tp(&format!("user{i}@example.org")))
            .collect();
        store
            .change_bindings(all.iter().map(|t| set(t, Origin::Admin, "@u:x")).collect())
            .await
            .unwrap();
        let old = store.pepper();
        let new = store
            .rotate_pepper("freshpepperfreshpepper".into())
            .await
            .unwrap();
        assert_eq!(new.generation, old.generation + 1);
        assert_eq!(store.pepper(), new);
        for t in &all {
            assert!(store
                .hashed(new.generation, &lookup_hash(t, &new.pepper))
                .unwrap()
                .is_some());
            assert!(store
                .hashed(old.generation, &lookup_hash(t, &old.pepper))
                .unwrap()
                .is_none());
        }
        assert_eq!(store.kv.count(BINDING).unwrap(), 50);
        assert_eq!(store.binding_count().unwrap(), 50);
        // Records are found under the new pepper, with their 3PID.
        let record = store.binding(&all[7]).unwrap().unwrap();
        assert_eq!(record.threepid.as_ref(), Some(&all[7]));
    }

    #[tokio::test]
    async fn leftovers_of_an_interrupted_rotation_are_removed_at_open() {
        use crate::store::kv::Kv as _;
        let kv = std::sync::Arc::new(crate::store::mem_kv::MemKv::new());
        let store = Store::with_kv(kv.clone(), crate::store::migrations::ALL, 32).unwrap();
        let t = tp("a@b.c");
        store
            .change_bindings(vec![set(&t, Origin::Admin, "@a:b")])
            .await
            .unwrap();
        let generation = store.pepper().generation;
        drop(store);
        let mut b = Batch::new();
        b.put(
            BINDING,
            hash_key(generation - 1, &[1; 32]).to_vec(),
            vec![1],
        );
        b.put(
            BINDING,
            hash_key(generation + 1, &[2; 32]).to_vec(),
            vec![1],
        );
        kv.apply(b).unwrap();
        let store = Store::with_kv(kv.clone(), crate::store::migrations::ALL, 32).unwrap();
        assert_eq!(kv.count(BINDING).unwrap(), 1);
        assert!(store.binding(&t).unwrap().is_some());
    }
}
