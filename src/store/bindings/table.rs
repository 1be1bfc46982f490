//! The lookup table: the effective binding of every 3PID under the current pepper
//! generation, kept in memory so a hashed lookup is a probe of a sorted array instead of
//! a sled read (which, once the store outgrows sled's cache, pulls and decodes a page
//! for almost every random hash). It is derived data: the `binding` tree stays the
//! truth, every batch that writes the tree updates the table after it applied, and the
//! table is rebuilt from the tree at start and after a pepper rotation. Until a build is
//! complete, lookups read the tree as before.
//!
//! Layout, for memory (about 50 bytes per binding): a sorted array of fixed rows (the
//! first 16 bytes of the lookup hash, the validity window in whole seconds, where the
//! Matrix ID starts in one shared byte arena), plus a small map of the writes since the
//! array was last rebuilt (removals as tombstones), merged into a new array once it
//! grows past an eighth of it. A window kept in seconds decides liveness except within
//! the very second a binding starts or ends; then the caller reads the tree.
//!
//! A build scans the tree without the bindings lock, so writes go on meanwhile, into the
//! map; the map is newer than anything the scan read, so it wins. Writers of bindings
//! hold the bindings lock from [`LookupTable::prepare`] to [`LookupTable::apply`], so
//! only one writer changes the map or merges at a time.
//!
//! Keys are the first 16 bytes of the hash: finding two addresses that share them takes
//! about 2^64 hashes, and a client's hash matching a bound one it was not made from has
//! odds of one in 2^128 / n. This file must not write the tree nor decide what a record
//! says (a record it cannot read switches the table off).

use super::lookup::{effective_entry, HashEntry};
use super::BINDING;
use crate::store::kv::{Batch, Entry, Kv, Op};
use crate::store::{Store, StoreError};
use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};

/// Entries a build reads between two checks whether it should stop.
const BUILD_CHUNK: usize = 4096;
/// The map of recent writes is merged into the array past this many entries, or an
/// eighth of the array (few in unit tests, so they merge often).
const MIN_MERGE: usize = if cfg!(test) { 16 } else { 1024 };

/// The first 16 bytes of a lookup hash, in the order that sorts the array.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
struct Key([u32; 4]);

impl Key {
    fn of(digest: &[u8; 32]) -> Self {
        let word =
            |i: usize| u32::from_be_bytes([digest[i], digest[i + 1], digest[i + 2], digest[i + 3]]);
        Self([word(0), word(4), word(8), word(12)])
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
        // The bytes are already a hash: two words are enough for the buckets.
        state.write_u64(u64::from(self.0[0]) << 32 | u64::from(self.0[1]));
    }
}

/// Spreads a key with a per-process secret, so the map's bucket placement cannot be
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

/// A validity window in whole seconds (rounded down; saturated past 2106).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct Window {
    not_before_s: u32,
    not_after_s: u32,
}

impl Window {
    fn of(entry: &HashEntry) -> Self {
        let s = |ms: u64| u32::try_from(ms / 1000).unwrap_or(u32::MAX);
        Self {
            not_before_s: s(entry.not_before_ms),
            not_after_s: s(entry.not_after_ms),
        }
    }

    /// Whether the binding is live at `now_ms` (`not_before <= now < not_after` in
    /// milliseconds), or `None` when `now` falls in the second of either end.
    fn live(self, now_ms: u64) -> Option<bool> {
        let now = u32::try_from(now_ms / 1000).unwrap_or(u32::MAX);
        if now == self.not_before_s || now == self.not_after_s {
            return None;
        }
        Some(self.not_before_s < now && now < self.not_after_s)
    }
}

/// One binding in the sorted array; its Matrix ID is in the arena at `mxid_at`: its
/// length (7 bits a byte, low bits first, the high bit set on all but the last), then
/// its bytes.
#[derive(Clone, Copy)]
struct Row {
    key: Key,
    window: Window,
    mxid_at: u32,
}

