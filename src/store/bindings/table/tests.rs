//! The lookup table's tests: it follows every write, agrees with the tree, survives
//! builds racing writes, rotations and records it cannot read.

use super::*;
use crate::store::bindings::testing::{set, tp};
use crate::store::bindings::{lookup_hash, BindingChange, Origin};

/// What the tree says about `address` (the table bypassed).
fn from_tree(store: &Store, address: &str) -> Option<HashEntry> {
    let pepper = store.pepper();
    let digest = lookup_hash(&tp(address), &pepper.pepper);
    let mut found = None;
    store
        .kv
        .get_with(
            BINDING,
            &super::super::pepper::hash_key(pepper.generation, &digest),
            &mut |b| found = effective_entry(b).unwrap(),
        )
        .unwrap();
    found
}

/// When lookups in these tests happen (every window here is far from it).
const NOW: u64 = 1_800_000_000_000;

/// What the table says about `address`, if it can say.
fn from_table(store: &Store, address: &str) -> Option<Option<String>> {
    let pepper = store.pepper();
    match store.lookup_table.get(
        pepper.generation,
        &lookup_hash(&tp(address), &pepper.pepper),
        NOW,
    ) {
        Answer::Known(mxid) => Some(mxid),
        Answer::Unknown => None,
    }
}

fn remove(address: &str, origin: Origin) -> BindingChange {
    BindingChange::Remove {
        threepid: tp(address),
        origin,
    }
}

#[tokio::test]
async fn the_table_follows_every_write_and_agrees_with_the_tree() {
    let store = Store::in_memory().unwrap();
    let addresses: Vec<String> = (0..200).map(|i| format!("u{i}@example.org")).collect();
    store
        .change_bindings(
            addresses[..100]
                .iter()
                .map(|a| set(&tp(a), Origin::Sync("ldap".into()), &format!("@{a}")))
                .collect(),
        )
        .await
        .unwrap();
    assert_eq!(from_table(&store, &addresses[0]), None, "off until started");
    store.start_lookup_table().await.unwrap();
    store.wait_lookup_table();
    assert_eq!(store.lookup_table_len(), Some(100));
    assert_eq!(store.lookup_table.read().sorted.rows.len(), 100);

    // A fixed pseudo-random walk over sets, overrides and removals.
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    for round in 0..2_000u64 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let a = &addresses[(x % 200) as usize];
        let origin = match (x >> 8) % 3 {
            0 => Origin::Admin,
            1 => Origin::Bind,
            _ => Origin::Sync("ldap".into()),
        };
        let change = if (x >> 16).is_multiple_of(3) {
            remove(a, origin)
        } else {
            BindingChange::Set {
                threepid: tp(a),
                origin,
                mxid: format!("@r{round}:x"),
                // Some windows over by NOW, some not begun, most holding.
                not_before_ms: if round % 7 == 0 { NOW + 5_000 } else { round },
                not_after_ms: if round % 5 == 0 {
                    NOW - 5_000
                } else {
                    u64::MAX - round
                },
            }
        };
        store.change_bindings(vec![change]).await.unwrap();
    }
    let mut bound = 0;
    for a in &addresses {
        let tree = from_tree(&store, a);
        bound += u64::from(tree.is_some());
        let live = tree.filter(|e| e.live_at(NOW)).map(|e| e.mxid);
        assert_eq!(from_table(&store, a), Some(live), "{a}");
    }
    assert_eq!(store.lookup_table_len(), Some(bound));
    // An unknown hash is answered by the table too: bound to nobody.
    assert_eq!(from_table(&store, "nobody@example.org"), Some(None));
}

#[tokio::test]
async fn writes_during_a_build_win_over_what_the_build_read() {
    let store = Store::in_memory().unwrap();
    store
        .change_bindings(vec![
            set(&tp("a@x.org"), Origin::Bind, "@a:x"),
            set(&tp("b@x.org"), Origin::Bind, "@b:x"),
            set(&tp("c@x.org"), Origin::Bind, "@c:x"),
        ])
        .await
        .unwrap();
    let generation = store.pepper_generation();
    let build = store.lookup_table.begin(generation);
    // The in-memory store's scan is a copy taken now: the build reads old values.
    let scan = store.kv.scan_prefix(BINDING, &generation.to_be_bytes());
    store
        .change_bindings(vec![
            remove("a@x.org", Origin::Bind),
            set(&tp("b@x.org"), Origin::Admin, "@b2:x"),
            set(&tp("d@x.org"), Origin::Bind, "@d:x"),
        ])
        .await
        .unwrap();
    // More writes than a merge waits for: none may merge into an array the build
    // has not put in place yet.
    store
        .change_bindings(
            (0..40)
                .map(|i| set(&tp(&format!("m{i}@x.org")), Origin::Bind, "@m:x"))
                .collect(),
        )
        .await
        .unwrap();
    assert_eq!(from_table(&store, "b@x.org"), None, "not complete yet");
    assert_eq!(store.lookup_table.state(), "building");
    let stop = AtomicBool::new(false);
    let n = fill(scan, &store.lookup_table.state, &stop, build).unwrap();
    assert_eq!(n, Some(43), "b, c, d and the 40; a's tombstone is gone");
    assert_eq!(store.lookup_table.state(), "ready");
    assert_eq!(from_table(&store, "m39@x.org"), Some(Some("@m:x".into())));
    let mxid = |a: &str| from_table(&store, a);
    assert_eq!(mxid("a@x.org"), Some(None));
    assert_eq!(mxid("b@x.org"), Some(Some("@b2:x".into())));
    assert_eq!(mxid("c@x.org"), Some(Some("@c:x".into())));
    assert_eq!(mxid("d@x.org"), Some(Some("@d:x".into())));
}

