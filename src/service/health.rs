//! Health and status reports: the public `/status` (what a load balancer needs) and the
//! admin listener's detailed one.

use crate::state::AppState;
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

pub fn public_status(state: &AppState) -> PublicStatus {
    let store_ok = state.store.status().is_ok();
    PublicStatus {
        status: Health {
            health: if store_ok { "OK" } else { "DEGRADED" },
        },
        version: env!("CARGO_PKG_VERSION"),
        uptime_seconds: state.started.elapsed().as_secs(),
        store: if store_ok { "ok" } else { "error" },
        healthy: store_ok,
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
    pub store: Result<StoreStatus, String>,
    /// Each identity source's last run (`mxisd sync status` has the details).
    pub sync: Vec<serde_json::Value>,
}

pub fn admin_status(state: &AppState) -> AdminStatus {
    let store = state.store.status().map_err(|e| e.to_string());
    AdminStatus {
        status: Health {
            health: if store.is_ok() { "OK" } else { "DEGRADED" },
        },
        version: env!("CARGO_PKG_VERSION"),
        uptime_seconds: state.started.elapsed().as_secs(),
        server_name: state.config.server.name.clone(),
        public_url: state.config.server.public_url.clone(),
        key_id: state.keys.key_id().to_owned(),
        storage_path: state.config.storage.path.display().to_string(),
        pepper_generation: state.store.pepper().generation,
        store,
        sync: crate::sync::statuses(state)
            .ok()
            .and_then(|v| v.get("sources").and_then(|s| s.as_array()).cloned())
            .unwrap_or_default()
            .into_iter()
            .map(|s| {
                serde_json::json!({
                    "source": s["source"], "last_success_ms": s["last_success_ms"],
                    "last_error": s["last_error"], "bindings": s["bindings"],
                })
            })
            .collect(),
    }
}
