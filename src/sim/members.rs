//! Members that leave, in the simulation: a member that dies and is
//! forgotten by another while it is down, and a member that leaves and
//! stops; both come back later under the same id and must resync (the
//! oracle: nothing deleted comes back, every acknowledged write another
//! node held survives).

use super::{pair, Ev, Sim};
use crate::sync::{ForgetError, LeaveError};

/// Tries at forgetting or leaving before the run gives up on it.
const TRIES_MAX: u32 = 30;

impl Sim {
    /// A member dies for a while; once its peers have lost contact,
    /// another member forgets it.
    pub(super) fn forget_fault(&mut self) {
        let down = self.rng.range(15_000, 40_000);
        let Some(i) = self.crash_one(|sim, i| sim.nodes[i].attached.is_none(), Some(down)) else {
            return;
        };
        self.mark_away(i);
        let contact = self.nodes[i].cfg.contact_timeout_ms;
        let at = self.now + contact + self.rng.range(500, 3_000);
        self.schedule(at, Ev::Forget { node: i, tries: 0 });
    }

    /// A running member forgets `node`, if it is still down.
    pub(super) fn forget(&mut self, node: usize, tries: u32) {
        if self.nodes[node].replica.is_some() {
            return;
        }
        // An operator forgets on a member in the cluster: not on one that
        // is itself forgotten (or left) and not yet back.
        let by: Vec<usize> = (0..self.nodes.len())
            .filter(|&j| j != node && self.nodes[j].attached.is_none())
            .filter(|&j| self.nodes[j].replica.is_some() && !self.nodes[j].rejoining)
            .collect();
        if by.is_empty() {
            return;
        }
        let j = by[self.rng.below(by.len() as u64) as usize];
        let (id, now) = (self.nodes[node].id, self.node_now(j));
        let Some(r) = self.nodes[j].replica.as_mut() else {
            return;
        };
        match r.forget(id, now) {
            Ok(_) => {
                self.tr(|| format!("n{j} forgets n{node}"));
                self.report.forgets += 1;
                self.nodes[node].rejoining = true;
            }
            // Heard from lately (a message on its way when it died), or a
            // clock that cannot stamp now: try again.
            Err(ForgetError::InContact { .. } | ForgetError::Clock(_) | ForgetError::Left)
                if tries < TRIES_MAX =>
            {
                self.schedule(
                    self.now + 1_000,
                    Ev::Forget {
                        node,
                        tries: tries + 1,
                    },
                );
            }
            Err(ForgetError::InContact { .. } | ForgetError::Clock(_) | ForgetError::Left) => {}
            Err(e) => return self.fail(format!("n{j} cannot forget n{node}: {e}")),
        }
        self.drain(j);
    }

    /// A member leaves (once every member in contact holds its writes),
    /// then stops a moment later, and comes back after a while.
    pub(super) fn leave(&mut self, node: Option<usize>, tries: u32) {
        // Within the active phase, stop included: the checks after
        // quiescence assume every node stays up.
        if self.now + 1_000 >= self.active_end {
            return;
        }
        let i = match node {
            Some(i) => i,
            None => {
                let up: Vec<usize> = (0..self.nodes.len())
                    .filter(|&j| self.nodes[j].attached.is_none())
                    .filter(|&j| self.nodes[j].replica.is_some() && !self.nodes[j].away)
                    .collect();
                if up.len() <= 1 {
                    return;
                }
                up[self.rng.below(up.len() as u64) as usize]
            }
        };
        let now = self.node_now(i);
        let Some(r) = self.nodes[i].replica.as_mut() else {
            return;
        };
        match r.leave(now) {
            Ok(_) => {
                self.tr(|| format!("n{i} leaves"));
                self.report.leaves += 1;
                self.nodes[i].rejoining = true;
                // It may be stopped by any crash from now on: when it
                // comes back it resyncs.
                self.mark_away(i);
                let stop = self.rng.range(200, 1_000);
                self.schedule(self.now + stop, Ev::Stop { node: i });
            }
            Err(LeaveError::NotHandedOver { .. } | LeaveError::Alone | LeaveError::Clock(_))
                if tries < TRIES_MAX =>
            {
                self.schedule(
                    self.now + 500,
                    Ev::Leave {
                        node: Some(i),
                        tries: tries + 1,
                    },
                );
            }
            Err(LeaveError::NotHandedOver { .. } | LeaveError::Alone | LeaveError::Clock(_)) => {}
            Err(e) => return self.fail(format!("n{i} cannot leave: {e}")),
        }
        self.drain(i);
    }

    /// A member that left stops; it comes back later, under its id.
    pub(super) fn stop(&mut self, node: usize) {
        if self.nodes[node].replica.is_none() {
            return;
        }
        let down = self.rng.range(5_000, 30_000);
        if self.crash_one(|_, i| i == node, Some(down)).is_none() {
            // The only node up cannot crash: it stops once another is back
            // (a node that left and goes on running is refused by all).
            self.schedule(self.now + 1_000, Ev::Stop { node });
        }
    }

    /// Node `i` forgot `peer`: its driver closes their connection. A
    /// forgotten node that is running dials again (and is told to resync).
    pub(super) fn close_forgotten(&mut self, i: usize, peer: crate::core::types::NodeId) {
        let Some(j) = self.index_of(peer) else {
            return;
        };
        let (a, b) = pair(i, j);
        if self.links.get(&(a, b)).is_some_and(|(up, _)| *up) {
            self.schedule(self.now, Ev::Close { a, b });
        }
    }

    /// Closes the link `(a, b)` (as a driver closing a connection), and
    /// lets it come back a moment later if both ends still want it.
    pub(super) fn close(&mut self, a: usize, b: usize) {
        let Some(&(up, epoch)) = self.links.get(&(a, b)) else {
            return;
        };
        if !up {
            return;
        }
        self.links.insert((a, b), (false, epoch + 1));
        self.link_down_ms.insert((a, b), self.now);
        for (x, y) in [(a, b), (b, a)] {
            let peer = self.nodes[y].id;
            let now = self.node_now(x);
            if let Some(r) = self.nodes[x].replica.as_mut() {
                r.disconnected(peer, now);
            }
            self.drain(x);
        }
        let delay = self.rng.range(200, 2_000);
        self.schedule(self.now + delay, Ev::Reconcile { a, b });
    }
}
