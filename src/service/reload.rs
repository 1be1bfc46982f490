//! Reloading the config file without a restart (SIGHUP, `POST /_mxisd/admin/v1/reload`,
//! `mxisd reload`). What is read per request or per run is reloadable: identity
//! sources, templates and mail/SMS connectors, rate limits, the session, invite, terms,
//! account and directory policies, lookup limits and the log levels. What was bound,
//! opened or scheduled at start is not (listeners, TLS, the admin door, the store, the
//! keys, the domain, federation, hashing, the log format): a change there is reported
//! as needing a restart and the running value is kept, so the config in force is always
//! one consistent [`Config`]. A new file with any problem changes nothing: every
//! problem is logged and returned, and the old config goes on serving.
//!
//! The reloadable state is one [`Live`] value swapped atomically: a request sees the old
//! or the new one, never half of each.

use super::ratelimit::Limiters;
use super::Services;
use crate::config::{self, Config};
use crate::error::{ErrCode, Error};
use crate::notify::Notifier;
use serde::Serialize;
use std::sync::Arc;

/// What a reload replaces in one step.
#[derive(Debug)]
pub struct Live {
    pub config: Arc<Config>,
    pub notifier: Arc<Notifier>,
    pub limits: Arc<Limiters>,
}

/// A part of the [`Live`] state in force, read without a lock (see
/// [`Core::config`](super::Core::config)).
pub struct Current<T: 'static> {
    live: arc_swap::Guard<Arc<Live>>,
    pick: fn(&Live) -> &T,
}

impl<T> Current<T> {
    pub(super) fn new(live: arc_swap::Guard<Arc<Live>>, pick: fn(&Live) -> &T) -> Self {
        Self { live, pick }
    }
}

impl<T> std::ops::Deref for Current<T> {
    type Target = T;

    fn deref(&self) -> &T {
        (self.pick)(&self.live)
    }
}

/// What a reload did, for the log, the admin API and `mxisd reload`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Report {
    /// The config file read.
    pub source: String,
    /// Reloadable settings that changed and are now in force.
    pub changed: Vec<String>,
    /// Settings that changed in the file but keep their running value until a restart.
    pub restart_needed: Vec<String>,
    /// The new file's warnings (ignored ma1sd keys and the like).
    pub warnings: Vec<String>,
}

/// Reads the config file the server started from and puts its reloadable parts in
/// force. Logs what changed, what needs a restart, and every problem of a bad file.
pub async fn from_file(state: &Services) -> Result<Report, Error> {
    let _one_at_a_time = state.reloading.lock().await;
    let running = Arc::clone(&state.live.load().config);
    let Some(path) = running.source.clone() else {
        let e = Error::new(
            ErrCode::Conflict,
            "This server runs on the embedded default configuration: there is no file to reload",
        );
        tracing::warn!("reload asked for: {}", e.message);
        return Err(e);
    };
    tracing::info!(config = %path.display(), "reloading the configuration");
    let read_path = path.clone();
    let loaded = tokio::task::spawn_blocking(move || {
        config::load_file(&read_path, &|k| std::env::var(k).ok())
    })
    .await
    .map_err(|e| Error::internal("reading the configuration", e))?;
    let result = match loaded {
        Ok(new) => apply(state, &running, new).await,
        Err(errors) => Err(errors.problems),
    };
    match result {
        Ok(report) => {
            log_report(&report);
            Ok(report)
        }
        Err(problems) => {
            for problem in &problems {
                tracing::error!("reload: {problem}");
            }
            tracing::error!(
                problems = problems.len(),
                "reload refused: the configuration in {} has problems; the running configuration stays in force",
                path.display()
            );
            Err(Error::new(
                ErrCode::Conflict,
                format!(
                    "The configuration in {} has {} problem(s); nothing was changed",
                    path.display(),
                    problems.len()
                ),
            )
            .with("problems", problems))
        }
    }
}

fn log_report(report: &Report) {
    for warning in &report.warnings {
        tracing::warn!("config: {warning}");
    }
    for what in &report.restart_needed {
        tracing::warn!("reload: {what} changed; it needs a restart (the running value is kept)");
    }
    if report.changed.is_empty() {
        tracing::info!(
            restart_needed = report.restart_needed.len(),
            "configuration reloaded: nothing reloadable changed"
        );
    } else {
        tracing::info!(
            restart_needed = report.restart_needed.len(),
            "configuration reloaded; now in force: {}",
            report.changed.join("; ")
        );
    }
}

fn differs<T: std::fmt::Debug>(a: &T, b: &T) -> bool {
    // Debug output is the comparison: it covers every field, secrets by a fingerprint
    // (the text is compared and dropped, never shown).
    use crate::config::reader::debug_with_fingerprints;
    debug_with_fingerprints(a) != debug_with_fingerprints(b)
}

