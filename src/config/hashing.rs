//! `hashing` (pepper length, rotation, which algorithms v2 lookups offer) and `lookup`
//! (how many addresses one request may ask about, and whether v1 bulk lookup is on).

use super::reader::Section;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct HashingConfig {
    pub pepper_length: usize,
    /// `hashing.rotationPolicy: per_seconds` with `hashing.delay`: rotate this often.
    pub rotation: Option<Duration>,
    /// Offer `sha256` (always) and `none` (unless removed from `hashing.algorithms`).
    pub allow_none: bool,
}

#[derive(Debug, Clone)]
pub struct LookupConfig {
    /// `lookup.maxAddresses`: most addresses in one `/lookup` or `/bulk_lookup`.
    pub max_addresses: usize,
    /// `lookup.bulk.enabled`: answer v1 `/bulk_lookup`.
    pub bulk_enabled: bool,
    /// `lookup.recursive` and `forward.servers`.
    pub recursive: std::sync::Arc<super::recursion::RecursionConfig>,
}

const LOOKUP_HINTS: &[(&str, &str)] = &[];

pub(crate) fn read_hashing(s: &Section<'_, '_>) -> Option<HashingConfig> {
    let mut ok = true;
    if s.bool("enabled") == Some(false) {
        s.problem(
            "enabled",
            "hashed lookups cannot be turned off: the v2 API requires sha256; remove it",
        );
        ok = false;
    }
    let pepper_length = s.u64("pepperLength").unwrap_or(32);
    if !(16..=128).contains(&pepper_length) {
        s.problem(
            "pepperLength",
            "must be between 16 and 128 (a short pepper is easy to brute-force)",
        );
        ok = false;
    }
    let delay = s.duration("delay");
    let rotation = match s.string("rotationPolicy").as_deref() {
        None | Some("none") => None,
        Some("per_seconds") => match delay {
            Some(d) if d >= Duration::from_secs(60) => Some(d),
            Some(_) => {
                s.problem(
                    "delay",
                    "must be at least 60s: every rotation rehashes all bindings",
                );
                ok = false;
                None
            }
            None => {
                s.problem(
                    "delay",
                    "required with rotationPolicy: per_seconds (e.g. 7d)",
                );
                ok = false;
                None
            }
        },
        Some("per_requests") => {
            s.problem("rotationPolicy", "per_requests is not supported (every rotation rehashes all bindings); use per_seconds with a delay");
            ok = false;
            None
        }
        Some(other) => {
            s.problem(
                "rotationPolicy",
                format!("{other:?} is not per_seconds or none"),
            );
            ok = false;
            None
        }
    };
    let algorithms = s
        .string_list("algorithms")
        .unwrap_or_else(|| vec!["sha256".into(), "none".into()]);
    let mut allow_none = false;
    let mut has_sha = false;
    for a in &algorithms {
        match a.as_str() {
            "sha256" => has_sha = true,
            "none" => allow_none = true,
            other => {
                s.problem("algorithms", format!("{other:?} is not sha256 or none"));
                ok = false;
            }
        }
    }
    if !has_sha {
        s.problem(
            "algorithms",
            "must include sha256 (mandatory in the v2 API)",
        );
        ok = false;
    }
    s.ignored(
        "hashStorageType",
        "ignored: mxisd keeps the hash index in its store",
    );
    s.ignored(
        "requests",
        "ignored: only per_seconds rotation is supported",
    );
    s.finish(&[]);
    ok.then_some(HashingConfig {
        pepper_length: usize::try_from(pepper_length).unwrap_or(32),
        rotation,
        allow_none,
    })
}

pub(crate) fn read_lookup(
    s: &Section<'_, '_>,
    forward: &Section<'_, '_>,
    federation: &Section<'_, '_>,
    identity_servers: &[(String, Vec<String>)],
) -> Option<LookupConfig> {
    let recursive = super::recursion::read_recursion(
        &s.section("recursive"),
        forward,
        federation,
        identity_servers,
    );
    let max_addresses = s.u64("maxAddresses").unwrap_or(10_000);
    let bulk = s.section("bulk");
    let bulk_enabled = bulk.bool("enabled").unwrap_or(true);
    bulk.finish(&[]);
    s.finish(LOOKUP_HINTS);
    if max_addresses == 0 || max_addresses > 1_000_000 {
        s.problem("maxAddresses", "must be between 1 and 1000000");
        return None;
    }
    Some(LookupConfig {
        max_addresses: usize::try_from(max_addresses).unwrap_or(10_000),
        bulk_enabled,
        recursive: std::sync::Arc::new(recursive?),
    })
}
