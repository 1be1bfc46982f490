//! One chunk of a sync run written under the bindings lock: the source's changes staged
//! into the chunk's batch (the bindings' priority order decides what is effective),
//! every 3PID where another origin (an operator, a user's own bind, another source)
//! outranks the source reported as a problem, and the run's status added to the last
//! chunk. It holds the lock only as long as that takes; it must not compute the diff
//! (that is [`super::apply`]).

use super::status::SyncStatus;
use super::SYNC_STATUS;
use crate::model::{ThreePid, MAX_PROBLEMS};
use crate::store::bindings::{BindingChange, BindingEntry, Origin};
use crate::store::codec::encode;
use crate::store::kv::Batch;
use crate::store::{Store, StoreError};

/// What one chunk writes under the bindings lock.
pub(super) struct LockedChunk {
    pub(super) origin: Origin,
    pub(super) changes: Vec<BindingChange>,
    /// The 3PIDs the chunk sets, with the Matrix ID this source gives each, in the
    /// order of their changes (sets come before removals).
    pub(super) touched: Vec<(ThreePid, String)>,
    pub(super) batch: Batch,
    /// The run's status, on the last chunk.
    pub(super) status: Option<SyncStatus>,
    pub(super) source: String,
}

pub(super) struct ChunkDone {
    pub(super) now_bound: Vec<(ThreePid, BindingEntry)>,
    pub(super) problems: Vec<String>,
    pub(super) overridden: u64,
}

pub(super) async fn locked_chunk(
    store: &Store,
    chunk: LockedChunk,
) -> Result<ChunkDone, StoreError> {
    let LockedChunk {
        origin,
        changes,
        touched,
        mut batch,
        status,
        source,
    } = chunk;
    let _guard = store.bindings_lock.lock().await;
    let effective = store.stage_binding_changes(changes, &mut batch)?;
    let mut done = ChunkDone {
        now_bound: Vec::new(),
        problems: Vec::new(),
        overridden: 0,
    };
    for ((threepid, ours), entry) in touched.into_iter().zip(effective) {
        let Some(entry) = entry else { continue };
        // Another origin (an operator, a user's own bind, another source) outranks
        // this source for the address: say so.
        if entry.origin != origin && entry.mxid != ours {
            done.overridden += 1;
            done.problems.push(format!(
                "{} {} is {ours} here but stays {} ({} outranks this source)",
                threepid.medium(),
                crate::logging::redact_address(threepid.address()),
                entry.mxid,
                entry.origin
            ));
        }
        done.now_bound.push((threepid, entry));
    }
    if let Some(mut status) = status {
        for p in &done.problems {
            if status.problems.len() < MAX_PROBLEMS {
                status.problems.push(p.clone());
            }
        }
        batch.put(SYNC_STATUS, source.as_bytes().to_vec(), encode(&status)?);
    }
    store.apply(batch)?;
    Ok(done)
}
