//! `store`: durable state.
//!
//! Owns the [`Store`] trait — load the state a replica restarts from, commit
//! many [`PersistBatch`]es atomically and durably as one transaction (group
//! commit: one fsync, then every write in it may be acknowledged), and keep
//! the node id that is created once — with a redb implementation
//! ([`RedbStore`]) and an in-memory one ([`MemoryStore`]).
//!
//! Layout in redb: table `entries` (key → record), table `peers` (node id →
//! progress) and table `meta` (index, clock, floors, node id). Records are
//! postcard behind a format byte, so a later format can be told apart.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::core::hlc::Hlc;
use crate::core::types::{Entry, Key, NodeId};
use crate::sync::{DurableState, PeerProgress, PersistBatch, StoredRecord};

const ENTRIES: TableDefinition<&str, &[u8]> = TableDefinition::new("entries");
const PEERS: TableDefinition<u64, &[u8]> = TableDefinition::new("peers");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// The first byte of every stored record and progress value.
const FORMAT: u8 = 1;

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

/// Why the store failed. Nothing half-written is ever visible: a failed
/// commit leaves the previous state.
#[derive(Debug, Error)]
pub enum StoreError {
    #[error("database {path}: {source}")]
    Database {
        path: PathBuf,
        #[source]
        source: Box<redb::Error>,
    },
    #[error("corrupt {what} in {path}: {reason}")]
    Corrupt {
        path: PathBuf,
        what: String,
        reason: String,
    },
    #[error("the store in {path} belongs to node {found}, not {expected}")]
    WrongNode {
        path: PathBuf,
        expected: NodeId,
        found: NodeId,
    },
}

/// Records [`Store::load_records`] hands over at a time.
pub const LOAD_CHUNK_RECORDS: usize = 4096;

/// Durable state of one node.
pub trait Store: Send + Sync {
    /// The state to restart from; `node` is `NodeId(0)` if none was ever set.
    fn load(&self) -> Result<DurableState, StoreError> {
        let mut state = self.load_meta()?;
        let mut records = Vec::new();
        self.load_records(&mut |chunk| {
            records.extend(chunk);
            true
        })?;
        state.records = records.into_iter().collect();
        Ok(state)
    }
    /// The state to restart from without its records, and how many records
    /// there are.
    fn load_meta(&self) -> Result<DurableState, StoreError>;
    /// Hands the records to `sink` in key order, in chunks of at most
    /// [`LOAD_CHUNK_RECORDS`], as they are read; stops early when `sink`
    /// returns false.
    fn load_records(
        &self,
        sink: &mut dyn FnMut(Vec<(Key, StoredRecord)>) -> bool,
    ) -> Result<(), StoreError>;
    /// How many records [`Store::load_records`] will hand over.
    fn records_len(&self) -> Result<u64, StoreError>;
    /// Writes `batches`, in order, as one atomic transaction. When it returns
    /// `Ok` (and the durability is immediate) all of them are on disk.
    fn commit(&mut self, batches: &[PersistBatch]) -> Result<(), StoreError>;
    /// Records the node id; refuses to change it once set.
    fn set_node(&mut self, node: NodeId) -> Result<(), StoreError>;
}

/// A store that forgets everything when dropped: tests, and embedded use
/// without a disk.
#[derive(Debug, Default, Clone)]
pub struct MemoryStore {
    state: DurableState,
}

impl MemoryStore {
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }
}

impl Store for MemoryStore {
    fn load(&self) -> Result<DurableState, StoreError> {
        Ok(self.state.clone())
    }

    fn load_meta(&self) -> Result<DurableState, StoreError> {
        let s = &self.state;
        Ok(DurableState {
            node: s.node,
            records: BTreeMap::new(),
            index: s.index,
            clock: s.clock,
            gc_floor: s.gc_floor,
            horizon_floor: s.horizon_floor,
            synced_ms: s.synced_ms,
            peers: s.peers.clone(),
        })
    }

    fn load_records(
        &self,
        sink: &mut dyn FnMut(Vec<(Key, StoredRecord)>) -> bool,
    ) -> Result<(), StoreError> {
        let mut it = self.state.records.iter();
        loop {
            let chunk: Vec<_> = it
                .by_ref()
                .take(LOAD_CHUNK_RECORDS)
                .map(|(k, r)| (k.clone(), r.clone()))
                .collect();
            if chunk.is_empty() || !sink(chunk) {
                return Ok(());
            }
        }
    }

