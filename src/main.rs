//! The `meridian` binary.
//!
//! Today: the deterministic simulation (`meridian sim`) and the cluster CA
//! (`meridian ca init|issue`). The daemon, the HTTP API and the operator
//! commands come next.

use std::process::ExitCode;
use std::time::Instant;

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use meridian::net::tls::Ca;
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
    /// The cluster's certificate authority.
    Ca {
        #[command(subcommand)]
        command: CaCommand,
    },
}

#[derive(Subcommand)]
enum CaCommand {
    /// Create a new CA (ca.pem, ca.key, cluster) in a directory.
    Init {
        /// The cluster's name.
        #[arg(long, default_value = "meridian")]
        cluster: String,
        /// Where to write the CA; refused if a CA is already there.
        #[arg(long, default_value = "ca")]
        out: PathBuf,
    },
    /// Issue a node certificate (node.pem, node.key, ca.pem) signed by the CA.
    Issue {
        /// The node's name (in the certificate's common name).
        #[arg(long)]
        name: String,
        /// The node's region (in the certificate's organizational unit).
        #[arg(long)]
        region: String,
        /// The CA directory made by `ca init`.
        #[arg(long, default_value = "ca")]
        ca: PathBuf,
        /// Where to write the node's files (default: a directory named after the node).
        #[arg(long)]
        out: Option<PathBuf>,
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
        Command::Ca { command } => ca(command).map(|()| true),
    }
}

fn ca(command: CaCommand) -> Result<()> {
    match command {
        CaCommand::Init { cluster, out } => {
            if out.join("ca.key").exists() {
                anyhow::bail!(
                    "{} already holds a CA; refusing to overwrite it",
                    out.display()
                );
            }
            let ca = Ca::generate(&cluster)?;
            ca.save(&out)?;
            let id = meridian::net::tls::cluster_id(&ca.cert_pem)?;
            println!(
                "created the CA of cluster {cluster:?} in {} (cluster id {})",
                out.display(),
                id.0.iter().map(|b| format!("{b:02x}")).collect::<String>()
            );
            println!(
                "keep {} secret; issue node certificates with `meridian ca issue`",
                out.join("ca.key").display()
            );
            Ok(())
        }
        CaCommand::Issue {
            name,
            region,
            ca,
            out,
        } => {
            let authority =
                Ca::load(&ca).with_context(|| format!("reading the CA in {}", ca.display()))?;
            let out = out.unwrap_or_else(|| PathBuf::from(&name));
            authority.issue(&name, &region)?.save(&out)?;
            println!("issued {name} ({region}) into {}", out.display());
            Ok(())
        }
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
