//! Recursive lookups: when a trusted requester's lookup finds nothing here, the 3PIDs
//! session control lets leave are asked of the identity server their e-mail domain
//! publishes in DNS, then of the forward servers, one batched call per remote. Remote
//! answers are cached (found and not found, each with its TTL), never stored as
//! bindings. Each remote has a concurrency cap and a circuit breaker, so a dead server
//! costs nothing after its first failures. v2 is used when the remote has it (an
//! account opened with an OpenID token of our homeserver, hashed lookups); v1 only when
//! it lacks v2 and `lookup.recursive.v1` allows it, and a single v1 answer counts only
//! when its signature checks out with the key the remote publishes.
//!
//! Entry points are the lookups of [`super::lookup`] with recursion added; only `none`
//! and v1 lookups can recurse: a `sha256` entry is hashed with our pepper, and no one
//! can turn it back into an address to ask elsewhere.

use crate::config::recursion::RecursionConfig;
use crate::error::Error;
use crate::federation::identity::{Api, HashDetails, RemoteError, Verified};
use crate::metrics::LookupKind;
use crate::model::{Medium, ThreePid};
use crate::service::lookup::{self, Association, BulkLookup, LookupRequest, LookupV1, Mappings};
use crate::service::Services;
use futures_util::StreamExt;
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Calls at once to one remote.
const REMOTE_SLOTS: usize = 4;
/// How long a remote's API (v2 or v1) is remembered.
const API_TTL: Duration = Duration::from_secs(600);
/// SRV answers: kept this long, or this long when the domain has none.
const SRV_TTL: Duration = Duration::from_secs(600);
const SRV_NONE_TTL: Duration = Duration::from_secs(60);
/// Bounds of the caches (an entry past them clears the expired ones, then all).
const MAX_ANSWERS: usize = 100_000;
const MAX_REMOTES: usize = 1_000;
/// E-mail domains whose servers are looked up at once.
const DOMAINS_AT_ONCE: usize = 8;

/// A 3PID found on another server.
#[derive(Debug, Clone)]
struct Found {
    mxid: String,
    /// The remote's signed association (v1 single lookups).
    verified: Option<Verified>,
}

struct Remote {
    base: String,
    /// Its name in logs and metrics ([`label_of`]).
    label: String,
    slots: tokio::sync::Semaphore,
    state: Mutex<RemoteState>,
}

#[derive(Default)]
struct RemoteState {
    api: Option<(Api, Instant)>,
    token: Option<String>,
    /// The remote's `hash_details` and when they were read (kept [`API_TTL`]: a
    /// federated identity service never says its pepper changed).
    details: Option<(HashDetails, Instant)>,
    failures: u32,
    open_until: Option<Instant>,
    /// A half-open breaker lets one call through.
    probing: bool,
}

/// What one remote answered: the 3PIDs it knows.
type Answers = Vec<(ThreePid, Found)>;

/// What one remote answered: the 3PIDs it knows, and (a unified view) which servers
/// have which others.
struct Reply {
    found: Answers,
    elsewhere: Vec<(String, Vec<ThreePid>)>,
}

/// How a remote may be asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Via {
    /// v2 when we have an account there, else v1 if allowed.
    Any,
    /// The unified view's federated identity service: hashes only, in chunks.
    Unified,
    /// A server the unified view named: hashes only (the addresses left as hashes).
    Hashes,
}

/// What `/status` shows of a remote.
#[derive(Debug, serde::Serialize)]
pub struct RemoteStatus {
    pub remote: String,
    /// `closed` (in use), `open` (skipped after failures), `half-open` (being tried).
    pub breaker: &'static str,
    pub failures: u32,
}

/// The recursion's caches and remotes (one per server instance).
#[derive(Default)]
pub struct Recursion {
    answers: Mutex<HashMap<ThreePid, (Option<Found>, Instant)>>,
    domains: Mutex<HashMap<String, (Vec<String>, Instant)>>,
    remotes: Mutex<HashMap<String, Arc<Remote>>>,
    openid: tokio::sync::Mutex<Option<(Value, Instant)>>,
    /// What was pushed to the unified view.
    pushes: unified::Pushes,
}

