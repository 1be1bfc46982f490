//! The directory index (tantivy): one document per user the sync sources list, built
//! from the store's directory entries, which stay the truth (the index can always be
//! rebuilt from them).
//!
//! Searching: the term is split into words with the same analyzer as the documents
//! (lowercased, accents folded, split on anything but letters and digits), every word
//! must match some field, and a word matches exactly (best) or as a prefix, or, when
//! that finds nobody, within one typo (words of 4 characters or more). Nothing in the
//! term is query syntax.
//!
//! This file owns the index handle: opening (or recreating) it, the reader, the one
//! writer's lock and whether the index is stale; it must not build documents or
//! queries. The schema and the analyzer are in [`schema`], writing in [`writer`],
//! searching and its result cache in [`search`]. Nothing here reads the store: callers
//! hand the entries in.

mod schema;
mod search;
mod writer;

pub use search::{Hit, Search};
pub use writer::IndexWriting;

use schema::{analyzer, schema, Fields, TOKENIZER};
use std::path::Path;
use tantivy::{Index, IndexReader, IndexWriter, ReloadPolicy};

/// Doc store blocks kept decompressed.
const DOC_STORE_BLOCKS: usize = 1000;
/// Writer memory budget (tantivy's minimum is 15 MB). The index update after a sync
/// is what a first sync's memory peaks on: 16 MB instead of 30 MB lowered that peak by
/// 10-20 MB at 100k users, for a rebuild 5-10 % slower (more segments to merge).
const WRITER_HEAP: usize = 16 << 20;

#[derive(Debug, thiserror::Error)]
#[error("directory index: {0}")]
pub struct IndexError(String);

impl From<tantivy::TantivyError> for IndexError {
    fn from(e: tantivy::TantivyError) -> Self {
        Self(e.to_string())
    }
}

pub struct DirectoryIndex {
    reader: IndexReader,
    writer: std::sync::Mutex<IndexWriter>,
    fields: Fields,
    /// A write started that did not end in a full rebuild's commit.
    stale: std::sync::atomic::AtomicBool,
    /// Results of recent searches, dropped at every commit.
    cache: std::sync::Mutex<std::collections::HashMap<Search, (Vec<Hit>, bool)>>,
    cache_size: std::sync::atomic::AtomicUsize,
}

impl std::fmt::Debug for DirectoryIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DirectoryIndex")
    }
}

impl DirectoryIndex {
    /// Opens the index in `dir`, or creates it there. An index that cannot be opened
    /// (corrupt, from another version) is removed and created empty: the caller
    /// rebuilds it from the store. Returns whether it was (re)created.
    pub fn open(dir: &Path) -> Result<(Self, bool), IndexError> {
        let (schema, fields) = schema();
        let existing = dir.join("meta.json").exists();
        let opened = if existing {
            Index::open_in_dir(dir)
                .ok()
                .filter(|i| i.schema() == schema)
        } else {
            None
        };
        let (index, created) = match opened {
            Some(index) => (index, false),
            None => {
                if dir.exists() {
                    std::fs::remove_dir_all(dir)
                        .map_err(|e| IndexError(format!("cannot clear {}: {e}", dir.display())))?;
                }
                std::fs::create_dir_all(dir)
                    .map_err(|e| IndexError(format!("cannot create {}: {e}", dir.display())))?;
                (Index::create_in_dir(dir, schema)?, true)
            }
        };
        Ok((Self::with(index, fields)?, created))
    }

    /// An index in memory (tests, benchmarks).
    pub fn in_memory() -> Result<Self, IndexError> {
        let (schema, fields) = schema();
        Self::with(Index::create_in_ram(schema), fields)
    }

