//! The lookup table: the effective binding of every 3PID under the current pepper
//! generation, kept in memory so a hashed lookup is one hash-map probe instead of a sled
//! read (which, once the store outgrows sled's cache, pulls and decodes a page for
//! almost every random hash). It is derived data: the `binding` tree stays the truth,
//! every batch that writes the tree updates the table after it applied, and the table
//! is rebuilt from the tree at start and after a pepper rotation. Until a build is
//! complete, lookups read the tree as before.
//!
//! A build scans the tree without the bindings lock, so writes go on meanwhile. What
//! keeps it right: a write during a build always lands in the table (a removal as a
//! tombstone), and the build only fills keys that nothing wrote since it began. Whatever
//! the order of a writer's tree write, its table update and the build's read of the same
//! key, the table ends with the writer's value.
//!
//! Keys are the first 16 bytes of the lookup hash: two bound 3PIDs sharing them, or a
//! client's hash matching one it was not made from, would take 2^64 bound 3PIDs to
//! become likely. This file must not write the tree nor decide what a record says.

use super::lookup::{effective_entry, HashEntry};
use super::BINDING;
use crate::store::kv::{Batch, Entry, Kv, Op};
use crate::store::{Store, StoreError};
use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};

/// Entries a build reads between two checks whether it should stop, and inserts under
/// one hold of the table's lock.
const BUILD_CHUNK: usize = 4096;

/// The first 16 bytes of a lookup hash.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Key(u64, u64);

impl Key {
    fn of(digest: &[u8; 32]) -> Self {
        let mut a = [0u8; 8];
        let mut b = [0u8; 8];
        a.copy_from_slice(&digest[..8]);
        b.copy_from_slice(&digest[8..16]);
        Self(u64::from_le_bytes(a), u64::from_le_bytes(b))
    }

    /// The generation and key of a `binding` tree key (`generation ‖ hash`).
    fn of_tree_key(key: &[u8]) -> Option<(u32, Self)> {
        let generation = u32::from_be_bytes(key.get(..4)?.try_into().ok()?);
        let digest: &[u8; 32] = key.get(4..36)?.try_into().ok()?;
        Some((generation, Self::of(digest)))
    }
}

impl Hash for Key {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // The bytes are already a hash: one word is enough for the buckets.
        state.write_u64(self.0);
    }
}

/// Spreads a key word with a per-process secret, so bucket placement cannot be
/// predicted from the (public) pepper.
#[derive(Clone, Copy)]
struct Mix(u64);

impl BuildHasher for Mix {
    type Hasher = MixHasher;
    fn build_hasher(&self) -> MixHasher {
        MixHasher(self.0)
    }
}

struct MixHasher(u64);

impl Hasher for MixHasher {
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.write_u64(u64::from(*b));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0 ^ n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }

    fn finish(&self) -> u64 {
        self.0 ^ (self.0 >> 29)
    }
}

/// What the table keeps of an effective binding.
struct Slot {
    mxid: Box<str>,
    not_before_ms: u64,
    not_after_ms: u64,
}

impl Slot {
    fn of(entry: HashEntry) -> Self {
        Self {
            mxid: entry.mxid.into_boxed_str(),
            not_before_ms: entry.not_before_ms,
            not_after_ms: entry.not_after_ms,
        }
    }

    fn entry(&self) -> HashEntry {
        HashEntry {
            mxid: self.mxid.to_string(),
            not_before_ms: self.not_before_ms,
            not_after_ms: self.not_after_ms,
        }
    }
}

struct State {
    generation: u32,
    /// Every record of `generation` is in `map` (tombstones purged).
    complete: bool,
    /// Bumped when a build starts, so an older one stops.
    build: u64,
    /// `None` is a tombstone: removed while a build ran, which must not fill it.
    map: HashMap<Key, Option<Slot>, Mix>,
}

/// What a batch will change in the table, worked out before the batch is applied.
pub(crate) struct Pending {
    generation: u32,
    changes: Vec<(Key, Option<Slot>)>,
}

