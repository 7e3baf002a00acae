//! Documents in the feed as their changes (issue 16, "what travels is
//! bounded"): a document entry sent to a peer that is known to hold an
//! earlier version of it travels as the automerge changes since that
//! version ([`DocChanges`]), not as the whole saved document.
//!
//! What a peer holds is learned on its connection: the heads of every
//! document version sent to it, and of every version it sent us
//! ([`KnownHeads`], bounded per peer, forgotten when the connection, a
//! resume or a rewind starts the feed over). Knowledge can be stale (the
//! peer overwrote or deleted the key, started the document over, refused
//! the entry), so nothing rests on it: the receiver rebuilds the document
//! at the base heads from the version it holds, takes the changes in,
//! saves it and checks the entry made against the sender's entry hash.
//! Only an entry equal in every byte to the sender's is merged. A
//! document it cannot rebuild is a gap in the feed: the range is asked for
//! again, and the resumed feed carries documents whole (a resume forgets
//! what the peer was known to hold).
//!
//! automerge saves a document to the same bytes however it came by its
//! changes (in order), which `core::doc`'s tests check; where it would
//! not, the hash check fails and the document travels whole, so this
//! saves bytes and never decides what a replica holds.

use std::collections::{BTreeMap, VecDeque};

use super::Replica;
use crate::core::codec::{DocChanges, Feed};
use crate::core::doc::{ChangeHash, Document};
use crate::core::types::{entry_hash, Entry, Key, Kind, NodeId, Stamp, VALUE_BYTES_LIMIT};
use crate::sync::config::Role;

/// Most documents whose heads a server keeps per server peer.
pub(super) const KNOWN_DOCS_PER_SERVER_MAX: usize = 1_024;
/// Most documents whose heads a server keeps per edge (a server holds
/// thousands of edges).
pub(super) const KNOWN_DOCS_PER_EDGE_MAX: usize = 32;
/// Most loaded documents a replica keeps to ship to several peers.
const LOADED_DOCS_MAX: usize = 4;

/// The heads of the document versions a peer is known to hold, per key,
/// at most a given number of keys (the oldest learned is forgotten first).
#[derive(Debug, Clone, Default)]
pub(super) struct KnownHeads {
    by_key: BTreeMap<Key, Vec<ChangeHash>>,
    order: VecDeque<Key>,
}

impl KnownHeads {
    /// The peer holds a version of `key`'s document with these heads.
    fn learn(&mut self, key: &Key, heads: Vec<ChangeHash>, keys_max: usize) {
        if keys_max == 0 {
            return;
        }
        if self.by_key.insert(key.clone(), heads).is_none() {
            self.order.push_back(key.clone());
        }
        while self.order.len() > keys_max {
            if let Some(old) = self.order.pop_front() {
                self.by_key.remove(&old);
            }
        }
        debug_assert_eq!(self.order.len(), self.by_key.len());
    }

    fn get(&self, key: &Key) -> Option<&[ChangeHash]> {
        self.by_key.get(key).map(Vec::as_slice)
    }

    /// Forgets everything: the feed to the peer starts over.
    pub(super) fn forget_all(&mut self) {
        self.by_key.clear();
        self.order.clear();
    }
}

/// Documents loaded to ship, by key and stamp: a write goes to every peer,
/// and is loaded once for all of them.
#[derive(Debug, Default)]
pub(super) struct LoadedDocs {
    docs: VecDeque<(Key, Stamp, Document)>,
}

impl LoadedDocs {
    /// `entry` (the current document of `key`) loaded; `None` if it does not load.
    fn get(&mut self, key: &Key, entry: &Entry) -> Option<&mut Document> {
        let at = match self
            .docs
            .iter()
            .position(|(k, s, _)| k == key && *s == entry.stamp)
        {
            Some(at) => at,
            None => {
                let doc = Document::load(entry.value.as_deref().unwrap_or_default()).ok()?;
                if self.docs.len() == LOADED_DOCS_MAX {
                    self.docs.pop_back();
                }
                self.docs.push_front((key.clone(), entry.stamp, doc));
                0
            }
        };
        self.docs.get_mut(at).map(|(_, _, d)| d)
    }
}

