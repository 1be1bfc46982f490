//! The directory index (tantivy): one document per user the sync sources list, built
//! from the store's directory entries, which stay the truth (the index can always be
//! rebuilt from them).
//!
//! Searching: the term is split into words with the same analyzer as the documents
//! (lowercased, accents folded, split on anything but letters and digits), every word
//! must match some field, and a word matches exactly (best), as a prefix, or within
//! one typo (words of 4 characters or more). Nothing in the term is query syntax.

use crate::model::DirectoryUser;
use std::path::Path;
use tantivy::collector::TopDocs;
use tantivy::query::{BooleanQuery, BoostQuery, FuzzyTermQuery, Occur, Query, TermQuery};
use tantivy::schema::{
    Field, IndexRecordOption, Schema, TextFieldIndexing, TextOptions, Value, STORED, STRING,
};
use tantivy::tokenizer::{AsciiFoldingFilter, LowerCaser, SimpleTokenizer, TextAnalyzer};
use tantivy::{doc, Index, IndexReader, IndexWriter, ReloadPolicy, TantivyDocument, Term};

const TOKENIZER: &str = "mxisd";
/// Words of a search term used (the rest is ignored).
const MAX_WORDS: usize = 8;
/// Longest word searched (longer ones are cut).
const MAX_WORD: usize = 64;
/// Doc store blocks kept decompressed.
const DOC_STORE_BLOCKS: usize = 1000;
/// Writer memory budget (tantivy's minimum is 15 MB).
const WRITER_HEAP: usize = 30 << 20;

#[derive(Debug, thiserror::Error)]
#[error("directory index: {0}")]
pub struct IndexError(String);

impl From<tantivy::TantivyError> for IndexError {
    fn from(e: tantivy::TantivyError) -> Self {
        Self(e.to_string())
    }
}

#[derive(Clone, Copy)]
struct Fields {
    user_id: Field,
    display_name: Field,
    /// Display name, localpart and extra attributes (department, title...).
    words: Field,
    /// The same plus e-mail addresses and phone numbers. One field per kind of search,
    /// not one per source of words: each searched field costs an automaton per word.
    words_and_threepids: Field,
}

fn schema() -> (Schema, Fields) {
    let mut b = Schema::builder();
    let text = TextOptions::default().set_indexing_options(
        TextFieldIndexing::default()
            .set_tokenizer(TOKENIZER)
            .set_index_option(IndexRecordOption::WithFreqs),
    );
    let fields = Fields {
        user_id: b.add_text_field("user_id", STRING | STORED),
        display_name: b.add_text_field("display_name", STORED),
        words: b.add_text_field("words", text.clone()),
        words_and_threepids: b.add_text_field("words_and_threepids", text),
    };
    (b.build(), fields)
}

fn analyzer() -> TextAnalyzer {
    TextAnalyzer::builder(SimpleTokenizer::default())
        .filter(LowerCaser)
        .filter(AsciiFoldingFilter)
        .build()
}

/// One search result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hit {
    pub user_id: String,
    pub display_name: Option<String>,
}

pub struct DirectoryIndex {
    reader: IndexReader,
    writer: std::sync::Mutex<IndexWriter>,
    fields: Fields,
    /// A write started that did not end in a full rebuild's commit.
    stale: std::sync::atomic::AtomicBool,
    /// Results of recent searches, dropped at every commit.
    cache: std::sync::Mutex<std::collections::HashMap<CacheKey, (Vec<Hit>, bool)>>,
    cache_size: std::sync::atomic::AtomicUsize,
}

/// A search as the index sees it: the analysed words, the limit, 3PIDs or not.
type CacheKey = (Vec<String>, usize, bool);

/// Holding the index's writer: upserts and deletes, then one commit. Dropped without
/// a commit, what it wrote is rolled back and the index is marked stale.
pub struct IndexWriting<'a> {
    index: &'a DirectoryIndex,
    writer: std::sync::MutexGuard<'a, IndexWriter>,
    committed: bool,
}

