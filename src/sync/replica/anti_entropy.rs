//! Anti-entropy: Merkle rounds with one peer at a time, from the roots
//! down to the leaves, then the entries that win on either side.

use std::collections::{BTreeSet, HashMap};

use super::{Event, Output, Replica};
use crate::core::codec::{Message, Summary, AE_SUMMARIES_MAX, ENTRIES_PER_MESSAGE_MAX};
use crate::core::digest::{Fingerprint, LEAF_LEVEL};
use crate::core::hlc::Hlc;
use crate::core::map::Record;
use crate::core::mutants::{self, Mutant};
use crate::core::types::{key_hash, Entry, Hash, Key, NodeId};
use crate::sync::config::Role;

#[derive(Debug, Clone, Copy)]
pub(super) struct AeSession {
    pub(super) id: u64,
    pub(super) peer: NodeId,
    pub(super) started_ms: u64,
    /// The peer answered with a level: the roots differed.
    pub(super) diverged: bool,
}

/// Keys a peer holds and we lack, which we asked it for in a round.
///
/// The collection floor refuses a value at or below it for a key we do
/// not hold: it may be an old copy arriving after the key's delete was
/// collected. The answer to our ask is different: it is the peer's state
/// after we asked, and a peer holds a value at or below our floor only if
/// no delete of the key was collected meanwhile (collection by stability
/// needs the peer to hold the delete; a peer away past the horizon is
/// refused until it resyncs). Collection by age needs neither: a member
/// back from a long absence, accepted just before we collected a delete by
/// age, may hold the value that delete removed. So the answer counts only
/// from a peer whose frontier reaches our horizon floor (it holds every
/// tombstone we collected by age, or newer). Then it is exempt from the floor,
/// once per key, while our floor is still the one we asked under and for
/// one request timeout: a record lost from our store (a lost write on
/// disk) comes back from a peer even when it is older than the floor.
/// A late copy of the answer finds the key consumed and meets the floor.
#[derive(Debug, Clone)]
pub(super) struct AeAsked {
    peer: NodeId,
    session: u64,
    /// Our merge floor when we asked.
    floor: Hlc,
    asked_ms: u64,
    /// At most [`AE_SUMMARIES_MAX`].
    keys: BTreeSet<[u8; 8]>,
}

impl Replica {
    pub(super) fn start_session(&mut self, peer: NodeId, now_ms: u64) {
        if self.ae_session.is_some() {
            return;
        }
        let id = self.next_session;
        self.next_session += 1;
        self.ae_session = Some(AeSession {
            id,
            peer,
            started_ms: now_ms,
            diverged: false,
        });
        self.metrics.ae_rounds_started += 1;
        if self.is_edge() {
            self.edge_round = Some(super::edge::EdgeRound {
                peer,
                session: id,
                floor: self.merge_floor(),
                started_ms: now_ms,
            });
        }
        let root = self.map.root();
        self.send(peer, Message::AeRoot { session: id, root });
    }

    fn end_session(&mut self, from: NodeId, session: u64) {
        if self
            .ae_session
            .is_some_and(|s| s.peer == from && s.id == session)
        {
            self.ae_session = None;
        }
    }

    /// The peer ended our session: with no level exchanged, our roots were equal.
    pub(super) fn on_ae_done(&mut self, from: NodeId, session: u64, now_ms: u64) {
        let ours = self
            .ae_session
            .filter(|s| s.peer == from && s.id == session);
        self.end_session(from, session);
        if ours.is_some_and(|s| !s.diverged) {
            self.equal_with(from, now_ms);
        }
    }

    /// Every entry applied here or sent from here so far.
    pub(super) fn entries_moved(&self) -> u64 {
        let m = &self.metrics;
        m.feed_entries_applied + m.ae_entries_applied + m.feed_entries_sent + m.ae_entries_sent
    }

    /// This replica and `peer` hold equal state: a partition with its
    /// region has healed, and no quarantined key is live there.
    fn equal_with(&mut self, peer: NodeId, now_ms: u64) {
        self.recovered_from(peer);
        self.equal_after_forget(peer);
        if let Some(p) = self.peers.get_mut(&peer) {
            // An edge that took this server's feed from the middle now
            // holds all it held (see `replica/edge.rs`).
            if std::mem::take(&mut p.tailing) {
                p.held = p.held.max(p.frontier);
            }
        }
        let Some(region) = self.peers.get(&peer).map(|p| p.region.clone()) else {
            return;
        };
        if let Some(h) = self.healing.remove(&region) {
            let keys_exchanged = self.entries_moved().saturating_sub(h.moved_at_end);
            self.staged.push(Output::Event(Event::PartitionHealed {
                region,
                partition_ms: h.partition_ms,
                keys_exchanged,
                converge_ms: now_ms.saturating_sub(h.ended_ms),
            }));
        }
    }

