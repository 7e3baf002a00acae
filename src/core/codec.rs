//! The wire codec of the replication protocol.
//!
//! Owns the message types that replicas exchange and their framing: a
//! 10-byte envelope (magic `MRDN`, protocol version, payload length) in front
//! of a postcard payload. Every frame is at most [`FRAME_BYTES_MAX`] bytes and
//! every list inside a message has a maximum length. Decoding arbitrary bytes
//! returns a [`CodecError`]; it never panics and never allocates more than
//! the input it was given (postcard borrows its input and serde caps
//! preallocation), which the fuzz targets and `tests/properties.rs` check.

use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::digest::{level_width, Fingerprint, FANOUT, LEAF_LEVEL, LEAVES};
use super::hlc::Hlc;
use super::types::{Entry, Hash, Key, NodeId, Stamp, KEY_BYTES_MAX, VALUE_BYTES_LIMIT};

/// First bytes of every frame.
pub const MAGIC: [u8; 4] = *b"MRDN";
/// The protocol version this build speaks. Version 2: roots and
/// fingerprints cover live entries only (tombstones left out); clock probes.
/// Version 4: read barriers (`ReadBarrier`, `ReadBarrierReply`). Version
/// 5: views (`View`: role and unreachable regions, for failover). Version
/// 6: edges (`Hello::edge`, `View::stable`, `Forward`, `Forwarded`).
/// Version 7: members that leave (`Forget`, `Forgotten`, `Hello::rejoined`).
/// Version 8: an edge's local writes handed over (`ForwardOp::HandOver`).
/// Version 9: documents (an entry's value may be a document, tag 2, or a
/// merge of documents, tag 3). Version 10: documents in a feed travel as
/// their changes since a version the receiver holds (`Feed::docs`); an
/// edge forwards document writes (`ForwardOp::Doc`); a node that may not
/// merge documents hands the versions to one that may (`DocVersions`).
pub const PROTOCOL_VERSION: u16 = 10;
/// Most heads a [`DocChanges`] names (as base or as result).
pub const DOC_CHANGES_HEADS_MAX: usize = 256;
/// Regions one `View` may name as unreachable.
pub const VIEW_REGIONS_MAX: usize = 64;
/// Envelope bytes before the payload.
pub const HEADER_BYTES: usize = 10;
/// Largest frame, envelope included: room for one entry of the largest value.
pub const FRAME_BYTES_MAX: usize = VALUE_BYTES_LIMIT + (1 << 20);
/// Most entries in one `Feed` or `AeEntries` message.
pub const ENTRIES_PER_MESSAGE_MAX: usize = 4096;
/// Most parent nodes in one `AeLevel` message (each carries 16 fingerprints).
pub const AE_PARENTS_MAX: usize = 4096;
/// Most leaves, summaries or wanted key hashes in one anti-entropy message.
pub const AE_SUMMARIES_MAX: usize = 65_536;
/// Longest region or node name, in bytes.
pub const NAME_BYTES_MAX: usize = 64;
/// Most operations in one forwarded write (a transaction's, at most).
pub const FORWARD_OPS_MAX: usize = 4096;

/// The identity of a cluster; peers of another cluster are refused.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default, Serialize, Deserialize)]
pub struct ClusterId(pub [u8; 16]);

/// The first message on every connection, in both directions.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// The protocol version the sender speaks; a peer speaking another is refused.
    pub protocol: u16,
    /// The sender's cluster; a peer of another cluster is refused.
    pub cluster: ClusterId,
    /// The sender's node id; refused unless it is the id the connection comes from.
    pub node: NodeId,
    /// The sender's node name, for operators (at most [`NAME_BYTES_MAX`] bytes).
    pub name: String,
    /// The sender's region (at most [`NAME_BYTES_MAX`] bytes).
    pub region: String,
    /// Where the sender's HTTP API listens (`ip:port`; empty: none), so that
    /// operators' tools can reach every member from one.
    pub api: String,
    /// The sender's last index.
    pub index: u64,
    /// How far the sender has durably applied the receiver's own feed.
    pub applied: u64,
    /// The sender asks for every origin's entries, not only the receiver's
    /// own (it is rebuilding an empty state).
    pub want_full: bool,
    /// The sender holds every write stamped at or below this clock.
    pub frontier: Hlc,
    /// The sender holds every write of the receiver stamped at or below this.
    pub received: Hlc,
    /// The sender's garbage-collection floor. A sender whose `received` and
    /// `gc_floor` are both below a tombstone the receiver collected by age
    /// (and that does not ask for a full transfer) may still hold the value
    /// that tombstone deleted: it is told it is [`Message::Stale`].
    pub gc_floor: Hlc,
    /// The sender is an edge: it attaches to one server, forwards its
    /// writes to it and takes every origin's changes from its feed.
    pub edge: bool,
    /// The sender (an edge that holds data) catches up by anti-entropy:
    /// start the feed to it at the current index, not at `applied`.
    pub tail: bool,
    /// The clock of the latest leave or forget of the sender that it
    /// resynced after ([`Hlc::ZERO`]: none): a member that forgot it
    /// earlier than this takes it back (see `sync::replica::members`).
    pub rejoined: Hlc,
}

