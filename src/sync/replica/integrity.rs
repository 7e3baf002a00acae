//! Integrity: checking records against their content, quarantine, repair.
//!
//! Owns what a replica does with a record whose content no longer matches
//! the check it was stored with (design §3, "Integrity"): when the state is
//! read back ([`Verifier`]), before an entry is sent or served, and in
//! a background scrub at a bounded rate. A record that fails is
//! *quarantined*: taken out of the map (never served, sent, or allowed to
//! win a collision), counted and reported, and repaired from the peers: a
//! quarantine starts a recovery (see [`super::recovery`]), in which every
//! known peer sends its full state. A quarantined key is exempt from the
//! collection floor for the entries peers bring (its own copy was lost,
//! not deleted), and its quarantine ends when a peer's entry for it is
//! merged, or when the recovery is over and no peer held it live. A record
//! whose key itself is damaged cannot be named: the replica then also
//! rebuilds, taking its first peer's transfer without the floor, as a
//! rebuilding replica does.

use std::collections::BTreeMap;

use super::{Event, Output, Replica};
use crate::core::hlc::Hlc;
use crate::core::mutants::{self, Mutant};
use crate::core::types::{Check, Entry, Key, NodeId, Stamp};
use crate::sync::durable::{DamagedRecord, Loaded, Recovery, StoredRecord};

/// Most quarantined records kept by key; beyond it the replica takes a
/// full transfer from a peer instead of repairing key by key.
pub const QUARANTINE_MAX: usize = 10_000;

/// Where a quarantined record was found damaged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Found {
    /// Read back from the store: the stored copy is damaged.
    Store,
    /// In memory: the stored copy may be intact (it is checked again when
    /// the state is next read back).
    Memory,
}

/// One quarantined record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Quarantined {
    /// The key, if the stored key is intact (its hash matched).
    pub key: Option<Key>,
    pub found: Found,
    /// The stamp as stored (it may be damaged too).
    pub stamp: Option<Stamp>,
    pub reason: String,
    pub since_ms: u64,
}

/// A record found damaged, as operators see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuarantineStatus {
    /// The stored key (lossy UTF-8 if it is not a valid key).
    pub key: String,
    /// Why it was quarantined: what failed its check, and where.
    pub reason: String,
    /// When it was quarantined (physical time, ms).
    pub since_ms: u64,
}

/// How a quarantine ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolution {
    /// A peer's entry for the key was merged.
    Repaired {
        /// The peer whose entry was merged.
        from: NodeId,
        /// The stamp of the merged entry.
        stamp: Stamp,
    },
    /// A local write replaced it.
    Overwritten,
    /// Its copy on disk was intact (it had been damaged in memory).
    ReadBack {
        /// The stamp of the stored copy.
        stamp: Stamp,
    },
    /// Every known peer (`peers` of them) sent its whole state, or was
    /// found equal, and none held a live value of the key.
    NotHeldByPeers {
        /// Peers that sent their state or were found equal.
        peers: usize,
    },
}

/// What reading a store back found, besides the records it let through.
pub(super) struct Verified {
    pub quarantine: BTreeMap<Vec<u8>, Quarantined>,
    /// A key was damaged (or too many records): take a full transfer.
    pub resync: bool,
    /// Records whose indexes could not be right, renumbered (to be
    /// written back with their new ones).
    pub renumbered: Vec<Key>,
}

/// A record read back, checked, as the map is restored from it.
pub(super) type Admitted = (Key, Entry, u64, u64, Check);

/// Checks every record read back against its stored check (sans-IO: the
/// store only decodes). A record whose key hash differs has a damaged key;
/// one whose entry part differs has damaged content; both are quarantined.
/// Indexes that cannot be right (beyond the stored index, or a create
/// index after the modify index) are renumbered after it: the content is
/// intact, only its place in the feed is new. A key read twice keeps its
/// first record.
///
/// Records stream through ([`Verifier::admit`]) into the map as they are
/// read, so a restart never holds the state twice; what was found is
/// taken at the end ([`Verifier::finish`]).
pub(super) struct Verifier {
    out: Verified,
    index: u64,
    next_index: u64,
    now_ms: u64,
    last: Option<Key>,
}

