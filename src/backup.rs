//! `backup`: the backup file format, and checking and combining backups.
//!
//! A backup is a point-in-time copy of one node's entries (tombstones
//! included) with what is needed to check it: the cluster id, the node's
//! index and Merkle root at that instant, and checksums. A *full* backup
//! holds every entry; an *incremental* one the entries changed after an
//! index (`since`). Restoring merges entries as CRDT state (greater stamps
//! win), so a restore into a live cluster loses nothing newer.
//!
//! Layout: the 8-byte magic `MRDNBAK1`, then frames of `u32` length (LE),
//! postcard payload and the first 16 bytes of the payload's blake3: one
//! [`Header`], chunks of at most [`CHUNK_ENTRIES_MAX`] entries or
//! [`CHUNK_BYTES_MAX`] bytes (one larger entry goes alone), and a
//! `Trailer` with the entry count and a blake3 over every byte before it.
//! Pure: bytes in, bytes out; files and HTTP are the caller's.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::core::codec::{ClusterId, FRAME_BYTES_MAX};
use crate::core::hlc::Hlc;
use crate::core::map::LwwMap;
use crate::core::types::{hex, Entry, Hash, Key, NodeId};

/// First bytes of every backup file.
pub const MAGIC: [u8; 8] = *b"MRDNBAK1";
/// The format version this build writes. Version 1 recorded a root over
/// every entry, tombstones included; version 2 records the root replicas
/// report, over live entries only. Both are read.
pub const FORMAT_VERSION: u16 = 2;
/// The oldest format version this build reads.
pub const FORMAT_VERSION_MIN: u16 = 1;
/// Most entries per chunk.
pub const CHUNK_ENTRIES_MAX: usize = 1_024;
/// Most value bytes per chunk (one larger entry goes alone).
pub const CHUNK_BYTES_MAX: usize = 1 << 20;
/// Largest frame: one chunk holding the largest entry, with room to spare.
pub const BACKUP_FRAME_BYTES_MAX: usize = FRAME_BYTES_MAX;

/// What a backup file says about itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    /// The format version it was written in (see [`FORMAT_VERSION`]).
    pub version: u16,
    /// The node's cluster; a restore into another cluster needs `--force`.
    pub cluster: ClusterId,
    /// The node it was taken from.
    pub node: NodeId,
    /// The node's name.
    pub name: String,
    /// The node's region.
    pub region: String,
    /// 0 for a full backup; else the index after which changes are included.
    pub since: u64,
    /// The node's index when the backup was taken.
    pub index: u64,
    /// The node's Merkle root of its whole state when the backup was taken.
    pub root: Hash,
    /// The node's collection floor then: tombstones at or below it may have
    /// been dropped from its state (they are not in later backups).
    pub gc_floor: Hlc,
    /// Physical time of the backup, ms since the epoch.
    pub created_ms: u64,
    /// Incremental only: keys the node removed outright (collected
    /// tombstones) at or after `since`; a restore drops them from the
    /// earlier state before merging this backup's entries.
    pub removed: Vec<Key>,
}

impl Header {
    /// True for a full backup: it holds every entry (`since` is 0).
    pub fn is_full(&self) -> bool {
        self.since == 0
    }
}

#[derive(Serialize, Deserialize)]
struct Trailer {
    entries: u64,
    /// blake3 of every byte before the trailer frame.
    checksum: Hash,
}

