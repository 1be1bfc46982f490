//! Sync jobs: each configured identity source yields its users with their 3PIDs; one
//! driver turns that into the source's bindings (origin `sync:<name>`), diffed against
//! what the source gave last time and applied in one atomic batch, and records how the
//! run went. A failed fetch changes nothing, so lookups keep answering from the last
//! good state when a source is down.
//!
//! Sources here: `memory` (ma1sd's `memory.identities`, inline in the config), `file`
//! (the same list in a YAML or JSON file, re-read at every run) and `rest` (pages of
//! users from a web service).
//!
//! Here: the driver, applying a run, keeping the search index up to date, and what
//! operators see. Normalising a source's answer is in `sync/resolve.rs`, the threads
//! runs execute on in `sync/runtime.rs`.

mod index;
mod login;
mod resolve;
mod runtime;

use crate::config::stores::SourceConfig;
use crate::error::{ErrCode, Error};
use crate::model::now_ms;
use crate::progress::Progress;
use crate::service::Services;
use crate::source::fetch;
use crate::store::sync::SyncStatus;
pub use index::{index_changes, reindex};
pub use login::refresh_from_login;
use resolve::{resolve, Resolved};
use runtime::SyncThread;
use serde::Serialize;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The configured sources, each with a lock so runs of one source never overlap, and
/// the runtime their runs execute on. A reload replaces the sources ([`Syncer::replace`]);
/// the scheduler ([`scheduler`]) then restarts the timers of what changed.
#[derive(Debug)]
pub struct Syncer {
    sources: arc_swap::ArcSwap<Vec<Arc<Source>>>,
    /// The sync thread's runtime (see [`SyncThread`]), started with the first source;
    /// `Some(None)`: it could not start, runs go on the caller's.
    thread: std::sync::OnceLock<Option<SyncThread>>,
    /// Bumped by every [`Syncer::replace`], for the scheduler.
    generation: tokio::sync::watch::Sender<u64>,
}

/// One source's definition and the lock its runs take (kept across reloads by name).
#[derive(Debug)]
pub struct Source {
    pub config: SourceConfig,
    lock: Arc<tokio::sync::Mutex<()>>,
}

/// What a [`Syncer::replace`] changed, by source name.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SourceChanges {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    /// Defined differently (secrets compared by a fingerprint, so a changed password
    /// alone counts).
    pub changed: Vec<String>,
}

impl Default for Syncer {
    fn default() -> Self {
        Self::new(Vec::new())
    }
}

impl Syncer {
    pub fn new(sources: Vec<SourceConfig>) -> Self {
        let syncer = Self {
            sources: arc_swap::ArcSwap::from_pointee(Vec::new()),
            thread: std::sync::OnceLock::new(),
            generation: tokio::sync::watch::Sender::new(0),
        };
        syncer.replace(sources);
        syncer
    }

    /// Installs new source definitions (every one, so a changed secret is used too);
    /// runs already going finish with the old definition.
    pub fn replace(&self, sources: Vec<SourceConfig>) -> SourceChanges {
        if !sources.is_empty() {
            self.thread.get_or_init(|| match SyncThread::start() {
                Ok(t) => Some(t),
                Err(e) => {
                    tracing::warn!(error = %e, "no thread of its own for sync runs; they share the server's");
                    None
                }
            });
        }
        let old = self.sources.load_full();
        let mut changes = SourceChanges::default();
        let new: Vec<Arc<Source>> = sources
            .into_iter()
            .map(|config| {
                let before = old.iter().find(|s| s.config.name == config.name);
                let lock = match before {
                    None => {
                        changes.added.push(config.name.clone());
                        Arc::default()
                    }
                    Some(b) => {
                        use crate::config::reader::debug_with_fingerprints as text;
                        if text(&b.config) != text(&config) {
                            changes.changed.push(config.name.clone());
                        }
                        Arc::clone(&b.lock)
                    }
                };
                Arc::new(Source { config, lock })
            })
            .collect();
        changes.removed = old
            .iter()
            .map(|s| s.config.name.clone())
            .filter(|n| !new.iter().any(|s| &s.config.name == n))
            .collect();
        self.sources.store(Arc::new(new));
        self.generation.send_modify(|g| *g = g.wrapping_add(1));
        changes
    }

    pub fn names(&self) -> Vec<String> {
        self.sources
            .load()
            .iter()
            .map(|s| s.config.name.clone())
            .collect()
    }

    /// Every configured source, in the configured order.
    pub fn sources(&self) -> Arc<Vec<Arc<Source>>> {
        self.sources.load_full()
    }

