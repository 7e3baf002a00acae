//! `api::wire`: the HTTP contract. Every JSON document the API accepts or
//! returns, as a typed struct the server writes and the client and the CLI
//! read, so both ends are checked by the compiler against one definition.
//!
//! Names follow the documents: Consul's own (`/v1/kv`) use Consul's
//! `PascalCase` fields; Meridian's use `snake_case`. Values travel as
//! base64 (Consul's convention); stamps as `<hlc as 16 hex digits>-<node id>`.
//! Numbers that count things are `u64` whatever the node counts them in.
//!
//! Pure data: no I/O, no node types; the server converts its state into
//! these (in the route files), the client reads them back ([`crate::client`]).

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use strum::{EnumDiscriminants, IntoStaticStr, VariantArray, VariantNames};

use super::health::Thresholds;

mod acl;
mod consul;
mod members;

/// One record of the audit log (`GET /v1/audit`): an accepted change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// Its number in this node's log, from 1, in the order written.
    pub seq: u64,
    /// When the change was accepted, ms since the epoch.
    pub at_ms: u64,
    /// The node that accepted it: id, name, region.
    pub node: String,
    /// The node's name.
    pub name: String,
    /// The node's region.
    pub region: String,
    /// `put`, `delete`, `delete-tree`, `txn`, `restore`, `promote`,
    /// `acl-bootstrap`, `acl-policy-create|update|delete`,
    /// `acl-token-create|update|delete`.
    pub op: String,
    /// The keys (or prefix, or ACL object IDs) it changed, the first 64.
    pub keys: Vec<String>,
    /// How many keys it changed in all.
    pub keys_total: u64,
    /// The accessor of the token that asked (never its secret); empty with
    /// ACLs off.
    pub accessor: String,
    /// The client's address (`peer:<name>` for a request forwarded by
    /// another region's node).
    pub remote: String,
}
pub use acl::*;
pub use consul::*;
pub use members::*;

/// Any failed request: `{"error": message}` with a 4xx or 5xx status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What was wrong, for a person to read.
    pub error: String,
}

// -------------------------------------------------------------------- KV

/// One key of `GET /v1/kv/<key>` (and of `?recurse`), as Consul sends it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct KvEntry {
    /// Always 0: Meridian has no sessions.
    pub lock_index: u64,
    /// The key's full name.
    pub key: String,
    /// The client's opaque number stored with the value (`?flags=` of the PUT).
    pub flags: u64,
    /// `null` for an empty value, as in Consul.
    #[serde(with = "b64")]
    pub value: Bytes,
    /// The index at which this node created the key (or re-created it after a delete).
    pub create_index: u64,
    /// The index of the key's latest change on this node.
    pub modify_index: u64,
}

/// What a change did to its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    /// The key was written.
    Put,
    /// The key was deleted (a tombstone was written).
    Delete,
}

impl Op {
    /// The name of the operation (also the server-sent event's name).
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Put => "put",
            Op::Delete => "delete",
        }
    }
}

/// One change of `GET /v1/watch/<prefix>` (the data of a server-sent event
/// whose id is `index` and whose name is `op`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct KvChange {
    /// This node's index of the change (also the event's id, to resume from).
    pub index: u64,
    /// The key that changed.
    pub key: String,
    /// Whether the key was written or deleted.
    pub op: Op,
    /// The flags written with the change.
    pub flags: u64,
    /// `null` for a delete and for an empty value.
    #[serde(with = "b64")]
    pub value: Bytes,
    /// The change's stamp, `<hlc as 16 hex digits>-<node id>`.
    pub stamp: String,
}

/// One kept version of `GET /v1/history/<key>`, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Version {
    /// The index at which this node applied it.
    pub index: u64,
    /// Its stamp, `<hlc as 16 hex digits>-<node id>`.
    pub stamp: String,
    /// Its writer's physical time, ms since the epoch.
    pub time: u64,
    /// The writer's node id, and its name and region when known (else empty).
    pub node: String,
    /// The writer's name, empty when unknown.
    pub node_name: String,
    /// The writer's region, empty when unknown.
    pub region: String,
    /// This version is a delete (a tombstone).
    pub deleted: bool,
    /// The flags written with it.
    pub flags: u64,
    /// `null` for a delete and for an empty value.
    #[serde(with = "b64")]
    pub value: Bytes,
}