/// The table and its builder.
pub(crate) struct LookupTable {
    state: Arc<RwLock<State>>,
    /// Set when a builder was ever started: until then the table is off and writes
    /// skip it (CLI commands that open the store do not build it).
    on: AtomicBool,
    stop: Arc<AtomicBool>,
    builder: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl LookupTable {
    pub(crate) fn new() -> Self {
        let seed = std::collections::hash_map::RandomState::new().hash_one(0u64);
        Self {
            state: Arc::new(RwLock::new(State {
                generation: 0,
                complete: false,
                build: 0,
                map: HashMap::with_hasher(Mix(seed)),
            })),
            on: AtomicBool::new(false),
            stop: Arc::new(AtomicBool::new(false)),
            builder: Mutex::new(None),
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        write(&self.state)
    }

    /// The effective binding behind `digest` under `generation`: `None` when the table
    /// cannot say (not built, or another generation), and the caller reads the tree.
    pub(crate) fn get(&self, generation: u32, digest: &[u8; 32]) -> Option<Option<HashEntry>> {
        let state = self.read();
        if !state.complete || state.generation != generation {
            return None;
        }
        Some(
            state
                .map
                .get(&Key::of(digest))
                .and_then(|s| s.as_ref().map(Slot::entry)),
        )
    }

    /// Number of 3PIDs in a complete table.
    pub(crate) fn len(&self) -> Option<u64> {
        let state = self.read();
        state.complete.then(|| state.map.len() as u64)
    }

    /// What `batch` changes in the table: its `binding` writes under the table's
    /// generation, decoded. Call it before applying the batch, and [`Self::apply`] after.
    /// Writers of bindings hold the bindings lock from here to `apply`.
    pub(crate) fn prepare(&self, batch: &Batch) -> Result<Option<Pending>, StoreError> {
        if !self.on.load(Ordering::Acquire) {
            return Ok(None);
        }
        let generation = self.read().generation;
        let mut changes = Vec::new();
        for (tree, key, op) in &batch.ops {
            if *tree != BINDING {
                continue;
            }
            let Some((g, key)) = Key::of_tree_key(key) else {
                continue;
            };
            if g != generation {
                continue;
            }
            let slot = match op {
                Op::Put(bytes) => effective_entry(bytes)?.map(Slot::of),
                Op::Delete => None,
            };
            changes.push((key, slot));
        }
        Ok((!changes.is_empty()).then_some(Pending {
            generation,
            changes,
        }))
    }

    /// Puts what [`Self::prepare`] found into the table, once the batch is applied.
    pub(crate) fn apply(&self, pending: Pending) {
        let mut state = self.write();
        if state.generation != pending.generation {
            return;
        }
        let complete = state.complete;
        for (key, slot) in pending.changes {
            match slot {
                Some(slot) => {
                    state.map.insert(key, Some(slot));
                }
                None if complete => {
                    state.map.remove(&key);
                }
                None => {
                    state.map.insert(key, None);
                }
            }
        }
    }

    /// Empties the table for `generation` and builds it from the tree on a thread of
    /// its own; lookups read the tree until it is done. A build still running stops.
    pub(crate) fn rebuild(&self, kv: Arc<dyn Kv>, generation: u32) -> Result<(), StoreError> {
        let build = self.begin(generation);
        let state = Arc::clone(&self.state);
        let stop = Arc::clone(&self.stop);
        let thread = std::thread::Builder::new()
            .name("lookup-table".into())
            .spawn(move || {
                let started = std::time::Instant::now();
                let scan = kv.scan_prefix(BINDING, &generation.to_be_bytes());
                match fill(scan, &state, &stop, build) {
                    Ok(Some(n)) => tracing::info!(
                        bindings = n,
                        seconds = started.elapsed().as_secs_f64(),
                        "lookup table ready"
                    ),
                    Ok(None) => {}
                    Err(e) => tracing::error!(
                        error = %e,
                        "could not build the lookup table; lookups read the store"
                    ),
                }
            })
            .map_err(|e| StoreError::Io {
                what: "starting the lookup table's builder".into(),
                detail: e.to_string(),
            })?;
        // The build just replaced makes no more changes (its number is stale): it ends
        // at its next chunk, and is not waited for here.
        let mut slot = self.builder.lock().unwrap_or_else(|p| p.into_inner());
        *slot = Some(thread);
        Ok(())
    }

    /// Empties the table for a build of `generation` and switches it on; the build's
    /// number.
    fn begin(&self, generation: u32) -> u64 {
        let mut state = self.write();
        state.generation = generation;
        state.complete = false;
        state.build += 1;
        let hasher = *state.map.hasher();
        state.map = HashMap::with_hasher(hasher);
        self.on.store(true, Ordering::Release);
        state.build
    }

    /// Whether a build was ever started.
    pub(crate) fn is_on(&self) -> bool {
        self.on.load(Ordering::Acquire)
    }

    /// Waits for the running build to end. For tests and benches.
    #[doc(hidden)]
    pub fn wait_built(&self) {
        let thread = self
            .builder
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(thread) = thread {
            let _ = thread.join();
        }
    }
}

impl Store {
    /// Builds the lookup table from the tree in the background, and keeps it from now
    /// on. The server calls this once at start; CLI commands that open the store do not
    /// (they answer no lookups).
    pub async fn start_lookup_table(&self) -> Result<(), StoreError> {
        // No write may fall between the table being switched on and the build's scan.
        let _guard = self.bindings_lock.lock().await;
        self.lookup_table
            .rebuild(Arc::clone(&self.kv), self.pepper_generation())
    }

    /// Bindings in the lookup table, once it is built.
    pub fn lookup_table_len(&self) -> Option<u64> {
        self.lookup_table.len()
    }

    /// Waits until the running build of the lookup table ends. For tests and benches.
    #[doc(hidden)]
    pub fn wait_lookup_table(&self) {
        self.lookup_table.wait_built();
    }
}

impl Drop for LookupTable {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        self.wait_built();
    }
}

fn write(state: &RwLock<State>) -> std::sync::RwLockWriteGuard<'_, State> {
    state.write().unwrap_or_else(|p| p.into_inner())
}

