//! `store`: durable state.
//!
//! Owns the [`Store`] trait — load the state a replica restarts from, commit
//! many [`PersistBatch`]es atomically and durably as one transaction (group
//! commit: one fsync, then every write in it may be acknowledged), keep the
//! node id that is created once, and reopen after a failed commit — with a
//! redb implementation ([`RedbStore`], `redb.rs`), an in-memory one
//! ([`MemoryStore`], `memory.rs`) and a wrapper that injects disk faults for
//! tests ([`faults`]). Stores only read and write bytes: what a damaged
//! record means is the replica's to decide.

pub mod faults;
mod memory;
mod redb;

use std::path::PathBuf;

use thiserror::Error;

use crate::core::types::{Key, NodeId};
use crate::sync::{DurableState, Loaded, PersistBatch};

pub use self::redb::{RedbStore, REDB_CACHE_BYTES};
pub use memory::MemoryStore;

/// Whether a commit waits for the disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Durability {
    /// Every commit is on disk (fsync) before it returns (the default).
    #[default]
    Immediate,
    /// Commits stay in memory until a later durable commit: for ephemeral
    /// edge use only. A crash loses them, acknowledged or not.
    None,
}

/// Why the store failed. A failed commit never leaves half of itself
/// visible: after a reopen the store holds either the state before it or
/// all of it (a commit that failed may still turn out durable, so batches
/// are written to be applied twice safely).
#[derive(Debug, Error)]
pub enum StoreError {
    /// redb failed for a reason other than damage: I/O (a full disk among
    /// them, see [`StoreError::is_disk_full`]), a closed database, or
    /// another redb error.
    #[error("database {path}: {source}")]
    Database {
        /// The database file.
        path: PathBuf,
        /// redb's error.
        #[source]
        source: Box<::redb::Error>,
    },
    /// The file cannot be read as a store: empty, damaged pages, a meta
    /// table that fails its check, or redb failing on it.
    #[error("the store {path} is damaged: {reason}")]
    Damaged {
        /// The database file.
        path: PathBuf,
        /// What was found wrong.
        reason: String,
    },
    /// The store already records another node id than the one being set.
    #[error("the store in {path} belongs to node {found}, not {expected}")]
    WrongNode {
        /// The database file.
        path: PathBuf,
        /// The node id being set.
        expected: NodeId,
        /// The node id the store holds.
        found: NodeId,
    },
    /// A fault injected by [`faults::StoreFaults`].
    #[error("injected: {0}")]
    Injected(#[source] std::io::Error),
}

impl StoreError {
    /// The I/O error underneath, if any.
    pub fn io(&self) -> Option<&std::io::Error> {
        match self {
            StoreError::Database { source, .. } => match &**source {
                ::redb::Error::Io(e) => Some(e),
                _ => None,
            },
            StoreError::Injected(e) => Some(e),
            _ => None,
        }
    }

    /// The disk (or the user's quota) is full: the commit can succeed once
    /// space returns.
    pub fn is_disk_full(&self) -> bool {
        self.io().is_some_and(|e| {
            e.kind() == std::io::ErrorKind::StorageFull
                || matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
        })
    }
}

/// Records [`Store::load_records`] hands over at a time.
pub const LOAD_CHUNK_RECORDS: usize = 4096;

/// Durable state of one node.
pub trait Store: Send + Sync {
    /// The state to restart from; `node` is `NodeId(0)` if none was ever set.
    fn load(&self) -> Result<DurableState, StoreError> {
        let mut state = self.load_meta()?;
        let mut loaded = Vec::new();
        self.load_records(&mut |chunk| {
            loaded.extend(chunk);
            true
        })?;
        for l in loaded {
            match l {
                Loaded::Record(k, r) => {
                    state.records.insert(k, r);
                }
                Loaded::Damaged(d) => state.damaged.push(d),
            }
        }
        Ok(state)
    }
    /// The state to restart from without its records.
    fn load_meta(&self) -> Result<DurableState, StoreError>;
    /// Hands the records to `sink` in key order, in chunks of at most
    /// [`LOAD_CHUNK_RECORDS`], as they are read; stops early when `sink`
    /// returns false. Records are decoded, not verified: a record that does
    /// not decode comes as [`Loaded::Damaged`].
    fn load_records(&self, sink: &mut dyn FnMut(Vec<Loaded>) -> bool) -> Result<(), StoreError>;
    /// `key`'s record as stored, decoded but not verified (`None` if there
    /// is none): a replica reads back a record it found damaged in memory.
    fn load_record(&self, key: &Key) -> Result<Option<Loaded>, StoreError>;
    /// How many records [`Store::load_records`] will hand over.
    fn records_len(&self) -> Result<u64, StoreError>;
    /// Writes `batches`, in order, as one atomic transaction. When it returns
    /// `Ok` (and the durability is immediate) all of them are on disk.
    fn commit(&mut self, batches: &[PersistBatch]) -> Result<(), StoreError>;
    /// Records the node id; refuses to change it once set.
    fn set_node(&mut self, node: NodeId) -> Result<(), StoreError>;
    /// Drops and reopens the underlying file after a failed commit (redb
    /// refuses every transaction after an I/O error until it is reopened).
    fn reopen(&mut self) -> Result<(), StoreError> {
        Ok(())
    }
}
