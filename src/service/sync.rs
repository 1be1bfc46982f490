//! Sync jobs: each configured identity source yields its users with their 3PIDs; one
//! driver turns that into the source's bindings (origin `sync:<name>`), diffed against
//! what the source gave last time and applied in one atomic batch, and records how the
//! run went. A failed fetch changes nothing, so lookups keep answering from the last
//! good state when a source is down.
//!
//! Sources here: `memory` (ma1sd's `memory.identities`, inline in the config), `file`
//! (the same list in a YAML or JSON file, re-read at every run) and `rest` (pages of
//! users from a web service).

use crate::config::stores::SourceConfig;
use crate::error::{ErrCode, Error};
use crate::model::{now_ms, DirectoryUser, Medium, Mxid, ThreePid, MAX_PROBLEMS};
use crate::service::Services;
use crate::source::{fetch, Fetched};
use crate::store::sync::SyncStatus;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// The configured sources, each with a lock so runs of one source never overlap, and
/// the runtime their runs execute on.
#[derive(Debug, Default)]
pub struct Syncer {
    sources: Vec<(SourceConfig, tokio::sync::Mutex<()>)>,
    /// The sync thread's runtime (see [`SyncThread`]); `None`: runs go on the caller's.
    thread: Option<SyncThread>,
}

/// Sync runs (fetch, diff, apply) execute on a thread of their own in the SCHED_IDLE
/// class: on a small server a run of a big directory would otherwise take a whole core
/// from lookups for its duration. Idle, a run goes at full speed. The thread ends when
/// the server's state is dropped.
#[derive(Debug)]
struct SyncThread {
    handle: tokio::runtime::Handle,
    /// A second thread, at normal priority, for the parts of a run that hold the
    /// bindings lock (see [`crate::store::Store::apply_sync`]).
    writer: tokio::runtime::Handle,
    _stop: tokio::sync::watch::Sender<()>,
}

/// Puts the calling thread in Linux's SCHED_IDLE class: it runs only on CPU time no
/// other thread wants, and yields the moment one does (nice 19 still takes its share
/// and is not preempted at once).
fn set_idle_priority() {
    use thread_priority::{
        set_thread_priority_and_policy, thread_native_id, NormalThreadSchedulePolicy,
        ThreadPriority, ThreadSchedulePolicy,
    };
    if let Err(e) = set_thread_priority_and_policy(
        thread_native_id(),
        ThreadPriority::Min,
        ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle),
    ) {
        tracing::debug!(error = ?e, "cannot lower the sync thread's priority");
    }
}

/// A thread running a current-thread runtime until `stop` is dropped. Threads inherit
/// their creator's scheduling class, so both sync threads are made by the caller
/// (a normal-priority thread at start-up) and only one then lowers itself.
fn runtime_thread(
    name: &str,
    idle: bool,
    stop: &tokio::sync::watch::Sender<()>,
) -> std::io::Result<tokio::runtime::Handle> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .thread_name(name)
        .build()?;
    let handle = runtime.handle().clone();
    let mut stopped = stop.subscribe();
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            if idle {
                set_idle_priority();
            }
            runtime.block_on(async {
                // Err once the sender is dropped.
                while stopped.changed().await.is_ok() {}
            });
        })?;
    Ok(handle)
}

impl SyncThread {
    fn start() -> std::io::Result<Self> {
        let (stop, _) = tokio::sync::watch::channel(());
        Ok(Self {
            handle: runtime_thread("mxisd-sync", true, &stop)?,
            writer: runtime_thread("mxisd-sync-write", false, &stop)?,
            _stop: stop,
        })
    }
}

impl Syncer {
    pub fn new(sources: Vec<SourceConfig>) -> Self {
        let thread = if sources.is_empty() {
            None
        } else {
            match SyncThread::start() {
                Ok(t) => Some(t),
                Err(e) => {
                    tracing::warn!(error = %e, "no thread of its own for sync runs; they share the server's");
                    None
                }
            }
        };
        Self {
            sources: sources
                .into_iter()
                .map(|s| (s, tokio::sync::Mutex::new(())))
                .collect(),
            thread,
        }
    }

