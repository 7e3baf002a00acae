//! The answers of the embedded API: entries, changes, status, events,
//! snapshots, digests, and the commit-latency histogram.

use bytes::Bytes;

use crate::backup;
use crate::core::codec::ClusterId;
use crate::core::hlc::Hlc;
use crate::core::types::{Entry, Hash, Key, NodeId, Stamp};
use crate::sync::membership::MemberView;
use crate::sync::{Event, ForgottenMember, KnownPeer, Metrics, Status, WriteAck};

/// Who this node knows (see [`Node::members`](super::Node::members)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MembersReport {
    /// This node is an edge.
    pub edge: bool,
    /// The peers the replica knows: members, and the edges this server serves.
    pub known: Vec<KnownPeer>,
    /// The SWIM view: members and their liveness (empty on an edge).
    pub swim: Vec<MemberView>,
    /// The members the cluster forgot.
    pub forgotten: Vec<(NodeId, ForgottenMember)>,
}

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
    /// The key.
    pub key: String,
    /// Its current value.
    pub value: Bytes,
    /// The client flags written with the value.
    pub flags: u64,
    /// The local index at which the key was created (or re-created after a delete).
    pub create_index: u64,
    /// The local index of the key's latest change.
    pub modify_index: u64,
    /// The stamp of the write that set the value.
    pub stamp: Stamp,
}

/// A document as [`Node::get_doc`](super::Node::get_doc) reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct DocRead {
    /// The document's JSON (as of the heads asked for, if any).
    pub json: serde_json::Value,
    /// The document's current heads (hex change hashes, sorted).
    pub heads: Vec<String>,
    /// The client flags of the latest write.
    pub flags: u64,
    /// The local index at which the key was created.
    pub create_index: u64,
    /// The local index of the key's latest change.
    pub modify_index: u64,
    /// The stamp of the latest write (a merge's, after a merge).
    pub stamp: Stamp,
}

/// A read's answer with the index that covers it: the greatest modify
/// index of what the read looked at, deleted keys' tombstones included
/// (0: it looked at nothing this node holds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Indexed<T> {
    /// What was read.
    pub value: T,
    /// The greatest modify index among the keys read, tombstones included.
    pub index: u64,
}

/// One change seen by a watch: `value` is `None` for a delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The local index of the change.
    pub index: u64,
    /// The key changed.
    pub key: String,
    /// The new value; `None` for a delete.
    pub value: Option<Bytes>,
    /// The client flags written with it (0 for a delete).
    pub flags: u64,
    /// The stamp of the write.
    pub stamp: Stamp,
}

/// A node's status: the replica's, the transport's counters, recent events.
#[derive(Debug, Clone)]
pub struct NodeStatus {
    /// The replica's status.
    pub replica: Status,
    /// The replica's counters.
    pub metrics: Metrics,
    /// Codec frames received from peers.
    pub frames_in: u64,
    /// Codec frames written to peers.
    pub frames_out: u64,
    /// Bytes of the frames received, headers included.
    pub bytes_in: u64,
    /// Bytes of the frames written, headers included.
    pub bytes_out: u64,
    /// Frames dropped because a peer's send queue was full.
    pub frames_dropped: u64,
    /// Malformed frames or preambles received (each closed its connection).
    pub malformed_frames: u64,
    /// Connections refused by the transport: failed handshakes and peers of another cluster.
    pub peers_refused: u64,
    /// Group commits the store completed since start.
    pub commits: u64,
    /// The replica's latest events, oldest first (at most [`super::EVENTS_KEPT_MAX`]).
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

/// Why the store refuses commits, since when (see `node/commit.rs`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreTrouble {
    /// Physical time of the first refused commit, ms since the epoch.
    pub since_ms: u64,
    /// The store's error on the last refused commit.
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
    /// What happened.
    pub kind: EventKind,
}

/// What a [`NodeEvent`] reports, and who decided it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventKind {
    /// Decided by the replica: connectivity, partitions, repairs, refusals.
    Replica(Event),
    /// The node's health changed (published by whoever judges it: the daemon).
    Health {
        /// The node is healthy now.
        healthy: bool,
        /// Why it is not (empty when healthy).
        reasons: Vec<String>,
    },
}

/// A consistent copy of a node's entries (tombstones included) changed
/// after `since` (all of them for 0), taken at one instant of its state.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// The node it was taken from.
    pub node: NodeId,
    /// That node's name.
    pub name: String,
    /// That node's region.
    pub region: String,
    /// The index after which changes are included (0: a full snapshot).
    pub since: u64,
    /// The node's index and Merkle root at that instant.
    pub index: u64,
    /// The Merkle root of the live entries at that instant.
    pub root: Hash,
    /// The node's collection floor at that instant.
    pub gc_floor: Hlc,
    /// Physical time it was taken, ms since the epoch.
    pub taken_ms: u64,
    /// The entries changed after `since`, tombstones included, in key order.
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
    /// The Merkle root of the live entries, or the digest of the prefix asked for.
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
    /// The key.
    pub key: String,
    /// The stamp of its current entry.
    pub stamp: Stamp,
    /// The current entry is a tombstone.
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
    /// Sum of every recorded latency, in µs.
    pub sum_us: u64,
    /// Latencies recorded.
    pub count: u64,
}

impl Histogram {
    /// Records one latency of `us` microseconds.
    pub fn record(&mut self, us: u64) {
        let i = COMMIT_BUCKETS_US.partition_point(|b| *b < us);
        self.counts[i] += 1;
        self.sum_us = self.sum_us.saturating_add(us);
        self.count += 1;
    }
}