    fn find(&self, name: &str) -> Option<Arc<Source>> {
        self.sources
            .load()
            .iter()
            .find(|s| s.config.name == name)
            .cloned()
    }

    fn thread(&self) -> Option<&SyncThread> {
        self.thread.get().and_then(Option::as_ref)
    }
}

/// A run that would shrink a source of at least this many bindings to less than half
/// is refused unless forced: a directory that suddenly lists (almost) nobody is more
/// likely broken than emptied. A run that would leave a source with no bindings at all
/// is refused at any size.
const SHRINK_GUARD_MIN: usize = 100;

/// Runs one source now (`force`: even if it would remove most of its bindings), on the
/// sync thread. Its status (success or failure) is recorded either way.
pub async fn run(state: &Services, name: &str, force: bool) -> Result<SyncStatus, Error> {
    let started = Instant::now();
    let progress = state.jobs.start("sync", format!("sync of {name}"));
    let result = run_somewhere(state, name, force, progress).await;
    // An unknown source is not a run.
    if !matches!(&result, Err(e) if e.code == ErrCode::NotFound) {
        state
            .metrics
            .sync_run(name, result.is_ok(), started.elapsed());
    }
    result
}

async fn run_somewhere(
    state: &Services,
    name: &str,
    force: bool,
    progress: Progress,
) -> Result<SyncStatus, Error> {
    let Some(thread) = state.sync.thread() else {
        return run_here(state, name, force, &progress).await;
    };
    let task_state = state.clone();
    let task_name = name.to_owned();
    let turn = std::sync::Arc::clone(&thread.turn);
    let task = thread.handle.spawn(async move {
        // One run at a time on the thread (see `SyncThread::turn`).
        let _turn = turn.lock().await;
        run_here(&task_state, &task_name, force, &progress).await
    });
    // Dropping this future (shutdown) stops the run too, between two atomic chunks.
    struct AbortOnDrop(tokio::task::AbortHandle);
    impl Drop for AbortOnDrop {
        fn drop(&mut self) {
            self.0.abort();
        }
    }
    let _abort = AbortOnDrop(task.abort_handle());
    task.await
        .map_err(|e| Error::internal("running a sync", e))?
}

async fn run_here(
    state: &Services,
    name: &str,
    force: bool,
    progress: &Progress,
) -> Result<SyncStatus, Error> {
    let Some(found) = state.sync.find(name) else {
        let names = state.sync.names();
        let known = if names.is_empty() {
            "no source is configured".to_owned()
        } else {
            format!("the sources are: {}", names.join(", "))
        };
        return Err(Error::not_found(format!(
            "No sync source is named {name:?}; {known}"
        )));
    };
    progress.phase("waiting for the previous run", "", None);
    let _running = found.lock.lock().await;
    let source = &found.config;
    let started = Instant::now();
    let at = now_ms();
    progress.phase("fetching", "", None);
    // The whole run is paced against the requests being served (fetch, compare, apply).
    let pacer = pacer(state);
    let fetched = match fetch(&source.kind, &pacer).await {
        Ok(fetched) => fetched,
        Err(why) => {
            tracing::warn!(source = name, error = %why, "sync failed; keeping the last good state");
            state.store.sync_failed(name, &why, at).await?;
            return Err(Error::new(
                ErrCode::Upstream,
                format!("sync of {name} failed: {why}"),
            ));
        }
    };
    // The same answer as at the last fully applied run: nothing to diff or write.
    let digest = fetched.digest(&state.config().matrix.domain, &pacer);
    if !force && state.store.sync_digest(name)?.as_deref() == Some(&digest[..]) {
        let ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let status = state.store.sync_unchanged(name, at, ms).await?;
        tracing::info!(
            source = name,
            users = status.users,
            ms,
            "sync done: unchanged"
        );
        return Ok(status);
    }
    let listed = fetched.users.len();
    progress.phase("comparing", "", None);
    let resolved = resolve(fetched, &state.config().matrix.domain, &pacer);
    let before = state.store.synced_count(name)?;
    let shrinks = before >= SHRINK_GUARD_MIN && resolved.wanted.len() < before / 2;
    let empties = before > 0 && resolved.wanted.is_empty();
    if !force && (shrinks || empties) {
        let why = format!(
            "refused: the source now gives {} bindings instead of {before}; if that is right, run `mxisd sync --source {name} --force`",
            resolved.wanted.len()
        );
        tracing::warn!(source = name, error = %why, "sync refused; keeping the last good state");
        state.store.sync_failed(name, &why, at).await?;
        return Err(Error::new(
            ErrCode::Conflict,
            format!("sync of {name} {why}"),
        ));
    }
    // Until this apply is complete, no digest may claim the store matches a fetch,
    // and the index may lag behind the store (rebuilt at start if we stop here).
    state.store.set_sync_digest(name, None).await?;
    state.store.set_index_dirty(name, true).await?;
    match apply(state, name, listed, resolved, started, at, progress).await {
        Ok((status, users_changed)) => {
            state.store.set_sync_digest(name, Some(&digest)).await?;
            // What the apply held (the source's bindings and entries) is freed: handed
            // back before the index update allocates its own.
            crate::progress::burst_ended();
            progress.phase("indexing", "", None);
            // Search follows the store; a failure here leaves the index marked stale
            // (rebuilt whole by the next run, at start, or by `mxisd reindex`).
            match index_changes(state, name, &users_changed).await {
                Ok(n) => tracing::debug!(source = name, entries = n, "directory index updated"),
                Err(e) => {
                    tracing::error!(source = name, error = %e.message, "updating the directory index failed")
                }
            }
            Ok(status)
        }
        Err(e) => {
            // Chunks applied before the failure are consistent with the snapshot; the
            // next run finishes the job. Say so where operators look.
            // Some chunks may be in the store and not in the index: the next update
            // rebuilds it whole (and so does a restart, the mark being still set).
            state.directory.mark_stale();
            let why = format!("applying the sync failed: {}", e.message);
            tracing::error!(source = name, error = %why, "sync failed");
            state.store.sync_failed(name, &why, at).await?;
            Err(e)
        }
    }
}

