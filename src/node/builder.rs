//! [`NodeBuilder`]: options, opening (or recovering) the data directory,
//! restoring the replica, and starting the driver, store thread and
//! transport.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::{mpsc, watch};

use super::commit::StoreThread;
use super::data_dir::{DataDir, NODE_ID_FILE};
use super::driver::Driver;
use super::time::now_ms;
use super::types::{Histogram, EVENTS_BUFFERED_MAX};
use super::{history, Node, NodeError, COMMAND_QUEUE_MAX, NET_QUEUE_MAX};
use crate::core::types::{Limits, NodeId};
use crate::net::faults::{Faults, FaultySocket};
use crate::net::links::Links;
use crate::net::tls::NodeIdentity;
use crate::net::Transport;
use crate::store::faults::{FaultyStore, StoreFaults};
use crate::store::{Durability, MemoryStore, RedbStore, Store, StoreError};
use crate::sync::membership::{Member, Membership, SwimTiming};
use crate::sync::{Config, DurableState, EdgeWrites, PartitionPolicy, Replica, Role};

pub(super) type Tune = Box<dyn FnOnce(&mut Config) + Send>;

/// Builds a [`Node`].
pub struct NodeBuilder {
    pub(super) name: String,
    pub(super) region: String,
    pub(super) identity: NodeIdentity,
    pub(super) data_dir: Option<PathBuf>,
    pub(super) listen: SocketAddr,
    pub(super) seeds: Vec<SocketAddr>,
    pub(super) durability: Durability,
    pub(super) limits: Limits,
    pub(super) policy: PartitionPolicy,
    /// Set by [`NodeBuilder::history`]; else the role's default.
    pub(super) history: Option<(usize, usize)>,
    pub(super) tune: Vec<Tune>,
    pub(super) faults: Option<Arc<Faults>>,
    pub(super) store_faults: Option<Arc<StoreFaults>>,
    pub(super) check_store_on_open: bool,
    pub(super) advertise: Option<SocketAddr>,
    pub(super) cluster: Option<crate::core::codec::ClusterId>,
    pub(super) role: Role,
    pub(super) swim: SwimTiming,
}

/// Chunks of records read ahead of the map being built on a restart.
pub(super) const RESTORE_CHUNKS_QUEUED_MAX: usize = 8;

