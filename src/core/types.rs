//! The vocabulary of the data model.
//!
//! Owns node ids, stamps (the total order of writes), validated keys, entries
//! (a value or a tombstone with its stamp), the limits on keys and values,
//! and the content hashes of keys and entries that the digest is built from.

use std::borrow::Borrow;
use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use thiserror::Error;

use super::hlc::Hlc;

/// Largest key in bytes; the configured limit may only be lower.
pub const KEY_BYTES_MAX: usize = 1024;

/// Keys under this prefix are Meridian's own state (ACL policies and
/// tokens): they replicate as any key, and the KV API neither shows nor
/// accepts them (a client cannot send the byte 0x01 that starts it through
/// the API: it is refused there).
pub const RESERVED_PREFIX: &str = "\u{1}meridian/";

/// Whether a scan of `prefix` passes over `key` without showing it: a
/// reserved key, under a prefix outside the reserved namespace.
pub fn hidden_under(prefix: &str, key: &str) -> bool {
    key.starts_with(RESERVED_PREFIX) && !prefix.starts_with(RESERVED_PREFIX)
}
/// Default largest value in bytes (design §3).
pub const VALUE_BYTES_MAX_DEFAULT: usize = 1 << 20;
/// Largest value any configuration may allow; frames are sized for it.
pub const VALUE_BYTES_LIMIT: usize = 8 << 20;

/// A node's identity: random, 64-bit, created once and stored.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
pub struct NodeId(pub u64);

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// The identity of a write: its hybrid timestamp, ties broken by node id.
/// Field order matters: the derived `Ord` compares `hlc` first.
#[derive(
    Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default, Serialize, Deserialize,
)]
pub struct Stamp {
    /// When the write was made, on its writer's hybrid clock.
    pub hlc: Hlc,
    /// The node that made the write.
    pub node: NodeId,
}

impl Stamp {
    /// Less than every real stamp; used as "no previous write".
    pub const ZERO: Stamp = Stamp {
        hlc: Hlc::ZERO,
        node: NodeId(0),
    };

    /// The stamp of a write made by `node` at `hlc`.
    pub fn new(hlc: Hlc, node: NodeId) -> Stamp {
        Stamp { hlc, node }
    }
}

/// `<hlc as 16 hex digits>-<node id>`: how the API, events and logs name a write.
impl fmt::Display for Stamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}-{}", self.hlc.0, self.node)
    }
}

/// What a write takes as its key: a [`Key`] already validated (then only
/// its length is compared with the configured limit, which may be lower
/// than the hard one), or text validated here, once.
pub trait IntoKey {
    /// The key, checked against `max` bytes (at most [`KEY_BYTES_MAX`]).
    fn into_key(self, max: usize) -> Result<Key, KeyError>;
}

impl IntoKey for Key {
    fn into_key(self, max: usize) -> Result<Key, KeyError> {
        let max = max.min(KEY_BYTES_MAX);
        if self.len() > max {
            return Err(KeyError::TooLong {
                len: self.len(),
                max,
            });
        }
        Ok(self)
    }
}

impl IntoKey for &Key {
    fn into_key(self, max: usize) -> Result<Key, KeyError> {
        self.clone().into_key(max)
    }
}

impl IntoKey for &str {
    fn into_key(self, max: usize) -> Result<Key, KeyError> {
        Key::new_within(self, max)
    }
}

impl IntoKey for &String {
    fn into_key(self, max: usize) -> Result<Key, KeyError> {
        Key::new_within(self, max)
    }
}

impl IntoKey for String {
    fn into_key(self, max: usize) -> Result<Key, KeyError> {
        Key::new_within(&self, max)
    }
}

/// Why a key or value was refused.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum KeyError {
    /// The key has no bytes.
    #[error("key is empty")]
    Empty,
    /// The key is longer than the limit.
    #[error("key is {len} bytes, more than the limit of {max} bytes")]
    TooLong {
        /// The key's length in bytes.
        len: usize,
        /// The limit in bytes.
        max: usize,
    },
    /// The key contains a NUL byte.
    #[error("key contains a NUL byte at offset {offset}")]
    Nul {
        /// Byte offset of the first NUL.
        offset: usize,
    },
    /// Raw key bytes are not valid UTF-8.
    #[error("key is not valid UTF-8")]
    NotUtf8,
}

/// A validated key: UTF-8, 1..=[`KEY_BYTES_MAX`] bytes, no NUL. Cheap to clone.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key(Arc<str>);