/// Applies what a source gave, records it, and queues invites of new bindings.
async fn apply(
    state: &Services,
    name: &str,
    listed: usize,
    resolved: Resolved,
    started: Instant,
    at: u64,
    progress: &Progress,
) -> Result<(SyncStatus, Vec<String>), Error> {
    let Resolved {
        wanted,
        users,
        problems,
        skipped,
    } = resolved;
    let (user_count, binding_count) = (users.len(), wanted.len());
    let status = SyncStatus {
        last_success_ms: Some(at),
        last_attempt_ms: Some(at),
        last_error: None,
        users: user_count as u64,
        bindings: binding_count as u64,
        skipped,
        problems,
        duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        ..SyncStatus::default()
    };
    let diff = state
        .store
        .apply_sync(
            name,
            wanted,
            users,
            status,
            crate::store::sync::Driving {
                progress,
                pacer: &pacer(state),
            },
        )
        .await?;
    // The whole run (fetch, resolve, apply), for the status.
    state
        .store
        .sync_duration(
            name,
            u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        )
        .await?;
    for problem in state
        .store
        .sync_status(name)?
        .map(|s| s.problems)
        .unwrap_or_default()
    {
        tracing::warn!(source = name, "{problem}");
    }
    tracing::info!(
        source = name,
        listed,
        users = user_count,
        bindings = binding_count,
        added = diff.added,
        changed = diff.changed,
        removed = diff.removed,
        outranked = diff.overridden,
        skipped,
        ms = started.elapsed().as_millis() as u64,
        "sync done"
    );
    // Pending room invites of addresses that just became bound go out.
    for (threepid, entry) in &diff.now_bound {
        crate::service::invite::on_bind(state, threepid, entry).await?;
    }
    Ok((
        state.store.sync_status(name)?.unwrap_or_default(),
        diff.users_changed,
    ))
}

/// Paces a run against the requests the server answers on its public listener.
fn pacer(state: &Services) -> crate::pace::Pacer {
    let watched = state.clone();
    crate::pace::Pacer::new(
        std::sync::Arc::new(move || watched.metrics.public_answered()),
        crate::pace::SHARE_WHILE_SERVING,
    )
}

/// At start: removes what sources that are no longer configured contributed, so a
/// store taken out of the config stops answering lookups.
pub async fn forget_removed_sources(state: Services) {
    let configured = state.sync.names();
    let stored = match state.store.sync_sources() {
        Ok(stored) => stored,
        Err(e) => {
            tracing::error!(error = %e, "cannot list the synced sources");
            return;
        }
    };
    for name in stored.into_iter().filter(|n| !configured.contains(n)) {
        match state.store.forget_source(&name).await {
            Ok(diff) => {
                tracing::warn!(
                    source = %name,
                    removed = diff.removed,
                    "source no longer configured: its bindings and directory entries were removed"
                );
                if let Err(e) = reindex(&state).await {
                    tracing::error!(error = %e.message, "reindexing the directory failed");
                }
            }
            Err(e) => {
                tracing::error!(source = %name, error = %e, "removing an unconfigured source failed")
            }
        }
    }
}

