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

/// Any failed request: `{"error": message}` with a 4xx or 5xx status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
}

// -------------------------------------------------------------------- KV

/// One key of `GET /v1/kv/<key>` (and of `?recurse`), as Consul sends it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct KvEntry {
    /// Always 0: Meridian has no sessions.
    pub lock_index: u64,
    pub key: String,
    pub flags: u64,
    /// `null` for an empty value, as in Consul.
    #[serde(with = "b64")]
    pub value: Bytes,
    pub create_index: u64,
    pub modify_index: u64,
}

/// What a change did to its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    Put,
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
    pub index: u64,
    pub key: String,
    pub op: Op,
    pub flags: u64,
    /// `null` for a delete and for an empty value.
    #[serde(with = "b64")]
    pub value: Bytes,
    pub stamp: String,
}

/// One kept version of `GET /v1/history/<key>`, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Version {
    /// The index at which this node applied it.
    pub index: u64,
    pub stamp: String,
    /// Its writer's physical time, ms since the epoch.
    pub time: u64,
    /// The writer's node id, and its name and region when known (else empty).
    pub node: String,
    pub node_name: String,
    pub region: String,
    pub deleted: bool,
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
    Active,
}

/// Whether a node takes client writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Active,
    /// Replicates, refuses client writes until promoted.
    Standby,
}

/// `GET /v1/status` (also what `meridian status --json` prints).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    pub node: String,
    pub name: String,
    pub region: String,
    /// This node's API address as it advertises it.
    pub api: String,
    pub state: NodeState,
    pub role: Role,
    /// A rebuild's progress, while it lasts and its source is known.
    pub rebuild: Option<Rebuild>,
    pub index: u64,
    /// Hex root over the live entries.
    pub root: String,
    pub keys: u64,
    pub tombstones: u64,
    pub quorum: bool,
    pub reachable_regions: Vec<String>,
    pub total_regions: u64,
    pub regions: Vec<Region>,
    /// The SWIM membership view.
    pub members: Vec<Member>,
    pub peers: Vec<Peer>,
    /// Conflicts resolved here since the store was created.
    pub conflicts: u64,
    pub clock: Clock,
    /// Records quarantined now (missing from the root until repaired).
    pub quarantined: u64,
    pub recovery: Option<Recovery>,
    pub quorum_writes_waiting: u64,
    /// Set while the store refuses commits.
    pub store: Option<StoreTrouble>,
    pub healthy: bool,
    pub uptime_ms: u64,
}

/// A rebuild's progress: how much of its source's feed it holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rebuild {
    /// The source's name.
    pub from: String,
    pub applied: u64,
    pub of: u64,
    pub keys: u64,
}

/// A region as this node sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Region {
    pub region: String,
    pub reachable: bool,
    /// Since the last change of `reachable`.
    pub for_ms: u64,
}

/// A member of the SWIM view.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub node: String,
    pub name: String,
    pub region: String,
    /// Its cluster (QUIC) address.
    pub addr: String,
    /// `alive`, `suspect` or `down`.
    pub state: String,
}

/// A replication peer. The `*_ago` and `lag_ms` fields are `null` for "never".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Peer {
    pub node: String,
    pub name: String,
    pub region: String,
    /// Its API address, empty until it has connected since this node started.
    pub api: String,
    pub connected: bool,
    /// Their index at hello minus what this node applied of their feed.
    pub lag_index: u64,
    /// Since this node last held every write the peer had.
    pub lag_ms: Option<u64>,
    pub last_heard_ms_ago: Option<u64>,
    /// Their feed up to here is applied here.
    pub applied: u64,
    /// This node's feed up to here is acknowledged by them.
    pub acked: u64,
    /// Their clock minus this node's, and the round trip of that estimate.
    pub clock_offset_ms: Option<i64>,
    pub rtt_ms: Option<u64>,
    /// Since this node last refused their stamps as too far ahead.
    pub refused_ms_ago: Option<u64>,
}

/// What the peers' clocks say of this node's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Clock {
    /// The other members' clocks minus this one's (median).
    pub offset_ms: Option<i64>,
    pub measured: u64,
    pub disagreeing: u64,
    pub members: u64,
    /// A majority disagrees: client writes are refused.
    pub off: bool,
    /// How far this node's clock runs ahead of its physical clock beyond the bound.
    pub ahead_of_time_ms: u64,
}

/// A recovery from lost or damaged records, while it lasts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recovery {
    pub cause: String,
    pub peers_done: u64,
    pub peers: u64,
    pub for_ms: u64,
}

/// Why the store refuses commits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreTrouble {
    pub refusing_commits_ms: u64,
    pub disk_full: bool,
    pub error: String,
}

// --------------------------------------------------- digest and hashes

/// `GET /v1/digest?prefix=&deep`: this node's root over the live entries
/// under a prefix.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Digest {
    pub node: String,
    pub name: String,
    pub region: String,
    pub prefix: String,
    pub root: String,
    pub index: u64,
    /// Every record was checked against its value first.
    pub deep: bool,
    /// Records the deep check found damaged (and quarantined).
    pub damaged_found: u64,
    /// The deep check found the digest wrong and rebuilt it.
    pub digest_repaired: bool,
    pub quarantined: u64,
}

/// One key of `GET /v1/hashes?prefix=` (tombstones included).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyHash {
    pub key: String,
    pub deleted: bool,
    pub stamp: String,
    pub hash: String,
}

