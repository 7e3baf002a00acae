//! `net`: the QUIC transport.
//!
//! Owns the endpoint (quinn over mutual TLS, see [`tls`]), dialing peers
//! with backoff (which ones: [`links`], with one connection per pair; an
//! edge races its seeds and keeps one server, see [`Transport::edge_loop`]),
//! accepting peers, and per connection: a preamble that
//! names the cluster and the node before any replication data, one
//! unidirectional stream in each direction carrying length-prefixed codec
//! frames, and a bounded send queue whose overflow drops frames (the
//! protocol's resume and anti-entropy recover them) instead of blocking the
//! replica. It decides nothing about replication: connection events and
//! decoded messages go to the node's driver, which feeds the replica.

pub mod deny;
pub mod faults;
pub mod forward;
pub mod links;
pub mod tls;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;

use crate::core::codec::{self, ClusterId, Message, HEADER_BYTES};
use crate::core::types::NodeId;

/// Magic of the per-connection preamble (`MRDP` before edges: the
/// preamble gained the role byte).
pub const PREAMBLE_MAGIC: [u8; 4] = *b"MRDQ";
/// Fixed preamble bytes: magic, cluster id, node id, role (1: an edge, 0: a
/// server); then the name and the region, each a length byte and at most
/// 64 bytes.
pub const PREAMBLE_BYTES: usize = 4 + 16 + 8 + 1;
/// How long an edge waits for a server's handshake before it gives that
/// server up for this round.
pub const EDGE_DIAL_TIMEOUT_MS: u64 = 5_000;
/// A server connection shorter than this (refused, or broken at once) is
/// left out of the edge's next race, so that a full server is not picked
/// again and again.
pub const EDGE_CONNECTION_MS_MIN: u64 = 1_000;
/// Longest name or region in a preamble.
pub const PREAMBLE_NAME_BYTES_MAX: usize = 64;
/// Frames queued for one peer before new ones are dropped.
pub const SEND_QUEUE_FRAMES_MAX: usize = 1_024;
/// Dial backoff bounds.
pub const DIAL_BACKOFF_MS_MIN: u64 = 100;
/// Longest wait between dials of one address, in ms: the backoff doubles up to
/// it. A connected address is checked again this often.
pub const DIAL_BACKOFF_MS_MAX: u64 = 5_000;
/// QUIC application error codes for closing a connection.
pub const CLOSE_DUPLICATE: u32 = 1;
/// Close code: the peer is refused (another cluster, this node itself, or refused by the replica).
pub const CLOSE_REFUSED: u32 = 2;
/// Close code: the peer sent a malformed preamble or frame.
pub const CLOSE_MALFORMED: u32 = 3;
/// Close code: this node is shutting down.
pub const CLOSE_SHUTDOWN: u32 = 4;

/// Counters of the transport.
#[derive(Debug, Default)]
pub struct NetMetrics {
    /// Codec frames received from peers.
    pub frames_in: AtomicU64,
    /// Codec frames written to peers.
    pub frames_out: AtomicU64,
    /// Bytes of the frames received, headers included.
    pub bytes_in: AtomicU64,
    /// Bytes of the frames written, headers included.
    pub bytes_out: AtomicU64,
    /// Frames dropped because a peer's send queue was full.
    pub frames_dropped_queue_full: AtomicU64,
    /// Malformed frames or preambles received; each closed its connection.
    pub malformed_frames: AtomicU64,
    /// Incoming connections whose handshake failed, and peers of another cluster.
    pub peers_refused: AtomicU64,
    /// Connections set up, dialed or accepted.
    pub connections_opened: AtomicU64,
}

/// What the transport tells the driver.
#[derive(Debug)]
pub enum NetEvent {
    /// A connection to `node` is ready; frames for it go to `tx`.
    Up {
        /// The transport's number for the connection (its later events carry it).
        conn: u64,
        /// The peer's node id, from its preamble.
        node: NodeId,
        /// The peer's name, from its preamble.
        name: String,
        /// The peer's region, from its preamble.
        region: String,
        /// The peer is an edge, as its preamble says.
        edge: bool,
        /// This node dialed it (else the peer did).
        dialed: bool,
        /// Frames for the peer; at most [`SEND_QUEUE_FRAMES_MAX`] wait.
        tx: mpsc::Sender<Vec<u8>>,
        /// The QUIC connection itself, for datagrams and for closing it.
        connection: quinn::Connection,
    },
    /// A membership packet (a QUIC datagram).
    Datagram {
        /// The connection it came on.
        conn: u64,
        /// The peer that sent it.
        node: NodeId,
        /// The packet.
        data: bytes::Bytes,
    },
    /// A replication message decoded from the peer's stream.
    Message {
        /// The connection it came on.
        conn: u64,
        /// The peer that sent it.
        node: NodeId,
        /// The decoded message.
        msg: Message,
    },
    /// The connection ended (closed, lost, or after a malformed frame); sent only after its `Up`.
    Down {
        /// The connection that ended.
        conn: u64,
        /// The peer it was to.
        node: NodeId,
    },
}

