//! Recovery: taking back what a replica lost before it claims to hold it.
//!
//! Owns the [`OwnWrites`] state machine. A replica's feed claims "every
//! write of mine stamped at or below this clock is in my feed", and its
//! frontier "I hold every write stamped at or below this"; peers raise
//! their progress on these words, and the collection floor rests on every
//! member's frontier. A replica that lost records (damaged ones were
//! quarantined, or its whole store was lost) may lack writes, its own
//! among them, that only some of its peers hold. Claiming them would let a
//! peer that lacks them raise its floor above them and then refuse them
//! for good as values of collected deletes.
//!
//! So from the loss on the replica claims nothing (its feed ends
//! [`FeedEnd::Recovering`](crate::core::codec::FeedEnd::Recovering), its frontier is zero), asks every known peer
//! for a full transfer of its state, and counts a peer done when that
//! transfer reached its end or anti-entropy found their roots equal. Its
//! own full transfers to others go on with what it takes back, and end
//! with its first claim (a rebuild from it waits for that). Once every known peer is done the replica
//! holds everything any of them held: it claims again, the quarantined
//! keys that no peer held are resolved, and a node whose store was lost
//! takes client writes again (its clock has seen every surviving stamp it
//! issued before). New damage during a recovery starts it over. The state
//! is durable ([`Recovery`]): a restart in the middle resumes it.
//!
//! Every known member must answer, as collection by stability requires: a
//! member that never comes back holds the recovery (and the collection
//! floor) where they are until it is removed. At least one must: a lone
//! node has nobody to recover from.

use std::collections::BTreeSet;

use super::integrity::{Found, Resolution};
use super::{Event, Output, Replica};
use crate::core::types::NodeId;
use crate::sync::config::Role;
use crate::sync::durable::Recovery;

/// Whether this replica holds every write of its own that any peer holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) enum OwnWrites {
    /// Nothing was lost (or the recovery is over).
    #[default]
    Held,
    /// Records were lost (`cause`); the peers in `done` sent all they held.
    Recovering {
        cause: Recovery,
        done: BTreeSet<NodeId>,
        since_ms: u64,
    },
}

/// A recovery, as operators see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveryStatus {
    /// What was lost: damaged records, or the whole store.
    pub cause: Recovery,
    /// Known peers whose state has all been taken, of `peers`.
    pub peers_done: usize,
    /// Known peers, all of which must be done before the recovery ends.
    pub peers: usize,
    /// When it (last) started.
    pub since_ms: u64,
}

impl Replica {
    /// Starts a recovery, or starts it over (see the module docs). The
    /// peers are asked for their full state once this input is over.
    pub(super) fn begin_recovery(&mut self, cause: Recovery) {
        debug_assert!(cause != Recovery::None);
        let cause = match &self.own_writes {
            OwnWrites::Recovering { cause: was, .. } => cause.max(*was),
            OwnWrites::Held => {
                self.metrics.recoveries_started += 1;
                self.staged
                    .push(Output::Event(Event::RecoveryStarted { cause }));
                cause
            }
        };
        self.own_writes = OwnWrites::Recovering {
            cause,
            done: BTreeSet::new(),
            since_ms: self.seen_ms,
        };
        self.recovery_dirty = true;
        self.recovery_hellos_due = true;
    }