/// Compares `new` with the running config, builds the new live state, swaps it in. On
/// any problem nothing is changed and the problems are returned.
async fn apply(state: &Services, running: &Config, new: Config) -> Result<Report, Vec<String>> {
    let mut report = Report {
        source: running
            .source
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default(),
        warnings: new.warnings.clone(),
        ..Report::default()
    };
    // The parts that need a restart keep their running values in the new config.
    let mut next = new.clone();
    let mut keep = |name: &str, changed: bool| {
        if changed {
            report.restart_needed.push(name.to_owned());
        }
    };
    keep("matrix", differs(&running.matrix, &new.matrix));
    keep("server", differs(&running.server, &new.server));
    keep("key", differs(&running.key, &new.key));
    keep("storage", differs(&running.storage, &new.storage));
    keep(
        "dns / outbound (federation)",
        differs(&running.federation, &new.federation),
    );
    keep("hashing", differs(&running.hashing, &new.hashing));
    keep(
        "logging.format",
        running.logging.format != new.logging.format,
    );
    keep(
        "rateLimit.trustedProxies",
        running.rate_limit.trusted_proxies != new.rate_limit.trusted_proxies,
    );
    next.source = running.source.clone();
    next.matrix = running.matrix.clone();
    next.server = running.server.clone();
    next.key = running.key.clone();
    next.storage = running.storage.clone();
    next.federation = running.federation.clone();
    next.hashing = running.hashing.clone();
    next.logging.format = running.logging.format;
    next.rate_limit.trusted_proxies = running.rate_limit.trusted_proxies.clone();

    let mut changed = |name: &str, yes: bool| {
        if yes {
            report.changed.push(name.to_owned());
        }
    };
    changed(
        "threepid (mail and SMS connectors, template files)",
        differs(&running.threepid, &next.threepid),
    );
    changed("session", differs(&running.session, &next.session));
    changed("view", differs(&running.view, &next.view));
    changed("invite", differs(&running.invite, &next.invite));
    changed("policy (terms)", differs(&running.terms, &next.terms));
    changed("accountConfig", differs(&running.accounts, &next.accounts));
    changed("directory", differs(&running.directory, &next.directory));
    changed("lookup", differs(&running.lookup, &next.lookup));
    let limits_changed = differs(&running.rate_limit, &next.rate_limit);
    changed("rateLimit", limits_changed);
    let levels_changed =
        running.logging.root != next.logging.root || running.logging.app != next.logging.app;

    // Everything that can fail is built before anything is swapped.
    let live = state.live.load_full();
    let problems_and_notifier = {
        let old = Arc::clone(&live.notifier);
        let cfg = next.clone();
        tokio::task::spawn_blocking(move || old.reloaded(&cfg).map(|n| (old, n)))
            .await
            .map_err(|e| vec![format!("building the notifier: {e}")])?
    };
    let (old_notifier, notifier) = problems_and_notifier.map_err(|e| vec![e])?;
    if old_notifier.templates_differ(&notifier) {
        report
            .changed
            .push("templates (the text of a template file)".into());
    }
    let limits = if limits_changed {
        Arc::new(Limiters::new(&next.rate_limit))
    } else {
        Arc::clone(&live.limits)
    };

    let sources = next.sync.clone();
    let search_cache = next.directory.search_cache;
    state.live.store(Arc::new(Live {
        config: Arc::new(next),
        notifier: Arc::new(notifier),
        limits,
    }));
    let source_changes = state.sync.replace(sources);
    for (what, names) in [
        ("added", &source_changes.added),
        ("removed", &source_changes.removed),
        ("redefined", &source_changes.changed),
    ] {
        if !names.is_empty() {
            report
                .changed
                .push(format!("identity sources {what}: {}", names.join(", ")));
        }
    }
    if !source_changes.removed.is_empty() {
        // As at start: a source no longer configured takes its bindings with it.
        tokio::spawn(super::sync::forget_removed_sources(state.clone()));
    }
    state.directory.set_cache_size(search_cache);
    if levels_changed {
        let levels = format!(
            "logging.root {}, logging.app {}",
            new.logging.root, new.logging.app
        );
        match crate::logging::set_levels(&new.logging) {
            Ok(crate::logging::Levels::Applied) => report.changed.push(levels),
            Ok(crate::logging::Levels::FromEnvironment) => report
                .restart_needed
                .push(format!("{levels} (RUST_LOG is set and decides the levels)")),
            Ok(crate::logging::Levels::NotOurs) => report.changed.push(levels),
            Err(e) => report
                .restart_needed
                .push(format!("{levels} (could not be applied: {e})")),
        }
    }
    Ok(report)
}
