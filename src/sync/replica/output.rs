//! What the replica asks of its driver ([`Output`]) and tells operators
//! ([`Event`]), and the end of every input: the persist batch first, then
//! every output it allows.

use super::{AckFailure, Refusal, Replica, Resolution, WriteReceipt};
use crate::core::codec::Message;
use crate::core::mutants::{self, Mutant};
use crate::core::types::{Key, NodeId, Stamp};
use crate::sync::config::Role;
use crate::sync::durable::{PeerProgress, PersistBatch, Recovery, StoredRecord};

/// Something operators should hear about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A peer's stamp ran ahead of our clock by more than the bound; its message was refused.
    ClockSkew {
        /// The peer whose message was refused.
        peer: NodeId,
        /// How far its furthest stamp ran ahead of our clock, in ms.
        ahead_ms: u64,
    },
    /// A peer was refused.
    PeerRefused {
        /// The refused peer.
        peer: NodeId,
        /// Why it was refused.
        reason: Refusal,
    },
    /// This node left the cluster (`Replica::leave`).
    Left {
        /// The clock of the leave.
        at: crate::core::hlc::Hlc,
    },
    /// A member was forgotten: it left, or an operator forgot it.
    MemberForgotten {
        /// The member.
        peer: NodeId,
        /// Its node name.
        name: String,
        /// Its region.
        region: String,
        /// It left by itself.
        left: bool,
    },
    /// A forgotten member resynced and is a member again.
    MemberBack {
        /// The member.
        peer: NodeId,
        /// Its node name.
        name: String,
    },
    /// On an edge: a local write its server refused (see
    /// `replica/handover.rs`) was dropped; the server's version replaces it.
    LocalWriteDropped {
        /// The key.
        key: String,
        /// The server's refusal.
        reason: String,
    },
    /// A peer lost contact before a tombstone we collected by age was written; it was told to resync.
    PeerStale {
        /// The peer told to resync.
        peer: NodeId,
    },
    /// This replica was told it is stale: it dropped every entry older than
    /// the horizon and rebuilds from `from`.
    Resynced {
        /// The peer that said this replica is stale.
        from: NodeId,
        /// Entries dropped as older than the horizon.
        dropped: usize,
    },
    /// Two different entries carried the same stamp (a bug or corruption).
    StampCollision {
        /// The key both entries were for.
        key: Key,
    },
    /// A peer's hello was accepted: it is connected.
    PeerUp {
        /// The peer's node id.
        peer: NodeId,
        /// Its node name, as its hello said.
        name: String,
        /// Its region, as its hello said.
        region: String,
    },
    /// The connection to a peer was lost.
    PeerDown {
        /// The peer's node id.
        peer: NodeId,
        /// Its node name, as last known.
        name: String,
        /// Its region, as last known.
        region: String,
    },
    /// No peer of this region is reachable any more (a partition, from here).
    PartitionDetected {
        /// The region cut off.
        region: String,
    },
    /// A peer of this region is reachable again after `partition_ms`.
    PartitionEnded {
        /// The region reachable again.
        region: String,
        /// How long it was unreachable, in ms.
        partition_ms: u64,
    },
    /// After a partition ended, this replica and a peer of that region were
    /// found to hold equal state: `keys_exchanged` entries crossed (applied
    /// here or sent from here) since the end, in `converge_ms`.
    PartitionHealed {
        /// The region whose partition healed.
        region: String,
        /// How long it was unreachable, in ms.
        partition_ms: u64,
        /// Entries applied here or sent from here since the partition ended.
        keys_exchanged: u64,
        /// Time from the end of the partition to equal state, in ms.
        converge_ms: u64,
    },
    /// This standby took over (`[failover]`): the regions before it in
    /// priority, and those known active, were out of reach for `after_ms`
    /// as every standby region in contact agreed. `failed` is empty when it
    /// followed its own region's promotion.
    FailedOver {
        /// The regions it took over from.
        failed: Vec<String>,
        /// How long they had to be out of reach, in ms.
        after_ms: u64,
    },
    /// Anti-entropy found this replica's root differs from a peer's.
    DivergenceFound {
        /// The peer of the anti-entropy round.
        peer: NodeId,
    },
    /// Anti-entropy applied entries from a peer that the push had missed.
    DivergenceRepaired {
        /// The peer the entries came from.
        peer: NodeId,
        /// Entries applied.
        keys: u64,
    },
    /// A record failed its check (read back from the store, before it was
    /// sent or served, or in the scrub): it is quarantined until repaired.
    RecordQuarantined {
        /// The key (lossy UTF-8 if the stored key is not a valid key).
        key: String,
        /// What failed its check, and where.
        reason: String,
    },
    /// A quarantined record's quarantine ended.
    RecordRepaired {
        /// The key (lossy UTF-8 if the stored key is not a valid key).
        key: String,
        /// How the quarantine ended.
        how: Resolution,
    },
    /// The store could not be read at all: this node starts empty under
    /// its own id and rebuilds from a peer, refusing writes until then.
    StoreLost,
    /// This node started empty under an id it adopted (its certificate's),
    /// and `peer` knew the id from before: the store was lost (a
    /// [`Event::StoreLost`] follows). See `replica/identity.rs`.
    LostStoreFound {
        /// The peer that knew the id.
        peer: NodeId,
    },
    /// Every known peer said hello without knowing the adopted id from
    /// before, and the rebuild is done: the id is this node's own.
    IdConfirmed,
    /// Records were lost (`cause`): this replica claims nothing and takes
    /// every known peer's state (see `replica/recovery.rs`).
    RecoveryStarted {
        /// What was lost: damaged records, or the whole store.
        cause: Recovery,
    },
    /// Every known peer's state (`peers` of them) was taken: this replica
    /// claims again.
    Recovered {
        /// What had been lost.
        cause: Recovery,
        /// Peers whose state was taken.
        peers: usize,
    },
    /// The judgement of this node's clock changed: `disagreeing` of the
    /// `members` (this one included) are more than the bound off from it
    /// (`offset_ms`: theirs minus ours), and `off` when they are a majority
    /// (client writes are refused).
    ClockOffset {
        /// The median offset of the disagreeing members (of all measured
        /// ones when none disagrees), theirs minus ours, in ms; 0: unknown.
        offset_ms: i64,
        /// Members whose clocks are more than the bound off from this one's.
        disagreeing: usize,
        /// Members of the cluster, this node included.
        members: usize,
        /// The disagreeing members are a majority: client writes are refused.
        off: bool,
    },
}