/// Why a backup could not be read or used.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum BackupError {
    /// The file does not start with [`MAGIC`].
    #[error("not a Meridian backup (the file does not start with MRDNBAK1)")]
    BadMagic,
    /// The header's format version is not one this build reads.
    #[error("backup format version {0} is not supported (this build reads {FORMAT_VERSION_MIN} to {FORMAT_VERSION})")]
    Version(u16),
    /// The file ends too early: a frame, or the trailer, lacks bytes at about
    /// this byte offset.
    #[error("the backup is truncated at byte {0}")]
    Truncated(usize),
    /// A frame fails its checksum, is over the size limit or does not decode,
    /// or the file's checksum is wrong.
    #[error("frame at byte {offset} is corrupt: {reason}")]
    Corrupt {
        /// Byte offset of the frame in the file.
        offset: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// The trailer's entry count differs from the entries the chunks hold.
    #[error("the backup holds {found} entries, its trailer says {expected}")]
    Count {
        /// Entries the trailer records.
        expected: u64,
        /// Entries the chunks hold.
        found: u64,
    },
    /// The entries' Merkle root differs from the recorded one (of a full
    /// backup, or of the newest backup of a chain).
    #[error("the entries' Merkle root {found} is not the recorded root {expected}")]
    Root {
        /// The recorded root, in hex.
        expected: String,
        /// The root of the entries read, in hex.
        found: String,
    },
    /// The backup was taken in another cluster than the node restoring it.
    #[error("the backup belongs to another cluster ({found}, this is {expected}); --force restores it anyway")]
    OtherCluster {
        /// This node's cluster id, in hex.
        expected: String,
        /// The backup's cluster id, in hex.
        found: String,
    },
    /// The backups given are not one full backup followed by incrementals of
    /// the same node without gaps; the text says what is wrong.
    #[error("backup chain: {0}")]
    Chain(String),
    /// A frame could not be encoded, or is over [`BACKUP_FRAME_BYTES_MAX`].
    #[error("cannot encode the backup: {0}")]
    Encode(String),
}

/// The hex form of a cluster id, as `meridian ca init` prints it.
pub fn cluster_hex(c: &ClusterId) -> String {
    hex(&c.0)
}

fn check16(payload: &[u8]) -> [u8; 16] {
    let mut c = [0u8; 16];
    c.copy_from_slice(&blake3::hash(payload).as_bytes()[..16]);
    c
}

/// Writes a backup into memory, chunk by chunk.
pub struct Writer {
    out: Vec<u8>,
    chunk: Vec<(Key, Entry)>,
    chunk_bytes: usize,
    entries: u64,
}

impl Writer {
    /// Starts a backup with the magic and the header frame; fails if the header cannot be encoded.
    pub fn new(header: &Header) -> Result<Writer, BackupError> {
        let mut w = Writer {
            out: MAGIC.to_vec(),
            chunk: Vec::new(),
            chunk_bytes: 0,
            entries: 0,
        };
        w.frame(header)?;
        Ok(w)
    }

    fn frame<T: Serialize>(&mut self, v: &T) -> Result<(), BackupError> {
        let payload = postcard::to_allocvec(v).map_err(|e| BackupError::Encode(e.to_string()))?;
        if payload.len() > BACKUP_FRAME_BYTES_MAX {
            return Err(BackupError::Encode(format!(
                "a frame of {} bytes is over the limit of {BACKUP_FRAME_BYTES_MAX}",
                payload.len()
            )));
        }
        self.out
            .extend_from_slice(&(payload.len() as u32).to_le_bytes());
        self.out.extend_from_slice(&payload);
        self.out.extend_from_slice(&check16(&payload));
        Ok(())
    }

    /// Adds an entry, first closing the current chunk if it is full (in
    /// entries or bytes); fails if that chunk cannot be encoded.
    pub fn push(&mut self, key: Key, entry: Entry) -> Result<(), BackupError> {
        let len = entry.value_len() + key.len();
        if !self.chunk.is_empty()
            && (self.chunk.len() == CHUNK_ENTRIES_MAX || self.chunk_bytes + len > CHUNK_BYTES_MAX)
        {
            self.flush()?;
        }
        self.chunk_bytes += len;
        self.entries += 1;
        self.chunk.push((key, entry));
        Ok(())
    }

    fn flush(&mut self) -> Result<(), BackupError> {
        let chunk = std::mem::take(&mut self.chunk);
        self.chunk_bytes = 0;
        self.frame(&chunk)
    }

