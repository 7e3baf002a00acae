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
        let resynced_lately = self
            .resynced_ms
            .is_some_and(|t| now_ms.saturating_sub(t) < self.cfg.tombstone_horizon_ms);
        if floor <= self.gc_floor || resynced_lately {
            // Every peer that collected by age tells us, each in its time
            // and with its own floor. After our resync everything we hold
            // older than the horizon came from a peer's current state (we
            // dropped the rest), so there is nothing more to drop: doing
            // it again would undo a finished rebuild (sim seeds 1909,
            // 214). Take the floor, and a hello with it takes us back.
            if floor > self.gc_floor {
                self.gc_floor = floor;
                self.dirty_meta = true;
            }
            self.say_hello(from);
            return;
        }
        self.resynced_ms = Some(now_ms);
        // We were the one away: our view of the peers is old, so collecting
        // by age would find their tombstones unconfirmed (see
        // `collect_garbage`). Collect by stability alone for a horizon.
        self.age_collection_from_ms = now_ms.saturating_add(self.cfg.tombstone_horizon_ms);
        let cut = Hlc::new(now_ms.saturating_sub(self.cfg.tombstone_horizon_ms), 0);
        let old: Vec<Key> = self
            .map
            .iter()
            // An edge's own writes wait to be handed over, whatever their age.
            .filter(|(_, r)| r.entry.stamp.hlc < cut && !self.is_own_record(r.entry.stamp))
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

    /// The time on the slowest clock in sight: ours, or a peer's (from the
    /// fresh round trips, less their uncertainty) when it is behind ours.
    /// Age is measured on it: a clock that runs fast must not collect by
    /// age what its peers still hold unconfirmed, and call them stale for
    /// it. A slow clock only collects later. A replica that hears from no
    /// peer has only its own clock (the horizon must still bound its
    /// tombstones while every peer is away): if that clock runs fast, it
    /// collects early by as much, and the peers it then calls stale
    /// resync (sim seed 10662; the README says so).
    fn slowest_clock_ms(&self, now_ms: u64) -> u64 {
        let behind_ms = self
            .members()
            .filter_map(|(_, p)| p.clock.estimate(now_ms))
            .map(|s| s.offset_ms.saturating_sub((s.rtt_ms / 2) as i64))
            .fold(0i64, i64::min);
        now_ms.saturating_sub(behind_ms.unsigned_abs())
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
        // Not past what we held of a member forgotten lately: others may
        // hold writes of it that never reached us (seed 2444).
        let cap = self.forgotten_cap().unwrap_or(Hlc::MAX);
        self.members()
            .map(|(_, p)| p.received)
            .fold(self.clock.last().min(cap), Hlc::min)
    }

    /// Drops tombstones that every member holds, or that are older than the horizon.
    pub(super) fn collect_garbage(&mut self, now_ms: u64) {
        if self.rebuilding {
            // Old tombstones arriving in the transfer must not raise the
            // floor above live values still on their way.
            return;
        }
        // Stability needs at least one known member, and every known
        // member's word. An edge takes its servers' word for it (see
        // `replica/edge.rs`), and collects nothing by age: a server tells
        // it when it was away too long.
        let edge = self.is_edge();
        let stable = if edge {
            self.edge_stable()
        } else if mutants::on(Mutant::GreatestFrontier) && self.members().next().is_some() {
            self.members()
                .map(|(_, p)| p.frontier)
                .fold(self.frontier(), Hlc::max)
        } else {
            self.stable()
        };
        // Back from an absence longer than the horizon, this replica knows
        // its peers as they were before it left: a tombstone they hold
        // would look unconfirmed and be collected by age, and every peer
        // would then look as if it had missed it and be told to resync
        // (sim seed 55). It is the one that was away: it collects by
        // stability alone until it has been back a whole horizon.
        let horizon = if edge || now_ms < self.age_collection_from_ms {
            Hlc::ZERO
        } else {
            let slowest_ms = self.slowest_clock_ms(now_ms);
            Hlc::new(slowest_ms.saturating_sub(self.cfg.tombstone_horizon_ms), 0)
        };
        let limit = stable.max(horizon);
        if limit == Hlc::ZERO {
            return;
        }
        // A member we are in contact with is not covered by the horizon
        // until it has our feed past the tombstone: it came back just
        // before the horizon passed, and collecting what we had not sent
        // it yet would leave it holding the value deleted (sim seed 3984).
        let acked_by_all_up = self
            .members()
            .filter(|(_, p)| p.link.up())
            .map(|(_, p)| p.acked)
            .min()
            .unwrap_or(u64::MAX);
        // Nor before the edges keeping up have it: collected first, it
        // would never reach them (they would keep the deleted value until
        // anti-entropy told them).
        let edges_acked = self.edges_acked(now_ms);
        for (stamp, key) in self.map.tombstones_up_to(limit, self.cfg.gc_batch_max) {
            // An edge's own delete waits to be handed over (`replica/handover.rs`).
            if self.is_own_record(stamp) {
                continue;
            }
            if self
                .map
                .get(key.as_str())
                .is_some_and(|r| r.modify_index > edges_acked)
            {
                continue;
            }
            let by_age = stamp.hlc > stable;
            if by_age
                && self
                    .map
                    .get(key.as_str())
                    .is_some_and(|r| r.modify_index > acked_by_all_up)
            {
                continue;
            }
            if !self.map.collect(&key, stamp) {
                continue;
            }
            self.dirty_keys.insert(key);
            self.gc_floor = self.gc_floor.max(stamp.hlc);
            if by_age {
                self.horizon_floor = self.horizon_floor.max(stamp.hlc);
            }
            self.dirty_meta = true;
            self.metrics.tombstones_collected += 1;
        }
    }
}
