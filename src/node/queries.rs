//! What the driver answers from the replica's state without writing:
//! reads (checked before they are served), the change feed of watches,
//! status, digests, snapshots for backups, hashes and the conflict log.

use std::sync::atomic::Ordering;

use super::driver::Driver;
use super::types::{Change, DigestReport, Indexed, KeyHash, KvEntry, NodeStatus, Snapshot};
use super::{NodeError, QUARANTINED_NAMED_MAX, WATCH_BATCH_MAX, WATCH_SCAN_MAX};
use crate::core::conflicts::Conflict;
use crate::core::digest::LEAVES;
use crate::core::types::{hidden_under, Entry, Key};
use crate::core::Record;

/// A record as the API shows it; `None` for a tombstone.
pub(super) fn live(key: &str, r: &Record) -> Option<KvEntry> {
    r.entry.visible_value().map(|value| KvEntry {
        key: key.to_string(),
        value,
        flags: r.entry.flags,
        create_index: r.create_index,
        modify_index: r.modify_index,
        stamp: r.entry.stamp,
    })
}

/// A live entry as held, with its local indexes (for reads that render
/// it outside the driver: documents).
#[derive(Debug, Clone)]
pub(super) struct Held {
    pub(super) entry: Entry,
    pub(super) create_index: u64,
    pub(super) modify_index: u64,
}

impl Driver {
    /// One key's record, checked before it is served: a damaged record is
    /// quarantined, and reads of it fail until it is repaired.
    fn checked(&mut self, key: &str, now: u64) -> Result<Option<&Record>, NodeError> {
        if !self.replica.check_before_serving(key, now) {
            return Err(NodeError::Quarantined {
                keys: vec![key.to_string()],
            });
        }
        Ok(self.replica.get(key))
    }

    /// One key, with its modify index (its tombstone's for a deleted key,
    /// 0 for a key this node holds nothing of), checked before it is served.
    pub(super) fn read(
        &mut self,
        key: &str,
        now: u64,
    ) -> Result<Indexed<Option<KvEntry>>, NodeError> {
        let record = self.checked(key, now)?;
        Ok(Indexed {
            index: record.map_or(0, |r| r.modify_index),
            value: record.and_then(|r| live(key, r)),
        })
    }

    /// One key's entry as held, with its create and modify indexes
    /// (`None`: absent or deleted), checked before it is served.
    pub(super) fn read_entry(
        &mut self,
        key: &str,
        now: u64,
    ) -> Result<Indexed<Option<Held>>, NodeError> {
        let record = self.checked(key, now)?;
        Ok(Indexed {
            index: record.map_or(0, |r| r.modify_index),
            value: record.filter(|r| !r.entry.is_tombstone()).map(|r| Held {
                entry: r.entry.clone(),
                create_index: r.create_index,
                modify_index: r.modify_index,
            }),
        })
    }

    /// Every live key under `prefix`, each checked before it is served,
    /// with the greatest modify index under the prefix, tombstones
    /// included (so that a delete under it moves it).
    pub(super) fn list(
        &mut self,
        prefix: &str,
        now: u64,
    ) -> Result<Indexed<Vec<KvEntry>>, NodeError> {
        let keys = self
            .replica
            .check_prefix_before_serving(prefix, QUARANTINED_NAMED_MAX, now);
        if !keys.is_empty() {
            return Err(NodeError::Quarantined { keys });
        }
        let mut index = 0;
        let mut value = Vec::new();
        for (k, r) in self.replica.map().scan_visible(prefix) {
            index = index.max(r.modify_index);
            value.extend(live(k.as_str(), r));
        }
        Ok(Indexed { index, value })
    }

    /// Durable changes under `prefix` after `since`, at most
    /// [`WATCH_BATCH_MAX`] of them from a scan of at most [`WATCH_SCAN_MAX`]
    /// feed positions, and the index scanned up to. Only durable changes:
    /// an index seen by a watch is never reused after a crash.
    pub(super) fn changes(&self, prefix: &str, since: u64) -> (Vec<Change>, u64) {
        let durable = *self.notify.borrow();
        let mut scanned_to = durable.min(self.replica.map().index());
        let mut out = Vec::new();
        for (n, (i, current)) in self.replica.map().feed_since(since).enumerate() {
            if i > durable {
                break;
            }
            // Bounded work per command: a long feed is scanned in slices,
            // other commands run between them.
            if out.len() == WATCH_BATCH_MAX || n == WATCH_SCAN_MAX {
                scanned_to = i - 1;
                break;
            }
            let Some((k, r)) = current else {
                continue;
            };
            if k.as_str().starts_with(prefix) && !hidden_under(prefix, k.as_str()) {
                out.push(Change {
                    index: i,
                    key: k.to_string(),
                    value: r.entry.visible_value(),
                    flags: r.entry.flags,
                    stamp: r.entry.stamp,
                });
            }
        }
        (out, scanned_to.max(since))
    }