    fn records_len(&self) -> Result<u64, StoreError> {
        Ok(self.state.records.len() as u64)
    }

    fn commit(&mut self, batches: &[PersistBatch]) -> Result<(), StoreError> {
        for b in batches {
            self.state.apply(b);
        }
        Ok(())
    }

    fn set_node(&mut self, node: NodeId) -> Result<(), StoreError> {
        if self.state.node != NodeId(0) && self.state.node != node {
            return Err(StoreError::WrongNode {
                path: PathBuf::from(":memory:"),
                expected: node,
                found: self.state.node,
            });
        }
        self.state.node = node;
        Ok(())
    }
}

/// The on-disk form of a record.
#[derive(Serialize, Deserialize)]
struct DiskRecord {
    entry: Entry,
    create_index: u64,
    modify_index: u64,
}

#[derive(Serialize, Deserialize)]
struct DiskProgress {
    applied: u64,
    received: u64,
    name: String,
    region: String,
    api: String,
}

/// redb's page cache. The whole state is in memory already (the map), so
/// the cache only serves the B-tree pages that commits touch; redb's default
/// (1 GiB) would keep a second copy of the state after a restart.
pub const REDB_CACHE_BYTES: usize = 64 << 20;

/// A store in one redb file.
pub struct RedbStore {
    db: Database,
    path: PathBuf,
    durability: Durability,
}

impl RedbStore {
    /// Opens (or creates) the database file at `path`.
    pub fn open(path: &Path, durability: Durability) -> Result<RedbStore, StoreError> {
        let db = Database::builder()
            .set_cache_size(REDB_CACHE_BYTES)
            .create(path)
            .map_err(|e| db_err(path, e))?;
        let mut store = RedbStore {
            db,
            path: path.to_path_buf(),
            durability,
        };
        // Create the tables, so that reads of a new store find them.
        store.write(|_, _, _| Ok(()))?;
        Ok(store)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn err(&self, e: impl Into<redb::Error>) -> StoreError {
        db_err(&self.path, e)
    }

    fn corrupt(&self, what: String, reason: impl ToString) -> StoreError {
        StoreError::Corrupt {
            path: self.path.clone(),
            what,
            reason: reason.to_string(),
        }
    }

    /// Runs `f` in one write transaction and commits it with the configured durability.
    fn write(
        &mut self,
        f: impl FnOnce(
            &mut redb::Table<&str, &[u8]>,
            &mut redb::Table<u64, &[u8]>,
            &mut redb::Table<&str, u64>,
        ) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let mut tx = self.db.begin_write().map_err(|e| self.err(e))?;
        let durability = match self.durability {
            Durability::Immediate => redb::Durability::Immediate,
            Durability::None => redb::Durability::None,
        };
        tx.set_durability(durability).map_err(|e| self.err(e))?;
        {
            let mut entries = tx.open_table(ENTRIES).map_err(|e| self.err(e))?;
            let mut peers = tx.open_table(PEERS).map_err(|e| self.err(e))?;
            let mut meta = tx.open_table(META).map_err(|e| self.err(e))?;
            f(&mut entries, &mut peers, &mut meta)?;
        }
        tx.commit().map_err(|e| self.err(e))
    }
}

fn db_err(path: &Path, e: impl Into<redb::Error>) -> StoreError {
    StoreError::Database {
        path: path.to_path_buf(),
        source: Box::new(e.into()),
    }
}

fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    let mut out = vec![FORMAT];
    // Serializing plain data into a Vec cannot fail.
    out.extend(postcard::to_allocvec(v).unwrap_or_default());
    out
}

fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, String> {
    match bytes.split_first() {
        Some((&FORMAT, rest)) => postcard::from_bytes(rest).map_err(|e| e.to_string()),
        Some((f, _)) => Err(format!("unknown format {f}")),
        None => Err("empty value".to_string()),
    }
}

