//! Read barriers (`?consistent`): before a read is answered, this replica
//! asks every connected peer how far its feed reaches and waits until it
//! has applied each one's feed that far. It then holds every write any
//! reachable peer had acknowledged when the read arrived. A region with no
//! connected peer, a peer lost while waiting, or the timeout fails the
//! barrier: the read is refused rather than answered from a state that may
//! miss an acknowledged write.

use std::collections::BTreeMap;

use thiserror::Error;

use super::{Output, Replica};
use crate::core::codec::Message;
use crate::core::types::NodeId;

/// Read barriers waiting at once; more are refused.
pub const BARRIERS_MAX: usize = 1_024;

/// Why a read barrier failed.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum BarrierError {
    /// A known region has no connected peer: its writes cannot be asked for.
    #[error("region {region} is unreachable: a consistent read needs every region")]
    Unreachable {
        /// The first region without a connected peer.
        region: String,
    },
    /// A peer's connection was lost while the barrier waited on it.
    #[error("the connection to {peer} (region {region}) was lost during the consistent read")]
    PeerLost {
        /// The peer's name.
        peer: String,
        /// Its region.
        region: String,
    },
    /// The peers' feeds were not applied here within the timeout.
    #[error(
        "the consistent read timed out after {timeout_ms} ms waiting for {waiting} (region {region})"
    )]
    Timeout {
        /// The timeout, in ms.
        timeout_ms: u64,
        /// The first peer still waited on.
        waiting: String,
        /// Its region.
        region: String,
    },
    /// Too many barriers wait already.
    #[error("more than {max} consistent reads are waiting: try again later")]
    TooMany {
        /// The most that may wait.
        max: usize,
    },
}

/// A barrier in progress.
#[derive(Debug, Clone)]
pub(super) struct Barrier {
    started_ms: u64,
    deadline_ms: u64,
    /// Each peer asked, with its feed's last index once it answered.
    waiting: BTreeMap<NodeId, Option<u64>>,
}

impl Replica {
    /// Starts read barrier `id` (the caller's number, unique among those
    /// waiting); [`Output::BarrierDone`] completes it.
    pub fn barrier(&mut self, id: u64, now_ms: u64) {
        self.observe_time(now_ms);
        if self.barriers.len() >= BARRIERS_MAX {
            let e = BarrierError::TooMany { max: BARRIERS_MAX };
            self.finish_barrier(id, Err(e));
            self.commit();
            return;
        }
        let mut regions: BTreeMap<&str, bool> = BTreeMap::new();
        for p in self.peers.values() {
            if !p.region.is_empty() && p.region != self.cfg.region {
                let up = regions.entry(p.region.as_str()).or_insert(false);
                *up |= p.link.up() && !p.told_stale;
            }
        }
        if let Some((region, _)) = regions.iter().find(|(_, up)| !**up) {
            let e = BarrierError::Unreachable {
                region: region.to_string(),
            };
            self.finish_barrier(id, Err(e));
            self.commit();
            return;
        }
        let asked: Vec<NodeId> = self
            .peers
            .iter()
            .filter(|(_, p)| p.link.up() && !p.told_stale)
            .map(|(id, _)| *id)
            .collect();
        for peer in &asked {
            self.send(*peer, Message::Position { barrier: id });
        }
        let b = Barrier {
            started_ms: now_ms,
            deadline_ms: now_ms + self.cfg.read_barrier_timeout_ms,
            waiting: asked.into_iter().map(|p| (p, None)).collect(),
        };
        self.barriers.insert(id, b);
        self.check_barriers(now_ms);
        self.commit();
    }

    /// When the earliest barrier times out.
    pub(super) fn barrier_deadline(&self) -> Option<u64> {
        self.barriers.values().map(|b| b.deadline_ms).min()
    }

    pub(super) fn on_position(&mut self, from: NodeId, barrier: u64, now_ms: u64) {
        // Our feed to the asker first, up to our index (a message without
        // entries when they are other regions' writes, which their origins
        // send): it arrives before the answer, so that the asker's progress
        // reaches the index without waiting for a heartbeat.
        self.pump(from, now_ms);
        let index = self.map.index();
        self.send(from, Message::PositionReply { barrier, index });
    }

    pub(super) fn on_position_reply(&mut self, from: NodeId, barrier: u64, index: u64) {
        if let Some(b) = self.barriers.get_mut(&barrier) {
            if let Some(w) = b.waiting.get_mut(&from) {
                *w = Some(index);
            }
        }
    }

    /// Completes the barriers whose peers' feeds are applied far enough,
    /// and fails those past their deadline or waiting on a lost peer.
    pub(super) fn check_barriers(&mut self, now_ms: u64) {
        if self.barriers.is_empty() {
            return;
        }
        let mut done: Vec<(u64, Result<(), BarrierError>)> = Vec::new();
        let mut pull: Vec<NodeId> = Vec::new();
        // Past a heartbeat without reaching a peer's position, its frames
        // may have been lost: ask for its feed again from what is applied
        // (at most once per peer timeout), rather than wait for its
        // retransmission.
        let pull_after_ms = self.cfg.heartbeat_interval_ms;
        for (id, b) in &self.barriers {
            let mut first_waiting = None;
            let mut lost = None;
            for (peer, answer) in &b.waiting {
                let Some(p) = self.peers.get(peer) else {
                    continue;
                };
                if !p.link.up() {
                    lost = Some(p);
                    break;
                }
                let reached = answer.is_some_and(|index| p.applied >= index);
                if !reached && first_waiting.is_none() {
                    first_waiting = Some(p);
                }
                let stalled = answer.is_some()
                    && !reached
                    && now_ms >= b.started_ms + pull_after_ms
                    && p.resume_asked_ms
                        .is_none_or(|t| now_ms >= t + self.cfg.peer_timeout_ms);
                if stalled && !pull.contains(peer) {
                    pull.push(*peer);
                }
            }
            if let Some(p) = lost {
                let e = BarrierError::PeerLost {
                    peer: p.name.clone(),
                    region: p.region.clone(),
                };
                done.push((*id, Err(e)));
            } else if let Some(p) = first_waiting {
                if now_ms >= b.deadline_ms {
                    let e = BarrierError::Timeout {
                        timeout_ms: self.cfg.read_barrier_timeout_ms,
                        waiting: p.name.clone(),
                        region: p.region.clone(),
                    };
                    done.push((*id, Err(e)));
                }
            } else {
                done.push((*id, Ok(())));
            }
        }
        for (id, result) in done {
            self.barriers.remove(&id);
            self.finish_barrier(id, result);
        }
        for peer in pull {
            // As the feed's own gap handling asks: a full transfer from the
            // rebuild's source or a peer a recovery takes the state of.
            let full = self.rebuild_from == Some(peer) || self.recovering_from(peer);
            let Some(p) = self.peers.get_mut(&peer) else {
                continue;
            };
            p.resume_asked_ms = Some(now_ms);
            let from = p.applied;
            self.send(peer, Message::Resume { from, full });
        }
    }

    fn finish_barrier(&mut self, id: u64, result: Result<(), BarrierError>) {
        self.staged.push(Output::BarrierDone { id, result });
    }
}
