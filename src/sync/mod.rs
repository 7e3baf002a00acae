//! `sync`: the replica state machine, with no IO.
//!
//! Owns what a replica decides: local writes (validated, stamped, applied,
//! then persisted and acknowledged), the handling of every protocol message,
//! per-peer progress, delta push, change-feed catch-up, anti-entropy,
//! tombstone collection and the partition policy. Inputs are method calls
//! carrying `now_ms` (physical milliseconds, from the caller); randomness
//! comes from a seed in the [`Config`]. Effects come out of
//! [`Replica::poll_output`] as [`Output`]s, in order: the driver (the
//! network layer, or the simulation) must make each `Persist` durable before
//! it carries out any output after it.
//!
//! # Protocol
//! * **Hello.** Each side of a new connection says hello: protocol version,
//!   cluster id, identity, how far it applied the other's feed, and whether
//!   it is rebuilding an empty state. A peer of another cluster or version is
//!   refused. A peer that is not rebuilding, and whose clock claim over our
//!   writes and whose own collection floor are both below a tombstone we
//!   collected by age (not stability), may still hold the value that
//!   tombstone deleted: it is told it is `Stale` (with our floor), and its
//!   data is ignored until it has resynced — dropped every entry older than
//!   the horizon, raised its floor to ours and asked for a full transfer —
//!   and said hello again.
//! * **Feed.** Every change a replica applies gets the next number of its
//!   own *index*. A replica streams to each peer the part of its feed the
//!   peer has not acknowledged, in bounded messages within a window of
//!   unacknowledged messages, carrying only the entries it wrote itself
//!   (every origin, from index 0, when the peer is rebuilding; that full
//!   transfer is exempt from the collection floor). Pushing a
//!   local write is the same thing as catching up after an outage: each write
//!   crosses each link once. A gap (a lost message) makes the receiver ask to
//!   `Resume`; silence makes the sender resend after `peer_timeout_ms`.
//! * **Anti-entropy.** Every `ae_interval_ms` (plus jitter), and after a
//!   catch-up completes, a replica sends its Merkle root to one random peer.
//!   Equal roots end the round. Otherwise the two sides alternate, each
//!   sending the fingerprints of the children of the nodes found to differ,
//!   down to the leaves, then entry summaries, then the entries that win on
//!   either side. This repairs whatever the feed missed, including writes
//!   that only travelled through a third replica (partial partitions).
//! * **Tombstones.** A replica's *frontier* is the greatest clock at or below
//!   which it holds every write: the least of its clock and, for every known
//!   peer, the clock the peer's feed reached here. Peers report their
//!   frontiers; a tombstone at or below every member's frontier is dropped,
//!   and the replica's garbage-collection floor is raised to it. An entry at
//!   or below the floor for a key that is absent is refused, since every
//!   member already holds it or something newer: a collected delete cannot
//!   come back. Tombstones older than the horizon are dropped regardless.
//!   Stability is only judged among known members: nodes that join later
//!   must start empty (they are rebuilt from a peer).
//! * **Recovery.** A replica that lost records (quarantined as damaged, or
//!   a whole store that could not be read) claims nothing (its feed ends
//!   `Recovering`, its frontier is zero) and asks every known peer for a
//!   full transfer;
//!   once every peer's transfer reached its end (or anti-entropy found
//!   equal roots) it holds whatever any of them held, and claims again.
//!   Otherwise a peer lacking one of its lost writes would count it as
//!   held, raise its floor above it, and refuse it for good (see
//!   `replica/recovery.rs`).
//! * **Clocks.** Each replica probes its peers' clocks every heartbeat; a
//!   replica whose clock a majority of members find off beyond the bound
//!   refuses client writes (see [`clock_offset`]).
//! * **Edges.** A node may be an edge (`Role::Edge`): it attaches to one
//!   server, whose feed to it carries every origin's entries, forwards its
//!   writes to it (`Forward`, answered by `Forwarded` once acknowledged),
//!   collects tombstones up to what its server calls stable (`View`), and
//!   catches up with a server it did not follow by anti-entropy
//!   (`Hello::tail`), dropping what the server collected meanwhile
//!   (`Collected`). Edges count for nothing the members decide; see
//!   `replica/edge.rs`.
//! * **Acknowledgement.** A write is acknowledged once durable here, or
//!   with `write_ack = quorum` once peers in a majority of regions
//!   acknowledged the feed index that carries it (`replica/ack.rs`).

pub mod clock_offset;
mod config;
mod durable;
pub mod failover;
pub mod membership;
mod replica;

pub use config::{
    Config, ConfigError, EdgeWrites, PartitionPolicy, Role, WriteAck, EDGES_MAX_DEFAULT,
    TOMBSTONE_HORIZON_MS_DEFAULT,
};
pub use durable::{
    DamagedRecord, DurableState, ForgottenMember, Loaded, PeerProgress, PersistBatch, Recovery,
    StoredRecord, CONFLICTS_STORED_MAX,
};
pub use replica::{
    AckFailure, BarrierError, ClockStatus, DocWrite, EdgeTxn, EdgeWritten, Event, FailoverState,
    ForgetError, ForwardError, ForwardReceipt, ImportReport, KnownPeer, LeaveError, Metrics,
    Output, PeerStatus, QuarantineStatus, RecoveryStatus, Refusal, RegionStatus, Replica,
    Resolution, Status, TxnEntry, TxnError, TxnFailure, TxnOp, TxnOutcome, WriteError,
    WriteReceipt, DOC_COMPACT_AT_LIMIT_DIVISOR, DOC_MERGES_WAITING_MAX, LOCAL_WRITES_MAX,
    QUARANTINE_MAX,
};
