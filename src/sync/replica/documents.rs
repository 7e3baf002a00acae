//! Documents at the replica (issue 16): document writes, and what happens
//! when two versions of one key's document meet here.
//!
//! A document is an entry like any other ([`Kind::Doc`]): it travels,
//! is stored, checked and ordered by its stamp. What a version that
//! loses by stamp holds is not dropped, though: when the version kept
//! lacks changes of the one that lost, and both grew from the same
//! creating write, this replica writes their automerge merge as a new
//! version ([`Kind::Merge`]): stamped now by its own clock (its identity),
//! but ordered by the newest write it merged (its `prev`; see
//! [`Entry::order`]), so it replaces both versions and still loses to a
//! later delete or overwrite that neither saw, as they would have.
//! Every replica that sees both may make that merge; their merges hold the
//! same changes, and whichever is kept contains the others (merges of one
//! order that differ are merged again), so no further merge follows. The
//! rules where kinds meet, all by order first:
//! - a plain value, or a delete, against a document: the later stamp wins
//!   whole (a delete or an overwrite also wins over a concurrent field
//!   change made before it arrived, if it is later);
//! - a document created again after a delete or an overwrite starts over
//!   (its creating change differs): it never merges with the older one,
//!   the later stamp wins whole and the conflict is logged;
//! - a merge that would save larger than the value limit is not made:
//!   the version kept stays as it is, the losing one's changes are lost,
//!   and the conflict is logged (counted as `doc_merges_too_large`).
//!
//! History is bounded: a write whose saved document would pass half the
//! value limit ([`DOC_COMPACT_AT_LIMIT_DIVISOR`]) starts the document over
//! from its JSON, as a new creating write (`doc_compactions`). Versions
//! changed concurrently elsewhere then meet a document of another origin:
//! the later write wins whole and the conflict is logged, as for a
//! document made again after a delete.
//!
//! Why not merge inside the map, with an entry check over the heads only
//! (as the design card first said)? Two replicas could then hold the same
//! heads as different bytes, and anti-entropy would never compare (nor
//! repair) the bytes served; and a stamp would no longer name one write,
//! which the integrity checks rely on (the same stamp with other content
//! is damage). A merge made as a write keeps both: every version is one
//! writer's bytes under one stamp, and after the heal every replica holds
//! the same entry, so equal documents give equal roots.
//!
//! Merges are writes, made by members that may write (see
//! `Replica::may_merge`: a clock judged wrong or a lost quorum does not
//! stop them); elsewhere the pair waits in memory, at most
//! [`DOC_MERGES_WAITING_MAX`] keys, is tried again every heartbeat, and
//! the version that lost is handed to the members that take writes
//! (`Message::DocVersions`), since it may be held nowhere else: a standby
//! that adopted a later version from a writer that never saw it, after
//! the version's own writer lost its store, was the last holder (sim seed
//! 4). Edges never merge: their servers do.

use std::collections::BTreeSet;

use bytes::Bytes;
use serde_json::Value as Json;

use super::write::Body;
use super::{Replica, Resolution, WriteError, WriteReceipt};
use crate::core::codec::{Message, ENTRIES_PER_MESSAGE_MAX};
use crate::core::conflicts::{Conflict, CONFLICT_VALUE_BYTES_MAX};
use crate::core::doc::{apply_merge_patch, DocError, Document};
use crate::core::mutants::{self, Mutant};
use crate::core::types::{Entry, IntoKey, Key, Kind, NodeId, Stamp};
use crate::sync::config::WriteAck;

/// Most keys whose versions wait here for a merge this replica cannot
/// write yet; past that, the pair is left to other replicas.
pub const DOC_MERGES_WAITING_MAX: usize = 1024;
/// A replica that may not merge hands its waiting versions again every
/// this many heartbeats (once when they start waiting).
pub const DOC_VERSIONS_HANDED_EVERY_BEATS: u64 = 10;

/// A document write whose saved document, history included, would pass
/// the value limit divided by this starts the document over from its JSON.
pub const DOC_COMPACT_AT_LIMIT_DIVISOR: usize = 2;