// --------------------------------------------------------------- status

/// Whether a node serves from complete state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeState {
    /// Rebuilding its state from a peer.
    Syncing,
    /// Serving from complete state.
    Active,
}

/// Whether a node takes client writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Takes client writes.
    Active,
    /// Replicates, refuses client writes until promoted.
    Standby,
    /// An edge: attached to one server, its writes forwarded to it.
    Edge,
}

/// `GET /v1/status` (also what `meridian status --json` prints).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// This node's id (16 hex digits).
    pub node: String,
    /// This node's name.
    pub name: String,
    /// This node's region.
    pub region: String,
    /// This node's API address as it advertises it.
    pub api: String,
    /// Whether it serves from complete state or is still rebuilding.
    pub state: NodeState,
    /// Whether it takes client writes or is a standby.
    pub role: Role,
    /// With `[failover]`: why this standby stays one, or whom it took over
    /// from (absent without failover, and on active nodes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failover: Option<String>,
    /// A rebuild's progress, while it lasts and its source is known.
    pub rebuild: Option<Rebuild>,
    /// This node's change index: one sequence for all keys, local to the node.
    pub index: u64,
    /// Hex root over the live entries.
    pub root: String,
    /// Live keys held (tombstones not counted).
    pub keys: u64,
    /// Deleted keys whose tombstones are still held.
    pub tombstones: u64,
    /// A majority of the known regions, this node's own included, is reachable.
    pub quorum: bool,
    /// The regions reachable now, this node's own included, sorted.
    pub reachable_regions: Vec<String>,
    /// How many regions are known, this node's own included.
    pub total_regions: u64,
    /// Every known region, with whether it is reachable and since when.
    pub regions: Vec<Region>,
    /// The SWIM membership view.
    pub members: Vec<Member>,
    /// Every replication peer, connected or not.
    pub peers: Vec<Peer>,
    /// Conflicts resolved here since the store was created.
    pub conflicts: u64,
    /// What the peers' clocks say of this node's.
    pub clock: Clock,
    /// Records quarantined now (missing from the root until repaired).
    pub quarantined: u64,
    /// A recovery from lost or damaged records, while it lasts.
    pub recovery: Option<Recovery>,
    /// Client writes that asked for a quorum and wait for a majority of regions to hold them.
    pub quorum_writes_waiting: u64,
    /// On a server: edges attached to it now.
    #[serde(default)]
    pub edges: u64,
    /// On a server: the most changes an attached edge has yet to acknowledge.
    #[serde(default)]
    pub edges_lag_index_max: u64,
    /// On an edge: writes taken while no server was connected, waiting to
    /// be handed over to a server (`edge_writes = "local"`).
    #[serde(default)]
    pub local_writes_waiting: u64,
    /// Set while the store refuses commits.
    pub store: Option<StoreTrouble>,
    /// No health check fails (as `GET /v1/health` judges it).
    pub healthy: bool,
    /// Since this node started, in ms.
    pub uptime_ms: u64,
}

/// A rebuild's progress: how much of its source's feed it holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rebuild {
    /// The source's name.
    pub from: String,
    /// The source's feed is applied here up to this index.
    pub applied: u64,
    /// The source's index when it connected, which `applied` counts up towards.
    pub of: u64,
    /// Live keys held here so far.
    pub keys: u64,
}

/// A region as this node sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Region {
    /// The region's name.
    pub region: String,
    /// A peer in it was heard from within the contact timeout (always true
    /// for this node's own region).
    pub reachable: bool,
    /// Since the last change of `reachable`.
    pub for_ms: u64,
}

/// A member of the SWIM view.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// Its node id (16 hex digits).
    pub node: String,
    /// Its name.
    pub name: String,
    /// Its region.
    pub region: String,
    /// Its cluster (QUIC) address.
    pub addr: String,
    /// `alive`, `suspect` or `down`.
    pub state: String,
}

