//! Faults the simulation injects: crashes (losing what was not durable),
//! damaged records on disk and in memory, and partitions (a region cut
//! off, one link cut, a random split).

use super::{pair, Ev, Sim, CLOCK_MEMORY_MS};
use crate::core::types::{Key, NodeId, Stamp};
use crate::sync::DurableState;
use bytes::Bytes;

impl Sim {
    /// Crashes a random running node (if more than one runs); which.
    pub(super) fn crash(&mut self) -> Option<usize> {
        self.crash_one(|_, _| true, None)
    }

    /// Crashes a random running node for which `may(sim, node)` holds (if
    /// more than one runs), down for `down_ms` (drawn when `None`); which.
    pub(super) fn crash_one(
        &mut self,
        may: impl Fn(&Sim, usize) -> bool,
        down_ms: Option<u64>,
    ) -> Option<usize> {
        let up: Vec<usize> = (0..self.nodes.len())
            .filter(|i| self.nodes[*i].replica.is_some())
            .collect();
        if up.len() <= 1 {
            return None;
        }
        let up: Vec<usize> = up.into_iter().filter(|i| may(self, *i)).collect();
        if up.is_empty() {
            return None;
        }
        let i = up[self.rng.below(up.len() as u64) as usize];
        self.tr(|| format!("n{i} crashes"));
        self.report.crashes += 1;
        let n = &mut self.nodes[i];
        n.replica = None;
        n.queue.clear();
        n.pending = None;
        n.incarnation += 1;
        n.tick_at = None;
        self.drop_links_of(i);
        let down = down_ms.unwrap_or_else(|| self.rng.range(200, 10_000));
        self.schedule(self.now + down, Ev::Restart { node: i });
        self.edges_follow(i);
        Some(i)
    }

    /// Crashes a running node and destroys its store, unless that would
    /// lose an acknowledged write; which.
    pub(super) fn destroy(&mut self) -> Option<usize> {
        let i = self.crash_one(
            |sim, i| !sim.holds_last_copy(i) && !sim.holds_local_writes(i),
            None,
        )?;
        // Half the seeds (no draw: the rest of the seed's schedule stays).
        let unknowing = (self.cfg.seed >> 1) & 1 == 1;
        let n = &mut self.nodes[i];
        n.durable = DurableState::new(n.id);
        n.lost = true;
        n.wiped_unknowing = unknowing;
        self.report.wiped_unknowing += u64::from(unknowing);
        n.acked_hlc_max = crate::core::hlc::Hlc::ZERO;
        self.report.destroys += 1;
        Some(i)
    }

    /// A key that another node holds as written by node `i` before `i`
    /// adopted its id (so the id held data before).
    pub(super) fn written_before_adoption(&self, i: usize) -> Option<String> {
        let id = self.nodes[i].id;
        let at = crate::core::hlc::Hlc::new(self.nodes[i].cfg.id_adopted_at_ms, 0);
        // Not a member away for long or forgotten: what it holds counts
        // for nothing until it has resynced (seed 3391).
        self.nodes
            .iter()
            .enumerate()
            .filter(|(j, n)| *j != i && !n.away)
            .find_map(|(_, n)| {
                n.durable
                    .records
                    .iter()
                    .find(|(_, r)| r.entry.stamp.node == id && r.entry.stamp.hlc < at)
                    .map(|(k, _)| k.to_string())
            })
    }

    /// Whether node `i` durably holds the only intact copy of a key's
    /// newest acknowledged write. Quorum acknowledgement keeps a write on
    /// two nodes; disk damage on the other one (allowed while this one
    /// held it intact) leaves this copy the last, and destroying it would
    /// lose the write whatever the replicas do (sim seed 32359).
    fn holds_last_copy(&self, i: usize) -> bool {
        if self.holds_last_doc_changes(i) {
            return true;
        }
        self.oracle.iter().any(|(key, (stamp, _, _))| {
            let Ok(key) = crate::core::types::Key::new(key) else {
                return false;
            };
            self.nodes[i]
                .durable
                .records
                .get(&key)
                .is_some_and(|r| r.entry.stamp == *stamp && !self.held_elsewhere(i, &key, &r.entry))
        })
    }

    /// Crashes a running node whose store, when it restarts, has lost up to
    /// three live records that other nodes hold: a lost write on disk. The
    /// records left pass their checks and the node's feed positions claim
    /// what it lost, so only anti-entropy's comparison can find them.
    pub(super) fn lose_records(&mut self) {
        let Some(i) = self.crash() else { return };
        self.nodes[i].store_faulted = true;
        let candidates = self.stored_elsewhere(i, true);
        if candidates.is_empty() {
            return;
        }
        for _ in 0..self.rng.range(1, 3) {
            let k = &candidates[self.rng.below(candidates.len() as u64) as usize];
            if self.nodes[i].durable.records.remove(k).is_some() {
                self.tr(|| format!("n{i} store lost {}", k.as_str()));
                self.report.records_lost += 1;
            }
        }
    }