/// An effect for the driver to carry out, in order: an output may be carried
/// out only once every `Persist` before it is durable.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// Write this batch atomically; later outputs wait until it is durable.
    Persist(PersistBatch),
    /// Send a message to a peer.
    Send {
        /// The peer.
        to: NodeId,
        /// The message.
        msg: Message,
    },
    /// A client write is durable (here, or in a majority of regions when
    /// it asked for a quorum): complete it.
    Acknowledge(WriteReceipt),
    /// A client write is not acknowledged: it is written here but not as
    /// durable as it asked (see [`AckFailure`]). Complete it with an error.
    Unacknowledged {
        /// The write, as its receipt named it.
        receipt: WriteReceipt,
        /// Why it is not acknowledged.
        reason: AckFailure,
    },
    /// Changes up to this index are durable: wake watchers.
    Notify {
        /// The replica's last index, now durable.
        index: u64,
    },
    /// A record was found damaged in memory: read its stored copy (once
    /// every persist issued before this output is durable) and hand it to
    /// [`Replica::read_back`].
    ReadBack {
        /// The key whose stored copy to read.
        key: Key,
    },
    /// On an edge: a local write (`edge_writes = "local"`) was handed over
    /// to a server, which made it as its own write (`made`), or skipped it
    /// for a newer version it held (`None`). For the record (logs,
    /// metrics, the simulation's oracle): nothing to carry out.
    HandedOver {
        /// The key.
        key: Key,
        /// The edge's stamp of the local write.
        local: Stamp,
        /// The stamp of the server's write made from it.
        made: Option<Stamp>,
    },
    /// A member was forgotten (it left, or was forgotten): close its
    /// connection, stop dialing it, and tell membership it is gone. On an
    /// edge: its server left; attach to another.
    Forgot {
        /// The member.
        peer: NodeId,
    },
    /// Close the connection to a peer.
    Disconnect {
        /// The peer.
        peer: NodeId,
        /// Why it was refused.
        reason: Refusal,
    },
    /// Something operators should hear about: the driver logs and publishes it.
    Event(Event),
    /// On an edge: forwarded write `id` is done (acknowledged by the server
    /// and applied here), or failed.
    Forwarded {
        /// The caller's number for the write.
        id: u64,
        /// The keys written, or why not.
        result: Result<super::ForwardReceipt, super::WriteError>,
    },
    /// Read barrier `id` (see [`Replica::barrier`]) is done: the reads it
    /// guards may be answered, or refused with the error.
    BarrierDone {
        /// The caller's number for the barrier.
        id: u64,
        /// Whether every reachable peer's acknowledged writes are held here.
        result: Result<(), super::BarrierError>,
    },
}

