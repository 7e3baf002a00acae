//! The `meridian` binary.
//!
//! Today it runs the deterministic simulation (`meridian sim`); the node,
//! the HTTP API and the operator commands come with the network and storage
//! layers.

use std::process::ExitCode;
use std::time::Instant;

use anyhow::Result;
use clap::{Parser, Subcommand};
use meridian::sim::{run_seed, SimConfig};

#[derive(Parser)]
#[command(name = "meridian", version, about = "Multi-region configuration sync")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the deterministic cluster simulation: random writes, partitions,
    /// crashes, drops and clock skew, checked against an oracle.
    Sim {
        /// How many consecutive seeds to run.
        #[arg(long, default_value_t = 100)]
        seeds: u64,
        /// The first seed.
        #[arg(long, default_value_t = 0)]
        first: u64,
        /// Replay exactly one seed and print its scenario and report.
        #[arg(long, conflicts_with_all = ["seeds", "first"])]
        seed: Option<u64>,
    },
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> Result<bool> {
    match cli.command {
        Command::Sim { seeds, first, seed } => Ok(sim(seeds, first, seed)),
    }
}

fn sim(seeds: u64, first: u64, seed: Option<u64>) -> bool {
    if let Some(seed) = seed {
        println!("{:#?}", SimConfig::from_seed(seed));
        return match run_seed(seed) {
            Ok(report) => {
                println!("{report:#?}");
                true
            }
            Err(e) => {
                eprintln!("{e}");
                false
            }
        };
    }
    let start = Instant::now();
    let mut failed = Vec::new();
    let (mut acked, mut partitions, mut crashes) = (0u64, 0u64, 0u64);
    for s in first..first.saturating_add(seeds) {
        match run_seed(s) {
            Ok(r) => {
                acked += r.writes_acknowledged;
                partitions += r.partitions;
                crashes += r.crashes;
            }
            Err(e) => {
                eprintln!("{e}");
                failed.push(s);
            }
        }
    }
    println!(
        "{seeds} seeds ({first}..{}) in {:.1} s: {} converged, {} failed; {acked} acknowledged writes, \
         {partitions} partitions, {crashes} crashes",
        first.saturating_add(seeds),
        start.elapsed().as_secs_f64(),
        seeds - failed.len() as u64,
        failed.len()
    );
    if !failed.is_empty() {
        println!("failing seeds: {failed:?} (replay one with `meridian sim --seed N`)");
    }
    failed.is_empty()
}
