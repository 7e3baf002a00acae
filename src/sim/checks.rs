//! What a run must show: roots equal at every event once quiescent, and at
//! the end all roots and states equal, equal to the oracle of acknowledged
//! writes, and every node's durable state restoring to the same root.

use std::collections::BTreeMap;

use bytes::Bytes;

use super::{pair, Node, Sim, EPOCH_MS, FAILOVER_AFTER_MS, STEADY_MS};
use crate::core::types::{Entry, Key, Stamp, REGION_NAMES};
use crate::sync::Replica;

impl Sim {
    /// After convergence the live data no longer changes, while replicas
    /// go on collecting tombstones, each when it learns every member holds
    /// them: runs until `t`, checking after every event that every root is
    /// still equal (equal live data must give equal roots at every moment).
    pub(super) fn check_steady(&mut self, t: u64) -> Result<(), String> {
        let collected = |nodes: &[Node]| -> u64 {
            nodes
                .iter()
                .filter_map(|n| n.replica.as_ref())
                .map(|r| r.metrics().tombstones_collected)
                .sum()
        };
        let before = collected(&self.nodes);
        while self.step(t) {
            if let Some(f) = self.failure.take() {
                return Err(f);
            }
            if !self.converged_roots() {
                let roots = self.describe_roots();
                return Err(format!(
                    "roots differ {} ms after convergence, with no write in flight: {roots}",
                    self.now - (t - STEADY_MS)
                ));
            }
        }
        self.now = self.now.max(t);
        self.report.collected_while_steady = collected(&self.nodes) - before;
        Ok(())
    }

    /// Quiescent: no persist pending, every node connected to every other
    /// (hellos accepted both ways, so none is yet to be told it must
    /// resync), none rebuilding, and every root equal.
    /// The entries every node other than `i` holds alike (in memory when
    /// it runs, on disk when it is down): live values only.
    pub(super) fn agreed_elsewhere(&self, i: usize) -> BTreeMap<Key, Entry> {
        let held = |n: &Node| -> BTreeMap<Key, Entry> {
            match n.replica.as_ref() {
                Some(r) => r
                    .map()
                    .iter()
                    .map(|(k, rec)| (k.clone(), rec.entry.clone()))
                    .collect(),
                None => n
                    .durable
                    .records
                    .iter()
                    .map(|(k, r)| (k.clone(), r.entry.clone()))
                    .collect(),
            }
        };
        let mut others = (0..self.nodes.len()).filter(|j| *j != i);
        let Some(first) = others.next() else {
            return BTreeMap::new();
        };
        let mut agreed: BTreeMap<Key, Entry> = held(&self.nodes[first])
            .into_iter()
            .filter(|(_, e)| e.value.is_some())
            .collect();
        for j in others {
            let theirs = held(&self.nodes[j]);
            agreed.retain(|k, e| theirs.get(k) == Some(e));
        }
        agreed
    }

    /// A replica that says its recovery is over holds every live entry
    /// that every other node held alike when the recovery started and
    /// still holds now: each full transfer it took carried it. (A rebuild
    /// that refused its peers' older values and left anti-entropy to bring
    /// them back later would serve reads without them meanwhile.)
    pub(super) fn check_recovered(&mut self, i: usize) -> Result<(), String> {
        let Some(before) = self.nodes[i].recovery_snapshot.take() else {
            return Ok(());
        };
        // An edge recovers from its server alone: one that resynced
        // meanwhile (dropping what it held older than the horizon) may
        // have taken some of it back only after its transfer to the edge
        // (seed 15193); the edge gets it by the feed then.
        if let Some((s, resyncs)) = self.nodes[i].recovery_server.take() {
            if self.nodes[s].resyncs != resyncs {
                return Ok(());
            }
        }
        let now = self.agreed_elsewhere(i);
        let Some(r) = self.nodes[i].replica.as_ref() else {
            return Ok(());
        };
        for (k, e) in &before {
            // A record of its own found damaged meanwhile is quarantined
            // (out of the map) until a peer's copy repairs it.
            if now.get(k) != Some(e) || r.quarantined(k.as_str()) {
                continue;
            }
            let held = r.map().get(k.as_str()).map(|rec| rec.entry.stamp);
            if held.is_none_or(|s| s < e.stamp) {
                return Err(format!(
                    "node {i} ended its recovery without {k:?} at {:?}, which every \
                     other node held before the recovery started (it holds {held:?})",
                    e.stamp
                ));
            }
        }
        Ok(())
    }

