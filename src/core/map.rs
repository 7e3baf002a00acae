//! The last-writer-wins map CRDT.
//!
//! Owns the key space of one replica: per key the entry with the greatest
//! [`Stamp`] (tombstones included), the change feed that numbers every
//! applied change with this replica's own monotonic *index*, the bounded
//! conflict log, the tombstone index that garbage collection walks, and the
//! [`Digest`] kept in step with every change.
//!
//! Merge is commutative, associative and idempotent: the map after merging
//! a set of entries is the same whatever their order or repetition (the
//! property tests in `tests/properties.rs` check this). Indices are local and
//! depend on arrival order; they are not part of the replicated state and not
//! part of the digest.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::ops::Bound;

use bytes::Bytes;

use super::digest::{leaf_key_hash_range, Digest};
use super::hlc::Hlc;
use super::types::{entry_hash, key_hash, Entry, Hash, Key, Stamp};

/// Default number of conflicts kept.
pub const CONFLICTS_MAX_DEFAULT: usize = 1024;
/// Largest losing value the conflict log keeps a copy of; larger ones are
/// recorded without their value.
pub const CONFLICT_VALUE_BYTES_MAX: usize = 4096;

/// A key's current entry with its local bookkeeping.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub entry: Entry,
    /// The index at which the key was created (or re-created after a delete).
    pub create_index: u64,
    /// The index of the key's latest change on this replica.
    pub modify_index: u64,
    /// Cached: the key's position in the digest.
    key_hash: u64,
    /// Cached: what this entry contributes to its digest leaf.
    part: [u8; 16],
}

impl Record {
    pub fn key_hash(&self) -> u64 {
        self.key_hash
    }

    /// The first 16 bytes of the entry's hash (its contribution to the digest).
    pub fn check(&self) -> [u8; 16] {
        self.part
    }
}

/// What merging one entry did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Merged {
    /// The key was new here.
    Inserted { index: u64 },
    /// The entry replaced an older one; `conflict` says the replaced entry
    /// was concurrent with it (its writer had not seen it).
    Replaced { index: u64, conflict: bool },
    /// The local entry is newer: nothing changed.
    Stale,
    /// The same entry was already here: nothing changed.
    Duplicate,
    /// The key is absent and the entry is at or below the garbage-collection
    /// floor: every replica already holds it or something newer, so taking
    /// it could resurrect a collected delete.
    BelowFloor,
}

impl Merged {
    pub fn changed(self) -> bool {
        matches!(self, Merged::Inserted { .. } | Merged::Replaced { .. })
    }
}

/// One recorded conflict: a write replaced a concurrent write of another node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conflict {
    pub key: Key,
    pub winner: Stamp,
    pub loser: Stamp,
    /// The losing value, if it was a value of at most [`CONFLICT_VALUE_BYTES_MAX`] bytes.
    pub loser_value: Option<Bytes>,
    pub loser_was_tombstone: bool,
    /// The local index of the change that resolved it.
    pub index: u64,
}

/// A bounded log of conflicts, oldest dropped first.
#[derive(Debug, Clone)]
pub struct ConflictLog {
    entries: VecDeque<Conflict>,
    max: usize,
    total: u64,
}

impl ConflictLog {
    pub fn new(max: usize) -> ConflictLog {
        ConflictLog {
            entries: VecDeque::new(),
            max,
            total: 0,
        }
    }

    fn push(&mut self, c: Conflict) {
        self.total += 1;
        if self.max == 0 {
            return;
        }
        if self.entries.len() == self.max {
            self.entries.pop_front();
        }
        self.entries.push_back(c);
    }

    /// The kept conflicts, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = &Conflict> {
        self.entries.iter()
    }

    /// Conflicts seen since start, including those no longer kept.
    pub fn total(&self) -> u64 {
        self.total
    }
}

/// The replicated map (see the module docs).
pub struct LwwMap {
    records: BTreeMap<Key, Record>,
    /// Keys by digest position, for the leaf exchange of anti-entropy.
    by_hash: BTreeSet<(u64, Key)>,
    /// index → key, the latest change of each key only.
    feed: BTreeMap<u64, Key>,
    tombstones: BTreeSet<(Stamp, Key)>,
    index: u64,
    digest: Digest,
    conflicts: ConflictLog,
    stamp_collisions: u64,
    raw_bytes: u64,
    /// Smallest key, the lower bound of hash-range scans.
    key_min: Key,
    /// Keys removed outright, with the index when they were removed, for
    /// incremental backups; at most [`REMOVALS_BYTES_MAX`] bytes of keys.
    removals: VecDeque<(u64, Key)>,
    removals_bytes: usize,
    /// Every removal recorded at an index at or after this one is in `removals`.
    removals_from: u64,
}

