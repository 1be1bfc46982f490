//! 3PID validation sessions: what `requestToken` created, what `submitToken` proved.
//! A session is reachable by its `sid`, and by (medium, address, client_secret) so a
//! repeated `requestToken` finds it again instead of starting over.
//!
//! Trees:
//! - `session`: sid → [`SessionRecord`]
//! - `session_key`: `sha256(medium ‖ 0 ‖ address ‖ 0 ‖ client_secret)` → sid

use super::codec::{encode, Record};
use super::kv::Batch;
use super::{Store, StoreError};
use crate::model::ThreePid;
use serde::{Deserialize, Serialize};

pub(crate) const SESSION: &str = "session";
pub(crate) const SESSION_KEY: &str = "session_key";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRecord {
    pub sid: String,
    pub threepid: ThreePid,
    pub client_secret: String,
    /// The secret sent to the 3PID (kept so a resend carries the same token, and the
    /// links of earlier messages keep working).
    pub token: String,
    /// Highest `send_attempt` seen; a message is sent again only for a higher one.
    pub send_attempt: u64,
    /// Where `GET submitToken` redirects after success (http/https only).
    pub next_link: Option<String>,
    pub created_ms: u64,
    /// Last change; the session expires a lifetime after it.
    pub updated_ms: u64,
    pub validated_ms: Option<u64>,
    /// Wrong tokens submitted so far; at the configured cap the session is dead.
    pub failed_attempts: u32,
}

impl Record for SessionRecord {
    const VERSION: u8 = 1;
    const NAME: &'static str = "validation session";
}

fn session_key(threepid: &ThreePid, client_secret: &str) -> [u8; 32] {
    super::threepid_digest(threepid, client_secret.as_bytes())
}

impl Store {
    pub fn session(&self, sid: &str) -> Result<Option<SessionRecord>, StoreError> {
        self.get(SESSION, sid.as_bytes())
    }

    /// The session of (3PID, client secret), if there is one.
    pub fn session_for(
        &self,
        threepid: &ThreePid,
        client_secret: &str,
    ) -> Result<Option<SessionRecord>, StoreError> {
        let Some(sid) = self
            .kv
            .get(SESSION_KEY, &session_key(threepid, client_secret))?
        else {
            return Ok(None);
        };
        let sid = String::from_utf8(sid)
            .map_err(|_| StoreError::Corrupt("session index entry is not UTF-8".into()))?;
        Ok(self
            .session(&sid)?
            .filter(|s| s.threepid == *threepid && s.client_secret == client_secret))
    }

    /// Serialises read-modify-write of sessions (one writer at a time is plenty).
    pub async fn sessions_guard(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.sessions_lock.lock().await
    }

    /// Writes a session (and its index entry) durably.
    pub async fn put_session(&self, session: &SessionRecord) -> Result<(), StoreError> {
        let mut batch = Batch::new();
        batch.put(SESSION, session.sid.as_bytes().to_vec(), encode(session)?);
        batch.put(
            SESSION_KEY,
            session_key(&session.threepid, &session.client_secret).to_vec(),
            session.sid.as_bytes().to_vec(),
        );
        self.commit(batch).await
    }

    /// Deletes every session last changed before `cutoff_ms`. Returns how many.
    pub async fn purge_sessions(&self, cutoff_ms: u64) -> Result<usize, StoreError> {
        let _guard = self.sessions_guard().await;
        let (batches, purged) = self.stale_sessions(cutoff_ms)?;
        for batch in batches {
            self.commit(batch).await?;
        }
        Ok(purged)
    }

    /// Deletion batches (of at most 10,000 changes) for sessions older than the cutoff.
    fn stale_sessions(&self, cutoff_ms: u64) -> Result<(Vec<Batch>, usize), StoreError> {
        let mut batches = vec![Batch::new()];
        let mut purged = 0;
        for entry in self.kv.scan_prefix(SESSION, b"") {
            let (key, value) = entry?;
            let Some(batch) = batches.last_mut() else {
                break;
            };
            match super::codec::decode::<SessionRecord>(&value) {
                Ok(s) if s.updated_ms >= cutoff_ms => continue,
                Ok(s) => {
                    // The index may point at a newer session of the same triple by now.
                    let index = session_key(&s.threepid, &s.client_secret);
                    if self.kv.get(SESSION_KEY, &index)?.as_deref() == Some(s.sid.as_bytes()) {
                        batch.delete(SESSION_KEY, index.to_vec());
                    }
                }
                // An unreadable record helps nobody: drop it with the rest.
                Err(_) => {}
            }
            batch.delete(SESSION, key);
            purged += 1;
            if batch.len() >= 10_000 {
                batches.push(Batch::new());
            }
        }
        Ok((batches, purged))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Medium;

    fn record(sid: &str, secret: &str, updated: u64) -> SessionRecord {
        SessionRecord {
            sid: sid.into(),
            threepid: ThreePid::new(Medium::Email, "a@example.org").unwrap(),
            client_secret: secret.into(),
            token: "t".into(),
            send_attempt: 1,
            next_link: None,
            created_ms: updated,
            updated_ms: updated,
            validated_ms: None,
            failed_attempts: 0,
        }
    }

    #[tokio::test]
    async fn sessions_are_found_by_sid_and_by_triple_and_purged() {
        let store = Store::in_memory().unwrap();
        store.put_session(&record("s1", "c1", 100)).await.unwrap();
        store.put_session(&record("s2", "c2", 200)).await.unwrap();
        let tp = ThreePid::new(Medium::Email, "A@example.org").unwrap();
        assert_eq!(store.session_for(&tp, "c1").unwrap().unwrap().sid, "s1");
        assert!(store.session_for(&tp, "c3").unwrap().is_none());
        assert_eq!(store.purge_sessions(150).await.unwrap(), 1);
        assert!(store.session("s1").unwrap().is_none());
        assert!(store.session_for(&tp, "c1").unwrap().is_none());
        assert!(store.session("s2").unwrap().is_some());
        // An old session replaced by a newer one of the same triple: purging the old
        // one leaves the newer one findable.
        store.put_session(&record("old", "c9", 100)).await.unwrap();
        store.put_session(&record("new", "c9", 900)).await.unwrap();
        // (s2, last changed at 200, goes too.)
        assert_eq!(store.purge_sessions(500).await.unwrap(), 2);
        assert_eq!(store.session_for(&tp, "c9").unwrap().unwrap().sid, "new");
    }
}
