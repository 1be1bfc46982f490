//! Delivery of bound invites: the task that sends the outbox's items to homeservers
//! (`POST /_matrix/federation/v1/3pid/onbind`), a few destinations at a time, retrying
//! with exponential backoff until `invite.delivery.maxAttempts`, after which an item
//! stays in the outbox marked failed for operators to see. It also does the invites'
//! housekeeping (expiry, addresses bound meanwhile). What goes into the outbox, and
//! when, is decided in [`super::on_bind`]; this file only delivers.

use super::reconcile;
use crate::error::Error;
use crate::metrics::Delivery;
use crate::model::now_ms;
use crate::service::Services;
use crate::store::invites::OutboxItem;
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::Duration;

/// The federation path homeservers receive bound invites on (POST, as Synapse serves it).
pub const ONBIND_PATH: &str = "/_matrix/federation/v1/3pid/onbind";
/// Largest onbind answer read (it is ignored beyond its status).
const ONBIND_ANSWER_MAX: usize = 64 * 1024;

/// How long to wait after the `attempts`-th failure: doubling from
/// `invite.delivery.minDelay`, at most `maxDelay`.
fn backoff(state: &Services, attempts: u32) -> Duration {
    let cfg = &state.config().invite;
    let factor = 1u32
        .checked_shl(attempts.saturating_sub(1).min(30))
        .unwrap_or(u32::MAX);
    cfg.min_delay.saturating_mul(factor).min(cfg.max_delay)
}

/// Destinations delivered to at once; one slow homeserver holds up only its own items.
const PARALLEL_DESTINATIONS: usize = 8;

/// Tries one outbox item once and records the outcome.
async fn deliver(state: &Services, id: &[u8], mut item: OutboxItem) -> Result<(), Error> {
    let outcome = match serde_json::from_str::<Value>(&item.body) {
        Ok(body) => match state
            .federation
            .post_json(&item.destination, ONBIND_PATH, &body, ONBIND_ANSWER_MAX)
            .await
        {
            Ok((status, _)) if (200..300).contains(&status) => None,
            Ok((status, _)) => Some(format!("{} answered HTTP {status}", item.destination)),
            Err(e) => Some(e.to_string()),
        },
        // Cannot happen short of corruption; never retried.
        Err(e) => {
            item.attempts = state.config().invite.max_attempts;
            Some(format!("unreadable body: {e}"))
        }
    };
    let Some(why) = outcome else {
        state.metrics.delivery(Delivery::Delivered);
        state.store.delete_outbox(id).await?;
        tracing::info!(
            destination = %item.destination,
            invites = item.invites.len(),
            attempts = item.attempts + 1,
            "invites delivered"
        );
        return Ok(());
    };
    item.attempts = item.attempts.saturating_add(1);
    item.last_error = Some(why.clone());
    if item.attempts >= state.config().invite.max_attempts {
        state.metrics.delivery(Delivery::Failed);
        item.failed = true;
        tracing::warn!(destination = %item.destination, attempts = item.attempts, error = %why,
            "invite delivery failed for good; see `mxisd outbox` (and `mxisd outbox --retry`)");
    } else {
        state.metrics.delivery(Delivery::Retry);
        let wait = backoff(state, item.attempts);
        item.next_attempt_ms =
            now_ms().saturating_add(u64::try_from(wait.as_millis()).unwrap_or(u64::MAX));
        tracing::info!(destination = %item.destination, attempts = item.attempts, error = %why,
            retry_in_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX), "invite delivery failed; will retry");
    }
    state.store.update_outbox(id, &item).await?;
    Ok(())
}

/// Tries every due outbox item once, a few destinations at a time (each destination's
/// items in order). Returns when the next pending one is due, if any.
async fn deliver_due(state: &Services) -> Result<Option<u64>, Error> {
    use futures_util::StreamExt as _;
    let now = now_ms();
    let mut by_destination: BTreeMap<String, Vec<(Vec<u8>, OutboxItem)>> = BTreeMap::new();
    for (id, item) in state.store.outbox()? {
        if !item.failed && item.next_attempt_ms <= now {
            by_destination
                .entry(item.destination.clone())
                .or_default()
                .push((id, item));
        }
    }
    futures_util::stream::iter(by_destination.into_values())
        .for_each_concurrent(PARALLEL_DESTINATIONS, |items| async move {
            for (id, item) in items {
                if let Err(e) = deliver(state, &id, item).await {
                    tracing::warn!(error = %e.message, "recording an outbox delivery failed");
                }
            }
        })
        .await;
    Ok(state
        .store
        .outbox()?
        .iter()
        .filter(|(_, i)| !i.failed)
        .map(|(_, i)| i.next_attempt_ms)
        .min())
}

/// Delivers the outbox until shutdown: at start (what a previous run left), when woken
/// by a new item, and when a retry is due. At start and every 10 minutes it also drops
/// expired invites and queues those whose address got bound meanwhile.
pub async fn delivery_task(state: Services, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let mut housekeeping: Option<std::time::Instant> = None;
    loop {
        if housekeeping.is_none_or(|t| t.elapsed() >= Duration::from_secs(600)) {
            housekeeping = Some(std::time::Instant::now());
            expire(&state).await;
            match reconcile(&state).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(invites = n, "invites of addresses bound meanwhile queued"),
                Err(e) => tracing::warn!(error = %e.message, "checking pending invites failed"),
            }
        }
        let next = match deliver_due(&state).await {
            Ok(next) => next,
            Err(e) => {
                tracing::warn!(error = %e.message, "outbox delivery round failed");
                Some(now_ms() + 10_000)
            }
        };
        let wait = next
            .map(|t| Duration::from_millis(t.saturating_sub(now_ms())))
            .unwrap_or(Duration::from_secs(60))
            .min(Duration::from_secs(60));
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = state.outbox_wake.notified() => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// Drops invites older than `invite.expiration.after`.
pub async fn expire(state: &Services) {
    let Some(after) = state.config().invite.expire_after else {
        return;
    };
    let cutoff = now_ms().saturating_sub(u64::try_from(after.as_millis()).unwrap_or(u64::MAX));
    match state.store.expire_invites(cutoff).await {
        Ok(0) => {}
        Ok(n) => tracing::info!(invites = n, "expired 3PID invites dropped"),
        Err(e) => tracing::warn!(error = %e, "dropping expired invites failed"),
    }
}