/// A member the cluster forgets: it left, or an operator forgot it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForgetNotice {
    /// The member.
    pub node: NodeId,
    /// The clock of its leave or forget (the same on every member).
    pub at: Hlc,
    /// Its node name (at most [`NAME_BYTES_MAX`] bytes).
    pub name: String,
    /// Its region (at most [`NAME_BYTES_MAX`] bytes).
    pub region: String,
    /// It left by itself, rather than being forgotten.
    pub left: bool,
}

/// A contiguous range `(from, to]` of the sender's change feed: the current
/// entries changed in that range whose origin is the sender (all origins but
/// the receiver's when the receiver asked for a full transfer). Empty with
/// `from == to` it is a heartbeat.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Feed {
    /// The sender's index the range starts after (exclusive).
    pub from: u64,
    /// The sender's index the range ends at (inclusive).
    pub to: u64,
    /// Whether `to` is the sender's last index, and what it claims there.
    pub end: FeedEnd,
    /// The sender holds every write stamped at or below this clock.
    pub frontier: Hlc,
    /// The entries changed in the range, at most [`ENTRIES_PER_MESSAGE_MAX`].
    pub entries: Vec<(Key, Entry)>,
    /// Documents changed in the range, each as its changes since a version
    /// the receiver is known to hold (the rest travel whole, in
    /// `entries`); with `entries`, at most [`ENTRIES_PER_MESSAGE_MAX`].
    pub docs: Vec<DocChanges>,
}

/// A document entry as the changes since a version of it (`base`) that
/// the receiver holds: the receiver rebuilds the document at `base`,
/// takes the changes in, and checks the entry it made against `hash`
/// (see `sync::replica::doc_changes`). One it cannot rebuild is asked for
/// again, whole.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DocChanges {
    /// The key.
    pub key: Key,
    /// The entry's stamp.
    pub stamp: Stamp,
    /// The entry's `prev`.
    pub prev: Stamp,
    /// The entry's flags.
    pub flags: u64,
    /// The entry is a merge of documents (`Kind::Merge`), not a client's
    /// document (`Kind::Doc`).
    pub merge: bool,
    /// The heads of the version the changes follow (sorted).
    pub base: Vec<[u8; 32]>,
    /// automerge's encoded changes after `base`.
    pub changes: bytes::Bytes,
    /// The entry hash of the entry rebuilt.
    pub hash: Hash,
}

/// Where a [`Feed`] message stops, and what its sender claims there.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum FeedEnd {
    /// More of the feed follows: `to` is not the sender's last index.
    Partial,
    /// `to` is the sender's last index, and every write of the sender
    /// stamped at or below this clock (its clock then) has an index at or
    /// below `to`.
    Claim(Hlc),
    /// `to` is the sender's last index, and the sender claims nothing: it
    /// is recovering, and may lack writes of its own that a peer holds
    /// (its state is not yet all it should be).
    Recovering,
}

impl FeedEnd {
    /// True if the message reaches the end of the sender's feed.
    pub fn is_end(self) -> bool {
        self != FeedEnd::Partial
    }

    /// The clock claimed, if any.
    pub fn claim(self) -> Option<Hlc> {
        match self {
            FeedEnd::Claim(c) => Some(c),
            FeedEnd::Partial | FeedEnd::Recovering => None,
        }
    }
}

/// One entry as the leaf exchange of anti-entropy describes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    /// The key's 64-bit hash, big-endian.
    pub key_hash: [u8; 8],
    /// The stamp of the entry the sender holds for that key.
    pub stamp: Stamp,
    /// The first bytes of the entry hash, to tell apart equal stamps with different content.
    pub check: [u8; 4],
}

