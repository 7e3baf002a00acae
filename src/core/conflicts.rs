//! The conflict log: the bounded record of writes that replaced a
//! concurrent write of another node (last-writer-wins), kept for operators
//! (`/v1/conflicts`) and made durable by the replica.

use std::collections::VecDeque;

use bytes::Bytes;

use super::types::{Key, Stamp};

/// Default number of conflicts kept.
pub const CONFLICTS_MAX_DEFAULT: usize = 1024;
/// Largest losing value the conflict log keeps a copy of; larger ones are
/// recorded without their value.
pub const CONFLICT_VALUE_BYTES_MAX: usize = 4096;

/// One recorded conflict: a write replaced a concurrent write of another node.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Conflict {
    /// The key both writes were to.
    pub key: Key,
    /// The stamp of the write that won and is kept.
    pub winner: Stamp,
    /// The stamp of the concurrent write that lost.
    pub loser: Stamp,
    /// The losing value, if it was a value of at most [`CONFLICT_VALUE_BYTES_MAX`] bytes.
    pub loser_value: Option<Bytes>,
    /// The losing write was a delete.
    pub loser_was_tombstone: bool,
    /// The local index of the change that resolved it.
    pub index: u64,
    /// For a document: the field both writes set, as a JSON pointer
    /// (`loser_value` then holds the losing field's JSON); `None` when
    /// whole values met.
    pub path: Option<String>,
}

/// A conflict as stored before documents existed (no `path`): how older
/// stores' conflicts read back.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ConflictBeforeDocs {
    key: Key,
    winner: Stamp,
    loser: Stamp,
    loser_value: Option<Bytes>,
    loser_was_tombstone: bool,
    index: u64,
}

impl From<ConflictBeforeDocs> for Conflict {
    fn from(c: ConflictBeforeDocs) -> Conflict {
        Conflict {
            key: c.key,
            winner: c.winner,
            loser: c.loser,
            loser_value: c.loser_value,
            loser_was_tombstone: c.loser_was_tombstone,
            index: c.index,
            path: None,
        }
    }
}

/// A bounded log of conflicts, oldest dropped first. Conflicts recorded
/// since the last [`ConflictLog::take_fresh`] are kept aside as well (as
/// many as the log holds), to be made durable.
#[derive(Debug, Clone)]
pub struct ConflictLog {
    entries: VecDeque<Conflict>,
    max: usize,
    total: u64,
    fresh: VecDeque<Conflict>,
}

impl ConflictLog {
    /// An empty log that keeps at most `max` conflicts (0: keeps none, only counts them).
    pub fn new(max: usize) -> ConflictLog {
        ConflictLog {
            entries: VecDeque::new(),
            max,
            total: 0,
            fresh: VecDeque::new(),
        }
    }

    pub(crate) fn push(&mut self, c: Conflict) {
        self.total += 1;
        if self.max == 0 {
            return;
        }
        if self.entries.len() == self.max {
            self.entries.pop_front();
        }
        if self.fresh.len() == self.max {
            self.fresh.pop_front();
        }
        self.fresh.push_back(c.clone());
        self.entries.push_back(c);
    }

    /// The conflicts recorded since the last call, oldest first, and the
    /// total count after them.
    pub fn take_fresh(&mut self) -> (Vec<Conflict>, u64) {
        (self.fresh.drain(..).collect(), self.total)
    }

    /// Puts back the conflicts read from durable state (oldest first) and
    /// the total count of conflicts ever recorded.
    pub fn restore(&mut self, kept: impl IntoIterator<Item = Conflict>, total: u64) {
        for c in kept {
            if self.entries.len() == self.max {
                self.entries.pop_front();
            }
            if self.max > 0 {
                self.entries.push_back(c);
            }
        }
        self.total = total.max(self.entries.len() as u64);
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
