//! Keeping the directory's search index in step with the store after a run: a paced
//! rebuild from the store's entries, or the changed users' documents replaced.

use super::pacer;
use crate::error::Error;
use crate::progress::Progress;
use crate::service::Services;

/// Index writes between two pauses of a paced rebuild or update.
const INDEX_STEP: u64 = 1_000;

fn index_error(e: crate::index::IndexError) -> Error {
    Error::internal("indexing the directory", e)
}

/// Rebuilds the search index from the store's directory entries; the number indexed.
/// (The sources' "not yet indexed" marks are left alone: a run being applied meanwhile
/// clears its own when its update is in.)
pub async fn reindex(state: &Services) -> Result<u64, Error> {
    let task_state = state.clone();
    let progress = state.jobs.start("reindex", "reindex");
    tokio::task::spawn_blocking(move || {
        progress.phase("waiting for the index", "", None);
        let writer = task_state.directory.writer().map_err(index_error)?;
        rebuild(&task_state, writer, &progress, &pacer(&task_state))
    })
    .await
    .map_err(|e| Error::internal("reindexing", e))?
}

/// The rebuild itself, holding the index's writer while reading the store (so no
/// other update can slip in between with older entries).
fn rebuild(
    state: &Services,
    mut writer: crate::index::IndexWriting<'_>,
    progress: &Progress,
    pacer: &crate::pace::Pacer,
) -> Result<u64, Error> {
    progress.phase(
        "indexing",
        "entries",
        Some(state.store.directory_listings()?),
    );
    writer.start_over().map_err(index_error)?;
    let mut n = 0u64;
    state.store.each_directory_entry(|mxid, user| {
        progress.add(1);
        n += 1;
        if n.is_multiple_of(INDEX_STEP) {
            pacer.pause_blocking();
        }
        writer.add(mxid, &user).map_err(index_error)
    })?;
    writer.commit().map_err(index_error)?;
    Ok(n)
}

/// Brings the index up to date after a run changed the entries of `mxids`: each one's
/// document replaced by its entry merged across sources (or deleted), in one commit.
/// A stale index, or a change to a quarter of it or more, is rebuilt whole instead
/// (cheaper than that many deletes). Returns the documents written.
pub async fn index_changes(state: &Services, source: &str, mxids: &[String]) -> Result<u64, Error> {
    let n = {
        let index = &state.directory;
        let mut writer = index.writer().map_err(index_error)?;
        // Decided holding the writer: no other write can fail in between unseen.
        let stale = index.is_stale();
        if stale || (mxids.len() as u64).saturating_mul(4) >= index.len() {
            if mxids.is_empty() && !stale {
                0
            } else {
                rebuild(state, writer, &Progress::default(), &pacer(state))?
            }
        } else {
            let pacer = pacer(state);
            for (i, mxid) in mxids.iter().enumerate() {
                if (i as u64 + 1).is_multiple_of(INDEX_STEP) {
                    pacer.pause_blocking();
                }
                let entry = state.store.directory_entry(mxid)?;
                writer.upsert(mxid, entry.as_ref()).map_err(index_error)?;
            }
            writer.commit_as(false).map_err(index_error)?;
            mxids.len() as u64
        }
    };
    state.store.set_index_dirty(source, false).await?;
    Ok(n)
}
