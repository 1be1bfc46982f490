//! The lookup pepper: rotation on demand (admin listener) and on a schedule
//! (`hashing.rotationPolicy: per_seconds`). A rotation rehashes every binding into a
//! new index generation and switches atomically; clients holding the old pepper get
//! `M_INVALID_PEPPER` and fetch `/hash_details` again.

use crate::error::Error;
use crate::model::now_ms;
use crate::service::Services;
use crate::store::bindings::PepperState;
use std::time::Duration;
use tokio::sync::watch;

/// Rotates the pepper now.
pub async fn rotate(state: &Services) -> Result<PepperState, Error> {
    let pepper = crate::crypto::random_alphanumeric(state.config().hashing.pepper_length)
        .map_err(|e| Error::internal("random pepper", e))?;
    let started = std::time::Instant::now();
    let progress = state.jobs.start("rotate", "pepper rotation");
    let next = state.store.rotate_pepper(pepper, &progress).await?;
    tracing::info!(
        generation = next.generation,
        ms = started.elapsed().as_millis() as u64,
        "lookup pepper rotated"
    );
    Ok(next)
}

/// Background task: rotates every `every`, counted from the last rotation (so restarts
/// do not postpone it), until `stop` turns true.
pub async fn rotation_task(state: Services, every: Duration, mut stop: watch::Receiver<bool>) {
    loop {
        let since = state.store.pepper().since_ms;
        let due = since.saturating_add(every.as_millis() as u64);
        let wait = Duration::from_millis(due.saturating_sub(now_ms()));
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            _ = tokio::time::sleep(wait) => {}
        }
        if let Err(e) = rotate(&state).await {
            tracing::error!(error = %e, "pepper rotation failed; retrying in a minute");
            tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                _ = tokio::time::sleep(Duration::from_secs(60)) => {}
            }
        }
    }
}
