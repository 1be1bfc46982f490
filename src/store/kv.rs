//! The key-value seam under the typed store: named trees of byte keys and byte values,
//! atomic multi-tree batches, and an explicit durability point. Two implementations:
//! sled for real use and an in-memory map for unit tests. Nothing above `store` sees
//! this trait's implementations.

use super::StoreError;

/// One change inside a [`Batch`].
#[derive(Debug, Clone)]
pub enum Op {
    Put(Vec<u8>),
    Delete,
}

/// Changes to several trees, applied all together or not at all.
#[derive(Debug, Default, Clone)]
pub struct Batch {
    pub(crate) ops: Vec<(&'static str, Vec<u8>, Op)>,
}

impl Batch {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn put(&mut self, tree: &'static str, key: impl Into<Vec<u8>>, value: Vec<u8>) {
        self.ops.push((tree, key.into(), Op::Put(value)));
    }

    pub fn delete(&mut self, tree: &'static str, key: impl Into<Vec<u8>>) {
        self.ops.push((tree, key.into(), Op::Delete));
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    pub fn len(&self) -> usize {
        self.ops.len()
    }
}

/// Key and value of one entry of a scan.
pub type Entry = (Vec<u8>, Vec<u8>);

/// The raw key of `key` in logical tree `tree`: one keyspace holds every tree, so a
/// change across trees is one atomic batch (and a backup lists raw keys).
pub fn full_key(tree: &str, key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(tree.len() + 1 + key.len());
    k.extend_from_slice(tree.as_bytes());
    k.push(0);
    k.extend_from_slice(key);
    k
}

/// Byte-level storage. Every method is blocking and quick (no network); callers on the
/// async runtime keep batches small or move big ones to a blocking thread.
pub trait Kv: Send + Sync + 'static {
    fn get(&self, tree: &'static str, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;

    /// Calls `f` with the value of `key`, without copying it out; returns whether there
    /// was one. For hot reads (lookups).
    fn get_with(
        &self,
        tree: &'static str,
        key: &[u8],
        f: &mut dyn FnMut(&[u8]),
    ) -> Result<bool, StoreError> {
        Ok(self.get(tree, key)?.map(|v| f(&v)).is_some())
    }

    /// Entries whose key starts with `prefix`, in key order.
    fn scan_prefix<'a>(
        &'a self,
        tree: &'static str,
        prefix: &[u8],
    ) -> Box<dyn Iterator<Item = Result<Entry, StoreError>> + 'a>;

    /// At most `limit` entries whose key starts with `prefix` and comes after `after`
    /// (from the first with none), in key order: a long scan taken in chunks.
    fn scan_chunk(
        &self,
        tree: &'static str,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<Entry>, StoreError>;

    /// Applies every change of `batch` atomically (visible all at once, or not at all).
    fn apply(&self, batch: Batch) -> Result<(), StoreError>;

    /// Makes everything applied so far durable (fsync). Blocking.
    fn flush(&self) -> Result<(), StoreError>;

    /// Number of entries in a tree.
    fn count(&self, tree: &'static str) -> Result<u64, StoreError>;

    /// Bytes used on disk, when the backend knows.
    fn size_on_disk(&self) -> Option<u64>;

    /// Every entry of every tree, as (`tree ‖ 0 ‖ key`, value) in key order. For backups.
    fn scan_all<'a>(&'a self) -> Box<dyn Iterator<Item = Result<Entry, StoreError>> + 'a>;

    /// Writes entries given by full key (`tree ‖ 0 ‖ key`) in one atomic batch. For
    /// restores into a new store.
    fn put_raw(&self, entries: Vec<Entry>) -> Result<(), StoreError>;

    /// Opens the backend again from disk (after a write failure); nothing to do for
    /// backends that cannot fail that way.
    fn reopen(&self) -> Result<(), StoreError> {
        Ok(())
    }

    /// After a failed write: serves reads from a copy of what the backend holds on
    /// disk, when its own reads cannot be trusted to work any more. Returns whether
    /// it switched; nothing to do for backends that cannot fail that way.
    fn serve_copy(&self) -> Result<bool, StoreError> {
        Ok(false)
    }
}
