//! The link with each peer: what the replica knows of it ([`Peer`]),
//! connections coming and going, and the hello that starts each link
//! (or refuses the peer).

use std::collections::VecDeque;

use thiserror::Error;

use super::{Event, Output, Replica, Timer};
use crate::core::codec::{Hello, Message, PROTOCOL_VERSION};
use crate::core::hlc::Hlc;
use crate::core::mutants::{self, Mutant};
use crate::core::types::NodeId;
use crate::sync::clock_offset::PeerClock;
use crate::sync::config::Role;

/// Why a peer was refused before any data was exchanged.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Its hello carries another protocol version.
    #[error("peer speaks protocol {found}, we speak {PROTOCOL_VERSION}")]
    Protocol {
        /// The version its hello carries.
        found: u16,
    },
    /// Its hello carries another cluster id.
    #[error("peer belongs to another cluster")]
    Cluster,
    /// An edge connected to an edge (edges attach to servers only).
    #[error("an edge attaches to servers only, and this peer is an edge")]
    EdgeToEdge,
    /// This server serves as many edges as it may.
    #[error("this server serves {max} edges already (edges_max): attach to another")]
    EdgesFull {
        /// The server's `edges_max`.
        max: usize,
    },
    /// Its hello says it is an edge and its connection that it is not (or the reverse).
    #[error("the peer's hello and its connection disagree on whether it is an edge")]
    RoleMismatch,
    /// On an edge: its server refused the edge's writes as unavailable
    /// (its clock, a rebuild, no quorum) this many times in a row; the
    /// edge attaches to another server of its region.
    #[error("the server refused writes {times} times in a row ({message}): attaching to another")]
    TakesNoWrites {
        /// Refusals in a row.
        times: u32,
        /// The last refusal, in the server's words.
        message: String,
    },
    /// Its hello names another node than the one the transport authenticated.
    #[error("peer says it is node {claimed}, the connection is from {actual}")]
    Identity {
        /// The node id its hello names.
        claimed: NodeId,
        /// The node id the transport authenticated.
        actual: NodeId,
    },
}

/// What the replica knows of one peer.
#[derive(Debug, Clone, Default)]
pub(super) struct Peer {
    /// A member (server) or an edge, as the connection said.
    pub(super) role: Role,
    pub(super) region: String,
    /// Where its HTTP API listens, as its hello said.
    pub(super) api: String,
    pub(super) name: String,
    /// Its collection floor, as its last hello said.
    pub(super) gc_floor: Hlc,
    /// The connection, and how far the hellos on it went.
    pub(super) link: Link,
    /// We told it to resync (it was away longer than the horizon): frames
    /// it sent before its resync may still arrive after its next hello,
    /// so its full transfers are not exempt from our floor.
    pub(super) told_stale: bool,
    // Their feed, to us.
    /// Durable, contiguous: their feed index up to which we applied their entries.
    pub(super) applied: u64,
    /// Durable: every write of theirs stamped at or below this is held here.
    pub(super) received: Hlc,
    /// When we last held everything they had (a contiguous feed that reached their index).
    pub(super) in_sync_ms: u64,
    /// Their index when they said hello, and when.
    pub(super) their_index: u64,
    pub(super) hello_ms: u64,
    pub(super) resume_asked_ms: Option<u64>,
    // Our feed, to them.
    pub(super) acked: u64,
    pub(super) sent: u64,
    /// The `to` of each unacknowledged feed message.
    pub(super) in_flight: VecDeque<u64>,
    /// They asked for a full transfer: send every origin's entries (not
    /// only ours) up to this index, and all of them while we recover (what
    /// we take back belongs to the transfer; see `pump`).
    pub(super) full_until: Option<u64>,
    pub(super) last_progress_ms: u64,
    pub(super) last_sent_ms: u64,
    // What they told us.
    /// They hold every write stamped at or below this.
    pub(super) frontier: Hlc,
    pub(super) last_heard_ms: u64,
    /// Round trips that estimate their clock's offset from ours.
    pub(super) clock: PeerClock,
    /// Heard from within the contact timeout (or mid-swap): what makes its
    /// region reachable.
    pub(super) in_contact: bool,
    /// When we last refused a message of theirs whose stamps ran too far
    /// ahead of our clock, and by how much (0: never).
    pub(super) refused_ms: u64,
    pub(super) refused_ahead_ms: u64,
    /// Its last view: it takes client writes (kept after it is lost).
    pub(super) view_active: bool,
    /// Its last view: the regions it cannot reach.
    pub(super) view_unreachable: Vec<String>,
    /// Its last view: every member holds every write up to this (an edge
    /// collects up to it; see `replica/edge.rs`).
    pub(super) view_stable: Hlc,
    /// On an edge: we hold every write up to this, as far as its feed
    /// reached us in full (its frontier then).
    pub(super) held: Hlc,
    /// On a server, of an edge: the numbers of its latest forwarded writes
    /// on this connection (a repeated one is not made twice); at most
    /// `FORWARDS_PENDING_MAX`.
    pub(super) forwards_seen: VecDeque<u64>,
    /// On an edge: our hello to it asked to start at its current index
    /// (`Hello::tail`): take its index from its hello, then anti-entropy.
    pub(super) tail: bool,
    /// On an edge: we took its feed from its index at our hello, and no
    /// anti-entropy round with it has found equal roots since: what it
    /// held before is not known to be here (`held` waits).
    pub(super) tailing: bool,
    /// On an edge: feed messages of this server applied and not yet acknowledged.
    pub(super) acks_owed: u32,
    /// The clock of the latest forget of it that it resynced after, as
    /// its last hello said (a notice of an earlier forget is old news).
    pub(super) rejoined: Hlc,
    /// It came back after we had forgotten it, and our collection floor
    /// was this then: deletes at or below it were collected without it,
    /// so what it holds at or below it is not vouched for (see
    /// `replica/members.rs`). Zero for a peer we never forgot.
    pub(super) suspect_floor: Hlc,
    /// The document versions it is known to hold, to send it changes
    /// rather than whole documents (see `replica::doc_changes`).
    pub(super) doc_heads: super::doc_changes::KnownHeads,
    /// The versions waiting here for a merge it was handed on this
    /// connection, as `Replica::doc_waiting_gen` counted them then (see
    /// `replica::documents`).
    pub(super) doc_versions_gen: u64,
}