/// A replication peer. The `*_ago` and `lag_ms` fields are `null` for "never".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Peer {
    /// Its node id (16 hex digits).
    pub node: String,
    /// Its name.
    pub name: String,
    /// Its region.
    pub region: String,
    /// Its API address, empty until it has connected since this node started.
    pub api: String,
    /// Its hello was accepted on a connection that is still up.
    pub connected: bool,
    /// This node told it that it was away longer than the tombstone
    /// horizon; its data is refused until it has resynced.
    #[serde(default)]
    pub stale: bool,
    /// Their index at hello minus what this node applied of their feed.
    pub lag_index: u64,
    /// Since this node last held every write the peer had.
    pub lag_ms: Option<u64>,
    /// Since a message from it last arrived, in ms.
    pub last_heard_ms_ago: Option<u64>,
    /// Their feed up to here is applied here.
    pub applied: u64,
    /// This node's feed up to here is acknowledged by them.
    pub acked: u64,
    /// Their clock minus this node's, and the round trip of that estimate.
    pub clock_offset_ms: Option<i64>,
    /// The round trip of that estimate, in ms.
    pub rtt_ms: Option<u64>,
    /// Since this node last refused their stamps as too far ahead.
    pub refused_ms_ago: Option<u64>,
}

/// What the peers' clocks say of this node's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Clock {
    /// The other members' clocks minus this one's (median).
    pub offset_ms: Option<i64>,
    /// Peers with a fresh clock estimate.
    pub measured: u64,
    /// Of those, how many disagree with this node's clock beyond the bound.
    pub disagreeing: u64,
    /// Members of the cluster, this node included.
    pub members: u64,
    /// A majority disagrees: client writes are refused.
    pub off: bool,
    /// How far this node's clock runs ahead of its physical clock beyond the bound.
    pub ahead_of_time_ms: u64,
}

/// A recovery from lost or damaged records, while it lasts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recovery {
    /// Why it started: `damage` (records were quarantined) or `store_loss`
    /// (the store could not be read).
    pub cause: String,
    /// Known peers whose state has all been taken, of `peers`.
    pub peers_done: u64,
    /// Known peers the recovery takes state from.
    pub peers: u64,
    /// Since it (last) started, in ms.
    pub for_ms: u64,
}

/// Why the store refuses commits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreTrouble {
    /// Since the first refused commit, in ms.
    pub refusing_commits_ms: u64,
    /// The disk (or a quota) is full.
    pub disk_full: bool,
    /// The store's latest error.
    pub error: String,
}

// --------------------------------------------------- digest and hashes

/// `GET /v1/digest?prefix=&deep`: this node's root over the live entries
/// under a prefix.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Digest {
    /// This node's id (16 hex digits).
    pub node: String,
    /// This node's name.
    pub name: String,
    /// This node's region.
    pub region: String,
    /// The prefix the root covers (empty for every key).
    pub prefix: String,
    /// Hex root over the live entries under `prefix`.
    pub root: String,
    /// This node's change index when it answered.
    pub index: u64,
    /// Every record was checked against its value first.
    pub deep: bool,
    /// Records the deep check found damaged (and quarantined).
    pub damaged_found: u64,
    /// The deep check found the digest wrong and rebuilt it.
    pub digest_repaired: bool,
    /// Records quarantined now (missing from the root until repaired).
    pub quarantined: u64,
}

/// One key of `GET /v1/hashes?prefix=` (tombstones included).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyHash {
    /// The key's full name.
    pub key: String,
    /// Its entry is a tombstone.
    pub deleted: bool,
    /// Its entry's stamp, `<hlc as 16 hex digits>-<node id>`.
    pub stamp: String,
    /// The first 16 bytes of its entry's hash, in hex.
    pub hash: String,
}

/// `GET /v1/digest/tree?level=&parents=`: one step of the Merkle descent
/// that `meridian verify --diff` runs over the mesh.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DigestChildren {
    /// The level of the children (1..=5; 5 is the leaves).
    pub level: u8,
    /// The parents (at `level - 1`) whose children these are, as asked.
    pub parents: Vec<u32>,
    /// The children's fingerprints (6 bytes each, 12 hex digits), 16 per
    /// parent, parent by parent, concatenated.
    pub fingerprints: String,
}

