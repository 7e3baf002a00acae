//! `node`: a running Meridian node, and the embedded Rust API.
//!
//! Owns the composition of the layers: a driver task that owns the
//! [`Replica`](crate::sync::Replica) and carries out its outputs in order, a store thread that
//! makes persist batches durable with group commit (while one commit is on
//! its way to disk the next group gathers, and every write in a group is
//! acknowledged when its commit returns), the QUIC [`Transport`](crate::net::Transport), and the
//! [`Node`] handle that applications embed. The driver decides nothing: it
//! feeds the replica inputs (client calls, peer messages, connection events,
//! timer ticks) and executes what comes out.
//!
//! Files: `builder.rs` (start-up), `driver.rs` (the loop: writes, outputs,
//! transport and membership events), `queries.rs` (answers read from the
//! replica's state), `commit.rs` (the store thread), `types.rs` (the
//! embedded API's answers), `time.rs`, `data_dir.rs`, `history.rs`.

mod builder;
mod commit;
pub mod data_dir;
mod driver;
mod edge;
pub mod history;
mod queries;
pub(crate) mod time;
mod types;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use thiserror::Error;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use crate::core::conflicts::Conflict;
use crate::core::digest::{level_width, Fingerprint, LEAF_LEVEL};
use crate::core::doc::{ChangeHash, DocError, Document};
use crate::core::types::{Entry, Hash, IntoKey, Key, Limits, NodeId, KEY_BYTES_MAX};
use crate::net;
use crate::net::tls::{NodeIdentity, TlsError};
use crate::store::{Durability, StoreError};
use crate::sync::{
    AckFailure, BarrierError, ConfigError, DocWrite, ForgetError, ForgottenMember, ImportReport,
    LeaveError, PartitionPolicy, TxnFailure, TxnOp, TxnOutcome, WriteAck, WriteError, WriteReceipt,
};

/// How often [`Node::leave`] asks again while members catch up.
const LEAVE_RETRY: Duration = Duration::from_millis(200);

pub use builder::NodeBuilder;
use driver::Command;
pub(crate) use time::now_ms;
pub use time::CLOCK_SKEW_ENV;
pub use types::{
    Change, DigestReport, DocRead, EventKind, Histogram, Indexed, KeyHash, KvEntry, MembersReport,
    NodeEvent, NodeStatus, Snapshot, StoreTrouble, WriteOptions, COMMIT_BUCKETS_US,
    EVENTS_BUFFERED_MAX,
};

/// Commands waiting for the driver.
pub const COMMAND_QUEUE_MAX: usize = 4_096;

/// Transport events waiting for the driver.
pub const NET_QUEUE_MAX: usize = 4_096;

/// Most changes one watch poll returns.
pub const WATCH_BATCH_MAX: usize = 1_024;

/// Most feed positions one watch poll scans.
pub const WATCH_SCAN_MAX: usize = 16_384;

/// Quarantined keys a refused read names.
pub const QUARANTINED_NAMED_MAX: usize = 10;

/// Recent events kept for status.
pub const EVENTS_KEPT_MAX: usize = 256;