impl Key {
    /// Validates `s` against the hard limits.
    pub fn new(s: &str) -> Result<Key, KeyError> {
        Key::new_within(s, KEY_BYTES_MAX)
    }

    /// Validates `s` against a configured length limit `max` (at most
    /// [`KEY_BYTES_MAX`]).
    pub fn new_within(s: &str, max: usize) -> Result<Key, KeyError> {
        Key::check(s, max)?;
        Ok(Key(Arc::from(s)))
    }

    /// Validates raw bytes (e.g. from a URL path) as a key.
    pub fn from_bytes(b: &[u8]) -> Result<Key, KeyError> {
        let s = std::str::from_utf8(b).map_err(|_| KeyError::NotUtf8)?;
        Key::new(s)
    }

    /// Checks `s` against `max` (≤ [`KEY_BYTES_MAX`]) without allocating.
    pub fn check(s: &str, max: usize) -> Result<(), KeyError> {
        let max = max.min(KEY_BYTES_MAX);
        if s.is_empty() {
            return Err(KeyError::Empty);
        }
        if s.len() > max {
            return Err(KeyError::TooLong { len: s.len(), max });
        }
        if let Some(offset) = s.bytes().position(|b| b == 0) {
            return Err(KeyError::Nul { offset });
        }
        Ok(())
    }

    /// The key as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The key's length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Always false: a validated key is never empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Borrow<str> for Key {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for Key {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Key, D::Error> {
        let s = <&str>::deserialize(d)?;
        Key::new(s).map_err(serde::de::Error::custom)
    }
}

/// The limits a replica enforces on local writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest key in bytes, at most [`KEY_BYTES_MAX`].
    pub key_bytes_max: usize,
    /// Largest value in bytes, at most [`VALUE_BYTES_LIMIT`].
    pub value_bytes_max: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            key_bytes_max: KEY_BYTES_MAX,
            value_bytes_max: VALUE_BYTES_MAX_DEFAULT,
        }
    }
}

/// Why a value was refused.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ValueError {
    /// The value is larger than the limit.
    #[error("value is {len} bytes, more than the limit of {max} bytes")]
    TooLarge {
        /// The value's size in bytes.
        len: usize,
        /// The limit in bytes.
        max: usize,
    },
}

impl Limits {
    /// Checks a value of `len` bytes against `value_bytes_max` (capped at [`VALUE_BYTES_LIMIT`]).
    pub fn check_value(&self, len: usize) -> Result<(), ValueError> {
        let max = self.value_bytes_max.min(VALUE_BYTES_LIMIT);
        if len > max {
            return Err(ValueError::TooLarge { len, max });
        }
        Ok(())
    }
}

/// What a live entry's bytes are.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub enum Kind {
    /// Opaque bytes: the entry wins or loses whole, by its stamp.
    #[default]
    Value,
    /// A saved automerge document of JSON (see [`super::doc`]), written by
    /// a client: versions of one document are merged field by field.
    Doc,
    /// A document written by a replica as the merge of versions of it that
    /// met there. It is ordered against other writes by `prev`, the newest
    /// write it merged, not by its own stamp (see [`Entry::order`]): a
    /// merge made late must not win over a delete or an overwrite that
    /// its versions never saw.
    Merge,
}

/// A replicated register value: the current value of a key or a tombstone.
///
/// Encoded (postcard, in frames, stores and backups) as its stamp, prev,
/// flags, then the value as a tagged union: 0 a tombstone, 1 bytes, 2 a
/// document, 3 a merge of documents. Tags 0 and 1 are how `Option<Bytes>` was encoded before
/// documents existed, so stores and backups written before read back as
/// they were.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(from = "EntryRepr", into = "EntryRepr")]
pub struct Entry {
    /// Orders this write against every other write of the key.
    pub stamp: Stamp,
    /// The stamp of the entry the writer replaced ([`Stamp::ZERO`] if none):
    /// a replaced entry newer than `prev` was concurrent (design §3, "Conflicts").
    pub prev: Stamp,
    /// Opaque client flags (Consul's `flags`), replicated with the value.
    pub flags: u64,
    /// `None` is a tombstone.
    pub value: Option<Bytes>,
    /// What the value is ([`Kind::Value`] for a tombstone).
    pub kind: Kind,
}

/// How an [`Entry`] is encoded (see there).
#[derive(Serialize, Deserialize)]
struct EntryRepr {
    stamp: Stamp,
    prev: Stamp,
    flags: u64,
    value: ValueRepr,
}

