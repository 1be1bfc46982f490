//! Bulk import from another identity server (`mxisd import-ma1sd`): pending invites
//! with their ephemeral keys, and users' accepted terms, written as one atomic batch so
//! an import lands whole or not at all. Nothing else writes through here.

use super::accounts::{UserRecord, ACCOUNT_TOKEN, ACCOUNT_USER};
use super::bindings::BINDING;
use super::codec::encode;
use super::invites::{InviteRecord, EPHEMERAL, INVITE};
use super::kv::Batch;
use super::sessions::SESSION;
use super::{now_ms, Store, StoreError};
use std::collections::{BTreeMap, BTreeSet};

/// Trees whose entries are users' data (the pepper, schema and sync bookkeeping are
/// not: a fresh store has those too).
const USER_DATA: &[&str] = &[
    INVITE,
    EPHEMERAL,
    ACCOUNT_USER,
    ACCOUNT_TOKEN,
    BINDING,
    SESSION,
];

impl Store {
    /// Entries of users' data (invites, accounts, bindings, sessions); 0 for a store
    /// nothing was ever imported into or served from.
    pub fn user_data_entries(&self) -> Result<u64, StoreError> {
        let mut n = 0;
        for tree in USER_DATA {
            n += self.kv.count(tree)?;
        }
        Ok(n)
    }

    /// Adds `invites` (with their ephemeral keys) and `accepted` terms (user ID → URLs,
    /// merged with what the user accepted already) in one atomic, durable batch.
    pub async fn import(
        &self,
        invites: &[InviteRecord],
        accepted: &BTreeMap<String, BTreeSet<String>>,
    ) -> Result<(), StoreError> {
        let _invites = self.invites_lock.lock().await;
        let _accounts = self.accounts_lock.lock().await;
        let mut batch = Batch::new();
        for invite in invites {
            super::invites::put_invite_ops(&mut batch, invite)?;
        }
        for (user_id, urls) in accepted {
            let mut user = self.user(user_id)?.unwrap_or_else(|| UserRecord {
                created_ms: now_ms(),
                accepted_terms: BTreeSet::new(),
            });
            user.accepted_terms.extend(urls.iter().cloned());
            batch.put(ACCOUNT_USER, user_id.as_bytes().to_vec(), encode(&user)?);
        }
        self.commit(batch).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Medium, ThreePid};

    #[tokio::test]
    async fn imports_invites_and_merges_terms() {
        let store = Store::in_memory().unwrap();
        assert_eq!(store.user_data_entries().unwrap(), 0);
        store
            .accept_terms("@a:x", &["https://x/old".into()])
            .await
            .unwrap();
        let invite = InviteRecord {
            token: "tok".into(),
            threepid: ThreePid::new(Medium::Email, "a@x.org").unwrap(),
            room_id: "!r:x".into(),
            sender: "@s:x".into(),
            ephemeral_public_key: "pub".into(),
            created_ms: 5,
            details: BTreeMap::new(),
        };
        let mut accepted = BTreeMap::new();
        accepted.insert(
            "@a:x".to_owned(),
            BTreeSet::from(["https://x/new".to_owned()]),
        );
        store
            .import(std::slice::from_ref(&invite), &accepted)
            .await
            .unwrap();
        assert_eq!(store.invite("tok").unwrap(), Some(invite.clone()));
        assert_eq!(store.invites_for(&invite.threepid).unwrap().len(), 1);
        assert_eq!(store.ephemeral_key("pub").unwrap().unwrap().created_ms, 5);
        let user = store.user("@a:x").unwrap().unwrap();
        assert_eq!(user.accepted_terms.len(), 2);
        assert!(store.user_data_entries().unwrap() >= 3);
    }
}
