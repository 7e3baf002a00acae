//! Members that leave: a member's graceful leave, an operator's forget of
//! a dead one, the forgotten ids (durable, and spread to every member),
//! and the return of a forgotten id.
//!
//! A forgotten member no longer counts: not for quorum, region
//! reachability, stability, clock judgement or recovery (`members()`
//! leaves it out), so tombstones are collected without it. It may
//! therefore hold values whose deletes were collected meanwhile. Each
//! leave or forget carries the clock `at` it was made at, the same on every
//! member. A member that hears from a forgotten id refuses its data and
//! tells it [`Message::Forgotten`] with `at` and its collection floor; the
//! returning node drops what it holds at or below that floor, remembers
//! `at` durably as `rejoined`, and recovers (it claims nothing and takes
//! every member's full state, durable across restarts: see
//! `replica/recovery.rs`). Its hellos carry `rejoined`: a member that
//! forgot it at or before that takes it back.
//!
//! A member takes it back as a suspect: deletes at or below its floor
//! then (`Peer::suspect_floor`) were collected without it, and it may have
//! taken old values from another forgotten node that came back before
//! hearing it was forgotten. So nothing it sends at or below that floor
//! is exempt from our floor (neither a full transfer nor an answer we
//! asked for), and in anti-entropy we tell it which of its records at or
//! below it we lack ([`Message::Collected`], as a server tells an edge):
//! it drops them.
//!
//! Notices travel as [`Message::Forget`]: to every member in contact when
//! a member leaves or is forgotten, relayed once by each member that
//! learns a new one, and sent whole after every accepted hello, so a
//! member that was away learns what it missed.
//!
//! Forgetting also drops what bounded our frontier: a member's frontier is
//! the least of what it received of each member's writes, and writes of the
//! forgotten member may have reached other members but not it. Until an
//! anti-entropy round with every member found equal state, the frontier
//! stays at what it held of the forgotten member's writes
//! ([`ForgottenMember::held`]). When each side of a partition forgot the
//! other, the later forget stands (the greater node id on a tie): the side
//! forgotten later takes the other back and resyncs. A leave is durable:
//! a node that left refuses writes and forgets until it is told it was
//! forgotten and has resynced.

use thiserror::Error;

use super::peer::Link;
use super::{Event, Output, Replica};
use crate::core::codec::{ForgetNotice, Message, FORGOTTEN_NOTICES_MAX};
use crate::core::hlc::{ClockError, Hlc};
use crate::core::mutants::{self, Mutant};
use crate::core::types::{Key, NodeId};
use crate::sync::config::Role;
use crate::sync::durable::{ForgottenMember, Recovery};

/// Why a member could not be forgotten.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ForgetError {
    /// A node cannot forget itself.
    #[error("a node cannot forget itself: run `meridian leave` on it")]
    Myself,
    /// An edge keeps no members.
    #[error("an edge keeps no members: forget members on a server")]
    Edge,
    /// No member by that id is known here.
    #[error("no member {0} is known here")]
    Unknown(NodeId),
    /// The member is in contact: it is not dead.
    #[error(
        "member {name} ({node}) is in contact: run `meridian leave` on it, or stop it and forget it then"
    )]
    InContact {
        /// The member.
        node: NodeId,
        /// Its node name.
        name: String,
    },
    /// This node left the cluster: it is not a member that may forget others.
    #[error("this node left the cluster: forget members on a member")]
    Left,
    /// As many members as a node keeps are forgotten already.
    #[error("{FORGOTTEN_NOTICES_MAX} members are forgotten already")]
    TooMany,
    /// Our clock cannot stamp the forget.
    #[error("cannot stamp the forget: {0}")]
    Clock(#[from] ClockError),
}

/// Why this node could not leave.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum LeaveError {
    /// An edge is not a member.
    #[error("an edge is not a member: stop it, and its server drops it")]
    Edge,
    /// No member is in contact to take this node's writes and the notice.
    #[error("no member is in contact: nobody would hold this node's writes or hear it leave")]
    Alone,
    /// Members in contact do not hold every write of this node yet.
    #[error("members {} do not hold every write of this node yet", members.join(", "))]
    NotHandedOver {
        /// Their node names.
        members: Vec<String>,
    },
    /// Our clock cannot stamp the leave.
    #[error("cannot stamp the leave: {0}")]
    Clock(#[from] ClockError),
}