    pub(super) fn on_ae_root(&mut self, from: NodeId, session: u64, root: Hash, now_ms: u64) {
        if root == self.map.root() {
            self.metrics.ae_rounds_equal += 1;
            self.send(from, Message::AeDone { session });
            self.equal_with(from, now_ms);
            return;
        }
        self.staged
            .push(Output::Event(Event::DivergenceFound { peer: from }));
        let hashes = self.map.digest().children(1, &[0]);
        self.send(
            from,
            Message::AeLevel {
                session,
                level: 1,
                parents: vec![0],
                hashes,
            },
        );
    }

    pub(super) fn on_ae_level(
        &mut self,
        from: NodeId,
        session: u64,
        level: u8,
        parents: &[u32],
        hashes: &[Fingerprint],
    ) {
        let max = self.cfg.ae_nodes_max;
        let differ = self
            .map
            .digest()
            .differing_children(level, parents, hashes, max);
        if differ.is_empty() {
            self.end_session(from, session);
            self.send(from, Message::AeDone { session });
            return;
        }
        if level == LEAF_LEVEL {
            let mut summaries = Vec::new();
            let mut leaves = Vec::new();
            for leaf in differ {
                let before = summaries.len();
                for (_, r) in self.map.leaf_records(leaf) {
                    summaries.push(summary(r));
                }
                if summaries.len() > AE_SUMMARIES_MAX {
                    summaries.truncate(before);
                    break;
                }
                leaves.push(leaf);
            }
            self.send(
                from,
                Message::AeLeaves {
                    session,
                    leaves,
                    summaries,
                },
            );
        } else {
            let hashes = self.map.digest().children(level + 1, &differ);
            self.send(
                from,
                Message::AeLevel {
                    session,
                    level: level + 1,
                    parents: differ,
                    hashes,
                },
            );
        }
    }

    pub(super) fn on_ae_leaves(
        &mut self,
        from: NodeId,
        session: u64,
        leaves: &[u32],
        summaries: &[Summary],
        now_ms: u64,
    ) {
        let theirs: HashMap<[u8; 8], &Summary> =
            summaries.iter().map(|s| (s.key_hash, s)).collect();
        let mut seen: BTreeSet<[u8; 8]> = BTreeSet::new();
        let mut send: Vec<(Key, Entry)> = Vec::new();
        let mut want: Vec<[u8; 8]> = Vec::new();
        for &leaf in leaves {
            for (k, r) in self.map.leaf_records(leaf) {
                let mine = summary(r);
                seen.insert(mine.key_hash);
                match theirs.get(&mine.key_hash) {
                    None if mutants::on(Mutant::AeLeafComparison) => {}
                    None => send.push((k.clone(), r.entry.clone())),
                    Some(t) if t.stamp < mine.stamp => send.push((k.clone(), r.entry.clone())),
                    Some(t) if t.stamp > mine.stamp => want.push(mine.key_hash),
                    Some(t) if t.check != mine.check => {
                        send.push((k.clone(), r.entry.clone()));
                        want.push(mine.key_hash);
                    }
                    Some(_) => {}
                }
            }
        }
        // What we lack comes last in `want`: what is left of it after the
        // bound is what we ask for.
        let lacking_from = want.len();
        // An edge's records we lack at or below our floor were deleted and
        // collected while it was away: it drops them (see `replica/edge.rs`).
        // So are a member's we took back after forgetting it, at or below
        // our floor then (see `replica/members.rs`).
        let collected_up_to = self.peers.get(&from).map_or(Hlc::ZERO, |p| {
            if p.role == Role::Edge {
                self.gc_floor
            } else {
                p.suspect_floor
            }
        });
        let mut collected = Vec::new();
        for s in summaries {
            if !seen.contains(&s.key_hash) && !mutants::on(Mutant::AeLeafComparison) {
                if s.stamp.hlc <= collected_up_to {
                    collected.push(*s);
                } else {
                    want.push(s.key_hash);
                }
            }
        }
        self.tell_collected(from, session, collected);
        want.truncate(AE_SUMMARIES_MAX);
        let lacking: BTreeSet<[u8; 8]> = want
            .get(lacking_from..)
            .unwrap_or_default()
            .iter()
            .copied()
            .collect();
        self.ae_asked = (!lacking.is_empty()).then(|| AeAsked {
            peer: from,
            session,
            floor: self.merge_floor(),
            asked_ms: now_ms,
            keys: lacking,
        });
        if send.is_empty() && want.is_empty() {
            self.end_session(from, session);
            self.send(from, Message::AeDone { session });
            return;
        }
        self.send_entries(from, session, send, want, now_ms);
    }