    pub(super) fn converged(&mut self) -> bool {
        // An edge is connected to one server (the others it knew are not).
        // Every member forgotten (or that left) has come back: none is
        // still to be told it must resync.
        let settled = |r: &mut Replica| {
            let st = r.status();
            let ok = |p: &crate::sync::PeerStatus| p.connected && !p.stale;
            r.forgotten().is_empty()
                && !st.rebuilding
                && if st.edge {
                    // (Its local writes handed over: a delete of a key the
                    // servers lack leaves the roots equal meanwhile.)
                    st.peers.iter().any(ok) && st.local_writes_waiting == 0
                } else {
                    st.peers.iter().all(ok)
                }
        };
        // Every write an edge forwarded is answered (one whose message was
        // lost waits for its timeout), unless its edge crashed since.
        let stranded = self.stranded_edges();
        let nodes = &self.nodes;
        let answered = self
            .edge_writes
            .iter()
            .all(|((e, _), w)| nodes[*e].incarnation != w.incarnation);
        answered
            && self.nodes.iter_mut().enumerate().all(|(i, n)| {
                n.pending.is_none()
                    && n.replica
                        .as_mut()
                        .is_some_and(|r| stranded.contains(&i) || settled(r))
            })
            && self.converged_roots()
    }

    /// Every node is up and reports the same root (but a stranded edge:
    /// see [`Sim::stranded_edges`]).
    pub(super) fn converged_roots(&mut self) -> bool {
        let stranded = self.stranded_edges();
        let mut root = None;
        for (i, n) in self.nodes.iter_mut().enumerate() {
            let Some(r) = n.replica.as_mut() else {
                return false;
            };
            if stranded.contains(&i) {
                continue;
            }
            let rr = r.root();
            if *root.get_or_insert(rr) != rr {
                return false;
            }
        }
        true
    }

    pub(super) fn describe_roots(&mut self) -> String {
        let mut out = Vec::new();
        for (i, n) in self.nodes.iter_mut().enumerate() {
            match n.replica.as_mut() {
                None => out.push(format!("n{i}: down")),
                Some(r) => {
                    let st = r.status();
                    let peers: Vec<String> = st
                        .peers
                        .iter()
                        .map(|p| {
                            format!(
                                "{}{}:a{}/r{}/f{}",
                                p.name,
                                if p.connected { "" } else { "(down)" },
                                p.applied,
                                p.received.physical_ms() % 1_000_000,
                                p.frontier.physical_ms() % 1_000_000
                            )
                        })
                        .collect();
                    out.push(format!(
                        "n{i}: root {:02x}{:02x}{:02x}{:02x} keys {} tombstones {} index {} frontier {} floor {} peers [{}]",
                        st.root[0],
                        st.root[1],
                        st.root[2],
                        st.root[3],
                        r.map().len(),
                        r.map().tombstone_count(),
                        st.index,
                        st.frontier.physical_ms() % 1_000_000,
                        st.gc_floor.physical_ms() % 1_000_000,
                        peers.join(" ")
                    ));
                    out.push(format!("    {:?}", r.metrics()));
                }
            }
        }
        out.extend(self.describe_differences(5));
        out.join("\n")
    }

