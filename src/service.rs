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
pub mod directory;
pub mod hashing;
pub mod health;
pub mod invite;
pub mod keys;
pub mod lookup;
pub mod progress;
/// Transitional, for `invite` only (see the file).
pub mod ratelimit;
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
/// that every layer may read.
#[derive(Debug)]
pub struct Core {
    pub(crate) config: Arc<Config>,
    pub(crate) metrics: Metrics,
    pub(in crate::service) store: Arc<Store>,
    pub(crate) keys: keys::Keys,
    pub(in crate::service) federation: Federation,
    pub(in crate::service) notifier: Notifier,
    pub(crate) limits: ratelimit::Limiters,
    pub(in crate::service) sync: sync::Syncer,
    pub(in crate::service) homeserver: Homeserver,
    pub(in crate::service) directory: DirectoryIndex,
    /// Wakes the outbox delivery task when something was queued.
    pub(in crate::service) outbox_wake: tokio::sync::Notify,
    pub(in crate::service) started: Instant,
    /// Long work running now (sync runs, imports, rotations, reindexes): the admin
    /// API's `progress`, and a log line every few seconds.
    pub(in crate::service) jobs: crate::progress::Jobs,
}

/// The services of one server instance (each test has its own); one `Arc` for the lot:
/// handlers clone it per request, and on two cores every extra shared counter is a
/// cache line the cores fight over (measured).
#[derive(Clone, Debug)]
pub struct Services(Arc<Core>);

impl Services {
    pub fn new(parts: Parts) -> Self {
        Self(Arc::new(Core {
            config: parts.config,
            metrics: parts.metrics,
            store: parts.store,
            keys: parts.keys,
            federation: parts.federation,
            notifier: parts.notifier,
            limits: parts.limits,
            sync: parts.sync,
            homeserver: parts.homeserver,
            directory: parts.directory,
            outbox_wake: tokio::sync::Notify::new(),
            started: parts.started,
            // Tests shorten the log interval; operators have no need to.
            jobs: crate::progress::Jobs::new(crate::progress::Jobs::interval_from(
                std::env::var("MXISD_PROGRESS_INTERVAL_MS").ok().as_deref(),
            )),
        }))
    }
}

impl std::ops::Deref for Services {
    type Target = Core;

    fn deref(&self) -> &Core {
        &self.0
    }
}