    /// A running member leaves for longer than the tombstone horizon (a
    /// crash, back after the horizon and 10–30 s more). Acknowledged writes
    /// that only it holds may be dropped when it comes back and resyncs:
    /// that is the horizon's documented price, so the oracle stops counting
    /// them as acknowledged (they may survive or not).
    pub(super) fn long_absence(&mut self) {
        let down = self.cfg.tombstone_horizon_ms + self.rng.range(10_000, 30_000);
        let Some(i) = self.crash_one(|_, _| true, Some(down)) else {
            return;
        };
        self.report.long_absences += 1;
        self.mark_away(i);
    }

    /// Node `i` (crashed) is away for long (longer than the horizon, or
    /// forgotten meanwhile): when it comes back it drops what may be
    /// deleted keys and resyncs, so acknowledged writes that only it holds
    /// may go with them; the oracle no longer counts them.
    pub(super) fn mark_away(&mut self, i: usize) {
        self.mark_doc_versions_away(i);
        self.nodes[i].away = true;
        // Per key it holds: the newest stamp another node holds durably.
        // Every acknowledged write of the key newer than that is held by
        // this node alone (its own, and older ones it superseded here).
        let keys: Vec<(Key, Stamp)> = self.nodes[i]
            .durable
            .records
            .keys()
            .map(|k| {
                let elsewhere = self
                    .nodes
                    .iter()
                    .enumerate()
                    // An edge's copy is a cache: its server tells it to
                    // drop what the server lacks (seed 2377).
                    .filter(|(j, n)| *j != i && !n.away && n.attached.is_none())
                    .filter_map(|(_, n)| n.durable.records.get(k).map(|r| r.entry.stamp))
                    .max()
                    .unwrap_or(Stamp::ZERO);
                (k.clone(), elsewhere)
            })
            .collect();
        for (key, elsewhere) in keys {
            let mut changed = false;
            for (stamp, w) in self.issued.iter_mut() {
                if w.acknowledged && w.key == key.as_str() && *stamp > elsewhere {
                    w.acknowledged = false;
                    changed = true;
                    self.report.writes_held_only_by_the_absent += 1;
                }
            }
            if !changed {
                continue;
            }
            self.tr(|| format!("n{i} leaves holding the only copy of {}", key.as_str()));
            // The newest write of the key still counted as acknowledged.
            let newest = self
                .issued
                .iter()
                .filter(|(_, w)| w.acknowledged && w.key == key.as_str())
                .max_by_key(|(s, _)| **s)
                .map(|(s, w)| (*s, w.value.clone(), w.flags));
            match newest {
                Some(n) => self.oracle.insert(key.as_str().to_string(), n),
                None => self.oracle.remove(key.as_str()),
            };
        }
    }

    /// The index of node `id`.
    pub(super) fn index_of(&self, id: NodeId) -> Option<usize> {
        self.nodes.iter().position(|n| n.id == id)
    }

