//! Edges (see [`Role::Edge`]): both sides of the link between a server
//! and the edges attached to it.
//!
//! * **A server** serves at most `edges_max` edges. Its feed to an edge
//!   carries every origin's entries, within `edge_window_max` messages in
//!   flight: a slow edge lags, and holds up nothing but itself. Edges
//!   count for nothing the members decide (quorum, region reachability,
//!   stability, clock judgement, failover, recovery), and their state is
//!   dropped when they go (they say where to resume in their hello). A
//!   tombstone is not collected before every edge keeping up has
//!   acknowledged the feed past it. An edge's write arrives as a
//!   [`Message::Forward`]: the server checks what the edge saw (each
//!   `Expect`), makes the writes as its own and answers once they are
//!   acknowledged as its own writes would be.
//! * **An edge** talks to its servers only (the driver keeps one
//!   connected). Its writes are forwarded and answered once the server
//!   acknowledged them and they are applied here (read-your-writes), or
//!   after `peer_timeout_ms` if the feed is slow (`edge_forward.rs`). It collects a tombstone
//!   once its server calls it stable (every member holds every write up to
//!   it, `View::stable`) and the edge holds everything up to it. Back with
//!   a server after an absence (or with another server), it takes the
//!   feed from that server's current index (`Hello::tail`) and catches up
//!   by anti-entropy; a record its server lacks at or below the server's
//!   collection floor was deleted and collected while the edge was away,
//!   and is dropped ([`Message::Collected`]).

use std::collections::BTreeMap;

use thiserror::Error;

use super::documents::DocWrite;
use super::peer::Link;
use super::write::Body;
use super::{AckFailure, Output, Replica, Timer, TxnEntry};
use super::{WriteError, WriteReceipt};
use crate::core::codec::{
    ForwardOp, ForwardOutcome, Message, RefusalClass, Summary, ENTRIES_PER_MESSAGE_MAX,
    FORWARD_MESSAGE_BYTES_MAX,
};
use crate::core::doc::{parse_json, DocError};
use crate::core::hlc::Hlc;
use crate::core::mutants::{self, Mutant};
use crate::core::types::{key_hash, IntoKey, Key, NodeId, Stamp};
use crate::sync::config::{Role, WriteAck};

/// Forwarded writes an edge waits on at once; more are refused.
pub const FORWARDS_PENDING_MAX: usize = 4_096;
/// Most keys a server deletes for one edge's prefix delete, whatever the
/// edge asks (as many as one API request may delete on a server).
pub const FORWARD_DELETE_KEYS_MAX: usize = 100_000;
/// An edge acknowledges its server's feed every this many messages...
pub const EDGE_ACKS_BATCHED: u32 = 4;
/// ...or this long after the first it owes, whichever comes first (well
/// within a server's `edge_window_max` and `peer_timeout_ms`).
pub const EDGE_ACK_DELAY_MS: u64 = 25;

/// Why an edge's forwarded write failed.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ForwardError {
    /// No server is connected.
    #[error("this edge has no server connected: writes are refused until one is reachable")]
    NoServer,
    /// No server is connected, and local writes (`edge_writes = "local"`)
    /// cover plain puts and deletes only.
    #[error("this edge has no server connected, and {what} needs one: only plain puts and deletes are taken while none is reachable")]
    ServerNeeded {
        /// What needs a server.
        what: &'static str,
    },
    /// No server is connected and too many local writes wait to be handed over.
    #[error("this edge has no server connected and {max} local writes wait to be handed over: try again once a server is reachable")]
    LocalFull {
        /// The most that may wait.
        max: usize,
    },
    /// Too many forwarded writes are waiting already.
    #[error("more than {max} writes are waiting for the server: try again later")]
    TooMany {
        /// The most that may wait.
        max: usize,
    },
    /// The server refused it; nothing was written.
    #[error("the server refused the write: {message}")]
    Refused {
        /// What kind of refusal.
        class: RefusalClass,
        /// Why, in the server's words.
        message: String,
    },
    /// A key changed at the server since this edge read it; nothing was written.
    #[error("key {key:?} changed at the server since this edge read it")]
    Changed {
        /// The key.
        key: String,
    },
    /// The connection to the server was lost before it answered.
    #[error("the server was lost before it answered: the write may or may not have been made")]
    Lost,
    /// The server did not answer in time.
    #[error(
        "the server did not answer within {waited_ms} ms: the write may or may not have been made"
    )]
    Timeout {
        /// How long it waited, in ms.
        waited_ms: u64,
    },
    /// Made at the server, but not acknowledged as asked.
    #[error("made at the server but not acknowledged: {0}")]
    NotAcknowledged(String),
}