/// The state of the link with a peer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) enum Link {
    /// No connection: nothing is exchanged.
    #[default]
    Down,
    /// A connection is up and our hello sent; theirs is not yet accepted
    /// (or it was refused, and the driver is closing the connection).
    Connecting {
        /// The transport swapped the connection (both sides dialed at
        /// once): the link restarts, but the peer was never out of reach
        /// (no down/up or partition events).
        swapping: bool,
    },
    /// Their hello was accepted: data flows both ways.
    Up {
        /// They showed they accepted our hello (they sent something else).
        confirmed: bool,
        /// We applied their feed as far as it reached at their hello.
        caught_up: bool,
    },
    /// Their hello was accepted but they are stale: their data is ignored,
    /// and ours not sent, until they resync and say hello again.
    Stale { confirmed: bool },
}

impl Link {
    /// The transport says a connection is up.
    pub(super) fn connected(self) -> bool {
        self != Link::Down
    }

    /// Their hello was accepted, stale or not (status calls it connected).
    pub(super) fn ready(self) -> bool {
        matches!(self, Link::Up { .. } | Link::Stale { .. })
    }

    /// Data flows: their hello was accepted and they are not stale.
    pub(super) fn up(self) -> bool {
        matches!(self, Link::Up { .. })
    }

    /// We told them to resync, and refuse their data until they say hello again.
    pub(super) fn stale(self) -> bool {
        matches!(self, Link::Stale { .. })
    }

    pub(super) fn caught_up(self) -> bool {
        matches!(
            self,
            Link::Up {
                caught_up: true,
                ..
            }
        )
    }

    pub(super) fn swapping(self) -> bool {
        matches!(self, Link::Connecting { swapping: true })
    }

    /// They showed they accepted our hello.
    pub(super) fn confirmed(self) -> bool {
        matches!(
            self,
            Link::Up {
                confirmed: true,
                ..
            } | Link::Stale { confirmed: true }
        )
    }

    /// A connection is up but our hello may have been lost: until the peer
    /// shows it accepted it, it ignores everything else we send.
    pub(super) fn hello_unconfirmed(self) -> bool {
        self.connected() && !self.confirmed()
    }

    /// The peer sent something after its hello: it accepted ours.
    pub(super) fn confirm(&mut self) {
        if let Link::Up { confirmed, .. } | Link::Stale { confirmed } = self {
            *confirmed = true;
        }
    }