    /// Up to `count_max` keys whose records differ between the live
    /// replicas, with each one's stamp (or `-` where it is absent).
    pub(super) fn describe_differences(&self, count_max: usize) -> Vec<String> {
        let live: Vec<(usize, &Replica)> = self
            .nodes
            .iter()
            .enumerate()
            .filter_map(|(i, n)| n.replica.as_ref().map(|r| (i, r)))
            .collect();
        let mut keys: Vec<&Key> = live
            .iter()
            .flat_map(|(_, r)| r.map().iter().map(|(k, _)| k))
            .collect();
        keys.sort();
        keys.dedup();
        let mut out = Vec::new();
        for k in keys {
            let held: Vec<Option<&Entry>> = live
                .iter()
                .map(|(_, r)| r.map().get(k.as_str()).map(|rec| &rec.entry))
                .collect();
            if held.windows(2).all(|w| w[0] == w[1]) {
                continue;
            }
            if out.len() == count_max {
                out.push("    ...".to_string());
                break;
            }
            let each: Vec<String> = live
                .iter()
                .zip(&held)
                .map(|((i, _), e)| match e {
                    None => format!("n{i} -"),
                    Some(e) => format!(
                        "n{i} {:?}{}",
                        e.stamp,
                        if e.value.is_none() {
                            " (tombstone)"
                        } else {
                            ""
                        }
                    ),
                })
                .collect();
            out.push(format!("    differs {k:?}: {}", each.join(", ")));
        }
        out
    }

    pub(super) fn check_final(&mut self) -> Result<(), String> {
        let expected: BTreeMap<String, (Stamp, Bytes, u64)> = self
            .oracle
            .iter()
            .filter_map(|(k, (s, v, f))| v.as_ref().map(|v| (k.clone(), (*s, v.clone(), *f))))
            .collect();
        self.check_local_writes()?;
        self.report.writes_lost_unacknowledged =
            self.issued.len() as u64 - self.report.writes_acknowledged;
        // An accepted write is acknowledged unless its node crashed first.
        // (A write made for an edge is answered to the edge: see below.)
        for (stamp, w) in &self.issued {
            if !w.forwarded && !w.answered && self.nodes[w.node].incarnation == w.incarnation {
                return Err(format!(
                    "node {} accepted a write of {:?} at {stamp:?} and never acknowledged it",
                    w.node, w.key
                ));
            }
        }
        // A write an edge forwarded is answered, unless the edge crashed first.
        for ((edge, id), w) in &self.edge_writes {
            if self.nodes[*edge].incarnation == w.incarnation {
                return Err(format!(
                    "edge {edge} forwarded write {id} ({:?}) and never answered it",
                    w.key
                ));
            }
        }
        let stranded = self.stranded_edges();
        self.report.edges_stranded = stranded.len() as u64;
        // Writes accepted but never acknowledged (a crash came first, or a
        // quorum write timed out, or its node crashed while it waited for a
        // majority) may survive or not: a key may hold one of them when it
        // is newer than the newest acknowledged write of that key.
        let unacked = |key: &str, newer_than: Option<Stamp>| -> Vec<(Stamp, Option<Bytes>, u64)> {
            self.issued
                .iter()
                .filter(|(s, w)| {
                    !w.acknowledged && w.key == key && newer_than.is_none_or(|n| **s > n)
                })
                .map(|(s, w)| (*s, w.value.clone(), w.flags))
                .collect()
        };
        for (i, n) in self.nodes.iter_mut().enumerate() {
            if stranded.contains(&i) {
                continue;
            }
            let r = n.replica.as_mut().expect("converged means all up");
            let live: BTreeMap<String, (Stamp, Bytes, u64)> = r
                .map()
                .iter()
                .filter_map(|(k, rec)| {
                    rec.entry
                        .value
                        .as_ref()
                        .map(|v| (k.to_string(), (rec.entry.stamp, v.clone(), rec.entry.flags)))
                })
                .collect();
            let keys: std::collections::BTreeSet<&String> =
                live.keys().chain(self.oracle.keys()).collect();
            let mut diffs = Vec::new();
            for k in keys {
                // Documents merge: `check_documents` holds them to their oracle.
                if super::documents::is_doc_key(k) {
                    continue;
                }
                let held = live.get(k);
                let acked = self.oracle.get(k);
                let acked_stamp = acked.map(|(s, _, _)| *s);
                let ok = match (held, acked) {
                    (Some(l), Some((s, Some(v), f))) if (l.0, &l.1, l.2) == (*s, v, *f) => true,
                    (None, None) | (None, Some((_, None, _))) => true,
                    // A newer write that was never acknowledged survived.
                    (Some(l), _) => unacked(k, acked_stamp)
                        .iter()
                        .any(|(s, v, f)| *s == l.0 && v.as_ref() == Some(&l.1) && *f == l.2),
                    // A newer delete that was never acknowledged survived.
                    (None, Some(_)) => unacked(k, acked_stamp).iter().any(|(_, v, _)| v.is_none()),
                };
                if ok {
                    continue;
                }
                diffs.push(match (held, acked) {
                    (None, Some((s, _, _))) => format!("{k}: acknowledged {s:?} lost"),
                    (Some(l), Some((s, Some(_), _))) => {
                        format!("{k}: holds {:?}, oracle {s:?}", l.0)
                    }
                    (Some(l), Some((s, None, _))) => {
                        format!("{k}: deleted at {s:?}, resurrected as {:?}", l.0)
                    }
                    (Some(l), None) => format!("{k}: never acknowledged, holds {:?}", l.0),
                    (None, None) => unreachable!("accepted above"),
                });
            }
            if !diffs.is_empty() {
                return Err(format!(
                    "node {i} differs from the oracle: {}",
                    diffs.join("; ")
                ));
            }
            // What is durable must restore to what is in memory.
            let root = r.root();
            let mut restored = Replica::restore(n.cfg.clone(), n.durable.clone(), EPOCH_MS)
                .map_err(|e| format!("node {i} durable state does not restore: {e}"))?;
            if restored.root() != root {
                return Err(format!("node {i}: durable state restores to another root"));
            }
            let m = r.metrics();
            self.report.tombstones_collected += m.tombstones_collected;
            self.report.ae_entries_applied += m.ae_entries_applied;
            self.report.feed_gaps += m.feed_gaps;
            self.report.below_floor_refused += m.below_floor_refused;
            self.report.records_quarantined += m.records_quarantined;
            self.report.records_repaired += m.records_repaired;
            // Nothing damaged is left in memory (the scrub runs every second).
            let (bad, _, _) = r.map().verify_range(None, usize::MAX);
            if !bad.is_empty() {
                return Err(format!("node {i} still holds damaged records: {bad:?}"));
            }
            self.report.root = root;
            self.report.keys_live = expected.len();
            self.report.doc_merges += m.doc_merges_made;
        }
        self.check_documents(&stranded)
    }
}

