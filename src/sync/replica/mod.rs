//! The replica state machine (see the `sync` module docs for the protocol).

mod ack;
mod anti_entropy;
mod barrier;
mod clock;
mod doc_changes;
mod documents;
mod edge;
mod edge_forward;
mod failover;
mod feed;
mod gc;
mod handover;
mod identity;
mod integrity;
mod members;
mod merge;
mod output;
mod peer;
mod recovery;
mod regions;
mod status;
mod timer;
mod txn;
mod write;

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use super::clock_offset::Judgement;
use super::config::{Config, ConfigError, Role};
use super::durable::{DurableState, ForgottenMember, Loaded, Recovery};
use crate::core::codec::Message;
use crate::core::digest::Fingerprint;
use crate::core::hlc::{Clock, Hlc};
use crate::core::map::{LwwMap, Record};
use crate::core::mutants::{self, Mutant};
use crate::core::rng::Rng;
use crate::core::types::{Hash, Key, NodeId};
use anti_entropy::{AeAsked, AeSession};
use identity::IdCheck;
use peer::Peer;
use recovery::OwnWrites;
use regions::Healing;
use timer::{Timer, TimerTable};

pub use ack::AckFailure;
pub use barrier::BarrierError;
pub use clock::ClockStatus;
pub use documents::{DocWrite, DOC_COMPACT_AT_LIMIT_DIVISOR, DOC_MERGES_WAITING_MAX};
pub use edge::{EdgeTxn, ForwardError, ForwardReceipt};
pub use failover::FailoverState;
pub use handover::{EdgeWritten, LOCAL_WRITES_MAX};
pub use integrity::{QuarantineStatus, Resolution, QUARANTINE_MAX};
pub use members::{ForgetError, KnownPeer, LeaveError};
pub use output::{Event, Output};
pub use peer::Refusal;
pub use recovery::RecoveryStatus;
pub use status::{Metrics, PeerStatus, RegionStatus, Status};
pub use txn::{TxnEntry, TxnError, TxnFailure, TxnOp, TxnOutcome};
pub use write::{ImportReport, WriteError, WriteReceipt};

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
    /// No tombstone is collected by age before this (ms): set on a restart
    /// after an absence longer than the horizon (see `gc.rs`).
    age_collection_from_ms: u64,
    /// When this replica last dropped what it held and resynced (told it
    /// was away longer than the horizon); not kept across restarts.
    resynced_ms: Option<u64>,
    outputs: VecDeque<Output>,
    staged: Vec<Output>,
    dirty_keys: BTreeSet<Key>,
    dirty_peers: BTreeSet<NodeId>,
    dirty_meta: bool,
    timers: TimerTable,
    ae_session: Option<AeSession>,
    /// The keys we lack that we last asked a peer for (see `AeAsked`).
    ae_asked: Option<AeAsked>,
    next_session: u64,
    rebuilding: bool,
    rebuild_from: Option<NodeId>,
    /// The rebuild ended during this input (its batch is still a rebuild's).
    rebuild_ended: bool,
    /// Per known region: reachable, and since when (ms).
    regions: BTreeMap<String, (bool, u64)>,
    /// Regions whose partition ended, until equal state is confirmed.
    healing: BTreeMap<String, Healing>,
    /// Regions reported cut off, until they are reachable again.
    partitioned: BTreeSet<String>,
    metrics: Metrics,
    /// Quorum writes waiting for a majority of regions, in index order.
    pending_acks: VecDeque<ack::PendingAck>,
    /// Read barriers waiting, by the caller's number.
    barriers: BTreeMap<u64, barrier::Barrier>,
    /// Records that failed their check, by stored key (see `replica/integrity.rs`).
    quarantine: BTreeMap<Vec<u8>, integrity::Quarantined>,
    /// Whether writes may be missing here (see `replica/recovery.rs`).
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
    /// What the peers' clocks say of ours.
    judgement: Judgement,
    /// The latest physical time an input carried (for status).
    seen_ms: u64,
    /// Whether the id may have held data this replica lost (see `replica/identity.rs`).
    id_check: IdCheck,
    /// Per region, heartbeats in a row it was out of reach (failover's
    /// wait, counted in beats so that a clock jump cannot shorten it).
    unreachable_beats: BTreeMap<String, u64>,
    /// Heartbeats judged since this replica started (failover).
    beats_since_start: u64,
    /// What it last judged of failover (see `replica/failover.rs`).
    failover: failover::FailoverState,
    /// On an edge: forwarded writes waiting, by the caller's number.
    forwards: BTreeMap<u64, edge_forward::PendingForward>,
    /// On a server: edges' forwarded writes until acknowledged, by group.
    forward_groups: BTreeMap<u64, edge::ForwardGroup>,
    /// On a server: the group of each write made for an edge.
    forward_of: BTreeMap<crate::core::types::Stamp, u64>,
    next_forward_group: u64,
    /// The group of the forwarded write being made (in this input).
    forwarding: Option<u64>,
    /// On an edge: its latest anti-entropy round (see `edge::EdgeRound`).
    edge_round: Option<edge::EdgeRound>,
    /// On an edge: its local writes waiting to be handed over.
    handover: handover::Handover,
    /// Members the cluster forgot (see `replica/members.rs`).
    forgotten: BTreeMap<NodeId, ForgottenMember>,
    /// Forgotten members changed since the last commit.
    dirty_forgotten: BTreeSet<NodeId>,
    /// The clock of the latest forget of this node it resynced after.
    rejoined: Hlc,
    /// `rejoined` changed since the last commit.
    rejoined_dirty: bool,
    /// When this node left (it refuses client writes since, until it is
    /// told it was forgotten and resyncs). Durable.
    left: Option<Hlc>,
    /// `left` was set since the last commit.
    left_dirty: bool,
    /// Members an anti-entropy round found equal since the latest forget
    /// (see `ForgottenMember::settled`).
    equal_since_forget: BTreeSet<NodeId>,
    /// Versions of documents that lost here and wait for a merge this
    /// replica may not write yet (see `replica::documents`).
    doc_merges_waiting: BTreeMap<Key, crate::core::types::Entry>,
    /// Counts the versions that started waiting in `doc_merges_waiting`
    /// (each peer notes how far it was handed them).
    doc_waiting_gen: u64,
    /// Documents loaded to ship as changes (see `replica::doc_changes`).
    loaded_docs: doc_changes::LoadedDocs,
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
    /// stored with; those that fail are quarantined (see `replica/integrity.rs`).
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
        let mut verifier = integrity::Verifier::new(state.index, now_ms);
        let admitted = integrity::Admit {
            records: records.into_iter(),
            verifier: &mut verifier,
        };
        let mut map = LwwMap::restore(
            admitted,
            state.index,
            cfg.conflicts_max,
            // Its own seed: the protocol's random choices use `rng_seed`.
            cfg.rng_seed.rotate_left(32) ^ 0x6d65_7269_6469_616e,
        );
        // The conflict log outlives restarts.
        let verified = verifier.finish();
        let renumbered = verified.renumbered;
        let renumbered_count = renumbered.len() as u64;
        map.conflicts_mut()
            .restore(state.conflicts.iter().cloned(), state.conflicts_total);
        let mut peers = BTreeMap::new();
        for (id, p) in state
            .peers
            .iter()
            .filter(|(id, _)| !state.forgotten.contains_key(id))
        {
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
        let mut timers = TimerTable::default();
        timers.set(Timer::AntiEntropy, ae_first);
        timers.set(Timer::Gc, now_ms + cfg.gc_interval_ms);
        timers.set(Timer::Heartbeat, now_ms + cfg.heartbeat_interval_ms);
        timers.set(Timer::Scrub, now_ms + cfg.scrub_interval_ms);
        let mut r = Replica {
            clock: Clock::restore(
                if mutants::on(Mutant::ClockRestart) {
                    Hlc::ZERO
                } else {
                    // An adopted id's clock starts at the adoption, so that
                    // everything it claims is at or above it: a claim below
                    // it is from before (see `replica/identity.rs`).
                    state.clock.max(Hlc::new(cfg.id_adopted_at_ms, 0))
                },
                cfg.clock_offset_ms_max,
            ),
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
            age_collection_from_ms: if state.synced_ms != 0
                && now_ms.saturating_sub(state.synced_ms) > cfg.tombstone_horizon_ms
            {
                now_ms.saturating_add(cfg.tombstone_horizon_ms)
            } else {
                0
            },
            outputs: VecDeque::new(),
            staged: Vec::new(),
            dirty_keys: BTreeSet::new(),
            dirty_peers: BTreeSet::new(),
            dirty_meta: false,
            timers,
            ae_session: None,
            ae_asked: None,
            resynced_ms: None,
            next_session: 1,
            rebuilding,
            rebuild_from: None,
            rebuild_ended: false,
            regions: BTreeMap::from([(cfg.region.clone(), (true, now_ms))]),
            healing: BTreeMap::new(),
            partitioned: BTreeSet::new(),
            metrics: Metrics::default(),
            pending_acks: VecDeque::new(),
            barriers: BTreeMap::new(),
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
            judgement: Judgement::default(),
            seen_ms: now_ms,
            id_check: if cfg.id_adopted_at_ms != 0 {
                IdCheck::Adopted {
                    at: Hlc::new(cfg.id_adopted_at_ms, 0),
                    heard: BTreeSet::new(),
                }
            } else {
                IdCheck::Own
            },
            unreachable_beats: BTreeMap::new(),
            beats_since_start: 0,
            failover: failover::FailoverState::Off,
            forwards: BTreeMap::new(),
            forward_groups: BTreeMap::new(),
            forward_of: BTreeMap::new(),
            next_forward_group: 1,
            forwarding: None,
            edge_round: None,
            handover: handover::Handover::default(),
            forgotten: state.forgotten.clone(),
            dirty_forgotten: BTreeSet::new(),
            rejoined: state.rejoined,
            rejoined_dirty: false,
            left: (state.left > state.rejoined).then_some(state.left),
            left_dirty: false,
            equal_since_forget: BTreeSet::new(),
            doc_merges_waiting: BTreeMap::new(),
            doc_waiting_gen: 0,
            loaded_docs: doc_changes::LoadedDocs::default(),
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
        r.restore_handover();
        Ok(r)
    }

    /// This replica's node id.
    pub fn node(&self) -> NodeId {
        self.cfg.node
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// The replicated map, for reads and scans.
    pub fn map(&self) -> &LwwMap {
        &self.map
    }

    /// Counters since start.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The record of `key`, tombstone included; `None` if absent (or quarantined).
    pub fn get(&self, key: &str) -> Option<&Record> {
        self.map.get(key)
    }

    /// The Merkle root of the live entries: equal live data gives equal roots.
    pub fn root(&mut self) -> Hash {
        self.map.root()
    }

    /// The fingerprints of the children (at `level`) of each of `parents`,
    /// parent by parent: one step of the Merkle descent `verify --diff`
    /// runs over the mesh (as anti-entropy does between two peers).
    pub fn digest_children(&mut self, level: u8, parents: &[u32]) -> Vec<Fingerprint> {
        self.map.digest().children(level, parents)
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
        // Writes of ours that peers hold come back from them (see `replica/recovery.rs`).
        self.begin_recovery(Recovery::AfterStoreLoss);
        self.commit();
    }

    /// The collection floor: tombstones at or below it may have been dropped.
    pub fn gc_floor(&self) -> Hlc {
        self.gc_floor
    }

    /// The greatest timestamp this replica's clock issued or observed.
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
        if node == self.cfg.node || self.forgotten.contains_key(&node) {
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
    pub(super) fn observe_time(&mut self, now_ms: u64) {
        self.seen_ms = self.seen_ms.max(now_ms);
        let c = &self.cfg;
        let ae_period = c.ae_interval_ms + c.ae_jitter_ms;
        let t = &mut self.timers;
        t.bring_back(Timer::Heartbeat, now_ms + c.heartbeat_interval_ms);
        t.bring_back(Timer::AntiEntropy, now_ms + ae_period);
        t.bring_back(Timer::Gc, now_ms + c.gc_interval_ms);
        t.bring_back(Timer::Scrub, now_ms + c.scrub_interval_ms);
        t.bring_back(Timer::Push, now_ms + c.push_delay_ms);
        t.bring_back(Timer::EdgePush, now_ms + c.push_delay_ms);
        t.bring_back(Timer::EdgeAck, now_ms + edge::EDGE_ACK_DELAY_MS);
    }

    /// The next output to carry out, in order.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// When the replica next wants [`Replica::tick`] called.
    pub fn next_timeout(&self) -> u64 {
        // The periodic timers are always set: there is always a next one.
        let next = self.timers.next_ms().unwrap_or(self.seen_ms);
        let next = self.ack_deadline().map_or(next, |d| next.min(d));
        let next = self.forward_deadline().map_or(next, |d| next.min(d));
        self.barrier_deadline().map_or(next, |d| next.min(d))
    }

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
                if !p.link.up() {
                    self.metrics.messages_ignored += 1;
                    return;
                }
                p.last_heard_ms = now_ms;
                let regained = !p.in_contact;
                p.link.confirm();
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
                    Message::ReadBarrier {
                        barrier,
                        scope,
                        prefix,
                    } => self.on_read_barrier(from, barrier, &scope, prefix, now_ms),
                    Message::ReadBarrierReply { barrier, answer } => {
                        self.on_read_barrier_reply(from, barrier, answer, now_ms)
                    }
                    Message::View(v) => self.on_view(from, v),
                    Message::Forward { id, ops, quorum } => {
                        self.on_forward(from, id, ops, quorum, now_ms)
                    }
                    Message::Forwarded { id, outcome } => {
                        if !self.on_handed_over(from, id, &outcome, now_ms) {
                            self.on_forwarded(from, id, outcome, now_ms)
                        }
                    }
                    Message::Collected {
                        session: _,
                        floor,
                        records,
                    } => self.on_collected(from, floor, &records, now_ms),
                    Message::Forget { members } => self.on_forget(from, members, now_ms),
                    Message::Forgotten { at, floor } => self.on_forgotten(from, at, floor, now_ms),
                    Message::DocVersions { entries } => self.on_doc_versions(from, entries, now_ms),
                }
                // What arrived may complete a read barrier (a feed, an
                // answer) or a forwarded write (its entries).
                self.check_barriers(now_ms);
                self.check_forwards(now_ms);
                // Without a batching delay, what arrived goes on to the edges now.
                if self.timers.expired(Timer::EdgePush, now_ms) {
                    self.timers.stop(Timer::EdgePush);
                    self.pump_edges(now_ms);
                }
                if regained {
                    self.update_regions(now_ms);
                }
            }
        }
        self.commit();
    }

    /// Runs whatever is due: pushes, heartbeats, retransmissions, anti-entropy, garbage collection.
    pub fn tick(&mut self, now_ms: u64) {
        self.observe_time(now_ms);
        self.check_recovered();
        if self.timers.expired(Timer::Push, now_ms) {
            self.timers.stop(Timer::Push);
            self.pump_all(now_ms);
        }
        if self.timers.expired(Timer::EdgePush, now_ms) {
            self.timers.stop(Timer::EdgePush);
            self.pump_edges(now_ms);
        }
        if self.timers.expired(Timer::EdgeAck, now_ms) {
            self.timers.stop(Timer::EdgeAck);
            self.send_owed_acks();
        }
        if self.timers.expired(Timer::Heartbeat, now_ms) {
            self.timers
                .set(Timer::Heartbeat, now_ms + self.cfg.heartbeat_interval_ms);
            self.heartbeats(now_ms);
            // Estimates age out: judge again without waiting for a reply;
            // and contact too.
            self.rejudge(now_ms);
            self.update_regions(now_ms);
            self.judge_failover();
            self.confirm_id_when_due();
            // An edge's handover refused as busy, or unanswered: again.
            self.hand_over(now_ms);
            self.retry_doc_merges(now_ms);
        }
        if self.timers.expired(Timer::AntiEntropy, now_ms) {
            let jitter_ms = self.rng.below(self.cfg.ae_jitter_ms + 1);
            self.timers.set(
                Timer::AntiEntropy,
                now_ms + self.cfg.ae_interval_ms + jitter_ms,
            );
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
                .members()
                .any(|(_, p)| p.link.up() && !p.link.caught_up() && now_ms < p.hello_ms + settle);
            if self.ae_session.is_none() && !self.rebuilding && !catching_up {
                // Rounds are with members: a server leaves its edges to
                // start their own.
                let ready: Vec<NodeId> = self
                    .members()
                    .filter(|(_, p)| p.link.caught_up())
                    .map(|(id, _)| *id)
                    .collect();
                if !ready.is_empty() {
                    let peer = ready[self.rng.below(ready.len() as u64) as usize];
                    self.start_session(peer, now_ms);
                }
            }
        }
        if self.timers.expired(Timer::Gc, now_ms) {
            self.timers.set(Timer::Gc, now_ms + self.cfg.gc_interval_ms);
            self.collect_garbage(now_ms);
        }
        if self.timers.expired(Timer::Scrub, now_ms) {
            self.timers
                .set(Timer::Scrub, now_ms + self.cfg.scrub_interval_ms);
            self.scrub(self.cfg.scrub_batch_max, now_ms);
        }
        self.release_acks(now_ms);
        self.check_barriers(now_ms);
        self.check_forwards(now_ms);
        self.commit();
    }

    /// The members this replica knows (servers; not the edges it serves,
    /// nor a forgotten id that came back and has not resynced yet).
    fn members(&self) -> impl Iterator<Item = (&NodeId, &peer::Peer)> {
        self.peers
            .iter()
            .filter(|(id, p)| p.role == Role::Server && !self.forgotten.contains_key(id))
    }
}
