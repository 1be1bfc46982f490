//! What every handler can reach: config, store and keys, behind one cheap-to-clone
//! handle. No global state: each server instance (and each test) has its own.

use crate::config::Config;
use crate::federation::Federation;
use crate::service::keys::Keys;
use crate::store::Store;
use std::sync::Arc;
use std::time::Instant;

#[derive(Clone, Debug)]
pub struct AppState {
    pub config: Arc<Config>,
    pub store: Arc<Store>,
    pub keys: Arc<Keys>,
    pub federation: Arc<Federation>,
    pub started: Instant,
}
