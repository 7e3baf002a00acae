//! `node`: a running Meridian node, and the embedded Rust API.
//!
//! Owns the composition of the layers: a driver task that owns the
//! [`Replica`] and carries out its outputs in order, a store thread that
//! makes persist batches durable with group commit (while one commit is on
//! its way to disk the next group gathers, and every write in a group is
//! acknowledged when its commit returns), the QUIC [`Transport`], and the
//! [`Node`] handle that applications embed. The driver decides nothing: it
//! feeds the replica inputs (client calls, peer messages, connection events,
//! timer ticks) and executes what comes out.

mod commit;
pub mod data_dir;
pub mod history;

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use thiserror::Error;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use self::commit::{CommitReport, StoreThread, COMMIT_RETRY_MS_MAX};
use self::data_dir::{DataDir, NODE_ID_FILE};
use crate::core::codec;
use crate::core::hlc::Hlc;
use crate::core::map::Conflict;
use crate::core::types::{Entry, Hash, Key, Limits, NodeId, Stamp};
use crate::net::faults::{Faults, FaultySocket};
use crate::net::tls::{NodeIdentity, TlsError};
use crate::net::{self, NetEvent, NetMetrics, Transport};
use crate::store::faults::{FaultyStore, StoreFaults};
use crate::store::{Durability, MemoryStore, RedbStore, Store, StoreError};
use crate::sync::membership::{Member, MemberView, Membership, MembershipOutput};
use crate::sync::{
    AckFailure, Config, ConfigError, DurableState, Event, ImportReport, Metrics, Output,
    PartitionPolicy, PersistBatch, Replica, Status, WriteAck, WriteError, WriteReceipt,
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
/// Longest the driver sleeps without ticking the replica.
const TICK_MS_MAX: u64 = 1_000;
/// Recent events kept for status.
pub const EVENTS_KEPT_MAX: usize = 256;

/// Why a node call failed.
#[derive(Debug, Error)]
pub enum NodeError {
    #[error(transparent)]
    Write(#[from] WriteError),
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("tls: {0}")]
    Tls(#[from] TlsError),
    #[error("configuration: {0}")]
    Config(#[from] ConfigError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("data directory {path}: {source}")]
    DataDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("data directory {path}: {reason}")]
    DataDirInvalid { path: PathBuf, reason: String },
    #[error("the node is shut down")]
    Stopped,
    #[error("cannot start the {what} thread: {source}")]
    Thread {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("{}", store_refusal(*disk_full, error))]
    StoreUnavailable { disk_full: bool, error: String },
    /// The write's commit was refused: it is not acknowledged. It is
    /// applied in memory, and becomes durable if the retried commit lands
    /// before the node stops.
    #[error(
        "not acknowledged: the store refused the commit ({}; {error}): the write is applied here \
         and becomes durable only if space returns before the node stops",
        if *disk_full { "the disk is full" } else { "a store error" }
    )]
    NotDurable { disk_full: bool, error: String },
    /// The write is durable here but not as widely as it asked.
    #[error("{0}")]
    NotReplicated(AckFailure),
    /// A read would include records that failed their integrity check.
    #[error(
        "quarantined: {} failed its integrity check and is not served until it is repaired from a peer",
        keys.join(", ")
    )]
    Quarantined { keys: Vec<String> },
    #[error("the store failed and the node stopped: {0}")]
    StoreFailed(String),
    #[error("snapshot: {0}")]
    Snapshot(String),
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

enum Command {
    Put {
        key: String,
        value: Option<Bytes>,
        opts: WriteOptions,
        reply: oneshot::Sender<Result<WriteReceipt, NodeError>>,
    },
    DeletePrefix {
        prefix: String,
        keys_max: usize,
        ack: Option<WriteAck>,
        reply: oneshot::Sender<Result<usize, NodeError>>,
    },
    Get {
        key: String,
        reply: oneshot::Sender<Result<Option<KvEntry>, NodeError>>,
    },
    List {
        prefix: String,
        reply: oneshot::Sender<Result<Vec<KvEntry>, NodeError>>,
    },
    Changes {
        prefix: String,
        since: u64,
        reply: oneshot::Sender<(Vec<Change>, u64)>,
    },
    Status {
        reply: oneshot::Sender<NodeStatus>,
    },
    Digest {
        prefix: String,
        deep: bool,
        reply: oneshot::Sender<DigestReport>,
    },
    Conflicts {
        reply: oneshot::Sender<(Vec<Conflict>, u64)>,
    },
    Snapshot {
        since: u64,
        reply: oneshot::Sender<Result<Snapshot, NodeError>>,
    },
    Import {
        entries: Vec<(Key, Entry)>,
        reply: oneshot::Sender<Result<ImportReport, NodeError>>,
    },
    Hashes {
        prefix: String,
        reply: oneshot::Sender<Vec<KeyHash>>,
    },
    Promote {
        reply: oneshot::Sender<()>,
    },
    History {
        key: String,
        reply: oneshot::Sender<Vec<history::Version>>,
    },
    Shutdown {
        reply: oneshot::Sender<()>,
    },
}

type Tune = Box<dyn FnOnce(&mut Config) + Send>;
/// An answer to send once every persist issued before it is durable (or
/// with the error that stopped the node).
type Barrier = Box<dyn FnOnce(Result<(), NodeError>) + Send>;

/// Builds a [`Node`].
pub struct NodeBuilder {
    name: String,
    region: String,
    identity: NodeIdentity,
    data_dir: Option<PathBuf>,
    listen: SocketAddr,
    seeds: Vec<SocketAddr>,
    durability: Durability,
    limits: Limits,
    policy: PartitionPolicy,
    history: (usize, usize),
    tune: Vec<Tune>,
    faults: Option<Arc<Faults>>,
    store_faults: Option<Arc<StoreFaults>>,
    check_store_on_open: bool,
    advertise: Option<SocketAddr>,
    cluster: Option<crate::core::codec::ClusterId>,
}

