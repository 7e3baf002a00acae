//! Per-key version history: the last versions of each key this node
//! applied (its own writes and replicated ones), bounded per key and in
//! total bytes, oldest dropped first. Fed from the persist batches the
//! replica emits, so it sees exactly what the node stored. Kept in memory:
//! it starts empty when the node starts.
//!
//! The byte bound counts what the history holds in memory, not only keys
//! and values: each version's record and its place in the eviction order,
//! each key's entry in the index, its list and the key itself (see
//! [`version_cost`], [`key_cost`]). A key's value and name are often shared
//! with the map's current record; they are counted anyway, so the history
//! never holds more than `bytes_max` of its own. Lists grow one version at
//! a time (no spare capacity): most keys hold one or two versions.

use std::collections::{HashMap, VecDeque};
use std::mem::size_of;

use crate::core::types::{Entry, Key};
use crate::sync::PersistBatch;

/// Versions kept per key, by default.
pub const HISTORY_VERSIONS_MAX_DEFAULT: usize = 10;
/// Bytes held in all, by default.
pub const HISTORY_BYTES_MAX_DEFAULT: usize = 64 << 20;
/// The header of a shared value buffer (`bytes`'s `Shared`: its pointer,
/// capacity and count, rounded up to the allocator's 32-byte chunk): a
/// value held twice pays it once.
const SHARED_VALUE_BYTES: usize = 32;
/// The count and weak count in front of a key's text (`Arc<str>`).
const KEY_HEADER_BYTES: usize = 16;

/// One version of a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    /// The local index of the change.
    pub index: u64,
    /// The entry as applied: value or tombstone, with its stamp.
    pub entry: Entry,
}

/// The bounded history (see the module docs).
#[derive(Debug)]
pub struct History {
    versions_max: usize,
    bytes_max: usize,
    bytes: usize,
    /// Per key, its versions oldest first; never empty, capacity = length.
    keys: HashMap<Key, Vec<Version>>,
    /// Versions kept in all.
    kept: usize,
    /// Every kept version in the order it was recorded, for eviction; also
    /// positions of versions since dropped by the per-key bound (stale),
    /// compacted when they outnumber the kept ones.
    order: VecDeque<(Key, u64)>,
}

/// What one version holds: its record, its place in the eviction order
/// (twice: the order may hold as many stale places as kept ones) and its
/// value with the value's shared header.
pub fn version_cost(e: &Entry) -> usize {
    let value = e.value.as_ref().map_or(0, |v| v.len() + SHARED_VALUE_BYTES);
    size_of::<Version>() + 2 * size_of::<(Key, u64)>() + value
}

/// What one key in the history holds besides its versions: its entry in
/// the index (at the table's lowest load, 7/8 full before it grows, plus
/// its control byte, counted as 8/7 of the entry and 8 bytes) and its text.
pub fn key_cost(key: &Key) -> usize {
    size_of::<(Key, Vec<Version>)>() * 8 / 7 + 8 + KEY_HEADER_BYTES + key.len()
}

impl History {
    /// An empty history keeping at most `versions_max` versions per key and
    /// `bytes_max` bytes in all (either 0: keeps nothing).
    pub fn new(versions_max: usize, bytes_max: usize) -> History {
        History {
            versions_max,
            bytes_max,
            bytes: 0,
            keys: HashMap::new(),
            kept: 0,
            order: VecDeque::new(),
        }
    }

