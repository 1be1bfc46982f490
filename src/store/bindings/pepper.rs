//! Where a binding record lives and the lookup pepper it depends on: the spec's lookup
//! hash `sha256("<address> <medium> <pepper>")`, keys `generation ‖ hash`, the pepper's
//! durable copy in `meta`, a rotation to a new pepper (every record rewritten under the
//! next generation, one atomic switch, the old generation dropped), and the clean-up of
//! an interrupted rotation at open. Records are moved here as they are: this file must
//! not change what a record says (that is [`super::changes`]).

use super::{ThreePidRecord, BINDING};
use crate::model::{now_ms, ThreePid};
use crate::store::codec::{decode, encode, Record};
use crate::store::kv::Batch;
use crate::store::{Store, StoreError, META};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

const KEY_PEPPER: &[u8] = b"pepper";

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
pub(super) fn record_key(pepper: &PepperState, threepid: &ThreePid) -> [u8; 36] {
    hash_key(pepper.generation, &lookup_hash(threepid, &pepper.pepper))
}

pub(super) fn hash_key(generation: u32, digest: &[u8; 32]) -> [u8; 36] {
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
        kv: &dyn crate::store::kv::Kv,
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

    /// Replaces the pepper and moves every record under it, without holding writers
    /// back: from the start every binding write also lands under the next generation
    /// ([`Store::mirror_for_rotation`]), and the records are copied in chunks, each
    /// under the bindings lock for a moment. Lookups use the old generation until the
    /// switch, which is one atomic write; the old generation is removed afterwards.
    pub async fn rotate_pepper(
        self: &std::sync::Arc<Self>,
        new_pepper: String,
        progress: &crate::progress::Progress,
    ) -> Result<PepperState, StoreError> {
        let _one = self.rotation_lock.lock().await;
        let old = self.pepper();
        let next = PepperState {
            pepper: new_pepper,
            generation: old.generation.wrapping_add(1),
            since_ms: now_ms(),
        };
        // Leftovers of an interrupted rotation to the same generation: nobody writes
        // there before the marker below is set.
        self.blocking({
            let generation = next.generation;
            move |store| store.delete_generation(generation)
        })
        .await?;
        progress.phase("waiting for writers", "", None);
        {
            let _guard = self.bindings_lock.lock().await;
            *self.rotating.write().unwrap_or_else(|p| p.into_inner()) = Some(next.clone());
        }
        let rotated = self.move_records(&old, &next, progress).await;
        if rotated.is_err() {
            let _guard = self.bindings_lock.lock().await;
            *self.rotating.write().unwrap_or_else(|p| p.into_inner()) = None;
        }
        rotated?;
        progress.phase("removing the old hashes", "", None);
        self.flusher.flush().await?;
        self.blocking({
            let generation = old.generation;
            move |store| store.delete_generation(generation)
        })
        .await?;
        Ok(next)
    }

    /// Runs `f` on a blocking thread.
    async fn blocking<T: Send + 'static>(
        self: &std::sync::Arc<Self>,
        f: impl FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let store = std::sync::Arc::clone(self);
        tokio::task::spawn_blocking(move || f(&store))
            .await
            .map_err(|e| StoreError::Io {
                what: "pepper rotation".into(),
                detail: e.to_string(),
            })?
    }

    /// Copies every record of `old` under `next` in chunks, then switches.
    async fn move_records(
        self: &std::sync::Arc<Self>,
        old: &PepperState,
        next: &PepperState,
        progress: &crate::progress::Progress,
    ) -> Result<(), StoreError> {
        progress.phase("counting", "", None);
        let total = self.blocking(|store| store.kv.count(BINDING)).await?;
        progress.phase("rehashing", "bindings", Some(total));
        let mut after: Option<Vec<u8>> = None;
        loop {
            let guard = std::sync::Arc::clone(&self.bindings_lock)
                .lock_owned()
                .await;
            let (old_c, next_c, from) = (old.clone(), next.clone(), after.take());
            let (copied, last) = self
                .blocking(move |store| {
                    let _guard = guard;
                    store.copy_records(&old_c, &next_c, from.as_deref())
                })
                .await?;
            progress.add(copied);
            match last {
                Some(last) => after = Some(last),
                None => break,
            }
            tokio::task::yield_now().await;
        }
        let guard = std::sync::Arc::clone(&self.bindings_lock)
            .lock_owned()
            .await;
        let next = next.clone();
        self.blocking(move |store| {
            let _guard = guard;
            store.switch_pepper(next)
        })
        .await
    }

    /// Records copied per chunk of a rotation (each chunk holds writers back briefly).
    const ROTATION_CHUNK: usize = 2_000;

    /// Copies the next chunk of `old` records (after key `after`) under `next`; the
    /// bindings lock is held, so each copy is the record as it is. Returns how many
    /// and the last key, none when done.
    fn copy_records(
        &self,
        old: &PepperState,
        next: &PepperState,
        after: Option<&[u8]>,
    ) -> Result<(u64, Option<Vec<u8>>), StoreError> {
        let chunk = self.kv.scan_chunk(
            BINDING,
            &old.generation.to_be_bytes(),
            after,
            Self::ROTATION_CHUNK,
        )?;
        let Some(last) = chunk.last().map(|(k, _)| k.clone()) else {
            return Ok((0, None));
        };
        let mut batch = Batch::new();
        for (_, value) in &chunk {
            let record: ThreePidRecord = decode(value)?;
            let Some(threepid) = &record.threepid else {
                continue;
            };
            // Same record, new place.
            batch.put(BINDING, record_key(next, threepid).to_vec(), value.clone());
        }
        // Straight to the store: these are copies, not writes to mirror.
        self.apply_unmirrored(batch)?;
        Ok((chunk.len() as u64, Some(last)))
    }

    /// With every record copied (bindings lock held): makes the copies durable, switches
    /// to the next pepper in one write and ends the mirroring.
    fn switch_pepper(&self, next: PepperState) -> Result<(), StoreError> {
        self.kv.flush()?;
        let mut switch = Batch::new();
        switch.put(META, KEY_PEPPER.to_vec(), encode(&next)?);
        self.apply_unmirrored(switch)?;
        self.kv.flush()?;
        {
            let mut current = self.pepper.write().unwrap_or_else(|p| p.into_inner());
            *current = next.clone();
            self.pepper_generation
                .store(next.generation, std::sync::atomic::Ordering::Release);
        }
        *self.rotating.write().unwrap_or_else(|p| p.into_inner()) = None;
        if self.lookup_table.is_on() {
            // Lookups read the tree until the new generation's table is built.
            if let Err(e) = self
                .lookup_table
                .rebuild(std::sync::Arc::clone(&self.kv), next.generation)
            {
                tracing::error!(error = %e, "lookups read the store until the next start");
            }
        }
        Ok(())
    }

    /// During a rotation: every binding record `batch` writes or removes under the
    /// current generation is written or removed under the next one too, so the copy
    /// never falls behind. Called by [`Store::apply`] (writers hold the bindings lock).
    pub(crate) fn mirror_for_rotation(&self, batch: &mut Batch) -> Result<(), StoreError> {
        let next = match &*self.rotating.read().unwrap_or_else(|p| p.into_inner()) {
            Some(next) => next.clone(),
            None => return Ok(()),
        };
        let current = self.pepper_generation().to_be_bytes();
        let mut mirrored = Vec::new();
        for (tree, key, op) in &batch.ops {
            if *tree != BINDING || !key.starts_with(&current) {
                continue;
            }
            let value = match op {
                crate::store::kv::Op::Put(value) => Some(value.clone()),
                crate::store::kv::Op::Delete => self.kv.get(BINDING, key)?,
            };
            let Some(value) = value else { continue };
            let record: ThreePidRecord = decode(&value)?;
            let Some(threepid) = &record.threepid else {
                continue;
            };
            let moved = record_key(&next, threepid).to_vec();
            mirrored.push(match op {
                crate::store::kv::Op::Put(_) => (BINDING, moved, crate::store::kv::Op::Put(value)),
                crate::store::kv::Op::Delete => (BINDING, moved, crate::store::kv::Op::Delete),
            });
        }
        batch.ops.extend(mirrored);
        Ok(())
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::bindings::testing::{set, tp};
    use crate::store::bindings::Origin;
    use base64::Engine as _;

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
            .rotate_pepper(
                "freshpepperfreshpepper".into(),
                &crate::progress::Progress::default(),
            )
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

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn writes_go_on_during_a_rotation_and_land_under_the_new_pepper() {
        use crate::store::bindings::BindingChange;
        let store = std::sync::Arc::new(Store::in_memory().unwrap());
        let all: Vec<ThreePid> = (0..20_000)
            .map(|i| tp(&format!("user{i}@example.org")))
            .collect();
        for part in all.chunks(5_000) {
            store
                .change_bindings(part.iter().map(|t| set(t, Origin::Admin, "@u:x")).collect())
                .await
                .unwrap();
        }
        let old = store.pepper();
        let rotation = {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .rotate_pepper("pepper-two".into(), &crate::progress::Progress::default())
                    .await
            })
        };
        while store.rotating.read().unwrap().is_none() {
            tokio::task::yield_now().await;
        }
        // Writers are not held back for the whole rotation: some of these complete
        // before the switch (before, each waited for all of it).
        let mut before_switch = 0;
        let mut added = Vec::new();
        for i in 0..20 {
            let t = tp(&format!("new{i}@example.org"));
            store
                .change_bindings(vec![set(&t, Origin::Bind, "@new:x")])
                .await
                .unwrap();
            added.push(t);
            if store.pepper().generation == old.generation {
                before_switch += 1;
            }
        }
        // Removed and changed while the copy runs (some before, some after their copy).
        let removed = [&all[3], &all[19_990]];
        store
            .change_bindings(
                removed
                    .iter()
                    .map(|t| BindingChange::Remove {
                        threepid: (*t).clone(),
                        origin: Origin::Admin,
                    })
                    .collect(),
            )
            .await
            .unwrap();
        store
            .change_bindings(vec![
                set(&all[10], Origin::Admin, "@changed:x"),
                set(&all[19_999], Origin::Admin, "@changed:x"),
            ])
            .await
            .unwrap();
        let new = rotation.await.unwrap().unwrap();
        assert!(
            before_switch > 0,
            "every write waited for the rotation to finish"
        );
        assert_eq!(new.generation, old.generation + 1);
        let mxid = |t: &ThreePid| {
            store
                .hashed(new.generation, &lookup_hash(t, &new.pepper))
                .unwrap()
                .map(|e| e.mxid)
        };
        for t in &added {
            assert_eq!(mxid(t).as_deref(), Some("@new:x"), "{t:?}");
        }
        for t in removed {
            assert_eq!(mxid(t), None, "{t:?}");
        }
        assert_eq!(mxid(&all[10]).as_deref(), Some("@changed:x"));
        assert_eq!(mxid(&all[19_999]).as_deref(), Some("@changed:x"));
        assert_eq!(mxid(&all[500]).as_deref(), Some("@u:x"));
        assert_eq!(store.binding_count().unwrap(), 20_000 + 20 - 2);
        assert!(store
            .kv
            .scan_prefix(BINDING, &old.generation.to_be_bytes())
            .next()
            .is_none());
        assert!(store.rotating.read().unwrap().is_none());
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