/// Runs every source at start and then every interval, until shutdown. After a reload
/// an added or redefined source runs at once (on its new definition) and keeps its new
/// interval; a removed one stops (a run under way is cut short between two atomic
/// chunks, as at shutdown) and what it contributed is removed.
pub async fn scheduler(state: Services, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let mut reloaded = state.sync.generation.subscribe();
    let mut timers: std::collections::HashMap<String, (String, tokio::task::AbortHandle)> =
        std::collections::HashMap::new();
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        let current = state.sync.sources.load_full();
        timers.retain(|name, (_, handle)| {
            let keep = current.iter().any(|s| &s.config.name == name);
            if !keep {
                handle.abort();
            }
            keep
        });
        for source in current.iter() {
            let definition = format!("{:?}", source.config);
            let name = &source.config.name;
            if timers.get(name).is_some_and(|(d, _)| *d == definition) {
                continue;
            }
            if let Some((_, old)) = timers.remove(name) {
                old.abort();
            }
            let handle = tasks.spawn(sync_task(
                state.clone(),
                name.clone(),
                source.config.interval,
            ));
            timers.insert(name.clone(), (definition, handle));
        }
        tokio::select! {
            changed = reloaded.changed() => if changed.is_err() { break },
            _ = shutdown.changed() => break,
            // Finished timers (sources without an interval) are simply reaped.
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
        }
    }
    tasks.shutdown().await;
}

/// Runs `source` now and then every interval (until aborted by the scheduler).
async fn sync_task(state: Services, name: String, interval: Option<Duration>) {
    loop {
        // Failures are recorded in the status and logged by `run`. Shutdown does not
        // wait for a run: a fetch has applied nothing yet, and an apply stops between
        // atomic chunks (the next run finishes it).
        let _ = run(&state, &name, false).await;
        let Some(every) = interval else {
            return;
        };
        tokio::time::sleep(every).await;
    }
}

/// A source as operators see it: never run yet, or how its last run went. (Fields in
/// alphabetical order: serialised, the sorted objects the admin API always gave.)
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum SourceView {
    Never { runs: u64, source: String },
    Ran(Box<SourceRun>),
}

/// A source's last run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SourceRun {
    pub added: u64,
    pub bindings: u64,
    pub changed: u64,
    pub duration_ms: u64,
    pub last_attempt_ms: Option<u64>,
    pub last_error: Option<String>,
    pub last_success_ms: Option<u64>,
    /// When the timer runs it next (`null` without an interval, or before any run).
    pub next_run_ms: Option<u64>,
    pub problems: Vec<String>,
    /// Why it is `degraded`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub removed: u64,
    pub skipped: u64,
    pub source: String,
    /// `ok`, `failing` or `degraded` ([`state_of`]).
    pub state: &'static str,
    pub users: u64,
}

/// Every source asked about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SourceViews {
    pub sources: Vec<SourceView>,
}

/// What an operator's run of sources did: each source's status afterwards, and, if
/// any run failed or was refused, that failure (the first one's kind, every one's
/// reason), so the answer can say so in its status.
#[derive(Debug)]
pub struct RunReport {
    pub views: SourceViews,
    pub failed: Option<Error>,
}

/// One directory index hit, as operators see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IndexHit {
    pub display_name: Option<String>,
    pub user_id: String,
}

/// The directory index's answer to an operator's search.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IndexSearch {
    pub limited: bool,
    pub results: Vec<IndexHit>,
}

fn describe(state: &Services, name: &str, status: Option<SyncStatus>) -> SourceView {
    let interval = state.sync.find(name).and_then(|s| s.config.interval);
    match status {
        None => SourceView::Never {
            runs: 0,
            source: name.to_owned(),
        },
        Some(s) => {
            // The timer sleeps an interval after each run ends.
            let next_run_ms = interval.and_then(|every| {
                s.last_attempt_ms.map(|at| {
                    at.saturating_add(s.duration_ms)
                        .saturating_add(u64::try_from(every.as_millis()).unwrap_or(u64::MAX))
                })
            });
            let (state, reason) = (state_of(&s), degraded(&s));
            SourceView::Ran(Box::new(SourceRun {
                added: s.added,
                bindings: s.bindings,
                changed: s.changed,
                duration_ms: s.duration_ms,
                last_attempt_ms: s.last_attempt_ms,
                last_error: s.last_error,
                last_success_ms: s.last_success_ms,
                next_run_ms,
                problems: s.problems,
                reason,
                removed: s.removed,
                skipped: s.skipped,
                source: name.to_owned(),
                state,
                users: s.users,
            }))
        }
    }
}

