//! The redb store: a node's durable state in one file.
//!
//! Layout: table `records` (stored key bytes → record), table `peers`
//! (node id → progress) and table `meta` (index, clock, floors, node id, and
//! a check over them). A record is a format byte (2), the record's
//! [`Check`] (its key hash and the first 16 bytes of its entry hash, as the
//! replica computed them when the entry arrived), 4 bytes that check its
//! two local indexes, and the postcard of the entry with its indexes
//! (indexes that fail their check read back as 0, which the replica
//! renumbers: they are local bookkeeping); a peer's progress is a format byte (2), 16 bytes
//! of blake3 over its id and payload, and the payload. The store only
//! decodes: the replica verifies each record against its check when it
//! restores (see `sync::replica::integrity`).
//!
//! Damage (design §3, "Integrity"). redb checks its page checksums only
//! when it recovers from an unclean shutdown (or when asked to on open),
//! never on a read, and a damaged page can make it panic. So opening and
//! reading are guarded: an empty file, an error that says the file is
//! damaged, or a panic inside redb make the whole store
//! [`StoreError::Damaged`], and the node moves the file aside and rebuilds
//! from a peer. A record whose bytes do not decode is handed over as
//! [`Loaded::Damaged`]; a meta table whose check fails makes the store
//! damaged; a peer's progress whose check fails is dropped (the replica
//! asks that peer for its feed again: safe, only slower).
//!
//! Stores written by format 1 (table `entries`, keyed by UTF-8 strings,
//! records without checks) are migrated on open, once.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use redb::{
    Database, DatabaseError, ReadableDatabase, ReadableTable, ReadableTableMetadata, StorageError,
    TableDefinition, TableError,
};
use serde::{Deserialize, Serialize};

use super::{Durability, Store, StoreError, LOAD_CHUNK_RECORDS};
use crate::core::conflicts::{Conflict, ConflictBeforeDocs};
use crate::core::hlc::Hlc;
use crate::core::types::{Check, Entry, Key, NodeId};
use crate::sync::{
    DamagedRecord, DurableState, ForgottenMember, Loaded, PeerProgress, PersistBatch, Recovery,
    StoredRecord, CONFLICTS_STORED_MAX,
};

const RECORDS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("records");
/// Format 1 records (no check), keyed by strings: migrated on open.
const LEGACY_ENTRIES: TableDefinition<&str, &[u8]> = TableDefinition::new("entries");
const PEERS: TableDefinition<u64, &[u8]> = TableDefinition::new("peers");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// The newest conflicts, by their number (1, 2, ...).
const CONFLICTS: TableDefinition<u64, &[u8]> = TableDefinition::new("conflicts");
/// The members the cluster forgot, by node id (see `replica::members`).
const FORGOTTEN: TableDefinition<u64, &[u8]> = TableDefinition::new("forgotten");
/// Postcard only (format 1: legacy records, and peers written by it).
const FORMAT_PLAIN: u8 = 1;
/// A check, then postcard.
const FORMAT_CHECKED: u8 = 2;
/// Bytes of a stored record before its postcard: format, key hash, part,
/// index check.
const RECORD_HEADER_BYTES: usize = 1 + 8 + 16 + 4;
/// The meta values the meta check covers, in order.
const META_NAMES: [&str; 7] = [
    "node",
    "index",
    "clock",
    "gc_floor",
    "horizon_floor",
    "synced_ms",
    "conflicts_total",
];
const META_CHECK: &str = "check";
/// The recovery state ([`Recovery`]); it enters the meta check only when
/// set, so stores written before it keep their checks.
const META_RECOVERY: &str = "recovery";
/// The clock of the latest forget of this node it resynced after; in the
/// meta check only when set, as the recovery state.
const META_REJOINED: &str = "rejoined";
/// The clock this node last left at; in the meta check only when set.
const META_LEFT: &str = "left";

