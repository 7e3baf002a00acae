//! Unit tests of the LWW map (`super`): merge, feed, tombstones,
//! collection, conflicts and the digest kept in step.

use super::*;
use crate::core::types::{key_hash, Kind, NodeId};

fn e(hlc: u64, node: u64, v: Option<&'static str>) -> Entry {
    Entry {
        stamp: Stamp::new(Hlc(hlc), NodeId(node)),
        prev: Stamp::ZERO,
        flags: 0,
        value: v.map(|s| Bytes::from_static(s.as_bytes())),
        kind: Kind::Value,
    }
}

fn k(s: &str) -> Key {
    Key::new(s).unwrap()
}

#[test]
fn the_removal_log_serves_incremental_backups() {
    let mut m = LwwMap::new(0);
    for k in ["a", "b", "c"] {
        let e = Entry {
            stamp: Stamp::new(Hlc::new(1, 0), NodeId(1)),
            prev: Stamp::ZERO,
            flags: 0,
            value: None,
            kind: Kind::Value,
        };
        m.apply_local(&Key::new(k).unwrap(), e);
    }
    let at = m.index();
    m.remove("a");
    let names = |v: Option<Vec<Key>>| {
        v.map(|v| v.iter().map(|k| k.as_str().to_string()).collect::<Vec<_>>())
    };
    assert_eq!(names(m.removed_since(at)), Some(vec!["a".to_string()]));
    assert_eq!(names(m.removed_since(at + 1)), Some(vec![]));
    // After a restart, removals before it are unknown.
    let mut r = LwwMap::restore(Vec::new(), at, 0, 0);
    assert_eq!(r.removed_since(at), None);
    assert_eq!(names(r.removed_since(at + 1)), Some(vec![]));
    // For a base taken after the restart, those at the restart's index are
    // in the base: what was removed since the restart is all there is.
    assert_eq!(names(r.removed_since_restore(at)), Some(vec![]));
    assert_eq!(r.removed_since_restore(at - 1), None);
    let e = Entry {
        stamp: Stamp::new(Hlc::new(2, 0), NodeId(1)),
        prev: Stamp::ZERO,
        flags: 0,
        value: None,
        kind: Kind::Value,
    };
    r.apply_local(&k("d"), e);
    r.remove("d");
    assert_eq!(
        names(r.removed_since_restore(at)),
        Some(vec!["d".to_string()])
    );
}

#[test]
fn greater_stamp_wins_and_feed_keeps_latest_change_only() {
    let mut m = LwwMap::default();
    assert_eq!(
        m.merge(&k("a"), e(5, 1, Some("x")), Hlc::ZERO),
        Merged::Inserted { index: 1 }
    );
    assert_eq!(
        m.merge(&k("a"), e(4, 2, Some("y")), Hlc::ZERO),
        Merged::Stale
    );
    assert!(matches!(
        m.merge(&k("a"), e(6, 2, Some("z")), Hlc::ZERO),
        Merged::Replaced {
            index: 2,
            conflict: true
        }
    ));
    assert_eq!(
        m.merge(&k("a"), e(6, 2, Some("z")), Hlc::ZERO),
        Merged::Duplicate
    );
    assert_eq!(m.get("a").unwrap().entry.value.as_deref(), Some(&b"z"[..]));
    let changes: Vec<u64> = m.changes_since(0).map(|(i, _, _)| i).collect();
    assert_eq!(changes, vec![2]);
    assert_eq!(m.get("a").unwrap().create_index, 1);
}

#[test]
fn a_write_that_saw_the_previous_one_is_not_a_conflict() {
    let mut m = LwwMap::default();
    m.merge(&k("a"), e(5, 1, Some("x")), Hlc::ZERO);
    let mut next = e(6, 2, Some("y"));
    next.prev = Stamp::new(Hlc(5), NodeId(1));
    assert!(matches!(
        m.merge(&k("a"), next, Hlc::ZERO),
        Merged::Replaced {
            conflict: false,
            ..
        }
    ));
    assert_eq!(m.conflicts().total(), 0);
}

#[test]
fn conflict_log_is_bounded() {
    let mut m = LwwMap::new(2);
    for i in 1..=5u64 {
        m.merge(&k("a"), e(i, i, Some("v")), Hlc::ZERO);
    }
    assert_eq!(m.conflicts().total(), 4);
    assert_eq!(m.conflicts().iter().count(), 2);
}

#[test]
fn same_stamp_different_content_resolves_deterministically() {
    let (x, y) = (e(5, 1, Some("x")), e(5, 1, Some("y")));
    let mut a = LwwMap::default();
    a.merge(&k("a"), x.clone(), Hlc::ZERO);
    a.merge(&k("a"), y.clone(), Hlc::ZERO);
    let mut b = LwwMap::default();
    b.merge(&k("a"), y, Hlc::ZERO);
    b.merge(&k("a"), x, Hlc::ZERO);
    assert_eq!(a.get("a").unwrap().entry, b.get("a").unwrap().entry);
    assert_eq!(a.stamp_collisions(), 1);
    assert_eq!(a.root(), b.root());
}

