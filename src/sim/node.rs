//! One simulated node: its replica (while it runs), its durable state, the
//! outputs waiting on its pending persist, and the faults it carries.

use std::collections::{BTreeMap, VecDeque};

use crate::core::types::NodeId;
use crate::sync::{Config, DurableState, Output, PersistBatch, Replica};

pub(super) struct Node {
    pub(super) id: NodeId,
    pub(super) region: usize,
    pub(super) cfg: Config,
    pub(super) replica: Option<Replica>,
    pub(super) durable: DurableState,
    /// Outputs waiting for the pending persist.
    pub(super) queue: VecDeque<Output>,
    pub(super) pending: Option<PersistBatch>,
    /// Incarnation: bumped by a crash, so stale events find nothing.
    pub(super) incarnation: u64,
    pub(super) skew_ms: i64,
    /// The skew it was drawn with (clock faults move `skew_ms` away from it).
    pub(super) base_skew_ms: i64,
    /// Its stored records are damaged before its next restart.
    pub(super) damage_on_restart: bool,
    /// Its store was destroyed: it restarts empty and rebuilds.
    pub(super) lost: bool,
    /// Its store was destroyed with nothing left to say so (a wiped data
    /// directory): it restarts empty under the id its certificate names,
    /// adopted, and must find the loss from its peers.
    pub(super) wiped_unknowing: bool,
    pub(super) tick_at: Option<u64>,
    /// Its clock is (or was lately) wrong until then: the peers' judgement
    /// of clocks remembers samples for a while after a clock comes back.
    pub(super) clock_wrong_until: u64,
    /// Its clock jumped: it stays wrong for the rest of the run.
    pub(super) jumped: bool,
    /// The greatest stamp of a write it acknowledged (reset when its store
    /// is destroyed): every write it stamps later must be above it.
    pub(super) acked_hlc_max: crate::core::hlc::Hlc,
    /// Times it resynced (dropped what it held older than the horizon).
    pub(super) resyncs: u64,
    /// An edge: the server it recovers from, and that server's resyncs
    /// when the recovery began.
    pub(super) recovery_server: Option<(usize, u64)>,
    /// What every other node held alike when its last recovery started
    /// (see `check_recovered`).
    pub(super) recovery_snapshot:
        Option<BTreeMap<crate::core::types::Key, crate::core::types::Entry>>,
    /// It left for longer than the horizon: what it holds may be dropped
    /// when it comes back, so no other fault counts on its copies.
    pub(super) away: bool,
    /// It was forgotten (or left) and has not finished resyncing: writes
    /// it takes before it hears it was forgotten may be at or below the
    /// collection floor of members that collected without it, and are
    /// dropped when it resyncs (the documented price of a forget).
    pub(super) rejoining: bool,
    /// Its store lost or damaged records (see `barriers`).
    pub(super) store_faulted: bool,
    /// An edge: the server it is attached to (`None` for a server).
    pub(super) attached: Option<usize>,
    /// A server rebuilding a lost store: since when (sim ms).
    pub(super) store_lost_since_ms: Option<u64>,
    /// An edge that stayed with a server rebuilding a lost store for
    /// longer than the tombstone horizon: it collected nothing meanwhile,
    /// so the next server may tell it to resync (seed 19328).
    pub(super) behind_horizon: bool,
}

impl Node {
    /// A node not started yet, attached to a server when it is an edge.
    pub(super) fn new(region: usize, cfg: Config, skew_ms: i64, attached: Option<usize>) -> Node {
        Node {
            id: cfg.node,
            region,
            durable: DurableState::new(cfg.node),
            cfg,
            replica: None,
            queue: VecDeque::new(),
            pending: None,
            incarnation: 0,
            skew_ms,
            base_skew_ms: skew_ms,
            damage_on_restart: false,
            lost: false,
            wiped_unknowing: false,
            tick_at: None,
            clock_wrong_until: 0,
            jumped: false,
            recovery_snapshot: None,
            resyncs: 0,
            recovery_server: None,
            store_lost_since_ms: None,
            behind_horizon: false,
            acked_hlc_max: crate::core::hlc::Hlc::ZERO,
            away: false,
            rejoining: false,
            store_faulted: false,
            attached,
        }
    }
}
