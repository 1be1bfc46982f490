//! What each sync source last contributed, and how its runs went.
//!
//! Trees:
//! - `sync_entry`: source name ‖ 0 ‖ `threepid_digest` → [`SyncedBinding`] (the
//!   source's last applied snapshot, to diff the next fetch against)
//! - `sync_user`: source name ‖ 0 ‖ Matrix ID → [`DirectoryUser`](crate::model::DirectoryUser) (who the source
//!   lists, with display name, 3PIDs and extra attributes: the directory entries)
//! - `sync_status`: source name → [`SyncStatus`]
//! - `sync_digest`: source name → SHA-256 of what the source gave at its last fully
//!   applied run (a run that fetches the same skips the diff)
//!
//! A run's bindings, directory entries, snapshot and status change in one atomic batch:
//! a sync is applied whole or not at all (see
//! [`Store::apply_sync`](crate::store::Store::apply_sync) for big ones).
//!
//! This file owns the layout: tree names and key shapes, shared by its parts, and
//! nothing that reads or writes them. Applying a run is [`apply`], the part of a chunk
//! written under the bindings lock (where another origin outranks the source) is
//! [`chunk`], what is recorded about runs is [`status`], and the directory entries
//! merged across sources are [`directory`].

mod apply;
mod chunk;
mod directory;
mod status;

pub use apply::{Driving, SyncDiff, SyncedBinding, SYNC_CHUNK};
pub use status::SyncStatus;

use super::threepid_digest;
use crate::model::ThreePid;

pub(crate) const SYNC_ENTRY: &str = "sync_entry";
pub(crate) const SYNC_STATUS: &str = "sync_status";
pub(crate) const SYNC_USER: &str = "sync_user";
pub(crate) const SYNC_DIGEST: &str = "sync_digest";

fn source_prefix(source: &str) -> Vec<u8> {
    let mut key = source.as_bytes().to_vec();
    key.push(0);
    key
}

fn entry_key(source: &str, threepid: &ThreePid) -> Vec<u8> {
    let mut key = source_prefix(source);
    key.extend_from_slice(&threepid_digest(threepid, b""));
    key
}

fn user_key(source: &str, mxid: &str) -> Vec<u8> {
    let mut key = source_prefix(source);
    key.extend_from_slice(mxid.as_bytes());
    key
}
