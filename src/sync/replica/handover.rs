//! An edge's local writes (`edge_writes = "local"`, [`EdgeWrites::Local`]):
//! taken while no server is connected, and handed over to a server once
//! one is.
//!
//! * **Taken.** With no server connected, a put or a delete of one key is
//!   written here as the edge's own write (its stamp, its node id),
//!   durable in its store before it is acknowledged, and read back by
//!   every local read and watch. A check-and-set, a prefix delete, a
//!   writing transaction or a quorum write still needs a server. At most
//!   [`LOCAL_WRITES_MAX`] keys wait at once; more are refused. Only once a
//!   server of its region has said since the edge started that it takes
//!   writes (`View::active`): a standby region's servers would refuse them.
//! * **Waiting.** The keys whose version here is the edge's own write are
//!   the ones waiting (rebuilt from the map at a restart). Nothing of them
//!   leaves the edge as a record: an edge is no origin of the mesh's feeds
//!   (a server sends other servers its own writes only), so a record of an
//!   edge's would reach no other server. The edge keeps them out of its
//!   anti-entropy answers, does not collect their tombstones, does not
//!   drop them when its server says it lacks them below its collection
//!   floor (`Message::Collected`), nor when it resyncs.
//! * **Handed over.** Once a server is connected, the edge sends them in
//!   batches of [`HANDOVER_BATCH_MAX`] as [`ForwardOp::HandOver`], one
//!   batch at a time. The server makes each as its own write (its stamp,
//!   later than the edge's) unless it holds a version of the key stamped
//!   at or above the edge's (a later write or delete wins, as LWW decides
//!   between any two writes); a stamp further ahead of the server's clock
//!   than the clock bound counts as at that bound, so a fast clock at the
//!   edge does not make its writes win for longer. Once the server has
//!   answered, the edge's own version goes: a value the server made stays
//!   until the server's version replaces it by the feed (within
//!   `forward_timeout_ms`, else it is dropped then), so that local reads
//!   see no gap; anything else (a delete, a write the server skipped)
//!   goes at once, and anti-entropy brings the server's version. A batch lost with its server, or unanswered for
//!   `forward_timeout_ms`, is sent again (to whichever server is
//!   connected): the server's check makes a repeat harmless. A batch the
//!   server refuses as invalid (its limits are smaller than the edge's)
//!   is sent again one key at a time; a key refused alone is dropped here
//!   (event `local_write_dropped`), and the server's version comes back by
//!   anti-entropy. A server that refuses them as unavailable (its clock is
//!   judged wrong, it rebuilds, it has no quorum)
//!   [`HANDOVER_REFUSALS_MAX`] times in a row is left for another server
//!   of the region ([`Refusal::TakesNoWrites`](super::Refusal)), at most
//!   once per [`SERVER_LEFT_EVERY_MS_MIN`].
//!
//! A local write is as durable as the edge's disk until it is handed over:
//! an edge whose store is lost before then loses it.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;

use super::{Event, Output, Replica, WriteError, WriteReceipt};
use crate::core::codec::{ForwardOp, ForwardOutcome, Message, RefusalClass};
use crate::core::hlc::Hlc;
use crate::core::mutants::{self, Mutant};
use crate::core::types::{Key, NodeId, Stamp};
use crate::sync::config::{EdgeWrites, Role, WriteAck};

/// Keys with a local write waiting to be handed over, at most; more writes
/// are refused until the edge has handed some over.
pub const LOCAL_WRITES_MAX: usize = 10_000;
/// Local writes handed over in one forwarded write.
pub const HANDOVER_BATCH_MAX: usize = 256;
/// An edge whose server refuses its handover as unavailable this many
/// times in a row (a heartbeat apart) attaches to another server.
pub const HANDOVER_REFUSALS_MAX: u32 = 3;
/// ...but at most once in this long: with no other server in reach it
/// comes back to the same one, which must then have time to serve it
/// (its feed, anti-entropy) rather than be left again at once.
pub const SERVER_LEFT_EVERY_MS_MIN: u64 = 60_000;
/// Handover batches are numbered from here, apart from the client writes
/// the node forwards (numbered from 1).
const HANDOVER_ID_FIRST: u64 = 1 << 63;

/// The local writes waiting, and the batch in flight.
#[derive(Debug)]
pub(super) struct Handover {
    /// Keys whose version here may be this edge's own write (checked
    /// against the map before use: a newer version replaces it).
    keys: BTreeSet<Key>,
    /// The batch sent and not answered yet.
    batch: Option<Batch>,
    /// Values the connected server made: their wait ends when its version
    /// arrives by the feed, or at the deadline (ms) when ours is dropped
    /// (anti-entropy brings its version); not sent again unless the server
    /// is lost.
    answered: BTreeMap<Key, u64>,
    /// Keys per batch: [`HANDOVER_BATCH_MAX`], or 1 after a refusal, to
    /// find the key the server refuses.
    batch_max: usize,
    /// The connected server's refusals (as unavailable) in a row.
    refusals: u32,
    /// When this edge last left a server that refused its writes (ms).
    left_server_ms: Option<u64>,
    next_id: u64,
}