    pub fn names(&self) -> Vec<String> {
        self.sources.iter().map(|(s, _)| s.name.clone()).collect()
    }

    /// Where the locked part of applying a run goes (normal priority).
    fn writer(&self) -> Option<&tokio::runtime::Handle> {
        self.thread.as_ref().map(|t| &t.writer)
    }
}

/// The Matrix ID of a source's `username`.
fn mxid_of(username: &str, domain: &str) -> Option<String> {
    let username = username.trim();
    // Matrix IDs of synced users are lowercase (as Synapse makes them), whichever
    // case the directory uses.
    let candidate = if username.starts_with('@') {
        username.to_lowercase()
    } else {
        format!("@{}:{domain}", username.to_lowercase())
    };
    Mxid::parse(&candidate).map(|m| m.as_str().to_owned())
}

/// What a source gave, normalised: 3PID → Matrix ID, the directory entries, and the
/// problems found (the first few, and how many entries were skipped).
struct Resolved {
    wanted: BTreeMap<ThreePid, String>,
    users: BTreeMap<String, DirectoryUser>,
    problems: Vec<String>,
    skipped: u64,
}

/// Normalises what a source gave.
fn resolve(fetched: Fetched, domain: &str) -> Resolved {
    let Fetched {
        users,
        mut problems,
        mut skipped,
    } = fetched;
    problems.truncate(MAX_PROBLEMS);
    let mut wanted: BTreeMap<ThreePid, String> = BTreeMap::new();
    let mut directory: BTreeMap<String, DirectoryUser> = BTreeMap::new();
    let mut note = |problems: &mut Vec<String>, p: String| {
        skipped += 1;
        if problems.len() < MAX_PROBLEMS {
            problems.push(p);
        }
    };
    for user in &users {
        let Some(mxid) = mxid_of(&user.username, domain) else {
            note(
                &mut problems,
                format!(
                    "user {:?}: not a valid localpart or Matrix ID",
                    user.username
                ),
            );
            continue;
        };
        let entry = directory.entry(mxid.clone()).or_default();
        // A user listed twice (two base DNs, two rows) is one entry.
        if entry.display_name.is_none() {
            entry.display_name = user
                .display_name
                .as_deref()
                .map(str::trim)
                .filter(|n| !n.is_empty())
                .map(str::to_owned);
        }
        for (k, v) in &user.attributes {
            entry
                .attributes
                .entry(k.clone())
                .or_default()
                .extend(v.iter().cloned());
        }
        entry.roles.extend(user.roles.iter().cloned());
        for tp in &user.threepids {
            let parsed = Medium::parse(&tp.medium.to_lowercase())
                .ok_or_else(|| format!("unknown medium {:?}", tp.medium))
                .and_then(|m| ThreePid::new(m, &tp.address).map_err(|e| e.to_string()));
            let threepid = match parsed {
                Ok(t) => t,
                Err(why) => {
                    note(&mut problems, format!("user {mxid}: {why}"));
                    continue;
                }
            };
            if let Some(entry) = directory.get_mut(&mxid) {
                if !entry.threepids.contains(&threepid) {
                    entry.threepids.push(threepid.clone());
                }
            }
            match wanted.get(&threepid) {
                // Two users claim one 3PID: the first Matrix ID in order keeps it,
                // whatever order the source listed them in.
                Some(other) if *other != mxid => {
                    let (keep, drop) = if *other < mxid {
                        (other.clone(), mxid.clone())
                    } else {
                        (mxid.clone(), other.clone())
                    };
                    note(
                        &mut problems,
                        format!(
                            "{} {} is claimed by {keep} and {drop}: {keep} keeps it",
                            threepid.medium(),
                            crate::logging::redact_address(threepid.address())
                        ),
                    );
                    wanted.insert(threepid, keep);
                }
                _ => {
                    wanted.insert(threepid, mxid.clone());
                }
            }
        }
    }
    for entry in directory.values_mut() {
        entry.roles.sort();
        entry.roles.dedup();
        for values in entry.attributes.values_mut() {
            values.dedup();
        }
    }
    Resolved {
        wanted,
        users: directory,
        problems,
        skipped,
    }
}