impl Verifier {
    /// A verifier for a store whose last index is `index`.
    pub(super) fn new(index: u64, now_ms: u64) -> Verifier {
        Verifier {
            out: Verified {
                quarantine: BTreeMap::new(),
                resync: false,
                renumbered: Vec::new(),
            },
            index,
            next_index: index,
            now_ms,
            last: None,
        }
    }

    /// The record to restore from `loaded`, if it passes its check.
    pub(super) fn admit(&mut self, loaded: Loaded) -> Option<Admitted> {
        let now_ms = self.now_ms;
        let out = &mut self.out;
        let (key, r) = match loaded {
            Loaded::Record(k, r) => (k, r),
            Loaded::Damaged(DamagedRecord { raw_key, reason }) => {
                // It does not decode: nothing in it can be trusted, the key
                // included (a valid key may still be the wrong one).
                out.resync = true;
                out.quarantine.insert(
                    raw_key,
                    Quarantined {
                        found: Found::Store,
                        key: None,
                        stamp: None,
                        reason: format!("the stored record does not decode: {reason}"),
                        since_ms: now_ms,
                    },
                );
                return None;
            }
        };
        if self.last.as_ref() == Some(&key) {
            return None;
        }
        self.last = Some(key.clone());
        let StoredRecord {
            entry,
            mut create_index,
            mut modify_index,
            check,
        } = r;
        let found = Check::of(key.as_str(), &entry);
        let checked = !mutants::on(Mutant::RecordChecks);
        if checked && found.key_hash != check.key_hash {
            out.resync = true;
            out.quarantine.insert(
                key.as_str().as_bytes().to_vec(),
                Quarantined {
                    found: Found::Store,
                    key: None,
                    stamp: Some(entry.stamp),
                    reason: "the stored key does not match its check".to_string(),
                    since_ms: now_ms,
                },
            );
            return None;
        }
        if checked && found.part != check.part {
            out.quarantine.insert(
                key.as_str().as_bytes().to_vec(),
                Quarantined {
                    found: Found::Store,
                    key: Some(key),
                    stamp: Some(entry.stamp),
                    reason: "the stored entry does not match its check".to_string(),
                    since_ms: now_ms,
                },
            );
            return None;
        }
        if modify_index == 0 || modify_index > self.index || create_index > modify_index {
            out.renumbered.push(key.clone());
            self.next_index += 1;
            create_index = self.next_index;
            modify_index = self.next_index;
        }
        Some((key, entry, create_index, modify_index, found))
    }

    /// What the records that went through held besides themselves.
    pub(super) fn finish(mut self) -> Verified {
        if self.out.quarantine.len() > QUARANTINE_MAX {
            self.out.resync = true;
        }
        self.out
    }
}

/// [`Verifier::admit`] over `records`, keeping their size hint: the map
/// reserves room from it (most records pass).
pub(super) struct Admit<'a, I> {
    pub records: I,
    pub verifier: &'a mut Verifier,
}

