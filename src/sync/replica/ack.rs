//! When a client write is acknowledged (design §3, "Consistency offered").
//!
//! With [`WriteAck::Local`] a write is acknowledged once it is durable
//! here. With [`WriteAck::Quorum`] it is acknowledged only once it is
//! durable on a node in a majority of the known regions, this one counted:
//! a peer acknowledges our feed up to an index only after it durably
//! applied it, so a write at index `i` is durable in every region with a
//! peer whose acknowledgement reached `i`. Losing any minority of regions
//! then loses no acknowledged write. A quorum write is refused up front
//! when no majority is reachable, pushed at once (not batched), and
//! answered as [`Output::Unacknowledged`] if no majority holds it within
//! the timeout: it stays written here and may still replicate, but its
//! client hears it is not acknowledged.

use std::collections::BTreeSet;

use super::{Replica, WriteError, WriteReceipt};
use crate::sync::config::WriteAck;

/// Quorum writes waiting for their majority, at most; more are refused.
pub const QUORUM_PENDING_MAX: usize = 65_536;

/// A quorum write waiting for its majority.
#[derive(Debug, Clone)]
pub(super) struct PendingAck {
    pub receipt: WriteReceipt,
    pub since_ms: u64,
    pub deadline_ms: u64,
}

/// Why a write was not acknowledged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AckFailure {
    /// No majority of regions held it durably within the timeout.
    QuorumTimeout {
        /// How long it waited, in ms.
        waited_ms: u64,
        /// Regions that hold it durably (this one included), of all known.
        regions: usize,
        /// Regions known, this one included.
        total: usize,
    },
}

impl std::fmt::Display for AckFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AckFailure::QuorumTimeout {
                waited_ms,
                regions,
                total,
            } => write!(
                f,
                "durable here, but in {regions} of {total} regions after {waited_ms} ms, not a \\
                 majority: not acknowledged (it stays written and replicates when the others are reachable)"
            ),
        }
    }
}

impl Replica {
    /// Refuses a write that asks for a quorum it cannot get now.
    pub(super) fn quorum_writable(&self, ack: WriteAck) -> Result<(), WriteError> {
        if ack == WriteAck::Local {
            return Ok(());
        }
        if !self.has_quorum() {
            let (reachable, total) = self.region_counts();
            return Err(WriteError::NoQuorum { reachable, total });
        }
        if self.pending_acks.len() >= QUORUM_PENDING_MAX {
            return Err(WriteError::TooManyPending {
                max: QUORUM_PENDING_MAX,
            });
        }
        Ok(())
    }

    /// Refuses `writes` more quorum writes when they would not fit in the
    /// pending acknowledgements.
    pub(super) fn quorum_room(&self, ack: WriteAck, writes: usize) -> Result<(), WriteError> {
        if ack == WriteAck::Quorum && self.pending_acks.len() + writes > QUORUM_PENDING_MAX {
            return Err(WriteError::TooManyPending {
                max: QUORUM_PENDING_MAX,
            });
        }
        Ok(())
    }

    /// Acknowledges `receipt` now (local), or once a majority holds it.
    pub(super) fn acknowledge(&mut self, receipt: WriteReceipt, ack: WriteAck, now_ms: u64) {
        self.note_forwarded(receipt.stamp);
        match ack {
            WriteAck::Local => self.ack_done(receipt),
            WriteAck::Quorum => {
                self.pending_acks.push_back(PendingAck {
                    receipt,
                    since_ms: now_ms,
                    deadline_ms: now_ms + self.cfg.quorum_ack_timeout_ms,
                });
                self.release_acks(now_ms);
            }
        }
    }

    /// Regions holding our feed durably up to `index` (ours included), and
    /// all known regions.
    fn regions_holding(&self, index: u64) -> (usize, usize) {
        let mut holding: BTreeSet<&str> = BTreeSet::new();
        holding.insert(&self.cfg.region);
        for (_, p) in self.members() {
            if p.acked >= index && !p.region.is_empty() {
                holding.insert(&p.region);
            }
        }
        let (_, total) = self.region_counts();
        (holding.len(), total)
    }

    /// Acknowledges the waiting quorum writes that a majority now holds,
    /// and answers those past their deadline. They wait in index order, and
    /// a majority holding index `i` holds every earlier one too.
    pub(super) fn release_acks(&mut self, now_ms: u64) {
        while let Some(front) = self.pending_acks.front() {
            let (regions, total) = self.regions_holding(front.receipt.index);
            if regions * 2 > total {
                let p = self.pending_acks.pop_front().expect("front");
                self.ack_done(p.receipt);
            } else if now_ms >= front.deadline_ms {
                let p = self.pending_acks.pop_front().expect("front");
                let reason = AckFailure::QuorumTimeout {
                    waited_ms: now_ms.saturating_sub(p.since_ms),
                    regions,
                    total,
                };
                self.ack_failed(p.receipt, reason);
            } else {
                return;
            }
        }
    }

    /// The earliest deadline of a waiting quorum write.
    pub(super) fn ack_deadline(&self) -> Option<u64> {
        self.pending_acks.front().map(|p| p.deadline_ms)
    }
}
