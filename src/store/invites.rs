//! 3PID room invites waiting for their address to be bound, the ephemeral keys made for
//! them, and the outbox of onbind deliveries to homeservers.
//!
//! Trees:
//! - `invite`: token → [`InviteRecord`]
//! - `invite_addr`: `sha256(medium ‖ 0 ‖ address)` ‖ token → empty (pending invites of
//!   an address)
//! - `ephemeral_key`: public key (unpadded base64) → [`EphemeralKey`]
//! - `outbox`: id (creation ms, big-endian, ‖ 8 random bytes) → [`OutboxItem`]
//!
//! Taking an address's invites into the outbox is one atomic batch: an invite is either
//! pending or on its way, never both, never lost.

use super::codec::{decode, encode, Record};
use super::kv::Batch;
use super::{Store, StoreError};
use crate::model::ThreePid;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub(crate) const INVITE: &str = "invite";
pub(crate) const INVITE_ADDR: &str = "invite_addr";
pub(crate) const EPHEMERAL: &str = "ephemeral_key";
pub(crate) const OUTBOX: &str = "outbox";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InviteRecord {
    pub token: String,
    pub threepid: ThreePid,
    pub room_id: String,
    pub sender: String,
    /// The ephemeral public key made for this invite (unpadded base64).
    pub ephemeral_public_key: String,
    pub created_ms: u64,
    /// The other string fields of the request (room name, alias, sender name, ...).
    pub details: BTreeMap<String, String>,
}

impl Record for InviteRecord {
    const VERSION: u8 = 1;
    const NAME: &'static str = "3PID invite";
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EphemeralKey {
    pub created_ms: u64,
}

impl Record for EphemeralKey {
    const VERSION: u8 = 1;
    const NAME: &'static str = "ephemeral key";
}

/// One onbind callback to deliver.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxItem {
    /// Server name of the homeserver to call (the bound Matrix ID's).
    pub destination: String,
    /// The JSON body (the signed association with its invites).
    pub body: String,
    /// Tokens of the invites it carries, for operators.
    pub invites: Vec<String>,
    pub created_ms: u64,
    pub attempts: u32,
    pub next_attempt_ms: u64,
    pub last_error: Option<String>,
    /// Out of attempts: kept for operators, not retried.
    pub failed: bool,
}

impl Record for OutboxItem {
    const VERSION: u8 = 1;
    const NAME: &'static str = "outbox item";
}

fn address_key(threepid: &ThreePid) -> [u8; 32] {
    super::threepid_digest(threepid, b"")
}

fn index_key(threepid: &ThreePid, token: &str) -> Vec<u8> {
    let mut k = address_key(threepid).to_vec();
    k.extend_from_slice(token.as_bytes());
    k
}

/// Adds an invite, its address index entry and its ephemeral key to `batch`.
pub(crate) fn put_invite_ops(batch: &mut Batch, invite: &InviteRecord) -> Result<(), StoreError> {
    batch.put(INVITE, invite.token.as_bytes().to_vec(), encode(invite)?);
    batch.put(
        INVITE_ADDR,
        index_key(&invite.threepid, &invite.token),
        Vec::new(),
    );
    batch.put(
        EPHEMERAL,
        invite.ephemeral_public_key.as_bytes().to_vec(),
        encode(&EphemeralKey {
            created_ms: invite.created_ms,
        })?,
    );
    Ok(())
}

impl Store {
    /// Stores a new invite and its ephemeral key, durably.
    pub async fn put_invite(&self, invite: &InviteRecord) -> Result<(), StoreError> {
        let mut batch = Batch::new();
        put_invite_ops(&mut batch, invite)?;
        self.commit(batch).await
    }

    pub fn invite(&self, token: &str) -> Result<Option<InviteRecord>, StoreError> {
        self.get(INVITE, token.as_bytes())
    }

    /// Pending invites of one address.
    pub fn invites_for(&self, threepid: &ThreePid) -> Result<Vec<InviteRecord>, StoreError> {
        let prefix = address_key(threepid);
        let mut out = Vec::new();
        for entry in self.kv.scan_prefix(INVITE_ADDR, &prefix) {
            let (key, _) = entry?;
            if let Some(invite) = self.invite(&String::from_utf8_lossy(&key[32..]))? {
                out.push(invite);
            }
        }
        Ok(out)
    }