/// Chunks of records read ahead of the map being built on a restart.
const RESTORE_CHUNKS_QUEUED_MAX: usize = 8;

/// Builds the replica from the store's records on this thread while another
/// thread reads them: reading and building take about as long each, so a
/// restart takes about half as long on two cores.
fn restore_replica(
    store: &dyn Store,
    cfg: Config,
    state: DurableState,
    records_len: u64,
) -> Result<Replica, NodeError> {
    let (tx, rx) = std::sync::mpsc::sync_channel(RESTORE_CHUNKS_QUEUED_MAX);
    std::thread::scope(|s| {
        // A send fails once the builder has stopped taking records (it
        // refused the state): the reader stops too.
        let reader = s.spawn(move || store.load_records(&mut |chunk| tx.send(chunk).is_ok()));
        let records = Expected {
            inner: rx.into_iter().flatten(),
            remaining: usize::try_from(records_len).unwrap_or(0),
        };
        let replica = Replica::restore_from(cfg, state, records, now_ms());
        match reader.join() {
            Ok(read) => read?,
            Err(panic) => std::panic::resume_unwind(panic),
        }
        Ok(replica?)
    })
}

/// Opens the store in `data` and restores the replica from it, under the
/// node id the directory names (see [`data_dir`]). A store that cannot be
/// read is moved aside when the directory names its node: the node starts
/// empty under that id and rebuilds from a peer.
fn load_data_dir(
    data: &DataDir,
    durability: Durability,
    check_on_open: bool,
    mut cfg: Config,
) -> Result<(Box<dyn Store>, Replica), NodeError> {
    let named = data.node_id()?;
    let path = data.store_path();
    let existed = path.exists();
    let attempt = (|| -> Result<(Box<dyn Store>, Option<Replica>), NodeError> {
        let mut store = RedbStore::open_with(&path, durability, check_on_open)?;
        let state = store.load_meta()?;
        let keys = store.records_len()?;
        match (named, state.node) {
            (Some(n), NodeId(0)) => {
                // The directory held node n, its store holds nothing: the
                // store was lost (deleted, or never written).
                store.set_node(n)?;
                cfg.node = n;
                if existed && keys > 0 {
                    return Err(NodeError::DataDirInvalid {
                        path: path.clone(),
                        reason: "the store holds records but no node id".to_string(),
                    });
                }
                Ok((Box::new(store), None))
            }
            (Some(n), found) if found != n => Err(NodeError::Store(StoreError::WrongNode {
                path: path.clone(),
                expected: n,
                found,
            })),
            (_, found) => {
                let node = if found == NodeId(0) {
                    let id = NodeId(random_u64() | 1);
                    store.set_node(id)?;
                    id
                } else {
                    found
                };
                if named.is_none() {
                    data.set_node_id(node)?;
                }
                cfg.node = node;
                let replica = restore_replica(&store, cfg.clone(), state, keys)?;
                Ok((Box::new(store), Some(replica)))
            }
        }
    })();
    let reason = match attempt {
        Ok((store, Some(replica))) => return Ok((store, replica)),
        Ok((store, None)) => {
            let mut replica = Replica::new(cfg, now_ms())?;
            tracing::error!(node = %replica.node(), "the store is missing: rebuilding it from a peer");
            replica.store_lost();
            return Ok((store, replica));
        }
        Err(NodeError::Store(StoreError::Damaged { reason, .. })) => reason,
        Err(e) => return Err(e),
    };
    let Some(node) = named else {
        return Err(NodeError::DataDirInvalid {
            path,
            reason: format!(
                "{reason}; and {NODE_ID_FILE} does not say which node this directory held: \
                 move the file away to start a new node, or restore a backup"
            ),
        });
    };
    let moved = data.move_aside(now_ms())?;
    tracing::error!(
        %node,
        moved_to = ?moved,
        "the store cannot be read ({reason}): moved aside; rebuilding it from a peer"
    );
    let mut store = RedbStore::open_with(&path, durability, check_on_open)?;
    store.set_node(node)?;
    cfg.node = node;
    let mut replica = Replica::new(cfg, now_ms())?;
    replica.store_lost();
    Ok((Box::new(store), replica))
}

/// An iterator that says how many items to expect (for reserving space);
/// fewer may come if the source fails.
struct Expected<I> {
    inner: I,
    remaining: usize,
}

impl<I: Iterator> Iterator for Expected<I> {
    type Item = I::Item;

    fn next(&mut self) -> Option<I::Item> {
        let item = self.inner.next()?;
        self.remaining = self.remaining.saturating_sub(1);
        Some(item)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.remaining, None)
    }
}

impl NodeBuilder {
    /// The address other members are told to reach this node on (default:
    /// the bound address, with 127.0.0.1 for an unspecified IP).
    pub fn advertise(mut self, addr: SocketAddr) -> Self {
        self.advertise = Some(addr);
        self
    }

    /// The cluster id (default: derived from the CA certificate). Two
    /// clusters may share a CA; peers of another cluster id are refused.
    pub fn cluster_id(mut self, id: crate::core::codec::ClusterId) -> Self {
        self.cluster = Some(id);
        self
    }

    /// Runs QUIC over a socket that applies `faults` (tests, benchmarks).
    pub fn faults(mut self, faults: Arc<Faults>) -> Self {
        self.faults = Some(faults);
        self
    }

    /// Runs the store behind a switch that can make its writes fail as a
    /// full disk does (tests, demonstrations).
    pub fn store_faults(mut self, faults: Arc<StoreFaults>) -> Self {
        self.store_faults = Some(faults);
        self
    }

    /// Verifies every page checksum of the store file when opening it
    /// (about two reads of the file; default off: every record is checked
    /// against its own check as it is loaded either way).
    pub fn check_store_on_open(mut self, check: bool) -> Self {
        self.check_store_on_open = check;
        self
    }