/// A forwarded write the server acknowledged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwardReceipt {
    /// Keys written.
    pub count: u64,
    /// The last keys written (all of them, up to
    /// [`ENTRIES_PER_MESSAGE_MAX`]), with their stamps and their modify
    /// indexes here (this replica's index when one is not applied yet).
    pub receipts: Vec<WriteReceipt>,
}

/// A server's forwarded write, until its writes are acknowledged.
#[derive(Debug, Clone)]
pub(super) struct ForwardGroup {
    edge: NodeId,
    id: u64,
    count: u64,
    written: Vec<(Key, Stamp)>,
    /// Writes not yet acknowledged.
    left: usize,
    /// Still being made: not complete even when nothing is left.
    open: bool,
    failed: Option<String>,
}

/// On an edge: the anti-entropy round it last started with its server.
///
/// An edge always starts the rounds, so its server compares the leaves and
/// sends what the edge lacks without being asked; the collection floor
/// would refuse a value at or below it for a key the edge does not hold
/// (a record its store lost, say), and no round would ever ask for it.
/// Those entries are the server's state after the round began: a server
/// holds a value at or below the edge's floor only if no delete of its key
/// was collected meanwhile (as for an ask: see `AeAsked`). So they are
/// exempt from the floor while the floor is the one the round began under
/// and for one request timeout; a late copy meets the floor.
#[derive(Debug, Clone, Copy)]
pub(super) struct EdgeRound {
    pub(super) peer: NodeId,
    pub(super) session: u64,
    pub(super) floor: Hlc,
    pub(super) started_ms: u64,
}

/// What an edge's transaction became.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EdgeTxn {
    /// It only read: answered here.
    Read(Vec<TxnEntry>),
    /// Its writes were forwarded as number `id`: the results as checked
    /// here (modify indexes of the keys written are known once it is done).
    Forwarded(Vec<TxnEntry>),
}

/// The writes a forwarded write makes (key, value or `None` for a delete,
/// flags), and the edge's local writes it skips with the stamp held here.
type ForwardedWrites = (Vec<(Key, Body, u64)>, Vec<(Key, Stamp)>);

/// The kind of a server's refusal.
fn class_of(e: &WriteError) -> RefusalClass {
    match e {
        WriteError::Key(crate::core::types::KeyError::TooLong { .. })
        | WriteError::Value(_)
        | WriteError::TooManyKeys { .. } => RefusalClass::TooLarge,
        WriteError::Key(_) | WriteError::CasMismatch { .. } => RefusalClass::Invalid,
        WriteError::TooManyPending { .. } => RefusalClass::Busy,
        // A document the edge sent that is not one, or a patch to a plain
        // value: the write's fault, not the server's.
        WriteError::Document(DocError::TooLarge { .. }) => RefusalClass::TooLarge,
        WriteError::Document(DocError::Repairing) => RefusalClass::Busy,
        WriteError::Document(_) => RefusalClass::Invalid,
        WriteError::Forward(ForwardError::TooMany { .. }) => RefusalClass::Busy,
        WriteError::Forward(ForwardError::Refused { class, .. }) => *class,
        _ => RefusalClass::Unavailable,
    }
}

/// The document write a forwarded [`ForwardOp::Doc`] carries (both a
/// whole document and a merge patch are JSON objects).
fn doc_write(json: &[u8], patch: bool) -> Result<DocWrite, DocError> {
    let json = parse_json(json)?;
    Ok(if patch {
        DocWrite::Patch(json)
    } else {
        DocWrite::Whole(json)
    })
}

