//! The simulated network: which links should exist (partitions, crashed
//! nodes), opening and closing them, and carrying frames through the real
//! wire codec with per-region-pair delay, jitter, loss and duplication.

use super::{pair, Ev, Sim};
use crate::core::codec::{self, Message};
use crate::core::types::NodeId;
use crate::sync::Role;

impl Sim {
    pub(super) fn reconcile_all(&mut self) {
        let pairs: Vec<(usize, usize)> = self.links.keys().copied().collect();
        // (Every pair that may ever connect: members with each other, each
        // edge with the servers of its region.)
        for (a, b) in pairs {
            let delay = self.rng.range(10, 500);
            self.schedule(self.now + delay, Ev::Reconcile { a, b });
        }
    }

    pub(super) fn desired(&self, a: usize, b: usize) -> bool {
        // An edge is connected to the server it is attached to only.
        let attached = |x: usize, y: usize| self.nodes[x].attached.is_none_or(|s| s == y);
        self.nodes[a].replica.is_some()
            && self.nodes[b].replica.is_some()
            && !self.cuts.contains_key(&pair(a, b))
            && attached(a, b)
            && attached(b, a)
    }

    /// Brings a link's connection state in line with crashes and cuts.
    pub(super) fn reconcile(&mut self, a: usize, b: usize) {
        let want = self.desired(a, b);
        let Some(&(up, epoch)) = self.links.get(&(a, b)) else {
            return;
        };
        if want == up {
            return;
        }
        self.links.insert((a, b), (want, epoch + 1));
        if want {
            self.link_up_ms.insert((a, b), self.now);
        } else if !self.cuts.contains_key(&(a, b)) {
            // (A cut put it out of reach when it began.)
            self.link_down_ms.insert((a, b), self.now);
        }
        for (x, y) in [(a, b), (b, a)] {
            let peer = self.nodes[y].id;
            let role = if self.nodes[y].attached.is_some() {
                Role::Edge
            } else {
                Role::Server
            };
            let now = self.node_now(x);
            if let Some(r) = self.nodes[x].replica.as_mut() {
                if want {
                    r.connected_as(peer, role, now);
                } else {
                    r.disconnected(peer, now);
                }
            }
            self.drain(x);
        }
    }

    pub(super) fn drop_links_of(&mut self, node: usize) {
        for other in 0..self.nodes.len() {
            if other == node {
                continue;
            }
            let p = pair(node, other);
            let Some(&(up, epoch)) = self.links.get(&p) else {
                continue;
            };
            if up {
                self.links.insert(p, (false, epoch + 1));
                let peer = self.nodes[node].id;
                let now = self.node_now(other);
                if let Some(r) = self.nodes[other].replica.as_mut() {
                    r.disconnected(peer, now);
                }
                self.drain(other);
            }
        }
    }

