//! Ordered, one-way changes of the store's layout. Each step turns schema version
//! `to - 1` into `to` and is applied in one atomic batch together with the new
//! `schema_version`, so a crash mid-upgrade leaves either the old or the new layout.
//! A store newer than this binary is refused rather than misread.

use super::codec::encode;
use super::kv::{Batch, Kv};
use super::{now_ms, Created, SchemaVersion, StoreError, KEY_CREATED, KEY_SCHEMA, META};

/// One layout change.
pub struct Migration {
    pub to: u32,
    pub name: &'static str,
    /// Reads what it needs and returns the changes to make.
    pub plan: fn(&dyn Kv) -> Result<Batch, StoreError>,
}

/// The layout this binary writes.
pub const CURRENT: u32 = 1;

/// Every migration, in order. Append only.
pub const ALL: &[Migration] = &[Migration {
    to: 1,
    name: "initial layout",
    plan: initial,
}];

fn initial(_kv: &dyn Kv) -> Result<Batch, StoreError> {
    let mut batch = Batch::new();
    batch.put(META, KEY_CREATED.to_vec(), encode(&Created(now_ms()))?);
    Ok(batch)
}

/// Brings the store up to the last step of `steps`.
pub fn run(kv: &dyn Kv, steps: &[Migration]) -> Result<(), StoreError> {
    let supported = steps.last().map_or(0, |m| m.to);
    let found = match kv.get(META, KEY_SCHEMA)? {
        Some(bytes) => super::codec::decode::<SchemaVersion>(&bytes)?.0,
        None => 0,
    };
    if found > supported {
        return Err(StoreError::SchemaTooNew { found, supported });
    }
    for step in steps.iter().filter(|m| m.to > found) {
        let mut batch = (step.plan)(kv).map_err(|e| {
            StoreError::Corrupt(format!(
                "migration to schema {} ({}) failed: {e}",
                step.to, step.name
            ))
        })?;
        batch.put(META, KEY_SCHEMA.to_vec(), encode(&SchemaVersion(step.to))?);
        kv.apply(batch)?;
        tracing::info!(schema = step.to, migration = step.name, "store migrated");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::mem_kv::MemKv;
    use crate::store::Store;
    use std::sync::Arc;

    fn add_marker(kv: &dyn Kv) -> Result<Batch, StoreError> {
        // A step that depends on what the earlier one wrote.
        assert!(kv.get(META, KEY_CREATED)?.is_some());
        let mut b = Batch::new();
        b.put("marker", b"m".to_vec(), vec![1]);
        Ok(b)
    }

    const TWO_STEPS: &[Migration] = &[
        Migration {
            to: 1,
            name: "initial layout",
            plan: initial,
        },
        Migration {
            to: 2,
            name: "marker",
            plan: add_marker,
        },
    ];

    #[test]
    fn steps_run_in_order_once() {
        let kv = Arc::new(MemKv::new());
        run(kv.as_ref(), &TWO_STEPS[..1]).unwrap();
        let created = kv.get(META, KEY_CREATED).unwrap();
        run(kv.as_ref(), TWO_STEPS).unwrap();
        assert_eq!(kv.get("marker", b"m").unwrap(), Some(vec![1]));
        // Running again changes nothing (creation time kept).
        run(kv.as_ref(), TWO_STEPS).unwrap();
        assert_eq!(kv.get(META, KEY_CREATED).unwrap(), created);
        let store = Store::with_kv(kv, TWO_STEPS, 32).unwrap();
        assert_eq!(store.schema_version().unwrap(), 2);
    }

    #[test]
    fn a_newer_store_is_refused() {
        let kv = Arc::new(MemKv::new());
        run(kv.as_ref(), TWO_STEPS).unwrap();
        let err = Store::with_kv(kv, &TWO_STEPS[..1], 32).unwrap_err();
        assert!(
            matches!(
                err,
                StoreError::SchemaTooNew {
                    found: 2,
                    supported: 1
                }
            ),
            "{err}"
        );
    }
}
