//! Searching the directory index: the term's words (analysed like the documents), every
//! word required, each matching exactly (best), as a prefix, or within one typo (words
//! of 4 characters or more, tried only when the exact and prefix query leaves room on
//! the page); nothing in the term is query syntax. Recent answers are kept until the
//! next commit. Read-only: it must not write the index.

use super::schema::words;
use super::{DirectoryIndex, IndexError};
use tantivy::collector::TopDocs;
use tantivy::query::{BooleanQuery, BoostQuery, FuzzyTermQuery, Occur, Query, TermQuery};
use tantivy::schema::{IndexRecordOption, Value};
use tantivy::{TantivyDocument, Term};

/// One search result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hit {
    pub user_id: String,
    pub display_name: Option<String>,
}

/// A search as the index sees it: the analysed words, the limit, 3PIDs or not.
pub(super) type CacheKey = (Vec<String>, usize, bool);

impl DirectoryIndex {
    /// How many searches' results to remember (0: none). Type-ahead clients send the
    /// same few prefixes over and over; the answers only change at a commit.
    pub fn set_cache_size(&self, entries: usize) {
        self.cache_size
            .store(entries, std::sync::atomic::Ordering::Relaxed);
        self.clear_cache();
    }

    pub(super) fn clear_cache(&self) {
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
}

#[cfg(test)]
mod tests {
    use crate::index::testing::{directory, ids};

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
}
