//! The last-writer-wins map CRDT.
//!
//! Owns the key space of one replica: per key the entry with the greatest
//! [`Stamp`] (tombstones included), the change feed that numbers every
//! applied change with this replica's own monotonic *index*, the bounded
//! conflict log ([`super::conflicts`]), the tombstone index that garbage collection walks, and the
//! [`Digest`] kept in step with every change.
//!
//! Merge is commutative, associative and idempotent: the map after merging
//! a set of entries is the same whatever their order or repetition (the
//! property tests in `tests/properties.rs` check this). Indices are local and
//! depend on arrival order; they are not part of the replicated state and not
//! part of the digest.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::hash::BuildHasher;
use std::ops::Bound;

use bytes::Bytes;
use foldhash::fast::FixedState;
use hashbrown::HashTable;

use super::conflicts::{Conflict, ConflictLog, CONFLICTS_MAX_DEFAULT, CONFLICT_VALUE_BYTES_MAX};
use super::digest::{leaf_of, Digest, LEAVES};
use super::hlc::Hlc;
use super::mutants::{self, Mutant};
use super::types::{entry_hash, entry_part, Check, Entry, Hash, Key, Stamp};

/// A key's current entry with its local bookkeeping.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// The key's current entry: the greatest stamp merged, value or tombstone.
    pub entry: Entry,
    /// The index at which the key was created (or re-created after a delete).
    pub create_index: u64,
    /// The index of the key's latest change on this replica.
    pub modify_index: u64,
    /// Cached: the key's position in the digest.
    key_hash: u64,
    /// Cached: what this entry contributes to its digest leaf.
    part: [u8; 16],
    /// `part` is in the digest (the entry was live when it arrived): what
    /// leaves the digest with it, whatever the entry holds by then.
    in_digest: bool,
}

impl Record {
    /// The key's position in the digest's hash space (its `key_hash`).
    pub fn key_hash(&self) -> u64 {
        self.key_hash
    }

    /// The first 16 bytes of the entry's hash (its contribution to the digest).
    pub fn check(&self) -> [u8; 16] {
        self.part
    }

    /// What this record is stored with: its key hash and its part, as
    /// computed when the entry arrived (not from the entry as it is now).
    pub fn stored_check(&self) -> Check {
        Check {
            key_hash: self.key_hash,
            part: self.part,
        }
    }
}

/// What merging one entry did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Merged {
    /// The key was new here.
    Inserted {
        /// The local index assigned to the change.
        index: u64,
    },
    /// The entry replaced an older one; `conflict` says the replaced entry
    /// was concurrent with it (its writer had not seen it).
    Replaced {
        /// The local index assigned to the change.
        index: u64,
        /// The replaced entry was concurrent: the change is in the conflict log.
        conflict: bool,
    },
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
    /// True if the merge changed the map (and took an index).
    pub fn changed(self) -> bool {
        matches!(self, Merged::Inserted { .. } | Merged::Replaced { .. })
    }
}

/// A key and its record, in the map's arena.
struct Slot {
    key: Key,
    rec: Record,
}

/// Stale pairs the change feed may hold beyond half its current ones before
/// it is compacted.
const FEED_SLACK: usize = 1024;

/// The replicated map (see the module docs).
///
/// Records live in one arena of slots; three indexes name slots by `u32`:
/// a hash table (seeded, see [`LwwMap::with_seed`]) finds a key's slot for
/// merges and reads, an ordered map serves prefix scans, and one chain per
/// digest leaf serves the leaf exchange of anti-entropy. The change feed is
/// an append-only log of (index, slot) pairs; a pair is current while its
/// slot still holds that index, and stale pairs are dropped in bulk.
pub struct LwwMap {
    /// `None` marks a free slot (reused first).
    slots: Vec<Option<Slot>>,
    free: Vec<u32>,
    table: HashTable<u32>,
    hasher: FixedState,
    /// Keys in order, for prefix scans and ordered iteration.
    ordered: BTreeMap<Key, u32>,
    /// Per digest leaf, the first slot of its chain plus one (0: empty);
    /// `leaf_next[slot]` the next slot plus one. Zero-initialised, so an
    /// empty map's heads cost no resident memory.
    leaf_head: Vec<u32>,
    leaf_next: Vec<u32>,
    /// (index, slot) in increasing index order.
    feed: Vec<(u64, u32)>,
    tombstones: BTreeSet<(Stamp, Key)>,
    index: u64,
    digest: Digest,
    conflicts: ConflictLog,
    stamp_collisions: u64,
    /// Collisions where our entry failed its check and was replaced.
    damaged_replaced: u64,
    raw_bytes: u64,
    /// Keys removed outright, with the index when they were removed, for
    /// incremental backups; at most [`REMOVALS_BYTES_MAX`] bytes of keys.
    removals: VecDeque<(u64, Key)>,
    removals_bytes: usize,
    /// Every removal recorded at an index at or after this one is in `removals`.
    removals_from: u64,
    /// Removals were forgotten for room since this map was built (else
    /// every removal since it was built, or restored, is in `removals`).
    removals_trimmed: bool,
}