#[test]
fn floor_refuses_absent_keys_only() {
    let mut m = LwwMap::default();
    assert_eq!(
        m.merge(&k("a"), e(5, 1, Some("x")), Hlc(5)),
        Merged::BelowFloor
    );
    m.merge(&k("b"), e(3, 1, Some("x")), Hlc::ZERO);
    assert!(m.merge(&k("b"), e(4, 1, Some("y")), Hlc(5)).changed());
}

#[test]
fn tombstones_are_indexed_and_removal_restores_the_root() {
    let mut m = LwwMap::default();
    let empty = m.root();
    m.merge(&k("a"), e(5, 1, Some("x")), Hlc::ZERO);
    let one = m.root();
    m.merge(&k("b"), e(6, 1, None), Hlc::ZERO);
    assert_eq!(m.tombstones_up_to(Hlc(6), 10).len(), 1);
    assert_eq!(m.tombstones_up_to(Hlc(5), 10).len(), 0);
    m.remove("b");
    assert_eq!(m.root(), one);
    m.remove("a");
    assert_eq!(m.root(), empty);
    assert_eq!(m.raw_bytes(), 0);
}

#[test]
fn prefix_scan_and_leaf_lookup() {
    let mut m = LwwMap::default();
    for key in ["app/a", "app/b", "apq", "ap"] {
        m.merge(&k(key), e(1, 1, Some("v")), Hlc::ZERO);
    }
    let keys: Vec<&str> = m.scan_prefix("app/").map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, vec!["app/a", "app/b"]);
    let kh = key_hash("apq");
    let leaf = crate::core::digest::leaf_of(kh);
    assert!(m.leaf_records(leaf).any(|(k, _)| k.as_str() == "apq"));
    assert_eq!(m.records_with_hash(kh).count(), 1);
}

/// The arena's indexes (lookup table, key order, leaf chains, change
/// feed with compaction, slot reuse) against a plain ordered map.
#[test]
fn indexes_agree_with_a_model() {
    use proptest::prelude::*;
    use std::collections::BTreeMap as Model;
    let op = (0u8..4, 0usize..24, 1u64..40, 0u64..3);
    proptest!(ProptestConfig::with_cases(48), |(ops in proptest::collection::vec(op, 0..2500))| {
        let mut m = LwwMap::with_seed(4, 99);
        let mut model: Model<String, Entry> = Model::new();
        let keys: Vec<String> = (0..24).map(|i| format!("p{}/k{i}", i % 3)).collect();
        let mut hlc = 0u64;
        for (kind, ki, _, node) in ops {
            let key = &keys[ki];
            hlc += 1;
            match kind {
                0 | 1 => {
                    let v = if kind == 0 { Some("v") } else { None };
                    let entry = e(hlc, node, v);
                    m.merge(&k(key), entry.clone(), Hlc::ZERO);
                    model.insert(key.clone(), entry);
                }
                2 => {
                    // A delayed write (from node 3, so no stamp repeats):
                    // wins only over an older one.
                    let old = e(hlc.saturating_sub(30).max(1), 3, Some("old"));
                    m.merge(&k(key), old.clone(), Hlc::ZERO);
                    if model.get(key).is_none_or(|cur| cur.stamp < old.stamp) {
                        model.insert(key.clone(), old);
                    }
                }
                _ => {
                    prop_assert_eq!(m.remove(key).is_some(), model.remove(key).is_some());
                }
            }
        }
        prop_assert_eq!(m.len(), model.len());
        let got: Vec<(String, Entry)> =
            m.iter().map(|(k, r)| (k.as_str().to_string(), r.entry.clone())).collect();
        let want: Vec<(String, Entry)> = model.clone().into_iter().collect();
        prop_assert_eq!(&got, &want);
        for key in &keys {
            prop_assert_eq!(m.get(key).map(|r| &r.entry), model.get(key));
            let kh = key_hash(key);
            let in_leaf = m.leaf_records(leaf_of(kh)).filter(|(k2, _)| k2.as_str() == key).count();
            prop_assert_eq!(in_leaf, usize::from(model.contains_key(key)));
            prop_assert_eq!(m.records_with_hash(kh).count(), usize::from(model.contains_key(key)));
        }
        let p1: Vec<&str> = m.scan_prefix("p1/").map(|(k, _)| k.as_str()).collect();
        let want_p1: Vec<&str> = model.keys().filter(|k| k.starts_with("p1/")).map(String::as_str).collect();
        prop_assert_eq!(p1, want_p1);
        // The feed names every key once, at its latest index, in order.
        let feed: Vec<(u64, String)> =
            m.changes_since(0).map(|(i, k, _)| (i, k.as_str().to_string())).collect();
        prop_assert_eq!(feed.len(), model.len());
        prop_assert!(feed.windows(2).all(|w| w[0].0 < w[1].0));
        for (i, key) in &feed {
            prop_assert_eq!(m.get(key).map(|r| r.modify_index), Some(*i));
        }
        if let Some(&(mid, _)) = feed.get(feed.len() / 2) {
            prop_assert_eq!(m.changes_since(mid).count(), feed.len() - feed.len() / 2 - 1);
        }
        prop_assert!(m.feed.len() <= m.len() + m.len() / 2 + FEED_SLACK + 1);
        // The raw feed counts superseded changes too (callers bound their
        // steps with it), and its current ones are the feed above.
        prop_assert_eq!(m.feed_since(0).count(), m.feed.len());
        prop_assert_eq!(m.feed_since(0).filter(|(_, c)| c.is_some()).count(), feed.len());
        // The same entries rebuilt from scratch give the same root.
        let recs: Vec<_> = model
            .iter()
            .map(|(k2, en)| (k(k2), en.clone(), 1, 1, Check::of(k2, en)))
            .collect();
        let mut fresh = LwwMap::restore(recs, 1, 0, 5);
        prop_assert_eq!(fresh.root(), m.root());
    });
}

