//! Reading bindings: a 3PID's whole record, the effective binding behind a client's
//! hash (the hot path of every lookup: a borrowed view of the stored bytes, nothing
//! allocated but the Matrix ID), and the number of bound 3PIDs. Read-only: nothing here
//! writes the tree.

use super::pepper::{hash_key, record_key};
use super::{ThreePidRecord, BINDING};
use crate::model::ThreePid;
use crate::store::{Store, StoreError};
use serde::{Deserialize, Serialize};

/// Borrowed views of the stored layout, for lookups: only the effective entry is kept
/// and nothing is allocated but its Matrix ID.
mod view {
    use super::HashEntry;
    use crate::model::Medium;
    use serde::de::{Deserializer, SeqAccess, Visitor};
    use serde::Deserialize;

    #[derive(Deserialize)]
    pub struct ThreePid<'a> {
        #[allow(dead_code)]
        medium: Medium,
        #[allow(dead_code)]
        address: &'a str,
    }

    #[derive(Deserialize)]
    pub enum Origin<'a> {
        Admin,
        Bind,
        Sync(#[allow(dead_code)] &'a str),
    }

    #[derive(Deserialize)]
    pub struct Entry<'a> {
        #[allow(dead_code)]
        #[serde(borrow)]
        origin: Origin<'a>,
        mxid: &'a str,
        #[allow(dead_code)]
        created_ms: u64,
        #[allow(dead_code)]
        updated_ms: u64,
        not_before_ms: u64,
        not_after_ms: u64,
    }

    impl Entry<'_> {
        pub fn to_hash_entry(&self) -> HashEntry {
            HashEntry {
                mxid: self.mxid.to_owned(),
                not_before_ms: self.not_before_ms,
                not_after_ms: self.not_after_ms,
            }
        }
    }

    /// The first element of the entries list (the effective one); the rest are read
    /// past without being kept.
    pub struct First<'a>(pub Option<Entry<'a>>);

    impl<'de: 'a, 'a> Deserialize<'de> for First<'a> {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V<'a>(std::marker::PhantomData<&'a ()>);
            impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
                type Value = First<'a>;
                fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    f.write_str("a list of binding entries")
                }
                fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<First<'a>, A::Error> {
                    let first = seq.next_element::<Entry<'a>>()?;
                    while seq.next_element::<Entry<'a>>()?.is_some() {}
                    Ok(First(first))
                }
            }
            d.deserialize_seq(V(std::marker::PhantomData))
        }
    }

    #[derive(Deserialize)]
    pub struct Record<'a> {
        #[allow(dead_code)]
        #[serde(borrow)]
        threepid: Option<ThreePid<'a>>,
        #[serde(borrow)]
        pub first: First<'a>,
    }
}

/// The effective binding in a stored record's bytes.
pub(super) fn effective_entry(bytes: &[u8]) -> Result<Option<HashEntry>, StoreError> {
    crate::store::codec::decode_view::<ThreePidRecord, view::Record<'_>>(bytes)
        .map(|r| r.first.0.map(|e| e.to_hash_entry()))
}

/// What a lookup needs of the effective binding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HashEntry {
    pub mxid: String,
    pub not_before_ms: u64,
    pub not_after_ms: u64,
}

impl HashEntry {
    /// Whether the binding holds at `now_ms`.
    pub fn live_at(&self, now_ms: u64) -> bool {
        self.not_before_ms <= now_ms && now_ms < self.not_after_ms
    }
}

impl Store {
    pub fn binding(&self, threepid: &ThreePid) -> Result<Option<ThreePidRecord>, StoreError> {
        let pepper = self.pepper();
        self.get(BINDING, &record_key(&pepper, threepid))
    }

    /// The effective binding of the 3PID whose hash is `digest` under pepper
    /// `generation`, read from the tree (lookups use [`Store::live_mxid`]).
    pub fn hashed(
        &self,
        generation: u32,
        digest: &[u8; 32],
    ) -> Result<Option<HashEntry>, StoreError> {
        let mut found: Result<Option<HashEntry>, StoreError> = Ok(None);
        self.kv
            .get_with(BINDING, &hash_key(generation, digest), &mut |bytes| {
                found = effective_entry(bytes);
            })?;
        found
    }

    /// Calls `f` with every 3PID whose effective binding is valid at `now_ms` (a full
    /// scan, in hash order); how many there were.
    pub fn each_bound_threepid(
        &self,
        now_ms: u64,
        f: &mut dyn FnMut(ThreePid),
    ) -> Result<u64, StoreError> {
        let generation = self.pepper_generation();
        let mut n = 0;
        for item in self.kv.scan_prefix(BINDING, &generation.to_be_bytes()) {
            let (_, value) = item?;
            let record: ThreePidRecord = crate::store::codec::decode(&value)?;
            let valid = record
                .effective()
                .is_some_and(|e| e.not_before_ms <= now_ms && now_ms < e.not_after_ms);
            if let (true, Some(threepid)) = (valid, record.threepid) {
                n += 1;
                f(threepid);
            }
        }
        Ok(n)
    }

    /// Number of 3PIDs with at least one binding (a full scan).
    pub fn binding_count(&self) -> Result<u64, StoreError> {
        let generation = self.pepper_generation();
        let mut n = 0;
        for item in self.kv.scan_prefix(BINDING, &generation.to_be_bytes()) {
            item?;
            n += 1;
        }
        Ok(n)
    }
}
