//! What one simulated run does: its size, workload, network, faults and
//! policies, all drawn from a seed.

use crate::core::rng::Rng;
use crate::sync::{PartitionPolicy, WriteAck, TOMBSTONE_HORIZON_MS_DEFAULT};

/// What one simulated run does. [`SimConfig::from_seed`] draws a varied one.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Seed of every random choice in the run: the same seed replays it exactly.
    pub seed: u64,
    /// Replicas, spread round-robin over the regions (3..=9 in generated runs).
    pub nodes: usize,
    /// Regions the nodes are spread over (3 in generated runs).
    pub regions: usize,
    /// Size of the key space the workload writes to.
    pub keys: usize,
    /// Client writes issued during the active phase.
    pub writes: usize,
    /// Length of the active phase (writes, faults) in virtual ms.
    pub active_ms: u64,
    /// Share of writes that are deletes, per million.
    pub delete_per_million: u32,
    /// Messages dropped, per million (active phase only).
    pub drop_per_million: u32,
    /// Messages delivered twice, per million.
    pub duplicate_per_million: u32,
    /// One-way delay within a region, min..=max ms.
    pub intra_region_ms: (u64, u64),
    /// One-way delay between regions, min..=max ms.
    pub inter_region_ms: (u64, u64),
    /// Partition episodes during the active phase.
    pub partitions: usize,
    /// Crash-and-restart episodes during the active phase.
    pub crashes: usize,
    /// Each node's clock is off by up to this, either way.
    pub clock_skew_ms_max: u64,
    /// A persist takes 0..=this virtual ms.
    pub persist_ms_max: u64,
    /// Every replica's partition policy.
    pub policy: PartitionPolicy,
    /// Give up waiting for convergence after this long.
    pub quiesce_ms_max: u64,
    /// Crashed nodes whose stored records are damaged before they restart
    /// (records another node holds intact: they can be repaired).
    pub disk_damage: usize,
    /// Records damaged in a running node's memory (records its disk or
    /// another node holds intact).
    pub memory_damage: usize,
    /// Episodes of a node's clock running off by more than the bound
    /// (fast or slow) for a while.
    pub clock_runs_off: usize,
    /// A node's clock jumping (forward or back) for the rest of the run.
    pub clock_jumps: usize,
    /// When writes are acknowledged; with `Quorum`, one node may also be
    /// destroyed (its store lost) and rebuild.
    pub write_ack: WriteAck,
    /// Nodes destroyed: store wiped, restarted empty under their own id.
    pub destroys: usize,
    /// Per million anti-entropy entry messages, one more copy delivered
    /// 2–20 s later on the same connection: old values arriving after
    /// their keys' deletes were collected (the collection floor must
    /// refuse them).
    pub late_per_million: u32,
    /// Nodes that crash late in the active phase and whose store silently
    /// lost a few live records (a lost write: every record left passes its
    /// check, and the node's feed position says it holds what it lost).
    /// Peers hold the records; only anti-entropy can bring them back.
    pub lost_records: usize,
    /// Every replica's tombstone horizon (ms): tombstones older than this
    /// are collected even while a member has not confirmed them.
    pub tombstone_horizon_ms: u64,
    /// Members that crash early in the active phase and stay away longer
    /// than the horizon: when they come back they must be told to resync,
    /// or they keep values whose deletes were collected without them.
    pub long_absences: usize,
    /// Read barriers (`?consistent`) started during the active phase: each
    /// that ends well must find every write its peers had acknowledged.
    pub read_barriers: usize,
    /// Prioritized failover: the first region active, the others standbys
    /// listed after it (`[failover]`, after 5 s); a standby that takes
    /// over must not have been in contact with any live node of the
    /// regions it takes over from.
    pub failover: bool,
    /// Edges, after the servers, spread round-robin over the regions: each
    /// attached to one server of its region, which it leaves when that
    /// server crashes (for another of its region) and at random switches;
    /// they take client writes (forwarded) and must end holding what the
    /// servers hold.
    pub edges: usize,
    /// Times a random edge switches to another server of its region.
    pub edge_switches: usize,
    /// Edges take writes while no server is connected (`edge_writes =
    /// "local"`) and hand them over later.
    pub edge_writes_local: bool,
    /// Members that die for a while and are forgotten by another member
    /// (`meridian forget`) before they come back: collection goes on
    /// without them, and when they come back they must resync.
    pub forgets: usize,
    /// Members that leave (`meridian leave`), stop, and later come back
    /// under the same id (they must resync).
    pub leaves: usize,
    /// Client writes to documents (keys `d0`..): one field set or removed
    /// by a merge patch, or the document deleted. The oracle checks each
    /// key against automerge's merge of every acknowledged version.
    pub doc_writes: usize,
    /// Document keys the document writes spread over.
    pub doc_keys: usize,
}

