//! Keeps the import layering of `src/` true: the "Layering rules" of `../shared/DESIGN.md`
//! and "Architecture in brief" in README.md. It reads every `src/**/*.rs` except
//! `main.rs`, blanks out comments and string/char literals, and collects every path that
//! points into the crate: `use crate::…` (groups expanded), `super::…`, `self::…`, bare
//! paths into a child module, and inline paths such as `crate::store::now_ms()`, test
//! modules included. Each path is resolved to the file it lands in (the longest prefix of
//! its segments that is a module file), and then:
//!
//! - **rule 1, layers**: a file may use its own top-level module and modules on a strictly
//!   lower layer of [`LAYERS`], nothing else. The crate root (`lib.rs`) may use anything,
//!   and items defined in the crate root are not checked. A top-level module missing from
//!   [`LAYERS`] fails until it is given a layer.
//! - **rule 1, no circles**: no files use each other in a circle (a child using its parent
//!   or another ancestor, e.g. `store::bindings` → `store`, is not counted).
//! - **rule 2**: `warp::`, `hyper::` and `StatusCode` appear only in the top-level modules
//!   of [`HTTP_TYPES_ALLOWED_IN`].
//! - **rule 3**: nothing under `http` uses `store` or `index`.
//!
//! A failure lists every violation, grouped by rule, one per line. `src/index.rs:12:
//! imports crate::store::sync (store, layer 5) from index (layer 5): imports only go down`
//! reads: line 12 of src/index.rs names `crate::store::sync`, which lives in `store`, and
//! `index` may not use it. "imports" is a `use`; "refers to" is a path in code. A relative
//! path is shown with what it resolves to (`super::a::f = crate::service::a::f`); the same
//! message again in the same file is folded into "(also lines …)". A circle names its
//! modules, then one import for each edge that closes it. Fix the import (move the shared
//! item down a layer, or pass it in), or, if the design changed, change the constants
//! below together with DESIGN.md.
//!
//! The checker is std-only, so it also builds alone, in seconds, from the crate root:
//! `rustc --edition 2021 --test tests/it/architecture.rs -o /tmp/arch && /tmp/arch`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};

/// The layers, top to bottom: a top-level module may use a module on a strictly lower
/// layer, or itself. Every top-level module of `src/` must be listed here.
const LAYERS: &[(u32, &[&str])] = &[
    (8, &["app", "cli"]),                                       // wiring and the CLI
    (7, &["http", "migrate"]),                                  // HTTP handlers, importers
    (6, &["service"]),                                          // domain logic
    (5, &["store", "index", "source", "notify", "federation"]), // data and the outside
    (
        4,
        &["crypto", "metrics", "dns", "logging", "progress", "pace"],
    ), // tools
    (3, &["config"]),                                           // configuration types
    (2, &["model", "error"]),                                   // shared vocabulary
];

/// Top-level modules that may use HTTP types (`lib` is the crate root): `http` itself,
/// and what sits above it or is a command-line tool.
const HTTP_TYPES_ALLOWED_IN: &[&str] = &["lib", "http", "app", "cli", "migrate"];

/// The crates whose paths are HTTP types (`warp::…`, `hyper::…`).
const HTTP_CRATES: &[&str] = &["warp", "hyper"];

/// Type names that are HTTP types wherever they come from (`http::StatusCode` too).
const HTTP_TYPE_NAMES: &[&str] = &["StatusCode"];

/// The handlers' top-level module, and what it must never use directly.
const HANDLERS: &str = "http";
const OFF_LIMITS_TO_HANDLERS: &[&str] = &["store", "index"];

const HINT: &str = "src/ breaks its layering rules (see ../shared/DESIGN.md \"Layering rules\" \
                    and README.md \"Architecture in brief\"; the checker is tests/it/architecture.rs)";

// ---------------------------------------------------------------------------------------
// Violations
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Rule {
    Layers,
    Circles,
    HttpTypes,
    Handlers,
}