/// Bytes of keys the removal log keeps; older removals are forgotten (an
/// incremental backup from before them then needs a full backup instead).
pub const REMOVALS_BYTES_MAX: usize = 4 << 20;

impl Default for LwwMap {
    fn default() -> Self {
        LwwMap::new(CONFLICTS_MAX_DEFAULT)
    }
}

fn part_of(hash: &Hash) -> [u8; 16] {
    let mut p = [0u8; 16];
    p.copy_from_slice(&hash[..16]);
    p
}

impl LwwMap {
    pub fn new(conflicts_max: usize) -> LwwMap {
        LwwMap {
            records: BTreeMap::new(),
            by_hash: BTreeSet::new(),
            feed: BTreeMap::new(),
            tombstones: BTreeSet::new(),
            index: 0,
            digest: Digest::new(),
            conflicts: ConflictLog::new(conflicts_max),
            stamp_collisions: 0,
            raw_bytes: 0,
            key_min: Key::min_bound(),
            removals: VecDeque::new(),
            removals_bytes: 0,
            removals_from: 0,
        }
    }

    /// Rebuilds a map from durable records and the last index.
    pub fn restore(
        records: impl IntoIterator<Item = (Key, Entry, u64, u64)>,
        index: u64,
        conflicts_max: usize,
    ) -> LwwMap {
        let mut m = LwwMap::new(conflicts_max);
        for (key, entry, create_index, modify_index) in records {
            m.insert_new(key, entry, create_index, modify_index);
        }
        m.index = index.max(m.feed.keys().next_back().copied().unwrap_or(0));
        // Removals before the restart are not known.
        m.removals_from = m.index + 1;
        m
    }

    /// The keys removed outright (collected tombstones, dropped on resync)
    /// at or after index `since`, or `None` if the log no longer reaches back
    /// that far (a restart, or more than [`REMOVALS_BYTES_MAX`] since).
    pub fn removed_since(&self, since: u64) -> Option<Vec<Key>> {
        if since < self.removals_from {
            return None;
        }
        Some(
            self.removals
                .iter()
                .filter(|(i, _)| *i >= since)
                .map(|(_, k)| k.clone())
                .collect(),
        )
    }

    /// The last index assigned.
    pub fn index(&self) -> u64 {
        self.index
    }

