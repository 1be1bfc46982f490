//! Searching the directory index: the term's words (analysed like the documents), every
//! word required, each matching exactly (best) or as a prefix, or, when that finds
//! nobody, within one typo (words of 4 characters or more); nothing in the term is
//! query syntax. Recent answers are kept until the next commit. Read-only: it must not
//! write the index.

use super::schema::{words, MAX_PREFIX};
use super::{DirectoryIndex, IndexError};
use tantivy::collector::TopDocs;
use tantivy::query::{BooleanQuery, FuzzyTermQuery, Occur, Query, TermQuery};
use tantivy::schema::{IndexRecordOption, Value};
use tantivy::{TantivyDocument, Term};

/// One search result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hit {
    pub user_id: String,
    pub display_name: Option<String>,
}

/// A search as the index sees it, its term analysed once: the analysed words, the
/// limit, 3PIDs or not. It keys the result cache.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Search {
    words: Vec<String>,
    limit: usize,
    threepids: bool,
}

impl Search {
    /// Up to `limit` users matching `term`; `threepids`: also match on e-mail
    /// addresses and phone numbers.
    pub fn new(term: &str, limit: usize, threepids: bool) -> Self {
        Self {
            words: words(term),
            limit,
            threepids,
        }
    }

    /// Whether it is quick enough to run on a request's thread: every word at least 3
    /// characters long, so no prefix matches a large part of the index (a 1- or
    /// 2-letter one can, and is searched off the request threads).
    pub fn is_quick(&self) -> bool {
        self.words.iter().all(|w| w.chars().nth(2).is_some())
    }
}

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
    pub fn cached(&self, search: &Search) -> Option<(Vec<Hit>, bool)> {
        if self.cache_size.load(std::sync::atomic::Ordering::Relaxed) == 0 {
            return None;
        }
        self.cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(search)
            .cloned()
    }

    fn remember(&self, search: Search, found: &(Vec<Hit>, bool)) {
        let size = self.cache_size.load(std::sync::atomic::Ordering::Relaxed);
        if size == 0 {
            return;
        }
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= size {
            // Full: start again rather than track recency (a commit clears it anyway).
            cache.clear();
        }
        cache.insert(search, found.clone());
    }

    /// Up to `limit` users matching `term`, best first, and whether there were more.
    /// `threepids`: also match on e-mail addresses and phone numbers.
    pub fn search(
        &self,
        term: &str,
        limit: usize,
        threepids: bool,
    ) -> Result<(Vec<Hit>, bool), IndexError> {
        let search = Search::new(term, limit, threepids);
        match self.cached(&search) {
            Some(found) => Ok(found),
            None => self.search_uncached(search),
        }
    }

    /// Runs `search` on the index (its cached answer is not looked at) and remembers
    /// the answer.
    pub fn search_uncached(&self, search: Search) -> Result<(Vec<Hit>, bool), IndexError> {
        if search.words.is_empty() || search.limit == 0 {
            return Ok((Vec::new(), false));
        }
        // Exact words and prefixes first; the typo-tolerant query (the costly part: an
        // automaton walking the term dictionary per word) only when they find nobody.
        let mut found = self.run(&search, false)?;
        if found.0.is_empty() && search.words.iter().any(|w| w.chars().count() >= 4) {
            found = self.run(&search, true)?;
        }
        self.remember(search, &found);
        Ok(found)
    }

    fn run(&self, search: &Search, typos: bool) -> Result<(Vec<Hit>, bool), IndexError> {
        let &Search {
            ref words,
            limit,
            threepids,
        } = search;
        let f = self.fields;
        let field = if threepids {
            f.words_and_threepids
        } else {
            f.words
        };
        // No boosts and no constant-score wrappers: a word found exactly is also a
        // prefix of itself (up to MAX_PREFIX), so it outranks a mere prefix on its own,
        // and plain term scorers let a one-word search skip the blocks of documents
        // that cannot reach the page (block-max WAND) instead of scoring every match.
        let mut per_word: Vec<(Occur, Box<dyn Query>)> = words
            .iter()
            .map(|w| {
                let t = Term::from_field_text(field, w);
                let long = w.chars().count();
                let mut options: Vec<(Occur, Box<dyn Query>)> = vec![(
                    Occur::Should,
                    Box::new(TermQuery::new(t.clone(), IndexRecordOption::WithFreqs)),
                )];
                // A prefix: one term of the prefix fields (no frequencies, no norms:
                // the same score for every document); a longer one, the indexed words
                // that begin with it.
                let prefix = |field| -> Box<dyn Query> {
                    Box::new(TermQuery::new(
                        Term::from_field_text(field, w),
                        IndexRecordOption::Basic,
                    ))
                };
                if long <= MAX_PREFIX {
                    options.push((Occur::Should, prefix(f.prefixes)));
                    if threepids {
                        options.push((Occur::Should, prefix(f.threepid_prefixes)));
                    }
                } else {
                    options.push((
                        Occur::Should,
                        Box::new(FuzzyTermQuery::new_prefix(t.clone(), 0, true)),
                    ));
                }
                if typos && long >= 4 {
                    options.push((Occur::Should, Box::new(FuzzyTermQuery::new(t, 1, true))));
                }
                (
                    Occur::Must,
                    Box::new(BooleanQuery::new(options)) as Box<dyn Query>,
                )
            })
            .collect();
        // One word: its options alone, not an intersection of one.
        let query: Box<dyn Query> = if per_word.len() == 1 {
            per_word.remove(0).1
        } else {
            Box::new(BooleanQuery::new(per_word))
        };
        let searcher = self.reader.searcher();
        let top = searcher.search(
            &*query,
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
        // A prefix; a typo when the words as typed find nobody, in every word.
        assert_eq!(ids(&index, "Liddel"), vec!["@alice:example.org"]);
        assert_eq!(ids(&index, "Lidell"), vec!["@alice:example.org"]);
        assert_eq!(ids(&index, "alcie lidell"), vec!["@alice:example.org"]);
        assert_eq!(ids(&index, "alicia kyes"), vec!["@alicia:example.org"]);
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
    fn prefixes_short_and_long_in_names_and_addresses() {
        use crate::index::testing::user;
        use crate::index::DirectoryIndex;
        let index = DirectoryIndex::in_memory().unwrap();
        let fanshawe = user(
            "Featherstonehaugh Fanshawe",
            &["q.montmorency-ward@example.org"],
            "Ópera",
        );
        let other = user("Feather Duster", &["fd@example.org"], "Cleaner");
        let dusted = user("Dusted Off", &[], "Cleaner");
        index
            .replace_all([
                ("@fanshawe:example.org", &fanshawe),
                ("@feather12345678:example.org", &other),
                ("@dusted:example.org", &dusted),
            ])
            .unwrap();
        let ids = |term| crate::index::testing::ids(&index, term);
        // Up to the indexed length, and past it (the term dictionary's walk).
        assert_eq!(ids("featherstoneh"), ["@fanshawe:example.org"]);
        assert_eq!(ids("featherston"), ["@fanshawe:example.org"]);
        assert_eq!(ids("featherstonehaugh"), ["@fanshawe:example.org"]);
        assert_eq!(ids("feather1234567"), ["@feather12345678:example.org"]);
        // The exact word first, then the prefix.
        assert_eq!(
            ids("feather"),
            ["@feather12345678:example.org", "@fanshawe:example.org"]
        );
        assert_eq!(ids("f").len(), 2);
        // An address's words, as prefixes, only when 3PIDs are searched; accents fold.
        assert_eq!(ids("montm"), ["@fanshawe:example.org"]);
        assert!(index.search("montm", 10, false).unwrap().0.is_empty());
        assert_eq!(ids("OPER"), ["@fanshawe:example.org"]);
        // Found as typed, a word's one-typo neighbours are not added; typed wrong, both.
        assert_eq!(ids("duster"), ["@feather12345678:example.org"]);
        assert_eq!(ids("dustex").len(), 2);
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
