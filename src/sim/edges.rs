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
use crate::core::types::{NodeId, REGION_NAMES};
use crate::sync::{Config, ForwardError, ForwardReceipt, Role, WriteError};

/// A write an edge forwarded, until it is answered.
#[derive(Debug, Clone)]
pub(super) struct EdgeWrite {
    /// The key (or the prefix) it writes.
    pub(super) key: String,
    /// The edge's incarnation when it forwarded it.
    pub(super) incarnation: u64,
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
        let (written, res) = match delete {
            Some(Some(prefix)) => {
                let res = r.edge_delete_prefix(id, &prefix, u32::MAX as usize, None, now);
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
            Ok(()) => {
                let incarnation = self.nodes[i].incarnation;
                self.edge_writes.insert(
                    (i, id),
                    EdgeWrite {
                        key: written,
                        incarnation,
                    },
                );
            }
            Err(WriteError::Forward(ForwardError::NoServer | ForwardError::TooMany { .. })) => {
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
        for (key, entry) in made {
            self.check_stamp_rises(s, entry.stamp);
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
            issued.acknowledged = true;
            self.report.writes_acknowledged += 1;
            let w = issued.clone();
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
