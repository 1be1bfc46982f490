//! What operators see of invites and deliveries (admin listener, `mxisd invites` and
//! `mxisd outbox`): pending invites, removing one, the outbox and retrying its failed
//! items. Read and reset only; delivering is [`super::delivery`]'s job.

use crate::error::Error;
use crate::service::Services;
use crate::store::invites::InviteRecord;
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;

// Fields in alphabetical order: serialised, the sorted objects these answers always were.

/// A pending invite as operators see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InviteView {
    pub address: String,
    pub created_ms: u64,
    pub details: BTreeMap<String, String>,
    /// `null` when invites do not expire.
    pub expires_ms: Option<u64>,
    pub medium: &'static str,
    pub room_id: String,
    pub sender: String,
    pub token: String,
}

/// Every pending invite.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InviteList {
    pub invites: Vec<InviteView>,
}

/// Whether an invite was there to remove.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Removed {
    pub removed: bool,
}

/// The outbox: deliveries pending and failed for good.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OutboxView {
    pub failed: Vec<OutboxEntry>,
    pub pending: Vec<OutboxEntry>,
}

/// One outbox item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OutboxEntry {
    pub attempts: u32,
    pub created_ms: u64,
    pub destination: String,
    /// The item's key, hex.
    pub id: String,
    /// Their tokens.
    pub invites: Vec<String>,
    pub last_error: Option<String>,
    /// Whom the invites are for (`null` if the stored body cannot be read).
    pub mxid: Option<String>,
    pub next_attempt_ms: u64,
}

/// How many failed deliveries were put back in line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Retried {
    pub retried: usize,
}

/// Operators: every pending invite.
pub fn list(state: &Services) -> Result<InviteList, Error> {
    let invites = state
        .store
        .all_invites()?
        .iter()
        .map(|i| describe(state, i))
        .collect();
    Ok(InviteList { invites })
}

fn describe(state: &Services, i: &InviteRecord) -> InviteView {
    let expires = state.config().invite.expire_after.map(|a| {
        i.created_ms
            .saturating_add(u64::try_from(a.as_millis()).unwrap_or(u64::MAX))
    });
    InviteView {
        address: i.threepid.address().to_owned(),
        created_ms: i.created_ms,
        details: i.details.clone(),
        expires_ms: expires,
        medium: i.threepid.medium().as_str(),
        room_id: i.room_id.clone(),
        sender: i.sender.clone(),
        token: i.token.clone(),
    }
}

/// Operators: one invite.
pub fn show(state: &Services, token: &str) -> Result<InviteView, Error> {
    state
        .store
        .invite(token)?
        .map(|i| describe(state, &i))
        .ok_or_else(|| Error::not_found("No pending invite has that token"))
}

/// Operators: drop one invite.
pub async fn remove(state: &Services, token: &str) -> Result<Removed, Error> {
    Ok(Removed {
        removed: state.store.remove_invite(token).await?,
    })
}

/// Operators: the outbox, pending and failed deliveries.
pub fn outbox(state: &Services) -> Result<OutboxView, Error> {
    let mut pending = Vec::new();
    let mut failed = Vec::new();
    for (id, item) in state.store.outbox()? {
        let mxid = serde_json::from_str::<Value>(&item.body)
            .ok()
            .and_then(|b| b.get("mxid").and_then(Value::as_str).map(str::to_owned));
        let entry = OutboxEntry {
            attempts: item.attempts,
            created_ms: item.created_ms,
            destination: item.destination,
            id: id.iter().map(|b| format!("{b:02x}")).collect(),
            invites: item.invites,
            last_error: item.last_error,
            mxid,
            next_attempt_ms: item.next_attempt_ms,
        };
        if item.failed {
            failed.push(entry);
        } else {
            pending.push(entry);
        }
    }
    Ok(OutboxView { failed, pending })
}

/// Operators: try failed deliveries again (from the start of their backoff).
pub async fn retry_failed(state: &Services) -> Result<Retried, Error> {
    let n = state.store.retry_failed_outbox().await?;
    state.outbox_wake.notify_one();
    Ok(Retried { retried: n })
}
