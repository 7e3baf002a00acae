//! The replica's configuration: identity, limits, policies and timers.
//! Every field has a documented default (design §6, "Defaults").

use thiserror::Error;

use crate::core::codec::{ClusterId, ENTRIES_PER_MESSAGE_MAX, NAME_BYTES_MAX};
use crate::core::conflicts::CONFLICTS_MAX_DEFAULT;
use crate::core::hlc::CLOCK_OFFSET_MS_MAX_DEFAULT;
use crate::core::types::{Limits, NodeId, KEY_BYTES_MAX, VALUE_BYTES_LIMIT};
use crate::sync::failover::{FailoverConfig, AFTER_MS_MIN, PRIORITY_REGIONS_MAX};

/// The tombstone horizon's default: a week (ms).
pub const TOMBSTONE_HORIZON_MS_DEFAULT: u64 = 7 * 24 * 3_600 * 1_000;

/// What a replica does with client writes while it cannot reach a majority of regions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum PartitionPolicy {
    /// Keep accepting writes; they replicate when the partition heals (default).
    #[default]
    Available,
    /// Refuse writes unless a majority of the known regions is reachable.
    Quorum,
}

/// When a client write is acknowledged (see `sync::replica::ack`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum WriteAck {
    /// Once it is durable here (default).
    #[default]
    Local,
    /// Once it is durable on a node in a majority of the known regions.
    Quorum,
}

/// What a node is in the cluster (see `sync::replica::edge`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Role {
    /// A member of the mesh: connects to every other member, counts for
    /// quorum, region reachability and collection by stability (default).
    #[default]
    Server,
    /// An edge: attaches to one server of its region, takes every origin's
    /// changes from that server's feed and forwards its writes to it. It
    /// counts for nothing the members decide.
    Edge,
}

/// What an edge does with a client write while no server is connected
/// (see `sync::replica::handover`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum EdgeWrites {
    /// Refuses it: every write goes through a server (default).
    #[default]
    Server,
    /// Takes a put or a delete of one key here, durable in the edge's own
    /// store, and hands it over to a server once one is connected (a
    /// check-and-set, a prefix delete, a writing transaction or a quorum
    /// write still needs a server).
    Local,
}

/// Edges a server serves at once by default.
pub const EDGES_MAX_DEFAULT: usize = 2_000;

