//! An id this replica adopted rather than made: watching for signs that it
//! held data before.
//!
//! Owns the [`IdCheck`] state machine. A node whose certificate names its
//! id (`meridian ca issue` binds one) starts under that id even when its
//! data directory is empty. That is a new node, or one whose directory was
//! wiped: locally the two look the same. A wiped node's peers still hold
//! writes of its own that it lost, and their progress on its feed claims
//! them; if it claimed them too (as a new node does) a peer lacking them
//! could collect past them (see `recovery.rs`). So until every known peer
//! has said hello once and its rebuild is done, the replica watches for a
//! peer that knows the id from before: a hello saying it applied more of our
//! feed than there is, or that it holds writes of ours stamped before the
//! adoption, or an entry stamped with our id before the adoption (the
//! clock of an adopted id starts at the adoption, so every write and every
//! claim made since is stamped at or above it). Any of these means the store was lost, and the replica recovers as
//! after a known loss (`store_lost`). Once every known peer has said hello
//! without knowing the id, the rebuild is done and [`ID_WATCH_MS_MIN`] has
//! passed, the id is the node's own
//! ([`Event::IdConfirmed`]). Watching never blocks anything: a new cluster
//! whose nodes all adopted their ids starts as any other.

use std::collections::BTreeSet;

use super::{Event, Output, Replica};
use crate::core::codec::Hello;
use crate::core::hlc::Hlc;
use crate::core::mutants::{self, Mutant};
use crate::core::types::{NodeId, Stamp};
use crate::sync::durable::Recovery;

/// An adopted id is watched at least this long (ms) before it is confirmed.
pub const ID_WATCH_MS_MIN: u64 = 30_000;

/// Whether this replica's id may have held data it lost.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) enum IdCheck {
    /// The id is the replica's own: made here, or confirmed.
    #[default]
    Own,
    /// Adopted with an empty store at `at` (the physical time then, as a
    /// clock: every write made since is stamped above it); the peers in
    /// `heard` knew nothing of the id from before.
    Adopted { at: Hlc, heard: BTreeSet<NodeId> },
}

impl Replica {
    /// Whether the id is still being checked.
    pub fn id_unconfirmed(&self) -> bool {
        matches!(self.id_check, IdCheck::Adopted { .. })
    }

    /// A hello from `from` while the id is adopted: does `from` know it
    /// from before? (`index`: this replica's last index.)
    pub(super) fn check_id_in_hello(&mut self, from: NodeId, h: &Hello, index: u64) {
        let IdCheck::Adopted { at, heard } = &mut self.id_check else {
            return;
        };
        let knows = h.applied > index || (h.received != Hlc::ZERO && h.received < *at);
        if knows && !mutants::on(Mutant::AdoptedId) {
            return self.id_held_data(from);
        }
        heard.insert(from);
        self.confirm_id_when_due();
    }

    /// Confirms the id once every known peer has said hello without
    /// knowing it, the rebuild is done, and [`ID_WATCH_MS_MIN`] has passed
    /// (members are learned by gossip: the first few peers are not all).
    pub(super) fn confirm_id_when_due(&mut self) {
        let IdCheck::Adopted { at, heard } = &self.id_check else {
            return;
        };
        let watched = self.seen_ms >= at.physical_ms().saturating_add(ID_WATCH_MS_MIN);
        if watched && !self.rebuilding && self.members().all(|(p, _)| heard.contains(p)) {
            self.id_check = IdCheck::Own;
            self.staged.push(Output::Event(Event::IdConfirmed));
        }
    }

    /// An entry from `from` stamped by `stamp`'s node: one stamped with our
    /// id before the adoption is a write of ours from before.
    pub(super) fn check_id_in_entry(&mut self, from: Option<NodeId>, stamp: Stamp) {
        if let IdCheck::Adopted { at, .. } = &self.id_check {
            if stamp.node == self.cfg.node && stamp.hlc < *at && !mutants::on(Mutant::AdoptedId) {
                self.id_held_data(from.unwrap_or(self.cfg.node));
            }
        }
    }

    /// The id held data before: its store was lost.
    fn id_held_data(&mut self, peer: NodeId) {
        self.id_check = IdCheck::Own;
        self.metrics.lost_stores_found += 1;
        self.staged
            .push(Output::Event(Event::LostStoreFound { peer }));
        self.rebuilding = true;
        self.rebuild_from = None;
        self.staged.push(Output::Event(Event::StoreLost));
        self.begin_recovery(Recovery::AfterStoreLoss);
    }
}
