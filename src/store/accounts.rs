//! Identity-server accounts: access tokens (stored as SHA-256 digests, never in clear)
//! and, per user, the terms they accepted. Live tokens seen recently are also kept in a
//! bounded in-memory map, so authenticating a request does not read the store.
//!
//! Trees:
//! - `account_token`: `sha256(token)` → [`TokenRecord`]
//! - `account_user`: user ID → [`UserRecord`]

use super::codec::{encode, Record};
use super::kv::Batch;
use super::{now_ms, Store, StoreError};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeSet;
use std::sync::atomic::Ordering;

pub(crate) const ACCOUNT_TOKEN: &str = "account_token";
pub(crate) const ACCOUNT_USER: &str = "account_user";

/// Most tokens kept in memory (about 100 bytes each); past it the cache starts over.
const TOKEN_CACHE_MAX: usize = 100_000;

/// Token → token record, for live tokens seen recently (keyed by the token itself, so a
/// hit costs no hashing beyond the map's).
pub(crate) type TokenCache =
    std::sync::RwLock<std::collections::HashMap<Box<str>, std::sync::Arc<TokenRecord>>>;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    pub user_id: String,
    pub created_ms: u64,
}

impl Record for TokenRecord {
    const VERSION: u8 = 1;
    const NAME: &'static str = "access token";
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRecord {
    pub created_ms: u64,
    /// Policy URLs the user accepted (every version and language they ever accepted).
    pub accepted_terms: BTreeSet<String>,
}

impl Record for UserRecord {
    const VERSION: u8 = 1;
    const NAME: &'static str = "account";
}

/// The digest a token is stored and looked up under.
pub fn token_digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

impl Store {
    /// Records a new token for `user_id`, creating the account on first use.
    pub async fn create_token(&self, user_id: &str, token: &str) -> Result<(), StoreError> {
        let now = now_ms();
        let mut batch = Batch::new();
        batch.put(
            ACCOUNT_TOKEN,
            token_digest(token).to_vec(),
            encode(&TokenRecord {
                user_id: user_id.to_owned(),
                created_ms: now,
            })?,
        );
        let _guard = self.accounts_lock.lock().await;
        if self.user(user_id)?.is_none() {
            batch.put(
                ACCOUNT_USER,
                user_id.as_bytes().to_vec(),
                encode(&UserRecord {
                    created_ms: now,
                    accepted_terms: BTreeSet::new(),
                })?,
            );
        }
        self.apply(batch)?;
        drop(_guard);
        self.flusher.flush().await
    }

    /// The owner of a token, if the token is live.
    pub fn token_owner(
        &self,
        token: &str,
    ) -> Result<Option<std::sync::Arc<TokenRecord>>, StoreError> {
        if let Some(hit) = self
            .token_cache
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(token)
        {
            return Ok(Some(std::sync::Arc::clone(hit)));
        }
        let digest = token_digest(token);
        let epoch = self.token_epoch.load(Ordering::SeqCst);
        let Some(record) = self.get::<TokenRecord>(ACCOUNT_TOKEN, &digest)? else {
            // Unknown tokens are not cached: random guesses must not fill memory.
            return Ok(None);
        };
        let record = std::sync::Arc::new(record);
        let mut cache = self.token_cache.write().unwrap_or_else(|p| p.into_inner());
        // A revocation since our read: the record may be gone already; do not revive it.
        if self.token_epoch.load(Ordering::SeqCst) == epoch {
            if cache.len() >= TOKEN_CACHE_MAX {
                cache.clear();
            }
            cache.insert(token.into(), std::sync::Arc::clone(&record));
        }
        Ok(Some(record))
    }

    /// Revokes one token. Returns whether it existed.
    pub async fn revoke_token(&self, token: &str) -> Result<bool, StoreError> {
        let digest = token_digest(token);
        if self.kv.get(ACCOUNT_TOKEN, &digest)?.is_none() {
            return Ok(false);
        }
        let mut batch = Batch::new();
        batch.delete(ACCOUNT_TOKEN, digest.to_vec());
        self.apply(batch)?;
        {
            let mut cache = self.token_cache.write().unwrap_or_else(|p| p.into_inner());
            self.token_epoch.fetch_add(1, Ordering::SeqCst);
            cache.remove(token);
        }
        self.flusher.flush().await?;
        Ok(true)
    }

    pub fn user(&self, user_id: &str) -> Result<Option<UserRecord>, StoreError> {
        self.get(ACCOUNT_USER, user_id.as_bytes())
    }

    /// Adds `urls` to the user's accepted terms.
    pub async fn accept_terms(&self, user_id: &str, urls: &[String]) -> Result<(), StoreError> {
        let guard = self.accounts_lock.lock().await;
        let mut user = self.user(user_id)?.unwrap_or_else(|| UserRecord {
            created_ms: now_ms(),
            accepted_terms: BTreeSet::new(),
        });
        user.accepted_terms.extend(urls.iter().cloned());
        let mut batch = Batch::new();
        batch.put(ACCOUNT_USER, user_id.as_bytes().to_vec(), encode(&user)?);
        self.apply(batch)?;
        drop(guard);
        self.flusher.flush().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn tokens_and_terms() {
        let store = Store::in_memory().unwrap();
        store.create_token("@a:x", "tok1").await.unwrap();
        store.create_token("@a:x", "tok2").await.unwrap();
        assert_eq!(store.token_owner("tok1").unwrap().unwrap().user_id, "@a:x");
        assert!(store.token_owner("nope").unwrap().is_none());
        // Only the digest is stored.
        assert!(store.kv.get(ACCOUNT_TOKEN, b"tok1").unwrap().is_none());
        assert!(store.revoke_token("tok1").await.unwrap());
        assert!(!store.revoke_token("tok1").await.unwrap());
        assert!(store.token_owner("tok1").unwrap().is_none());
        assert!(store.token_owner("tok2").unwrap().is_some());
        store
            .accept_terms("@a:x", &["https://x/tos".into()])
            .await
            .unwrap();
        store
            .accept_terms("@a:x", &["https://x/privacy".into()])
            .await
            .unwrap();
        let user = store.user("@a:x").unwrap().unwrap();
        assert_eq!(user.accepted_terms.len(), 2);
    }
}
