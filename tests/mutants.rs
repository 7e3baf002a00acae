//! The simulation catches what it claims to check: each named mutant (a
//! safety mechanism disabled or weakened, see `meridian::core::mutants`)
//! must fail a simulation seed within the seeds CI runs: one of the seeds
//! that once found a fault (`meridian::sim::SEEDS_THAT_FOUND_FAULTS`),
//! tried first, or one of the first seeds.
//!
//! Only in a build with the `mutants` feature (`.ci/run` runs
//! `cargo test --features mutants --test mutants`); `MERIDIAN_MUTANT_SEEDS`
//! sets how many seeds each mutant may take (default 600).
#![cfg(feature = "mutants")]

use meridian::core::mutants::Mutant;
use meridian::sim::run_mutant;
use strum::VariantArray;

#[test]
fn every_mutant_is_caught_within_the_ci_seeds() {
    let seeds: u64 = std::env::var("MERIDIAN_MUTANT_SEEDS")
        .ok()
        .map(|v| {
            v.trim()
                .parse()
                .expect("MERIDIAN_MUTANT_SEEDS: a whole number")
        })
        .unwrap_or(600);
    let mut survived = Vec::new();
    for m in Mutant::VARIANTS {
        let known = meridian::sim::SEEDS_THAT_FOUND_FAULTS
            .iter()
            .map(|s| run_mutant(*m, *s, 1))
            .find(|r| r.caught.is_some());
        let run = known.unwrap_or_else(|| run_mutant(*m, 0, seeds));
        match &run.caught {
            Some(f) => println!(
                "{:<20} caught by seed {} after {} seeds: {}",
                m.as_str(),
                f.seed,
                run.seeds_run,
                f.reason.lines().next().unwrap_or("")
            ),
            None => survived.push(m.as_str()),
        }
    }
    assert!(
        survived.is_empty(),
        "mutants the simulation did not catch within {seeds} seeds: {}",
        survived.join(", ")
    );
}

#[test]
fn a_healthy_run_is_untouched_by_the_switches() {
    // The switch is per run: after a mutant run, the same seed without one passes.
    let _ = run_mutant(Mutant::StampOrder, 0, 1);
    meridian::sim::run_seed(0).expect("seed 0 passes without a mutant");
}