impl std::fmt::Debug for Recursion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recursion").finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Recursion {
    fn remote(&self, base: &str) -> Arc<Remote> {
        let mut remotes = lock(&self.remotes);
        if remotes.len() >= MAX_REMOTES && !remotes.contains_key(base) {
            remotes.clear();
        }
        Arc::clone(remotes.entry(base.to_owned()).or_insert_with(|| {
            Arc::new(Remote {
                base: base.to_owned(),
                label: label_of(base),
                slots: tokio::sync::Semaphore::new(REMOTE_SLOTS),
                state: Mutex::new(RemoteState::default()),
            })
        }))
    }

    /// Each remote's breaker, for `/status`.
    pub fn status(&self) -> Vec<RemoteStatus> {
        let now = Instant::now();
        let mut out: Vec<RemoteStatus> = lock(&self.remotes)
            .values()
            .map(|r| {
                let s = lock(&r.state);
                let breaker = match s.open_until {
                    Some(_) if s.probing => "half-open",
                    Some(until) if until > now => "open",
                    Some(_) => "half-open",
                    None => "closed",
                };
                RemoteStatus {
                    remote: r.base.clone(),
                    breaker,
                    failures: s.failures,
                }
            })
            .collect();
        out.sort_by(|a, b| a.remote.cmp(&b.remote));
        out
    }
}

impl Remote {
    /// Whether a call may go now (closed, or the one trial of a half-open breaker).
    fn admit(&self) -> bool {
        let mut s = lock(&self.state);
        match s.open_until {
            None => true,
            Some(until) if until <= Instant::now() && !s.probing => {
                s.probing = true;
                true
            }
            Some(_) => false,
        }
    }

    /// Ends a half-open breaker's trial that had no outcome (the guard refused the
    /// call, or the lookup was dropped), so the next call may try again.
    fn end_trial(&self) {
        lock(&self.state).probing = false;
    }

    fn outcome(&self, config: &RecursionConfig, ok: bool) {
        let mut s = lock(&self.state);
        s.probing = false;
        if ok {
            s.failures = 0;
            s.open_until = None;
        } else {
            s.failures = s.failures.saturating_add(1);
            if s.failures >= config.breaker_failures {
                s.open_until = Some(Instant::now() + config.breaker_open);
            }
        }
    }
}

/// Whether a request from `requester` (its address as the HTTP layer established
/// it, trusted proxies' `X-Forwarded-For` honoured) may recurse.
fn may_recurse(config: &RecursionConfig, requester: Option<IpAddr>) -> bool {
    config.enabled
        && requester.is_some_and(|ip| config.allowed_cidrs.iter().any(|net| net.contains(&ip)))
}

/// `GET /api/v1/lookup`, recursing when nothing is bound here.
pub async fn lookup_v1(
    state: &Services,
    medium: &str,
    address: &str,
    requester: Option<IpAddr>,
) -> Result<LookupV1, Error> {
    let local = lookup::lookup_v1(state, medium, address)?;
    let config = state.config().lookup.recursive.clone();
    if !matches!(local, LookupV1::NotFound {}) || !may_recurse(&config, requester) {
        return Ok(local);
    }
    let Some(threepid) = Medium::parse(medium).and_then(|m| ThreePid::new(m, address).ok()) else {
        return Ok(local);
    };
    let mut found = resolve(state, &config, std::slice::from_ref(&threepid)).await;
    let Some(found) = found.remove(&threepid) else {
        return Ok(local);
    };
    let now = crate::model::now_ms();
    let (not_before, not_after, ts) = match &found.verified {
        Some(v) => (v.not_before, v.not_after, v.ts),
        None => (
            now,
            now + u64::try_from(config.found_ttl.as_millis()).unwrap_or(u64::MAX / 2),
            now,
        ),
    };
    let mut association = Association {
        address: threepid.address().to_owned(),
        invites: None,
        medium: threepid.medium().as_str(),
        mxid: found.mxid,
        not_after,
        not_before,
        signatures: None,
        ts,
    }
    .sign(state)?;
    // The remote's own signatures (checked) stay next to ours.
    if let (Some(ours), Some(Value::Object(theirs))) = (
        association.signatures.as_mut(),
        found.verified.map(|v| v.signatures),
    ) {
        for (entity, keys) in theirs {
            if let (false, Ok(keys)) = (ours.contains_key(&entity), serde_json::from_value(keys)) {
                ours.insert(entity, keys);
            }
        }
    }
    Ok(LookupV1::Found(association))
}

