//! The replica state machine (see the `sync` module docs for the protocol).

mod ack;
mod clock;
mod integrity;
mod recovery;

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use bytes::Bytes;
use thiserror::Error;

use super::clock_offset::{Judgement, PeerClock};
use super::config::{Config, ConfigError, PartitionPolicy, WriteAck};
use super::durable::{DurableState, Loaded, PeerProgress, PersistBatch, Recovery, StoredRecord};
use crate::core::codec::{
    Feed, FeedEnd, Hello, Message, Summary, AE_SUMMARIES_MAX, ENTRIES_PER_MESSAGE_MAX,
    PROTOCOL_VERSION,
};
use crate::core::digest::{Fingerprint, LEAF_LEVEL};
use crate::core::hlc::{Clock, ClockError, Hlc};
use crate::core::map::{LwwMap, Merged, Record};
use crate::core::rng::Rng;
use crate::core::types::{Check, Entry, Hash, Key, KeyError, NodeId, Stamp, ValueError};
pub use ack::AckFailure;
pub use clock::ClockStatus;
pub use integrity::{QuarantineStatus, Resolution, QUARANTINE_MAX};
use recovery::OwnWrites;
pub use recovery::RecoveryStatus;

/// Why a client write was refused. Nothing was changed.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum WriteError {
    #[error("invalid key: {0}")]
    Key(#[from] KeyError),
    #[error("invalid value: {0}")]
    Value(#[from] ValueError),
    #[error("clock: {0}")]
    Clock(#[from] ClockError),
    #[error(
        "no quorum: {reachable} of {total} regions reachable and partition_policy is \"quorum\""
    )]
    NoQuorum { reachable: usize, total: usize },
    #[error(
        "this node is a standby: write to an active node, or promote this one (`meridian promote`)"
    )]
    Standby,
    #[error("check-and-set failed: key's modify index is {actual}, not {expected}")]
    CasMismatch { expected: u64, actual: u64 },
    #[error(
        "{count} keys under the prefix, more than {max} in one request: delete narrower prefixes"
    )]
    TooManyKeys { count: usize, max: usize },
    #[error("this node lost its store and is rebuilding it from a peer: writes resume once the rebuild is done")]
    Rebuilding,
    #[error("more than {max} writes are waiting for a quorum of regions: try again later")]
    TooManyPending { max: usize },
    /// A majority of the members' clocks disagree with this node's: its
    /// stamps would lose (a slow clock) or never leave it (a fast one).
    #[error(
        "this node's clock is {} ms {} {disagreeing} of the {} other members (bound {bound_ms} ms): \
         client writes are refused until its clock is fixed",
        offset_ms.unsigned_abs(),
        if *offset_ms > 0 { "behind" } else { "ahead of" },
        members - 1
    )]
    ClockOffset {
        /// The others' clocks minus this node's.
        offset_ms: i64,
        disagreeing: usize,
        members: usize,
        bound_ms: u64,
    },
}

/// A write accepted by the replica. It is acknowledged (durable) once the
/// `Persist` emitted with it is, which the replica signals by the
/// [`Output::Acknowledge`] that follows that `Persist`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteReceipt {
    pub key: Key,
    pub stamp: Stamp,
    pub index: u64,
}

/// Why a peer was refused before any data was exchanged.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum Refusal {
    #[error("peer speaks protocol {found}, we speak {PROTOCOL_VERSION}")]
    Protocol { found: u16 },
    #[error("peer belongs to another cluster")]
    Cluster,
    #[error("peer says it is node {claimed}, the connection is from {actual}")]
    Identity { claimed: NodeId, actual: NodeId },
    #[error("a node may not connect to itself")]
    SelfConnection,
}

/// Something operators should hear about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A peer's stamp ran ahead of our clock by more than the bound; its message was refused.
    ClockSkew { peer: NodeId, ahead_ms: u64 },
    /// A peer was refused.
    PeerRefused { peer: NodeId, reason: Refusal },
    /// A peer lost contact before a tombstone we collected by age was written; it was told to resync.
    PeerStale { peer: NodeId },
    /// This replica was told it is stale: it dropped every entry older than
    /// the horizon and rebuilds from `from`.
    Resynced { from: NodeId, dropped: usize },
    /// Two different entries carried the same stamp (a bug or corruption).
    StampCollision { key: Key },
    /// A peer's hello was accepted: it is connected.
    PeerUp {
        peer: NodeId,
        name: String,
        region: String,
    },
    /// The connection to a peer was lost.
    PeerDown {
        peer: NodeId,
        name: String,
        region: String,
    },
    /// No peer of this region is reachable any more (a partition, from here).
    PartitionDetected { region: String },
    /// A peer of this region is reachable again after `partition_ms`.
    PartitionEnded { region: String, partition_ms: u64 },
    /// After a partition ended, this replica and a peer of that region were
    /// found to hold equal state: `keys_exchanged` entries crossed (applied
    /// here or sent from here) since the end, in `converge_ms`.
    PartitionHealed {
        region: String,
        partition_ms: u64,
        keys_exchanged: u64,
        converge_ms: u64,
    },
    /// Anti-entropy found this replica's root differs from a peer's.
    DivergenceFound { peer: NodeId },
    /// Anti-entropy applied entries from a peer that the push had missed.
    DivergenceRepaired { peer: NodeId, keys: u64 },
    /// A record failed its check (read back from the store, before it was
    /// sent or served, or in the scrub): it is quarantined until repaired.
    RecordQuarantined { key: String, reason: String },
    /// A quarantined record's quarantine ended.
    RecordRepaired { key: String, how: Resolution },
    /// The store could not be read at all: this node starts empty under
    /// its own id and rebuilds from a peer, refusing writes until then.
    StoreLost,
    /// Records were lost (`cause`): this replica claims nothing and takes
    /// every known peer's state (see [`recovery`]).
    RecoveryStarted { cause: Recovery },
    /// Every known peer's state (`peers` of them) was taken: this replica
    /// claims again.
    Recovered { cause: Recovery, peers: usize },
    /// The judgement of this node's clock changed: `disagreeing` of the
    /// `members` (this one included) are more than the bound off from it
    /// (`offset_ms`: theirs minus ours), and `off` when they are a majority
    /// (client writes are refused).
    ClockOffset {
        offset_ms: i64,
        disagreeing: usize,
        members: usize,
        off: bool,
    },
}

/// An effect for the driver to carry out, in order: an output may be carried
/// out only once every `Persist` before it is durable.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    Persist(PersistBatch),
    Send {
        to: NodeId,
        msg: Message,
    },
    /// A client write is durable (here, or in a majority of regions when
    /// it asked for a quorum): complete it.
    Acknowledge(WriteReceipt),
    /// A client write is not acknowledged: it is written here but not as
    /// durable as it asked (see [`AckFailure`]). Complete it with an error.
    Unacknowledged {
        receipt: WriteReceipt,
        reason: AckFailure,
    },
    /// Changes up to this index are durable: wake watchers.
    Notify {
        index: u64,
    },
    /// A record was found damaged in memory: read its stored copy (once
    /// every persist issued before this output is durable) and hand it to
    /// [`Replica::read_back`].
    ReadBack {
        key: Key,
    },
    /// Close the connection to a peer.
    Disconnect {
        peer: NodeId,
        reason: Refusal,
    },
    Event(Event),
}

/// Counters for metrics and for tests that must tell paths apart.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Metrics {
    pub local_writes: u64,
    pub feed_messages_in: u64,
    pub feed_entries_applied: u64,
    pub feed_gaps: u64,
    pub feed_rewinds: u64,
    pub ae_rounds_started: u64,
    pub ae_rounds_equal: u64,
    pub ae_entries_sent: u64,
    pub ae_entries_applied: u64,
    pub feed_entries_sent: u64,
    pub below_floor_refused: u64,
    pub clock_skew_refusals: u64,
    pub peers_refused: u64,
    pub stale_peers: u64,
    pub resyncs: u64,
    /// Records damaged in memory repaired from their copies on disk.
    pub records_read_back: u64,
    /// Recoveries from damage or a lost store begun, and those complete.
    pub recoveries_started: u64,
    pub recoveries_completed: u64,
    pub tombstones_collected: u64,
    pub messages_ignored: u64,
    pub messages_invalid: u64,
    /// Records quarantined because they failed their check.
    pub records_quarantined: u64,
    /// Quarantines ended (repaired, overwritten, or found moot).
    pub records_repaired: u64,
    /// Of the quarantined, those found damaged in memory (not on load).
    pub damage_found_in_memory: u64,
    /// Records verified by the background scrub, and its completed passes.
    pub records_scrubbed: u64,
    pub scrub_passes: u64,
    /// Records read back with indexes that could not be right (renumbered).
    pub records_renumbered: u64,
}

/// What the replica knows of one peer.
#[derive(Debug, Clone, Default)]
struct Peer {
    region: String,
    /// Where its HTTP API listens, as its hello said.
    api: String,
    name: String,
    /// Its collection floor, as its last hello said.
    gc_floor: Hlc,
    /// The transport swapped the connection: the link restarts, but the
    /// peer was never out of reach (no down/up or partition events).
    swapping: bool,
    /// The transport says a connection is up.
    transport: bool,
    /// The peer showed it accepted our hello (it sent us something else).
    hello_confirmed: bool,
    /// A connection is up and the peer's hello was accepted.
    ready: bool,
    /// The peer was found stale; its data is ignored until it says hello again.
    stale: bool,
    // Their feed, to us.
    /// Durable, contiguous: their feed index up to which we applied their entries.
    applied: u64,
    /// Durable: every write of theirs stamped at or below this is held here.
    received: Hlc,
    /// When we last held everything they had (a contiguous feed that reached their index).
    in_sync_ms: u64,
    /// Their index when they said hello, and when.
    their_index: u64,
    hello_ms: u64,
    caught_up: bool,
    resume_asked_ms: Option<u64>,
    // Our feed, to them.
    acked: u64,
    sent: u64,
    /// The `to` of each unacknowledged feed message.
    in_flight: VecDeque<u64>,
    /// They asked for a full transfer: send every origin's entries (not
    /// only ours) up to this index, and all of them while we recover (what
    /// we take back belongs to the transfer; see `pump`).
    full_until: Option<u64>,
    last_progress_ms: u64,
    last_sent_ms: u64,
    // What they told us.
    /// They hold every write stamped at or below this.
    frontier: Hlc,
    last_heard_ms: u64,
    /// Round trips that estimate their clock's offset from ours.
    clock: PeerClock,
    /// Heard from within the contact timeout (or mid-swap): what makes its
    /// region reachable.
    in_contact: bool,
    /// When we last refused a message of theirs whose stamps ran too far
    /// ahead of our clock, and by how much (0: never).
    refused_ms: u64,
    refused_ahead_ms: u64,
}

