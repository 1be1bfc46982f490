//! The directory entries the sync sources list: one source's users as it last gave
//! them, and every source's entries merged by Matrix ID (what search indexes). Entries
//! are written by a run ([`super::apply`]), and one at a time by a successful password
//! check, which sees the user as the source has them now ([`Store::refresh_directory_user`]).

use super::{source_prefix, user_key, SYNC_DIGEST, SYNC_USER};
use crate::model::DirectoryUser;
use crate::store::codec::{decode, encode, Record};
use crate::store::kv::Batch;
use crate::store::{Store, StoreError};
use std::collections::BTreeMap;

impl Record for DirectoryUser {
    const VERSION: u8 = 1;
    const NAME: &'static str = "directory user";
}

/// Adds another source's entry for the same user: the first display name, everyone's
/// 3PIDs, attributes and roles.
fn merge_into(merged: &mut DirectoryUser, user: DirectoryUser) {
    if merged.display_name.is_none() {
        merged.display_name = user.display_name;
    }
    for t in user.threepids {
        if !merged.threepids.contains(&t) {
            merged.threepids.push(t);
        }
    }
    for (k, v) in user.attributes {
        merged.attributes.values_of(k).extend(v);
    }
    merged.roles.extend(user.roles);
}

impl Store {
    /// The users `source` listed at its last applied run, by Matrix ID.
    pub fn directory_users(
        &self,
        source: &str,
    ) -> Result<BTreeMap<String, DirectoryUser>, StoreError> {
        let prefix = source_prefix(source);
        self.kv
            .scan_prefix(SYNC_USER, &prefix)
            .map(|e| {
                e.and_then(|(k, v)| {
                    let mxid = String::from_utf8_lossy(&k[prefix.len()..]).into_owned();
                    Ok((mxid, decode(&v)?))
                })
            })
            .collect()
    }

    /// Every source's directory entries, merged by Matrix ID (what search indexes),
    /// handed to `f` one at a time without holding them all: the first source's display
    /// name (in [`Self::sync_sources`] order), everyone's 3PIDs, attributes and roles.
    /// Returns how many were handed over.
    pub fn each_directory_entry<E: From<StoreError>>(
        &self,
        mut f: impl FnMut(&str, DirectoryUser) -> Result<(), E>,
    ) -> Result<u64, E> {
        let sources = self.sync_sources()?;
        let mut n = 0;
        for (i, source) in sources.iter().enumerate() {
            let prefix = source_prefix(source);
            for e in self.kv.scan_prefix(SYNC_USER, &prefix) {
                let (k, v) = e?;
                let mxid = String::from_utf8_lossy(&k[prefix.len()..]).into_owned();
                // Listed by an earlier source too: handed over with that one's.
                let mut earlier = false;
                for s in &sources[..i] {
                    if self.kv.get(SYNC_USER, &user_key(s, &mxid))?.is_some() {
                        earlier = true;
                        break;
                    }
                }
                if earlier {
                    continue;
                }
                let mut user: DirectoryUser = decode(&v)?;
                for later in &sources[i + 1..] {
                    if let Some(raw) = self.kv.get(SYNC_USER, &user_key(later, &mxid))? {
                        merge_into(&mut user, decode(&raw)?);
                    }
                }
                f(&mxid, user)?;
                n += 1;
            }
        }
        Ok(n)
    }

    /// Whether any source lists anyone (cheap: the first entry only).
    pub fn has_directory_listings(&self) -> Result<bool, StoreError> {
        match self.kv.scan_prefix(SYNC_USER, b"").next() {
            Some(e) => e.map(|_| true),
            None => Ok(false),
        }
    }

    /// How many directory entries the sources list, a user listed by two counting
    /// twice (what a rebuild's progress counts up to, at most).
    pub fn directory_listings(&self) -> Result<u64, StoreError> {
        let mut n = 0;
        for e in self.kv.scan_prefix(SYNC_USER, b"") {
            e?;
            n += 1;
        }
        Ok(n)
    }

    /// Replaces `source`'s entry for `mxid` with `user`, as the source gave it to a
    /// password check; false when it was already that. A change also forgets the
    /// source's last fetch digest, so its next run compares every entry again.
    pub async fn refresh_directory_user(
        &self,
        source: &str,
        mxid: &str,
        user: &DirectoryUser,
    ) -> Result<bool, StoreError> {
        let key = user_key(source, mxid);
        if let Some(raw) = self.kv.get(SYNC_USER, &key)? {
            if decode::<DirectoryUser>(&raw)? == *user {
                return Ok(false);
            }
        }
        let mut batch = Batch::new();
        batch.put(SYNC_USER, key, encode(user)?);
        batch.delete(SYNC_DIGEST, source.as_bytes().to_vec());
        self.commit(batch).await?;
        Ok(true)
    }

    /// One user's directory entry, merged across sources like [`Self::directory_entries`].
    pub fn directory_entry(&self, mxid: &str) -> Result<Option<DirectoryUser>, StoreError> {
        let mut merged: Option<DirectoryUser> = None;
        for source in self.sync_sources()? {
            let mut key = source_prefix(&source);
            key.extend_from_slice(mxid.as_bytes());
            let Some(raw) = self.kv.get(SYNC_USER, &key)? else {
                continue;
            };
            let user: DirectoryUser = decode(&raw)?;
            match &mut merged {
                None => merged = Some(user),
                Some(m) => merge_into(m, user),
            }
        }
        Ok(merged)
    }
}
