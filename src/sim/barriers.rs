//! Consistent reads in the simulation: read barriers started at random
//! nodes, and the check that one that ends well finds, at its node, every
//! write that each peer it asked had acknowledged when it began.
//!
//! A store that silently lost or damaged records (the `LoseRecords` and
//! `DiskDamage` faults) breaks what a barrier relies on: a node's feed
//! position then claims writes it no longer holds. Writes acknowledged by
//! such a node, and barriers at such a node, are not checked; the barrier
//! refuses while a loss is known (a recovery runs).

use super::{Ev, Sim};
use crate::core::types::{NodeId, Stamp};
use crate::sync::BarrierError;

/// A barrier in flight: its node's incarnation, and the writes it must find.
pub(super) struct Expected {
    incarnation: u64,
    writes: Vec<(String, Stamp)>,
}

impl Sim {
    /// Schedules the run's read barriers through the active phase.
    pub(super) fn schedule_barriers(&mut self, start: u64, end: u64) {
        for _ in 0..self.cfg.read_barriers {
            let at = self.rng.range(start + 100, end);
            self.schedule(at, Ev::ReadBarrier);
        }
    }

    /// Starts a read barrier at a random running node, over one key (most
    /// often), a prefix, or everything.
    pub(super) fn read_barrier(&mut self) {
        // At members: an edge's barrier covers its server's writes only.
        let i = self.rng.below(self.cfg.nodes as u64) as usize;
        let (scope, prefix) = match self.rng.below(10) {
            0 => (String::new(), true),
            1 | 2 => (format!("k{}", self.rng.below(3)), true),
            _ => (format!("k{}", self.rng.below(self.cfg.keys as u64)), false),
        };
        let covered = |k: &str| {
            if prefix {
                k.starts_with(&scope)
            } else {
                k == scope
            }
        };
        let now = self.node_now(i);
        let Some(r) = self.nodes[i].replica.as_mut() else {
            return;
        };
        // The peers it will ask: those connected, not told to resync.
        let asked: Vec<NodeId> = r
            .status()
            .peers
            .iter()
            .filter(|p| p.connected && !p.stale)
            .map(|p| p.node)
            .collect();
        let checked = |j: usize, nodes: &[super::Node]| {
            asked.contains(&nodes[j].id) && !nodes[j].store_faulted
        };
        let writes = self
            .issued
            .iter()
            .filter(|(_, w)| w.acknowledged && covered(&w.key) && checked(w.node, &self.nodes))
            .map(|(s, w)| (w.key.clone(), *s))
            .collect();
        self.next_barrier += 1;
        let id = self.next_barrier;
        let expected = Expected {
            incarnation: self.nodes[i].incarnation,
            writes,
        };
        self.barriers.insert((i, id), expected);
        if let Some(r) = self.nodes[i].replica.as_mut() {
            r.barrier(id, &scope, prefix, now);
        }
        self.drain(i);
    }

    /// Barrier `id` at node `i` ended with `result`.
    pub(super) fn barrier_done(&mut self, i: usize, id: u64, result: Result<(), BarrierError>) {
        let Some(e) = self.barriers.remove(&(i, id)) else {
            return self.fail(format!("node {i} ended barrier {id}, which it never began"));
        };
        if result.is_err() {
            self.report.barriers_refused += 1;
            return;
        }
        self.report.barriers_passed += 1;
        let n = &self.nodes[i];
        if e.incarnation != n.incarnation || n.store_faulted {
            return;
        }
        let Some(r) = n.replica.as_ref() else { return };
        for (key, stamp) in &e.writes {
            let held = match r.get(key) {
                Some(rec) => rec.entry.stamp >= *stamp,
                // Its delete was collected here (the floor covers it).
                None => stamp.hlc <= r.gc_floor(),
            };
            if !held {
                let got = r.get(key).map(|rec| rec.entry.stamp);
                return self.fail(format!(
                    "node {i}'s read barrier {id} ended, but it lacks the write {stamp:?} of {key:?} \
                     (it holds {got:?}) that a peer it asked had acknowledged before it began"
                ));
            }
        }
    }
}