    fn with(index: Index, fields: Fields) -> Result<Self, IndexError> {
        index.tokenizers().register(TOKENIZER, analyzer());
        let reader = index
            .reader_builder()
            // Reloaded by hand after our commits (so a search right after an update
            // sees it), and on the background merges' commits, which make it faster.
            .reload_policy(ReloadPolicy::OnCommitWithDelay)
            // Results are read from the doc store: keep its decompressed blocks (16 KiB
            // each; 1000 hold 100k entries) rather than decompress one per hit.
            .doc_store_cache_num_blocks(DOC_STORE_BLOCKS)
            .try_into()?;
        // The writer's lock can outlive a server that just stopped by a moment (an
        // in-place restart): wait for it a little.
        let mut tries = 0;
        let writer = loop {
            match index.writer_with_num_threads(1, WRITER_HEAP) {
                Ok(w) => break w,
                Err(tantivy::TantivyError::LockFailure(..)) if tries < 40 => {
                    tries += 1;
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                Err(e) => return Err(e.into()),
            }
        };
        Ok(Self {
            reader,
            writer: std::sync::Mutex::new(writer),
            fields,
            stale: std::sync::atomic::AtomicBool::new(false),
            cache: std::sync::Mutex::new(std::collections::HashMap::new()),
            cache_size: std::sync::atomic::AtomicUsize::new(crate::config::DEFAULT_SEARCH_CACHE),
        })
    }

    /// Marks the index as missing something: the next update rebuilds it whole.
    pub fn mark_stale(&self) {
        self.set_stale(true);
    }

    fn set_stale(&self, stale: bool) {
        self.stale.store(stale, std::sync::atomic::Ordering::SeqCst);
    }

    /// Whether a write failed since the last full rebuild (a rebuild is due).
    pub fn is_stale(&self) -> bool {
        self.stale.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Documents in the index.
    pub fn len(&self) -> u64 {
        self.reader.searcher().num_docs()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Helpers for the tests of this module's files.
#[cfg(test)]
pub(crate) mod testing {
    use super::DirectoryIndex;
    use crate::model::{DirectoryUser, Medium, ThreePid};

    /// A user with a display name, e-mail addresses and a title.
    pub(crate) fn user(name: &str, mails: &[&str], title: &str) -> DirectoryUser {
        DirectoryUser {
            display_name: Some(name.to_owned()),
            threepids: mails
                .iter()
                .map(|m| ThreePid::new(Medium::Email, m).unwrap())
                .collect(),
            attributes: [("title".to_owned(), vec![title.to_owned()])]
                .into_iter()
                .collect(),
            roles: vec![],
        }
    }

    /// An index of four users.
    pub(crate) fn directory() -> DirectoryIndex {
        let users = [
            (
                "@alice:example.org",
                user("Alice Liddell", &["alice.liddell@example.org"], "Engineer"),
            ),
            (
                "@alicia:example.org",
                user("Alicia Keys", &["keys@example.org"], "Singer"),
            ),
            (
                "@bob:example.org",
                user("Bob Cratchit", &["bob@example.org"], "Clerk"),
            ),
            (
                "@jose:example.org",
                user("José Álvarez", &["jose@example.org"], "Engineer"),
            ),
        ];
        let index = DirectoryIndex::in_memory().unwrap();
        assert_eq!(
            index
                .replace_all(users.iter().map(|(m, u)| (*m, u)))
                .unwrap(),
            4
        );
        index
    }

    /// The Matrix IDs found for `term` (3PIDs included), best first.
    pub(crate) fn ids(index: &DirectoryIndex, term: &str) -> Vec<String> {
        index
            .search(term, 10, true)
            .unwrap()
            .0
            .into_iter()
            .map(|h| h.user_id)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::testing::user;
    use super::*;

    #[test]
    fn an_index_on_disk_is_reopened_or_rebuilt_when_broken() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("index");
        let (index, created) = DirectoryIndex::open(&path).unwrap();
        assert!(created);
        let alice = user("Alice", &["a@example.org"], "x");
        index.replace_all([("@alice:example.org", &alice)]).unwrap();
        drop(index);
        let (index, created) = DirectoryIndex::open(&path).unwrap();
        assert!(!created);
        assert_eq!(index.len(), 1);
        drop(index);
        std::fs::write(path.join("meta.json"), "{ not json").unwrap();
        let (index, created) = DirectoryIndex::open(&path).unwrap();
        assert!(created);
        assert!(index.is_empty());
    }
}