impl Peer {
    /// Forgets the state of the link (its connection is gone or replaced):
    /// the next hello starts it afresh.
    fn reset_link(&mut self) {
        self.ready = false;
        self.transport = false;
        self.hello_confirmed = false;
        self.in_flight.clear();
        self.resume_asked_ms = None;
    }
}

#[derive(Debug, Clone, Copy)]
struct AeSession {
    id: u64,
    peer: NodeId,
    started_ms: u64,
    /// The peer answered with a level: the roots differed.
    diverged: bool,
}

/// A region whose partition ended, until equal state is confirmed with it.
#[derive(Debug, Clone)]
struct Healing {
    ended_ms: u64,
    partition_ms: u64,
    /// `entries_moved()` when it ended.
    moved_at_end: u64,
}

/// Per-peer view for status reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerStatus {
    pub node: NodeId,
    pub name: String,
    pub region: String,
    /// Its HTTP API address (`ip:port`), empty if it has none.
    pub api: String,
    pub connected: bool,
    /// Their index at hello minus what we applied of their feed.
    pub lag_index: u64,
    /// When this replica last held everything the peer had (physical ms;
    /// 0: never). The sync lag in time is `now - in_sync_at_ms`.
    pub in_sync_at_ms: u64,
    /// When its current connection's hello arrived (physical ms; 0: never).
    pub connected_at_ms: u64,
    pub last_heard_ms: u64,
    /// Our feed up to here is acknowledged by them.
    pub acked: u64,
    /// Their feed up to here is applied here.
    pub applied: u64,
    /// Every write of theirs stamped at or below this is held here.
    pub received: Hlc,
    /// They hold every write stamped at or below this (as they last said).
    pub frontier: Hlc,
    /// Their clock minus ours (ms), and the round trip of that estimate.
    pub clock_offset_ms: Option<i64>,
    pub rtt_ms: Option<u64>,
    /// When we last refused their stamps as too far ahead of our clock
    /// (physical ms; 0: never), and by how much.
    pub refused_at_ms: u64,
    pub refused_ahead_ms: u64,
}

/// Whether a region is reachable, and since when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegionStatus {
    pub region: String,
    pub reachable: bool,
    /// Physical time (ms) of the last change of `reachable`.
    pub since_ms: u64,
}

/// What an import of backup entries did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ImportReport {
    /// Entries that changed this replica's state.
    pub applied: u64,
    /// Entries this replica already held, or held something newer for.
    pub unchanged: u64,
    /// Entries of absent keys at or below the collection floor.
    pub refused_floor: u64,
    /// Entries stamped too far ahead of this replica's clock.
    pub refused_clock: u64,
}

/// A replica's status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub node: NodeId,
    pub region: String,
    pub index: u64,
    pub root: Hash,
    pub keys: usize,
    pub tombstones: usize,
    pub rebuilding: bool,
    /// The peer a rebuild is taking its full transfer from.
    pub rebuild_from: Option<NodeId>,
    /// A standby refuses client writes until promoted.
    pub standby: bool,
    pub peers: Vec<PeerStatus>,
    pub reachable_regions: Vec<String>,
    /// Every known region, with since when it is (un)reachable.
    pub regions: Vec<RegionStatus>,
    pub total_regions: usize,
    pub quorum: bool,
    pub conflicts: u64,
    pub gc_floor: Hlc,
    /// This replica holds every write stamped at or below this.
    pub frontier: Hlc,
    /// Records quarantined now (they failed their check), and the first
    /// [`STATUS_QUARANTINE_MAX`] of them.
    pub quarantined: usize,
    pub quarantine: Vec<QuarantineStatus>,
    /// The store was lost: recovering from the peers, writes refused.
    pub store_lost: bool,
    /// A recovery from loss or damage, while it lasts (claims are held back).
    pub recovery: Option<RecoveryStatus>,
    /// What the peers' clocks say of this node's.
    pub clock: ClockStatus,
    /// `partition_policy = quorum` and no majority of regions reachable:
    /// client writes are refused.
    pub refusing_writes_no_quorum: bool,
    /// Quorum writes waiting for a majority of regions.
    pub quorum_writes_waiting: usize,
}

/// Quarantined records a status lists by name (all are counted).
pub const STATUS_QUARANTINE_MAX: usize = 100;

/// One replica of the map (see the module docs).
pub struct Replica {
    cfg: Config,
    map: LwwMap,
    clock: Clock,
    rng: Rng,
    peers: BTreeMap<NodeId, Peer>,
    gc_floor: Hlc,
    /// The greatest clock of a tombstone collected by age without stability.
    horizon_floor: Hlc,
    synced_ms: u64,
    outputs: VecDeque<Output>,
    staged: Vec<Output>,
    dirty_keys: BTreeSet<Key>,
    dirty_peers: BTreeSet<NodeId>,
    dirty_meta: bool,
    push_due_ms: Option<u64>,
    ae_next_ms: u64,
    gc_next_ms: u64,
    heartbeat_next_ms: u64,
    ae_session: Option<AeSession>,
    next_session: u64,
    rebuilding: bool,
    rebuild_from: Option<NodeId>,
    /// Per known region: reachable, and since when (ms).
    regions: BTreeMap<String, (bool, u64)>,
    /// Regions whose partition ended, until equal state is confirmed.
    healing: BTreeMap<String, Healing>,
    /// Regions reported cut off, until they are reachable again.
    partitioned: BTreeSet<String>,
    metrics: Metrics,
    /// Quorum writes waiting for a majority of regions, in index order.
    pending_acks: VecDeque<ack::PendingAck>,
    /// Records that failed their check, by stored key (see [`integrity`]).
    quarantine: BTreeMap<Vec<u8>, integrity::Quarantined>,
    /// Whether writes may be missing here (see [`recovery`]).
    own_writes: OwnWrites,
    /// Keys damaged in memory whose stored copies are being read back.
    reading_back: BTreeSet<Key>,
    /// `own_writes` changed since the last commit.
    recovery_dirty: bool,
    /// Peers are to be asked for their full state at the end of this input.
    recovery_hellos_due: bool,
    /// Stored keys of damaged records to drop from the store.
    purge: Vec<Vec<u8>>,
    /// The scrub resumes after this key.
    scrub_cursor: Option<Key>,
    scrub_next_ms: u64,
    /// What the peers' clocks say of ours.
    judgement: Judgement,
    /// The latest physical time an input carried (for status).
    seen_ms: u64,
}

impl Replica {
    /// A replica with an empty state. It asks its first peer for a full transfer.
    pub fn new(cfg: Config, now_ms: u64) -> Result<Replica, ConfigError> {
        Replica::restore(cfg, DurableState::default(), now_ms)
    }

    /// A replica restarted from durable state.
    pub fn restore(
        cfg: Config,
        mut state: DurableState,
        now_ms: u64,
    ) -> Result<Replica, ConfigError> {
        let records = std::mem::take(&mut state.records);
        let damaged = std::mem::take(&mut state.damaged);
        let loaded = records
            .into_iter()
            .map(|(k, r)| Loaded::Record(k, r))
            .chain(damaged.into_iter().map(Loaded::Damaged));
        Replica::restore_from(cfg, state, loaded, now_ms)
    }