/// Shared state of the transport's tasks.
#[derive(Clone)]
pub struct Transport {
    /// The QUIC endpoint connections are dialed from and accepted on.
    pub endpoint: quinn::Endpoint,
    /// This node's cluster: a peer whose preamble names another is refused.
    pub cluster: ClusterId,
    /// This node's id, sent in the preamble.
    pub node: NodeId,
    /// This node's name, sent in the preamble.
    pub name: String,
    /// This node's region, sent in the preamble.
    pub region: String,
    /// This node is an edge (said in the preamble).
    pub edge: bool,
    /// Where connection events and decoded messages go (the node's driver).
    pub events: mpsc::Sender<NetEvent>,
    /// The transport's counters.
    pub metrics: Arc<NetMetrics>,
    /// Where forwarded API requests (`?dc=`) from peers are served.
    pub forwarding: forward::Forwarding,
    next_conn: Arc<AtomicU64>,
    /// Live connections by remote address: a dial loop does not dial an
    /// address that is already connected (either way).
    live: Arc<Mutex<HashMap<SocketAddr, usize>>>,
}

impl Transport {
    /// A transport over `endpoint` that introduces this node (`cluster`,
    /// `node`, `name`, `region`) to peers and sends what happens to `events`.
    /// Starts no task.
    pub fn new(
        endpoint: quinn::Endpoint,
        cluster: ClusterId,
        node: NodeId,
        name: &str,
        region: &str,
        events: mpsc::Sender<NetEvent>,
    ) -> Transport {
        Transport {
            endpoint,
            cluster,
            node,
            name: name.chars().take(PREAMBLE_NAME_BYTES_MAX).collect(),
            region: region.chars().take(PREAMBLE_NAME_BYTES_MAX).collect(),
            edge: false,
            events,
            metrics: Arc::new(NetMetrics::default()),
            forwarding: forward::Forwarding::default(),
            next_conn: Arc::new(AtomicU64::new(1)),
            live: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// This node is an edge: its preamble says so.
    pub fn as_edge(mut self) -> Transport {
        self.edge = true;
        self
    }

    /// An edge's link to the mesh: one server at a time. Every seed is
    /// dialed at once and the first handshake to complete wins (the
    /// nearest server, or the least busy); the others are closed. When
    /// that connection ends, the race runs again (without a server that
    /// dropped the edge at once), with backoff while none answers.
    pub async fn edge_loop(self, seeds: Vec<SocketAddr>) {
        let mut backoff = DIAL_BACKOFF_MS_MIN;
        let mut skip: Option<SocketAddr> = None;
        loop {
            if self.events.is_closed() {
                return;
            }
            let mut dials = tokio::task::JoinSet::new();
            for seed in seeds
                .iter()
                .copied()
                .filter(|s| Some(*s) != skip || seeds.len() == 1)
            {
                let endpoint = self.endpoint.clone();
                dials.spawn(async move {
                    let connecting = endpoint.connect(seed, tls::SERVER_NAME).ok()?;
                    let wait = Duration::from_millis(EDGE_DIAL_TIMEOUT_MS);
                    let c = tokio::time::timeout(wait, connecting).await.ok()?.ok()?;
                    Some((seed, c))
                });
            }
            let mut winner = None;
            while let Some(r) = dials.join_next().await {
                if let Ok(Some(won)) = r {
                    winner = Some(won);
                    break;
                }
            }
            // The slower ones are closed as they come.
            tokio::spawn(async move {
                while let Some(r) = dials.join_next().await {
                    if let Ok(Some((_, c))) = r {
                        c.close(CLOSE_DUPLICATE.into(), b"another server answered first");
                    }
                }
            });
            skip = None;
            if let Some((seed, c)) = winner {
                let started = std::time::Instant::now();
                tracing::info!(server = %seed, "attached to a server");
                self.run_connection(c.clone(), true).await;
                tracing::info!(server = %seed, "the connection to the server ended");
                // Closed here: the replica refused the server (it refuses
                // the edge's writes, say); the next race goes without it.
                let refused_here = matches!(
                    c.close_reason(),
                    Some(quinn::ConnectionError::LocallyClosed)
                );
                if refused_here || started.elapsed() < Duration::from_millis(EDGE_CONNECTION_MS_MIN)
                {
                    skip = Some(seed);
                } else {
                    backoff = DIAL_BACKOFF_MS_MIN;
                }
            }
            backoff = backoff_sleep(backoff).await;
        }
    }

    fn live(&self) -> std::sync::MutexGuard<'_, HashMap<SocketAddr, usize>> {
        self.live.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn is_connected(&self, addr: SocketAddr) -> bool {
        self.live().get(&addr).is_some_and(|n| *n > 0)
    }

    /// Accepts connections until the endpoint closes.
    pub async fn accept_loop(self) {
        while let Some(incoming) = self.endpoint.accept().await {
            let t = self.clone();
            tokio::spawn(async move {
                match incoming.await {
                    Ok(c) => t.run_connection(c, false).await,
                    Err(e) => {
                        t.metrics.peers_refused.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!("incoming connection failed: {e}");
                    }
                }
            });
        }
    }

    /// Keeps a connection to `addr` up, redialing with backoff, until the
    /// endpoint closes or `wanted` (if given) wants no member at `addr`.
    pub async fn dial_loop(self, addr: SocketAddr, wanted: Option<links::DialSet>) {
        let mut backoff = DIAL_BACKOFF_MS_MIN;
        loop {
            if wanted.as_ref().is_some_and(|w| !w.wants(addr)) {
                return;
            }
            if self.is_connected(addr) {
                // Connected already (maybe they dialed us): check again later.
                tokio::time::sleep(Duration::from_millis(DIAL_BACKOFF_MS_MAX)).await;
                if self.events.is_closed() {
                    return;
                }
                continue;
            }
            let connecting = match self.endpoint.connect(addr, tls::SERVER_NAME) {
                Ok(c) => c,
                Err(quinn::ConnectError::EndpointStopping) => return,
                Err(e) => {
                    tracing::warn!("cannot dial {addr}: {e}");
                    return;
                }
            };
            match connecting.await {
                Ok(c) => {
                    backoff = DIAL_BACKOFF_MS_MIN;
                    self.run_connection(c, true).await;
                }
                Err(e) => tracing::debug!("dial {addr}: {e}"),
            }
            backoff = backoff_sleep(backoff).await;
            if self.events.is_closed() {
                return;
            }
        }
    }

    fn preamble(&self) -> Vec<u8> {
        let mut p = Vec::with_capacity(PREAMBLE_BYTES + 2 + 2 * PREAMBLE_NAME_BYTES_MAX);
        p.extend_from_slice(&PREAMBLE_MAGIC);
        p.extend_from_slice(&self.cluster.0);
        p.extend_from_slice(&self.node.0.to_le_bytes());
        p.push(u8::from(self.edge));
        for s in [&self.name, &self.region] {
            let b = &s.as_bytes()[..s.len().min(PREAMBLE_NAME_BYTES_MAX)];
            p.push(b.len() as u8);
            p.extend_from_slice(b);
        }
        p
    }

    /// Reads a length-prefixed name from the preamble.
    async fn read_name(recv: &mut quinn::RecvStream) -> Option<String> {
        let mut len = [0u8; 1];
        recv.read_exact(&mut len).await.ok()?;
        let len = usize::from(len[0]);
        if len > PREAMBLE_NAME_BYTES_MAX {
            return None;
        }
        let mut b = vec![0u8; len];
        recv.read_exact(&mut b).await.ok()?;
        String::from_utf8(b).ok()
    }

    /// Runs one connection to its end.
    async fn run_connection(&self, connection: quinn::Connection, dialed: bool) {
        let remote = connection.remote_address();
        *self.live().entry(remote).or_insert(0) += 1;
        self.serve_connection(connection, dialed).await;
        let mut live = self.live();
        if let Some(n) = live.get_mut(&remote) {
            *n -= 1;
            if *n == 0 {
                live.remove(&remote);
            }
        }
    }

    async fn serve_connection(&self, connection: quinn::Connection, dialed: bool) {
        self.metrics
            .connections_opened
            .fetch_add(1, Ordering::Relaxed);
        let conn = self.next_conn.fetch_add(1, Ordering::Relaxed);
        let Ok(mut send) = connection.open_uni().await else {
            return;
        };
        if send.write_all(&self.preamble()).await.is_err() {
            return;
        }
        let Ok(mut recv) = connection.accept_uni().await else {
            return;
        };
        let mut pre = [0u8; PREAMBLE_BYTES];
        if recv.read_exact(&mut pre).await.is_err() {
            return;
        }
        if pre[..4] != PREAMBLE_MAGIC || pre[4..20] != self.cluster.0 {
            self.metrics.peers_refused.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(remote = %connection.remote_address(), "refused a peer of another cluster");
            connection.close(CLOSE_REFUSED.into(), b"another cluster");
            return;
        }
        let mut id = [0u8; 8];
        id.copy_from_slice(&pre[20..28]);
        let node = NodeId(u64::from_le_bytes(id));
        let edge = match pre[28] {
            0 => false,
            1 => true,
            _ => {
                self.malformed(&connection, node, "bad role in the preamble");
                return;
            }
        };
        if node == self.node {
            connection.close(CLOSE_REFUSED.into(), b"self");
            return;
        }
        let (Some(name), Some(region)) = (
            Self::read_name(&mut recv).await,
            Self::read_name(&mut recv).await,
        ) else {
            self.malformed(&connection, node, "bad name or region in the preamble");
            return;
        };
        // The name and region a peer claims are those its certificate carries.
        let certified = tls::peer_names(&connection);
        if certified.as_ref() != Some(&(name.clone(), region.clone())) {
            self.metrics.peers_refused.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                peer = %node, %name, %region, ?certified,
                "refused a peer that names itself otherwise than its certificate"
            );
            connection.close(
                CLOSE_REFUSED.into(),
                b"name or region differs from the certificate",
            );
            return;
        }
        // So is its node id, when the certificate is bound to one.
        if let Some(certified) = tls::peer_node(&connection).filter(|c| *c != node) {
            self.metrics.peers_refused.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                peer = %node, %name, %region, %certified,
                "refused a peer that claims another node id than its certificate"
            );
            connection.close(
                CLOSE_REFUSED.into(),
                b"node id differs from the certificate",
            );
            return;
        }
        let (tx, mut rx) = mpsc::channel::<Vec<u8>>(SEND_QUEUE_FRAMES_MAX);
        let up = NetEvent::Up {
            conn,
            node,
            name,
            region,
            edge,
            dialed,
            tx,
            connection: connection.clone(),
        };
        if self.events.send(up).await.is_err() {
            return;
        }
        let metrics = self.metrics.clone();
        let writer = tokio::spawn(async move {
            while let Some(frame) = rx.recv().await {
                if send.write_all(&frame).await.is_err() {
                    break;
                }
                metrics.frames_out.fetch_add(1, Ordering::Relaxed);
                metrics
                    .bytes_out
                    .fetch_add(frame.len() as u64, Ordering::Relaxed);
            }
            let _ = send.finish();
        });
        let forwarded = tokio::spawn(forward::serve(
            connection.clone(),
            self.forwarding.clone(),
            self.metrics.clone(),
        ));
        let datagrams = {
            let (connection, events) = (connection.clone(), self.events.clone());
            tokio::spawn(async move {
                while let Ok(data) = connection.read_datagram().await {
                    if events
                        .send(NetEvent::Datagram { conn, node, data })
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            })
        };
        let mut buf = Vec::new();
        loop {
            let mut header = [0u8; HEADER_BYTES];
            if recv.read_exact(&mut header).await.is_err() {
                break;
            }
            let len = match codec::decode_header(&header) {
                Ok(len) => len,
                Err(e) => {
                    self.malformed(&connection, node, &e.to_string());
                    break;
                }
            };
            buf.clear();
            buf.extend_from_slice(&header);
            buf.resize(HEADER_BYTES + len, 0);
            if recv.read_exact(&mut buf[HEADER_BYTES..]).await.is_err() {
                break;
            }
            self.metrics.frames_in.fetch_add(1, Ordering::Relaxed);
            self.metrics
                .bytes_in
                .fetch_add(buf.len() as u64, Ordering::Relaxed);
            match codec::decode(&buf) {
                Ok(msg) => {
                    if self
                        .events
                        .send(NetEvent::Message { conn, node, msg })
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
                Err(e) => {
                    self.malformed(&connection, node, &e.to_string());
                    break;
                }
            }
        }
        writer.abort();
        datagrams.abort();
        forwarded.abort();
        let _ = self.events.send(NetEvent::Down { conn, node }).await;
    }

    fn malformed(&self, connection: &quinn::Connection, node: NodeId, why: &str) {
        self.metrics
            .malformed_frames
            .fetch_add(1, Ordering::Relaxed);
        tracing::warn!(peer = %node, "malformed frame, closing the connection: {why}");
        connection.close(CLOSE_MALFORMED.into(), b"malformed frame");
    }
}

/// Sleeps `backoff_ms` and up to half as long again; the next backoff
/// (doubled, at most [`DIAL_BACKOFF_MS_MAX`]). The jitter comes from the
/// clock's low bits: IO-side scheduling, not a decision.
async fn backoff_sleep(backoff_ms: u64) -> u64 {
    let jitter = u64::from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_micros()),
    ) % (backoff_ms / 2 + 1);
    tokio::time::sleep(Duration::from_millis(backoff_ms + jitter)).await;
    (backoff_ms * 2).min(DIAL_BACKOFF_MS_MAX)
}

/// Sends a frame without waiting; a full queue drops it and counts it.
pub fn try_send(tx: &mpsc::Sender<Vec<u8>>, frame: Vec<u8>, metrics: &NetMetrics) {
    if tx.try_send(frame).is_err() {
        metrics
            .frames_dropped_queue_full
            .fetch_add(1, Ordering::Relaxed);
    }
}