/// `GET /v1/digest/leaves?leaves=`: every key in the given Merkle leaves
/// (tombstones included), leaf by leaf.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DigestLeaves {
    /// The leaves asked for.
    pub leaves: Vec<u32>,
    /// Their keys.
    pub keys: Vec<KeyHash>,
}

// --------------------------------------------------------------- health

/// `GET /v1/health` (200 when healthy, else 503 with the same document).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    /// No check fails (`reasons` is empty).
    pub healthy: bool,
    /// Every check that fails.
    pub reasons: Vec<Reason>,
    /// The thresholds the checks were judged against.
    pub thresholds: Thresholds,
}

/// Which health check failed.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, IntoStaticStr, VariantArray,
)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum HealthCheck {
    /// The node is rebuilding its state from a peer.
    Rebuilding,
    /// The store could not be read: the node takes every peer's state and
    /// refuses writes until then.
    StoreLost,
    /// Records were found damaged: the node takes every peer's state before
    /// it claims its writes again.
    Recovering,
    /// The disk is full: writes are refused, reads served.
    DiskFull,
    /// The store refuses commits for another reason: writes are refused.
    StoreError,
    /// Records failed their integrity check and are quarantined until repaired.
    Quarantine,
    /// This node's clock disagrees beyond the bound with a majority of
    /// members, or with its only peer.
    ClockOffset,
    /// This node's clock reached stamps beyond its physical clock and the
    /// bound: client writes are refused.
    ClockAhead,
    /// A peer's clock disagrees beyond the bound with this node's and most members'.
    PeerClock,
    /// `partition_policy = quorum` and no majority of regions is reachable:
    /// client writes are refused.
    NoQuorum,
    /// A connected peer has not been fully synced for longer than `sync_lag_ms_max`.
    SyncLag,
    /// A region has been unreachable for longer than `partition_ms_max`.
    Partition,
    /// A peer has been unreachable for longer than `peer_down_ms_max`.
    PeerDown,
    /// A backup schedule's newest backup is older than twice its interval
    /// (`[[backup.schedule]]`): backups are failing or not taken.
    BackupStale,
    /// The last scheduled restore drill failed (`[backup] drill_interval_ms`).
    DrillFailed,
}

impl HealthCheck {
    /// The check's name, as `check` carries it.
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// One reason a node is unhealthy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reason {
    /// Which check failed.
    pub check: HealthCheck,
    /// The peer's name or the region concerned (empty for the node itself).
    pub subject: String,
    /// How long it has lasted, compared with `threshold_ms`.
    pub for_ms: u64,
    /// The limit `for_ms` is judged against; 0 when the check fails whatever the value.
    pub threshold_ms: u64,
    /// What is wrong, in a sentence for operators.
    pub message: String,
}

// ------------------------------------------------------------ conflicts

/// `GET /v1/conflicts`: the kept part of this node's conflict log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Conflicts {
    /// Conflicts resolved here, kept or not.
    pub total: u64,
    /// The conflicts the bounded log still holds (it drops the oldest first).
    pub kept: Vec<Conflict>,
}

/// A write that replaced a concurrent write of another node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Conflict {
    /// The key written concurrently.
    pub key: String,
    /// This node's index of the change that resolved it.
    pub index: u64,
    /// The stamp of the write kept.
    pub winner: String,
    /// The stamp of the write replaced.
    pub loser: String,
    /// The replaced write was a delete.
    pub loser_deleted: bool,
    /// `null` when the loser was a delete or its value too large to keep.
    #[serde(with = "b64_opt")]
    pub loser_value: Option<Bytes>,
    /// For a document: the field both writes set (a JSON pointer), whose
    /// losing JSON `loser_value` holds; absent when whole values met.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

// ------------------------------------------------- documents