/// Builds the replica from the store's records on this thread while another
/// thread reads them: reading and building take about as long each, so a
/// restart takes about half as long on two cores.
pub(super) fn restore_replica(
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
/// empty under that id and rebuilds from a peer. A new directory takes the
/// id the certificate is bound to (`certified`), adopted: the replica
/// watches for peers that know it from before (see
/// `sync/replica/identity.rs`); a directory that holds another id is refused.
pub(super) fn load_data_dir(
    data: &DataDir,
    durability: Durability,
    check_on_open: bool,
    certified: Option<NodeId>,
    mut cfg: Config,
) -> Result<(Box<dyn Store>, Replica), NodeError> {
    let named = data.node_id()?;
    let path = data.store_path();
    let differs = |held: NodeId| match certified {
        Some(c) if c != held => Err(NodeError::CertifiedIdDiffers {
            path: data.dir().to_path_buf(),
            certified: c,
            held,
        }),
        _ => Ok(()),
    };
    if let Some(n) = named {
        differs(n)?;
    }
    // Adopted and not yet confirmed when it last ran: still watching.
    if let Some(at_ms) = data.adopted_at_ms()? {
        cfg.id_adopted_at_ms = at_ms;
    }
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
                    let id = match certified {
                        Some(c) => {
                            // A new directory, or a wiped one: nothing here
                            // says which (see `sync/replica/identity.rs`).
                            let at_ms = now_ms();
                            data.set_adopted(at_ms)?;
                            cfg.id_adopted_at_ms = at_ms;
                            c
                        }
                        None => NodeId(random_u64() | 1),
                    };
                    store.set_node(id)?;
                    id
                } else {
                    differs(found)?;
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
    // Without node.id, a certificate bound to an id says which node this is.
    let Some(node) = named.or(certified) else {
        return Err(NodeError::DataDirInvalid {
            path,
            reason: format!(
                "{reason}; and neither {NODE_ID_FILE} nor the certificate says which node this \
                 directory held: move the file away to start a new node, or restore a backup"
            ),
        });
    };
    if named.is_none() {
        data.set_node_id(node)?;
    }
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
pub(super) struct Expected<I> {
    pub(super) inner: I,
    pub(super) remaining: usize,
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

    /// Makes this node an edge (see [`Role::Edge`]): it attaches to one of
    /// its seeds (servers of its region; the first to answer), follows
    /// another when that one is lost, takes every change from it and
    /// forwards its writes to it. Edges count for nothing the members
    /// decide (quorum, reachability, collection), and a server serves at
    /// most `edges_max` of them.
    pub fn edge(mut self) -> Self {
        self.role = Role::Edge;
        self
    }

    /// On an edge: takes puts and deletes of one key while no server is
    /// connected, durable here, and hands them over to a server once one
    /// is ([`EdgeWrites::Local`]; default [`EdgeWrites::Server`]: refused).
    pub fn edge_writes(self, writes: EdgeWrites) -> Self {
        self.tune(move |c| c.edge_writes = writes)
    }

    /// SWIM's timing (default: the LAN profile). Checked when the node is built.
    pub fn swim(mut self, timing: SwimTiming) -> Self {
        self.swim = timing;
        self
    }

    /// Peers to connect to; connections are kept up and redialed.
    pub fn seeds(mut self, seeds: impl IntoIterator<Item = SocketAddr>) -> Self {
        self.seeds.extend(seeds);
        self
    }

    /// Whether commits wait for the disk (default [`Durability::Immediate`]).
    pub fn durability(mut self, d: Durability) -> Self {
        self.durability = d;
        self
    }

    /// Keeps the last `versions_max` versions of each key, at most
    /// `bytes_max` bytes in all (see [`history`]). Default: 10 and 64 MiB
    /// on a server, none on an edge (it runs on a small machine and holds
    /// the whole key space already).
    pub fn history(mut self, versions_max: usize, bytes_max: usize) -> Self {
        self.history = Some((versions_max, bytes_max));
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

    /// Limits on the keys and values of client writes (default 1 KiB keys, 1 MiB values).
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// What to do with client writes while no majority of regions is reachable
    /// (default [`PartitionPolicy::Available`]).
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
        self.swim.validate()?;
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
        cfg.role = self.role;
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
                self.identity.node_id(),
                cfg,
            )?,
            None => {
                cfg.node = match self.identity.node_id() {
                    // Nothing is kept: every start under a bound id is a
                    // wiped node's, as far as its peers can tell.
                    Some(c) => {
                        cfg.id_adopted_at_ms = now_ms();
                        c
                    }
                    None => NodeId(random_u64() | 1),
                };
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
        self.identity.check_names(&self.name, &self.region)?;
        if self.identity.node_id().is_none() {
            tracing::warn!(
                node = %node_id,
                "the certificate is not bound to a node id (issued before ids were bound): peers \
                 cannot check the id this node claims; issue it again with `meridian ca issue \
                 --reissue --node-id {node_id}`"
            );
        }
        let (server, mut client) = self.identity.quic_configs()?;
        if self.role == Role::Edge {
            // An idle edge hears from its server every few beats: it keeps
            // the connection alive itself, a little less often than a member.
            let t = crate::net::tls::transport(Some(crate::net::tls::EDGE_KEEP_ALIVE_MS), 1);
            client.transport_config(Arc::new(t));
        }
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
        let forwarding = transport.forwarding.clone();
        let edge = self.role == Role::Edge;
        let transport = if edge { transport.as_edge() } else { transport };
        tokio::spawn(transport.clone().accept_loop());
        if edge {
            tokio::spawn(transport.clone().edge_loop(self.seeds.clone()));
        } else {
            for seed in &self.seeds {
                tokio::spawn(transport.clone().dial_loop(*seed, None));
            }
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
        let membership = Membership::new(me, self.seeds.len() as u32 + 1, &self.swim, random_u64());
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
            links: Links::new(node_id, self.seeds.iter().copied()),
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
            read_barriers: HashMap::new(),
            next_read_barrier: 0,
            barriers: VecDeque::new(),
            events_tx: events_tx.clone(),
            history: {
                let (versions_max, bytes_max) = self.history.unwrap_or(match self.role {
                    crate::sync::Role::Edge => (0, 0),
                    _ => (
                        history::HISTORY_VERSIONS_MAX_DEFAULT,
                        history::HISTORY_BYTES_MAX_DEFAULT,
                    ),
                });
                history::History::new(versions_max, bytes_max)
            },
            notify: notify_tx,
            events: VecDeque::new(),
            failed: None,
            membership,
            timer_tx,
            refused: Vec::new(),
            edges: std::collections::HashSet::new(),
            forwards: HashMap::new(),
            next_forward: 0,
            adopted_file: self
                .data_dir
                .as_ref()
                .map(|d| d.join(super::data_dir::ADOPTED_FILE)),
        };
        let task = tokio::spawn(driver.run(cmd_rx, net_rx, commit_rx, timer_rx));
        Ok(Node {
            id: node_id,
            forwarding,
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

pub(super) fn random_u64() -> u64 {
    use ring::rand::SecureRandom;
    let mut b = [0u8; 8];
    if ring::rand::SystemRandom::new().fill(&mut b).is_err() {
        // No OS randomness: fall back to the clock, still unique enough for an id.
        return blake3::hash(&now_ms().to_le_bytes()).as_bytes()[0] as u64 | (now_ms() << 8);
    }
    u64::from_le_bytes(b)
}