/// Everything replicas say to each other.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    /// Opens a connection: who the sender is and how far it got with the receiver.
    Hello(Hello),
    /// A range of the sender's change feed, or a heartbeat at its end.
    Feed(Feed),
    /// "Send your feed again from `from`" (a gap, or a resync when `full`).
    Resume {
        /// The index to resend from (exclusive): what the receiver has applied.
        from: u64,
        /// Send every origin's entries, not only the sender's own.
        full: bool,
    },
    /// "I durably applied your feed up to `applied`."
    Ack {
        /// The receiver's feed index, up to which the sender applied it.
        applied: u64,
        /// The sender holds every write stamped at or below this clock.
        frontier: Hlc,
    },
    /// "You may hold values whose tombstones I collected by age, up to
    /// `floor`: resync before your data is accepted."
    Stale {
        /// The greatest clock of a tombstone the sender collected by age.
        floor: Hlc,
    },
    /// Starts anti-entropy: the sender's root.
    AeRoot {
        /// The round's id, chosen by the replica that started it.
        session: u64,
        /// The sender's Merkle root over its live entries.
        root: Hash,
    },
    /// Ends anti-entropy: nothing (more) differs.
    AeDone {
        /// The round that ends.
        session: u64,
    },
    /// The sender's fingerprints of the children (at `level`) of `parents`
    /// (at `level - 1`), 16 per parent.
    AeLevel {
        /// The round this belongs to.
        session: u64,
        /// The tree level of the fingerprints (1 to the leaf level).
        level: u8,
        /// Indexes, at `level - 1`, of the nodes found to differ.
        parents: Vec<u32>,
        /// The children's fingerprints, 16 per parent, in the order of `parents`.
        hashes: Vec<Fingerprint>,
    },
    /// The sender's entries in the differing `leaves`.
    AeLeaves {
        /// The round this belongs to.
        session: u64,
        /// Indexes of the leaves found to differ.
        leaves: Vec<u32>,
        /// One summary per record the sender holds in those leaves, tombstones included.
        summaries: Vec<Summary>,
    },
    /// Entries the receiver lacks or holds older, and the key hashes the
    /// sender wants in return.
    AeEntries {
        /// The round this belongs to.
        session: u64,
        /// Entries that win over the receiver's (or that it lacks).
        entries: Vec<(Key, Entry)>,
        /// Key hashes (big-endian) whose entries the sender wants back; empty on
        /// all but the first message of a reply.
        want: Vec<[u8; 8]>,
    },
    /// "What time is it?": the sender's physical clock (ms) when it sent this.
    Probe {
        /// The sender's physical clock when it sent the probe, in ms.
        sent_ms: u64,
    },
    /// The answer to a probe: its `sent_ms`, and the answerer's physical
    /// clock when it answered.
    ProbeReply {
        /// The probe's `sent_ms`, echoed.
        sent_ms: u64,
        /// The answerer's physical clock when it answered, in ms.
        their_ms: u64,
    },
    /// A read barrier (`?consistent`): "send me what you hold under this
    /// scope", every origin's entries and tombstones, so that the asker
    /// holds, for the keys it reads, at least what the answerer holds.
    ReadBarrier {
        /// The asker's barrier, echoed in the answer.
        barrier: u64,
        /// The key, or the prefix when `prefix`.
        scope: String,
        /// `scope` is a prefix (every key under it), not one key.
        prefix: bool,
    },
    /// The answer to a `ReadBarrier`.
    ReadBarrierReply {
        /// The barrier asked for.
        barrier: u64,
        /// The entries, or why there are none.
        answer: BarrierAnswer,
    },
    /// The sender's role and the regions it cannot reach.
    View(View),
    /// An edge's write, for its server to make as its own (see
    /// `sync::replica::edge`): applied all or nothing, each `Expect`
    /// checked first.
    Forward {
        /// The edge's number for it, echoed in the answer.
        id: u64,
        /// The operations, in order.
        ops: Vec<ForwardOp>,
        /// Acknowledge once a majority of regions holds it (`Some(true)`),
        /// once durable at the server (`Some(false)`), or as the server's
        /// own writes are (`None`).
        quorum: Option<bool>,
    },
    /// A server tells an edge, in an anti-entropy round, that it lacks
    /// these records of the edge's and that they are at or below its
    /// collection floor: their keys were deleted and the deletes collected
    /// while the edge was away. The edge drops them.
    Collected {
        /// The round this belongs to.
        session: u64,
        /// The server's collection floor.
        floor: Hlc,
        /// The edge's records, as its summaries named them.
        records: Vec<Summary>,
    },
    /// The server's answer to a `Forward`, sent once it is acknowledged.
    Forwarded {
        /// The forward's number.
        id: u64,
        /// What became of it.
        outcome: ForwardOutcome,
    },
    /// Versions of documents that met at the sender, which may not write
    /// their merge (a standby, a node that left or rebuilds a lost store):
    /// the receiver, a member that takes writes, merges them as entries
    /// from a peer (see `sync::replica::documents`). At most
    /// [`ENTRIES_PER_MESSAGE_MAX`].
    DocVersions {
        /// The versions that lost by stamp at the sender.
        entries: Vec<(Key, Entry)>,
    },
    /// These members are forgotten (a member leaving sends its own): they
    /// no longer count for quorum, reachability or stability. At most
    /// [`FORGOTTEN_NOTICES_MAX`].
    Forget {
        /// The members, each with the clock of its leave or forget.
        members: Vec<ForgetNotice>,
    },
    /// "The cluster forgot you at `at`, and may have collected deletes you
    /// never saw, up to `floor`: drop what you hold at or below it and
    /// take our state again before your data counts."
    Forgotten {
        /// The clock of the leave or forget.
        at: Hlc,
        /// The sender's collection floor.
        floor: Hlc,
    },
}

