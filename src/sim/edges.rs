//! Edges in the simulation: each attached to one server of its region,
//! following another when that server crashes and at random switches,
//! cut off by partitions like any node; their client writes forwarded.
//!
//! The oracle learns a write a server makes for an edge when the server
//! makes it (its stamp is the server's, found in the server's feed right
//! after the `Forward` was handled), and counts it acknowledged only when
//! the edge answers it so. Every acknowledged write must end on every
//! edge, as on every server, and nothing deleted may come back there.

use std::collections::BTreeMap;

use bytes::Bytes;

use super::{Ev, Issued, Node, Sim, SimConfig};
use crate::core::codec::{ClusterId, RefusalClass};
use crate::core::rng::Rng;
use crate::core::types::{Key, Stamp};
use crate::core::types::{NodeId, REGION_NAMES};
use crate::sync::{
    Config, EdgeWrites, EdgeWritten, ForwardError, ForwardReceipt, Role, WriteError,
};

/// A write an edge forwarded, until it is answered.
#[derive(Debug, Clone)]
pub(super) struct EdgeWrite {
    /// The key (or the prefix) it writes.
    pub(super) key: String,
    /// The edge's incarnation when it forwarded it.
    pub(super) incarnation: u64,
}

/// An edge's local write (`edge_writes = "local"`), as the oracle follows it.
#[derive(Debug, Clone)]
pub(super) enum LocalWrite {
    /// Acknowledged at the edge (durable there), not handed over yet: the key.
    Waiting(String),
    /// Handed over before the edge acknowledged it.
    HandedOver,
}

/// Adds `cfg.edges` edges after the servers, round-robin over the
/// regions, each attached to a random server of its region; each may
/// connect to every server of its region.
pub(super) fn add_edges(
    cfg: &SimConfig,
    rng: &mut Rng,
    cluster: ClusterId,
    nodes: &mut Vec<Node>,
    links: &mut BTreeMap<(usize, usize), (bool, u64)>,
) {
    for e in 0..cfg.edges {
        let region = e % cfg.regions.max(1);
        let servers: Vec<usize> = (0..cfg.nodes)
            .filter(|s| nodes[*s].region == region)
            .collect();
        if servers.is_empty() {
            continue;
        }
        let id = NodeId(rng.next_u64() | 1);
        let mut c = Config::new(
            id,
            &format!("e{e}"),
            REGION_NAMES[region % REGION_NAMES.len()],
            cluster,
        );
        c.role = Role::Edge;
        c.partition_policy = cfg.policy;
        c.write_ack = cfg.write_ack;
        c.rng_seed = rng.next_u64();
        c.tombstone_horizon_ms = cfg.tombstone_horizon_ms;
        if cfg.edge_writes_local {
            c.edge_writes = EdgeWrites::Local;
        }
        let skew = rng.range(0, 2 * cfg.clock_skew_ms_max) as i64 - cfg.clock_skew_ms_max as i64;
        let attached = servers[rng.below(servers.len() as u64) as usize];
        let i = nodes.len();
        nodes.push(Node::new(region, c, skew, Some(attached)));
        for s in servers {
            links.insert((s, i), (false, 0));
        }
    }
}

impl Sim {
    /// The edges attached to server `s` (which just crashed) move to
    /// another server of their region, a moment later.
    pub(super) fn edges_follow(&mut self, s: usize) {
        let attached: Vec<usize> = (0..self.nodes.len())
            .filter(|e| self.nodes[*e].attached == Some(s))
            .collect();
        for e in attached {
            let delay = self.rng.range(100, 2_000);
            self.schedule(self.now + delay, Ev::EdgeSwitch { edge: Some(e) });
        }
    }

