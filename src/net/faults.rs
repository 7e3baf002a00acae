//! Fault injection under QUIC.
//!
//! Owns [`FaultySocket`], a UDP socket wrapper that quinn runs over, and
//! [`Faults`], the switchboard shared with a test or benchmark: datagrams to
//! a blocked address are dropped on send, so blocking each other's
//! addresses on two nodes partitions them while real QUIC (timeouts,
//! retransmission, reconnection) runs on top; datagrams to an address with a
//! [`Link`] are delayed (one-way delay plus uniform jitter, so they may
//! reorder) and dropped with its loss probability. Loopback has no netem, so
//! this is how partitions and WAN links are made on one machine. Delayed
//! datagrams wait in a queue of at most [`DELAYED_DATAGRAMS_MAX`]; beyond
//! it they are dropped and counted, as a full router queue would.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use quinn::udp::{RecvMeta, Transmit};
use quinn::{AsyncUdpSocket, UdpPoller};

/// Datagrams waiting out their delay, per socket.
pub const DELAYED_DATAGRAMS_MAX: usize = 65_536;

/// What a link to one destination does to datagrams.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Link {
    /// One-way delay added to every datagram.
    pub delay_ms: u64,
    /// Plus a uniformly random extra delay up to this.
    pub jitter_ms: u64,
    /// Probability (0..=1) that a datagram is dropped.
    pub loss: f64,
}

/// The faults one socket applies.
#[derive(Debug, Default)]
pub struct Faults {
    blocked: Mutex<HashSet<SocketAddr>>,
    links: Mutex<HashMap<SocketAddr, Link>>,
    dropped: AtomicU64,
}

impl Faults {
    /// A switchboard with no blocks and no links, to share with the socket.
    pub fn new() -> Arc<Faults> {
        Arc::new(Faults::default())
    }

    fn blocked(&self) -> std::sync::MutexGuard<'_, HashSet<SocketAddr>> {
        // A poisoned lock only means a panicking test thread; the set is still sound.
        self.blocked.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Drops every datagram sent to `addr` from now on.
    pub fn block(&self, addr: SocketAddr) {
        self.blocked().insert(addr);
    }

    /// Sends datagrams to `addr` again (its link, if any, still applies).
    pub fn unblock(&self, addr: SocketAddr) {
        self.blocked().remove(&addr);
    }

    /// Removes every block (links keep their delay and loss).
    pub fn heal(&self) {
        self.blocked().clear();
    }

    /// Datagrams to `addr` go through `link` from now on.
    pub fn set_link(&self, addr: SocketAddr, link: Link) {
        self.links
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(addr, link);
    }

    fn link(&self, addr: SocketAddr) -> Option<Link> {
        self.links
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&addr)
            .copied()
    }

    /// Datagrams sent to `addr` are dropped.
    pub fn is_blocked(&self, addr: SocketAddr) -> bool {
        self.blocked().contains(&addr)
    }

    /// Datagrams dropped so far.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Blocks exactly `addrs` (every other block is lifted).
    pub fn block_only(&self, addrs: &[SocketAddr]) {
        let mut blocked = self.blocked();
        blocked.clear();
        blocked.extend(addrs.iter().copied());
    }
}

/// Fault injection for processes: with `MERIDIAN_FAULT_BLOCK_FILE` set, a
/// `meridian node` runs over the fault socket and blocks the peer addresses
/// that file lists (one `ip:port` per line; no file or an empty one: none),
/// read again every [`BLOCK_FILE_POLL_MS`]. Writing the file cuts the node
/// off from those peers, removing it heals: how the runbooks' partition is
/// made between real processes (`tests/ops.rs`).
pub const BLOCK_FILE_ENV: &str = "MERIDIAN_FAULT_BLOCK_FILE";
/// How often the block file is read.
pub const BLOCK_FILE_POLL_MS: u64 = 200;
/// Addresses a block file may list.
const BLOCK_FILE_ADDRS_MAX: usize = 1_024;

/// Applies `path`'s blocks to `faults` until the task is dropped.
pub async fn follow_block_file(faults: Arc<Faults>, path: std::path::PathBuf) {
    let mut applied: Option<Vec<SocketAddr>> = None;
    loop {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let addrs: Vec<SocketAddr> = text
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .take(BLOCK_FILE_ADDRS_MAX)
            .collect();
        if applied.as_ref() != Some(&addrs) {
            tracing::warn!(blocked = ?addrs, file = %path.display(), "fault injection: peer addresses blocked");
            faults.block_only(&addrs);
            applied = Some(addrs);
        }
        tokio::time::sleep(std::time::Duration::from_millis(BLOCK_FILE_POLL_MS)).await;
    }
}