// --------------------------------------------------------------- health

/// `GET /v1/health` (200 when healthy, else 503 with the same document).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    pub healthy: bool,
    pub reasons: Vec<Reason>,
    pub thresholds: Thresholds,
}

/// Which health check failed.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, IntoStaticStr, VariantArray,
)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum HealthCheck {
    Rebuilding,
    StoreLost,
    Recovering,
    DiskFull,
    StoreError,
    Quarantine,
    ClockOffset,
    ClockAhead,
    PeerClock,
    NoQuorum,
    SyncLag,
    Partition,
    PeerDown,
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
    pub check: HealthCheck,
    /// The peer's name or the region concerned (empty for the node itself).
    pub subject: String,
    /// How long it has lasted, compared with `threshold_ms`.
    pub for_ms: u64,
    pub threshold_ms: u64,
    pub message: String,
}

// ------------------------------------------------------------ conflicts

/// `GET /v1/conflicts`: the kept part of this node's conflict log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Conflicts {
    /// Conflicts resolved here, kept or not.
    pub total: u64,
    pub kept: Vec<Conflict>,
}

/// A write that replaced a concurrent write of another node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Conflict {
    pub key: String,
    pub index: u64,
    pub winner: String,
    pub loser: String,
    pub loser_deleted: bool,
    /// `null` when the loser was a delete or its value too large to keep.
    #[serde(with = "b64_opt")]
    pub loser_value: Option<Bytes>,
}

// ------------------------------------------------- promote and restore

/// `POST /v1/promote`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Promoted {
    /// Always `active`.
    pub role: Role,
    pub was: Role,
}

/// `POST /v1/restore`: what merging the backup did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Restored {
    pub entries: u64,
    pub applied: u64,
    /// Already held, or held newer.
    pub unchanged: u64,
    pub refused_below_floor: u64,
    pub refused_clock: u64,
    pub backup_root: String,
    /// This node's root after the merge.
    pub root: String,
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
    #[serde(flatten)]
    pub event: Event,
    /// When it was reported, ms since the epoch.
    pub at_ms: u64,
    /// The reporting node's id, name and region.
    pub node: String,
    pub name: String,
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
        peer: String,
        peer_name: String,
        peer_region: String,
    },
    /// The connection to a peer was lost.
    PeerDown {
        peer: String,
        peer_name: String,
        peer_region: String,
    },
    /// No peer of `cut_region` is reachable any more.
    PartitionDetected { cut_region: String },
    /// A peer of `cut_region` is reachable again.
    PartitionEnded {
        cut_region: String,
        partition_ms: u64,
    },
    /// After the end of a partition, equal state with a peer of `cut_region`.
    PartitionHealed {
        cut_region: String,
        partition_ms: u64,
        keys_exchanged: u64,
        converge_ms: u64,
    },
    /// Anti-entropy found this node's root differs from a peer's.
    DivergenceFound { peer: String },
    /// Anti-entropy applied entries the push had missed.
    DivergenceRepaired { peer: String, keys: u64 },
    /// A peer's stamp ran ahead of this node's clock beyond the bound.
    ClockSkew { peer: String, ahead_ms: u64 },
    /// A peer was refused.
    PeerRefused { peer: String, reason: String },
    /// A peer was told to resync (it missed a collected tombstone).
    PeerStale { peer: String },
    /// This node was stale: it dropped `dropped` entries and rebuilds from `from`.
    Resynced { from: String, dropped: u64 },
    /// Two different entries carried the same stamp.
    StampCollision { key: String },
    /// A record failed its check and is quarantined.
    RecordQuarantined { key: String, reason: String },
    /// A quarantine ended.
    RecordRepaired {
        key: String,
        #[serde(flatten)]
        how: Repair,
    },
    /// The store could not be read at all.
    StoreLost,
    /// Records were lost: this node takes every peer's state.
    RecoveryStarted { cause: String },
    /// Every known peer's state was taken.
    Recovered { cause: String, peers: u64 },
    /// The judgement of this node's clock changed.
    ClockOffset {
        offset_ms: i64,
        disagreeing: u64,
        members: u64,
        off: bool,
    },
    /// This node's health changed.
    HealthChanged { healthy: bool, reasons: Vec<String> },
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
    Repaired { from: String, stamp: String },
    /// A local write replaced it.
    Overwritten,
    /// Its copy on disk was intact.
    ReadBack { stamp: String },
    /// None of `peers` peers held a live value of the key.
    NotHeldByPeers { peers: u64 },
}

/// The `missed` server-sent event: a stream fell behind and lost events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Missed {
    pub missed: u64,
}

// ------------------------------------------------------------------ codecs

/// Bytes as base64, with `null` for empty (Consul's convention).
pub mod b64 {
    use base64::Engine;
    use bytes::Bytes;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &Bytes, s: S) -> Result<S::Ok, S::Error> {
        if v.is_empty() {
            s.serialize_none()
        } else {
            s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(v))
        }
    }

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

    pub fn serialize<S: Serializer>(v: &Option<Bytes>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            None => s.serialize_none(),
            Some(v) => s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(v)),
        }
    }

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
        };
        let v = serde_json::to_value(&c).unwrap();
        assert_eq!(v["loser_value"], "");
        assert_eq!(serde_json::from_value::<Conflict>(v).unwrap(), c);
    }
}