    /// Bytes written so far (whole frames only).
    pub fn take_ready(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.out)
    }

    /// Ends the backup; `checksum` runs over every byte of the file before
    /// the trailer, so the caller passes the hasher it fed with every
    /// [`Writer::take_ready`] output, or uses [`Writer::finish_all`].
    pub fn finish(mut self, mut hasher: blake3::Hasher) -> Result<Vec<u8>, BackupError> {
        if !self.chunk.is_empty() {
            self.flush()?;
        }
        hasher.update(&self.out);
        let trailer = Trailer {
            entries: self.entries,
            checksum: *hasher.finalize().as_bytes(),
        };
        self.frame(&trailer)?;
        Ok(self.out)
    }

    /// The whole file at once.
    pub fn finish_all(self) -> Result<Vec<u8>, BackupError> {
        self.finish(blake3::Hasher::new())
    }
}

/// Encodes a whole backup.
pub fn encode(header: &Header, entries: &[(Key, Entry)]) -> Result<Vec<u8>, BackupError> {
    let mut w = Writer::new(header)?;
    for (k, e) in entries {
        w.push(k.clone(), e.clone())?;
    }
    w.finish_all()
}

/// A backup read and checked: checksums, entry count and, for a full
/// backup, the Merkle root of its entries.
#[derive(Debug, Clone)]
pub struct Backup {
    /// The header, as recorded.
    pub header: Header,
    /// Every entry in file order, tombstones included.
    pub entries: Vec<(Key, Entry)>,
    /// The size of the file, in bytes.
    pub bytes: usize,
}

impl Backup {
    /// How many of the entries are tombstones.
    pub fn tombstones(&self) -> usize {
        self.entries
            .iter()
            .filter(|(_, e)| e.is_tombstone())
            .count()
    }
}

fn frame_at(b: &[u8], at: usize) -> Result<(&[u8], usize), BackupError> {
    let len_end = at.checked_add(4).ok_or(BackupError::Truncated(at))?;
    let len = b.get(at..len_end).ok_or(BackupError::Truncated(at))?;
    let len = u32::from_le_bytes([len[0], len[1], len[2], len[3]]) as usize;
    if len > BACKUP_FRAME_BYTES_MAX {
        return Err(BackupError::Corrupt {
            offset: at,
            reason: format!("frame of {len} bytes is over the limit"),
        });
    }
    let end = len_end + len + 16;
    let payload = b
        .get(len_end..len_end + len)
        .ok_or(BackupError::Truncated(b.len()))?;
    let check = b
        .get(len_end + len..end)
        .ok_or(BackupError::Truncated(b.len()))?;
    if check != check16(payload) {
        return Err(BackupError::Corrupt {
            offset: at,
            reason: "checksum mismatch".into(),
        });
    }
    Ok((payload, end))
}

fn parse<'a, T: Deserialize<'a>>(payload: &'a [u8], at: usize) -> Result<T, BackupError> {
    postcard::from_bytes(payload).map_err(|e| BackupError::Corrupt {
        offset: at,
        reason: e.to_string(),
    })
}

/// The Merkle root of a set of entries, as a replica holding exactly them reports it.
pub fn root_of(entries: &[(Key, Entry)]) -> Hash {
    let mut map = LwwMap::new(0);
    for (k, e) in entries {
        let _ = map.merge(k, e.clone(), Hlc::ZERO);
    }
    map.root()
}

/// The root a backup of format `version` recorded for `entries`: version 1
/// covered tombstones too.
fn recorded_root(version: u16, entries: &[(Key, Entry)]) -> Hash {
    if version >= 2 {
        return root_of(entries);
    }
    let mut digest = crate::core::digest::Digest::new();
    for (k, e) in entries {
        let hash = crate::core::types::entry_hash(k.as_str(), e);
        let mut part = [0u8; 16];
        part.copy_from_slice(&hash[..16]);
        digest.toggle(crate::core::types::key_hash(k.as_str()), &part);
    }
    digest.root()
}