/// redb's page cache. The whole state is in memory already (the map), so
/// the cache only serves the B-tree pages that commits touch; redb's default
/// (1 GiB) would keep a second copy of the state after a restart. 16 MiB
/// holds the branch pages of tens of millions of records; a leaf a commit
/// misses is read from the kernel's page cache. (64 MiB was 67 B per key of
/// a 1M-key node's resident memory, filled by the restart's scan, for no
/// measured gain in write throughput.)
pub const REDB_CACHE_BYTES: usize = 16 << 20;

/// The on-disk form of a record, after its check.
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

#[derive(Serialize, Deserialize)]
struct DiskForgotten {
    at: u64,
    name: String,
    region: String,
    left: bool,
    held: u64,
    settled: bool,
}

fn encode_forgotten(id: u64, f: &ForgottenMember) -> Vec<u8> {
    let d = DiskForgotten {
        at: f.at.0,
        name: f.name.clone(),
        region: f.region.clone(),
        left: f.left,
        held: f.held.0,
        settled: f.settled,
    };
    encode_checked(id, &d)
}

fn decode_forgotten(id: u64, bytes: &[u8]) -> Result<ForgottenMember, String> {
    let payload = checked_payload(id, bytes)?;
    let d: DiskForgotten = postcard::from_bytes(payload).map_err(|e| e.to_string())?;
    Ok(ForgottenMember {
        at: Hlc(d.at),
        name: d.name,
        region: d.region,
        left: d.left,
        held: Hlc(d.held),
        settled: d.settled,
    })
}

/// A store in one redb file.
pub struct RedbStore {
    db: Option<Database>,
    path: PathBuf,
    durability: Durability,
    /// Verify every page checksum when (re)opening.
    check_on_open: bool,
}

/// The first 8 bytes of blake3 over the meta values, in [`META_NAMES`]
/// order, then the recovery state if it is set.
fn meta_check(values: &[u64; 7], recovery: u64, rejoined: u64, left: u64) -> u64 {
    let mut h = blake3::Hasher::new();
    h.update(b"meridian-meta");
    for v in values {
        h.update(&v.to_le_bytes());
    }
    if recovery != 0 {
        h.update(b"recovery");
        h.update(&recovery.to_le_bytes());
    }
    if rejoined != 0 {
        h.update(b"rejoined");
        h.update(&rejoined.to_le_bytes());
    }
    if left != 0 {
        h.update(b"left");
        h.update(&left.to_le_bytes());
    }
    let mut b = [0u8; 8];
    b.copy_from_slice(&h.finalize().as_bytes()[..8]);
    u64::from_le_bytes(b)
}

fn progress_check(id: u64, payload: &[u8]) -> [u8; 16] {
    let mut h = blake3::Hasher::new();
    h.update(&id.to_le_bytes());
    h.update(payload);
    let mut b = [0u8; 16];
    b.copy_from_slice(&h.finalize().as_bytes()[..16]);
    b
}