/// A binding written since the array was built.
struct Recent {
    mxid: Box<str>,
    window: Window,
}

/// The sorted array, its arena and its index.
#[derive(Default)]
struct Sorted {
    rows: Vec<Row>,
    arena: Vec<u8>,
    /// `starts[p]` is the first row whose key begins with the `bits`-bit prefix `p`.
    /// Keys are uniform, so each range holds a few rows and a probe touches one or two
    /// cache lines instead of a binary search's twenty at a million rows.
    starts: Vec<u32>,
    bits: u32,
}

impl Sorted {
    /// Appends a row (the caller keeps the order, or sorts after). `false` once the
    /// arena passed 4 GiB (some hundred million bindings): the table cannot hold them.
    #[must_use]
    fn push(&mut self, key: Key, window: Window, mxid: &str) -> bool {
        let Ok(at) = u32::try_from(self.arena.len()) else {
            return false;
        };
        let mut len = mxid.len();
        while len >= 0x80 {
            self.arena.push((len & 0x7f) as u8 | 0x80);
            len >>= 7;
        }
        self.arena.push(len as u8);
        self.arena.extend_from_slice(mxid.as_bytes());
        self.rows.push(Row {
            key,
            window,
            mxid_at: at,
        });
        true
    }

    fn mxid(&self, row: &Row) -> &str {
        let mut at = row.mxid_at as usize;
        let mut len = 0usize;
        let mut shift = 0;
        while let Some(b) = self.arena.get(at) {
            at += 1;
            len |= usize::from(b & 0x7f) << shift;
            shift += 7;
            if b & 0x80 == 0 || shift > 28 {
                break;
            }
        }
        self.arena
            .get(at..at + len)
            .and_then(|b| std::str::from_utf8(b).ok())
            .unwrap_or("")
    }

    /// Sorts the rows (if `sort`) and builds the index; about four rows a range, at
    /// most 2^20 ranges (4 MiB).
    fn finish(&mut self, sort: bool) {
        if sort {
            self.rows.sort_unstable_by_key(|r| r.key);
        }
        self.rows.shrink_to_fit();
        self.arena.shrink_to_fit();
        let n = self.rows.len();
        self.bits = (usize::BITS - (n / 4).leading_zeros()).min(20);
        let ranges = 1usize << self.bits;
        let mut starts = Vec::with_capacity(ranges + 1);
        let mut i = 0;
        for p in 0..ranges {
            while self.rows.get(i).is_some_and(|r| self.prefix(r.key) < p) {
                i += 1;
            }
            starts.push(i as u32);
        }
        starts.push(n as u32);
        self.starts = starts;
    }

    fn prefix(&self, key: Key) -> usize {
        match self.bits {
            0 => 0,
            bits => (key.0[0] >> (32 - bits)) as usize,
        }
    }

    fn find(&self, key: Key) -> Option<&Row> {
        let p = self.prefix(key);
        let range = match (self.starts.get(p), self.starts.get(p + 1)) {
            (Some(&lo), Some(&hi)) => self.rows.get(lo as usize..hi as usize)?,
            _ => &self.rows[..],
        };
        range
            .binary_search_by(|r| r.key.cmp(&key))
            .ok()
            .and_then(|i| range.get(i))
    }
}

/// What a lookup gets from the table.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Answer {
    /// The live Matrix ID bound to the hash, or nobody.
    Known(Option<String>),
    /// The table cannot say (not built, another generation, or the binding starts or
    /// ends within this second): read the tree.
    Unknown,
}

struct State {
    /// Set when a build starts: until then the table is off and writes skip it (CLI
    /// commands that open the store do not build it), and again if it cannot hold the
    /// bindings.
    on: bool,
    generation: u32,
    /// `sorted` holds every record of `generation` the build read.
    complete: bool,
    /// Bumped when a build starts, so an older one stops.
    build: u64,
    /// Bindings in a complete table, kept as writes come.
    count: u64,
    sorted: Sorted,
    /// Writes since the build began or the last merge; `None` is a removal.
    recent: HashMap<Key, Option<Recent>, Mix>,
}