/// `GET /v1/doc/<key>?heads`: the document with its heads and indexes
/// (without `?heads` the answer is the document's JSON alone).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DocAnswer {
    /// The document (as of `?at=`, if given).
    pub doc: serde_json::Value,
    /// Its current heads: hex change hashes, for `?at=`.
    pub heads: Vec<String>,
    /// The client flags of the latest write.
    pub flags: u64,
    /// This node's index at which the key was created.
    pub create_index: u64,
    /// This node's index of the key's latest change.
    pub modify_index: u64,
    /// The stamp of the latest write.
    pub stamp: String,
}

/// `PUT` or `PATCH /v1/doc/<key>`: the write made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DocWritten {
    /// This node's index of the write (the key's new modify index).
    pub modify_index: u64,
    /// The write's stamp.
    pub stamp: String,
}

// ------------------------------------------------- promote and restore

/// `POST /v1/promote`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Promoted {
    /// Always `active`.
    pub role: Role,
    /// The role before the promotion.
    pub was: Role,
}

/// `POST /v1/restore`: what merging the backup did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Restored {
    /// Entries in the backup, tombstones included.
    pub entries: u64,
    /// Entries that changed this node's state.
    pub applied: u64,
    /// Already held, or held newer.
    pub unchanged: u64,
    /// Entries of keys absent here stamped at or below the collection floor
    /// (their deletes may be collected).
    pub refused_below_floor: u64,
    /// Entries stamped too far ahead of this node's clock.
    pub refused_clock: u64,
    /// Hex root recorded in the backup's header.
    pub backup_root: String,
    /// This node's root after the merge.
    pub root: String,
    /// The index of the node the backup was taken from, when it was taken.
    pub backup_index: u64,
    /// The name of the node the backup was taken from.
    pub backup_node: String,
}

// ---------------------------------------------------------------- events

/// One operators' event of `GET /v1/events` (the data of a server-sent
/// event named by its `type`) and of webhooks: who reported it and when,
/// and what happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventDoc {
    /// What happened (its fields are flattened into this document).
    #[serde(flatten)]
    pub event: Event,
    /// When it was reported, ms since the epoch.
    pub at_ms: u64,
    /// The reporting node's id, name and region.
    pub node: String,
    /// The reporting node's name.
    pub name: String,
    /// The reporting node's region.
    pub region: String,
}