/// A stable mix of a record's part and its two indexes (splitmix64
/// steps): catches damage to the indexes, which the entry check does not
/// cover.
fn index_check(part: &[u8; 16], create_index: u64, modify_index: u64) -> u32 {
    fn mix(mut z: u64) -> u64 {
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    let mut lo = [0u8; 8];
    lo.copy_from_slice(&part[..8]);
    let mut h = mix(u64::from_le_bytes(lo) ^ 0x6d65_7269_6469_616e);
    h = mix(h ^ create_index);
    h = mix(h ^ modify_index.rotate_left(17));
    (h >> 32) as u32
}

fn encode_record(r: &StoredRecord) -> Vec<u8> {
    let d = DiskRecord {
        entry: r.entry.clone(),
        create_index: r.create_index,
        modify_index: r.modify_index,
    };
    let mut out = Vec::with_capacity(RECORD_HEADER_BYTES + r.entry.value_len() + 64);
    out.push(FORMAT_CHECKED);
    out.extend_from_slice(&r.check.key_hash.to_le_bytes());
    out.extend_from_slice(&r.check.part);
    out.extend_from_slice(
        &index_check(&r.check.part, r.create_index, r.modify_index).to_le_bytes(),
    );
    // Serializing plain data into a Vec cannot fail.
    out.extend(postcard::to_allocvec(&d).unwrap_or_default());
    out
}

/// A stored record as it reads back; its check is not verified here.
fn decode_record(raw_key: &[u8], bytes: &[u8]) -> Loaded {
    let damaged = |reason: String| {
        Loaded::Damaged(DamagedRecord {
            raw_key: raw_key.to_vec(),
            reason,
        })
    };
    let key = match Key::from_bytes(raw_key) {
        Ok(k) => k,
        Err(e) => return damaged(format!("the stored key is not a valid key: {e}")),
    };
    let Some((&format, rest)) = bytes.split_first() else {
        return damaged("the record is empty".to_string());
    };
    if format != FORMAT_CHECKED {
        return damaged(format!("unknown record format {format}"));
    }
    if rest.len() < RECORD_HEADER_BYTES - 1 {
        return damaged(format!("the record is {} bytes, too short", bytes.len()));
    }
    let (kh, rest) = rest.split_at(8);
    let (part, rest) = rest.split_at(16);
    let (ic, payload) = rest.split_at(4);
    let mut key_hash = [0u8; 8];
    key_hash.copy_from_slice(kh);
    let mut p = [0u8; 16];
    p.copy_from_slice(part);
    let mut icb = [0u8; 4];
    icb.copy_from_slice(ic);
    match postcard::from_bytes::<DiskRecord>(payload) {
        Ok(d) => {
            // Indexes that fail their check read back as 0: renumbered.
            let (create_index, modify_index) =
                if u32::from_le_bytes(icb) == index_check(&p, d.create_index, d.modify_index) {
                    (d.create_index, d.modify_index)
                } else {
                    (0, 0)
                };
            Loaded::Record(
                key,
                StoredRecord {
                    entry: d.entry,
                    create_index,
                    modify_index,
                    check: Check {
                        key_hash: u64::from_le_bytes(key_hash),
                        part: p,
                    },
                },
            )
        }
        Err(e) => damaged(format!("the record does not decode: {e}")),
    }
}

/// A conflict as stored: format, 16 bytes of blake3 over its number and
/// payload, the postcard payload.
fn encode_conflict(seq: u64, c: &Conflict) -> Vec<u8> {
    encode_checked(seq, c)
}

fn decode_conflict(seq: u64, bytes: &[u8]) -> Result<Conflict, String> {
    let payload = checked_payload(seq, bytes)?;
    // Conflicts stored before documents lack the trailing `path`.
    postcard::from_bytes(payload)
        .or_else(|e| {
            postcard::from_bytes::<ConflictBeforeDocs>(payload)
                .map(Conflict::from)
                .map_err(|_| e)
        })
        .map_err(|e| e.to_string())
}

/// A value as stored: format, 16 bytes of blake3 over its key and
/// payload, the postcard payload.
fn encode_checked<T: Serialize>(id: u64, value: &T) -> Vec<u8> {
    let payload = postcard::to_allocvec(value).unwrap_or_default();
    let mut out = vec![FORMAT_CHECKED];
    out.extend_from_slice(&progress_check(id, &payload));
    out.extend(payload);
    out
}

/// The payload of a value [`encode_checked`] wrote for key `id`, once its
/// check holds.
fn checked_payload(id: u64, bytes: &[u8]) -> Result<&[u8], String> {
    match bytes.split_first() {
        Some((&FORMAT_CHECKED, rest)) if rest.len() >= 16 => {
            let (check, payload) = rest.split_at(16);
            if check != progress_check(id, payload) {
                return Err("its check does not match".to_string());
            }
            Ok(payload)
        }
        Some((f, _)) => Err(format!("unknown format {f}")),
        None => Err("empty value".to_string()),
    }
}

fn encode_progress(id: u64, p: &PeerProgress) -> Vec<u8> {
    let d = DiskProgress {
        applied: p.applied,
        received: p.received.0,
        name: p.name.clone(),
        region: p.region.clone(),
        api: p.api.clone(),
    };
    encode_checked(id, &d)
}

fn decode_progress(id: u64, bytes: &[u8]) -> Result<PeerProgress, String> {
    let payload = match bytes.split_first() {
        Some((&FORMAT_PLAIN, payload)) => payload,
        _ => checked_payload(id, bytes)?,
    };
    let d: DiskProgress = postcard::from_bytes(payload).map_err(|e| e.to_string())?;
    Ok(PeerProgress {
        applied: d.applied,
        received: Hlc(d.received),
        name: d.name,
        region: d.region,
        api: d.api,
    })
}

/// Whether an error from opening or reading means the file is damaged
/// (rather than, say, out of space or locked).
fn is_damage(e: &StorageError) -> bool {
    match e {
        StorageError::Corrupted(_) => true,
        StorageError::Io(io) => matches!(
            io.kind(),
            std::io::ErrorKind::InvalidData | std::io::ErrorKind::UnexpectedEof
        ),
        _ => false,
    }
}

fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic inside redb".to_string())
}

