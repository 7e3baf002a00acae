//! `sim`: a deterministic simulation of a whole cluster.
//!
//! Owns a virtual clock, N replicas in several regions, and a network that
//! delays (per region pair, with jitter, so messages reorder), drops,
//! duplicates and partitions (a region cut off, one link cut, a random
//! split), nodes that crash (losing everything not yet durable) and restart
//! from their durable state, per-node clock skew, and a client workload of
//! puts and deletes on a small key space so that writes conflict. Every
//! message crosses the real wire codec. Persistence takes virtual time:
//! a replica's outputs wait behind its pending `Persist`, as the contract
//! of [`Output`](crate::sync::Output) demands, and a crash discards them.
//!
//! After the active phase every partition heals and every node restarts;
//! the run then waits for quiescence, goes on for a while checking after
//! every event that all roots are still equal while replicas collect
//! tombstones, and checks: all Merkle roots equal, all
//! states equal, the state equal to an oracle built from every acknowledged
//! write (so no acknowledged write was lost and no deleted key came back),
//! and every node's durable state restoring to the same root. Everything
//! follows from the seed: a failure names it, and [`SimConfig::from_seed`]
//! with that seed replays it exactly.

mod barriers;
mod checks;
mod config;
mod documents;
mod edges;
mod faults;
mod members;
mod net;
mod node;
mod outputs;
mod runs;
mod seeds;
mod workload;

pub use config::SimConfig;
use node::Node;
pub use runs::{run_mutant, run_seed, MutantRun};
pub use seeds::SEEDS_THAT_FOUND_FAULTS;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::fmt;

use bytes::Bytes;

use crate::core::codec::ClusterId;
use crate::core::mutants::{self, Mutant};
use crate::core::rng::Rng;
use crate::core::types::{Hash, NodeId, Stamp, REGION_NAMES};
use crate::sync::{Config, Replica};

/// Virtual time starts here (ms since the Unix epoch), so stamps look real.
pub const EPOCH_MS: u64 = 1_750_000_000_000;
/// How long a converged run goes on with every root checked at every step.
const STEADY_MS: u64 = 10_000;
/// `[failover] after_ms` in runs with failover: the shortest allowed.
const FAILOVER_AFTER_MS: u64 = crate::sync::failover::AFTER_MS_MIN;
/// How long after a clock comes back the peers' judgement of clocks may
/// still count it as wrong: their samples' age limit, and a margin.
const CLOCK_MEMORY_MS: u64 = crate::sync::clock_offset::SAMPLE_AGE_MS_MAX + 5_000;
/// Share of deletes that delete a whole prefix, per million.
const PREFIX_DELETE_PER_MILLION: u32 = 50_000;