/// A peer this replica knows (a member, or an edge it serves).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownPeer {
    /// Its node id.
    pub node: NodeId,
    /// Its node name, as its hello said.
    pub name: String,
    /// Its region.
    pub region: String,
    /// Its HTTP API address.
    pub api: String,
    /// A member (server) or an edge.
    pub role: Role,
    /// Its hello was accepted on a live connection.
    pub connected: bool,
}

impl Replica {
    /// Every peer this replica knows, members and edges (not forgotten ids).
    pub fn known_peers(&self) -> Vec<KnownPeer> {
        self.peers
            .iter()
            .filter(|(id, _)| !self.forgotten.contains_key(id))
            .map(|(id, p)| KnownPeer {
                node: *id,
                name: p.name.clone(),
                region: p.region.clone(),
                api: p.api.clone(),
                role: p.role,
                connected: p.link.ready(),
            })
            .collect()
    }

    /// The members the cluster forgot, as far as this replica knows.
    pub fn forgotten(&self) -> &std::collections::BTreeMap<NodeId, ForgottenMember> {
        &self.forgotten
    }

    /// The clock this node left at, once it did.
    pub fn left(&self) -> Option<Hlc> {
        self.left
    }

    /// Forgets `node`, a member that is gone for good (an operator's
    /// `meridian forget`): it no longer counts for quorum, reachability or
    /// stability, here and, as the notice spreads, on every member. Refused
    /// while it is in contact. Forgetting a forgotten member again changes
    /// nothing.
    pub fn forget(&mut self, node: NodeId, now_ms: u64) -> Result<ForgottenMember, ForgetError> {
        self.observe_time(now_ms);
        if self.is_edge() {
            return Err(ForgetError::Edge);
        }
        if self.left.is_some() {
            return Err(ForgetError::Left);
        }
        if node == self.cfg.node {
            return Err(ForgetError::Myself);
        }
        if let Some(f) = self.forgotten.get(&node) {
            return Ok(f.clone());
        }
        let Some(p) = self.peers.get(&node).filter(|p| p.role == Role::Server) else {
            return Err(ForgetError::Unknown(node));
        };
        if p.in_contact {
            return Err(ForgetError::InContact {
                node,
                name: p.name.clone(),
            });
        }
        if self.forgotten.len() >= FORGOTTEN_NOTICES_MAX {
            return Err(ForgetError::TooMany);
        }
        let at = self.clock.tick(now_ms)?;
        self.dirty_meta = true;
        let f = ForgottenMember {
            at,
            name: p.name.clone(),
            region: p.region.clone(),
            left: false,
            held: p.received,
            settled: false,
        };
        self.forget_member(node, &f, now_ms);
        self.relay_forgets(&[notice(node, &f)], None);
        self.commit();
        Ok(f)
    }

    /// This node leaves the cluster: every peer in contact is told (the
    /// members forget it, the edges attach elsewhere). Refused unless
    /// every member in contact holds every write of this node, so that
    /// none is lost with it. After it, client writes are refused: stop
    /// the node.
    pub fn leave(&mut self, now_ms: u64) -> Result<Hlc, LeaveError> {
        self.observe_time(now_ms);
        if self.is_edge() {
            return Err(LeaveError::Edge);
        }
        if let Some(at) = self.left {
            return Ok(at);
        }
        let index = self.map.index();
        let up: Vec<(&NodeId, &super::peer::Peer)> = self
            .members()
            .filter(|(_, p)| matches!(p.link, Link::Up { .. }) && p.in_contact)
            .collect();
        if up.is_empty() {
            return Err(LeaveError::Alone);
        }
        let behind: Vec<String> = up
            .iter()
            .filter(|(_, p)| p.acked < index)
            .map(|(_, p)| p.name.clone())
            .collect();
        if !behind.is_empty() {
            return Err(LeaveError::NotHandedOver { members: behind });
        }
        let at = self.clock.tick(now_ms)?;
        self.dirty_meta = true;
        self.left = Some(at);
        self.left_dirty = true;
        let me = ForgetNotice {
            node: self.cfg.node,
            at,
            name: self.cfg.name.clone(),
            region: self.cfg.region.clone(),
            left: true,
        };
        let to: Vec<NodeId> = self
            .peers
            .iter()
            .filter(|(_, p)| p.link.up())
            .map(|(id, _)| *id)
            .collect();
        self.send_forgets(to, &[me]);
        self.staged.push(Output::Event(Event::Left { at }));
        self.commit();
        Ok(at)
    }

