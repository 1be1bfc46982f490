//! What a document of the directory index holds and how text becomes words: the
//! schema, the analyzer shared by documents and search terms (lowercased, accents
//! folded, split on anything but letters and digits), the words of a search term, and
//! the document built from a directory entry. Pure functions of their input: this file
//! must not touch an index, a reader or a writer.

use crate::model::DirectoryUser;
use tantivy::schema::{
    Field, IndexRecordOption, Schema, TextFieldIndexing, TextOptions, STORED, STRING,
};
use tantivy::tokenizer::{AsciiFoldingFilter, LowerCaser, SimpleTokenizer, TextAnalyzer};
use tantivy::{doc, TantivyDocument};

pub(super) const TOKENIZER: &str = "mxisd";
/// Words of a search term used (the rest is ignored).
const MAX_WORDS: usize = 8;
/// Longest word searched (longer ones are cut).
const MAX_WORD: usize = 64;
/// Longest prefix indexed, in characters: a search word up to this long is found as a
/// prefix by one term lookup; a longer one walks the term dictionary (few terms share
/// so long a start).
pub(super) const MAX_PREFIX: usize = 10;

#[derive(Clone, Copy)]
pub(super) struct Fields {
    pub(super) user_id: Field,
    pub(super) display_name: Field,
    /// Display name, localpart and extra attributes (department, title...).
    pub(super) words: Field,
    /// The same plus e-mail addresses and phone numbers. One field per kind of search,
    /// not one per source of words: each searched field costs an automaton per word.
    pub(super) words_and_threepids: Field,
    /// Every start (1 to [`MAX_PREFIX`] characters) of every word of `words`, so a
    /// prefix is one term to look up rather than every indexed word that begins with
    /// it (`tild` is the start of thousands of `tildimbear123`-like localparts).
    pub(super) prefixes: Field,
    /// The same for the words of e-mail addresses and phone numbers only.
    pub(super) threepid_prefixes: Field,
}

pub(super) fn schema() -> (Schema, Fields) {
    let mut b = Schema::builder();
    let text = TextOptions::default().set_indexing_options(
        TextFieldIndexing::default()
            .set_tokenizer(TOKENIZER)
            .set_index_option(IndexRecordOption::WithFreqs),
    );
    // The starts of a document's words, one space-separated text: only whether a
    // document has one matters (no frequencies, no norms: they are scored as a constant).
    let starts = TextOptions::default().set_indexing_options(
        TextFieldIndexing::default()
            .set_tokenizer("whitespace")
            .set_index_option(IndexRecordOption::Basic)
            .set_fieldnorms(false),
    );
    let fields = Fields {
        user_id: b.add_text_field("user_id", STRING | STORED),
        display_name: b.add_text_field("display_name", STORED),
        words: b.add_text_field("words", text.clone()),
        words_and_threepids: b.add_text_field("words_and_threepids", text),
        prefixes: b.add_text_field("prefixes", starts.clone()),
        threepid_prefixes: b.add_text_field("threepid_prefixes", starts),
    };
    (b.build(), fields)
}

pub(super) fn analyzer() -> TextAnalyzer {
    TextAnalyzer::builder(SimpleTokenizer::default())
        .filter(LowerCaser)
        .filter(AsciiFoldingFilter)
        .build()
}

impl Fields {
    /// The document of `mxid`, whose directory entry is `user`.
    pub(super) fn document(self, mxid: &str, user: &DirectoryUser) -> TantivyDocument {
        let f = self;
        let localpart = mxid
            .strip_prefix('@')
            .and_then(|m| m.split(':').next())
            .unwrap_or(mxid);
        let mut d = doc!(f.user_id => mxid);
        let mut analyzer = analyzer();
        let mut starts = String::new();
        let mut both = |text: &str| {
            d.add_text(f.words, text);
            d.add_text(f.words_and_threepids, text);
            prefixes_of(&mut analyzer, text, &mut starts);
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
        d.add_text(f.prefixes, &starts);
        if let Some(name) = &user.display_name {
            d.add_text(f.display_name, name);
        }
        starts.clear();
        for t in &user.threepids {
            d.add_text(f.words_and_threepids, t.address());
            prefixes_of(&mut analyzer, t.address(), &mut starts);
        }
        if !starts.is_empty() {
            d.add_text(f.threepid_prefixes, &starts);
        }
        d
    }
}

/// Appends the starts (1 to [`MAX_PREFIX`] characters) of `text`'s words to `starts`,
/// each followed by a space (repeats are harmless: only presence is indexed).
fn prefixes_of(analyzer: &mut TextAnalyzer, text: &str, starts: &mut String) {
    let mut stream = analyzer.token_stream(text);
    while stream.advance() {
        let word = &stream.token().text;
        for (at, c) in word.char_indices().take(MAX_PREFIX) {
            starts.push_str(&word[..at + c.len_utf8()]);
            starts.push(' ');
        }
    }
}

/// The words of a search term, analysed like the documents.
pub(super) fn words(term: &str) -> Vec<String> {
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