/// Why a node call failed.
#[derive(Debug, Error)]
pub enum NodeError {
    /// The replica refused the write; nothing was changed.
    #[error(transparent)]
    Write(#[from] WriteError),
    /// The store could not be opened, read or written.
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// The node's TLS identity could not be used.
    #[error("tls: {0}")]
    Tls(#[from] TlsError),
    /// The replica's configuration is invalid, or its durable state is another node's.
    #[error("configuration: {0}")]
    Config(#[from] ConfigError),
    /// The transport could not bind or use its UDP address.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address asked for.
        addr: SocketAddr,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// The data directory, or a file in it, could not be created, read or written.
    #[error("data directory {path}: {source}")]
    DataDir {
        /// The directory or file.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// The data directory holds something the node will not use as it is
    /// (an invalid `node.id`, or a damaged store it cannot attribute to a node).
    #[error("data directory {path}: {reason}")]
    DataDirInvalid {
        /// The file at fault.
        path: PathBuf,
        /// What is wrong, and what the operator can do.
        reason: String,
    },
    /// The certificate is bound to another node id than the data directory
    /// holds: the node would claim an id its peers know as another node's.
    #[error(
        "the certificate is issued to node {certified}, but the data directory {path} holds node \
         {held}: issue the certificate for this node (`meridian ca issue --node-id {held} \
         --reissue`), or point the node at the directory of node {certified}"
    )]
    CertifiedIdDiffers {
        /// The data directory.
        path: PathBuf,
        /// The node id the certificate is bound to.
        certified: NodeId,
        /// The node id the directory holds.
        held: NodeId,
    },
    /// A document could not be read as asked (see [`Node::get_doc`]).
    #[error("document: {0}")]
    Document(#[from] DocError),
    /// The node is shut down: the call could not reach its driver.
    #[error("the node is shut down")]
    Stopped,
    /// A thread the node needs could not be started.
    #[error("cannot start the {what} thread: {source}")]
    Thread {
        /// Which thread (e.g. `store`).
        what: &'static str,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// The store refuses commits (a full disk, or a store error): writes are
    /// refused until it takes them again; reads are served.
    #[error("{}", store_refusal(*disk_full, error))]
    StoreUnavailable {
        /// The store refused because the disk is full.
        disk_full: bool,
        /// The store's error.
        error: String,
    },
    /// The write's commit was refused: it is not acknowledged. It is
    /// applied in memory, and becomes durable if the retried commit lands
    /// before the node stops.
    #[error(
        "not acknowledged: the store refused the commit ({}; {error}): the write is applied here \
         and becomes durable only if space returns before the node stops",
        if *disk_full { "the disk is full" } else { "a store error" }
    )]
    NotDurable {
        /// The commit was refused because the disk is full.
        disk_full: bool,
        /// The store's error.
        error: String,
    },
    /// The write is durable here but not as widely as it asked.
    #[error("{0}")]
    NotReplicated(AckFailure),
    /// A read would include records that failed their integrity check.
    #[error(
        "quarantined: {} failed its integrity check and is not served until it is repaired from a peer",
        keys.join(", ")
    )]
    Quarantined {
        /// The quarantined keys (at most [`QUARANTINED_NAMED_MAX`]).
        keys: Vec<String>,
    },
    /// The node stopped (its store failed, or it was shut down) before the
    /// call was answered, or will take no more writes.
    #[error("the node stopped: {0}")]
    StoreFailed(#[source] Halt),
    /// A consistent read could not be served (see [`Node::read_barrier`]).
    #[error("{0}")]
    Barrier(BarrierError),
    /// A transaction's operations failed their checks: nothing was written.
    #[error(
        "the transaction failed: {}",
        .0.iter().map(|(i, f)| format!("operation {i}: {f}")).collect::<Vec<_>>().join("; ")
    )]
    TxnFailed(Vec<(usize, TxnFailure)>),
    /// An incremental snapshot cannot be taken: the node no longer knows
    /// every key removed since the index asked for.
    #[error("snapshot: {0}")]
    Snapshot(String),
    /// This node could not leave the cluster.
    #[error("cannot leave: {0}")]
    Leave(#[from] LeaveError),
    /// A member could not be forgotten.
    #[error("cannot forget: {0}")]
    Forget(#[from] ForgetError),
    /// No member by that name or id is known here.
    #[error("no member {0} is known here")]
    UnknownMember(String),
    /// SWIM's timing was refused.
    #[error("swim: {0}")]
    Swim(#[from] crate::sync::membership::SwimTimingError),
}

/// Why a node stopped answering (see [`NodeError::StoreFailed`]).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Halt {
    /// The store thread ended (it panicked, or its channel closed): no
    /// commit can land any more.
    #[error("the store thread stopped")]
    StoreThread,
    /// The node was shut down while its store refused commits: writes
    /// waiting for a commit are not acknowledged.
    #[error("it was shut down while its store refused commits: {error}")]
    ShutDownRefusing {
        /// The store's last error.
        error: String,
    },
    /// The node was shut down.
    #[error("it was shut down")]
    ShutDown,
}

fn store_refusal(disk_full: bool, error: &str) -> String {
    if disk_full {
        format!(
            "the disk is full: writes are refused until space returns (reads are served; \
             nothing acknowledged is lost): {error}"
        )
    } else {
        format!("the store refuses commits: writes are refused until it takes them again (reads are served): {error}")
    }
}

/// A running node (see the module docs). Cheap calls go through the
/// driver's queue; drop or [`Node::shutdown`] stops it.
pub struct Node {
    id: NodeId,
    forwarding: net::forward::Forwarding,
    name: String,
    region: String,
    cluster: crate::core::codec::ClusterId,
    api_addr: String,
    events: tokio::sync::broadcast::Sender<NodeEvent>,
    cmd: mpsc::Sender<Command>,
    notify: watch::Receiver<u64>,
    local_addr: SocketAddr,
    endpoint: quinn::Endpoint,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl Node {
    /// Starts building a node called `name` in `region`, with its TLS identity.
    pub fn builder(name: &str, region: &str, identity: NodeIdentity) -> NodeBuilder {
        NodeBuilder {
            name: name.to_string(),
            region: region.to_string(),
            identity,
            data_dir: None,
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            seeds: Vec::new(),
            durability: Durability::Immediate,
            limits: Limits::default(),
            policy: PartitionPolicy::Available,
            history: None,
            tune: Vec::new(),
            faults: None,
            store_faults: None,
            check_store_on_open: false,
            advertise: None,
            cluster: None,
            role: crate::sync::Role::Server,
            swim: crate::sync::membership::SwimTiming::default(),
        }
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// This node's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The region this node runs in.
    pub fn region(&self) -> &str {
        &self.region
    }

    /// Events from now on. A subscriber that falls more than
    /// [`EVENTS_BUFFERED_MAX`] behind is told how many it missed.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<NodeEvent> {
        self.events.subscribe()
    }

    /// Publishes an event judged outside the node (health changes).
    pub fn publish(&self, kind: EventKind) {
        let _ = self.events.send(NodeEvent {
            at_ms: now_ms(),
            kind,
        });
    }

    /// The cluster this node belongs to (derived from its CA).
    pub fn cluster(&self) -> crate::core::codec::ClusterId {
        self.cluster
    }

    /// The HTTP API address told to peers (empty: none).
    pub fn api_addr(&self) -> String {
        self.api_addr.clone()
    }

    /// The UDP address peers reach this node on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    async fn call<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, NodeError> {
        let (tx, rx) = oneshot::channel();
        self.cmd
            .send(make(tx))
            .await
            .map_err(|_| NodeError::Stopped)?;
        rx.await.map_err(|_| NodeError::Stopped)
    }

    /// Writes `value` under `key`; returns once the write is durable.
    pub async fn put(
        &self,
        key: impl IntoKey,
        value: impl Into<Bytes>,
    ) -> Result<WriteReceipt, NodeError> {
        self.put_with(key, value, 0, None).await
    }

    /// Writes with Consul flags and an optional check-and-set index (0: only if absent).
    pub async fn put_with(
        &self,
        key: impl IntoKey,
        value: impl Into<Bytes>,
        flags: u64,
        cas: Option<u64>,
    ) -> Result<WriteReceipt, NodeError> {
        let opts = WriteOptions {
            flags,
            cas,
            ack: None,
        };
        self.put_opts(key, value, opts).await
    }

    /// Writes `value` under `key` with `opts`; returns once the write is
    /// acknowledged (durable here, or in a majority of regions with
    /// [`WriteAck::Quorum`]).
    pub async fn put_opts(
        &self,
        key: impl IntoKey,
        value: impl Into<Bytes>,
        opts: WriteOptions,
    ) -> Result<WriteReceipt, NodeError> {
        // The map keeps an exact copy: a value sliced from a larger buffer
        // (an HTTP request's read buffer, a Vec with spare capacity) would
        // keep all of that buffer alive for as long as the key holds it.
        let value: Bytes = value.into();
        let value = Some(Bytes::copy_from_slice(&value));
        let key = valid(key)?;
        self.call(|reply| Command::Put {
            key,
            value,
            opts,
            reply,
        })
        .await?
    }

    /// Writes `json` (an object) as the document under `key`: a key that
    /// holds a document is changed by the fewest field changes, so fields
    /// this write leaves as they were merge with concurrent changes made
    /// elsewhere (see [`Replica::put_doc`](crate::sync::Replica::put_doc)).
    /// Returns once the write is durable.
    pub async fn put_doc(
        &self,
        key: impl IntoKey,
        json: serde_json::Value,
    ) -> Result<WriteReceipt, NodeError> {
        self.doc_opts(key, DocWrite::Whole(json), WriteOptions::default())
            .await
    }

    /// Applies an RFC 7386 merge patch to the document under `key` (an
    /// absent or deleted key starts from `{}`; a plain value is refused).
    pub async fn patch_doc(
        &self,
        key: impl IntoKey,
        patch: serde_json::Value,
    ) -> Result<WriteReceipt, NodeError> {
        self.doc_opts(key, DocWrite::Patch(patch), WriteOptions::default())
            .await
    }

    /// A document write with `opts` (flags, check-and-set, acknowledgement).
    pub async fn doc_opts(
        &self,
        key: impl IntoKey,
        write: DocWrite,
        opts: WriteOptions,
    ) -> Result<WriteReceipt, NodeError> {
        let key = valid(key)?;
        self.call(|reply| Command::PutDoc {
            key,
            write,
            opts,
            reply,
        })
        .await?
    }

    /// The document under `key` as JSON, now or as it was at `at` (heads
    /// of an earlier version), with its heads and indexes; `None` for an
    /// absent or deleted key. A key holding a plain value is
    /// [`DocError::NotDocument`]. Checked before it is served, as any read.
    pub async fn get_doc(
        &self,
        key: &str,
        at: Option<Vec<ChangeHash>>,
    ) -> Result<Indexed<Option<DocRead>>, NodeError> {
        let key = key.to_string();
        let held = self
            .call(|reply| Command::GetEntry { key, reply })
            .await??;
        let Some(queries::Held {
            entry,
            create_index,
            modify_index,
        }) = held.value
        else {
            return Ok(Indexed {
                index: held.index,
                value: None,
            });
        };
        if !entry.is_doc() {
            return Err(DocError::NotDocument.into());
        }
        let mut doc = Document::load(entry.value.as_deref().unwrap_or_default())?;
        let json = doc.to_json(at.as_deref())?;
        Ok(Indexed {
            index: held.index,
            value: Some(DocRead {
                json,
                heads: doc.heads().iter().map(ToString::to_string).collect(),
                flags: entry.flags,
                create_index,
                modify_index,
                stamp: entry.stamp,
            }),
        })
    }

    /// Deletes `key` (a tombstone); returns once durable.
    pub async fn delete(&self, key: impl IntoKey) -> Result<WriteReceipt, NodeError> {
        self.delete_with(key, None).await
    }

    /// Deletes `key` if its modify index is `cas` (when given).
    pub async fn delete_with(
        &self,
        key: impl IntoKey,
        cas: Option<u64>,
    ) -> Result<WriteReceipt, NodeError> {
        let opts = WriteOptions {
            flags: 0,
            cas,
            ack: None,
        };
        self.delete_opts(key, opts).await
    }

    /// Deletes `key` with `opts` (flags are ignored).
    pub async fn delete_opts(
        &self,
        key: impl IntoKey,
        opts: WriteOptions,
    ) -> Result<WriteReceipt, NodeError> {
        let key = valid(key)?;
        self.call(|reply| Command::Put {
            key,
            value: None,
            opts,
            reply,
        })
        .await?
    }

    /// Deletes every key this node knows under `prefix` (live keys and
    /// keys it holds a tombstone for), at most `keys_max`, in one durable
    /// step; returns how many tombstones it wrote once they are durable.
    /// See [`Replica::delete_prefix`](crate::sync::Replica::delete_prefix).
    pub async fn delete_prefix(&self, prefix: &str, keys_max: usize) -> Result<usize, NodeError> {
        self.delete_prefix_acked(prefix, keys_max, None).await
    }

    /// [`Node::delete_prefix`], answered as `ack` says (`None`: the node's
    /// `write_ack`): with a quorum, once every tombstone is durable in a
    /// majority of regions.
    pub async fn delete_prefix_acked(
        &self,
        prefix: &str,
        keys_max: usize,
        ack: Option<WriteAck>,
    ) -> Result<usize, NodeError> {
        let prefix = prefix.to_string();
        self.call(|reply| Command::DeletePrefix {
            prefix,
            keys_max,
            ack,
            reply,
        })
        .await?
    }

    /// Runs `ops` as one transaction (see [`Replica::txn`](crate::sync::Replica::txn)):
    /// checked together, written all or nothing in one durable commit, and
    /// answered once its writes are acknowledged as `ack` says (`None`: the
    /// node's `write_ack`). Reads are checked before they are served.
    pub async fn txn(
        &self,
        ops: Vec<TxnOp>,
        ack: Option<WriteAck>,
        keys_max: usize,
    ) -> Result<TxnOutcome, NodeError> {
        self.call(|reply| Command::Txn {
            ops,
            ack,
            keys_max,
            reply,
        })
        .await?
    }

    /// A read barrier over `scope` (one key, or every key under it when
    /// `prefix`): returns once this node holds, for those keys, every write
    /// that each reachable peer had acknowledged when it was called (see
    /// [`Replica::barrier`](crate::sync::Replica::barrier)); fails when a
    /// region is unreachable, a peer is lost or recovering meanwhile, or
    /// the replica's `read_barrier_timeout_ms` passes.
    pub async fn read_barrier(&self, scope: &str, prefix: bool) -> Result<(), NodeError> {
        let scope = scope.to_string();
        self.call(|reply| Command::ReadBarrier {
            scope,
            prefix,
            reply,
        })
        .await?
        .map_err(NodeError::Barrier)
    }

    /// Installs what serves the API requests peers forward to this node
    /// (`?dc=`); the API installs it once. False if one is installed already.
    pub fn serve_forwarded(&self, handler: net::forward::Handler) -> bool {
        self.forwarding.install(handler)
    }

    /// Sends `req` over the peer connection to `to` (a node of a region, or
    /// one member) and returns its answer (at most `timeout_ms` later).
    pub async fn forward(
        &self,
        to: &net::forward::ForwardTo,
        req: &net::forward::ForwardRequest,
        timeout_ms: u64,
    ) -> Result<net::forward::ForwardAnswer, net::forward::ForwardError> {
        use net::forward::ForwardTo;
        let target = to.clone();
        let connection = self
            .call(|reply| match target {
                ForwardTo::Region(region) => Command::RegionConnection { region, reply },
                ForwardTo::Node(who) => Command::NodeConnection { who, reply },
            })
            .await
            .map_err(|e| net::forward::ForwardError::Failed {
                to: to.to_string(),
                reason: e.to_string(),
            })??;
        net::forward::send(&connection, &to.to_string(), req, timeout_ms).await
    }

    /// The last durable index: every change numbered up to it is on disk.
    pub fn index(&self) -> u64 {
        *self.notify.borrow()
    }

    /// Waits until the durable index reaches `index`; false if the node stopped first.
    pub async fn wait_durable(&self, index: u64) -> bool {
        let mut rx = self.notify.clone();
        let reached = rx.wait_for(|i| *i >= index).await.is_ok();
        reached
    }

    /// The versions of `key` this node kept (see [`history`]), oldest first.
    pub async fn history(&self, key: &str) -> Result<Vec<history::Version>, NodeError> {
        let key = key.to_string();
        self.call(|reply| Command::History { key, reply }).await
    }

    /// Makes a standby active: client writes are accepted from now on.
    pub async fn promote(&self) -> Result<(), NodeError> {
        self.call(|reply| Command::Promote { reply }).await
    }

    /// Leaves the cluster (see [`Replica::leave`](crate::sync::Replica::leave)):
    /// waits up to `wait` for the members in contact to hold every write
    /// of this node, then tells every peer and stops taking writes. Shut
    /// the node down after it. Answers once the leave is durable.
    pub async fn leave(&self, wait: std::time::Duration) -> Result<(), NodeError> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            match self.call(|reply| Command::Leave { reply }).await? {
                Err(NodeError::Leave(LeaveError::NotHandedOver { .. }))
                    if tokio::time::Instant::now() < deadline =>
                {
                    tokio::time::sleep(LEAVE_RETRY).await;
                }
                other => return other,
            }
        }
    }

    /// Forgets a member that is gone for good, by node name or id (see
    /// [`Replica::forget`](crate::sync::Replica::forget)): it stops
    /// counting for quorum, reachability and tombstone collection on every
    /// member. Answers once the forget is durable here.
    pub async fn forget(&self, who: &str) -> Result<ForgottenMember, NodeError> {
        let who = who.to_string();
        self.call(|reply| Command::Forget { who, reply }).await?
    }

    /// Who this node knows: members with their liveness, the edges it
    /// serves, and the members the cluster forgot.
    pub async fn members(&self) -> Result<MembersReport, NodeError> {
        self.call(|reply| Command::Members { reply }).await
    }

    /// The kept conflicts (oldest first) and how many were seen since start.
    pub async fn conflicts(&self) -> Result<(Vec<Conflict>, u64), NodeError> {
        self.call(|reply| Command::Conflicts { reply }).await
    }

    /// A consistent copy of the entries changed after `since` (0: all),
    /// with the index and root of that instant. Cheap per entry (keys and
    /// values are shared, not copied); the driver pauses while it is taken.
    pub async fn snapshot(&self, since: u64) -> Result<Snapshot, NodeError> {
        self.call(|reply| Command::Snapshot {
            since,
            base_after_start: false,
            reply,
        })
        .await?
    }

    /// [`Node::snapshot`] for an incremental backup whose base (the state
    /// at `since`) was taken after this node started: the removals at the
    /// start's own index are then in the base already, so an incremental
    /// right after a restart's first full backup can be made.
    pub async fn snapshot_after_start(&self, since: u64) -> Result<Snapshot, NodeError> {
        self.call(|reply| Command::Snapshot {
            since,
            base_after_start: true,
            reply,
        })
        .await?
    }

    /// Merges backup entries as replicated state (see
    /// [`Replica::import`](crate::sync::Replica::import)); returns once they are durable.
    pub async fn import(&self, entries: Vec<(Key, Entry)>) -> Result<ImportReport, NodeError> {
        self.call(|reply| Command::Import { entries, reply })
            .await?
    }

    /// Every key under `prefix`, tombstones included, with its stamp and entry hash.
    pub async fn hashes(&self, prefix: &str) -> Result<Vec<KeyHash>, NodeError> {
        let prefix = prefix.to_string();
        self.call(|reply| Command::Hashes { prefix, reply }).await
    }

    /// The fingerprints of the children (at `level`, 1..=5) of each of
    /// `parents` in the Merkle digest: one step of `verify --diff`'s descent.
    pub async fn digest_children(
        &self,
        level: u8,
        parents: Vec<u32>,
    ) -> Result<Vec<Fingerprint>, NodeError> {
        // Checked by the API; out-of-range input gets nothing, not a panic.
        if !(1..=LEAF_LEVEL).contains(&level)
            || parents
                .iter()
                .any(|p| *p as usize >= level_width(level - 1))
        {
            return Ok(Vec::new());
        }
        self.call(|reply| Command::DigestChildren {
            level,
            parents,
            reply,
        })
        .await
    }

    /// Every key in the Merkle `leaves` (tombstones included) with its
    /// entry hash: the end of `verify --diff`'s descent.
    pub async fn leaf_hashes(&self, leaves: Vec<u32>) -> Result<Vec<KeyHash>, NodeError> {
        self.call(|reply| Command::LeafHashes { leaves, reply })
            .await
    }

    /// Reads `key` from this node's state.
    pub async fn get(&self, key: &str) -> Result<Option<KvEntry>, NodeError> {
        Ok(self.get_indexed(key).await?.value)
    }

    /// Reads `key` with its modify index, a deleted key's included (the
    /// index of its delete, while its tombstone is kept).
    pub async fn get_indexed(&self, key: &str) -> Result<Indexed<Option<KvEntry>>, NodeError> {
        let key = key.to_string();
        self.call(|reply| Command::Get { key, reply }).await?
    }

    /// Every live key under `prefix`, in key order. Fails while a key under
    /// it is quarantined (see [`NodeError::Quarantined`]).
    pub async fn list(&self, prefix: &str) -> Result<Vec<KvEntry>, NodeError> {
        Ok(self.list_indexed(prefix).await?.value)
    }

    /// [`Node::list`] with the greatest modify index under `prefix`,
    /// deleted keys' included while their tombstones are kept.
    pub async fn list_indexed(&self, prefix: &str) -> Result<Indexed<Vec<KvEntry>>, NodeError> {
        let prefix = prefix.to_string();
        self.call(|reply| Command::List { prefix, reply }).await?
    }

    /// The changes under `prefix` after `from_index`, then every change as it comes.
    pub fn watch(&self, prefix: &str, from_index: u64) -> Watch {
        Watch {
            cmd: self.cmd.clone(),
            notify: self.notify.clone(),
            prefix: prefix.to_string(),
            next: from_index,
            delivered: from_index,
            buf: VecDeque::new(),
        }
    }

    /// The replica's status with the node's counters and recent events.
    pub async fn status(&self) -> Result<NodeStatus, NodeError> {
        self.call(|reply| Command::Status { reply }).await
    }

    /// The Merkle root of the whole state (empty prefix), or a digest of the keys under `prefix`.
    pub async fn digest(&self, prefix: &str) -> Result<Hash, NodeError> {
        let prefix = prefix.to_string();
        let r = self
            .call(|reply| Command::Digest {
                prefix,
                deep: false,
                reply,
            })
            .await?;
        Ok(r.root)
    }

    /// [`Node::digest`] after every record's check and the digest itself
    /// are recomputed from the values (`verify --deep`; O(keys)): records
    /// that fail are quarantined first, so the root covers checked data only.
    pub async fn deep_digest(&self, prefix: &str) -> Result<DigestReport, NodeError> {
        let prefix = prefix.to_string();
        self.call(|reply| Command::Digest {
            prefix,
            deep: true,
            reply,
        })
        .await
    }

    /// Finishes pending commits, closes every connection and stops, then
    /// releases the socket (by dropping the node).
    pub async fn shutdown(self) -> Result<(), NodeError> {
        self.stop().await
    }

    /// Like [`Node::shutdown`] through a shared handle (the API holds one);
    /// the socket is released once the last handle is dropped. Later calls
    /// return at once.
    pub async fn stop(&self) -> Result<(), NodeError> {
        let _ = self.call(|reply| Command::Shutdown { reply }).await;
        let task = self.task.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(task) = task {
            let _ = task.await;
        }
        let _ = tokio::time::timeout(Duration::from_secs(2), self.endpoint.wait_idle()).await;
        Ok(())
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let running = self.task.get_mut().map_or(true, |t| t.is_some());
        if running {
            self.endpoint.close(net::CLOSE_SHUTDOWN.into(), b"dropped");
        }
    }
}