impl IndexWriting<'_> {
    /// Makes the index hold exactly `users` (Matrix ID → entry) and commits: a full
    /// rebuild, after which the index is no longer stale.
    pub fn replace_all<'u>(
        mut self,
        users: impl IntoIterator<Item = (&'u str, &'u DirectoryUser)>,
    ) -> Result<u64, IndexError> {
        self.writer.delete_all_documents()?;
        let mut n = 0;
        for (mxid, user) in users {
            self.upsert(mxid, Some(user))?;
            n += 1;
        }
        self.commit()?;
        Ok(n)
    }

    /// Replaces `mxid`'s document with `user`'s, or deletes it (`None`).
    pub fn upsert(&mut self, mxid: &str, user: Option<&DirectoryUser>) -> Result<(), IndexError> {
        let f = self.index.fields;
        self.writer
            .delete_term(Term::from_field_text(f.user_id, mxid));
        if let Some(user) = user {
            self.writer.add_document(self.index.document(mxid, user))?;
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
        self.index.clear_cache();
        match done {
            Ok(()) if full => self.index.set_stale(false),
            Ok(()) => {}
            Err(_) => self.index.set_stale(true),
        }
        done
    }

    /// Commits a rebuild (see [`Self::commit_as`]).
    pub fn commit(self) -> Result<(), IndexError> {
        self.commit_as(true)
    }
}