    /// Edge `edge` (a random one when `None`) moves to another running
    /// server of its region, if there is one.
    pub(super) fn edge_switch(&mut self, edge: Option<usize>) {
        let edges: Vec<usize> = (0..self.nodes.len())
            .filter(|e| self.nodes[*e].attached.is_some())
            .collect();
        if edges.is_empty() {
            return;
        }
        let e = edge.unwrap_or_else(|| edges[self.rng.below(edges.len() as u64) as usize]);
        let Some(old) = self.nodes[e].attached else {
            return;
        };
        let region = self.nodes[e].region;
        let others: Vec<usize> = (0..self.cfg.nodes)
            .filter(|s| {
                *s != old && self.nodes[*s].region == region && self.nodes[*s].replica.is_some()
            })
            .collect();
        if others.is_empty() {
            return;
        }
        let new = others[self.rng.below(others.len() as u64) as usize];
        self.tr(|| format!("e{e} switches from n{old} to n{new}"));
        if self.nodes[old]
            .store_lost_since_ms
            .is_some_and(|t| self.now.saturating_sub(t) > self.cfg.tombstone_horizon_ms)
        {
            self.nodes[e].behind_horizon = true;
        }
        self.report.edge_switches += 1;
        self.nodes[e].attached = Some(new);
        self.reconcile(old, e);
        let delay = self.rng.range(10, 500);
        self.schedule(self.now + delay, Ev::Reconcile { a: new, b: e });
    }

    /// A client write at edge `i`: `delete` is `None` for a put, `Some(None)`
    /// for a delete of `key`, `Some(Some(prefix))` for a prefix delete.
    pub(super) fn edge_write(
        &mut self,
        i: usize,
        key: String,
        delete: Option<Option<String>>,
        value: Bytes,
        flags: u64,
        now: u64,
    ) {
        self.next_edge_write += 1;
        let id = self.next_edge_write;
        let Some(r) = self.nodes[i].replica.as_mut() else {
            self.report.writes_refused += 1;
            return;
        };
        let what = format!("{delete:?}");
        let local_value = value.clone();
        let is_delete = delete.is_some();
        let (written, res) = match delete {
            Some(Some(prefix)) => {
                let res = r
                    .edge_delete_prefix(id, &prefix, u32::MAX as usize, None, now)
                    .map(|()| EdgeWritten::Forwarded);
                (prefix, res)
            }
            Some(None) => {
                let res = r.edge_write(id, key.as_str(), None, 0, None, None, now);
                (key, res)
            }
            None => {
                let res = r.edge_write(id, key.as_str(), Some(value), flags, None, None, now);
                (key, res)
            }
        };
        if self.traced(&written) {
            self.tr(|| format!("e{i} forwards {id} {written} delete={what} -> {res:?}"));
        }
        match res {
            Ok(EdgeWritten::Forwarded) => {
                let incarnation = self.nodes[i].incarnation;
                self.edge_writes.insert(
                    (i, id),
                    EdgeWrite {
                        key: written,
                        incarnation,
                    },
                );
            }
            Ok(EdgeWritten::Local(receipt)) => {
                // Taken here, acknowledged once durable as a server's own
                // write is; the server that takes it over makes it anew
                // (the oracle learns that write as any made for an edge).
                self.check_stamp_rises(i, receipt.stamp);
                self.report.edge_local_writes += 1;
                let incarnation = self.nodes[i].incarnation;
                let value = (!is_delete).then_some(local_value);
                self.issued.insert(
                    receipt.stamp,
                    Issued {
                        key: written,
                        flags: if value.is_some() { flags } else { 0 },
                        value,
                        node: i,
                        incarnation,
                        acknowledged: false,
                        answered: false,
                        forwarded: false,
                    },
                );
            }
            Err(WriteError::Forward(
                ForwardError::NoServer
                | ForwardError::TooMany { .. }
                | ForwardError::ServerNeeded { .. }
                | ForwardError::LocalFull { .. },
            )) => {
                self.report.writes_refused += 1;
            }
            // Taken locally, the edge stamps it: its clock, which followed
            // a server's stamps from a fast clock, may run ahead of time;
            // and it refuses it as a server would its own (an edge that
            // lost its store, say, until it has its server's state again).
            Err(WriteError::Clock(_) | WriteError::Rebuilding | WriteError::NoQuorum { .. })
                if self.cfg.edge_writes_local =>
            {
                self.report.writes_refused += 1;
            }
            Err(e) => return self.fail(format!("edge {i} refused a write unexpectedly: {e}")),
        }
        self.drain(i);
    }