/// What a successful run saw.
#[derive(Debug, Clone, Default)]
pub struct SimReport {
    /// The run's seed.
    pub seed: u64,
    /// Replicas in the run.
    pub nodes: usize,
    /// Client writes acknowledged.
    pub writes_acknowledged: u64,
    /// Quorum writes answered as not acknowledged (timed out).
    pub writes_unacknowledged: u64,
    /// Client writes refused: their node was down, or its replica refused them.
    pub writes_refused: u64,
    /// Writes a replica accepted that were never acknowledged (accepted minus acknowledged).
    pub writes_lost_unacknowledged: u64,
    /// Messages sent by replicas.
    pub messages_sent: u64,
    /// Messages the network dropped: a link down or cut, a node down, or a random drop.
    pub messages_dropped: u64,
    /// Anti-entropy entry messages delivered a second time, seconds late.
    pub messages_late: u64,
    /// Partition episodes.
    pub partitions: u64,
    /// Crash-and-restart episodes.
    pub crashes: u64,
    /// Tombstones collected, summed over the replicas at the end.
    pub tombstones_collected: u64,
    /// Entries applied by anti-entropy, summed over the replicas at the end.
    pub ae_entries_applied: u64,
    /// Feed gaps, summed over the replicas at the end.
    pub feed_gaps: u64,
    /// Entries refused at or below the collection floor, summed over the replicas at the end.
    pub below_floor_refused: u64,
    /// `ClockSkew` events: messages refused because their stamps ran too far ahead.
    pub clock_skew_events: u64,
    /// Virtual ms from the end of the active phase to equal roots everywhere.
    pub converged_after_ms: u64,
    /// Acknowledged deletes of keys that were not live on the deleting
    /// replica (they must still win over earlier writes made elsewhere).
    pub deletes_of_absent_keys: u64,
    /// Tombstones written by prefix deletes.
    pub prefix_deletes: u64,
    /// Tombstones collected after convergence, while every root was
    /// checked at every step.
    pub collected_while_steady: u64,
    /// Clock faults injected (run-offs and jumps).
    pub clock_faults: u64,
    /// Of the refused writes, those refused because of a clock (judged off, or ahead of time).
    pub writes_refused_for_clock: u64,
    /// Records damaged on disk or in memory.
    pub records_damaged: u64,
    /// Records quarantined, summed over the replicas at the end.
    pub records_quarantined: u64,
    /// Quarantines ended, summed over the replicas at the end.
    pub records_repaired: u64,
    /// Nodes whose store was destroyed.
    pub destroys: u64,
    /// Of those, nodes whose store was destroyed with nothing left to say
    /// so: they restarted under an adopted id.
    pub wiped_unknowing: u64,
    /// Losses such nodes found from their peers.
    pub lost_stores_found: u64,
    /// Standbys that took over (`[failover]`), each checked: no live node
    /// of a region it took over from was in reach for the wait before.
    pub failovers: u64,
    /// Live records a store silently lost (peers held them).
    pub records_lost: u64,
    /// Members away longer than the tombstone horizon.
    pub long_absences: u64,
    /// Members forgotten by another member while they were down.
    pub forgets: u64,
    /// Members that left (and came back later).
    pub leaves: u64,
    /// Acknowledged writes that only a member leaving for longer than the
    /// horizon held: it may drop them when it resyncs (the horizon's
    /// price), so the oracle no longer counts them as acknowledged.
    pub writes_held_only_by_the_absent: u64,
    /// Writes a forgotten member took after it came back and before it
    /// resynced: not counted as acknowledged (they may be dropped).
    pub writes_taken_while_forgotten: u64,
    /// Replicas told to resync (they were away longer than the horizon).
    pub resyncs: u64,
    /// Read barriers that ended well (each checked), and refused ones.
    pub barriers_passed: u64,
    /// Read barriers refused (a region unreachable, a peer lost or
    /// recovering, the timeout).
    pub barriers_refused: u64,
    /// Edges in the run.
    pub edges: usize,
    /// Writes edges forwarded that their server acknowledged.
    pub edge_writes_acknowledged: u64,
    /// Writes edges forwarded that failed (no server, the server lost or
    /// refusing, a quorum not reached).
    pub edge_writes_failed: u64,
    /// Writes edges took while no server was connected (handed over later).
    pub edge_local_writes: u64,
    /// Times an edge left a server that refused its writes.
    pub edge_reattaches: u64,
    /// Local writes edges handed over to a server (made or skipped).
    pub edge_local_writes_handed_over: u64,
    /// Edges left holding local writes no server of their region takes
    /// (each refuses writes for a clock that jumped for good).
    pub edges_stranded: u64,
    /// Of the acknowledged ones, those answered before the edge had
    /// applied them (its feed was slower than the wait).
    pub edge_answers_before_applied: u64,
    /// Times an edge moved to another server.
    pub edge_switches: u64,
    /// Live keys at the end, as the oracle has them.
    pub keys_live: usize,
    /// Document writes accepted (field patches and deletes of `d*` keys).
    pub doc_writes: u64,
    /// Merges of document versions made (summed over the nodes at the end).
    pub doc_merges: u64,
    /// The Merkle root every replica ended with.
    pub root: Hash,
}

/// A failed run: what went wrong, and how to replay it.
#[derive(Debug, Clone)]
pub struct SimFailure {
    /// The seed that replays the run.
    pub seed: u64,
    /// The check that failed, and what it found.
    pub reason: String,
}