impl Drop for IndexWriting<'_> {
    fn drop(&mut self) {
        if !self.committed {
            self.index.set_stale(true);
            if let Err(e) = self.writer.rollback() {
                tracing::warn!(error = %e, "rolling back an unfinished index write failed");
            }
        }
    }
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

    /// How many searches' results to remember (0: none). Type-ahead clients send the
    /// same few prefixes over and over; the answers only change at a commit.
    pub fn set_cache_size(&self, entries: usize) {
        self.cache_size
            .store(entries, std::sync::atomic::Ordering::Relaxed);
        self.clear_cache();
    }

    fn clear_cache(&self) {
        self.cache.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    /// A remembered answer to this search, if any (cheap: no index access).
    pub fn cached(&self, term: &str, limit: usize, threepids: bool) -> Option<(Vec<Hit>, bool)> {
        if self.cache_size.load(std::sync::atomic::Ordering::Relaxed) == 0 {
            return None;
        }
        self.lookup(&(words(term), limit, threepids))
    }

    fn lookup(&self, key: &CacheKey) -> Option<(Vec<Hit>, bool)> {
        self.cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .cloned()
    }

    fn remember(&self, key: CacheKey, found: &(Vec<Hit>, bool)) {
        let size = self.cache_size.load(std::sync::atomic::Ordering::Relaxed);
        if size == 0 {
            return;
        }
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= size {
            // Full: start again rather than track recency (a commit clears it anyway).
            cache.clear();
        }
        cache.insert(key, found.clone());
    }

    /// Marks the index as missing something: the next update rebuilds it whole.
    pub fn mark_stale(&self) {
        self.set_stale(true);
    }

    fn set_stale(&self, stale: bool) {
        self.stale.store(stale, std::sync::atomic::Ordering::SeqCst);
    }

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
        })
    }

    /// Whether a write failed since the last full rebuild (a rebuild is due).
    pub fn is_stale(&self) -> bool {
        self.stale.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn document(&self, mxid: &str, user: &DirectoryUser) -> TantivyDocument {
        let f = self.fields;
        let localpart = mxid
            .strip_prefix('@')
            .and_then(|m| m.split(':').next())
            .unwrap_or(mxid);
        let mut d = doc!(f.user_id => mxid);
        let mut both = |text: &str| {
            d.add_text(f.words, text);
            d.add_text(f.words_and_threepids, text);
        };
        both(localpart);
        if let Some(name) = &user.display_name {
            both(name);
        }
        for values in user.attributes.values() {
            for v in values {
                both(v);
            }
        }
        if let Some(name) = &user.display_name {
            d.add_text(f.display_name, name);
        }
        for t in &user.threepids {
            d.add_text(f.words_and_threepids, t.address());
        }
        d
    }

    /// Up to `limit` users matching `term`, best first, and whether there were more.
    /// `threepids`: also match on e-mail addresses and phone numbers.
    pub fn search(
        &self,
        term: &str,
        limit: usize,
        threepids: bool,
    ) -> Result<(Vec<Hit>, bool), IndexError> {
        let words = words(term);
        if words.is_empty() || limit == 0 {
            return Ok((Vec::new(), false));
        }
        let key = (words, limit, threepids);
        if let Some(found) = self.lookup(&key) {
            return Ok(found);
        }
        // Exact words and prefixes first; the typo-tolerant query (the costly part:
        // an automaton per word and field) only when they do not overflow the page.
        let mut found = self.run(&key.0, limit, threepids, false)?;
        if !found.1 && key.0.iter().any(|w| w.chars().count() >= 4) {
            found = self.run(&key.0, limit, threepids, true)?;
        }
        self.remember(key, &found);
        Ok(found)
    }

    fn run(
        &self,
        words: &[String],
        limit: usize,
        threepids: bool,
        typos: bool,
    ) -> Result<(Vec<Hit>, bool), IndexError> {
        let f = self.fields;
        let fields = [if threepids {
            f.words_and_threepids
        } else {
            f.words
        }];
        let per_word: Vec<(Occur, Box<dyn Query>)> = words
            .iter()
            .map(|w| {
                let mut options: Vec<(Occur, Box<dyn Query>)> = Vec::new();
                for &field in &fields {
                    let t = Term::from_field_text(field, w);
                    options.push((
                        Occur::Should,
                        Box::new(BoostQuery::new(
                            Box::new(TermQuery::new(t.clone(), IndexRecordOption::WithFreqs)),
                            4.0,
                        )),
                    ));
                    options.push((
                        Occur::Should,
                        Box::new(BoostQuery::new(
                            Box::new(FuzzyTermQuery::new_prefix(t.clone(), 0, true)),
                            2.0,
                        )),
                    ));
                    if typos && w.chars().count() >= 4 {
                        options.push((Occur::Should, Box::new(FuzzyTermQuery::new(t, 1, true))));
                    }
                }
                (
                    Occur::Must,
                    Box::new(BooleanQuery::new(options)) as Box<dyn Query>,
                )
            })
            .collect();
        let query = BooleanQuery::new(per_word);
        let searcher = self.reader.searcher();
        let top = searcher.search(
            &query,
            &TopDocs::with_limit(limit.saturating_add(1)).order_by_score(),
        )?;
        let limited = top.len() > limit;
        let mut hits = Vec::with_capacity(top.len().min(limit));
        for (_, address) in top.into_iter().take(limit) {
            let d: TantivyDocument = searcher.doc(address)?;
            let text = |field| {
                d.get_first(field)
                    .and_then(|v| v.as_str())
                    .map(str::to_owned)
            };
            if let Some(user_id) = text(f.user_id) {
                hits.push(Hit {
                    user_id,
                    display_name: text(f.display_name),
                });
            }
        }
        Ok((hits, limited))
    }

    /// Documents in the index.
    pub fn len(&self) -> u64 {
        self.reader.searcher().num_docs()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The words of a search term, analysed like the documents.
fn words(term: &str) -> Vec<String> {
    let mut analyzer = analyzer();
    let mut stream = analyzer.token_stream(term);
    let mut out: Vec<String> = Vec::new();
    while stream.advance() {
        let w: String = stream.token().text.chars().take(MAX_WORD).collect();
        if !out.contains(&w) {
            out.push(w);
        }
        if out.len() == MAX_WORDS {
            break;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Medium, ThreePid};
    use std::collections::BTreeMap;

    fn user(name: &str, mails: &[&str], title: &str) -> DirectoryUser {
        DirectoryUser {
            display_name: Some(name.to_owned()),
            threepids: mails
                .iter()
                .map(|m| ThreePid::new(Medium::Email, m).unwrap())
                .collect(),
            attributes: BTreeMap::from([("title".to_owned(), vec![title.to_owned()])]),
            roles: vec![],
        }
    }

    fn directory() -> DirectoryIndex {
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

    fn ids(index: &DirectoryIndex, term: &str) -> Vec<String> {
        index
            .search(term, 10, true)
            .unwrap()
            .0
            .into_iter()
            .map(|h| h.user_id)
            .collect()
    }

    #[test]
    fn exact_beats_prefix_beats_typo_and_every_word_must_match() {
        let index = directory();
        // "alice" is exact for Alice, a typo away from nobody else but a prefix of none.
        assert_eq!(ids(&index, "alice")[0], "@alice:example.org");
        // A prefix finds both, the exact match of neither: both listed.
        let ali = ids(&index, "ali");
        assert_eq!(ali.len(), 2, "{ali:?}");
        // A typo.
        assert_eq!(ids(&index, "Liddel"), vec!["@alice:example.org"]);
        // Two words: both must match.
        assert_eq!(ids(&index, "alice keys"), Vec::<String>::new());
        assert_eq!(ids(&index, "alicia ke"), vec!["@alicia:example.org"]);
        // Accents fold, case does not matter.
        assert_eq!(ids(&index, "ALVAREZ"), vec!["@jose:example.org"]);
        // Extra attributes and e-mail prefixes.
        let engineers = ids(&index, "engineer");
        assert_eq!(engineers.len(), 2, "{engineers:?}");
        assert_eq!(ids(&index, "alice.lid"), vec!["@alice:example.org"]);
    }

    #[test]
    fn limits_threepids_and_query_syntax() {
        let index = directory();
        let (hits, limited) = index.search("engineer", 1, true).unwrap();
        assert_eq!((hits.len(), limited), (1, true));
        let (hits, limited) = index.search("engineer", 2, true).unwrap();
        assert_eq!((hits.len(), limited), (2, false));
        assert!(hits[0].display_name.is_some());
        // An address finds its user; without 3PIDs, nobody.
        assert_eq!(ids(&index, "keys@example.org"), vec!["@alicia:example.org"]);
        assert!(index
            .search("keys@example.org", 10, false)
            .unwrap()
            .0
            .is_empty());
        assert_eq!(index.search("cratchitt", 10, false).unwrap().0.len(), 1);
        // Nothing is syntax: quotes, stars, colons, parentheses, minus.
        for term in ["\"bob\"", "bob*", "bob:", "(bob)", "-bob", "+bob~"] {
            assert_eq!(ids(&index, term), vec!["@bob:example.org"], "{term}");
        }
        // `name:` is a word like any other here, not a field selector; `AND` too.
        assert!(ids(&index, "name:bob").is_empty());
        assert!(ids(&index, "bob AND alice").is_empty());
        // Empty, punctuation only, huge.
        assert!(ids(&index, "").is_empty());
        assert!(ids(&index, " *:() ").is_empty());
        let huge = "x".repeat(10_000);
        assert!(ids(&index, &huge).is_empty());
        assert!(index.search("bob", 0, true).unwrap().0.is_empty());
    }

    #[test]
    fn upserts_replace_and_delete_and_an_unfinished_write_is_rolled_back() {
        let index = directory();
        // Answers are remembered until the next commit.
        assert!(ids(&index, "robert").is_empty());
        assert_eq!(index.cached("Robert!", 10, true), Some((vec![], false)));
        assert_eq!(index.cached("robert", 9, true), None);
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