    /// Server `s` handled an edge's `Forward`: the writes it made (its own
    /// stamps, in its feed after `index_before`) join the oracle's writes,
    /// acknowledged once the edge says so.
    pub(super) fn note_forwarded_writes(&mut self, s: usize, index_before: u64) {
        let Some(r) = self.nodes[s].replica.as_ref() else {
            return;
        };
        let me = self.nodes[s].id;
        let made: Vec<_> = r
            .map()
            .feed_since(index_before)
            .filter_map(|(_, rec)| rec)
            .filter(|(_, rec)| rec.entry.stamp.node == me)
            .map(|(k, rec)| (k.to_string(), rec.entry.clone()))
            .collect();
        let incarnation = self.nodes[s].incarnation;
        let rejoining = self.nodes[s].rejoining;
        for (key, entry) in made {
            self.check_stamp_rises(s, entry.stamp);
            if rejoining {
                self.made_while_forgotten.insert(entry.stamp);
            }
            if self.traced(&key) {
                self.tr(|| format!("n{s} makes {key} {:?} for an edge", entry.stamp));
            }
            self.issued.insert(
                entry.stamp,
                Issued {
                    key,
                    value: entry.value.clone(),
                    flags: entry.flags,
                    node: s,
                    incarnation,
                    acknowledged: false,
                    answered: false,
                    forwarded: true,
                },
            );
        }
    }

    /// Edge `i` answered forwarded write `id`.
    pub(super) fn edge_write_done(
        &mut self,
        i: usize,
        id: u64,
        result: Result<ForwardReceipt, WriteError>,
    ) {
        let Some(w) = self.edge_writes.remove(&(i, id)) else {
            return self.fail(format!(
                "edge {i} answered write {id}, which it never forwarded"
            ));
        };
        if self.traced(&w.key) {
            self.tr(|| format!("e{i} answers {id} {}: {result:?}", w.key));
        }
        let receipt = match result {
            Ok(r) => r,
            Err(WriteError::Forward(
                ForwardError::Lost
                | ForwardError::Timeout { .. }
                | ForwardError::NotAcknowledged(_)
                | ForwardError::Refused {
                    class: RefusalClass::Unavailable | RefusalClass::Busy,
                    ..
                },
            )) => {
                self.report.edge_writes_failed += 1;
                return;
            }
            Err(e) => {
                return self.fail(format!("edge {i}'s write {id} of {:?} failed: {e}", w.key));
            }
        };
        self.report.edge_writes_acknowledged += 1;
        for r in receipt.receipts {
            let Some(issued) = self.issued.get_mut(&r.stamp) else {
                return self.fail(format!(
                    "edge {i} acknowledged a write no server made: {r:?}"
                ));
            };
            if std::mem::replace(&mut issued.answered, true) {
                return self.fail(format!("edge {i} answered twice: {r:?}"));
            }
            if self.made_while_forgotten.contains(&r.stamp) {
                // Made by a server forgotten and not resynced yet (see
                // `members.rs`): the forget's price, as for its own writes.
                self.report.writes_taken_while_forgotten += 1;
                continue;
            }
            let w = issued.clone();
            if self.nodes[w.node].away && !self.held_durably_elsewhere(w.node, &r.key, r.stamp) {
                // Its server went away (for longer than the horizon, or to
                // be forgotten) before the edge answered, holding it alone:
                // the absence's price, as `mark_away` counts it.
                self.report.writes_held_only_by_the_absent += 1;
                continue;
            }
            if let Some(issued) = self.issued.get_mut(&r.stamp) {
                issued.acknowledged = true;
            }
            self.report.writes_acknowledged += 1;
            let held = self.nodes[i]
                .replica
                .as_ref()
                .and_then(|rep| rep.get(r.key.as_str()).map(|rec| rec.entry.stamp));
            if held.is_none_or(|h| h < r.stamp) {
                self.report.edge_answers_before_applied += 1;
            }
            let n = &mut self.nodes[w.node];
            n.acked_hlc_max = n.acked_hlc_max.max(r.stamp.hlc);
            let newer = self.oracle.get(&w.key).is_none_or(|(s, _, _)| *s < r.stamp);
            if newer {
                self.oracle.insert(w.key, (r.stamp, w.value, w.flags));
            }
        }
    }
}