    /// Keys held, tombstones included.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    pub fn tombstone_count(&self) -> usize {
        self.tombstones.len()
    }

    /// Sum of the bytes of keys and values held.
    pub fn raw_bytes(&self) -> u64 {
        self.raw_bytes
    }

    pub fn conflicts(&self) -> &ConflictLog {
        &self.conflicts
    }

    /// Merges that met a different entry with the same stamp (a bug or corruption).
    pub fn stamp_collisions(&self) -> u64 {
        self.stamp_collisions
    }

    pub fn get(&self, key: &str) -> Option<&Record> {
        self.records.get(key)
    }

    /// Every record, tombstones included, in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&Key, &Record)> {
        self.records.iter()
    }

    /// Records whose key starts with `prefix`, in key order, tombstones included.
    pub fn scan_prefix<'a>(
        &'a self,
        prefix: &'a str,
    ) -> impl Iterator<Item = (&'a Key, &'a Record)> {
        self.records
            .range::<str, _>((Bound::Included(prefix), Bound::Unbounded))
            .take_while(move |(k, _)| k.as_str().starts_with(prefix))
    }

    /// The current records of keys changed after `since`, in index order.
    pub fn changes_since(&self, since: u64) -> impl Iterator<Item = (u64, &Key, &Record)> {
        self.feed
            .range(since.saturating_add(1)..)
            .filter_map(move |(i, k)| self.records.get(k.as_str()).map(|r| (*i, k, r)))
    }

    /// Records whose key hash lies in `leaf`, in key-hash order.
    pub fn leaf_records(&self, leaf: u32) -> impl Iterator<Item = (&Key, &Record)> {
        let (lo, hi) = leaf_key_hash_range(leaf);
        self.by_hash
            .range((
                Bound::Included((lo, self.key_min.clone())),
                Bound::Unbounded,
            ))
            .take_while(move |(h, _)| *h <= hi)
            .filter_map(|(_, k)| self.records.get_key_value(k.as_str()))
    }

    /// Records whose key hash is `hash` (normally one).
    pub fn records_with_hash(&self, hash: u64) -> impl Iterator<Item = (&Key, &Record)> {
        self.by_hash
            .range((
                Bound::Included((hash, self.key_min.clone())),
                Bound::Unbounded,
            ))
            .take_while(move |(h, _)| *h == hash)
            .filter_map(|(_, k)| self.records.get_key_value(k.as_str()))
    }

    /// The Merkle root of the whole state.
    pub fn root(&mut self) -> Hash {
        self.digest.root()
    }

    pub fn digest(&mut self) -> &mut Digest {
        &mut self.digest
    }

    /// A digest of the keys under `prefix` only: blake3 over their entry
    /// hashes in key order. O(keys under the prefix).
    pub fn prefix_digest(&self, prefix: &str) -> Hash {
        let mut h = blake3::Hasher::new();
        for (k, r) in self.scan_prefix(prefix) {
            h.update(&entry_hash(k.as_str(), &r.entry));
        }
        *h.finalize().as_bytes()
    }

    /// Tombstones with a clock at or below `hlc`, oldest first, at most `max`.
    pub fn tombstones_up_to(&self, hlc: Hlc, max: usize) -> Vec<(Stamp, Key)> {
        self.tombstones
            .iter()
            .take_while(|(s, _)| s.hlc <= hlc)
            .take(max)
            .cloned()
            .collect()
    }

    /// Applies a write made on this replica. Its stamp must be greater than
    /// the key's current one (the local clock guarantees it).
    pub fn apply_local(&mut self, key: &Key, entry: Entry) -> u64 {
        debug_assert!(self
            .records
            .get(key.as_str())
            .is_none_or(|r| r.entry.stamp < entry.stamp));
        match self.replace(key, entry) {
            Merged::Inserted { index } | Merged::Replaced { index, .. } => index,
            other => unreachable!("a local write always changes the map, got {other:?}"),
        }
    }

    /// Merges a replicated entry. `floor` is the garbage-collection floor:
    /// an entry at or below it for an absent key is refused.
    pub fn merge(&mut self, key: &Key, entry: Entry, floor: Hlc) -> Merged {
        match self.records.get(key.as_str()) {
            None if entry.stamp.hlc <= floor => Merged::BelowFloor,
            None => self.replace(key, entry),
            Some(r) if entry.stamp > r.entry.stamp => self.replace(key, entry),
            Some(r) if entry.stamp < r.entry.stamp => Merged::Stale,
            Some(r) if r.entry == entry => Merged::Duplicate,
            Some(r) => {
                // Same stamp, different content: never from a correct writer.
                // Resolve the same way everywhere: the greater content hash wins.
                self.stamp_collisions += 1;
                let ours = entry_hash(key.as_str(), &r.entry);
                let theirs = entry_hash(key.as_str(), &entry);
                if theirs > ours {
                    self.replace(key, entry)
                } else {
                    Merged::Stale
                }
            }
        }
    }

    /// Installs `entry` for `key` unconditionally, assigning the next index.
    fn replace(&mut self, key: &Key, entry: Entry) -> Merged {
        self.index += 1;
        let index = self.index;
        let part = part_of(&entry_hash(key.as_str(), &entry));
        let Some(rec) = self.records.get_mut(key.as_str()) else {
            self.insert_new(key.clone(), entry, index, index);
            return Merged::Inserted { index };
        };
        let old = std::mem::replace(&mut rec.entry, entry);
        self.digest.toggle(rec.key_hash, &rec.part);
        self.digest.toggle(rec.key_hash, &part);
        rec.part = part;
        self.feed.remove(&rec.modify_index);
        self.feed.insert(index, key.clone());
        rec.modify_index = index;
        if old.is_tombstone() && !rec.entry.is_tombstone() {
            rec.create_index = index;
        }
        self.raw_bytes = self.raw_bytes - old.value_len() as u64 + rec.entry.value_len() as u64;
        if old.is_tombstone() {
            self.tombstones.remove(&(old.stamp, key.clone()));
        }
        if rec.entry.is_tombstone() {
            self.tombstones.insert((rec.entry.stamp, key.clone()));
        }
        let new = &rec.entry;
        let conflict = new.prev < old.stamp && new.stamp.node != old.stamp.node;
        if conflict {
            let loser_value = old
                .value
                .as_ref()
                .filter(|v| v.len() <= CONFLICT_VALUE_BYTES_MAX)
                .cloned();
            self.conflicts.push(Conflict {
                key: key.clone(),
                winner: new.stamp,
                loser: old.stamp,
                loser_value,
                loser_was_tombstone: old.is_tombstone(),
                index,
            });
        }
        Merged::Replaced { index, conflict }
    }

    fn insert_new(&mut self, key: Key, entry: Entry, create_index: u64, modify_index: u64) {
        let kh = key_hash(key.as_str());
        let part = part_of(&entry_hash(key.as_str(), &entry));
        self.digest.toggle(kh, &part);
        self.by_hash.insert((kh, key.clone()));
        self.feed.insert(modify_index, key.clone());
        self.raw_bytes += (key.len() + entry.value_len()) as u64;
        if entry.is_tombstone() {
            self.tombstones.insert((entry.stamp, key.clone()));
        }
        self.records.insert(
            key,
            Record {
                entry,
                create_index,
                modify_index,
                key_hash: kh,
                part,
            },
        );
    }

    /// Removes a key outright (tombstone collection, resync). Returns its record.
    pub fn remove(&mut self, key: &str) -> Option<Record> {
        let (key, rec) = self.records.remove_entry(key)?;
        self.digest.toggle(rec.key_hash, &rec.part);
        self.by_hash.remove(&(rec.key_hash, key.clone()));
        self.feed.remove(&rec.modify_index);
        self.raw_bytes -= (key.len() + rec.entry.value_len()) as u64;
        if rec.entry.is_tombstone() {
            self.tombstones.remove(&(rec.entry.stamp, key.clone()));
        }
        self.removals_bytes += key.len();
        self.removals.push_back((self.index, key));
        while self.removals_bytes > REMOVALS_BYTES_MAX {
            let Some((i, k)) = self.removals.pop_front() else {
                break;
            };
            self.removals_bytes -= k.len();
            self.removals_from = i + 1;
        }
        Some(rec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::types::NodeId;

    fn e(hlc: u64, node: u64, v: Option<&'static str>) -> Entry {
        Entry {
            stamp: Stamp::new(Hlc(hlc), NodeId(node)),
            prev: Stamp::ZERO,
            flags: 0,
            value: v.map(|s| Bytes::from_static(s.as_bytes())),
        }
    }

    fn k(s: &str) -> Key {
        Key::new(s).unwrap()
    }

    #[test]
    fn the_removal_log_serves_incremental_backups() {
        let mut m = LwwMap::new(0);
        for k in ["a", "b", "c"] {
            let e = Entry {
                stamp: Stamp::new(Hlc::new(1, 0), NodeId(1)),
                prev: Stamp::ZERO,
                flags: 0,
                value: None,
            };
            m.apply_local(&Key::new(k).unwrap(), e);
        }
        let at = m.index();
        m.remove("a");
        let names = |v: Option<Vec<Key>>| {
            v.map(|v| v.iter().map(|k| k.as_str().to_string()).collect::<Vec<_>>())
        };
        assert_eq!(names(m.removed_since(at)), Some(vec!["a".to_string()]));
        assert_eq!(names(m.removed_since(at + 1)), Some(vec![]));
        // After a restart, removals before it are unknown.
        let r = LwwMap::restore(Vec::new(), at, 0);
        assert_eq!(r.removed_since(at), None);
        assert_eq!(names(r.removed_since(at + 1)), Some(vec![]));
    }

    #[test]
    fn greater_stamp_wins_and_feed_keeps_latest_change_only() {
        let mut m = LwwMap::default();
        assert_eq!(
            m.merge(&k("a"), e(5, 1, Some("x")), Hlc::ZERO),
            Merged::Inserted { index: 1 }
        );
        assert_eq!(
            m.merge(&k("a"), e(4, 2, Some("y")), Hlc::ZERO),
            Merged::Stale
        );
        assert!(matches!(
            m.merge(&k("a"), e(6, 2, Some("z")), Hlc::ZERO),
            Merged::Replaced {
                index: 2,
                conflict: true
            }
        ));
        assert_eq!(
            m.merge(&k("a"), e(6, 2, Some("z")), Hlc::ZERO),
            Merged::Duplicate
        );
        assert_eq!(m.get("a").unwrap().entry.value.as_deref(), Some(&b"z"[..]));
        let changes: Vec<u64> = m.changes_since(0).map(|(i, _, _)| i).collect();
        assert_eq!(changes, vec![2]);
        assert_eq!(m.get("a").unwrap().create_index, 1);
    }

    #[test]
    fn a_write_that_saw_the_previous_one_is_not_a_conflict() {
        let mut m = LwwMap::default();
        m.merge(&k("a"), e(5, 1, Some("x")), Hlc::ZERO);
        let mut next = e(6, 2, Some("y"));
        next.prev = Stamp::new(Hlc(5), NodeId(1));
        assert!(matches!(
            m.merge(&k("a"), next, Hlc::ZERO),
            Merged::Replaced {
                conflict: false,
                ..
            }
        ));
        assert_eq!(m.conflicts().total(), 0);
    }

    #[test]
    fn conflict_log_is_bounded() {
        let mut m = LwwMap::new(2);
        for i in 1..=5u64 {
            m.merge(&k("a"), e(i, i, Some("v")), Hlc::ZERO);
        }
        assert_eq!(m.conflicts().total(), 4);
        assert_eq!(m.conflicts().iter().count(), 2);
    }

    #[test]
    fn same_stamp_different_content_resolves_deterministically() {
        let (x, y) = (e(5, 1, Some("x")), e(5, 1, Some("y")));
        let mut a = LwwMap::default();
        a.merge(&k("a"), x.clone(), Hlc::ZERO);
        a.merge(&k("a"), y.clone(), Hlc::ZERO);
        let mut b = LwwMap::default();
        b.merge(&k("a"), y, Hlc::ZERO);
        b.merge(&k("a"), x, Hlc::ZERO);
        assert_eq!(a.get("a").unwrap().entry, b.get("a").unwrap().entry);
        assert_eq!(a.stamp_collisions(), 1);
        assert_eq!(a.root(), b.root());
    }

    #[test]
    fn floor_refuses_absent_keys_only() {
        let mut m = LwwMap::default();
        assert_eq!(
            m.merge(&k("a"), e(5, 1, Some("x")), Hlc(5)),
            Merged::BelowFloor
        );
        m.merge(&k("b"), e(3, 1, Some("x")), Hlc::ZERO);
        assert!(m.merge(&k("b"), e(4, 1, Some("y")), Hlc(5)).changed());
    }

    #[test]
    fn tombstones_are_indexed_and_removal_restores_the_root() {
        let mut m = LwwMap::default();
        let empty = m.root();
        m.merge(&k("a"), e(5, 1, Some("x")), Hlc::ZERO);
        let one = m.root();
        m.merge(&k("b"), e(6, 1, None), Hlc::ZERO);
        assert_eq!(m.tombstones_up_to(Hlc(6), 10).len(), 1);
        assert_eq!(m.tombstones_up_to(Hlc(5), 10).len(), 0);
        m.remove("b");
        assert_eq!(m.root(), one);
        m.remove("a");
        assert_eq!(m.root(), empty);
        assert_eq!(m.raw_bytes(), 0);
    }

    #[test]
    fn prefix_scan_and_leaf_lookup() {
        let mut m = LwwMap::default();
        for key in ["app/a", "app/b", "apq", "ap"] {
            m.merge(&k(key), e(1, 1, Some("v")), Hlc::ZERO);
        }
        let keys: Vec<&str> = m.scan_prefix("app/").map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, vec!["app/a", "app/b"]);
        let kh = key_hash("apq");
        let leaf = crate::core::digest::leaf_of(kh);
        assert!(m.leaf_records(leaf).any(|(k, _)| k.as_str() == "apq"));
        assert_eq!(m.records_with_hash(kh).count(), 1);
    }

    #[test]
    fn restore_rebuilds_the_same_root() {
        let mut m = LwwMap::default();
        for i in 0..50u64 {
            let v = if i % 7 == 0 { None } else { Some("v") };
            m.merge(&k(&format!("k{}", i % 20)), e(i + 1, i % 3, v), Hlc::ZERO);
        }
        let recs: Vec<_> = m
            .iter()
            .map(|(k, r)| (k.clone(), r.entry.clone(), r.create_index, r.modify_index))
            .collect();
        let mut n = LwwMap::restore(recs, m.index(), 16);
        assert_eq!(n.root(), m.root());
        assert_eq!(n.index(), m.index());
        assert_eq!(n.tombstone_count(), m.tombstone_count());
    }
}