    /// A peer's notices of forgotten members.
    pub(super) fn on_forget(&mut self, from: NodeId, members: Vec<ForgetNotice>, now_ms: u64) {
        if self.peers.get(&from).is_some_and(|p| p.link.stale()) && !self.is_edge() {
            // A peer we told to resync speaks for nobody until it has.
            self.metrics.messages_ignored += 1;
            return;
        }
        if self.is_edge() {
            // An edge keeps no members: it hears only its server leave,
            // and attaches to another.
            if members.iter().any(|m| m.node == from) {
                self.staged.push(Output::Forgot { peer: from });
            }
            return;
        }
        let mut fresh = Vec::new();
        for m in members {
            let f = ForgottenMember {
                at: m.at,
                name: m.name.clone(),
                region: m.region.clone(),
                left: m.left,
                held: Hlc::ZERO,
                settled: false,
            };
            if self.forget_member(m.node, &f, now_ms) {
                fresh.push(m);
            }
        }
        if !fresh.is_empty() {
            self.relay_forgets(&fresh, Some(from));
        }
    }

    /// Sends `notices` to every member in contact but `except`.
    fn relay_forgets(&mut self, notices: &[ForgetNotice], except: Option<NodeId>) {
        let to: Vec<NodeId> = self
            .members()
            .filter(|(id, p)| Some(**id) != except && matches!(p.link, Link::Up { .. }))
            .map(|(id, _)| *id)
            .collect();
        self.send_forgets(to, notices);
    }

    /// Sends `notices` to each of `to`.
    fn send_forgets(&mut self, to: Vec<NodeId>, notices: &[ForgetNotice]) {
        for id in to {
            self.send(
                id,
                Message::Forget {
                    members: notices.to_vec(),
                },
            );
        }
    }

    /// After an accepted hello: every forgotten member, so that a member
    /// that was away learns who left meanwhile; and our own leave, if we
    /// left.
    pub(super) fn send_forgotten(&mut self, to: NodeId) {
        if self.is_edge() {
            return;
        }
        let mut members: Vec<ForgetNotice> = self
            .forgotten
            .iter()
            .map(|(id, f)| notice(*id, f))
            .take(FORGOTTEN_NOTICES_MAX - 1)
            .collect();
        if let Some(at) = self.left {
            // Our own leave, again: a peer that missed the notice (lost,
            // or it was away) forgets us now, and then tells us we were
            // forgotten when we say hello, which ends the leave. Otherwise
            // a node that left and came back before every peer heard
            // would refuse writes for good (sim seed 6343).
            members.push(ForgetNotice {
                node: self.cfg.node,
                at,
                name: self.cfg.name.clone(),
                region: self.cfg.region.clone(),
                left: true,
            });
        }
        if members.is_empty() {
            return;
        }
        self.send(to, Message::Forget { members });
    }