    /// Our new hello is not yet known to be accepted: heartbeats repeat it
    /// until the peer sends something else.
    pub(super) fn unconfirm(&mut self) {
        if let Link::Up { confirmed, .. } | Link::Stale { confirmed } = self {
            *confirmed = false;
        }
    }

    /// Whether their feed (as far as it reached at their hello) is applied
    /// here; meaningful on a link that is up.
    pub(super) fn set_caught_up(&mut self, value: bool) {
        if let Link::Up { caught_up, .. } = self {
            *caught_up = value;
        }
    }
}

impl Peer {
    /// Forgets the state of the link (its connection is gone or replaced):
    /// the next hello starts it afresh.
    fn reset_link(&mut self) {
        self.link = Link::Down;
        self.in_flight.clear();
        self.forwards_seen.clear();
        self.resume_asked_ms = None;
    }
}

impl Replica {
    /// The transport connected to `peer`, a server: say hello.
    pub fn connected(&mut self, peer: NodeId, now_ms: u64) {
        self.connected_as(peer, Role::Server, now_ms);
    }

    /// The transport connected to `peer`, which its connection says is a
    /// server or an edge: say hello (or refuse it: an edge takes servers
    /// only, a server at most `edges_max` edges).
    pub fn connected_as(&mut self, peer: NodeId, role: Role, now_ms: u64) {
        if peer == self.cfg.node {
            return;
        }
        let _ = now_ms;
        let refusal = self.edge_link_refused(peer, role);
        let p = self.peers.entry(peer).or_default();
        p.role = role;
        if let Some(reason) = refusal {
            self.refuse(peer, reason);
            self.commit();
            return;
        }
        let p = self.peers.entry(peer).or_default();
        // A new connection: the feed on it starts over.
        p.doc_heads.forget_all();
        p.doc_versions_gen = 0;
        // A new connection: our hello on it is not yet confirmed.
        p.link = match p.link {
            Link::Down => Link::Connecting { swapping: false },
            Link::Connecting { swapping } => Link::Connecting { swapping },
            Link::Up { caught_up, .. } => Link::Up {
                confirmed: false,
                caught_up,
            },
            Link::Stale { .. } => Link::Stale { confirmed: false },
        };
        self.say_hello(peer);
        self.commit();
    }

    pub(super) fn say_hello(&mut self, peer: NodeId) {
        // A repeated hello to the rebuild source must keep asking for the
        // full transfer. Only a server is a source (an edge holds what its
        // server sent it, and forwards no feed of its own).
        let server = self.peers.get(&peer).is_none_or(|p| p.role == Role::Server);
        let source = server && self.rebuilding && self.rebuild_from.is_none_or(|r| r == peer);
        if source {
            self.rebuild_from = Some(peer);
        }
        let want_full = source || (server && self.recovering_from(peer));
        if want_full {
            // The full transfer starts from the beginning of their feed, and
            // is complete only when it reaches its end: progress remembered
            // from before (a replica resyncing its damaged state is not
            // empty) must not make it look complete at once, and what it
            // claimed to hold of their writes may be what it lost.
            let p = self.peers.entry(peer).or_default();
            p.link.set_caught_up(false);
            if p.applied != 0 || p.received != Hlc::ZERO {
                p.applied = 0;
                p.received = Hlc::ZERO;
                self.dirty_peers.insert(peer);
            }
        }
        let frontier = self.frontier();
        let gc_floor = self.gc_floor;
        let edge = self.is_edge();
        let holds_data = self.map.index() > 0 && !self.rebuilding;
        let p = self.peers.entry(peer).or_default();
        // An edge holding data, new to this server (or told to start over
        // with it): anti-entropy brings it up to date, cheaper than the
        // whole feed of a server it never followed.
        p.tail = edge && holds_data && !want_full && p.applied == 0;
        let hello = Hello {
            protocol: PROTOCOL_VERSION,
            cluster: self.cfg.cluster,
            node: self.cfg.node,
            name: self.cfg.name.clone(),
            region: self.cfg.region.clone(),
            api: self.cfg.api.clone(),
            index: self.map.index(),
            applied: p.applied,
            want_full,
            frontier,
            received: p.received,
            gc_floor,
            edge,
            tail: p.tail,
            rejoined: self.rejoined,
        };
        self.send(peer, Message::Hello(hello));
    }

