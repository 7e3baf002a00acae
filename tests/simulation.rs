//! The deterministic simulation over many seeds (design §8).
//!
//! `MERIDIAN_SIM_SEEDS=<n>` runs n seeds (default 500); `MERIDIAN_SIM_SEED=<s>`
//! replays one seed exactly; `MERIDIAN_SIM_FIRST=<s>` starts the range elsewhere.

use meridian::sim::{run_seed, Sim, SimConfig, SimReport};

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().map(|v| {
        v.trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name} must be a whole number, got {v:?}"))
    })
}

#[test]
fn seeds_converge_to_the_oracle() {
    if let Some(seed) = env_u64("MERIDIAN_SIM_SEED") {
        // MERIDIAN_SIM_TRACE=<key> (or *) prints its story and every fault.
        let trace = std::env::var("MERIDIAN_SIM_TRACE").ok();
        match Sim::new(SimConfig::from_seed(seed)).with_trace(trace).run() {
            Ok(r) => println!("{r:?}"),
            Err(e) => panic!("{e}"),
        }
        return;
    }
    let count = env_u64("MERIDIAN_SIM_SEEDS").unwrap_or(500);
    let first = env_u64("MERIDIAN_SIM_FIRST").unwrap_or(0);
    let mut total = SimReport::default();
    let mut failures = Vec::new();
    for seed in first..first + count {
        match run_seed(seed) {
            Ok(r) => {
                total.writes_acknowledged += r.writes_acknowledged;
                total.writes_refused += r.writes_refused;
                total.partitions += r.partitions;
                total.crashes += r.crashes;
                total.tombstones_collected += r.tombstones_collected;
                total.ae_entries_applied += r.ae_entries_applied;
                total.messages_dropped += r.messages_dropped;
                total.messages_late += r.messages_late;
                total.feed_gaps += r.feed_gaps;
                total.below_floor_refused += r.below_floor_refused;
                total.writes_lost_unacknowledged += r.writes_lost_unacknowledged;
                total.deletes_of_absent_keys += r.deletes_of_absent_keys;
                total.prefix_deletes += r.prefix_deletes;
                total.collected_while_steady += r.collected_while_steady;
                total.clock_faults += r.clock_faults;
                total.writes_refused_for_clock += r.writes_refused_for_clock;
                total.records_damaged += r.records_damaged;
                total.records_quarantined += r.records_quarantined;
                total.records_repaired += r.records_repaired;
                total.destroys += r.destroys;
                total.writes_unacknowledged += r.writes_unacknowledged;
                total.records_lost += r.records_lost;
                total.long_absences += r.long_absences;
                total.resyncs += r.resyncs;
                total.writes_held_only_by_the_absent += r.writes_held_only_by_the_absent;
                total.forgets += r.forgets;
                total.leaves += r.leaves;
                total.edge_local_writes += r.edge_local_writes;
                total.edge_local_writes_handed_over += r.edge_local_writes_handed_over;
            }
            Err(e) => {
                eprintln!("{e}");
                failures.push(e.seed);
            }
        }
    }
    println!(
        "{count} seeds: {} writes acknowledged, {} refused, {} partitions, {} crashes, {} messages dropped, \
         {} feed gaps, {} entries repaired by anti-entropy, {} tombstones collected ({} after convergence), \
         {} stale entries refused, {} deletes of keys absent where deleted, {} prefix-delete tombstones; \
         {} records damaged (disk or memory), {} quarantined, {} repaired; {} clock faults, {} writes refused \
         for a clock; {} stores destroyed, {} quorum writes not acknowledged",
        total.writes_acknowledged,
        total.writes_refused,
        total.partitions,
        total.crashes,
        total.messages_dropped,
        total.feed_gaps,
        total.ae_entries_applied,
        total.tombstones_collected,
        total.collected_while_steady,
        total.below_floor_refused,
        total.deletes_of_absent_keys,
        total.prefix_deletes,
        total.records_damaged,
        total.records_quarantined,
        total.records_repaired,
        total.clock_faults,
        total.writes_refused_for_clock,
        total.destroys,
        total.writes_unacknowledged
    );
    assert!(failures.is_empty(), "failing seeds: {failures:?}");
    // The runs must actually exercise what they claim to check.
    if count >= 100 {
        assert!(total.partitions > 0 && total.crashes > 0 && total.messages_dropped > 0);
        assert!(
            total.tombstones_collected > 0,
            "no tombstone was ever collected"
        );
        assert!(
            total.ae_entries_applied > 0,
            "anti-entropy never repaired anything"
        );
        assert!(
            total.deletes_of_absent_keys > 0 && total.prefix_deletes > 0,
            "no delete of a key absent where it was deleted, or no prefix delete"
        );
        assert!(
            total.collected_while_steady > 0,
            "no tombstone was collected while roots were checked after convergence"
        );
        assert!(
            total.records_damaged > 0
                && total.records_quarantined > 0
                && total.records_repaired > 0,
            "no damage injected, quarantined and repaired"
        );
        assert!(
            total.clock_faults > 0 && total.writes_refused_for_clock > 0,
            "no clock fault, or none that refused a write"
        );
        assert!(
            total.destroys > 0,
            "no store destroyed under quorum acknowledgement"
        );
        assert!(
            total.messages_late > 0,
            "no anti-entropy entries arrived late"
        );
        assert!(
            total.records_lost > 0,
            "no store silently lost a record (only anti-entropy repairs that)"
        );
        assert!(
            total.long_absences > 0 && total.resyncs > 0,
            "no member away longer than the horizon came back and resynced"
        );
        assert!(
            total.forgets > 0 && total.leaves > 0,
            "no member was forgotten, or none left"
        );
        assert!(
            total.edge_local_writes > 0 && total.edge_local_writes_handed_over > 0,
            "no edge took a write while cut off and handed it over"
        );
    }
}

#[test]
fn seeds_that_once_found_faults_pass() {
    for seed in meridian::sim::SEEDS_THAT_FOUND_FAULTS {
        if let Err(e) = run_seed(*seed) {
            panic!("{e}");
        }
    }
}
