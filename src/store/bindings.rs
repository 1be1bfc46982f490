//! 3PID bindings in the store. One record per 3PID holds what each origin says about it
//! (an operator command, a user's `/3pid/bind`, each sync source); the *effective*
//! binding is the entry of highest priority, and it is what lookups answer.
//!
//! Tree `binding`: `generation (u32 BE) ‖ sha256("<address> <medium> <pepper>")` →
//! [`ThreePidRecord`] (with its 3PID), under the current pepper generation. One entry
//! per 3PID serves both lookups: a hashed one reads the client's hash directly, a plain
//! one hashes the normalised address first. (A second index keyed by address doubled
//! sled's entries, and sled's memory at open grows with their number: measured ~50
//! bytes per entry.) A pepper rotation rewrites every record under the new generation.
//!
//! Writers of bindings are serialised by `Store::bindings_lock`, so read-modify-write of
//! a record cannot interleave; the flush happens after the lock is released, so
//! concurrent writers still share fsyncs.
//!
//! This file owns the record itself (origins, entries, their priority order) and the
//! tree's name; it must not read or write the tree. Where a record lives and the pepper
//! rotation are in [`pepper`], writing changes in [`changes`], reading in [`lookup`].

mod changes;
mod lookup;
mod pepper;
mod table;

pub use changes::BindingChange;
pub use lookup::HashEntry;
pub use pepper::{lookup_hash, PepperState};
pub(crate) use table::LookupTable;

use super::codec::Record;
use crate::model::ThreePid;
use serde::{Deserialize, Serialize};

pub(crate) const BINDING: &str = "binding";

/// Who asserted a binding. The order of the variants is the priority: an operator's
/// command beats a user's bind, which beats a sync source; sync sources rank by name
/// until sources carry a configured priority.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Origin {
    Admin,
    Bind,
    Sync(String),
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Admin => f.write_str("admin"),
            Self::Bind => f.write_str("bind"),
            Self::Sync(source) => write!(f, "sync:{source}"),
        }
    }
}

/// One origin's statement about a 3PID.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BindingEntry {
    pub origin: Origin,
    pub mxid: String,
    /// When this origin first bound the 3PID (unix ms), and when it last changed it.
    pub created_ms: u64,
    pub updated_ms: u64,
    /// Validity window of the association (spec: `not_before`, `not_after`).
    pub not_before_ms: u64,
    pub not_after_ms: u64,
}

/// Everything known about one 3PID, entries sorted by priority. (`lookup`'s borrowed
/// view mirrors this layout field for field: change both together.)
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThreePidRecord {
    /// The 3PID itself (the key is only its hash), for rotations and operators.
    pub threepid: Option<ThreePid>,
    pub entries: Vec<BindingEntry>,
}

impl Record for ThreePidRecord {
    const VERSION: u8 = 1;
    const NAME: &'static str = "3PID binding";
}

impl ThreePidRecord {
    /// The binding lookups answer with.
    pub fn effective(&self) -> Option<&BindingEntry> {
        self.entries.first()
    }
}

/// Helpers for the tests of this module's files.
#[cfg(test)]
pub(crate) mod testing {
    use super::{BindingChange, Origin};
    use crate::model::{Medium, ThreePid};

    /// An e-mail address if `a` has an `@`, else a phone number.
    pub(crate) fn tp(a: &str) -> ThreePid {
        ThreePid::new(
            if a.contains('@') {
                Medium::Email
            } else {
                Medium::Msisdn
            },
            a,
        )
        .unwrap()
    }

    /// `origin` binds `t` to `mxid`, valid forever.
    pub(crate) fn set(t: &ThreePid, origin: Origin, mxid: &str) -> BindingChange {
        BindingChange::Set {
            threepid: t.clone(),
            origin,
            mxid: mxid.into(),
            not_before_ms: 0,
            not_after_ms: u64::MAX,
        }
    }
}