    /// A replica restarted from durable state whose records come separately
    /// (`state.records` and `state.damaged` are ignored), e.g. as a store
    /// reads them: the caller can read on one thread while this builds the
    /// map on another. Every record is checked against the check it was
    /// stored with; those that fail are quarantined (see [`integrity`]).
    pub fn restore_from(
        cfg: Config,
        state: DurableState,
        records: impl IntoIterator<Item = Loaded>,
        now_ms: u64,
    ) -> Result<Replica, ConfigError> {
        cfg.validate()?;
        if state.node != NodeId(0) && state.node != cfg.node {
            return Err(ConfigError::WrongNode {
                expected: cfg.node,
                found: state.node,
            });
        }
        let verified = integrity::verify_loaded(records, state.index, now_ms);
        let renumbered = verified.renumbered;
        let renumbered_count = renumbered.len() as u64;
        let mut map = LwwMap::restore(
            verified.records,
            state.index,
            cfg.conflicts_max,
            // Its own seed: the protocol's random choices use `rng_seed`.
            cfg.rng_seed.rotate_left(32) ^ 0x6d65_7269_6469_616e,
        );
        // The conflict log outlives restarts.
        map.conflicts_mut()
            .restore(state.conflicts.iter().cloned(), state.conflicts_total);
        let mut peers = BTreeMap::new();
        for (id, p) in &state.peers {
            peers.insert(
                *id,
                Peer {
                    applied: p.applied,
                    received: p.received,
                    name: p.name.clone(),
                    region: p.region.clone(),
                    api: p.api.clone(),
                    ..Peer::default()
                },
            );
        }
        // A store lost before the last stop: its rebuild goes on.
        let rebuilding = (cfg.rebuild_when_empty && map.is_empty() && state.index == 0)
            || state.recovery == Recovery::AfterStoreLoss;
        let resync = verified.resync;
        let mut rng = Rng::new(cfg.rng_seed);
        let ae_first = now_ms + rng.below(cfg.ae_interval_ms + cfg.ae_jitter_ms + 1);
        let mut r = Replica {
            clock: Clock::restore(state.clock, cfg.clock_offset_ms_max),
            map,
            rng,
            peers,
            gc_floor: state.gc_floor,
            horizon_floor: state.horizon_floor,
            synced_ms: if state.synced_ms == 0 {
                now_ms
            } else {
                state.synced_ms
            },
            outputs: VecDeque::new(),
            staged: Vec::new(),
            dirty_keys: BTreeSet::new(),
            dirty_peers: BTreeSet::new(),
            dirty_meta: false,
            push_due_ms: None,
            ae_next_ms: ae_first,
            gc_next_ms: now_ms + cfg.gc_interval_ms,
            heartbeat_next_ms: now_ms + cfg.heartbeat_interval_ms,
            ae_session: None,
            next_session: 1,
            rebuilding,
            rebuild_from: None,
            regions: BTreeMap::from([(cfg.region.clone(), (true, now_ms))]),
            healing: BTreeMap::new(),
            partitioned: BTreeSet::new(),
            metrics: Metrics::default(),
            pending_acks: VecDeque::new(),
            quarantine: verified.quarantine,
            own_writes: match state.recovery {
                Recovery::None => OwnWrites::Held,
                cause => OwnWrites::Recovering {
                    cause,
                    done: BTreeSet::new(),
                    since_ms: now_ms,
                },
            },
            recovery_dirty: false,
            recovery_hellos_due: false,
            reading_back: BTreeSet::new(),
            purge: Vec::new(),
            scrub_cursor: None,
            scrub_next_ms: now_ms + cfg.scrub_interval_ms,
            judgement: Judgement::default(),
            seen_ms: now_ms,
            cfg,
        };
        // Regions of remembered peers are known, unreachable until they reconnect.
        r.update_regions(now_ms);
        r.metrics.records_renumbered = renumbered_count;
        if !renumbered.is_empty() {
            // Written back with their new indexes at the first commit.
            r.dirty_meta = true;
            r.dirty_keys.extend(renumbered);
        }
        r.report_loaded_quarantine(resync);
        Ok(r)
    }