impl fmt::Display for SimFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "simulation seed {} failed: {}\nreplay with MERIDIAN_SIM_SEED={}",
            self.seed, self.reason, self.seed
        )
    }
}

impl std::error::Error for SimFailure {}

#[derive(Debug)]
enum Ev {
    Deliver {
        to: usize,
        from: usize,
        link: u64,
        frame: Vec<u8>,
    },
    Tick {
        node: usize,
        incarnation: u64,
    },
    PersistDone {
        node: usize,
        incarnation: u64,
    },
    Write,
    DocWrite,
    Partition,
    Heal {
        cut: Vec<(usize, usize)>,
    },
    Crash,
    Restart {
        node: usize,
    },
    /// A node crashes, and its disk damages some records before it restarts.
    DiskDamage,
    /// A record changes in a running node's memory.
    MemoryDamage,
    /// A node's clock runs off by more than the bound, until `ClockBack`.
    ClockRunsOff,
    ClockBack {
        node: usize,
    },
    /// A node's clock jumps forward or back, for the rest of the run.
    ClockJump,
    /// A node crashes and its store is lost.
    Destroy,
    /// A node crashes, and its store turns out to have lost a few records.
    LoseRecords,
    /// A member leaves for longer than the tombstone horizon.
    LongAbsence,
    /// A consistent read: a read barrier at a random node.
    ReadBarrier,
    /// An edge switches to another server of its region (a random edge
    /// when `None`).
    EdgeSwitch {
        edge: Option<usize>,
    },
    /// A member dies for a while, and is forgotten by another.
    ForgetFault,
    /// A running member forgets `node` (dead), or tries again.
    Forget {
        node: usize,
        tries: u32,
    },
    /// A member leaves (a random one when `None`), or tries again.
    Leave {
        node: Option<usize>,
        tries: u32,
    },
    /// A member that left stops (and comes back later).
    Stop {
        node: usize,
    },
    /// A driver closes the connection of link `(a, b)`.
    Close {
        a: usize,
        b: usize,
    },
    Reconcile {
        a: usize,
        b: usize,
    },
}

struct Scheduled {
    at: u64,
    seq: u64,
    ev: Ev,
}

impl PartialEq for Scheduled {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Scheduled {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(o.at, o.seq))
    }
}

/// A write the oracle knows of.
#[derive(Clone, Debug)]
struct Issued {
    key: String,
    value: Option<Bytes>,
    flags: u64,
    /// The node that accepted it, and its incarnation then: unless that
    /// incarnation crashed, the write must be answered.
    node: usize,
    incarnation: u64,
    acknowledged: bool,
    /// Acknowledged, or answered as not acknowledged (a quorum write that
    /// timed out).
    answered: bool,
    /// Made by a server for an edge: the edge answers it (see `edges.rs`).
    forwarded: bool,
}

/// The simulator (see the module docs).
pub struct Sim {
    cfg: SimConfig,
    rng: Rng,
    now: u64,
    seq: u64,
    events: BinaryHeap<Reverse<Scheduled>>,
    nodes: Vec<Node>,
    /// Connection state and epoch per unordered pair (a < b).
    links: BTreeMap<(usize, usize), (bool, u64)>,
    /// When each link last opened, and last went out of reach (closed, or
    /// cut) (sim ms).
    link_up_ms: HashMap<(usize, usize), u64>,
    link_down_ms: HashMap<(usize, usize), u64>,
    /// How many partition episodes cut each pair.
    cuts: HashMap<(usize, usize), u32>,
    dropping: bool,
    /// When the active phase ends (virtual ms): late copies arrive before it,
    /// never during the checks after quiescence.
    active_end: u64,
    issued: HashMap<Stamp, Issued>,
    oracle: BTreeMap<String, (Stamp, Option<Bytes>, u64)>,
    report: SimReport,
    failure: Option<String>,
    /// Print what happens to this key (and every fault), for replaying a seed.
    trace: Option<String>,
    /// The safety mechanism this run breaks (see [`crate::core::mutants`]).
    mutant: Option<Mutant>,
    /// At some moment a majority of the clocks were (or were lately) wrong:
    /// then a correct clock may be outvoted and refuse writes.
    clocks_majority_wrong: bool,
    /// Read barriers in flight, by node and number.
    barriers: HashMap<(usize, u64), barriers::Expected>,
    next_barrier: u64,
    /// Writes edges forwarded, by edge and number, until answered.
    edge_writes: BTreeMap<(usize, u64), edges::EdgeWrite>,
    /// Writes edges took while no server was connected and acknowledged
    /// (by edge and local stamp: the key), until they are handed over.
    local_writes: BTreeMap<(usize, Stamp), edges::LocalWrite>,
    /// Writes servers made for edges while forgotten and not yet resynced:
    /// they may be dropped when the server hears it was forgotten, as its
    /// own writes then may.
    made_while_forgotten: std::collections::HashSet<Stamp>,
    next_edge_write: u64,
}

