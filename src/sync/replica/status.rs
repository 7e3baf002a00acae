//! What the replica reports: [`Status`] with its peers and regions, and
//! the [`Metrics`] counters.

use super::{ClockStatus, QuarantineStatus, RecoveryStatus, Replica};
use crate::core::hlc::Hlc;
use crate::core::types::{Hash, NodeId};
use crate::sync::config::{PartitionPolicy, Role};

/// Counters for metrics and for tests that must tell paths apart.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Metrics {
    /// Times a peer knew this node's adopted id from before: a lost store found.
    pub lost_stores_found: u64,
    /// Client writes applied here (each key of a prefix delete counts).
    pub local_writes: u64,
    /// Feed messages received from peers, heartbeats included.
    pub feed_messages_in: u64,
    /// Entries from peers' feeds that changed the map.
    pub feed_entries_applied: u64,
    /// Feed messages that started beyond what we had applied (a gap: a resume is asked for).
    pub feed_gaps: u64,
    /// Times unacknowledged feed messages to a peer were sent again.
    pub feed_rewinds: u64,
    /// Anti-entropy rounds this replica started.
    pub ae_rounds_started: u64,
    /// Rounds a peer started whose roots were equal to ours.
    pub ae_rounds_equal: u64,
    /// Entries sent in anti-entropy.
    pub ae_entries_sent: u64,
    /// Entries received in anti-entropy that changed the map.
    pub ae_entries_applied: u64,
    /// Entries sent in feed messages.
    pub feed_entries_sent: u64,
    /// Entries of absent keys refused at or below the collection floor.
    pub below_floor_refused: u64,
    /// Messages refused because their stamps ran too far ahead of our clock.
    pub clock_skew_refusals: u64,
    /// Peers refused at hello (protocol, cluster or identity).
    pub peers_refused: u64,
    /// Peers told they are stale and must resync.
    pub stale_peers: u64,
    /// Times this replica was told it is stale and resynced.
    pub resyncs: u64,
    /// Records damaged in memory repaired from their copies on disk.
    pub records_read_back: u64,
    /// Recoveries from damage or a lost store begun.
    pub recoveries_started: u64,
    /// Of those, the ones complete.
    pub recoveries_completed: u64,
    /// Tombstones dropped by garbage collection.
    pub tombstones_collected: u64,
    /// Messages dropped: from ourselves, or from a peer whose link is not up
    /// (no accepted hello, or stale).
    pub messages_ignored: u64,
    /// Messages dropped because they broke a protocol limit.
    pub messages_invalid: u64,
    /// Records quarantined because they failed their check.
    pub records_quarantined: u64,
    /// Quarantines ended (repaired, overwritten, or found moot).
    pub records_repaired: u64,
    /// Of the quarantined, those found damaged in memory (not on load).
    pub damage_found_in_memory: u64,
    /// Records verified by the background scrub.
    pub records_scrubbed: u64,
    /// Complete passes of the scrub over every record.
    pub scrub_passes: u64,
    /// Records read back with indexes that could not be right (renumbered).
    pub records_renumbered: u64,
    /// On an edge: writes forwarded to a server.
    pub forwards_sent: u64,
    /// On a server: edges' forwarded writes made.
    pub forwards_made: u64,
    /// On an edge: writes taken while no server was connected (`edge_writes = "local"`).
    pub local_writes_taken: u64,
    /// On an edge: local writes sent to a server (again after a lost server or a timeout).
    pub local_writes_handed_over: u64,
    /// On an edge: local writes a server refused alone, dropped here.
    pub local_writes_dropped: u64,
    /// On a server: edges' local writes made as its own.
    pub handovers_made: u64,
    /// On a server: edges' local writes skipped, a newer version being held.
    pub handovers_skipped: u64,
    /// On an edge: records dropped because the server had collected their
    /// deletes while the edge was away.
    pub collected_dropped: u64,
    /// Versions of a document that met here merged, as a write of their union.
    pub doc_merges_made: u64,
    /// Merges of documents not made: they would have saved larger than the value limit.
    pub doc_merges_too_large: u64,
    /// Merges of documents left to other replicas: too many waited here.
    pub doc_merges_left: u64,
    /// Document writes that started a document over from its JSON: its
    /// history passed half the value limit.
    pub doc_compactions: u64,
    /// Documents from peers or backups refused: their bytes do not load.
    pub docs_refused: u64,
    /// Documents sent in a feed as their changes since a version the peer held.
    pub doc_changes_sent: u64,
    /// Documents received as changes that could not be rebuilt here (the
    /// version they follow is not held, or the result differed from the
    /// sender's): their feed range was asked for again, whole.
    pub doc_changes_missed: u64,
    /// Members forgotten (left, or forgotten by an operator).
    pub members_forgotten: u64,
    /// Notices of forgotten members dropped: as many as a node keeps are forgotten.
    pub forgets_refused: u64,
    /// Forgotten ids told to resync when they came back.
    pub forgotten_told: u64,
}

