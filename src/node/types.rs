//! The answers of the embedded API: entries, changes, status, events,
//! snapshots, digests, and the commit-latency histogram.

use bytes::Bytes;

use crate::backup;
use crate::core::codec::ClusterId;
use crate::core::hlc::Hlc;
use crate::core::types::{Entry, Hash, Key, NodeId, Stamp};
use crate::sync::membership::MemberView;
use crate::sync::{Event, Metrics, Status, WriteAck};

/// How a client write is made.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriteOptions {
    /// Consul's flags (puts only).
    pub flags: u64,
    /// Check-and-set: only if the key's modify index is this (0: absent).
    pub cas: Option<u64>,
    /// When to acknowledge; `None`: the node's `write_ack`.
    pub ack: Option<WriteAck>,
}

/// A live key as the API returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvEntry {
    pub key: String,
    pub value: Bytes,
    pub flags: u64,
    pub create_index: u64,
    pub modify_index: u64,
    pub stamp: Stamp,
}

/// One change seen by a watch: `value` is `None` for a delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub index: u64,
    pub key: String,
    pub value: Option<Bytes>,
    pub flags: u64,
    pub stamp: Stamp,
}

/// A node's status: the replica's, the transport's counters, recent events.
#[derive(Debug, Clone)]
pub struct NodeStatus {
    pub replica: Status,
    pub metrics: Metrics,
    pub frames_in: u64,
    pub frames_out: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub frames_dropped: u64,
    pub malformed_frames: u64,
    pub peers_refused: u64,
    pub commits: u64,
    pub recent_events: Vec<Event>,
    /// The SWIM membership view: every known member and its state.
    pub members: Vec<MemberView>,
    /// Physical time of this status, ms since the epoch.
    pub now_ms: u64,
    /// Physical time the node started, ms since the epoch.
    pub started_ms: u64,
    /// How long group commits took on the store thread.
    pub commit_latency: Histogram,
    /// Set while the store refuses commits.
    pub store_trouble: Option<StoreTrouble>,
}

/// Why the store refuses commits, since when (see [`commit`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreTrouble {
    /// Physical time of the first refused commit, ms since the epoch.
    pub since_ms: u64,
    pub error: String,
    /// The disk (or a quota) is full.
    pub disk_full: bool,
}

/// Most events buffered for each subscriber; a slower one misses the oldest.
pub const EVENTS_BUFFERED_MAX: usize = 1_024;

/// Something an operator should hear about, with when it happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeEvent {
    /// Physical time, ms since the epoch.
    pub at_ms: u64,
    pub kind: EventKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventKind {
    /// Decided by the replica: connectivity, partitions, repairs, refusals.
    Replica(Event),
    /// The node's health changed (published by whoever judges it: the daemon).
    Health { healthy: bool, reasons: Vec<String> },
}

/// A consistent copy of a node's entries (tombstones included) changed
/// after `since` (all of them for 0), taken at one instant of its state.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub node: NodeId,
    pub name: String,
    pub region: String,
    pub since: u64,
    /// The node's index and Merkle root at that instant.
    pub index: u64,
    pub root: Hash,
    pub gc_floor: Hlc,
    pub taken_ms: u64,
    pub entries: Vec<(Key, Entry)>,
    /// For an incremental snapshot: keys removed outright (collected
    /// tombstones) since `since`, which the entries cannot show.
    pub removed: Vec<Key>,
}

impl Snapshot {
    /// The header of a backup of this snapshot, taken from a node of
    /// `cluster` (the backup format knows nothing of nodes).
    pub fn backup_header(&self, cluster: ClusterId) -> backup::Header {
        backup::Header {
            version: backup::FORMAT_VERSION,
            cluster,
            node: self.node,
            name: self.name.clone(),
            region: self.region.clone(),
            since: self.since,
            index: self.index,
            root: self.root,
            gc_floor: self.gc_floor,
            created_ms: self.taken_ms,
            removed: self.removed.clone(),
        }
    }
}

/// A node's root, and what a deep check found on the way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DigestReport {
    pub root: Hash,
    /// Every record's check and the digest were recomputed from the values.
    pub deep: bool,
    /// Records the deep check found damaged (now quarantined).
    pub damaged_found: usize,
    /// The digest in memory differed from one rebuilt from the records.
    pub digest_repaired: bool,
    /// Records quarantined now (not in the root until repaired).
    pub quarantined: usize,
}

/// One key's state as the digest sees it (tombstones included): what
/// `meridian verify --diff` compares between nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyHash {
    pub key: String,
    pub stamp: Stamp,
    pub deleted: bool,
    /// The first 16 bytes of the entry's hash.
    pub hash: [u8; 16],
}

/// Upper bounds (µs) of the commit latency buckets; a last bucket counts the rest.
pub const COMMIT_BUCKETS_US: [u64; 12] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 1_000_000,
];

/// A fixed-bucket latency histogram (Prometheus style, not cumulative here).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Histogram {
    /// Counts per bucket of [`COMMIT_BUCKETS_US`], then the overflow bucket.
    pub counts: [u64; COMMIT_BUCKETS_US.len() + 1],
    pub sum_us: u64,
    pub count: u64,
}

impl Histogram {
    pub fn record(&mut self, us: u64) {
        let i = COMMIT_BUCKETS_US.partition_point(|b| *b < us);
        self.counts[i] += 1;
        self.sum_us = self.sum_us.saturating_add(us);
        self.count += 1;
    }
}