/// A datagram (or GSO batch) waiting out its link's delay.
struct Delayed {
    due: tokio::time::Instant,
    seq: u64,
    destination: SocketAddr,
    ecn: Option<quinn::udp::EcnCodepoint>,
    contents: Vec<u8>,
    segment_size: Option<usize>,
    src_ip: Option<std::net::IpAddr>,
}

impl PartialEq for Delayed {
    fn eq(&self, o: &Self) -> bool {
        (self.due, self.seq) == (o.due, o.seq)
    }
}
impl Eq for Delayed {}
impl PartialOrd for Delayed {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Delayed {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        // Earliest first out of a max-heap.
        (o.due, o.seq).cmp(&(self.due, self.seq))
    }
}

/// A UDP socket that applies [`Faults`] (see the module docs).
pub struct FaultySocket {
    inner: Arc<dyn AsyncUdpSocket>,
    faults: Arc<Faults>,
    delayed: tokio::sync::mpsc::Sender<Delayed>,
    seq: AtomicU64,
    /// xorshift state for loss and jitter.
    rng: AtomicU64,
}

impl FaultySocket {
    /// Must be called inside a tokio runtime: delayed datagrams are sent by a task.
    pub fn new(inner: Arc<dyn AsyncUdpSocket>, faults: Arc<Faults>) -> FaultySocket {
        let (tx, rx) = tokio::sync::mpsc::channel(DELAYED_DATAGRAMS_MAX);
        tokio::spawn(send_delayed(inner.clone(), faults.clone(), rx));
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0x9e37_79b9, |d| d.as_nanos() as u64)
            | 1;
        FaultySocket {
            inner,
            faults,
            delayed: tx,
            seq: AtomicU64::new(0),
            rng: AtomicU64::new(seed),
        }
    }

    /// A uniform random number in [0, 1).
    fn random(&self) -> f64 {
        let mut x = self.rng.load(Ordering::Relaxed);
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng.store(x, Ordering::Relaxed);
        (x >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Sends delayed datagrams when they are due, earliest first.
async fn send_delayed(
    inner: Arc<dyn AsyncUdpSocket>,
    faults: Arc<Faults>,
    mut rx: tokio::sync::mpsc::Receiver<Delayed>,
) {
    let mut heap: std::collections::BinaryHeap<Delayed> = std::collections::BinaryHeap::new();
    loop {
        let next = heap.peek().map(|d| d.due);
        tokio::select! {
            d = rx.recv() => match d {
                Some(d) => heap.push(d),
                None => return,
            },
            _ = async {
                match next {
                    Some(t) => tokio::time::sleep_until(t).await,
                    None => std::future::pending().await,
                }
            } => {
                let now = tokio::time::Instant::now();
                while heap.peek().is_some_and(|d| d.due <= now) {
                    let Some(d) = heap.pop() else { break };
                    let t = Transmit {
                        destination: d.destination,
                        ecn: d.ecn,
                        contents: &d.contents,
                        segment_size: d.segment_size,
                        src_ip: d.src_ip,
                    };
                    // A full kernel buffer drops it, as a real link would.
                    if inner.try_send(&t).is_err() {
                        faults.dropped.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }
    }
}

impl fmt::Debug for FaultySocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FaultySocket")
            .field("faults", &self.faults)
            .finish()
    }
}

impl AsyncUdpSocket for FaultySocket {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        self.inner.clone().create_io_poller()
    }

    fn try_send(&self, transmit: &Transmit) -> io::Result<()> {
        if self.faults.is_blocked(transmit.destination) {
            self.faults.dropped.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        let Some(link) = self.faults.link(transmit.destination) else {
            return self.inner.try_send(transmit);
        };
        // A GSO batch is treated as one unit: lost or delayed together.
        if link.loss > 0.0 && self.random() < link.loss {
            self.faults.dropped.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        let jitter = if link.jitter_ms > 0 {
            (self.random() * (link.jitter_ms + 1) as f64) as u64
        } else {
            0
        };
        let delay = std::time::Duration::from_millis(link.delay_ms + jitter);
        let d = Delayed {
            due: tokio::time::Instant::now() + delay,
            seq: self.seq.fetch_add(1, Ordering::Relaxed),
            destination: transmit.destination,
            ecn: transmit.ecn,
            contents: transmit.contents.to_vec(),
            segment_size: transmit.segment_size,
            src_ip: transmit.src_ip,
        };
        if self.delayed.try_send(d).is_err() {
            self.faults.dropped.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    fn poll_recv(
        &self,
        cx: &mut Context,
        bufs: &mut [io::IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        self.inner.poll_recv(cx, bufs, meta)
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    fn max_transmit_segments(&self) -> usize {
        self.inner.max_transmit_segments()
    }

    fn max_receive_segments(&self) -> usize {
        self.inner.max_receive_segments()
    }

    fn may_fragment(&self) -> bool {
        self.inner.may_fragment()
    }
}