/// Fills the table with the records `scan` yields (those of the build's generation),
/// unless something wrote them since the build began. `None` if it was stopped or
/// replaced by a newer build.
fn fill(
    mut scan: impl Iterator<Item = Result<Entry, StoreError>>,
    state: &RwLock<State>,
    stop: &AtomicBool,
    build: u64,
) -> Result<Option<u64>, StoreError> {
    let mut chunk = Vec::with_capacity(BUILD_CHUNK);
    loop {
        chunk.clear();
        let mut read = 0;
        for item in scan.by_ref().take(BUILD_CHUNK) {
            read += 1;
            let (key, value) = item?;
            if let (Some((_, key)), Some(entry)) =
                (Key::of_tree_key(&key), effective_entry(&value)?)
            {
                chunk.push((key, Slot::of(entry)));
            }
        }
        let last = read < BUILD_CHUNK;
        let mut state = write(state);
        if state.build != build || stop.load(Ordering::Acquire) {
            return Ok(None);
        }
        for (key, slot) in chunk.drain(..) {
            state.map.entry(key).or_insert(Some(slot));
        }
        if last {
            state.map.retain(|_, slot| slot.is_some());
            state.complete = true;
            return Ok(Some(state.map.len() as u64));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::bindings::testing::{set, tp};
    use crate::store::bindings::{lookup_hash, BindingChange, Origin};

    /// What the tree says about `address` (the table bypassed).
    fn from_tree(store: &Store, address: &str) -> Option<HashEntry> {
        let pepper = store.pepper();
        let digest = lookup_hash(&tp(address), &pepper.pepper);
        let mut found = None;
        store
            .kv
            .get_with(
                BINDING,
                &super::super::pepper::hash_key(pepper.generation, &digest),
                &mut |b| found = effective_entry(b).unwrap(),
            )
            .unwrap();
        found
    }

    /// What the table says about `address`, if it can say.
    fn from_table(store: &Store, address: &str) -> Option<Option<HashEntry>> {
        let pepper = store.pepper();
        store.lookup_table.get(
            pepper.generation,
            &lookup_hash(&tp(address), &pepper.pepper),
        )
    }

    fn remove(address: &str, origin: Origin) -> BindingChange {
        BindingChange::Remove {
            threepid: tp(address),
            origin,
        }
    }

    #[tokio::test]
    async fn the_table_follows_every_write_and_agrees_with_the_tree() {
        let store = Store::in_memory().unwrap();
        let addresses: Vec<String> = (0..200).map(|i| format!("u{i}@example.org")).collect();
        store
            .change_bindings(
                addresses[..100]
                    .iter()
                    .map(|a| set(&tp(a), Origin::Sync("ldap".into()), &format!("@{a}")))
                    .collect(),
            )
            .await
            .unwrap();
        assert_eq!(from_table(&store, &addresses[0]), None, "off until started");
        store.start_lookup_table().await.unwrap();
        store.wait_lookup_table();
        assert_eq!(store.lookup_table_len(), Some(100));

        // A fixed pseudo-random walk over sets, overrides and removals.
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        for round in 0..2_000u64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let a = &addresses[(x % 200) as usize];
            let origin = match (x >> 8) % 3 {
                0 => Origin::Admin,
                1 => Origin::Bind,
                _ => Origin::Sync("ldap".into()),
            };
            let change = if (x >> 16).is_multiple_of(3) {
                remove(a, origin)
            } else {
                BindingChange::Set {
                    threepid: tp(a),
                    origin,
                    mxid: format!("@r{round}:x"),
                    not_before_ms: round,
                    not_after_ms: u64::MAX - round,
                }
            };
            store.change_bindings(vec![change]).await.unwrap();
        }
        let mut bound = 0;
        for a in &addresses {
            let tree = from_tree(&store, a);
            bound += u64::from(tree.is_some());
            assert_eq!(from_table(&store, a), Some(tree), "{a}");
        }
        assert_eq!(store.lookup_table_len(), Some(bound));
        // An unknown hash is answered by the table too: bound to nobody.
        assert_eq!(from_table(&store, "nobody@example.org"), Some(None));
    }

    #[tokio::test]
    async fn writes_during_a_build_win_over_what_the_build_read() {
        let store = Store::in_memory().unwrap();
        store
            .change_bindings(vec![
                set(&tp("a@x.org"), Origin::Bind, "@a:x"),
                set(&tp("b@x.org"), Origin::Bind, "@b:x"),
                set(&tp("c@x.org"), Origin::Bind, "@c:x"),
            ])
            .await
            .unwrap();
        let generation = store.pepper_generation();
        let build = store.lookup_table.begin(generation);
        // The in-memory store's scan is a copy taken now: the build reads old values.
        let scan = store.kv.scan_prefix(BINDING, &generation.to_be_bytes());
        store
            .change_bindings(vec![
                remove("a@x.org", Origin::Bind),
                set(&tp("b@x.org"), Origin::Admin, "@b2:x"),
                set(&tp("d@x.org"), Origin::Bind, "@d:x"),
            ])
            .await
            .unwrap();
        assert_eq!(from_table(&store, "b@x.org"), None, "not complete yet");
        let stop = AtomicBool::new(false);
        let n = fill(scan, &store.lookup_table.state, &stop, build).unwrap();
        assert_eq!(n, Some(3), "b, c and d; a's tombstone is gone");
        let mxid = |a: &str| from_table(&store, a).map(|e| e.map(|e| e.mxid));
        assert_eq!(mxid("a@x.org"), Some(None));
        assert_eq!(mxid("b@x.org"), Some(Some("@b2:x".into())));
        assert_eq!(mxid("c@x.org"), Some(Some("@c:x".into())));
        assert_eq!(mxid("d@x.org"), Some(Some("@d:x".into())));
    }

    #[tokio::test]
    async fn a_replaced_or_stopped_build_changes_nothing() {
        let store = Store::in_memory().unwrap();
        store
            .change_bindings(vec![set(&tp("a@x.org"), Origin::Bind, "@a:x")])
            .await
            .unwrap();
        let generation = store.pepper_generation();
        let table = &store.lookup_table;
        let old = table.begin(generation);
        let scan = store.kv.scan_prefix(BINDING, &generation.to_be_bytes());
        table.begin(generation);
        let stop = AtomicBool::new(false);
        assert_eq!(fill(scan, &table.state, &stop, old).unwrap(), None);
        assert_eq!(from_table(&store, "a@x.org"), None);
        let current = table.begin(generation);
        let scan = store.kv.scan_prefix(BINDING, &generation.to_be_bytes());
        stop.store(true, Ordering::Release);
        assert_eq!(fill(scan, &table.state, &stop, current).unwrap(), None);
        assert_eq!(table.len(), None);
    }

    #[tokio::test]
    async fn a_rotation_rebuilds_the_table_for_the_new_pepper() {
        let store = Arc::new(Store::in_memory().unwrap());
        store.start_lookup_table().await.unwrap();
        store.wait_lookup_table();
        store
            .change_bindings(vec![set(&tp("a@x.org"), Origin::Bind, "@a:x")])
            .await
            .unwrap();
        let old = store.pepper();
        let new = store
            .rotate_pepper("pepper2".into(), &crate::progress::Progress::default())
            .await
            .unwrap();
        store.wait_lookup_table();
        let a = tp("a@x.org");
        let table = &store.lookup_table;
        assert_eq!(
            table
                .get(new.generation, &lookup_hash(&a, &new.pepper))
                .map(|e| e.map(|e| e.mxid)),
            Some(Some("@a:x".into()))
        );
        assert_eq!(
            table.get(old.generation, &lookup_hash(&a, &old.pepper)),
            None
        );
        assert_eq!(store.lookup_table_len(), Some(1));
        // Writes after the rotation land in the new table.
        store
            .change_bindings(vec![remove("a@x.org", Origin::Bind)])
            .await
            .unwrap();
        assert_eq!(
            table.get(new.generation, &lookup_hash(&a, &new.pepper)),
            Some(None)
        );
    }

    #[test]
    fn keys_are_the_hash_prefix_of_the_tree_key() {
        let mut tree_key = [0u8; 36];
        tree_key[..4].copy_from_slice(&7u32.to_be_bytes());
        tree_key[4] = 1;
        tree_key[19] = 2;
        tree_key[20] = 3;
        let (generation, key) = Key::of_tree_key(&tree_key).unwrap();
        assert_eq!(generation, 7);
        assert!(key == Key(1, 2 << 56));
        assert!(Key::of_tree_key(&tree_key[..35]).is_none());
    }
}