/// Reads the header of the backup file at `path` (its first frame, checked)
/// without reading the rest.
pub fn read_header(path: &std::path::Path) -> Result<Header, BackupError> {
    use std::io::Read;
    let io = |e: std::io::Error| BackupError::Corrupt {
        offset: 0,
        reason: format!("reading {}: {e}", path.display()),
    };
    let mut f = std::fs::File::open(path).map_err(io)?;
    let mut head = [0u8; 12];
    f.read_exact(&mut head)
        .map_err(|_| BackupError::Truncated(0))?;
    let mut buf = head.to_vec();
    buf.resize(header_bytes(&head)?, 0);
    f.read_exact(&mut buf[12..])
        .map_err(|_| BackupError::Truncated(8))?;
    header_of(&buf)
}

/// How many bytes from a backup's start hold its header, from its first 12
/// bytes (the magic and the header frame's length). Reading a header from
/// object storage fetches that range and no more.
pub fn header_bytes(first: &[u8]) -> Result<usize, BackupError> {
    let head = first.get(..12).ok_or(BackupError::Truncated(0))?;
    if head[..8] != MAGIC {
        return Err(BackupError::BadMagic);
    }
    let len = u32::from_le_bytes([head[8], head[9], head[10], head[11]]) as usize;
    if len > BACKUP_FRAME_BYTES_MAX {
        return Err(BackupError::Corrupt {
            offset: 8,
            reason: format!("frame of {len} bytes is over the limit"),
        });
    }
    Ok(12 + len + 16)
}

/// The header of a backup whose first bytes are `start` (at least
/// [`header_bytes`] of them), its checksum checked.
pub fn header_of(start: &[u8]) -> Result<Header, BackupError> {
    let need = header_bytes(start)?;
    let buf = start.get(8..need).ok_or(BackupError::Truncated(8))?;
    let (payload, _) = frame_at(buf, 0)?;
    let header: Header = parse(payload, 8)?;
    if header.version < FORMAT_VERSION_MIN || header.version > FORMAT_VERSION {
        return Err(BackupError::Version(header.version));
    }
    Ok(header)
}

/// Reads and checks a backup. A full backup's entries must have its recorded root.
pub fn decode(b: &[u8]) -> Result<Backup, BackupError> {
    if b.len() < MAGIC.len() {
        return Err(BackupError::Truncated(b.len()));
    }
    if b[..MAGIC.len()] != MAGIC {
        return Err(BackupError::BadMagic);
    }
    let mut at = MAGIC.len();
    let (payload, next) = frame_at(b, at)?;
    let header: Header = parse(payload, at)?;
    if !(FORMAT_VERSION_MIN..=FORMAT_VERSION).contains(&header.version) {
        return Err(BackupError::Version(header.version));
    }
    at = next;
    let mut entries = Vec::new();
    loop {
        let (payload, next) = frame_at(b, at)?;
        if next == b.len() {
            let trailer: Trailer = parse(payload, at)?;
            if *blake3::hash(&b[..at]).as_bytes() != trailer.checksum {
                return Err(BackupError::Corrupt {
                    offset: at,
                    reason: "file checksum mismatch".into(),
                });
            }
            if trailer.entries != entries.len() as u64 {
                return Err(BackupError::Count {
                    expected: trailer.entries,
                    found: entries.len() as u64,
                });
            }
            break;
        }
        let chunk: Vec<(Key, Entry)> = parse(payload, at)?;
        entries.extend(chunk);
        at = next;
    }
    if header.is_full() {
        let found = recorded_root(header.version, &entries);
        if found != header.root {
            return Err(BackupError::Root {
                expected: hex(&header.root),
                found: hex(&found),
            });
        }
    }
    Ok(Backup {
        header,
        entries,
        bytes: b.len(),
    })
}