/// Bytes of keys the removal log keeps; older removals are forgotten (an
/// incremental backup from before them then needs a full backup instead).
pub const REMOVALS_BYTES_MAX: usize = 4 << 20;

impl Default for LwwMap {
    fn default() -> Self {
        LwwMap::new(CONFLICTS_MAX_DEFAULT)
    }
}

fn table_hash(hasher: &FixedState, key: &str) -> u64 {
    hasher.hash_one(key)
}

/// The slot an index names; every index names only occupied slots.
fn slot_in(slots: &[Option<Slot>], s: u32) -> &Slot {
    match slots.get(s as usize) {
        Some(Some(slot)) => slot,
        _ => unreachable!("an index names free slot {s}"),
    }
}

/// Most records [`LwwMap::restore`] reserves room for up front.
const RESTORE_RESERVE_MAX: usize = 1 << 24;

impl LwwMap {
    /// An empty map whose lookup table uses a fixed seed: for tests and
    /// offline tools. A map that holds keys from clients should use
    /// [`LwwMap::with_seed`] with a random seed, so that nobody can choose
    /// keys that collide in its table.
    pub fn new(conflicts_max: usize) -> LwwMap {
        LwwMap::with_seed(conflicts_max, 0)
    }

    /// An empty map whose lookup table hashes keys with `hash_seed`. The
    /// seed changes no result, only where keys sit in the table.
    pub fn with_seed(conflicts_max: usize, hash_seed: u64) -> LwwMap {
        LwwMap {
            slots: Vec::new(),
            free: Vec::new(),
            table: HashTable::new(),
            hasher: FixedState::with_seed(hash_seed),
            ordered: BTreeMap::new(),
            leaf_head: vec![0; LEAVES],
            leaf_next: Vec::new(),
            feed: Vec::new(),
            tombstones: BTreeSet::new(),
            index: 0,
            digest: Digest::new(),
            conflicts: ConflictLog::new(conflicts_max),
            stamp_collisions: 0,
            damaged_replaced: 0,
            raw_bytes: 0,
            removals: VecDeque::new(),
            removals_bytes: 0,
            removals_from: 0,
            removals_trimmed: false,
        }
    }

    /// Rebuilds a map from durable records (key, entry, create index,
    /// modify index, and the record's check, which the caller has verified
    /// against the entry: it is taken as is) and the last index.
    pub fn restore(
        records: impl IntoIterator<Item = (Key, Entry, u64, u64, Check)>,
        index: u64,
        conflicts_max: usize,
        hash_seed: u64,
    ) -> LwwMap {
        let mut m = LwwMap::with_seed(conflicts_max, hash_seed);
        let records = records.into_iter();
        // A hint, not a promise: a wrong count from a damaged file must not
        // reserve without bound.
        let n = records.size_hint().0.min(RESTORE_RESERVE_MAX);
        m.slots.reserve(n);
        m.leaf_next.reserve(n);
        m.feed.reserve(n);
        let (slots, hasher) = (&m.slots, &m.hasher);
        m.table.reserve(n, |&s| Self::slot_hash(slots, hasher, s));
        // The ordered index is built in bulk at the end: packed nodes (a
        // third less memory than inserting one by one) and no search per key.
        let mut ordered = Vec::with_capacity(n);
        for (key, entry, create_index, modify_index, check) in records {
            debug_assert!(m.slot_of(key.as_str()).is_none(), "restored twice: {key:?}");
            let s = m.insert_slot(key.clone(), entry, create_index, modify_index, check);
            m.feed.push((modify_index, s));
            ordered.push((key, s));
        }
        m.ordered = ordered.into_iter().collect();
        m.feed.sort_unstable_by_key(|&(i, _)| i);
        m.index = index.max(m.feed.last().map_or(0, |&(i, _)| i));
        // Removals before the restart are not known.
        m.removals_from = m.index + 1;
        m
    }

