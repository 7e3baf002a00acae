//! Read barriers (`?consistent`): before a read is answered, this replica
//! asks every connected peer for what it holds under the read's scope
//! (the key, or the prefix), every origin's entries and tombstones, and
//! merges the answers as it merges replicated entries (the greater stamp
//! wins). Once every peer has answered, it holds for those keys at least
//! what each reachable peer held when the read arrived: every write they
//! had acknowledged, or a newer one.
//!
//! (Waiting until this replica has applied each peer's feed up to the
//! peer's index is not enough: a feed carries its sender's own writes, so
//! a peer's write superseded there by a write from a node this replica
//! cannot reach is delivered by no feed; sim seed 35.)
//!
//! A region with no connected peer, a peer lost or recovering records,
//! a scope too large for one answer, a peer whose stamps run ahead of
//! this clock, or the timeout fail the barrier: the read is refused rather
//! than answered from a state that may miss an acknowledged write.

use std::collections::BTreeMap;

use thiserror::Error;

use super::{Output, Replica};
use crate::core::codec::{BarrierAnswer, Message, ENTRIES_PER_MESSAGE_MAX, FRAME_BYTES_MAX};
use crate::core::mutants::{self, Mutant};
use crate::core::types::{Entry, Key, NodeId};

/// Read barriers waiting at once; more are refused.
pub const BARRIERS_MAX: usize = 1_024;
/// Bytes of entries one answer carries at most (a frame's room, less a margin).
const ANSWER_BYTES_MAX: usize = FRAME_BYTES_MAX - (1 << 20);

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
    /// This node is rebuilding or recovering lost or damaged records.
    #[error("this node is recovering its records from its peers: consistent reads are refused until it is done")]
    Recovering,
    /// A peer is recovering lost or damaged records: it may lack writes it
    /// acknowledged.
    #[error("{peer} (region {region}) is recovering its records: consistent reads are refused until it is done")]
    PeerRecovering {
        /// The peer's name.
        peer: String,
        /// Its region.
        region: String,
    },
    /// A peer holds more under the scope than one answer carries.
    #[error("{keys} keys under the prefix at {peer}, more than a consistent read covers ({ENTRIES_PER_MESSAGE_MAX}): read a narrower prefix")]
    TooLarge {
        /// The peer's name.
        peer: String,
        /// Keys it holds under the scope, tombstones included.
        keys: u64,
    },
    /// A peer's entries are stamped further ahead of this node's clock than
    /// the bound: this node refuses them, so it cannot hold them.
    #[error("{peer}'s stamps run ahead of this node's clock beyond the bound: the consistent read cannot take its entries")]
    PeerClockAhead {
        /// The peer's name.
        peer: String,
    },
    /// A peer did not answer within the timeout.
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
    deadline_ms: u64,
    /// Each peer asked, and whether its answer is merged.
    waiting: BTreeMap<NodeId, bool>,
}

impl Replica {
    /// Starts read barrier `id` (the caller's number, unique among those
    /// waiting) over `scope`: one key, or every key under it when
    /// `prefix`. [`Output::BarrierDone`] completes it.
    pub fn barrier(&mut self, id: u64, scope: &str, prefix: bool, now_ms: u64) {
        self.observe_time(now_ms);
        match self.start_barrier(id, scope, prefix, now_ms) {
            Ok(()) => self.check_barriers(now_ms),
            Err(e) => self.finish_barrier(id, Err(e)),
        }
        self.commit();
    }

    fn start_barrier(
        &mut self,
        id: u64,
        scope: &str,
        prefix: bool,
        now_ms: u64,
    ) -> Result<(), BarrierError> {
        if self.barriers.len() >= BARRIERS_MAX {
            return Err(BarrierError::TooMany { max: BARRIERS_MAX });
        }
        if self.rebuilding || !self.claims_held() {
            return Err(BarrierError::Recovering);
        }
        let mut regions: BTreeMap<&str, bool> = BTreeMap::new();
        for (_, p) in self.members() {
            if !p.region.is_empty() && p.region != self.cfg.region {
                let up = regions.entry(p.region.as_str()).or_insert(false);
                *up |= p.link.up() && !p.told_stale;
            }
        }
        if let Some((region, _)) = regions.iter().find(|(_, up)| !**up) {
            return Err(BarrierError::Unreachable {
                region: region.to_string(),
            });
        }
        let asked: Vec<NodeId> = self
            .peers
            .iter()
            .filter(|(_, p)| p.link.up() && !p.told_stale)
            .map(|(id, _)| *id)
            .collect();
        for peer in &asked {
            let msg = Message::ReadBarrier {
                barrier: id,
                scope: scope.to_string(),
                prefix,
            };
            self.send(*peer, msg);
        }
        let b = Barrier {
            deadline_ms: now_ms + self.cfg.read_barrier_timeout_ms,
            waiting: asked.into_iter().map(|p| (p, false)).collect(),
        };
        self.barriers.insert(id, b);
        Ok(())
    }