/// Combines a full backup and incrementals of the same node (in any order
/// given) into the state they describe: in index order, each incremental
/// drops the keys the node removed, then its entries merge by stamp. The
/// result's root must be the root the newest backup recorded.
pub fn combine(mut backups: Vec<Backup>) -> Result<(Header, Vec<(Key, Entry)>), BackupError> {
    backups.sort_by_key(|b| (!b.header.is_full(), b.header.index));
    let Some(first) = backups.first() else {
        return Err(BackupError::Chain("no backup given".into()));
    };
    if !first.header.is_full() {
        return Err(BackupError::Chain(format!(
            "the chain must start with a full backup; the earliest given holds changes after index {}",
            first.header.since
        )));
    }
    let mut covered = first.header.index;
    for b in &backups[1..] {
        if b.header.is_full() {
            return Err(BackupError::Chain("more than one full backup given".into()));
        }
        if b.header.cluster != first.header.cluster || b.header.node != first.header.node {
            return Err(BackupError::Chain(format!(
                "an incremental backup of node {} ({}) cannot extend a full backup of node {} ({})",
                b.header.node, b.header.name, first.header.node, first.header.name
            )));
        }
        if b.header.since > covered {
            return Err(BackupError::Chain(format!(
                "gap: changes after index {covered} are needed, the next backup starts after {}",
                b.header.since
            )));
        }
        // Equal indexes: nothing changed since the full backup (an empty
        // incremental, taken on schedule), which combines as nothing.
        if b.header.index < first.header.index {
            return Err(BackupError::Chain(format!(
                "the incremental backup up to index {} is older than the full backup (index {})",
                b.header.index, first.header.index
            )));
        }
        covered = covered.max(b.header.index);
    }
    let mut state: BTreeMap<Key, Entry> = BTreeMap::new();
    for b in &backups {
        for k in &b.header.removed {
            state.remove(k);
        }
        for (k, e) in &b.entries {
            match state.get(k) {
                Some(cur) if cur.stamp >= e.stamp => {}
                _ => {
                    state.insert(k.clone(), e.clone());
                }
            }
        }
    }
    let last = backups
        .iter()
        .max_by_key(|b| b.header.index)
        .map(|b| b.header.clone())
        .unwrap_or_else(|| first.header.clone());
    let entries: Vec<(Key, Entry)> = state.into_iter().collect();
    let found = recorded_root(last.version, &entries);
    if found != last.root {
        return Err(BackupError::Root {
            expected: hex(&last.root),
            found: hex(&found),
        });
    }
    Ok((last, entries))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::types::{Kind, Stamp};
    use bytes::Bytes;

    fn entry(t: u64, v: Option<&str>) -> Entry {
        Entry {
            stamp: Stamp::new(Hlc::new(t, 0), NodeId(7)),
            prev: Stamp::ZERO,
            flags: 0,
            value: v.map(|s| Bytes::from(s.to_string())),
            kind: Kind::Value,
        }
    }

    fn header(since: u64, index: u64, entries: &[(Key, Entry)]) -> Header {
        Header {
            version: FORMAT_VERSION,
            cluster: ClusterId([1; 16]),
            node: NodeId(7),
            name: "n".into(),
            region: "r".into(),
            since,
            index,
            root: root_of(entries),
            gc_floor: Hlc::ZERO,
            created_ms: 1,
            removed: Vec::new(),
        }
    }

    fn k(s: &str) -> Key {
        Key::new(s).unwrap()
    }

    #[test]
    fn round_trip_over_many_chunks() {
        let entries: Vec<(Key, Entry)> = (0..3_000)
            .map(|i| {
                (
                    k(&format!("k{i:05}")),
                    entry(i + 1, (i % 7 != 0).then_some("v")),
                )
            })
            .collect();
        let file = encode(&header(0, 3_000, &entries), &entries).unwrap();
        let b = decode(&file).unwrap();
        assert_eq!(b.entries, entries);
        assert_eq!(b.header.index, 3_000);
        assert_eq!(
            b.tombstones(),
            entries.iter().filter(|(_, e)| e.is_tombstone()).count()
        );
    }

    #[test]
    fn any_flipped_byte_or_cut_is_detected() {
        let entries: Vec<(Key, Entry)> = (0..50)
            .map(|i| (k(&format!("k{i}")), entry(i + 1, Some("v"))))
            .collect();
        let file = encode(&header(0, 50, &entries), &entries).unwrap();
        for i in (0..file.len()).step_by(7) {
            let mut bad = file.clone();
            bad[i] ^= 0x40;
            assert!(decode(&bad).is_err(), "flipping byte {i} went unnoticed");
        }
        for cut in [0, 5, 8, 20, file.len() / 2, file.len() - 1] {
            assert!(decode(&file[..cut]).is_err(), "cut at {cut} went unnoticed");
        }
        let mut longer = file.clone();
        longer.push(0);
        assert!(decode(&longer).is_err());
    }

    #[test]
    fn a_version_1_backup_is_checked_against_its_root_over_tombstones() {
        let entries = vec![(k("a"), entry(1, Some("x"))), (k("b"), entry(2, None))];
        let mut h = header(0, 2, &entries);
        h.version = 1;
        // Version 2 roots leave the tombstone out: a version 1 file does not.
        assert!(matches!(
            decode(&encode(&h, &entries).unwrap()),
            Err(BackupError::Root { .. })
        ));
        h.root = recorded_root(1, &entries);
        assert_ne!(h.root, root_of(&entries));
        assert_eq!(
            decode(&encode(&h, &entries).unwrap()).unwrap().entries,
            entries
        );
        h.version = 3;
        assert!(matches!(
            decode(&encode(&h, &entries).unwrap()),
            Err(BackupError::Version(3))
        ));
    }

    #[test]
    fn a_full_backup_with_the_wrong_root_is_refused() {
        let entries = vec![(k("a"), entry(1, Some("x")))];
        let mut h = header(0, 1, &entries);
        h.root = [9; 32];
        let file = encode(&h, &entries).unwrap();
        assert!(matches!(decode(&file), Err(BackupError::Root { .. })));
    }

    #[test]
    fn a_chain_combines_and_checks_its_root() {
        let full = vec![(k("a"), entry(1, Some("1"))), (k("b"), entry(2, Some("2")))];
        // Later: a changed, b deleted, c added.
        let inc = vec![
            (k("a"), entry(3, Some("3"))),
            (k("b"), entry(4, None)),
            (k("c"), entry(5, Some("5"))),
        ];
        let state = vec![inc[0].clone(), inc[1].clone(), inc[2].clone()];
        let f = decode(&encode(&header(0, 2, &full), &full).unwrap()).unwrap();
        let i = decode(&encode(&header(2, 5, &state), &inc).unwrap()).unwrap();
        let (last, entries) = combine(vec![i.clone(), f.clone()]).unwrap();
        assert_eq!(last.index, 5);
        assert_eq!(entries, state);
        // An incremental alone, or with a gap, is refused.
        assert!(combine(vec![i.clone()]).is_err());
        let gap = decode(&encode(&header(3, 5, &state), &inc).unwrap()).unwrap();
        assert!(matches!(
            combine(vec![f.clone(), gap]),
            Err(BackupError::Chain(_))
        ));
        // b's tombstone was collected before the incremental: the entries
        // cannot show it, the removal list does.
        let collected: Vec<(Key, Entry)> = vec![state[0].clone(), state[2].clone()];
        let mut h = header(2, 5, &collected);
        h.removed = vec![k("b")];
        let i2 = decode(&encode(&h, &collected).unwrap()).unwrap();
        let (_, entries) = combine(vec![f.clone(), i2]).unwrap();
        assert_eq!(entries, collected);
        // Without it the chain does not add up, and says so.
        let i3 = decode(&encode(&header(2, 5, &collected), &collected).unwrap()).unwrap();
        assert!(matches!(
            combine(vec![f.clone(), i3]),
            Err(BackupError::Root { .. })
        ));
        // An incremental of no change since the full backup adds nothing.
        let none = decode(&encode(&header(2, 2, &full), &[]).unwrap()).unwrap();
        let (last, entries) = combine(vec![f.clone(), none]).unwrap();
        assert_eq!((last.index, entries.len()), (2, 2));
        // An incremental older than the full backup is refused.
        let mut late = f.clone();
        late.header.index = 9;
        assert!(combine(vec![late, i]).is_err());
    }
}