impl Sim {
    /// Edge `i` acknowledged a write it took while no server was connected
    /// (durable there). It counts for the oracle once a server makes it;
    /// until then it must not be lost.
    pub(super) fn local_write_acknowledged(&mut self, stamp: Stamp, w: Issued) {
        let n = &mut self.nodes[w.node];
        n.acked_hlc_max = n.acked_hlc_max.max(stamp.hlc);
        match self.local_writes.remove(&(w.node, stamp)) {
            Some(LocalWrite::HandedOver) => {}
            _ => {
                self.local_writes
                    .insert((w.node, stamp), LocalWrite::Waiting(w.key));
            }
        }
    }

    /// Edge `i` handed its local write of `key` (stamped `local`) over: the
    /// server made it as its own write at `made`, now acknowledged, or
    /// skipped it for a newer version.
    pub(super) fn handed_over(&mut self, i: usize, key: &Key, local: Stamp, made: Option<Stamp>) {
        if self.traced(key.as_str()) {
            self.tr(|| format!("e{i} handed over {} {local:?}: made {made:?}", key.as_str()));
        }
        self.report.edge_local_writes_handed_over += 1;
        match self.local_writes.remove(&(i, local)) {
            Some(LocalWrite::Waiting(_)) => {}
            _ => {
                self.local_writes.insert((i, local), LocalWrite::HandedOver);
            }
        }
        let Some(made) = made else {
            return;
        };
        if self.made_while_forgotten.contains(&made) {
            self.report.writes_taken_while_forgotten += 1;
            return;
        }
        let Some(w) = self.issued.get_mut(&made) else {
            return self.fail(format!(
                "edge {i} says a server made {} at {made:?}, which no server did",
                key.as_str()
            ));
        };
        w.answered = true;
        let w = w.clone();
        if self.nodes[w.node].away && !self.held_durably_elsewhere(w.node, key, made) {
            // As for a forwarded write (see `edge_write_done`).
            self.report.writes_held_only_by_the_absent += 1;
            return;
        }
        if let Some(w) = self.issued.get_mut(&made) {
            w.acknowledged = true;
        }
        self.report.writes_acknowledged += 1;
        let n = &mut self.nodes[w.node];
        n.acked_hlc_max = n.acked_hlc_max.max(made.hlc);
        if self.oracle.get(&w.key).is_none_or(|(s, _, _)| *s < made) {
            self.oracle.insert(w.key, (made, w.value, w.flags));
        }
    }

    /// Edges whose local writes no server can take: every server of their
    /// region refuses writes for its clock, for the rest of the run (it
    /// jumped). The writes wait there until one takes them (the README's
    /// limits say so); such an edge cannot converge, and is left out of
    /// the final checks.
    pub(super) fn stranded_edges(&mut self) -> Vec<usize> {
        let mut out = Vec::new();
        for e in self.cfg.nodes..self.nodes.len() {
            let waiting = self.nodes[e]
                .replica
                .as_ref()
                .is_some_and(|r| r.local_writes_waiting() > 0);
            if !waiting {
                continue;
            }
            let region = self.nodes[e].region;
            let stuck = self.nodes[..self.cfg.nodes]
                .iter_mut()
                .filter(|n| n.region == region)
                .all(|n| {
                    n.jumped
                        && n.replica.as_mut().is_none_or(|r| {
                            let c = r.status().clock;
                            c.judgement.off || c.ahead_of_time_ms > 0
                        })
                });
            if stuck {
                out.push(e);
            }
        }
        out
    }