/// A document write: the whole new document, or a merge patch of it.
#[derive(Debug, Clone, PartialEq)]
pub enum DocWrite {
    /// The document becomes this JSON object; fields it leaves as they
    /// were merge with other writers' changes.
    Whole(Json),
    /// An RFC 7386 merge patch (an object) applied to the current document
    /// (to `{}` for an absent or deleted key).
    Patch(Json),
}

impl Replica {
    /// Writes a document under `key`, acknowledged as `ack` says. A key
    /// that holds a document is changed by the fewest field changes; one
    /// that holds a plain value, or nothing, gets a new document (a patch
    /// of a plain value is refused: [`DocError::NotDocument`]). With
    /// `cas`, only if the key's modify index is `cas`.
    pub fn put_doc(
        &mut self,
        key: impl IntoKey,
        write: DocWrite,
        flags: u64,
        cas: Option<u64>,
        ack: WriteAck,
        now_ms: u64,
    ) -> Result<WriteReceipt, WriteError> {
        self.write_body(key, Body::Doc(write), flags, cas, ack, now_ms)
    }

    /// The bytes of the document `write` makes of `current` (the key's
    /// entry, if any), as one change by the write stamped `stamp`.
    pub(super) fn doc_bytes(
        &mut self,
        current: Option<&Entry>,
        write: DocWrite,
        stamp: Stamp,
    ) -> Result<Bytes, DocError> {
        let held = current.filter(|e| !e.is_tombstone());
        let mut doc = match held {
            Some(e) if e.is_doc() => Document::load(e.value.as_deref().unwrap_or_default())?,
            _ => Document::new(),
        };
        let json = match write {
            DocWrite::Whole(json) => json,
            DocWrite::Patch(patch) => {
                if held.is_some_and(|e| !e.is_doc()) {
                    return Err(DocError::NotDocument);
                }
                let mut json = doc.to_json(None)?;
                apply_merge_patch(&mut json, &patch)?;
                json
            }
        };
        doc.update(&json, stamp)?;
        let mut bytes = doc.save();
        let max = self.cfg.limits.value_bytes_max;
        // History past half the limit: the document starts over from its
        // JSON (a new creating write; see the module docs).
        if bytes.len() > max / DOC_COMPACT_AT_LIMIT_DIVISOR {
            let mut fresh = Document::new();
            fresh.update(&json, stamp)?;
            let fresh = fresh.save();
            if fresh.len() < bytes.len() {
                bytes = fresh;
                self.metrics.doc_compactions += 1;
            }
        }
        if bytes.len() > max {
            return Err(DocError::TooLarge {
                len: bytes.len(),
                max,
            });
        }
        Ok(Bytes::from(bytes))
    }

    /// Whether `entry`, a document from a peer or a backup, loads.
    pub(super) fn doc_loads(entry: &Entry) -> bool {
        !entry.is_doc() || Document::load(entry.value.as_deref().unwrap_or_default()).is_ok()
    }

