//! What the replica reports: [`Status`] with its peers and regions, and
//! the [`Metrics`] counters.

use super::{ClockStatus, QuarantineStatus, RecoveryStatus, Replica};
use crate::core::hlc::Hlc;
use crate::core::types::{Hash, NodeId};
use crate::sync::config::PartitionPolicy;

/// Counters for metrics and for tests that must tell paths apart.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Metrics {
    pub local_writes: u64,
    pub feed_messages_in: u64,
    pub feed_entries_applied: u64,
    pub feed_gaps: u64,
    pub feed_rewinds: u64,
    pub ae_rounds_started: u64,
    pub ae_rounds_equal: u64,
    pub ae_entries_sent: u64,
    pub ae_entries_applied: u64,
    pub feed_entries_sent: u64,
    pub below_floor_refused: u64,
    pub clock_skew_refusals: u64,
    pub peers_refused: u64,
    pub stale_peers: u64,
    pub resyncs: u64,
    /// Records damaged in memory repaired from their copies on disk.
    pub records_read_back: u64,
    /// Recoveries from damage or a lost store begun, and those complete.
    pub recoveries_started: u64,
    pub recoveries_completed: u64,
    pub tombstones_collected: u64,
    pub messages_ignored: u64,
    pub messages_invalid: u64,
    /// Records quarantined because they failed their check.
    pub records_quarantined: u64,
    /// Quarantines ended (repaired, overwritten, or found moot).
    pub records_repaired: u64,
    /// Of the quarantined, those found damaged in memory (not on load).
    pub damage_found_in_memory: u64,
    /// Records verified by the background scrub, and its completed passes.
    pub records_scrubbed: u64,
    pub scrub_passes: u64,
    /// Records read back with indexes that could not be right (renumbered).
    pub records_renumbered: u64,
}

/// Per-peer view for status reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerStatus {
    pub node: NodeId,
    pub name: String,
    pub region: String,
    /// Its HTTP API address (`ip:port`), empty if it has none.
    pub api: String,
    pub connected: bool,
    /// Their index at hello minus what we applied of their feed.
    pub lag_index: u64,
    /// When this replica last held everything the peer had (physical ms;
    /// 0: never). The sync lag in time is `now - in_sync_at_ms`.
    pub in_sync_at_ms: u64,
    /// When its current connection's hello arrived (physical ms; 0: never).
    pub connected_at_ms: u64,
    pub last_heard_ms: u64,
    /// Our feed up to here is acknowledged by them.
    pub acked: u64,
    /// Their feed up to here is applied here.
    pub applied: u64,
    /// Every write of theirs stamped at or below this is held here.
    pub received: Hlc,
    /// They hold every write stamped at or below this (as they last said).
    pub frontier: Hlc,
    /// Their clock minus ours (ms), and the round trip of that estimate.
    pub clock_offset_ms: Option<i64>,
    pub rtt_ms: Option<u64>,
    /// When we last refused their stamps as too far ahead of our clock
    /// (physical ms; 0: never), and by how much.
    pub refused_at_ms: u64,
    pub refused_ahead_ms: u64,
}

/// Whether a region is reachable, and since when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegionStatus {
    pub region: String,
    pub reachable: bool,
    /// Physical time (ms) of the last change of `reachable`.
    pub since_ms: u64,
}

/// A replica's status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub node: NodeId,
    pub region: String,
    pub index: u64,
    pub root: Hash,
    pub keys: usize,
    pub tombstones: usize,
    pub rebuilding: bool,
    /// The peer a rebuild is taking its full transfer from.
    pub rebuild_from: Option<NodeId>,
    /// A standby refuses client writes until promoted.
    pub standby: bool,
    pub peers: Vec<PeerStatus>,
    pub reachable_regions: Vec<String>,
    /// Every known region, with since when it is (un)reachable.
    pub regions: Vec<RegionStatus>,
    pub total_regions: usize,
    pub quorum: bool,
    pub conflicts: u64,
    pub gc_floor: Hlc,
    /// This replica holds every write stamped at or below this.
    pub frontier: Hlc,
    /// Records quarantined now (they failed their check), and the first
    /// `STATUS_QUARANTINE_MAX` of them.
    pub quarantined: usize,
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
}

/// Quarantined records a status lists by name (all are counted).
pub const STATUS_QUARANTINE_MAX: usize = 100;

impl Replica {
    pub fn status(&mut self) -> Status {
        let (up, all) = self.region_counts();
        let mut reachable: Vec<String> = vec![self.cfg.region.clone()];
        for p in self.peers.values().filter(|p| p.link.ready()) {
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
            peers: self
                .peers
                .iter()
                .map(|(id, p)| PeerStatus {
                    node: *id,
                    name: p.name.clone(),
                    region: p.region.clone(),
                    api: p.api.clone(),
                    connected: p.link.ready(),
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