/// Most members one `Forget` names (and most members a node keeps forgotten).
pub const FORGOTTEN_NOTICES_MAX: usize = 1_024;

/// One operation of a forwarded write.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ForwardOp {
    /// The key's live version at the server must carry this stamp
    /// ([`Stamp::ZERO`]: the key must not be live): what the edge saw.
    Expect {
        /// The key.
        key: Key,
        /// The stamp of the version the edge saw.
        stamp: Stamp,
    },
    /// Writes the key.
    Set {
        /// The key.
        key: Key,
        /// The value.
        value: bytes::Bytes,
        /// Consul's flags.
        flags: u64,
    },
    /// Deletes the key.
    Delete {
        /// The key.
        key: Key,
    },
    /// A write the edge took while no server was connected, stamped by
    /// the edge (see `sync::replica::handover`): the server makes it as its
    /// own write unless it holds a version of the key (a value or a
    /// delete) stamped at or above `stamp`, and skips it otherwise. It
    /// never fails the forwarded write it is part of.
    HandOver {
        /// The key.
        key: Key,
        /// The edge's stamp of the write.
        stamp: Stamp,
        /// The value; `None`: a delete.
        value: Option<bytes::Bytes>,
        /// Consul's flags.
        flags: u64,
    },
    /// A document write (see `sync::replica::documents`), made by the
    /// server against the document it holds.
    Doc {
        /// The key.
        key: Key,
        /// The JSON: a whole document, or an RFC 7386 merge patch.
        json: bytes::Bytes,
        /// `json` is a merge patch.
        patch: bool,
        /// Consul's flags.
        flags: u64,
    },
    /// Deletes every key the server knows under the prefix, at most `keys_max`.
    DeleteTree {
        /// The prefix.
        prefix: String,
        /// The most keys it may delete; more refuses the whole write.
        keys_max: u32,
    },
}

/// What became of a forwarded write.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ForwardOutcome {
    /// Made and acknowledged.
    Done {
        /// Keys written.
        count: u64,
        /// The last keys written (all of them, up to
        /// [`ENTRIES_PER_MESSAGE_MAX`]), with their stamps, in order.
        written: Vec<(Key, Stamp)>,
    },
    /// An `Expect` failed: the key changed since the edge saw it. Nothing was written.
    Changed {
        /// The key.
        key: Key,
    },
    /// The server refused it. Nothing was written.
    Refused {
        /// What kind of refusal.
        class: RefusalClass,
        /// Why, in the server's words.
        message: String,
    },
    /// Made, but not acknowledged as asked (a quorum not reached in time).
    NotAcknowledged(String),
}

/// What kind of refusal a forwarded write met, for the edge to answer its
/// client as the server would have.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RefusalClass {
    /// The request is invalid (a key or a value).
    Invalid,
    /// It is too large (a value, or a prefix delete of too many keys).
    TooLarge,
    /// The server cannot take writes now (quorum, standby, clock, rebuild).
    Unavailable,
    /// Too many writes are waiting: try again later.
    Busy,
}

