//! `net::links`: which peers a node holds a connection to, and which it
//! keeps dialing.
//!
//! One connection per pair of nodes: when both have dialed, both keep the
//! connection dialed by the node with the smaller id and close the other
//! as a duplicate ([`keeps_new`]). Members are dialed at the address they
//! announced, keyed by node id, until membership says they are down; a
//! member that moves to another address stops being dialed at the old one.
//! Seeds are dialed forever (by the builder) and never enter the dial set.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;

use super::{Transport, CLOSE_DUPLICATE, CLOSE_REFUSED};
use crate::core::types::NodeId;

/// A connection to a peer, as the driver uses it.
pub struct Conn {
    /// The transport's number for it (events carry it).
    pub id: u64,
    /// This node dialed it (else the peer did).
    pub dialed: bool,
    /// Frames for the peer.
    pub tx: mpsc::Sender<Vec<u8>>,
    /// The QUIC connection itself: membership datagrams go on it, and closing it drops the peer.
    pub connection: quinn::Connection,
    /// The name and region the peer's certificate carries: its hello must name the same.
    pub certified: (String, String),
}

/// What a connection that came up became.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Adopted {
    /// The first connection to the peer.
    New,
    /// It replaced the peer's connection (closed as a duplicate).
    Replaced,
    /// The peer's connection was kept; this one was closed as a duplicate.
    Duplicate,
}

/// Whether a node `me` keeps the new connection to `peer` rather than the
/// one it holds: both sides keep the one dialed by the smaller id.
pub fn keeps_new(me: NodeId, peer: NodeId, old_dialed: bool, new_dialed: bool) -> bool {
    let preferred = |dialed: bool| dialed == (me < peer);
    !preferred(old_dialed) && preferred(new_dialed)
}

/// Members to keep connected, by node id, shared with their dial loops: a
/// loop ends once no member is wanted at its address.
#[derive(Debug, Clone, Default)]
pub struct DialSet(Arc<Mutex<HashMap<NodeId, SocketAddr>>>);

impl DialSet {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<NodeId, SocketAddr>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Some member is wanted at `addr`.
    pub fn wants(&self, addr: SocketAddr) -> bool {
        self.lock().values().any(|a| *a == addr)
    }

    /// Wants `node` at `addr`; returns the address it was wanted at before.
    fn insert(&self, node: NodeId, addr: SocketAddr) -> Option<SocketAddr> {
        self.lock().insert(node, addr)
    }

    fn remove(&self, node: NodeId) -> Option<SocketAddr> {
        self.lock().remove(&node)
    }
}

/// The connections of a node and the members it keeps dialing.
pub struct Links {
    me: NodeId,
    conns: HashMap<NodeId, Conn>,
    wanted: DialSet,
    /// Addresses with a dial loop running.
    dialing: HashSet<SocketAddr>,
    /// Dialed forever by the builder; not members' business.
    seeds: HashSet<SocketAddr>,
}

impl Links {
    /// No connections yet for node `me`; `seeds` are dialed forever by the
    /// builder and never enter the dial set.
    pub fn new(me: NodeId, seeds: impl IntoIterator<Item = SocketAddr>) -> Links {
        Links {
            me,
            conns: HashMap::new(),
            wanted: DialSet::default(),
            dialing: HashSet::new(),
            seeds: seeds.into_iter().collect(),
        }
    }

    /// The connection to `peer`, if one is up.
    pub fn get(&self, peer: NodeId) -> Option<&Conn> {
        self.conns.get(&peer)
    }

    /// Events of connection `conn` count only while it is `peer`'s connection.
    pub fn is_current(&self, peer: NodeId, conn: u64) -> bool {
        self.conns.get(&peer).is_some_and(|c| c.id == conn)
    }

