//! An in-memory implementation of the key-value seam for unit tests of the typed store
//! and the services. Same semantics as sled: ordered keys, atomic batches.

use super::kv::{Batch, Entry, Kv, Op};
use super::StoreError;
use std::collections::{BTreeMap, HashMap};
use std::sync::RwLock;

type Trees = HashMap<&'static str, BTreeMap<Vec<u8>, Vec<u8>>>;

#[derive(Default)]
pub struct MemKv {
    trees: RwLock<Trees>,
}

impl MemKv {
    pub fn new() -> Self {
        Self::default()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Trees> {
        self.trees.read().unwrap_or_else(|p| p.into_inner())
    }
}

impl Kv for MemKv {
    fn get(&self, tree: &'static str, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.read().get(tree).and_then(|t| t.get(key)).cloned())
    }

    fn get_with(
        &self,
        tree: &'static str,
        key: &[u8],
        f: &mut dyn FnMut(&[u8]),
    ) -> Result<bool, StoreError> {
        let trees = self.read();
        match trees.get(tree).and_then(|t| t.get(key)) {
            Some(v) => {
                f(v);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    fn scan_prefix<'a>(
        &'a self,
        tree: &'static str,
        prefix: &[u8],
    ) -> Box<dyn Iterator<Item = Result<Entry, StoreError>> + 'a> {
        // Copy the matching range out so no lock is held across the caller's iteration.
        let entries: Vec<Entry> = self
            .read()
            .get(tree)
            .map(|t| {
                t.range(prefix.to_vec()..)
                    .take_while(|(k, _)| k.starts_with(prefix))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            })
            .unwrap_or_default();
        Box::new(entries.into_iter().map(Ok))
    }

    fn scan_chunk(
        &self,
        tree: &'static str,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<Entry>, StoreError> {
        use std::ops::Bound;
        let start = match after {
            Some(a) => Bound::Excluded(a.to_vec()),
            None => Bound::Included(prefix.to_vec()),
        };
        Ok(self
            .read()
            .get(tree)
            .map(|t| {
                t.range((start, Bound::Unbounded))
                    .take_while(|(k, _)| k.starts_with(prefix))
                    .take(limit)
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            })
            .unwrap_or_default())
    }

    fn apply(&self, batch: Batch) -> Result<(), StoreError> {
        let mut trees = self.trees.write().unwrap_or_else(|p| p.into_inner());
        for (tree, key, op) in batch.ops {
            let t = trees.entry(tree).or_default();
            match op {
                Op::Put(v) => {
                    t.insert(key, v);
                }
                Op::Delete => {
                    t.remove(&key);
                }
            }
        }
        Ok(())
    }

    fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }

    fn count(&self, tree: &'static str) -> Result<u64, StoreError> {
        Ok(self.read().get(tree).map_or(0, |t| t.len() as u64))
    }

    fn size_on_disk(&self) -> Option<u64> {
        None
    }

    fn scan_all<'a>(&'a self) -> Box<dyn Iterator<Item = Result<Entry, StoreError>> + 'a> {
        let mut all: Vec<Entry> = Vec::new();
        for (tree, entries) in self.read().iter() {
            all.extend(
                entries
                    .iter()
                    .map(|(k, v)| (super::kv::full_key(tree, k), v.clone())),
            );
        }
        all.sort();
        Box::new(all.into_iter().map(Ok))
    }

    fn put_raw(&self, entries: Vec<Entry>) -> Result<(), StoreError> {
        let mut trees = self.trees.write().unwrap_or_else(|p| p.into_inner());
        for (full, value) in entries {
            let at = full
                .iter()
                .position(|b| *b == 0)
                .ok_or_else(|| StoreError::Corrupt("a key without a tree name".into()))?;
            let name = String::from_utf8_lossy(&full[..at]).into_owned();
            // Tree names are static in the store; a test store may leak a new one.
            let tree: &'static str = match trees.keys().find(|t| **t == name) {
                Some(t) => t,
                None => Box::leak(name.into_boxed_str()),
            };
            trees
                .entry(tree)
                .or_default()
                .insert(full[at + 1..].to_vec(), value);
        }
        Ok(())
    }
}