/// Longest refusal message a `Forwarded` carries.
pub const FORWARD_MESSAGE_BYTES_MAX: usize = 1024;

/// What a node tells each peer every heartbeat: whether it takes client
/// writes, and which regions it cannot reach. Standby regions judge
/// prioritized failover together from these (see [`crate::sync::failover`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct View {
    /// The sender takes client writes: it is active, or a promoted standby.
    pub active: bool,
    /// Regions none of whose members the sender is in contact with.
    pub unreachable: Vec<String>,
    /// Every member the sender knows holds every write stamped at or below
    /// this: no write at or below it is still on its way to anyone. An
    /// edge collects its tombstones up to it (see `replica/edge.rs`).
    pub stable: Hlc,
}

/// What a node answers to a read barrier.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum BarrierAnswer {
    /// Every entry it holds under the scope, tombstones included (each
    /// checked before it was sent).
    Entries(Vec<(Key, Entry)>),
    /// It is recovering lost or damaged records: it may lack writes it
    /// acknowledged, so a barrier cannot rely on it.
    Recovering,
    /// More is held under the scope than one answer carries.
    TooLarge {
        /// Keys under the scope, tombstones included.
        keys: u64,
    },
}

impl Message {
    /// A short name for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Message::Hello(_) => "hello",
            Message::Feed(_) => "feed",
            Message::Resume { .. } => "resume",
            Message::Stale { .. } => "stale",
            Message::Ack { .. } => "ack",
            Message::AeRoot { .. } => "ae_root",
            Message::AeDone { .. } => "ae_done",
            Message::AeLevel { .. } => "ae_level",
            Message::AeLeaves { .. } => "ae_leaves",
            Message::AeEntries { .. } => "ae_entries",
            Message::Probe { .. } => "probe",
            Message::ProbeReply { .. } => "probe_reply",
            Message::ReadBarrier { .. } => "read_barrier",
            Message::ReadBarrierReply { .. } => "read_barrier_reply",
            Message::View(_) => "view",
            Message::Forward { .. } => "forward",
            Message::Collected { .. } => "collected",
            Message::Forwarded { .. } => "forwarded",
            Message::Forget { .. } => "forget",
            Message::Forgotten { .. } => "forgotten",
            Message::DocVersions { .. } => "doc_versions",
        }
    }

    /// Checks the limits that the types alone do not.
    pub fn validate(&self) -> Result<(), CodecError> {
        let bad = |what: String| Err(CodecError::Invalid(what));
        let entries_ok = |entries: &[(Key, Entry)]| -> Result<(), CodecError> {
            if entries.len() > ENTRIES_PER_MESSAGE_MAX {
                return bad(format!(
                    "{} entries, more than {ENTRIES_PER_MESSAGE_MAX}",
                    entries.len()
                ));
            }
            for (k, e) in entries {
                if e.value_len() > VALUE_BYTES_LIMIT {
                    return bad(format!("value of {k:?} is {} bytes", e.value_len()));
                }
                if e.stamp == Stamp::ZERO {
                    return bad(format!("entry of {k:?} has the zero stamp"));
                }
            }
            Ok(())
        };
        match self {
            Message::Hello(h) => {
                if h.name.len() > NAME_BYTES_MAX
                    || h.region.len() > NAME_BYTES_MAX
                    || h.api.len() > NAME_BYTES_MAX
                {
                    return bad(format!(
                        "name, region or api address longer than {NAME_BYTES_MAX} bytes"
                    ));
                }
                Ok(())
            }
            Message::Forget { members } => {
                if members.len() > FORGOTTEN_NOTICES_MAX {
                    return bad(format!(
                        "{} forgotten members, more than {FORGOTTEN_NOTICES_MAX}",
                        members.len()
                    ));
                }
                if let Some(m) = members
                    .iter()
                    .find(|m| m.name.len() > NAME_BYTES_MAX || m.region.len() > NAME_BYTES_MAX)
                {
                    return bad(format!(
                        "forgotten member {}: name or region longer than {NAME_BYTES_MAX} bytes",
                        m.node
                    ));
                }
                Ok(())
            }
            Message::Feed(f) => {
                if f.to < f.from {
                    return bad(format!("feed range ({}, {}] is reversed", f.from, f.to));
                }
                entries_ok(&f.entries)?;
                if f.entries.len() + f.docs.len() > ENTRIES_PER_MESSAGE_MAX {
                    return bad(format!(
                        "{} entries and {} documents, more than {ENTRIES_PER_MESSAGE_MAX}",
                        f.entries.len(),
                        f.docs.len()
                    ));
                }
                for d in &f.docs {
                    if d.changes.len() > VALUE_BYTES_LIMIT {
                        return bad(format!(
                            "changes of {:?} are {} bytes",
                            d.key,
                            d.changes.len()
                        ));
                    }
                    if d.base.len() > DOC_CHANGES_HEADS_MAX {
                        return bad(format!(
                            "changes of {:?} follow {} heads",
                            d.key,
                            d.base.len()
                        ));
                    }
                    if d.stamp == Stamp::ZERO {
                        return bad(format!("changes of {:?} have the zero stamp", d.key));
                    }
                }
                Ok(())
            }
            Message::AeLevel {
                level,
                parents,
                hashes,
                ..
            } => {
                if *level == 0 || *level > LEAF_LEVEL {
                    return bad(format!("level {level} is outside 1..={LEAF_LEVEL}"));
                }
                if parents.len() > AE_PARENTS_MAX {
                    return bad(format!(
                        "{} parents, more than {AE_PARENTS_MAX}",
                        parents.len()
                    ));
                }
                if hashes.len() != parents.len() * FANOUT {
                    return bad(format!(
                        "{} fingerprints for {} parents",
                        hashes.len(),
                        parents.len()
                    ));
                }
                let width = level_width(level - 1) as u32;
                if let Some(p) = parents.iter().find(|p| **p >= width) {
                    return bad(format!("parent {p} does not exist at level {}", level - 1));
                }
                Ok(())
            }
            Message::AeLeaves {
                leaves, summaries, ..
            } => {
                if leaves.len() > AE_SUMMARIES_MAX || summaries.len() > AE_SUMMARIES_MAX {
                    return bad(format!(
                        "{} leaves and {} summaries, more than {AE_SUMMARIES_MAX}",
                        leaves.len(),
                        summaries.len()
                    ));
                }
                if let Some(l) = leaves.iter().find(|l| **l as usize >= LEAVES) {
                    return bad(format!("leaf {l} does not exist"));
                }
                Ok(())
            }
            Message::AeEntries { entries, want, .. } => {
                if want.len() > AE_SUMMARIES_MAX {
                    return bad(format!(
                        "{} wanted keys, more than {AE_SUMMARIES_MAX}",
                        want.len()
                    ));
                }
                entries_ok(entries)
            }
            Message::Resume { .. }
            | Message::Stale { .. }
            | Message::Ack { .. }
            | Message::AeRoot { .. }
            | Message::AeDone { .. }
            | Message::Probe { .. }
            | Message::ProbeReply { .. }
            | Message::ReadBarrierReply {
                answer: BarrierAnswer::Recovering | BarrierAnswer::TooLarge { .. },
                ..
            } => Ok(()),
            Message::View(v) => {
                if v.unreachable.len() > VIEW_REGIONS_MAX
                    || v.unreachable.iter().any(|r| r.len() > NAME_BYTES_MAX)
                {
                    return bad(format!(
                        "a view of {} regions (at most {VIEW_REGIONS_MAX} names of {NAME_BYTES_MAX} bytes)",
                        v.unreachable.len()
                    ));
                }
                Ok(())
            }
            Message::ReadBarrier { scope, .. } => {
                if scope.len() > KEY_BYTES_MAX {
                    return bad(format!("a barrier scope of {} bytes", scope.len()));
                }
                Ok(())
            }
            Message::ReadBarrierReply {
                answer: BarrierAnswer::Entries(entries),
                ..
            } => entries_ok(entries),
            Message::Forward { ops, .. } => {
                if ops.len() > FORWARD_OPS_MAX {
                    return bad(format!(
                        "{} forwarded operations, more than {FORWARD_OPS_MAX}",
                        ops.len()
                    ));
                }
                for op in ops {
                    match op {
                        ForwardOp::Set { key, value, .. } if value.len() > VALUE_BYTES_LIMIT => {
                            return bad(format!("value of {key:?} is {} bytes", value.len()));
                        }
                        ForwardOp::Doc { key, json, .. } if json.len() > VALUE_BYTES_LIMIT => {
                            return bad(format!("document of {key:?} is {} bytes", json.len()));
                        }
                        ForwardOp::HandOver {
                            key,
                            value: Some(value),
                            ..
                        } if value.len() > VALUE_BYTES_LIMIT => {
                            return bad(format!("value of {key:?} is {} bytes", value.len()));
                        }
                        ForwardOp::DeleteTree { prefix, .. } if prefix.len() > KEY_BYTES_MAX => {
                            return bad(format!("a prefix of {} bytes", prefix.len()));
                        }
                        _ => {}
                    }
                }
                Ok(())
            }
            Message::Forgotten { .. } => Ok(()),
            Message::DocVersions { entries } => entries_ok(entries),
            Message::Collected { records, .. } => {
                if records.len() > AE_SUMMARIES_MAX {
                    return bad(format!(
                        "{} collected records, more than {AE_SUMMARIES_MAX}",
                        records.len()
                    ));
                }
                Ok(())
            }
            Message::Forwarded { outcome, .. } => match outcome {
                ForwardOutcome::Done { written, .. } if written.len() > ENTRIES_PER_MESSAGE_MAX => {
                    bad(format!(
                        "{} keys written, more than {ENTRIES_PER_MESSAGE_MAX}",
                        written.len()
                    ))
                }
                ForwardOutcome::Refused { message: m, .. } | ForwardOutcome::NotAcknowledged(m)
                    if m.len() > FORWARD_MESSAGE_BYTES_MAX =>
                {
                    bad(format!("a message of {} bytes", m.len()))
                }
                _ => Ok(()),
            },
        }
    }
}