/// Why a source whose last run worked still needs attention: it listed nobody (an
/// empty directory is more likely a wrong filter, base DN or uid attribute), or it
/// skipped more entries and addresses than it kept users (most entries lack the uid
/// attribute, say). The first problem the run noted says which. `None` for a source
/// whose last run failed: that is `failing`, whatever came before.
pub fn degraded(s: &SyncStatus) -> Option<String> {
    if s.last_error.is_some() {
        return None;
    }
    s.last_success_ms?;
    let first = s
        .problems
        .first()
        .map(|p| format!(": {p}"))
        .unwrap_or_default();
    if s.users == 0 {
        Some(format!("its last run listed no users{first}"))
    } else if s.skipped > s.users {
        Some(format!(
            "its last run skipped {} entries or addresses and kept only {} users{first}",
            s.skipped, s.users
        ))
    } else {
        None
    }
}

/// `ok`, `failing` (the last run failed; the last good data is served) or `degraded`
/// (see [`degraded`]): a source that has run, as operators see it.
pub fn state_of(s: &SyncStatus) -> &'static str {
    if s.last_error.is_some() {
        "failing"
    } else if degraded(s).is_some() {
        "degraded"
    } else {
        "ok"
    }
}

/// Operators: search the directory index (`GET /_mxisd/admin/v1/search`).
pub fn search(state: &Services, term: &str, limit: usize) -> Result<IndexSearch, Error> {
    let (hits, limited) = state
        .directory
        .search(term, limit, true)
        .map_err(|e| Error::internal("searching the directory", e))?;
    let results = hits
        .into_iter()
        .map(|h| IndexHit {
            display_name: h.display_name,
            user_id: h.user_id,
        })
        .collect();
    Ok(IndexSearch { limited, results })
}

/// Operators: every source's status.
pub fn statuses(state: &Services) -> Result<SourceViews, Error> {
    let mut out = Vec::new();
    for name in state.sync.names() {
        let status = state.store.sync_status(&name)?;
        out.push(describe(state, &name, status));
    }
    Ok(SourceViews { sources: out })
}

/// Operators: run one source, or all of them.
pub async fn run_now(
    state: &Services,
    only: Option<&str>,
    force: bool,
) -> Result<RunReport, Error> {
    let names = match only {
        Some(n) => vec![n.to_owned()],
        None => state.sync.names(),
    };
    let mut out = Vec::new();
    let mut failed: Option<Error> = None;
    for name in names {
        // In a task of its own: a client that hangs up must not cut a run short.
        let task_state = state.clone();
        let task_name = name.clone();
        let outcome = tokio::spawn(async move { run(&task_state, &task_name, force).await })
            .await
            .map_err(|e| Error::internal("running a sync", e))?;
        match outcome {
            Ok(status) => out.push(describe(state, &name, Some(status))),
            Err(e) if e.code == ErrCode::NotFound => return Err(e),
            Err(e) => {
                // An internal error's message is generic: name the source.
                let why = if e.code == ErrCode::Internal {
                    format!("sync of {name} failed: {} (see the server log)", e.message)
                } else {
                    e.message
                };
                failed = Some(match failed {
                    None => Error::new(e.code, why),
                    Some(first) => Error::new(first.code, format!("{}; {why}", first.message)),
                });
                out.push(describe(state, &name, state.store.sync_status(&name)?));
            }
        }
    }
    Ok(RunReport {
        views: SourceViews { sources: out },
        failed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn source_views_serialise_as_the_sorted_objects_they_replace() {
        let never = SourceView::Never {
            runs: 0,
            source: "ldap".into(),
        };
        assert_eq!(
            serde_json::to_string(&never).unwrap(),
            json!({ "source": "ldap", "runs": 0 }).to_string()
        );
        let ran = SourceView::Ran(Box::new(SourceRun {
            added: 1,
            bindings: 2,
            changed: 3,
            duration_ms: 4,
            last_attempt_ms: Some(5),
            last_error: None,
            last_success_ms: Some(5),
            next_run_ms: None,
            problems: vec!["p".into()],
            reason: None,
            removed: 6,
            skipped: 7,
            source: "ldap".into(),
            state: "ok",
            users: 8,
        }));
        let before = json!({
            "source": "ldap", "last_success_ms": 5, "last_attempt_ms": 5, "next_run_ms": null,
            "last_error": null, "users": 8, "bindings": 2, "added": 1, "changed": 3,
            "removed": 6, "skipped": 7, "problems": ["p"], "duration_ms": 4, "state": "ok",
        });
        assert_eq!(serde_json::to_string(&ran).unwrap(), before.to_string());
    }
}