/// `POST /api/v1/bulk_lookup`, recursing for the 3PIDs not bound here; results in the
/// order of the request.
pub async fn bulk_lookup_v1<'a>(
    state: &Services,
    pairs: &[(&'a str, &'a str)],
    requester: Option<IpAddr>,
) -> Result<BulkLookup<'a>, Error> {
    let local = lookup::bulk_lookup_v1(state, pairs)?;
    let config = state.config().lookup.recursive.clone();
    if !may_recurse(&config, requester) || !state.config().lookup.bulk_enabled {
        return Ok(local);
    }
    let known: HashSet<(&str, &str)> = local.threepids.iter().map(|(m, a, _)| (*m, *a)).collect();
    let missing: Vec<(usize, ThreePid)> = pairs
        .iter()
        .enumerate()
        .filter(|(_, p)| !known.contains(*p))
        .filter_map(|(i, (m, a))| Some((i, ThreePid::new(Medium::parse(m)?, a).ok()?)))
        .collect();
    if missing.is_empty() {
        return Ok(local);
    }
    let wanted: Vec<ThreePid> = missing.iter().map(|(_, t)| t.clone()).collect();
    let found = resolve(state, &config, &wanted).await;
    if found.is_empty() {
        return Ok(local);
    }
    let mut by_index: HashMap<usize, String> = missing
        .into_iter()
        .filter_map(|(i, t)| Some((i, found.get(&t)?.mxid.clone())))
        .collect();
    let mut local_iter = local.threepids.into_iter().peekable();
    let mut threepids = Vec::new();
    for (i, &(m, a)) in pairs.iter().enumerate() {
        if local_iter
            .peek()
            .is_some_and(|(lm, la, _)| (*lm, *la) == (m, a))
        {
            threepids.extend(local_iter.next());
        } else if let Some(mxid) = by_index.remove(&i) {
            threepids.push((m, a, mxid));
        }
    }
    Ok(BulkLookup { threepids })
}

/// `POST /v2/lookup`, recursing for the `none` entries not bound here.
pub async fn lookup_v2<'a>(
    state: &Services,
    request: &LookupRequest<'a>,
    requester: Option<IpAddr>,
) -> Result<Mappings<'a>, Error> {
    let mut local = lookup::lookup(state, request)?;
    if request.algorithm != "none" {
        return Ok(local);
    }
    let config = state.config().lookup.recursive.clone();
    if !may_recurse(&config, requester) {
        return Ok(local);
    }
    let missing: Vec<(&'a str, ThreePid)> = request
        .addresses
        .iter()
        .filter(|e| !local.mappings.contains_key(*e))
        .filter_map(|&entry| {
            let (address, medium) = entry.rsplit_once(' ')?;
            Some((entry, ThreePid::new(Medium::parse(medium)?, address).ok()?))
        })
        .collect();
    if missing.is_empty() {
        return Ok(local);
    }
    let wanted: Vec<ThreePid> = missing.iter().map(|(_, t)| t.clone()).collect();
    let found = resolve(state, &config, &wanted).await;
    for (entry, threepid) in missing {
        if let Some(f) = found.get(&threepid) {
            local.mappings.insert(entry, f.mxid.clone());
        }
    }
    Ok(local)
}

