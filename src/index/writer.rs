//! Writing the directory index: [`IndexWriting`], the one writer held under its lock,
//! with upserts (delete the user's term, add the new document), deletes, a full
//! replacement, and one commit that makes it all searchable and drops the search cache.
//! A write dropped without its commit is rolled back and leaves the index stale. It must
//! not decide what to write: callers read the store and hand the entries in.

use super::{DirectoryIndex, IndexError};
use crate::model::DirectoryUser;
use tantivy::indexer::{LogMergePolicy, NoMergePolicy};
use tantivy::{IndexWriter, Term};

/// Holding the index's writer: upserts and deletes, then one commit. Dropped without
/// a commit, what it wrote is rolled back and the index is marked stale.
pub struct IndexWriting<'a> {
    index: &'a DirectoryIndex,
    writer: std::sync::MutexGuard<'a, IndexWriter>,
    committed: bool,
    /// [`Self::start_over`] was called: background merges are off until the end.
    rebuilding: bool,
}

impl IndexWriting<'_> {
    /// Makes the index hold exactly `users` (Matrix ID → entry) and commits: a full
    /// rebuild, after which the index is no longer stale.
    pub fn replace_all<'u>(
        mut self,
        users: impl IntoIterator<Item = (&'u str, &'u DirectoryUser)>,
    ) -> Result<u64, IndexError> {
        self.start_over()?;
        let mut n = 0;
        for (mxid, user) in users {
            self.add(mxid, user)?;
            n += 1;
        }
        self.commit()?;
        Ok(n)
    }

    /// Deletes every document (until the commit, searches still see them): a rebuild
    /// then [`Self::add`]s every entry.
    pub fn start_over(&mut self) -> Result<(), IndexError> {
        // No background merge while the index is rebuilt: tantivy would start some on
        // the segments written as the writer's budget fills, and the merge of all of
        // them after the commit would then fail. Restored at the commit, or when the
        // write is dropped.
        self.writer.set_merge_policy(Box::new(NoMergePolicy));
        self.rebuilding = true;
        self.writer.delete_all_documents()?;
        Ok(())
    }

    /// Background merges as usual again, after a rebuild.
    fn merge_as_usual(&mut self) {
        if std::mem::take(&mut self.rebuilding) {
            self.writer
                .set_merge_policy(Box::<LogMergePolicy>::default());
        }
    }

    /// Adds `mxid`'s document, after [`Self::start_over`]: adds only (a delete per
    /// user, as [`Self::upsert`] does, queues a term query of about 1 KB each until the
    /// commit).
    pub fn add(&mut self, mxid: &str, user: &DirectoryUser) -> Result<(), IndexError> {
        self.writer
            .add_document(self.index.fields.document(mxid, user))?;
        Ok(())
    }

    /// Replaces `mxid`'s document with `user`'s, or deletes it (`None`).
    pub fn upsert(&mut self, mxid: &str, user: Option<&DirectoryUser>) -> Result<(), IndexError> {
        let f = self.index.fields;
        self.writer
            .delete_term(Term::from_field_text(f.user_id, mxid));
        if let Some(user) = user {
            self.writer
                .add_document(self.index.fields.document(mxid, user))?;
        }
        Ok(())
    }

    /// Makes what was written searchable. `full`: this commit ends a full rebuild, so
    /// the index is no longer stale.
    pub fn commit_as(mut self, full: bool) -> Result<(), IndexError> {
        self.committed = true;
        let done = self
            .writer
            .commit()
            .map_err(IndexError::from)
            .and_then(|_| self.index.reader.reload().map_err(IndexError::from));
        if full && done.is_ok() {
            self.merge_segments();
        }
        self.merge_as_usual();
        self.index.clear_cache();
        match done {
            Ok(()) if full => self.index.set_stale(false),
            Ok(()) => {}
            Err(_) => self.index.set_stale(true),
        }
        done
    }

    /// Merges the index into one segment after a rebuild, which writes several (one
    /// per writer budget's worth): every search looks each word up once per segment.
    /// A failed merge leaves the segments as they were, still correct.
    fn merge_segments(&mut self) {
        let segments = match self.writer.index().searchable_segment_ids() {
            Ok(ids) if ids.len() > 1 => ids,
            Ok(_) => return,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list the index's segments to merge them");
                return;
            }
        };
        let merged = self
            .writer
            .merge(&segments)
            .wait()
            .map_err(IndexError::from)
            .and_then(|_| self.index.reader.reload().map_err(IndexError::from));
        if let Err(e) = merged {
            tracing::warn!(error = %e, "merging the index's segments failed; searches stay correct, a little slower");
        }
    }

    /// Commits a rebuild (see [`Self::commit_as`]).
    pub fn commit(self) -> Result<(), IndexError> {
        self.commit_as(true)
    }
}