fn pair(a: usize, b: usize) -> (usize, usize) {
    (a.min(b), a.max(b))
}

impl Sim {
    /// A simulation of `cfg`: its nodes and links set up, nothing run yet.
    pub fn new(cfg: SimConfig) -> Sim {
        let mut rng = Rng::new(cfg.seed);
        let cluster = ClusterId([7; 16]);
        let mut nodes = Vec::new();
        for i in 0..cfg.nodes {
            let id = NodeId(rng.next_u64() | 1);
            let region = i % cfg.regions.max(1);
            let mut c = Config::new(
                id,
                &format!("n{i}"),
                REGION_NAMES[region % REGION_NAMES.len()],
                cluster,
            );
            c.partition_policy = cfg.policy;
            c.write_ack = cfg.write_ack;
            if cfg.failover {
                c.standby = region != 0;
                c.failover = crate::sync::failover::FailoverConfig {
                    priority: (0..cfg.regions.max(1))
                        .map(|r| REGION_NAMES[r % REGION_NAMES.len()].to_string())
                        .collect(),
                    after_ms: FAILOVER_AFTER_MS,
                    majority: true,
                };
            }
            c.rng_seed = rng.next_u64();
            c.tombstone_horizon_ms = cfg.tombstone_horizon_ms;
            let skew =
                rng.range(0, 2 * cfg.clock_skew_ms_max) as i64 - cfg.clock_skew_ms_max as i64;
            nodes.push(Node::new(region, c, skew, None));
        }
        let mut links = BTreeMap::new();
        for a in 0..cfg.nodes {
            for b in a + 1..cfg.nodes {
                links.insert((a, b), (false, 0));
            }
        }
        edges::add_edges(&cfg, &mut rng, cluster, &mut nodes, &mut links);
        Sim {
            report: SimReport {
                seed: cfg.seed,
                nodes: cfg.nodes,
                edges: cfg.edges,
                ..SimReport::default()
            },
            cfg,
            rng,
            now: EPOCH_MS,
            seq: 0,
            events: BinaryHeap::new(),
            nodes,
            links,
            cuts: HashMap::new(),
            link_up_ms: HashMap::new(),
            link_down_ms: HashMap::new(),
            dropping: true,
            active_end: u64::MAX,
            issued: HashMap::new(),
            oracle: BTreeMap::new(),
            failure: None,
            trace: None,
            mutant: None,
            clocks_majority_wrong: false,
            barriers: HashMap::new(),
            next_barrier: 0,
            edge_writes: BTreeMap::new(),
            local_writes: BTreeMap::new(),
            made_while_forgotten: std::collections::HashSet::new(),
            next_edge_write: 0,
        }
    }

    /// Runs with `mutant` switched on (it has an effect only in a build
    /// with the `mutants` feature): the run is expected to fail.
    pub fn with_mutant(mut self, mutant: Option<Mutant>) -> Sim {
        self.mutant = mutant;
        self
    }

    /// Prints (to stderr) every fault, and every write, message entry,
    /// persist and report that concerns `key`: for replaying a seed.
    pub fn with_trace(mut self, key: Option<String>) -> Sim {
        self.trace = key;
        self
    }

    fn tr(&self, what: impl FnOnce() -> String) {
        if self.trace.is_some() {
            eprintln!("{:>8} {}", self.now - EPOCH_MS, what());
        }
    }