impl RedbStore {
    /// Opens (or creates) the database file at `path`. An existing file
    /// that is empty, or that redb finds damaged (or panics on), is
    /// [`StoreError::Damaged`]: it is left where it is for the caller.
    pub fn open(path: &Path, durability: Durability) -> Result<RedbStore, StoreError> {
        RedbStore::open_with(path, durability, false)
    }

    /// [`RedbStore::open`], verifying every page checksum first when
    /// `check_on_open` (about two reads of the whole file).
    pub fn open_with(
        path: &Path,
        durability: Durability,
        check_on_open: bool,
    ) -> Result<RedbStore, StoreError> {
        let mut store = RedbStore {
            db: None,
            path: path.to_path_buf(),
            durability,
            check_on_open,
        };
        store.reopen()?;
        Ok(store)
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn damaged(&self, reason: impl Into<String>) -> StoreError {
        StoreError::Damaged {
            path: self.path.clone(),
            reason: reason.into(),
        }
    }

    fn err(&self, e: impl Into<redb::Error>) -> StoreError {
        let e: redb::Error = e.into();
        match &e {
            redb::Error::Corrupted(_) => self.damaged(e.to_string()),
            redb::Error::Io(io)
                if matches!(
                    io.kind(),
                    std::io::ErrorKind::InvalidData | std::io::ErrorKind::UnexpectedEof
                ) =>
            {
                self.damaged(e.to_string())
            }
            _ => StoreError::Database {
                path: self.path.clone(),
                source: Box::new(e),
            },
        }
    }

    fn db(&self) -> Result<&Database, StoreError> {
        self.db.as_ref().ok_or_else(|| StoreError::Database {
            path: self.path.clone(),
            source: Box::new(redb::Error::DatabaseClosed),
        })
    }

    /// Runs `f` with a guard against redb panicking on a damaged file.
    fn guarded<T>(&self, f: impl FnOnce() -> Result<T, StoreError>) -> Result<T, StoreError> {
        match catch_unwind(AssertUnwindSafe(f)) {
            Ok(r) => r,
            Err(p) => Err(self.damaged(format!("redb failed reading it: {}", panic_text(&*p)))),
        }
    }

    fn open_database(&self) -> Result<Database, StoreError> {
        if let Ok(meta) = std::fs::metadata(&self.path) {
            if meta.len() == 0 {
                return Err(self.damaged("the database file is empty (0 bytes)"));
            }
        }
        self.guarded(|| {
            let mut b = Database::builder();
            b.set_cache_size(REDB_CACHE_BYTES);
            if self.check_on_open {
                b.set_check_integrity_on_open(true);
            }
            b.create(&self.path).map_err(|e| match e {
                DatabaseError::Storage(s) if is_damage(&s) => self.damaged(s.to_string()),
                DatabaseError::UpgradeRequired(v) => {
                    self.damaged(format!("redb file format {v} needs an upgrade"))
                }
                DatabaseError::RepairAborted => self.damaged("redb's repair was aborted"),
                other => self.err(other),
            })
        })
    }

    /// Creates the tables a new store lacks and migrates a format 1 store;
    /// writes nothing when the store is current (so a reopen after a full
    /// disk needs no space).
    fn prepare(&self, db: &Database) -> Result<(), StoreError> {
        let current = {
            let tx = db.begin_read().map_err(|e| self.err(e))?;
            let records = match tx.open_table(RECORDS) {
                Ok(_) => true,
                Err(TableError::TableDoesNotExist(_)) => false,
                Err(e) => return Err(self.err(e)),
            };
            let legacy = match tx.open_table(LEGACY_ENTRIES) {
                Ok(_) => true,
                Err(TableError::TableDoesNotExist(_)) => false,
                Err(e) => return Err(self.err(e)),
            };
            records && !legacy
        };
        if current {
            return Ok(());
        }
        let mut tx = db.begin_write().map_err(|e| self.err(e))?;
        tx.set_durability(redb::Durability::Immediate)
            .map_err(|e| self.err(e))?;
        {
            let mut records = tx.open_table(RECORDS).map_err(|e| self.err(e))?;
            tx.open_table(PEERS).map_err(|e| self.err(e))?;
            tx.open_table(META).map_err(|e| self.err(e))?;
            let legacy = tx.open_table(LEGACY_ENTRIES).map_err(|e| self.err(e))?;
            for item in legacy.iter().map_err(|e| self.err(e))? {
                let (k, v) = item.map_err(|e| self.err(e))?;
                let key = k.value();
                let bytes = v.value();
                let migrated = match bytes.split_first() {
                    Some((&FORMAT_PLAIN, payload)) => {
                        postcard::from_bytes::<DiskRecord>(payload).ok().map(|d| {
                            encode_record(&StoredRecord {
                                check: Check::of(key, &d.entry),
                                entry: d.entry,
                                create_index: d.create_index,
                                modify_index: d.modify_index,
                            })
                        })
                    }
                    _ => None,
                };
                // A format 1 record that does not decode is kept as it was:
                // it reads back damaged, and the replica repairs it.
                let out = migrated.unwrap_or_else(|| bytes.to_vec());
                records
                    .insert(key.as_bytes(), out.as_slice())
                    .map_err(|e| self.err(e))?;
            }
        }
        tx.delete_table(LEGACY_ENTRIES).map_err(|e| self.err(e))?;
        tx.commit().map_err(|e| self.err(e))
    }

    /// Runs `f` in one write transaction and commits it with the configured durability.
    fn write(
        &mut self,
        f: impl FnOnce(
            &mut redb::Table<&[u8], &[u8]>,
            &mut redb::Table<u64, &[u8]>,
            &mut redb::Table<&str, u64>,
            &mut redb::Table<u64, &[u8]>,
            &mut redb::Table<u64, &[u8]>,
        ) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let db = self.db()?;
        let mut tx = db.begin_write().map_err(|e| self.err(e))?;
        let durability = match self.durability {
            Durability::Immediate => redb::Durability::Immediate,
            Durability::None => redb::Durability::None,
        };
        tx.set_durability(durability).map_err(|e| self.err(e))?;
        {
            let mut records = tx.open_table(RECORDS).map_err(|e| self.err(e))?;
            let mut peers = tx.open_table(PEERS).map_err(|e| self.err(e))?;
            let mut meta = tx.open_table(META).map_err(|e| self.err(e))?;
            let mut conflicts = tx.open_table(CONFLICTS).map_err(|e| self.err(e))?;
            let mut forgotten = tx.open_table(FORGOTTEN).map_err(|e| self.err(e))?;
            f(
                &mut records,
                &mut peers,
                &mut meta,
                &mut conflicts,
                &mut forgotten,
            )?;
            let mut values = [0u64; 7];
            for (v, name) in values.iter_mut().zip(META_NAMES) {
                *v = meta
                    .get(name)
                    .map_err(|e| self.err(e))?
                    .map_or(0, |g| g.value());
            }
            let recovery = meta
                .get(META_RECOVERY)
                .map_err(|e| self.err(e))?
                .map_or(0, |g| g.value());
            let rejoined = meta
                .get(META_REJOINED)
                .map_err(|e| self.err(e))?
                .map_or(0, |g| g.value());
            let left = meta
                .get(META_LEFT)
                .map_err(|e| self.err(e))?
                .map_or(0, |g| g.value());
            meta.insert(META_CHECK, meta_check(&values, recovery, rejoined, left))
                .map_err(|e| self.err(e))?;
        }
        tx.commit().map_err(|e| self.err(e))
    }

    /// Damages the stored value of `key` for fault-injection tests: XORs
    /// `mask` into byte `at` of the value (modulo its length), leaving the
    /// stored check as it was, as a bit flip on the disk would. False if
    /// the key is absent or holds no value.
    #[doc(hidden)]
    pub fn damage_value(&mut self, key: &str, at: usize, mask: u8) -> Result<bool, StoreError> {
        self.rewrite_record(key, |bytes| {
            let Loaded::Record(_, mut r) = decode_record(key.as_bytes(), &bytes) else {
                return None;
            };
            let v = r.entry.value.as_mut().filter(|v| !v.is_empty())?;
            let mut value = v.to_vec();
            let i = at % value.len();
            value[i] ^= mask;
            *v = value.into();
            Some(encode_record(&r))
        })
    }

    /// Damages the stored bytes of `key` for fault-injection tests: XORs
    /// `mask` into the byte at `at` of the stored record (counted from the
    /// end when negative). False if the key is absent.
    #[doc(hidden)]
    pub fn damage_record(&mut self, key: &str, at: isize, mask: u8) -> Result<bool, StoreError> {
        self.rewrite_record(key, |mut bytes| {
            if bytes.is_empty() {
                return None;
            }
            let len = bytes.len() as isize;
            let i = if at < 0 { len + at } else { at }.clamp(0, len - 1) as usize;
            bytes[i] ^= mask;
            Some(bytes)
        })
    }

    /// Replaces `key`'s stored bytes with what `f` makes of them (tests);
    /// false if the key is absent or `f` declines.
    fn rewrite_record(
        &mut self,
        key: &str,
        f: impl FnOnce(Vec<u8>) -> Option<Vec<u8>>,
    ) -> Result<bool, StoreError> {
        let db = self.db()?;
        let tx = db.begin_write().map_err(|e| self.err(e))?;
        let done = {
            let mut records = tx.open_table(RECORDS).map_err(|e| self.err(e))?;
            let old = records
                .get(key.as_bytes())
                .map_err(|e| self.err(e))?
                .map(|v| v.value().to_vec());
            match old.and_then(f) {
                Some(bytes) => {
                    records
                        .insert(key.as_bytes(), bytes.as_slice())
                        .map_err(|e| self.err(e))?;
                    true
                }
                None => false,
            }
        };
        tx.commit().map_err(|e| self.err(e))?;
        Ok(done)
    }
}

impl Store for RedbStore {
    fn load_meta(&self) -> Result<DurableState, StoreError> {
        self.guarded(|| {
            let db = self.db()?;
            let tx = db.begin_read().map_err(|e| self.err(e))?;
            let mut state = DurableState::default();
            let meta = tx.open_table(META).map_err(|e| self.err(e))?;
            let get = |name: &str| -> Result<u64, StoreError> {
                Ok(meta
                    .get(name)
                    .map_err(|e| self.err(e))?
                    .map_or(0, |v| v.value()))
            };
            let mut values = [0u64; 7];
            for (v, name) in values.iter_mut().zip(META_NAMES) {
                *v = get(name)?;
            }
            let recovery = get(META_RECOVERY)?;
            let rejoined = get(META_REJOINED)?;
            let left = get(META_LEFT)?;
            // Stores written before the check have none.
            if let Some(stored) = meta.get(META_CHECK).map_err(|e| self.err(e))? {
                if stored.value() != meta_check(&values, recovery, rejoined, left) {
                    return Err(self.damaged(
                        "the meta table (index, clock, floors) does not match its check",
                    ));
                }
            }
            let [node, index, clock, gc_floor, horizon_floor, synced_ms, conflicts_total] = values;
            state.conflicts_total = conflicts_total;
            state.recovery = Recovery::from_u64(recovery).ok_or_else(|| {
                self.damaged("the meta table holds a recovery state no version writes")
            })?;
            state.node = NodeId(node);
            state.index = index;
            state.clock = Hlc(clock);
            state.gc_floor = Hlc(gc_floor);
            state.horizon_floor = Hlc(horizon_floor);
            state.synced_ms = synced_ms;
            state.rejoined = Hlc(rejoined);
            state.left = Hlc(left);
            match tx.open_table(FORGOTTEN) {
                Ok(forgotten) => {
                    for item in forgotten.iter().map_err(|e| self.err(e))? {
                        let (k, v) = item.map_err(|e| self.err(e))?;
                        // A forgotten id that no longer reads would be
                        // taken back without a resync: the store is damaged.
                        let f = decode_forgotten(k.value(), v.value()).map_err(|e| {
                            self.damaged(format!(
                                "the forgotten member {} does not read back ({e})",
                                NodeId(k.value())
                            ))
                        })?;
                        state.forgotten.insert(NodeId(k.value()), f);
                    }
                }
                Err(TableError::TableDoesNotExist(_)) => {}
                Err(e) => return Err(self.err(e)),
            }
            let peers = tx.open_table(PEERS).map_err(|e| self.err(e))?;
            for item in peers.iter().map_err(|e| self.err(e))? {
                let (k, v) = item.map_err(|e| self.err(e))?;
                match decode_progress(k.value(), v.value()) {
                    Ok(p) if !state.forgotten.contains_key(&NodeId(k.value())) => {
                        state.peers.insert(NodeId(k.value()), p);
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(
                        peer = %NodeId(k.value()),
                        "dropping the stored progress of a peer ({e}): its feed is asked for again"
                    ),
                }
            }
            match tx.open_table(CONFLICTS) {
                Ok(conflicts) => {
                    for item in conflicts.iter().map_err(|e| self.err(e))? {
                        let (k, v) = item.map_err(|e| self.err(e))?;
                        match decode_conflict(k.value(), v.value()) {
                            Ok(c) => state.conflicts.push(c),
                            Err(e) => {
                                tracing::warn!(seq = k.value(), "dropping a stored conflict ({e})")
                            }
                        }
                    }
                }
                Err(TableError::TableDoesNotExist(_)) => {}
                Err(e) => return Err(self.err(e)),
            }
            Ok(state)
        })
    }

    fn load_records(&self, sink: &mut dyn FnMut(Vec<Loaded>) -> bool) -> Result<(), StoreError> {
        self.guarded(|| {
            let db = self.db()?;
            let tx = db.begin_read().map_err(|e| self.err(e))?;
            let records = tx.open_table(RECORDS).map_err(|e| self.err(e))?;
            let mut chunk = Vec::with_capacity(LOAD_CHUNK_RECORDS);
            for item in records.iter().map_err(|e| self.err(e))? {
                let (k, v) = item.map_err(|e| self.err(e))?;
                chunk.push(decode_record(k.value(), v.value()));
                if chunk.len() == LOAD_CHUNK_RECORDS {
                    let full =
                        std::mem::replace(&mut chunk, Vec::with_capacity(LOAD_CHUNK_RECORDS));
                    if !sink(full) {
                        return Ok(());
                    }
                }
            }
            if !chunk.is_empty() {
                sink(chunk);
            }
            Ok(())
        })
    }

    fn load_record(&self, key: &Key) -> Result<Option<Loaded>, StoreError> {
        self.guarded(|| {
            let tx = self.db()?.begin_read().map_err(|e| self.err(e))?;
            let records = tx.open_table(RECORDS).map_err(|e| self.err(e))?;
            let raw = key.as_str().as_bytes();
            let found = records.get(raw).map_err(|e| self.err(e))?;
            Ok(found.map(|v| decode_record(raw, v.value())))
        })
    }

    fn records_len(&self) -> Result<u64, StoreError> {
        self.guarded(|| {
            let tx = self.db()?.begin_read().map_err(|e| self.err(e))?;
            let records = tx.open_table(RECORDS).map_err(|e| self.err(e))?;
            records.len().map_err(|e| self.err(e))
        })
    }

    fn commit(&mut self, batches: &[PersistBatch]) -> Result<(), StoreError> {
        if batches.is_empty() {
            return Ok(());
        }
        let path = self.path.clone();
        let err = move |e: StorageError| StoreError::Database {
            path: path.clone(),
            source: Box::new(e.into()),
        };
        self.write(|records, peers, meta, conflicts, forgotten| {
            let mut max = |name: &str, v: u64| -> Result<(), StoreError> {
                let old = meta.get(name).map_err(&err)?.map_or(0, |g| g.value());
                if v > old {
                    meta.insert(name, v).map_err(&err)?;
                }
                Ok(())
            };
            for b in batches {
                max("conflicts_total", b.conflicts_total)?;
                max("index", b.index)?;
                max("clock", b.clock.0)?;
                max("gc_floor", b.gc_floor.0)?;
                max("horizon_floor", b.horizon_floor.0)?;
                max("synced_ms", b.synced_ms)?;
            }
            if let Some(r) = batches.iter().filter_map(|b| b.rejoined).max() {
                max(META_REJOINED, r.0)?;
            }
            if let Some(l) = batches.iter().filter_map(|b| b.left).max() {
                max(META_LEFT, l.0)?;
            }
            // Set, not raised (a recovery ends): the last change wins.
            if let Some(r) = batches.iter().rev().find_map(|b| b.recovery) {
                meta.insert(META_RECOVERY, r.to_u64()).map_err(&err)?;
            }
            for b in batches {
                for raw in &b.purge {
                    records.remove(raw.as_slice()).map_err(&err)?;
                }
                for (k, r) in &b.records {
                    match r {
                        Some(r) => {
                            records
                                .insert(k.as_str().as_bytes(), encode_record(r).as_slice())
                                .map_err(&err)?;
                        }
                        None => {
                            records.remove(k.as_str().as_bytes()).map_err(&err)?;
                        }
                    }
                }
                for (id, p) in &b.peers {
                    peers
                        .insert(id.0, encode_progress(id.0, p).as_slice())
                        .map_err(&err)?;
                }
                for (id, f) in &b.forgotten {
                    match f {
                        Some(f) => {
                            peers.remove(id.0).map_err(&err)?;
                            forgotten
                                .insert(id.0, encode_forgotten(id.0, f).as_slice())
                                .map_err(&err)?;
                        }
                        None => {
                            forgotten.remove(id.0).map_err(&err)?;
                        }
                    }
                }
                // The conflicts of this batch are numbered up to its total.
                let first = b.conflicts_total + 1 - b.conflicts.len() as u64;
                for (i, c) in b.conflicts.iter().enumerate() {
                    let seq = first + i as u64;
                    conflicts
                        .insert(seq, encode_conflict(seq, c).as_slice())
                        .map_err(&err)?;
                }
            }
            // Only the newest are kept.
            let total = batches.iter().map(|b| b.conflicts_total).max().unwrap_or(0);
            if let Some(cut) = total.checked_sub(CONFLICTS_STORED_MAX as u64) {
                let old: Vec<u64> = conflicts
                    .range(..=cut)
                    .map_err(&err)?
                    .filter_map(|item| item.ok().map(|(k, _)| k.value()))
                    .collect();
                for seq in old {
                    conflicts.remove(seq).map_err(&err)?;
                }
            }
            Ok(())
        })
    }

    fn set_node(&mut self, node: NodeId) -> Result<(), StoreError> {
        let found = self.load_meta()?.node;
        if found != NodeId(0) && found != node {
            return Err(StoreError::WrongNode {
                path: self.path.clone(),
                expected: node,
                found,
            });
        }
        let path = self.path.clone();
        self.write(|_, _, meta, _, _| {
            meta.insert("node", node.0)
                .map_err(|e| StoreError::Database {
                    path: path.clone(),
                    source: Box::new(e.into()),
                })?;
            Ok(())
        })
    }

    fn reopen(&mut self) -> Result<(), StoreError> {
        // Every transaction of the old handle is gone: drop it first, or
        // redb refuses the second open.
        self.db = None;
        let db = self.open_database()?;
        self.guarded(|| self.prepare(&db))?;
        self.db = Some(db);
        Ok(())
    }
}