    /// Two versions of `key`'s document met in a merge: `loser` lost by
    /// stamp to what the key holds now. Merges them if the one kept lacks
    /// changes of the other (see the module docs).
    pub(super) fn docs_met(&mut self, key: &Key, loser: Entry, now_ms: u64) {
        if self.is_edge() || mutants::on(Mutant::DocMergeSkipped) {
            return;
        }
        let Some(winner) = self.map.get(key.as_str()).map(|r| r.entry.clone()) else {
            return;
        };
        if !winner.is_doc() || !loser.is_doc() || winner.order() == loser.order() {
            return;
        }
        let (Ok(mut kept), Ok(mut lost)) = (
            Document::load(winner.value.as_deref().unwrap_or_default()),
            Document::load(loser.value.as_deref().unwrap_or_default()),
        ) else {
            // Both were checked to load when they arrived.
            return;
        };
        if kept.contains(&mut lost) {
            return;
        }
        if kept.origin() != lost.origin() {
            // Created anew after a delete or an overwrite: no merge.
            self.doc_conflict(key, &winner, &loser, None, None);
            return;
        }
        if !self.may_merge() {
            self.wait_for_doc_merge(key, loser);
            return;
        }
        // Its stamp only names it: a clock pushed ahead of physical time
        // (by a peer's fast clock) takes a logical step rather than refuse
        // the merge until physical time catches up (sim seed 6031).
        let hlc = self
            .clock
            .tick(now_ms)
            .or_else(|_| self.clock.tick_logical(now_ms));
        let stamp = match hlc {
            Ok(hlc) => Stamp::new(hlc, self.cfg.node),
            Err(_) => {
                self.wait_for_doc_merge(key, loser);
                return;
            }
        };
        let known: BTreeSet<String> = kept
            .conflicts()
            .into_iter()
            .chain(lost.conflicts())
            .map(|c| c.path)
            .collect();
        if kept.merge(&mut lost).is_err() {
            return;
        }
        let bytes = kept.save();
        if self.cfg.limits.check_value(bytes.len()).is_err() {
            self.metrics.doc_merges_too_large += 1;
            self.doc_conflict(key, &winner, &loser, None, None);
            return;
        }
        // Ordered by the newest write it merged: it replaces the version
        // kept here, and loses to any later write neither version saw.
        let merged = winner.order().0.max(loser.order().0);
        let index = self.map.apply_local(
            key,
            Entry {
                stamp,
                prev: merged,
                flags: winner.flags,
                value: Some(Bytes::from(bytes)),
                kind: Kind::Merge,
            },
        );
        for c in kept.conflicts() {
            if known.contains(&c.path) {
                continue;
            }
            let lost = c.losers.first().cloned().unwrap_or(Json::Null);
            let value = serde_json::to_vec(&lost).ok().map(Bytes::from);
            self.map.conflicts_mut().push(Conflict {
                key: key.clone(),
                winner: winner.stamp,
                loser: loser.stamp,
                loser_value: value.filter(|v| v.len() <= CONFLICT_VALUE_BYTES_MAX),
                loser_was_tombstone: false,
                index,
                path: Some(c.path),
            });
        }
        self.metrics.doc_merges_made += 1;
        self.resolve_key(key, Resolution::Overwritten);
        self.dirty_keys.insert(key.clone());
        self.dirty_meta = true;
        self.doc_merges_waiting.remove(key);
        self.push_written(WriteAck::Local, now_ms);
    }

    /// Whether this replica may write merges: not a standby (it makes no
    /// writes of its own until promoted), not after it left, not while it
    /// rebuilds a lost store. A clock judged wrong, or a partition policy
    /// without quorum, refuses client writes but not merges: a merge holds
    /// no new data and is ordered by what it merged, not by its stamp, so
    /// the clock cannot make it win; and its versions may be held nowhere
    /// else (a fast clock's writes wait at their node until peers' clocks
    /// reach them).
    fn may_merge(&self) -> bool {
        !self.cfg.standby && self.left.is_none() && !self.lost_store()
    }

    /// Keeps a pair this replica may not merge yet (bounded), and hands
    /// the version that lost to the members that may merge it.
    fn wait_for_doc_merge(&mut self, key: &Key, loser: Entry) {
        if self.doc_merges_waiting.get(key) == Some(&loser) {
            return;
        }
        if self.doc_merges_waiting.len() < DOC_MERGES_WAITING_MAX
            || self.doc_merges_waiting.contains_key(key)
        {
            self.doc_merges_waiting.insert(key.clone(), loser);
            self.doc_waiting_gen += 1;
            let to: Vec<NodeId> = self.takers().collect();
            for id in to {
                self.hand_doc_versions_to(id);
            }
        } else {
            self.metrics.doc_merges_left += 1;
        }
    }

    /// The members in reach that take writes (their views say so).
    fn takers(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.members()
            .filter(|(_, p)| p.view_active && p.link.ready())
            .map(|(id, _)| *id)
    }