    fn traced(&self, key: &str) -> bool {
        self.trace.as_deref().is_some_and(|t| t == key || t == "*")
    }

    fn schedule(&mut self, at: u64, ev: Ev) {
        self.seq += 1;
        self.events.push(Reverse(Scheduled {
            at: at.max(self.now),
            seq: self.seq,
            ev,
        }));
    }

    fn node_now(&self, i: usize) -> u64 {
        (self.now as i64 + self.nodes[i].skew_ms) as u64
    }

    fn fail(&mut self, reason: String) {
        if self.failure.is_none() {
            self.failure = Some(reason);
        }
    }

    /// Runs the whole scenario and checks the outcome.
    pub fn run(mut self) -> Result<SimReport, SimFailure> {
        let seed = self.cfg.seed;
        mutants::set(self.mutant);
        let outcome = self.run_inner();
        mutants::set(None);
        outcome.map_err(|reason| SimFailure { seed, reason })
    }

    fn run_inner(&mut self) -> Result<SimReport, String> {
        for i in 0..self.nodes.len() {
            self.start_node(i);
        }
        let start = self.now;
        let end = start + self.cfg.active_ms;
        self.active_end = end;
        for _ in 0..self.cfg.writes {
            let at = self.rng.range(start + 100, end);
            self.schedule(at, Ev::Write);
        }
        for _ in 0..self.cfg.partitions {
            let at = self.rng.range(start, end.saturating_sub(2_000).max(start));
            self.schedule(at, Ev::Partition);
        }
        for _ in 0..self.cfg.crashes {
            let at = self.rng.range(start, end.saturating_sub(2_000).max(start));
            self.schedule(at, Ev::Crash);
        }
        let faults = [
            (self.cfg.disk_damage, 0),
            (self.cfg.memory_damage, 1),
            (self.cfg.clock_runs_off, 2),
            (self.cfg.clock_jumps, 3),
            (self.cfg.destroys, 4),
        ];
        for (count, kind) in faults {
            for _ in 0..count {
                let at = self.rng.range(start, end.saturating_sub(5_000).max(start));
                let ev = match kind {
                    0 => Ev::DiskDamage,
                    1 => Ev::MemoryDamage,
                    2 => Ev::ClockRunsOff,
                    3 => Ev::ClockJump,
                    _ => Ev::Destroy,
                };
                self.schedule(at, ev);
            }
        }
        for _ in 0..self.cfg.lost_records {
            // Late, so that the lost records are not all written again.
            let from = end.saturating_sub(4_000).max(start);
            let at = self.rng.range(from, end.saturating_sub(1_000).max(from));
            self.schedule(at, Ev::LoseRecords);
        }
        for _ in 0..self.cfg.long_absences {
            // Early, so that deletes made while it is away are collected
            // by age before it comes back.
            let at = self.rng.range(start, start + self.cfg.active_ms / 3);
            self.schedule(at, Ev::LongAbsence);
        }
        // Last: every earlier draw keeps its value for the same seed.
        self.schedule_barriers(start, end);
        for _ in 0..self.cfg.edge_switches {
            let at = self.rng.range(start, end);
            self.schedule(at, Ev::EdgeSwitch { edge: None });
        }
        for _ in 0..self.cfg.forgets {
            let at = self.rng.range(start, end.saturating_sub(10_000).max(start));
            self.schedule(at, Ev::ForgetFault);
        }
        for _ in 0..self.cfg.leaves {
            let at = self.rng.range(start, end.saturating_sub(10_000).max(start));
            self.schedule(
                at,
                Ev::Leave {
                    node: None,
                    tries: 0,
                },
            );
        }
        for _ in 0..self.cfg.doc_writes {
            let at = self.rng.range(start + 100, end);
            self.schedule(at, Ev::DocWrite);
        }
        self.run_until(end);
        // Heal everything: no more cuts, drops, crashes or wrong clocks.
        self.dropping = false;
        self.cuts.clear();
        for i in 0..self.nodes.len() {
            if self.nodes[i].skew_ms != self.nodes[i].base_skew_ms {
                self.clock_back(i);
            }
        }
        for i in 0..self.nodes.len() {
            // A member away longer than the horizon comes back when its
            // absence ends (its `Restart` is scheduled).
            if self.nodes[i].replica.is_none() && !self.nodes[i].away {
                self.start_node(i);
            }
        }
        self.reconcile_all();
        let deadline = end + self.cfg.quiesce_ms_max;
        let mut t = end;
        loop {
            t += 500;
            self.run_until(t);
            if let Some(f) = self.failure.take() {
                return Err(f);
            }
            if self.converged() {
                break;
            }
            if t >= deadline {
                let roots = self.describe_roots();
                return Err(format!(
                    "no convergence {} ms after healing: {roots}",
                    self.cfg.quiesce_ms_max
                ));
            }
        }
        self.report.converged_after_ms = t - end;
        self.check_steady(t + STEADY_MS)?;
        self.check_final()?;
        Ok(self.report.clone())
    }