impl Sim {
    /// A standby that took over from `failed` must not have been in reach
    /// of a live node of those regions during the wait: each such node's
    /// link to it closed at least `after_ms` ago. (The standby's own count
    /// starts later still: at the contact timeout after the last message.)
    pub(super) fn check_failover(&self, i: usize, failed: &[String]) -> Result<(), String> {
        for (j, n) in self.nodes.iter().enumerate() {
            let region = REGION_NAMES[n.region % REGION_NAMES.len()];
            // (An edge never links to another region's server.)
            if j == i
                || n.replica.is_none()
                || n.attached.is_some()
                || !failed.iter().any(|f| f == region)
            {
                continue;
            }
            let p = pair(i, j);
            // In reach: the link is open and not cut (a cut drops messages
            // before the transport closes the link).
            let up = self.links[&p].0 && !self.cuts.contains_key(&p);
            let closed = self.link_down_ms.get(&p).copied().unwrap_or(0);
            // A link that opened a moment ago has carried no hello yet.
            let opened = self.link_up_ms.get(&p).copied().unwrap_or(0);
            let heard_ms_max = 1_500;
            let (late, closed_for) = if up {
                (
                    self.now.saturating_sub(opened) > heard_ms_max,
                    opened.saturating_sub(closed),
                )
            } else {
                (false, self.now.saturating_sub(closed))
            };
            if late || closed_for < FAILOVER_AFTER_MS {
                return Err(format!(
                    "node {i} took over from {region} while node {j} of it was in reach \
                     within the wait (link open: {up} since {opened} ms, last closed at \
                     {closed} ms, now {} ms)",
                    self.now
                ));
            }
        }
        Ok(())
    }
}