#[tokio::test]
async fn a_replaced_or_stopped_build_changes_nothing() {
    let store = Store::in_memory().unwrap();
    store
        .change_bindings(vec![set(&tp("a@x.org"), Origin::Bind, "@a:x")])
        .await
        .unwrap();
    let generation = store.pepper_generation();
    let table = &store.lookup_table;
    let old = table.begin(generation);
    let scan = store.kv.scan_prefix(BINDING, &generation.to_be_bytes());
    table.begin(generation);
    let stop = AtomicBool::new(false);
    assert_eq!(fill(scan, &table.state, &stop, old).unwrap(), None);
    assert_eq!(from_table(&store, "a@x.org"), None);
    let current = table.begin(generation);
    let scan = store.kv.scan_prefix(BINDING, &generation.to_be_bytes());
    stop.store(true, Ordering::Release);
    assert_eq!(fill(scan, &table.state, &stop, current).unwrap(), None);
    assert_eq!(table.len(), None);
}

#[tokio::test]
async fn a_rotation_rebuilds_the_table_for_the_new_pepper() {
    let store = Arc::new(Store::in_memory().unwrap());
    store.start_lookup_table().await.unwrap();
    store.wait_lookup_table();
    store
        .change_bindings(vec![set(&tp("a@x.org"), Origin::Bind, "@a:x")])
        .await
        .unwrap();
    let old = store.pepper();
    let new = store
        .rotate_pepper("pepper2".into(), &crate::progress::Progress::default())
        .await
        .unwrap();
    store.wait_lookup_table();
    let a = tp("a@x.org");
    let table = &store.lookup_table;
    assert_eq!(
        table.get(new.generation, &lookup_hash(&a, &new.pepper), NOW),
        Answer::Known(Some("@a:x".into()))
    );
    assert_eq!(
        table.get(old.generation, &lookup_hash(&a, &old.pepper), NOW),
        Answer::Unknown
    );
    assert_eq!(store.lookup_table_len(), Some(1));
    // Writes after the rotation land in the new table.
    store
        .change_bindings(vec![remove("a@x.org", Origin::Bind)])
        .await
        .unwrap();
    assert_eq!(
        table.get(new.generation, &lookup_hash(&a, &new.pepper), NOW),
        Answer::Known(None)
    );
}

#[tokio::test]
async fn a_record_the_table_cannot_read_switches_it_off_not_the_write() {
    let store = Store::in_memory().unwrap();
    store.start_lookup_table().await.unwrap();
    store.wait_lookup_table();
    store
        .change_bindings(vec![set(&tp("a@x.org"), Origin::Bind, "@a:x")])
        .await
        .unwrap();
    assert_eq!(store.lookup_table.state(), "ready");
    let pepper = store.pepper();
    let key = super::super::pepper::hash_key(pepper.generation, &[7; 32]);
    let mut batch = Batch::new();
    batch.put(BINDING, key.to_vec(), b"not a record".to_vec());
    store.apply(batch).unwrap();
    assert!(store.kv.get(BINDING, &key).unwrap().is_some(), "written");
    assert_eq!(store.lookup_table.state(), "off");
    assert_eq!(store.lookup_table_len(), None);
    // Later writes skip it; lookups read the tree.
    store
        .change_bindings(vec![set(&tp("b@x.org"), Origin::Bind, "@b:x")])
        .await
        .unwrap();
    assert!(store.lookup_table.read().recent.is_empty());
    assert_eq!(from_table(&store, "a@x.org"), None);
    let digest = lookup_hash(&tp("b@x.org"), &pepper.pepper);
    assert_eq!(
        store.live_mxid(pepper.generation, &digest, NOW).unwrap(),
        Some("@b:x".into())
    );
}