    fn run_until(&mut self, t: u64) {
        while self.step(t) {
            if self.failure.is_some() {
                return;
            }
        }
        self.now = self.now.max(t);
    }

    /// Carries out the next event due at or before `t`; false if none is.
    fn step(&mut self, t: u64) -> bool {
        if self.events.peek().is_none_or(|Reverse(s)| s.at > t) {
            return false;
        }
        let Reverse(s) = self.events.pop().expect("peeked");
        self.now = self.now.max(s.at);
        self.dispatch(s.ev);
        true
    }

    fn dispatch(&mut self, ev: Ev) {
        if self.trace.is_some()
            && !matches!(
                ev,
                Ev::Deliver { .. } | Ev::Tick { .. } | Ev::PersistDone { .. } | Ev::Write
            )
        {
            self.tr(|| format!("{ev:?}"));
        }
        match ev {
            Ev::Deliver {
                to,
                from,
                link,
                frame,
            } => self.deliver(to, from, link, &frame),
            Ev::Tick { node, incarnation } => {
                if self.nodes[node].incarnation != incarnation
                    || self.nodes[node].tick_at != Some(self.now)
                {
                    return;
                }
                self.nodes[node].tick_at = None;
                let now = self.node_now(node);
                if let Some(r) = self.nodes[node].replica.as_mut() {
                    r.tick(now);
                }
                self.drain(node);
            }
            Ev::PersistDone { node, incarnation } => {
                if self.nodes[node].incarnation != incarnation {
                    return;
                }
                if let Some(b) = self.nodes[node].pending.take() {
                    self.nodes[node].durable.apply(&b);
                }
                self.drain(node);
            }
            Ev::Write => self.client_write(),
            Ev::DocWrite => self.doc_write(),
            Ev::Partition => self.partition(),
            Ev::Heal { cut } => {
                for p in cut {
                    if let Some(c) = self.cuts.get_mut(&p) {
                        *c -= 1;
                        if *c == 0 {
                            self.cuts.remove(&p);
                        }
                    }
                    let delay = self.rng.range(50, 1_000);
                    self.schedule(self.now + delay, Ev::Reconcile { a: p.0, b: p.1 });
                }
            }
            Ev::Crash => {
                self.crash();
            }
            Ev::DiskDamage => {
                if let Some(i) = self.crash() {
                    self.nodes[i].damage_on_restart = true;
                }
            }
            Ev::MemoryDamage => self.damage_memory(),
            Ev::ClockRunsOff => {
                let i = self.rng.below(self.nodes.len() as u64) as usize;
                let by = self.rng.range(1_000, 30_000) as i64
                    + crate::core::hlc::CLOCK_OFFSET_MS_MAX_DEFAULT as i64;
                let by = if self.rng.chance(500_000) { by } else { -by };
                self.nodes[i].skew_ms = self.nodes[i].base_skew_ms + by;
                self.nodes[i].clock_wrong_until = u64::MAX;
                self.note_wrong_clocks();
                self.report.clock_faults += 1;
                let back = self.rng.range(2_000, 20_000);
                self.schedule(self.now + back, Ev::ClockBack { node: i });
            }
            Ev::ClockBack { node } => self.clock_back(node),
            Ev::ClockJump => {
                let i = self.rng.below(self.nodes.len() as u64) as usize;
                let by = self.rng.range(100, 5_000) as i64;
                let by = if self.rng.chance(500_000) { by } else { -by };
                self.nodes[i].skew_ms += by;
                self.nodes[i].base_skew_ms += by;
                // For the rest of the run.
                self.nodes[i].clock_wrong_until = u64::MAX;
                self.nodes[i].jumped = true;
                self.note_wrong_clocks();
                self.report.clock_faults += 1;
            }
            Ev::Destroy => {
                self.destroy();
            }
            Ev::LoseRecords => self.lose_records(),
            Ev::LongAbsence => self.long_absence(),
            Ev::ReadBarrier => self.read_barrier(),
            Ev::EdgeSwitch { edge } => self.edge_switch(edge),
            Ev::ForgetFault => self.forget_fault(),
            Ev::Forget { node, tries } => self.forget(node, tries),
            Ev::Leave { node, tries } => self.leave(node, tries),
            Ev::Stop { node } => self.stop(node),
            Ev::Close { a, b } => self.close(a, b),
            Ev::Restart { node } => {
                if self.nodes[node].replica.is_none() {
                    if std::mem::take(&mut self.nodes[node].damage_on_restart) {
                        self.damage_disk(node);
                    }
                    self.start_node(node);
                    for other in 0..self.nodes.len() {
                        let (a, b) = pair(node, other);
                        if other != node && self.links.contains_key(&(a, b)) {
                            let delay = self.rng.range(50, 1_000);
                            self.schedule(self.now + delay, Ev::Reconcile { a, b });
                        }
                    }
                }
            }
            Ev::Reconcile { a, b } => self.reconcile(a, b),
        }
    }