impl Default for Handover {
    fn default() -> Self {
        Handover {
            keys: BTreeSet::new(),
            batch: None,
            answered: BTreeMap::new(),
            batch_max: HANDOVER_BATCH_MAX,
            refusals: 0,
            left_server_ms: None,
            next_id: HANDOVER_ID_FIRST,
        }
    }
}

/// A batch of local writes sent to a server.
#[derive(Debug)]
struct Batch {
    id: u64,
    server: NodeId,
    sent_ms: u64,
    /// Each key with the stamp of the write sent.
    keys: Vec<(Key, Stamp)>,
}

/// What an edge's client write became.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EdgeWritten {
    /// Forwarded to the server; its outcome comes as
    /// [`Output::Forwarded`] with the write's number.
    Forwarded,
    /// No server connected: written here, to be handed over (see
    /// [`EdgeWrites::Local`]); acknowledged as a local write is, by
    /// [`Output::Acknowledge`] once durable.
    Local(WriteReceipt),
}

impl Replica {
    /// Whether this edge's version of `key` is its own write.
    fn own_version(&self, key: &str) -> bool {
        self.map
            .get(key)
            .is_some_and(|r| r.entry.stamp.node == self.cfg.node)
    }

    /// On an edge: whether records it holds of its own are waiting to be
    /// handed over (they stay out of what it sends, collects and drops).
    pub(super) fn is_own_record(&self, stamp: Stamp) -> bool {
        self.is_edge() && stamp.node == self.cfg.node
    }

    /// Local writes waiting to be handed over (or for the server's newer
    /// version to arrive).
    pub fn local_writes_waiting(&self) -> usize {
        self.handover
            .keys
            .iter()
            .filter(|k| self.own_version(k.as_str()))
            .count()
    }

    /// After a restart: the keys whose version is this edge's own write
    /// are waiting.
    pub(super) fn restore_handover(&mut self) {
        if !self.is_edge() {
            return;
        }
        let me = self.cfg.node;
        self.handover.keys = self
            .map
            .iter()
            .filter(|(_, r)| r.entry.stamp.node == me)
            .map(|(k, _)| k.clone())
            .collect();
    }

    /// Forgets the waiting keys whose version here is no longer ours.
    fn prune_handover(&mut self) {
        let keys = std::mem::take(&mut self.handover.keys);
        let (mine, replaced): (BTreeSet<Key>, BTreeSet<Key>) =
            keys.into_iter().partition(|k| self.own_version(k.as_str()));
        for k in &replaced {
            self.handover.answered.remove(k);
        }
        self.handover.keys = mine;
    }

    /// On an edge with no server connected: writes `value` under `key`
    /// (`None`: deletes it) as its own write, if local writes are on.
    /// `Ok(None)`: they are not.
    pub(super) fn write_locally(
        &mut self,
        key: &Key,
        value: Option<Bytes>,
        flags: u64,
        now_ms: u64,
    ) -> Result<Option<WriteReceipt>, WriteError> {
        if self.cfg.edge_writes != EdgeWrites::Local {
            return Ok(None);
        }
        // Only in a region that takes writes, as a server of it said since
        // this edge started: a standby region's servers would refuse them.
        if !self
            .peers
            .values()
            .any(|p| p.role == Role::Server && p.view_active)
        {
            return Err(super::ForwardError::NoServer.into());
        }
        if self.handover.keys.len() >= LOCAL_WRITES_MAX && !self.handover.keys.contains(key) {
            self.prune_handover();
            if self.handover.keys.len() >= LOCAL_WRITES_MAX {
                return Err(super::ForwardError::LocalFull {
                    max: LOCAL_WRITES_MAX,
                }
                .into());
            }
        }
        // An edge takes its server's stamps as they are (its clock stamps
        // nothing else): its clock must pass the version it replaces, or
        // the write would be older than what it holds. A version stamped
        // further ahead than the clock bound refuses the write.
        // A document changes at a server, where its versions merge: an
        // edge's local version would be handed over as a plain value.
        if self.map.get(key.as_str()).is_some_and(|r| r.entry.is_doc()) {
            return Err(super::ForwardError::ServerNeeded {
                what: "a write to a document",
            }
            .into());
        }
        if let Some(current) = self.map.get(key.as_str()).map(|r| r.entry.stamp.hlc) {
            let now = self.checked_now(now_ms);
            self.clock.observe(current, now)?;
        }
        let receipt = self.write(key.clone(), value, flags, None, WriteAck::Local, now_ms)?;
        self.handover.keys.insert(key.clone());
        // A key written again waits for its new version.
        self.handover.answered.remove(key);
        self.metrics.local_writes_taken += 1;
        Ok(Some(receipt))
    }