    /// The transport replaced its connection to `peer` with a new one (both
    /// sides dialed at once): the link restarts with a hello, as after a
    /// reconnection, but the peer stays reachable throughout.
    pub fn reconnected(&mut self, peer: NodeId, now_ms: u64) {
        if let Some(p) = self.peers.get_mut(&peer) {
            let swapping = p.link.ready() || p.link.swapping();
            p.reset_link();
            p.link = Link::Connecting { swapping };
        }
        if self.ae_session.is_some_and(|s| s.peer == peer) {
            self.ae_session = None;
        }
        self.connected(peer, now_ms);
    }

    /// The transport lost `peer`.
    pub fn disconnected(&mut self, peer: NodeId, now_ms: u64) {
        if self.is_edge() {
            self.server_lost(peer);
            self.handover_server_lost(peer);
        }
        if self.drop_forgotten_peer(peer) {
            self.commit();
            return;
        }
        if self.peers.get(&peer).is_some_and(|p| p.role == Role::Edge) {
            // An edge's state goes with it: its next hello says where to resume.
            let p = self.peers.remove(&peer).expect("checked");
            if p.link.ready() {
                self.staged.push(Output::Event(Event::PeerDown {
                    peer,
                    name: p.name,
                    region: p.region,
                }));
            }
            if self.ae_session.is_some_and(|s| s.peer == peer) {
                self.ae_session = None;
            }
            self.commit();
            return;
        }
        if let Some(p) = self.peers.get_mut(&peer) {
            // A swap whose new connection died is a real loss.
            if p.link.ready() || p.link.swapping() {
                self.staged.push(Output::Event(Event::PeerDown {
                    peer,
                    name: p.name.clone(),
                    region: p.region.clone(),
                }));
            }
            p.reset_link();
        }
        if self.ae_session.is_some_and(|s| s.peer == peer) {
            self.ae_session = None;
        }
        self.update_regions(now_ms);
        // A barrier waiting on it fails now, not at its deadline.
        self.check_barriers(now_ms);
        if self.rebuild_from == Some(peer) {
            self.rebuild_from = None;
            // Continue the full transfer from another peer, from the start:
            // our progress with it covers only its own writes.
            let next = self
                .peers
                .iter()
                .find(|(_, p)| p.link.ready() && p.role == Role::Server)
                .map(|(id, _)| *id);
            if let Some(next) = next {
                self.rebuild_from = Some(next);
                if let Some(p) = self.peers.get_mut(&next) {
                    // The rebuild is done once this peer's full feed reaches its index.
                    p.link.set_caught_up(false);
                }
                self.send(
                    next,
                    Message::Resume {
                        from: 0,
                        full: true,
                    },
                );
            }
        }
        self.commit();
        let _ = now_ms;
    }

    pub(super) fn refuse(&mut self, peer: NodeId, reason: Refusal) {
        self.metrics.peers_refused += 1;
        if let Some(p) = self.peers.get_mut(&peer) {
            // The driver closes the connection; until then nothing flows.
            p.link = Link::Connecting {
                swapping: p.link.swapping(),
            };
        }
        self.staged.push(Output::Event(Event::PeerRefused {
            peer,
            reason: reason.clone(),
        }));
        self.staged.push(Output::Disconnect { peer, reason });
    }