    /// Takes a connection that came up, de-duplicating against the one held.
    pub fn up(&mut self, peer: NodeId, new: Conn) -> Adopted {
        let Some(old) = self.conns.remove(&peer) else {
            self.conns.insert(peer, new);
            return Adopted::New;
        };
        if keeps_new(self.me, peer, old.dialed, new.dialed) {
            old.connection.close(CLOSE_DUPLICATE.into(), b"duplicate");
            self.conns.insert(peer, new);
            Adopted::Replaced
        } else {
            new.connection.close(CLOSE_DUPLICATE.into(), b"duplicate");
            self.conns.insert(peer, old);
            Adopted::Duplicate
        }
    }

    /// Connection `conn` went down; true when it was `peer`'s connection.
    pub fn down(&mut self, peer: NodeId, conn: u64) -> bool {
        if !self.is_current(peer, conn) {
            return false;
        }
        self.conns.remove(&peer);
        true
    }

    /// Closes `peer`'s connection as refused; true when there was one.
    pub fn refuse(&mut self, peer: NodeId, reason: &str) -> bool {
        match self.conns.remove(&peer) {
            Some(c) => {
                c.connection.close(CLOSE_REFUSED.into(), reason.as_bytes());
                true
            }
            None => false,
        }
    }

    /// Keeps `node` connected at `addr` (its announced address): a dial
    /// loop runs there until no member is wanted at it.
    pub fn want(&mut self, node: NodeId, addr: &str, transport: &Transport) {
        let Ok(addr) = addr.parse::<SocketAddr>() else {
            tracing::debug!("member address {addr:?} does not parse");
            return;
        };
        if node == self.me
            || self.seeds.contains(&addr)
            || transport.endpoint.local_addr().is_ok_and(|a| a == addr)
        {
            return;
        }
        if let Some(before) = self.wanted.insert(node, addr) {
            if before != addr {
                self.forget(before);
            }
        }
        if self.dialing.insert(addr) {
            tokio::spawn(transport.clone().dial_loop(addr, Some(self.wanted.clone())));
        }
    }

    /// Stops dialing `node` (membership says it is down).
    pub fn unwant(&mut self, node: NodeId) {
        if let Some(addr) = self.wanted.remove(node) {
            self.forget(addr);
        }
    }

    /// `addr`'s dial loop ends (at its next check) unless a member is still
    /// wanted there.
    fn forget(&mut self, addr: SocketAddr) {
        if !self.wanted.wants(addr) {
            self.dialing.remove(&addr);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_sides_keep_the_connection_dialed_by_the_smaller_id() {
        let (a, b) = (NodeId(1), NodeId(2));
        // a dialed connection X (a's view: dialed; b's view: accepted) and
        // b dialed Y. Whatever the order they come up in, both keep X.
        // a holds Y (accepted), X (dialed by a) comes up: a keeps X.
        assert!(keeps_new(a, b, false, true));
        // a holds X, Y comes up: a keeps X.
        assert!(!keeps_new(a, b, true, false));
        // b holds Y (dialed by b), X (accepted) comes up: b keeps X.
        assert!(keeps_new(b, a, true, false));
        // b holds X, Y comes up: b keeps X.
        assert!(!keeps_new(b, a, false, true));
        // Two connections of the same direction: the held one stays.
        assert!(!keeps_new(a, b, true, true));
        assert!(!keeps_new(b, a, false, false));
    }

    #[test]
    fn a_dial_loop_lives_while_some_member_is_wanted_at_its_address() {
        let w = DialSet::default();
        let p: SocketAddr = "10.0.0.1:7400".parse().unwrap();
        let q: SocketAddr = "10.0.0.2:7400".parse().unwrap();
        w.insert(NodeId(1), p);
        // A renewed identity at the same address, announced before the old
        // one is down: the address stays wanted when the old one goes.
        w.insert(NodeId(2), p);
        w.remove(NodeId(1));
        assert!(w.wants(p));
        // A member that moved: the old address is no longer wanted.
        assert_eq!(w.insert(NodeId(2), q), Some(p));
        assert!(!w.wants(p));
        assert!(w.wants(q));
    }
}