impl Drop for IndexWriting<'_> {
    fn drop(&mut self) {
        self.merge_as_usual();
        if !self.committed {
            self.index.set_stale(true);
            if let Err(e) = self.writer.rollback() {
                tracing::warn!(error = %e, "rolling back an unfinished index write failed");
            }
        }
    }
}

impl DirectoryIndex {
    /// Makes the index hold exactly `users` (Matrix ID → entry), in one commit.
    pub fn replace_all<'a>(
        &self,
        users: impl IntoIterator<Item = (&'a str, &'a DirectoryUser)>,
    ) -> Result<u64, IndexError> {
        self.writer()?.replace_all(users)
    }

    /// The index's one writer, held until the returned guard is dropped: what a caller
    /// reads from the store while holding it cannot be overtaken by another writer.
    /// Nothing written is searchable before [`IndexWriting::commit`].
    pub fn writer(&self) -> Result<IndexWriting<'_>, IndexError> {
        let writer = self
            .writer
            .lock()
            .map_err(|_| IndexError("the writer lock is poisoned".into()))?;
        Ok(IndexWriting {
            index: self,
            writer,
            committed: false,
            rebuilding: false,
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::index::testing::{directory, ids, user};
    use crate::index::Search;

    #[test]
    fn upserts_replace_and_delete_and_an_unfinished_write_is_rolled_back() {
        let index = directory();
        // Answers are remembered until the next commit.
        assert!(ids(&index, "robert").is_empty());
        assert_eq!(
            index.cached(&Search::new("Robert!", 10, true)),
            Some((vec![], false))
        );
        assert_eq!(index.cached(&Search::new("robert", 9, true)), None);
        let mut w = index.writer().unwrap();
        w.upsert(
            "@bob:example.org",
            Some(&user("Robert Cratchit", &["rob@example.org"], "Scrivener")),
        )
        .unwrap();
        w.upsert("@alicia:example.org", None).unwrap();
        w.upsert(
            "@new:example.org",
            Some(&user("Newt Scamander", &[], "Zoologist")),
        )
        .unwrap();
        w.commit_as(false).unwrap();
        assert_eq!(index.len(), 4);
        assert_eq!(ids(&index, "robert"), vec!["@bob:example.org"]);
        assert!(ids(&index, "clerk").is_empty(), "the old document is gone");
        assert!(ids(&index, "alicia").is_empty());
        assert_eq!(ids(&index, "scamander"), vec!["@new:example.org"]);
        assert!(!index.is_stale());
        // Dropped without a commit: nothing of it shows, even after a later commit,
        // and the index says a rebuild is due.
        let mut w = index.writer().unwrap();
        w.upsert("@ghost:example.org", Some(&user("Ghost", &[], "x")))
            .unwrap();
        drop(w);
        assert!(index.is_stale());
        let w = index.writer().unwrap();
        w.commit_as(false).unwrap();
        assert!(ids(&index, "ghost").is_empty());
        assert!(index.is_stale());
        index
            .replace_all([("@ghost:example.org", &user("Ghost", &[], "x"))])
            .unwrap();
        assert!(!index.is_stale());
        assert_eq!(ids(&index, "ghost"), vec!["@ghost:example.org"]);
    }

    /// A rebuild runs without background merges (they would take some of its
    /// segments from under the merge that follows its commit); they are back after
    /// the commit, and after a rebuild dropped unfinished.
    #[test]
    fn no_background_merge_during_a_rebuild() {
        let index = directory();
        let policy = |w: &super::IndexWriting<'_>| format!("{:?}", w.writer.get_merge_policy());
        let mut w = index.writer().unwrap();
        assert!(policy(&w).starts_with("LogMergePolicy"), "{}", policy(&w));
        w.start_over().unwrap();
        assert!(policy(&w).starts_with("NoMergePolicy"), "{}", policy(&w));
        w.add("@ann:example.org", &user("Ann", &[], "x")).unwrap();
        w.commit().unwrap();
        let mut w = index.writer().unwrap();
        assert!(policy(&w).starts_with("LogMergePolicy"), "{}", policy(&w));
        w.start_over().unwrap();
        drop(w);
        let w = index.writer().unwrap();
        assert!(policy(&w).starts_with("LogMergePolicy"), "{}", policy(&w));
        w.commit_as(false).unwrap();
        assert_eq!(ids(&index, "ann"), vec!["@ann:example.org"]);
    }
}