    pub(super) fn on_hello(&mut self, from: NodeId, h: Hello, now_ms: u64) {
        if h.protocol != PROTOCOL_VERSION {
            return self.refuse(from, Refusal::Protocol { found: h.protocol });
        }
        if h.cluster != self.cfg.cluster {
            return self.refuse(from, Refusal::Cluster);
        }
        if h.node != from {
            return self.refuse(
                from,
                Refusal::Identity {
                    claimed: h.node,
                    actual: from,
                },
            );
        }
        let role = self.peers.get(&from).map(|p| p.role).unwrap_or_default();
        if h.edge != (role == Role::Edge) {
            return self.refuse(from, Refusal::RoleMismatch);
        }
        if let Some(reason) = self.edge_link_refused(from, role) {
            return self.refuse(from, reason);
        }
        if !self.forgotten_hello(from, h.rejoined) {
            return;
        }
        let horizon_floor = self.horizon_floor;
        let index = self.map.index();
        self.check_id_in_hello(from, &h, index);
        let p = self.peers.entry(from).or_default();
        if !p.link.ready() && !p.link.swapping() {
            self.staged.push(Output::Event(Event::PeerUp {
                peer: from,
                name: h.name.clone(),
                region: h.region.clone(),
            }));
        }
        if (&p.region, &p.name, &p.api) != (&h.region, &h.name, &h.api) {
            p.region = h.region;
            p.name = h.name;
            p.api = h.api;
            self.dirty_peers.insert(from);
        }
        let confirmed = p.link.confirmed();
        p.rejoined = p.rejoined.max(h.rejoined);
        // Our writes are stamped above every member's collection floor:
        // below it they would be refused as values of collected deletes
        // (a member back after it was forgotten may be behind them).
        let floor = h.gc_floor;
        p.gc_floor = h.gc_floor;
        p.last_heard_ms = now_ms;
        p.frontier = p.frontier.max(h.frontier);
        if h.index < p.applied {
            // Their feed restarted (a restore from an old backup): our
            // progress with it, and the claims it supported, are void.
            p.applied = 0;
            p.received = Hlc::ZERO;
            self.dirty_peers.insert(from);
        }
        if p.tail {
            // We asked to start at its index: we follow its feed from there
            // and catch up on what came before by anti-entropy, at once.
            p.tail = false;
            p.tailing = true;
            p.applied = h.index;
            self.dirty_peers.insert(from);
            self.timers.set_sooner(Timer::AntiEntropy, now_ms);
        }
        if role == Role::Server && !self.is_edge() {
            let _ = self.clock.observe(floor, now_ms);
        }
        let p = self.peers.get_mut(&from).expect("inserted");
        p.their_index = h.index;
        p.hello_ms = now_ms;
        p.link = Link::Up {
            confirmed,
            caught_up: p.applied >= h.index,
        };
        p.resume_asked_ms = None;
        // They hold our feed up to `h.applied`; if that is beyond our index our
        // feed restarted (a restore from an old backup): send it all.
        // A full transfer starts from the beginning: it carries every origin.
        let start = if h.tail && !h.want_full {
            index
        } else if h.applied > index || h.want_full {
            0
        } else {
            h.applied
        };
        p.acked = start;
        p.sent = start;
        p.in_flight.clear();
        p.full_until = h.want_full.then_some(index);
        p.last_progress_ms = now_ms;
        let behind = h.received < horizon_floor && h.gc_floor < horizon_floor;
        if horizon_floor != Hlc::ZERO && behind && !mutants::on(Mutant::HorizonRule) {
            // We collected by age tombstones the peer may never have seen:
            // it may still hold the values they deleted. Refuse its data
            // until it has resynced and says hello again. Also when it asks
            // for a full transfer: a replica recovering from damage holds
            // its old values all the same (sim seed 584); one that resynced
            // says hello with our floor, and is no longer behind.
            p.link = Link::Stale { confirmed };
            p.told_stale = true;
            if self.ae_asked.as_ref().is_some_and(|a| a.peer() == from) {
                self.ae_asked = None;
            }
            self.metrics.stale_peers += 1;
            self.staged
                .push(Output::Event(Event::PeerStale { peer: from }));
            self.send(
                from,
                Message::Stale {
                    floor: horizon_floor,
                },
            );
            return;
        }
        self.synced_ms = self.synced_ms.max(now_ms);
        if p.link.caught_up() {
            // The peer has nothing we lack (it is empty). A rebuild from it
            // ends with its feed's end, which says whether it claims to
            // hold all it should (see `on_feed`).
            self.recovered_from(from);
        }
        // Its clock, at once: writes are judged against it. (Not between a
        // server and an edge: an edge's writes are stamped by its server.)
        if !self.is_edge() && role == Role::Server {
            self.probe(from, now_ms);
        }
        self.pump(from, now_ms);
        if role == Role::Edge {
            // Whether we take writes, at once: an edge takes local writes
            // only in a region that does (see `replica/handover.rs`).
            let stable = self.stable();
            if let Some(p) = self.peers.get_mut(&from) {
                p.view_stable = stable;
            }
            self.send_view(from);
        }
        if role == Role::Server {
            self.send_forgotten(from);
            // An edge's local writes go to the server it reached.
            self.hand_over(now_ms);
        }
        if h.want_full {
            // A full transfer with nothing to carry ends at once.
            let (end, frontier) = (self.feed_claim(), self.frontier());
            self.send_feed_end(from, index, end, frontier, now_ms);
        }
    }
}