/// Per-peer view for status reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerStatus {
    /// The peer's node id.
    pub node: NodeId,
    /// Its node name, as its hello said (empty until its first hello).
    pub name: String,
    /// Its region.
    pub region: String,
    /// Its HTTP API address (`ip:port`), empty if it has none.
    pub api: String,
    /// Its hello was accepted on a live connection.
    pub connected: bool,
    /// We told it that it was away longer than the tombstone horizon: its
    /// data is refused until it has resynced and says hello again.
    pub stale: bool,
    /// Their index at hello minus what we applied of their feed.
    pub lag_index: u64,
    /// When this replica last held everything the peer had (physical ms;
    /// 0: never). The sync lag in time is `now - in_sync_at_ms`.
    pub in_sync_at_ms: u64,
    /// When its current connection's hello arrived (physical ms; 0: never).
    pub connected_at_ms: u64,
    /// When a message of theirs last arrived (physical ms; 0: never).
    pub last_heard_ms: u64,
    /// Our feed up to here is acknowledged by them.
    pub acked: u64,
    /// Their feed up to here is applied here.
    pub applied: u64,
    /// Every write of theirs stamped at or below this is held here.
    pub received: Hlc,
    /// They hold every write stamped at or below this (as they last said).
    pub frontier: Hlc,
    /// Their clock minus ours (ms); `None` without a fresh sample.
    pub clock_offset_ms: Option<i64>,
    /// The round trip of that estimate (ms); `None` without a fresh sample.
    pub rtt_ms: Option<u64>,
    /// When we last refused their stamps as too far ahead of our clock
    /// (physical ms; 0: never).
    pub refused_at_ms: u64,
    /// How far ahead their stamps ran then (ms; 0: never).
    pub refused_ahead_ms: u64,
}

/// Whether a region is reachable, and since when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegionStatus {
    /// The region's name.
    pub region: String,
    /// A member of it was heard from within the contact timeout (always true for our own).
    pub reachable: bool,
    /// Physical time (ms) of the last change of `reachable`.
    pub since_ms: u64,
}

/// A replica's status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// This replica's node id.
    pub node: NodeId,
    /// Its region.
    pub region: String,
    /// Its last index.
    pub index: u64,
    /// The Merkle root of its live entries.
    pub root: Hash,
    /// Live keys (tombstones not counted).
    pub keys: usize,
    /// Tombstones not yet collected.
    pub tombstones: usize,
    /// It is rebuilding an empty state from a peer.
    pub rebuilding: bool,
    /// The peer a rebuild is taking its full transfer from.
    pub rebuild_from: Option<NodeId>,
    /// A standby refuses client writes until promoted.
    pub standby: bool,
    /// What this node last judged of failover (`[failover]`).
    pub failover: super::FailoverState,
    /// Every known peer, connected or not, in node id order.
    pub peers: Vec<PeerStatus>,
    /// Regions with a connected peer, and our own, sorted.
    pub reachable_regions: Vec<String>,
    /// Every known region, with since when it is (un)reachable.
    pub regions: Vec<RegionStatus>,
    /// Regions known, our own included.
    pub total_regions: usize,
    /// A majority of the known regions is reachable.
    pub quorum: bool,
    /// Conflicts recorded since the log began, including those no longer kept.
    pub conflicts: u64,
    /// The collection floor: tombstones at or below it may have been dropped.
    pub gc_floor: Hlc,
    /// This replica holds every write stamped at or below this.
    pub frontier: Hlc,
    /// Records quarantined now (they failed their check).
    pub quarantined: usize,
    /// The first `STATUS_QUARANTINE_MAX` (100) of them, in stored-key order.
    pub quarantine: Vec<QuarantineStatus>,
    /// The store was lost: recovering from the peers, writes refused.
    pub store_lost: bool,
    /// A recovery from loss or damage, while it lasts (claims are held back).
    pub recovery: Option<RecoveryStatus>,
    /// What the peers' clocks say of this node's.
    pub clock: ClockStatus,
    /// `partition_policy = quorum` and no majority of regions reachable:
    /// client writes are refused.
    pub refusing_writes_no_quorum: bool,
    /// Quorum writes waiting for a majority of regions.
    pub quorum_writes_waiting: usize,
    /// This node is an edge (its peers are the servers it attached to).
    pub edge: bool,
    /// On a server: edges attached (their hello accepted).
    pub edges: usize,
    /// On a server: the largest number of changes an attached edge has
    /// not acknowledged yet.
    pub edges_lag_index_max: u64,
    /// On an edge: writes taken while no server was connected, not yet
    /// handed over (`edge_writes = "local"`).
    pub local_writes_waiting: usize,
}