impl State {
    fn get(&self, key: Key, now_ms: u64) -> Answer {
        let (mxid, window) = match self.recent.get(&key) {
            Some(None) => return Answer::Known(None),
            Some(Some(r)) => (&*r.mxid, r.window),
            None => match self.sorted.find(key) {
                Some(row) => (self.sorted.mxid(row), row.window),
                None => return Answer::Known(None),
            },
        };
        match window.live(now_ms) {
            Some(true) => Answer::Known(Some(mxid.to_owned())),
            Some(false) => Answer::Known(None),
            None => Answer::Unknown,
        }
    }

    /// The array with the recent writes merged in (the state itself unchanged); `None`
    /// if it outgrew the arena.
    fn merged(&self) -> Option<Sorted> {
        let mut recent: Vec<(&Key, &Option<Recent>)> = self.recent.iter().collect();
        recent.sort_unstable_by_key(|(k, _)| **k);
        let mut out = Sorted {
            rows: Vec::with_capacity(self.sorted.rows.len() + recent.len()),
            arena: Vec::with_capacity(self.sorted.arena.len() + recent.len() * 24),
            ..Sorted::default()
        };
        let mut ok = true;
        let mut old = self.sorted.rows.iter().peekable();
        for (key, change) in recent {
            while let Some(row) = old.next_if(|r| r.key < *key) {
                ok &= out.push(row.key, row.window, self.sorted.mxid(row));
            }
            old.next_if(|r| r.key == *key);
            if let Some(r) = change {
                ok &= out.push(*key, r.window, &r.mxid);
            }
        }
        for row in old {
            ok &= out.push(row.key, row.window, self.sorted.mxid(row));
        }
        out.finish(false);
        ok.then_some(out)
    }

    /// Whether `key` is bound (whatever its window).
    fn holds(&self, key: Key) -> bool {
        match self.recent.get(&key) {
            Some(change) => change.is_some(),
            None => self.sorted.find(key).is_some(),
        }
    }

    /// Switches the table off: writes skip it, lookups read the tree.
    fn switch_off(&mut self) {
        self.on = false;
        self.complete = false;
        self.sorted = Sorted::default();
        self.recent.clear();
        self.recent.shrink_to_fit();
    }

    /// Counts the bindings (a probe per recent write; once, when a build completes).
    fn len(&self) -> u64 {
        let mut n = self.sorted.rows.len() as u64;
        for (key, change) in &self.recent {
            match (self.sorted.find(*key).is_some(), change.is_some()) {
                (false, true) => n += 1,
                (true, false) => n = n.saturating_sub(1),
                _ => {}
            }
        }
        n
    }
}

/// What a batch will change in the table, worked out before the batch is applied.
pub(crate) struct Pending {
    generation: u32,
    changes: Vec<(Key, Option<Recent>)>,
}