/// A refusal of a forwarded write, as the edge hears it.
fn refusal(e: WriteError) -> ForwardOutcome {
    ForwardOutcome::Refused {
        class: class_of(&e),
        message: clipped(e.to_string()),
    }
}

fn clipped(message: String) -> String {
    let mut m = message;
    if m.len() > FORWARD_MESSAGE_BYTES_MAX {
        let mut cut = FORWARD_MESSAGE_BYTES_MAX;
        while !m.is_char_boundary(cut) {
            cut -= 1;
        }
        m.truncate(cut);
    }
    m
}

impl Replica {
    /// This replica is an edge.
    pub fn is_edge(&self) -> bool {
        self.cfg.role == Role::Edge
    }

    /// Edges connected to this server (their hello accepted).
    pub fn edges_connected(&self) -> usize {
        self.peers
            .values()
            .filter(|p| p.role == Role::Edge && p.link.ready())
            .count()
    }

    /// The stamp of `key`'s live version here ([`Stamp::ZERO`]: not live).
    pub(super) fn live_stamp(&self, key: &str) -> Stamp {
        self.map
            .get(key)
            .filter(|r| !r.entry.is_tombstone())
            .map_or(Stamp::ZERO, |r| r.entry.stamp)
    }

    /// Whether entries from `from` in `session` are the fresh answer to
    /// this edge's round (see [`EdgeRound`]).
    pub(super) fn edge_round_fresh(
        &self,
        from: NodeId,
        session: u64,
        floor: Hlc,
        now_ms: u64,
    ) -> bool {
        self.edge_round.is_some_and(|r| {
            r.peer == from
                && r.session == session
                && r.floor == floor
                && now_ms.saturating_sub(r.started_ms) <= self.cfg.peer_timeout_ms
        })
    }

    // ---- The server's side ----

    /// The point at or below which every member holds every write: the
    /// least of our frontier and every member's.
    pub(super) fn stable(&self) -> Hlc {
        if self.members().next().is_none() {
            return Hlc::ZERO;
        }
        self.members()
            .map(|(_, p)| p.frontier)
            .fold(self.frontier(), Hlc::min)
    }

    /// The least feed index every edge that keeps up has acknowledged: a
    /// tombstone changed after it is not collected yet (an edge that makes
    /// no progress for `peer_timeout_ms` no longer holds collection up; it
    /// catches up by anti-entropy).
    pub(super) fn edges_acked(&self, now_ms: u64) -> u64 {
        let timeout = self.cfg.peer_timeout_ms;
        self.peers
            .values()
            .filter(|p| p.role == Role::Edge && p.link.up())
            .filter(|p| p.in_flight.is_empty() || now_ms < p.last_progress_ms + timeout)
            .map(|p| p.acked)
            .min()
            .unwrap_or(u64::MAX)
    }

    /// A change of another origin was applied here: it goes on to the
    /// edges with the next batch (as a local write goes to every peer).
    pub(super) fn schedule_edge_push(&mut self, now_ms: u64) {
        if self.timers.is_set(Timer::EdgePush) || self.edges_connected() == 0 {
            return;
        }
        self.timers
            .set(Timer::EdgePush, now_ms + self.cfg.push_delay_ms);
    }