    fn start_node(&mut self, i: usize) {
        let now = self.node_now(i);
        let n = &mut self.nodes[i];
        if std::mem::take(&mut n.wiped_unknowing) {
            // Nothing says the store is lost: the id is adopted, and the
            // replica must find the loss from its peers.
            n.lost = false;
            n.cfg.id_adopted_at_ms = now;
        }
        let replica = Replica::restore(n.cfg.clone(), n.durable.clone(), now);
        let mut replica = match replica {
            Ok(r) => r,
            Err(e) => return self.fail(format!("node {i} cannot restart: {e}")),
        };
        // The members (an edge learns of its servers when it attaches).
        let members: Vec<(NodeId, String)> = self
            .nodes
            .iter()
            .filter(|m| m.attached.is_none() && self.nodes[i].attached.is_none())
            .map(|m| (m.id, m.cfg.region.clone()))
            .collect();
        for (id, region) in members {
            replica.add_member(id, &region);
        }
        let n = &mut self.nodes[i];
        if std::mem::take(&mut n.lost) {
            // Its store is gone: empty, under its own id, rebuilding.
            replica.store_lost();
        }
        n.replica = Some(replica);
        n.tick_at = None;
        if self.now == EPOCH_MS {
            // First start: connect everything once started.
            for j in 0..i {
                if !self.links.contains_key(&(j, i)) {
                    continue;
                }
                let delay = self.rng.range(1, 50);
                self.schedule(self.now + delay, Ev::Reconcile { a: j, b: i });
            }
        }
        self.drain(i);
    }

    fn schedule_tick(&mut self, i: usize) {
        let Some(r) = self.nodes[i].replica.as_ref() else {
            return;
        };
        let local = r.next_timeout();
        // At least once a virtual second, as the node's driver does (a
        // clock that went back leaves the replica's deadlines far ahead).
        let at = ((local as i64) - self.nodes[i].skew_ms)
            .max(self.now as i64)
            .min((self.now + 1_000) as i64) as u64;
        if self.nodes[i].tick_at.is_none_or(|t| at < t) {
            self.nodes[i].tick_at = Some(at);
            let incarnation = self.nodes[i].incarnation;
            self.schedule(
                at,
                Ev::Tick {
                    node: i,
                    incarnation,
                },
            );
        }
    }
}
