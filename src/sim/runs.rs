//! Runs of whole seeds: one seed as drawn, and a mutant over a range of
//! seeds until one catches it.

use super::{Sim, SimConfig, SimFailure, SimReport};
use crate::core::mutants::{self, Mutant};

/// Runs the scenario drawn from `seed`.
pub fn run_seed(seed: u64) -> Result<SimReport, SimFailure> {
    Sim::new(SimConfig::from_seed(seed)).run()
}

/// What a mutant run found: the first seed that caught the mutant, or
/// none within the seeds run.
#[derive(Debug, Clone)]
pub struct MutantRun {
    /// The mutant.
    pub mutant: Mutant,
    /// The seeds tried, from the first.
    pub seeds_run: u64,
    /// The failure that caught it, if one did.
    pub caught: Option<SimFailure>,
}

/// Runs `mutant` over seeds `first..first + seeds` until one fails.
/// Meaningful only in a build with the `mutants` feature
/// ([`mutants::ENABLED`]); elsewhere every seed passes.
pub fn run_mutant(mutant: Mutant, first: u64, seeds: u64) -> MutantRun {
    let mut seeds_run = 0;
    for seed in first..first.saturating_add(seeds) {
        seeds_run += 1;
        // An assertion that fires (a debug build's invariants) catches the
        // mutant as surely as the oracle does.
        let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            Sim::new(SimConfig::from_seed(seed))
                .with_mutant(Some(mutant))
                .run()
        }));
        mutants::set(None);
        let caught = match run {
            Ok(Ok(_)) => continue,
            Ok(Err(f)) => f,
            Err(panic) => SimFailure {
                seed,
                reason: format!(
                    "an assertion fired: {}",
                    panic
                        .downcast_ref::<String>()
                        .map(String::as_str)
                        .or_else(|| panic.downcast_ref::<&str>().copied())
                        .unwrap_or("(no message)")
                ),
            },
        };
        return MutantRun {
            mutant,
            seeds_run,
            caught: Some(caught),
        };
    }
    MutantRun {
        mutant,
        seeds_run,
        caught: None,
    }
}
