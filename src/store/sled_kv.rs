//! The sled implementation of the key-value seam. sled allows one process per
//! directory; the lock error it raises is turned into a message an operator can act on.

use super::kv::{Batch, Entry, Kv, Op};
use super::StoreError;
use sled::Transactional as _;
use std::path::Path;

pub struct SledKv {
    db: sled::Db,
}

impl SledKv {
    /// Opens (creating if needed) the database under `path` with a page cache bounded to
    /// `cache_bytes`.
    pub fn open(path: &Path, cache_bytes: u64) -> Result<Self, StoreError> {
        // The store holds 3PIDs: private to the service user.
        std::os::unix::fs::DirBuilderExt::mode(std::fs::DirBuilder::new().recursive(true), 0o700)
            .create(path)
            .map_err(|e| StoreError::Io {
                what: format!("cannot create {}", path.display()),
                detail: e.to_string(),
            })?;
        let db = sled::Config::new()
            .path(path)
            .cache_capacity(cache_bytes)
            .open()
            .map_err(|e| match e {
                sled::Error::Io(io) if io.to_string().contains("lock") => {
                    StoreError::Locked(path.to_owned())
                }
                other => StoreError::Io {
                    what: format!("cannot open the store in {}", path.display()),
                    detail: other.to_string(),
                },
            })?;
        Ok(Self { db })
    }

    fn tree(&self, name: &'static str) -> Result<sled::Tree, StoreError> {
        self.db.open_tree(name).map_err(backend)
    }
}

fn backend(e: sled::Error) -> StoreError {
    StoreError::Io {
        what: "sled".into(),
        detail: e.to_string(),
    }
}

impl Kv for SledKv {
    fn get(&self, tree: &'static str, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .tree(tree)?
            .get(key)
            .map_err(backend)?
            .map(|v| v.to_vec()))
    }

    fn scan_prefix<'a>(
        &'a self,
        tree: &'static str,
        prefix: &[u8],
    ) -> Box<dyn Iterator<Item = Result<Entry, StoreError>> + 'a> {
        match self.tree(tree) {
            Ok(t) => Box::new(
                t.scan_prefix(prefix)
                    .map(|r| r.map(|(k, v)| (k.to_vec(), v.to_vec())).map_err(backend)),
            ),
            Err(e) => Box::new(std::iter::once(Err(e))),
        }
    }

    fn apply(&self, batch: Batch) -> Result<(), StoreError> {
        let names = batch.trees();
        let trees = names
            .iter()
            .map(|n| self.tree(n))
            .collect::<Result<Vec<_>, _>>()?;
        if let [only] = trees.as_slice() {
            // One tree: sled's batch is atomic and much cheaper than a transaction.
            let mut b = sled::Batch::default();
            for (_, key, op) in batch.ops {
                match op {
                    Op::Put(v) => b.insert(key, v),
                    Op::Delete => b.remove(key),
                }
            }
            return only.apply_batch(b).map_err(backend);
        }
        let refs: Vec<&sled::Tree> = trees.iter().collect();
        refs.as_slice()
            .transaction(|tx| {
                for (tree, key, op) in &batch.ops {
                    let idx = names.iter().position(|n| n == tree).unwrap_or(0);
                    match op {
                        Op::Put(v) => {
                            tx[idx].insert(key.as_slice(), v.as_slice())?;
                        }
                        Op::Delete => {
                            tx[idx].remove(key.as_slice())?;
                        }
                    }
                }
                Ok(())
            })
            .map_err(
                |e: sled::transaction::TransactionError<()>| StoreError::Io {
                    what: "sled transaction".into(),
                    detail: format!("{e:?}"),
                },
            )
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.db.flush().map(|_| ()).map_err(backend)
    }

    fn count(&self, tree: &'static str) -> Result<u64, StoreError> {
        Ok(self.tree(tree)?.len() as u64)
    }

    fn size_on_disk(&self) -> Option<u64> {
        self.db.size_on_disk().ok()
    }
}