impl<I: Iterator<Item = Loaded>> Iterator for Admit<'_, I> {
    type Item = Admitted;

    fn next(&mut self) -> Option<Admitted> {
        loop {
            let loaded = self.records.next()?;
            if let Some(a) = self.verifier.admit(loaded) {
                return Some(a);
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        // A hint for the map's reservation (capped there), not a promise.
        self.records.size_hint()
    }
}

impl Replica {
    /// Reports the quarantine found when the state was read back (called
    /// once, by the constructor).
    pub(super) fn report_loaded_quarantine(&mut self, resync: bool) {
        if self.quarantine.is_empty() {
            return;
        }
        self.metrics.records_quarantined += self.quarantine.len() as u64;
        let reported: Vec<Event> = self
            .quarantine
            .iter()
            .take(QUARANTINE_EVENTS_MAX)
            .map(|(raw, q)| Event::RecordQuarantined {
                key: String::from_utf8_lossy(raw).into_owned(),
                reason: q.reason.clone(),
            })
            .collect();
        self.staged.extend(reported.into_iter().map(Output::Event));
        if resync {
            self.rebuilding = true;
            self.rebuild_from = None;
        }
        self.begin_recovery(Recovery::AfterDamage);
    }

    /// True if `key`'s record is quarantined (it is not served: reads of it fail).
    pub fn quarantined(&self, key: &str) -> bool {
        !self.quarantine.is_empty() && self.quarantine.contains_key(key.as_bytes())
    }

    /// Quarantined keys under `prefix` (as stored), at most `max`.
    pub fn quarantined_under(&self, prefix: &str, max: usize) -> Vec<String> {
        if self.quarantine.is_empty() {
            return Vec::new();
        }
        self.quarantine
            .range(prefix.as_bytes().to_vec()..)
            .take_while(|(raw, _)| raw.starts_with(prefix.as_bytes()))
            .take(max)
            .map(|(raw, _)| String::from_utf8_lossy(raw).into_owned())
            .collect()
    }

    /// Every quarantined record, oldest key order.
    pub fn quarantine(&self) -> Vec<QuarantineStatus> {
        self.quarantine
            .iter()
            .map(|(raw, q)| QuarantineStatus {
                key: String::from_utf8_lossy(raw).into_owned(),
                reason: q.reason.clone(),
                since_ms: q.since_ms,
            })
            .collect()
    }

    /// The floor that applies to an entry of `key` arriving from a peer's
    /// current state: none for a quarantined key (its copy here was lost,
    /// not deleted; the peer's entry is what repairs it).
    pub(super) fn floor_for(&self, key: &Key, floor: Hlc) -> Hlc {
        if self.quarantined(key.as_str()) {
            Hlc::ZERO
        } else {
            floor
        }
    }

    /// Quarantines `key`, whose record in memory no longer matches its
    /// check: it leaves the map (its stored part leaves the digest, as it
    /// entered it). The copy on disk is left alone: it is checked when it
    /// is read back, and overwritten once the key is repaired.
    pub(super) fn quarantine_damaged(&mut self, key: &Key, reason: &str, now_ms: u64) {
        let Some(rec) = self.map.remove_damaged(key.as_str()) else {
            return;
        };
        self.metrics.records_quarantined += 1;
        self.metrics.damage_found_in_memory += 1;
        self.quarantine.insert(
            key.as_str().as_bytes().to_vec(),
            Quarantined {
                key: Some(key.clone()),
                found: Found::Memory,
                stamp: Some(rec.entry.stamp),
                reason: reason.to_string(),
                since_ms: now_ms,
            },
        );
        self.staged.push(Output::Event(Event::RecordQuarantined {
            key: key.to_string(),
            reason: reason.to_string(),
        }));
        // Its stored copy may be intact: the quickest repair, and maybe the
        // only one (a write no peer holds yet).
        if self.reading_back.len() < QUARANTINE_MAX && self.reading_back.insert(key.clone()) {
            self.staged.push(Output::ReadBack { key: key.clone() });
        }
        if self.quarantine.len() > QUARANTINE_MAX && !self.rebuilding {
            self.rebuilding = true;
            self.rebuild_from = None;
        }
        // The peers are asked for their state (again) once this input is over.
        self.begin_recovery(Recovery::AfterDamage);
    }

    /// Keeps the entries whose records still match their checks; the others
    /// are quarantined (in-memory damage) and not sent.
    pub(super) fn intact(&mut self, entries: Vec<(Key, Entry)>, now_ms: u64) -> Vec<(Key, Entry)> {
        let mut damaged = Vec::new();
        let kept = entries
            .into_iter()
            .filter(|(k, e)| {
                let ok = self
                    .map
                    .get(k.as_str())
                    .is_some_and(|r| Check::of(k.as_str(), e) == r.stored_check());
                if !ok {
                    damaged.push(k.clone());
                }
                ok
            })
            .collect();
        for k in damaged {
            self.quarantine_damaged(&k, "the entry in memory does not match its check", now_ms);
        }
        kept
    }

    /// Checks `key`'s record before it is served; quarantines it if it no
    /// longer matches its check. True if it may be served (or is absent).
    pub fn check_before_serving(&mut self, key: &str, now_ms: u64) -> bool {
        match self.map.verify(key) {
            Some(false) => {
                if let Ok(k) = Key::new(key) {
                    self.quarantine_damaged(
                        &k,
                        "the entry in memory does not match its check",
                        now_ms,
                    );
                    self.commit();
                }
                false
            }
            _ => !self.quarantined(key),
        }
    }

    /// Verifies every record under `prefix` before they are served
    /// (quarantining those that fail); returns the quarantined keys under
    /// it, at most `max`: empty when all may be served.
    pub fn check_prefix_before_serving(
        &mut self,
        prefix: &str,
        max: usize,
        now_ms: u64,
    ) -> Vec<String> {
        let bad: Vec<Key> = self
            .map
            .scan_prefix(prefix)
            .filter(|(k, r)| Check::of(k.as_str(), &r.entry) != r.stored_check())
            .map(|(k, _)| k.clone())
            .collect();
        for k in &bad {
            self.quarantine_damaged(k, "the entry in memory does not match its check", now_ms);
        }
        if !bad.is_empty() {
            self.commit();
        }
        self.quarantined_under(prefix, max)
    }

    /// Verifies up to `max` records after the scrub cursor; quarantines
    /// those that fail. Returns how many failed.
    pub(super) fn scrub(&mut self, max: usize, now_ms: u64) -> usize {
        let (bad, next, scanned) = self.map.verify_range(self.scrub_cursor.as_ref(), max);
        self.metrics.records_scrubbed += scanned as u64;
        if next.is_none() {
            self.metrics.scrub_passes += 1;
        }
        self.scrub_cursor = next;
        let n = bad.len();
        for k in bad {
            self.quarantine_damaged(
                &k,
                "the scrub found the entry does not match its check",
                now_ms,
            );
        }
        n
    }

    /// Recomputes the check of every record from its entry now, and the
    /// digest from those checks (what `verify --deep` asks): quarantines the
    /// records that fail and replaces a digest that differs. Returns how
    /// many records failed, and whether the digest differed.
    pub fn verify_all(&mut self, now_ms: u64) -> (usize, bool) {
        let (bad, _, _) = self.map.verify_range(None, usize::MAX);
        let n = bad.len();
        for k in bad {
            self.quarantine_damaged(
                &k,
                "a deep verify found the entry does not match its check",
                now_ms,
            );
        }
        let digest_differed = self.map.rebuild_digest();
        self.commit();
        (n, digest_differed)
    }

    /// Fault injection (the simulation, tests): changes `key`'s entry in
    /// memory without its check, as a bit flip in RAM would.
    #[doc(hidden)]
    pub fn simulate_memory_damage(&mut self, key: &str, value: Option<bytes::Bytes>) -> bool {
        self.map.simulate_memory_damage(key, value)
    }

    /// How many records are quarantined now.
    pub fn quarantined_count(&self) -> usize {
        self.quarantine.len()
    }

    /// The stored copy of `key`, which was found damaged in memory, as the
    /// store read it back (`None`: there is none, or it could not be read).
    /// If it matches its check it is merged like a peer's entry: the
    /// greater stamp wins, and no floor applies (the key's record was lost
    /// here, not deleted).
    pub fn read_back(&mut self, key: &Key, found: Option<Loaded>, now_ms: u64) {
        self.observe_time(now_ms);
        if self.reading_back.remove(key) {
            if let Some(Loaded::Record(k, r)) = found {
                let intact = k == *key && Check::of(k.as_str(), &r.entry) == r.check;
                if intact && self.quarantined(k.as_str()) {
                    let stamp = r.entry.stamp;
                    if self.merge_entry(None, k.clone(), r.entry, Hlc::ZERO, now_ms) {
                        self.metrics.records_read_back += 1;
                    }
                    self.resolve_key(&k, Resolution::ReadBack { stamp });
                }
            }
            self.check_recovered();
        }
        self.commit();
    }

    /// A merged or written entry ends the quarantine of its key.
    pub(super) fn resolve_key(&mut self, key: &Key, how: Resolution) {
        if self.quarantine.is_empty() {
            return;
        }
        if self.quarantine.remove(key.as_str().as_bytes()).is_some() {
            self.report_resolved(key.to_string(), how);
        }
    }

    pub(super) fn report_resolved(&mut self, key: String, how: Resolution) {
        self.metrics.records_repaired += 1;
        self.staged
            .push(Output::Event(Event::RecordRepaired { key, how }));
    }
}

/// Most quarantine events reported at once after a restart (the rest are counted).
const QUARANTINE_EVENTS_MAX: usize = 64;
