//! The replica's side of prioritized failover (see [`crate::sync::failover`]):
//! telling peers this node's view every heartbeat, keeping theirs, and
//! judging, while a standby, whether this node takes over.

use super::{Event, Output, Replica};
use crate::core::codec::{Message, View, VIEW_REGIONS_MAX};
use crate::core::types::NodeId;
use crate::sync::failover::{judge, Decision, PeerSeen, RegionSeen, Stay};

/// What this replica last judged, for status.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum FailoverState {
    /// No `[failover] priority`, or this node takes writes.
    #[default]
    Off,
    /// A standby, and why it stays one.
    Standing(Stay),
    /// It took over (or followed its region), from these regions.
    Promoted {
        /// The regions it took over from.
        failed: Vec<String>,
    },
}

impl Replica {
    /// This node's view, as peers get it.
    pub(super) fn view(&self) -> View {
        View {
            active: !self.cfg.standby,
            unreachable: self
                .regions
                .iter()
                .filter(|(_, (reachable, _))| !reachable)
                .map(|(r, _)| r.clone())
                .take(VIEW_REGIONS_MAX)
                .collect(),
            stable: self.stable(),
        }
    }

    /// Sends this node's view to `peer` (every heartbeat).
    pub(super) fn send_view(&mut self, peer: NodeId) {
        let view = self.view();
        self.send(peer, Message::View(view));
    }

    pub(super) fn on_view(&mut self, from: NodeId, view: View) {
        if let Some(p) = self.peers.get_mut(&from) {
            p.view_active = view.active;
            p.view_unreachable = view.unreachable;
            p.view_stable = view.stable;
        }
        // A member that takes writes, in reach: the versions of documents
        // waiting here for a merge go to it (see `replica::documents`).
        self.hand_doc_versions_to(from);
    }

    /// Judges whether this standby takes over (see [`judge`]); promotes it
    /// and reports [`Event::FailedOver`] when it does.
    pub(super) fn judge_failover(&mut self) {
        if self.cfg.failover.priority.is_empty() || !self.cfg.standby {
            return;
        }
        let cfg = self.cfg.failover.clone();
        // How long each region has been out of reach, counted in heartbeats
        // rather than read off the clock: a clock that jumps forward must
        // not shorten the wait. A listed region never seen counts from the
        // start.
        let beat_ms = self.cfg.heartbeat_interval_ms;
        // After a start, nothing was heard from anyone: a region counts as
        // out of reach only from a contact timeout after the start, as it
        // would from a contact timeout after its last message.
        self.beats_since_start += 1;
        let since_start_ms = self
            .beats_since_start
            .saturating_sub(1)
            .saturating_mul(beat_ms)
            .saturating_sub(self.cfg.contact_timeout_ms);
        let mut names: Vec<String> = self.regions.keys().cloned().collect();
        for r in &cfg.priority {
            if !self.regions.contains_key(r) {
                names.push(r.clone());
            }
        }
        let mut regions = Vec::with_capacity(names.len());
        for r in names {
            let reachable = self.regions.get(&r).is_some_and(|(up, _)| *up);
            let beats = self.unreachable_beats.entry(r.clone()).or_insert(0);
            *beats = if reachable { 0 } else { *beats + 1 };
            regions.push(RegionSeen {
                region: r,
                unreachable_ms: beats
                    .saturating_sub(1)
                    .saturating_mul(beat_ms)
                    .min(since_start_ms),
            });
        }
        let peers: Vec<PeerSeen> = self
            .peers
            .values()
            .filter(|p| !p.region.is_empty())
            .map(|p| PeerSeen {
                region: p.region.clone(),
                in_contact: p.in_contact,
                active: p.view_active,
                unreachable: p.view_unreachable.clone(),
            })
            .collect();
        match judge(&cfg, &self.cfg.region, &regions, &peers) {
            Decision::Stay(why) => self.failover = FailoverState::Standing(why),
            Decision::Promote { failed } => {
                self.cfg.standby = false;
                self.failover = FailoverState::Promoted {
                    failed: failed.clone(),
                };
                self.staged.push(Output::Event(Event::FailedOver {
                    failed,
                    after_ms: self.cfg.failover.after_ms,
                }));
                // Peers hear at once that this node takes writes.
                let ids: Vec<NodeId> = self
                    .peers
                    .iter()
                    .filter(|(_, p)| p.link.up())
                    .map(|(id, _)| *id)
                    .collect();
                for id in ids {
                    self.send_view(id);
                }
            }
        }
    }

    /// What this replica last judged of failover.
    pub fn failover_state(&self) -> &FailoverState {
        &self.failover
    }
}