/// Quarantined records a status lists by name (all are counted).
pub const STATUS_QUARANTINE_MAX: usize = 100;

impl Replica {
    /// A report of this replica's state, its peers and its regions (`&mut`:
    /// the digest's root may need recomputing).
    pub fn status(&mut self) -> Status {
        let (up, all) = self.region_counts();
        let mut reachable: Vec<String> = vec![self.cfg.region.clone()];
        for (_, p) in self.members().filter(|(_, p)| p.link.ready()) {
            if !reachable.contains(&p.region) {
                reachable.push(p.region.clone());
            }
        }
        reachable.sort();
        Status {
            node: self.cfg.node,
            region: self.cfg.region.clone(),
            index: self.map.index(),
            root: self.map.root(),
            keys: self.map.len() - self.map.tombstone_count(),
            tombstones: self.map.tombstone_count(),
            rebuilding: self.rebuilding,
            rebuild_from: self.rebuild_from,
            standby: self.cfg.standby,
            failover: self.failover.clone(),
            edge: self.is_edge(),
            edges: self.edges_connected(),
            local_writes_waiting: self.local_writes_waiting(),
            edges_lag_index_max: self
                .peers
                .values()
                .filter(|p| p.role == Role::Edge && p.link.ready())
                .map(|p| self.map.index().saturating_sub(p.acked))
                .max()
                .unwrap_or(0),
            peers: self
                .members()
                .map(|(id, p)| PeerStatus {
                    node: *id,
                    name: p.name.clone(),
                    region: p.region.clone(),
                    api: p.api.clone(),
                    connected: p.link.ready(),
                    stale: p.link.stale(),
                    lag_index: p.their_index.saturating_sub(p.applied),
                    in_sync_at_ms: p.in_sync_ms,
                    connected_at_ms: p.hello_ms,
                    last_heard_ms: p.last_heard_ms,
                    acked: p.acked,
                    applied: p.applied,
                    received: p.received,
                    frontier: p.frontier,
                    clock_offset_ms: p.clock.estimate(self.seen_ms).map(|s| s.offset_ms),
                    rtt_ms: p.clock.estimate(self.seen_ms).map(|s| s.rtt_ms),
                    refused_at_ms: p.refused_ms,
                    refused_ahead_ms: p.refused_ahead_ms,
                })
                .collect(),
            reachable_regions: reachable,
            regions: self
                .regions
                .iter()
                .map(|(region, (reachable, since_ms))| RegionStatus {
                    region: region.clone(),
                    reachable: *reachable,
                    since_ms: *since_ms,
                })
                .collect(),
            total_regions: all,
            quorum: up * 2 > all,
            conflicts: self.map.conflicts().total(),
            gc_floor: self.gc_floor,
            frontier: self.frontier(),
            quarantined: self.quarantine.len(),
            quarantine: self
                .quarantine()
                .into_iter()
                .take(STATUS_QUARANTINE_MAX)
                .collect(),
            store_lost: self.lost_store(),
            recovery: self.recovery_status(),
            clock: self.clock_status(self.seen_ms),
            refusing_writes_no_quorum: self.cfg.partition_policy == PartitionPolicy::Quorum
                && up * 2 <= all,
            quorum_writes_waiting: self.pending_acks.len(),
        }
    }
}
