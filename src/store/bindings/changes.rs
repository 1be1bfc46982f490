//! Changing bindings: one origin's request (set, remove, remove if it still names a
//! Matrix ID) applied to the 3PID's record, entries kept in priority order, many changes
//! staged into one atomic batch under the bindings lock. It must not decide where a
//! record lives (that is [`super::pepper`]) nor answer lookups ([`super::lookup`]).

use super::pepper::record_key;
use super::{BindingEntry, Origin, ThreePidRecord, BINDING};
use crate::model::{now_ms, ThreePid};
use crate::store::codec::encode;
use crate::store::kv::Batch;
use crate::store::{Store, StoreError};
use std::collections::HashMap;

/// A change requested by one origin.
#[derive(Debug, Clone)]
pub enum BindingChange {
    Set {
        threepid: ThreePid,
        origin: Origin,
        mxid: String,
        not_before_ms: u64,
        not_after_ms: u64,
    },
    Remove {
        threepid: ThreePid,
        origin: Origin,
    },
    /// Removes the origin's entry only if it names `mxid` (an unbind must not take away
    /// a binding that changed meanwhile).
    RemoveIfMxid {
        threepid: ThreePid,
        origin: Origin,
        mxid: String,
    },
}

impl Store {
    /// Applies origin changes atomically and durably. Returns, for each change, the
    /// effective binding of its 3PID afterwards.
    pub async fn change_bindings(
        &self,
        changes: Vec<BindingChange>,
    ) -> Result<Vec<Option<BindingEntry>>, StoreError> {
        if changes.is_empty() {
            return Ok(Vec::new());
        }
        let outcome = {
            let _guard = self.bindings_lock.lock().await;
            let mut batch = Batch::new();
            let outcome = self.stage_binding_changes(changes, &mut batch)?;
            self.apply(batch)?;
            outcome
        };
        self.flusher.flush().await?;
        Ok(outcome)
    }

    /// Adds what `changes` do to the binding records to `batch` (the caller holds the
    /// bindings lock and applies the batch). Returns, for each change, the effective
    /// binding of its 3PID afterwards.
    pub(crate) fn stage_binding_changes(
        &self,
        changes: Vec<BindingChange>,
        batch: &mut Batch,
    ) -> Result<Vec<Option<BindingEntry>>, StoreError> {
        let pepper = self.pepper();
        let mut pending: HashMap<ThreePid, ThreePidRecord> = HashMap::new();
        let mut order = Vec::with_capacity(changes.len());
        let now = now_ms();
        for change in changes {
            let threepid = match &change {
                BindingChange::Set { threepid, .. }
                | BindingChange::Remove { threepid, .. }
                | BindingChange::RemoveIfMxid { threepid, .. } => threepid.clone(),
            };
            if !pending.contains_key(&threepid) {
                let mut record: ThreePidRecord = self
                    .get(BINDING, &record_key(&pepper, &threepid))?
                    .unwrap_or_default();
                record.threepid = Some(threepid.clone());
                pending.insert(threepid.clone(), record);
            }
            let record = pending.entry(threepid.clone()).or_default();
            apply_change(record, change, now);
            order.push(threepid);
        }
        for (threepid, record) in &pending {
            let key = record_key(&pepper, threepid).to_vec();
            if record.entries.is_empty() {
                batch.delete(BINDING, key);
            } else {
                batch.put(BINDING, key, encode(record)?);
            }
        }
        Ok(order
            .iter()
            .map(|t| pending.get(t).and_then(|r| r.effective().cloned()))
            .collect())
    }
}

/// Applies one origin's change to a record, keeping entries sorted by priority.
fn apply_change(record: &mut ThreePidRecord, change: BindingChange, now: u64) {
    match change {
        BindingChange::Set {
            origin,
            mxid,
            not_before_ms,
            not_after_ms,
            ..
        } => {
            // A new association starts when the caller said it does (its `not_before`,
            // read from the same clock reading as the rest of its answer), never later
            // than now.
            let created = not_before_ms.min(now);
            match record.entries.iter_mut().find(|e| e.origin == origin) {
                Some(e) => {
                    if e.mxid != mxid {
                        e.created_ms = created;
                    }
                    e.mxid = mxid;
                    e.updated_ms = now;
                    e.not_before_ms = not_before_ms;
                    e.not_after_ms = not_after_ms;
                }
                None => record.entries.push(BindingEntry {
                    origin,
                    mxid,
                    created_ms: created,
                    updated_ms: now,
                    not_before_ms,
                    not_after_ms,
                }),
            }
            record.entries.sort_by(|a, b| a.origin.cmp(&b.origin));
        }
        BindingChange::Remove { origin, .. } => {
            record.entries.retain(|e| e.origin != origin);
        }
        BindingChange::RemoveIfMxid { origin, mxid, .. } => {
            record
                .entries
                .retain(|e| !(e.origin == origin && e.mxid == mxid));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::bindings::lookup_hash;
    use crate::store::bindings::testing::{set, tp};

    #[tokio::test]
    async fn priority_and_the_hash_index_follow_the_effective_binding() {
        let store = Store::in_memory().unwrap();
        let a = tp("alice@example.org");
        let pepper = store.pepper();
        let digest = lookup_hash(&a, &pepper.pepper);
        let mxid_at = |s: &Store| {
            s.hashed(pepper.generation, &digest)
                .unwrap()
                .map(|h| h.mxid)
        };

        store
            .change_bindings(vec![set(&a, Origin::Sync("ldap".into()), "@sync:x")])
            .await
            .unwrap();
        assert_eq!(mxid_at(&store).as_deref(), Some("@sync:x"));
        store
            .change_bindings(vec![set(&a, Origin::Bind, "@bound:x")])
            .await
            .unwrap();
        assert_eq!(mxid_at(&store).as_deref(), Some("@bound:x"));
        store
            .change_bindings(vec![set(&a, Origin::Admin, "@admin:x")])
            .await
            .unwrap();
        assert_eq!(mxid_at(&store).as_deref(), Some("@admin:x"));
        let out = store
            .change_bindings(vec![BindingChange::Remove {
                threepid: a.clone(),
                origin: Origin::Admin,
            }])
            .await
            .unwrap();
        assert_eq!(out[0].as_ref().map(|e| e.mxid.as_str()), Some("@bound:x"));
        assert_eq!(mxid_at(&store).as_deref(), Some("@bound:x"));
        store
            .change_bindings(vec![
                BindingChange::Remove {
                    threepid: a.clone(),
                    origin: Origin::Bind,
                },
                BindingChange::Remove {
                    threepid: a.clone(),
                    origin: Origin::Sync("ldap".into()),
                },
            ])
            .await
            .unwrap();
        assert_eq!(mxid_at(&store), None);
        assert_eq!(store.binding(&a).unwrap(), None);
    }
}