    /// Whether an address has an invite waiting (cheap: one key looked at).
    pub fn has_invites(&self, threepid: &ThreePid) -> Result<bool, StoreError> {
        Ok(self
            .kv
            .scan_prefix(INVITE_ADDR, &address_key(threepid))
            .next()
            .transpose()?
            .is_some())
    }

    /// Whether any invite waits at all.
    pub fn has_any_invites(&self) -> Result<bool, StoreError> {
        Ok(self
            .kv
            .scan_prefix(INVITE_ADDR, b"")
            .next()
            .transpose()?
            .is_some())
    }

    /// Every pending invite (for operators).
    pub fn all_invites(&self) -> Result<Vec<InviteRecord>, StoreError> {
        self.kv
            .scan_prefix(INVITE, b"")
            .map(|entry| entry.and_then(|(_, v)| decode(&v)))
            .collect()
    }

    /// Removes one invite (its ephemeral key stays valid until it expires). Returns
    /// whether it existed.
    pub async fn remove_invite(&self, token: &str) -> Result<bool, StoreError> {
        let _guard = self.invites_lock.lock().await;
        let Some(invite) = self.invite(token)? else {
            return Ok(false);
        };
        let mut batch = Batch::new();
        batch.delete(INVITE, token.as_bytes().to_vec());
        batch.delete(INVITE_ADDR, index_key(&invite.threepid, token));
        // A removed invite's key must not keep vouching for signatures.
        batch.delete(EPHEMERAL, invite.ephemeral_public_key.as_bytes().to_vec());
        self.commit(batch).await?;
        Ok(true)
    }

    /// The ephemeral key with this public part, if we made it and still keep it.
    pub fn ephemeral_key(&self, public_key: &str) -> Result<Option<EphemeralKey>, StoreError> {
        self.get(EPHEMERAL, public_key.as_bytes())
    }

    /// Takes the pending invites of `threepid` out, atomically and durably, replacing
    /// them with the outbox item `build` makes of them (none: they are only dropped).
    /// Returns the invites taken (empty when there were none).
    pub async fn take_invites<F>(
        &self,
        threepid: &ThreePid,
        build: F,
    ) -> Result<Vec<InviteRecord>, StoreError>
    where
        F: FnOnce(&[InviteRecord]) -> Result<Option<OutboxItem>, StoreError>,
    {
        let _guard = self.invites_lock.lock().await;
        let invites = self.invites_for(threepid)?;
        if invites.is_empty() {
            return Ok(invites);
        }
        let item = build(&invites)?;
        let mut batch = Batch::new();
        for invite in &invites {
            batch.delete(INVITE, invite.token.as_bytes().to_vec());
            batch.delete(INVITE_ADDR, index_key(threepid, &invite.token));
        }
        if let Some(item) = item {
            batch.put(OUTBOX, outbox_id(item.created_ms)?, encode(&item)?);
        }
        self.commit(batch).await?;
        Ok(invites)
    }

    /// Every outbox item, oldest first. An unreadable one is reported and skipped, so
    /// it cannot hold up the others.
    pub fn outbox(&self) -> Result<Vec<(Vec<u8>, OutboxItem)>, StoreError> {
        let mut out = Vec::new();
        for entry in self.kv.scan_prefix(OUTBOX, b"") {
            let (key, value) = entry?;
            match decode(&value) {
                Ok(item) => out.push((key, item)),
                Err(e) => tracing::error!(error = %e, "an unreadable outbox item is left out"),
            }
        }
        Ok(out)
    }

    /// Puts every failed outbox item back in line. Returns how many.
    pub async fn retry_failed_outbox(&self) -> Result<usize, StoreError> {
        let mut batch = Batch::new();
        let now = crate::model::now_ms();
        for (id, mut item) in self.outbox()? {
            if item.failed {
                item.failed = false;
                item.attempts = 0;
                item.next_attempt_ms = now;
                batch.put(OUTBOX, id, encode(&item)?);
            }
        }
        let n = batch.len();
        self.commit(batch).await?;
        Ok(n)
    }

    pub async fn update_outbox(&self, id: &[u8], item: &OutboxItem) -> Result<(), StoreError> {
        let mut batch = Batch::new();
        batch.put(OUTBOX, id.to_vec(), encode(item)?);
        self.commit(batch).await
    }

    pub async fn delete_outbox(&self, id: &[u8]) -> Result<(), StoreError> {
        let mut batch = Batch::new();
        batch.delete(OUTBOX, id.to_vec());
        self.commit(batch).await
    }