/// The table and its builder.
pub(crate) struct LookupTable {
    state: Arc<RwLock<State>>,
    stop: Arc<AtomicBool>,
    builder: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl LookupTable {
    pub(crate) fn new() -> Self {
        let seed = std::collections::hash_map::RandomState::new().hash_one(0u64);
        Self {
            state: Arc::new(RwLock::new(State {
                on: false,
                generation: 0,
                complete: false,
                build: 0,
                count: 0,
                sorted: Sorted::default(),
                recent: HashMap::with_hasher(Mix(seed)),
            })),
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

    /// The live binding behind `digest` under `generation` at `now_ms`.
    pub(crate) fn get(&self, generation: u32, digest: &[u8; 32], now_ms: u64) -> Answer {
        let state = self.read();
        if !state.complete || state.generation != generation {
            return Answer::Unknown;
        }
        state.get(Key::of(digest), now_ms)
    }

    /// Number of 3PIDs in a complete table.
    pub(crate) fn len(&self) -> Option<u64> {
        let state = self.read();
        state.complete.then_some(state.count)
    }

    /// `ready`, `building` (lookups read the tree meanwhile) or `off` (never started, or
    /// it cannot hold the bindings).
    pub(crate) fn state(&self) -> &'static str {
        let state = self.read();
        match (state.on, state.complete) {
            (true, true) => "ready",
            (true, false) => "building",
            (false, _) => "off",
        }
    }

    /// What `batch` changes in the table: its `binding` writes under the table's
    /// generation, decoded. Call it before applying the batch, and [`Self::apply`] after,
    /// both under the bindings lock.
    pub(crate) fn prepare(&self, batch: &Batch) -> Option<Pending> {
        let generation = {
            let state = self.read();
            if !state.on {
                return None;
            }
            state.generation
        };
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
            let recent = match op {
                Op::Put(bytes) => match effective_entry(bytes) {
                    Ok(entry) => entry.map(|e| Recent {
                        window: Window::of(&e),
                        mxid: e.mxid.into_boxed_str(),
                    }),
                    Err(e) => {
                        // Not this file's to refuse: the write goes on, the table stops.
                        tracing::error!(error = %e, "the lookup table cannot read a binding; lookups read the store");
                        self.write().switch_off();
                        return None;
                    }
                },
                Op::Delete => None,
            };
            changes.push((key, recent));
        }
        (!changes.is_empty()).then_some(Pending {
            generation,
            changes,
        })
    }

    /// Puts what [`Self::prepare`] found into the table, once the batch is applied; then
    /// merges the recent writes into the array if they grew too many. The merge is built
    /// while lookups go on, and swapped in at the end.
    pub(crate) fn apply(&self, pending: Pending) {
        let build = {
            let mut state = self.write();
            if !state.on || state.generation != pending.generation {
                return;
            }
            let complete = state.complete;
            for (key, recent) in pending.changes {
                if complete {
                    match (state.holds(key), recent.is_some()) {
                        (false, true) => state.count += 1,
                        (true, false) => state.count = state.count.saturating_sub(1),
                        _ => {}
                    }
                }
                state.recent.insert(key, recent);
            }
            let big = state.recent.len() > MIN_MERGE.max(state.sorted.rows.len() / 8);
            if !(state.complete && big) {
                return;
            }
            state.build
        };
        let merged = self.read().merged();
        let mut state = self.write();
        // Only writers holding the bindings lock change `recent`, and this is one; a
        // new build (also under that lock) cannot have started either, but check.
        if state.build != build || !state.complete {
            return;
        }
        match merged {
            Some(merged) => {
                state.sorted = merged;
                state.recent.clear();
                state.recent.shrink_to(MIN_MERGE);
            }
            None => {
                tracing::error!("too many bindings for the lookup table; lookups read the store");
                state.switch_off();
            }
        }
    }

    /// Empties the table for `generation` and builds it from the tree on a thread of
    /// its own; lookups read the tree until it is done. A build still running stops at
    /// its next chunk (its number is stale) and is not waited for.
    pub(crate) fn rebuild(&self, kv: Arc<dyn Kv>, generation: u32) -> Result<(), StoreError> {
        let build = self.begin(generation);
        // A build still running sees its number is stale and ends within a chunk.
        self.wait_built();
        let state = Arc::clone(&self.state);
        let stop = Arc::clone(&self.stop);
        let thread = std::thread::Builder::new()
            .name("lookup-table".into())
            .spawn(move || {
                // Off unless the build completes (an error, a panic): writes must not
                // pile up in a table that will never be read.
                let mut off = OffUnlessDone {
                    state: &state,
                    build,
                    done: false,
                };
                let started = std::time::Instant::now();
                let scan = kv.scan_prefix(BINDING, &generation.to_be_bytes());
                match fill(scan, &state, &stop, build) {
                    Ok(Some(n)) => {
                        off.done = true;
                        tracing::info!(
                            bindings = n,
                            seconds = started.elapsed().as_secs_f64(),
                            "lookup table ready"
                        );
                    }
                    // Stopped, or replaced by a newer build: that one decides.
                    Ok(None) => off.done = true,
                    Err(e) => tracing::error!(
                        error = %e,
                        "could not build the lookup table; lookups read the store"
                    ),
                }
            });
        match thread {
            Ok(thread) => {
                let mut slot = self.builder.lock().unwrap_or_else(|p| p.into_inner());
                *slot = Some(thread);
                Ok(())
            }
            Err(e) => {
                self.write().switch_off();
                Err(StoreError::Io {
                    what: "starting the lookup table's builder".into(),
                    detail: e.to_string(),
                })
            }
        }
    }

    /// Empties the table for a build of `generation` and switches it on; the build's
    /// number.
    fn begin(&self, generation: u32) -> u64 {
        let mut state = self.write();
        state.generation = generation;
        state.complete = false;
        state.build += 1;
        state.count = 0;
        state.sorted = Sorted::default();
        let hasher = *state.recent.hasher();
        state.recent = HashMap::with_hasher(hasher);
        state.on = true;
        state.build
    }

    /// Whether the table is kept (a build was started, and it holds the bindings).
    pub(crate) fn is_on(&self) -> bool {
        self.read().on
    }

    /// Waits for the running build to end.
    fn wait_built(&self) {
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

    /// The Matrix ID the 3PID whose lookup hash is `digest` (under pepper `generation`)
    /// is bound to at `now_ms`, if any: from the lookup table when it can say, else
    /// from the tree.
    pub fn live_mxid(
        &self,
        generation: u32,
        digest: &[u8; 32],
        now_ms: u64,
    ) -> Result<Option<String>, StoreError> {
        match self.lookup_table.get(generation, digest, now_ms) {
            Answer::Known(mxid) => Ok(mxid),
            Answer::Unknown => Ok(self
                .hashed(generation, digest)?
                .filter(|e| e.live_at(now_ms))
                .map(|e| e.mxid)),
        }
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

/// Switches the table off when dropped before `done` is set, if its build is still the
/// current one.
struct OffUnlessDone<'a> {
    state: &'a RwLock<State>,
    build: u64,
    done: bool,
}

impl Drop for OffUnlessDone<'_> {
    fn drop(&mut self) {
        if !self.done {
            let mut state = write(self.state);
            if state.build == self.build {
                state.switch_off();
            }
        }
    }
}

fn write(state: &RwLock<State>) -> std::sync::RwLockWriteGuard<'_, State> {
    state.write().unwrap_or_else(|p| p.into_inner())
}

/// Builds the array from the records `scan` yields (those of the build's generation)
/// and puts it in place; the writes made since the build began stay on top of it.
/// `None` if it was stopped or replaced by a newer build.
fn fill(
    scan: impl Iterator<Item = Result<Entry, StoreError>>,
    state: &RwLock<State>,
    stop: &AtomicBool,
    build: u64,
) -> Result<Option<u64>, StoreError> {
    let stale = || {
        stop.load(Ordering::Acquire)
            || state.read().unwrap_or_else(|p| p.into_inner()).build != build
    };
    let mut sorted = Sorted::default();
    for (n, item) in scan.enumerate() {
        if n % BUILD_CHUNK == 0 && stale() {
            return Ok(None);
        }
        let (key, value) = item?;
        if let (Some((_, key)), Some(entry)) = (Key::of_tree_key(&key), effective_entry(&value)?) {
            if !sorted.push(key, Window::of(&entry), &entry.mxid) {
                return Err(StoreError::Io {
                    what: "building the lookup table".into(),
                    detail: "too many bindings to hold in memory".into(),
                });
            }
        }
    }
    sorted.finish(true);
    let mut state = write(state);
    if state.build != build || stop.load(Ordering::Acquire) {
        return Ok(None);
    }
    state.sorted = sorted;
    state.complete = true;
    state.count = state.len();
    Ok(Some(state.count))
}

#[cfg(test)]
mod tests;