#[derive(Serialize, Deserialize)]
enum ValueRepr {
    Tombstone,
    Value(Bytes),
    Doc(Bytes),
    Merge(Bytes),
}

impl From<EntryRepr> for Entry {
    fn from(r: EntryRepr) -> Entry {
        let (value, kind) = match r.value {
            ValueRepr::Tombstone => (None, Kind::Value),
            ValueRepr::Value(v) => (Some(v), Kind::Value),
            ValueRepr::Doc(v) => (Some(v), Kind::Doc),
            ValueRepr::Merge(v) => (Some(v), Kind::Merge),
        };
        Entry {
            stamp: r.stamp,
            prev: r.prev,
            flags: r.flags,
            value,
            kind,
        }
    }
}

impl From<Entry> for EntryRepr {
    fn from(e: Entry) -> EntryRepr {
        let value = match (e.value, e.kind) {
            (None, _) => ValueRepr::Tombstone,
            (Some(v), Kind::Value) => ValueRepr::Value(v),
            (Some(v), Kind::Doc) => ValueRepr::Doc(v),
            (Some(v), Kind::Merge) => ValueRepr::Merge(v),
        };
        EntryRepr {
            stamp: e.stamp,
            prev: e.prev,
            flags: e.flags,
            value,
        }
    }
}

impl Entry {
    /// True if this entry records a delete (it has no value).
    pub fn is_tombstone(&self) -> bool {
        self.value.is_none()
    }

    /// The value as clients read it: a document's current JSON, any other
    /// value as it is (`None` for a tombstone). Documents in a map always
    /// load (they are checked when they arrive); one that does not reads
    /// as `null`.
    pub fn visible_value(&self) -> Option<Bytes> {
        let v = self.value.as_ref()?;
        if !self.is_doc() {
            return Some(v.clone());
        }
        let json = super::doc::Document::load(v)
            .and_then(|mut d| d.to_json(None))
            .ok()
            .and_then(|j| serde_json::to_vec(&j).ok())
            .unwrap_or_else(|| b"null".to_vec());
        Some(Bytes::from(json))
    }

    /// True if this entry holds a document (see [`Kind::Doc`]).
    pub fn is_doc(&self) -> bool {
        self.kind != Kind::Value && self.value.is_some()
    }

    /// Where this entry stands among the writes of its key: first the
    /// stamp it is ordered by (its own, or for a [`Kind::Merge`] the
    /// newest write it merged, kept in `prev`), then its own stamp. The
    /// map keeps the greatest; equal orders are the same write.
    pub fn order(&self) -> (Stamp, Stamp) {
        match (&self.value, self.kind) {
            (Some(_), Kind::Merge) if !super::mutants::on(super::mutants::Mutant::MergeOrder) => {
                (self.prev, self.stamp)
            }
            _ => (self.stamp, self.stamp),
        }
    }

    /// The tag the entry hash gives the value: 0 none, 1 bytes, 2 a
    /// document, 3 a merge of documents.
    fn value_tag(&self) -> u8 {
        match (&self.value, self.kind) {
            (None, _) => 0,
            (Some(_), Kind::Value) => 1,
            (Some(_), Kind::Doc) => 2,
            (Some(_), Kind::Merge) => 3,
        }
    }

    /// Bytes of the value (0 for a tombstone).
    pub fn value_len(&self) -> usize {
        self.value.as_ref().map_or(0, |v| v.len())
    }

    /// An estimate of the encoded size of `key` with this entry, for batching.
    pub fn encoded_len_estimate(&self, key: &Key) -> usize {
        key.len() + self.value_len() + 48
    }
}

/// A 32-byte blake3 digest.
pub type Hash = [u8; 32];

/// Region names local clusters (`meridian dev`, `meridian bench`) and the
/// simulation give their regions, in order.
pub const REGION_NAMES: [&str; 5] = ["us-east", "eu-west", "ap-southeast", "sa-east", "af-south"];

/// The name of local region `i`: [`REGION_NAMES`], then `region-N`.
pub fn region_name(i: usize) -> String {
    REGION_NAMES
        .get(i)
        .map_or_else(|| format!("region-{}", i + 1), |r| r.to_string())
}

/// The lowercase hex form of `bytes` (roots, hashes, ids), as every
/// answer and message prints them.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|x| format!("{x:02x}")).collect()
}