    /// On an edge: sends the next batch of local writes to the connected
    /// server, if none is in flight (one that waited past
    /// `forward_timeout_ms` is given up and sent again).
    pub(super) fn hand_over(&mut self, now_ms: u64) {
        if !self.is_edge() || self.handover.keys.is_empty() {
            return;
        }
        // Made values the feed has not replaced in time: ours go, and
        // anti-entropy brings the server's version.
        let late: Vec<Key> = self
            .handover
            .answered
            .iter()
            .filter(|(_, until)| now_ms >= **until)
            .map(|(k, _)| k.clone())
            .collect();
        for k in late {
            self.drop_own_version(&k);
        }
        if let Some(b) = &self.handover.batch {
            if now_ms < b.sent_ms.saturating_add(self.cfg.forward_timeout_ms) {
                return;
            }
            self.handover.batch = None;
        }
        let Some(server) = self.server() else {
            return;
        };
        self.prune_handover();
        let mut keys = Vec::new();
        let mut ops = Vec::new();
        for k in &self.handover.keys {
            if ops.len() == self.handover.batch_max {
                break;
            }
            if self.handover.answered.contains_key(k) {
                continue;
            }
            let Some(r) = self.map.get(k.as_str()) else {
                continue;
            };
            keys.push((k.clone(), r.entry.stamp));
            ops.push(ForwardOp::HandOver {
                key: k.clone(),
                stamp: r.entry.stamp,
                value: r.entry.value.clone(),
                flags: r.entry.flags,
            });
        }
        if ops.is_empty() {
            return;
        }
        let id = self.handover.next_id;
        self.handover.next_id += 1;
        self.metrics.local_writes_handed_over += ops.len() as u64;
        self.handover.batch = Some(Batch {
            id,
            server,
            sent_ms: now_ms,
            keys,
        });
        self.send(
            server,
            Message::Forward {
                id,
                ops,
                quorum: None,
            },
        );
    }