    /// Hands `to`, a member in reach that takes writes, the versions
    /// waiting here it was not handed on this connection: the version may
    /// be held nowhere else (its writer lost its store, and the members
    /// that hold it are standbys), so the merge must not wait for this
    /// replica. Drops first the versions the one held now contains (merged
    /// elsewhere, or deleted or overwritten since); at most a batch.
    pub(super) fn hand_doc_versions_to(&mut self, to: NodeId) {
        if self.doc_merges_waiting.is_empty() || self.may_merge() {
            return;
        }
        let gen = self.doc_waiting_gen;
        if !self.takers().any(|id| id == to)
            || self
                .peers
                .get(&to)
                .is_none_or(|p| p.doc_versions_gen == gen)
        {
            return;
        }
        let mut done = Vec::new();
        let mut entries = Vec::new();
        let mut bytes = 0usize;
        for (key, loser) in &self.doc_merges_waiting {
            let held = self
                .map
                .get(key.as_str())
                .filter(|r| r.entry.is_doc())
                .and_then(|r| Document::load(r.entry.value.as_deref().unwrap_or_default()).ok());
            let lost = Document::load(loser.value.as_deref().unwrap_or_default()).ok();
            let contained = match (held, lost) {
                (Some(mut held), Some(mut lost)) => held.contains(&mut lost),
                _ => true,
            };
            if contained {
                done.push(key.clone());
                continue;
            }
            let size = loser.encoded_len_estimate(key);
            if !entries.is_empty()
                && (bytes + size > self.cfg.batch_bytes_max
                    || entries.len() == ENTRIES_PER_MESSAGE_MAX)
            {
                break;
            }
            bytes += size;
            entries.push((key.clone(), loser.clone()));
        }
        for key in done {
            self.doc_merges_waiting.remove(&key);
        }
        if let Some(p) = self.peers.get_mut(&to) {
            p.doc_versions_gen = gen;
        }
        if !entries.is_empty() {
            self.send(to, Message::DocVersions { entries });
        }
    }

    /// Versions a peer may not merge: merged here as entries from it.
    pub(super) fn on_doc_versions(
        &mut self,
        from: NodeId,
        entries: Vec<(Key, Entry)>,
        now_ms: u64,
    ) {
        if self.is_edge()
            || !self.check_skew(from, entries.iter().map(|(_, e)| e.stamp.hlc), now_ms)
        {
            self.metrics.messages_ignored += 1;
            return;
        }
        let floor = self.merge_floor();
        for (k, e) in entries {
            if e.is_doc() {
                self.merge_entry(Some(from), k, e, floor, now_ms);
            }
        }
        self.commit();
    }

    /// Tries the waiting merges again once this replica may merge; until
    /// then, every [`DOC_VERSIONS_HANDED_EVERY_BEATS`] heartbeats, hands
    /// them again to every member that takes writes (a message may have
    /// been lost).
    pub(super) fn retry_doc_merges(&mut self, now_ms: u64) {
        if self.doc_merges_waiting.is_empty() {
            return;
        }
        if !self.may_merge() {
            if self
                .beats_since_start
                .is_multiple_of(DOC_VERSIONS_HANDED_EVERY_BEATS)
            {
                let to: Vec<NodeId> = self.takers().collect();
                for id in to {
                    if let Some(p) = self.peers.get_mut(&id) {
                        p.doc_versions_gen = 0;
                    }
                    self.hand_doc_versions_to(id);
                }
            }
            return;
        }
        let waiting = std::mem::take(&mut self.doc_merges_waiting);
        for (key, loser) in waiting {
            self.docs_met(&key, loser, now_ms);
        }
        self.commit();
    }

    /// Records that `winner` replaced `loser` of a document whole (or,
    /// with `path`, one field of it).
    fn doc_conflict(
        &mut self,
        key: &Key,
        winner: &Entry,
        loser: &Entry,
        path: Option<String>,
        loser_value: Option<Bytes>,
    ) {
        let index = self.map.get(key.as_str()).map_or(0, |r| r.modify_index);
        self.map.conflicts_mut().push(Conflict {
            key: key.clone(),
            winner: winner.stamp,
            loser: loser.stamp,
            loser_value,
            loser_was_tombstone: loser.is_tombstone(),
            index,
            path,
        });
    }
}