/// Why a frame could not be encoded or decoded.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum CodecError {
    /// Fewer bytes than the envelope were given.
    #[error("frame is {len} bytes, shorter than the {HEADER_BYTES}-byte envelope")]
    Truncated {
        /// Bytes given.
        len: usize,
    },
    /// The frame does not start with [`MAGIC`]: not a Meridian peer, or a desynchronised stream.
    #[error("bad magic {found:02x?}, expected {MAGIC:02x?}")]
    BadMagic {
        /// The first four bytes found.
        found: [u8; 4],
    },
    /// The envelope carries a protocol version other than [`PROTOCOL_VERSION`].
    #[error("unsupported protocol version {found} (this build speaks {PROTOCOL_VERSION})")]
    UnsupportedVersion {
        /// The version in the envelope.
        found: u16,
    },
    /// The frame, envelope included, would exceed [`FRAME_BYTES_MAX`].
    #[error("frame of {len} bytes exceeds the limit of {FRAME_BYTES_MAX} bytes")]
    TooLarge {
        /// The frame's length in bytes, envelope included.
        len: usize,
    },
    /// The payload is not as long as the envelope declares.
    #[error("envelope says {declared} payload bytes but {actual} follow")]
    LengthMismatch {
        /// Payload bytes the envelope declares.
        declared: usize,
        /// Payload bytes present.
        actual: usize,
    },
    /// The payload could not be encoded or decoded as a message, or bytes follow it.
    #[error("malformed payload: {0}")]
    Malformed(String),
    /// The message decoded but breaks a limit (list length, level, leaf, value size, zero stamp).
    #[error("invalid message: {0}")]
    Invalid(String),
}

