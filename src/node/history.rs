//! Per-key version history: the last versions of each key this node
//! applied (its own writes and replicated ones), bounded per key and in
//! total bytes, oldest dropped first. Fed from the persist batches the
//! replica emits, so it sees exactly what the node stored. Kept in memory:
//! it starts empty when the node starts.

use std::collections::{HashMap, VecDeque};

use crate::core::types::{Entry, Key};
use crate::sync::PersistBatch;

/// Versions kept per key, by default.
pub const HISTORY_VERSIONS_MAX_DEFAULT: usize = 10;
/// Bytes (keys and values) kept in all, by default.
pub const HISTORY_BYTES_MAX_DEFAULT: usize = 64 << 20;
/// Bookkeeping bytes counted per version besides its key and value.
const VERSION_OVERHEAD_BYTES: usize = 64;

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
    keys: HashMap<Key, VecDeque<Version>>,
    /// Versions kept in all.
    kept: usize,
    /// Every kept version in the order it was recorded, for eviction.
    order: VecDeque<(Key, u64)>,
}

fn cost(key: &Key, e: &Entry) -> usize {
    key.len() + e.value_len() + VERSION_OVERHEAD_BYTES
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
            let list = self.keys.entry(key.clone()).or_default();
            if list
                .back()
                .is_some_and(|last| last.entry.stamp == v.entry.stamp)
            {
                continue;
            }
            self.bytes += cost(key, &v.entry);
            self.kept += 1;
            self.order.push_back((key.clone(), v.index));
            list.push_back(v);
            if list.len() > self.versions_max {
                if let Some(old) = list.pop_front() {
                    self.bytes -= cost(key, &old.entry);
                    self.kept -= 1;
                }
            }
        }
        while self.bytes > self.bytes_max {
            let Some((key, index)) = self.order.pop_front() else {
                break;
            };
            let Some(list) = self.keys.get_mut(&key) else {
                continue;
            };
            // Only if it is still kept (it may have left by the per-key bound).
            if list.front().is_some_and(|v| v.index == index) {
                if let Some(old) = list.pop_front() {
                    self.bytes -= cost(&key, &old.entry);
                    self.kept -= 1;
                }
            }
            if list.is_empty() {
                self.keys.remove(&key);
            }
        }
        // The order log holds stale positions of versions dropped by the
        // per-key bound; compact it when it grows well past what is kept.
        if self.order.len() > 2 * self.kept + 1_024 {
            let keys = &self.keys;
            self.order
                .retain(|(k, i)| keys.get(k).is_some_and(|l| l.iter().any(|v| v.index == *i)));
        }
    }

    /// The kept versions of `key`, oldest first.
    pub fn versions(&self, key: &str) -> Vec<Version> {
        self.keys
            .get(key)
            .map(|l| l.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Bytes counted for the kept versions.
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
        let max = 10 * (1 + 100 + VERSION_OVERHEAD_BYTES);
        let mut h = History::new(100, max);
        let value = "x".repeat(100);
        for i in 1..=50 {
            let key = format!("{}", i % 5);
            h.record(&batch(&key, i, i, &value));
        }
        assert!(h.bytes() <= max);
        let kept: usize = (0..5).map(|k| h.versions(&k.to_string()).len()).sum();
        assert_eq!(kept, 10);
        // The newest survive.
        assert_eq!(h.versions("0").last().unwrap().index, 50);
        assert_eq!(h.versions("1").first().unwrap().index, 41);
    }
}