    /// The keys of node `i`'s stored records (live values only, with
    /// `live`) that another node holds intact: damage to them can be repaired.
    fn stored_elsewhere(&self, i: usize, live: bool) -> Vec<Key> {
        self.nodes[i]
            .durable
            .records
            .iter()
            .filter(|(k, r)| {
                (!live || r.entry.value.is_some()) && self.held_elsewhere(i, k, &r.entry)
            })
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// Whether `id` is the member that left for longer than the horizon.
    pub(super) fn is_away(&self, id: NodeId) -> bool {
        self.nodes.iter().any(|n| n.id == id && n.away)
    }

    /// Whether node `i`'s clock is wrong now, or was lately enough that
    /// its peers may still judge it by old samples.
    pub(super) fn clock_wrong(&self, i: usize) -> bool {
        self.now < self.nodes[i].clock_wrong_until
    }

    /// A clock that ran off comes back. It counts as wrong a while longer:
    /// its peers judge clocks by samples up to [`CLOCK_MEMORY_MS`] old, and
    /// a clock that ran fast left its node's stamps ahead of time, so the
    /// node refuses writes until time catches up with them.
    pub(super) fn clock_back(&mut self, i: usize) {
        let n = &mut self.nodes[i];
        let ahead_ms = (n.skew_ms - n.base_skew_ms).max(0) as u64;
        n.skew_ms = n.base_skew_ms;
        if !n.jumped {
            n.clock_wrong_until = self.now + CLOCK_MEMORY_MS + ahead_ms;
        }
    }

    /// After a clock goes wrong: notes whether a majority of the clocks
    /// are wrong at once (then a correct clock may be outvoted).
    pub(super) fn note_wrong_clocks(&mut self) {
        // Members only: an edge's clock judges nothing.
        let members = self.cfg.nodes;
        let wrong = (0..members).filter(|i| self.clock_wrong(*i)).count();
        if 2 * wrong >= members {
            self.clocks_majority_wrong = true;
        }
    }

    /// Whether a server other than `i` holds `key`'s very entry durably (so
    /// that damage to `i`'s copy can be repaired from it). A member away
    /// longer than the horizon does not count: it may drop what it holds.
    pub(super) fn held_elsewhere(
        &self,
        i: usize,
        key: &crate::core::types::Key,
        entry: &crate::core::types::Entry,
    ) -> bool {
        // A server's copy: an edge's is a cache its server does not ask
        // back (a server recovers from servers), and an edge drops what its
        // server lacks below its floor (sim seed 19254).
        self.nodes.iter().enumerate().any(|(j, n)| {
            j != i
                && n.attached.is_none()
                && !n.away
                && n.durable
                    .records
                    .get(key)
                    .is_some_and(|r| r.entry == *entry)
        })
    }

    /// Damages up to three stored records of stopped node `i` that another
    /// node holds intact: a value byte, flags, a stamp, or (rarely) the key
    /// itself, leaving the stored check as it was.
    pub(super) fn damage_disk(&mut self, i: usize) {
        self.nodes[i].store_faulted = true;
        let candidates = self.stored_elsewhere(i, false);
        if candidates.is_empty() {
            return;
        }
        for _ in 0..self.rng.range(1, 3) {
            let k = &candidates[self.rng.below(candidates.len() as u64) as usize];
            let kind = self.rng.below(20);
            self.tr(|| format!("n{i} disk damage {} (kind {kind})", k.as_str()));
            let d = &mut self.nodes[i].durable;
            let Some(r) = d.records.get_mut(k) else {
                continue;
            };
            match kind {
                0 => {
                    // The key's own bytes: the record no longer decodes.
                    let r = d.records.remove(k).expect("present");
                    let mut raw = k.as_str().as_bytes().to_vec();
                    raw.push(0xff);
                    let _ = r;
                    d.damaged.push(crate::sync::DamagedRecord {
                        raw_key: raw,
                        reason: "simulated: the key's bytes were damaged".to_string(),
                    });
                }
                1..=6 => r.entry.stamp.hlc.0 ^= 1 << 20,
                7..=12 => r.entry.flags ^= 1 << 3,
                _ => match r.entry.value.as_mut() {
                    Some(v) if !v.is_empty() => {
                        let mut b = v.to_vec();
                        b[0] ^= 0x20;
                        *v = Bytes::from(b);
                    }
                    _ => r.entry.flags ^= 1,
                },
            }
            self.report.records_damaged += 1;
        }
    }

    /// Damages one record in a running node's memory that another node
    /// holds intact; the replica must find it (before it sends or serves it,
    /// or in its scrub) and repair it.
    pub(super) fn damage_memory(&mut self) {
        let i = self.rng.below(self.nodes.len() as u64) as usize;
        let Some(r) = self.nodes[i].replica.as_ref() else {
            return;
        };
        // Held intact on its own disk (read back) or by another node.
        let on_disk = |k: &crate::core::types::Key, e: &crate::core::types::Entry| {
            self.nodes[i]
                .durable
                .records
                .get(k)
                .is_some_and(|r| r.entry == *e)
        };
        let candidates: Vec<crate::core::types::Key> = r
            .map()
            .iter()
            .filter(|(k, rec)| on_disk(k, &rec.entry) || self.held_elsewhere(i, k, &rec.entry))
            .map(|(k, _)| k.clone())
            .collect();
        if candidates.is_empty() {
            return;
        }
        let k = candidates[self.rng.below(candidates.len() as u64) as usize].clone();
        let value = Bytes::from_static(b"damaged in memory");
        if let Some(r) = self.nodes[i].replica.as_mut() {
            if r.simulate_memory_damage(k.as_str(), Some(value)) {
                self.report.records_damaged += 1;
            }
        }
    }

    pub(super) fn partition(&mut self) {
        let n = self.nodes.len();
        let mut cut = Vec::new();
        match self.rng.below(3) {
            0 => {
                // A whole region cut off from the others.
                let region = self.rng.below(self.cfg.regions as u64) as usize;
                for a in 0..n {
                    for b in a + 1..n {
                        if (self.nodes[a].region == region) != (self.nodes[b].region == region) {
                            cut.push((a, b));
                        }
                    }
                }
            }
            1 => {
                // One link: a partial partition, healed through third nodes.
                let a = self.rng.below(n as u64) as usize;
                let b = (a + 1 + self.rng.below(n as u64 - 1) as usize) % n;
                cut.push(pair(a, b));
            }
            _ => {
                // A random split in two.
                let side: Vec<bool> = (0..n).map(|_| self.rng.chance(500_000)).collect();
                for a in 0..n {
                    for b in a + 1..n {
                        if side[a] != side[b] {
                            cut.push((a, b));
                        }
                    }
                }
            }
        }
        self.report.partitions += 1;
        for p in &cut {
            let c = self.cuts.entry(*p).or_insert(0);
            *c += 1;
            if *c == 1 && self.links.get(p).is_some_and(|l| l.0) {
                // Out of reach from now, whatever the transport says.
                self.link_down_ms.insert(*p, self.now);
            }
            // The transport notices after a while; meanwhile messages vanish.
            let detect = self.rng.range(100, 3_000);
            self.schedule(self.now + detect, Ev::Reconcile { a: p.0, b: p.1 });
        }
        let length = self.rng.range(1_000, 20_000);
        self.schedule(self.now + length, Ev::Heal { cut });
    }
}