/// Parses an envelope and returns the payload length that follows it. A
/// stream reader calls this on the first [`HEADER_BYTES`] bytes, then reads
/// exactly that many more.
pub fn decode_header(header: &[u8]) -> Result<usize, CodecError> {
    if header.len() < HEADER_BYTES {
        return Err(CodecError::Truncated { len: header.len() });
    }
    let mut magic = [0u8; 4];
    magic.copy_from_slice(&header[..4]);
    if magic != MAGIC {
        return Err(CodecError::BadMagic { found: magic });
    }
    let version = u16::from_le_bytes([header[4], header[5]]);
    if version != PROTOCOL_VERSION {
        return Err(CodecError::UnsupportedVersion { found: version });
    }
    let len = u32::from_le_bytes([header[6], header[7], header[8], header[9]]) as usize;
    if len + HEADER_BYTES > FRAME_BYTES_MAX {
        return Err(CodecError::TooLarge {
            len: len + HEADER_BYTES,
        });
    }
    Ok(len)
}

/// Encodes `msg` into one frame.
pub fn encode(msg: &Message) -> Result<Vec<u8>, CodecError> {
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&PROTOCOL_VERSION.to_le_bytes());
    out.extend_from_slice(&[0u8; 4]);
    let mut out =
        postcard::to_extend(msg, out).map_err(|e| CodecError::Malformed(e.to_string()))?;
    let payload = out.len() - HEADER_BYTES;
    if out.len() > FRAME_BYTES_MAX {
        return Err(CodecError::TooLarge { len: out.len() });
    }
    out[6..10].copy_from_slice(&(payload as u32).to_le_bytes());
    Ok(out)
}