    /// The node's status: the replica's, the transport's counters, the
    /// store's, membership and recent events.
    pub(super) fn status(&mut self, now: u64) -> NodeStatus {
        let m = &self.metrics;
        NodeStatus {
            replica: self.replica.status(),
            metrics: self.replica.metrics().clone(),
            frames_in: m.frames_in.load(Ordering::Relaxed),
            frames_out: m.frames_out.load(Ordering::Relaxed),
            bytes_in: m.bytes_in.load(Ordering::Relaxed),
            bytes_out: m.bytes_out.load(Ordering::Relaxed),
            frames_dropped: m.frames_dropped_queue_full.load(Ordering::Relaxed),
            malformed_frames: m.malformed_frames.load(Ordering::Relaxed),
            peers_refused: m.peers_refused.load(Ordering::Relaxed),
            commits: self.commits,
            recent_events: self.events.iter().cloned().collect(),
            members: self.membership.view(),
            now_ms: now,
            started_ms: self.started_ms,
            commit_latency: self.commit_latency.clone(),
            store_trouble: self.store_trouble.clone(),
        }
    }

    /// The root over the live keys under `prefix`; with `deep`, after
    /// checking every record against its value.
    pub(super) fn digest(&mut self, prefix: &str, deep: bool, now: u64) -> DigestReport {
        let (damaged_found, digest_repaired) = if deep {
            self.replica.verify_all(now)
        } else {
            (0, false)
        };
        let root = if prefix.is_empty() {
            self.replica.root()
        } else {
            self.replica.map().prefix_digest(prefix)
        };
        DigestReport {
            root,
            deep,
            damaged_found,
            digest_repaired,
            quarantined: self.replica.quarantined_count(),
        }
    }

    /// Every entry changed after `since` (all for 0) and the keys removed
    /// since then, at one instant; an error when the removals since `since`
    /// are no longer known. `base_after_start`: the state at `since` was
    /// taken after this node started (so removals before the start, at the
    /// start's index, are already in it).
    pub(super) fn snapshot(
        &mut self,
        since: u64,
        base_after_start: bool,
        now: u64,
    ) -> Result<Snapshot, NodeError> {
        let known = if base_after_start {
            self.replica.map().removed_since_restore(since)
        } else {
            self.replica.map().removed_since(since)
        };
        let removed = if since == 0 {
            Vec::new()
        } else if let Some(r) = known {
            r
        } else {
            return Err(NodeError::Snapshot(format!(
                "this node does not know every key removed since index {since} \
                 (it restarted since, or removed too many): take a full backup"
            )));
        };
        let entries = self
            .replica
            .map()
            .iter()
            .filter(|(_, r)| r.modify_index > since)
            .map(|(k, r)| (k.clone(), r.entry.clone()))
            .collect();
        Ok(Snapshot {
            node: self.me,
            name: self.replica.config().name.clone(),
            region: self.replica.config().region.clone(),
            since,
            index: self.replica.map().index(),
            root: self.replica.root(),
            gc_floor: self.replica.gc_floor(),
            taken_ms: now,
            entries,
            removed,
        })
    }

    /// The kept conflicts, oldest first, and how many were ever recorded.
    pub(super) fn conflicts(&self) -> (Vec<Conflict>, u64) {
        let log = self.replica.map().conflicts();
        (log.iter().cloned().collect(), log.total())
    }

    /// Every key under `prefix`, tombstones included, with its entry hash.
    pub(super) fn hashes(&self, prefix: &str) -> Vec<KeyHash> {
        self.replica
            .map()
            .scan_prefix(prefix)
            .map(|(k, r)| key_hash(k, r))
            .collect()
    }

    /// Every key in the Merkle `leaves`, tombstones included, with its
    /// entry hash, leaf by leaf in key-hash order.
    pub(super) fn leaf_hashes(&self, leaves: &[u32]) -> Vec<KeyHash> {
        let map = self.replica.map();
        leaves
            .iter()
            .filter(|l| (**l as usize) < LEAVES)
            .flat_map(|l| map.leaf_records(*l))
            .map(|(k, r)| key_hash(k, r))
            .collect()
    }
}

fn key_hash(k: &Key, r: &Record) -> KeyHash {
    KeyHash {
        key: k.as_str().to_string(),
        stamp: r.entry.stamp,
        deleted: r.entry.is_tombstone(),
        hash: r.check(),
    }
}