/// A replica's configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// This node's id; durable state of another node is refused.
    pub node: NodeId,
    /// A server (a member of the mesh) or an edge. Default server.
    pub role: Role,
    /// On a server: edges served at once; more are refused. Default 2,000.
    pub edges_max: usize,
    /// On a server: unacknowledged feed messages per edge (each at most
    /// `feed_entries_max` entries and `batch_bytes_max` bytes), which
    /// bounds what a slow edge holds up. Default 8 (edges acknowledge
    /// every few messages).
    pub edge_window_max: usize,
    /// On an edge: a forwarded write its server has not answered within
    /// this fails (its outcome unknown). Default 15 s.
    pub forward_timeout_ms: u64,
    /// On an edge: whether it takes writes while no server is connected.
    /// Default [`EdgeWrites::Server`].
    pub edge_writes: EdgeWrites,
    /// Human name of the node (at most 64 bytes).
    pub name: String,
    /// Region the node runs in (at most 64 bytes).
    pub region: String,
    /// Where this node's HTTP API listens (`ip:port`), told to peers; empty: none.
    pub api: String,
    /// Peers with another cluster id are refused.
    pub cluster: ClusterId,
    /// Limits on the keys and values of local writes. Default: 1 KiB keys, 1 MiB values.
    pub limits: Limits,
    /// Default: [`PartitionPolicy::Available`].
    pub partition_policy: PartitionPolicy,
    /// When client writes are acknowledged unless they ask otherwise.
    /// Default [`WriteAck::Local`].
    pub write_ack: WriteAck,
    /// A quorum write not held by a majority this long is answered as not
    /// acknowledged. Default 10 s.
    pub quorum_ack_timeout_ms: u64,
    /// A standby replicates everything but refuses client writes until
    /// promoted ([`crate::sync::Replica::promote`]). Default false.
    pub standby: bool,
    /// Prioritized failover: a standby takes over when the regions before
    /// it fail (see [`crate::sync::failover`]). Default: none.
    pub failover: FailoverConfig,
    /// Largest lead of a remote stamp over our clock. Default 500 ms.
    pub clock_offset_ms_max: u64,
    /// How long a local write waits to be batched with others before it is
    /// pushed. Default 2 ms; 0 pushes at once.
    pub push_delay_ms: u64,
    /// An idle link sends a heartbeat this often. Default 1 s.
    pub heartbeat_interval_ms: u64,
    /// A peer not heard from for this long no longer makes its region
    /// reachable (quorum, partitions). Default 2.5 s: two heartbeats and a half.
    pub contact_timeout_ms: u64,
    /// Anti-entropy with one random peer this often. Default 5 s.
    pub ae_interval_ms: u64,
    /// Plus a random delay up to this. Default 1 s.
    pub ae_jitter_ms: u64,
    /// A peer that has not acknowledged sent changes for this long gets them
    /// again. Default 5 s.
    pub peer_timeout_ms: u64,
    /// Tombstones older than this are dropped even if not every member is
    /// known to hold them; a node out of contact for longer must resync.
    /// Default 7 days.
    pub tombstone_horizon_ms: u64,
    /// Garbage collection runs this often. Default 1 s.
    pub gc_interval_ms: u64,
    /// Most tombstones dropped per run. Default 10,000.
    pub gc_batch_max: usize,
    /// Most entries per feed message. Default 512.
    pub feed_entries_max: usize,
    /// Most value bytes per feed or anti-entropy message (one larger entry
    /// goes alone). Default 1 MiB.
    pub batch_bytes_max: usize,
    /// Most feed positions scanned to build one message. Default 8,192.
    pub feed_scan_max: usize,
    /// Most unacknowledged feed messages per peer. Default 8.
    pub feed_window_max: usize,
    /// Most differing nodes followed per level in one anti-entropy round; the
    /// rest is left to the next round. Default 4,096.
    pub ae_nodes_max: usize,
    /// Conflicts kept in the log. Default 1,024.
    pub conflicts_max: usize,
    /// The background scrub verifies records against their checks this
    /// often. Default 1 s.
    pub scrub_interval_ms: u64,
    /// Most records verified per scrub step. Default 10,000 (a million
    /// keys are scrubbed in 100 s, at about 2 ms of CPU a second).
    pub scrub_batch_max: usize,
    /// Seed of the replica's random choices (peer picks, jitter).
    pub rng_seed: u64,
    /// An empty replica (no entries, index 0) rebuilds from its first peer
    /// before it counts as in sync. Default true; false for the founding
    /// node of a new cluster, which has no one to rebuild from.
    pub rebuild_when_empty: bool,
    /// A read barrier (`?consistent`) fails after this long. Default 5 s.
    pub read_barrier_timeout_ms: u64,
    /// When the node id was adopted (from a certificate) with an empty
    /// store rather than made here (physical ms; 0: it was not): until it
    /// is confirmed the replica watches for peers that know the id from
    /// before, which would mean the store was lost (see
    /// `replica/identity.rs`). The same time across restarts until the
    /// replica reports the id confirmed or the loss found. Default 0.
    pub id_adopted_at_ms: u64,
}

/// A configuration that cannot work.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ConfigError {
    /// A numeric setting is outside its allowed range.
    #[error("{field} is {value}, must be between {min} and {max}")]
    OutOfRange {
        /// The setting's field name.
        field: &'static str,
        /// The value given.
        value: u64,
        /// The least allowed value.
        min: u64,
        /// The greatest allowed value.
        max: u64,
    },
    /// The name, region or API address is longer than [`NAME_BYTES_MAX`] bytes.
    #[error("{field} is longer than {NAME_BYTES_MAX} bytes")]
    NameTooLong {
        /// The field that is too long: `name`, `region` or `api`.
        field: &'static str,
    },
    /// The durable state given to the replica was written by another node.
    #[error("durable state belongs to node {found}, not {expected}")]
    WrongNode {
        /// This node's id, from the configuration.
        expected: NodeId,
        /// The node id the durable state belongs to.
        found: NodeId,
    },
}

impl Config {
    /// Defaults for everything but identity.
    pub fn new(node: NodeId, name: &str, region: &str, cluster: ClusterId) -> Config {
        Config {
            node,
            role: Role::Server,
            edges_max: EDGES_MAX_DEFAULT,
            edge_window_max: 8,
            forward_timeout_ms: 15_000,
            edge_writes: EdgeWrites::Server,
            name: name.to_string(),
            region: region.to_string(),
            api: String::new(),
            cluster,
            limits: Limits::default(),
            partition_policy: PartitionPolicy::Available,
            write_ack: WriteAck::Local,
            quorum_ack_timeout_ms: 10_000,
            standby: false,
            failover: FailoverConfig::default(),
            clock_offset_ms_max: CLOCK_OFFSET_MS_MAX_DEFAULT,
            push_delay_ms: 2,
            heartbeat_interval_ms: 1_000,
            contact_timeout_ms: 2_500,
            ae_interval_ms: 5_000,
            ae_jitter_ms: 1_000,
            peer_timeout_ms: 5_000,
            tombstone_horizon_ms: TOMBSTONE_HORIZON_MS_DEFAULT,
            gc_interval_ms: 1_000,
            gc_batch_max: 10_000,
            feed_entries_max: 512,
            batch_bytes_max: 1 << 20,
            feed_scan_max: 8_192,
            feed_window_max: 8,
            ae_nodes_max: 4_096,
            conflicts_max: CONFLICTS_MAX_DEFAULT,
            scrub_interval_ms: 1_000,
            scrub_batch_max: 10_000,
            rng_seed: node.0,
            rebuild_when_empty: true,
            read_barrier_timeout_ms: 5_000,
            id_adopted_at_ms: 0,
        }
    }