    /// Forgets `node` as of `f.at`: its state goes, it stops counting,
    /// and the driver closes its connection and stops dialing it. False
    /// if that changed nothing (already forgotten as late, back since, an
    /// edge, or no room).
    fn forget_member(&mut self, node: NodeId, f: &ForgottenMember, now_ms: u64) -> bool {
        if node == self.cfg.node {
            // Our own: a member that forgot us says so when we say hello.
            return false;
        }
        if self.forgotten.get(&node).is_some_and(|old| old.at >= f.at) {
            return false;
        }
        if let Some(p) = self.peers.get(&node) {
            if p.role == Role::Edge {
                return false;
            }
            // It resynced after this forget and said so: old news.
            if p.rejoined >= f.at {
                return false;
            }
        }
        if !self.forgotten.contains_key(&node) && self.forgotten.len() >= FORGOTTEN_NOTICES_MAX {
            self.metrics.forgets_refused += 1;
            return false;
        }
        // What of its writes is held here: no more is claimed until every
        // member was found equal (see `ForgottenMember::held`).
        let held = match (self.peers.get(&node), self.forgotten.get(&node)) {
            (Some(p), _) => p.received,
            (None, Some(old)) => old.held,
            (None, None) => Hlc::ZERO,
        };
        let mut f = f.clone();
        f.held = held;
        f.settled = false;
        self.equal_since_forget.clear();
        self.forgotten.insert(node, f.clone());
        self.dirty_forgotten.insert(node);
        self.dirty_peers.remove(&node);
        self.peers.remove(&node);
        if self.ae_session.is_some_and(|s| s.peer == node) {
            self.ae_session = None;
        }
        if self.ae_asked.as_ref().is_some_and(|a| a.peer() == node) {
            self.ae_asked = None;
        }
        if self.rebuild_from == Some(node) {
            self.rebuild_from = None;
        }
        self.metrics.members_forgotten += 1;
        self.staged.push(Output::Event(Event::MemberForgotten {
            peer: node,
            name: f.name.clone(),
            region: f.region.clone(),
            left: f.left,
        }));
        self.staged.push(Output::Forgot { peer: node });
        self.update_regions(now_ms);
        // Quorum writes and barriers waiting on it, and a recovery
        // waiting for its state, are judged without it now.
        self.release_acks(now_ms);
        self.check_barriers(now_ms);
        self.check_recovered();
        true
    }

    /// In a hello from a forgotten id: true if it may go on (it resynced
    /// after it was forgotten: it is a member again); otherwise it is told
    /// to resync and its data is refused until it does.
    pub(super) fn forgotten_hello(&mut self, from: NodeId, rejoined: Hlc) -> bool {
        let Some(f) = self.forgotten.get(&from) else {
            return true;
        };
        if rejoined >= f.at || mutants::on(Mutant::ForgottenResync) {
            self.take_back(from);
            return true;
        }
        let (at, floor) = (f.at, self.gc_floor);
        let p = self.peers.entry(from).or_default();
        p.link = Link::Stale {
            confirmed: p.link.confirmed(),
        };
        p.told_stale = true;
        self.metrics.forgotten_told += 1;
        self.send(from, Message::Forgotten { at, floor });
        false
    }

    /// Takes forgotten `peer` back as a member, as a suspect (see the
    /// module docs), and says hello to it again (it may have refused ours
    /// while it was forgotten here).
    fn take_back(&mut self, peer: NodeId) {
        let Some(f) = self.forgotten.remove(&peer) else {
            return;
        };
        self.dirty_forgotten.insert(peer);
        let floor = self.gc_floor;
        let p = self.peers.entry(peer).or_default();
        p.told_stale = false;
        if !mutants::on(Mutant::SuspectFloor) && !mutants::on(Mutant::ForgottenResync) {
            p.suspect_floor = p.suspect_floor.max(floor);
        }
        self.staged
            .push(Output::Event(Event::MemberBack { peer, name: f.name }));
        self.say_hello(peer);
    }