impl Replica {
    pub(super) fn send(&mut self, to: NodeId, msg: Message) {
        self.staged.push(Output::Send { to, msg });
    }

    /// Ends an input: the persist batch first, then everything it allows.
    pub(super) fn commit(&mut self) {
        if mutants::on(Mutant::AckBeforePersist) {
            self.outputs.extend(self.staged.drain(..));
        }
        self.send_recovery_hellos();
        let recovery = self.take_recovery_change();
        let (conflicts, conflicts_total) = self.map.conflicts_mut().take_fresh();
        let rebuild = self.rebuilding || std::mem::take(&mut self.rebuild_ended);
        if recovery.is_some()
            || self.dirty_meta
            || !self.dirty_keys.is_empty()
            || !self.dirty_peers.is_empty()
            || !self.purge.is_empty()
            || !conflicts.is_empty()
            || !self.dirty_forgotten.is_empty()
            || self.rejoined_dirty
            || self.left_dirty
        {
            let records = std::mem::take(&mut self.dirty_keys)
                .into_iter()
                .map(|k| {
                    // Stored with the check computed when the entry arrived.
                    let r = self.map.get(k.as_str()).map(|r| StoredRecord {
                        entry: r.entry.clone(),
                        create_index: r.create_index,
                        modify_index: r.modify_index,
                        check: r.stored_check(),
                    });
                    (k, r)
                })
                .collect();
            // An edge's progress is not kept: its hello says where to resume.
            let peers = std::mem::take(&mut self.dirty_peers)
                .into_iter()
                .filter_map(|id| {
                    self.peers
                        .get(&id)
                        .filter(|p| p.role == Role::Server)
                        .map(|p| {
                            (
                                id,
                                PeerProgress {
                                    applied: p.applied,
                                    received: p.received,
                                    name: p.name.clone(),
                                    region: p.region.clone(),
                                    api: p.api.clone(),
                                },
                            )
                        })
                })
                .collect();
            self.outputs.push_back(Output::Persist(PersistBatch {
                records,
                index: self.map.index(),
                clock: self.clock.last(),
                gc_floor: self.gc_floor,
                horizon_floor: self.horizon_floor,
                synced_ms: self.synced_ms,
                peers,
                purge: std::mem::take(&mut self.purge),
                conflicts,
                conflicts_total,
                recovery,
                forgotten: std::mem::take(&mut self.dirty_forgotten)
                    .into_iter()
                    .map(|id| (id, self.forgotten.get(&id).cloned()))
                    .collect(),
                rejoined: std::mem::take(&mut self.rejoined_dirty).then_some(self.rejoined),
                left: std::mem::take(&mut self.left_dirty)
                    .then_some(self.left)
                    .flatten(),
                rebuild,
            }));
            self.dirty_meta = false;
            self.outputs.push_back(Output::Notify {
                index: self.map.index(),
            });
        }
        self.outputs.extend(self.staged.drain(..));
    }
}