impl Replica {
    fn known_docs_max(role: Role) -> usize {
        match role {
            Role::Server => KNOWN_DOCS_PER_SERVER_MAX,
            Role::Edge => KNOWN_DOCS_PER_EDGE_MAX,
        }
    }

    /// Moves the documents of `f`, a feed message to `to`, from its
    /// entries to its changes where `to` is known to hold an earlier
    /// version and the changes are smaller; learns what `to` will hold.
    pub(super) fn docs_as_changes(&mut self, to: NodeId, f: &mut Feed) {
        if !f.entries.iter().any(|(_, e)| e.is_doc()) {
            return;
        }
        let Some(p) = self.peers.get_mut(&to) else {
            return;
        };
        let keys_max = Replica::known_docs_max(p.role);
        for (k, e) in std::mem::take(&mut f.entries) {
            let doc = if e.is_doc() {
                self.loaded_docs.get(&k, &e)
            } else {
                None
            };
            let Some(doc) = doc else {
                f.entries.push((k, e));
                continue;
            };
            let base = p
                .doc_heads
                .get(&k)
                .filter(|base| doc.holds(base))
                .map(<[ChangeHash]>::to_vec);
            p.doc_heads.learn(&k, doc.heads(), keys_max);
            let Some(base) = base else {
                f.entries.push((k, e));
                continue;
            };
            let changes = doc.changes_after(&base);
            if changes.len() >= e.value_len() {
                f.entries.push((k, e));
                continue;
            }
            self.metrics.doc_changes_sent += 1;
            f.docs.push(DocChanges {
                hash: entry_hash(k.as_str(), &e),
                key: k,
                stamp: e.stamp,
                prev: e.prev,
                flags: e.flags,
                merge: e.kind == Kind::Merge,
                base: base.iter().map(|h| h.0).collect(),
                changes: changes.into(),
            });
        }
    }

    /// `from` sent a document whole: it holds that version.
    pub(super) fn learn_doc_held(&mut self, from: NodeId, key: &Key, entry: &Entry) {
        if self.is_edge() || !entry.is_doc() {
            // An edge sends no feed: what its servers hold is of no use to it.
            return;
        }
        let Some(p) = self.peers.get_mut(&from) else {
            return;
        };
        let keys_max = Replica::known_docs_max(p.role);
        if let Ok(mut doc) = Document::load(entry.value.as_deref().unwrap_or_default()) {
            p.doc_heads.learn(key, doc.heads(), keys_max);
        }
    }

    /// The entry that `d`, from `from`, stands for: rebuilt from the
    /// version of the document held here, and equal to the sender's in
    /// every byte (its entry hash). `None` if it cannot be rebuilt here.
    pub(super) fn rebuild_doc(&mut self, from: NodeId, d: &DocChanges) -> Option<Entry> {
        let held = self.map.get(d.key.as_str())?;
        if !held.entry.is_doc() {
            return None;
        }
        let mut doc = Document::load(held.entry.value.as_deref().unwrap_or_default()).ok()?;
        let base: Vec<ChangeHash> = d.base.iter().map(|h| ChangeHash(*h)).collect();
        let mut rebuilt = doc.rebuilt(&base, &d.changes).ok()?;
        let bytes = rebuilt.save();
        if bytes.len() > VALUE_BYTES_LIMIT {
            return None;
        }
        let entry = Entry {
            stamp: d.stamp,
            prev: d.prev,
            flags: d.flags,
            value: Some(bytes.into()),
            kind: if d.merge { Kind::Merge } else { Kind::Doc },
        };
        if entry_hash(d.key.as_str(), &entry) != d.hash {
            return None;
        }
        if !self.is_edge() {
            if let Some(p) = self.peers.get_mut(&from) {
                let keys_max = Replica::known_docs_max(p.role);
                p.doc_heads.learn(&d.key, rebuilt.heads(), keys_max);
            }
        }
        Some(entry)
    }
}
