//! The seeds that once found a fault, each named where it was fixed.

/// Seeds that once found a fault, each named where it was fixed: they
/// run on every `cargo test` (`tests/simulation.rs`), whatever range the
/// main test covers, and every mutant may be caught by one of them
/// (`tests/mutants.rs`).
pub const SEEDS_THAT_FOUND_FAULTS: &[u64] = &[
    497,   // a recovering replica claimed writes it had lost
    14417, // two nodes recovering at once waited on each other
    32359, // the simulation destroyed the last intact copy of a write
    39182, // a lost store refused older live values from its peers' full transfers
    8,     // a record lost from a store stayed lost: anti-entropy met the floor
    1002,  // (the check) a clock that ran fast left its own stamps ahead of time
    55,    // back after the horizon, a member collected by age and called its peers stale
    584,   // a member recovering from damage skipped the stale check
    665,   // the same, another key
    1909,  // a second stale notice undid a finished resync
    214,   // the same, with a higher floor
    1254,  // a frame from before a peer's resync was exempt from the floor
    476,   // a member whose clock ran fast misjudged its absence; told stale, it collected by age
    10662, // a clock that ran fast collected by age early and called its peers stale
    11169, // (the oracle) writes only the absent member held, superseded there by its own
    11618, // (the checks) convergence declared before every hello, so before a resync
    3984,  // a tombstone collected by age before a peer back in contact had it
    16420, // (the checks) a recovery ended while a damaged record of its own was quarantined
    35, // a read barrier that waited on feed positions missed a write superseded by an unreachable node's
    1611, // the same, another key
    4839, // back past the horizon, a member gave a peer the value of a delete it collected by age
    19254, // (the faults) a server's disk lost a write only an edge still held
    3286, // two forgotten members back at once gave each other deleted values in full transfers
    581, // a member taken back after a forget was vouched for below the floor
    2278, // a forgotten member's hello after its resync was lost: it was never taken back
    2377, // (the oracle) an edge's copy counted for a write only a forgotten member held
    1728, // a forgotten member's writes taken before it heard of the forget
    2444, // a forget dropped the bound of the forgotten member's writes from the frontier
    7097, // a peer told to resync made us resync
    14345, // the same, after it had resynced: it was never taken back
    11667, // (the checks) convergence declared while a member was still forgotten
    17017, // a member back from a forget collected by age and called its peers stale
    3391, // (the checks) an adopted id judged by what a forgotten member held
    2,  // an edge's local writes taken in a standby region, refused for good
    4, // the same, its server refusing them for its clock: the edge stayed (and: a document version only standbys held)
    1718, // a local write stamped by an edge clock ahead of its server's: made below it
    2877, // (the oracle) a local write replaced at its edge by a later one
    3074, // (the checks) an edge whose region's servers all refuse writes for good
    4098, // (the checks) convergence declared before an edge's local delete was handed over
    1081, // a local write the server skipped for a delete it then collected: waited for good
    6343, // a node that left came back before any peer heard it left: it never took writes again
    5066, // an edge left a rebuilding server every few seconds and fell behind the horizon
    13, // (the checks, under a mutant) an edge that lost its store refused local writes
    18498, // (the oracle) a write a forgotten server made for an edge, answered after it went
    16582, // (the oracle) the same, the edge answering after its server went away
    15193, // (the checks) an edge recovered from a server that resynced meanwhile
    2789, // (no fault: passes) where CI's mutant run catches `ack-before-persist`
    100, // a document write against a document damaged in memory failed to load it
    194, // a fast clock's document versions, merged nowhere: merges wait on no clock now
    989, // an edge kept a merged document whose delete was collected (Collected names the order stamp)
    15712, // (the oracle) a document version only a forgotten member held, counted as acknowledged
    19328, // (the checks) an edge behind a server rebuilding for longer than the horizon, told stale
    6697, // a standby handed a version it could not merge only every ten beats: merged after convergence
    6031, // a merge waited for physical time to reach stamps a fast clock had pushed ahead
    812, // (no fault: passes) where CI's mutant run catches `suspect-floor` since documents' hand-over
    2975, // (no fault: passes) where CI's mutant run catches `forgotten-frontier` since documents
];