    /// Records every changed record of a batch.
    pub fn record(&mut self, batch: &PersistBatch) {
        if self.versions_max == 0 || self.bytes_max == 0 {
            return;
        }
        for (key, rec) in &batch.records {
            let Some(rec) = rec else { continue };
            let v = Version {
                index: rec.modify_index,
                entry: rec.entry.clone(),
            };
            let list = match self.keys.get_mut(key) {
                Some(list) => list,
                None => {
                    self.bytes += key_cost(key);
                    self.keys.entry(key.clone()).or_default()
                }
            };
            if list
                .last()
                .is_some_and(|last| last.entry.stamp == v.entry.stamp)
            {
                continue;
            }
            self.bytes += version_cost(&v.entry);
            self.kept += 1;
            self.order.push_back((key.clone(), v.index));
            if list.len() >= self.versions_max {
                let old = list.remove(0);
                self.bytes -= version_cost(&old.entry);
                self.kept -= 1;
            } else {
                list.reserve_exact(1);
            }
            list.push(v);
        }
        while self.bytes > self.bytes_max {
            let Some((key, index)) = self.order.pop_front() else {
                break;
            };
            let Some(list) = self.keys.get_mut(&key) else {
                continue;
            };
            // Only if it is still kept (it may have left by the per-key bound).
            if list.first().is_some_and(|v| v.index == index) {
                let old = list.remove(0);
                list.shrink_to_fit();
                self.bytes -= version_cost(&old.entry);
                self.kept -= 1;
            }
            if list.is_empty() {
                self.keys.remove(&key);
                self.bytes -= key_cost(&key);
            }
        }
        // The order log holds stale positions of versions dropped by the
        // per-key bound; compact it when they outnumber the kept ones.
        if self.order.len() > 2 * self.kept + 1_024 {
            let keys = &self.keys;
            self.order
                .retain(|(k, i)| keys.get(k).is_some_and(|l| l.iter().any(|v| v.index == *i)));
            self.order.shrink_to(2 * self.kept + 1_024);
        }
        debug_assert!(self.bytes <= self.bytes_max || self.keys.is_empty());
    }

    /// The kept versions of `key`, oldest first.
    pub fn versions(&self, key: &str) -> Vec<Version> {
        self.keys.get(key).cloned().unwrap_or_default()
    }

    /// Bytes counted for what is kept.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::hlc::Hlc;
    use crate::core::types::Kind;
    use crate::core::types::{NodeId, Stamp};
    use crate::sync::StoredRecord;
    use bytes::Bytes;

    fn batch(key: &str, t: u64, index: u64, value: &str) -> PersistBatch {
        let entry = Entry {
            stamp: Stamp::new(Hlc::new(t, 0), NodeId(1)),
            prev: Stamp::ZERO,
            flags: 0,
            value: Some(Bytes::from(value.to_string())),
            kind: Kind::Value,
        };
        PersistBatch {
            records: vec![(
                Key::new(key).unwrap(),
                Some(StoredRecord {
                    check: crate::core::types::Check::of(key, &entry),
                    entry,
                    create_index: 1,
                    modify_index: index,
                }),
            )],
            ..PersistBatch::default()
        }
    }

    #[test]
    fn keeps_the_last_versions_per_key() {
        let mut h = History::new(3, 1 << 20);
        for i in 1..=5 {
            h.record(&batch("k", i, i, &format!("v{i}")));
        }
        let v: Vec<u64> = h.versions("k").iter().map(|v| v.index).collect();
        assert_eq!(v, [3, 4, 5]);
        assert!(h.versions("other").is_empty());
    }

    #[test]
    fn total_bytes_are_bounded_oldest_first() {
        let value = "x".repeat(100);
        let entry = |k: &str| batch(k, 1, 1, &value).records[0].1.clone().unwrap().entry;
        let (per_key, per_version) = (key_cost(&Key::new("0").unwrap()), version_cost(&entry("0")));
        // Room for ten keys of one version each: five keys hold more.
        let max = 10 * (per_key + per_version);
        let mut h = History::new(100, max);
        for i in 1..=50 {
            let key = format!("{}", i % 5);
            h.record(&batch(&key, i, i, &value));
        }
        assert!(h.bytes() <= max);
        let kept: usize = (0..5).map(|k| h.versions(&k.to_string()).len()).sum();
        assert_eq!(kept, (max - 5 * per_key) / per_version);
        assert!(kept > 10);
        // The newest survive.
        assert_eq!(h.versions("0").last().unwrap().index, 50);
        assert_eq!(h.versions("1").first().unwrap().index, 41);
    }
}
