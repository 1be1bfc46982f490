//! Health and status reports: the public `/status` (what a load balancer needs) and the
//! admin listener's detailed one.

use crate::service::Services;
use crate::store::StoreStatus;
use serde::Serialize;

/// Spec versions we serve: the pre-1.0 r0 releases (the api/v1 endpoints, and v2 from
/// r0.3.0) and v1.1–v1.19.
/// v1.20 is not claimed: it drops the query-string token Synapse still sends.
pub const SPEC_VERSIONS: &[&str] = &[
    "r0.1.0", "r0.2.0", "r0.2.1", "r0.3.0", "v1.1", "v1.2", "v1.3", "v1.4", "v1.5", "v1.6", "v1.7",
    "v1.8", "v1.9", "v1.10", "v1.11", "v1.12", "v1.13", "v1.14", "v1.15", "v1.16", "v1.17",
    "v1.18", "v1.19",
];

#[derive(Debug, Serialize)]
pub struct Health {
    /// `OK` or `DEGRADED`; ma1sd's shape, so existing probes keep working.
    pub health: &'static str,
}

#[derive(Debug, Serialize)]
pub struct PublicStatus {
    pub status: Health,
    pub version: &'static str,
    pub uptime_seconds: u64,
    pub store: &'static str,
    #[serde(skip)]
    pub healthy: bool,
}

/// 200 while reads work, also when writes are refused (`READ_ONLY`: a load balancer
/// should keep sending lookups); 503 only when the store cannot be read.
pub fn public_status(state: &Services) -> PublicStatus {
    let (health, store, healthy) = match state.store.status() {
        Ok(s) if s.read_only.is_some() => ("READ_ONLY", "read-only", true),
        Ok(_) => ("OK", "ok", true),
        Err(_) => ("DEGRADED", "error", false),
    };
    PublicStatus {
        status: Health { health },
        version: env!("CARGO_PKG_VERSION"),
        uptime_seconds: state.started.elapsed().as_secs(),
        store,
        healthy,
    }
}

/// Every 5 s while the store refuses writes: reopen it once the disk takes writes
/// again (see `Store::recover`).
pub async fn recovery_task(state: Services, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut every = tokio::time::interval(std::time::Duration::from_secs(5));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = every.tick() => {}
            _ = stop.changed() => return,
        }
        if !state.store.is_read_only() {
            continue;
        }
        match state.store.recover().await {
            Ok(true) => tracing::info!(
                "the store can write again: reopened it from disk; writes are accepted"
            ),
            Ok(false) => {}
            Err(e) => tracing::debug!(error = %e, "the store cannot write yet"),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct AdminStatus {
    pub status: Health,
    pub version: &'static str,
    pub uptime_seconds: u64,
    pub server_name: String,
    pub public_url: String,
    pub key_id: String,
    pub storage_path: String,
    /// Generation of the lookup pepper (bumped by every rotation).
    pub pepper_generation: u32,
    /// `{"ok": true, "schema_version": …}` or `{"ok": false, "error": "…"}`.
    #[serde(serialize_with = "store_report")]
    pub store: Result<StoreStatus, String>,
    pub index: IndexStatus,
    pub outbox: OutboxStatus,
    /// Each identity source's last run (`mxisd sync status` has the details).
    pub sync: Vec<SourceStatus>,
    /// Remote identity servers of recursive lookups, with their breakers.
    pub recursion: Vec<super::recursion::RemoteStatus>,
    /// The last push to the unified view (`federation.unifiedView`), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unified_view: Option<super::recursion::PushStatus>,
    /// What an operator should look at; empty when all is well. The server keeps
    /// answering with every one of these except a failing store.
    pub problems: Vec<String>,
    /// Whether the server can answer at all (the store works).
    #[serde(skip)]
    pub serving: bool,
}

/// The store's part of the status, without Rust's `Ok`/`Err` showing through.
fn store_report<S: serde::Serializer>(
    store: &Result<StoreStatus, String>,
    out: S,
) -> Result<S::Ok, S::Error> {
    #[derive(Serialize)]
    struct Report<'a> {
        ok: bool,
        #[serde(flatten)]
        status: Option<&'a StoreStatus>,
        #[serde(skip_serializing_if = "Option::is_none")]
        error: Option<&'a str>,
    }
    Report {
        ok: store.is_ok(),
        status: store.as_ref().ok(),
        error: store.as_ref().err().map(String::as_str),
    }
    .serialize(out)
}

#[derive(Debug, Serialize)]
pub struct IndexStatus {
    pub entries: u64,
    /// Behind the store; rebuilt by the next sync run, at start or by `mxisd reindex`.
    pub stale: bool,
}

