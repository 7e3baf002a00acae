//! Merging one replicated entry into the map (from a peer's feed,
//! anti-entropy, a read-back or a backup import), with the events a merge
//! reports.

use super::{Event, Output, Replica, Resolution};
use crate::core::hlc::Hlc;
use crate::core::map::Merged;
use crate::core::types::{Entry, Key, NodeId};

impl Replica {
    /// Merges one replicated entry (from a peer, or from a backup when
    /// `from` is `None`); true if it changed the map.
    pub(super) fn merge_entry(
        &mut self,
        from: Option<NodeId>,
        key: Key,
        entry: Entry,
        floor: Hlc,
        now_ms: u64,
    ) -> bool {
        let hlc = entry.stamp.hlc;
        let stamp = entry.stamp;
        if !Replica::doc_loads(&entry) {
            self.metrics.docs_refused += 1;
            return false;
        }
        self.check_id_in_entry(from, stamp);
        // Versions of a document that meet may both hold changes the other
        // lacks: the one that loses by stamp is looked at after the merge.
        let held_doc = entry
            .is_doc()
            .then(|| self.map.get(key.as_str()).map(|r| r.entry.clone()))
            .flatten()
            .filter(Entry::is_doc);
        let incoming_doc = held_doc.as_ref().map(|_| entry.clone());
        let collisions = self.map.stamp_collisions();
        let damaged = self.map.damaged_replaced();
        let floor = self.floor_for(&key, floor);
        let merged = self.map.merge(&key, entry, floor);
        if self.map.damaged_replaced() != damaged {
            // Our entry had changed in memory: the intact one replaced it.
            self.metrics.records_quarantined += 1;
            self.metrics.records_repaired += 1;
            self.metrics.damage_found_in_memory += 1;
            self.staged.push(Output::Event(Event::RecordQuarantined {
                key: key.to_string(),
                reason: "a peer sent the same stamp and the entry here no longer matched its check"
                    .to_string(),
            }));
            self.staged.push(Output::Event(Event::RecordRepaired {
                key: key.to_string(),
                how: Resolution::Repaired {
                    from: from.unwrap_or(self.cfg.node),
                    stamp,
                },
            }));
        } else if self.map.stamp_collisions() != collisions {
            self.staged
                .push(Output::Event(Event::StampCollision { key: key.clone() }));
        }
        if merged.changed() {
            if let Some(from) = from {
                self.resolve_key(&key, Resolution::Repaired { from, stamp });
            }
            self.schedule_edge_push(now_ms);
        }
        let changed = match merged {
            Merged::BelowFloor => {
                self.metrics.below_floor_refused += 1;
                false
            }
            m if m.changed() => {
                // Checked by check_skew, so this cannot fail; keep the clock ahead of what we hold.
                let _ = self.clock.observe(hlc, self.checked_now(now_ms));
                self.dirty_keys.insert(key.clone());
                self.dirty_meta = true;
                true
            }
            _ => false,
        };
        if let (Some(held), Some(incoming)) = (held_doc, incoming_doc) {
            match merged {
                Merged::Replaced { .. } => self.docs_met(&key, held, now_ms),
                Merged::Stale => self.docs_met(&key, incoming, now_ms),
                _ => {}
            }
        }
        changed
    }
}