    /// Checks names against their length limit and every numeric setting against its range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let range = |field, value: u64, min, max| {
            if value < min || value > max {
                Err(ConfigError::OutOfRange {
                    field,
                    value,
                    min,
                    max,
                })
            } else {
                Ok(())
            }
        };
        if self.name.len() > NAME_BYTES_MAX {
            return Err(ConfigError::NameTooLong { field: "name" });
        }
        if self.region.len() > NAME_BYTES_MAX {
            return Err(ConfigError::NameTooLong { field: "region" });
        }
        if self.api.len() > NAME_BYTES_MAX {
            return Err(ConfigError::NameTooLong { field: "api" });
        }
        range(
            "read_barrier_timeout_ms",
            self.read_barrier_timeout_ms,
            1,
            600_000,
        )?;
        let k = KEY_BYTES_MAX as u64;
        range("key_bytes_max", self.limits.key_bytes_max as u64, 1, k)?;
        let v = VALUE_BYTES_LIMIT as u64;
        range("value_bytes_max", self.limits.value_bytes_max as u64, 0, v)?;
        range(
            "clock_offset_ms_max",
            self.clock_offset_ms_max,
            1,
            3_600_000,
        )?;
        range("push_delay_ms", self.push_delay_ms, 0, 1_000)?;
        range(
            "quorum_ack_timeout_ms",
            self.quorum_ack_timeout_ms,
            10,
            3_600_000,
        )?;
        range(
            "heartbeat_interval_ms",
            self.heartbeat_interval_ms,
            10,
            600_000,
        )?;
        range(
            "contact_timeout_ms",
            self.contact_timeout_ms,
            self.heartbeat_interval_ms + 1,
            3_600_000,
        )?;
        range("ae_interval_ms", self.ae_interval_ms, 10, 86_400_000)?;
        range("ae_jitter_ms", self.ae_jitter_ms, 0, 86_400_000)?;
        range("peer_timeout_ms", self.peer_timeout_ms, 10, 3_600_000)?;
        range(
            "tombstone_horizon_ms",
            self.tombstone_horizon_ms,
            1_000,
            u64::MAX / 2,
        )?;
        range("gc_interval_ms", self.gc_interval_ms, 10, 86_400_000)?;
        range("gc_batch_max", self.gc_batch_max as u64, 1, 10_000_000)?;
        let e = ENTRIES_PER_MESSAGE_MAX as u64;
        range("feed_entries_max", self.feed_entries_max as u64, 1, e)?;
        range("batch_bytes_max", self.batch_bytes_max as u64, 1, v)?;
        range("feed_scan_max", self.feed_scan_max as u64, 1, 10_000_000)?;
        range("feed_window_max", self.feed_window_max as u64, 1, 1_024)?;
        range("edge_window_max", self.edge_window_max as u64, 1, 1_024)?;
        range("edges_max", self.edges_max as u64, 0, 100_000)?;
        range("forward_timeout_ms", self.forward_timeout_ms, 10, 3_600_000)?;
        range("scrub_interval_ms", self.scrub_interval_ms, 10, 86_400_000)?;
        range(
            "scrub_batch_max",
            self.scrub_batch_max as u64,
            1,
            10_000_000,
        )?;
        range(
            "ae_nodes_max",
            self.ae_nodes_max as u64,
            1,
            crate::core::codec::AE_PARENTS_MAX as u64,
        )?;
        let f = &self.failover;
        if !f.priority.is_empty() {
            range(
                "failover.after_ms",
                f.after_ms,
                AFTER_MS_MIN.max(self.contact_timeout_ms * 2),
                86_400_000,
            )?;
            range(
                "failover.priority",
                f.priority.len() as u64,
                1,
                PRIORITY_REGIONS_MAX as u64,
            )?;
            if f.priority
                .iter()
                .any(|r| r.is_empty() || r.len() > NAME_BYTES_MAX)
            {
                return Err(ConfigError::NameTooLong {
                    field: "failover.priority",
                });
            }
        }
        Ok(())
    }
}