    fn slot_hash(slots: &[Option<Slot>], hasher: &FixedState, s: u32) -> u64 {
        table_hash(hasher, slot_in(slots, s).key.as_str())
    }

    fn slot_of(&self, key: &str) -> Option<u32> {
        let slots = &self.slots;
        self.table
            .find(table_hash(&self.hasher, key), |&s| {
                slots[s as usize]
                    .as_ref()
                    .is_some_and(|x| x.key.as_str() == key)
            })
            .copied()
    }

    fn slot(&self, s: u32) -> &Slot {
        slot_in(&self.slots, s)
    }

    /// The keys removed outright (collected tombstones, dropped on resync)
    /// at or after index `since`, or `None` if the log no longer reaches back
    /// that far (a restart, or more than [`REMOVALS_BYTES_MAX`] since).
    pub fn removed_since(&self, since: u64) -> Option<Vec<Key>> {
        (since >= self.removals_from).then(|| self.removals_at_or_after(since))
    }

    /// Like [`LwwMap::removed_since`], for a base state taken after this
    /// map was restored: every removal since the restore is then known,
    /// including those at the restore's own index (which `removed_since`
    /// cannot vouch for, as removals before the restart may share it).
    /// `None` when removals were forgotten for room since.
    pub fn removed_since_restore(&self, since: u64) -> Option<Vec<Key>> {
        let from = if self.removals_trimmed {
            self.removals_from
        } else {
            self.removals_from.saturating_sub(1)
        };
        (since >= from).then(|| self.removals_at_or_after(since))
    }

    fn removals_at_or_after(&self, since: u64) -> Vec<Key> {
        self.removals
            .iter()
            .filter(|(i, _)| *i >= since)
            .map(|(_, k)| k.clone())
            .collect()
    }

    /// The last index assigned.
    pub fn index(&self) -> u64 {
        self.index
    }

    /// Keys held, tombstones included.
    pub fn len(&self) -> usize {
        self.ordered.len()
    }

    /// True if no key is held, not even a tombstone.
    pub fn is_empty(&self) -> bool {
        self.ordered.is_empty()
    }

    /// Tombstones held (not yet collected).
    pub fn tombstone_count(&self) -> usize {
        self.tombstones.len()
    }

    /// Sum of the bytes of keys and values held.
    pub fn raw_bytes(&self) -> u64 {
        self.raw_bytes
    }

    /// The conflict log of this replica.
    pub fn conflicts(&self) -> &ConflictLog {
        &self.conflicts
    }

    /// The conflict log, to take its fresh conflicts or restore it from durable state.
    pub fn conflicts_mut(&mut self) -> &mut ConflictLog {
        &mut self.conflicts
    }

    /// Merges that met a different entry with the same stamp (a bug or corruption).
    pub fn stamp_collisions(&self) -> u64 {
        self.stamp_collisions
    }

    /// Of those, the ones where our entry failed its check and the
    /// incoming one replaced it.
    pub fn damaged_replaced(&self) -> u64 {
        self.damaged_replaced
    }

    /// The record of `key`, tombstone included; `None` if the key is absent
    /// (never written here, or collected).
    pub fn get(&self, key: &str) -> Option<&Record> {
        self.slot_of(key).map(|s| &self.slot(s).rec)
    }

