//! What a replica asks to be made durable, and the state it restarts from.
//!
//! Owns [`PersistBatch`] (the changes of one input, written atomically by
//! the store before any later output is carried out) and [`DurableState`],
//! an in-memory model of a store that applies batches and from which
//! [`Replica::restore`](super::Replica::restore) rebuilds a replica. The
//! simulation keeps one per node to model crashes; real stores persist the
//! same fields.

use std::collections::BTreeMap;

use crate::core::conflicts::Conflict;
use crate::core::hlc::Hlc;
use crate::core::types::{Check, Entry, Key, NodeId};

/// Conflicts a store keeps (the newest); a larger `conflicts_max` keeps the
/// rest in memory only.
pub const CONFLICTS_STORED_MAX: usize = 4_096;

/// A key's durable record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredRecord {
    /// The key's current entry, value or tombstone.
    pub entry: Entry,
    /// The local index at which the key was created (or re-created after a delete).
    pub create_index: u64,
    /// The local index of the key's latest change.
    pub modify_index: u64,
    /// The check the entry was stored with: a replica restoring from it
    /// recomputes the check from the entry and quarantines the record if
    /// they differ.
    pub check: Check,
}

/// A stored record whose bytes do not decode into a record (or whose key
/// is not a valid key): a store hands it over for the replica to judge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DamagedRecord {
    /// The key as stored (maybe damaged itself).
    pub raw_key: Vec<u8>,
    /// Why it did not decode, for operators.
    pub reason: String,
}

/// One record as a store reads it back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Loaded {
    /// Decoded, with the check it was stored with (not yet verified).
    Record(Key, StoredRecord),
    /// Did not decode: the replica quarantines it and takes a full transfer.
    Damaged(DamagedRecord),
}

/// How far this replica has durably applied one peer's feed, and who the
/// peer said it was (so that a restarted replica knows its regions before
/// they reconnect: quorum and partition checks count them).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeerProgress {
    /// The peer's feed index up to which every change has been applied.
    pub applied: u64,
    /// Every write of the peer stamped at or below this clock is held here.
    pub received: Hlc,
    /// The peer's node name, as its hello said.
    pub name: String,
    /// The peer's region, as its hello said.
    pub region: String,
    /// Its HTTP API address.
    pub api: String,
}

/// A member the cluster forgot: it left, or an operator forgot it (see
/// `replica::members`). Its id stays here until it comes back and resyncs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ForgottenMember {
    /// The clock of the leave or forget (the same on every member: it
    /// travels with the notice). A member that resynced after it is back.
    pub at: Hlc,
    /// Its node name, as it was known.
    pub name: String,
    /// Its region, as it was known.
    pub region: String,
    /// It left by itself (`meridian leave`), rather than being forgotten.
    pub left: bool,
    /// Every write of it stamped at or below this was held here when it
    /// was forgotten. Until `settled`, this replica claims no more of its
    /// writes (its frontier stops here): others may hold writes of it
    /// that never reached us.
    pub held: Hlc,
    /// An anti-entropy round with every member found equal state since:
    /// whatever of its writes they held is here too.
    pub settled: bool,
}

/// Whether a replica may lack writes that its peers hold, and why. Durable:
/// a replica that restarts in the middle of a recovery resumes it (see
/// `replica::recovery`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub enum Recovery {
    /// Nothing was lost.
    #[default]
    None,
    /// The cluster forgot this node (it left, or was forgotten while
    /// away): it dropped what may be deleted keys and takes its peers'
    /// state again (see `replica::members`).
    AfterForget,
    /// Records were found damaged and quarantined.
    AfterDamage,
    /// The store could not be read and was replaced by an empty one.
    AfterStoreLoss,
}

impl Recovery {
    /// Its stored form.
    pub fn to_u64(self) -> u64 {
        match self {
            Recovery::None => 0,
            Recovery::AfterDamage => 1,
            Recovery::AfterStoreLoss => 2,
            Recovery::AfterForget => 3,
        }
    }

    /// Its name in events, status and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Recovery::None => "none",
            Recovery::AfterDamage => "damage",
            Recovery::AfterStoreLoss => "store_loss",
            Recovery::AfterForget => "forgotten",
        }
    }

    /// The stored form back; `None` for a value no version writes.
    pub fn from_u64(v: u64) -> Option<Recovery> {
        match v {
            0 => Some(Recovery::None),
            1 => Some(Recovery::AfterDamage),
            2 => Some(Recovery::AfterStoreLoss),
            3 => Some(Recovery::AfterForget),
            _ => None,
        }
    }
}