#[derive(Debug, Default, Serialize)]
pub struct OutboxStatus {
    /// Invite notifications waiting for (another) delivery attempt.
    pub pending: u64,
    /// Out of attempts (`mxisd outbox`, `mxisd outbox --retry`).
    pub failed: u64,
    /// Creation time of the oldest pending one.
    pub oldest_pending_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct SourceStatus {
    pub source: String,
    /// `ok`, `failing` (the last run failed; the last good data is served), `degraded`
    /// (the last run worked but gave nobody, or skipped more than it kept) or `never run`.
    pub state: &'static str,
    /// Why it is `degraded`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub last_success_ms: Option<u64>,
    pub last_attempt_ms: Option<u64>,
    pub last_error: Option<String>,
    pub users: u64,
    pub bindings: u64,
    pub duration_ms: u64,
}

fn outbox_status(state: &Services) -> OutboxStatus {
    match state.store.outbox() {
        Ok(items) => {
            let mut out = OutboxStatus::default();
            for (_, item) in items {
                if item.failed {
                    out.failed += 1;
                } else {
                    out.pending += 1;
                    out.oldest_pending_ms = Some(
                        out.oldest_pending_ms
                            .map_or(item.created_ms, |t| t.min(item.created_ms)),
                    );
                }
            }
            out
        }
        Err(e) => OutboxStatus {
            error: Some(e.to_string()),
            ..OutboxStatus::default()
        },
    }
}

fn source_statuses(state: &Services) -> Result<Vec<SourceStatus>, String> {
    state
        .sync
        .names()
        .into_iter()
        .map(|name| {
            let status = state.store.sync_status(&name).map_err(|e| e.to_string())?;
            Ok(match status {
                None => SourceStatus {
                    source: name,
                    state: "never run",
                    last_success_ms: None,
                    last_attempt_ms: None,
                    last_error: None,
                    reason: None,
                    users: 0,
                    bindings: 0,
                    duration_ms: 0,
                },
                Some(s) => SourceStatus {
                    source: name,
                    state: crate::service::sync::state_of(&s),
                    reason: crate::service::sync::degraded(&s),
                    last_success_ms: s.last_success_ms,
                    last_attempt_ms: s.last_attempt_ms,
                    last_error: s.last_error,
                    users: s.users,
                    bindings: s.bindings,
                    duration_ms: s.duration_ms,
                },
            })
        })
        .collect()
}

/// The admin listener's status: every part, and what needs attention.
pub fn admin_status(state: &Services) -> AdminStatus {
    let store = state.store.status().map_err(|e| e.to_string());
    let mut problems = Vec::new();
    if let Err(e) = &store {
        problems.push(format!("store: {e}"));
    }
    if let Some(r) = store.as_ref().ok().and_then(|s| s.read_only.as_ref()) {
        let why = if r.full {
            "its disk is full"
        } else {
            "a write to disk failed"
        };
        problems.push(format!(
            "store: read-only since {why} ({}); lookups and searches are answered, writes get 503 and resume by themselves once it can write (checked every 5 s)",
            r.reason
        ));
    }
    let index = IndexStatus {
        entries: state.directory.len(),
        stale: state.directory.is_stale(),
    };
    if index.stale {
        problems.push(
            "directory index: behind the store (rebuilt by the next sync run, or `mxisd reindex`)"
                .into(),
        );
    }
    let outbox = outbox_status(state);
    if let Some(e) = &outbox.error {
        problems.push(format!("outbox: {e}"));
    }
    if outbox.failed > 0 {
        problems.push(format!(
            "outbox: {} invite notification(s) failed for good (`mxisd outbox`)",
            outbox.failed
        ));
    }
    let sync = source_statuses(state).unwrap_or_else(|e| {
        problems.push(format!("sync status: {e}"));
        Vec::new()
    });
    for s in &sync {
        if s.state == "failing" {
            problems.push(format!(
                "sync source {}: last run failed: {}",
                s.source,
                s.last_error.as_deref().unwrap_or("")
            ));
        } else if let Some(why) = &s.reason {
            problems.push(format!("sync source {}: {why}", s.source));
        }
    }
    let serving = store.is_ok();
    AdminStatus {
        status: Health {
            health: if problems.is_empty() {
                "OK"
            } else {
                "DEGRADED"
            },
        },
        version: env!("CARGO_PKG_VERSION"),
        uptime_seconds: state.started.elapsed().as_secs(),
        server_name: state.config().server.name.clone(),
        public_url: state.config().server.public_url.clone(),
        key_id: state.keys.key_id().to_owned(),
        storage_path: state.config().storage.path.display().to_string(),
        pepper_generation: state.store.pepper().generation,
        store,
        index,
        outbox,
        sync,
        recursion: state.recursion.status(),
        unified_view: state.recursion.push_status(),
        problems,
        serving,
    }
}

/// Everything `/metrics` serves: the counters and the current state as gauges.
pub fn metrics_text(state: &Services) -> String {
    use crate::metrics::{escape, header, sample};
    use std::fmt::Write as _;
    let mut out = String::with_capacity(16 * 1024);
    header(
        &mut out,
        "mxisd_build_info",
        "gauge",
        "Version of this mxisd.",
    );
    let _ = writeln!(
        out,
        "mxisd_build_info{{version=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION")
    );
    sample(
        &mut out,
        "mxisd_uptime_seconds",
        "gauge",
        "Seconds since start.",
        state.started.elapsed().as_secs(),
    );
    state.metrics.render(&mut out);
    header(
        &mut out,
        "mxisd_notifications_total",
        "counter",
        "E-mails and SMS handed to the mail server or SMS gateway (sent) or refused by it (failed).",
    );
    for (medium, sent, failed) in state.notifier().counts() {
        let m = medium.as_str();
        let _ = writeln!(
            out,
            "mxisd_notifications_total{{medium=\"{m}\",result=\"sent\"}} {sent}"
        );
        let _ = writeln!(
            out,
            "mxisd_notifications_total{{medium=\"{m}\",result=\"failed\"}} {failed}"
        );
    }
    let status = admin_status(state);
    sample(
        &mut out,
        "mxisd_store_up",
        "gauge",
        "1 while the store reads and writes.",
        u8::from(status.serving),
    );
    if let Ok(store) = &status.store {
        if let Some(bytes) = store.size_on_disk {
            sample(
                &mut out,
                "mxisd_store_size_bytes",
                "gauge",
                "Size of the store on disk.",
                bytes,
            );
        }
        if let Some(bindings) = store.lookup_table {
            sample(
                &mut out,
                "mxisd_lookup_table_bindings",
                "gauge",
                "Bindings in the in-memory lookup table (absent while it is being built).",
                bindings,
            );
        }
    }
    sample(
        &mut out,
        "mxisd_lookup_pepper_generation",
        "gauge",
        "Generation of the lookup pepper (bumped by each rotation).",
        status.pepper_generation,
    );
    sample(
        &mut out,
        "mxisd_directory_entries",
        "gauge",
        "Users in the directory search index.",
        status.index.entries,
    );
    sample(
        &mut out,
        "mxisd_directory_index_stale",
        "gauge",
        "1 while the search index is behind the store.",
        u8::from(status.index.stale),
    );
    header(
        &mut out,
        "mxisd_outbox_items",
        "gauge",
        "Invite notifications for homeservers waiting for delivery (pending) or out of attempts (failed).",
    );
    let _ = writeln!(
        out,
        "mxisd_outbox_items{{state=\"pending\"}} {}",
        status.outbox.pending
    );
    let _ = writeln!(
        out,
        "mxisd_outbox_items{{state=\"failed\"}} {}",
        status.outbox.failed
    );
    type Gauge = (&'static str, &'static str, fn(&SourceStatus) -> Option<f64>);
    let gauges: [Gauge; 5] = [
        (
            "mxisd_sync_users",
            "Users the source gave at its last successful run.",
            |s| Some(s.users as f64),
        ),
        (
            "mxisd_sync_bindings",
            "Bindings the source gave at its last successful run.",
            |s| Some(s.bindings as f64),
        ),
        (
            "mxisd_sync_last_success_timestamp_seconds",
            "When the source's last successful run started.",
            |s| s.last_success_ms.map(|t| t as f64 / 1000.0),
        ),
        (
            "mxisd_sync_last_run_duration_seconds",
            "How long the source's last run took.",
            |s| s.last_attempt_ms.map(|_| s.duration_ms as f64 / 1000.0),
        ),
        (
            "mxisd_sync_failing",
            "1 while the source's last run failed (the last good data is served).",
            |s| Some(if s.state == "failing" { 1.0 } else { 0.0 }),
        ),
    ];
    for (name, help, value) in gauges {
        header(&mut out, name, "gauge", help);
        for s in &status.sync {
            if let Some(v) = value(s) {
                let _ = writeln!(out, "{name}{{source=\"{}\"}} {v}", escape(&s.source));
            }
        }
    }
    out
}