#[test]
fn windows_decide_liveness_except_in_their_edge_seconds() {
    let entry = |not_before_ms, not_after_ms| HashEntry {
        mxid: "@a:x".into(),
        not_before_ms,
        not_after_ms,
    };
    let w = Window::of(&entry(10_500, 20_500));
    assert_eq!(w.live(9_999), Some(false));
    assert_eq!(w.live(10_000), None);
    assert_eq!(w.live(10_999), None);
    assert_eq!(w.live(11_000), Some(true));
    assert_eq!(w.live(19_999), Some(true));
    assert_eq!(w.live(20_000), None);
    assert_eq!(w.live(21_000), Some(false));
    // Forever, and past what seconds in 32 bits hold.
    let w = Window::of(&entry(0, u64::MAX));
    assert_eq!(w.live(NOW), Some(true));
    let w = Window::of(&entry(u64::MAX - 1, u64::MAX));
    assert_eq!(w.live(NOW), Some(false));
    // Whatever the table says, it agrees with the exact rule.
    for now in (9_000..22_000).step_by(250) {
        let e = entry(10_500, 20_500);
        if let Some(live) = Window::of(&e).live(now) {
            assert_eq!(live, e.live_at(now), "{now}");
        }
    }
}

#[tokio::test]
async fn edge_seconds_are_answered_from_the_tree() {
    let store = Store::in_memory().unwrap();
    store.start_lookup_table().await.unwrap();
    store.wait_lookup_table();
    let a = tp("a@x.org");
    store
        .change_bindings(vec![BindingChange::Set {
            threepid: a.clone(),
            origin: Origin::Bind,
            mxid: "@a:x".into(),
            not_before_ms: NOW + 100,
            not_after_ms: NOW + 60_000,
        }])
        .await
        .unwrap();
    let pepper = store.pepper();
    let digest = lookup_hash(&a, &pepper.pepper);
    // In the second the binding starts in, the table cannot say...
    assert_eq!(
        store
            .lookup_table
            .get(pepper.generation, &digest, NOW + 200),
        Answer::Unknown
    );
    // ...and the store answers exactly, either side of the start.
    assert_eq!(
        store
            .live_mxid(pepper.generation, &digest, NOW + 200)
            .unwrap(),
        Some("@a:x".into())
    );
    assert_eq!(
        store
            .live_mxid(pepper.generation, &digest, NOW + 50)
            .unwrap(),
        None
    );
    assert_eq!(
        store
            .live_mxid(pepper.generation, &digest, NOW - 1_000)
            .unwrap(),
        None
    );
    assert_eq!(
        store
            .live_mxid(pepper.generation, &digest, NOW + 2_000)
            .unwrap(),
        Some("@a:x".into())
    );
}

#[test]
fn every_row_is_found_through_the_index() {
    let window = Window {
        not_before_s: 0,
        not_after_s: u32::MAX,
    };
    for n in [0u32, 1, 3, 4, 5, 17, 1000, 5000] {
        let mut sorted = Sorted::default();
        let mut x: u32 = 0x9e37_79b9;
        for i in 0..n {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            // Some keys at the ends of the key space too.
            let first = match i % 50 {
                0 => 0,
                1 => u32::MAX,
                _ => x,
            };
            assert!(sorted.push(Key([first, i, 0, 0]), window, "@a:x"));
        }
        sorted.finish(true);
        for row in &sorted.rows {
            assert!(sorted.find(row.key).is_some(), "{n} {:?}", row.key);
        }
        assert!(sorted.find(Key([7, u32::MAX, 1, 0])).is_none());
    }
}

#[test]
fn matrix_ids_of_any_length_come_back_from_the_arena() {
    let mut sorted = Sorted::default();
    let ids: Vec<String> = [0, 1, 127, 128, 300, 20_000]
        .iter()
        .map(|n| "x".repeat(*n))
        .collect();
    let window = Window {
        not_before_s: 0,
        not_after_s: u32::MAX,
    };
    for (i, id) in ids.iter().enumerate() {
        assert!(sorted.push(Key([i as u32, 0, 0, 0]), window, id));
    }
    for (row, id) in sorted.rows.iter().zip(&ids) {
        assert_eq!(sorted.mxid(row), id);
    }
}

#[test]
fn keys_are_the_hash_prefix_of_the_tree_key() {
    let mut tree_key = [0u8; 36];
    tree_key[..4].copy_from_slice(&7u32.to_be_bytes());
    tree_key[4] = 1;
    tree_key[15] = 2;
    tree_key[16] = 3;
    let (generation, key) = Key::of_tree_key(&tree_key).unwrap();
    assert_eq!(generation, 7);
    assert_eq!(key, Key([1 << 24, 0, 2, 0x0300_0000]));
    assert!(Key::of_tree_key(&tree_key[..35]).is_none());
}