/// What a stored record carries so that its content can be checked when it
/// is read back (design §3, "Integrity"): the key's position hash, which
/// tells a damaged key from damaged content, and the first 16 bytes of the
/// entry hash, which is also the entry's part of its digest leaf.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Check {
    /// The [`key_hash`] of the key the record is stored under.
    pub key_hash: u64,
    /// The first 16 bytes of the entry's [`entry_hash`].
    pub part: [u8; 16],
}

impl Check {
    /// The check of `entry` stored under `key`.
    pub fn of(key: &str, entry: &Entry) -> Check {
        Check {
            key_hash: key_hash(key),
            part: entry_part(key, entry),
        }
    }
}

/// The first 16 bytes of [`entry_hash`]: what an entry contributes to its
/// digest leaf, and what its stored check compares.
pub fn entry_part(key: &str, e: &Entry) -> [u8; 16] {
    let h = entry_hash(key, e);
    let mut p = [0u8; 16];
    p.copy_from_slice(&h[..16]);
    p
}

/// The position of a key in the digest's hash space: the first 8 bytes of
/// blake3(key), big-endian.
pub fn key_hash(key: &str) -> u64 {
    let h = blake3::hash(key.as_bytes());
    let mut b = [0u8; 8];
    b.copy_from_slice(&h.as_bytes()[..8]);
    u64::from_be_bytes(b)
}

/// The content hash of one entry of one key: what the digest's leaves combine.
///
/// blake3 over: key length (u32), key, stamp, prev (hlc and node, u64
/// each), flags (u64), then `0` for a tombstone or `1`, value length (u64)
/// and the value; integers little-endian. Small entries (up to
/// `ONE_CALL_BYTES_MAX` in all, most config entries) are assembled on the
/// stack and hashed in one call, which costs a quarter less than feeding
/// the pieces in turn (`cargo bench --bench core -- merge`).
pub fn entry_hash(key: &str, e: &Entry) -> Hash {
    const ONE_CALL_BYTES_MAX: usize = 256;
    let value = e.value.as_deref();
    let len = 4 + key.len() + 5 * 8 + 1 + value.map_or(0, |v| 8 + v.len());
    if len > ONE_CALL_BYTES_MAX {
        return entry_hash_pieces(key, e);
    }
    let mut buf = [0u8; ONE_CALL_BYTES_MAX];
    let mut at = 0;
    let mut put = |bytes: &[u8]| {
        buf[at..at + bytes.len()].copy_from_slice(bytes);
        at += bytes.len();
    };
    put(&(key.len() as u32).to_le_bytes());
    put(key.as_bytes());
    put(&e.stamp.hlc.0.to_le_bytes());
    put(&e.stamp.node.0.to_le_bytes());
    put(&e.prev.hlc.0.to_le_bytes());
    put(&e.prev.node.0.to_le_bytes());
    put(&e.flags.to_le_bytes());
    match value {
        None => put(&[0]),
        Some(v) => {
            put(&[e.value_tag()]);
            put(&(v.len() as u64).to_le_bytes());
            put(v);
        }
    }
    *blake3::hash(&buf[..len]).as_bytes()
}