impl Rule {
    fn title(self) -> &'static str {
        match self {
            Rule::Layers => "rule 1, layers: imports only go down",
            Rule::Circles => "rule 1, no circles",
            Rule::HttpTypes => "rule 2: HTTP types stay in http",
            Rule::Handlers => "rule 3: handlers never touch the store or the index",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Violation {
    rule: Rule,
    file: String,
    line: Option<usize>,
    message: String,
    /// Further lines of the same file with the very same message.
    also: Vec<usize>,
}

impl Violation {
    fn new(rule: Rule, file: &str, line: Option<usize>, message: String) -> Self {
        Violation {
            rule,
            file: file.to_string(),
            line,
            message,
            also: Vec::new(),
        }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{}: {}", self.file, line, self.message)?,
            None => write!(f, "{}: {}", self.file, self.message)?,
        }
        if !self.also.is_empty() {
            let lines: Vec<String> = self.also.iter().map(ToString::to_string).collect();
            let s = if lines.len() > 1 { "s" } else { "" };
            write!(f, " (also line{s} {})", lines.join(", "))?;
        }
        Ok(())
    }
}

/// Sorts by rule, file and line, and folds repeats of one message in one file into its
/// first line's `also`.
fn sort_and_fold(mut violations: Vec<Violation>) -> Vec<Violation> {
    violations.sort();
    let mut folded: Vec<Violation> = Vec::with_capacity(violations.len());
    let mut first: BTreeMap<(Rule, String, String), usize> = BTreeMap::new();
    for v in violations {
        let key = (v.rule, v.file.clone(), v.message.clone());
        match first.get(&key) {
            Some(&at) => {
                let earlier = &mut folded[at];
                if let Some(line) = v
                    .line
                    .filter(|l| Some(*l) != earlier.line && !earlier.also.contains(l))
                {
                    earlier.also.push(line);
                }
            }
            None => {
                first.insert(key, folded.len());
                folded.push(v);
            }
        }
    }
    folded
}

/// The failure message: the hint, then the violations grouped by rule.
fn report(violations: &[Violation]) -> String {
    let mut out = format!("{HINT}\n{} violation(s):\n", violations.len());
    let mut rule = None;
    for v in violations {
        if rule != Some(v.rule) {
            rule = Some(v.rule);
            out.push_str(&format!("\n[{}]\n", v.rule.title()));
        }
        out.push_str(&format!("{v}\n"));
    }
    out
}

// ---------------------------------------------------------------------------------------
// Files and modules
// ---------------------------------------------------------------------------------------

/// A module path such as `["store", "bindings"]`; the crate root is `[]`.
type ModPath = Vec<String>;

fn mod_name(module: &[String]) -> String {
    if module.is_empty() {
        "lib".to_string()
    } else {
        module.join("::")
    }
}

/// The top-level module (`lib` for the crate root).
fn top(module: &[String]) -> &str {
    module.first().map_or("lib", String::as_str)
}

fn layer(top: &str) -> Option<u32> {
    LAYERS
        .iter()
        .find(|(_, modules)| modules.contains(&top))
        .map(|(n, _)| *n)
}

/// `src/lib.rs` → `[]`, `src/foo.rs` and `src/foo/mod.rs` → `[foo]`, `src/foo/bar.rs` →
/// `[foo, bar]`. None for files that are not modules of the library.
fn module_of(path: &str) -> Option<ModPath> {
    let rel = path.strip_prefix("src/")?.strip_suffix(".rs")?;
    if rel == "main" || rel.starts_with("bin/") {
        return None;
    }
    let rel = rel.strip_suffix("/mod").unwrap_or(rel);
    if rel == "lib" {
        return Some(Vec::new());
    }
    Some(rel.split('/').map(str::to_string).collect())
}

// ---------------------------------------------------------------------------------------
// Lexing: blank out comments and literals, then split into tokens
// ---------------------------------------------------------------------------------------

fn is_ident_char(c: char) -> bool {
    c == '_' || c.is_alphanumeric()
}

/// The source with comments, strings and char literals replaced by spaces (newlines kept,
/// so line numbers stay right).
fn strip_comments_and_literals(src: &str) -> String {
    let c: Vec<char> = src.chars().collect();
    let mut out = String::with_capacity(src.len());
    let mut i = 0;
    while i < c.len() {
        let at_token_start = i == 0 || !is_ident_char(c[i - 1]);
        let end = match (c[i], c.get(i + 1)) {
            ('/', Some('/')) => Some(
                c[i..]
                    .iter()
                    .position(|&ch| ch == '\n')
                    .map_or(c.len(), |n| i + n),
            ),
            ('/', Some('*')) => Some(block_comment_end(&c, i)),
            ('"', _) => Some(quoted_end(&c, i)),
            ('\'', _) => char_literal_end(&c, i),
            _ if at_token_start => prefixed_literal_end(&c, i),
            _ => None,
        };
        match end {
            Some(end) => {
                out.extend(
                    c[i..end]
                        .iter()
                        .map(|&ch| if ch == '\n' { '\n' } else { ' ' }),
                );
                i = end;
            }
            None => {
                out.push(c[i]);
                i += 1;
            }
        }
    }
    out
}

/// End of a `/* … */` comment starting at `i` (they nest).
fn block_comment_end(c: &[char], mut i: usize) -> usize {
    let mut depth = 0;
    while i < c.len() {
        match (c[i], c.get(i + 1)) {
            ('/', Some('*')) => {
                depth += 1;
                i += 2;
            }
            ('*', Some('/')) => {
                depth -= 1;
                i += 2;
                if depth == 0 {
                    return i;
                }
            }
            _ => i += 1,
        }
    }
    c.len()
}

/// End of a `"…"` string whose opening quote is at `i`.
fn quoted_end(c: &[char], i: usize) -> usize {
    let mut j = i + 1;
    while j < c.len() {
        match c[j] {
            '\\' => j += 2,
            '"' => return j + 1,
            _ => j += 1,
        }
    }
    c.len()
}

/// End of a char literal whose quote is at `i`, or None for a lifetime or label (`'a`).
fn char_literal_end(c: &[char], i: usize) -> Option<usize> {
    match c.get(i + 1) {
        Some('\\') => {
            // Skip the backslash and the escaped character, then find the closing quote.
            let from = (i + 3).min(c.len());
            Some(
                c[from..]
                    .iter()
                    .position(|&ch| ch == '\'')
                    .map_or(c.len(), |n| from + n + 1),
            )
        }
        Some(_) if c.get(i + 2) == Some(&'\'') => Some(i + 3),
        _ => None,
    }
}

/// End of a `b"…"`, `c"…"`, `r#"…"#`, `br"…"`, `cr"…"` or `b'…'` literal at `i`.
fn prefixed_literal_end(c: &[char], i: usize) -> Option<usize> {
    let mut j = i;
    if matches!(c[j], 'b' | 'c') {
        j += 1;
    }
    if c.get(j) == Some(&'r') {
        let hashes = c[j + 1..].iter().take_while(|&&ch| ch == '#').count();
        j += 1 + hashes;
        if c.get(j) != Some(&'"') {
            return None; // r#ident, or an identifier starting with r
        }
        let closing: Vec<char> = std::iter::once('"')
            .chain(std::iter::repeat_n('#', hashes))
            .collect();
        let body = j + 1;
        let close = c[body..]
            .windows(closing.len())
            .position(|w| w == closing.as_slice());
        return Some(close.map_or(c.len(), |n| body + n + closing.len()));
    }
    match c.get(j) {
        Some('"') if j > i => Some(quoted_end(c, j)),
        Some('\'') if c[i] == 'b' && j == i + 1 => char_literal_end(c, j),
        _ => None,
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    Ident(String),
    PathSep,
    Punct(char),
}

#[derive(Debug, Clone)]
struct Token {
    tok: Tok,
    line: usize,
}

/// Tokens of stripped source: identifiers (and numbers), `::`, and single punctuation.
/// Raw identifiers keep their `r#` so they never read as keywords.
fn tokenize(stripped: &str) -> Vec<Token> {
    let c: Vec<char> = stripped.chars().collect();
    let mut tokens = Vec::new();
    let mut line = 1;
    let mut i = 0;
    while i < c.len() {
        let ch = c[i];
        if ch == '\n' {
            line += 1;
            i += 1;
        } else if ch.is_whitespace() {
            i += 1;
        } else if is_ident_char(ch) {
            let start = i;
            while i < c.len() && is_ident_char(c[i]) {
                i += 1;
            }
            if c[start..i] == ['r']
                && c.get(i) == Some(&'#')
                && c.get(i + 1).is_some_and(|&n| is_ident_char(n))
            {
                i += 1;
                while i < c.len() && is_ident_char(c[i]) {
                    i += 1;
                }
            }
            tokens.push(Token {
                tok: Tok::Ident(c[start..i].iter().collect()),
                line,
            });
        } else if ch == ':' && c.get(i + 1) == Some(&':') {
            tokens.push(Token {
                tok: Tok::PathSep,
                line,
            });
            i += 2;
        } else {
            tokens.push(Token {
                tok: Tok::Punct(ch),
                line,
            });
            i += 1;
        }
    }
    tokens
}

// ---------------------------------------------------------------------------------------
// Paths in a file
// ---------------------------------------------------------------------------------------

/// A path as written. A leading `::` (an external crate) is an empty first segment, so
/// `segments.join("::")` gives the text back.
#[derive(Debug, Clone)]
struct RawPath {
    line: usize,
    segments: Vec<String>,
    in_use: bool,
    /// The inline modules (`mod tests { … }`) the path sits in, outermost first.
    scope: Vec<String>,
}

fn is_ident(tokens: &[Token], i: usize) -> bool {
    matches!(
        tokens.get(i),
        Some(Token {
            tok: Tok::Ident(_),
            ..
        })
    )
}

fn is_tok(tokens: &[Token], i: usize, want: &Tok) -> bool {
    tokens.get(i).is_some_and(|t| &t.tok == want)
}

fn ident_at(tokens: &[Token], i: usize) -> Option<&str> {
    match tokens.get(i) {
        Some(Token {
            tok: Tok::Ident(s), ..
        }) => Some(s),
        _ => None,
    }
}

/// Every path in the file: the leaves of each `use` tree, and every maximal
/// `a::b::c` sequence elsewhere (single identifiers included).
fn paths_in(src: &str) -> Vec<RawPath> {
    let tokens = tokenize(&strip_comments_and_literals(src));
    let mut paths = Vec::new();
    let mut depth = 0usize;
    let mut inline_mods: Vec<(String, usize)> = Vec::new();
    let scope_of = |mods: &[(String, usize)]| {
        mods.iter()
            .map(|(name, _)| name.clone())
            .collect::<Vec<_>>()
    };
    let mut i = 0;
    while i < tokens.len() {
        let prev_is_sep = i > 0 && tokens[i - 1].tok == Tok::PathSep;
        match &tokens[i].tok {
            Tok::Ident(word) if word == "use" => {
                let mut leaves = Vec::new();
                i = use_tree(&tokens, i + 1, Vec::new(), &mut leaves);
                while i < tokens.len() && !is_tok(&tokens, i, &Tok::Punct(';')) {
                    i += 1;
                }
                let scope = scope_of(&inline_mods);
                paths.extend(leaves.into_iter().map(|(line, segments)| RawPath {
                    line,
                    segments,
                    in_use: true,
                    scope: scope.clone(),
                }));
            }
            Tok::Ident(word)
                if word == "mod"
                    && is_ident(&tokens, i + 1)
                    && is_tok(&tokens, i + 2, &Tok::Punct('{')) =>
            {
                depth += 1;
                inline_mods.push((
                    ident_at(&tokens, i + 1).unwrap_or_default().to_string(),
                    depth,
                ));
                i += 3;
                continue;
            }
            Tok::Punct('{') => depth += 1,
            Tok::Punct('}') => {
                if inline_mods.last().is_some_and(|(_, d)| *d == depth) {
                    inline_mods.pop();
                }
                depth = depth.saturating_sub(1);
            }
            Tok::Ident(_) if !prev_is_sep => {
                // `pub(in crate::a)` is a visibility, not a use of `a`.
                let in_visibility = i >= 3
                    && ident_at(&tokens, i - 1) == Some("in")
                    && is_tok(&tokens, i - 2, &Tok::Punct('('))
                    && ident_at(&tokens, i - 3) == Some("pub");
                let (segments, end) = inline_path(&tokens, i, Vec::new());
                if !in_visibility {
                    paths.push(RawPath {
                        line: tokens[i].line,
                        segments,
                        in_use: false,
                        scope: scope_of(&inline_mods),
                    });
                }
                i = end;
                continue;
            }
            Tok::PathSep if is_ident(&tokens, i + 1) && !continues_a_path(&tokens, i) => {
                // A leading `::` (`::warp::Filter`): an external crate.
                let (segments, end) = inline_path(&tokens, i + 1, vec![String::new()]);
                paths.push(RawPath {
                    line: tokens[i].line,
                    segments,
                    in_use: false,
                    scope: scope_of(&inline_mods),
                });
                i = end;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    paths
}

/// Whether the `::` at `i` goes on from what precedes it (`a::b`, `Vec::<u8>::new`) rather
/// than starting a path at an external crate (`-> ::hyper::Body`).
fn continues_a_path(tokens: &[Token], i: usize) -> bool {
    let before = |back: usize| i.checked_sub(back).map(|j| &tokens[j].tok);
    match before(1) {
        Some(Tok::Ident(_)) => true,
        Some(Tok::Punct('>')) => !matches!(before(2), Some(Tok::Punct('-' | '='))),
        _ => false,
    }
}

/// `ident (:: ident)*` from `i`; returns the segments and the index after them.
fn inline_path(tokens: &[Token], mut i: usize, mut segments: Vec<String>) -> (Vec<String>, usize) {
    while let Some(seg) = ident_at(tokens, i) {
        segments.push(seg.to_string());
        if is_tok(tokens, i + 1, &Tok::PathSep) && is_ident(tokens, i + 2) {
            i += 2;
        } else {
            return (segments, i + 1);
        }
    }
    (segments, i)
}

/// Parses one use tree at `i` below `prefix`, pushing each leaf (line of its last segment,
/// full segments) into `leaves`; returns the index after the tree.
fn use_tree(
    tokens: &[Token],
    mut i: usize,
    mut prefix: Vec<String>,
    leaves: &mut Vec<(usize, Vec<String>)>,
) -> usize {
    loop {
        let Some(token) = tokens.get(i) else { return i };
        match &token.tok {
            Tok::PathSep => {
                if prefix.is_empty() {
                    prefix.push(String::new()); // leading `::`
                }
                i += 1;
            }
            Tok::Ident(seg) => {
                prefix.push(seg.clone());
                i += 1;
                if is_tok(tokens, i, &Tok::PathSep) {
                    continue;
                }
                if ident_at(tokens, i) == Some("as") {
                    i += 2;
                }
                if prefix.len() > 1 && prefix.last().is_some_and(|s| s == "self") {
                    prefix.pop(); // `a::{self, …}` is `a`
                }
                leaves.push((token.line, prefix));
                return i;
            }
            Tok::Punct('*') => {
                prefix.push("*".to_string());
                leaves.push((token.line, prefix));
                return i + 1;
            }
            Tok::Punct('{') => {
                i += 1;
                loop {
                    match tokens.get(i).map(|t| &t.tok) {
                        None => return i,
                        Some(Tok::Punct('}')) => return i + 1,
                        Some(Tok::Punct(',')) => i += 1,
                        Some(_) => {
                            let before = i;
                            i = use_tree(tokens, i, prefix.clone(), leaves);
                            if i == before {
                                i += 1;
                            }
                        }
                    }
                }
            }
            _ => return i,
        }
    }
}

// ---------------------------------------------------------------------------------------
// Resolving paths to module files
// ---------------------------------------------------------------------------------------

/// A path that points into the crate, resolved.
#[derive(Debug, Clone)]
struct Reference {
    file: String,
    from: ModPath,
    line: usize,
    text: String,
    in_use: bool,
    /// The absolute path (`crate::` dropped).
    absolute: Vec<String>,
    /// The module file it lands in: the longest prefix of `absolute` that is a module.
    target: ModPath,
}

impl Reference {
    /// `imports crate::a::b`, or `refers to super::b = crate::a::b`.
    fn describe(&self) -> String {
        let verb = if self.in_use { "imports" } else { "refers to" };
        if self.text.starts_with("crate::") {
            format!("{verb} {}", self.text)
        } else {
            format!("{verb} {} = crate::{}", self.text, self.absolute.join("::"))
        }
    }
}

/// The absolute path (without `crate::`) of `segments` written in module `here`, or None
/// if it does not point into the crate.
fn absolute(
    here: &[String],
    segments: &[String],
    modules: &BTreeSet<ModPath>,
) -> Option<Vec<String>> {
    let (first, rest) = segments.split_first()?;
    match first.as_str() {
        "crate" => Some(rest.to_vec()),
        "self" => Some([here, rest].concat()),
        "super" => {
            let mut base = here.to_vec();
            let mut rest = segments;
            while rest.first().is_some_and(|s| s == "super") {
                base.pop()?;
                rest = &rest[1..];
            }
            Some([base.as_slice(), rest].concat())
        }
        _ => {
            // A bare path into a child module declared by this file (`bindings::f`).
            let child = [here, std::slice::from_ref(first)].concat();
            modules.contains(&child).then(|| [here, segments].concat())
        }
    }
}

fn owning_module(absolute: &[String], modules: &BTreeSet<ModPath>) -> ModPath {
    (0..=absolute.len())
        .rev()
        .map(|n| absolute[..n].to_vec())
        .find(|prefix| modules.contains(prefix))
        .unwrap_or_default()
}

fn resolve(
    file: &str,
    from: &[String],
    raw: &RawPath,
    modules: &BTreeSet<ModPath>,
) -> Option<Reference> {
    if raw.segments.len() < 2 {
        return None; // `pub(crate)`, `self.x`, a lone identifier
    }
    let here = [from, raw.scope.as_slice()].concat();
    let absolute = absolute(&here, &raw.segments, modules)?;
    Some(Reference {
        file: file.to_string(),
        from: from.to_vec(),
        line: raw.line,
        text: raw.segments.join("::"),
        in_use: raw.in_use,
        target: owning_module(&absolute, modules),
        absolute,
    })
}

// ---------------------------------------------------------------------------------------
// The checker
// ---------------------------------------------------------------------------------------

struct SourceFile<'a> {
    path: &'a str,
    module: ModPath,
    paths: Vec<RawPath>,
}

/// Checks a source tree given as `(path relative to the crate root, text)` pairs, e.g.
/// `("src/store.rs", "use crate::model::Mxid;")`. Returns every violation, sorted by rule,
/// file and line.
fn check(files: &[(&str, &str)]) -> Vec<Violation> {
    let files: Vec<SourceFile> = files
        .iter()
        .filter_map(|&(path, text)| {
            Some(SourceFile {
                path,
                module: module_of(path)?,
                paths: paths_in(text),
            })
        })
        .collect();
    let modules: BTreeSet<ModPath> = files.iter().map(|f| f.module.clone()).collect();
    let refs: Vec<Reference> = files
        .iter()
        .flat_map(|f| {
            f.paths
                .iter()
                .filter_map(|raw| resolve(f.path, &f.module, raw, &modules))
        })
        .collect();

    let mut violations = Vec::new();
    violations.extend(check_layers(&files, &refs));
    violations.extend(check_circles(&refs));
    violations.extend(check_http_types(&files));
    violations.extend(check_handlers(&refs));
    sort_and_fold(violations)
}

/// Rule 1: every top-level module has a layer, and references only go down.
fn check_layers(files: &[SourceFile], refs: &[Reference]) -> Vec<Violation> {
    let mut violations = Vec::new();
    let mut unlayered: BTreeMap<&str, Vec<&SourceFile>> = BTreeMap::new();
    for f in files {
        if !f.module.is_empty() && layer(top(&f.module)).is_none() {
            unlayered.entry(top(&f.module)).or_default().push(f);
        }
    }
    for (module, its_files) in unlayered {
        // Name the module's own file (src/foo.rs) when there is one.
        let shown = its_files
            .iter()
            .find(|f| f.module.len() == 1)
            .unwrap_or(&its_files[0]);
        violations.push(Violation::new(
            Rule::Layers,
            shown.path,
            None,
            format!("module `{module}` has no layer in tests/it/architecture.rs; add it to LAYERS"),
        ));
    }
    for r in refs {
        let (from, to) = (top(&r.from), top(&r.target));
        if r.from.is_empty() || r.target.is_empty() || from == to {
            continue;
        }
        let (Some(from_layer), Some(to_layer)) = (layer(from), layer(to)) else {
            continue; // reported above
        };
        if to_layer >= from_layer {
            violations.push(Violation::new(
                Rule::Layers,
                &r.file,
                Some(r.line),
                format!(
                    "{} ({to}, layer {to_layer}) from {from} (layer {from_layer}): imports only go down",
                    r.describe()
                ),
            ));
        }
    }
    violations
}

/// Rule 1, no circles: strongly connected components of the file graph.
fn check_circles(refs: &[Reference]) -> Vec<Violation> {
    // The first reference that makes each edge; a module using itself or an ancestor is
    // not an edge.
    let mut edges: BTreeMap<(&ModPath, &ModPath), &Reference> = BTreeMap::new();
    for r in refs {
        if !r.from.starts_with(&r.target) {
            edges.entry((&r.from, &r.target)).or_insert(r);
        }
    }
    let mut graph: BTreeMap<&ModPath, Vec<&ModPath>> = BTreeMap::new();
    for &(from, to) in edges.keys() {
        graph.entry(from).or_default().push(to);
        graph.entry(to).or_default();
    }

    let mut violations = Vec::new();
    for component in strongly_connected(&graph) {
        if component.len() < 2 {
            continue;
        }
        let members: BTreeSet<&ModPath> = component.iter().copied().collect();
        let names: Vec<String> = members.iter().map(|m| mod_name(m)).collect();
        let mut message = format!(
            "circle between {}; break one of these imports:",
            names.join(", ")
        );
        let mut first_file = None;
        for (&(from, to), r) in &edges {
            if members.contains(from) && members.contains(to) {
                first_file.get_or_insert(r.file.clone());
                message.push_str(&format!(
                    "\n    {}:{}: {} ({})",
                    r.file,
                    r.line,
                    r.describe(),
                    mod_name(to)
                ));
            }
        }
        violations.push(Violation::new(
            Rule::Circles,
            &first_file.unwrap_or_default(),
            None,
            message,
        ));
    }
    violations
}

/// Tarjan's algorithm; components come out in a deterministic order.
fn strongly_connected<'a>(
    graph: &BTreeMap<&'a ModPath, Vec<&'a ModPath>>,
) -> Vec<Vec<&'a ModPath>> {
    struct Tarjan<'g, 'a> {
        graph: &'g BTreeMap<&'a ModPath, Vec<&'a ModPath>>,
        index: BTreeMap<&'a ModPath, usize>,
        low: BTreeMap<&'a ModPath, usize>,
        stack: Vec<&'a ModPath>,
        on_stack: BTreeSet<&'a ModPath>,
        components: Vec<Vec<&'a ModPath>>,
    }
    impl<'a> Tarjan<'_, 'a> {
        fn visit(&mut self, v: &'a ModPath) {
            let n = self.index.len();
            self.index.insert(v, n);
            self.low.insert(v, n);
            self.stack.push(v);
            self.on_stack.insert(v);
            for &w in self.graph.get(v).into_iter().flatten() {
                if !self.index.contains_key(w) {
                    self.visit(w);
                    let low = self.low[v].min(self.low[w]);
                    self.low.insert(v, low);
                } else if self.on_stack.contains(w) {
                    let low = self.low[v].min(self.index[w]);
                    self.low.insert(v, low);
                }
            }
            if self.low[v] == self.index[v] {
                let mut component = Vec::new();
                while let Some(w) = self.stack.pop() {
                    self.on_stack.remove(w);
                    component.push(w);
                    if w == v {
                        break;
                    }
                }
                self.components.push(component);
            }
        }
    }
    let mut t = Tarjan {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        components: Vec::new(),
    };
    for &v in graph.keys() {
        if !t.index.contains_key(v) {
            t.visit(v);
        }
    }
    t.components
}

/// Rule 2: `warp::`, `hyper::` and `StatusCode` only where HTTP_TYPES_ALLOWED_IN says.
fn check_http_types(files: &[SourceFile]) -> Vec<Violation> {
    let mut violations = Vec::new();
    for f in files {
        if HTTP_TYPES_ALLOWED_IN.contains(&top(&f.module)) {
            continue;
        }
        for raw in &f.paths {
            let named: Vec<&str> = raw
                .segments
                .iter()
                .map(String::as_str)
                .skip_while(|s| s.is_empty())
                .collect();
            let leading = raw.segments.len() > named.len();
            let crate_path = named.first().is_some_and(|s| HTTP_CRATES.contains(s))
                && (named.len() > 1 || raw.in_use || leading);
            let type_name = named.iter().find(|s| HTTP_TYPE_NAMES.contains(s));
            let what = match (crate_path, type_name) {
                (true, _) => format!("`{}::`", named[0]),
                (false, Some(name)) => format!("`{name}`"),
                (false, None) => continue,
            };
            violations.push(Violation::new(
                Rule::HttpTypes,
                f.path,
                Some(raw.line),
                format!(
                    "{} {}: {what} is an HTTP type, allowed only in {}",
                    if raw.in_use { "imports" } else { "uses" },
                    raw.segments.join("::"),
                    HTTP_TYPES_ALLOWED_IN.join(", ")
                ),
            ));
        }
    }
    violations
}

/// Rule 3: handlers get the services they call, never the store or the index.
fn check_handlers(refs: &[Reference]) -> Vec<Violation> {
    refs.iter()
        .filter(|r| {
            top(&r.from) == HANDLERS
                && !r.target.is_empty()
                && OFF_LIMITS_TO_HANDLERS.contains(&top(&r.target))
        })
        .map(|r| {
            Violation::new(
                Rule::Handlers,
                &r.file,
                Some(r.line),
                format!(
                    "{} ({}): handlers call services, never the store or the index",
                    r.describe(),
                    top(&r.target)
                ),
            )
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// The real tree
// ---------------------------------------------------------------------------------------

/// The crate root: Cargo's manifest dir, or the current directory when this file is
/// compiled alone with rustc.
fn crate_root() -> PathBuf {
    option_env!("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::current_dir().expect("current directory"))
}

/// Every `*.rs` under `src/`, as (`src/…` with `/` separators, text), sorted.
fn read_src(root: &Path) -> Vec<(String, String)> {
    fn walk(dir: &Path, root: &Path, out: &mut Vec<(String, String)>) {
        let entries =
            std::fs::read_dir(dir).unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()));
        for entry in entries {
            let path = entry.expect("directory entry").path();
            if path.is_dir() {
                walk(&path, root, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let rel = path.strip_prefix(root).expect("under the root");
                let rel: Vec<String> = rel
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect();
                let text = std::fs::read_to_string(&path)
                    .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
                out.push((rel.join("/"), text));
            }
        }
    }
    let mut files = Vec::new();
    walk(&root.join("src"), root, &mut files);
    files.sort();
    files
}

#[test]
fn src_keeps_its_layers() {
    let root = crate_root();
    let files = read_src(&root);
    assert!(
        files.iter().any(|(path, _)| path == "src/lib.rs"),
        "no src/lib.rs under {}",
        root.display()
    );
    let borrowed: Vec<(&str, &str)> = files
        .iter()
        .map(|(p, t)| (p.as_str(), t.as_str()))
        .collect();
    let violations = check(&borrowed);
    assert!(violations.is_empty(), "{}", report(&violations));
}

// ---------------------------------------------------------------------------------------
// The checker's own tests
// ---------------------------------------------------------------------------------------

/// A small tree that keeps every rule; tests add or replace files.
const CLEAN: &[(&str, &str)] = &[
    ("src/main.rs", "use mxisd::http::serve; fn main() { mxisd::app::run(); }"),
    ("src/lib.rs", "pub mod app; pub mod http; pub mod service; pub mod store; pub mod model;\npub struct Root;"),
    ("src/app.rs", "use crate::{http, service::lookup::Lookup, store::Store};\npub fn run() { crate::Root; }"),
    ("src/http.rs", "mod identity;\nuse warp::Filter;\npub fn status() -> warp::http::StatusCode { todo!() }"),
    ("src/http/identity.rs", "use super::super::service::lookup;\nuse crate::model::Mxid;\nfn h() { crate::service::lookup::run(); }"),
    ("src/service.rs", "pub mod lookup;\npub use lookup::Lookup;\npub struct Deps;"),
    ("src/service/lookup.rs", "use super::Deps;\nuse crate::store::{self, Store};\npub fn run() { store::now(); }"),
    ("src/store.rs", "mod bindings;\nuse crate::model::Mxid;\npub struct Store;\npub fn now() { bindings::f(); }"),
    ("src/store/bindings.rs", "use super::Store;\nuse crate::model::{self, Mxid};\npub fn f() {}"),
    ("src/model.rs", "pub struct Mxid;\n#[cfg(test)]\nmod tests { use super::*; }"),
];

/// CLEAN with `changes` added (or replacing a file of the same path).
fn tree_with(changes: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
    let mut tree: Vec<_> = CLEAN
        .iter()
        .filter(|(p, _)| !changes.iter().any(|(c, _)| c == p))
        .copied()
        .collect();
    tree.extend_from_slice(changes);
    tree
}

fn lines(files: &[(&str, &str)]) -> Vec<String> {
    check(files).iter().map(ToString::to_string).collect()
}

#[test]
fn a_clean_tree_passes() {
    assert_eq!(lines(CLEAN), Vec::<String>::new());
}

#[test]
fn an_upward_import_fails_naming_file_line_and_import() {
    let tree = tree_with(&[(
        "src/store.rs",
        "mod bindings;\nuse crate::service::lookup;\npub struct Store;",
    )]);
    let out = lines(&tree);
    assert!(
        out.contains(&"src/store.rs:2: imports crate::service::lookup (service, layer 6) from store (layer 5): imports only go down".to_string()),
        "{out:#?}"
    );
    let report = report(&check(&tree));
    assert!(report.starts_with(HINT), "{report}");
}

#[test]
fn an_upward_import_in_a_multi_line_group_is_caught() {
    let tree = tree_with(&[(
        "src/store.rs",
        "mod bindings;\nuse crate::{\n    model::Mxid,\n    service::{x, lookup::Lookup},\n};\npub struct Store;",
    )]);
    let out = lines(&tree);
    let layer_lines: Vec<&String> = out
        .iter()
        .filter(|l| l.contains("imports only go down"))
        .collect();
    assert_eq!(
        layer_lines,
        [
            "src/store.rs:4: imports crate::service::lookup::Lookup (service, layer 6) from store (layer 5): imports only go down",
            "src/store.rs:4: imports crate::service::x (service, layer 6) from store (layer 5): imports only go down",
        ],
        "{out:#?}"
    );
}

#[test]
fn super_paths_resolve_relative_to_the_file() {
    let modules: BTreeSet<ModPath> = [
        vec![],
        vec!["store".to_string()],
        vec!["store".into(), "codec".into()],
    ]
    .into();
    let m = |s: &str| -> Vec<String> { s.split("::").map(str::to_string).collect() };
    // src/store/a/b.rs is store::a::b: super is store::a, super::super is store.
    assert_eq!(
        absolute(&m("store::a::b"), &m("super::super::codec::X"), &modules),
        Some(m("store::codec::X"))
    );
    assert_eq!(
        absolute(
            &m("store::a::b"),
            &m("super::super::super::service::Y"),
            &modules
        ),
        Some(m("service::Y"))
    );
    assert_eq!(absolute(&[], &m("super::X"), &modules), None);
    assert_eq!(
        owning_module(&m("store::codec::X"), &modules),
        m("store::codec")
    );
    assert_eq!(owning_module(&m("store::gone::X"), &modules), m("store"));

    let tree = tree_with(&[
        ("src/store/a.rs", "mod b;"),
        (
            "src/store/a/b.rs",
            "use super::super::bindings::f;\nuse super::super::super::service::Deps;",
        ),
        (
            "src/service/lookup.rs",
            "#[cfg(test)]\nmod tests {\n    use super::super::Deps;\n}",
        ),
    ]);
    assert_eq!(
        lines(&tree),
        ["src/store/a/b.rs:2: imports super::super::super::service::Deps = crate::service::Deps (service, layer 6) from store (layer 5): imports only go down"]
    );
}

#[test]
fn imports_in_comments_and_strings_are_ignored() {
    let src = r####"mod bindings;
// use crate::service::a;
/* crate::service::b /* nested */ crate::service::c */
/// Like crate::service::d.
//! crate::service::e
pub fn f<'a>(x: &'a str) -> char {
    let _ = "crate::service::f \" crate::service::g";
    let _ = r#"use crate::service::h;"#;
    let _ = br##"crate::service::i "# "##;
    let _ = b"crate::service::j";
    let q = '"';
    let _ = "crate::service::k";
    let _ = ('\'', '\\', b'"');
    let _ = "warp::reply StatusCode";
    q
}
pub struct Store;"####;
    assert_eq!(
        lines(&tree_with(&[("src/store.rs", src)])),
        Vec::<String>::new()
    );
}

#[test]
fn a_circle_within_one_layer_is_reported() {
    let tree = tree_with(&[
        ("src/service.rs", "mod a;\nmod b;\npub struct Deps;"),
        (
            "src/service/a.rs",
            "pub fn g() {}\npub fn f() { crate::service::b::f(); }",
        ),
        ("src/service/b.rs", "use super::a::g;\npub fn f() {}"),
    ]);
    assert_eq!(
        lines(&tree),
        ["src/service/a.rs: circle between service::a, service::b; break one of these imports:\n    \
          src/service/a.rs:2: refers to crate::service::b::f (service::b)\n    \
          src/service/b.rs:1: imports super::a::g = crate::service::a::g (service::a)"]
    );
}

#[test]
fn a_child_using_its_parent_is_not_a_circle() {
    let tree = tree_with(&[
        (
            "src/store.rs",
            "mod bindings;\nuse self::bindings::f;\npub struct Store;\nfn g() { bindings::f(); }",
        ),
        (
            "src/store/bindings.rs",
            "use super::Store;\nuse crate::store::Store as S;\npub fn f() {}",
        ),
    ]);
    assert_eq!(lines(&tree), Vec::<String>::new());
}

#[test]
fn http_types_outside_http_fail() {
    let tree = tree_with(&[(
        "src/service/lookup.rs",
        "use warp::Reply;\nfn f() -> ::hyper::Body { todo!() }\nfn g() -> http::StatusCode { StatusCode::OK }\n\
         use crate::http::warp::x;\nfn h() { StatusCode::OK; }\nfn i() { StatusCode::OK; }",
    )]);
    // `crate::http::warp` is a module path, not the warp crate; repeats of one message
    // fold into the first.
    let out = lines(&tree);
    let rule2: Vec<&String> = out.iter().filter(|l| l.contains("HTTP type")).collect();
    assert_eq!(
        rule2,
        [
            "src/service/lookup.rs:1: imports warp::Reply: `warp::` is an HTTP type, allowed only in lib, http, app, cli, migrate",
            "src/service/lookup.rs:2: uses ::hyper::Body: `hyper::` is an HTTP type, allowed only in lib, http, app, cli, migrate",
            "src/service/lookup.rs:3: uses StatusCode::OK: `StatusCode` is an HTTP type, allowed only in lib, http, app, cli, migrate (also lines 5, 6)",
            "src/service/lookup.rs:3: uses http::StatusCode: `StatusCode` is an HTTP type, allowed only in lib, http, app, cli, migrate",
        ],
        "{out:#?}"
    );
}

#[test]
fn handlers_using_the_store_fail() {
    let tree = tree_with(&[
        ("src/http.rs", "mod identity;\nmod x;"),
        (
            "src/http/x.rs",
            "use crate::store::Store;\nfn f() { super::super::store::now(); }",
        ),
    ]);
    assert_eq!(
        lines(&tree),
        [
            "src/http/x.rs:1: imports crate::store::Store (store): handlers call services, never the store or the index",
            "src/http/x.rs:2: refers to super::super::store::now = crate::store::now (store): handlers call services, never the store or the index",
        ]
    );
}

#[test]
fn a_module_without_a_layer_fails() {
    let tree = tree_with(&[
        ("src/foo.rs", "mod bar;"),
        ("src/foo/bar.rs", "use crate::model::Mxid;"),
    ]);
    assert_eq!(
        lines(&tree),
        ["src/foo.rs: module `foo` has no layer in tests/it/architecture.rs; add it to LAYERS"]
    );
}
