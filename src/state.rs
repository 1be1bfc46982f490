//! What every handler can reach: config, store, keys and the federation client, behind
//! one cheap-to-clone handle. No global state: each server instance (and each test) has
//! its own. One `Arc` for the lot: handlers clone the handle per request, and on two
//! cores every extra shared counter is a cache line the cores fight over (measured).

use crate::config::Config;
use crate::federation::Federation;
use crate::service::keys::Keys;
use crate::store::Store;
use std::sync::Arc;
use std::time::Instant;

#[derive(Debug)]
pub struct Shared {
    pub config: Arc<Config>,
    pub store: Arc<Store>,
    pub keys: Keys,
    pub federation: Federation,
    pub notifier: crate::notify::Notifier,
    pub limits: crate::service::ratelimit::Limiters,
    /// The identity sources synced into the store.
    pub sync: crate::sync::Syncer,
    /// Our homeserver's client-server API (directory search, profiles).
    pub homeserver: crate::homeserver::Homeserver,
    /// The search index over the synced directory entries.
    pub directory: crate::index::DirectoryIndex,
    /// Wakes the outbox delivery task when something was queued.
    pub outbox_wake: tokio::sync::Notify,
    /// Request, lookup, sync and delivery counters (`/metrics`).
    pub metrics: crate::metrics::Metrics,
    pub started: Instant,
}

#[derive(Clone, Debug)]
pub struct AppState(Arc<Shared>);

impl AppState {
    pub fn new(shared: Shared) -> Self {
        Self(Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}