/// What happened, named by `type`. [`EventType`] names the types alone
/// (webhook filters take them); both come from this one definition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, EnumDiscriminants)]
#[serde(tag = "type", rename_all = "snake_case")]
#[strum_discriminants(
    name(EventType),
    derive(Hash, Serialize, Deserialize, VariantNames, IntoStaticStr),
    serde(rename_all = "snake_case"),
    strum(serialize_all = "snake_case")
)]
pub enum Event {
    /// A peer's hello was accepted.
    PeerUp {
        /// The peer's node id.
        peer: String,
        /// The peer's name.
        peer_name: String,
        /// The peer's region.
        peer_region: String,
    },
    /// The connection to a peer was lost.
    PeerDown {
        /// The peer's node id.
        peer: String,
        /// The peer's name.
        peer_name: String,
        /// The peer's region.
        peer_region: String,
    },
    /// No peer of `cut_region` is reachable any more.
    PartitionDetected {
        /// The region no longer reachable.
        cut_region: String,
    },
    /// A peer of `cut_region` is reachable again.
    PartitionEnded {
        /// The region reachable again.
        cut_region: String,
        /// How long it was unreachable, in ms.
        partition_ms: u64,
    },
    /// After the end of a partition, equal state with a peer of `cut_region`.
    PartitionHealed {
        /// The region that was cut off.
        cut_region: String,
        /// How long it was unreachable, in ms.
        partition_ms: u64,
        /// Entries that crossed (applied here or sent from here) since the partition ended.
        keys_exchanged: u64,
        /// From the end of the partition to equal state, in ms.
        converge_ms: u64,
    },
    /// This standby took over (`[failover]`) from `failed` (empty: it
    /// followed its own region's promotion).
    FailedOver {
        /// The regions judged failed.
        failed: Vec<String>,
        /// How long they had to be out of reach, in ms.
        after_ms: u64,
    },
    /// Anti-entropy found this node's root differs from a peer's.
    DivergenceFound {
        /// The peer's node id.
        peer: String,
    },
    /// Anti-entropy applied entries the push had missed.
    DivergenceRepaired {
        /// The peer's node id.
        peer: String,
        /// Entries applied from it.
        keys: u64,
    },
    /// A peer's stamp ran ahead of this node's clock beyond the bound.
    ClockSkew {
        /// The peer's node id.
        peer: String,
        /// How far its furthest stamp ran ahead of this node's clock, in ms.
        ahead_ms: u64,
    },
    /// A peer was refused.
    PeerRefused {
        /// The peer's node id.
        peer: String,
        /// Why it was refused.
        reason: String,
    },
    /// This node left the cluster (`meridian leave`).
    Left {
        /// When it left (its clock, ms since the epoch).
        left_ms: u64,
    },
    /// A member was forgotten: it left, or an operator forgot it. It no
    /// longer counts for quorum, reachability or collection.
    MemberForgotten {
        /// The member's node id.
        peer: String,
        /// Its name.
        peer_name: String,
        /// Its region.
        peer_region: String,
        /// It left by itself (rather than being forgotten).
        left: bool,
    },
    /// A forgotten member came back, resynced, and is a member again.
    MemberBack {
        /// The member's node id.
        peer: String,
        /// Its name.
        peer_name: String,
    },
    /// On an edge: a write taken while no server was connected was refused
    /// by the server it was handed over to, and dropped.
    LocalWriteDropped {
        /// The key.
        key: String,
        /// The server's refusal.
        reason: String,
    },
    /// A peer was told to resync (it missed a collected tombstone).
    PeerStale {
        /// The stale peer's node id.
        peer: String,
    },
    /// This node was stale: it dropped `dropped` entries and rebuilds from `from`.
    Resynced {
        /// The node id of the peer it rebuilds from.
        from: String,
        /// Entries dropped (every one older than the horizon).
        dropped: u64,
    },
    /// Two different entries carried the same stamp.
    StampCollision {
        /// The key whose entries collided.
        key: String,
    },
    /// A record failed its check and is quarantined.
    RecordQuarantined {
        /// The record's key.
        key: String,
        /// What its check found wrong.
        reason: String,
    },
    /// A quarantine ended.
    RecordRepaired {
        /// The record's key.
        key: String,
        /// How it ended (its fields are flattened into the event).
        #[serde(flatten)]
        how: Repair,
    },
    /// The store could not be read at all.
    StoreLost,
    /// This node started empty under its certificate's id, and a peer knew
    /// that id from before: its store was lost (it recovers).
    LostStoreFound {
        /// The peer that knew the id.
        peer: String,
    },
    /// Every peer said hello without knowing this node's id from before:
    /// the id its certificate gave it is its own.
    IdConfirmed,
    /// Records were lost: this node takes every peer's state.
    RecoveryStarted {
        /// Why: `damage` (records were quarantined) or `store_loss` (the store
        /// could not be read).
        cause: String,
    },
    /// Every known peer's state was taken.
    Recovered {
        /// Why it started: `damage` or `store_loss`.
        cause: String,
        /// Known peers whose state was taken.
        peers: u64,
    },
    /// The judgement of this node's clock changed.
    ClockOffset {
        /// The median offset of the disagreeing members, or of all measured
        /// ones when none disagrees (theirs minus ours, in ms; 0 when none is
        /// measured).
        offset_ms: i64,
        /// Members whose clocks are more than the bound off from this node's.
        disagreeing: u64,
        /// Members of the cluster, this node included.
        members: u64,
        /// The disagreeing members are a majority: client writes are refused.
        off: bool,
    },
    /// This node's health changed.
    HealthChanged {
        /// Whether the node is healthy now.
        healthy: bool,
        /// The message of each failing check (empty when healthy).
        reasons: Vec<String>,
    },
}