    pub fn node(&self) -> NodeId {
        self.cfg.node
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    pub fn map(&self) -> &LwwMap {
        &self.map
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    pub fn get(&self, key: &str) -> Option<&Record> {
        self.map.get(key)
    }

    pub fn root(&mut self) -> Hash {
        self.map.root()
    }

    /// Makes a standby active: it accepts client writes from now on.
    pub fn promote(&mut self) {
        self.cfg.standby = false;
    }

    /// This (empty) replica replaces a store that could not be read: it
    /// rebuilds from its first peer, and refuses client writes until then
    /// (its clock may be behind stamps it issued before).
    pub fn store_lost(&mut self) {
        self.rebuilding = true;
        self.rebuild_from = None;
        self.staged.push(Output::Event(Event::StoreLost));
        // Writes of ours that peers hold come back from them (see [`recovery`]).
        self.begin_recovery(Recovery::AfterStoreLoss);
        self.commit();
    }

    /// The collection floor: tombstones at or below it may have been dropped.
    pub fn gc_floor(&self) -> Hlc {
        self.gc_floor
    }

    /// Merges entries from a backup as replicated state: per key the greater
    /// stamp wins, so nothing newer is lost. Entries at or below the
    /// collection floor for absent keys are refused (they may be deleted
    /// keys whose tombstones were collected), and so are entries stamped
    /// further ahead of `now_ms` than the clock bound. Durable with the
    /// `Persist` that follows.
    pub fn import(&mut self, entries: Vec<(Key, Entry)>, now_ms: u64) -> ImportReport {
        let mut report = ImportReport::default();
        // The highest floor known in the cluster: a peer may have collected
        // tombstones this replica never held (it was rebuilt, or new), and
        // an old value of such a key must not come back here.
        let floor = self
            .peers
            .values()
            .map(|p| p.gc_floor)
            .fold(self.gc_floor, Hlc::max);
        for (k, e) in entries {
            if self
                .clock
                .check(e.stamp.hlc, self.checked_now(now_ms))
                .is_err()
            {
                report.refused_clock += 1;
                continue;
            }
            let below = self.metrics.below_floor_refused;
            if self.merge_entry(None, k, e, floor, now_ms) {
                report.applied += 1;
            } else if self.metrics.below_floor_refused != below {
                report.refused_floor += 1;
            } else {
                report.unchanged += 1;
            }
        }
        self.commit();
        report
    }

    pub fn clock(&self) -> Hlc {
        self.clock.last()
    }

    /// True while the replica rebuilds an empty state from a peer.
    pub fn rebuilding(&self) -> bool {
        self.rebuilding
    }

    /// Makes `node` a known member of the cluster: it counts for quorum, and
    /// tombstones are collected only once it is known to hold them.
    pub fn add_member(&mut self, node: NodeId, region: &str) {
        if node == self.cfg.node {
            return;
        }
        let p = self.peers.entry(node).or_default();
        if p.region.is_empty() {
            p.region = region.to_string();
        }
        let since = self.regions.values().map(|r| r.1).max().unwrap_or(0);
        self.update_regions(since);
    }

    /// Notes the physical time of an input. A clock that went back would
    /// leave every timer far in the future (heartbeats, anti-entropy,
    /// collection and the scrub would stop until it caught up): deadlines
    /// further away than their own period are brought back to one period
    /// from now.
    fn observe_time(&mut self, now_ms: u64) {
        self.seen_ms = self.seen_ms.max(now_ms);
        let c = &self.cfg;
        let ae_period = c.ae_interval_ms + c.ae_jitter_ms;
        self.heartbeat_next_ms = self.heartbeat_next_ms.min(now_ms + c.heartbeat_interval_ms);
        self.ae_next_ms = self.ae_next_ms.min(now_ms + ae_period);
        self.gc_next_ms = self.gc_next_ms.min(now_ms + c.gc_interval_ms);
        self.scrub_next_ms = self.scrub_next_ms.min(now_ms + c.scrub_interval_ms);
        if let Some(t) = self.push_due_ms.as_mut() {
            *t = (*t).min(now_ms + c.push_delay_ms);
        }
    }

    /// The next output to carry out, in order.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// When the replica next wants [`Replica::tick`] called.
    pub fn next_timeout(&self) -> u64 {
        let mut t = self
            .ae_next_ms
            .min(self.gc_next_ms)
            .min(self.heartbeat_next_ms)
            .min(self.scrub_next_ms);
        if let Some(p) = self.push_due_ms {
            t = t.min(p);
        }
        if let Some(d) = self.ack_deadline() {
            t = t.min(d);
        }
        t
    }

    // ---------------------------------------------------------------- writes

    /// Writes `value` under `key`. With `cas`, only if the key's modify index
    /// is `cas` (0: only if the key does not exist).
    pub fn put(
        &mut self,
        key: &str,
        value: Bytes,
        flags: u64,
        cas: Option<u64>,
        now_ms: u64,
    ) -> Result<WriteReceipt, WriteError> {
        self.put_acked(key, value, flags, cas, self.cfg.write_ack, now_ms)
    }

    /// [`Replica::put`], acknowledged as `ack` says.
    pub fn put_acked(
        &mut self,
        key: &str,
        value: Bytes,
        flags: u64,
        cas: Option<u64>,
        ack: WriteAck,
        now_ms: u64,
    ) -> Result<WriteReceipt, WriteError> {
        self.cfg.limits.check_value(value.len())?;
        self.write(key, Some(value), flags, cas, ack, now_ms)
    }

    /// Deletes `key`: writes a tombstone stamped now, whether or not the key
    /// is present here, since a write this replica has not seen yet may be
    /// on its way and the later delete must win against it. With `cas`,
    /// only a live key whose modify index is `cas` is deleted; a key that is
    /// not live here fails the check with `actual` 0 and nothing is written
    /// (Consul answers `true` to that: nothing is left to delete).
    pub fn delete(
        &mut self,
        key: &str,
        cas: Option<u64>,
        now_ms: u64,
    ) -> Result<WriteReceipt, WriteError> {
        self.delete_acked(key, cas, self.cfg.write_ack, now_ms)
    }

    /// [`Replica::delete`], acknowledged as `ack` says.
    pub fn delete_acked(
        &mut self,
        key: &str,
        cas: Option<u64>,
        ack: WriteAck,
        now_ms: u64,
    ) -> Result<WriteReceipt, WriteError> {
        self.write(key, None, 0, cas, ack, now_ms)
    }

    fn write(
        &mut self,
        key: &str,
        value: Option<Bytes>,
        flags: u64,
        cas: Option<u64>,
        ack: WriteAck,
        now_ms: u64,
    ) -> Result<WriteReceipt, WriteError> {
        self.observe_time(now_ms);
        Key::check(key, self.cfg.limits.key_bytes_max)?;
        self.writable()?;
        self.quorum_writable(ack)?;
        let current = self.map.get(key);
        if let Some(expected) = cas {
            let actual = current
                .filter(|r| !r.entry.is_tombstone())
                .map_or(0, |r| r.modify_index);
            // A delete needs a live version to match: cas=0 never deletes.
            if actual != expected || (value.is_none() && actual == 0) {
                return Err(WriteError::CasMismatch { expected, actual });
            }
        }
        let prev = current.map_or(Stamp::ZERO, |r| r.entry.stamp);
        let stamp = Stamp::new(self.clock.tick(now_ms)?, self.cfg.node);
        let key = Key::new(key)?;
        let index = self.map.apply_local(
            &key,
            Entry {
                stamp,
                prev,
                flags,
                value,
            },
        );
        self.metrics.local_writes += 1;
        self.resolve_key(&key, Resolution::Overwritten);
        self.dirty_keys.insert(key.clone());
        self.dirty_meta = true;
        let receipt = WriteReceipt { key, stamp, index };
        self.acknowledge(receipt.clone(), ack, now_ms);
        if ack == WriteAck::Quorum {
            // Its acknowledgement waits on the push: not batched.
            self.pump_all(now_ms);
        } else {
            self.schedule_push(now_ms);
        }
        self.commit();
        Ok(receipt)
    }

    /// Deletes every key this replica knows under `prefix`, live or already
    /// deleted, with one stamp each, in one input: durable together with
    /// the `Persist` that follows, after which each is acknowledged.
    /// Keys deleted here before are deleted again,
    /// so that the prefix delete also wins over writes to them this replica
    /// has not seen yet. Keys it never heard of are not covered. At most
    /// `keys_max` keys; more is refused and nothing is written.
    pub fn delete_prefix(
        &mut self,
        prefix: &str,
        keys_max: usize,
        now_ms: u64,
    ) -> Result<Vec<WriteReceipt>, WriteError> {
        self.delete_prefix_acked(prefix, keys_max, self.cfg.write_ack, now_ms)
    }

    /// [`Replica::delete_prefix`], each tombstone acknowledged as `ack`
    /// says (with a quorum, the pending acknowledgements count every key).
    pub fn delete_prefix_acked(
        &mut self,
        prefix: &str,
        keys_max: usize,
        ack: WriteAck,
        now_ms: u64,
    ) -> Result<Vec<WriteReceipt>, WriteError> {
        self.observe_time(now_ms);
        self.writable()?;
        self.quorum_writable(ack)?;
        let keys: Vec<(Key, Stamp)> = self
            .map
            .scan_prefix(prefix)
            .take(keys_max.saturating_add(1))
            .map(|(k, r)| (k.clone(), r.entry.stamp))
            .collect();
        if keys.len() > keys_max {
            let count = self.map.scan_prefix(prefix).count();
            return Err(WriteError::TooManyKeys {
                count,
                max: keys_max,
            });
        }
        self.quorum_room(ack, keys.len())?;
        let mut receipts = Vec::with_capacity(keys.len());
        for (key, prev) in keys {
            let stamp = Stamp::new(self.clock.tick(now_ms)?, self.cfg.node);
            let index = self.map.apply_local(
                &key,
                Entry {
                    stamp,
                    prev,
                    flags: 0,
                    value: None,
                },
            );
            self.metrics.local_writes += 1;
            self.resolve_key(&key, Resolution::Overwritten);
            self.dirty_keys.insert(key.clone());
            let receipt = WriteReceipt { key, stamp, index };
            self.acknowledge(receipt.clone(), ack, now_ms);
            receipts.push(receipt);
        }
        if !receipts.is_empty() {
            self.dirty_meta = true;
            if ack == WriteAck::Quorum {
                self.pump_all(now_ms);
            } else {
                self.schedule_push(now_ms);
            }
        }
        self.commit();
        Ok(receipts)
    }

    /// Refuses client writes while this replica may not take them.
    fn writable(&self) -> Result<(), WriteError> {
        if self.cfg.standby {
            return Err(WriteError::Standby);
        }
        if self.lost_store() {
            return Err(WriteError::Rebuilding);
        }
        if self.judgement.off {
            return Err(WriteError::ClockOffset {
                offset_ms: self.judgement.offset_ms.unwrap_or(0),
                disagreeing: self.judgement.disagreeing,
                members: self.judgement.members,
                bound_ms: self.cfg.clock_offset_ms_max,
            });
        }
        if self.cfg.partition_policy == PartitionPolicy::Quorum && !self.has_quorum() {
            let (reachable, total) = self.region_counts();
            return Err(WriteError::NoQuorum { reachable, total });
        }
        Ok(())
    }

    /// Pushes local writes now, or after the batching delay.
    fn schedule_push(&mut self, now_ms: u64) {
        if self.cfg.push_delay_ms == 0 {
            self.pump_all(now_ms);
        } else if self.push_due_ms.is_none() {
            self.push_due_ms = Some(now_ms + self.cfg.push_delay_ms);
        }
    }

    // ------------------------------------------------------------ membership

    /// Reachable regions (our own included) and the number of known regions.
    fn region_counts(&self) -> (usize, usize) {
        let mut all: BTreeSet<&str> = BTreeSet::new();
        let mut up: BTreeSet<&str> = BTreeSet::new();
        all.insert(&self.cfg.region);
        up.insert(&self.cfg.region);
        for p in self.peers.values().filter(|p| !p.region.is_empty()) {
            all.insert(&p.region);
            if p.in_contact {
                up.insert(&p.region);
            }
        }
        (up.len(), all.len())
    }

    /// Records, per known region, when it became reachable or unreachable.
    /// A region is reachable while a peer in it was heard from within the
    /// contact timeout (heartbeats come every interval): a cut is noticed
    /// then, not when the transport gives the connection up.
    fn update_regions(&mut self, now_ms: u64) {
        let timeout = self.cfg.contact_timeout_ms;
        for p in self.peers.values_mut() {
            p.in_contact =
                p.swapping || (p.ready && now_ms.saturating_sub(p.last_heard_ms) <= timeout);
        }
        let mut up: BTreeMap<&str, bool> = BTreeMap::new();
        for p in self.peers.values().filter(|p| !p.region.is_empty()) {
            *up.entry(&p.region).or_insert(false) |= p.in_contact;
        }
        up.insert(&self.cfg.region, true);
        let mut flips = Vec::new();
        for (region, reachable) in up {
            match self.regions.get_mut(region) {
                Some(state) if state.0 == reachable => {}
                Some(state) => {
                    flips.push((
                        region.to_string(),
                        reachable,
                        now_ms.saturating_sub(state.1),
                    ));
                    *state = (reachable, now_ms);
                }
                None => {
                    self.regions.insert(region.to_string(), (reachable, now_ms));
                }
            }
        }
        for (region, reachable, lasted_ms) in flips {
            // Only a partition that was reported ends: a region first seen
            // (or remembered across a restart) connecting is no news.
            if reachable && !self.partitioned.remove(&region) {
                continue;
            }
            if reachable {
                let moved_at_end = self.entries_moved();
                self.healing.insert(
                    region.clone(),
                    Healing {
                        ended_ms: now_ms,
                        partition_ms: lasted_ms,
                        moved_at_end,
                    },
                );
                // Compare states soon: once the catch-up has had a moment.
                self.ae_next_ms = self.ae_next_ms.min(now_ms + self.cfg.heartbeat_interval_ms);
                self.staged.push(Output::Event(Event::PartitionEnded {
                    region,
                    partition_ms: lasted_ms,
                }));
            } else {
                self.healing.remove(&region);
                self.partitioned.insert(region.clone());
                self.staged
                    .push(Output::Event(Event::PartitionDetected { region }));
            }
        }
    }

    /// True while a majority of the known regions (ours included) is reachable.
    pub fn has_quorum(&self) -> bool {
        let (up, all) = self.region_counts();
        up * 2 > all
    }

    /// The transport connected to `peer`: say hello.
    pub fn connected(&mut self, peer: NodeId, now_ms: u64) {
        if peer == self.cfg.node {
            return;
        }
        let _ = now_ms;
        let p = self.peers.entry(peer).or_default();
        p.transport = true;
        p.hello_confirmed = false;
        self.say_hello(peer);
        self.commit();
    }

    fn say_hello(&mut self, peer: NodeId) {
        // A repeated hello to the rebuild source must keep asking for the full transfer.
        let source = self.rebuilding && self.rebuild_from.is_none_or(|r| r == peer);
        if source {
            self.rebuild_from = Some(peer);
        }
        let want_full = source || self.recovering_from(peer);
        if want_full {
            // The full transfer starts from the beginning of their feed, and
            // is complete only when it reaches its end: progress remembered
            // from before (a replica resyncing its damaged state is not
            // empty) must not make it look complete at once, and what it
            // claimed to hold of their writes may be what it lost.
            let p = self.peers.entry(peer).or_default();
            p.caught_up = false;
            if p.applied != 0 || p.received != Hlc::ZERO {
                p.applied = 0;
                p.received = Hlc::ZERO;
                self.dirty_peers.insert(peer);
            }
        }
        let frontier = self.frontier();
        let gc_floor = self.gc_floor;
        let p = self.peers.entry(peer).or_default();
        let hello = Hello {
            protocol: PROTOCOL_VERSION,
            cluster: self.cfg.cluster,
            node: self.cfg.node,
            name: self.cfg.name.clone(),
            region: self.cfg.region.clone(),
            api: self.cfg.api.clone(),
            index: self.map.index(),
            applied: p.applied,
            want_full,
            frontier,
            received: p.received,
            gc_floor,
        };
        self.send(peer, Message::Hello(hello));
    }

    /// The transport lost `peer`.
    /// The transport replaced its connection to `peer` with a new one (both
    /// sides dialed at once): the link restarts with a hello, as after a
    /// reconnection, but the peer stays reachable throughout.
    pub fn reconnected(&mut self, peer: NodeId, now_ms: u64) {
        if let Some(p) = self.peers.get_mut(&peer) {
            p.swapping = p.ready || p.swapping;
            p.reset_link();
        }
        if self.ae_session.is_some_and(|s| s.peer == peer) {
            self.ae_session = None;
        }
        self.connected(peer, now_ms);
    }

    pub fn disconnected(&mut self, peer: NodeId, now_ms: u64) {
        if let Some(p) = self.peers.get_mut(&peer) {
            // A swap whose new connection died is a real loss.
            let swapping = std::mem::take(&mut p.swapping);
            if p.ready || swapping {
                self.staged.push(Output::Event(Event::PeerDown {
                    peer,
                    name: p.name.clone(),
                    region: p.region.clone(),
                }));
            }
            p.reset_link();
        }
        if self.ae_session.is_some_and(|s| s.peer == peer) {
            self.ae_session = None;
        }
        self.update_regions(now_ms);
        if self.rebuild_from == Some(peer) {
            self.rebuild_from = None;
            // Continue the full transfer from another peer, from the start:
            // our progress with it covers only its own writes.
            let next = self.peers.iter().find(|(_, p)| p.ready).map(|(id, _)| *id);
            if let Some(next) = next {
                self.rebuild_from = Some(next);
                if let Some(p) = self.peers.get_mut(&next) {
                    // The rebuild is done once this peer's full feed reaches its index.
                    p.caught_up = false;
                }
                self.send(
                    next,
                    Message::Resume {
                        from: 0,
                        full: true,
                    },
                );
            }
        }
        self.commit();
        let _ = now_ms;
    }

    // -------------------------------------------------------------- messages

    /// Handles one message from `from` (the identity the transport authenticated).
    pub fn handle(&mut self, from: NodeId, msg: Message, now_ms: u64) {
        self.observe_time(now_ms);
        if from == self.cfg.node {
            self.metrics.messages_ignored += 1;
            return;
        }
        // Decoding validates already; a driver that builds messages itself may not have.
        if msg.validate().is_err() {
            self.metrics.messages_invalid += 1;
            return;
        }
        match msg {
            Message::Hello(h) => {
                self.on_hello(from, h, now_ms);
                self.update_regions(now_ms);
            }
            other => {
                let Some(p) = self.peers.get_mut(&from) else {
                    self.metrics.messages_ignored += 1;
                    return;
                };
                if !p.ready || p.stale {
                    self.metrics.messages_ignored += 1;
                    return;
                }
                p.last_heard_ms = now_ms;
                let regained = !p.in_contact;
                p.hello_confirmed = true;
                self.synced_ms = self.synced_ms.max(now_ms);
                match other {
                    Message::Hello(_) => unreachable!(),
                    Message::Feed(f) => self.on_feed(from, f, now_ms),
                    Message::Resume { from: start, full } => {
                        self.on_resume(from, start, full, now_ms)
                    }
                    Message::Stale { floor } => self.on_stale(from, floor, now_ms),
                    Message::Ack { applied, frontier } => {
                        self.on_ack(from, applied, frontier, now_ms)
                    }
                    Message::AeRoot { session, root } => {
                        self.on_ae_root(from, session, root, now_ms)
                    }
                    Message::AeDone { session } => self.on_ae_done(from, session, now_ms),
                    Message::AeLevel {
                        session,
                        level,
                        parents,
                        hashes,
                    } => {
                        if let Some(s) = self.ae_session.as_mut() {
                            if s.peer == from && s.id == session {
                                s.diverged = true;
                            }
                        }
                        self.on_ae_level(from, session, level, &parents, &hashes)
                    }
                    Message::AeLeaves {
                        session,
                        leaves,
                        summaries,
                    } => self.on_ae_leaves(from, session, &leaves, &summaries, now_ms),
                    Message::AeEntries {
                        session,
                        entries,
                        want,
                    } => self.on_ae_entries(from, session, entries, &want, now_ms),
                    Message::Probe { sent_ms } => self.on_probe(from, sent_ms, now_ms),
                    Message::ProbeReply { sent_ms, their_ms } => {
                        self.on_probe_reply(from, sent_ms, their_ms, now_ms)
                    }
                }
                if regained {
                    self.update_regions(now_ms);
                }
            }
        }
        self.commit();
    }

    fn refuse(&mut self, peer: NodeId, reason: Refusal) {
        self.metrics.peers_refused += 1;
        if let Some(p) = self.peers.get_mut(&peer) {
            p.ready = false;
        }
        self.staged.push(Output::Event(Event::PeerRefused {
            peer,
            reason: reason.clone(),
        }));
        self.staged.push(Output::Disconnect { peer, reason });
    }

    fn on_hello(&mut self, from: NodeId, h: Hello, now_ms: u64) {
        if h.protocol != PROTOCOL_VERSION {
            return self.refuse(from, Refusal::Protocol { found: h.protocol });
        }
        if h.cluster != self.cfg.cluster {
            return self.refuse(from, Refusal::Cluster);
        }
        if h.node != from {
            return self.refuse(
                from,
                Refusal::Identity {
                    claimed: h.node,
                    actual: from,
                },
            );
        }
        let horizon_floor = self.horizon_floor;
        let index = self.map.index();
        let p = self.peers.entry(from).or_default();
        let swapped = std::mem::take(&mut p.swapping);
        if !p.ready && !swapped {
            self.staged.push(Output::Event(Event::PeerUp {
                peer: from,
                name: h.name.clone(),
                region: h.region.clone(),
            }));
        }
        if (&p.region, &p.name, &p.api) != (&h.region, &h.name, &h.api) {
            p.region = h.region;
            p.name = h.name;
            p.api = h.api;
            self.dirty_peers.insert(from);
        }
        p.transport = true;
        p.ready = true;
        p.gc_floor = h.gc_floor;
        p.last_heard_ms = now_ms;
        p.frontier = p.frontier.max(h.frontier);
        if h.index < p.applied {
            // Their feed restarted (a restore from an old backup): our
            // progress with it, and the claims it supported, are void.
            p.applied = 0;
            p.received = Hlc::ZERO;
            self.dirty_peers.insert(from);
        }
        p.their_index = h.index;
        p.hello_ms = now_ms;
        p.caught_up = p.applied >= h.index;
        p.resume_asked_ms = None;
        // They hold our feed up to `h.applied`; if that is beyond our index our
        // feed restarted (a restore from an old backup): send it all.
        // A full transfer starts from the beginning: it carries every origin.
        let start = if h.applied > index || h.want_full {
            0
        } else {
            h.applied
        };
        p.acked = start;
        p.sent = start;
        p.in_flight.clear();
        p.full_until = h.want_full.then_some(index);
        p.last_progress_ms = now_ms;
        let behind = h.received < horizon_floor && h.gc_floor < horizon_floor;
        if horizon_floor != Hlc::ZERO && behind && !h.want_full {
            // We collected by age tombstones the peer may never have seen:
            // it may still hold the values they deleted. Refuse its data
            // until it has resynced and says hello again.
            p.stale = true;
            self.metrics.stale_peers += 1;
            self.staged
                .push(Output::Event(Event::PeerStale { peer: from }));
            self.send(
                from,
                Message::Stale {
                    floor: horizon_floor,
                },
            );
            return;
        }
        p.stale = false;
        self.synced_ms = self.synced_ms.max(now_ms);
        if p.caught_up {
            // The peer has nothing we lack (it is empty). A rebuild from it
            // ends with its feed's end, which says whether it claims to
            // hold all it should (see `on_feed`).
            self.recovered_from(from);
        }
        // Its clock, at once: writes are judged against it.
        self.probe(from, now_ms);
        self.pump(from, now_ms);
        if h.want_full {
            // A full transfer with nothing to carry ends at once.
            let (end, frontier) = (self.feed_claim(), self.frontier());
            self.send_feed_end(from, index, end, frontier, now_ms);
        }
    }

    fn on_feed(&mut self, from: NodeId, f: Feed, now_ms: u64) {
        self.metrics.feed_messages_in += 1;
        // How far their feed reaches, refused or not: what the lag reports.
        if let Some(p) = self.peers.get_mut(&from) {
            p.their_index = p.their_index.max(f.to);
        }
        if !self.check_skew(
            from,
            f.entries
                .iter()
                .map(|(_, e)| e.stamp.hlc)
                .chain(f.end.claim()),
            now_ms,
        ) {
            return;
        }
        let rebuilding_from_them = self.rebuild_from == Some(from);
        let full_wanted = rebuilding_from_them || self.recovering_from(from);
        // The full transfer of a rebuild is the source's live state: nothing
        // in it is a collected delete, so the floor does not apply to it.
        let floor = if rebuilding_from_them {
            Hlc::ZERO
        } else {
            self.merge_floor()
        };
        let mut applied = 0u64;
        for (k, e) in f.entries {
            if self.merge_entry(Some(from), k, e, floor, now_ms) {
                applied += 1;
            }
        }
        self.metrics.feed_entries_applied += applied;
        let Some(p) = self.peers.get_mut(&from) else {
            return;
        };
        p.frontier = p.frontier.max(f.frontier);
        // Contiguous, and up to the sender's last index: we hold all it had.
        let mut reached_end = false;
        if f.from <= p.applied {
            if f.to >= p.applied {
                reached_end = f.end.is_end();
                if f.to > p.applied {
                    p.applied = f.to;
                    self.dirty_peers.insert(from);
                }
                if reached_end {
                    p.in_sync_ms = now_ms;
                }
                if let Some(c) = f.end.claim() {
                    if c > p.received {
                        p.received = c;
                        self.dirty_peers.insert(from);
                    }
                }
                p.resume_asked_ms = None;
            }
        } else {
            self.metrics.feed_gaps += 1;
            let timeout = self.cfg.peer_timeout_ms;
            if p.resume_asked_ms.is_none_or(|t| now_ms >= t + timeout) {
                p.resume_asked_ms = Some(now_ms);
                let resume = Message::Resume {
                    from: p.applied,
                    full: full_wanted,
                };
                self.staged.push(Output::Send {
                    to: from,
                    msg: resume,
                });
            }
        }
        let mut start_ae = false;
        if !p.caught_up && reached_end {
            p.caught_up = true;
            start_ae = true;
            // All they held is here (their full transfer, if we are recovering).
            self.recovered_from(from);
        }
        // A rebuild ends with a source that holds all it should: one that
        // is itself recovering lacks records (perhaps below its floor,
        // which the rebuild takes on), so it must finish first; what it
        // takes back reaches us through its feed (seed 14417).
        if rebuilding_from_them && reached_end && f.end != FeedEnd::Recovering {
            self.rebuild_done(from);
        }
        let Some(p) = self.peers.get(&from) else {
            return;
        };
        let applied = p.applied;
        let frontier = self.frontier();
        self.send(from, Message::Ack { applied, frontier });
        // Caught up after a reconnect: check with one cheap round soon, once
        // the other connections of a restart are up and caught up too
        // (earlier, it would repeat what their feeds still carry).
        if start_ae {
            self.ae_next_ms = self.ae_next_ms.min(now_ms + self.cfg.heartbeat_interval_ms);
        }
    }

    /// The full transfer from `from` is complete: this replica holds
    /// everything that peer held.
    fn rebuild_done(&mut self, from: NodeId) {
        self.rebuilding = false;
        self.rebuild_from = None;
        // The transfer was the source's state after its collections: values
        // of keys deleted and collected there are refused from now on, as
        // they are there (a late or replayed message cannot bring one back).
        if let Some(floor) = self.peers.get(&from).map(|p| p.gc_floor) {
            if floor > self.gc_floor {
                self.gc_floor = floor;
                self.dirty_meta = true;
            }
        }
    }

    /// The collection floor for entries from a peer (not a rebuild's full
    /// transfer): while rebuilding, this replica's own floor says little
    /// (it collected nothing), so the highest floor its peers told it holds.
    fn merge_floor(&self) -> Hlc {
        if !self.rebuilding {
            return self.gc_floor;
        }
        self.peers
            .values()
            .map(|p| p.gc_floor)
            .fold(self.gc_floor, Hlc::max)
    }

    /// Refuses (and reports) a message whose stamps run too far ahead of our clock.
    /// Stamps are checked against our clock, or the cluster's when ours
    /// is judged behind it: a correct peer is not refused because our
    /// clock is wrong.
    fn check_skew(&mut self, from: NodeId, stamps: impl Iterator<Item = Hlc>, now_ms: u64) -> bool {
        let mut worst: Option<u64> = None;
        let checked = self.checked_now(now_ms);
        for s in stamps {
            if let Err(ClockError::AheadOfClock { ahead_ms, .. }) = self.clock.check(s, checked) {
                worst = Some(worst.map_or(ahead_ms, |w| w.max(ahead_ms)));
            }
        }
        match worst {
            None => true,
            Some(ahead_ms) => {
                self.metrics.clock_skew_refusals += 1;
                if let Some(p) = self.peers.get_mut(&from) {
                    p.refused_ms = now_ms;
                    p.refused_ahead_ms = ahead_ms;
                }
                self.staged.push(Output::Event(Event::ClockSkew {
                    peer: from,
                    ahead_ms,
                }));
                false
            }
        }
    }

    /// Merges one replicated entry (from a peer, or from a backup when
    /// `from` is `None`); true if it changed the map.
    fn merge_entry(
        &mut self,
        from: Option<NodeId>,
        key: Key,
        entry: Entry,
        floor: Hlc,
        now_ms: u64,
    ) -> bool {
        let hlc = entry.stamp.hlc;
        let stamp = entry.stamp;
        let collisions = self.map.stamp_collisions();
        let damaged = self.map.damaged_replaced();
        let floor = self.floor_for(&key, floor);
        let merged = self.map.merge(&key, entry, floor);
        if self.map.damaged_replaced() != damaged {
            // Our entry had changed in memory: the intact one replaced it.
            self.metrics.records_quarantined += 1;
            self.metrics.records_repaired += 1;
            self.metrics.damage_found_in_memory += 1;
            self.staged.push(Output::Event(Event::RecordQuarantined {
                key: key.to_string(),
                reason: "a peer sent the same stamp and the entry here no longer matched its check"
                    .to_string(),
            }));
            self.staged.push(Output::Event(Event::RecordRepaired {
                key: key.to_string(),
                how: Resolution::Repaired {
                    from: from.unwrap_or(self.cfg.node),
                    stamp,
                },
            }));
        } else if self.map.stamp_collisions() != collisions {
            self.staged
                .push(Output::Event(Event::StampCollision { key: key.clone() }));
        }
        if merged.changed() {
            if let Some(from) = from {
                self.resolve_key(&key, Resolution::Repaired { from, stamp });
            }
        }
        match merged {
            Merged::BelowFloor => {
                self.metrics.below_floor_refused += 1;
                false
            }
            m if m.changed() => {
                // Checked by check_skew, so this cannot fail; keep the clock ahead of what we hold.
                let _ = self.clock.observe(hlc, self.checked_now(now_ms));
                self.dirty_keys.insert(key);
                self.dirty_meta = true;
                true
            }
            _ => false,
        }
    }

    /// A peer says we lost contact before a tombstone it collected by age.
    /// Entries older than the horizon may be deleted keys whose tombstones
    /// were collected: drop them, then rebuild from a peer, which sends back
    /// those still alive.
    fn on_stale(&mut self, from: NodeId, floor: Hlc, now_ms: u64) {
        let cut = Hlc::new(now_ms.saturating_sub(self.cfg.tombstone_horizon_ms), 0);
        let old: Vec<Key> = self
            .map
            .iter()
            .filter(|(_, r)| r.entry.stamp.hlc < cut)
            .map(|(k, _)| k.clone())
            .collect();
        for k in &old {
            self.map.remove(k.as_str());
            self.dirty_keys.insert(k.clone());
        }
        // Whatever we still hold is newer than the tombstones they collected:
        // refuse older values for absent keys from now on (the rebuild's full
        // transfer is exempt), and claim nothing about what we dropped.
        self.gc_floor = self.gc_floor.max(floor);
        for (id, p) in self.peers.iter_mut() {
            if p.received != Hlc::ZERO {
                p.received = Hlc::ZERO;
                self.dirty_peers.insert(*id);
            }
        }
        self.metrics.resyncs += 1;
        self.staged.push(Output::Event(Event::Resynced {
            from,
            dropped: old.len(),
        }));
        self.synced_ms = now_ms;
        self.dirty_meta = true;
        self.rebuilding = true;
        self.rebuild_from = None;
        // A round begun on the state we just dropped is void.
        self.ae_session = None;
        // Say hello again, first to the peer that told us: it sends everything.
        self.say_hello(from);
        let others: Vec<NodeId> = self
            .peers
            .iter()
            .filter(|(id, p)| p.ready && **id != from)
            .map(|(id, _)| *id)
            .collect();
        for id in others {
            self.say_hello(id);
        }
    }

    fn on_resume(&mut self, from: NodeId, start: u64, full: bool, now_ms: u64) {
        let index = self.map.index();
        let Some(p) = self.peers.get_mut(&from) else {
            return;
        };
        let start = start.min(index);
        p.acked = start;
        p.sent = start;
        p.in_flight.clear();
        p.last_progress_ms = now_ms;
        if full {
            p.full_until = Some(index);
        }
        self.pump(from, now_ms);
    }

    fn on_ack(&mut self, from: NodeId, applied: u64, frontier: Hlc, now_ms: u64) {
        let Some(p) = self.peers.get_mut(&from) else {
            return;
        };
        p.frontier = p.frontier.max(frontier);
        if applied > p.acked {
            p.acked = applied;
            p.last_progress_ms = now_ms;
        }
        while p.in_flight.front().is_some_and(|t| *t <= applied) {
            p.in_flight.pop_front();
        }
        self.pump(from, now_ms);
        self.release_acks(now_ms);
    }

    // ------------------------------------------------------------------ feed

    fn pump_all(&mut self, now_ms: u64) {
        let ids: Vec<NodeId> = self
            .peers
            .iter()
            .filter(|(_, p)| p.ready)
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            self.pump(id, now_ms);
        }
    }

    /// Sends the next feed messages to `id`, within its window.
    fn pump(&mut self, id: NodeId, now_ms: u64) {
        let frontier = self.frontier();
        let claim = self.feed_claim();
        let recovering = !self.claims_held();
        let index = self.map.index();
        let me = self.cfg.node;
        let Some(p) = self.peers.get_mut(&id) else {
            return;
        };
        if !p.ready || p.stale {
            return;
        }
        let mut damaged = Vec::new();
        while p.in_flight.len() < self.cfg.feed_window_max && p.sent < index {
            let from = p.sent;
            let mut entries = Vec::new();
            let mut bytes = 0usize;
            let mut to = index;
            for (scanned, (i, current)) in self.map.feed_since(from).enumerate() {
                if scanned == self.cfg.feed_scan_max {
                    to = i - 1;
                    break;
                }
                let Some((k, r)) = current else {
                    continue;
                };
                let origin = r.entry.stamp.node;
                // A full transfer carries every origin, the receiver's own
                // included (a resynced node dropped some of its own). While
                // we recover it goes on: it is complete only with what we
                // take back, and it ends with our first claim (a rebuild
                // from us waits for that claim: seed 14417).
                let full = p.full_until.is_some_and(|u| i <= u || recovering);
                let include = full || origin == me;
                let size = r.entry.encoded_len_estimate(k);
                let full = entries.len() == self.cfg.feed_entries_max
                    || (include && !entries.is_empty() && bytes + size > self.cfg.batch_bytes_max);
                if full {
                    to = i - 1;
                    break;
                }
                if include {
                    // Checked before it leaves: a record damaged in memory
                    // is quarantined, never sent.
                    if Check::of(k.as_str(), &r.entry) != r.stored_check() {
                        damaged.push(k.clone());
                        continue;
                    }
                    bytes += size;
                    entries.push((k.clone(), r.entry.clone()));
                }
            }
            debug_assert!(to > from);
            let end = if to == index { claim } else { FeedEnd::Partial };
            if p.in_flight.is_empty() {
                p.last_progress_ms = now_ms;
            }
            p.sent = to;
            p.in_flight.push_back(to);
            p.last_sent_ms = now_ms;
            self.metrics.feed_entries_sent += entries.len() as u64;
            let msg = Message::Feed(Feed {
                from,
                to,
                end,
                frontier,
                entries,
            });
            self.staged.push(Output::Send { to: id, msg });
        }
        for k in damaged {
            self.quarantine_damaged(&k, "the entry in memory does not match its check", now_ms);
        }
    }

    // ---------------------------------------------------------------- timers

    /// Runs whatever is due: pushes, heartbeats, retransmissions, anti-entropy, garbage collection.
    pub fn tick(&mut self, now_ms: u64) {
        self.observe_time(now_ms);
        self.check_recovered();
        if self.push_due_ms.is_some_and(|t| t <= now_ms) {
            self.push_due_ms = None;
            self.pump_all(now_ms);
        }
        if self.heartbeat_next_ms <= now_ms {
            self.heartbeat_next_ms = now_ms + self.cfg.heartbeat_interval_ms;
            self.heartbeats(now_ms);
            // Estimates age out: judge again without waiting for a reply;
            // and contact too.
            self.rejudge(now_ms);
            self.update_regions(now_ms);
        }
        if self.ae_next_ms <= now_ms {
            self.ae_next_ms =
                now_ms + self.cfg.ae_interval_ms + self.rng.below(self.cfg.ae_jitter_ms + 1);
            if self
                .ae_session
                .is_some_and(|s| now_ms >= s.started_ms + 2 * self.cfg.peer_timeout_ms)
            {
                self.ae_session = None;
            }
            // Not while a rebuild or a catch-up is still streaming (for at
            // most twice the peer timeout): the round would repeat what the
            // feed is about to deliver.
            let settle = 2 * self.cfg.peer_timeout_ms;
            let catching_up = self
                .peers
                .values()
                .any(|p| p.ready && !p.caught_up && now_ms < p.hello_ms + settle);
            if self.ae_session.is_none() && !self.rebuilding && !catching_up {
                let ready: Vec<NodeId> = self
                    .peers
                    .iter()
                    .filter(|(_, p)| p.ready && !p.stale && p.caught_up)
                    .map(|(id, _)| *id)
                    .collect();
                if !ready.is_empty() {
                    let peer = ready[self.rng.below(ready.len() as u64) as usize];
                    self.start_session(peer, now_ms);
                }
            }
        }
        if self.gc_next_ms <= now_ms {
            self.gc_next_ms = now_ms + self.cfg.gc_interval_ms;
            self.collect_garbage(now_ms);
        }
        if self.scrub_next_ms <= now_ms {
            self.scrub_next_ms = now_ms + self.cfg.scrub_interval_ms;
            self.scrub(self.cfg.scrub_batch_max, now_ms);
        }
        self.release_acks(now_ms);
        self.commit();
    }

    fn heartbeats(&mut self, now_ms: u64) {
        let frontier = self.frontier();
        let index = self.map.index();
        let end = self.feed_claim();
        let interval = self.cfg.heartbeat_interval_ms;
        let timeout = self.cfg.peer_timeout_ms;
        let ids: Vec<NodeId> = self.peers.keys().copied().collect();
        for id in ids {
            let p = self.peers.get_mut(&id).expect("listed");
            if p.transport && !p.hello_confirmed {
                // Our hello may have been lost: until the peer shows it
                // accepted it, it ignores everything else we send.
                self.say_hello(id);
            }
            let p = self.peers.get_mut(&id).expect("listed");
            if !p.ready || p.stale {
                continue;
            }
            self.probe(id, now_ms);
            let p = self.peers.get_mut(&id).expect("listed");
            if !p.in_flight.is_empty() && now_ms >= p.last_progress_ms + timeout {
                // Nothing acknowledged for a while: send it again.
                self.metrics.feed_rewinds += 1;
                p.sent = p.acked;
                p.in_flight.clear();
                self.pump(id, now_ms);
                continue;
            }
            if p.in_flight.is_empty() && p.sent < index {
                // Remote changes moved our index: the feed message (maybe
                // empty of entries) carries the progress and the clock.
                self.pump(id, now_ms);
                continue;
            }
            if now_ms >= p.last_sent_ms + interval {
                self.send_feed_end(id, index, end, frontier, now_ms);
            }
        }
    }

    /// Tells `id` our feed ends at `index` (the message carries no entries,
    /// only the claim and frontier), if all of it was sent and acknowledged.
    fn send_feed_end(&mut self, id: NodeId, index: u64, end: FeedEnd, frontier: Hlc, now_ms: u64) {
        let Some(p) = self.peers.get_mut(&id) else {
            return;
        };
        if !p.in_flight.is_empty() || p.sent != index {
            return;
        }
        p.last_sent_ms = now_ms;
        let msg = Message::Feed(Feed {
            from: index,
            to: index,
            end,
            frontier,
            entries: Vec::new(),
        });
        self.staged.push(Output::Send { to: id, msg });
    }

    // -------------------------------------------------------- anti-entropy

    fn start_session(&mut self, peer: NodeId, now_ms: u64) {
        if self.ae_session.is_some() {
            return;
        }
        let id = self.next_session;
        self.next_session += 1;
        self.ae_session = Some(AeSession {
            id,
            peer,
            started_ms: now_ms,
            diverged: false,
        });
        self.metrics.ae_rounds_started += 1;
        let root = self.map.root();
        self.send(peer, Message::AeRoot { session: id, root });
    }

    fn end_session(&mut self, from: NodeId, session: u64) {
        if self
            .ae_session
            .is_some_and(|s| s.peer == from && s.id == session)
        {
            self.ae_session = None;
        }
    }

    /// The peer ended our session: with no level exchanged, our roots were equal.
    fn on_ae_done(&mut self, from: NodeId, session: u64, now_ms: u64) {
        let ours = self
            .ae_session
            .filter(|s| s.peer == from && s.id == session);
        self.end_session(from, session);
        if ours.is_some_and(|s| !s.diverged) {
            self.equal_with(from, now_ms);
        }
    }

    /// Every entry applied here or sent from here so far.
    fn entries_moved(&self) -> u64 {
        let m = &self.metrics;
        m.feed_entries_applied + m.ae_entries_applied + m.feed_entries_sent + m.ae_entries_sent
    }

    /// This replica and `peer` hold equal state: a partition with its
    /// region has healed, and no quarantined key is live there.
    fn equal_with(&mut self, peer: NodeId, now_ms: u64) {
        self.recovered_from(peer);
        let Some(region) = self.peers.get(&peer).map(|p| p.region.clone()) else {
            return;
        };
        if let Some(h) = self.healing.remove(&region) {
            let keys_exchanged = self.entries_moved().saturating_sub(h.moved_at_end);
            self.staged.push(Output::Event(Event::PartitionHealed {
                region,
                partition_ms: h.partition_ms,
                keys_exchanged,
                converge_ms: now_ms.saturating_sub(h.ended_ms),
            }));
        }
    }

    fn on_ae_root(&mut self, from: NodeId, session: u64, root: Hash, now_ms: u64) {
        if root == self.map.root() {
            self.metrics.ae_rounds_equal += 1;
            self.send(from, Message::AeDone { session });
            self.equal_with(from, now_ms);
            return;
        }
        self.staged
            .push(Output::Event(Event::DivergenceFound { peer: from }));
        let hashes = self.map.digest().children(1, &[0]);
        self.send(
            from,
            Message::AeLevel {
                session,
                level: 1,
                parents: vec![0],
                hashes,
            },
        );
    }

    fn on_ae_level(
        &mut self,
        from: NodeId,
        session: u64,
        level: u8,
        parents: &[u32],
        hashes: &[Fingerprint],
    ) {
        let max = self.cfg.ae_nodes_max;
        let differ = self
            .map
            .digest()
            .differing_children(level, parents, hashes, max);
        if differ.is_empty() {
            self.end_session(from, session);
            self.send(from, Message::AeDone { session });
            return;
        }
        if level == LEAF_LEVEL {
            let mut summaries = Vec::new();
            let mut leaves = Vec::new();
            for leaf in differ {
                let before = summaries.len();
                for (_, r) in self.map.leaf_records(leaf) {
                    summaries.push(summary(r));
                }
                if summaries.len() > AE_SUMMARIES_MAX {
                    summaries.truncate(before);
                    break;
                }
                leaves.push(leaf);
            }
            self.send(
                from,
                Message::AeLeaves {
                    session,
                    leaves,
                    summaries,
                },
            );
        } else {
            let hashes = self.map.digest().children(level + 1, &differ);
            self.send(
                from,
                Message::AeLevel {
                    session,
                    level: level + 1,
                    parents: differ,
                    hashes,
                },
            );
        }
    }

    fn on_ae_leaves(
        &mut self,
        from: NodeId,
        session: u64,
        leaves: &[u32],
        summaries: &[Summary],
        now_ms: u64,
    ) {
        let theirs: HashMap<[u8; 8], &Summary> =
            summaries.iter().map(|s| (s.key_hash, s)).collect();
        let mut seen: BTreeSet<[u8; 8]> = BTreeSet::new();
        let mut send: Vec<(Key, Entry)> = Vec::new();
        let mut want: Vec<[u8; 8]> = Vec::new();
        for &leaf in leaves {
            for (k, r) in self.map.leaf_records(leaf) {
                let mine = summary(r);
                seen.insert(mine.key_hash);
                match theirs.get(&mine.key_hash) {
                    None => send.push((k.clone(), r.entry.clone())),
                    Some(t) if t.stamp < mine.stamp => send.push((k.clone(), r.entry.clone())),
                    Some(t) if t.stamp > mine.stamp => want.push(mine.key_hash),
                    Some(t) if t.check != mine.check => {
                        send.push((k.clone(), r.entry.clone()));
                        want.push(mine.key_hash);
                    }
                    Some(_) => {}
                }
            }
        }
        for s in summaries {
            if !seen.contains(&s.key_hash) {
                want.push(s.key_hash);
            }
        }
        want.truncate(AE_SUMMARIES_MAX);
        if send.is_empty() && want.is_empty() {
            self.end_session(from, session);
            self.send(from, Message::AeDone { session });
            return;
        }
        self.send_entries(from, session, send, want, now_ms);
    }

    /// Sends `entries` in messages bounded by count and bytes; `want` rides
    /// on the first. Entries whose records fail their check are not sent
    /// (they are quarantined).
    fn send_entries(
        &mut self,
        to: NodeId,
        session: u64,
        entries: Vec<(Key, Entry)>,
        want: Vec<[u8; 8]>,
        now_ms: u64,
    ) {
        let entries = self.intact(entries, now_ms);
        self.metrics.ae_entries_sent += entries.len() as u64;
        let mut want = Some(want);
        let mut batch = Vec::new();
        let mut bytes = 0usize;
        let mut entries = entries.into_iter().peekable();
        loop {
            let next = entries.peek();
            let flush = match next {
                None => true,
                Some((k, e)) => {
                    let size = e.encoded_len_estimate(k);
                    !batch.is_empty()
                        && (batch.len() == ENTRIES_PER_MESSAGE_MAX
                            || bytes + size > self.cfg.batch_bytes_max)
                }
            };
            if flush {
                let msg = Message::AeEntries {
                    session,
                    entries: std::mem::take(&mut batch),
                    want: want.take().unwrap_or_default(),
                };
                self.send(to, msg);
                bytes = 0;
                if next.is_none() {
                    return;
                }
                continue;
            }
            let (k, e) = entries.next().expect("peeked");
            bytes += e.encoded_len_estimate(&k);
            batch.push((k, e));
        }
    }

    fn on_ae_entries(
        &mut self,
        from: NodeId,
        session: u64,
        entries: Vec<(Key, Entry)>,
        want: &[[u8; 8]],
        now_ms: u64,
    ) {
        if !self.check_skew(from, entries.iter().map(|(_, e)| e.stamp.hlc), now_ms) {
            return;
        }
        let mut repaired = 0;
        for (k, e) in entries {
            if self.merge_entry(Some(from), k, e, self.merge_floor(), now_ms) {
                self.metrics.ae_entries_applied += 1;
                repaired += 1;
            }
        }
        if repaired > 0 {
            self.staged.push(Output::Event(Event::DivergenceRepaired {
                peer: from,
                keys: repaired,
            }));
        }
        if want.is_empty() {
            self.end_session(from, session);
            return;
        }
        let mut send = Vec::new();
        for kh in want {
            for (k, r) in self.map.records_with_hash(u64::from_be_bytes(*kh)) {
                send.push((k.clone(), r.entry.clone()));
            }
        }
        self.end_session(from, session);
        self.send_entries(from, session, send, Vec::new(), now_ms);
    }

    // ------------------------------------------------------ garbage collection

    /// Our frontier: we hold every write stamped at or below it — the least
    /// of our own clock and what we received of each peer's own writes.
    ///
    /// While a recovery is on it claims nothing (zero): records were lost
    /// here that peers may hold (see [`recovery`]).
    fn frontier(&self) -> Hlc {
        if !self.claims_held() {
            return Hlc::ZERO;
        }
        self.peers
            .values()
            .map(|p| p.received)
            .fold(self.clock.last(), Hlc::min)
    }

    /// What the last message of the feed claims ("every write of mine
    /// stamped at or below this clock is in my feed"): nothing while a
    /// recovery is on, since a write of ours the feed no longer carries may
    /// be held by a peer. (The message still marks the end of the feed: a
    /// recovering peer's transfer must be seen to complete.)
    fn feed_claim(&self) -> FeedEnd {
        if self.claims_held() {
            FeedEnd::Claim(self.clock.last())
        } else {
            FeedEnd::Recovering
        }
    }

    /// Drops tombstones that every member holds, or that are older than the horizon.
    fn collect_garbage(&mut self, now_ms: u64) {
        if self.rebuilding {
            // Old tombstones arriving in the transfer must not raise the
            // floor above live values still on their way.
            return;
        }
        // Stability needs at least one known peer, and every known peer's word.
        let stable = if self.peers.is_empty() {
            Hlc::ZERO
        } else {
            self.peers
                .values()
                .map(|p| p.frontier)
                .fold(self.frontier(), Hlc::min)
        };
        let horizon = Hlc::new(now_ms.saturating_sub(self.cfg.tombstone_horizon_ms), 0);
        let limit = stable.max(horizon);
        if limit == Hlc::ZERO {
            return;
        }
        for (stamp, key) in self.map.tombstones_up_to(limit, self.cfg.gc_batch_max) {
            if !self.map.collect(&key, stamp) {
                continue;
            }
            self.dirty_keys.insert(key);
            self.gc_floor = self.gc_floor.max(stamp.hlc);
            if stamp.hlc > stable {
                self.horizon_floor = self.horizon_floor.max(stamp.hlc);
            }
            self.dirty_meta = true;
            self.metrics.tombstones_collected += 1;
        }
    }

    // ---------------------------------------------------------------- output

    fn send(&mut self, to: NodeId, msg: Message) {
        self.staged.push(Output::Send { to, msg });
    }

    /// Ends an input: the persist batch first, then everything it allows.
    fn commit(&mut self) {
        self.send_recovery_hellos();
        let recovery = self.take_recovery_change();
        let (conflicts, conflicts_total) = self.map.conflicts_mut().take_fresh();
        if recovery.is_some()
            || self.dirty_meta
            || !self.dirty_keys.is_empty()
            || !self.dirty_peers.is_empty()
            || !self.purge.is_empty()
            || !conflicts.is_empty()
        {
            let records = std::mem::take(&mut self.dirty_keys)
                .into_iter()
                .map(|k| {
                    // Stored with the check computed when the entry arrived.
                    let r = self.map.get(k.as_str()).map(|r| StoredRecord {
                        entry: r.entry.clone(),
                        create_index: r.create_index,
                        modify_index: r.modify_index,
                        check: r.stored_check(),
                    });
                    (k, r)
                })
                .collect();
            let peers = std::mem::take(&mut self.dirty_peers)
                .into_iter()
                .filter_map(|id| {
                    self.peers.get(&id).map(|p| {
                        (
                            id,
                            PeerProgress {
                                applied: p.applied,
                                received: p.received,
                                name: p.name.clone(),
                                region: p.region.clone(),
                                api: p.api.clone(),
                            },
                        )
                    })
                })
                .collect();
            self.outputs.push_back(Output::Persist(PersistBatch {
                records,
                index: self.map.index(),
                clock: self.clock.last(),
                gc_floor: self.gc_floor,
                horizon_floor: self.horizon_floor,
                synced_ms: self.synced_ms,
                peers,
                purge: std::mem::take(&mut self.purge),
                conflicts,
                conflicts_total,
                recovery,
            }));
            self.dirty_meta = false;
            self.outputs.push_back(Output::Notify {
                index: self.map.index(),
            });
        }
        self.outputs.extend(self.staged.drain(..));
    }

    // ---------------------------------------------------------------- status

    pub fn status(&mut self) -> Status {
        let (up, all) = self.region_counts();
        let mut reachable: Vec<String> = vec![self.cfg.region.clone()];
        for p in self.peers.values().filter(|p| p.ready) {
            if !reachable.contains(&p.region) {
                reachable.push(p.region.clone());
            }
        }
        reachable.sort();
        Status {
            node: self.cfg.node,
            region: self.cfg.region.clone(),
            index: self.map.index(),
            root: self.map.root(),
            keys: self.map.len() - self.map.tombstone_count(),
            tombstones: self.map.tombstone_count(),
            rebuilding: self.rebuilding,
            rebuild_from: self.rebuild_from,
            standby: self.cfg.standby,
            peers: self
                .peers
                .iter()
                .map(|(id, p)| PeerStatus {
                    node: *id,
                    name: p.name.clone(),
                    region: p.region.clone(),
                    api: p.api.clone(),
                    connected: p.ready,
                    lag_index: p.their_index.saturating_sub(p.applied),
                    in_sync_at_ms: p.in_sync_ms,
                    connected_at_ms: p.hello_ms,
                    last_heard_ms: p.last_heard_ms,
                    acked: p.acked,
                    applied: p.applied,
                    received: p.received,
                    frontier: p.frontier,
                    clock_offset_ms: p.clock.estimate(self.seen_ms).map(|s| s.offset_ms),
                    rtt_ms: p.clock.estimate(self.seen_ms).map(|s| s.rtt_ms),
                    refused_at_ms: p.refused_ms,
                    refused_ahead_ms: p.refused_ahead_ms,
                })
                .collect(),
            reachable_regions: reachable,
            regions: self
                .regions
                .iter()
                .map(|(region, (reachable, since_ms))| RegionStatus {
                    region: region.clone(),
                    reachable: *reachable,
                    since_ms: *since_ms,
                })
                .collect(),
            total_regions: all,
            quorum: up * 2 > all,
            conflicts: self.map.conflicts().total(),
            gc_floor: self.gc_floor,
            frontier: self.frontier(),
            quarantined: self.quarantine.len(),
            quarantine: self
                .quarantine()
                .into_iter()
                .take(STATUS_QUARANTINE_MAX)
                .collect(),
            store_lost: self.lost_store(),
            recovery: self.recovery_status(),
            clock: self.clock_status(self.seen_ms),
            refusing_writes_no_quorum: self.cfg.partition_policy == PartitionPolicy::Quorum
                && up * 2 <= all,
            quorum_writes_waiting: self.pending_acks.len(),
        }
    }
}

fn summary(r: &Record) -> Summary {
    let mut check = [0u8; 4];
    check.copy_from_slice(&r.check()[..4]);
    Summary {
        key_hash: r.key_hash().to_be_bytes(),
        stamp: r.entry.stamp,
        check,
    }
}
