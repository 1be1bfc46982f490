//! A directory entry refreshed by a login: what a source said of a user when it
//! accepted their password replaces that source's entry, outside the sync runs. It
//! must not touch bindings (who owns a 3PID changes with runs only).

use super::{index_changes, resolve};
use crate::service::Services;

/// After a password check `source` accepted: its entry for the user becomes what the
/// source gave (display name, 3PIDs, roles), so search sees a change before the next
/// run. Bindings still follow runs only: a login does not decide who owns a 3PID.
pub async fn refresh_from_login(
    state: &Services,
    source: &str,
    user: crate::config::stores::UserSpec,
) {
    let domain = state.config().matrix.domain.clone();
    let fetched = crate::source::Fetched {
        users: vec![user],
        problems: Vec::new(),
        skipped: 0,
    };
    let Some((mxid, entry)) = resolve(fetched, &domain, &crate::pace::Pacer::default())
        .users
        .into_iter()
        .next()
    else {
        return;
    };
    match state
        .store
        .refresh_directory_user(source, &mxid, &entry)
        .await
    {
        Ok(false) => {}
        Ok(true) => {
            if let Err(e) = index_changes(state, source, std::slice::from_ref(&mxid)).await {
                tracing::warn!(source, error = %e.message, "a login's directory entry is stored but not yet searchable");
            }
        }
        Err(e) => {
            tracing::warn!(source, error = %e, "cannot store the directory entry a login brought")
        }
    }
}