    /// A member says the cluster forgot us at `at` and may have collected
    /// deletes we never saw up to `floor` (see the module docs).
    pub(super) fn on_forgotten(&mut self, from: NodeId, at: Hlc, floor: Hlc, now_ms: u64) {
        if self.is_edge() {
            return;
        }
        if self.left.is_some_and(|left| at < left) {
            // An older forget than our leave: we are leaving anyway.
            return;
        }
        if let Some(mine) = self.forgotten.get(&from) {
            // We forgot the teller and its side forgot us (each side of a
            // partition forgot the other): the later forget stands (the
            // greater node id on a tie). Ours: it yields when it hears of
            // it. Theirs: we take it back and yield.
            if (mine.at, self.cfg.node) > (at, from) {
                return;
            }
            self.take_back(from);
        } else if self.peers.get(&from).is_some_and(|p| p.link.stale()) {
            // A peer we told to resync (away past the horizon) says nothing
            // about us until it has.
            self.metrics.messages_ignored += 1;
            return;
        }
        if floor > self.gc_floor {
            self.gc_floor = floor;
            self.dirty_meta = true;
        }
        // Our writes from now on are stamped above the floor the members
        // collected up to without us (below it they would be refused).
        let _ = self.clock.observe(floor, now_ms);
        // Until it takes us back our hellos to it are repeated (one lost
        // would leave it refusing us, and our recovery waiting, for good).
        if let Some(p) = self.peers.get_mut(&from) {
            p.link.unconfirm();
        }
        if at <= self.rejoined {
            // We dropped and took everything back since (another member
            // told us first): our hello says so.
            self.say_hello(from);
            self.commit();
            return;
        }
        // Values at or below the floor may be of keys whose deletes were
        // collected without us: drop them; the recovery takes back from
        // every member those still alive (full transfers are exempt from
        // our floor).
        let old: Vec<Key> = self
            .map
            .iter()
            .filter(|(_, r)| r.entry.stamp.hlc <= floor)
            .map(|(k, _)| k.clone())
            .collect();
        for k in &old {
            self.map.remove(k.as_str());
            self.dirty_keys.insert(k.clone());
        }
        for (id, p) in self.peers.iter_mut() {
            if p.received != Hlc::ZERO {
                p.received = Hlc::ZERO;
                self.dirty_peers.insert(*id);
            }
        }
        self.rejoined = at;
        self.rejoined_dirty = true;
        // We were the one away: our view of the peers is old (their
        // progress with us was dropped when they forgot us), so collecting
        // by age would find them behind and tell them to resync (seed
        // 17017). Collect by stability alone for a horizon, as after a
        // resync for the horizon.
        self.resynced_ms = Some(now_ms);
        self.age_collection_from_ms = now_ms.saturating_add(self.cfg.tombstone_horizon_ms);
        // Back as a member once it resynced (a node that left and was
        // started again included).
        self.left = None;
        self.metrics.resyncs += 1;
        self.staged.push(Output::Event(Event::Resynced {
            from,
            dropped: old.len(),
        }));
        // A round begun on the state we just dropped is void.
        self.ae_session = None;
        self.ae_asked = None;
        // Durable: a restart in the middle goes on claiming nothing until
        // every member's state is here. Its hellos (with `rejoined`) ask
        // every member for its state.
        self.begin_recovery(Recovery::AfterForget);
        let _ = now_ms;
        self.commit();
    }

    /// The most this replica may claim to hold of forgotten members'
    /// writes: what it held of each when it was forgotten, until an
    /// anti-entropy round with every member found equal state.
    pub(super) fn forgotten_cap(&self) -> Option<Hlc> {
        if mutants::on(Mutant::ForgottenFrontier) {
            return None;
        }
        self.forgotten
            .values()
            .filter(|f| !f.settled)
            .map(|f| f.held)
            .min()
    }

    /// An anti-entropy round found our state equal to member `peer`'s:
    /// once every member was, whatever they held of the forgotten
    /// members' writes is here, and the frontier may pass them.
    pub(super) fn equal_after_forget(&mut self, peer: NodeId) {
        if self.forgotten_cap().is_none() {
            return;
        }
        if !self.members().any(|(id, _)| *id == peer) {
            return;
        }
        self.equal_since_forget.insert(peer);
        let all = self
            .members()
            .all(|(id, _)| self.equal_since_forget.contains(id));
        if !all {
            return;
        }
        for (id, f) in self.forgotten.iter_mut().filter(|(_, f)| !f.settled) {
            f.settled = true;
            self.dirty_forgotten.insert(*id);
        }
    }

    /// The transport lost a forgotten id: nothing of it is kept.
    pub(super) fn drop_forgotten_peer(&mut self, peer: NodeId) -> bool {
        if !self.forgotten.contains_key(&peer) {
            return false;
        }
        self.peers.remove(&peer);
        true
    }
}

fn notice(node: NodeId, f: &ForgottenMember) -> ForgetNotice {
    ForgetNotice {
        node,
        at: f.at,
        name: f.name.clone(),
        region: f.region.clone(),
        left: f.left,
    }
}
