//! Fault injection under QUIC.
//!
//! Owns [`FaultySocket`], a UDP socket wrapper that quinn runs over, and
//! [`Faults`], the switchboard shared with a test or benchmark: datagrams to
//! a blocked address are dropped on send, so blocking each other's
//! addresses on two nodes partitions them while real QUIC (timeouts,
//! retransmission, reconnection) runs on top. Loopback has no netem, so this
//! is how partitions are made on one machine.

use std::collections::HashSet;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use quinn::udp::{RecvMeta, Transmit};
use quinn::{AsyncUdpSocket, UdpPoller};

/// The faults one socket applies.
#[derive(Debug, Default)]
pub struct Faults {
    blocked: Mutex<HashSet<SocketAddr>>,
    dropped: AtomicU64,
}

impl Faults {
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

    pub fn unblock(&self, addr: SocketAddr) {
        self.blocked().remove(&addr);
    }

    /// Removes every fault.
    pub fn heal(&self) {
        self.blocked().clear();
    }

    pub fn is_blocked(&self, addr: SocketAddr) -> bool {
        self.blocked().contains(&addr)
    }

    /// Datagrams dropped so far.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// A UDP socket that applies [`Faults`] (see the module docs).
pub struct FaultySocket {
    inner: Arc<dyn AsyncUdpSocket>,
    faults: Arc<Faults>,
}

impl FaultySocket {
    pub fn new(inner: Arc<dyn AsyncUdpSocket>, faults: Arc<Faults>) -> FaultySocket {
        FaultySocket { inner, faults }
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
        self.inner.try_send(transmit)
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