impl SimConfig {
    /// A run drawn from `seed`: 3..=9 nodes in 3 regions, faults of every kind.
    pub fn from_seed(seed: u64) -> SimConfig {
        let mut r = Rng::new(seed ^ 0x5EED_5EED_5EED_5EED);
        SimConfig {
            seed,
            nodes: r.range(3, 9) as usize,
            regions: 3,
            keys: r.range(4, 24) as usize,
            writes: r.range(50, 400) as usize,
            active_ms: r.range(10_000, 60_000),
            delete_per_million: r.range(100_000, 400_000) as u32,
            drop_per_million: r.range(0, 50_000) as u32,
            duplicate_per_million: r.range(0, 30_000) as u32,
            intra_region_ms: (1, r.range(2, 10)),
            inter_region_ms: (r.range(20, 60), r.range(60, 150)),
            partitions: r.range(0, 4) as usize,
            crashes: r.range(0, 3) as usize,
            clock_skew_ms_max: r.range(0, 200),
            persist_ms_max: r.range(0, 5),
            policy: if r.chance(150_000) {
                PartitionPolicy::Quorum
            } else {
                PartitionPolicy::Available
            },
            quiesce_ms_max: 300_000,
            // Drawn after the others, so that every earlier field keeps
            // the value it had for the same seed.
            disk_damage: r.range(0, 2) as usize,
            memory_damage: r.range(0, 2) as usize,
            clock_runs_off: if r.chance(250_000) { 1 } else { 0 },
            clock_jumps: if r.chance(250_000) { 1 } else { 0 },
            write_ack: WriteAck::Local,
            destroys: 0,
            late_per_million: 0,
            lost_records: 0,
            tombstone_horizon_ms: TOMBSTONE_HORIZON_MS_DEFAULT,
            long_absences: 0,
            read_barriers: 0,
            failover: false,
            edges: 0,
            edge_switches: 0,
            edge_writes_local: false,
            forgets: 0,
            leaves: 0,
            doc_writes: 0,
            doc_keys: 0,
        }
        .with_quorum_acks(r.chance(150_000))
        .with_late_copies(&mut r)
        .with_lost_records(&mut r)
        .with_long_absence(&mut r)
        .with_read_barriers(&mut r)
        .with_failover(&mut r)
        .with_edges(&mut r)
        .with_members_leaving(&mut r)
        .with_edge_writes(&mut r)
        .with_documents(&mut r)
    }

    /// In a third of the seeds, documents written beside the plain keys
    /// (drawn last, so every earlier field keeps its value).
    fn with_documents(mut self, r: &mut Rng) -> SimConfig {
        if r.chance(333_333) {
            self.doc_writes = r.range(20, 150) as usize;
            self.doc_keys = r.range(1, 3) as usize;
        }
        self
    }

    /// In half the seeds with edges, edges take writes while no server is
    /// connected (drawn last, so every earlier field keeps its value).
    fn with_edge_writes(mut self, r: &mut Rng) -> SimConfig {
        self.edge_writes_local = self.edges > 0 && r.chance(500_000);
        self
    }

    /// In a third of the seeds a member forgotten, in a third one that
    /// leaves; not with failover (whose standbys wait for regions to come
    /// back). Drawn last, so every earlier field keeps its value.
    fn with_members_leaving(mut self, r: &mut Rng) -> SimConfig {
        let forget = r.chance(333_333);
        let leave = r.chance(333_333);
        if !self.failover {
            self.forgets = usize::from(forget);
            self.leaves = usize::from(leave);
        }
        self
    }

    /// In a third of the seeds, 1 to 4 edges (drawn last, so every earlier
    /// field keeps its value for the same seed).
    fn with_edges(mut self, r: &mut Rng) -> SimConfig {
        if r.chance(333_333) {
            self.edges = r.range(1, 4) as usize;
            self.edge_switches = r.range(0, 6) as usize;
        }
        self
    }

    /// In a fifth of the seeds, prioritized failover (drawn last, so every
    /// earlier field keeps its value for the same seed).
    fn with_failover(mut self, r: &mut Rng) -> SimConfig {
        self.failover = r.chance(200_000);
        self
    }

    /// In a quarter of the seeds, consistent reads: read barriers at random
    /// nodes through the active phase (drawn last, so every earlier field
    /// keeps its value for the same seed).
    fn with_read_barriers(mut self, r: &mut Rng) -> SimConfig {
        if r.chance(250_000) {
            self.read_barriers = r.range(5, 40) as usize;
        }
        self
    }

    /// In a fifth of the seeds, a node loses records from its store (drawn
    /// after the late copies, so every earlier field keeps its value).
    fn with_lost_records(mut self, r: &mut Rng) -> SimConfig {
        if r.chance(200_000) {
            self.lost_records = 1;
        }
        self
    }

    /// In a sixth of the seeds, a horizon just longer than every other
    /// absence the run can draw (a partition or a crash lasts at most the
    /// active phase), and one member away longer than it.
    fn with_long_absence(mut self, r: &mut Rng) -> SimConfig {
        if r.chance(166_666) {
            self.tombstone_horizon_ms = self.active_ms + r.range(20_000, 40_000);
            self.long_absences = 1;
        }
        self
    }

    /// In a third of the seeds, late copies of anti-entropy entries (drawn
    /// last, so every earlier field keeps its value for the same seed).
    fn with_late_copies(mut self, r: &mut Rng) -> SimConfig {
        if r.chance(333_333) {
            self.late_per_million = r.range(50_000, 300_000) as u32;
        }
        self
    }

    /// Every write acknowledged by a quorum of regions, and one node
    /// destroyed during the run: no acknowledged write may be lost.
    fn with_quorum_acks(mut self, on: bool) -> SimConfig {
        if on {
            self.write_ack = WriteAck::Quorum;
            self.destroys = 1;
        }
        self
    }
}