    /// Every record, tombstones included, in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&Key, &Record)> {
        self.ordered.iter().map(|(k, &s)| (k, &self.slot(s).rec))
    }

    /// Records whose key starts with `prefix`, in key order, tombstones included.
    pub fn scan_prefix<'a>(
        &'a self,
        prefix: &'a str,
    ) -> impl Iterator<Item = (&'a Key, &'a Record)> {
        self.ordered
            .range::<str, _>((Bound::Included(prefix), Bound::Unbounded))
            .take_while(move |(k, _)| k.as_str().starts_with(prefix))
            .map(|(k, &s)| (k, &self.slot(s).rec))
    }

    /// [`LwwMap::scan_prefix`] without the keys it hides from a client's
    /// scan: Meridian's own (reserved) keys, unless `prefix` is itself
    /// inside the reserved namespace.
    pub fn scan_visible<'a>(
        &'a self,
        prefix: &'a str,
    ) -> impl Iterator<Item = (&'a Key, &'a Record)> {
        self.scan_prefix(prefix)
            .filter(move |(k, _)| !super::types::hidden_under(prefix, k.as_str()))
    }

    /// The current records of keys changed after `since`, in index order.
    pub fn changes_since(&self, since: u64) -> impl Iterator<Item = (u64, &Key, &Record)> {
        self.feed_since(since)
            .filter_map(|(i, c)| c.map(|(k, r)| (i, k, r)))
    }

    /// Every change after `since` the feed still lists, in index order:
    /// `None` for a change superseded by a later one of the same key. For
    /// callers that bound their work: superseded changes cost a step too
    /// (at most half as many as keys, plus 1,024, before the feed drops them).
    pub fn feed_since(&self, since: u64) -> impl Iterator<Item = (u64, Option<(&Key, &Record)>)> {
        let start = self.feed.partition_point(|&(i, _)| i <= since);
        self.feed[start..].iter().map(move |&(i, s)| {
            let current = self
                .slots
                .get(s as usize)
                .and_then(Option::as_ref)
                .filter(|slot| slot.rec.modify_index == i)
                .map(|slot| (&slot.key, &slot.rec));
            (i, current)
        })
    }

    /// The slots chained in `leaf`, in no particular order.
    fn chain(&self, leaf: u32) -> impl Iterator<Item = &Slot> {
        let mut next = self.leaf_head.get(leaf as usize).copied().unwrap_or(0);
        std::iter::from_fn(move || {
            let s = next.checked_sub(1)?;
            next = self.leaf_next[s as usize];
            Some(self.slot(s))
        })
    }

    /// Records whose key hash lies in `leaf`, in key-hash order.
    pub fn leaf_records(&self, leaf: u32) -> impl Iterator<Item = (&Key, &Record)> {
        let mut v: Vec<&Slot> = self.chain(leaf).collect();
        v.sort_unstable_by(|a, b| {
            (a.rec.key_hash, a.key.as_str()).cmp(&(b.rec.key_hash, b.key.as_str()))
        });
        v.into_iter().map(|s| (&s.key, &s.rec))
    }

    /// Records whose key hash is `hash` (normally one), in key order.
    pub fn records_with_hash(&self, hash: u64) -> impl Iterator<Item = (&Key, &Record)> {
        let mut v: Vec<&Slot> = self
            .chain(leaf_of(hash))
            .filter(|s| s.rec.key_hash == hash)
            .collect();
        v.sort_unstable_by(|a, b| a.key.cmp(&b.key));
        v.into_iter().map(|s| (&s.key, &s.rec))
    }

    /// The Merkle root of the live entries (tombstones are not in the
    /// digest: see [`Digest`]).
    pub fn root(&mut self) -> Hash {
        self.digest.root()
    }

    /// The Merkle digest; `&mut` because stale inner nodes are recomputed when read.
    pub fn digest(&mut self) -> &mut Digest {
        &mut self.digest
    }

    /// A digest of the live keys under `prefix` only: blake3 over their
    /// records' [`Record::check`]s (the first 16 bytes of each entry hash,
    /// which covers the key) in key order; tombstones are left out, as in
    /// the root. O(keys under the prefix), no entry hashed again.
    pub fn prefix_digest(&self, prefix: &str) -> Hash {
        let mut h = blake3::Hasher::new();
        for (_, r) in self.scan_prefix(prefix) {
            if r.in_digest {
                h.update(&r.part);
            }
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

    /// Collects the tombstone `stamp` of `key`: removes the key only if it
    /// still holds exactly that tombstone (an index entry left behind by a
    /// record damaged in memory is dropped instead). True if it removed it.
    pub fn collect(&mut self, key: &Key, stamp: Stamp) -> bool {
        let current = self.get(key.as_str()).map(|r| &r.entry);
        if current.is_some_and(|e| e.is_tombstone() && e.stamp == stamp) {
            self.remove(key.as_str());
            return true;
        }
        self.tombstones.remove(&(stamp, key.clone()));
        false
    }

    /// Applies a write made on this replica. Its stamp must be greater than
    /// the key's current one (the local clock guarantees it).
    pub fn apply_local(&mut self, key: &Key, entry: Entry) -> u64 {
        let found = self.slot_of(key.as_str());
        debug_assert!(found.is_none_or(|s| self.slot(s).rec.entry.order() < entry.order()));
        match self.install(key, entry, found) {
            Merged::Inserted { index } | Merged::Replaced { index, .. } => index,
            other => unreachable!("a local write always changes the map, got {other:?}"),
        }
    }

    /// Merges a replicated entry. `floor` is the garbage-collection floor:
    /// an entry at or below it for an absent key is refused.
    pub fn merge(&mut self, key: &Key, entry: Entry, floor: Hlc) -> Merged {
        let found = self.slot_of(key.as_str());
        // A merge of documents stands where the newest write it merged does.
        let Some(s) = found else {
            if entry.order().0.hlc <= floor && !mutants::on(Mutant::CollectionFloor) {
                return Merged::BelowFloor;
            }
            return self.install(key, entry, None);
        };
        let r = &self.slot(s).rec;
        if entry.order() > r.entry.order() {
            return self.install(key, entry, found);
        }
        if entry.order() < r.entry.order() {
            if mutants::on(Mutant::StampOrder) {
                return self.install(key, entry, found);
            }
            return Merged::Stale;
        }
        if r.entry == entry {
            return Merged::Duplicate;
        }
        // Same stamp, different content: never from a correct writer. An
        // entry of ours that no longer matches its stored check is damaged
        // (in memory): the intact one replaces it. Two intact entries mean a
        // bug on one side: resolve them the same way everywhere, the greater
        // content hash wins. (Senders check every entry before they send it,
        // so what arrives is intact.)
        let ours_damaged = Check::of(key.as_str(), &r.entry) != r.stored_check();
        let ours = entry_hash(key.as_str(), &r.entry);
        let theirs = entry_hash(key.as_str(), &entry);
        self.stamp_collisions += 1;
        if ours_damaged {
            self.damaged_replaced += 1;
            return self.install(key, entry, found);
        }
        if theirs > ours {
            self.install(key, entry, found)
        } else {
            Merged::Stale
        }
    }

    /// Installs `entry` for `key` (held in slot `found`, if any)
    /// unconditionally, assigning the next index.
    fn install(&mut self, key: &Key, entry: Entry, found: Option<u32>) -> Merged {
        self.index += 1;
        let index = self.index;
        let Some(s) = found else {
            self.insert_new(key.clone(), entry, index, index);
            return Merged::Inserted { index };
        };
        let part = entry_part(key.as_str(), &entry);
        let Some(Some(slot)) = self.slots.get_mut(s as usize) else {
            unreachable!("the table names free slot {s}");
        };
        let rec = &mut slot.rec;
        let old = std::mem::replace(&mut rec.entry, entry);
        // Out with the old entry's part, in with the new one's, in one
        // step; a tombstone has no part in the digest.
        let mut delta = [0u8; 16];
        if rec.in_digest {
            delta = rec.part;
        }
        rec.in_digest = !rec.entry.is_tombstone();
        if rec.in_digest {
            for (d, p) in delta.iter_mut().zip(&part) {
                *d ^= p;
            }
        }
        if delta != [0u8; 16] {
            self.digest.toggle(rec.key_hash, &delta);
        }
        rec.part = part;
        rec.modify_index = index;
        if old.is_tombstone() && !rec.entry.is_tombstone() {
            rec.create_index = index;
        }
        // Saturating: an entry damaged in memory may have changed its length.
        self.raw_bytes =
            self.raw_bytes.saturating_sub(old.value_len() as u64) + rec.entry.value_len() as u64;
        if old.is_tombstone() {
            self.tombstones.remove(&(old.stamp, key.clone()));
        }
        if rec.entry.is_tombstone() {
            self.tombstones.insert((rec.entry.stamp, key.clone()));
        }
        let new = &rec.entry;
        // Versions of a document that meet are merged by the replica,
        // which records the fields they both set (`replica::documents`).
        let conflict = new.prev < old.stamp
            && new.stamp.node != old.stamp.node
            && !(new.is_doc() && old.is_doc());
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
                path: None,
            });
        }
        self.feed_push(index, s);
        Merged::Replaced { index, conflict }
    }

    /// Appends a change to the feed, dropping the stale pairs once they
    /// outnumber half the current ones (so the feed stays within 1.5 × the
    /// keys, and each change pays O(1) amortised).
    fn feed_push(&mut self, index: u64, s: u32) {
        debug_assert!(self.feed.last().is_none_or(|&(i, _)| i < index));
        self.feed.push((index, s));
        self.compact_feed();
    }

    /// Drops the feed's stale pairs once they outnumber half the live keys
    /// (plus [`FEED_SLACK`]): after a push, and after a removal.
    fn compact_feed(&mut self) {
        let live = self.slots.len() - self.free.len();
        if self.feed.len() > live + live / 2 + FEED_SLACK {
            let slots = &self.slots;
            self.feed.retain(|&(i, s)| {
                slots
                    .get(s as usize)
                    .and_then(Option::as_ref)
                    .is_some_and(|x| x.rec.modify_index == i)
            });
        }
    }

    fn insert_new(&mut self, key: Key, entry: Entry, create_index: u64, modify_index: u64) {
        let check = Check::of(key.as_str(), &entry);
        let s = self.insert_slot(key.clone(), entry, create_index, modify_index, check);
        self.ordered.insert(key, s);
        self.feed_push(modify_index, s);
    }

    /// Everything of [`Self::insert_new`] but the ordered index and the feed.
    fn insert_slot(
        &mut self,
        key: Key,
        entry: Entry,
        create_index: u64,
        modify_index: u64,
        check: Check,
    ) -> u32 {
        let Check { key_hash: kh, part } = check;
        if !entry.is_tombstone() {
            self.digest.toggle(kh, &part);
        }
        self.raw_bytes += (key.len() + entry.value_len()) as u64;
        if entry.is_tombstone() {
            self.tombstones.insert((entry.stamp, key.clone()));
        }
        let s = match self.free.pop() {
            Some(s) => s,
            None => {
                // Slot ids are u32; 4G keys would need terabytes of memory first.
                assert!(self.slots.len() < u32::MAX as usize, "map full");
                self.slots.push(None);
                self.leaf_next.push(0);
                (self.slots.len() - 1) as u32
            }
        };
        let leaf = leaf_of(kh) as usize;
        self.leaf_next[s as usize] = self.leaf_head[leaf];
        self.leaf_head[leaf] = s + 1;
        let h = table_hash(&self.hasher, key.as_str());
        self.slots[s as usize] = Some(Slot {
            key,
            rec: Record {
                in_digest: !entry.is_tombstone(),
                entry,
                create_index,
                modify_index,
                key_hash: kh,
                part,
            },
        });
        let (slots, hasher) = (&self.slots, &self.hasher);
        self.table
            .insert_unique(h, s, |&x| Self::slot_hash(slots, hasher, x));
        s
    }

    /// Whether the record of `key` still matches the check it was stored
    /// with, recomputed from its entry now (`None`: no such key).
    pub fn verify(&self, key: &str) -> Option<bool> {
        let slot = self.slot(self.slot_of(key)?);
        Some(Check::of(slot.key.as_str(), &slot.rec.entry) == slot.rec.stored_check())
    }

    /// Verifies up to `max` records in key order after `after` (from the
    /// first key when `None`): returns the keys whose entry no longer
    /// matches its check, the last key looked at (`None`: the end of the
    /// map was reached) and how many records were verified.
    pub fn verify_range(&self, after: Option<&Key>, max: usize) -> (Vec<Key>, Option<Key>, usize) {
        let start = match after {
            Some(k) => Bound::Excluded(k.as_str()),
            None => Bound::Unbounded,
        };
        let mut bad = Vec::new();
        let mut last = None;
        let mut n = 0;
        for (k, &s) in self.ordered.range::<str, _>((start, Bound::Unbounded)) {
            if n == max {
                return (bad, last, n);
            }
            n += 1;
            let rec = &self.slot(s).rec;
            if Check::of(k.as_str(), &rec.entry) != rec.stored_check() {
                bad.push(k.clone());
            }
            last = Some(k.clone());
        }
        (bad, None, n)
    }

    /// Builds the digest again from the records' checks and replaces the
    /// incremental one if they differ (a damaged digest in memory); true if
    /// they differed. O(keys) and a new 16 MiB leaf array: for `verify
    /// --deep`, not for the hot path.
    pub fn rebuild_digest(&mut self) -> bool {
        let mut fresh = Digest::new();
        for slot in self.slots.iter().flatten() {
            if slot.rec.in_digest {
                fresh.toggle(slot.rec.key_hash, &slot.rec.part);
            }
        }
        if fresh.root() == self.digest.root() {
            return false;
        }
        self.digest = fresh;
        true
    }

    /// Fault injection (the simulation, tests): replaces the value of
    /// `key`'s entry in memory without its check, as a bit flip in RAM
    /// would. False if the key is absent.
    #[doc(hidden)]
    pub fn simulate_memory_damage(&mut self, key: &str, value: Option<Bytes>) -> bool {
        let Some(s) = self.slot_of(key) else {
            return false;
        };
        let Some(Some(slot)) = self.slots.get_mut(s as usize) else {
            return false;
        };
        slot.rec.entry.value = value;
        true
    }

    /// Takes out a record that failed its check, without logging it as a
    /// removal (it was not deleted: an incremental backup must not carry it
    /// as one). Its stored part leaves the digest, as it entered it.
    pub fn remove_damaged(&mut self, key: &str) -> Option<Record> {
        self.take(key, false)
    }

    /// Removes a key outright (tombstone collection, resync). Returns its record.
    pub fn remove(&mut self, key: &str) -> Option<Record> {
        self.take(key, true)
    }

    /// Takes `key`'s record out of every index; `log`: record it as a
    /// removal for incremental backups.
    fn take(&mut self, key: &str, log: bool) -> Option<Record> {
        let slots = &self.slots;
        let found = self
            .table
            .find_entry(table_hash(&self.hasher, key), |&s| {
                slot_in(slots, s).key.as_str() == key
            })
            .ok()?;
        let (s, _) = found.remove();
        let Some(Slot { key, rec }) = self.slots.get_mut(s as usize).and_then(Option::take) else {
            unreachable!("the table named free slot {s}");
        };
        self.ordered.remove(key.as_str());
        self.unlink(leaf_of(rec.key_hash), s);
        self.free.push(s);
        if rec.in_digest {
            self.digest.toggle(rec.key_hash, &rec.part);
        }
        self.compact_feed();
        // Saturating: an entry damaged in memory may have changed its length.
        self.raw_bytes = self
            .raw_bytes
            .saturating_sub((key.len() + rec.entry.value_len()) as u64);
        if rec.entry.is_tombstone() {
            self.tombstones.remove(&(rec.entry.stamp, key.clone()));
        }
        if !log {
            return Some(rec);
        }
        self.removals_bytes += key.len();
        self.removals.push_back((self.index, key));
        while self.removals_bytes > REMOVALS_BYTES_MAX {
            let Some((i, k)) = self.removals.pop_front() else {
                break;
            };
            self.removals_bytes -= k.len();
            self.removals_from = i + 1;
            self.removals_trimmed = true;
        }
        Some(rec)
    }

    /// Takes slot `s` out of the chain of `leaf`.
    fn unlink(&mut self, leaf: u32, s: u32) {
        let after = std::mem::take(&mut self.leaf_next[s as usize]);
        let head = &mut self.leaf_head[leaf as usize];
        if *head == s + 1 {
            *head = after;
            return;
        }
        let mut at = *head;
        while let Some(p) = at.checked_sub(1) {
            let next = self.leaf_next[p as usize];
            if next == s + 1 {
                self.leaf_next[p as usize] = after;
                return;
            }
            at = next;
        }
        unreachable!("slot {s} is not in the chain of leaf {leaf}");
    }
}

#[cfg(test)]
mod tests;