#[test]
fn prefix_digest_covers_exactly_the_prefix() {
    let mut a = LwwMap::default();
    let mut b = LwwMap::default();
    for m in [&mut a, &mut b] {
        m.merge(&k("app/x"), e(1, 1, Some("1")), Hlc::ZERO);
        m.merge(&k("app/y"), e(2, 1, None), Hlc::ZERO);
    }
    a.merge(&k("other"), e(3, 1, Some("only in a")), Hlc::ZERO);
    assert_eq!(a.prefix_digest("app/"), b.prefix_digest("app/"));
    assert_ne!(a.prefix_digest(""), b.prefix_digest(""));
    // A different value shows; a tombstone collected on one side does
    // not (the live data is the same).
    b.merge(&k("app/x"), e(4, 2, Some("2")), Hlc::ZERO);
    assert_ne!(a.prefix_digest("app/"), b.prefix_digest("app/"));
    a.merge(&k("app/x"), e(4, 2, Some("2")), Hlc::ZERO);
    assert_eq!(a.prefix_digest("app/"), b.prefix_digest("app/"));
    b.remove("app/y");
    assert_eq!(a.prefix_digest("app/"), b.prefix_digest("app/"));
    a.merge(&k("app/x"), e(5, 2, None), Hlc::ZERO);
    assert_ne!(a.prefix_digest("app/"), b.prefix_digest("app/"));
}

/// Equal live data gives equal roots whatever tombstones each side
/// holds: nodes collect tombstones at different moments.
#[test]
fn tombstones_are_not_in_the_root() {
    let mut a = LwwMap::default();
    let mut b = LwwMap::default();
    a.merge(&k("live"), e(1, 1, Some("v")), Hlc::ZERO);
    b.merge(&k("live"), e(1, 1, Some("v")), Hlc::ZERO);
    a.merge(&k("gone"), e(2, 1, None), Hlc::ZERO);
    assert_eq!(a.root(), b.root());
    // A value replaced by a tombstone leaves the root; a tombstone
    // replaced by a value enters it.
    b.merge(&k("gone"), e(1, 2, Some("old")), Hlc::ZERO);
    assert_ne!(a.root(), b.root());
    b.merge(&k("gone"), e(2, 1, None), Hlc::ZERO);
    assert_eq!(a.root(), b.root());
    a.merge(&k("gone"), e(3, 1, Some("back")), Hlc::ZERO);
    b.merge(&k("gone"), e(3, 1, Some("back")), Hlc::ZERO);
    assert_eq!(a.root(), b.root());
    a.remove("gone");
    b.remove("gone");
    a.merge(&k("t"), e(4, 1, None), Hlc::ZERO);
    b.merge(&k("t"), e(5, 1, None), Hlc::ZERO);
    assert_eq!(a.root(), b.root());
    assert_eq!(a.root(), {
        let mut only = LwwMap::default();
        only.merge(&k("live"), e(1, 1, Some("v")), Hlc::ZERO);
        only.root()
    });
}

#[test]
fn restore_rebuilds_the_same_root() {
    let mut m = LwwMap::default();
    for i in 0..50u64 {
        let v = if i % 7 == 0 { None } else { Some("v") };
        m.merge(&k(&format!("k{}", i % 20)), e(i + 1, i % 3, v), Hlc::ZERO);
    }
    let recs: Vec<_> = m
        .iter()
        .map(|(k, r)| {
            (
                k.clone(),
                r.entry.clone(),
                r.create_index,
                r.modify_index,
                r.stored_check(),
            )
        })
        .collect();
    let mut n = LwwMap::restore(recs, m.index(), 16, 7);
    assert_eq!(n.root(), m.root());
    assert_eq!(n.index(), m.index());
    assert_eq!(n.tombstone_count(), m.tombstone_count());
}