    /// Sends each edge what it has not had yet, within its window.
    pub(super) fn pump_edges(&mut self, now_ms: u64) {
        let ids: Vec<NodeId> = self
            .peers
            .iter()
            .filter(|(_, p)| p.role == Role::Edge && p.link.up())
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            self.pump(id, now_ms);
        }
    }

    /// On an edge: the feed message just applied from `server` is to be
    /// acknowledged. Acknowledgements are batched (every
    /// [`EDGE_ACKS_BATCHED`] messages, or after [`EDGE_ACK_DELAY_MS`]): a
    /// server with a thousand edges reads a fraction of the packets.
    pub(super) fn owe_ack(&mut self, server: NodeId, now_ms: u64) {
        let Some(p) = self.peers.get_mut(&server) else {
            return;
        };
        p.acks_owed += 1;
        if p.acks_owed >= EDGE_ACKS_BATCHED {
            self.send_owed_ack(server);
        } else if !self.timers.is_set(Timer::EdgeAck) {
            self.timers.set(Timer::EdgeAck, now_ms + EDGE_ACK_DELAY_MS);
        }
    }

    fn send_owed_ack(&mut self, server: NodeId) {
        let frontier = self.frontier();
        let Some(p) = self.peers.get_mut(&server) else {
            return;
        };
        p.acks_owed = 0;
        let applied = p.applied;
        self.send(server, Message::Ack { applied, frontier });
    }

    /// On an edge: the batching delay passed; acknowledge what is owed.
    pub(super) fn send_owed_acks(&mut self) {
        let owed: Vec<NodeId> = self
            .peers
            .iter()
            .filter(|(_, p)| p.acks_owed > 0 && p.link.up())
            .map(|(id, _)| *id)
            .collect();
        for id in owed {
            self.send_owed_ack(id);
        }
    }

    /// An edge forwarded a write: make it as ours, or say why not.
    pub(super) fn on_forward(
        &mut self,
        from: NodeId,
        id: u64,
        ops: Vec<ForwardOp>,
        quorum: Option<bool>,
        now_ms: u64,
    ) {
        let Some(p) = self.peers.get_mut(&from).filter(|p| p.role == Role::Edge) else {
            self.metrics.messages_ignored += 1;
            return;
        };
        if self.cfg.role == Role::Edge || p.forwards_seen.contains(&id) {
            // Not a server's to make, or made already (a repeated message).
            self.metrics.messages_ignored += 1;
            return;
        }
        if p.forwards_seen.len() == FORWARDS_PENDING_MAX {
            p.forwards_seen.pop_front();
        }
        p.forwards_seen.push_back(id);
        let ack = match quorum {
            None => self.cfg.write_ack,
            Some(true) => WriteAck::Quorum,
            Some(false) => WriteAck::Local,
        };
        let (writes, held_newer) = match self.forwarded_writes(&ops, now_ms) {
            Ok(w) => w,
            Err(outcome) => {
                self.send(from, Message::Forwarded { id, outcome });
                return;
            }
        };
        let group = self.next_forward_group;
        self.next_forward_group += 1;
        self.forward_groups.insert(
            group,
            ForwardGroup {
                edge: from,
                id,
                count: 0,
                written: Vec::new(),
                left: 0,
                open: true,
                failed: None,
            },
        );
        self.forwarding = Some(group);
        let made = if writes.is_empty() {
            Ok(Vec::new())
        } else {
            self.make_writes(writes, ack, now_ms)
        };
        self.forwarding = None;
        match made {
            Ok(receipts) => {
                self.metrics.forwards_made += 1;
                if let Some(g) = self.forward_groups.get_mut(&group) {
                    g.count = receipts.len() as u64;
                    let skip = receipts.len().saturating_sub(ENTRIES_PER_MESSAGE_MAX);
                    g.written = receipts
                        .into_iter()
                        .skip(skip)
                        .map(|r| (r.key, r.stamp))
                        .collect();
                    // A handover's skipped keys, with the version held
                    // here (at most a batch: within the answer's bound).
                    let room = ENTRIES_PER_MESSAGE_MAX.saturating_sub(g.written.len());
                    g.written.extend(held_newer.into_iter().take(room));
                    g.open = false;
                }
                self.finish_forward_group(group);
            }
            Err(e) => {
                // Refused before anything was applied: nothing to wait on.
                self.forward_groups.remove(&group);
                self.forward_of.retain(|_, g| *g != group);
                let outcome = refusal(e);
                self.send(from, Message::Forwarded { id, outcome });
            }
        }
    }

    /// The writes of a forwarded write, each `Expect` checked; and the
    /// edge's local writes skipped, each with the stamp of the newer
    /// version held here (see `replica/handover.rs`).
    fn forwarded_writes(
        &mut self,
        ops: &[ForwardOp],
        now_ms: u64,
    ) -> Result<ForwardedWrites, ForwardOutcome> {
        let key_max = self.cfg.limits.key_bytes_max;
        let mut writes = Vec::new();
        let mut held_newer = Vec::new();
        // Edges' local writes made and skipped (counted once all are checked).
        let (mut made, mut skipped) = (0u64, 0u64);
        for op in ops {
            match op {
                ForwardOp::Expect { key, stamp } => {
                    if self.live_stamp(key.as_str()) != *stamp {
                        return Err(ForwardOutcome::Changed { key: key.clone() });
                    }
                }
                ForwardOp::Set { key, value, flags } => {
                    let key = key
                        .clone()
                        .into_key(key_max)
                        .map_err(|e| refusal(e.into()))?;
                    self.cfg
                        .limits
                        .check_value(value.len())
                        .map_err(|e| refusal(e.into()))?;
                    writes.push((key, Body::Value(value.clone()), *flags));
                }
                ForwardOp::Doc {
                    key,
                    json,
                    patch,
                    flags,
                } => {
                    let key = key
                        .clone()
                        .into_key(key_max)
                        .map_err(|e| refusal(e.into()))?;
                    let write = doc_write(json, *patch).map_err(|e| refusal(e.into()))?;
                    writes.push((key, Body::Doc(write), *flags));
                }
                ForwardOp::Delete { key } => {
                    let key = key
                        .clone()
                        .into_key(key_max)
                        .map_err(|e| refusal(e.into()))?;
                    writes.push((key, Body::Tombstone, 0));
                }
                ForwardOp::HandOver {
                    key,
                    stamp,
                    value,
                    flags,
                } => {
                    let key = key
                        .clone()
                        .into_key(key_max)
                        .map_err(|e| refusal(e.into()))?;
                    if let Some(v) = value {
                        self.cfg
                            .limits
                            .check_value(v.len())
                            .map_err(|e| refusal(e.into()))?;
                    }
                    match self.hand_over_check(key.as_str(), *stamp, now_ms) {
                        None => {
                            writes.push((key, Body::from(value.clone()), *flags));
                            made += 1;
                        }
                        Some(held) => {
                            skipped += 1;
                            held_newer.push((key, held));
                        }
                    }
                }
                ForwardOp::DeleteTree { prefix, keys_max } => {
                    // The edge's limit, within the server's own.
                    let max = (*keys_max as usize).min(FORWARD_DELETE_KEYS_MAX);
                    let keys: Vec<Key> = self
                        .map
                        .scan_visible(prefix)
                        .take(max.saturating_add(1))
                        .map(|(k, _)| k.clone())
                        .collect();
                    if keys.len() > max {
                        let count = self.map.scan_visible(prefix).count();
                        return Err(refusal(WriteError::TooManyKeys { count, max }));
                    }
                    writes.extend(keys.into_iter().map(|k| (k, Body::Tombstone, 0)));
                }
            }
        }
        self.metrics.handovers_made += made;
        self.metrics.handovers_skipped += skipped;
        Ok((writes, held_newer))
    }

    /// A write is acknowledged (durable here, or held by a majority): its
    /// client hears, or the edge that forwarded it once all its writes are.
    pub(super) fn ack_done(&mut self, receipt: WriteReceipt) {
        match self.forward_of.remove(&receipt.stamp) {
            Some(group) => {
                if let Some(g) = self.forward_groups.get_mut(&group) {
                    g.left = g.left.saturating_sub(1);
                }
                self.finish_forward_group(group);
            }
            None => self.staged.push(Output::Acknowledge(receipt)),
        }
    }

    /// A write is not acknowledged as asked.
    pub(super) fn ack_failed(&mut self, receipt: WriteReceipt, reason: AckFailure) {
        match self.forward_of.remove(&receipt.stamp) {
            Some(group) => {
                if let Some(g) = self.forward_groups.get_mut(&group) {
                    g.left = g.left.saturating_sub(1);
                    g.failed.get_or_insert_with(|| clipped(reason.to_string()));
                }
                self.finish_forward_group(group);
            }
            None => self.staged.push(Output::Unacknowledged { receipt, reason }),
        }
    }

    /// Notes a write being made for the forwarded write being handled.
    pub(super) fn note_forwarded(&mut self, stamp: Stamp) {
        if let Some(group) = self.forwarding {
            self.forward_of.insert(stamp, group);
            if let Some(g) = self.forward_groups.get_mut(&group) {
                g.left += 1;
            }
        }
    }

    /// Answers the edge once every write of the group is acknowledged.
    fn finish_forward_group(&mut self, group: u64) {
        let done = self
            .forward_groups
            .get(&group)
            .is_some_and(|g| !g.open && g.left == 0);
        if !done {
            return;
        }
        let g = self.forward_groups.remove(&group).expect("checked");
        let outcome = match g.failed {
            Some(reason) => ForwardOutcome::NotAcknowledged(reason),
            None => ForwardOutcome::Done {
                count: g.count,
                written: g.written,
            },
        };
        // The edge may be gone: the driver drops a message for no connection.
        self.send(g.edge, Message::Forwarded { id: g.id, outcome });
    }

    /// Records `from` (an edge) holds that we lack, at or below our
    /// collection floor: deleted and collected while it was away. It drops
    /// them rather than send them (we would refuse them).
    pub(super) fn tell_collected(&mut self, to: NodeId, session: u64, lacked: Vec<Summary>) {
        if lacked.is_empty() {
            return;
        }
        self.send(
            to,
            Message::Collected {
                session,
                floor: self.gc_floor,
                records: lacked,
            },
        );
    }

    /// On an edge: the point up to which it collects tombstones: for each
    /// server, the least of what it called stable and what this edge held
    /// of its feed; the greatest of those.
    pub(super) fn edge_stable(&self) -> Hlc {
        self.peers
            .values()
            .filter(|p| p.role == Role::Server)
            .map(|p| p.view_stable.min(p.held))
            .fold(Hlc::ZERO, Hlc::max)
    }

    /// The server says these records of ours, which it lacks, are at or
    /// below its collection floor: their keys were deleted and collected
    /// while we were away. Drop them (and refuse them from now on).
    pub(super) fn on_collected(
        &mut self,
        from: NodeId,
        floor: Hlc,
        records: &[Summary],
        now_ms: u64,
    ) {
        let _ = now_ms;
        // From a server only: to an edge, or to a member it took back
        // after forgetting it (see `replica/members.rs`).
        if self.peers.get(&from).is_none_or(|p| p.role != Role::Server)
            || mutants::on(Mutant::EdgeCollected)
        {
            self.metrics.messages_ignored += 1;
            return;
        }
        let mut by_hash: BTreeMap<[u8; 8], Stamp> = BTreeMap::new();
        for s in records {
            // Our own writes wait to be handed over (`replica/handover.rs`).
            if s.stamp.hlc <= floor && !self.is_own_record(s.stamp) {
                by_hash.insert(s.key_hash, s.stamp);
            }
        }
        let mut dropped = Vec::new();
        for (h, stamp) in by_hash {
            for (k, r) in self.map.records_with_hash(u64::from_be_bytes(h)) {
                // Summaries carry the stamp a record is ordered by (a
                // merge of documents: the newest write it merged).
                if r.entry.order().0 == stamp && key_hash(k.as_str()).to_be_bytes() == h {
                    dropped.push((k.clone(), stamp));
                }
            }
        }
        for (k, stamp) in dropped {
            self.map.remove(k.as_str());
            self.dirty_keys.insert(k);
            self.gc_floor = self.gc_floor.max(stamp.hlc);
            self.dirty_meta = true;
            self.metrics.collected_dropped += 1;
        }
    }

    /// Whether the link to `peer` may be taken: an edge talks to servers
    /// only, and a server serves at most `edges_max` edges.
    pub(super) fn edge_link_refused(&self, peer: NodeId, role: Role) -> Option<super::Refusal> {
        if self.is_edge() && role == Role::Edge {
            return Some(super::Refusal::EdgeToEdge);
        }
        if role == Role::Edge {
            let others = self
                .peers
                .iter()
                .filter(|(id, p)| **id != peer && p.role == Role::Edge && p.link != Link::Down)
                .count();
            if others >= self.cfg.edges_max {
                return Some(super::Refusal::EdgesFull {
                    max: self.cfg.edges_max,
                });
            }
        }
        None
    }
}
