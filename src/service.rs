//! Domain logic, one file per area, and the sync driver. Services take typed requests
//! and return typed results or an [`Error`](crate::error::Error) whose
//! [`ErrCode`](crate::error::ErrCode) `http` maps to a status; no warp, hyper or status
//! code crosses this line, so services are tested without HTTP and reused by the CLI.
//!
//! [`Services`] is the handle the HTTP layer gets: cheap to clone (one `Arc`), and its
//! store, index, notifier, federation and sync handles are private to this module,
//! so a handler can reach them only by calling a service (the compiler keeps layering
//! rule 3). Visible above: the config and the metrics, which sit below every layer that
//! uses them, and two services that handlers call directly, the signing keys and the
//! rate limiters.

pub mod account;
pub mod auth;
pub mod backup;
pub mod bind;
pub mod bindings;
pub mod credentials;
pub mod directory;
pub mod hashing;
pub mod health;
pub mod invite;
pub mod keys;
pub mod login;
pub mod lookup;
pub mod passthrough;
pub mod policy;
pub mod progress;
/// Transitional, for `invite` only (see the file).
pub mod ratelimit;
pub mod recursion;
pub mod reload;
pub mod session;
pub mod sync;
pub mod terms;

use crate::config::Config;
use crate::federation::homeserver::Homeserver;
use crate::federation::Federation;
use crate::index::DirectoryIndex;
use crate::metrics::Metrics;
use crate::notify::Notifier;
use crate::store::Store;
use std::sync::Arc;
use std::time::Instant;

/// What the services are built from; `app` assembles it at start-up.
#[derive(Debug)]
pub struct Parts {
    pub config: Arc<Config>,
    pub store: Arc<Store>,
    pub keys: keys::Keys,
    pub federation: Federation,
    pub notifier: Notifier,
    pub limits: ratelimit::Limiters,
    /// The identity sources synced into the store.
    pub sync: sync::Syncer,
    /// Our homeserver's client-server API (directory search, profiles).
    pub homeserver: Homeserver,
    /// The search index over the synced directory entries.
    pub directory: DirectoryIndex,
    /// Request, lookup, sync and delivery counters (`/metrics`).
    pub metrics: Metrics,
    pub started: Instant,
}

/// The handles the services share. Fields are private to `service` except the two
/// that every layer may read. What a reload may replace (the config, the notifier with
/// its templates, the rate limiters) is one [`reload::Live`] swapped atomically: read it
/// through [`Core::config`], [`Core::limits`] and [`Core::notifier`].
#[derive(Debug)]
pub struct Core {
    pub(in crate::service) live: arc_swap::ArcSwap<reload::Live>,
    pub(crate) metrics: Metrics,
    pub(in crate::service) store: Arc<Store>,
    pub(crate) keys: keys::Keys,
    pub(in crate::service) federation: Federation,
    pub(in crate::service) sync: sync::Syncer,
    /// One reload at a time (SIGHUP and the admin route may meet).
    pub(in crate::service) reloading: tokio::sync::Mutex<()>,
    pub(in crate::service) homeserver: Homeserver,
    pub(in crate::service) directory: DirectoryIndex,
    /// Wakes the outbox delivery task when something was queued.
    pub(in crate::service) outbox_wake: tokio::sync::Notify,
    pub(in crate::service) started: Instant,
    /// Long work running now (sync runs, imports, rotations, reindexes): the admin
    /// API's `progress`, and a log line every few seconds.
    pub(in crate::service) jobs: crate::progress::Jobs,
    /// Recursive lookups' caches, remotes and breakers.
    pub(in crate::service) recursion: recursion::Recursion,
}

/// The services of one server instance (each test has its own); one `Arc` for the lot:
/// handlers clone it per request, and on two cores every extra shared counter is a
/// cache line the cores fight over (measured).
#[derive(Clone, Debug)]
pub struct Services(Arc<Core>);

impl Services {
    pub fn new(parts: Parts) -> Self {
        Self(Arc::new(Core {
            live: arc_swap::ArcSwap::from_pointee(reload::Live {
                config: parts.config,
                notifier: Arc::new(parts.notifier),
                limits: Arc::new(parts.limits),
            }),
            metrics: parts.metrics,
            store: parts.store,
            keys: parts.keys,
            federation: parts.federation,
            sync: parts.sync,
            reloading: tokio::sync::Mutex::new(()),
            homeserver: parts.homeserver,
            directory: parts.directory,
            outbox_wake: tokio::sync::Notify::new(),
            recursion: recursion::Recursion::default(),
            started: parts.started,
            // Tests shorten the log interval; operators have no need to.
            jobs: crate::progress::Jobs::new(crate::progress::Jobs::interval_from(
                std::env::var("MXISD_PROGRESS_INTERVAL_MS").ok().as_deref(),
            )),
        }))
    }
}

impl Core {
    /// The config in force: the one the server started with, with the reloadable
    /// sections of the last good reload (see [`reload`]). A cheap, lock-free read; do
    /// not keep it across long waits.
    pub(crate) fn config(&self) -> reload::Current<Config> {
        reload::Current::new(self.live.load(), |l| &l.config)
    }

    /// The rate limiters in force.
    pub(crate) fn limits(&self) -> reload::Current<ratelimit::Limiters> {
        reload::Current::new(self.live.load(), |l| &l.limits)
    }

    /// The notifier in force (kept by a send for as long as it takes).
    pub(in crate::service) fn notifier(&self) -> Arc<Notifier> {
        Arc::clone(&self.live.load().notifier)
    }
}

impl std::ops::Deref for Services {
    type Target = Core;

    fn deref(&self) -> &Core {
        &self.0
    }
}