    /// Where the node keeps its database; without it, state lives in memory only.
    pub fn data_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.data_dir = Some(dir.into());
        self
    }

    /// The UDP address peers reach this node on (default `127.0.0.1:0`).
    pub fn listen(mut self, addr: SocketAddr) -> Self {
        self.listen = addr;
        self
    }

    /// Peers to connect to; connections are kept up and redialed.
    pub fn seeds(mut self, seeds: impl IntoIterator<Item = SocketAddr>) -> Self {
        self.seeds.extend(seeds);
        self
    }

    pub fn durability(mut self, d: Durability) -> Self {
        self.durability = d;
        self
    }

    /// Keeps the last `versions_max` versions of each key, at most
    /// `bytes_max` bytes in all (see [`history`]). Default 10 and 64 MiB.
    pub fn history(mut self, versions_max: usize, bytes_max: usize) -> Self {
        self.history = (versions_max, bytes_max);
        self
    }

    /// Starts as a standby: it replicates but refuses client writes until
    /// [`Node::promote`].
    pub fn standby(mut self, standby: bool) -> Self {
        self.tune
            .push(Box::new(move |c: &mut Config| c.standby = standby));
        self
    }

    /// Tells peers where this node's HTTP API listens (for `meridian verify` and status).
    pub fn api_addr(mut self, addr: SocketAddr) -> Self {
        self.tune
            .push(Box::new(move |c: &mut Config| c.api = addr.to_string()));
        self
    }

    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    pub fn partition_policy(mut self, p: PartitionPolicy) -> Self {
        self.policy = p;
        self
    }

    /// Adjusts the replica's configuration (timers, batch sizes) before start.
    pub fn tune(mut self, f: impl FnOnce(&mut Config) + Send + 'static) -> Self {
        self.tune.push(Box::new(f));
        self
    }

    /// Opens the store, binds the endpoint and starts the node.
    pub async fn start(self) -> Result<Node, NodeError> {
        let started = Instant::now();
        let cluster = match self.cluster {
            Some(c) => c,
            None => self.identity.cluster_id()?,
        };
        // The node id is set once the store (or the data directory) names it.
        let mut cfg = Config::new(NodeId(0), &self.name, &self.region, cluster);
        cfg.limits = self.limits;
        cfg.partition_policy = self.policy;
        cfg.rng_seed = random_u64();
        // Without seeds this node founds a cluster: there is no one to rebuild from.
        cfg.rebuild_when_empty = !self.seeds.is_empty();
        for f in self.tune {
            f(&mut cfg);
        }
        let api_addr = cfg.api.clone();
        let (mut store, replica) = match &self.data_dir {
            Some(dir) => load_data_dir(
                &DataDir::open(dir)?,
                self.durability,
                self.check_store_on_open,
                cfg,
            )?,
            None => {
                cfg.node = NodeId(random_u64() | 1);
                let mut store = MemoryStore::new();
                store.set_node(cfg.node)?;
                (
                    Box::new(store) as Box<dyn Store>,
                    Replica::new(cfg, now_ms())?,
                )
            }
        };
        if let Some(f) = self.store_faults {
            store = Box::new(FaultyStore::new(store, f));
        }
        let node_id = replica.node();
        let keys = replica.map().len();
        if keys > 0 {
            tracing::info!(
                keys,
                ms = started.elapsed().as_millis() as u64,
                "state loaded from disk"
            );
        }
        let (server, client) = self.identity.quic_configs()?;
        let listen_err = |source| NodeError::Listen {
            addr: self.listen,
            source,
        };
        let runtime: Arc<dyn quinn::Runtime> = Arc::new(quinn::TokioRuntime);
        let udp = std::net::UdpSocket::bind(self.listen).map_err(listen_err)?;
        let mut socket = runtime.wrap_udp_socket(udp).map_err(listen_err)?;
        if let Some(f) = self.faults {
            socket = Arc::new(FaultySocket::new(socket, f));
        }
        let mut endpoint = quinn::Endpoint::new_with_abstract_socket(
            quinn::EndpointConfig::default(),
            Some(server),
            socket,
            runtime,
        )
        .map_err(listen_err)?;
        endpoint.set_default_client_config(client);
        let local_addr = endpoint.local_addr().map_err(|source| NodeError::Listen {
            addr: self.listen,
            source,
        })?;
        let (net_tx, net_rx) = mpsc::channel(NET_QUEUE_MAX);
        let transport = Transport::new(
            endpoint.clone(),
            cluster,
            node_id,
            &self.name,
            &self.region,
            net_tx,
        );
        tokio::spawn(transport.clone().accept_loop());
        for seed in &self.seeds {
            tokio::spawn(transport.clone().dial_loop(*seed, None));
        }
        let mut advertise = self.advertise.unwrap_or(local_addr);
        if advertise.ip().is_unspecified() {
            advertise.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
        }
        let me = Member {
            node: node_id,
            name: self.name.clone(),
            region: self.region.clone(),
            addr: advertise.to_string(),
            bump: 0,
        };
        let membership = Membership::new(me, self.seeds.len() as u32 + 1, false, random_u64());
        let (timer_tx, timer_rx) = mpsc::channel(NET_QUEUE_MAX);
        let (commit_tx, commit_rx) = mpsc::channel(16);
        let started_ms = now_ms();
        let store_thread = StoreThread::spawn(&self.name, store, commit_tx).map_err(|source| {
            NodeError::Thread {
                what: "store",
                source,
            }
        })?;
        let (cmd_tx, cmd_rx) = mpsc::channel(COMMAND_QUEUE_MAX);
        let (events_tx, _) = tokio::sync::broadcast::channel(EVENTS_BUFFERED_MAX);
        let (notify_tx, notify_rx) = watch::channel(replica.map().index());
        let driver = Driver {
            me: node_id,
            replica,
            metrics: transport.metrics.clone(),
            transport,
            conns: HashMap::new(),
            queue: VecDeque::new(),
            issued: 0,
            done: 0,
            group: Vec::new(),
            committing: false,
            commits: 0,
            commit_latency: Histogram::default(),
            started_ms,
            store: store_thread,
            store_trouble: None,
            pending: HashMap::new(),
            group_of: HashMap::new(),
            groups: HashMap::new(),
            next_group: 0,
            barriers: VecDeque::new(),
            events_tx: events_tx.clone(),
            history: history::History::new(self.history.0, self.history.1),
            notify: notify_tx,
            events: VecDeque::new(),
            failed: None,
            membership,
            timer_tx,
            wanted: Arc::new(Mutex::new(HashSet::new())),
            dialing: HashSet::new(),
            seeds: self.seeds.iter().copied().collect(),
            refused: Vec::new(),
        };
        let task = tokio::spawn(driver.run(cmd_rx, net_rx, commit_rx, timer_rx));
        Ok(Node {
            id: node_id,
            name: self.name.clone(),
            region: self.region.clone(),
            cluster,
            api_addr,
            events: events_tx,
            cmd: cmd_tx,
            notify: notify_rx,
            local_addr,
            endpoint,
            task: Mutex::new(Some(task)),
        })
    }
}

