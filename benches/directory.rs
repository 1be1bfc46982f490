//! Directory search on a realistic on-disk index: N generated users (syllable-built
//! first and last names with realistic collisions, an e-mail each, a phone number for
//! some, a department and a title) are written into a fresh tantivy index with
//! `DirectoryIndex::replace_all`, once per size (the build time, documents per second,
//! segments and size on disk go to stderr), then six kinds of search term are timed:
//! one word (a first name), a 3-letter prefix, a last name with a typo, first name and
//! last-name prefix, first name, last name and department, and an e-mail prefix. Each
//! kind cycles through 200 precomputed terms. Besides criterion's means, p50 and p99
//! over 2000 searches per kind are printed to stderr next to the targets (p99 under
//! 5 ms at 100k users, under 20 ms at 1M), with the mean number of hits and how often
//! the user a term was made from is among them ("found"). The reader searches the
//! segments of the build's commit, as the server does until its next sync; when
//! background merges changed them, the percentiles are measured again on the index
//! reopened (as after a restart).
//!
//! Run with `cargo bench --bench directory`; sizes default to 100000 and 1000000, and
//! `DIRECTORY_SIZES=100000` (a comma-separated list, `k` and `M` suffixes accepted)
//! picks others. Under `cargo test --benches` it runs once on 2000 users.

use criterion::{criterion_group, criterion_main, Criterion};
use mxisd::index::DirectoryIndex;
use mxisd::model::DirectoryUser;
use mxisd::model::{Medium, ThreePid};
use std::collections::{HashMap, HashSet};
use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

const DOMAIN: &str = "example.org";
/// Terms per query kind.
const TERMS: usize = 200;
/// Searches per kind for the percentiles.
const SAMPLES: usize = 2000;
const LIMIT: usize = 10;

const FIRST_HEADS: &[&str] = &[
    "a", "al", "am", "an", "ar", "be", "bri", "ca", "cha", "cla", "da", "de", "di", "do", "e",
    "el", "em", "er", "fa", "fe", "fi", "fre", "ga", "ge", "gra", "ha", "he", "i", "is", "ja",
    "je", "jo", "ju", "ka", "ke", "la", "le", "li", "lo", "lu", "ma", "me", "mi", "mo", "na", "ne",
    "ni", "no", "o", "pa", "pe", "ra", "re", "ri", "ro", "sa", "se", "so", "ta", "te", "ti", "to",
    "va", "vi", "wi", "ya", "za", "zo",
];
const FIRST_TAILS: &[&str] = &[
    "bel", "bert", "da", "dan", "die", "dra", "ella", "en", "ena", "eo", "ian", "ica", "ie", "iel",
    "in", "ina", "ine", "io", "is", "ja", "ka", "la", "lia", "lie", "lin", "lo", "ly", "mar",
    "mon", "na", "ne", "nia", "nie", "no", "nor", "ny", "ra", "ren", "ria", "rick", "rin", "ro",
    "ry", "sa", "sha", "son", "ta", "tha", "to", "ton", "via", "xa", "ya", "zel",
];
const LAST_HEADS: &[&str] = &[
    "ab", "ad", "al", "ash", "bar", "bel", "ber", "blan", "bra", "bur", "car", "cas", "chan",
    "cor", "dal", "dar", "del", "dun", "ed", "el", "far", "fer", "gal", "gar", "gold", "gon",
    "hal", "har", "hol", "kar", "kel", "kin", "lan", "lar", "lin", "mac", "mar", "mor", "nak",
    "nor", "ol", "par", "pen", "ras", "rod", "ros", "sal", "san", "sch", "sil", "stan", "tan",
    "tor", "val", "van", "war", "wil", "yam", "zim", "quin",
];
const LAST_MIDDLES: &[&str] = &[
    "a", "ai", "an", "ar", "e", "el", "en", "er", "ev", "i", "il", "in", "ing", "o", "ol", "on",
    "or", "u", "ul", "um", "ab", "ad", "ot", "is", "ow",
];
const LAST_TAILS: &[&str] = &[
    "berg", "bury", "by", "da", "dez", "do", "ez", "ford", "gan", "ham", "hart", "ich", "ini",
    "ley", "lin", "man", "mann", "ney", "off", "ova", "ski", "son", "stein", "sen", "ton", "ven",
    "well", "wood", "yama", "zadeh", "ri", "rez", "ovic", "etti",
];
const DEPARTMENTS: &[&str] = &[
    "Engineering",
    "Sales",
    "Marketing",
    "Finance",
    "Legal",
    "Support",
    "Operations",
    "Research",
    "Procurement",
    "Logistics",
    "Security",
    "Facilities",
    "Design",
    "Product",
    "Quality",
    "Compliance",
    "Audit",
    "Treasury",
    "Payroll",
    "Recruiting",
    "Training",
    "Communications",
    "Infrastructure",
    "Networking",
    "Analytics",
    "Manufacturing",
    "Purchasing",
    "Administration",
    "Consulting",
    "Partnerships",
];
const TITLES: &[&str] = &[
    "Software Engineer",
    "Senior Software Engineer",
    "Staff Engineer",
    "Principal Engineer",
    "Engineering Manager",
    "Director",
    "Vice President",
    "Account Executive",
    "Account Manager",
    "Sales Representative",
    "Marketing Specialist",
    "Product Manager",
    "Product Owner",
    "Designer",
    "UX Researcher",
    "Data Scientist",
    "Data Analyst",
    "Financial Analyst",
    "Accountant",
    "Controller",
    "Paralegal",
    "Counsel",
    "Support Agent",
    "Support Lead",
    "Technician",
    "Operator",
    "Site Reliability Engineer",
    "Network Administrator",
    "System Administrator",
    "Security Analyst",
    "Auditor",
    "Buyer",
    "Planner",
    "Coordinator",
    "Assistant",
    "Executive Assistant",
    "Office Manager",
    "Recruiter",
    "Trainer",
    "Consultant",
    "Architect",
    "Quality Inspector",
    "Team Lead",
    "Intern",
    "Apprentice",
    "Writer",
    "Editor",
    "Scientist",
    "Specialist",
    "Clerk",
];