impl EventType {
    /// Every type's name, in declaration order.
    pub const NAMES: &'static [&'static str] = <EventType as VariantNames>::VARIANTS;

    /// The type's name, as `type` carries it.
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// How a quarantine ended, named by `how`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "how", rename_all = "snake_case")]
pub enum Repair {
    /// A peer's entry (`stamp`) was merged.
    Repaired {
        /// The node id of the peer whose entry was merged.
        from: String,
        /// The merged entry's stamp.
        stamp: String,
    },
    /// A local write replaced it.
    Overwritten,
    /// Its copy on disk was intact.
    ReadBack {
        /// The stamp of the intact copy read back.
        stamp: String,
    },
    /// None of `peers` peers held a live value of the key.
    NotHeldByPeers {
        /// How many known peers sent their whole state (or were found equal).
        peers: u64,
    },
}

/// The `missed` server-sent event: a stream fell behind and lost events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Missed {
    /// Events this stream lost.
    pub missed: u64,
}

// ------------------------------------------------------------------ codecs

/// Bytes as base64, with `null` for empty (Consul's convention).
pub mod b64 {
    use base64::Engine;
    use bytes::Bytes;
    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes `v` as base64, or `null` when it is empty.
    pub fn serialize<S: Serializer>(v: &Bytes, s: S) -> Result<S::Ok, S::Error> {
        if v.is_empty() {
            s.serialize_none()
        } else {
            s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(v))
        }
    }

    /// Reads base64, and `null` as empty bytes; text that is not base64 is an error.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Bytes, D::Error> {
        let text = Option::<String>::deserialize(d)?;
        match text {
            None => Ok(Bytes::new()),
            Some(t) => base64::engine::general_purpose::STANDARD
                .decode(t)
                .map(Bytes::from)
                .map_err(serde::de::Error::custom),
        }
    }
}

/// Optional bytes as base64, with `null` for none.
pub mod b64_opt {
    use base64::Engine;
    use bytes::Bytes;
    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes `v` as base64, or `null` for `None`.
    pub fn serialize<S: Serializer>(v: &Option<Bytes>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            None => s.serialize_none(),
            Some(v) => s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(v)),
        }
    }

    /// Reads base64 as `Some` and `null` as `None`; text that is not base64 is an error.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Bytes>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|t| {
                base64::engine::general_purpose::STANDARD
                    .decode(t)
                    .map(Bytes::from)
                    .map_err(serde::de::Error::custom)
            })
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kv_entries_read_as_consul_writes_them() {
        let e = KvEntry {
            lock_index: 0,
            key: "app/x".into(),
            flags: 7,
            value: Bytes::from_static(b"hi"),
            create_index: 3,
            modify_index: 5,
        };
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"LockIndex": 0, "Key": "app/x", "Flags": 7, "Value": "aGk=",
                "CreateIndex": 3, "ModifyIndex": 5})
        );
        assert_eq!(serde_json::from_value::<KvEntry>(v).unwrap(), e);
        let empty = KvEntry {
            value: Bytes::new(),
            ..e
        };
        let v = serde_json::to_value(&empty).unwrap();
        assert_eq!(v["Value"], serde_json::Value::Null);
        assert_eq!(serde_json::from_value::<KvEntry>(v).unwrap(), empty);
    }

    #[test]
    fn a_value_that_is_not_base64_is_an_error_not_an_empty_value() {
        let v = serde_json::json!({"LockIndex": 0, "Key": "k", "Flags": 0, "Value": "!!",
            "CreateIndex": 1, "ModifyIndex": 1});
        assert!(serde_json::from_value::<KvEntry>(v).is_err());
    }

    #[test]
    fn health_checks_are_named_alike_in_json_and_in_text() {
        for c in HealthCheck::VARIANTS {
            assert_eq!(serde_json::to_value(c).unwrap(), c.as_str());
        }
    }

    #[test]
    fn an_empty_kept_loser_differs_from_none() {
        let c = Conflict {
            key: "k".into(),
            index: 1,
            winner: "w".into(),
            loser: "l".into(),
            loser_deleted: false,
            loser_value: Some(Bytes::new()),
            path: None,
        };
        let v = serde_json::to_value(&c).unwrap();
        assert_eq!(v["loser_value"], "");
        assert_eq!(serde_json::from_value::<Conflict>(v).unwrap(), c);
    }
}