    /// Whether edge `i` holds local writes not handed over yet (destroying
    /// its store would lose them: they are nowhere else).
    pub(super) fn holds_local_writes(&self, i: usize) -> bool {
        self.local_writes
            .iter()
            .any(|((e, _), w)| *e == i && matches!(w, LocalWrite::Waiting(_)))
    }

    /// After quiescence: every local write an edge acknowledged was handed
    /// over, or replaced there by a newer version (a later write, or a
    /// newer one from its server) before it was.
    pub(super) fn check_local_writes(&mut self) -> Result<(), String> {
        let stranded = self.stranded_edges();
        let Some(r) = self.nodes[0].replica.as_ref() else {
            return Ok(());
        };
        for ((e, local), w) in &self.local_writes {
            let LocalWrite::Waiting(key) = w else {
                continue;
            };
            if stranded.contains(e) {
                continue;
            }
            let held = r.get(key).map(|rec| rec.entry.stamp);
            let newer_delete = || {
                self.issued
                    .iter()
                    .any(|(s, w)| w.key == *key && w.value.is_none() && *s > *local)
            };
            // A later write of the key at the same edge replaced it there
            // (and is checked itself).
            let later_here = self
                .issued
                .iter()
                .any(|(s, w)| w.node == *e && w.key == *key && *s > *local);
            let replaced = later_here
                || match held {
                    Some(h) => h > *local,
                    None => newer_delete(),
                };
            if !replaced {
                return Err(format!(
                    "edge {e} acknowledged a local write of {key:?} at {local:?} that was \
                     never handed over (servers hold {held:?})"
                ));
            }
        }
        Ok(())
    }
}

impl Sim {
    /// The local writes a `Forward` to server `s` hands over, each with
    /// the stamp of the version `s` holds before it handles them.
    pub(super) fn handed_over_here(
        &self,
        s: usize,
        msg: &crate::core::codec::Message,
    ) -> Vec<(Key, Stamp, Option<Stamp>)> {
        let crate::core::codec::Message::Forward { ops, .. } = msg else {
            return Vec::new();
        };
        let Some(r) = self.nodes[s].replica.as_ref() else {
            return Vec::new();
        };
        ops.iter()
            .filter_map(|op| match op {
                crate::core::codec::ForwardOp::HandOver { key, stamp, .. } => Some((
                    key.clone(),
                    *stamp,
                    r.get(key.as_str()).map(|rec| rec.entry.stamp),
                )),
                _ => None,
            })
            .collect()
    }

    /// Server `s` handled a handover: a local write is made only when `s`
    /// held no version of its key stamped at or above it (a newer write or
    /// delete wins, as last-writer-wins decides any two writes).
    pub(super) fn check_handovers_made(
        &mut self,
        s: usize,
        index_before: u64,
        handed: &[(Key, Stamp, Option<Stamp>)],
    ) {
        if handed.is_empty() {
            return;
        }
        let Some(r) = self.nodes[s].replica.as_ref() else {
            return;
        };
        let me = self.nodes[s].id;
        let made: Vec<Key> = r
            .map()
            .feed_since(index_before)
            .filter_map(|(_, rec)| rec)
            .filter(|(_, rec)| rec.entry.stamp.node == me)
            .map(|(k, _)| k.clone())
            .collect();
        for (key, local, held) in handed {
            if let Some(h) = held.filter(|h| h >= local) {
                if made.contains(key) {
                    return self.fail(format!(
                        "n{s} made {}, handed over at {local:?}, over the newer {h:?} it held",
                        key.as_str()
                    ));
                }
            }
        }
    }
}

impl Sim {
    /// Whether a server other than `i`, and not away, durably holds `key`
    /// at `stamp` or newer.
    pub(super) fn held_durably_elsewhere(&self, i: usize, key: &Key, stamp: Stamp) -> bool {
        self.nodes.iter().enumerate().any(|(j, n)| {
            j != i
                && !n.away
                && n.attached.is_none()
                && n.durable
                    .records
                    .get(key)
                    .is_some_and(|r| r.entry.stamp >= stamp)
        })
    }
}