/// splitmix64: deterministic and good enough for test data.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// Skewed towards the start of [0, n) (u²: the first of 3600 names is drawn about
    /// 1.7% of the time), as real name frequencies are.
    fn skewed(&mut self, n: usize) -> usize {
        let u = self.unit();
        ((u * u * n as f64) as usize).min(n - 1)
    }

    fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            v.swap(i, self.below(i + 1));
        }
    }
}

fn die(msg: impl std::fmt::Display) -> ! {
    eprintln!("directory bench: {msg}");
    std::process::exit(1)
}

/// Distinct names from concatenated parts, in a shuffled order (the order sets which
/// names are common).
fn names(parts: &[&[&str]], rng: &mut Rng) -> Vec<String> {
    let mut all = vec![String::new()];
    for list in parts {
        all = all
            .iter()
            .flat_map(|prefix| list.iter().map(move |p| format!("{prefix}{p}")))
            .collect();
    }
    let mut seen = HashSet::new();
    all.retain(|n| n.len() >= 3 && seen.insert(n.clone()));
    rng.shuffle(&mut all);
    all
}

fn capitalised(word: &str) -> String {
    let mut chars = word.chars();
    match chars.next() {
        Some(c) => c.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// One generated user, with what the queries are made from.
struct Person {
    first: u32,
    last: u32,
    number: u32,
}

struct Directory {
    firsts: Vec<String>,
    lasts: Vec<String>,
    people: Vec<Person>,
    mxids: Vec<String>,
    users: Vec<DirectoryUser>,
}

impl Directory {
    fn generate(n: usize) -> Self {
        let mut rng = Rng(0x6d78_6973_6421);
        let firsts = names(&[FIRST_HEADS, FIRST_TAILS], &mut rng);
        let lasts = names(&[LAST_HEADS, LAST_MIDDLES, LAST_TAILS], &mut rng);
        let mut seen: HashMap<(u32, u32), u32> = HashMap::new();
        let mut people = Vec::with_capacity(n);
        let mut mxids = Vec::with_capacity(n);
        let mut users = Vec::with_capacity(n);
        for _ in 0..n {
            let fi = rng.skewed(firsts.len());
            let li = rng.skewed(lasts.len());
            let (first, last) = (&firsts[fi], &lasts[li]);
            let count = seen.entry((fi as u32, li as u32)).or_insert(0);
            *count += 1;
            let number = *count;
            let mut threepids = Vec::with_capacity(2);
            match ThreePid::new(Medium::Email, &format!("{first}.{last}.{number}@{DOMAIN}")) {
                Ok(t) => threepids.push(t),
                Err(e) => die(format!("generated e-mail rejected: {e}")),
            }
            if rng.below(10) < 3 {
                let phone = format!("447{:09}", rng.below(1_000_000_000));
                match ThreePid::new(Medium::Msisdn, &phone) {
                    Ok(t) => threepids.push(t),
                    Err(e) => die(format!("generated phone number rejected: {e}")),
                }
            }
            let attributes = [
                (
                    "department".to_owned(),
                    vec![DEPARTMENTS[rng.below(DEPARTMENTS.len())].to_owned()],
                ),
                (
                    "title".to_owned(),
                    vec![TITLES[rng.skewed(TITLES.len())].to_owned()],
                ),
            ]
            .into_iter()
            .collect();
            mxids.push(format!("@{first}.{last}{number}:{DOMAIN}"));
            users.push(DirectoryUser {
                display_name: Some(format!("{} {}", capitalised(first), capitalised(last))),
                threepids,
                attributes,
                roles: Vec::new(),
            });
            people.push(Person {
                first: fi as u32,
                last: li as u32,
                number,
            });
        }
        Self {
            firsts,
            lasts,
            people,
            mxids,
            users,
        }
    }

    fn department(&self, i: usize) -> &str {
        self.users[i]
            .attributes
            .get("department")
            .and_then(|v| v.first())
            .map_or("", String::as_str)
    }
}

/// A kind of search term: its name and a term made from user `i`.
type Kind = (&'static str, fn(&Directory, usize, &mut Rng) -> String);

const KINDS: &[Kind] = &[
    ("one_word", |d, i, _| {
        capitalised(&d.firsts[d.people[i].first as usize])
    }),
    ("prefix3", |d, i, rng| {
        let p = &d.people[i];
        let word = if rng.below(2) == 0 {
            &d.firsts[p.first as usize]
        } else {
            &d.lasts[p.last as usize]
        };
        word.chars().take(3).collect()
    }),
    ("typo", |d, i, rng| {
        let mut chars: Vec<char> = d.lasts[d.people[i].last as usize].chars().collect();
        let at = 1 + rng.below(chars.len() - 1);
        let mut c = chars[at];
        while c == chars[at] {
            c = char::from(b'a' + rng.below(26) as u8);
        }
        chars[at] = c;
        capitalised(&chars.into_iter().collect::<String>())
    }),
    ("two_words", |d, i, rng| {
        let p = &d.people[i];
        let last = &d.lasts[p.last as usize];
        let len = 3 + rng.below(last.len() - 3);
        format!(
            "{} {}",
            capitalised(&d.firsts[p.first as usize]),
            capitalised(&last[..len])
        )
    }),
    ("three_words", |d, i, _| {
        let p = &d.people[i];
        format!(
            "{} {} {}",
            capitalised(&d.firsts[p.first as usize]),
            capitalised(&d.lasts[p.last as usize]),
            d.department(i)
        )
    }),
    ("email_prefix", |d, i, rng| {
        let p = &d.people[i];
        let first = &d.firsts[p.first as usize];
        let local = format!("{first}.{}.{}", d.lasts[p.last as usize], p.number);
        let min = first.len() + 4;
        let len = min + rng.below(local.len() + 1 - min);
        local[..len].to_owned()
    }),
];

/// `TERMS` terms of each kind, each with the user it was made from.
fn terms(d: &Directory) -> Vec<Vec<(String, usize)>> {
    let mut rng = Rng(0x0074_6572_6d73);
    KINDS
        .iter()
        .map(|(_, make)| {
            (0..TERMS)
                .map(|_| {
                    let i = rng.below(d.people.len());
                    (make(d, i, &mut rng), i)
                })
                .collect()
        })
        .collect()
}

fn disk_size(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => disk_size(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// Segments in the last commit, from meta.json.
fn segments(dir: &Path) -> usize {
    std::fs::read(dir.join("meta.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|v| v.get("segments").and_then(|s| s.as_array()).map(Vec::len))
        .unwrap_or(0)
}

/// Waits for the writer's background merges to settle (meta.json unchanged for 3 s),
/// so that they do not take a core from the timings.
fn wait_for_merges(dir: &Path) -> Duration {
    let start = Instant::now();
    let meta = || std::fs::read(dir.join("meta.json")).unwrap_or_default();
    let mut last = meta();
    let mut stable_since = Instant::now();
    while stable_since.elapsed() < Duration::from_secs(3)
        && start.elapsed() < Duration::from_secs(600)
    {
        std::thread::sleep(Duration::from_millis(250));
        let now = meta();
        if now != last {
            last = now;
            stable_since = Instant::now();
        }
    }
    start.elapsed().saturating_sub(Duration::from_secs(3))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// p50/p99 per kind over `samples` searches, printed as a table.
fn percentiles(
    index: &DirectoryIndex,
    d: &Directory,
    terms: &[Vec<(String, usize)>],
    samples: usize,
) {
    let target = if d.people.len() <= 100_000 { 5.0 } else { 20.0 };
    eprintln!(
        "  {:<13}{:>9}{:>9}{:>9}{:>9}{:>7}{:>8}  example",
        "kind", "p50 ms", "p99 ms", "max ms", "mean ms", "hits", "found"
    );
    for ((name, _), terms) in KINDS.iter().zip(terms) {
        // One pass to warm the page cache and the term dictionaries.
        for (t, _) in terms {
            let _ = black_box(index.search(t, LIMIT, true));
        }
        let mut times = Vec::with_capacity(samples);
        let (mut hits, mut found) = (0usize, 0usize);
        for k in 0..samples {
            let (term, source) = &terms[k % terms.len()];
            let start = Instant::now();
            let result = index.search(black_box(term), LIMIT, true);
            times.push(start.elapsed());
            match result {
                Ok((h, _)) => {
                    hits += h.len();
                    found += usize::from(h.iter().any(|h| h.user_id == d.mxids[*source]));
                }
                Err(e) => die(format!("search {term:?}: {e}")),
            }
        }
        times.sort_unstable();
        let pick = |q: f64| times[((times.len() - 1) as f64 * q).round() as usize];
        let mean = times.iter().sum::<Duration>() / samples as u32;
        let p99 = ms(pick(0.99));
        eprintln!(
            "  {:<13}{:>9.3}{:>9.3}{:>9.3}{:>9.3}{:>7.1}{:>7.0}%  {:<24} {}",
            name,
            ms(pick(0.5)),
            p99,
            ms(pick(1.0)),
            ms(mean),
            hits as f64 / samples as f64,
            100.0 * found as f64 / samples as f64,
            format!("{:?}", terms[0].0),
            if p99 < target {
                format!("ok (p99 target < {target} ms)")
            } else {
                format!("OVER the p99 target of {target} ms")
            }
        );
    }
}

fn parse_size(s: &str) -> Option<usize> {
    let s = s.trim().replace('_', "");
    let (digits, factor) = match s.strip_suffix(['k', 'K']) {
        Some(d) => (d.to_owned(), 1_000),
        None => match s.strip_suffix(['m', 'M']) {
            Some(d) => (d.to_owned(), 1_000_000),
            None => (s, 1),
        },
    };
    digits
        .parse::<usize>()
        .ok()
        .and_then(|n| n.checked_mul(factor))
        .filter(|&n| n > 0)
}

fn bench(c: &mut Criterion) {
    // `cargo bench` passes --bench; `cargo test --benches` does not: a quick run then.
    let args: Vec<String> = std::env::args().collect();
    let benchmarking = args.iter().any(|a| a == "--bench") && !args.iter().any(|a| a == "--test");
    let sizes: Vec<usize> = match std::env::var("DIRECTORY_SIZES") {
        Ok(v) => v
            .split(',')
            .filter(|s| !s.trim().is_empty())
            .map(|s| parse_size(s).unwrap_or_else(|| die(format!("bad DIRECTORY_SIZES {v:?}"))))
            .collect(),
        Err(_) if benchmarking => vec![100_000, 1_000_000],
        Err(_) => vec![2_000],
    };
    let samples = if benchmarking { SAMPLES } else { TERMS };

    for n in sizes {
        eprintln!("\ndirectory_search/{n}:");
        let start = Instant::now();
        let d = Directory::generate(n);
        let distinct_first = d
            .people
            .iter()
            .map(|p| p.first)
            .collect::<HashSet<_>>()
            .len();
        let distinct_last = d
            .people
            .iter()
            .map(|p| p.last)
            .collect::<HashSet<_>>()
            .len();
        eprintln!(
            "  generated {n} users in {:.1} s ({distinct_first} first names, {distinct_last} last names used; e.g. {} {:?})",
            start.elapsed().as_secs_f64(),
            d.mxids[0],
            d.users[0].display_name.as_deref().unwrap_or(""),
        );

        let tmp = tempfile::tempdir().unwrap_or_else(|e| die(format!("temporary directory: {e}")));
        let path = tmp.path().join("index");
        let start = Instant::now();
        let (index, _) = DirectoryIndex::open(&path).unwrap_or_else(|e| die(e));
        // Every search a real one: the result cache would answer repeats in ~1 µs.
        index.set_cache_size(0);
        let added = index
            .replace_all(d.mxids.iter().map(String::as_str).zip(&d.users))
            .unwrap_or_else(|e| die(e));
        let build = start.elapsed();
        let segments_at_commit = segments(&path);
        eprintln!(
            "  index build (replace_all, on disk): {:.2} s, {:.0} users/s; {} documents, {} segments, {:.1} MB on disk",
            build.as_secs_f64(),
            added as f64 / build.as_secs_f64(),
            index.len(),
            segments_at_commit,
            disk_size(&path) as f64 / 1e6,
        );
        let waited = wait_for_merges(&path);
        eprintln!(
            "  background merges settled after {:.1} s: {} segments, {:.1} MB on disk (the reader still searches the commit's segments)",
            waited.as_secs_f64(),
            segments(&path),
            disk_size(&path) as f64 / 1e6,
        );

        let terms = terms(&d);
        percentiles(&index, &d, &terms, samples);

        let mut group = c.benchmark_group(format!("directory_search/{n}"));
        group
            .sample_size(20)
            .warm_up_time(Duration::from_secs(1))
            .measurement_time(Duration::from_secs(5));
        for ((name, _), terms) in KINDS.iter().zip(&terms) {
            group.bench_function(*name, |b| {
                let mut k = 0usize;
                b.iter(|| {
                    let term = &terms[k % terms.len()].0;
                    k = k.wrapping_add(1);
                    index.search(black_box(term), LIMIT, true)
                })
            });
        }
        group.finish();

        // The segments merged in the background, as searched after a restart.
        let (before, after) = (index.len(), segments(&path));
        if after != segments_at_commit {
            drop(index);
            let (index, _) = DirectoryIndex::open(&path).unwrap_or_else(|e| die(e));
            index.set_cache_size(0);
            if index.len() != before {
                die("the reopened index lost documents");
            }
            eprintln!("\n  reopened (as after a restart), {after} merged segments:");
            percentiles(&index, &d, &terms, samples);
        }
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