    pub(super) fn deliver(&mut self, to: usize, from: usize, link: u64, frame: &[u8]) {
        let p = pair(to, from);
        let Some(&(up, epoch)) = self.links.get(&p) else {
            return self.fail(format!("node {from} reached node {to}, which it never may"));
        };
        if !up || epoch != link || self.cuts.contains_key(&p) || self.nodes[to].replica.is_none() {
            self.report.messages_dropped += 1;
            return;
        }
        let msg = match codec::decode(frame) {
            Ok(m) => m,
            Err(e) => return self.fail(format!("a frame from node {from} does not decode: {e}")),
        };
        let now = self.node_now(to);
        let peer = self.nodes[from].id;
        if self.trace.is_some() {
            let entries = match &msg {
                Message::Feed(f) => Some(&f.entries),
                Message::AeEntries { entries, .. } | Message::DocVersions { entries } => {
                    Some(entries)
                }
                _ => None,
            };
            for (k, e) in entries.into_iter().flatten() {
                if self.traced(k.as_str()) {
                    let kind = match msg {
                        Message::Feed(_) => "feed",
                        Message::DocVersions { .. } => "versions",
                        _ => "ae",
                    };
                    let before = self.nodes[to]
                        .replica
                        .as_ref()
                        .and_then(|r| r.get(k.as_str()).map(|r| r.entry.stamp));
                    self.tr(|| {
                        format!(
                            "n{to} <- n{from} {kind} {k} {:?} (held {before:?})",
                            e.stamp
                        )
                    });
                }
            }
        }
        if let (true, Message::Feed(f)) = (self.trace.is_some(), &msg) {
            for d in &f.docs {
                if self.traced(d.key.as_str()) {
                    let before = self.nodes[to]
                        .replica
                        .as_ref()
                        .and_then(|r| r.get(d.key.as_str()).map(|r| r.entry.stamp));
                    self.tr(|| {
                        format!(
                            "n{to} <- n{from} feed changes {} {:?} (held {before:?})",
                            d.key, d.stamp
                        )
                    });
                }
            }
        }
        // What a server makes for an edge, the oracle must know of (see `edges.rs`).
        let forward = matches!(msg, Message::Forward { .. });
        let index_before = self.nodes[to].replica.as_ref().map(|r| r.map().index());
        let handed = self.handed_over_here(to, &msg);
        if let Some(r) = self.nodes[to].replica.as_mut() {
            r.handle(peer, msg, now);
        }
        if let (true, Some(before)) = (forward, index_before) {
            self.note_forwarded_writes(to, before);
            self.check_handovers_made(to, before, &handed);
        }
        self.drain(to);
    }

    pub(super) fn transmit(&mut self, from: usize, to: NodeId, msg: &Message) {
        self.report.messages_sent += 1;
        let Some(to) = self.nodes.iter().position(|n| n.id == to) else {
            return self.fail(format!("node {from} sent to unknown node {to}"));
        };
        let p = pair(from, to);
        let Some(&(up, epoch)) = self.links.get(&p) else {
            return self.fail(format!(
                "node {from} sent to node {to}, which it never may reach"
            ));
        };
        if !up {
            self.report.messages_dropped += 1;
            return;
        }
        let frame = match codec::encode(msg) {
            Ok(f) => f,
            Err(e) => {
                return self.fail(format!(
                    "node {from} built a message that does not encode: {e}"
                ))
            }
        };
        if self.dropping && self.rng.chance(self.cfg.drop_per_million) {
            self.report.messages_dropped += 1;
            return;
        }
        let copies = if self.rng.chance(self.cfg.duplicate_per_million) {
            2
        } else {
            1
        };
        // Now and then an old value arrives long after it was sent (on the
        // same connection): after its key's delete may have been collected.
        // Only in the active phase, and arriving before it ends: the checks
        // after quiescence assume no old message is still on its way.
        let late = self.cfg.late_per_million > 0
            && self.dropping
            && matches!(msg, Message::AeEntries { .. })
            && self.rng.chance(self.cfg.late_per_million);
        if late {
            let at = (self.now + self.rng.range(2_000, 20_000)).min(self.active_end);
            if at > self.now {
                self.report.messages_late += 1;
                self.deliver_at(at, to, from, epoch, frame.clone());
            }
        }
        for _ in 0..copies {
            let (lo, hi) = if self.nodes[from].region == self.nodes[to].region {
                self.cfg.intra_region_ms
            } else {
                self.cfg.inter_region_ms
            };
            let delay = self.rng.range(lo, hi.max(lo));
            self.deliver_at(self.now + delay, to, from, epoch, frame.clone());
        }
    }

    /// Delivers `frame` from `from` to `to` at `at`, if connection `link`
    /// is still up then.
    fn deliver_at(&mut self, at: u64, to: usize, from: usize, link: u64, frame: Vec<u8>) {
        self.schedule(
            at,
            Ev::Deliver {
                to,
                from,
                link,
                frame,
            },
        );
    }
}