    /// When the earliest barrier times out.
    pub(super) fn barrier_deadline(&self) -> Option<u64> {
        self.barriers.values().map(|b| b.deadline_ms).min()
    }

    /// A peer's barrier: what this replica holds under the scope, each
    /// record checked before it is sent.
    pub(super) fn on_read_barrier(
        &mut self,
        from: NodeId,
        barrier: u64,
        scope: &str,
        prefix: bool,
        now_ms: u64,
    ) {
        let answer = self.barrier_answer(scope, prefix, now_ms);
        self.send(from, Message::ReadBarrierReply { barrier, answer });
    }

    fn barrier_answer(&mut self, scope: &str, prefix: bool, now_ms: u64) -> BarrierAnswer {
        if self.rebuilding || !self.claims_held() {
            return BarrierAnswer::Recovering;
        }
        let keys: Vec<Key> = if prefix {
            self.map
                .scan_prefix(scope)
                .map(|(k, _)| k.clone())
                .collect()
        } else {
            self.map
                .get(scope)
                .and(Key::new(scope).ok())
                .into_iter()
                .collect()
        };
        if keys.len() > ENTRIES_PER_MESSAGE_MAX {
            return BarrierAnswer::TooLarge {
                keys: keys.len() as u64,
            };
        }
        let mut entries: Vec<(Key, Entry)> = Vec::with_capacity(keys.len());
        let mut bytes = 0usize;
        for k in keys {
            // A record that fails its check is quarantined, not sent.
            if !self.check_before_serving(k.as_str(), now_ms) {
                return BarrierAnswer::Recovering;
            }
            let Some(r) = self.map.get(k.as_str()) else {
                continue;
            };
            bytes += r.entry.encoded_len_estimate(&k);
            if bytes > ANSWER_BYTES_MAX {
                return BarrierAnswer::TooLarge {
                    keys: entries.len() as u64 + 1,
                };
            }
            entries.push((k, r.entry.clone()));
        }
        BarrierAnswer::Entries(entries)
    }

    /// A peer's answer: merged (the greater stamp wins), then the barrier
    /// counts it.
    pub(super) fn on_read_barrier_reply(
        &mut self,
        from: NodeId,
        barrier: u64,
        answer: BarrierAnswer,
        now_ms: u64,
    ) {
        let asked = self
            .barriers
            .get(&barrier)
            .is_some_and(|b| b.waiting.get(&from) == Some(&false));
        if !asked {
            return;
        }
        let (name, region) = self
            .peers
            .get(&from)
            .map(|p| (p.name.clone(), p.region.clone()))
            .unwrap_or_default();
        let failed = match answer {
            BarrierAnswer::Recovering => Some(BarrierError::PeerRecovering { peer: name, region }),
            BarrierAnswer::TooLarge { keys } => Some(BarrierError::TooLarge { peer: name, keys }),
            BarrierAnswer::Entries(entries) => {
                if self.check_skew(from, entries.iter().map(|(_, e)| e.stamp.hlc), now_ms) {
                    let floor = self.merge_floor();
                    for (k, e) in entries {
                        if !mutants::on(Mutant::BarrierMerge) {
                            self.merge_entry(Some(from), k, e, floor, now_ms);
                        }
                    }
                    None
                } else {
                    Some(BarrierError::PeerClockAhead { peer: name })
                }
            }
        };
        match failed {
            Some(e) => {
                self.barriers.remove(&barrier);
                self.finish_barrier(barrier, Err(e));
            }
            None => {
                if let Some(answered) = self
                    .barriers
                    .get_mut(&barrier)
                    .and_then(|b| b.waiting.get_mut(&from))
                {
                    *answered = true;
                }
            }
        }
    }

    /// Completes the barriers every peer has answered, and fails those
    /// past their deadline or waiting on a lost peer.
    pub(super) fn check_barriers(&mut self, now_ms: u64) {
        if self.barriers.is_empty() {
            return;
        }
        let mut done: Vec<(u64, Result<(), BarrierError>)> = Vec::new();
        for (id, b) in &self.barriers {
            let mut first_waiting = None;
            let mut lost = None;
            for (peer, answered) in &b.waiting {
                let Some(p) = self.peers.get(peer) else {
                    continue;
                };
                if *answered {
                    continue;
                }
                if !p.link.up() {
                    lost = Some(p);
                    break;
                }
                first_waiting.get_or_insert(p);
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
    }

    fn finish_barrier(&mut self, id: u64, result: Result<(), BarrierError>) {
        self.staged.push(Output::BarrierDone { id, result });
    }
}