/// Decodes one whole frame and validates the message.
pub fn decode(frame: &[u8]) -> Result<Message, CodecError> {
    if frame.len() > FRAME_BYTES_MAX {
        return Err(CodecError::TooLarge { len: frame.len() });
    }
    let declared = decode_header(frame)?;
    let payload = &frame[HEADER_BYTES..];
    if payload.len() != declared {
        return Err(CodecError::LengthMismatch {
            declared,
            actual: payload.len(),
        });
    }
    let (msg, rest) = postcard::take_from_bytes::<Message>(payload)
        .map_err(|e| CodecError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(CodecError::Malformed(format!(
            "{} bytes after the message",
            rest.len()
        )));
    }
    msg.validate()?;
    Ok(msg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::types::Kind;
    use bytes::Bytes;

    fn sample() -> Message {
        Message::Feed(Feed {
            from: 3,
            to: 9,
            end: FeedEnd::Claim(Hlc(77)),
            frontier: Hlc(70),
            entries: vec![(
                Key::new("app/db/url").unwrap(),
                Entry {
                    stamp: Stamp::new(Hlc(70), NodeId(4)),
                    prev: Stamp::ZERO,
                    flags: 42,
                    value: Some(Bytes::from_static(b"postgres://")),
                    kind: Kind::Value,
                },
            )],
            docs: vec![DocChanges {
                key: Key::new("svc/api").unwrap(),
                stamp: Stamp::new(Hlc(71), NodeId(4)),
                prev: Stamp::new(Hlc(60), NodeId(4)),
                flags: 0,
                merge: false,
                base: vec![[7; 32]],
                changes: Bytes::from_static(b"changes"),
                hash: [1; 32],
            }],
        })
    }

    #[test]
    fn round_trip() {
        let m = sample();
        let f = encode(&m).unwrap();
        assert_eq!(decode_header(&f).unwrap(), f.len() - HEADER_BYTES);
        assert_eq!(decode(&f).unwrap(), m);
    }

    #[test]
    fn refuses_bad_envelopes() {
        let f = encode(&sample()).unwrap();
        assert!(matches!(decode(&f[..5]), Err(CodecError::Truncated { .. })));
        let mut g = f.clone();
        g[0] = b'X';
        assert!(matches!(decode(&g), Err(CodecError::BadMagic { .. })));
        let mut g = f.clone();
        g[4] = 99;
        assert!(matches!(
            decode(&g),
            Err(CodecError::UnsupportedVersion { found: 99 })
        ));
        let mut g = f.clone();
        g.push(0);
        assert!(matches!(decode(&g), Err(CodecError::LengthMismatch { .. })));
        let mut g = f.clone();
        g[6..10].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(decode(&g), Err(CodecError::TooLarge { .. })));
    }

    #[test]
    fn refuses_invalid_keys_and_counts() {
        // A key with a NUL byte, spliced into an otherwise valid frame.
        let mut m = sample();
        if let Message::Feed(f) = &mut m {
            f.entries[0].0 = Key::new("a_b").unwrap();
        }
        let mut f = encode(&m).unwrap();
        let at = f.windows(3).position(|w| w == b"a_b").unwrap();
        f[at + 1] = 0;
        assert!(matches!(decode(&f), Err(CodecError::Malformed(_))));

        let m = Message::AeLevel {
            session: 1,
            level: 1,
            parents: vec![0],
            hashes: vec![[0; 6]; 15],
        };
        assert!(matches!(
            decode(&encode(&m).unwrap()),
            Err(CodecError::Invalid(_))
        ));
        let m = Message::AeLevel {
            session: 1,
            level: 2,
            parents: vec![16],
            hashes: vec![[0; 6]; 16],
        };
        assert!(matches!(
            decode(&encode(&m).unwrap()),
            Err(CodecError::Invalid(_))
        ));
    }
}