impl Store for RedbStore {
    fn load_meta(&self) -> Result<DurableState, StoreError> {
        let tx = self.db.begin_read().map_err(|e| self.err(e))?;
        let mut state = DurableState::default();
        let meta = tx.open_table(META).map_err(|e| self.err(e))?;
        let get = |name: &str| -> Result<u64, StoreError> {
            Ok(meta
                .get(name)
                .map_err(|e| self.err(e))?
                .map_or(0, |v| v.value()))
        };
        state.node = NodeId(get("node")?);
        state.index = get("index")?;
        state.clock = Hlc(get("clock")?);
        state.gc_floor = Hlc(get("gc_floor")?);
        state.horizon_floor = Hlc(get("horizon_floor")?);
        state.synced_ms = get("synced_ms")?;
        let peers = tx.open_table(PEERS).map_err(|e| self.err(e))?;
        for item in peers.iter().map_err(|e| self.err(e))? {
            let (k, v) = item.map_err(|e| self.err(e))?;
            let p: DiskProgress = decode(v.value())
                .map_err(|e| self.corrupt(format!("progress of peer {:016x}", k.value()), e))?;
            state.peers.insert(
                NodeId(k.value()),
                PeerProgress {
                    applied: p.applied,
                    received: Hlc(p.received),
                    name: p.name,
                    region: p.region,
                    api: p.api,
                },
            );
        }
        Ok(state)
    }

    fn load_records(
        &self,
        sink: &mut dyn FnMut(Vec<(Key, StoredRecord)>) -> bool,
    ) -> Result<(), StoreError> {
        let tx = self.db.begin_read().map_err(|e| self.err(e))?;
        let entries = tx.open_table(ENTRIES).map_err(|e| self.err(e))?;
        let mut chunk = Vec::with_capacity(LOAD_CHUNK_RECORDS);
        for item in entries.iter().map_err(|e| self.err(e))? {
            let (k, v) = item.map_err(|e| self.err(e))?;
            let key =
                Key::new(k.value()).map_err(|e| self.corrupt(format!("key {:?}", k.value()), e))?;
            let r: DiskRecord =
                decode(v.value()).map_err(|e| self.corrupt(format!("record of {key:?}"), e))?;
            chunk.push((
                key,
                StoredRecord {
                    entry: r.entry,
                    create_index: r.create_index,
                    modify_index: r.modify_index,
                },
            ));
            if chunk.len() == LOAD_CHUNK_RECORDS {
                let full = std::mem::replace(&mut chunk, Vec::with_capacity(LOAD_CHUNK_RECORDS));
                if !sink(full) {
                    return Ok(());
                }
            }
        }
        if !chunk.is_empty() {
            sink(chunk);
        }
        Ok(())
    }

    fn records_len(&self) -> Result<u64, StoreError> {
        let tx = self.db.begin_read().map_err(|e| self.err(e))?;
        let entries = tx.open_table(ENTRIES).map_err(|e| self.err(e))?;
        entries.len().map_err(|e| self.err(e))
    }

    fn commit(&mut self, batches: &[PersistBatch]) -> Result<(), StoreError> {
        if batches.is_empty() {
            return Ok(());
        }
        let path = self.path.clone();
        let err = move |e: redb::StorageError| db_err(&path, e);
        self.write(|entries, peers, meta| {
            let mut max = |name: &str, v: u64| -> Result<(), StoreError> {
                let old = meta.get(name).map_err(&err)?.map_or(0, |g| g.value());
                if v > old {
                    meta.insert(name, v).map_err(&err)?;
                }
                Ok(())
            };
            for b in batches {
                max("index", b.index)?;
                max("clock", b.clock.0)?;
                max("gc_floor", b.gc_floor.0)?;
                max("horizon_floor", b.horizon_floor.0)?;
                max("synced_ms", b.synced_ms)?;
            }
            for b in batches {
                for (k, r) in &b.records {
                    match r {
                        Some(r) => {
                            let d = DiskRecord {
                                entry: r.entry.clone(),
                                create_index: r.create_index,
                                modify_index: r.modify_index,
                            };
                            entries
                                .insert(k.as_str(), encode(&d).as_slice())
                                .map_err(&err)?;
                        }
                        None => {
                            entries.remove(k.as_str()).map_err(&err)?;
                        }
                    }
                }
                for (id, p) in &b.peers {
                    let d = DiskProgress {
                        applied: p.applied,
                        received: p.received.0,
                        name: p.name.clone(),
                        region: p.region.clone(),
                        api: p.api.clone(),
                    };
                    peers.insert(id.0, encode(&d).as_slice()).map_err(&err)?;
                }
            }
            Ok(())
        })
    }

    fn set_node(&mut self, node: NodeId) -> Result<(), StoreError> {
        let found = self.load()?.node;
        if found != NodeId(0) && found != node {
            return Err(StoreError::WrongNode {
                path: self.path.clone(),
                expected: node,
                found,
            });
        }
        let path = self.path.clone();
        self.write(|_, _, meta| {
            meta.insert("node", node.0).map_err(|e| db_err(&path, e))?;
            Ok(())
        })
    }
}