    /// Asks every connected peer for its full state (once per input).
    pub(super) fn send_recovery_hellos(&mut self) {
        if !std::mem::take(&mut self.recovery_hellos_due) {
            return;
        }
        let ids: Vec<NodeId> = self
            .peers
            .iter()
            .filter(|(_, p)| p.link.connected())
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            self.say_hello(id);
        }
    }

    /// Whether this replica may claim to hold its own writes and the
    /// writes it received (see the module docs).
    pub(super) fn claims_held(&self) -> bool {
        self.own_writes == OwnWrites::Held && self.quarantine.is_empty()
    }

    /// The store was lost and the recovery is not over: client writes wait.
    pub(super) fn lost_store(&self) -> bool {
        matches!(
            self.own_writes,
            OwnWrites::Recovering {
                cause: Recovery::AfterStoreLoss,
                ..
            }
        )
    }

    /// Whether hellos to `peer` ask for its full state.
    pub(super) fn recovering_from(&self, peer: NodeId) -> bool {
        matches!(&self.own_writes, OwnWrites::Recovering { done, .. } if !done.contains(&peer))
    }

    /// Everything `peer` held is here (its full transfer reached its end,
    /// or our roots were equal).
    pub(super) fn recovered_from(&mut self, peer: NodeId) {
        if self.peers.get(&peer).is_some_and(|p| p.role == Role::Edge) {
            // An edge's state is its server's: it counts for no recovery.
            return;
        }
        if self.recovery_hellos_due {
            // The recovery (re)started in this input: what the peer sent
            // before it is asked again does not count.
            return;
        }
        let OwnWrites::Recovering { done, .. } = &mut self.own_writes else {
            return;
        };
        if done.insert(peer) {
            self.check_recovered();
        }
    }

    pub(super) fn check_recovered(&mut self) {
        let OwnWrites::Recovering {
            done,
            cause,
            since_ms,
        } = &self.own_writes
        else {
            return;
        };
        // A node whose store was lost forgot its members too: it learns
        // them from the peers that reach it (membership gossip), so it
        // waits at least one contact timeout before it trusts the list.
        if *cause == Recovery::AfterStoreLoss
            && self.seen_ms < since_ms.saturating_add(self.cfg.contact_timeout_ms)
        {
            return;
        }
        // At least one peer: a node that lost its store learns its members
        // from the peers that reach it, and a lone node has nobody to
        // recover from (its quarantined keys wait for writes, and after a
        // lost store for a backup).
        let me = self.cfg.node;
        if self.recovery_hellos_due
            || !self.reading_back.is_empty()
            || done.is_empty()
            // An edge's servers each send every origin: one is enough.
            || !(self.is_edge() || self.members().all(|(id, _)| *id == me || done.contains(id)))
        {
            return;
        }
        let OwnWrites::Recovering { cause, done, .. } = std::mem::take(&mut self.own_writes) else {
            return;
        };
        self.recovery_dirty = true;
        // Full transfers in progress carried every origin while we
        // recovered; what is not yet sent of it is still theirs.
        let index = self.map.index();
        for p in self.peers.values_mut() {
            if let Some(u) = p.full_until.as_mut() {
                *u = index;
            }
        }
        self.resolve_unheld(done.len());
        self.metrics.recoveries_completed += 1;
        self.staged.push(Output::Event(Event::Recovered {
            cause,
            peers: done.len(),
        }));
    }

    /// Ends the quarantine of every key still quarantined when the
    /// recovery is over: no peer held it live.
    fn resolve_unheld(&mut self, peers: usize) {
        let all = std::mem::take(&mut self.quarantine);
        for (raw, q) in all {
            match q.key {
                // Damaged on disk and absent in memory: the commit removes
                // the stored copy. (A copy on disk of a record damaged in
                // memory may be intact: it is checked when next read back.)
                Some(k) if q.found == Found::Store && self.map.get(k.as_str()).is_none() => {
                    self.dirty_keys.insert(k);
                }
                Some(_) => {}
                None => {
                    // The damaged bytes go; if the name is a key a peer
                    // sent, its record is written again after.
                    self.purge.push(raw.clone());
                    if let Ok(k) = crate::core::types::Key::from_bytes(&raw) {
                        if self.map.get(k.as_str()).is_some() {
                            self.dirty_keys.insert(k);
                        }
                    }
                }
            }
            self.report_resolved(
                String::from_utf8_lossy(&raw).into_owned(),
                Resolution::NotHeldByPeers { peers },
            );
        }
        self.dirty_meta = true;
    }

    /// The recovery now, for status.
    pub(super) fn recovery_status(&self) -> Option<RecoveryStatus> {
        let OwnWrites::Recovering {
            cause,
            done,
            since_ms,
        } = &self.own_writes
        else {
            return None;
        };
        let me = self.cfg.node;
        Some(RecoveryStatus {
            since_ms: *since_ms,
            cause: *cause,
            peers_done: done.len(),
            peers: self.members().filter(|(id, _)| **id != me).count(),
        })
    }

    /// The durable form of the state, if it changed since the last commit.
    pub(super) fn take_recovery_change(&mut self) -> Option<Recovery> {
        if !std::mem::take(&mut self.recovery_dirty) {
            return None;
        }
        Some(match &self.own_writes {
            OwnWrites::Held => Recovery::None,
            OwnWrites::Recovering { cause, .. } => *cause,
        })
    }
}