    /// Drops invites and ephemeral keys created before `cutoff_ms`. Returns how many
    /// invites went.
    pub async fn expire_invites(&self, cutoff_ms: u64) -> Result<usize, StoreError> {
        let _guard = self.invites_lock.lock().await;
        let mut batch = Batch::new();
        let mut expired = 0;
        for invite in self.all_invites()? {
            if invite.created_ms < cutoff_ms {
                batch.delete(INVITE, invite.token.as_bytes().to_vec());
                batch.delete(INVITE_ADDR, index_key(&invite.threepid, &invite.token));
                expired += 1;
            }
        }
        for entry in self.kv.scan_prefix(EPHEMERAL, b"") {
            let (key, value) = entry?;
            if decode::<EphemeralKey>(&value).map_or(true, |k| k.created_ms < cutoff_ms) {
                batch.delete(EPHEMERAL, key);
            }
        }
        self.commit(batch).await?;
        Ok(expired)
    }
}

fn outbox_id(created_ms: u64) -> Result<Vec<u8>, StoreError> {
    let random = crate::crypto::random_bytes::<8>().map_err(|e| StoreError::Io {
        what: "random outbox id".into(),
        detail: e.to_string(),
    })?;
    let mut id = created_ms.to_be_bytes().to_vec();
    id.extend_from_slice(&random);
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Medium;

    fn invite(token: &str, address: &str, created: u64) -> InviteRecord {
        InviteRecord {
            token: token.into(),
            threepid: ThreePid::new(Medium::Email, address).unwrap(),
            room_id: "!r:x".into(),
            sender: "@s:x".into(),
            ephemeral_public_key: format!("key-{token}"),
            created_ms: created,
            details: BTreeMap::new(),
        }
    }

    fn item(created_ms: u64) -> OutboxItem {
        OutboxItem {
            destination: "x".into(),
            body: "{}".into(),
            invites: vec![],
            created_ms,
            attempts: 0,
            next_attempt_ms: 0,
            last_error: None,
            failed: false,
        }
    }

    #[tokio::test]
    async fn invites_move_to_the_outbox_atomically_and_expire() {
        let store = Store::in_memory().unwrap();
        store
            .put_invite(&invite("t1", "a@x.org", 100))
            .await
            .unwrap();
        store
            .put_invite(&invite("t2", "a@x.org", 200))
            .await
            .unwrap();
        store
            .put_invite(&invite("t3", "b@x.org", 300))
            .await
            .unwrap();
        let a = ThreePid::new(Medium::Email, "a@x.org").unwrap();
        assert_eq!(store.invites_for(&a).unwrap().len(), 2);
        assert!(store.ephemeral_key("key-t1").unwrap().is_some());

        let taken = store
            .take_invites(&a, |invites| {
                assert_eq!(invites.len(), 2);
                Ok(Some(item(500)))
            })
            .await
            .unwrap();
        assert_eq!(taken.len(), 2);
        assert!(store.invites_for(&a).unwrap().is_empty());
        assert!(store.invite("t1").unwrap().is_none());
        let none = store.take_invites(&a, |_| Ok(Some(item(1)))).await.unwrap();
        assert!(none.is_empty());
        let outbox = store.outbox().unwrap();
        assert_eq!(outbox.len(), 1);
        let mut failed = outbox[0].1.clone();
        failed.failed = true;
        failed.attempts = 9;
        store.update_outbox(&outbox[0].0, &failed).await.unwrap();
        assert_eq!(store.retry_failed_outbox().await.unwrap(), 1);
        let again = store.outbox().unwrap();
        assert!(!again[0].1.failed && again[0].1.attempts == 0);
        store.delete_outbox(&outbox[0].0).await.unwrap();
        assert!(store.outbox().unwrap().is_empty());

        assert!(store.ephemeral_key("key-t3").unwrap().is_some());
        assert!(store.remove_invite("t3").await.unwrap());
        assert!(!store.remove_invite("t3").await.unwrap());
        assert!(store.ephemeral_key("key-t3").unwrap().is_none());
        store
            .put_invite(&invite("t4", "c@x.org", 1000))
            .await
            .unwrap();
        assert_eq!(store.expire_invites(500).await.unwrap(), 0);
        assert!(store.ephemeral_key("key-t1").unwrap().is_none());
        assert!(store.ephemeral_key("key-t4").unwrap().is_some());
        assert_eq!(store.expire_invites(2000).await.unwrap(), 1);
        assert!(store.all_invites().unwrap().is_empty());
    }
}