    /// On an edge: the answer to a handover batch, if `id` is one's.
    pub(super) fn on_handed_over(
        &mut self,
        from: NodeId,
        id: u64,
        outcome: &ForwardOutcome,
        now_ms: u64,
    ) -> bool {
        if id < HANDOVER_ID_FIRST {
            return false;
        }
        if !self
            .handover
            .batch
            .as_ref()
            .is_some_and(|b| b.id == id && b.server == from)
        {
            // Late, or for a batch given up.
            self.metrics.messages_ignored += 1;
            return true;
        }
        let b = self.handover.batch.take().expect("checked");
        if !matches!(outcome, ForwardOutcome::Refused { .. }) {
            self.handover.refusals = 0;
        }
        match outcome {
            // Made, or skipped for a newer version: either way the server
            // holds the version that wins now, and ours goes. A value the
            // server made waits for the server's version to replace it (the
            // feed brings it at once), so that reads here see no gap; one
            // not replaced within `forward_timeout_ms` is dropped then.
            // Anything else goes now and anti-entropy brings the server's
            // version, if it holds one: a delete (absent reads as deleted),
            // a write the server skipped for its newer one (which may be a
            // delete since collected, so that nothing would replace ours),
            // and a version the server stamped below ours (our clock ran
            // further ahead than its bound: it would lose to ours here).
            ForwardOutcome::Done { count, written } => {
                // The writes made come first, then the keys skipped with
                // the version the server holds.
                let made_count = (*count as usize).min(written.len());
                for (k, sent) in b.keys {
                    let at = written.iter().rposition(|(wk, _)| *wk == k);
                    let theirs = at.map(|i| &written[i]);
                    self.staged.push(Output::HandedOver {
                        key: k.clone(),
                        local: sent,
                        made: at.filter(|i| *i < made_count).map(|i| written[i].1),
                    });
                    let Some(ours) = self.map.get(k.as_str()).filter(|r| r.entry.stamp == sent)
                    else {
                        // Written here again meanwhile: that one waits.
                        continue;
                    };
                    let made_value = at.is_some_and(|i| i < made_count)
                        && !ours.entry.is_tombstone()
                        && theirs.is_some_and(|(_, v)| *v > sent);
                    if made_value {
                        let until = now_ms.saturating_add(self.cfg.forward_timeout_ms);
                        self.handover.answered.insert(k, until);
                    } else {
                        self.drop_own_version(&k);
                    }
                }
                self.handover.batch_max = HANDOVER_BATCH_MAX;
            }
            // Made, not acknowledged as asked (which writes is not said):
            // each waits for the server's version, as a value made does.
            ForwardOutcome::NotAcknowledged(_) => {
                let until = now_ms.saturating_add(self.cfg.forward_timeout_ms);
                self.handover
                    .answered
                    .extend(b.keys.into_iter().map(|(k, _)| (k, until)));
                self.handover.batch_max = HANDOVER_BATCH_MAX;
            }
            ForwardOutcome::Refused {
                class: RefusalClass::Invalid | RefusalClass::TooLarge,
                message,
            } => {
                if b.keys.len() > 1 {
                    // One of them is refused: find it.
                    self.handover.batch_max = 1;
                } else {
                    // Refused alone: the server will never take it. Drop
                    // ours; anti-entropy brings the server's version.
                    for (k, _) in b.keys {
                        self.drop_local_write(k, message.clone());
                    }
                }
            }
            // Unavailable (a standby, a rebuild, its clock): sent again at
            // the next heartbeat, and after a few, to another server.
            ForwardOutcome::Refused {
                class: RefusalClass::Unavailable,
                message,
            } => {
                self.handover.refusals += 1;
                let may_leave = self
                    .handover
                    .left_server_ms
                    .is_none_or(|t| now_ms >= t.saturating_add(SERVER_LEFT_EVERY_MS_MIN));
                if self.handover.refusals >= HANDOVER_REFUSALS_MAX && may_leave {
                    self.handover.left_server_ms = Some(now_ms);
                    let times = std::mem::take(&mut self.handover.refusals);
                    self.refuse(
                        from,
                        super::Refusal::TakesNoWrites {
                            times,
                            message: message.clone(),
                        },
                    );
                    self.handover_server_lost(from);
                }
                return true;
            }
            // Busy: sent again at the next heartbeat. An `Expect` is never
            // part of a handover, so `Changed` cannot come; taken as busy.
            ForwardOutcome::Refused { .. } | ForwardOutcome::Changed { .. } => return true,
        }
        self.hand_over(now_ms);
        true
    }

    /// Drops this edge's own version of `key`: the server refused it.
    fn drop_local_write(&mut self, key: Key, reason: String) {
        if !self.drop_own_version(&key) {
            return;
        }
        self.metrics.local_writes_dropped += 1;
        self.staged.push(Output::Event(Event::LocalWriteDropped {
            key: key.to_string(),
            reason,
        }));
    }

    /// Drops this edge's own version of `key` (the server's comes back by
    /// anti-entropy); false if the version here is not ours.
    fn drop_own_version(&mut self, key: &Key) -> bool {
        self.handover.keys.remove(key);
        self.handover.answered.remove(key);
        if !self.own_version(key.as_str()) {
            return false;
        }
        self.map.remove(key.as_str());
        self.dirty_keys.insert(key.clone());
        self.dirty_meta = true;
        true
    }

    /// On an edge: its server `peer` was lost; what it had of the local
    /// writes goes to the next server.
    pub(super) fn handover_server_lost(&mut self, peer: NodeId) {
        if self
            .handover
            .batch
            .as_ref()
            .is_some_and(|b| b.server == peer)
        {
            self.handover.batch = None;
        }
        self.handover.answered.clear();
        self.handover.refusals = 0;
    }

    // ---- The server's side ----

    /// On a server: `None` if an edge's local write of `key` stamped
    /// `stamp` is to be made as our own (our clock then runs past its
    /// stamp, so that our write is newer); else the stamp of the version
    /// held here, which is newer. A stamp further ahead of our clock than
    /// the clock bound counts as at the bound.
    pub(super) fn hand_over_check(
        &mut self,
        key: &str,
        stamp: Stamp,
        now_ms: u64,
    ) -> Option<Stamp> {
        let now = self.checked_now(now_ms);
        let bound = Hlc::new(now.saturating_add(self.cfg.clock_offset_ms_max), 0);
        let claimed = Stamp::new(stamp.hlc.min(bound), stamp.node);
        if let Some(r) = self
            .map
            .get(key)
            .filter(|r| r.entry.stamp >= claimed && !mutants::on(Mutant::HandoverWins))
        {
            return Some(r.entry.stamp);
        }
        // Within the bound by construction; a clock that cannot observe it
        // stamps what it can (the edge then drops its own, older-stamped
        // as ours may be, when the answer says so).
        let _ = self.clock.observe(claimed.hlc, now);
        None
    }
}