/// A resumable stream of changes (see [`Node::watch`]).
pub struct Watch {
    cmd: mpsc::Sender<Command>,
    notify: watch::Receiver<u64>,
    prefix: String,
    /// Scanned up to here.
    next: u64,
    /// The index of the last change handed out.
    delivered: u64,
    buf: VecDeque<Change>,
}

impl Watch {
    /// The next change; `None` once the node stopped.
    pub async fn next(&mut self) -> Option<Change> {
        loop {
            if let Some(c) = self.buf.pop_front() {
                self.delivered = c.index;
                return Some(c);
            }
            let (tx, rx) = oneshot::channel();
            let cmd = Command::Changes {
                prefix: self.prefix.clone(),
                since: self.next,
                reply: tx,
            };
            self.cmd.send(cmd).await.ok()?;
            let (changes, scanned_to) = rx.await.ok()?;
            self.next = self.next.max(scanned_to);
            if !changes.is_empty() {
                self.buf.extend(changes);
                continue;
            }
            let next = self.next;
            self.notify.wait_for(|i| *i > next).await.ok()?;
        }
    }

    /// The index this watch has delivered up to: resume from it later.
    pub fn index(&self) -> u64 {
        if self.buf.is_empty() {
            self.next
        } else {
            self.delivered
        }
    }
}

/// A write's key, validated against the hard limits here (the replica
/// compares its length with the configured limit, without a second scan).
fn valid(key: impl IntoKey) -> Result<Key, NodeError> {
    key.into_key(KEY_BYTES_MAX)
        .map_err(|e| NodeError::Write(WriteError::Key(e)))
}