/// The remote answers for `wanted` (3PIDs not bound here), from the cache or the
/// remotes. 3PIDs session control keeps here are not asked about.
async fn resolve(
    state: &Services,
    config: &RecursionConfig,
    wanted: &[ThreePid],
) -> HashMap<ThreePid, Found> {
    let domain = state.config().matrix.domain.to_ascii_lowercase();
    let now = Instant::now();
    let mut out = HashMap::new();
    let mut pending = Vec::new();
    let mut withheld = 0;
    {
        let answers = lock(&state.recursion.answers);
        let mut seen = HashSet::new();
        for t in wanted {
            if !seen.insert(t) {
                continue;
            }
            if !config.allow.allows(t.medium(), t.address(), &domain) {
                withheld += 1;
                continue;
            }
            match answers.get(t) {
                Some((cached, until)) if *until > now => {
                    if let Some(found) = cached {
                        out.insert(t.clone(), found.clone());
                    }
                }
                _ => pending.push(t.clone()),
            }
        }
    }
    if withheld > 0 {
        state.metrics.remote_call("-", "withheld", withheld);
    }
    let asked = pending.len();
    // Not found, but a server that might know was skipped or failed: not cached, so
    // the 3PID is asked again once that server is back.
    let mut unsure: HashSet<ThreePid> = HashSet::new();
    let mut fresh: HashMap<ThreePid, Found> = HashMap::new();

    if let Some(view) = config.unified.as_ref().filter(|u| u.lookup) {
        if !pending.is_empty() {
            unified::ask_view(state, config, view, &pending, &mut fresh, &mut unsure).await;
        }
    }
    if config.dns && !pending.is_empty() {
        let mut by_domain: HashMap<String, Vec<ThreePid>> = HashMap::new();
        for t in pending.iter().filter(|t| !fresh.contains_key(*t)) {
            if let Some(d) = t.email_domain() {
                by_domain.entry(d.to_owned()).or_default().push(t.clone());
            }
        }
        // A group with no SRV target answers nothing, which is an answer; one whose
        // targets all failed is not.
        let results: Vec<(Vec<ThreePid>, Option<Answers>)> = futures_util::stream::iter(by_domain)
            .map(|(mail_domain, group)| async move {
                // A DNS failure is not an answer.
                let Some(bases) = servers_of(state, &mail_domain).await else {
                    return (group, None);
                };
                if bases.is_empty() {
                    return (group, Some(Vec::new()));
                }
                for base in bases {
                    if let Some(reply) = ask(state, config, &base, &group, Via::Any).await {
                        return (group, Some(reply.found));
                    }
                }
                (group, None)
            })
            .buffer_unordered(DOMAINS_AT_ONCE)
            .collect()
            .await;
        for (group, found) in results {
            match found {
                Some(found) => fresh.extend(found),
                None => unsure.extend(group),
            }
        }
    }
    for base in &config.forward {
        let rest: Vec<ThreePid> = pending
            .iter()
            .filter(|t| !fresh.contains_key(*t))
            .cloned()
            .collect();
        if rest.is_empty() {
            break;
        }
        match ask(state, config, base, &rest, Via::Any).await {
            Some(reply) => fresh.extend(reply.found),
            None => unsure.extend(rest),
        }
    }

    let hits = fresh.len();
    state
        .metrics
        .lookups(LookupKind::Recursive, hits, asked - hits);
    {
        let mut answers = lock(&state.recursion.answers);
        if answers.len() + asked > MAX_ANSWERS {
            answers.retain(|_, (_, until)| *until > now);
            if answers.len() + asked > MAX_ANSWERS {
                answers.clear();
            }
        }
        for t in pending {
            let found = fresh.get(&t).cloned();
            let ttl = match found {
                Some(_) => config.found_ttl,
                None if unsure.contains(&t) => continue,
                None => config.not_found_ttl,
            };
            answers.insert(t, (found, now + ttl));
        }
    }
    out.extend(fresh);
    out
}