/// [`entry_hash`] fed piece by piece: the definition it must agree with.
fn entry_hash_pieces(key: &str, e: &Entry) -> Hash {
    let mut h = blake3::Hasher::new();
    h.update(&(key.len() as u32).to_le_bytes());
    h.update(key.as_bytes());
    h.update(&e.stamp.hlc.0.to_le_bytes());
    h.update(&e.stamp.node.0.to_le_bytes());
    h.update(&e.prev.hlc.0.to_le_bytes());
    h.update(&e.prev.node.0.to_le_bytes());
    h.update(&e.flags.to_le_bytes());
    match &e.value {
        None => {
            h.update(&[0]);
        }
        Some(v) => {
            h.update(&[e.value_tag()]);
            h.update(&(v.len() as u64).to_le_bytes());
            h.update(v);
        }
    }
    *h.finalize().as_bytes()
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` (UTC) of ms since the epoch, with `sep`
/// between the date and the time (`T` for RFC 3339, a space for people).
pub fn utc_text(ms: u64, sep: char) -> String {
    let (days, rem) = ((ms / 86_400_000) as i64, ms % 86_400_000);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    let zone = if sep == 'T' { "Z" } else { "" };
    format!(
        "{y:04}-{m:02}-{d:02}{sep}{:02}:{:02}:{:02}.{:03}{zone}",
        rem / 3_600_000,
        rem / 60_000 % 60,
        rem / 1_000 % 60,
        rem % 1_000
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_hash_in_one_call_equals_the_pieces() {
        for (klen, vlen) in [
            (1, None),
            (30, Some(0)),
            (30, Some(100)),
            (30, Some(173)),
            (30, Some(174)),
            (200, None),
            (1, Some(1000)),
            (1024, None),
        ] {
            let key = "k".repeat(klen);
            let e = Entry {
                stamp: Stamp::new(Hlc(7), NodeId(9)),
                prev: Stamp::new(Hlc(3), NodeId(2)),
                flags: 42,
                value: vlen.map(|n| Bytes::from(vec![5u8; n])),
                kind: Kind::Value,
            };
            assert_eq!(
                entry_hash(&key, &e),
                entry_hash_pieces(&key, &e),
                "{klen} {vlen:?}"
            );
        }
    }

    #[test]
    fn entries_encoded_before_documents_read_back_and_documents_hash_apart() {
        /// An entry as encoded before documents existed.
        #[derive(Serialize)]
        struct Before {
            stamp: Stamp,
            prev: Stamp,
            flags: u64,
            value: Option<Bytes>,
        }
        let stamp = Stamp::new(Hlc(7), NodeId(9));
        for value in [None, Some(Bytes::from_static(b"v"))] {
            let old = postcard::to_allocvec(&Before {
                stamp,
                prev: Stamp::ZERO,
                flags: 3,
                value: value.clone(),
            })
            .unwrap();
            let e: Entry = postcard::from_bytes(&old).unwrap();
            assert_eq!(e.value, value);
            assert_eq!(e.kind, Kind::Value);
            assert_eq!(postcard::to_allocvec(&e).unwrap(), old, "encoded as before");
        }
        let doc = Entry {
            stamp,
            prev: Stamp::ZERO,
            flags: 0,
            value: Some(Bytes::from_static(b"d")),
            kind: Kind::Doc,
        };
        let back: Entry = postcard::from_bytes(&postcard::to_allocvec(&doc).unwrap()).unwrap();
        assert_eq!(back, doc);
        let plain = Entry {
            kind: Kind::Value,
            ..doc.clone()
        };
        assert_ne!(entry_hash("k", &doc), entry_hash("k", &plain));
        assert_eq!(entry_hash("k", &doc), entry_hash_pieces("k", &doc));
        // A tombstone is a tombstone, whatever its kind said.
        let t = Entry { value: None, ..doc };
        let back: Entry = postcard::from_bytes(&postcard::to_allocvec(&t).unwrap()).unwrap();
        assert!(back.is_tombstone() && back.kind == Kind::Value);
    }

    #[test]
    fn key_validation() {
        assert_eq!(Key::new(""), Err(KeyError::Empty));
        assert!(matches!(Key::new("a\0b"), Err(KeyError::Nul { offset: 1 })));
        let long = "x".repeat(KEY_BYTES_MAX + 1);
        assert!(matches!(Key::new(&long), Err(KeyError::TooLong { .. })));
        assert!(Key::new(&"x".repeat(KEY_BYTES_MAX)).is_ok());
        assert_eq!(Key::from_bytes(&[0xff, 0xfe]), Err(KeyError::NotUtf8));
        assert!(Key::check("abcd", 3).is_err());
    }

    #[test]
    fn stamps_order_by_clock_then_node() {
        let a = Stamp::new(Hlc::new(5, 0), NodeId(9));
        let b = Stamp::new(Hlc::new(5, 0), NodeId(10));
        let c = Stamp::new(Hlc::new(5, 1), NodeId(1));
        assert!(a < b && b < c);
        assert!(Stamp::ZERO < a);
    }

    #[test]
    fn entry_hash_covers_every_field() {
        let e = Entry {
            stamp: Stamp::new(Hlc(1), NodeId(1)),
            prev: Stamp::ZERO,
            flags: 0,
            value: Some(Bytes::from_static(b"v")),
            kind: Kind::Value,
        };
        let base = entry_hash("k", &e);
        let variants = [
            Entry {
                flags: 1,
                ..e.clone()
            },
            Entry {
                value: None,
                ..e.clone()
            },
            Entry {
                value: Some(Bytes::from_static(b"w")),
                ..e.clone()
            },
            Entry {
                prev: Stamp::new(Hlc(1), NodeId(2)),
                ..e.clone()
            },
            Entry {
                stamp: Stamp::new(Hlc(1), NodeId(2)),
                ..e.clone()
            },
        ];
        for v in &variants {
            assert_ne!(entry_hash("k", v), base);
        }
        assert_ne!(entry_hash("k2", &e), base);
    }
}
