//! Tombstone collection: our frontier (what we hold every write up to),
//! collection by stability and by age, and the resync of a replica told
//! it was away longer than the horizon.

use super::{Event, Output, Replica};
use crate::core::hlc::Hlc;
use crate::core::mutants::{self, Mutant};
use crate::core::types::{Key, NodeId};

impl Replica {
    /// A peer says we lost contact before a tombstone it collected by age.
    /// Entries older than the horizon may be deleted keys whose tombstones
    /// were collected: drop them, then rebuild from a peer, which sends back
    /// those still alive.
    pub(super) fn on_stale(&mut self, from: NodeId, floor: Hlc, now_ms: u64) {
        let cut = Hlc::new(now_ms.saturating_sub(self.cfg.tombstone_horizon_ms), 0);
        let old: Vec<Key> = self
            .map
            .iter()
            .filter(|(_, r)| r.entry.stamp.hlc < cut)
            .map(|(k, _)| k.clone())
            .collect();
        for k in &old {
            self.map.remove(k.as_str());
            self.dirty_keys.insert(k.clone());
        }
        // Whatever we still hold is newer than the tombstones they collected:
        // refuse older values for absent keys from now on (the rebuild's full
        // transfer is exempt), and claim nothing about what we dropped.
        self.gc_floor = self.gc_floor.max(floor);
        for (id, p) in self.peers.iter_mut() {
            if p.received != Hlc::ZERO {
                p.received = Hlc::ZERO;
                self.dirty_peers.insert(*id);
            }
        }
        self.metrics.resyncs += 1;
        self.staged.push(Output::Event(Event::Resynced {
            from,
            dropped: old.len(),
        }));
        self.synced_ms = now_ms;
        self.dirty_meta = true;
        self.rebuilding = true;
        self.rebuild_from = None;
        // A round begun on the state we just dropped is void.
        self.ae_session = None;
        // Say hello again, first to the peer that told us: it sends everything.
        self.say_hello(from);
        let others: Vec<NodeId> = self
            .peers
            .iter()
            .filter(|(id, p)| p.link.ready() && **id != from)
            .map(|(id, _)| *id)
            .collect();
        for id in others {
            self.say_hello(id);
        }
    }

    /// Our frontier: we hold every write stamped at or below it — the least
    /// of our own clock and what we received of each peer's own writes.
    ///
    /// While a recovery is on it claims nothing (zero): records were lost
    /// here that peers may hold (see `replica/recovery.rs`).
    pub(super) fn frontier(&self) -> Hlc {
        if !self.claims_held() {
            return Hlc::ZERO;
        }
        self.peers
            .values()
            .map(|p| p.received)
            .fold(self.clock.last(), Hlc::min)
    }

    /// Drops tombstones that every member holds, or that are older than the horizon.
    pub(super) fn collect_garbage(&mut self, now_ms: u64) {
        if self.rebuilding {
            // Old tombstones arriving in the transfer must not raise the
            // floor above live values still on their way.
            return;
        }
        // Stability needs at least one known peer, and every known peer's word.
        let stable = if self.peers.is_empty() {
            Hlc::ZERO
        } else if mutants::on(Mutant::GreatestFrontier) {
            self.peers
                .values()
                .map(|p| p.frontier)
                .fold(self.frontier(), Hlc::max)
        } else {
            self.peers
                .values()
                .map(|p| p.frontier)
                .fold(self.frontier(), Hlc::min)
        };
        let horizon = Hlc::new(now_ms.saturating_sub(self.cfg.tombstone_horizon_ms), 0);
        let limit = stable.max(horizon);
        if limit == Hlc::ZERO {
            return;
        }
        for (stamp, key) in self.map.tombstones_up_to(limit, self.cfg.gc_batch_max) {
            if !self.map.collect(&key, stamp) {
                continue;
            }
            self.dirty_keys.insert(key);
            self.gc_floor = self.gc_floor.max(stamp.hlc);
            if stamp.hlc > stable {
                self.horizon_floor = self.horizon_floor.max(stamp.hlc);
            }
            self.dirty_meta = true;
            self.metrics.tombstones_collected += 1;
        }
    }
}