    /// Sends `entries` in messages bounded by count and bytes; `want` rides
    /// on the first. Entries whose records fail their check are not sent
    /// (they are quarantined).
    fn send_entries(
        &mut self,
        to: NodeId,
        session: u64,
        entries: Vec<(Key, Entry)>,
        want: Vec<[u8; 8]>,
        now_ms: u64,
    ) {
        let entries = self.intact(entries, now_ms);
        self.metrics.ae_entries_sent += entries.len() as u64;
        let mut want = Some(want);
        let mut batch = Vec::new();
        let mut bytes = 0usize;
        let mut entries = entries.into_iter().peekable();
        loop {
            let next = entries.peek();
            let flush = match next {
                None => true,
                Some((k, e)) => {
                    let size = e.encoded_len_estimate(k);
                    !batch.is_empty()
                        && (batch.len() == ENTRIES_PER_MESSAGE_MAX
                            || bytes + size > self.cfg.batch_bytes_max)
                }
            };
            if flush {
                let msg = Message::AeEntries {
                    session,
                    entries: std::mem::take(&mut batch),
                    want: want.take().unwrap_or_default(),
                };
                self.send(to, msg);
                bytes = 0;
                if next.is_none() {
                    return;
                }
                continue;
            }
            let (k, e) = entries.next().expect("peeked");
            bytes += e.encoded_len_estimate(&k);
            batch.push((k, e));
        }
    }

    pub(super) fn on_ae_entries(
        &mut self,
        from: NodeId,
        session: u64,
        entries: Vec<(Key, Entry)>,
        want: &[[u8; 8]],
        now_ms: u64,
    ) {
        if !self.check_skew(from, entries.iter().map(|(_, e)| e.stamp.hlc), now_ms) {
            return;
        }
        let mut repaired = 0;
        let floor = self.merge_floor();
        let fresh = self.edge_round_fresh(from, session, floor, now_ms);
        // An answer to our ask is exempt from the floor only from a peer
        // that holds every write up to the tombstones we collected by age:
        // one that came back from a long absence just before we collected
        // a delete by age may still hold the value it deleted, and must not
        // give it back to us (sim seed 4839).
        let vouches = self
            .peers
            .get(&from)
            .is_some_and(|p| p.frontier >= self.horizon_floor);
        // Nor at or below our floor when we took it back after forgetting
        // it (see `replica/members.rs`).
        let suspect_floor = self.peers.get(&from).map_or(Hlc::ZERO, |p| p.suspect_floor);
        for (k, e) in entries {
            let asked = self.asked_for(from, session, &k, floor, now_ms);
            let floor = if fresh || (asked && vouches) {
                suspect_floor
            } else {
                floor
            };
            if self.merge_entry(Some(from), k, e, floor, now_ms) {
                self.metrics.ae_entries_applied += 1;
                repaired += 1;
            }
        }
        if repaired > 0 {
            self.staged.push(Output::Event(Event::DivergenceRepaired {
                peer: from,
                keys: repaired,
            }));
        }
        if want.is_empty() {
            self.end_session(from, session);
            return;
        }
        let mut send = Vec::new();
        for kh in want {
            for (k, r) in self.map.records_with_hash(u64::from_be_bytes(*kh)) {
                // An edge's own writes are handed over, never sent as
                // records (`replica/handover.rs`).
                if !self.is_own_record(r.entry.stamp) {
                    send.push((k.clone(), r.entry.clone()));
                }
            }
        }
        self.end_session(from, session);
        self.send_entries(from, session, send, Vec::new(), now_ms);
    }
}

impl AeAsked {
    /// The peer asked.
    pub(super) fn peer(&self) -> NodeId {
        self.peer
    }
}

impl Replica {
    /// Whether `key`, from `from` in `session`, answers our ask for a key
    /// we lacked (see [`AeAsked`]); consumes the ask for that key.
    fn asked_for(
        &mut self,
        from: NodeId,
        session: u64,
        key: &Key,
        floor: Hlc,
        now_ms: u64,
    ) -> bool {
        let timeout_ms = self.cfg.peer_timeout_ms;
        let Some(a) = self.ae_asked.as_mut() else {
            return false;
        };
        if a.peer != from
            || a.session != session
            || a.floor != floor
            || now_ms.saturating_sub(a.asked_ms) > timeout_ms
        {
            return false;
        }
        a.keys.remove(&key_hash(key.as_str()).to_be_bytes())
    }
}

pub(super) fn summary(r: &Record) -> Summary {
    let mut check = [0u8; 4];
    check.copy_from_slice(&r.check()[..4]);
    Summary {
        key_hash: r.key_hash().to_be_bytes(),
        // Ordered as the map orders: a merge of documents by what it merged.
        stamp: r.entry.order().0,
        check,
    }
}