/// The identity servers an e-mail domain publishes (none: it publishes none), cached;
/// `None` when DNS could not say.
async fn servers_of(state: &Services, mail_domain: &str) -> Option<Vec<String>> {
    let now = Instant::now();
    if let Some((bases, until)) = lock(&state.recursion.domains).get(mail_domain) {
        if *until > now {
            return Some(bases.clone());
        }
    }
    match state.federation.identity_servers_of(mail_domain).await {
        Ok(bases) => {
            let ttl = if bases.is_empty() {
                SRV_NONE_TTL
            } else {
                SRV_TTL
            };
            let mut domains = lock(&state.recursion.domains);
            if domains.len() >= MAX_REMOTES {
                domains.clear();
            }
            domains.insert(mail_domain.to_owned(), (bases.clone(), now + ttl));
            Some(bases)
        }
        Err(e) => {
            tracing::debug!(error = %e, "no identity server found in DNS for an e-mail domain");
            None
        }
    }
}

/// Asks one remote about `wanted`, within the recursion timeout and the remote's
/// concurrency cap; `None` when it could not answer (its breaker is told).
async fn ask(
    state: &Services,
    config: &RecursionConfig,
    base: &str,
    wanted: &[ThreePid],
    via: Via,
) -> Option<Reply> {
    let remote = state.recursion.remote(base);
    let label = remote.label.as_str();
    if !remote.admit() {
        state.metrics.remote_call(label, "skipped", 1);
        return None;
    }
    struct Trial<'a>(&'a Remote);
    impl Drop for Trial<'_> {
        fn drop(&mut self) {
            self.0.end_trial();
        }
    }
    let _trial = Trial(&remote);
    let work = async {
        let _slot = remote
            .slots
            .acquire()
            .await
            .map_err(|_| RemoteError::Malformed("closed"))?;
        state.federation.identity_target_allowed(base).await?;
        remote::ask_remote(state, config, &remote, wanted, via).await
    };
    let result = match tokio::time::timeout(config.timeout, work).await {
        Ok(r) => r,
        Err(_) => Err(RemoteError::Outbound(
            crate::federation::OutboundError::Timeout(label.to_owned()),
        )),
    };
    match result {
        Ok(reply) => {
            remote.outcome(config, true);
            let found = reply.found.len();
            state.metrics.remote_call(label, "found", found);
            state
                .metrics
                .remote_call(label, "not_found", wanted.len().saturating_sub(found));
            Some(reply)
        }
        Err(e) => {
            // A refusal by the guard is the config's doing, not the remote's health.
            let refused = matches!(
                &e,
                RemoteError::Outbound(crate::federation::OutboundError::Refused(_))
            );
            if !refused {
                remote.outcome(config, false);
            }
            let outcome = match &e {
                _ if refused => "refused",
                // Its rate limit: one more failure (the breaker is the back-off).
                RemoteError::Refused { status: 429, .. } => "limited",
                RemoteError::Malformed(_) => "bad_answer",
                _ => "error",
            };
            state.metrics.remote_call(label, outcome, 1);
            tracing::info!(remote = %label, error = %e, "a recursive lookup got no answer from a remote identity server");
            None
        }
    }
}

/// What a remote is called in logs and metrics: its host and port.
fn label_of(base: &str) -> String {
    reqwest::Url::parse(base)
        .ok()
        .and_then(|u| {
            let host = u.host_str()?.to_owned();
            Some(match u.port() {
                Some(p) => format!("{host}:{p}"),
                None => host,
            })
        })
        .unwrap_or_else(|| "invalid".into())
}

mod remote;
mod unified;

pub use unified::{push_task, PushStatus};

#[cfg(test)]
mod tests;