/// A run that would shrink a source of at least this many bindings to less than half
/// is refused unless forced: a directory that suddenly lists (almost) nobody is more
/// likely broken than emptied.
const SHRINK_GUARD_MIN: usize = 100;

/// Runs one source now (`force`: even if it would remove most of its bindings), on the
/// sync thread. Its status (success or failure) is recorded either way.
pub async fn run(state: &Services, name: &str, force: bool) -> Result<SyncStatus, Error> {
    let started = Instant::now();
    let result = run_somewhere(state, name, force).await;
    // An unknown source is not a run.
    if !matches!(&result, Err(e) if e.code == ErrCode::NotFound) {
        state
            .metrics
            .sync_run(name, result.is_ok(), started.elapsed());
    }
    result
}

async fn run_somewhere(state: &Services, name: &str, force: bool) -> Result<SyncStatus, Error> {
    let Some(thread) = &state.sync.thread else {
        return run_here(state, name, force).await;
    };
    let task_state = state.clone();
    let task_name = name.to_owned();
    let task = thread
        .handle
        .spawn(async move { run_here(&task_state, &task_name, force).await });
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

async fn run_here(state: &Services, name: &str, force: bool) -> Result<SyncStatus, Error> {
    let Some((source, lock)) = state.sync.sources.iter().find(|(s, _)| s.name == name) else {
        return Err(Error::not_found(format!(
            "No sync source is named {name:?}"
        )));
    };
    let _running = lock.lock().await;
    let started = Instant::now();
    let at = now_ms();
    let fetched = match fetch(&source.kind).await {
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
    let digest = fetched.digest(&state.config.matrix.domain);
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
    let resolved = resolve(fetched, &state.config.matrix.domain);
    let before = state.store.synced(name)?.len();
    if !force && before >= SHRINK_GUARD_MIN && resolved.wanted.len() < before / 2 {
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
    match apply(state, name, listed, resolved, started, at).await {
        Ok((status, users_changed)) => {
            state.store.set_sync_digest(name, Some(&digest)).await?;
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
) -> Result<(SyncStatus, Vec<String>), Error> {
    let Resolved {
        wanted,
        users,
        problems,
        skipped,
    } = resolved;
    let status = SyncStatus {
        last_success_ms: Some(at),
        last_attempt_ms: Some(at),
        last_error: None,
        users: users.len() as u64,
        bindings: wanted.len() as u64,
        skipped,
        problems,
        duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        ..SyncStatus::default()
    };
    let diff = state
        .store
        .apply_sync(name, &wanted, &users, status, state.sync.writer())
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
        users = users.len(),
        bindings = wanted.len(),
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

fn index_error(e: crate::index::IndexError) -> Error {
    Error::internal("indexing the directory", e)
}

/// Rebuilds the search index from the store's directory entries; the number indexed.
/// (The sources' "not yet indexed" marks are left alone: a run being applied meanwhile
/// clears its own when its update is in.)
pub async fn reindex(state: &Services) -> Result<u64, Error> {
    let task_state = state.clone();
    tokio::task::spawn_blocking(move || {
        let writer = task_state.directory.writer().map_err(index_error)?;
        rebuild(&task_state, writer)
    })
    .await
    .map_err(|e| Error::internal("reindexing", e))?
}

/// The rebuild itself, holding the index's writer while reading the store (so no
/// other update can slip in between with older entries).
fn rebuild(state: &Services, writer: crate::index::IndexWriting<'_>) -> Result<u64, Error> {
    let entries = state.store.directory_entries()?;
    writer
        .replace_all(entries.iter().map(|(m, u)| (m.as_str(), u)))
        .map_err(index_error)
}

/// Brings the index up to date after a run changed the entries of `mxids`: each one's
/// document replaced by its entry merged across sources (or deleted), in one commit.
/// A stale index, or a change to a quarter of it or more, is rebuilt whole instead
/// (cheaper than that many deletes). Returns the documents written.
pub async fn index_changes(state: &Services, source: &str, mxids: &[String]) -> Result<u64, Error> {
    let n = {
        let index = &state.directory;
        let mut writer = index.writer().map_err(index_error)?;
        // Decided holding the writer: no other write can fail in between unseen.
        let stale = index.is_stale();
        if stale || (mxids.len() as u64).saturating_mul(4) >= index.len() {
            if mxids.is_empty() && !stale {
                0
            } else {
                rebuild(state, writer)?
            }
        } else {
            for mxid in mxids {
                let entry = state.store.directory_entry(mxid)?;
                writer.upsert(mxid, entry.as_ref()).map_err(index_error)?;
            }
            writer.commit_as(false).map_err(index_error)?;
            mxids.len() as u64
        }
    };
    state.store.set_index_dirty(source, false).await?;
    Ok(n)
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
        // On the server's runtime, at normal priority: no writer needed.
        match state.store.forget_source(&name, None).await {
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

/// Runs `source` at start and then every interval, until shutdown.
pub async fn sync_task(
    state: Services,
    name: String,
    interval: Option<Duration>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        // Failures are recorded in the status and logged by `run`. Shutdown does not
        // wait for a run: a fetch has applied nothing yet, and an apply stops between
        // atomic chunks (the next run finishes it).
        tokio::select! {
            _ = run(&state, &name, false) => {}
            _ = shutdown.changed() => return,
        }
        let Some(every) = interval else {
            return;
        };
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.changed() => return,
        }
    }
}

fn describe(state: &Services, name: &str, status: Option<SyncStatus>) -> Value {
    let interval = state
        .sync
        .sources
        .iter()
        .find(|(s, _)| s.name == name)
        .and_then(|(s, _)| s.interval);
    match status {
        None => json!({ "source": name, "runs": 0 }),
        Some(s) => {
            // The timer sleeps an interval after each run ends.
            let next_run_ms = interval.and_then(|every| {
                s.last_attempt_ms.map(|at| {
                    at.saturating_add(s.duration_ms)
                        .saturating_add(u64::try_from(every.as_millis()).unwrap_or(u64::MAX))
                })
            });
            json!({
                "source": name,
                "last_success_ms": s.last_success_ms,
                "last_attempt_ms": s.last_attempt_ms,
                "next_run_ms": next_run_ms,
                "last_error": s.last_error,
                "users": s.users, "bindings": s.bindings,
                "added": s.added, "changed": s.changed, "removed": s.removed,
                "skipped": s.skipped, "problems": s.problems,
                "duration_ms": s.duration_ms,
            })
        }
    }
}

/// Operators: search the directory index (`GET /_mxisd/admin/v1/search`).
pub fn search(state: &Services, term: &str, limit: usize) -> Result<Value, Error> {
    let (hits, limited) = state
        .directory
        .search(term, limit, true)
        .map_err(|e| Error::internal("searching the directory", e))?;
    let results: Vec<Value> = hits
        .into_iter()
        .map(|h| json!({ "user_id": h.user_id, "display_name": h.display_name }))
        .collect();
    Ok(json!({ "limited": limited, "results": results }))
}

/// Operators: every source's status.
pub fn statuses(state: &Services) -> Result<Value, Error> {
    let mut out = Vec::new();
    for name in state.sync.names() {
        let status = state.store.sync_status(&name)?;
        out.push(describe(state, &name, status));
    }
    Ok(json!({ "sources": out }))
}

/// Operators: run one source, or all of them.
pub async fn run_now(state: &Services, only: Option<&str>, force: bool) -> Result<Value, Error> {
    let names = match only {
        Some(n) => vec![n.to_owned()],
        None => state.sync.names(),
    };
    let mut out = Vec::new();
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
            Err(_) => out.push(describe(state, &name, state.store.sync_status(&name)?)),
        }
    }
    Ok(json!({ "sources": out }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::stores::{ThreePidSpec, UserSpec};

    fn user(name: &str, addrs: &[(&str, &str)]) -> UserSpec {
        UserSpec {
            username: name.into(),
            display_name: None,
            threepids: addrs
                .iter()
                .map(|(m, a)| ThreePidSpec {
                    medium: (*m).into(),
                    address: (*a).into(),
                })
                .collect(),
            roles: vec![],
            attributes: BTreeMap::new(),
            password: None,
        }
    }

    #[test]
    fn a_fetch_digest_changes_with_anything_resolving_depends_on() {
        let a = user("a", &[("email", "a@x.org")]);
        let b = user("b", &[("email", "b@x.org")]);
        let base = Fetched::from(vec![a.clone(), b.clone()]).digest("x.org");
        assert_eq!(
            base,
            Fetched::from(vec![a.clone(), b.clone()]).digest("x.org")
        );
        assert_ne!(
            base,
            Fetched::from(vec![b.clone(), a.clone()]).digest("x.org")
        );
        assert_ne!(
            base,
            Fetched::from(vec![a.clone(), b.clone()]).digest("y.org")
        );
        let mut renamed = b.clone();
        renamed.display_name = Some("B".into());
        assert_ne!(
            base,
            Fetched::from(vec![a.clone(), renamed]).digest("x.org")
        );
        let mut skipped = Fetched::from(vec![a, b]);
        skipped.skipped = 1;
        assert_ne!(base, skipped.digest("x.org"));
    }

    #[test]
    fn users_resolve_to_normalised_bindings_with_problems_reported() {
        let mut users = vec![
            user(
                "Zed",
                &[
                    ("email", "Shared@Example.org"),
                    ("msisdn", "+1 202 555 0100"),
                ],
            ),
            user("@amy:other.org", &[("email", "shared@example.org")]),
            user("bad name!", &[("email", "x@example.org")]),
            user("bob", &[("fax", "1"), ("email", "not-an-address")]),
        ];
        let mut twice = user("bob", &[("email", "bob@example.org")]);
        twice.display_name = Some(" Bob ".into());
        twice.roles = vec!["staff".into()];
        users.push(twice);
        let Resolved {
            wanted,
            users,
            problems,
            skipped,
        } = resolve(users.into(), "example.org");
        // Bob listed twice is one directory entry with everything he was listed with.
        let bob = &users["@bob:example.org"];
        assert_eq!(bob.display_name.as_deref(), Some("Bob"));
        assert_eq!(bob.roles, vec!["staff".to_owned()]);
        assert_eq!(bob.threepids.len(), 1);
        assert_eq!(users["@zed:example.org"].threepids.len(), 2);
        assert!(!users.contains_key("@bad name!:example.org"));
        let shared = ThreePid::new(Medium::Email, "shared@example.org").unwrap();
        assert_eq!(wanted[&shared], "@amy:other.org");
        let phone = ThreePid::new(Medium::Msisdn, "12025550100").unwrap();
        assert_eq!(wanted[&phone], "@zed:example.org");
        assert_eq!(wanted.len(), 3);
        assert_eq!(skipped, 4);
        assert!(problems
            .iter()
            .any(|p| p.contains("claimed by @amy:other.org and @zed:example.org")));
        assert!(problems.iter().all(|p| !p.contains("shared@example.org")));
    }
}