/// The changes made by one input, to be written atomically.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PersistBatch {
    /// Changed keys; `None` removes the key.
    pub records: Vec<(Key, Option<StoredRecord>)>,
    /// The replica's last index after this input.
    pub index: u64,
    /// The greatest timestamp the clock issued or observed: a restart resumes after it.
    pub clock: Hlc,
    /// The collection floor: tombstones at or below it may have been dropped,
    /// so values at or below it for absent keys are refused.
    pub gc_floor: Hlc,
    /// The greatest clock of a tombstone collected by age, not stability.
    pub horizon_floor: Hlc,
    /// Physical time of the last message from any peer.
    pub synced_ms: u64,
    /// Peers whose progress or identity changed.
    pub peers: Vec<(NodeId, PeerProgress)>,
    /// Stored keys (as stored, maybe not valid keys) of damaged records to
    /// remove, before `records` are written.
    pub purge: Vec<Vec<u8>>,
    /// Conflicts recorded by this input, oldest first, and the count of all
    /// conflicts ever recorded after them (the last one's number).
    pub conflicts: Vec<Conflict>,
    /// The count of all conflicts ever recorded, this batch's included.
    pub conflicts_total: u64,
    /// The recovery state, when this input changed it.
    pub recovery: Option<Recovery>,
    /// Members forgotten (`Some`: also drops their progress) or back
    /// (`None`) by this input.
    pub forgotten: Vec<(NodeId, Option<ForgottenMember>)>,
    /// The clock of the latest leave or forget of this node that it
    /// resynced after, when this input changed it.
    pub rejoined: Option<Hlc>,
    /// The clock this node left at, when this input made it leave.
    pub left: Option<Hlc>,
    /// This input applied a rebuild's full transfer (or ended it): its
    /// records are a peer's current state, not versions this node applied
    /// (the node's key history leaves them out).
    pub rebuild: bool,
}

/// Everything a replica needs to restart (see the module docs).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DurableState {
    /// The node the state belongs to; `NodeId(0)` (a fresh state) fits any node.
    pub node: NodeId,
    /// Every record that decoded, tombstones included.
    pub records: BTreeMap<Key, StoredRecord>,
    /// The replica's last index.
    pub index: u64,
    /// The greatest timestamp the clock issued or observed.
    pub clock: Hlc,
    /// The collection floor (see [`PersistBatch::gc_floor`]).
    pub gc_floor: Hlc,
    /// The greatest clock of a tombstone collected by age, not stability.
    pub horizon_floor: Hlc,
    /// Physical time (ms) of the last message from any peer; 0: none yet.
    pub synced_ms: u64,
    /// Progress with each peer, and who it said it was.
    pub peers: BTreeMap<NodeId, PeerProgress>,
    /// Records that did not decode when the state was read back.
    pub damaged: Vec<DamagedRecord>,
    /// The newest conflicts (at most [`CONFLICTS_STORED_MAX`]), oldest
    /// first, and how many were ever recorded.
    pub conflicts: Vec<Conflict>,
    /// The count of all conflicts ever recorded, including those no longer kept.
    pub conflicts_total: u64,
    /// Whether a recovery was on when the state was written (resumed on restart).
    pub recovery: Recovery,
    /// The members the cluster forgot.
    pub forgotten: BTreeMap<NodeId, ForgottenMember>,
    /// The clock of the latest leave or forget of this node that it resynced after.
    pub rejoined: Hlc,
    /// The clock this node last left at (zero: never); it is a member
    /// again once `rejoined` reaches it.
    pub left: Hlc,
}

impl DurableState {
    /// An empty state belonging to `node`.
    pub fn new(node: NodeId) -> DurableState {
        DurableState {
            node,
            ..DurableState::default()
        }
    }

    /// `key`'s stored record as a store reads it back, if there is one.
    pub fn load_record(&self, key: &Key) -> Option<Loaded> {
        if let Some(r) = self.records.get(key) {
            return Some(Loaded::Record(key.clone(), r.clone()));
        }
        self.damaged
            .iter()
            .find(|d| d.raw_key == key.as_str().as_bytes())
            .cloned()
            .map(Loaded::Damaged)
    }

    /// Applies one batch, as a store's transaction would.
    pub fn apply(&mut self, batch: &PersistBatch) {
        for raw in &batch.purge {
            self.damaged.retain(|d| &d.raw_key != raw);
            if let Ok(k) = Key::from_bytes(raw) {
                self.records.remove(&k);
            }
        }
        for (k, r) in &batch.records {
            match r {
                Some(r) => {
                    self.records.insert(k.clone(), r.clone());
                }
                None => {
                    self.records.remove(k);
                }
            }
        }
        self.index = self.index.max(batch.index);
        self.clock = self.clock.max(batch.clock);
        self.gc_floor = self.gc_floor.max(batch.gc_floor);
        self.horizon_floor = self.horizon_floor.max(batch.horizon_floor);
        self.synced_ms = self.synced_ms.max(batch.synced_ms);
        for (id, p) in &batch.peers {
            self.peers.insert(*id, p.clone());
        }
        self.conflicts.extend(batch.conflicts.iter().cloned());
        let excess = self.conflicts.len().saturating_sub(CONFLICTS_STORED_MAX);
        self.conflicts.drain(..excess);
        self.conflicts_total = self.conflicts_total.max(batch.conflicts_total);
        if let Some(r) = batch.recovery {
            self.recovery = r;
        }
        for (id, f) in &batch.forgotten {
            match f {
                Some(f) => {
                    self.peers.remove(id);
                    self.forgotten.insert(*id, f.clone());
                }
                None => {
                    self.forgotten.remove(id);
                }
            }
        }
        if let Some(r) = batch.rejoined {
            self.rejoined = self.rejoined.max(r);
        }
        if let Some(l) = batch.left {
            self.left = self.left.max(l);
        }
    }
}