/// A running node (see the module docs). Cheap calls go through the
/// driver's queue; drop or [`Node::shutdown`] stops it.
pub struct Node {
    id: NodeId,
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
            history: (
                history::HISTORY_VERSIONS_MAX_DEFAULT,
                history::HISTORY_BYTES_MAX_DEFAULT,
            ),
            tune: Vec::new(),
            faults: None,
            store_faults: None,
            check_store_on_open: false,
            advertise: None,
            cluster: None,
        }
    }

    pub fn id(&self) -> NodeId {
        self.id
    }

    pub fn name(&self) -> &str {
        &self.name
    }

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
    pub async fn put(&self, key: &str, value: impl Into<Bytes>) -> Result<WriteReceipt, NodeError> {
        self.put_with(key, value, 0, None).await
    }

    /// Writes with Consul flags and an optional check-and-set index (0: only if absent).
    pub async fn put_with(
        &self,
        key: &str,
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
        key: &str,
        value: impl Into<Bytes>,
        opts: WriteOptions,
    ) -> Result<WriteReceipt, NodeError> {
        // The map keeps an exact copy: a value sliced from a larger buffer
        // (an HTTP request's read buffer, a Vec with spare capacity) would
        // keep all of that buffer alive for as long as the key holds it.
        let value: Bytes = value.into();
        let value = Some(Bytes::copy_from_slice(&value));
        let key = key.to_string();
        self.call(|reply| Command::Put {
            key,
            value,
            opts,
            reply,
        })
        .await?
    }

    /// Deletes `key` (a tombstone); returns once durable.
    pub async fn delete(&self, key: &str) -> Result<WriteReceipt, NodeError> {
        self.delete_with(key, None).await
    }

    /// Deletes `key` if its modify index is `cas` (when given).
    pub async fn delete_with(
        &self,
        key: &str,
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
        key: &str,
        opts: WriteOptions,
    ) -> Result<WriteReceipt, NodeError> {
        let key = key.to_string();
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
    /// See [`Replica::delete_prefix`].
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

    /// The kept conflicts (oldest first) and how many were seen since start.
    pub async fn conflicts(&self) -> Result<(Vec<Conflict>, u64), NodeError> {
        self.call(|reply| Command::Conflicts { reply }).await
    }

    /// A consistent copy of the entries changed after `since` (0: all),
    /// with the index and root of that instant. Cheap per entry (keys and
    /// values are shared, not copied); the driver pauses while it is taken.
    pub async fn snapshot(&self, since: u64) -> Result<Snapshot, NodeError> {
        self.call(|reply| Command::Snapshot { since, reply })
            .await?
    }

    /// Merges backup entries as replicated state (see
    /// [`Replica::import`]); returns once they are durable.
    pub async fn import(&self, entries: Vec<(Key, Entry)>) -> Result<ImportReport, NodeError> {
        self.call(|reply| Command::Import { entries, reply })
            .await?
    }

    /// Every key under `prefix`, tombstones included, with its stamp and entry hash.
    pub async fn hashes(&self, prefix: &str) -> Result<Vec<KeyHash>, NodeError> {
        let prefix = prefix.to_string();
        self.call(|reply| Command::Hashes { prefix, reply }).await
    }

    /// Reads `key` from this node's state.
    pub async fn get(&self, key: &str) -> Result<Option<KvEntry>, NodeError> {
        let key = key.to_string();
        self.call(|reply| Command::Get { key, reply }).await?
    }

    /// Every live key under `prefix`, in key order. Fails while a key under
    /// it is quarantined (see [`NodeError::Quarantined`]).
    pub async fn list(&self, prefix: &str) -> Result<Vec<KvEntry>, NodeError> {
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

struct Conn {
    id: u64,
    dialed: bool,
    tx: mpsc::Sender<Vec<u8>>,
    connection: quinn::Connection,
}

struct Driver {
    me: NodeId,
    replica: Replica,
    transport: Transport,
    metrics: Arc<NetMetrics>,
    conns: HashMap<NodeId, Conn>,
    /// Outputs waiting for the persist numbered by their first field.
    queue: VecDeque<(u64, Output)>,
    /// Persists seen, and persists durable.
    issued: u64,
    done: u64,
    group: Vec<PersistBatch>,
    committing: bool,
    commits: u64,
    commit_latency: Histogram,
    started_ms: u64,
    store: StoreThread,
    /// Set while the store refuses commits (a full disk): writes are
    /// refused, reads served, replication paused, the commit retried.
    store_trouble: Option<StoreTrouble>,
    pending: HashMap<Stamp, oneshot::Sender<Result<WriteReceipt, NodeError>>>,
    /// Quorum prefix deletes: each tombstone's group, and per group the
    /// tombstones not yet acknowledged and the answer.
    group_of: HashMap<Stamp, u64>,
    groups: HashMap<u64, (usize, Barrier)>,
    next_group: u64,
    events_tx: tokio::sync::broadcast::Sender<NodeEvent>,
    history: history::History,
    /// Imports waiting for the persist numbered by their first field.
    barriers: VecDeque<(u64, Barrier)>,
    notify: watch::Sender<u64>,
    events: VecDeque<Event>,
    failed: Option<String>,
    membership: Membership,
    timer_tx: mpsc::Sender<foca::Timer<Member>>,
    /// Addresses of members to keep connected to (seeds are dialed forever).
    wanted: Arc<Mutex<HashSet<SocketAddr>>>,
    dialing: HashSet<SocketAddr>,
    seeds: HashSet<SocketAddr>,
    /// Peers refused by the replica, to report as disconnected.
    refused: Vec<NodeId>,
}

/// Fault injection: `MERIDIAN_FAULT_CLOCK_SKEW_MS` (signed ms) moves this
/// process's physical clock, as libfaketime would, for the tests of clocks
/// that run fast or slow. Read once.
pub const CLOCK_SKEW_ENV: &str = "MERIDIAN_FAULT_CLOCK_SKEW_MS";

fn clock_skew_ms() -> i64 {
    static SKEW: std::sync::OnceLock<i64> = std::sync::OnceLock::new();
    *SKEW.get_or_init(|| {
        std::env::var(CLOCK_SKEW_ENV)
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    })
}

/// The physical time the node runs on (ms since the epoch).
pub(crate) fn now_ms() -> u64 {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    ms.saturating_add_signed(clock_skew_ms())
}

fn random_u64() -> u64 {
    use ring::rand::SecureRandom;
    let mut b = [0u8; 8];
    if ring::rand::SystemRandom::new().fill(&mut b).is_err() {
        // No OS randomness: fall back to the clock, still unique enough for an id.
        return blake3::hash(&now_ms().to_le_bytes()).as_bytes()[0] as u64 | (now_ms() << 8);
    }
    u64::from_le_bytes(b)
}

impl Driver {
    async fn run(
        mut self,
        mut cmd_rx: mpsc::Receiver<Command>,
        mut net_rx: mpsc::Receiver<NetEvent>,
        mut commit_rx: mpsc::Receiver<CommitReport>,
        mut timer_rx: mpsc::Receiver<foca::Timer<Member>>,
    ) {
        let mut shutdown: Option<oneshot::Sender<()>> = None;
        loop {
            // At least once a second, also when the clock went back and
            // the replica's deadlines lie far ahead.
            let wait = self
                .replica
                .next_timeout()
                .saturating_sub(now_ms())
                .min(TICK_MS_MAX);
            tokio::select! {
                biased;
                done = commit_rx.recv() => match done {
                    Some(CommitReport::Done { seq, us }) => {
                        self.commit_latency.record(us);
                        self.committed(seq);
                    }
                    Some(CommitReport::Failed { seq, error, disk_full }) => {
                        self.commit_failed(seq, error, disk_full);
                    }
                    Some(CommitReport::ReadBack { key, found }) => {
                        self.replica.read_back(&key, found, now_ms());
                    }
                    None => {
                        self.committing = false;
                        self.failed = Some("the store thread stopped".to_string());
                    }
                },
                cmd = cmd_rx.recv(), if shutdown.is_none() => match cmd {
                    None => shutdown = Some(oneshot::channel().0),
                    Some(Command::Shutdown { reply }) => shutdown = Some(reply),
                    Some(c) => self.command(c),
                },
                // While the store refuses commits, replication waits (the
                // transport's bounded queues hold or drop what comes).
                Some(ev) = net_rx.recv(), if self.store_trouble.is_none() => self.net(ev),
                Some(t) = timer_rx.recv() => {
                    if let Err(e) = self.membership.handle_timer(t) {
                        tracing::debug!("{e}");
                    }
                }
                _ = tokio::time::sleep(Duration::from_millis(wait)), if self.store_trouble.is_none() => {
                    self.replica.tick(now_ms())
                }
                _ = tokio::time::sleep(Duration::from_millis(COMMIT_RETRY_MS_MAX)), if self.store_trouble.is_some() => {}
            }
            // Timers run even while inputs never stop coming.
            let now = now_ms();
            if self.store_trouble.is_none() && self.replica.next_timeout() <= now {
                self.replica.tick(now);
            }
            loop {
                self.membership_outputs();
                self.absorb();
                self.flush();
                if self.refused.is_empty() {
                    break;
                }
                for peer in std::mem::take(&mut self.refused) {
                    self.replica.disconnected(peer, now_ms());
                }
            }
            // A commit the disk refuses is not waited for at shutdown: what
            // it holds was never acknowledged.
            let settled =
                self.store_trouble.is_some() || (!self.committing && self.group.is_empty());
            if self.failed.is_some() || (shutdown.is_some() && settled) {
                break;
            }
        }
        self.transport
            .endpoint
            .close(net::CLOSE_SHUTDOWN.into(), b"shutdown");
        self.store.stop().await;
        if let Some(t) = &self.store_trouble {
            self.failed = Some(format!(
                "the node stopped while its store refused commits: {}",
                t.error
            ));
        }
        let err = self
            .failed
            .clone()
            .unwrap_or_else(|| "the node is shut down".to_string());
        for (_, reply) in self.pending.drain() {
            let _ = reply.send(Err(NodeError::StoreFailed(err.clone())));
        }
        self.group_of.clear();
        for (_, (_, answer)) in self.groups.drain() {
            answer(Err(NodeError::StoreFailed(err.clone())));
        }
        for (_, answer) in self.barriers.drain(..) {
            answer(Err(NodeError::StoreFailed(err.clone())));
        }
        if let Some(reply) = shutdown {
            let _ = reply.send(());
        }
    }

    /// Moves the replica's outputs into the queue; persists join the next group.
    fn absorb(&mut self) {
        while let Some(o) = self.replica.poll_output() {
            match o {
                Output::Persist(b) => {
                    self.issued += 1;
                    self.history.record(&b);
                    self.group.push(b);
                }
                other => self.queue.push_back((self.issued, other)),
            }
        }
    }

    /// Starts the next group commit if none is running, and carries out every output already durable.
    fn flush(&mut self) {
        if !self.committing && !self.group.is_empty() {
            let group = std::mem::take(&mut self.group);
            if self.store.send(group, self.issued) {
                self.committing = true;
            } else {
                self.failed = Some("the store thread stopped".to_string());
            }
        }
        while self.queue.front().is_some_and(|(seq, _)| *seq <= self.done) {
            let (_, o) = self.queue.pop_front().expect("checked");
            self.execute(o);
        }
        while self
            .barriers
            .front()
            .is_some_and(|(seq, ..)| *seq <= self.done)
        {
            let (_, answer) = self.barriers.pop_front().expect("checked");
            answer(Ok(()));
        }
    }

    fn committed(&mut self, seq: u64) {
        self.committing = false;
        self.commits += 1;
        self.done = seq;
        if let Some(t) = self.store_trouble.take() {
            tracing::warn!(
                lasted_ms = now_ms().saturating_sub(t.since_ms),
                "the store takes commits again: writes resume"
            );
        }
    }

    /// The store refused a commit; the store thread retries it.
    fn commit_failed(&mut self, seq: u64, error: String, disk_full: bool) {
        let since_ms = self
            .store_trouble
            .as_ref()
            .map_or_else(now_ms, |t| t.since_ms);
        tracing::error!(
            seq,
            disk_full,
            "commit refused: refusing writes, serving reads: {error}"
        );
        // Clients waiting on writes in the refused group hear now, not when
        // space returns: their writes are not acknowledged (they are applied
        // here, and durable if the retried commit lands).
        for (_, reply) in self.pending.drain() {
            let _ = reply.send(Err(NodeError::NotDurable {
                disk_full,
                error: error.clone(),
            }));
        }
        self.group_of.clear();
        for (_, (_, answer)) in self.groups.drain() {
            answer(Err(NodeError::NotDurable {
                disk_full,
                error: error.clone(),
            }));
        }
        for (_, answer) in self.barriers.drain(..) {
            answer(Err(NodeError::NotDurable {
                disk_full,
                error: error.clone(),
            }));
        }
        self.store_trouble = Some(StoreTrouble {
            since_ms,
            error,
            disk_full,
        });
    }

    fn execute(&mut self, o: Output) {
        match o {
            Output::Persist(_) => unreachable!("persists never enter the queue"),
            Output::Send { to, msg } => {
                let Some(c) = self.conns.get(&to) else { return };
                match codec::encode(&msg) {
                    Ok(frame) => net::try_send(&c.tx, frame, &self.metrics),
                    Err(e) => tracing::error!("cannot encode a {} message: {e}", msg.kind()),
                }
            }
            Output::Acknowledge(r) => {
                if let Some(reply) = self.pending.remove(&r.stamp) {
                    let _ = reply.send(Ok(r));
                } else if let Some(group) = self.group_of.remove(&r.stamp) {
                    let left = self.groups.get_mut(&group).map(|(left, _)| {
                        *left -= 1;
                        *left
                    });
                    if left == Some(0) {
                        if let Some((_, answer)) = self.groups.remove(&group) {
                            answer(Ok(()));
                        }
                    }
                }
            }
            Output::Unacknowledged { receipt, reason } => {
                if let Some(reply) = self.pending.remove(&receipt.stamp) {
                    let _ = reply.send(Err(NodeError::NotReplicated(reason)));
                } else if let Some(group) = self.group_of.remove(&receipt.stamp) {
                    // One is enough to fail the whole delete (the rest of
                    // its tombstones find no group).
                    if let Some((_, answer)) = self.groups.remove(&group) {
                        answer(Err(NodeError::NotReplicated(reason)));
                    }
                }
            }
            Output::Notify { index } => {
                self.notify.send_replace(index);
            }
            Output::ReadBack { key } => {
                // Queued behind the commits before it: it reads what they wrote.
                if !self.store.read_back(key.clone()) {
                    self.replica.read_back(&key, None, now_ms());
                }
            }
            Output::Disconnect { peer, reason } => {
                self.metrics.peers_refused.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%peer, "refused peer: {reason}");
                if let Some(c) = self.conns.remove(&peer) {
                    c.connection
                        .close(net::CLOSE_REFUSED.into(), reason.to_string().as_bytes());
                }
                // Its Down event will no longer match a connection: tell the replica now.
                self.refused.push(peer);
            }
            Output::Event(e) => {
                tracing::info!("event: {e:?}");
                let _ = self.events_tx.send(NodeEvent {
                    at_ms: now_ms(),
                    kind: EventKind::Replica(e.clone()),
                });
                if self.events.len() == EVENTS_KEPT_MAX {
                    self.events.pop_front();
                }
                self.events.push_back(e);
            }
        }
    }

    /// Carries out what membership decided: packets, timers, members up and down.
    fn membership_outputs(&mut self) {
        for o in self.membership.drain() {
            match o {
                MembershipOutput::Send { to, data } => match self.conns.get(&to.node) {
                    Some(c) => {
                        let _ = c.connection.send_datagram(Bytes::from(data));
                    }
                    None => self.want(&to.addr),
                },
                MembershipOutput::Timer { timer, after_ms } => {
                    let tx = self.timer_tx.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(Duration::from_millis(after_ms)).await;
                        let _ = tx.send(timer).await;
                    });
                }
                MembershipOutput::Up(m) => {
                    if m.node != self.me {
                        self.replica.add_member(m.node, &m.region);
                        self.want(&m.addr);
                    }
                }
                MembershipOutput::Down(m) => {
                    if let Ok(addr) = m.addr.parse::<SocketAddr>() {
                        self.wanted
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .remove(&addr);
                        self.dialing.remove(&addr);
                    }
                }
            }
        }
    }

    /// Keeps a connection to a member's address (a dial loop, until it is down).
    fn want(&mut self, addr: &str) {
        let Ok(addr) = addr.parse::<SocketAddr>() else {
            tracing::debug!("member address {addr:?} does not parse");
            return;
        };
        if self.seeds.contains(&addr)
            || addr == self.transport.endpoint.local_addr().unwrap_or(addr)
        {
            return;
        }
        self.wanted
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(addr);
        if self.dialing.insert(addr) {
            tokio::spawn(
                self.transport
                    .clone()
                    .dial_loop(addr, Some(self.wanted.clone())),
            );
        }
    }

    fn net(&mut self, ev: NetEvent) {
        let now = now_ms();
        match ev {
            NetEvent::Datagram { conn, node, data } => {
                if self.conns.get(&node).is_some_and(|c| c.id == conn) {
                    if let Err(e) = self.membership.handle_data(&data) {
                        self.metrics
                            .malformed_frames
                            .fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(peer = %node, "{e}");
                    }
                }
            }
            NetEvent::Up {
                conn,
                node,
                name,
                region,
                dialed,
                tx,
                connection,
            } => {
                self.replica.add_member(node, &region);
                let member = Member {
                    node,
                    name,
                    region,
                    addr: connection.remote_address().to_string(),
                    bump: 0,
                };
                if let Err(e) = self.membership.announce(member) {
                    tracing::debug!("{e}");
                }
                let new = Conn {
                    id: conn,
                    dialed,
                    tx,
                    connection,
                };
                // One connection per pair: both sides keep the one dialed by the smaller id.
                let preferred = |c: &Conn| c.dialed == (self.me < node);
                match self.conns.remove(&node) {
                    Some(old) if preferred(&old) || !preferred(&new) => {
                        new.connection
                            .close(net::CLOSE_DUPLICATE.into(), b"duplicate");
                        self.conns.insert(node, old);
                    }
                    Some(old) => {
                        old.connection
                            .close(net::CLOSE_DUPLICATE.into(), b"duplicate");
                        self.conns.insert(node, new);
                        self.replica.reconnected(node, now);
                    }
                    None => {
                        self.conns.insert(node, new);
                        self.replica.connected(node, now);
                    }
                }
            }
            NetEvent::Message { conn, node, msg } => {
                if self.conns.get(&node).is_some_and(|c| c.id == conn) {
                    self.replica.handle(node, msg, now);
                }
            }
            NetEvent::Down { conn, node } => {
                if self.conns.get(&node).is_some_and(|c| c.id == conn) {
                    self.conns.remove(&node);
                    self.replica.disconnected(node, now);
                }
            }
        }
    }

    /// Why client writes cannot be taken now, if they cannot.
    fn writes_refused(&self) -> Option<NodeError> {
        if let Some(e) = &self.failed {
            return Some(NodeError::StoreFailed(e.clone()));
        }
        self.store_trouble
            .as_ref()
            .map(|t| NodeError::StoreUnavailable {
                disk_full: t.disk_full,
                error: t.error.clone(),
            })
    }

    fn command(&mut self, c: Command) {
        let now = now_ms();
        match c {
            Command::Put {
                key,
                value,
                opts,
                reply,
            } => {
                if let Some(e) = self.writes_refused() {
                    let _ = reply.send(Err(e));
                    return;
                }
                let ack = opts.ack.unwrap_or(self.replica.config().write_ack);
                let r = match value {
                    Some(v) => self
                        .replica
                        .put_acked(&key, v, opts.flags, opts.cas, ack, now),
                    None => self.replica.delete_acked(&key, opts.cas, ack, now),
                };
                match r {
                    Ok(receipt) => {
                        self.pending.insert(receipt.stamp, reply);
                    }
                    Err(e) => {
                        let _ = reply.send(Err(e.into()));
                    }
                }
            }
            Command::DeletePrefix {
                prefix,
                keys_max,
                ack,
                reply,
            } => {
                if let Some(e) = self.writes_refused() {
                    let _ = reply.send(Err(e));
                    return;
                }
                let ack = ack.unwrap_or(self.replica.config().write_ack);
                match self
                    .replica
                    .delete_prefix_acked(&prefix, keys_max, ack, now)
                {
                    Ok(receipts) => {
                        let n = receipts.len();
                        let answer: Barrier = Box::new(move |r| {
                            let _ = reply.send(r.map(|()| n));
                        });
                        if ack == WriteAck::Quorum && n > 0 {
                            // Answered once every tombstone is acknowledged.
                            let group = self.next_group;
                            self.next_group += 1;
                            for r in &receipts {
                                self.group_of.insert(r.stamp, group);
                            }
                            self.groups.insert(group, (n, answer));
                        } else {
                            // Answered once the tombstones are durable.
                            self.absorb();
                            self.barriers.push_back((self.issued, answer));
                        }
                    }
                    Err(e) => {
                        let _ = reply.send(Err(e.into()));
                    }
                }
            }
            Command::Get { key, reply } => {
                // Checked before it is served: a damaged record is
                // quarantined, and reads of it fail until it is repaired.
                if !self.replica.check_before_serving(&key, now) {
                    let _ = reply.send(Err(NodeError::Quarantined { keys: vec![key] }));
                    return;
                }
                let e = self.replica.get(&key).and_then(|r| live(&key, r));
                let _ = reply.send(Ok(e));
            }
            Command::List { prefix, reply } => {
                let keys =
                    self.replica
                        .check_prefix_before_serving(&prefix, QUARANTINED_NAMED_MAX, now);
                if !keys.is_empty() {
                    let _ = reply.send(Err(NodeError::Quarantined { keys }));
                    return;
                }
                let list = self
                    .replica
                    .map()
                    .scan_prefix(&prefix)
                    .filter_map(|(k, r)| live(k.as_str(), r))
                    .collect();
                let _ = reply.send(Ok(list));
            }
            Command::Changes {
                prefix,
                since,
                reply,
            } => {
                // Only durable changes: an index seen by a watch is never
                // reused after a crash. Everything up to `scanned_to` was looked at.
                let durable = *self.notify.borrow();
                let mut scanned_to = durable.min(self.replica.map().index());
                let mut out = Vec::new();
                for (n, (i, current)) in self.replica.map().feed_since(since).enumerate() {
                    if i > durable {
                        break;
                    }
                    // Bounded work per command: a long feed is scanned in
                    // slices, other commands run between them.
                    if out.len() == WATCH_BATCH_MAX || n == WATCH_SCAN_MAX {
                        scanned_to = i - 1;
                        break;
                    }
                    let Some((k, r)) = current else {
                        continue;
                    };
                    if k.as_str().starts_with(&prefix) {
                        out.push(Change {
                            index: i,
                            key: k.to_string(),
                            value: r.entry.value.clone(),
                            flags: r.entry.flags,
                            stamp: r.entry.stamp,
                        });
                    }
                }
                let _ = reply.send((out, scanned_to.max(since)));
            }
            Command::Status { reply } => {
                let m = &self.metrics;
                let status = NodeStatus {
                    replica: self.replica.status(),
                    metrics: self.replica.metrics().clone(),
                    frames_in: m.frames_in.load(Ordering::Relaxed),
                    frames_out: m.frames_out.load(Ordering::Relaxed),
                    bytes_in: m.bytes_in.load(Ordering::Relaxed),
                    bytes_out: m.bytes_out.load(Ordering::Relaxed),
                    frames_dropped: m.frames_dropped_queue_full.load(Ordering::Relaxed),
                    malformed_frames: m.malformed_frames.load(Ordering::Relaxed),
                    peers_refused: m.peers_refused.load(Ordering::Relaxed),
                    commits: self.commits,
                    recent_events: self.events.iter().cloned().collect(),
                    members: self.membership.view(),
                    now_ms: now,
                    started_ms: self.started_ms,
                    commit_latency: self.commit_latency.clone(),
                    store_trouble: self.store_trouble.clone(),
                };
                let _ = reply.send(status);
            }
            Command::Digest {
                prefix,
                deep,
                reply,
            } => {
                let (damaged_found, digest_repaired) = if deep {
                    self.replica.verify_all(now)
                } else {
                    (0, false)
                };
                let root = if prefix.is_empty() {
                    self.replica.root()
                } else {
                    self.replica.map().prefix_digest(&prefix)
                };
                let _ = reply.send(DigestReport {
                    root,
                    deep,
                    damaged_found,
                    digest_repaired,
                    quarantined: self.replica.quarantined_count(),
                });
            }
            Command::Snapshot { since, reply } => {
                let removed = if since == 0 {
                    Vec::new()
                } else if let Some(r) = self.replica.map().removed_since(since) {
                    r
                } else {
                    let _ = reply.send(Err(NodeError::Snapshot(format!(
                        "this node does not know every key removed since index {since} \
                         (it restarted since, or removed too many): take a full backup"
                    ))));
                    return;
                };
                let entries = self
                    .replica
                    .map()
                    .iter()
                    .filter(|(_, r)| r.modify_index > since)
                    .map(|(k, r)| (k.clone(), r.entry.clone()))
                    .collect();
                let snap = Snapshot {
                    node: self.me,
                    name: self.replica.config().name.clone(),
                    region: self.replica.config().region.clone(),
                    since,
                    index: self.replica.map().index(),
                    root: self.replica.root(),
                    gc_floor: self.replica.gc_floor(),
                    taken_ms: now,
                    entries,
                    removed,
                };
                // Answered once everything it shows is durable: a backup
                // never holds a change a crash could take back.
                self.absorb();
                self.barriers.push_back((
                    self.issued,
                    Box::new(move |r| {
                        let _ = reply.send(r.map(|()| snap));
                    }),
                ));
            }
            Command::Import { entries, reply } => {
                if let Some(e) = self.writes_refused() {
                    let _ = reply.send(Err(e));
                    return;
                }
                let report = self.replica.import(entries, now);
                // Answer once the persist it produced is durable.
                self.absorb();
                self.barriers.push_back((
                    self.issued,
                    Box::new(move |r| {
                        let _ = reply.send(r.map(|()| report));
                    }),
                ));
            }
            Command::History { key, reply } => {
                let _ = reply.send(self.history.versions(&key));
            }
            Command::Promote { reply } => {
                self.replica.promote();
                let _ = reply.send(());
            }
            Command::Conflicts { reply } => {
                let log = self.replica.map().conflicts();
                let _ = reply.send((log.iter().cloned().collect(), log.total()));
            }
            Command::Hashes { prefix, reply } => {
                let list = self
                    .replica
                    .map()
                    .scan_prefix(&prefix)
                    .map(|(k, r)| KeyHash {
                        key: k.as_str().to_string(),
                        stamp: r.entry.stamp,
                        deleted: r.entry.is_tombstone(),
                        hash: r.check(),
                    })
                    .collect();
                let _ = reply.send(list);
            }
            Command::Shutdown { .. } => unreachable!("handled by the loop"),
        }
    }
}

fn live(key: &str, r: &crate::core::Record) -> Option<KvEntry> {
    r.entry.value.as_ref().map(|v| KvEntry {
        key: key.to_string(),
        value: v.clone(),
        flags: r.entry.flags,
        create_index: r.create_index,
        modify_index: r.modify_index,
        stamp: r.entry.stamp,
    })
}
